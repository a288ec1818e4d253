"""Smoke test of bench/jax_bench.py: `--quick` runs every variant on tiny shapes (main table with
its correctness checks, the batch sweep) and writes the JSON and the markdown table."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_jax_bench_quick(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "jax_bench.py"), "--quick",
                           "--out", str(tmp_path)], cwd=REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (js,) = glob.glob(str(tmp_path / "*.json"))
    assert os.path.getsize(js[:-len(".json")] + ".md") > 0
    res = json.load(open(js))
    assert res["quick"] is True and res["machine"]["cpu"]["model"]
    expected = {"resetlstm", "scan", "scan_hoisted"}
    if importlib.util.find_spec("keras") is not None:
        expected.add("keras")
    assert set(res["variants"]) == expected
    for point in res["shapes"] + res["sweep"]["points"]:
        assert set(point["results"]) == expected
        assert point["matmul"]["gflops"] > 0
        for v, e in point["results"].items():
            assert e["status"] == "ok", (v, e["status"])
            for mode in ("fwd", "fwdbwd"):
                assert e[mode]["median_ms"] > 0 and e["pct_of_limit"][mode] > 0
            assert (v == "resetlstm") == ("speedup" not in e)
    assert res["shapes"] and [p["B"] for p in res["sweep"]["points"]] == res["sweep"]["batches"]
    for shape in res["shapes"]:
        # every variant's forward against the float64 reference, resetlstm's 4 gradients vs scan
        assert len(shape["checks"]) == len(expected) + 4
        assert all(c["ok"] for c in shape["checks"]), shape["checks"]
