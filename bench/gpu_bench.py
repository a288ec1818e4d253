"""GPU benchmark: resetlstm's CUDA kernels (resetlstm._native.forward_cuda / backward_cuda) against
torch.nn.LSTM (cuDNN), side by side in one process.

    python bench/gpu_bench.py [--quick] [--reps 7] [--warmup 2] [--out bench/results]
                              [--precisions fp32,tf32,bf16,fp16]

Needs torch with CUDA and a CUDA build of resetlstm (TensorFlow is not needed: _native is loaded
without importing the TF op). Cases: B in {64, 256, 1024, 4096} x H in {256, 512, 1024}, T = 100,
I = H, each in fp32 (TF32 off everywhere), TF32 (cuBLAS TF32 for resetlstm;
torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 for cuDNN), bf16 and
fp16 (resetlstm on bfloat16 / float16 arrays: tensor-core GEMMs, float32 accumulation and cell
state; cuDNN under torch.autocast in that dtype with float32 weights, as mixed-precision training
runs it). bf16 and TF32 need compute capability 8.0+.

Variants: resetlstm without resets; resetlstm with 2 % random resets; cuDNN (which cannot reset
rows mid-sequence: it is the no-reset speed to match). Modes: fwd = inference forward
(training=False / torch.inference_mode); fwd+bwd = training forward + backward of
sum(outputs * upstream), gradients to the inputs, every weight and the initial state.

Timing: CUDA events around each call on the current stream, after warm-up; each rep runs every
variant once in an order that rotates from rep to rep; medians (and every rep) go to
<out>/gpu-<device>.json, a markdown table to stdout and <out>/gpu-<device>.md, with resetlstm's
throughput in TFLOP/s (forward 8 B T (I + H) H FLOPs, fwd+bwd 3x that). Before timing, each case
checks resetlstm's outputs against cuDNN's (max abs difference).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import statistics
import warnings

import torch

RESET_RATE = 0.02
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
BATCHES = (64, 256, 1024, 4096)
HIDDEN = (256, 512, 1024)
STEPS = 100


def set_tf32(enabled: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def make_case(B, T, I, H, seed, dtype=torch.float32):
    """Same weights for both: Keras layout for resetlstm (in `dtype`), torch layout for cuDNN
    (float32 parameters; half precisions run it under autocast)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    dev = torch.device("cuda")
    a = (6.0 / (I + 4 * H)) ** 0.5  # glorot_uniform kernel, like keras
    kernel = (torch.rand(I, 4 * H, generator=g, device=dev) * 2 - 1) * a
    recurrent_kernel = torch.randn(H, 4 * H, generator=g, device=dev) / H ** 0.5
    bias = 0.1 * torch.randn(4 * H, generator=g, device=dev)
    bias[H:2 * H] += 1.0  # unit forget bias
    x = torch.randn(B, T, I, generator=g, device=dev)
    upstream = torch.randn(B, T, H, generator=g, device=dev)
    resets = torch.rand(B, T, generator=g, device=dev) < RESET_RATE
    lstm = torch.nn.LSTM(I, H, batch_first=True).to(dev)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(kernel.T)
        lstm.weight_hh_l0.copy_(recurrent_kernel.T)
        lstm.bias_ih_l0.copy_(bias)
        lstm.bias_hh_l0.zero_()
    return dict(kernel=kernel.to(dtype), recurrent_kernel=recurrent_kernel.to(dtype),
                bias=bias.to(dtype), x=x.to(dtype), upstream=upstream.to(dtype), resets=resets,
                lstm=lstm, x32=x, upstream32=upstream, dtype=dtype)


def cudnn_precision(c):
    """torch.autocast in the case's half dtype, or nothing for float32."""
    if c["dtype"] == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=c["dtype"])


def variants(nat, c, allow_tf32):
    """name -> {mode: callable}; each callable enqueues one complete fwd or fwd+bwd."""
    k, rk, b, x, up = c["kernel"], c["recurrent_kernel"], c["bias"], c["x"], c["upstream"]

    def ours(resets):
        def fwd():
            return nat.forward_cuda(x, k, rk, b, resets=resets, training=False,
                                    allow_tf32=allow_tf32)

        def fwdbwd():
            y, h, cs, gates, cells = nat.forward_cuda(x, k, rk, b, resets=resets, training=True,
                                                      allow_tf32=allow_tf32)
            return nat.backward_cuda(x, k, rk, b, resets, None, None, None, y, gates, cells, up,
                                     None, None, allow_tf32=allow_tf32)
        return {"fwd": fwd, "fwd+bwd": fwdbwd}

    lstm = c["lstm"]
    x32 = c["x32"]
    xg = x32.detach().clone().requires_grad_(True)
    h0 = torch.zeros(1, x.shape[0], lstm.hidden_size, device=x.device, requires_grad=True)
    c0 = torch.zeros_like(h0, requires_grad=True)

    def cudnn_fwd():
        with torch.inference_mode(), cudnn_precision(c):
            return lstm(x32)[0]

    def cudnn_fwdbwd():
        for p in (xg, h0, c0, *lstm.parameters()):
            p.grad = None
        with cudnn_precision(c):
            y, _ = lstm(xg, (h0, c0))
        y.backward(up.to(y.dtype))

    return {"resetlstm": ours(None), "resetlstm (2% resets)": ours(c["resets"]),
            "cuDNN": {"fwd": cudnn_fwd, "fwd+bwd": cudnn_fwdbwd}}


