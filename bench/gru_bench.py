"""The GRU: resetlstm's reset_gru against each framework's own GRU, forward and fwd+bwd.

    python bench/gru_bench.py [--frameworks tf,torch,jax] [--batches 16,32,64,128,256,512,1024]
                              [--sizes 128,256] [--T 50] [--shapes "1024,20,512,512"]
                              [--rounds 3] [--reps 3] [--isa avx2] [--dropins] [--quick]
                              [--out bench/results]

Each framework runs in its own process with ``--threads`` threads (default: every CPU), its
sides on the same data and weights (Keras layout, reset_after=True: Keras' default and the
torch.nn.GRU / cuDNN form):

- tf:    resetlstm.reset_gru (the TF op, in a tf.function) and keras.layers.GRU (TF backend);
- torch: resetlstm.torch.reset_gru and torch.nn.GRU (weights converted to its r, z, n order);
- jax:   resetlstm.jax.reset_gru and the jitted lax.scan GRU (gru_scan below: the pattern of
         PureJaxRL's ScannedRNN, input projection hoisted, jnp.where resets), both with the
         same 2 % resets.

``--dropins`` adds the drop-in layers on the same weights, each against the op alone (no resets
on either: what the layer adds around the op) and against the stock layer of its framework:
``resetlstm.ResetGRU`` on Keras' TensorFlow backend (tf), on Keras' torch backend beside
``keras.layers.GRU`` there and ``resetlstm.torch.ResetGRU`` (torch), on Keras' JAX backend beside
``keras.layers.GRU`` there, both through ``stateless_call`` under ``jax.jit`` (jax).

Each also times resetlstm with 2 % resets (their cost) and a 2048^3 float32 matmul of its own
framework (the in-run matmul limit: the GRU's matmul FLOPs, fwd 2*B*T*(I+H)*3H and fwd+bwd three
times that, at the matmul's GFLOP/s). fwd: outputs, no gradient recorded; fwd+bwd: the gradients
of sum(outputs * upstream) w.r.t. the inputs and every weight. Shapes: the batch sweeps (T, I = H
in --sizes, B in --batches) and --shapes. Before timing, every side's outputs and input gradients
are checked against resetlstm's, and resetlstm's outputs against a float64 numpy GRU.

Timing: a round runs every (side, mode) once in an order that rotates from round to round, each a
warm-up call and --reps timed calls (their median); a figure is the median over rounds, a lead
(peer / resetlstm, > 1: resetlstm faster) the median of the rounds' ratios. Writes JSON and a
markdown table named after the CPU (and the ISA cap) into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a CPU benchmark

import common  # noqa: E402
import isa_cap  # noqa: E402

BATCHES = [16, 32, 64, 128, 256, 512, 1024]
SIZES = [128, 256]
SHAPES = [(1024, 20, 512, 512)]
QUICK = dict(batches=[2, 4], sizes=[8], T=5, shapes=[(3, 4, 6, 5)])
MATMUL_N, QUICK_MATMUL_N = 2048, 128
OURS, OURS_RESETS = "resetlstm", "resetlstm (2 % resets)"
PEERS = {"tf": "keras.layers.GRU", "torch": "torch.nn.GRU", "jax": "jax lax.scan GRU"}
# resetlstm's side each peer is compared with: the scan GRU resets rows as resetlstm does.
COMPARED = {"keras.layers.GRU": OURS, "torch.nn.GRU": OURS, "jax lax.scan GRU": OURS_RESETS}
# --dropins: side -> (the op side it wraps, the stock side it stands in for), per framework
DROPINS = {
    "tf": {"ResetGRU (Keras)": (OURS, "keras.layers.GRU")},
    "torch": {"resetlstm.torch.ResetGRU": (OURS, "torch.nn.GRU"),
              "ResetGRU (Keras, torch backend)": (OURS, "keras.layers.GRU (torch backend)")},
    "jax": {"ResetGRU (Keras, JAX backend)": (OURS, "keras.layers.GRU (JAX backend)")},
}
for _sides in DROPINS.values():
    for _side, (_op, _stock) in _sides.items():
        COMPARED.setdefault(_side, _op)
        COMPARED.setdefault(_stock, _op)
CHECK_ROWS = 2


def log(msg=""):
    print(msg, flush=True)


def ints(text):
    return [int(v) for v in text.split(",") if v]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frameworks", default="tf,torch,jax",
                    help="comma-separated subset of tf, torch, jax (those not installed skip)")
    ap.add_argument("--batches", type=ints, default=None, help="sweep batch sizes")
    ap.add_argument("--sizes", type=ints, default=None, help="sweep I = H values")
    ap.add_argument("--T", type=int, default=None, help="sweep sequence length (default 50)")
    ap.add_argument("--shapes", default=None,
                    help="more shapes 'B,T,I,H;...' (default 1024,20,512,512; '' for none)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per figure (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: every CPU)")
    ap.add_argument("--isa", choices=sorted(isa_cap.CAPS), default=None,
                    help="cap every side to this instruction set (see bench/isa_cap.py)")
    ap.add_argument("--dropins", action="store_true",
                    help="also time the drop-in layers against the op and the stock layers")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds (smoke test)")
    ap.add_argument("--out", default=None, help="output directory (default bench/results)")
    ap.add_argument("--name", default=None,
                    help="file stem (default gru[-dropins]-<cpu>[-avx2-capped])")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    q = args.quick
    if args.batches is None:
        args.batches = QUICK["batches"] if q else BATCHES
    if args.sizes is None:
        args.sizes = QUICK["sizes"] if q else SIZES
    if args.T is None:
        args.T = QUICK["T"] if q else 50
    if args.shapes is not None:
        args.shapes = [tuple(ints(s)) for s in args.shapes.split(";") if s]
    else:
        args.shapes = QUICK["shapes"] if q else SHAPES
    for shape in args.shapes:
        if len(shape) != 4:
            ap.error(f"--shapes: each shape is B,T,I,H, got {shape}")
    if args.rounds is None:
        args.rounds = 2 if q else 3
    if args.reps is None:
        args.reps = 1 if q else 3
    for name in ("rounds", "reps", "T"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    args.threads = args.threads or common.default_threads()
    return args


def all_shapes(args):
    sweep = [(B, args.T, n, n) for n in args.sizes for B in args.batches]
    return sweep + [s for s in args.shapes if s not in sweep]


# ---------------------------------------------------------------------------- data, reference

def make_data(B, T, I, H):
    """Deterministic float32 GRU data in Keras layout (gates z, r, h; bias [2, 3H])."""
    rng = np.random.default_rng(common.case_seed(B, T, I, H))
    a = np.sqrt(6.0 / (I + 3 * H))  # glorot_uniform, like keras
    return dict(
        x=rng.standard_normal((B, T, I), dtype=np.float32),
        kernel=rng.uniform(-a, a, size=(I, 3 * H)).astype(np.float32),
        recurrent_kernel=(rng.standard_normal((H, 3 * H)) / np.sqrt(H)).astype(np.float32),
        bias=(0.1 * rng.standard_normal((2, 3 * H))).astype(np.float32),
        upstream=rng.standard_normal((B, T, H), dtype=np.float32),
        resets=rng.random((B, T)) < common.RESET_RATE)


def reference_gru(x, kernel, recurrent_kernel, bias, resets=None):
    """float64 numpy GRU (reset_after=True) with per-row resets: outputs [B, T, H]."""
    x, W, U, b = (np.asarray(a, np.float64) for a in (x, kernel, recurrent_kernel, bias))
    B, T, _ = x.shape
    H = U.shape[0]
    h, ys = np.zeros((B, H)), []
    for t in range(T):
        if resets is not None:
            h = np.where(resets[:, t, None], 0.0, h)
        xp, hp = x[:, t] @ W + b[0], h @ U + b[1]
        z = 1 / (1 + np.exp(-(xp[:, :H] + hp[:, :H])))
        r = 1 / (1 + np.exp(-(xp[:, H:2 * H] + hp[:, H:2 * H])))
        n = np.tanh(xp[:, 2 * H:] + r * hp[:, 2 * H:])
        h = z * h + (1 - z) * n
        ys.append(h)
    return np.stack(ys, 1)


def to_torch_order(w):
    """Keras' gate blocks (z, r, h) along the last axis -> torch.nn.GRU's (r, z, n)."""
    z, r, n = np.split(w, 3, axis=-1)
    return np.concatenate([r, z, n], axis=-1)


def gru_scan(x, kernel, recurrent_kernel, bias, resets):
    """The recurrent-RL pattern in JAX: lax.scan over T, the carry reset with jnp.where, the
    input projection hoisted out of the loop. Batch-major x; reset_after=True."""
    import jax
    import jax.numpy as jnp

    B, H = x.shape[0], recurrent_kernel.shape[0]
    xs = jnp.swapaxes(x, 0, 1) @ kernel + bias[0]

    def step(h, inp):
        xp, reset = inp
        h = jnp.where(reset[:, None], 0.0, h)
        hp = h @ recurrent_kernel + bias[1]
        z = jax.nn.sigmoid(xp[:, :H] + hp[:, :H])
        r = jax.nn.sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
        n = jnp.tanh(xp[:, 2 * H:] + r * hp[:, 2 * H:])
        h = z * h + (1.0 - z) * n
        return h, h

    _, ys = jax.lax.scan(step, jnp.zeros((B, H), x.dtype), (xs, jnp.swapaxes(resets, 0, 1)))
    return jnp.swapaxes(ys, 0, 1)


# ---------------------------------------------------------------------------- the sides
# Each builder returns {side: {"fwd": fn, "fwdbwd": fn}, "matmul": (fn, flop)}; fwd returns the
# outputs, fwdbwd the input gradient (both as something np.asarray takes, after the call ended).

def tf_sides(d, threads, matmul_n):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.get_logger().setLevel("ERROR")
    import keras

    import resetlstm.tf as rtf
    import tf_variants

    x, up = tf.constant(d["x"]), tf.constant(d["upstream"])
    resets = tf.constant(d["resets"])
    weights = [tf.Variable(d[n]) for n in ("kernel", "recurrent_kernel", "bias")]
    B, T, I = d["x"].shape
    layer = keras.layers.GRU(d["recurrent_kernel"].shape[0], return_sequences=True)
    layer.build((B, T, I))
    layer.set_weights([d["kernel"], d["recurrent_kernel"], d["bias"]])

    def pair(outputs, variables):
        fwd = tf.function(outputs)

        @tf.function
        def fwdbwd(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(outputs(x) * up)
            return tape.gradient(loss, [x] + variables)

        return {"fwd": lambda: fwd(x).numpy(), "fwdbwd": lambda: fwdbwd(x)[0].numpy()}

    mm, flop = tf_variants.make_matmul(matmul_n)
    sides = {OURS: pair(lambda x: rtf.reset_gru(x, *weights)[0], weights),
             OURS_RESETS: pair(lambda x: rtf.reset_gru(x, *weights, resets=resets)[0], weights),
             PEERS["tf"]: pair(layer, list(layer.trainable_variables)),
             "matmul": (lambda: mm().numpy(), flop)}
    if d["dropins"]:
        import resetlstm.keras

        ours = keras_layer(resetlstm.keras.ResetGRU, d)
        sides["ResetGRU (Keras)"] = pair(ours, list(ours.trainable_variables))
    return sides


def keras_layer(cls, d):
    """A built Keras GRU layer of `cls` (on the process's Keras backend) holding d's weights."""
    B, T, I = d["x"].shape
    layer = cls(d["recurrent_kernel"].shape[0], return_sequences=True)
    layer.build((B, T, I))
    layer.set_weights([d["kernel"], d["recurrent_kernel"], d["bias"]])
    return layer


def torch_sides(d, threads, matmul_n):
    import torch

    import resetlstm.torch as rt

    torch.set_num_threads(threads)
    B, T, I = d["x"].shape
    H = d["recurrent_kernel"].shape[0]
    x = torch.from_numpy(d["x"]).requires_grad_(True)
    up, resets = torch.from_numpy(d["upstream"]), torch.from_numpy(d["resets"])
    weights = [torch.from_numpy(d[n]).requires_grad_(True)
               for n in ("kernel", "recurrent_kernel", "bias")]
    gru = torch.nn.GRU(I, H, batch_first=True)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.from_numpy(to_torch_order(d["kernel"]).T.copy()))
        gru.weight_hh_l0.copy_(torch.from_numpy(to_torch_order(d["recurrent_kernel"]).T.copy()))
        gru.bias_ih_l0.copy_(torch.from_numpy(to_torch_order(d["bias"][0])))
        gru.bias_hh_l0.copy_(torch.from_numpy(to_torch_order(d["bias"][1])))

    def pair(outputs, params):
        def fwd():
            with torch.inference_mode():
                return outputs(x)

        def fwdbwd():
            return torch.autograd.grad((outputs(x) * up).sum(), [x] + params)[0]

        return {"fwd": fwd, "fwdbwd": fwdbwd}

    a = torch.randn(matmul_n, matmul_n)
    sides = {OURS: pair(lambda x: rt.reset_gru(x, *weights)[0], weights),
             OURS_RESETS: pair(lambda x: rt.reset_gru(x, *weights, resets=resets)[0], weights),
             PEERS["torch"]: pair(lambda x: gru(x)[0], list(gru.parameters())),
             "matmul": (lambda: torch.mm(a, a), 2.0 * matmul_n ** 3)}
    if d["dropins"]:
        module = rt.ResetGRU(I, H, batch_first=True)
        module.load_state_dict(gru.state_dict())
        sides["resetlstm.torch.ResetGRU"] = pair(lambda x: module(x)[0],
                                                 list(module.parameters()))
        os.environ["KERAS_BACKEND"] = "torch"  # this process's Keras (not imported before)
        import keras

        import resetlstm.keras

        for name, cls in (("ResetGRU (Keras, torch backend)", resetlstm.keras.ResetGRU),
                          ("keras.layers.GRU (torch backend)", keras.layers.GRU)):
            layer = keras_layer(cls, d)
            sides[name] = pair(layer, [v.value for v in layer.trainable_variables])
    return sides


def jax_sides(d, threads, matmul_n):
    import jax  # XLA's intra-op pool has a thread per CPU
    import jax.numpy as jnp

    import resetlstm.jax as rj

    x, k, r, b, up = (jnp.asarray(d[n]) for n in ("x", "kernel", "recurrent_kernel", "bias",
                                                   "upstream"))
    resets = jnp.asarray(d["resets"])

    def pair(outputs):
        fwd = jax.jit(outputs)
        grads = jax.jit(jax.grad(lambda *a: jnp.sum(outputs(*a) * up), argnums=(0, 1, 2, 3)))
        return {"fwd": lambda: jax.block_until_ready(fwd(x, k, r, b)),
                "fwdbwd": lambda: jax.block_until_ready(grads(x, k, r, b))[0]}

    a = jax.random.normal(jax.random.key(0), (matmul_n, matmul_n), jnp.float32)
    dot = jax.jit(jnp.dot)
    sides = {OURS: pair(lambda *w: rj.reset_gru(*w)[0]),
             OURS_RESETS: pair(lambda *w: rj.reset_gru(*w, resets=resets)[0]),
             PEERS["jax"]: pair(lambda *w: gru_scan(*w, resets)),
             "matmul": (lambda: jax.block_until_ready(dot(a, a)), 2.0 * matmul_n ** 3)}
    if d["dropins"]:
        os.environ["KERAS_BACKEND"] = "jax"  # this process's Keras (not imported before)
        import keras

        import resetlstm.keras

        def stateless(layer):  # the layer as a function of (inputs, its three weights)
            fixed = [v.value for v in layer.non_trainable_variables]  # the seed generator's
            return lambda x, *w: layer.stateless_call(list(w), fixed, x)[0]

        for name, cls in (("ResetGRU (Keras, JAX backend)", resetlstm.keras.ResetGRU),
                          ("keras.layers.GRU (JAX backend)", keras.layers.GRU)):
            sides[name] = pair(stateless(keras_layer(cls, d)))
    return sides


BUILDERS = {"tf": tf_sides, "torch": torch_sides, "jax": jax_sides}


def as_f64(value):
    if hasattr(value, "detach"):
        value = value.detach()
    return np.asarray(value, dtype=np.float64)


def checks(d, sides):
    """Every side's outputs and input gradient against resetlstm's (the one with the same
    resets), resetlstm's outputs against the float64 reference on the first rows."""
    got = {name: {m: as_f64(fns[m]()) for m in ("fwd", "fwdbwd")} for name, fns in sides.items()}
    rows = slice(0, CHECK_ROWS)
    out = []
    for name, resets in ((OURS, None), (OURS_RESETS, d["resets"][rows])):
        ref = reference_gru(d["x"][rows], d["kernel"], d["recurrent_kernel"], d["bias"], resets)
        out.append((f"{name} outputs vs float64 numpy (first {CHECK_ROWS} rows)",
                    common.max_abs_diff(got[name]["fwd"][rows], ref), 1e-4))
    for name in got:
        ours = COMPARED.get(name, name)
        for mode, what in (("fwd", "outputs"), ("fwdbwd", "d_inputs")):
            if name != ours:
                out.append((f"{name} {what} vs {ours}'s (max abs diff / max abs)",
                            common.rel_grad_diff(got[name][mode], got[ours][mode]), 1e-4))
    return [{"what": w, "err": e, "tol": t, "ok": e <= t} for w, e, t in out]


def median_ms(fn, reps):
    fn()  # warm-up
    return statistics.median(common.timed(fn)[0] for _ in range(reps))


def worker(args):
    """One framework's process: every shape, every round."""
    spec = json.load(open(args.spec))
    out = {"shapes": []}
    for B, T, I, H in spec["shapes"]:
        d = dict(make_data(B, T, I, H), dropins=spec.get("dropins", False))
        sides = BUILDERS[spec["framework"]](d, spec["threads"], spec["matmul_n"])
        mm, mm_flop = sides.pop("matmul")
        shape_checks = checks(d, sides)  # also traces / compiles every side (not timed)
        bad = [c for c in shape_checks if not c["ok"]]
        if bad:
            raise SystemExit(f"{common.shape_str(B, T, I, H)}: check failed: {bad}")
        entries = [(name, mode) for name in sides for mode in ("fwd", "fwdbwd")] + \
            [("matmul", None)]
        rounds = []
        for rnd in range(spec["rounds"]):
            k = rnd % len(entries)
            timings = {}
            for name, mode in entries[k:] + entries[:k]:
                if mode is None:
                    timings["matmul_gflops"] = mm_flop / median_ms(mm, spec["reps"]) / 1e6
                else:
                    timings.setdefault(name, {})[mode] = median_ms(sides[name][mode],
                                                                   spec["reps"])
            rounds.append(timings)
        ours, peer = rounds[-1][OURS], rounds[-1][PEERS[spec["framework"]]]
        log(f"    [{spec['framework']}] {common.shape_str(B, T, I, H)}: resetlstm "
            f"{ours['fwd']:.2f} / {ours['fwdbwd']:.2f} ms, {PEERS[spec['framework']]} "
            f"{peer['fwd']:.2f} / {peer['fwdbwd']:.2f} ms (fwd / fwd+bwd, last round)")
        out["shapes"].append({"B": B, "T": T, "I": I, "H": H, "rounds": rounds,
                              "checks": shape_checks})
    json.dump(out, open(args.out, "w"), indent=1)


# ---------------------------------------------------------------------------- the report

def gru_flops(B, T, I, H):
    fwd = 2.0 * B * T * (I + H) * 3 * H
    return {"fwd": fwd, "fwdbwd": 3.0 * fwd}


def summarize(framework, shape):
    rounds, peer = shape["rounds"], PEERS[framework]
    med = statistics.median
    flops = gru_flops(shape["B"], shape["T"], shape["I"], shape["H"])
    s = {"matmul_gflops": med(r["matmul_gflops"] for r in rounds)}
    for mode in ("fwd", "fwdbwd"):
        for name in (OURS, OURS_RESETS, peer):
            s.setdefault(name, {})[f"{mode}_ms"] = med(r[name][mode] for r in rounds)
            s[name][f"{mode}_pct_of_limit"] = 100 * med(
                flops[mode] / (r["matmul_gflops"] * 1e6) / r[name][mode] for r in rounds)
        s[peer][f"{mode}_lead"] = med(r[peer][mode] / r[COMPARED[peer]][mode] for r in rounds)
        s[f"{mode}_resets_cost_pct"] = 100 * (med(r[OURS_RESETS][mode] / r[OURS][mode]
                                                  for r in rounds) - 1)
        for side, (op, stock) in DROPINS[framework].items():
            if side not in rounds[0]:
                continue
            for name in (side, stock):
                s.setdefault(name, {})[f"{mode}_ms"] = med(r[name][mode] for r in rounds)
            # the drop-in's cost over the op it wraps (> 1: slower), its lead over the stock
            # layer (> 1: faster); medians of the rounds' ratios
            s[side][f"{mode}_vs_op"] = med(r[side][mode] / r[op][mode] for r in rounds)
            s[side][f"{mode}_lead"] = med(r[stock][mode] / r[side][mode] for r in rounds)
            s[side]["stock"] = stock
    return s


def markdown(result):
    m = result["machine"]
    lines = [f"# The GRU: resetlstm vs each framework's GRU, {m['cpu']['model']} "
             f"({result['cpu_slug']}), {result['threads']} threads", "",
             f"ISA: {result['isa'] or 'native'}; float32, reset_after=True; medians over "
             f"{result['rounds']} rounds of {result['reps']} calls. lead = peer / resetlstm "
             "(> 1: resetlstm faster; the JAX scan and resetlstm both with 2 % resets, the others "
             "without); % of limit = the GRU's matmul FLOPs (fwd 2·B·T·(I+H)·3H, fwd+bwd 3×) at "
             "the GFLOP/s of the framework's own 2048³ matmul, timed in the same rounds; resets "
             "cost = resetlstm with 2 % resets / without - 1.", ""]
    for framework, shapes in result["frameworks"].items():
        peer = PEERS[framework]
        lines.append(f"## {framework}: resetlstm vs {peer}")
        lines.append("")
        if isinstance(shapes, str):
            lines += [shapes, ""]
            continue
        lines += ["| (B, T, I, H) | resetlstm fwd ms | peer fwd ms | lead fwd | "
                  "resetlstm fwd+bwd ms | peer fwd+bwd ms | lead fwd+bwd | % of limit fwd / "
                  "fwd+bwd | resets cost fwd / fwd+bwd |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for shape in shapes:
            s = shape["summary"]
            o, p = s[OURS], s[peer]
            lines.append(
                f"| {common.shape_str(shape['B'], shape['T'], shape['I'], shape['H'])} | "
                f"{common.fmt_ms(o['fwd_ms'])} | {common.fmt_ms(p['fwd_ms'])} | "
                f"{p['fwd_lead']:.2f}× | {common.fmt_ms(o['fwdbwd_ms'])} | "
                f"{common.fmt_ms(p['fwdbwd_ms'])} | {p['fwdbwd_lead']:.2f}× | "
                f"{o['fwd_pct_of_limit']:.0f} % / {o['fwdbwd_pct_of_limit']:.0f} % | "
                f"{s['fwd_resets_cost_pct']:+.1f} % / {s['fwdbwd_resets_cost_pct']:+.1f} % |")
        lines.append("")
        dropins = [side for side in DROPINS[framework] if side in shapes[0]["summary"]]
        if dropins:
            lines += [f"### {framework}: the drop-in layers", "",
                      "vs op = drop-in / the op alone on the same weights, no resets on either "
                      "(> 1: the layer costs more); lead = the stock layer / the drop-in (> 1: "
                      "the drop-in faster).", "",
                      "| (B, T, I, H) | drop-in | fwd ms | vs op | fwd+bwd ms | vs op | "
                      "stock | stock fwd+bwd ms | lead fwd / fwd+bwd |",
                      "|---|---|---:|---:|---:|---:|---|---:|---:|"]
            for shape in shapes:
                s = shape["summary"]
                for side in dropins:
                    o, p = s[side], s[s[side]["stock"]]
                    lines.append(
                        f"| {common.shape_str(shape['B'], shape['T'], shape['I'], shape['H'])} "
                        f"| {side} | {common.fmt_ms(o['fwd_ms'])} | {o['fwd_vs_op']:.3f}× | "
                        f"{common.fmt_ms(o['fwdbwd_ms'])} | {o['fwdbwd_vs_op']:.3f}× | "
                        f"{o['stock']} | {common.fmt_ms(p['fwdbwd_ms'])} | "
                        f"{o['fwd_lead']:.2f}× / {o['fwdbwd_lead']:.2f}× |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    shapes = all_shapes(args)
    result, path = common.start_run(args, "gru-dropins" if args.dropins else "gru", argv)
    result["dropins"] = args.dropins
    result["shapes"] = shapes
    machine, slug = result["machine"], result["cpu_slug"]
    log(f"== GRU bench: {machine['cpu']['model']} ({slug}), {args.threads} threads, "
        f"ISA {args.isa or 'native'}, {len(shapes)} shapes")
    result["frameworks"] = common.run_framework_workers(
        __file__, args.frameworks, {"shapes": shapes, "rounds": args.rounds, "reps": args.reps,
                                    "threads": args.threads, "dropins": args.dropins,
                                    "matmul_n": QUICK_MATMUL_N if args.quick else MATMUL_N},
        summarize, log)
    common.finish_run(result, path, markdown, log)


if __name__ == "__main__":
    main()
