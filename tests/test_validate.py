import pytest
import torch

from mcreg_lib import validate as v


def test_accepts_and_normalizes():
    assert v.integer("n", 3.0, 1) == 3
    assert v.real("x", 1, 0.0) == 1.0
    assert v.int_list("depths", 2) == [2]
    assert v.int_list("depths", (1, 2)) == [1, 2]
    assert v.real_list("init_scales", [1e-3, 1e-4], 0.0, strict_minimum=True) == [1e-3, 1e-4]
    assert v.dtype("float64") is torch.float64 and v.dtype(torch.float32) is torch.float32


@pytest.mark.parametrize("call, match", [
    (lambda: v.int_list("depths", []), r"depths=\[\].*non-empty"),
    (lambda: v.int_list("depths", "123"), "depths='123'"),
    (lambda: v.int_list("depths", [1, 0], 1), r"depths\[1\]=0"),
    (lambda: v.real_list("init_scales", [1e-3, -1.0], 0.0, strict_minimum=True), r"init_scales\[1\]=-1.0.*> 0"),
    (lambda: v.choice("optimizer", "sgd", ["gd", "adam"]), "optimizer='sgd'.*'gd', 'adam'"),
    (lambda: v.real("lr", "0.1"), "lr='0.1'.*got type str"),
    (lambda: v.real("lr", float("inf")), "lr=inf"),
    (lambda: v.dtype("half"), "dtype='half'"),
])
def test_messages_name_parameter_value_and_allowed(call, match):
    with pytest.raises(ValueError, match=match):
        call()
