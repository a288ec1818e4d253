"""Finite-difference gradient checks (float64): tf.test.compute_gradient on the op, and central
differences on the numpy reference's own hand-written BPTT."""
import numpy as np
import pytest

from conftest import DIFF_NAMES, lib, make_problem, reference_for, tf_
from reference import finite_difference_gradients

GRAD_SCENARIOS = {
    "plain_state": dict(state=True),
    "resets": dict(resets=True),
    "resets_state": dict(resets=True, state=True),
    "mask_state": dict(mask=True, state=True),
    "resets_mask_state": dict(resets=True, mask=True, state=True),
    "dropout_state": dict(dropout=True, state=True),
    "resets_mask_state_dropout": dict(resets=True, mask=True, state=True, dropout=True),
}


@pytest.mark.parametrize("scenario", ["resets", "resets_state", "mask_state", "resets_mask_state",
                                      "dropout_state", "resets_mask_state_dropout"])
def test_reference_bptt_matches_finite_differences(scenario):
    """The reference's hand-written BPTT is itself right (independent check)."""
    p = make_problem(40 + len(scenario), 5, 6, 3, 2, np.float64, **GRAD_SCENARIOS[scenario])
    _, rg = reference_for(p)
    fd = finite_difference_gradients(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                     p["resets"], p["h0"], p["c0"], p["mask"], p["d_outputs"],
                                     p["d_h"], p["d_c"], dropout=p["dropout"])
    for n in DIFF_NAMES:
        np.testing.assert_allclose(rg[n], fd[n], atol=2e-8, rtol=1e-7, err_msg=n)
    # not vacuous: gradients are non-trivial
    assert np.max(np.abs(rg["kernel"])) > 1e-2


def _check_jacobians(theoretical, numerical, names, atol=1e-7):
    assert len(theoretical) == len(numerical) == len(names)
    for n, jt, jn in zip(names, theoretical, numerical):
        jt, jn = np.asarray(jt), np.asarray(jn)
        assert jt.shape == jn.shape, n
        err = float(np.max(np.abs(jt - jn))) if jt.size else 0.0
        assert err < atol, f"{n}: max |theoretical - numerical| = {err:.3e}"
        assert np.any(jn != 0), f"{n}: numerical jacobian is all zero (vacuous check)"


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("scenario", list(GRAD_SCENARIOS))
def test_compute_gradient_reset_lstm(scenario, time_major):
    tf = tf_()
    rl = lib()
    B, T, I, H = 3, 4, 3, 2
    p = make_problem(60 + len(scenario), B, T, I, H, np.float64, **GRAD_SCENARIOS[scenario])
    if p["resets"] is not None:
        # keep some path from h0 to the end in every check: row 2 gets no late reset
        p["resets"][2, :] = False
        p["resets"][2, 1] = True if scenario == "resets" else False
    if p["mask"] is not None:
        p["mask"][B - 1, :] = [False, True, True, False]   # masked t=0, not fully masked here
    tm = (lambda a: np.swapaxes(a, 0, 1)) if time_major else (lambda a: a)
    resets = None if p["resets"] is None else tf.constant(tm(p["resets"]))
    mask = None if p["mask"] is None else tf.constant(tm(p["mask"]))
    dropout = None if p["dropout"] is None else tf.constant(p["dropout"])
    state = p["h0"] is not None

    def f(x, K, R, b, *s):
        y, h, c = rl.reset_lstm(x, K, R, b, resets=resets, mask=mask,
                                initial_state=tuple(s) if s else None, time_major=time_major,
                                recurrent_dropout_mask=dropout)
        return tf.concat([tf.reshape(y, [-1]), tf.reshape(h, [-1]), tf.reshape(c, [-1])], 0)

    args = [tm(p["inputs"]), p["kernel"], p["recurrent_kernel"], p["bias"]]
    names = ["inputs", "kernel", "recurrent_kernel", "bias"]
    if state:
        args += [p["h0"], p["c0"]]
        names += ["h0", "c0"]
    theoretical, numerical = tf.test.compute_gradient(
        f, [tf.constant(a) for a in args], delta=1e-5)
    _check_jacobians(theoretical, numerical, names)


@pytest.mark.parametrize("with_reset", [False, True])
def test_compute_gradient_reset_lstm_cell(with_reset):
    tf = tf_()
    rl = lib()
    rng = np.random.default_rng(70)
    B, I, H = 3, 3, 2
    K = rng.uniform(-0.5, 0.5, (I, 4 * H))
    R = rng.uniform(-0.5, 0.5, (H, 4 * H))
    b = rng.uniform(-0.5, 0.5, (4 * H,))
    x = rng.uniform(-1, 1, (B, I))
    h = rng.uniform(-0.8, 0.8, (B, H))
    c = rng.uniform(-1, 1, (B, H))
    reset = tf.constant([False, True, False]) if with_reset else None

    def f(x, h, c, K, R, b):
        h1, c1 = rl.reset_lstm_cell(x, h, c, K, R, b, reset=reset)
        return tf.concat([tf.reshape(h1, [-1]), tf.reshape(c1, [-1])], 0)

    theoretical, numerical = tf.test.compute_gradient(
        f, [tf.constant(a) for a in (x, h, c, K, R, b)], delta=1e-5)
    _check_jacobians(theoretical, numerical, ["x", "h", "c", "kernel", "recurrent_kernel", "bias"])
    if with_reset:
        # the reset row's outputs do not depend on its h, c: jacobian rows/cols are zero
        # jacobian layout: [x_size, y_size]; y = concat(h1, c1)
        for k in (1, 2):
            j = np.asarray(theoretical[k]).reshape(B, H, 2, B, H)
            assert not np.any(j[:, :, :, 1, :])
            assert np.any(j[0, :, :, 0, :])


def test_compute_gradient_all_rows_reset_every_step():
    """With a reset at every step the state entering each step is zero: nothing flows to h0/c0 or
    recurrent_kernel, and inputs/kernel/bias gradients are still right."""
    tf = tf_()
    rl = lib()
    B, T, I, H = 2, 3, 2, 3
    p = make_problem(80, B, T, I, H, np.float64, state=True)
    resets = tf.ones([B, T], tf.bool)

    def f(x, K, R, b, h0, c0):
        y, h, c = rl.reset_lstm(x, K, R, b, resets=resets, initial_state=(h0, c0))
        return tf.concat([tf.reshape(y, [-1]), tf.reshape(h, [-1]), tf.reshape(c, [-1])], 0)

    args = [tf.constant(p[n]) for n in DIFF_NAMES]
    theoretical, numerical = tf.test.compute_gradient(f, args, delta=1e-5)
    keep = [0, 1, 3]
    _check_jacobians([theoretical[k] for k in keep], [numerical[k] for k in keep],
                     [DIFF_NAMES[k] for k in keep])
    for k in (2, 4, 5):
        assert not np.any(np.asarray(theoretical[k])), DIFF_NAMES[k]
