"""Keras drop-in features, timed side by side: recurrent dropout, mixed precision, Bidirectional.

    python bench/dropin_bench.py [--quick] [--shapes B,T,I,H;...] [--reps N] [--out DIR]

Layers are called as a model calls them: inside one tf.function, training=True, under a
GradientTape, loss = reduce_sum(outputs * upstream), gradients with respect to the inputs and every
weight (fwd+bwd). Every rep runs every case once, in an order that rotates from rep to rep (the
machine is shared and noisy: read the ratios); medians after warm-up. Writes
<out>/dropin-cpu-<host-kind>.json (every timing, machine, versions) and .md (the table).

Cases (same weights everywhere; recurrent dropout rate 0.25):
- resetlstm / keras: ResetLSTM / keras.layers.LSTM, no dropout
- + recurrent_dropout: the same layer with recurrent_dropout=0.25 (a fresh mask per call; keras
  then runs its per-gate Python-level loop, implementation 1, as it must: cuDNN has no recurrent
  dropout)
- op + fixed mask: resetlstm.reset_lstm with a fixed [B, H] recurrent_dropout_mask vs without, the
  kernel's own cost of the mask
- mixed_bfloat16 / mixed_float16: the layer under that Keras policy (float32 weights)
- Bidirectional: keras.layers.Bidirectional over each layer (concat)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a CPU benchmark

import numpy as np  # noqa: E402

import common  # noqa: E402

RATE = 0.25
# (key, label, builder kwargs); the baseline of each ratio is named in RATIOS
CASES = [
    ("resetlstm", "ResetLSTM", dict(cls="resetlstm")),
    ("resetlstm_rd", "ResetLSTM, recurrent_dropout=0.25", dict(cls="resetlstm", rd=RATE)),
    ("op", "reset_lstm op", dict(op=True)),
    ("op_mask", "reset_lstm op + fixed recurrent_dropout_mask", dict(op=True, mask=True)),
    ("keras", "keras.layers.LSTM", dict(cls="keras")),
    ("keras_rd", "keras.layers.LSTM, recurrent_dropout=0.25", dict(cls="keras", rd=RATE)),
    ("resetlstm_bf16", "ResetLSTM, mixed_bfloat16", dict(cls="resetlstm", policy="mixed_bfloat16")),
    ("keras_bf16", "keras.layers.LSTM, mixed_bfloat16", dict(cls="keras", policy="mixed_bfloat16")),
    ("resetlstm_f16", "ResetLSTM, mixed_float16", dict(cls="resetlstm", policy="mixed_float16")),
    ("keras_f16", "keras.layers.LSTM, mixed_float16", dict(cls="keras", policy="mixed_float16")),
    ("resetlstm_bi", "Bidirectional(ResetLSTM)", dict(cls="resetlstm", bi=True)),
    ("keras_bi", "Bidirectional(keras.layers.LSTM)", dict(cls="keras", bi=True)),
]
# (what, case, baseline): case time / baseline time
RATIOS = [
    ("recurrent dropout overhead, ResetLSTM", "resetlstm_rd", "resetlstm"),
    ("recurrent dropout overhead, the op alone (fixed mask)", "op_mask", "op"),
    ("recurrent dropout overhead, keras.layers.LSTM", "keras_rd", "keras"),
    ("keras / ResetLSTM, both with recurrent dropout", "keras_rd", "resetlstm_rd"),
    ("keras / ResetLSTM, no dropout", "keras", "resetlstm"),
    ("keras / ResetLSTM, mixed_bfloat16", "keras_bf16", "resetlstm_bf16"),
    ("keras / ResetLSTM, mixed_float16", "keras_f16", "resetlstm_f16"),
    ("ResetLSTM mixed_bfloat16 / float32", "resetlstm_bf16", "resetlstm"),
    ("keras / ResetLSTM, Bidirectional", "keras_bi", "resetlstm_bi"),
]


def log(msg=""):
    print(msg, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: a tiny shape, 1 rep")
    ap.add_argument("--shapes", default=None, help="'B,T,I,H;...' (default 256,50,256,256)")
    ap.add_argument("--reps", type=int, default=None, help="timed reps (default 7; quick 1)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls, the first traces")
    ap.add_argument("--threads", type=int, default=None, help="TF intra-op threads")
    ap.add_argument("--cases", default=None, help="comma-separated case keys (default: all)")
    ap.add_argument("--out", default=None, help="output directory (default bench/results; "
                                                "quick: a new temp dir)")
    a = ap.parse_args(argv)
    a.reps = a.reps or (1 if a.quick else 7)
    a.warmup = 1 if a.quick else a.warmup
    a.threads = a.threads or common.default_threads()
    default = "4,6,8,8" if a.quick else "256,50,256,256"
    a.shape_list = [tuple(int(v) for v in s.split(",")) for s in (a.shapes or default).split(";")
                    if s.strip()]
    keys = [k for k, _, _ in CASES]
    a.case_keys = keys if a.cases is None else [k.strip() for k in a.cases.split(",")]
    unknown = set(a.case_keys) - set(keys)
    if unknown:
        ap.error(f"unknown --cases {sorted(unknown)}; known: {', '.join(keys)}")
    if a.out is None:
        a.out = tempfile.mkdtemp(prefix="resetlstm-dropin-") if a.quick \
            else os.path.join(HERE, "results")
    return a


def build_case(tf, keras, resetlstm, d, spec):
    """A tf.function running fwd+bwd of one case on the shape's data, and its arguments."""
    x = tf.constant(d["x"])
    up = tf.constant(d["upstream"])
    B, T, I = d["x"].shape
    H = d["recurrent_kernel"].shape[0]
    weights = [d["kernel"], d["recurrent_kernel"], d["bias"]]
    if spec.get("op"):
        kernel, rk, bias = (tf.Variable(w) for w in weights)
        keep = np.random.default_rng(0).random((B, H)) >= RATE
        mask = tf.constant((keep / (1 - RATE)).astype(np.float32)) if spec.get("mask") else None

        @tf.function
        def step(x, up):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = resetlstm.reset_lstm(x, kernel, rk, bias, recurrent_dropout_mask=mask)[0]
                loss = tf.reduce_sum(out * up)
            return tape.gradient(loss, [x, kernel, rk, bias])

        return step, (x, up), None
    cls = resetlstm.ResetLSTM if spec["cls"] == "resetlstm" else keras.layers.LSTM
    policy = spec.get("policy")
    kwargs = dict(return_sequences=True, recurrent_dropout=spec.get("rd", 0.0), seed=1)
    if policy:
        kwargs["dtype"] = policy
    layer = cls(H, **kwargs)
    if spec.get("bi"):
        layer = keras.layers.Bidirectional(layer)
        layer.build((B, T, I))
        layer.set_weights(weights + weights)
        up = tf.concat([up, up], axis=-1)
    else:
        layer.build((B, T, I))
        layer.set_weights(weights)

    @tf.function
    def step(x, up):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) * up)
        return tape.gradient(loss, [x] + layer.trainable_weights)

    return step, (x, up), layer


