"""resetlstm benchmark suite: one command, JSON + markdown table + PNG plot.

    python bench/run.py [--quick] [--out bench/results]

Times, side by side in one process (median of >= 5 reps after warm-up, fwd and fwd+bwd, float32):
resetlstm (no resets, 2 % random resets), keras.layers.LSTM (same weights), the naive per-row reset loop
(tf.while_loop, input projection hoisted), tf.raw_ops.BlockLSTM (V1), torch.nn.LSTM (subprocess, when
torch is installed) and the matmul limit. See bench/README.md.
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
import report  # noqa: E402

MAIN_SHAPES = [(64, 50, 128, 128), (256, 50, 256, 256), (1024, 20, 512, 512)]
SWEEP_BATCHES = [32, 64, 128, 256, 512, 1024, 2048, 4096]
SWEEP_TIH = (50, 256, 256)
QUICK_SHAPES = [(4, 6, 8, 8), (8, 5, 16, 16)]
QUICK_SWEEP_BATCHES = [2, 8]
QUICK_SWEEP_TIH = (5, 8, 8)

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


def log(msg=""):
    print(msg, flush=True)


def parse_shapes(text):
    return [tuple(int(v) for v in s.split(",")) for s in text.split(";") if s.strip()]


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
    ap.add_argument("--threads", type=int, default=None,
                    help="TF intra-op threads and torch threads (default: cores available)")
    ap.add_argument("--matmul-n", type=int, default=None, help="size of the square matmul (default 2048)")
    ap.add_argument("--shapes", default=None, help="override main shapes: 'B,T,I,H;B,T,I,H'")
    ap.add_argument("--sweep-batches", default=None, help="override sweep batch sizes: '32,64,...'; "
                                                          "'' to skip the sweep")
    ap.add_argument("--no-torch", action="store_true", help="skip torch.nn.LSTM")
    a = ap.parse_args(argv)
    q = a.quick
    a.reps = a.reps or (2 if q else 9)
    a.warmup = a.warmup or (1 if q else 2)
    a.sweep_reps = a.sweep_reps or (1 if q else 5)
    a.threads = a.threads or common.default_threads()
    a.matmul_n = a.matmul_n or (256 if q else 2048)
    a.shape_list = parse_shapes(a.shapes) if a.shapes else (QUICK_SHAPES if q else MAIN_SHAPES)
    if a.sweep_batches is not None:
        a.batch_list = [int(v) for v in a.sweep_batches.split(",") if v.strip()]
    else:
        a.batch_list = QUICK_SWEEP_BATCHES if q else SWEEP_BATCHES
    a.sweep_tih = QUICK_SWEEP_TIH if q else SWEEP_TIH
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
        json.dump({"threads": args.threads, "warmup": args.warmup, "reps": reps, "cases": cases},
                  open(spec, "w"))
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, os.path.join(HERE, "torch_bench.py"), "--spec", spec, "--out", out])
        if p.returncode != 0 or not os.path.exists(out):
            return None, f"torch_bench.py exited with {p.returncode}"
        res = json.load(open(out))
        res["wall_s"] = time.perf_counter() - t0
        return res, None


def add_check(checks, shape, kind, what, err, tol, variant):
    ok = bool(err <= tol)
    checks.append({"shape": shape, "kind": kind, "what": what, "err": err, "tol": tol, "ok": ok,
                   "variant": variant})
    log(f"    check {'ok  ' if ok else 'FAIL'} {what}: {err:.2e} (tol {tol:g})")
    return ok


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
                mm_times.append(common.timed(mm_fn)[0])
            else:
                case = cases[name]
                times[name][mode].append(common.timed(case.fwd if mode == "fwd" else case.fwdbwd)[0])
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
def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    log(f"resetlstm bench: {'QUICK smoke run' if args.quick else 'full run'}; out dir {args.out}; "
        f"{args.threads} threads")
    tf, keras = import_tf(args.threads)
    resetlstm, build_info, rerr = import_resetlstm()
    tv = None if args.no_torch else torch_available()
    machine = common.machine_info()
    name = args.name or (f"cpu-{common.host_kind(machine['cpu'], args.threads)}" + ("-quick" if args.quick else ""))
    log(f"  CPU {machine['cpu'].get('model')}, {machine['cores_available']} cores; TF {tf.__version__}, "
        f"keras {keras.__version__}, torch {tv or 'not available'}; resetlstm "
        f"{build_info if resetlstm else 'UNAVAILABLE: ' + str(rerr)}")
    env = {"tf": tf, "keras": keras, "resetlstm": resetlstm, "resetlstm_error": rerr, "torch_version": tv,
           "torch_info": None}
    variants = [v for v in VARIANT_ORDER if not (v == "torch" and args.no_torch)]
    sweep_variants = [v for v in SWEEP_VARIANTS if v in variants]
    res = {
        "schema": 1,
        "name": name,
        "quick": args.quick,
        "command": " ".join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "bench/run.py"]
                            + (sys.argv[1:] if argv is None else list(argv))),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                     "torch": tv, "resetlstm": getattr(resetlstm, "__version__", None)},
        "resetlstm_build_info": build_info,
        "resetlstm_error": rerr,
        "settings": {"reps": args.reps, "warmup": args.warmup, "sweep_reps": args.sweep_reps,
                     "threads": args.threads, "tf_intra_op_threads": args.threads,
                     "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
                     "matmul_n": args.matmul_n, "reset_rate": common.RESET_RATE, "dtype": "float32",
                     "fwd_tol": common.FWD_TOL, "grad_rtol": common.GRAD_RTOL},
        "variants": VARIANTS,
        "variant_order": variants,
        "baseline_for_speedup": BASELINE,
        "flops_formula": "fwd 2*B*T*(I+H)*4H; fwd+bwd 3x fwd",
        "shapes": [],
        "sweep": None,
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
    if args.batch_list:
        T, I, H = args.sweep_tih
        res["sweep"] = {"T": T, "I": I, "H": H, "variants": sweep_variants, "mode": "fwdbwd",
                        "reps": args.sweep_reps, "batches": args.batch_list, "points": [],
                        "note": f"fwd+bwd only, {', '.join(sweep_variants)} only, median of {args.sweep_reps} "
                                f"reps (fewer than the main table to keep the run short); no correctness "
                                f"checks (the same code is checked at the main shapes)"}
        for B in args.batch_list:
            res["sweep"]["points"].append(run_shape(args, env, B, T, I, H, sweep_variants, ["fwdbwd"],
                                                    args.sweep_reps, False, "sweep"))
            save()
        res["notes"].append(res["sweep"]["note"])
    base = save()
    log("\n" + report.markdown(res))
    log(f"wrote {base}.json {base}.md {base}.png in {res['total_s']:.0f} s")
    bad = [c for sh in res["shapes"] for c in sh["checks"] if not c["ok"]]
    # torch is compared when installed; its absence is reported in the table, not a failure.
    missing = [f"{v}@{common.shape_str(*(sh[k] for k in 'BTIH'))}: {e['status']}"
               for sh in res["shapes"] for v, e in sh["results"].items()
               if e.get("status") != "ok"
               and not (v == "torch" and str(e.get("status", "")).startswith("unavailable"))]
    if bad or missing:
        log("PROBLEMS: " + "; ".join([f"check failed: {c['what']} @ {c['shape']}" for c in bad] + missing))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
