"""Smoke test of the benchmark suite: `python bench/run.py --quick --out <tmp>` runs every variant on
tiny shapes (main table, both batch-sweep series in fwd and fwd+bwd, the bfloat16 section) and writes the
JSON, the markdown table and the PNG plot."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ["resetlstm", "resetlstm_resets", "keras", "naive", "block", "torch"]


def run_quick(script, tmp_path, **env):
    """`python bench/<script> --quick --out <tmp_path>`; asserts it succeeded, returns its
    process."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", script), "--quick",
                           "--out", str(tmp_path)], cwd=REPO, env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def test_bench_quick(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "run.py"), "--quick", "--out", str(tmp_path)],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (js,) = glob.glob(str(tmp_path / "*.json"))
    base = js[:-len(".json")]
    for ext in (".md", ".png"):
        assert os.path.getsize(base + ext) > 0, base + ext
    res = json.load(open(js))
    assert res["quick"] is True
    torch_installed = importlib.util.find_spec("torch") is not None
    assert res["shapes"] and res["sweep"] and res["bf16"]
    for shape in res["shapes"]:
        for v in VARIANTS:
            entry = shape["results"].get(v)
            assert entry is not None, f"variant {v} missing at {shape['B'], shape['T'], shape['I'], shape['H']}"
            if v == "torch" and not torch_installed:
                assert entry["status"].startswith("unavailable")
                continue
            assert entry["status"] == "ok", (v, entry["status"])
            for mode in ("fwd", "fwdbwd"):
                assert entry[mode]["median_ms"] > 0
            assert entry["saved_bytes"] > 0
        assert shape["matmul"]["gflops"] > 0
        assert shape["checks"] and all(c["ok"] for c in shape["checks"])
    # batch sweeps: two series (I = H differ), fwd and fwd+bwd, a summary per mode
    assert res["schema"] == 2
    assert [s["id"] for s in res["sweep"]] == ["main", "small"]
    assert res["sweep"][0]["H"] != res["sweep"][1]["H"]
    for series in res["sweep"]:
        assert series["modes"] == ["fwd", "fwdbwd"]
        assert [p["B"] for p in series["points"]] == series["batches"] and series["batches"]
        assert set(series["variants"]) == {"resetlstm", "resetlstm_resets", "keras", "torch"}
        for point in series["points"]:
            assert (point["T"], point["I"], point["H"]) == (series["T"], series["I"], series["H"])
            for v in series["variants"]:
                if v == "torch" and not torch_installed:
                    continue
                for mode in series["modes"]:
                    assert point["results"][v][mode]["median_ms"] > 0, (series["id"], point["B"], v, mode)
            for mode in series["modes"]:
                assert point["limit_ms"][mode] > 0
        assert set(series["summary"]) == {"fwd", "fwdbwd"}
        for summ in series["summary"].values():
            assert isinstance(summ["all_faster"], bool) and "keras" in summ["peers"]
    # bfloat16 section: every variant ran, resetlstm bf16 matches resetlstm fp32 within the tolerance
    (bf,) = res["bf16"]
    for v in ("resetlstm_fp32", "resetlstm_bf16", "keras_fp32", "keras_bf16", "torch_fp32", "torch_bf16"):
        entry = bf["results"][v]
        if v.startswith("torch") and not torch_installed:
            assert entry["status"].startswith("unavailable")
            continue
        assert entry["status"] == "ok", (v, entry["status"])
        for mode in ("fwd", "fwdbwd"):
            assert entry[mode]["median_ms"] > 0
        if v.endswith("bf16"):
            assert set(entry["bf16_speedup"]) == {"fwd", "fwdbwd"}
    assert bf["results"]["resetlstm_bf16"]["output_dtype"] == "bfloat16"
    (check,) = [c for c in bf["checks"] if c["variant"] == "resetlstm_bf16" and c["kind"] == "bf16 fwd vs fp32"]
    assert check["ok"] and not check["informational"] and check["tol"] == res["settings"]["bf16_tol"] == 3e-2
    assert all(c["ok"] for c in bf["checks"] if not c["informational"])
    assert set(bf["resetlstm_bf16_speedup_over"]["keras_bf16"]) == {"fwd", "fwdbwd"}
    assert res["resetlstm_build_info"]
    md = open(base + ".md").read()
    assert "keras.layers.LSTM" in md and "BlockLSTM" in md and "% of limit" in md
    assert md.count("### Batch sweep") == 4 and md.count("at every B:") == 4
    assert "## bfloat16" in md and "mixed_bfloat16" in md and "bf16 speedup" in md


