import socket
import time

import pytest
import torch

import mcreg_lib as mc

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as lc:
        yield lc


def _spec():
    p = mc.completion_problem(n=12, rank=2, n_observed=70, seed=0)
    q = mc.completion_problem(n=12, rank=2, n_observed=70, seed=1)
    return mc.grid([p, q], depth=[2, 3], init_scale=[1e-2, 1e-3], seed=[0, 1], lr=1.0, max_steps=200)


def _same(a, b):
    assert len(a.runs) == len(b.runs)
    for x, y in zip(a.runs, b.runs):
        assert x.config == y.config
        assert torch.equal(x.matrix, y.matrix)
        assert x.history.equals(y.history)
    cols = [c for c in a.table.columns if c != "seconds"]
    assert a.table[cols].equals(b.table[cols])


def test_sweep_on_a_local_cluster_equals_the_local_sweep(cluster, tmp_path):
    spec = _spec()
    local = mc.sweep(spec, progress=False, max_batch=4)
    with distributed.Client(cluster) as client:
        remote = mc.sweep(spec, progress=False, max_batch=4, client=client, cache=tmp_path)
        assert len(client.scheduler_info()["workers"]) == 2
    _same(local, remote)
    assert remote.computed == len(spec) and len(mc.RunCache(tmp_path).keys()) == len(spec)
    by_address = mc.sweep(spec, progress=False, max_batch=4, client=cluster.scheduler_address, cache=tmp_path)
    assert by_address.cached == len(spec)
    _same(local, by_address)


def test_sweep_by_scheduler_address(cluster):
    spec = _spec()[:4]
    _same(mc.sweep(spec, progress=False), mc.sweep(spec, progress=False, client=cluster.scheduler_address))


def test_unreachable_scheduler_fails_fast_and_clearly():
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"could not reach the Dask scheduler at 'tcp://127.0.0.1:{port}'"):
        mc.sweep(_spec()[:2], progress=False, client=f"tcp://127.0.0.1:{port}", connect_timeout=2)
    assert time.monotonic() - start < 15
