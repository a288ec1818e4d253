"""PyTorch benchmark of resetlstm.torch.ResetLSTM: recurrent-RL sequences with resets, and the
stock LSTM without.

    python bench/torch_rl_bench.py [--reps 7] [--quick] [--out bench/results]

(a) Recurrent PPO's sequence processing: n_envs sequences of 128 steps, 64 input features,
    H = 256, episodes ending at random (mean length 30: a reset with probability 1/30 per step),
    forward + backward. The fused module (one call, resets) against the per-step loop that
    sb3-contrib's RecurrentActorCriticPolicy._process_sequence and CleanRL's ppo_atari_lstm.py
    run: torch.nn.LSTM one step at a time, the state multiplied by (1 - episode_start) first.
(b) The ceiling a user compares with: torch.nn.LSTM over the whole sequence in one call,
    without resets (oneDNN on CPU, cuDNN on GPU), at the same shapes and at the main bench
    shapes (B, T, I, H) = (64, 50, 128, 128), (256, 50, 256, 256), (1024, 20, 512, 512).

Every variant has the same weights and inputs; fwd+bwd is the forward plus the backward of
sum(outputs * upstream) with gradients to the inputs and every weight; fwd runs under
torch.inference_mode(). The variants of a case are timed interleaved, rep by rep in a rotating
order; medians after warm-up. The fused module's outputs are checked against the loop's (with
resets) and torch.nn.LSTM's (without). Writes torch-rl-<cpu>.json and .md (e.g.
torch-rl-amd-epyc-zen4-2c).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  bench/common.py: the CPU's name and file-name slug
import isa_cap  # noqa: E402  bench/isa_cap.py: --isa avx2


def _isa_from_argv(argv):
    """--isa, read before torch and the kernels load (the caps are environment variables)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--isa", choices=sorted(isa_cap.CAPS), default=None)
    return early.parse_known_args(argv)[0].isa


if __name__ == "__main__" and _isa_from_argv(sys.argv[1:]):
    isa_cap.apply(_isa_from_argv(sys.argv[1:]))

import torch  # noqa: E402

import resetlstm.torch as rt  # noqa: E402
from resetlstm import _native  # noqa: E402

RL_SHAPES = [(n, 128, 64, 256) for n in (8, 64, 256)]
MAIN_SHAPES = [(64, 50, 128, 128), (256, 50, 256, 256), (1024, 20, 512, 512)]


def cpu_name() -> str:
    """The CPU as the other benches name it (bench/common.py), e.g. 'AMD EPYC (zen4, family 25
    model 17, avx512f), 2 CPUs'."""
    cpu = common.cpu_info()
    isa = "avx512f" if "avx512f" in cpu["flags_simd"] else "avx2" if "avx2" in cpu[
        "flags_simd"] else "baseline"
    arch = common.microarchitecture(cpu) or "?"
    return (f"{cpu['model']} ({arch}, family {cpu.get('family', '?')} model "
            f"{cpu.get('model_number', '?')}, {isa}), {os.cpu_count()} CPUs")


def per_step_loop(lstm, x, starts, state):
    """sb3-contrib's sequence processing: one nn.LSTM call per step, the state multiplied by
    (1 - episode_start) before it. x [T, n, I], starts [T, n] float 0/1."""
    outputs = []
    for x_t, start in zip(x, starts):
        keep = (1.0 - start).view(1, -1, 1)
        y, state = lstm(x_t.unsqueeze(0), (keep * state[0], keep * state[1]))
        outputs.append(y)
    return torch.cat(outputs), state


def make_case(B, T, I, H, resets, seed=0):
    torch.manual_seed(seed)
    stock = torch.nn.LSTM(I, H)
    fused = rt.ResetLSTM(I, H)
    fused.load_state_dict(stock.state_dict())
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(T, B, I, generator=g)
    upstream = torch.randn(T, B, H, generator=g)
    starts = (torch.rand(T, B, generator=g) < 1 / 30).float() if resets else None
    state = tuple(torch.randn(1, B, H, generator=g) * 0.1 for _ in range(2))
    return stock, fused, x, upstream, starts, state


def variants(case, resets):
    stock, fused, x, upstream, starts, state = case

    def fused_call(inp):
        return fused(inp, state, resets=starts)[0]

    def loop_call(inp):
        return per_step_loop(stock, inp, starts, state)[0]

    def stock_call(inp):
        return stock(inp, state)[0]

    if resets:
        return {"resetlstm": fused_call, "per-step loop": loop_call}
    return {"resetlstm": fused_call, "torch.nn.LSTM": stock_call}


def time_once(fn, x, upstream, mode, params):
    if mode == "fwd":
        with torch.inference_mode():
            start = time.perf_counter()
            fn(x)
            return time.perf_counter() - start
    xg = x.detach().requires_grad_(True)
    start = time.perf_counter()
    y = fn(xg)
    torch.autograd.grad((y * upstream).sum(), [xg, *params])
    return time.perf_counter() - start


