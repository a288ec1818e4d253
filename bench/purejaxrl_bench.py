"""PureJaxRL's ScannedRNN (nn.scan over flax.linen.GRUCell, the carry reset with jnp.where)
against resetlstm.jax.linen.ScannedRNN (the same call and parameters, one fused reset_gru), and
the same pattern over nn.OptimizedLSTMCell against resetlstm.jax.linen.ScannedLSTM.

    python bench/purejaxrl_bench.py [--envs 4,16,64] [--hidden 128,256] [--T 128]
                                    [--rounds 5] [--reps 5] [--quick] [--out bench/results]

At PureJaxRL's shapes: ``envs`` environments (the batch), ``T`` steps per rollout, the hidden
size equal to the embedding size (as ScannedRNN has it), episodes ending at random (2 % per
step). fwd: the module's apply under jax.jit; fwd+bwd: jax.jit(jax.value_and_grad) of
sum(ys * upstream) with gradients to the parameters and the inputs (what PPO's loss takes).
Before timing, our outputs and gradients are checked against the original's. Each round runs
every (side, mode) once in a rotating order (a warm-up call, then the median of ``--reps``);
figures are medians over rounds, the speedup the median of the rounds' ratios. Writes
purejaxrl-<cpu>.json and .md.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

RESET_RATE = 0.02


def ints(text):
    return [int(v) for v in text.split(",") if v]


def originals():
    """The two scanned patterns (PureJaxRL's ScannedRNN and its LSTM form), written out."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    def scanned(cell_cls):
        class Scanned(nn.Module):
            @functools.partial(nn.scan, variable_broadcast="params",
                               split_rngs={"params": False}, in_axes=0, out_axes=0)
            @nn.compact
            def __call__(self, carry, x):
                ins, resets = x
                start = self.initialize_carry(ins.shape[0], ins.shape[1])
                carry = jax.tree.map(lambda s, c: jnp.where(resets[:, None], s, c), start, carry)
                return cell_cls(features=ins.shape[1])(carry, ins)

            @staticmethod
            def initialize_carry(batch_size, hidden_size):
                return cell_cls(features=hidden_size).initialize_carry(
                    jax.random.PRNGKey(0), (batch_size, hidden_size))
        return Scanned

    return {"gru": scanned(nn.GRUCell), "lstm": scanned(nn.OptimizedLSTMCell)}


def sides(cell, envs, T, F):
    import jax
    import jax.numpy as jnp

    from resetlstm.jax import linen

    ours_cls = {"gru": linen.ScannedRNN, "lstm": linen.ScannedLSTM}[cell]
    original_cls = originals()[cell]
    rng = np.random.default_rng(envs * 1000 + F)
    ins = jnp.asarray(rng.standard_normal((T, envs, F), dtype=np.float32))
    resets = jnp.asarray(rng.random((T, envs)) < RESET_RATE)
    upstream = jnp.asarray(rng.standard_normal((T, envs, F), dtype=np.float32))
    carry = ours_cls.initialize_carry(envs, F)
    variables = original_cls().init(jax.random.key(0), carry, (ins, resets))

    def make(module):
        def loss(variables, ins):
            _, ys = module.apply(variables, carry, (ins, resets))
            return jnp.sum(ys * upstream)
        fwd = jax.jit(lambda v, x: module.apply(v, carry, (x, resets))[1])
        grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return {"fwd": lambda: jax.block_until_ready(fwd(variables, ins)),
                "fwdbwd": lambda: jax.block_until_ready(grads(variables, ins))}

    return {"original": make(original_cls()), "resetlstm": make(ours_cls())}


def check(fns):
    a, b = fns["resetlstm"], fns["original"]
    out = common.rel_grad_diff(np.asarray(a["fwd"]()), np.asarray(b["fwd"]()))
    import jax

    (_, ga), (_, gb) = a["fwdbwd"](), b["fwdbwd"]()
    grads = max(common.rel_grad_diff(np.asarray(x), np.asarray(y))
                for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)))
    return {"outputs": out, "grads": grads, "ok": out <= 1e-4 and grads <= 1e-3}


def median_ms(fn, reps):
    fn()
    return statistics.median(common.timed(fn)[0] for _ in range(reps))


