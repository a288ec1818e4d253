"""The pybind11 module resetlstm._native: same numbers as the TF op and as the numpy reference,
forward and backward, with resets and mask."""
import numpy as np
import pytest

from conftest import (DIFF_NAMES, assert_close, check_against_reference, make_problem,
                      op_on_problem, reference_for)

SCENARIOS = {
    "plain": dict(),
    "resets_state": dict(resets=True, state=True),
    "mask": dict(mask=True),
    "resets_mask": dict(resets=True, mask=True),
    "resets_mask_state": dict(resets=True, mask=True, state=True),
    "dropout": dict(dropout=True),
    "resets_mask_state_dropout": dict(resets=True, mask=True, state=True, dropout=True),
}


def native():
    from resetlstm import _native
    return _native


def _tm(time_major):
    return (lambda a: None if a is None else np.ascontiguousarray(np.swapaxes(a, 0, 1))) \
        if time_major else (lambda a: a)


def native_run(p, time_major=False, training=True, num_threads=0, upstream=True):
    """_native.forward (+ backward) on a batch-major make_problem dict; results batch-major."""
    nat = native()
    tm = _tm(time_major)
    x = tm(p["inputs"])
    r, m = tm(p["resets"]), tm(p["mask"])
    y, h, c, gates, cells = nat.forward(x, p["kernel"], p["recurrent_kernel"], p["bias"],
                                        resets=r, mask=m, h0=p["h0"], c0=p["c0"],
                                        time_major=time_major, training=training,
                                        num_threads=num_threads,
                                        recurrent_dropout_mask=p.get("dropout"))
    y, h, c = np.asarray(y), np.asarray(h), np.asarray(c)
    grads = None
    if upstream:
        res = nat.backward(x, p["kernel"], p["recurrent_kernel"], p["bias"], r, m, p["h0"],
                           p["c0"], y, gates, cells, tm(p["d_outputs"]), p["d_h"], p["d_c"],
                           time_major=time_major, num_threads=num_threads,
                           recurrent_dropout_mask=p.get("dropout"))
        assert len(res) == 6
        grads = dict(zip(DIFF_NAMES, [None if g is None else np.asarray(g) for g in res]))
        if time_major:
            grads["inputs"] = np.swapaxes(grads["inputs"], 0, 1)
    if time_major:
        y = np.swapaxes(y, 0, 1)
    return (y, h, c), grads, (gates, cells)