def run_case(B, T, I, H, resets, modes, reps, warmup):
    case = make_case(B, T, I, H, resets)
    fns = variants(case, resets)
    stock, fused, x, upstream = case[:4]
    params = {"resetlstm": list(fused.parameters())}
    for name in fns:
        params.setdefault(name, list(stock.parameters()))
    # correctness: the fused module against the peer, same weights and data
    with torch.no_grad():
        ref_name = [n for n in fns if n != "resetlstm"][0]
        err = float((fns["resetlstm"](x) - fns[ref_name](x)).abs().max())
    times = {(n, m): [] for n in fns for m in modes}
    order = list(times)
    for _ in range(warmup):
        for n, m in order:
            time_once(fns[n], x, upstream, m, params[n])
    for r in range(reps):
        rotated = order[r % len(order):] + order[:r % len(order)]
        for n, m in rotated:
            times[(n, m)].append(time_once(fns[n], x, upstream, m, params[n]))
    result = {"B": B, "T": T, "I": I, "H": H, "resets": resets, "max_abs_diff": err,
              "ms": {f"{n} {m}": 1e3 * float(np.median(ts)) for (n, m), ts in times.items()}}
    for m in modes:
        result[f"speedup {m}"] = (result["ms"][f"{ref_name} {m}"]
                                  / result["ms"][f"resetlstm {m}"])
    result["peer"] = ref_name
    return result


def report(results, meta):
    lines = [f"# PyTorch: resetlstm.torch.ResetLSTM ({meta['cpu']})", "",
             f"torch {meta['torch']}, {meta['threads']} threads, median of {meta['reps']} reps "
             "(interleaved) after warm-up; speedup = peer time / resetlstm time.", ""]
    if "isa_cap_described" in meta:
        lines += [meta["isa_cap_described"], ""]
    for title, resets in (("(a) Recurrent PPO sequences, episodes ending at random (mean "
                           "length 30): fused vs the per-step loop", True),
                          ("(b) No resets: fused vs torch.nn.LSTM in one call", False)):
        rows = [r for r in results if r["resets"] == resets]
        if not rows:
            continue
        modes = [k.split(" ", 1)[1] for k in rows[0] if k.startswith("speedup ")]
        peer = rows[0]["peer"]
        lines += [f"## {title}", "",
                  "| (B, T, I, H) | " + " | ".join(
                      f"resetlstm {m} ms | {peer} {m} ms | speedup {m}" for m in modes)
                  + " | max abs diff |",
                  "|---|" + "---:|" * (3 * len(modes) + 1)]
        for r in rows:
            cells = []
            for m in modes:
                cells += [f"{r['ms'][f'resetlstm {m}']:.2f}", f"{r['ms'][f'{peer} {m}']:.2f}",
                          f"**{r[f'speedup {m}']:.2f}x**"]
            lines.append(f"| ({r['B']}, {r['T']}, {r['I']}, {r['H']}) | " + " | ".join(cells)
                         + f" | {r['max_abs_diff']:.1e} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 reps (smoke test)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--isa", choices=sorted(isa_cap.CAPS), default=None,
                        help="cap resetlstm and torch (oneDNN, ATen) to this instruction set, "
                             "checked (bench/isa_cap.py); the file name says so")
    args = parser.parse_args(argv)
    for flag in ("reps", "warmup"):
        if getattr(args, flag) < (1 if flag == "reps" else 0):
            parser.error(f"--{flag} must be >= {1 if flag == 'reps' else 0}, got "
                         f"{getattr(args, flag)}")
    rl, main_shapes, reps = RL_SHAPES, MAIN_SHAPES, args.reps
    if args.quick:
        rl, main_shapes, reps = [(4, 12, 8, 16)], [(4, 6, 8, 16)], 2
    meta = {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "reps": reps}
    if args.isa:
        if os.environ.get("RESETLSTM_ISA") != isa_cap.CAPS[args.isa][0]["RESETLSTM_ISA"]:
            parser.error("--isa must be given on the command line (the caps are set before "
                         "torch loads)")
        evidence = isa_cap.verify(args.isa, {"simd": {"selected": _native.selected_isa()}},
                                  with_torch=True, with_tensorflow=False)
        meta["isa_cap"] = evidence
        meta["isa_cap_described"] = isa_cap.describe(evidence)
        print(meta["isa_cap_described"], flush=True)
    print(f"{meta['cpu']}; torch {meta['torch']}, {meta['threads']} threads", flush=True)
    results = []
    for shapes, resets, modes in ((rl, True, ["fwdbwd"]), (rl, False, ["fwd", "fwdbwd"]),
                                  (main_shapes, False, ["fwd", "fwdbwd"])):
        for shape in shapes:
            r = run_case(*shape, resets, modes, reps, args.warmup)
            results.append(r)
            print(f"  {shape} resets={resets}: " + ", ".join(
                f"{k} {v:.2f} ms" for k, v in r["ms"].items()) + ", " + ", ".join(
                f"{m} {r[f'speedup {m}']:.2f}x" for m in modes), flush=True)
    tag = "quick" if args.quick else common.host_kind(common.cpu_info(), torch.get_num_threads())
    if args.isa:
        tag += f"-{args.isa}-capped"
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"torch-rl-{tag}")
    with open(stem + ".json", "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(report(results, meta))
    print(f"wrote {stem}.json and .md")
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
