"""mcreg_lib.book.parameters: one declaration gives the validation, the errors, the preview values and the cell."""

import pytest

from mcreg_lib.book.parameters import Parameters, choice, integer, integers, numbers, path, positive

DECL = Parameters(
    "demo",
    integer("n", 100, "the hidden matrix is n x n", minimum=2, preview=10),
    integer("n_observed", 2000, "observed entries", minimum=1, maximum="n * n", preview=50),
    integers("depths", [1, 2, 3], "depths", minimum=1, preview=[1]),
    numbers("scales", [1e-3, 1e-4], "init scales", minimum=0.0, strict=True, sort="descending"),
    integers("extra_m", [], "more m values", minimum=1, empty=True),
    positive("lr", 3.0, "the step"),
    choice("dtype", "float32", "precision", choices=("float32", "float64")),
    path("data", None, "a file", optional=True),
)


def test_defaults_and_snapshot():
    values = DECL.resolve()
    assert values == {"preview": False, "n": 100, "n_observed": 2000, "depths": [1, 2, 3], "scales": [1e-3, 1e-4],
                      "extra_m": [], "lr": 3.0, "dtype": "float32", "data": None,
                      "claims_path": "../_build/claims/demo.json"}
    assert DECL.changed(values) == {}


def test_the_namespace_is_read_and_written_back():
    ns = {"n": 20, "n_observed": 30.0, "scales": [1e-5, 1e-2]}
    DECL.resolve(ns)
    assert ns["n_observed"] == 30 and isinstance(ns["n_observed"], int)
    assert ns["scales"] == [1e-2, 1e-5]  # sorted as declared
    assert DECL.changed(ns) == {"n": 20, "n_observed": 30, "scales": [1e-2, 1e-5]}


def test_preview_replaces_only_values_at_their_default():
    out = DECL.resolve(preview=True)
    assert out["n"] == 10 and out["n_observed"] == 50 and out["depths"] == [1] and out["lr"] == 3.0
    out = DECL.resolve(preview=True, n=30)
    assert out["n"] == 30 and out["n_observed"] == 50


@pytest.mark.parametrize("given, message", [
    ({"n": 1}, "n=1 is not allowed: n must be an integer >= 2"),
    ({"n": 10, "n_observed": 101}, "n_observed=101 is not allowed: n_observed must be an integer between 1 and 100"),
    ({"depths": [2, 0]}, r"depths\[1\]=0 is not allowed"),
    ({"scales": [1e-3, 0.0]}, r"scales\[1\]=0.0 is not allowed"),
    ({"lr": -1}, "lr=-1"),
    ({"dtype": "float16"}, "dtype='float16' is not allowed"),
    ({"data": 3}, "data=3 is not allowed"),
    ({"nope": 1}, r"\['nope'\] are not parameters of chapter 'demo'"),
    ({"preview": "yes"}, "preview='yes' is not allowed"),
])
def test_errors_name_the_parameter_and_what_is_allowed(given, message):
    with pytest.raises(ValueError, match=message):
        DECL.resolve(**given)


def test_cell_and_table_come_from_the_declaration():
    cell = DECL.cell()
    ns: dict = {}
    exec(cell, ns)  # noqa: S102
    assert {k: ns[k] for k in DECL.names} == DECL.defaults()
    assert "scales = [1e-3, 1e-4]" in cell and "# the hidden matrix is n x n" in cell
    rows = {r["name"]: r for r in DECL.table()}
    assert rows["n_observed"]["allowed"] == "integer from 1 to n * n"
    assert rows["scales"]["allowed"] == "list of numbers > 0"
    assert rows["extra_m"]["allowed"].endswith("empty to skip")
    assert rows["n"]["preview"] == "10"


def test_declarations_refuse_what_papermill_cannot_parse():
    with pytest.raises(ValueError, match="must not contain '='"):
        integer("k", 1, "k = 1 means off")
    with pytest.raises(ValueError, match="twice"):
        Parameters("x", integer("k", 1, "one"), integer("k", 2, "two"))
