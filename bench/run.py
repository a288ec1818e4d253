"""resetlstm benchmark suite: one command, JSON + markdown table + PNG plot.

    python bench/run.py [--quick] [--out bench/results]

Times, side by side in one process (median of >= 5 reps after warm-up, fwd and fwd+bwd, float32):
resetlstm (no resets, 2 % random resets), keras.layers.LSTM (same weights), the naive per-row reset loop
(tf.while_loop, input projection hoisted), tf.raw_ops.BlockLSTM (V1), torch.nn.LSTM (subprocess, when
torch is installed) and the matmul limit. Then two batch sweeps (fwd and fwd+bwd; T = 50, I = H = 256 and
I = H = 128) and a bfloat16 section (resetlstm / keras / torch in float32 and bfloat16). See
bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a CPU benchmark

import numpy as np  # noqa: E402

import common  # noqa: E402
import isa_cap  # noqa: E402
import report  # noqa: E402

MAIN_SHAPES = [(64, 50, 128, 128), (256, 50, 256, 256), (1024, 20, 512, 512)]
# batch sweeps: (id, (T, I, H), batches, quick (T, I, H), quick batches, line style in the plot).
# "main" takes --sweep-batches, "small" --sweep-batches-small.
SWEEP_SERIES = [
    ("main", (50, 256, 256), [16, 32, 64, 128, 256, 1024], (5, 16, 16), [2, 8], "-"),
    ("small", (50, 128, 128), [16, 32, 64, 128], (5, 8, 8), [2, 4], "--"),
]
BF16_SHAPES = [(256, 50, 256, 256)]
QUICK_SHAPES = [(4, 6, 8, 8), (8, 5, 16, 16)]
QUICK_BF16_SHAPES = [(4, 6, 8, 8)]

VARIANTS = {
    "resetlstm": dict(
        label="resetlstm", color="C3", saved_tag="analytic",
        description="resetlstm.reset_lstm, no resets",
        saved_method="analytic from the shapes: 5H float32 values per (b, t) that the op keeps for backward "
                     "(gates 4H + cell H; = 20·B·T·H bytes), not measured. The second figure (runtime) is "
                     "measured: the byte size of the op's saved-activation outputs (gates, cells) in one "
                     "fwd+bwd call. The gradient op also reads the outputs [B, T, H] themselves (H more "
                     "float32 values per (b, t), not included; keras' and BlockLSTM's figures do include h)"),
    "resetlstm_resets": dict(
        label="resetlstm (2 % resets)", color="C1", saved_tag="analytic",
        description="resetlstm.reset_lstm with resets [B, T] bool, 2 % of (b, t) True at random",
        saved_method="as resetlstm (resets add B·T bools, not counted)"),
    "keras": dict(
        label="keras.layers.LSTM", color="C0", saved_tag="graph",
        description="keras.layers.LSTM(H, return_sequences=True) with the same weights (TF backend, CPU: "
                    "while loop over T, x_t @ kernel inside the loop)",
        saved_method="measured from the traced fwd+bwd graph: per-step tensors the while-loop gradient "
                     "accumulates (TensorListPushBack) × T, plus forward tensors read by backward ops; "
                     "variables, inputs and the loss' own gradient not counted"),
    "naive": dict(
        label="naive reset loop (2 % resets)", color="C2", saved_tag="graph",
        description="tf.while_loop over T, (h, c) *= 1 - resets[:, t], input projection hoisted as one "
                    "GEMM, per-step inputs from TensorArrays, inside tf.function; same resets as "
                    "resetlstm (2 % resets)",
        saved_method="measured from the traced fwd+bwd graph, as for keras"),
    "block": dict(
        label="tf.raw_ops.BlockLSTM (V1)", color="C4", saved_tag="graph",
        description="tf.raw_ops.BlockLSTM (V1) with w = [kernel; recurrent_kernel] reordered to gate "
                    "order i, c, f, o, forget_bias=0, cell_clip=-1 (off), no peepholes; batch-major "
                    "transposes included (V2 is not used: its registered gradient is wrong in TF 2.21)",
        saved_method="measured from the traced fwd+bwd graph: the 7 [T, B, H] BlockLSTM outputs "
                     "BlockLSTMGrad reads (i, cs, f, o, ci, co, h) + the time-major copy of x"),
    "torch": dict(
        label="torch.nn.LSTM", color="C5", saved_tag="hooks",
        description="torch.nn.LSTM(batch_first=True), same weights (bias_hh = 0), separate subprocess "
                    "(bench/torch_bench.py), torch.set_num_threads = TF's thread count; fwd under "
                    "torch.inference_mode()",
        saved_method="measured: unique storages autograd saves in one fwd pass "
                     "(torch.autograd.graph.saved_tensors_hooks), parameters/inputs/outputs not counted; "
                     "on CPU torch runs oneDNN's RNN (mkldnn_rnn), so this is mostly oneDNN's workspace"),
}
VARIANT_ORDER = list(VARIANTS)
TF_VARIANTS = ["resetlstm", "resetlstm_resets", "keras", "naive", "block"]
# resetlstm variant that each peer is compared with
BASELINE = {"keras": "resetlstm", "block": "resetlstm", "torch": "resetlstm", "naive": "resetlstm_resets"}
SWEEP_VARIANTS = ["resetlstm", "resetlstm_resets", "keras", "torch"]
SWEEP_MODES = ["fwd", "fwdbwd"]

# the bfloat16 section: "fp32" names the float32 variant whose time over this one's is its "bf16 speedup"
BF16_VARIANTS = {
    "resetlstm_fp32": dict(
        label="resetlstm float32", color="C3", fp32=None,
        description="resetlstm.reset_lstm, no resets, inputs and weights float32 (as in the main table)"),
    "resetlstm_bf16": dict(
        label="resetlstm bfloat16", color="C3", fp32="resetlstm_fp32",
        description="resetlstm.reset_lstm, no resets, with x, kernel, recurrent_kernel and bias all "
                    "tf.bfloat16 (cast once outside the timing; the weights are bfloat16 tf.Variables); "
                    "bfloat16 outputs; gradients with respect to those bfloat16 tensors; loss "
                    "reduce_sum(cast(outputs, float32) * upstream)"),
    "keras_fp32": dict(
        label="keras.layers.LSTM float32", color="C0", fp32=None,
        description="keras.layers.LSTM, same weights, float32 (as in the main table)"),
    "keras_bf16": dict(
        label="keras.layers.LSTM mixed_bfloat16", color="C0", fp32="keras_fp32",
        description="keras.layers.LSTM built with dtype=keras.mixed_precision.DTypePolicy('mixed_bfloat16'), "
                    "same weights: float32 variables and inputs, cast to bfloat16 inside every call, bfloat16 "
                    "outputs; gradients with respect to the float32 inputs and variables"),
    "torch_fp32": dict(
        label="torch.nn.LSTM float32", color="C5", fp32=None,
        description="torch.nn.LSTM, same weights, float32 (subprocess, as in the main table)"),
    "torch_bf16": dict(
        label="torch.nn.LSTM autocast bfloat16", color="C5", fp32="torch_fp32",
        description="the same module, float32 parameters and inputs, run under torch.autocast('cpu', "
                    "dtype=torch.bfloat16) (fwd also under inference_mode); backward outside autocast; "
                    "interleaved with torch float32 in the same subprocess"),
}
BF16_TF_VARIANTS = ["resetlstm_fp32", "resetlstm_bf16", "keras_fp32", "keras_bf16"]
BF16_TORCH = {"torch_fp32": "float32", "torch_bf16": "bfloat16"}


def log(msg=""):
    print(msg, flush=True)


def parse_shapes(text):
    return [tuple(int(v) for v in s.split(",")) for s in text.split(";") if s.strip()]


def parse_batches(text):
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke test: tiny shapes, 1-2 reps, every variant, every output file "
                         "(default --out: a new temp dir)")
    ap.add_argument("--out", default=None, help="output directory (default bench/results)")
    ap.add_argument("--name", default=None, help="file stem (default cpu-<host-kind>[-quick])")
    ap.add_argument("--reps", type=int, default=None, help="timed reps per case (default 9; quick 2)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed calls before timing, the first one traces (default 2; quick 1)")
    ap.add_argument("--sweep-reps", type=int, default=None, help="timed reps per sweep point (default 5; quick 1)")
    ap.add_argument("--burst", type=int, default=None,
                    help="calls per variant per rep, back to back, each timed (default 3; quick 1): "
                         "every variant is timed with warm caches, in either process")
    ap.add_argument("--threads", type=int, default=None,
                    help="TF intra-op threads and torch threads (default: cores available)")
    ap.add_argument("--matmul-n", type=int, default=None, help="size of the square matmul (default 2048)")
    ap.add_argument("--shapes", default=None, help="override main shapes: 'B,T,I,H;B,T,I,H'; '' to skip "
                                                   "the main table")
    ap.add_argument("--sweep-batches", default=None,
                    help="batch sizes of the T=50, I=H=256 sweep series (default 16,32,64,128,256,1024): "
                         "'32,64,...'; '' to skip that series")
    ap.add_argument("--sweep-batches-small", default=None,
                    help="batch sizes of the T=50, I=H=128 sweep series (default 16,32,64,128); '' to skip "
                         "that series")
    ap.add_argument("--bf16-shapes", default=None,
                    help="shapes of the bfloat16 section (default 256,50,256,256): 'B,T,I,H;...'; '' to skip it")
    ap.add_argument("--no-torch", action="store_true", help="skip torch.nn.LSTM")
    ap.add_argument("--isa", choices=sorted(isa_cap.CAPS), default=None,
                    help="cap every side to this instruction set (resetlstm, the oneDNN inside TensorFlow and "
                         "torch, torch's own kernels), check that each cap took effect, and add "
                         "'-<isa>-capped' to the file name: an AVX-512 CPU standing in for an AVX2 one")
    a = ap.parse_args(argv)
    for flag in ("reps", "warmup", "sweep_reps", "burst"):  # 0 or less would time nothing
        value = getattr(a, flag)
        if value is not None and value < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    q = a.quick
    a.reps = a.reps or (2 if q else 9)
    a.warmup = a.warmup or (1 if q else 2)
    a.sweep_reps = a.sweep_reps or (1 if q else 5)
    a.burst = a.burst or (1 if q else 3)
    a.threads = a.threads or common.default_threads()
    a.matmul_n = a.matmul_n or (256 if q else 2048)
    a.shape_list = parse_shapes(a.shapes) if a.shapes is not None else (QUICK_SHAPES if q else MAIN_SHAPES)
    a.bf16_shape_list = (parse_shapes(a.bf16_shapes) if a.bf16_shapes is not None
                         else (QUICK_BF16_SHAPES if q else BF16_SHAPES))
    a.sweep_series = []  # (id, T, I, H, batches, line style)
    for sid, tih, batches, qtih, qbatches, style in SWEEP_SERIES:
        override = a.sweep_batches if sid == "main" else a.sweep_batches_small
        bl = parse_batches(override) if override is not None else (qbatches if q else batches)
        if bl:
            a.sweep_series.append((sid, *(qtih if q else tih), bl, style))
    if a.out is None:
        a.out = tempfile.mkdtemp(prefix="resetlstm-bench-") if q else os.path.join(HERE, "results")
    return a


# ----------------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------------
def import_tf(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.get_logger().setLevel("ERROR")  # one tf.function per variant and shape: retracing warnings are expected
    import keras

    return tf, keras


def import_resetlstm():
    try:
        import resetlstm  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(REPO, "python"))
    try:
        import resetlstm

        info = resetlstm.build_info()
        return resetlstm, info, None
    except Exception as e:  # noqa: BLE001 - reported in the JSON and the table
        return None, None, f"{type(e).__name__}: {e}"


def torch_available():
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True, timeout=120)
        return out.stdout.strip() if out.returncode == 0 else None
    except Exception:  # noqa: BLE001
        return None


# ----------------------------------------------------------------------------------------------
# one shape: build, check, warm up, time (interleaved), torch subprocess
# ----------------------------------------------------------------------------------------------
def run_torch(args, cases, reps):
    with tempfile.TemporaryDirectory() as td:
        spec = os.path.join(td, "spec.json")
        out = os.path.join(td, "out.json")
        json.dump({"threads": args.threads, "warmup": args.warmup, "reps": reps,
                   "burst": args.burst, "cases": cases},
                  open(spec, "w"))
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, os.path.join(HERE, "torch_bench.py"), "--spec", spec, "--out", out])
        if p.returncode != 0 or not os.path.exists(out):
            return None, f"torch_bench.py exited with {p.returncode}"
        res = json.load(open(out))
        res["wall_s"] = time.perf_counter() - t0
        return res, None


def add_check(checks, shape, kind, what, err, tol, variant, informational=False):
    """Records a check. An informational one is reported (its "ok" says whether it met tol) but never
    fails the run nor stops a variant from being timed; add_check then returns True."""
    ok = bool(err <= tol)
    checks.append({"shape": shape, "kind": kind, "what": what, "err": err, "tol": tol, "ok": ok,
                   "variant": variant, "informational": informational})
    tag = ("info" if informational else "ok  ") if ok or informational else "FAIL"
    log(f"    check {tag} {what}: {err:.2e} (tol {tol:g}{', informational' if informational else ''})")
    return ok or informational


def run_shape(args, env, B, T, I, H, variants, modes, reps, checks_on, tag):
    tf, keras, resetlstm = env["tf"], env["keras"], env["resetlstm"]
    import tf_variants as V

    sstr = common.shape_str(B, T, I, H)
    log(f"\n=== {tag} (B, T, I, H) = {sstr}: {', '.join(variants)}; {'/'.join(modes)}; {reps} reps")
    t_shape = time.perf_counter()
    d = common.make_data(B, T, I, H)
    flops = common.lstm_flops(B, T, I, H)
    shape = {"B": B, "T": T, "I": I, "H": H, "flops": flops, "results": {}, "checks": []}
    results, checks = shape["results"], shape["checks"]

    builders = {
        "resetlstm": lambda: V.make_resetlstm(resetlstm, d, with_resets=False),
        "resetlstm_resets": lambda: V.make_resetlstm(resetlstm, d, with_resets=True),
        "keras": lambda: V.make_keras(keras, d),
        "naive": lambda: V.make_naive(d),
        "block": lambda: V.make_block(d),
    }
    cases, fwd_out, grads = {}, {}, {}
    for name in [v for v in variants if v in TF_VARIANTS]:
        if name.startswith("resetlstm") and resetlstm is None:
            results[name] = {"status": f"unavailable: {env['resetlstm_error']}"}
            log(f"  {name}: unavailable ({env['resetlstm_error']})")
            continue
        entry = results[name] = {"status": "ok", "compile_s": {}}
        try:
            case = builders[name]()
            for mode in modes:  # first call traces + runs: excluded from the timings
                t0 = time.perf_counter()
                out = case.fwd() if mode == "fwd" else case.fwdbwd()
                entry["compile_s"][mode] = time.perf_counter() - t0
                if checks_on and mode == "fwd":
                    fwd_out[name] = np.asarray(out)
                if checks_on and mode == "fwdbwd":
                    grads[name] = case.to_keras_grads(out)
            if "fwdbwd" in modes:
                sb, det = V.saved_bytes_from_graph(case.graph("fwdbwd"), T)
                entry["saved_bytes_graph"] = sb
                entry["saved_graph_details"] = [list(x) for x in det]
                if case.analytic_saved is not None:
                    entry["saved_bytes"] = case.analytic_saved[0]
                    entry["saved_method"] = case.analytic_saved[1]
                    entry["saved_bytes_graph_incomplete"] = any("unknown" in w for w, _ in det)
                if case.probe_saved is not None and checks_on:
                    try:
                        entry["saved_bytes_runtime"] = case.probe_saved()
                    except Exception as e:  # noqa: BLE001 - informational only
                        entry["saved_bytes_runtime_error"] = f"{type(e).__name__}: {e}"
                else:
                    entry["saved_bytes"] = sb
                    entry["saved_method"] = "graph"
            cases[name] = case
            log(f"  {name}: traced + first call " +
                ", ".join(f"{m} {s:.1f} s" for m, s in entry["compile_s"].items()))
        except Exception as e:  # noqa: BLE001
            entry["status"] = f"error: {type(e).__name__}: {e}"
            log(f"  {name}: ERROR {type(e).__name__}: {e}")
            traceback.print_exc()

    # correctness, once per shape (outside the timing) ---------------------------------------
    if checks_on:
        failed = set()
        ref = {False: common.reference_rows(d, False), True: common.reference_rows(d, True)}
        for name, out in fwd_out.items():
            r = name in ("resetlstm_resets", "naive")
            err = common.max_abs_diff(out[:common.CHECK_ROWS], ref[r])
            if not add_check(checks, sstr, "fwd vs numpy", f"{name} fwd vs float64 numpy reference "
                             f"(first {common.CHECK_ROWS} rows)", err, common.FWD_TOL, name):
                failed.add(name)
        pairs = [("resetlstm", "keras"), ("resetlstm_resets", "naive"), ("block", "keras")]
        for a, b in pairs:
            if a in fwd_out and b in fwd_out:
                err = common.max_abs_diff(fwd_out[a], fwd_out[b])
                if not add_check(checks, sstr, "fwd pairwise", f"{a} fwd vs {b} fwd (all rows)", err,
                                 common.FWD_TOL, a):
                    failed.add(a)
            if a in grads and b in grads:
                names = ["d inputs", "d kernel", "d recurrent_kernel", "d bias"]
                err = max(common.rel_grad_diff(ga, gb) for ga, gb in zip(grads[a], grads[b]))
                if not add_check(checks, sstr, "grad pairwise", f"{a} grads vs {b} grads "
                                 f"(max over {', '.join(names)}; |diff|/max|grad|)", err, common.GRAD_RTOL, a):
                    failed.add(a)
        for name in failed:
            results[name]["status"] = "check_failed: not timed (see checks)"
            cases.pop(name, None)
        del fwd_out, grads

    # more warm-up -----------------------------------------------------------------------------
    for _ in range(args.warmup - 1):
        for case in cases.values():
            for mode in modes:
                case.fwd() if mode == "fwd" else case.fwdbwd()
    mm_fn, mm_flops = V.make_matmul(args.matmul_n)
    for _ in range(args.warmup):
        mm_fn()

    # timing: every rep runs every variant and mode once, the order rotating from rep to rep ------
    times = {n: {m: [] for m in modes} for n in cases}
    mm_times = []
    jobs = [(n, m) for n in cases for m in modes] + [("matmul", None)]
    for rep in range(reps):
        k = rep % len(jobs)
        for name, mode in jobs[k:] + jobs[:k]:
            if name == "matmul":
                mm_times.extend(common.timed_burst(mm_fn, args.burst))
            else:
                case = cases[name]
                times[name][mode].extend(
                    common.timed_burst(case.fwd if mode == "fwd" else case.fwdbwd, args.burst))
        log(f"  rep {rep + 1}/{reps}: " + " | ".join(
            f"{n} " + " ".join(f"{common.fmt_ms(times[n][m][-1])}" for m in modes) for n in cases)
            + f" | matmul {common.fmt_ms(mm_times[-1])} ms")
    for name in cases:
        for mode in modes:
            results[name][mode] = {"times_ms": times[name][mode], **common.summarize(times[name][mode])}
    mm_med = common.summarize(mm_times)["median_ms"]
    gflops = mm_flops / (mm_med / 1e3) / 1e9
    shape["matmul"] = {"n": args.matmul_n, "flops": mm_flops, "times_ms": mm_times, "median_ms": mm_med,
                       "gflops": gflops}
    shape["limit_ms"] = {m: flops[m] / (gflops * 1e9) * 1e3 for m in modes}
    del cases

    # torch (subprocess), right after the TF variants of the same shape --------------------------
    if "torch" in variants:
        if env["torch_version"] is None:
            results["torch"] = {"status": "unavailable: torch not installed"}
        else:
            tres, err = run_torch(args, [{"key": sstr, "B": B, "T": T, "I": I, "H": H, "modes": modes,
                                          "check": checks_on}], reps)
            if tres is None:
                results["torch"] = {"status": f"error: {err}"}
            else:
                env["torch_info"] = {k: v for k, v in tres.items() if k != "cases"}
                c = tres["cases"][0]
                entry = results["torch"] = {"status": "ok", "compile_s": c.get("warmup_s")}
                for ch in c.get("checks", []):
                    if not add_check(checks, sstr, "fwd vs numpy", ch["what"], ch["max_abs_err"], ch["tol"],
                                     "torch"):
                        entry["status"] = "check_failed: timings not used (see checks)"
                if entry["status"] == "ok":
                    for mode in modes:
                        entry[mode] = {"times_ms": c["times_ms"][mode], **common.summarize(c["times_ms"][mode])}
                if "saved_bytes" in c:
                    entry["saved_bytes"] = c["saved_bytes"]
                    entry["saved_method"] = "saved_tensors_hooks"

    # derived: speedups and % of limit ---------------------------------------------------------
    for name, e in results.items():
        if e.get("status") != "ok":
            continue
        e["pct_of_limit"] = {m: 100.0 * shape["limit_ms"][m] / e[m]["median_ms"] for m in modes if m in e}
        base = results.get(BASELINE.get(name, ""), {})
        if base.get("status") == "ok":
            e["speedup"] = {m: e[m]["median_ms"] / base[m]["median_ms"] for m in modes if m in e and m in base}
    shape["wall_s"] = time.perf_counter() - t_shape
    log(f"  --- {sstr} done in {shape['wall_s']:.0f} s; matmul {gflops:.0f} GFLOP/s; medians ms:")
    for name in VARIANT_ORDER:
        e = results.get(name)
        if e is None:
            continue
        if e.get("status") != "ok":
            log(f"    {name:18s} {e['status']}")
            continue
        parts = []
        for m in modes:
            sp = (e.get("speedup") or {}).get(m)
            parts.append(f"{m} {common.fmt_ms(e[m]['median_ms']):>7s} ({e['pct_of_limit'][m]:3.0f} % of limit"
                         + (f", resetlstm {sp:.2f}x faster" if sp is not None else "") + ")")
        log(f"    {name:18s} " + "  ".join(parts))
    return shape


# ----------------------------------------------------------------------------------------------
# the bfloat16 section: float32 vs bfloat16 of resetlstm, keras (mixed_bfloat16) and torch (autocast)
# ----------------------------------------------------------------------------------------------
def run_bf16(args, env, B, T, I, H, reps):
    tf, keras, resetlstm = env["tf"], env["keras"], env["resetlstm"]
    import tf_variants as V

    modes = ["fwd", "fwdbwd"]
    sstr = common.shape_str(B, T, I, H)
    names = [n for n in BF16_VARIANTS if not (n.startswith("torch") and args.no_torch)]
    log(f"\n=== bf16 (B, T, I, H) = {sstr}: {', '.join(names)}; fwd/fwdbwd; {reps} reps")
    t_shape = time.perf_counter()
    d = common.make_data(B, T, I, H)
    shape = {"B": B, "T": T, "I": I, "H": H, "results": {}, "checks": []}
    results, checks = shape["results"], shape["checks"]
    builders = {
        "resetlstm_fp32": lambda: V.make_resetlstm(resetlstm, d, with_resets=False),
        "resetlstm_bf16": lambda: V.make_resetlstm(resetlstm, d, with_resets=False, dtype=tf.bfloat16),
        "keras_fp32": lambda: V.make_keras(keras, d),
        "keras_bf16": lambda: V.make_keras(keras, d, policy="mixed_bfloat16"),
    }
    cases, fwd_out, grads = {}, {}, {}
    for name in [n for n in names if n in BF16_TF_VARIANTS]:
        if name.startswith("resetlstm") and resetlstm is None:
            results[name] = {"status": f"unavailable: {env['resetlstm_error']}"}
            continue
        if args.isa and name in isa_cap.UNSUPPORTED_UNDER_CAP:
            results[name] = {"status": isa_cap.UNSUPPORTED_UNDER_CAP[name]}
            log(f"  {name}: {results[name]['status']}")
            continue
        entry = results[name] = {"status": "ok", "compile_s": {}}
        try:
            case = builders[name]()
            for mode in modes:  # first call traces + runs: excluded from the timings
                t0 = time.perf_counter()
                out = case.fwd() if mode == "fwd" else case.fwdbwd()
                entry["compile_s"][mode] = time.perf_counter() - t0
                if mode == "fwd":
                    entry["output_dtype"] = out.dtype.name
                    fwd_out[name] = np.asarray(tf.cast(out, tf.float32))
                else:
                    grads[name] = case.to_keras_grads(out)
            cases[name] = case
            log(f"  {name}: traced + first call " +
                ", ".join(f"{m} {s:.1f} s" for m, s in entry["compile_s"].items()))
        except Exception as e:  # noqa: BLE001
            entry["status"] = f"error: {type(e).__name__}: {e}"
            log(f"  {name}: ERROR {type(e).__name__}: {e}")
            traceback.print_exc()

    # correctness, outside the timing ----------------------------------------------------------
    failed = set()
    if "resetlstm_fp32" in fwd_out:
        err = common.max_abs_diff(fwd_out["resetlstm_fp32"][:common.CHECK_ROWS], common.reference_rows(d, False))
        if not add_check(checks, sstr, "fwd vs numpy", f"resetlstm_fp32 fwd vs float64 numpy reference (first "
                         f"{common.CHECK_ROWS} rows)", err, common.FWD_TOL, "resetlstm_fp32"):
            failed.add("resetlstm_fp32")
    if "resetlstm_fp32" in fwd_out and "keras_fp32" in fwd_out:
        err = common.max_abs_diff(fwd_out["resetlstm_fp32"], fwd_out["keras_fp32"])
        if not add_check(checks, sstr, "fwd pairwise", "resetlstm_fp32 fwd vs keras_fp32 fwd (all rows)", err,
                         common.FWD_TOL, "keras_fp32"):
            failed.add("keras_fp32")
    for bf, fp, info in (("resetlstm_bf16", "resetlstm_fp32", False), ("keras_bf16", "keras_fp32", True)):
        if bf in fwd_out and fp in fwd_out:
            err = common.max_abs_diff(fwd_out[bf], fwd_out[fp])
            if not add_check(checks, sstr, "bf16 fwd vs fp32", f"{bf} fwd vs {fp} fwd (all rows, max abs diff)",
                             err, common.BF16_TOL, bf, informational=info):
                failed.add(bf)
        if bf in grads and fp in grads:
            err = max(common.rel_grad_diff(ga, gb) for ga, gb in zip(grads[bf], grads[fp]))
            add_check(checks, sstr, "bf16 grads vs fp32", f"{bf} grads vs {fp} grads (max over d inputs, d kernel, "
                      "d recurrent_kernel, d bias; |diff|/max|grad|; informational)", err, common.BF16_TOL, bf,
                      informational=True)
    for name in failed:
        results[name]["status"] = "check_failed: not timed (see checks)"
        cases.pop(name, None)
    del fwd_out, grads

    for _ in range(args.warmup - 1):
        for case in cases.values():
            for mode in modes:
                case.fwd() if mode == "fwd" else case.fwdbwd()

    # timing: every rep runs every variant and mode once, the order rotating from rep to rep ------
    times = {n: {m: [] for m in modes} for n in cases}
    jobs = [(n, m) for n in cases for m in modes]
    for rep in range(reps):
        k = rep % max(len(jobs), 1)
        for name, mode in jobs[k:] + jobs[:k]:
            case = cases[name]
            times[name][mode].extend(
                common.timed_burst(case.fwd if mode == "fwd" else case.fwdbwd, args.burst))
        log(f"  rep {rep + 1}/{reps}: " + " | ".join(
            f"{n} " + " ".join(f"{common.fmt_ms(times[n][m][-1])}" for m in modes) for n in cases))
    for name in cases:
        for mode in modes:
            results[name][mode] = {"times_ms": times[name][mode], **common.summarize(times[name][mode])}
    del cases

    # torch float32 and autocast bfloat16 (one subprocess, interleaved) -------------------------
    tnames = [n for n in names if n in BF16_TORCH]
    if tnames:
        if env["torch_version"] is None:
            for n in tnames:
                results[n] = {"status": "unavailable: torch not installed"}
        else:
            tres, err = run_torch(args, [{"key": sstr, "B": B, "T": T, "I": I, "H": H, "modes": modes,
                                          "check": True, "precisions": [BF16_TORCH[n] for n in tnames]}], reps)
            for n in tnames:
                if tres is None:
                    results[n] = {"status": f"error: {err}"}
                    continue
                env["torch_info"] = env["torch_info"] or {k: v for k, v in tres.items() if k != "cases"}
                c = tres["cases"][0]["precisions"][BF16_TORCH[n]]
                if c.get("status", "ok") != "ok":  # e.g. no bf16 LSTM in torch's oneDNN for this ISA
                    results[n] = {"status": c["status"]}
                    continue
                entry = results[n] = {"status": "ok", "compile_s": c.get("warmup_s")}
                for ch in c.get("checks", []):
                    info = bool(ch.get("informational"))
                    if not add_check(checks, sstr, "bf16 fwd vs fp32" if info else "fwd vs numpy", ch["what"],
                                     ch["max_abs_err"], ch["tol"], n, informational=info):
                        entry["status"] = "check_failed: timings not used (see checks)"
                if entry["status"] == "ok":
                    for mode in modes:
                        entry[mode] = {"times_ms": c["times_ms"][mode], **common.summarize(c["times_ms"][mode])}

    # derived ratios ---------------------------------------------------------------------------
    ref = results.get("resetlstm_fp32", {})
    for name, e in results.items():
        if e.get("status") != "ok":
            continue
        if ref.get("status") == "ok":
            e["vs_resetlstm_fp32"] = {m: ref[m]["median_ms"] / e[m]["median_ms"] for m in modes}
        fp = results.get(BF16_VARIANTS[name]["fp32"] or "", {})
        if fp.get("status") == "ok":
            e["bf16_speedup"] = {m: fp[m]["median_ms"] / e[m]["median_ms"] for m in modes}
    rb = results.get("resetlstm_bf16", {})
    shape["resetlstm_bf16_speedup_over"] = {}
    for peer in ("keras_bf16", "torch_bf16"):
        pe = results.get(peer, {})
        if rb.get("status") == "ok" and pe.get("status") == "ok":
            shape["resetlstm_bf16_speedup_over"][peer] = {m: pe[m]["median_ms"] / rb[m]["median_ms"] for m in modes}
    shape["wall_s"] = time.perf_counter() - t_shape
    log(f"  --- bf16 {sstr} done in {shape['wall_s']:.0f} s; medians ms:")
    for name in BF16_VARIANTS:
        e = results.get(name)
        if e is None:
            continue
        if e.get("status") != "ok":
            log(f"    {name:15s} {e['status']}")
            continue
        sp = e.get("bf16_speedup") or {}
        log(f"    {name:15s} " + "  ".join(
            f"{m} {common.fmt_ms(e[m]['median_ms']):>7s}" + (f" (bf16 speedup {sp[m]:.2f}x)" if m in sp else "")
            for m in modes))
    return shape


# ----------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    if args.isa:  # before TensorFlow, torch (a subprocess) and resetlstm's kernels are loaded
        log(f"capping every side to {args.isa}: {isa_cap.apply(args.isa)}")
    log(f"resetlstm bench: {'QUICK smoke run' if args.quick else 'full run'}; out dir {args.out}; "
        f"{args.threads} threads")
    tf, keras = import_tf(args.threads)
    resetlstm, build_info, rerr = import_resetlstm()
    tv = None if args.no_torch else torch_available()
    machine = common.machine_info()
    isa_evidence = None
    if args.isa:
        try:
            isa_evidence = isa_cap.verify(args.isa, build_info, with_torch=tv is not None)
        except RuntimeError as e:
            log(f"ERROR: {e}")
            return 2
        log(isa_cap.describe(isa_evidence))
    name = args.name or (f"cpu-{common.host_kind(machine['cpu'], args.threads)}"
                         + (f"-{args.isa}-capped" if args.isa else "") + ("-quick" if args.quick else ""))
    log(f"  CPU {machine['cpu'].get('model')}, {machine['cores_available']} cores; TF {tf.__version__}, "
        f"keras {keras.__version__}, torch {tv or 'not available'}; resetlstm "
        f"{build_info if resetlstm else 'UNAVAILABLE: ' + str(rerr)}")
    env = {"tf": tf, "keras": keras, "resetlstm": resetlstm, "resetlstm_error": rerr, "torch_version": tv,
           "torch_info": None}
    variants = [v for v in VARIANT_ORDER if not (v == "torch" and args.no_torch)]
    sweep_variants = [v for v in SWEEP_VARIANTS if v in variants]
    res = {
        "schema": 2,  # 2: "sweep" is a list of series with fwd and fwd+bwd; "bf16" added
        "name": name,
        "quick": args.quick,
        "command": " ".join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "bench/run.py"]
                            + (sys.argv[1:] if argv is None else list(argv))),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                     "torch": tv, "resetlstm": getattr(resetlstm, "__version__", None)},
        "resetlstm_build_info": build_info,
        "isa_cap": isa_evidence,  # None: nothing capped (the CPU's own best paths everywhere)
        "resetlstm_error": rerr,
        "settings": {"reps": args.reps, "warmup": args.warmup, "sweep_reps": args.sweep_reps,
                     "burst": args.burst,
                     "threads": args.threads, "tf_intra_op_threads": args.threads,
                     "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
                     "matmul_n": args.matmul_n, "reset_rate": common.RESET_RATE, "dtype": "float32",
                     "fwd_tol": common.FWD_TOL, "grad_rtol": common.GRAD_RTOL, "bf16_tol": common.BF16_TOL},
        "variants": VARIANTS,
        "variant_order": variants,
        "baseline_for_speedup": BASELINE,
        "flops_formula": "fwd 2*B*T*(I+H)*4H; fwd+bwd 3x fwd",
        "shapes": [],
        "sweep": [],
        "bf16_variants": BF16_VARIANTS,
        "bf16": [],
        "notes": [],
    }
    if args.quick:
        res["notes"].append("--quick smoke run: tiny shapes and 1-2 reps; the timings mean nothing.")

    def save():
        res["loadavg_at_end"] = common.loadavg()
        res["peak_rss_mib"] = common.peak_rss_mib()
        res["total_s"] = time.perf_counter() - t_start
        res["torch_info"] = env["torch_info"]
        base = os.path.join(args.out, name)
        with open(base + ".json", "w") as f:
            json.dump(res, f, indent=1, default=str)
        with open(base + ".md", "w") as f:
            f.write(report.markdown(res))
        report.plot(res, base + ".png")
        return base

    for (B, T, I, H) in args.shape_list:
        res["shapes"].append(run_shape(args, env, B, T, I, H, variants, ["fwd", "fwdbwd"], args.reps,
                                       True, "shape"))
        save()  # partial results survive an interrupted run
    for sid, T, I, H, batches, style in args.sweep_series:
        series = {"id": sid, "T": T, "I": I, "H": H, "variants": sweep_variants, "modes": SWEEP_MODES,
                  "reps": args.sweep_reps, "batches": batches, "linestyle": style, "points": []}
        res["sweep"].append(series)
        for B in batches:
            series["points"].append(run_shape(args, env, B, T, I, H, sweep_variants, SWEEP_MODES,
                                              args.sweep_reps, False, f"sweep {sid}"))
            series["summary"] = report.sweep_summary(series)
            save()
    if res["sweep"]:
        res["notes"].append(f"Batch sweeps: fwd and fwd+bwd, {', '.join(sweep_variants)} only, median of "
                            f"{args.sweep_reps} reps (fewer than the main table to keep the run short); no "
                            f"correctness checks (the same code is checked at the main shapes)")
    for (B, T, I, H) in args.bf16_shape_list:
        res["bf16"].append(run_bf16(args, env, B, T, I, H, args.reps))
        save()
    base = save()
    log("\n" + report.markdown(res))
    log(f"wrote {base}.json {base}.md {base}.png in {res['total_s']:.0f} s")
    bad = [c for sh in res["shapes"] + res["bf16"] for c in sh["checks"]
           if not c["ok"] and not c.get("informational")]
    # torch is compared when installed; its absence, or a precision it cannot run on this CPU, is
    # reported in the table, not a failure.
    missing = [f"{v}@{common.shape_str(*(sh[k] for k in 'BTIH'))}: {e['status']}"
               for sh in res["shapes"] + res["bf16"] for v, e in sh["results"].items()
               if e.get("status") != "ok"
               and not (v.startswith("torch") and str(e.get("status", "")).startswith("unavailable"))
               and not str(e.get("status", "")).startswith("unsupported")]
    if bad or missing:
        log("PROBLEMS: " + "; ".join([f"check failed: {c['what']} @ {c['shape']}" for c in bad] + missing))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