def check(tf, keras, resetlstm, d):
    """ResetLSTM and keras.layers.LSTM with the same weights agree (inference, float32)."""
    B, T, I = d["x"].shape
    H = d["recurrent_kernel"].shape[0]
    outs = []
    for cls in (resetlstm.ResetLSTM, keras.layers.LSTM):
        layer = cls(H, return_sequences=True)
        layer.build((B, T, I))
        layer.set_weights([d["kernel"], d["recurrent_kernel"], d["bias"]])
        outs.append(np.asarray(layer(d["x"])))
    return common.max_abs_diff(*outs)


def run_shape(args, tf, keras, resetlstm, B, T, I, H):
    d = common.make_data(B, T, I, H)
    sstr = common.shape_str(B, T, I, H)
    log(f"\n=== (B, T, I, H) = {sstr}: {len(args.case_keys)} cases, {args.reps} reps")
    err = check(tf, keras, resetlstm, d)
    log(f"  check ResetLSTM vs keras.layers.LSTM outputs: {err:.2e} (tol {common.FWD_TOL:g})")
    shape = {"B": B, "T": T, "I": I, "H": H, "check_err": err, "check_ok": err <= common.FWD_TOL,
             "results": {}}
    specs = {k: (label, spec) for k, label, spec in CASES}
    cases = {}
    for key in args.case_keys:
        label, spec = specs[key]
        t0 = time.perf_counter()
        fn, fargs, _ = build_case(tf, keras, resetlstm, d, spec)
        for _ in range(args.warmup):
            fn(*fargs)
        cases[key] = (fn, fargs)
        shape["results"][key] = {"label": label, "warmup_s": time.perf_counter() - t0}
        log(f"  {label}: built, traced, warmed up in {time.perf_counter() - t0:.1f} s")
    times = {k: [] for k in cases}
    keys = list(cases)
    for rep in range(args.reps):
        k0 = rep % len(keys)
        for key in keys[k0:] + keys[:k0]:
            fn, fargs = cases[key]
            times[key].append(common.timed(lambda: fn(*fargs))[0])
        log(f"  rep {rep + 1}/{args.reps}: " + " | ".join(
            f"{k} {common.fmt_ms(times[k][-1])}" for k in keys))
    for key in keys:
        shape["results"][key].update(times_ms=times[key], **common.summarize(times[key]))
    shape["ratios"] = []
    for what, a, b in RATIOS:
        if a in times and b in times:
            r = shape["results"][a]["median_ms"] / shape["results"][b]["median_ms"]
            shape["ratios"].append({"what": what, "case": a, "baseline": b, "ratio": r})
    return shape


