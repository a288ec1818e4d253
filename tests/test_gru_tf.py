"""resetlstm.reset_gru / reset_gru_cell (the TensorFlow ops ResetGRU and ResetGRUGrad, both of
Keras' forms) against the float64 reference of tests/reference_gru.py and keras.layers.GRU: the
forward and every gradient with resets, masks, an initial state and recurrent dropout, both
layouts, eagerly and in a tf.function; each packed document equals keras.layers.GRU run on it
alone; the one-step form; static shapes; errors that name the argument."""
import numpy as np
import pytest

from conftest import (assert_close, document_segments, gru_reference_for, lib, make_gru_problem,
                      tf_)

GRADS = ("inputs", "kernel", "recurrent_kernel", "bias", "h0")
SCENARIOS = {
    "plain": dict(),
    "resets+state": dict(resets=True, state=True),
    "masked": dict(resets=True, state=True, mask=True),
    "everything": dict(resets=True, state=True, mask=True, dropout=True),
}
FORMS = [True, False]
FORM_IDS = ["reset_after", "reset_before"]


def tf_run(p, dtype, time_major=False, mode="eager"):
    """The op on a batch-major problem dict: ((outputs, h) batch-major, grads by name)."""
    tf = tf_()
    rl = lib()
    tm = (lambda a: None if a is None else np.swapaxes(a, 0, 1)) if time_major else \
        (lambda a: a)
    t = {n: tf.constant(p[n].astype(dtype)) for n in ("kernel", "recurrent_kernel", "bias")}
    t["inputs"] = tf.constant(tm(p["inputs"]).astype(dtype))
    if p["h0"] is not None:
        t["h0"] = tf.constant(p["h0"].astype(dtype))
    extra = dict(resets=None if p["resets"] is None else tf.constant(tm(p["resets"])),
                 mask=None if p["mask"] is None else tf.constant(tm(p["mask"])),
                 recurrent_dropout_mask=None if p["dropout"] is None
                 else tf.constant(p["dropout"].astype(dtype)))
    up_y = None if p["d_outputs"] is None else tf.constant(tm(p["d_outputs"]).astype(dtype))
    up_h = None if p["d_h"] is None else tf.constant(p["d_h"].astype(dtype))

    def run():
        with tf.GradientTape() as tape:
            tape.watch(list(t.values()))
            y, h = rl.reset_gru(t["inputs"], t["kernel"], t["recurrent_kernel"], t["bias"],
                                initial_state=t.get("h0"), time_major=time_major,
                                reset_after=p["reset_after"], **extra)
            loss = tf.constant(0.0, tf.float64)
            for out, up in ((y, up_y), (h, up_h)):
                if up is not None:
                    loss += tf.reduce_sum(tf.cast(out, tf.float64) * tf.cast(up, tf.float64))
        names = list(t)
        return y, h, dict(zip(names, tape.gradient(
            loss, [t[n] for n in names], unconnected_gradients=tf.UnconnectedGradients.ZERO)))

    y, h, grads = (tf.function(run)() if mode == "function" else run())
    return (tm(y.numpy()), h.numpy()), {n: (tm(g.numpy()) if n == "inputs" else g.numpy())
                                        for n, g in grads.items()}


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_reset_gru_vs_reference(scenario, time_major, mode, reset_after, dtype):
    p = make_gru_problem(600 + list(SCENARIOS).index(scenario), 5, 7, 4, 6, np.float64,
                         reset_after=reset_after, **SCENARIOS[scenario])
    (y, h), grads = tf_run(p, dtype, time_major, mode)
    (ry, rh), rg = gru_reference_for(p)
    assert_close(y, ry, dtype, "outputs")
    assert_close(h, rh, dtype, "h_T")
    for n in GRADS:
        if n in grads:
            assert_close(grads[n], rg[n], dtype, f"d_{n}", factor=10)
    assert grads["bias"].shape == p["bias"].shape


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
def test_each_document_equals_keras_gru_alone(reset_after):
    """Documents packed end to end in the rows with a reset at each start: every document's
    outputs equal keras.layers.GRU run on it alone from a zero state (float64, 1e-10)."""
    tf = tf_()
    import keras
    rl = lib()
    p = make_gru_problem(650, 4, 16, 5, 6, np.float64, reset_after=reset_after, resets=True)
    y, _ = rl.reset_gru(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                        resets=p["resets"], reset_after=reset_after)
    layer = keras.layers.GRU(6, return_sequences=True, reset_after=reset_after, dtype="float64")
    layer.build((None, None, 5))
    layer.set_weights([p["kernel"], p["recurrent_kernel"], p["bias"]])
    segments = list(document_segments(p["resets"]))
    assert len(segments) > 8
    for b, s, e in segments:
        alone = layer(tf.constant(p["inputs"][b:b + 1, s:e])).numpy()[0]
        np.testing.assert_allclose(y.numpy()[b, s:e], alone, rtol=0, atol=1e-10)
    # and no output depends on an input outside its document
    x2 = p["inputs"].copy()
    b, s, e = segments[3]
    x2[b, :s] += 1.0
    x2[b, e:] -= 1.0
    y2, _ = rl.reset_gru(x2, p["kernel"], p["recurrent_kernel"], p["bias"], resets=p["resets"],
                         reset_after=reset_after)
    np.testing.assert_array_equal(y2.numpy()[b, s:e], y.numpy()[b, s:e])


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
def test_matches_keras_gru_with_mask_and_state(reset_after):
    tf = tf_()
    import keras
    rl = lib()
    p = make_gru_problem(660, 4, 9, 5, 6, np.float64, reset_after=reset_after, state=True,
                         mask=True)
    layer = keras.layers.GRU(6, return_sequences=True, return_state=True, reset_after=reset_after,
                             dtype="float64")
    layer.build((None, None, 5))
    layer.set_weights([p["kernel"], p["recurrent_kernel"], p["bias"]])
    want_y, want_h = layer(tf.constant(p["inputs"]), initial_state=[tf.constant(p["h0"])],
                           mask=tf.constant(p["mask"]))
    y, h = rl.reset_gru(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                        initial_state=p["h0"], mask=p["mask"], reset_after=reset_after)
    np.testing.assert_allclose(y.numpy(), want_y.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(h.numpy(), want_h.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
def test_cell_equals_one_step(reset_after):
    tf = tf_()
    rl = lib()
    p = make_gru_problem(670, 5, 1, 4, 3, np.float64, reset_after=reset_after, state=True)
    reset = np.array([True, False, True, False, False])
    h = rl.reset_gru_cell(p["inputs"][:, 0], p["h0"], p["kernel"], p["recurrent_kernel"],
                          p["bias"], reset=reset, reset_after=reset_after)
    _, want = rl.reset_gru(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                           resets=reset[:, None], initial_state=p["h0"],
                           reset_after=reset_after)
    np.testing.assert_array_equal(h.numpy(), want.numpy())
    assert isinstance(h, tf.Tensor)


def test_static_shapes_and_half_types():
    tf = tf_()
    rl = lib()

    @tf.function(input_signature=[tf.TensorSpec([None, 7, 4], tf.float32)])
    def f(x):
        y, h = rl.reset_gru(x, tf.zeros([4, 15]), tf.zeros([5, 15]), tf.zeros([2, 15]))
        assert y.shape.as_list() == [None, 7, 5] and h.shape.as_list() == [None, 5]
        return y

    f.get_concrete_function()
    p = make_gru_problem(680, 3, 5, 4, 6, np.float32, resets=True, state=True)
    (y32, _), _ = tf_run(p, np.float32)
    for half in (tf.bfloat16, tf.float16):
        y, _ = rl.reset_gru(*(tf.cast(p[n], half) for n in ("inputs", "kernel",
                                                              "recurrent_kernel", "bias")),
                            resets=p["resets"], initial_state=tf.cast(p["h0"], half))
        assert y.dtype == half
        np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), y32, atol=3e-2)


