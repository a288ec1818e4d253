"""torch.nn.LSTM peer for the resetlstm benchmark, run as a subprocess of bench/run.py.

    python bench/torch_bench.py --spec spec.json --out result.json

spec.json: {"threads": N, "warmup": W, "reps": R, "cases": [{"key": str, "B":, "T":, "I":, "H":,
            "modes": ["fwd", "fwdbwd"], "check": bool}, ...]}

Each case uses the same numpy data as the TF process (bench/common.make_data, same seed) and the same
weights: weight_ih = kernel.T, weight_hh = recurrent_kernel.T, bias_ih = bias, bias_hh = 0 (torch's gate
order i, f, g, o equals Keras' i, f, c, o). fwd runs under torch.inference_mode(); fwd+bwd is
forward + backward of sum(outputs * upstream) with gradients to the inputs and every weight.
A separate subprocess keeps torch's OpenMP runtime away from TensorFlow's thread pool.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def build(d, B, T, I, H):
    lstm = torch.nn.LSTM(I, H, num_layers=1, batch_first=True, bias=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(d["kernel"].T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(d["recurrent_kernel"].T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(d["bias"]))
        lstm.bias_hh_l0.zero_()
    x = torch.from_numpy(d["x"]).requires_grad_(True)
    up = torch.from_numpy(d["upstream"])
    return lstm, x, up


def saved_tensor_bytes(lstm, x, up):
    """Bytes autograd saves for backward in one fwd pass (unique storages, excluding the parameters
    and the input itself), measured with torch.autograd.graph.saved_tensors_hooks."""
    exclude = {p.untyped_storage().data_ptr() for p in lstm.parameters()}
    exclude.add(x.untyped_storage().data_ptr())
    exclude.add(up.untyped_storage().data_ptr())
    seen = {}

    def pack(t):
        try:
            s = t.untyped_storage()
            ptr = s.data_ptr()
            if ptr not in exclude:
                seen[ptr] = max(seen.get(ptr, 0), s.nbytes())
        except Exception:  # noqa: BLE001 - e.g. mkldnn opaque tensors
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = lstm(x)
        loss = (out * up).sum()
    # (out * up) saves `out` for d/d up and `up` for d/d out: the loss, not the LSTM.
    seen.pop(out.untyped_storage().data_ptr(), None)
    del loss
    return int(sum(seen.values()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    spec = json.load(open(args.spec))
    torch.set_num_threads(int(spec["threads"]))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    result = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "mkldnn_available": bool(torch.backends.mkldnn.is_available()),
        "parallel_info": torch.__config__.parallel_info(),
        "cases": [],
    }
    for case in spec["cases"]:
        B, T, I, H = (int(case[k]) for k in "BTIH")
        d = common.make_data(B, T, I, H)
        lstm, x, up = build(d, B, T, I, H)
        params = list(lstm.parameters())

        def fwd():
            with torch.inference_mode():
                out, _ = lstm(x)
            return out

        def fwdbwd():
            x.grad = None
            for p in params:
                p.grad = None
            out, _ = lstm(x)
            (out * up).sum().backward()
            return x.grad

        fns = {"fwd": fwd, "fwdbwd": fwdbwd}
        res = {"key": case["key"], "B": B, "T": T, "I": I, "H": H, "times_ms": {}, "checks": []}
        if case.get("check", False):
            out = fwd().numpy()[:common.CHECK_ROWS]
            err = common.max_abs_diff(out, common.reference_rows(d, with_resets=False))
            res["checks"].append({"what": "torch_lstm fwd vs float64 numpy reference (first rows)",
                                  "max_abs_err": err, "tol": common.FWD_TOL, "ok": err <= common.FWD_TOL})
            print(f"    [torch] check vs numpy reference: max abs err {err:.2e}", flush=True)
        if "fwdbwd" in case["modes"]:
            res["saved_bytes"] = saved_tensor_bytes(lstm, x, up)
        compile_s = {}
        for mode in case["modes"]:
            t0 = time.perf_counter()
            for _ in range(int(spec["warmup"])):
                fns[mode]()
            compile_s[mode] = time.perf_counter() - t0
        res["warmup_s"] = compile_s
        times = {m: [] for m in case["modes"]}
        for _ in range(int(spec["reps"])):  # interleave modes rep by rep, like the TF side
            for mode in case["modes"]:
                ms, _ = common.timed(fns[mode])
                times[mode].append(ms)
        res["times_ms"] = times
        msg = "  ".join(f"{m} {common.fmt_ms(float(np.median(v)))} ms" for m, v in times.items())
        print(f"    [torch] {common.shape_str(B, T, I, H)}: {msg}", flush=True)
        result["cases"].append(res)
        del lstm, x, up, d
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