def test_bench_isa_cap(tmp_path):
    """bench/run.py --isa avx2 (an AVX2 stand-in on any AVX2 CPU): every side is capped and each cap
    checked; the file name says so; a variant that cannot run under the cap is recorded as unsupported
    and the others in its section are timed. Only the bfloat16 section, on a tiny shape."""
    if not any("avx2" in line for line in open("/proc/cpuinfo") if line.startswith("flags")):
        pytest.skip("this CPU has no AVX2")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "run.py"), "--quick", "--isa", "avx2",
                           "--shapes", "", "--sweep-batches", "", "--sweep-batches-small", "",
                           "--out", str(tmp_path)], cwd=REPO, env=dict(os.environ), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (js,) = glob.glob(str(tmp_path / "*-avx2-capped-quick.json"))
    res = json.load(open(js))
    cap = res["isa_cap"]
    assert cap["resetlstm_simd_selected"] == "avx2" == res["resetlstm_build_info"]["simd"]["selected"]
    assert cap["tensorflow_onednn_isa"] == "Intel AVX2"
    torch_installed = importlib.util.find_spec("torch") is not None
    if torch_installed:
        assert cap["torch_onednn_isa"] == "Intel AVX2" and cap["torch_cpu_capability"] == "AVX2"
    (bf,) = res["bf16"]
    assert bf["results"]["keras_bf16"]["status"].startswith("unsupported")
    for v in ("resetlstm_fp32", "resetlstm_bf16", "keras_fp32") + (("torch_fp32",) if torch_installed else ()):
        assert bf["results"][v]["status"] == "ok", (v, bf["results"][v]["status"])
    if torch_installed:  # torch's oneDNN has no bf16 LSTM below AVX-512: recorded, not fatal
        assert bf["results"]["torch_bf16"]["status"].split(":")[0] in ("ok", "unsupported")
    assert "**Capped to AVX2**" in open(js[:-len(".json")] + ".md").read()