def _native_close(actual, expected, dtype, name):
    """float32 within 1e-6 (relative to scale), float64 within 1e-12."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    tol = 1e-6 if np.dtype(dtype) == np.float32 else 1e-12
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=name)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_native_vs_reference(scenario, time_major, dtype):
    p = make_problem(1000 + list(SCENARIOS).index(scenario), 6, 9, 5, 7, dtype,
                     **SCENARIOS[scenario])
    (y, h, c), grads, _ = native_run(p, time_major=time_major)
    (ry, rh, rc), rg = reference_for(p)
    for name, a, e in (("outputs", y, ry), ("h_T", h, rh), ("c_T", c, rc)):
        assert a.dtype == np.dtype(dtype), name
        assert_close(a, e, dtype, name)
    for n in DIFF_NAMES:
        g = grads[n]
        if n in ("h0", "c0") and p[n] is None:
            # without h0/c0 a gradient may be omitted; if given it is w.r.t. the zero state
            if g is not None and np.size(g):
                assert_close(g, rg[n], dtype, "d_" + n)
            continue
        assert g is not None, n
        assert g.dtype == np.dtype(dtype), n
        assert_close(g, rg[n], dtype, "d_" + n)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_native_matches_tf_op(scenario, time_major, dtype):
    p = make_problem(1100 + list(SCENARIOS).index(scenario), 5, 8, 6, 9, dtype,
                     **SCENARIOS[scenario])
    (y, h, c), grads, _ = native_run(p, time_major=time_major)
    (ty, th, tc), tgrads = op_on_problem("eager", p, time_major=time_major)
    _native_close(y, ty, dtype, "outputs")
    _native_close(h, th, dtype, "h_T")
    _native_close(c, tc, dtype, "c_T")
    for n in DIFF_NAMES:
        if n in ("h0", "c0") and p[n] is None:
            continue
        _native_close(grads[n], tgrads[n], dtype, "d_" + n)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 4, 17, 13), (8, 12, 16, 16)],
                         ids=lambda s: "B%dT%dI%dH%d" % s)
def test_native_odd_shapes_vs_reference(shape, dtype):
    B, T, I, H = shape
    p = make_problem(1200 + sum(shape), B, T, I, H, dtype, resets=True, mask=True, state=True)
    (y, h, c), grads, _ = native_run(p)
    (ry, rh, rc), rg = reference_for(p)
    assert_close(y, ry, dtype, "outputs")
    assert_close(h, rh, dtype, "h_T")
    assert_close(c, rc, dtype, "c_T")
    for n in DIFF_NAMES:
        assert_close(grads[n], rg[n], dtype, "d_" + n)


def test_native_training_false(dtype):
    p = make_problem(1300, 5, 7, 4, 6, dtype, resets=True, mask=True, state=True)
    (y, h, c), _, (gates, cells) = native_run(p, training=True, upstream=False)
    (y2, h2, c2), _, (gates2, cells2) = native_run(p, training=False, upstream=False)
    assert np.size(gates) > 0 and np.size(cells) > 0
    assert np.size(gates2) == 0 and np.size(cells2) == 0
    _native_close(y2, y, dtype, "outputs")
    _native_close(h2, h, dtype, "h_T")
    _native_close(c2, c, dtype, "c_T")
    (ry, rh, rc), _ = reference_for(p)
    assert_close(y2, ry, dtype, "outputs vs reference")


@pytest.mark.parametrize("num_threads", [1, 2])
def test_native_num_threads(num_threads, dtype):
    p = make_problem(1400, 8, 6, 5, 12, dtype, resets=True, mask=True, state=True)
    (y0, h0, c0), g0, _ = native_run(p, num_threads=0)
    (y1, h1, c1), g1, _ = native_run(p, num_threads=num_threads)
    _native_close(y1, y0, dtype, "outputs")
    _native_close(h1, h0, dtype, "h_T")
    _native_close(c1, c0, dtype, "c_T")
    for n in DIFF_NAMES:
        _native_close(g1[n], g0[n], dtype, "d_" + n)


@pytest.mark.parametrize("which", ["outputs", "h", "c"])
def test_native_partial_upstream(which, dtype):
    """Only one upstream gradient given, the others None."""
    p = make_problem(1500, 5, 6, 3, 4, dtype, resets=True, mask=True, state=True,
                     upstream=(which,))
    (y, h, c), grads, _ = native_run(p)
    _, rg = reference_for(p)
    for n in DIFF_NAMES:
        assert_close(grads[n], rg[n], dtype, "d_" + n)
    (_, _, _), tgrads = op_on_problem("eager", p)
    for n in DIFF_NAMES:
        _native_close(grads[n], tgrads[n], dtype, "d_" + n + " vs op")


def test_native_flags_respected(dtype):
    """Guard against ignored resets/mask/dropout mask: dropping any changes the result."""
    p = make_problem(1600, 4, 6, 3, 4, dtype, resets=True, mask=True, state=True, dropout=True)
    (y, _, _), _, _ = native_run(p, upstream=False)
    for name in ("resets", "mask", "dropout"):
        (y_without, _, _), _, _ = native_run(dict(p, **{name: None}), upstream=False)
        assert np.max(np.abs(y - y_without)) > 1e-3, name


@pytest.mark.parametrize("case", [
    ("recurrent_kernel", dict(recurrent_kernel=np.zeros((4, 9), np.float32)), r"\b9\b"),
    ("resets", dict(resets=np.zeros((9, 6), bool)), r"\b9\b"),
    ("mask", dict(mask=np.zeros((4, 11), bool)), r"\b11\b"),
    ("bias", dict(bias=np.zeros((7,), np.float32)), r"\b7\b"),
    ("kernel", dict(kernel=np.zeros((3, 16), np.float64)), r"float64|double"),
    ("recurrent_dropout_mask", dict(recurrent_dropout_mask=np.ones((4, 5), np.float32)),
     r"\[4, 5\]"),
    ("recurrent_dropout_mask", dict(recurrent_dropout_mask=np.ones((4, 4), np.float64)),
     r"float64|double"),
], ids=lambda c: c[0])
def test_native_bad_input(case):
    import re
    name, overrides, detail = case
    p = make_problem(1700, 4, 6, 3, 4, np.float32)
    args = dict(inputs=p["inputs"], kernel=p["kernel"], recurrent_kernel=p["recurrent_kernel"],
                bias=p["bias"])
    args.update(overrides)
    with pytest.raises((ValueError, TypeError)) as info:
        native().forward(**args)
    msg = str(info.value)
    assert re.search(r"(?<!recurrent_)" + name if name == "kernel" else name, msg), msg
    assert re.search(detail, msg), msg


@pytest.mark.parametrize("which", ["outputs", "gates", "cell_states", "d_outputs", "d_h", "d_c"])
def test_backward_rejects_tensors_not_from_this_forward(which):
    """Backward's saved and upstream tensors must have the forward's shapes (the op and both
    pybind11 bindings share this check); the message names the argument and both shapes."""
    from resetlstm import _native
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 4))
    k, r, b = rng.normal(size=(4, 8)), rng.normal(size=(2, 8)), rng.normal(size=8)
    y, h, c, g, cs = _native.forward(x, k, r, b)
    args = dict(outputs=y, gates=g, cell_states=cs, d_outputs=np.ones_like(y), d_h=h, d_c=c)
    if args[which].ndim == 3:   # [B, T, *]: one step short
        args[which], got, want = args[which][:, :2], r"\[2, 2, \d+\]", r"\[2, 3, \d+\]"
    else:                        # [B, H]: one row short
        args[which], got, want = args[which][:1], r"\[1, 2\]", r"\[2, 2\]"
    with pytest.raises(ValueError, match=rf"`{which}` has the wrong shape \({got}, expected {want}\)"):
        _native.backward(x, k, r, b, None, None, None, None, args["outputs"], args["gates"],
                         args["cell_states"], args["d_outputs"], args["d_h"], args["d_c"])
    with pytest.raises(ValueError, match=r"`gates` has the wrong shape \(\[0\]"):
        _, _, _, g0, c0 = _native.forward(x, k, r, b, training=False)
        _native.backward(x, k, r, b, None, None, None, None, y, g0, c0, None, None, None)


def test_messages_ignore_the_process_wide_cpp_locale():
    """Numbers in error messages are formatted in the classic locale even when some library in
    the process set a digit-grouping std::locale::global (a fresh process: it is irreversible)."""
    import textwrap
    script = textwrap.dedent("""
        import sys
        sys.modules["tensorflow"] = None  # only _native in this process
        import numpy as np
        from resetlstm import _native
        assert _native._cpp_global_locale() == "C"
        _native._install_grouping_cpp_locale()
        assert _native._cpp_global_locale() == "*"  # an unnamed, custom locale is installed
        x, k = np.zeros((2, 3, 1024), np.float32), np.zeros((1000, 8), np.float32)
        try:
            _native.forward(x, k, np.zeros((2, 8), np.float32), np.zeros(8, np.float32))
        except ValueError as e:
            print(e)
    """)
    out = run_native_script(script, {})
    assert out.returncode == 0, out.stderr
    assert "I = 1024" in out.stdout and "[1000, 8]" in out.stdout, out.stdout
    assert "1,024" not in out.stdout and "1,000" not in out.stdout


# The start of the scripts below: _native without TF, and a float32 problem x, k, r, b, rng.
NATIVE_PROBLEM = """
import os, sys
sys.modules["tensorflow"] = None
import numpy as np
from resetlstm import _native
rng = np.random.default_rng(1)
x = rng.standard_normal((32, 9, 24)).astype(np.float32)
k, r = rng.standard_normal((24, 128)).astype(np.float32), rng.standard_normal((32, 128)).astype(np.float32)
b = rng.standard_normal(128).astype(np.float32)
"""


def run_native_script(script, extra_env):
    """Runs `script` in a fresh Python with only _native (no TF) and `extra_env`."""
    import os
    import subprocess
    import sys
    import resetlstm
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESETLSTM_")}
    env.update(extra_env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)


def test_tuning_switch_typos_are_reported_and_ignored():
    """RESETLSTM_ISA / _CPU_SPLIT / _CPU_INPUT / _CPU_SLABS with a value they do not know: one warning per
    variable on stderr naming the value and the accepted ones, and the automatic choice (same
    ISA, bit-identical results) instead of a silently different path (an unknown ISA used to cap
    the kernels to the generic build)."""
    script = NATIVE_PROBLEM + """
