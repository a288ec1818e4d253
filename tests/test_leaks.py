"""No leaks: 10,000 forward+backward calls of the op (eager, GradientTape) and of _native, each in a
fresh process: resident memory after warm-up grows by less than 5 %."""
import json
import os
import subprocess
import sys
import textwrap

import resetlstm

CALLS = 10_000
WARMUP = 1_000

SCRIPT = """
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from conftest import make_problem

    def rss_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    which, calls, warmup = sys.argv[1], int(sys.argv[2]), 1000
    # every path: resets, mask, initial state, recurrent dropout, on and off
    ps = [make_problem(k, 4, 5, 3, 4, np.float32, resets=k % 2 == 0, mask=k % 3 == 0,
                       state=k % 4 < 2, dropout=k % 5 == 0) for k in range(8)]
    if which == "op":
        from conftest import run_reset_lstm

        def call(p):  # eager, under a GradientTape, gradients of every argument
            return run_reset_lstm("eager", p["inputs"], p["kernel"], p["recurrent_kernel"],
                                  p["bias"], resets=p["resets"], h0=p["h0"], c0=p["c0"],
                                  mask=p["mask"], d_outputs=p["d_outputs"], d_c=p["d_c"],
                                  dropout=p["dropout"])
    else:  # without TensorFlow in the process, so the baseline is the kernels' own
        sys.modules["tensorflow"] = None
        from test_native import native_run as call

    for i in range(warmup):
        call(ps[i % len(ps)])
    before = rss_kib()
    for i in range(calls):
        call(ps[i % len(ps)])
    after = rss_kib()
    print(json.dumps({"before_kib": before, "after_kib": after}))
"""


def measure(which):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), which, str(CALLS),
                           tests_dir], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = (r["after_kib"] - r["before_kib"]) / r["before_kib"]
    print(f"{which}: RSS {r['before_kib']} KiB after {WARMUP} warm-up calls, {r['after_kib']} KiB "
          f"after {CALLS} more fwd+bwd calls ({100 * growth:+.2f} %, "
          f"{1024 * (r['after_kib'] - r['before_kib']) / CALLS:+.1f} bytes per call)")
    return growth


def test_op_does_not_leak():
    assert measure("op") < 0.05


def test_native_does_not_leak():
    assert measure("native") < 0.05
