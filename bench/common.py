"""Helpers shared by bench/run.py (TensorFlow process) and bench/torch_bench.py (torch subprocess).

Nothing here imports TensorFlow or torch: both processes build *identical* data from the same seed
with numpy, and both check their forward pass against the float64 numpy reference below.
"""
from __future__ import annotations

import os
import platform
import re
import socket
import statistics
import sys
import time
import zlib

import numpy as np

RESET_RATE = 0.02  # fraction of (b, t) with resets[b, t] = True in the "2 % random resets" cases
CHECK_ROWS = 4  # rows of the batch compared against the float64 numpy reference
FWD_TOL = 1e-4  # max abs difference allowed between two forward outputs (h is in (-1, 1))
GRAD_RTOL = 1e-3  # max abs gradient difference / max abs gradient allowed between two variants
# max abs difference allowed between a bfloat16 forward output and the float32 one of the same variant:
# bfloat16 keeps 8 significant bits (rounding 2^-9 ~ 2e-3 relative), the outputs themselves come back in
# bfloat16 (|h| < 1: up to ~4e-3 from that rounding alone) and the inputs/weights are rounded too, with the
# error carried through T steps; 3e-2 leaves room for that at T = 50 while still catching a wrong kernel
# (a wrong gate or a missing reset gives errors of order 0.1-1).
BF16_TOL = 3e-2


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def case_seed(B, T, I, H):
    return zlib.crc32(f"{B},{T},{I},{H}".encode())