def test_errors_name_the_argument():
    tf = tf_()
    rl = lib()
    x, k, r = tf.zeros([2, 3, 4]), tf.zeros([4, 15]), tf.zeros([5, 15])
    b2, b1 = tf.zeros([2, 15]), tf.zeros([15])
    cases = [
        (lambda: rl.reset_gru(x, k, r, b1), r"reset_gru: with reset_after=True `bias` must be "
         r"\[2, 3H\]"),
        (lambda: rl.reset_gru(x, k, r, b2, reset_after=False), r"reset_after=False `bias` must "
         r"be \[3H\]"),
        (lambda: rl.reset_gru(x, tf.zeros([4, 20]), r, b2), r"reset_gru: `kernel` must have "
         r"shape \[I, 3H\] \(columns a multiple of 3, gates z, r, h\)"),
        (lambda: rl.reset_gru(x, tf.zeros([4, 18]), r, b2), r"reset_gru: `recurrent_kernel` "
         r"must have shape \[H, 3H\] = \[6, 18\]"),
        (lambda: rl.reset_gru(x, k, r, b2, initial_state=tf.zeros([3, 5])),
         r"`initial_state` must have shape \[B, H\] = \[2, 5\]"),
        (lambda: rl.reset_gru(x, k, r, b2, initial_state=[tf.zeros([2, 5])] * 2),
         r"`initial_state` must be h0 \[B, H\]"),
        (lambda: rl.reset_gru(x, k, r, tf.zeros([2, 15], tf.float64)),
         r"reset_gru: `bias` has dtype float64 but `inputs` has float32"),
        (lambda: rl.reset_gru(x, k, r, b2, resets=tf.zeros([3, 3], tf.bool)),
         r"`resets` must have shape \[B, T\] = \[2, 3\]"),
        (lambda: rl.reset_gru_cell(x, tf.zeros([2, 5]), k, r, b2), r"reset_gru_cell: `x_t` "
         r"must be rank 2"),
    ]
    for call, pattern in cases:
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=pattern):
            call()