def markdown(res):
    m = res["machine"]
    cpu = m["cpu"]
    lines = [f"# Keras drop-in features: fwd+bwd, training=True ({res['name']})", "",
             f"CPU: {cpu.get('model')} (family {cpu.get('family')} model {cpu.get('model_number')}; "
             f"{', '.join(cpu.get('flags_simd', []))}), {res['settings']['threads']} threads; "
             f"no GPU; TF {res['versions']['tensorflow']}, Keras "
             f"{res['versions']['keras']}; median of {res['settings']['reps']} interleaved reps "
             f"after {res['settings']['warmup']} warm-up calls. Command: `{res['command']}`", ""]
    if res["quick"]:
        lines += ["**--quick smoke run: the timings mean nothing.**", ""]
    for sh in res["shapes"]:
        lines += [f"## (B, T, I, H) = {common.shape_str(sh['B'], sh['T'], sh['I'], sh['H'])}", "",
                  f"ResetLSTM vs keras.layers.LSTM outputs: max |diff| {sh['check_err']:.1e} "
                  f"({'ok' if sh['check_ok'] else 'FAILED'})", "",
                  "| case | fwd+bwd ms (median) | min | max |", "|---|---:|---:|---:|"]
        for key, e in sh["results"].items():
            lines.append(f"| {e['label']} | {e['median_ms']:.1f} | {e['min_ms']:.1f} | "
                         f"{e['max_ms']:.1f} |")
        lines += ["", "| ratio | value |", "|---|---:|"]
        for r in sh["ratios"]:
            lines.append(f"| {r['what']} | {r['ratio']:.2f}× |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.get_logger().setLevel("ERROR")
    import keras

    try:
        import resetlstm
    except ImportError:
        sys.path.insert(0, os.path.join(REPO, "python"))
        import resetlstm
    machine = common.machine_info()
    name = f"dropin-cpu-{common.host_kind(machine['cpu'], args.threads)}" + \
        ("-quick" if args.quick else "")
    log(f"resetlstm drop-in bench; CPU {machine['cpu'].get('model')}, {args.threads} threads; "
        f"TF {tf.__version__}, keras {keras.__version__}; out {args.out}")
    res = {"name": name, "quick": args.quick, "machine": machine,
           "command": " ".join(["bench/dropin_bench.py"] + (sys.argv[1:] if argv is None
                                                             else list(argv))),
           "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                        "resetlstm": resetlstm.__version__},
           "resetlstm_build_info": resetlstm.build_info(),
           "settings": {"reps": args.reps, "warmup": args.warmup, "threads": args.threads,
                        "recurrent_dropout": RATE},
           "shapes": []}
    for B, T, I, H in args.shape_list:
        res["shapes"].append(run_shape(args, tf, keras, resetlstm, B, T, I, H))
    res["total_s"] = time.perf_counter() - t_start
    base = os.path.join(args.out, name)
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1, default=str)
    text = markdown(res)
    with open(base + ".md", "w") as f:
        f.write(text)
    log("\n" + text)
    log(f"wrote {base}.json {base}.md in {res['total_s']:.0f} s")
    return 0 if all(sh["check_ok"] for sh in res["shapes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