def make_data(B, T, I, H, seed=None):
    """Deterministic float32 data for one shape (identical in every process).

    Weights are in Keras layout: kernel [I, 4H], recurrent_kernel [H, 4H], bias [4H], gates i, f, c, o.
    """
    rng = np.random.default_rng(case_seed(B, T, I, H) if seed is None else seed)
    a = np.sqrt(6.0 / (I + 4 * H))  # glorot_uniform, like keras
    kernel = rng.uniform(-a, a, size=(I, 4 * H)).astype(np.float32)
    recurrent_kernel = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(4 * H)).astype(np.float32)
    bias[H:2 * H] += 1.0  # unit forget bias, like keras
    x = rng.standard_normal((B, T, I), dtype=np.float32)
    upstream = rng.standard_normal((B, T, H), dtype=np.float32)
    resets = rng.random((B, T)) < RESET_RATE
    if T > 1:
        resets[0, T // 2] = True  # at least one reset inside the checked rows, even for tiny shapes
    return dict(x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias,
                upstream=upstream, resets=resets)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def reference_lstm(x, kernel, recurrent_kernel, bias, resets=None):
    """float64 numpy LSTM with per-row resets (DESIGN.md section 1). Returns outputs [B, T, H]."""
    x = np.asarray(x, np.float64)
    W, U, b = (np.asarray(a, np.float64) for a in (kernel, recurrent_kernel, bias))
    B, T, _ = x.shape
    H = U.shape[0]
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    out = np.empty((B, T, H))
    for t in range(T):
        if resets is not None:
            keep = 1.0 - np.asarray(resets[:, t], np.float64)[:, None]
            h, c = h * keep, c * keep
        z = x[:, t] @ W + h @ U + b
        i, f, g, o = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out[:, t] = h
    return out


def reference_rows(d, with_resets, rows=CHECK_ROWS):
    r = d["resets"][:rows] if with_resets else None
    return reference_lstm(d["x"][:rows], d["kernel"], d["recurrent_kernel"], d["bias"], r)


def max_abs_diff(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def rel_grad_diff(a, b):
    """max |a - b| / max |b| (scale-free; gradients are sums over B*T terms)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    scale = max(float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(a - b))) / scale


# ----------------------------------------------------------------------------------------------
# flops / stats
# ----------------------------------------------------------------------------------------------
def lstm_flops(B, T, I, H):
    """FLOPs of the LSTM's matmuls: fwd 2*B*T*(I+H)*4H; fwd+bwd three times that."""
    fwd = 2.0 * B * T * (I + H) * 4 * H
    return {"fwd": fwd, "fwdbwd": 3.0 * fwd}


def summarize(times_ms):
    ts = sorted(times_ms)
    return {
        "median_ms": statistics.median(ts),
        "min_ms": ts[0],
        "max_ms": ts[-1],
        "n": len(ts),
        # relative spread (max-min)/median: how noisy this measurement was
        "spread": (ts[-1] - ts[0]) / statistics.median(ts) if statistics.median(ts) > 0 else 0.0,
    }


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


def timed_burst(fn, burst):
    """`burst` calls of fn back to back, each timed (ms). Both processes of the bench time every
    variant this way, so each gets its caches warm from its own previous call however the
    variants are interleaved (the TF variants share one process; torch runs in another)."""
    return [timed(fn)[0] for _ in range(burst)]


def fmt_ms(ms):
    if ms is None:
        return "–"
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def shape_str(B, T, I, H):
    return f"({B}, {T}, {I}, {H})"


# ----------------------------------------------------------------------------------------------
# machine info
# ----------------------------------------------------------------------------------------------
def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def cpu_info():
    info = {"model": platform.processor() or platform.machine(), "flags_simd": []}
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return info
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    if m:
        info["model"] = m.group(1).strip()
    for key, name in (("vendor_id", "vendor"), ("cpu family", "family"), ("model", "model_number"),
                      ("cpu MHz", "mhz"), ("cache size", "cache")):
        m = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", text, re.M)
        if m:
            info[name] = m.group(1).strip()
    m = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    if m:
        flags = set(m.group(1).split())
        info["flags_simd"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                          "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")
                              if f in flags]
    info["logical_cpus_total"] = len(re.findall(r"^processor\s*:", text, re.M))
    return info


def mem_total_gib():
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def loadavg():
    try:
        return [float(v) for v in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


def peak_rss_mib():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def machine_info():
    cpu = cpu_info()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores_available": default_threads(),
        "os_cpu_count": os.cpu_count(),
        "mem_total_gib": mem_total_gib(),
        "loadavg_at_start": loadavg(),
        "gpu": "none used (CPU benchmark; CUDA_VISIBLE_DEVICES='')",
    }


def microarchitecture(cpu):
    """'zen4', 'zen5', 'spr', 'emr', ... from /proc/cpuinfo's vendor, family and model (VMs often
    name the CPU only 'AMD EPYC'), or '' when unknown."""
    try:
        family, model = int(cpu.get("family", -1)), int(cpu.get("model_number", -1))
    except ValueError:
        return ""
    vendor = cpu.get("vendor", "")
    if vendor == "AuthenticAMD":
        if family == 0x1A:
            return "zen5"
        if family == 0x19:
            return "zen4" if (0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F
                              or 0xA0 <= model <= 0xAF) else "zen3"
        if family == 0x17:
            return "zen2" if model >= 0x30 else "zen1"
    if vendor == "GenuineIntel" and family == 6:
        return {0x8F: "spr", 0xCF: "emr", 0xAD: "gnr", 0xAE: "gnr", 0x6A: "icx",
                0x6C: "icx", 0x55: "skx"}.get(model, "")
    return ""


def host_kind(cpu, cores):
    """A short file-name slug such as 'amd-epyc-zen5-2c' (the microarchitecture when known)."""
    model = cpu.get("model", "cpu")
    model = re.sub(r"\(R\)|\(TM\)|CPU|Processor|\d+-Core|@.*$", " ", model, flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "cpu"
    slug = "-".join(slug.split("-")[:4])
    arch = microarchitecture(cpu)
    if arch and arch not in slug.split("-"):
        slug += "-" + arch
    return f"{slug}-{cores}c"


# ----------------------------------------------------------------------------------------------
# background load
# ----------------------------------------------------------------------------------------------
_BUSY = "import time\nwhile True:\n    pass\n"


class BackgroundLoad:
    """``with BackgroundLoad(n):`` runs n busy threads beside the timed code: each a process
    spinning in a Python loop at normal priority (the other jobs, environment workers and noisy
    neighbours a CPU rarely lacks). n = 0 does nothing. The processes are started, given a
    moment to be scheduled, and killed on exit."""

    def __init__(self, n, settle_s=0.3):
        self.n, self.settle_s, self.procs = int(n), settle_s, []

    def __enter__(self):
        import subprocess
        self.procs = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(self.n)]
        if self.procs:
            time.sleep(self.settle_s)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []
        return False


# ----------------------------------------------------------------------------------------------
# one process per framework
# ----------------------------------------------------------------------------------------------
FRAMEWORK_MODULES = {"tf": "tensorflow", "torch": "torch", "jax": "jax"}


def run_framework_workers(script, frameworks, spec, summarize, log=print):
    """Runs ``script --worker F --spec SPEC --out OUT`` in a fresh process for each framework F
    of the comma-separated `frameworks` (spec: a JSON-able dict, given "framework" too); the
    worker writes {"shapes": [...]} to OUT. Each shape gets ``summary = summarize(F, shape)``.
    Returns {framework: its shapes, or "skipped: ..." where the framework is not installed};
    a worker that fails stops the run."""
    import importlib.util
    import json
    import subprocess
    import tempfile

    results = {}
    for framework in frameworks.split(","):
        if framework not in FRAMEWORK_MODULES:
            raise SystemExit(f"--frameworks: {framework!r} is not one of tf, torch, jax")
        module = FRAMEWORK_MODULES[framework]
        if importlib.util.find_spec(module) is None:
            results[framework] = f"skipped: {module} is not installed"
            log(f"  {framework}: {results[framework]}")
            continue
        log(f"  {framework}: {len(spec['shapes'])} shape(s) x {spec['rounds']} rounds")
        with tempfile.TemporaryDirectory() as td:
            spec_path, out = os.path.join(td, "spec.json"), os.path.join(td, "out.json")
            json.dump(dict(spec, framework=framework), open(spec_path, "w"))
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, os.path.abspath(script), "--worker", framework,
                                   "--spec", spec_path, "--out", out])
            if proc.returncode != 0:
                raise SystemExit(f"the {framework} worker failed (exit {proc.returncode})")
            shapes = json.load(open(out))["shapes"]
        for shape in shapes:
            shape["summary"] = summarize(framework, shape)
        results[framework] = shapes
        log(f"  {framework}: {time.perf_counter() - t0:.0f} s")
    return results


