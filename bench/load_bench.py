"""Quiet and loaded side by side: fwd+bwd of resetlstm and its peers, alone on the CPU and with
busy threads beside them.

    python bench/load_bench.py [--background-load 1] [--rounds 7] [--reps 5]
                               [--shapes "64,50,128,128;256,50,256,256"] [--isa avx2]
                               [--frameworks tf,torch,jax] [--quick] [--out bench/results]

A user's CPU is rarely idle (environment workers beside an RL learner, data loaders, other jobs,
a noisy neighbour). ``--background-load N`` runs N busy threads (processes spinning in a Python
loop, normal priority) while the loaded figures are timed.

Each framework runs in its own process with ``--threads`` threads (default: every CPU), its
sides on the same data and weights (bench/common.make_data):

- tf:    resetlstm (the TF op: TF's intra-op pool) and keras.layers.LSTM (TF backend);
- torch: resetlstm.torch.ResetLSTM (torch's OpenMP team, or _native's pool) and torch.nn.LSTM;
- jax:   resetlstm.jax.reset_lstm (XLA's intra-op pool, every CPU) and the jitted lax.scan LSTM with
         jnp.where resets (bench/jax_bench.lstm_scan, input projection hoisted).

fwd+bwd: forward, then the gradients of sum(outputs * upstream) w.r.t. the inputs and every
weight. A round times every side quiet, then starts the load and times every side again, the
sides in a rotating order; each figure is the median of ``--reps`` calls after a warm-up call.
Reported per side: the median over rounds, quiet and loaded; the slowdown (loaded / quiet) as
the median of the rounds' ratios; resetlstm's lead over each peer (peer / resetlstm) in each
condition, as the median of the rounds' ratios. Writes JSON and a markdown table named after the
CPU (and the ISA cap) into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a CPU benchmark

import common  # noqa: E402
import isa_cap  # noqa: E402

SHAPES = [(64, 50, 128, 128), (256, 50, 256, 256)]
QUICK_SHAPES = [(4, 6, 8, 8)]
SIDES = {  # framework -> (resetlstm's side, the peers)
    "tf": ("resetlstm", ["keras.layers.LSTM"]),
    "torch": ("resetlstm.torch.ResetLSTM", ["torch.nn.LSTM"]),
    "jax": ("resetlstm.jax.reset_lstm", ["jax lax.scan"]),
}


def log(msg=""):
    print(msg, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--background-load", type=int, default=1,
                    help="busy threads beside the loaded figures (default 1)")
    ap.add_argument("--rounds", type=int, default=None, help="quiet/loaded rounds (default 7)")
    ap.add_argument("--reps", type=int, default=None, help="calls per figure (default 5)")
    ap.add_argument("--shapes", default=None, help="'B,T,I,H;B,T,I,H' (default the two targets)")
    ap.add_argument("--threads", type=int, default=None, help="threads per framework (default: all)")
    ap.add_argument("--frameworks", default="tf,torch,jax",
                    help="comma-separated subset of tf, torch, jax (those not installed skip)")
    ap.add_argument("--isa", choices=sorted(isa_cap.CAPS), default=None,
                    help="cap every side to this instruction set (see bench/isa_cap.py)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds (smoke test)")
    ap.add_argument("--out", default=None, help="output directory (default bench/results)")
    ap.add_argument("--name", default=None, help="file stem (default load-<cpu>[-avx2-capped])")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 7)
    args.reps = args.reps or (2 if args.quick else 5)
    args.threads = args.threads or common.default_threads()
    if args.shapes is not None:
        args.shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";") if s]
    else:
        args.shapes = QUICK_SHAPES if args.quick else SHAPES
    return args


# ---------------------------------------------------------------------------- the sides

def tf_sides(d, threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.get_logger().setLevel("ERROR")
    import keras

    import resetlstm.tf
    import tf_variants as V

    ours, keras_case = V.make_resetlstm(resetlstm.tf, d, with_resets=False), V.make_keras(keras, d)
    return {"resetlstm": lambda: [t.numpy() for t in ours.fwdbwd()][0],
            "keras.layers.LSTM": lambda: [t.numpy() for t in keras_case.fwdbwd()][0]}


def torch_sides(d, threads):
    import torch

    import resetlstm.torch as rt

    torch.set_num_threads(threads)
    B, T, I = d["x"].shape
    H = d["recurrent_kernel"].shape[0]
    sides = {}
    for name, cls in (("resetlstm.torch.ResetLSTM", rt.ResetLSTM), ("torch.nn.LSTM", torch.nn.LSTM)):
        lstm = cls(I, H, batch_first=True)
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(torch.from_numpy(d["kernel"].T.copy()))
            lstm.weight_hh_l0.copy_(torch.from_numpy(d["recurrent_kernel"].T.copy()))
            lstm.bias_ih_l0.copy_(torch.from_numpy(d["bias"]))
            lstm.bias_hh_l0.zero_()
        x = torch.from_numpy(d["x"]).requires_grad_(True)
        up = torch.from_numpy(d["upstream"])
        params = list(lstm.parameters())

        def fwdbwd(lstm=lstm, x=x, up=up, params=params):
            out, _ = lstm(x)
            return torch.autograd.grad((out * up).sum(), [x] + params)[0]

        sides[name] = fwdbwd
    return sides


def jax_sides(d, threads):
    import jax  # XLA's intra-op pool has a thread per CPU
    import jax.numpy as jnp

    import jax_bench
    import resetlstm.jax as rj

    x, k, r, b = (jnp.asarray(d[n]) for n in ("x", "kernel", "recurrent_kernel", "bias"))
    up = jnp.asarray(d["upstream"])
    no_resets = jnp.zeros(d["resets"].shape, bool)

    def grads(outputs):
        fn = jax.jit(jax.grad(lambda *a: jnp.sum(outputs(*a) * up), argnums=(0, 1, 2, 3)))
        return lambda: jax.block_until_ready(fn(x, k, r, b))

    return {"resetlstm.jax.reset_lstm": grads(lambda *a: rj.reset_lstm(*a)[0]),
            "jax lax.scan": grads(lambda *a: jax_bench.lstm_scan(*a, no_resets, hoisted=True))}


def input_gradient(side_result):
    """The gradient w.r.t. the inputs from a side's fwd+bwd result, as float64 numpy."""
    import numpy as np

    if isinstance(side_result, (tuple, list)):
        side_result = side_result[0]
    if hasattr(side_result, "detach"):
        side_result = side_result.detach()
    return np.asarray(side_result, dtype=np.float64)


