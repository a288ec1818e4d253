"""torch.nn.LSTM peer for the resetlstm benchmark, run as a subprocess of bench/run.py.

    python bench/torch_bench.py --spec spec.json --out result.json

spec.json: {"threads": N, "warmup": W, "reps": R, "burst": K, "cases": [{"key": str, "B":, "T":, "I":, "H":,
            "modes": ["fwd", "fwdbwd"], "check": bool, "precisions": [...]}, ...]}

"precisions" is optional (the bfloat16 section of bench/run.py uses it): a list of "float32" and/or
"bfloat16"; "bfloat16" runs the same module, parameters and inputs (float32) under
torch.autocast("cpu", dtype=torch.bfloat16). With it, each precision's timings, warm-up times and
checks are under result["cases"][i]["precisions"][name], and the (precision, mode) pairs are
interleaved rep by rep with a rotating order. A precision this CPU's torch cannot run (torch's autocast
bfloat16 LSTM without AVX-512: "could not create a primitive descriptor") gets "status":
"unsupported: ..." and no timings; the others are timed as usual. The bfloat16 check compares its forward with the float32
forward of the same module (informational: bfloat16 is not expected to meet the float32 tolerance).

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
        precisions = case.get("precisions")

        def make_fns(autocast):
            def ctx():
                return torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)

            def fwd():
                with torch.inference_mode(), ctx():
                    out, _ = lstm(x)
                return out

            def fwdbwd():
                x.grad = None
                for p in params:
                    p.grad = None
                with ctx():
                    out, _ = lstm(x)
                (out.float() * up).sum().backward()
                return x.grad

            return {"fwd": fwd, "fwdbwd": fwdbwd}

        res = {"key": case["key"], "B": B, "T": T, "I": I, "H": H, "times_ms": {}, "checks": []}
        if precisions is None:
            fns = make_fns(False)
            if case.get("check", False):
                out = fns["fwd"]().numpy()[:common.CHECK_ROWS]
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
                    times[mode].extend(common.timed_burst(fns[mode], int(spec["burst"])))
            res["times_ms"] = times
            msg = "  ".join(f"{m} {common.fmt_ms(float(np.median(v)))} ms" for m, v in times.items())
            print(f"    [torch] {common.shape_str(B, T, I, H)}: {msg}", flush=True)
        else:
            fns = {p: make_fns(p == "bfloat16") for p in precisions}
            res["precisions"] = {p: {"status": "ok", "times_ms": {m: [] for m in case["modes"]},
                                     "warmup_s": {}, "checks": []} for p in precisions}
            ref32 = None
            for p in precisions:
                entry = res["precisions"][p]
                try:  # a precision this CPU's torch cannot run is recorded as such; the others go on
                    if case.get("check", False):
                        if ref32 is None:
                            ref32 = make_fns(False)["fwd"]().float().numpy()
                        out = fns[p]["fwd"]().float().numpy()
                        if p == "float32":
                            err = common.max_abs_diff(out[:common.CHECK_ROWS], common.reference_rows(d, False))
                            ch = {"what": "torch_lstm float32 fwd vs float64 numpy reference (first rows)",
                                  "max_abs_err": err, "tol": common.FWD_TOL, "ok": err <= common.FWD_TOL}
                        else:
                            err = common.max_abs_diff(out, ref32)
                            ch = {"what": f"torch_lstm autocast {p} fwd vs torch float32 fwd (all rows; "
                                          "informational)", "max_abs_err": err, "tol": common.BF16_TOL,
                                  "ok": err <= common.BF16_TOL, "informational": True}
                        entry["checks"].append(ch)
                        print(f"    [torch] check {ch['what']}: max abs err {err:.2e}", flush=True)
                    for mode in case["modes"]:
                        t0 = time.perf_counter()
                        for _ in range(int(spec["warmup"])):
                            fns[p][mode]()
                        entry["warmup_s"][mode] = time.perf_counter() - t0
                except RuntimeError as e:  # e.g. oneDNN has no bf16 LSTM for this CPU's ISA
                    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    entry["status"] = f"unsupported: {type(e).__name__}: {message}"
                    print(f"    [torch] {p}: {entry['status']}", flush=True)
            runnable = [p for p in precisions if res["precisions"][p]["status"] == "ok"]
            jobs = [(p, m) for p in runnable for m in case["modes"]]
            for rep in range(int(spec["reps"]) if jobs else 0):  # interleaved, rotating order
                k = rep % len(jobs)
                for p, mode in jobs[k:] + jobs[:k]:
                    res["precisions"][p]["times_ms"][mode].extend(
                        common.timed_burst(fns[p][mode], int(spec["burst"])))
            for p in runnable:
                msg = "  ".join(f"{m} {common.fmt_ms(float(np.median(v)))} ms"
                                for m, v in res["precisions"][p]["times_ms"].items())
                print(f"    [torch] {common.shape_str(B, T, I, H)} {p}: {msg}", flush=True)
        result["cases"].append(res)
        del lstm, x, up, d
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
