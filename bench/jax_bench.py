"""JAX benchmark: resetlstm.jax against the LSTMs JAX users run today, on the CPU.

    python bench/jax_bench.py [--quick] [--out bench/results] [--reps 7]

Times, side by side in one process (median of >= 5 reps after warm-up, variants interleaved rep
by rep; fwd and fwd+bwd, float32, everything jitted):

- resetlstm: ``resetlstm.jax.reset_lstm`` with 2 % random resets (one XLA FFI call each way);
- scan: ``jax.lax.scan`` over the Flax-style cell, the carry reset with ``jnp.where`` (the
  recurrent-RL pattern), the same resets; per step ``x_t @ kernel + h @ recurrent_kernel + b``;
- scan_hoisted: the same with the input projection ``x @ kernel`` hoisted out of the scan;
- keras: ``keras.layers.LSTM`` on the JAX backend, same weights, no resets (it has none);
- the matmul limit: the LSTM's matmul FLOPs over the GFLOP/s of one jitted ``jnp.dot`` of
  2048 x 2048 matrices, timed in the same rep loop.

Main shapes, then a batch sweep at T = 50, I = H = 256. Writes JSON and a markdown table named
after the CPU into --out. Correctness: the forward outputs of every variant against the float64
numpy reference (first rows), and resetlstm's gradients against the scan's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a CPU benchmark

import numpy as np  # noqa: E402

import common  # noqa: E402

MAIN_SHAPES = [(64, 50, 128, 128), (256, 50, 256, 256), (1024, 20, 512, 512)]
SWEEP = ((50, 256, 256), [16, 32, 64, 128, 256, 1024])
QUICK_SHAPES = [(4, 6, 8, 8)]
QUICK_SWEEP = ((5, 16, 16), [2, 8])
MODES = ("fwd", "fwdbwd")

VARIANTS = {
    "resetlstm": "resetlstm.jax.reset_lstm with resets [B, T] (2 % of (b, t) True at random): "
                 "one XLA FFI call of the fused kernels each way",
    "scan": "jax.lax.scan over T of the Flax-style LSTM cell (z = x_t @ kernel + h @ "
            "recurrent_kernel + bias, gates i, f, c, o), the carry (h, c) reset by "
            "jnp.where(resets[:, t, None], 0, carry) before each step; the same resets",
    "scan_hoisted": "as scan, with the input projection x @ kernel computed for all T as one GEMM "
                    "before the scan",
    "keras": "keras.layers.LSTM(H, return_sequences=True) on the JAX backend (jitted "
             "stateless_call), same weights, no resets (Keras has none)",
}
BASELINE = "resetlstm"


def log(msg=""):
    print(msg, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 1 rep: a smoke run")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    ap.add_argument("--name", default=None, help="file name stem (default jax-cpu-<cpu>-<cores>c)")
    ap.add_argument("--reps", type=int, default=None, help="timed reps (default 7; quick 1)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up calls (default 2; quick 1)")
    ap.add_argument("--shapes", default=None, help="main shapes 'B,T,I,H;...' ('' to skip)")
    ap.add_argument("--sweep-batches", default=None, help="batches of the T=50, I=H=256 sweep "
                    "(default 16,32,64,128,256,1024; '' to skip)")
    ap.add_argument("--no-keras", action="store_true", help="leave keras.layers.LSTM out")
    a = ap.parse_args(argv)
    for flag in ("reps", "warmup"):
        value = getattr(a, flag)
        if value is not None and value < 1:
            ap.error(f"--{flag} must be >= 1, got {value}")
    a.reps = a.reps or (1 if a.quick else 7)
    a.warmup = a.warmup or (1 if a.quick else 2)
    a.matmul_n = 256 if a.quick else 2048
    if a.shapes is None:
        a.shape_list = QUICK_SHAPES if a.quick else MAIN_SHAPES
    else:
        a.shape_list = [tuple(int(v) for v in s.split(",")) for s in a.shapes.split(";") if s]
    tih, batches = QUICK_SWEEP if a.quick else SWEEP
    if a.sweep_batches is not None:
        batches = [int(v) for v in a.sweep_batches.split(",") if v]
    a.sweep = (tih, batches)
    return a


# ---- the variants -----------------------------------------------------------------------------

def lstm_scan(x, kernel, recurrent_kernel, bias, resets, hoisted):
    """The recurrent-RL pattern: scan over T, carry reset with jnp.where. Batch-major x."""
    import jax
    import jax.numpy as jnp

    B, H = x.shape[0], recurrent_kernel.shape[0]
    xs = jnp.swapaxes(x, 0, 1)
    if hoisted:
        xs = xs @ kernel + bias

    def step(carry, inp):
        x_t, reset = inp
        h, c = (jnp.where(reset[:, None], 0.0, s) for s in carry)
        z = (x_t if hoisted else x_t @ kernel + bias) + h @ recurrent_kernel
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((B, H), x.dtype)
    _, ys = jax.lax.scan(step, (zeros, zeros), (xs, jnp.swapaxes(resets, 0, 1)))
    return jnp.swapaxes(ys, 0, 1)


def make_variant(name, d):
    """(fwd, fwdbwd) jitted callables of no arguments and their first-row outputs' getter."""
    import jax
    import jax.numpy as jnp

    import resetlstm.jax as rj

    x, k, r, b = (jnp.asarray(d[n]) for n in ("x", "kernel", "recurrent_kernel", "bias"))
    resets, up = jnp.asarray(d["resets"]), jnp.asarray(d["upstream"])
    if name == "keras":
        import keras

        B, T, I = d["x"].shape
        layer = keras.layers.LSTM(k.shape[1] // 4, return_sequences=True)
        layer.build((B, T, I))
        layer.set_weights([d["kernel"], d["recurrent_kernel"], d["bias"]])
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        def outputs(tv, x):
            return layer.stateless_call(tv, ntv, x)[0]

        fwd = jax.jit(outputs)
        fwdbwd = jax.jit(jax.grad(lambda tv, x: jnp.sum(outputs(tv, x) * up), argnums=(0, 1)))
        return (lambda: fwd(tv, x)), (lambda: fwdbwd(tv, x))
    if name == "resetlstm":
        def outputs(x, k, r, b):
            return rj.reset_lstm(x, k, r, b, resets=resets)[0]
    else:
        def outputs(x, k, r, b):
            return lstm_scan(x, k, r, b, resets, hoisted=name == "scan_hoisted")
    fwd = jax.jit(outputs)
    fwdbwd = jax.jit(jax.grad(lambda *a: jnp.sum(outputs(*a) * up), argnums=(0, 1, 2, 3)))
    return (lambda: fwd(x, k, r, b)), (lambda: fwdbwd(x, k, r, b))


def make_matmul(n):
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return (lambda: dot(a, a)), 2.0 * n ** 3


def timed(fn):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return (time.perf_counter() - t0) * 1e3


# ---- one shape --------------------------------------------------------------------------------

def run_shape(args, B, T, I, H, variants, checks_on):
    d = common.make_data(B, T, I, H)
    fns, results, checks = {}, {}, []
    for v in variants:
        try:
            fns[v] = make_variant(v, d)
            results[v] = {"status": "ok"}
        except Exception as e:  # noqa: BLE001 - reported in the table
            results[v] = {"status": f"error: {type(e).__name__}: {e}"}
    mm, mm_flops = make_matmul(args.matmul_n)
    jobs = [(v, m) for v in fns for m in MODES] + [("matmul", None)]
    call = {(v, m): fns[v][MODES.index(m)] for v in fns for m in MODES}
    call[("matmul", None)] = mm
    for job in jobs:  # compile, warm up
        for _ in range(args.warmup):
            timed(call[job])
    times = {job: [] for job in jobs}
    for _ in range(args.reps):  # interleaved: rep by rep, every job once
        for job in jobs:
            times[job].append(timed(call[job]))
    mm_med = common.summarize(times[("matmul", None)])["median_ms"]
    gflops = mm_flops / (mm_med * 1e-3) / 1e9
    flops = common.lstm_flops(B, T, I, H)
    limit = {m: flops[m] / (gflops * 1e9) * 1e3 for m in MODES}
    for v in fns:
        for m in MODES:
            results[v][m] = common.summarize(times[(v, m)])
        results[v]["pct_of_limit"] = {m: 100.0 * limit[m] / results[v][m]["median_ms"]
                                      for m in MODES}
    if BASELINE in fns:
        base = results[BASELINE]
        for v in fns:
            if v != BASELINE:
                results[v]["speedup"] = {m: results[v][m]["median_ms"] / base[m]["median_ms"]
                                         for m in MODES}
    if checks_on:
        checks = run_checks(d, fns)
    return {"B": B, "T": T, "I": I, "H": H, "results": results, "limit_ms": limit,
            "matmul": {"n": args.matmul_n, "median_ms": mm_med, "gflops": gflops},
            "checks": checks}


def run_checks(d, fns):
    """Forward outputs against the float64 reference (first rows); resetlstm's gradients
    against the scan's (relative to the largest gradient)."""
    checks = []
    for v, (fwd, fwdbwd) in fns.items():
        want = common.reference_rows(d, with_resets=v != "keras")
        err = common.max_abs_diff(np.asarray(fwd())[:common.CHECK_ROWS], want)
        checks.append({"what": f"{v} fwd vs float64 reference", "err": err,
                       "tol": common.FWD_TOL, "ok": err <= common.FWD_TOL})
    if "resetlstm" in fns and "scan" in fns:
        ours, theirs = fns["resetlstm"][1](), fns["scan"][1]()
        for name, a, b in zip(("x", "kernel", "recurrent_kernel", "bias"), ours, theirs):
            err = common.rel_grad_diff(a, b)
            checks.append({"what": f"resetlstm d_{name} vs scan", "err": err,
                           "tol": common.GRAD_RTOL, "ok": err <= common.GRAD_RTOL})
    return checks


# ---- report -----------------------------------------------------------------------------------

def markdown(res):
    m = res["machine"]
    cpu = m["cpu"]
    lines = [f"# resetlstm.jax benchmark — {res['name']}", "",
             f"- machine: {cpu.get('model')} ({cpu.get('vendor')} family {cpu.get('family')} model "
             f"{cpu.get('model_number')}, {common.microarchitecture(cpu) or 'unknown'}), "
             f"{m['cores_available']} cores; XLA's CPU client with its default intra-op pool",
             f"- versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}",
             f"- timing: median of {res['settings']['reps']} reps after "
             f"{res['settings']['warmup']} warm-up calls, variants interleaved rep by rep in one "
             f"process; float32; load average at start {m['loadavg_at_start']}, at end "
             f"{res.get('loadavg_at_end')}",
             f"- command: `{res['command']}`, {res.get('total_s', 0):.0f} s", "",
             "Speedup = the variant's median time / resetlstm's (>1: resetlstm faster). Limit = "
             "the LSTM's matmul FLOPs (fwd 2·B·T·(I+H)·4H, fwd+bwd 3×) / the GFLOP/s of one "
             "jitted float32 jnp.dot of 2048×2048 matrices in the same rep loop; % of limit = "
             "limit time / variant time.", ""]
    for v, text in VARIANTS.items():
        lines.append(f"- **{v}**: {text}")
    lines.append("")
    for sh in res["shapes"]:
        lines += [f"### (B, T, I, H) = {common.shape_str(sh['B'], sh['T'], sh['I'], sh['H'])}", "",
                  f"matmul {sh['matmul']['gflops']:.0f} GFLOP/s → limit "
                  f"{common.fmt_ms(sh['limit_ms']['fwd'])} ms fwd, "
                  f"{common.fmt_ms(sh['limit_ms']['fwdbwd'])} ms fwd+bwd", "",
                  "| variant | fwd ms | fwd+bwd ms | resetlstm speedup fwd | fwd+bwd | "
                  "% of limit fwd | fwd+bwd |", "|---|---:|---:|---:|---:|---:|---:|"]
        for v, e in sh["results"].items():
            if e["status"] != "ok":
                lines.append(f"| {v} | {e['status']} | | | | | |")
                continue
            sp = e.get("speedup")
            lines.append(
                f"| {v} | {common.fmt_ms(e['fwd']['median_ms'])} | "
                f"{common.fmt_ms(e['fwdbwd']['median_ms'])} | "
                + (f"{sp['fwd']:.2f}× | {sp['fwdbwd']:.2f}× | " if sp else "– | – | ")
                + f"{e['pct_of_limit']['fwd']:.0f} % | {e['pct_of_limit']['fwdbwd']:.0f} % |")
        bad = [c for c in sh["checks"] if not c["ok"]]
        lines += ["", f"checks: {len(sh['checks']) - len(bad)}/{len(sh['checks'])} ok"
                  + "".join(f"; FAILED {c['what']} ({c['err']:.2e} > {c['tol']:.0e})" for c in bad),
                  ""]
    if res["sweep"]["points"]:
        sw = res["sweep"]
        vs = [v for v in sw["variants"] if v != BASELINE]
        lines += [f"### Batch sweep: T = {sw['T']}, I = H = {sw['H']}, fwd+bwd", "",
                  "| B | resetlstm ms | " + " | ".join(f"{v} ms" for v in vs) + " | "
                  + " | ".join(f"speedup vs {v}" for v in vs) + " | resetlstm % of limit | "
                  + " | ".join(f"{v} % of limit" for v in vs) + " |",
                  "|---:|" + "---:|" * (2 + 3 * len(vs))]
        for p in sw["points"]:
            r = p["results"]
            ok = [v for v in vs if r[v]["status"] == "ok"]
            lines.append(
                f"| {p['B']} | {common.fmt_ms(r[BASELINE]['fwdbwd']['median_ms'])} | "
                + " | ".join(common.fmt_ms(r[v]["fwdbwd"]["median_ms"]) if v in ok else "–"
                             for v in vs) + " | "
                + " | ".join(f"{r[v]['speedup']['fwdbwd']:.2f}×" if v in ok else "–" for v in vs)
                + f" | {r[BASELINE]['pct_of_limit']['fwdbwd']:.0f} % | "
                + " | ".join(f"{r[v]['pct_of_limit']['fwdbwd']:.0f} %" if v in ok else "–"
                             for v in vs) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    import jax

    import resetlstm.jax  # noqa: F401  (fails here, clearly, without the JAX binding)
    from resetlstm import _version
    from resetlstm.jax import _ffi

    variants = [v for v in VARIANTS if not (v == "keras" and args.no_keras)]
    versions = {"jax": jax.__version__, "jaxlib": jax.lib.__version__, "numpy": np.__version__,
                "resetlstm": _version.__version__}
    if "keras" in variants:
        try:
            import keras

            versions["keras"] = keras.__version__
        except ImportError as e:
            variants.remove("keras")
            log(f"keras not available ({e}): left out")
    machine = common.machine_info()
    threads = machine["cores_available"]
    name = args.name or (f"jax-cpu-{common.host_kind(machine['cpu'], threads)}"
                         + ("-quick" if args.quick else ""))
    log(f"resetlstm.jax bench{' (QUICK)' if args.quick else ''}: {machine['cpu'].get('model')}, "
        f"{threads} cores; {versions}; kernels {_ffi._jax_ffi.selected_isa()}")
    res = {
        "schema": 1, "name": name, "quick": args.quick,
        "command": " ".join(["bench/jax_bench.py"] + (sys.argv[1:] if argv is None
                                                      else list(argv))),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
        "versions": versions,
        "settings": {"reps": args.reps, "warmup": args.warmup, "matmul_n": args.matmul_n,
                     "reset_rate": common.RESET_RATE, "dtype": "float32"},
        "variants": {v: VARIANTS[v] for v in variants}, "shapes": [],
        "sweep": {"T": args.sweep[0][0], "I": args.sweep[0][1], "H": args.sweep[0][2],
                  "variants": variants, "batches": args.sweep[1], "points": []},
    }
    if args.quick:
        res["notes"] = ["--quick smoke run: tiny shapes, 1 rep; the timings mean nothing"]

    def save():
        res["loadavg_at_end"] = common.loadavg()
        res["total_s"] = time.perf_counter() - t_start
        base = os.path.join(args.out, name)
        with open(base + ".json", "w") as f:
            json.dump(res, f, indent=1, default=str)
        with open(base + ".md", "w") as f:
            f.write(markdown(res))
        return base

    for B, T, I, H in args.shape_list:
        sh = run_shape(args, B, T, I, H, variants, checks_on=True)
        res["shapes"].append(sh)
        log(f"  {common.shape_str(B, T, I, H)}: " + ", ".join(
            f"{v} {common.fmt_ms(e['fwdbwd']['median_ms'])} ms" if e["status"] == "ok"
            else f"{v} {e['status']}" for v, e in sh["results"].items()))
        save()
    T, I, H = args.sweep[0]
    for B in args.sweep[1]:
        p = run_shape(args, B, T, I, H, variants, checks_on=False)
        res["sweep"]["points"].append(p)
        ms = p["results"][BASELINE]["fwdbwd"]["median_ms"]
        log(f"  sweep B={B}: resetlstm {common.fmt_ms(ms)} ms fwd+bwd")
        save()
    base = save()
    log("\n" + markdown(res))
    log(f"wrote {base}.json {base}.md in {res['total_s']:.0f} s")
    bad = [c["what"] for sh in res["shapes"] for c in sh["checks"] if not c["ok"]]
    failed = [f"{v}: {e['status']}" for sh in res["shapes"] + res["sweep"]["points"]
              for v, e in sh["results"].items() if e["status"] != "ok"]
    if bad or failed:
        log("PROBLEMS: " + "; ".join(bad + failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