for _ in range(2):
    y = _native.forward(x, k, r, b, num_threads=2)[0]
print(_native.selected_isa(), float(np.sum(y.astype(np.float64))).hex())
"""
    clean = run_native_script(script, {})
    typo = run_native_script(script, {"RESETLSTM_ISA": "avx-512", "RESETLSTM_CPU_SPLIT": "colums",
                                      "RESETLSTM_CPU_INPUT": "perstep", "RESETLSTM_CPU_SLABS": "9"})
    assert clean.returncode == 0 and typo.returncode == 0, (clean.stderr, typo.stderr)
    assert typo.stdout == clean.stdout  # same ISA, same sum bit for bit
    warnings = [line for line in typo.stderr.splitlines() if line.startswith("resetlstm: ignoring")]
    assert sorted(warnings) == sorted([
        "resetlstm: ignoring RESETLSTM_ISA='avx-512' (accepted: generic, avx2, avx512, "
        "avx512_bf16); using the automatic choice",
        "resetlstm: ignoring RESETLSTM_CPU_SPLIT='colums' (accepted: rows, columns); using the "
        "automatic choice",
        "resetlstm: ignoring RESETLSTM_CPU_INPUT='perstep' (accepted: hoisted, per_step); using "
        "the automatic choice",
        "resetlstm: ignoring RESETLSTM_CPU_SLABS='9' (accepted: 1, 2, 3, 4); using the "
        "automatic choice",
    ]), typo.stderr
    assert "resetlstm: ignoring" not in clean.stderr


def test_threads_that_cannot_start_leave_the_work_to_the_caller():
    """When a helper cannot be started (here: an address-space limit too small for a thread's
    stack, so creating a thread fails), the runner's caller runs every task itself: the same
    results bit for bit as a process whose threads start, no crash (a failed std::thread used
    to leave joinable threads behind: std::terminate) and no hang. The limited process starts
    no thread before the limit (glibc would reuse a finished thread's stack)."""
    import os
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("AddressSanitizer reserves terabytes of address space: no room for a limit")
    script = NATIVE_PROBLEM + """
import resource
resets = rng.random((32, 9)) < 0.2
if os.environ.get("LIMIT_THREADS"):
    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 20), resource.RLIM_INFINITY))
    import threading
    try:
        threading.Thread(target=lambda: None).start()
        print("threads-start")
    except RuntimeError:
        print("threads-fail")
out = _native.forward(x, k, r, b, resets=resets, training=True, num_threads=4)
print(" ".join(float(np.sum(np.asarray(a, np.float64))).hex() for a in out))
"""
    free = run_native_script(script, {})
    limited = run_native_script(script, {"LIMIT_THREADS": "1"})
    assert free.returncode == 0, free.stderr
    assert limited.returncode == 0, limited.stderr
    assert limited.stdout.splitlines()[0] == "threads-fail", limited.stdout
    assert limited.stdout.splitlines()[1] == free.stdout.strip()


def test_forked_child_runs_on_a_pool_of_its_own():
    """_native keeps one worker pool per process. A child forked after the parent's pool
    started (torch DataLoader workers, multiprocessing's fork) has none of its threads: it
    starts its own (one worker per CPU but the caller's) and computes the same results bit for
    bit; the parent's pool still runs."""
    script = NATIVE_PROBLEM + """
def digest():
    out = _native.forward(x, k, r, b, training=True, num_threads=2)
    return " ".join(float(np.sum(np.asarray(a, np.float64))).hex() for a in out)
before = digest()  # starts the parent's pool
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    alone = len(os.listdir("/proc/self/task"))  # the parent's workers did not come along
    result = digest()
    workers = len(os.listdir("/proc/self/task")) - alone
    ok = alone == 1 and workers == (os.cpu_count() or 1) - 1
    os.write(write, (result if ok else f"threads: {alone} then +{workers}").encode())
    os._exit(0)
os.close(write)
child = os.read(read, 1 << 16).decode()
_, status = os.waitpid(pid, 0)
assert status == 0 and child == before, (status, child, before)
assert digest() == before
print("OK")
"""
    proc = run_native_script(script, {})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"


# ------------------------------------------------- small batches: hidden units across threads

@pytest.mark.parametrize("num_threads", [2, 3, -3], ids=["2threads", "3threads", "3serial"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_column_split_vs_reference(scenario, num_threads, dtype, monkeypatch):
    """RESETLSTM_CPU_SPLIT=columns (chosen by itself for small batches whose recurrent kernel
    exceeds twice the L2): the hidden units are split across threads, a barrier per step.
    Same results as the reference in every scenario, batch- and time-major, H a multiple of
    the packed panel width (the split's condition) and 3 unit blocks per thread (H = 96 -> odd
    counts). num_threads = -3 reports 3 threads but runs their tasks one after another, as a
    busy pool may: the per-step barrier must not wait for a task that never starts."""
    monkeypatch.setenv("RESETLSTM_CPU_SPLIT", "columns")
    p = make_problem(1500, 5, 9, 7, 96, dtype, **SCENARIOS[scenario])
    for time_major in (False, True):
        outs, grads, _ = native_run(p, time_major=time_major, num_threads=num_threads)
        check_against_reference(p, outs, grads, dtype)


def test_column_and_row_splits_agree(monkeypatch):
    """Both splits and the automatic choice on one float64 problem: agreement to rounding (the
    summation order is the same per element)."""
    p = make_problem(1600, 4, 11, 6, 64, np.float64, resets=True, mask=True, state=True,
                     dropout=True)
    runs = {}
    for split in ("rows", "columns", ""):
        monkeypatch.setenv("RESETLSTM_CPU_SPLIT", split)
        runs[split] = native_run(p, num_threads=2)
    for other in ("columns", ""):
        for a, b in zip(runs["rows"][0], runs[other][0]):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
        for n in DIFF_NAMES:
            np.testing.assert_allclose(runs["rows"][1][n], runs[other][1][n], rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_threads", [2, 3, -3], ids=["2threads", "3threads", "3serial"])
def test_row_slabs_advanced_in_chunks_give_identical_results(num_threads, monkeypatch):
    """The row split runs more slabs than threads, each a chunk of steps at a time on whichever
    thread is free (SlabSchedule): 1 to 4 slabs per thread, uneven slabs (B = 13), 2 or 3
    threads or a runner that runs its tasks one after another (3serial: nothing may wait for a
    task that never starts) give the same outputs and gradients bit for bit (rows never
    interact, and the weight gradients do not depend on the slabs); T = 37 leaves a short last
    chunk. Against the reference too, with resets, a mask, a state and recurrent dropout."""
    p = make_problem(1750, 13, 37, 5, 8, np.float64, resets=True, mask=True, state=True,
                     dropout=True)
    runs = []
    for slabs in ("1", "2", "3", "4"):
        monkeypatch.setenv("RESETLSTM_CPU_SLABS", slabs)
        for time_major in (False, True):
            runs.append((slabs, time_major, native_run(p, time_major=time_major,
                                                       num_threads=num_threads)))
    check_against_reference(p, runs[0][2][0], runs[0][2][1], np.float64)
    base = {time_major: run for slabs, time_major, run in runs if slabs == "1"}
    for slabs, time_major, (outs, grads, _) in runs:
        base_outs, base_grads, _ = base[time_major]  # (the layouts sum B*T rows in other orders)
        for a, b in zip(outs, base_outs):
            assert np.array_equal(a, b), (slabs, time_major)
        for n in DIFF_NAMES:
            assert np.array_equal(grads[n], base_grads[n]), (slabs, time_major, n)


def test_a_sequence_of_no_steps_runs_every_slab_once(monkeypatch):
    """T = 0: every slab still gets its (empty) chunk: the final state is the initial state and
    its gradient the final state's, for every slab count."""
    p = make_problem(1760, 9, 0, 3, 4, np.float64, state=True)
    for slabs in ("1", "4"):
        monkeypatch.setenv("RESETLSTM_CPU_SLABS", slabs)
        outs, grads, _ = native_run(p, num_threads=2)
        np.testing.assert_array_equal(outs[1], p["h0"])
        np.testing.assert_array_equal(outs[2], p["c0"])
        np.testing.assert_array_equal(grads["h0"], p["d_h"])
        np.testing.assert_array_equal(grads["c0"], p["d_c"])


@pytest.mark.parametrize("num_threads", [2, 3, 8])
def test_weight_gradients_split_over_rows(num_threads, dtype):
    """B*T = 1200 rows: the kernel and recurrent-kernel gradients split B*T into up to 8
    ranges of whole packing chunks, 4 tasks per thread (uneven at 3 threads; 8 threads also
    split columns), and add the partial sums; odd I, H exercise every edge. Against the
    reference."""
    p = make_problem(1700 + num_threads, 24, 50, 9, 13, dtype, resets=True, state=True)
    outs, grads, _ = native_run(p, num_threads=num_threads)
    check_against_reference(p, outs, grads, dtype)


@pytest.mark.parametrize("projection", ["hoisted", "per_step"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_input_projection_modes_vs_reference(scenario, projection, dtype, monkeypatch):
    """RESETLSTM_CPU_INPUT forces how x W is computed: hoisted (one GEMM over all B*T rows
    before the time loop) or per step (each slab's x_t W right before h R; the default when
    the kernel fits the L2 or slabs have 8+ rows). Both against the reference, both layouts,
    training and inference, 2 and 3 threads (partial slabs)."""
    monkeypatch.setenv("RESETLSTM_CPU_INPUT", projection)
    p = make_problem(1800, 11, 8, 9, 10, dtype, **SCENARIOS[scenario])
    for time_major, num_threads in ((False, 2), (True, 3)):
        outs, grads, _ = native_run(p, time_major=time_major, num_threads=num_threads)
        check_against_reference(p, outs, grads, dtype)
        outs, _, _ = native_run(p, time_major=time_major, training=False,
                                num_threads=num_threads, upstream=False)
        check_against_reference(p, outs, None, dtype, check_grads=False)


# ------------------------------------------------------------------ gate_transpose

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int16])
@pytest.mark.parametrize("order, H, n", [([1, 0, 2], 5, 7), ([0, 1, 2, 3], 33, 40),
                                         ([2, 0, 1], 64, 1), ([3, 1, 0, 2], 1, 70)])
def test_gate_transpose_against_numpy(dtype, order, H, n):
    """The torch front end's weight conversion: torch's [G*H, n] (row blocks in torch's gate
    order) as the kernels' [n, G*H] (Keras gate block j = torch block order[j]) and back, bit
    for bit, against numpy."""
    G = len(order)
    weight = (np.random.default_rng(H * n).normal(size=(G * H, n)) * 100).astype(dtype)
    want = np.concatenate([weight[g * H:(g + 1) * H] for g in order], axis=0).T
    got = native().gate_transpose(weight, G, order, True)
    assert got.dtype == weight.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(native().gate_transpose(got, G, order, False), weight)


def test_gate_transpose_refusals():
    with pytest.raises(ValueError, match="a permutation of 0..gates-1"):
        native().gate_transpose(np.zeros((6, 2), np.float32), 3, [0, 1, 1], True)
    with pytest.raises(ValueError, match="`order` must hold `gates` entries"):
        native().gate_transpose(np.zeros((6, 2), np.float32), 3, [0, 1], True)
    with pytest.raises(ValueError, match="not a multiple of gates = 4"):
        native().gate_transpose(np.zeros((6, 2), np.float32), 4, [0, 1, 2, 3], True)
    with pytest.raises(ValueError, match="C-contiguous 2-D array"):
        native().gate_transpose(np.zeros((6, 2), np.float32).T, 2, [0, 1], False)
    with pytest.raises(ValueError, match="C-contiguous 2-D array"):
        native().gate_transpose(np.zeros(6, np.float32), 2, [0, 1], False)
    with pytest.raises(ValueError, match="elements of 2, 4 or 8 bytes"):
        native().gate_transpose(np.zeros((6, 2), np.int8), 3, [0, 1, 2], True)