def time_call(fn):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def check(nat, c, allow_tf32):
    y = nat.forward_cuda(c["x"], c["kernel"], c["recurrent_kernel"], c["bias"], training=False,
                         allow_tf32=allow_tf32)[0]
    with torch.inference_mode(), cudnn_precision(c):
        want = c["lstm"](c["x32"])[0]
    return float((y.float() - want.float()).abs().max())


def tflops(B, T, I, H, mode, ms):
    flops = 8.0 * B * T * (I + H) * H * (3 if mode == "fwd+bwd" else 1)
    return flops / (ms * 1e-3) / 1e12


def run(args):
    from resetlstm import _native as nat  # works without TensorFlow
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    if not nat.cuda_available():
        raise SystemExit("resetlstm's CUDA path is unavailable: " + nat.cuda_unavailable_reason())
    device = torch.cuda.get_device_name()
    shapes = [(B, STEPS, H, H) for H in HIDDEN for B in BATCHES]
    if args.quick:
        shapes = [(8, 5, 16, 16), (32, 10, 32, 32)]
    ampere = torch.cuda.get_device_capability()[0] >= 8
    precisions = [p for p in args.precisions.split(",") if ampere or p not in ("tf32", "bf16")]
    unknown = set(precisions) - {"fp32", "tf32", "bf16", "fp16"}
    if unknown:
        raise SystemExit(f"--precisions: unknown {sorted(unknown)} (fp32, tf32, bf16, fp16)")
    result = dict(device=device, capability=list(torch.cuda.get_device_capability()),
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  host=platform.node(), torch=torch.__version__, torch_cuda=torch.version.cuda,
                  cudnn=torch.backends.cudnn.version(), cublas=nat.cuda_cublas_library(),
                  reset_rate=RESET_RATE, warmup=args.warmup, reps=args.reps, cases=[])
    print(f"# resetlstm vs cuDNN on {device} (medians of {args.reps} reps, ms)\n")
    header = ("| B | T | I=H | prec | mode | resetlstm | resetlstm 2% resets | cuDNN | "
              "cuDNN / resetlstm | cuDNN / resetlstm (resets) | resetlstm TFLOP/s |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")
    print(header)
    lines = []
    for (B, T, I, H) in shapes:
        for prec in precisions:
            tf32 = prec == "tf32"
            set_tf32(tf32)
            try:
                c = make_case(B, T, I, H, seed=B * 7919 + H,
                              dtype=HALF.get(prec, torch.float32))
                vs = variants(nat, c, tf32)
                max_diff = check(nat, c, tf32)
                for mode in ("fwd", "fwd+bwd"):
                    names = list(vs)
                    for name in names:  # warm-up (cuBLAS heuristics, cuDNN plans, allocator)
                        for _ in range(args.warmup):
                            vs[name][mode]()
                    times = {n: [] for n in names}
                    for rep in range(args.reps):
                        for i in range(len(names)):
                            name = names[(rep + i) % len(names)]
                            times[name].append(time_call(vs[name][mode]))
                    med = {n: statistics.median(t) for n, t in times.items()}
                    rate = tflops(B, T, I, H, mode, med["resetlstm"])
                    result["cases"].append(dict(B=B, T=T, I=I, H=H, precision=prec, mode=mode,
                                                max_abs_diff_vs_cudnn=max_diff,
                                                times_ms=times, median_ms=med,
                                                resetlstm_tflops=rate))
                    line = (f"| {B} | {T} | {H} | {prec} | {mode} | {med['resetlstm']:.2f} | "
                            f"{med['resetlstm (2% resets)']:.2f} | {med['cuDNN']:.2f} | "
                            f"{med['cuDNN'] / med['resetlstm']:.2f} | "
                            f"{med['cuDNN'] / med['resetlstm (2% resets)']:.2f} | {rate:.1f} |")
                    print(line, flush=True)
                    lines.append(line)
            except torch.cuda.OutOfMemoryError as e:
                result["cases"].append(dict(B=B, T=T, I=I, H=H, precision=prec, error=str(e)))
                print(f"| {B} | {T} | {H} | {prec} | out of memory | | | | | | |", flush=True)
            finally:
                c = vs = None
                torch.cuda.empty_cache()
    set_tf32(False)

    os.makedirs(args.out, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    base = os.path.join(args.out, f"gpu-{slug}{'-quick' if args.quick else ''}")
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(f"# resetlstm vs cuDNN on {device}\n\n{result['date']}, torch {torch.__version__}, "
                f"CUDA {torch.version.cuda}, cuDNN {result['cudnn']}, cuBLAS {result['cublas']}; "
                f"T = {STEPS}, I = H, medians of {args.reps} reps (ms). Ratios > 1: resetlstm "
                "faster. bf16 / fp16: cuDNN under torch.autocast.\n\n" + header + "\n" +
                "\n".join(lines) + "\n")
    print(f"\nwrote {base}.json and {base}.md")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions (>= 5)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="two tiny shapes (smoke test)")
    ap.add_argument("--out", default=os.path.join(here, "results"))
    ap.add_argument("--precisions", default="fp32,tf32,bf16,fp16",
                    help="comma-separated subset of fp32, tf32, bf16, fp16 (tf32 and bf16 are "
                         "skipped below compute capability 8.0)")
    args = ap.parse_args()
    if args.reps < 5 and not args.quick:
        ap.error("--reps must be at least 5")
    run(args)


if __name__ == "__main__":
    main()
