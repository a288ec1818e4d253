"""Where resetlstm._native's C++ runtime comes from, in a process set up like the one that crashed.

On an NVIDIA H200 (torch + CUDA 13, no TensorFlow) forward_cuda/backward_cuda segfaulted inside
std::ostream::_M_insert<long> while formatting a wrong-shape message, in a process that had
imported torch and made CUDA tensors first; the same message formats fine elsewhere. This script
gathers what pins the cause on such a machine, in one run:

1. the process-wide C++ locale after torch, a CUDA tensor and resetlstm's CUDA initialisation
   (anything but "C" means some library called std::locale::global);
2. every loaded shared object other than libstdc++ that exports C++ runtime symbols (a private,
   exported copy of libstdc++ captures other modules' references to it);
3. with LD_DEBUG=bindings in a child process: the object each of _native's std:: references
   binds to (all should be libstdc++.so.6);
4. the wrong-shape calls themselves (CPU and CUDA path), each in a child process: their exit
   status and message.

    python tools/diagnose_cpp_runtime.py [--no-cuda]

Prints a report; exits 0 unless a child process crashed.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import textwrap

RUNTIME = re.compile(r" (?:W|T|V|u) (_ZNSo|_ZNSt6locale|_ZNSt8ios_base|_ZNSt7__cxx1119basic_ostr"
                     r"ingstream|_ZNSt9basic_ios|_ZNSt7num_put)")

SETUP = """
import sys
import numpy as np
use_cuda = {use_cuda}
try:
    import torch
    if use_cuda and torch.cuda.is_available():
        torch.zeros(2, device="cuda").sum().item()   # torch's CUDA context, cuBLAS and friends
except ImportError:
    torch = None
from resetlstm import _native
if use_cuda:
    _native.cuda_available()                          # the driver and resetlstm's cuBLAS
"""

CALLS = {
    "cpu": """
x, k, b = np.zeros((2, 3, 4), np.float32), np.zeros((4, 8), np.float32), np.zeros(8, np.float32)
try:
    _native.forward(x, k, np.zeros((3, 8), np.float32), b)
except ValueError as e:
    print("raised:", e)
""",
    "cuda": """
if torch is None or not torch.cuda.is_available():
    print("skipped: no torch CUDA device")
else:
    dev = torch.device("cuda")
    x, k, b = torch.zeros(2, 3, 4, device=dev), torch.zeros(4, 8, device=dev), torch.zeros(8, device=dev)
    try:
        _native.forward_cuda(x, k, torch.zeros(3, 8, device=dev), b)
    except ValueError as e:
        print("raised:", e)
""",
}


def child(code, env=None):
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True,
                          text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def exporters():
    """Loaded objects (this process) other than libstdc++ exporting C++ runtime symbols."""
    paths = sorted({line.split()[-1] for line in open("/proc/self/maps")
                    if ".so" in line and line.split()[-1].startswith("/")})
    found = []
    for path in paths:
        if os.path.basename(path).startswith("libstdc++"):
            continue
        out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True,
                             text=True).stdout
        hits = [m.group(1) for m in RUNTIME.finditer(out)]
        if hits:
            found.append((path, len(hits), sorted(set(hits))))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-cuda", action="store_true", help="do not initialise CUDA")
    args = ap.parse_args()
    setup = SETUP.format(use_cuda=not args.no_cuda)
    exec(compile(setup, "setup", "exec"), globals())  # noqa: S102 - our own code
    from resetlstm import _native
    print("1. process-wide C++ locale after setup:", repr(_native._cpp_global_locale()))
    print("   CUDA:", _native.cuda_available(), _native.cuda_unavailable_reason() or "",
          "| cuBLAS:", _native.cuda_cublas_library() or "-")
    print("2. loaded objects exporting C++ runtime symbols (besides libstdc++):")
    for path, count, names in exporters() or [("none", 0, [])]:
        print(f"   {path}: {count} symbols, e.g. {', '.join(names[:4])}")
    env = dict(os.environ, LD_DEBUG="bindings")
    _, _, log = child(setup + CALLS["cpu"], env)
    targets = collections.Counter()
    for line in log.splitlines():
        m = re.search(r"binding file (\S*_native\S*) \[\d+\] to (\S+) \[\d+\]: normal symbol `"
                      r"(_ZN?St\w*|_ZNSo\w*|_ZTV\w*St\w*)'", line)
        if m:
            targets[m.group(2)] += 1
    print("3. _native's std:: references bind to:", dict(targets) or "(no LD_DEBUG output)")
    crashed = False
    for name, call in CALLS.items():
        rc, out, err = child(setup + call)
        crashed |= rc != 0
        print(f"4. wrong-shape call, {name} path: exit status {rc}; {out.strip()[:300]}")
        if rc != 0:
            print(textwrap.indent(err[-3000:], "   | "))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