def markdown(result):
    m = result["machine"]
    lines = [f"# PureJaxRL's ScannedRNN vs resetlstm's: {m['cpu']['model']} "
             f"({result['cpu_slug']}), {result['threads']} CPUs", "",
             f"T = {result['T']} steps, hidden = embedding size, {100 * RESET_RATE:.0f} % "
             f"resets, float32; medians of {result['rounds']} rounds of {result['reps']} calls; "
             "speedup = original / resetlstm (median of the rounds' ratios). Checks: max abs "
             "diff / max abs of outputs and of every gradient against the original.", "",
             "| cell | envs | hidden | original fwd ms | resetlstm fwd ms | speedup fwd | "
             "original fwd+bwd ms | resetlstm fwd+bwd ms | speedup fwd+bwd | check |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in result["cases"]:
        s = c["summary"]
        lines.append(
            f"| {c['cell']} | {c['envs']} | {c['hidden']} | {common.fmt_ms(s['original_fwd'])} | "
            f"{common.fmt_ms(s['resetlstm_fwd'])} | {s['speedup_fwd']:.2f}× | "
            f"{common.fmt_ms(s['original_fwdbwd'])} | {common.fmt_ms(s['resetlstm_fwdbwd'])} | "
            f"**{s['speedup_fwdbwd']:.2f}×** | {c['check']['outputs']:.1e} / "
            f"{c['check']['grads']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", type=ints, default=None, help="default 4,16,64")
    ap.add_argument("--hidden", type=ints, default=None, help="default 128,256")
    ap.add_argument("--cells", default="gru,lstm")
    ap.add_argument("--T", type=int, default=None, help="default 128")
    ap.add_argument("--rounds", type=int, default=None, help="default 5")
    ap.add_argument("--reps", type=int, default=None, help="default 5")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (smoke test)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    q = args.quick
    defaults = dict(envs=([2], [4, 16, 64]), hidden=([8], [128, 256]), T=(6, 128),
                    rounds=(2, 5), reps=(1, 5))
    for name, (quick, full) in defaults.items():  # None: not given (0 is an error below)
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    for name in ("envs", "hidden"):
        if not getattr(args, name) or min(getattr(args, name)) < 1:
            ap.error(f"--{name} must be positive integers, got {getattr(args, name)}")
    cells = [c for c in args.cells.split(",") if c]
    bad = [c for c in cells if c not in ("gru", "lstm")]
    if bad:
        ap.error(f"--cells: gru and/or lstm, got {bad}")
    for name in ("T", "rounds", "reps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    args.threads, args.isa = os.cpu_count(), None
    result, path = common.start_run(args, "purejaxrl", argv)
    result["T"] = args.T
    result["cases"] = []
    for cell in cells:
        for F in args.hidden:
            for envs in args.envs:
                fns = sides(cell, envs, args.T, F)
                checked = check(fns)
                if not checked["ok"]:
                    raise SystemExit(f"{cell} envs={envs} hidden={F}: check failed {checked}")
                entries = [(side, mode) for side in fns for mode in ("fwd", "fwdbwd")]
                rounds = []
                for rnd in range(args.rounds):
                    k = rnd % len(entries)
                    rounds.append({f"{side}_{mode}": median_ms(fns[side][mode], args.reps)
                                   for side, mode in entries[k:] + entries[:k]})
                med = statistics.median
                summary = {key: med(r[key] for r in rounds) for key in rounds[0]}
                for mode in ("fwd", "fwdbwd"):
                    summary[f"speedup_{mode}"] = med(r[f"original_{mode}"] / r[f"resetlstm_{mode}"]
                                                     for r in rounds)
                print(f"  {cell} envs={envs} hidden={F}: fwd+bwd original "
                      f"{summary['original_fwdbwd']:.2f} ms, resetlstm "
                      f"{summary['resetlstm_fwdbwd']:.2f} ms "
                      f"({summary['speedup_fwdbwd']:.2f}x)", flush=True)
                result["cases"].append(dict(cell=cell, envs=envs, hidden=F, rounds=rounds,
                                            summary=summary, check=checked))
    common.finish_run(result, path, markdown)


if __name__ == "__main__":
    main()