def test_bench_isa_cap_refuses_a_cap_that_did_not_take(monkeypatch):
    """A cap that did not take effect stops the run with the side named (here resetlstm reports
    another ISA than the one asked for)."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import isa_cap

    for key, value in isa_cap.CAPS["avx2"][0].items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError, match=r"resetlstm: build_info\(\)\['simd'\]\['selected'\] is 'avx512'"):
        isa_cap.verify("avx2", {"simd": {"selected": "avx512"}}, with_torch=False)


def test_dropin_bench_quick(tmp_path):
    """bench/dropin_bench.py --quick: every case runs, the check passes, JSON and markdown."""
    run_quick("dropin_bench.py", tmp_path)
    (js,) = glob.glob(str(tmp_path / "dropin-*.json"))
    res = json.load(open(js))
    (shape,) = res["shapes"]
    assert shape["check_ok"] and len(shape["results"]) == 12
    assert all(e["median_ms"] > 0 for e in shape["results"].values())
    assert {r["case"] for r in shape["ratios"]} >= {"resetlstm_rd", "op_mask", "keras_rd"}
    assert "recurrent dropout overhead" in open(js[:-len(".json")] + ".md").read()


def test_serving_bench_quick(tmp_path):
    """bench/serving_bench.py --quick: all variants agree (checked inside), JSON and markdown."""
    run_quick("serving_bench.py", tmp_path)
    (js,) = glob.glob(str(tmp_path / "serving-*.json"))
    res = json.load(open(js))["results"]
    assert set(res) == {"resetlstm", "usual_tf_function", "usual_predict", "usual_eager"}
    assert all(r["stream_steps_per_s"] > 0 and r["latency_median_ms"] > 0 for r in res.values())
    assert "stream-steps/s" in open(js[:-len(".json")] + ".md").read()


def test_bench_refuses_counts_below_one():
    """A count of 0 or less would time nothing (before, 0 fell back to the default and negatives
    failed later): refused at once, naming the flag and the value."""
    for flag in ("--reps", "--warmup", "--sweep-reps", "--burst"):
        proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "run.py"), flag, "0"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (flag, proc.returncode, proc.stderr[-2000:])
        assert f"{flag} must be at least 1, got 0" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tf2onnx",
                                                                   "onnxruntime")),
                    reason="needs the deploy extra (ai-edge-litert, tf2onnx, onnxruntime)")
def test_deploy_bench_quick(tmp_path):
    """bench/deploy_bench.py --quick: every runtime agrees with the fused step (checked inside),
    JSON and markdown."""
    run_quick("deploy_bench.py", tmp_path)
    (js,) = glob.glob(str(tmp_path / "deploy-*.json"))
    res = json.load(open(js))["results"]
    assert set(res) == {"fused", "portable_tf", "litert", "onnxruntime"}
    assert all(r["stream_steps_per_s"] > 0 and r["max_abs_diff_vs_fused"] <= 1e-4
               for r in res.values())
    assert "stream-steps/s" in open(js[:-len(".json")] + ".md").read()


def test_torch_rl_bench_quick(tmp_path):
    """bench/torch_rl_bench.py --quick: runs, checks the fused module against its peers, writes
    the JSON and the markdown table."""
    pytest.importorskip("torch")
    run_quick("torch_rl_bench.py", tmp_path, KERAS_BACKEND="torch")
    data = json.loads((tmp_path / "torch-rl-quick.json").read_text())
    assert {r["peer"] for r in data["results"]} == {"per-step loop", "torch.nn.LSTM"}
    assert all(r["max_abs_diff"] < 1e-5 for r in data["results"])
    table = (tmp_path / "torch-rl-quick.md").read_text()
    assert "per-step loop" in table and "speedup fwdbwd" in table


def test_jax_bench_quick(tmp_path):
    """bench/jax_bench.py --quick: every variant on tiny shapes (main table with its
    correctness checks, the batch sweep), the JSON and the markdown table."""
    pytest.importorskip("jax")
    run_quick("jax_bench.py", tmp_path)
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


def test_load_bench_quick(tmp_path):
    """bench/load_bench.py --quick: every installed framework's sides, quiet and beside one busy
    thread, their input gradients checked against resetlstm's; the JSON and the markdown table."""
    run_quick("load_bench.py", tmp_path)
    (js,) = glob.glob(str(tmp_path / "load-*-quick.json"))
    assert os.path.getsize(js[:-len(".json")] + ".md") > 0
    res = json.load(open(js))
    assert res["background_load"] == 1 and res["rounds"] == 2
    for framework, module in (("tf", "tensorflow"), ("torch", "torch"), ("jax", "jax")):
        shapes = res["frameworks"][framework]
        if importlib.util.find_spec(module) is None:
            assert shapes.startswith("skipped"), shapes
            continue
        for shape in shapes:
            assert shape["checks"] and all(c["ok"] for c in shape["checks"]), shape["checks"]
            assert len(shape["rounds"]) == 2
            summary = shape["summary"]
            assert len(summary) == 2
            for name, e in summary.items():
                assert e["quiet_ms"] > 0 and e["loaded_ms"] > 0 and e["slowdown"] > 0
            assert sum("lead_loaded" in e for e in summary.values()) == 1


def test_gru_bench_quick(tmp_path):
    """bench/gru_bench.py --quick: every installed framework's GRU sides (resetlstm with and
    without resets, the framework's own GRU, the matmul limit) on the sweep and the extra shape,
    checked before timing; the JSON and the markdown table."""
    run_quick("gru_bench.py", tmp_path)
    (js,) = glob.glob(str(tmp_path / "gru-*-quick.json"))
    text = open(js[:-len(".json")] + ".md").read()
    res = json.load(open(js))
    assert res["rounds"] == 2 and res["shapes"] == [[2, 5, 8, 8], [4, 5, 8, 8], [3, 4, 6, 5]]
    for framework, module in (("tf", "tensorflow"), ("torch", "torch"), ("jax", "jax")):
        shapes = res["frameworks"][framework]
        if importlib.util.find_spec(module) is None:
            assert shapes.startswith("skipped"), shapes
            continue
        assert f"## {framework}: resetlstm vs" in text
        assert [[s[k] for k in "BTIH"] for s in shapes] == res["shapes"]
        for shape in shapes:
            # both resetlstm sides vs float64; the peer's outputs and d_inputs vs resetlstm's
            assert len(shape["checks"]) == 4 and all(c["ok"] for c in shape["checks"])
            s = shape["summary"]
            assert s["matmul_gflops"] > 0 and len(shape["rounds"]) == 2
            peer = [k for k in s if isinstance(s[k], dict) and "fwd_lead" in s[k]]
            assert len(peer) == 1
            for mode in ("fwd", "fwdbwd"):
                assert s[peer[0]][f"{mode}_lead"] > 0 and s["resetlstm"][f"{mode}_ms"] > 0
                assert s["resetlstm"][f"{mode}_pct_of_limit"] > 0


