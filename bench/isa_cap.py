"""`bench/run.py --isa avx2`: caps every side of the benchmark to one instruction set and proves
that each cap took effect.

An AVX-512 CPU capped to AVX2 stands in for an AVX2 CPU (the same code paths; not the same caches
or ports). The caps are environment variables, set before TensorFlow, torch or resetlstm's kernels
are loaded and inherited by the torch subprocess:

- RESETLSTM_ISA=avx2          resetlstm's kernels (checked: build_info()["simd"]["selected"]);
- ONEDNN_MAX_CPU_ISA=AVX2     the oneDNN inside TensorFlow (its MatMul, hence the matmul limit) and
                              the one inside torch (its LSTM); checked with ONEDNN_VERBOSE=1 in a
                              probe process of each, whose "cpu,isa:" line must name that ISA;
- ATEN_CPU_CAPABILITY=avx2    torch's own kernels (checked: torch.backends.cpu.get_cpu_capability()).

A cap that did not take effect stops the run (a mislabelled result is worse than none).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

# isa -> (environment, the oneDNN "isa:" line expected, torch's capability, resetlstm's "selected")
CAPS = {
    "avx2": ({"RESETLSTM_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
             "Intel AVX2", "AVX2", "avx2"),
}

# Variants that cannot run under a cap although they run on a CPU that really has only that ISA:
# TensorFlow picks its oneDNN bfloat16 MatMul from CPUID (which still reports AVX-512), and oneDNN,
# capped, then cannot create it and aborts the whole process (dnnl::error, "could not create a
# primitive descriptor for the matmul primitive").
UNSUPPORTED_UNDER_CAP = {
    "keras_bf16": "unsupported under the cap: TensorFlow chooses its oneDNN bfloat16 MatMul from CPUID "
                  "(AVX-512 still reported) and the capped oneDNN aborts the process creating it; not timed",
}

_TF_PROBE = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
a = tf.random.normal([256, 256])
print(tf.function(lambda a: tf.matmul(a, a))(a).shape)
"""
_TORCH_PROBE = """
import torch
print("torch_cpu_capability:", torch.backends.cpu.get_cpu_capability())
lstm = torch.nn.LSTM(16, 16, batch_first=True)
with torch.inference_mode():
    lstm(torch.randn(4, 5, 16))
"""


def apply(isa):
    """Sets the caps in this process' environment (before TF/torch/resetlstm are loaded)."""
    env, _, _, _ = CAPS[isa]
    os.environ.update(env)
    return dict(env)


def _probe(code):
    env = dict(os.environ, ONEDNN_VERBOSE="1", CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    text = p.stdout + p.stderr
    isa_line = re.search(r"onednn_verbose,(?:v\d+,)?info,cpu,isa:([^\n]*)", text)
    execs = [ln for ln in text.splitlines() if ",primitive,exec,cpu," in ln]
    return p.returncode, text, isa_line.group(1).strip() if isa_line else None, execs


def verify(isa, build_info, with_torch, with_tensorflow=True):
    """Checks every cap (TensorFlow's unless with_tensorflow is False: a torch-only bench);
    returns a dict of the evidence. Raises RuntimeError naming the cap that did not take
    effect."""
    _, onednn_isa, torch_cap, selected = CAPS[isa]
    evidence = {"isa": isa, "environment": {k: os.environ.get(k) for k in CAPS[isa][0]}}
    problems = []
    got = (build_info or {}).get("simd", {}).get("selected")
    evidence["resetlstm_simd_selected"] = got
    if got != selected:
        problems.append(f"resetlstm: build_info()['simd']['selected'] is {got!r}, expected {selected!r}")
    if with_tensorflow:
        rc, text, line, execs = _probe(_TF_PROBE)
        evidence["tensorflow_onednn_isa"] = line
        evidence["tensorflow_onednn_exec"] = execs[:2]
        if rc != 0 or line != onednn_isa:
            problems.append(f"TensorFlow's oneDNN reports isa {line!r} (expected {onednn_isa!r}; "
                            f"probe exit {rc})" + ("" if rc == 0 else ": " + text[-500:]))
    if with_torch:
        rc, text, line, execs = _probe(_TORCH_PROBE)
        cap = re.search(r"torch_cpu_capability: (\S+)", text)
        evidence["torch_onednn_isa"] = line
        evidence["torch_onednn_exec"] = [e for e in execs if ",rnn," in e][:1]
        evidence["torch_cpu_capability"] = cap.group(1) if cap else None
        if rc != 0 or line != onednn_isa:
            problems.append(f"torch's oneDNN reports isa {line!r} (expected {onednn_isa!r}; probe exit {rc})"
                            + ("" if rc == 0 else ": " + text[-500:]))
        if evidence["torch_cpu_capability"] != torch_cap:
            problems.append(f"torch.backends.cpu.get_cpu_capability() is {evidence['torch_cpu_capability']!r}, "
                            f"expected {torch_cap!r}")
    if problems:
        raise RuntimeError(f"--isa {isa}: " + "; ".join(problems))
    return evidence


def describe(evidence):
    """One markdown line saying what was capped and how each cap was checked."""
    parts = [f"resetlstm `build_info()['simd']['selected']` = `{evidence['resetlstm_simd_selected']}`"]
    if "tensorflow_onednn_isa" in evidence:
        parts.append(f"TensorFlow's oneDNN (ONEDNN_VERBOSE) `isa:{evidence['tensorflow_onednn_isa']}`")
    if "torch_onednn_isa" in evidence:
        parts.append(f"torch's oneDNN `isa:{evidence['torch_onednn_isa']}`, "
                     f"`torch.backends.cpu.get_cpu_capability()` = `{evidence['torch_cpu_capability']}`")
        if evidence.get("torch_onednn_exec"):
            impl = evidence["torch_onednn_exec"][0].split(",")
            if len(impl) > 6:
                parts.append(f"torch's LSTM ran oneDNN `{impl[5]}` `{impl[6]}`")
    env = " ".join(f"{k}={v}" for k, v in evidence["environment"].items())
    return (f"**Capped to {evidence['isa'].upper()}** (a stand-in for an {evidence['isa'].upper()}-only CPU: "
            f"same code paths, not its caches or ports): `{env}`; checked: " + "; ".join(parts) + ".")
