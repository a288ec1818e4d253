"""NaN and Inf: they propagate as in keras.layers.LSTM (the same positions become NaN / Inf), never
a crash or a hang; a NaN in one row does not reach another row, and none crosses a reset."""
import numpy as np
import pytest

from conftest import lib, make_problem, tf_

B, T, I, H = 5, 8, 4, 6


def problem():
    p = make_problem(4242, B, T, I, H, np.float32, state=True)
    return p


def run(p, resets=None, mask=None, with_grads=True):
    """The op: (outputs, h, c) and the gradients of sum(outputs * upstream) wrt inputs, kernel."""
    tf, rl = tf_(), lib()
    x, k = tf.constant(p["inputs"]), tf.constant(p["kernel"])
    with tf.GradientTape() as tape:
        tape.watch([x, k])
        y, h, c = rl.reset_lstm(x, k, p["recurrent_kernel"], p["bias"], resets=resets, mask=mask,
                                initial_state=(p["h0"], p["c0"]))
        loss = tf.reduce_sum(y * p["d_outputs"])
    dx, dk = tape.gradient(loss, [x, k]) if with_grads else (None, None)
    return [np.asarray(a) for a in (y, h, c)], (np.asarray(dx), np.asarray(dk))


def keras_run(p, mask=None):
    import keras
    layer = keras.layers.LSTM(H, return_sequences=True, return_state=True)
    layer.build((B, T, I))
    layer.set_weights([p["kernel"], p["recurrent_kernel"], p["bias"]])
    out = layer(p["inputs"], initial_state=[p["h0"], p["c0"]], mask=mask)
    return [np.asarray(a) for a in out]


def same_nonfinite(ours, ref, name):
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg=f"{name}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(ref), err_msg=f"{name}: +Inf")
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(ref), err_msg=f"{name}: -Inf")
    finite = np.isfinite(ref)
    np.testing.assert_allclose(ours[finite], ref[finite], atol=2e-5, err_msg=name)


@pytest.mark.parametrize("where, value", [
    ("inputs", np.nan), ("inputs", np.inf), ("inputs", -np.inf), ("inputs", 1e30),
    ("kernel", np.nan), ("kernel", np.inf), ("recurrent_kernel", np.nan), ("bias", -np.inf),
    ("h0", np.nan), ("c0", np.inf),
])
def test_nonfinite_values_propagate_like_keras(where, value):
    p = problem()
    index = {"inputs": (1, 3, 2), "kernel": (2, 5), "recurrent_kernel": (1, 9), "bias": (7,),
             "h0": (2, 1), "c0": (3, 4)}[where]
    p[where] = p[where].copy()
    p[where][index] = value
    (y, h, c), _ = run(p, with_grads=False)
    for name, ours, ref in zip(("outputs", "h", "c"), (y, h, c), keras_run(p)):
        same_nonfinite(ours, ref, f"{where}={value}: {name}")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_bad_row_does_not_reach_other_rows(value):
    p = problem()
    (y0, h0, c0), (dx0, _) = run(p)
    p["inputs"] = p["inputs"].copy()
    p["inputs"][1, 3, 0] = value
    (y, h, c), (dx, dk) = run(p)
    others = np.arange(B) != 1
    for name, a, b in (("outputs", y, y0), ("h", h, h0), ("c", c, c0), ("d_inputs", dx, dx0)):
        np.testing.assert_array_equal(a[others], b[others], err_msg=name)
    assert not np.array_equal(y[1, 3:], y0[1, 3:])  # the bad row is affected from step 3 on
    if np.isnan(value):
        assert np.isnan(y[1, 3:]).all()
    np.testing.assert_array_equal(y[1, :3], y0[1, :3])  # and not before


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_no_nonfinite_value_crosses_a_reset(value):
    """A document with a NaN/Inf does not poison the next document of its row, forward or
    backward: the reset selects a zero state (it does not multiply by zero)."""
    p = problem()
    resets = np.zeros((B, T), bool)
    resets[1, 5] = True
    (y0, _, _), (dx0, _) = run(p, resets=resets)
    p["inputs"] = p["inputs"].copy()
    p["inputs"][1, 2, 1] = value
    (y, h, c), (dx, _) = run(p, resets=resets)
    np.testing.assert_array_equal(y[1, 5:], y0[1, 5:])  # the next document is untouched
    np.testing.assert_array_equal(h[1], y0[1, -1])
    np.testing.assert_array_equal(dx[1, 5:], dx0[1, 5:])  # and so are its input gradients
    assert not np.array_equal(y[1, 2:5], y0[1, 2:5])  # the bad document itself is affected
    if np.isnan(value):
        assert np.isnan(y[1, 2:5]).all() and np.isnan(dx[1, :5]).any()


def test_nonfinite_at_a_masked_step_is_skipped_like_keras():
    p = problem()
    mask = np.ones((B, T), bool)
    mask[1, 4] = False
    p["inputs"] = p["inputs"].copy()
    p["inputs"][1, 4, :] = np.nan
    (y, h, c), (dx, _) = run(p, mask=mask)
    for name, ours, ref in zip(("outputs", "h", "c"), (y, h, c), keras_run(p, mask=mask)):
        same_nonfinite(ours, ref, name)
    assert np.isfinite(y).all() and np.isfinite(dx[np.arange(B) != 1]).all()