def test_gru_bench_dropins_quick(tmp_path):
    """bench/gru_bench.py --quick --dropins: the drop-in layers of every installed framework
    (Keras on each backend, the torch module), checked against the op before timing, each with
    its cost over the op and its lead over the stock layer, in the JSON and the table."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gru_bench.py"), "--quick",
                           "--dropins", "--batches", "2", "--shapes", "", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (js,) = glob.glob(str(tmp_path / "gru-dropins-*-quick.json"))
    res, text = json.load(open(js)), open(js[:-len(".json")] + ".md").read()
    expected = {"tf": ["ResetGRU (Keras)"],
                "torch": ["resetlstm.torch.ResetGRU", "ResetGRU (Keras, torch backend)"],
                "jax": ["ResetGRU (Keras, JAX backend)"]}
    for framework, module in (("tf", "tensorflow"), ("torch", "torch"), ("jax", "jax")):
        if importlib.util.find_spec(module) is None:
            continue
        assert f"### {framework}: the drop-in layers" in text
        (shape,) = res["frameworks"][framework]
        assert all(c["ok"] for c in shape["checks"])
        checked = " ".join(c["what"] for c in shape["checks"])
        for side in expected[framework]:
            s = shape["summary"][side]
            assert side in checked and s["stock"] in checked
            for mode in ("fwd", "fwdbwd"):
                assert s[f"{mode}_vs_op"] > 0 and s[f"{mode}_lead"] > 0 and s[f"{mode}_ms"] > 0


def test_rl_benches_quick(tmp_path):
    """bench/purejaxrl_bench.py and bench/cleanrl_ppo_bench.py --quick: every case checked
    against the original before timing (PureJaxRL), both modes of the CleanRL-style example
    trained on the same seed; the JSON and the tables."""
    if importlib.util.find_spec("flax") is not None:
        run_quick("purejaxrl_bench.py", tmp_path)
        (js,) = glob.glob(str(tmp_path / "purejaxrl-*-quick.json"))
        res = json.load(open(js))
        assert [c["cell"] for c in res["cases"]] == ["gru", "lstm"]
        for case in res["cases"]:
            assert case["check"]["ok"] and case["summary"]["speedup_fwdbwd"] > 0
        assert "| gru | 2 | 8 |" in open(js[:-len(".json")] + ".md").read()
    if importlib.util.find_spec("gymnasium") is not None:
        run_quick("cleanrl_ppo_bench.py", tmp_path)
        (js,) = glob.glob(str(tmp_path / "cleanrl-ppo-*-quick.json"))
        res = json.load(open(js))
        assert sorted(r["mode"] for r in res["runs"]) == ["fused", "loop"]
        assert all(r["steps_per_second"] > 0 and r["log"] for r in res["runs"])
        assert res["summary"]["speedup"] > 0


def test_rl_benches_refuse_bad_arguments():
    for script, argv, message in (
            ("purejaxrl_bench.py", ["--cells", "rnn"], "--cells: gru and/or lstm, got ['rnn']"),
            ("purejaxrl_bench.py", ["--T", "0"], "--T must be at least 1, got 0"),
            ("purejaxrl_bench.py", ["--envs", "0"], "--envs must be positive integers, got [0]"),
            ("cleanrl_ppo_bench.py", ["--total-timesteps", "100"],
             "--total-timesteps must be at least 256 (one update), got 100"),
            ("cleanrl_ppo_bench.py", ["--total-timesteps", "0"],
             "--total-timesteps must be at least 256 (one update), got 0"),
            ("cleanrl_ppo_bench.py", ["--seeds", ","], "--seeds must name at least one seed")):
        proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", script)] + argv,
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and message in proc.stderr, (script, argv, proc.stderr[-2000:])


def test_gru_bench_refuses_bad_arguments():
    for argv, message in ((["--shapes", "1,2,3"], "each shape is B,T,I,H"),
                          (["--rounds", "0"], "--rounds must be at least 1"),
                          (["--frameworks", "mxnet", "--quick"], "'mxnet' is not one of")):
        proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gru_bench.py")] + argv,
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and message in proc.stderr, (argv, proc.stderr[-2000:])