def start_run(args, prefix, argv):
    """The start of a per-framework bench (load_bench.py, gru_bench.py): the ISA cap applied
    (isa_cap.py), the machine read, and the result's path, results/<prefix>-<cpu>[-<isa>-capped]
    [-quick] unless --name/--out say otherwise. Returns (result, path without extension)."""
    import isa_cap

    caps = isa_cap.apply(args.isa) if args.isa else {}
    machine = machine_info()
    slug = host_kind(machine["cpu"], machine["cores_available"])
    name = args.name or (f"{prefix}-{slug}" + (f"-{args.isa}-capped" if args.isa else "")
                         + ("-quick" if args.quick else ""))
    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    result = {"machine": machine, "cpu_slug": slug, "isa": args.isa, "isa_environment": caps,
              "threads": args.threads, "rounds": args.rounds, "reps": args.reps,
              "quick": args.quick, "frameworks": {},
              "command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:]))}
    return result, os.path.join(out_dir, name)


def finish_run(result, path, markdown, log=print):
    """The end of such a run: with an ISA cap, the evidence that every side ran under it
    (isa_cap.verify); then path.json, path.md (markdown(result)) and the table on the log."""
    import json

    import isa_cap

    if result["isa"]:
        from resetlstm import _native

        result["isa_evidence"] = isa_cap.verify(
            result["isa"], {"simd": {"selected": _native.selected_isa()}},
            with_torch="torch" in result["frameworks"],
            with_tensorflow="tf" in result["frameworks"])
    with open(path + ".json", "w") as f:
        json.dump(result, f, indent=1)
    text = markdown(result)
    with open(path + ".md", "w") as f:
        f.write(text)
    log(text)
    log(f"wrote {path}.json/.md")