BUILDERS = {"tf": tf_sides, "torch": torch_sides, "jax": jax_sides}


def median_ms(fn, reps):
    fn()  # warm-up: the first call after a change of load (or of side) is not timed
    return statistics.median(common.timed(fn)[0] for _ in range(reps))


def worker(args):
    """One framework's process: every shape, every round, quiet then loaded."""
    spec = json.load(open(args.spec))
    out = {"shapes": []}
    for B, T, I, H in spec["shapes"]:
        d = common.make_data(B, T, I, H)
        sides = BUILDERS[spec["framework"]](d, spec["threads"])
        names = list(sides)
        # trace / compile (not timed), and the sides' input gradients against resetlstm's
        grads = {name: input_gradient(fn()) for name, fn in sides.items()}
        ours = grads[SIDES[spec["framework"]][0]]
        checks = []
        for name, g in grads.items():
            err = float(abs(g - ours).max() / max(abs(ours).max(), 1e-30))
            checks.append({"what": f"{name} d_inputs vs resetlstm's (max abs diff / max abs)",
                           "err": err, "tol": 1e-4, "ok": err <= 1e-4})
            if err > 1e-4:
                raise SystemExit(f"{name}: d_inputs differ from resetlstm's by {err:.2e}")
        rounds = []
        for rnd in range(spec["rounds"]):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            entry = {}
            for load in (0, spec["load"]):
                with common.BackgroundLoad(load):
                    for name in order:
                        entry.setdefault(name, {})["loaded" if load else "quiet"] = \
                            median_ms(sides[name], spec["reps"])
            rounds.append(entry)
            log(f"    [{spec['framework']}] {common.shape_str(B, T, I, H)} round {rnd + 1}: " +
                "  ".join(f"{n} {e['quiet']:.1f} / {e['loaded']:.1f} ms"
                          for n, e in entry.items()))
        out["shapes"].append({"B": B, "T": T, "I": I, "H": H, "rounds": rounds,
                              "checks": checks})
    json.dump(out, open(args.out, "w"), indent=1)


# ---------------------------------------------------------------------------- the report

def summarize(framework, shape):
    ours, peers = SIDES[framework]
    rounds = shape["rounds"]

    def med(values):
        return statistics.median(values)

    sides = {}
    for name in [ours] + peers:
        quiet = [r[name]["quiet"] for r in rounds]
        loaded = [r[name]["loaded"] for r in rounds]
        sides[name] = {"quiet_ms": med(quiet), "loaded_ms": med(loaded),
                       "slowdown": med([l / q for q, l in zip(quiet, loaded)]),
                       "quiet_all_ms": quiet, "loaded_all_ms": loaded}
    for peer in peers:
        for cond in ("quiet", "loaded"):
            sides[peer][f"lead_{cond}"] = med([r[peer][cond] / r[ours][cond] for r in rounds])
    return sides


def markdown(result):
    m = result["machine"]
    lines = [f"# resetlstm under load: {m['cpu']['model']} ({result['cpu_slug']}), "
             f"{result['threads']} threads, {result['background_load']} busy thread(s)", "",
             f"ISA: {result['isa'] or 'native'}; fwd+bwd float32; medians over "
             f"{result['rounds']} rounds of {result['reps']} calls; slowdown = loaded / quiet; "
             "lead = peer / resetlstm in the same condition (> 1: resetlstm faster).", "",
             "| framework | (B, T, I, H) | side | quiet ms | loaded ms | slowdown | lead quiet | "
             "lead loaded |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for framework, shapes in result["frameworks"].items():
        if isinstance(shapes, str):
            lines.append(f"| {framework} | | {shapes} | | | | | |")
            continue
        for shape in shapes:
            s = common.shape_str(shape["B"], shape["T"], shape["I"], shape["H"])
            for name, e in shape["summary"].items():
                lead = (f"{e['lead_quiet']:.2f}× | {e['lead_loaded']:.2f}×" if "lead_quiet" in e
                        else "| ")
                lines.append(f"| {framework} | {s} | {name} | {e['quiet_ms']:.1f} | "
                             f"{e['loaded_ms']:.1f} | {e['slowdown']:.2f}× | {lead} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    result, path = common.start_run(args, "load", argv)
    result["background_load"] = args.background_load
    machine, slug = result["machine"], result["cpu_slug"]
    log(f"== load bench: {machine['cpu']['model']} ({slug}), {args.threads} threads, "
        f"{args.background_load} busy thread(s), ISA {args.isa or 'native'}")
    result["frameworks"] = common.run_framework_workers(
        __file__, args.frameworks, {"shapes": args.shapes, "rounds": args.rounds,
                                    "reps": args.reps, "load": args.background_load,
                                    "threads": args.threads}, summarize, log)
    common.finish_run(result, path, markdown, log)


if __name__ == "__main__":
    main()
