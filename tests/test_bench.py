"""`make bench` keeps running: every section at tiny sizes (--quick), its numbers written as JSON."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_every_bench_section_runs(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    for section in range(1, 8):
        assert f"[{section}]" in done.stdout
    numbers = json.loads(out.read_text())
    for key in ("fit_vs_plain", "batch_fraction_of_peak", "share_ops_products", "bmm_alone_gflops",
                "penalized_step_vs_floor", "sensing_fraction_of_peak", "nnm_speedup", "tensor_batch_speedup",
                "ours_vs_p3_code", "ours_vs_p1_code"):
        assert key in numbers and numbers[key] > 0, key
