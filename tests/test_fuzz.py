"""Property-based fuzzing (hypothesis) of the LSTM and GRU ops against the float64 numpy
references (tests/reference.py, tests/reference_gru.py): random B, T, I, H (0, 1 and odd sizes
included), both layouts, both float dtypes, both of the GRU's forms, with or without resets, mask,
initial state and recurrent dropout mask, any subset of upstream gradients, with or without a
gradient being recorded (training on/off). 2,000 examples per test in the default run
(deterministic), 20,000 with --slow (random).

The same properties through resetlstm._native (the kernels without TensorFlow) run in the
sanitizer build too."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

from conftest import (DIFF_NAMES, assert_close, gru_reference_for, make_gru_problem,  # noqa: E402,E501
                      make_problem, op_on_problem, reference_for, tf_)

SIZES = dict(B=st.integers(0, 6), T=st.integers(0, 7), I=st.integers(0, 6), H=st.integers(0, 5))


@st.composite
def problems(draw):
    """(problem dict, dtype, time_major, training)."""
    dims = {k: draw(v) for k, v in SIZES.items()}
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    flags = {k: draw(st.booleans()) for k in ("resets", "mask", "state", "dropout")}
    upstream = draw(st.sampled_from([("outputs", "h", "c"), ("outputs",), ("h",), ("c",),
                                     ("h", "c")]))
    p = make_problem(draw(st.integers(0, 2**31 - 1)), dims["B"], dims["T"], dims["I"],
                     dims["H"], dtype, upstream=upstream, **flags)
    return p, dtype, draw(st.booleans()), draw(st.booleans())


def check(p, dtype, outs, grads):
    (ry, rh, rc), rg = reference_for(p)
    for name, got, want in (("outputs", outs[0], ry), ("h_T", outs[1], rh), ("c_T", outs[2], rc)):
        assert got.dtype == dtype, name
        assert_close(got, want, dtype, name)
    if grads is None:
        return
    for name in DIFF_NAMES:
        if name in ("h0", "c0") and p[name] is None:
            continue
        assert grads[name] is not None and grads[name].dtype == dtype, name
        assert_close(grads[name], rg[name], dtype, "d_" + name)


def run_without_tape(p, time_major):
    """The op eagerly with no GradientTape recording (inference: nothing is saved)."""
    import resetlstm
    from reference import to_batch_major, to_time_major

    tm = to_time_major if time_major else (lambda a: a)
    y, h, c = resetlstm.reset_lstm(
        tm(p["inputs"]), p["kernel"], p["recurrent_kernel"], p["bias"], resets=tm(p["resets"]),
        initial_state=None if p["h0"] is None else (p["h0"], p["c0"]), mask=tm(p["mask"]),
        time_major=time_major, recurrent_dropout_mask=p["dropout"])
    y = y.numpy()
    return (to_batch_major(y) if time_major else y, h.numpy(), c.numpy())


@pytest.fixture(scope="module")
def tensorflow():
    return tf_()


@given(problems())
def test_fuzz_op_against_reference(tensorflow, case):
    p, dtype, time_major, training = case
    if training:
        outs, grads = op_on_problem("eager", p, time_major=time_major, unconnected_zero=True)
        check(p, dtype, outs, grads)
    else:
        check(p, dtype, run_without_tape(p, time_major), None)


@given(problems())
def test_fuzz_native_against_reference(case):
    from test_native import native_run

    p, dtype, time_major, training = case
    outs, grads, (gates, cells) = native_run(p, time_major=time_major, training=training,
                                             upstream=training)
    if not training:
        assert gates.shape == (0,) and cells.shape == (0,)
    check(p, dtype, outs, grads)


# --------------------------------------------------------------------------- the GRU

GRU_GRADS = ("inputs", "kernel", "recurrent_kernel", "bias", "h0")


@st.composite
def gru_problems(draw):
    """(problem dict, dtype, time_major, training) for the GRU, either form."""
    dims = {k: draw(v) for k, v in SIZES.items()}
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    flags = {k: draw(st.booleans()) for k in ("resets", "mask", "state", "dropout")}
    upstream = draw(st.sampled_from([("outputs", "h"), ("outputs",), ("h",)]))
    p = make_gru_problem(draw(st.integers(0, 2**31 - 1)), dims["B"], dims["T"], dims["I"],
                         dims["H"], dtype, reset_after=draw(st.booleans()), upstream=upstream,
                         **flags)
    return p, dtype, draw(st.booleans()), draw(st.booleans())


def check_gru(p, dtype, outs, grads):
    (ry, rh), rg = gru_reference_for(p)
    for name, got, want in (("outputs", outs[0], ry), ("h_T", outs[1], rh)):
        assert np.asarray(got).dtype == dtype, name
        assert_close(got, want, dtype, name)
    for name in GRU_GRADS if grads is not None else ():
        if name == "h0" and p["h0"] is None:
            continue
        assert grads[name].dtype == dtype, name
        assert_close(grads[name], rg[name], dtype, "d_" + name)


@given(gru_problems())
def test_fuzz_gru_op_against_reference(tensorflow, case):
    import resetlstm
    from test_gru_tf import tf_run

    p, dtype, time_major, training = case
    if training:
        outs, grads = tf_run(p, dtype, time_major=time_major)
        check_gru(p, dtype, outs, grads)
    else:
        tm = (lambda a: None if a is None else np.swapaxes(a, 0, 1)) if time_major else \
            (lambda a: a)
        y, h = resetlstm.reset_gru(
            tm(p["inputs"]), p["kernel"], p["recurrent_kernel"], p["bias"],
            resets=tm(p["resets"]), initial_state=p["h0"], mask=tm(p["mask"]),
            time_major=time_major, recurrent_dropout_mask=p["dropout"],
            reset_after=p["reset_after"])
        check_gru(p, dtype, (tm(y.numpy()), h.numpy()), None)


@given(gru_problems())
def test_fuzz_gru_native_against_reference(case):
    from test_gru_native import gru_run

    p, dtype, time_major, training = case
    outs, grads, gates = gru_run(p, time_major=time_major, training=training, upstream=training)
    if not training:
        assert gates.size == 0
    check_gru(p, dtype, outs, grads)
