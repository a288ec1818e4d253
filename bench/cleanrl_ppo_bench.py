"""The CleanRL-style PPO-LSTM example (examples/ppo_lstm_cleanrl.py) in both of its modes: the
training pass as one fused call (resetlstm.torch.ResetLSTM, the dones as resets) and CleanRL's
per-step loop over torch.nn.LSTM, on the same seeds.

    python bench/cleanrl_ppo_bench.py [--seeds 1,2,3] [--total-timesteps 100000] [--quick]
                                      [--out bench/results]

Each (seed, mode) is a whole training run, rollouts and updates: environment steps per second
over the run and the learning curve (mean return of the last 20 finished episodes after each
update). The modes alternate seed by seed (fused first for odd seeds, the loop first for even
ones) so that a drift of the VM touches both. Writes cleanrl-ppo-<cpu>.json (every run's log)
and .md (speed, speedup, returns at quarters of the run per seed).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(HERE), "examples", "ppo_lstm_cleanrl.py")


def ints(text):
    return [int(v) for v in text.split(",") if v]


def load_example():
    spec = importlib.util.spec_from_file_location("ppo_lstm_cleanrl", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def at_fraction(log, fraction):
    """The mean return logged at the first update at or past `fraction` of the run."""
    last = log[-1]["steps"]
    return next(e["mean_return"] for e in log if e["steps"] >= fraction * last)


def markdown(result):
    m = result["machine"]
    lines = [f"# CleanRL-style PPO-LSTM, fused vs the per-step loop: {m['cpu']['model']} "
             f"({result['cpu_slug']}), {result['threads']} threads", "",
             f"CartPole-v1 without velocities, {result['total_timesteps']} steps per run, 8 "
             "envs, examples/ppo_lstm_cleanrl.py's hyperparameters. steps/s: environment steps "
             "per second over the whole run (rollouts and updates); returns: mean of the last "
             "20 finished episodes at 25 / 50 / 75 / 100 % of the run.", "",
             "| seed | mode | steps/s | returns at 25 / 50 / 75 / 100 % |",
             "|---:|---|---:|---|"]
    for run in result["runs"]:
        curve = " / ".join(f"{at_fraction(run['log'], f):.0f}" for f in (0.25, 0.5, 0.75, 1.0))
        lines.append(f"| {run['seed']} | {run['mode']} | {run['steps_per_second']:.0f} | "
                     f"{curve} |")
    s = result["summary"]
    lines += ["", f"Speedup of the whole run (fused / loop steps/s, median over seeds): "
              f"**{s['speedup']:.2f}×** (per seed {', '.join(f'{v:.2f}×' for v in s['speedups'])}"
              f"); final returns fused {s['fused_final']}, loop {s['loop_final']}.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=ints, default=None, help="default 1,2,3")
    ap.add_argument("--total-timesteps", type=int, default=None, help="default 100000")
    ap.add_argument("--threads", type=int, default=None, help="default: every CPU")
    ap.add_argument("--quick", action="store_true", help="1 seed, 1024 steps (smoke test)")
    ap.add_argument("--out", default=None, help="output directory (default bench/results)")
    ap.add_argument("--name", default=None, help="file stem (default cleanrl-ppo-<cpu>)")
    args = ap.parse_args(argv)
    if args.seeds is None:
        args.seeds = [1] if args.quick else [1, 2, 3]
    if not args.seeds:
        ap.error("--seeds must name at least one seed")
    if args.total_timesteps is None:
        args.total_timesteps = 1024 if args.quick else 100_000
    if args.total_timesteps < 256:
        ap.error(f"--total-timesteps must be at least 256 (one update), got "
                 f"{args.total_timesteps}")
    args.threads = args.threads or common.default_threads()
    args.isa, args.rounds, args.reps = None, 1, 1
    result, path = common.start_run(args, "cleanrl-ppo", argv)
    result["total_timesteps"] = args.total_timesteps
    example = load_example()
    runs = []
    for seed in args.seeds:
        modes = [[], ["--loop"]] if seed % 2 else [["--loop"], []]
        for mode in modes:
            run = example.train(example.parse_args(
                ["--seed", str(seed), "--total-timesteps", str(args.total_timesteps),
                 "--threads", str(args.threads), "--quiet", *mode]))
            print(f"  seed {seed} {run['mode']}: {run['steps_per_second']:.0f} steps/s, final "
                  f"mean return {run['final_mean_return']:.1f}", flush=True)
            runs.append(run)
    result["runs"] = runs
    by = {(r["seed"], r["mode"]): r for r in runs}
    speedups = [by[s, "fused"]["steps_per_second"] / by[s, "loop"]["steps_per_second"]
                for s in args.seeds]
    result["summary"] = dict(
        speedup=statistics.median(speedups), speedups=speedups,
        fused_final=[round(by[s, "fused"]["final_mean_return"], 1) for s in args.seeds],
        loop_final=[round(by[s, "loop"]["final_mean_return"], 1) for s in args.seeds])
    common.finish_run(result, path, markdown)


if __name__ == "__main__":
    main()
