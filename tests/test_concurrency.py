"""Concurrency: 8 Python threads calling the op at once (eagerly and inside tf.function,
different shapes, with gradients) and _native.forward/backward at once (the GIL released while
the kernels run): every result equals the single-threaded result bit for bit."""
import threading

import numpy as np
import pytest

from conftest import DIFF_NAMES, lib, make_problem, tf_

THREADS = 8
ROUNDS = 6
SHAPES = [(5, 7, 3, 4), (9, 4, 6, 5), (1, 12, 2, 3), (16, 6, 8, 8), (3, 1, 5, 7), (7, 9, 4, 2),
          (12, 5, 7, 6), (2, 8, 3, 9)]


def problems():
    return [make_problem(700 + i, *shape, np.float32, resets=True, mask=i % 2 == 0, state=True,
                         dropout=i % 3 == 0) for i, shape in enumerate(SHAPES)]


def run_in_threads(work, count):
    """work(i) in `count` threads started together; returns their results, re-raises failures."""
    results, errors = [None] * count, []
    barrier = threading.Barrier(count)

    def body(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def op_fwd_bwd(tf, rl, p):
    return [t.numpy() for t in op_fwd_bwd_tensors(tf, rl, p)]


def op_fwd_bwd_tensors(tf, rl, p):
    args = {k: tf.constant(p[k]) for k in DIFF_NAMES}
    with tf.GradientTape() as tape:
        tape.watch(list(args.values()))
        y, h, c = rl.reset_lstm(args["inputs"], args["kernel"], args["recurrent_kernel"],
                                args["bias"], resets=p["resets"], mask=p["mask"],
                                initial_state=(args["h0"], args["c0"]),
                                recurrent_dropout_mask=p["dropout"])
        loss = tf.reduce_sum(y * p["d_outputs"]) + tf.reduce_sum(h * p["d_h"]) + \
            tf.reduce_sum(c * p["d_c"])
    grads = tape.gradient(loss, [args[k] for k in DIFF_NAMES])
    return [y, h, c, *grads]


def assert_identical(got, want, label):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, b, err_msg=f"{label}: result {k}")


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_op_from_eight_threads_is_bit_identical(mode):
    tf, rl = tf_(), lib()
    ps = problems()
    if mode == "function":
        def traced(p):
            fn = tf.function(lambda: op_fwd_bwd_tensors(tf, rl, p), autograph=False)
            return lambda: [np.asarray(t) for t in fn()]

        call = [traced(p) for p in ps]
    else:
        call = [lambda p=p: op_fwd_bwd(tf, rl, p) for p in ps]
    expected = [c() for c in call]  # single-threaded (and traced, for tf.function)

    def work(i):
        out = []
        for r in range(ROUNDS):  # every thread walks all shapes, starting at its own
            k = (i + r) % len(ps)
            out.append((k, call[k]()))
        return out

    for results in run_in_threads(work, THREADS):
        for k, got in results:
            assert_identical(got, expected[k], f"{mode} shape {SHAPES[k]}")


def test_native_from_eight_threads_is_bit_identical():
    from test_native import native_run
    ps = problems()

    def run(p):
        (y, h, c), grads, _ = native_run(p)
        return [y, h, c] + [grads[k] for k in DIFF_NAMES]

    expected = [run(p) for p in ps]

    def work(i):
        return [((i + r) % len(ps), run(ps[(i + r) % len(ps)])) for r in range(ROUNDS)]

    for results in run_in_threads(work, THREADS):
        for k, got in results:
            assert_identical(got, expected[k], f"_native shape {SHAPES[k]}")


def test_native_releases_the_gil():
    """While one thread is inside a long _native call, another thread runs Python code."""
    from resetlstm import _native
    p = make_problem(750, 512, 200, 64, 64, np.float32)
    done = threading.Event()
    ticks = []

    def spin():
        while not done.is_set():
            ticks.append(1)

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = len(ticks)
        _native.forward(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                        training=False, num_threads=1)
        during = len(ticks) - before
    finally:
        done.set()
        t.join()
    assert during > 100, f"the spinning thread ran only {during} times during the call"
