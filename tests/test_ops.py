"""resetlstm.reset_lstm / reset_lstm_cell against the float64 numpy reference and keras.layers.LSTM:
forward, all gradients, time_major, flag dtypes, stateful chunking, the one-step cell, empty
shapes, static shape inference, build_info."""
import numpy as np
import pytest

from conftest import (DIFF_NAMES, assert_close, check_against_reference, lib, make_problem,
                      op_on_problem, random_resets, random_weights, reference_for,
                      run_reset_lstm, tf_)
from reference import reference_cell, reference_forward, reference_backward

SCENARIOS = {
    "plain": dict(),
    "state": dict(state=True),
    "resets": dict(resets=True),
    "resets_state": dict(resets=True, state=True),
    "mask": dict(mask=True),
    "mask_state": dict(mask=True, state=True),
    "resets_mask": dict(resets=True, mask=True),
    "resets_mask_state": dict(resets=True, mask=True, state=True),
    "dropout": dict(dropout=True),
    "resets_mask_state_dropout": dict(resets=True, mask=True, state=True, dropout=True),
}


def keras_lstm_on_problem(p, H, dtype, state, mask):
    """keras.layers.LSTM with the problem's weights: (outputs, h, c) and the gradients of the
    problem's loss wrt inputs, kernel, recurrent_kernel, bias (and h0, c0 with a state)."""
    tf = tf_()
    import keras
    layer = keras.layers.LSTM(H, return_sequences=True, return_state=True,
                              dtype="float32" if dtype == np.float32 else "float64")
    x = tf.constant(p["inputs"])
    st = [tf.constant(p["h0"]), tf.constant(p["c0"])] if state else None
    m = tf.constant(p["mask"]) if mask else None
    layer(x, initial_state=st, mask=m)
    layer.set_weights([p["kernel"], p["recurrent_kernel"], p["bias"]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        for s in st or []:
            tape.watch(s)
        ky, kh, kc = layer(x, initial_state=st, mask=m)
        loss = (tf.reduce_sum(ky * p["d_outputs"]) + tf.reduce_sum(kh * p["d_h"])
                + tf.reduce_sum(kc * p["d_c"]))
    grads = tape.gradient(loss, [x] + list(layer.trainable_variables) + (st or []))
    names = ["inputs", "kernel", "recurrent_kernel", "bias"] + (["h0", "c0"] if state else [])
    return (ky.numpy(), kh.numpy(), kc.numpy()), dict(zip(names, (np.asarray(g) for g in grads)))


# --------------------------------------------------------------------------- the reference itself

@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("mask", [False, True])
def test_reference_matches_keras_lstm(state, mask):
    """The numpy reference (incl. its BPTT and mask semantics) agrees with keras.layers.LSTM."""
    p = make_problem(11, 5, 7, 3, 4, np.float64, state=state, mask=mask)
    (ry, rh, rc), rg = reference_for(p)
    (ky, kh, kc), kgrads = keras_lstm_on_problem(p, 4, np.float64, state, mask)
    np.testing.assert_allclose(ky, ry, atol=1e-12)
    np.testing.assert_allclose(kh, rh, atol=1e-12)
    np.testing.assert_allclose(kc, rc, atol=1e-12)
    assert len(kgrads) == (6 if state else 4)
    for n, g in kgrads.items():
        np.testing.assert_allclose(g, rg[n], atol=1e-12, err_msg=n)


def test_reference_reset_semantics():
    """Sanity of the reference itself: a reset before step t makes the row's future equal to a
    fresh run from t with zero state, and a row reset at every step equals T independent T=1 runs."""
    p = make_problem(3, 3, 8, 3, 4, np.float64, state=True)
    resets = np.zeros((3, 8), bool)
    resets[0, 5] = True
    resets[1, :] = True
    y, h, c = reference_forward(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                resets, p["h0"], p["c0"])
    y2, h2, c2 = reference_forward(p["inputs"][:1, 5:], p["kernel"], p["recurrent_kernel"],
                                   p["bias"])
    np.testing.assert_allclose(y[0, 5:], y2[0], atol=1e-14)
    np.testing.assert_allclose(h[0], h2[0], atol=1e-14)
    for t in range(8):
        yt, _, _ = reference_forward(p["inputs"][1:2, t:t + 1], p["kernel"],
                                     p["recurrent_kernel"], p["bias"])
        np.testing.assert_allclose(y[1, t], yt[0, 0], atol=1e-14)
    # and without the reset, row 0 differs (the test above is not vacuous)
    y3, _, _ = reference_forward(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                 None, p["h0"], p["c0"])
    assert np.max(np.abs(y3[0, 5:] - y[0, 5:])) > 1e-3


# --------------------------------------------------------------------------- op vs reference

@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_forward_and_all_gradients_vs_reference(scenario, time_major, dtype, mode):
    p = make_problem(100 + list(SCENARIOS).index(scenario), 6, 9, 5, 4, dtype,
                     **SCENARIOS[scenario])
    outs, grads = op_on_problem(mode, p, time_major=time_major)
    check_against_reference(p, outs, grads, dtype)


@pytest.mark.parametrize("which", ["outputs", "h", "c"])
@pytest.mark.parametrize("scenario", ["resets_state", "resets_mask_state"])
def test_gradients_single_upstream(which, scenario, dtype, mode):
    """Only one of outputs / h_T / c_T enters the loss (the op gets no gradient for the others)."""
    p = make_problem(200, 6, 8, 3, 5, dtype, upstream=(which,), **SCENARIOS[scenario])
    outs, grads = op_on_problem(mode, p)
    check_against_reference(p, outs, grads, dtype)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 5), (5, 7, 3, 13), (3, 4, 17, 17),
                                   (7, 5, 2, 9), (8, 12, 16, 16)],
                         ids=lambda s: "B%dT%dI%dH%d" % s)
@pytest.mark.parametrize("dropout", [False, True], ids=["", "dropout"])
def test_odd_shapes_vs_reference(shape, time_major, dropout, dtype):
    """Sizes that are not multiples of any vector width (tail handling)."""
    B, T, I, H = shape
    p = make_problem(300 + sum(shape), B, T, I, H, dtype, resets=True, state=True, mask=True,
                     dropout=dropout)
    outs, grads = op_on_problem("eager", p, time_major=time_major)
    check_against_reference(p, outs, grads, dtype)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("shape", [(8, 30, 48, 64), (4, 20, 33, 100)],
                         ids=lambda s: "B%dT%dI%dH%d" % s)
def test_medium_forward_vs_reference(shape, time_major, dtype):
    B, T, I, H = shape
    p = make_problem(400 + sum(shape), B, T, I, H, dtype, resets=True, state=True, mask=True,
                     upstream=())
    outs, _ = op_on_problem("eager", p, time_major=time_major)
    check_against_reference(p, outs, None, dtype, check_grads=False)


@pytest.mark.parametrize("flag_dtype", [bool, np.int32, np.float32],
                         ids=["bool", "int32", "float32"])
def test_resets_and_mask_flag_dtypes(flag_dtype, dtype, mode):
    """resets and mask accepted as bool, int32 0/1 and float32 0/1 with identical results."""
    p = make_problem(500, 6, 8, 3, 4, dtype, resets=True, state=True, mask=True)
    outs, grads = op_on_problem(mode, p, resets_dtype=flag_dtype, mask_dtype=flag_dtype)
    check_against_reference(p, outs, grads, dtype)
    # resets as the flag dtype, mask as bool (and vice versa)
    outs, grads = op_on_problem(mode, p, resets_dtype=flag_dtype, mask_dtype=bool)
    check_against_reference(p, outs, grads, dtype)
    outs, grads = op_on_problem(mode, p, resets_dtype=bool, mask_dtype=flag_dtype)
    check_against_reference(p, outs, grads, dtype)


def test_resets_change_the_result(dtype):
    """Guard against a silently ignored `resets` / `mask` argument."""
    p = make_problem(510, 4, 6, 3, 4, dtype, resets=True, state=True, mask=True, upstream=())
    (y, h, c), _ = op_on_problem("eager", p)
    q = dict(p, resets=None)
    (y2, h2, c2), _ = op_on_problem("eager", q)
    assert np.max(np.abs(y - y2)) > 1e-3
    q = dict(p, mask=None)
    (y3, h3, c3), _ = op_on_problem("eager", q)
    assert np.max(np.abs(y - y3)) > 1e-3


def test_returns_tensors_and_is_deterministic():
    tf = tf_()
    rl = lib()
    p = make_problem(520, 5, 7, 4, 6, np.float32, resets=True, state=True, mask=True)
    args = (p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"])
    kw = dict(resets=p["resets"], initial_state=(p["h0"], p["c0"]), mask=p["mask"])
    r1 = rl.reset_lstm(*args, **kw)
    r2 = rl.reset_lstm(*args, **kw)
    assert len(r1) == 3
    for a, b in zip(r1, r2):
        assert isinstance(a, tf.Tensor)
        assert a.dtype == tf.float32
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_no_gradient_to_resets_and_mask():
    """Float resets/mask are not differentiable: their gradient is None (or zero)."""
    tf = tf_()
    rl = lib()
    p = make_problem(530, 4, 6, 3, 4, np.float32, resets=True, state=True, mask=True)
    r = tf.constant(p["resets"].astype(np.float32))
    m = tf.constant(p["mask"].astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch([r, m])
        y, h, c = rl.reset_lstm(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                resets=r, initial_state=(p["h0"], p["c0"]), mask=m)
        loss = tf.reduce_sum(y) + tf.reduce_sum(h) + tf.reduce_sum(c)
    gr, gm = tape.gradient(loss, [r, m])
    for g in (gr, gm):
        assert g is None or not np.any(tf.convert_to_tensor(g).numpy())


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
def test_inference_path_vs_reference(time_major, dtype):
    """Eagerly, without a recording GradientTape (nothing saved for backward), and inside a
    tf.function that only returns the forward results: same numbers as the reference."""
    tf = tf_()
    rl = lib()
    p = make_problem(540, 6, 9, 5, 7, dtype, resets=True, state=True, mask=True, upstream=())
    tm = (lambda a: np.swapaxes(a, 0, 1)) if time_major else (lambda a: a)
    args = (tm(p["inputs"]), p["kernel"], p["recurrent_kernel"], p["bias"])
    kw = dict(resets=tm(p["resets"]), initial_state=(p["h0"], p["c0"]), mask=tm(p["mask"]),
              time_major=time_major)
    ry, rh, rc = reference_forward(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                   p["resets"], p["h0"], p["c0"], p["mask"])
    y, h, c = rl.reset_lstm(*args, **kw)
    assert_close(tm(y.numpy()), ry, dtype, "outputs (eager, no tape)")
    assert_close(h.numpy(), rh, dtype, "h_T (eager, no tape)")
    assert_close(c.numpy(), rc, dtype, "c_T (eager, no tape)")
    y, h, c = tf.function(lambda: rl.reset_lstm(*args, **kw))()
    assert_close(tm(y.numpy()), ry, dtype, "outputs (tf.function)")
    assert_close(h.numpy(), rh, dtype, "h_T (tf.function)")
    assert_close(c.numpy(), rc, dtype, "c_T (tf.function)")


def test_gradients_to_variables(mode):
    """Weights as tf.Variable (as a layer holds them): gradients via the tape's automatic
    watching, including a loss that uses the outputs twice and a persistent tape."""
    tf = tf_()
    rl = lib()
    dtype = np.float32
    p = make_problem(550, 5, 7, 4, 6, dtype, resets=True, state=True, mask=True)
    K = tf.Variable(p["kernel"])
    R = tf.Variable(p["recurrent_kernel"])
    b = tf.Variable(p["bias"])
    x = tf.constant(p["inputs"])

    def run():
        with tf.GradientTape(persistent=True) as tape:
            y, h, c = rl.reset_lstm(x, K, R, b, resets=p["resets"],
                                    initial_state=(p["h0"], p["c0"]), mask=p["mask"])
            loss1 = tf.reduce_sum(y * p["d_outputs"]) + tf.reduce_sum(h * p["d_h"])
            loss2 = loss1 + tf.reduce_sum(c * p["d_c"])
        g1 = tape.gradient(loss1, [K, R, b])
        g2 = tape.gradient(loss2, [K, R, b])
        del tape
        return g1, g2

    g1, g2 = run() if mode == "eager" else tf.function(run)()
    _, rg2 = reference_for(p)
    _, rg1 = reference_for(dict(p, d_c=None))
    for n, a, e in zip(("kernel", "recurrent_kernel", "bias"), g1, (rg1[k] for k in
                       ("kernel", "recurrent_kernel", "bias"))):
        assert_close(a.numpy(), e, dtype, "d_" + n + " (loss1)")
    for n, a, e in zip(("kernel", "recurrent_kernel", "bias"), g2, (rg2[k] for k in
                       ("kernel", "recurrent_kernel", "bias"))):
        assert_close(a.numpy(), e, dtype, "d_" + n + " (loss2)")


# --------------------------------------------------------------------------- vs keras.layers.LSTM

@pytest.mark.parametrize("use_mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("state", [False, True], ids=["zero_state", "initial_state"])
def test_matches_keras_lstm(use_mask, state, dtype, mode):
    B, T, I, H = 5, 8, 4, 6
    p = make_problem(600 + 2 * use_mask + state, B, T, I, H, dtype, state=state, mask=use_mask)
    (ky, kh, kc), kgrads = keras_lstm_on_problem(p, H, dtype, state, use_mask)
    (y, h, c), grads = op_on_problem(mode, p)
    assert_close(y, ky, dtype, "outputs")
    assert_close(h, kh, dtype, "h_T")
    assert_close(c, kc, dtype, "c_T")
    assert len(kgrads) == (6 if state else 4)
    for n, kg in kgrads.items():
        assert grads[n] is not None, n
        assert_close(grads[n], kg, dtype, "d_" + n)


# --------------------------------------------------------------------------- stateful chunking

CHUNKS = [3, 1, 5, 3]   # T = 12


def _chunked(rl, tf, x, K, R, b, resets, mask, h0, c0, time_major):
    """Run reset_lstm chunk by chunk carrying (h_T, c_T)."""
    ys = []
    state = None if h0 is None else (h0, c0)
    start = 0
    for n in CHUNKS:
        sl = slice(start, start + n)
        if time_major:
            xs, rs = x[sl], None if resets is None else resets[sl]
            ms = None if mask is None else mask[sl]
        else:
            xs, rs = x[:, sl], None if resets is None else resets[:, sl]
            ms = None if mask is None else mask[:, sl]
        y, h, c = rl.reset_lstm(xs, K, R, b, resets=rs, initial_state=state, mask=ms,
                                time_major=time_major)
        ys.append(y)
        state = (h, c)
        start += n
    return tf.concat(ys, axis=0 if time_major else 1), state[0], state[1]


def _chunk_resets(rng, B, T):
    r = random_resets(rng, B, T, p=0.15)
    r[4:, :] = False
    r[4, 3] = True      # first step of chunk 2
    r[5, 4] = True      # first step of chunk 3
    r[5, 9] = True      # first step of chunk 4
    r[6, 0] = True      # first step of chunk 1
    r[6, 3:5] = True    # first steps of chunks 2 and 3
    return r


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("state", [False, True], ids=["zero_state", "initial_state"])
def test_stateful_chunking_equals_full_sequence(state, time_major, dtype, mode):
    tf = tf_()
    rl = lib()
    B, T, I, H = 8, sum(CHUNKS), 3, 5
    rng = np.random.default_rng(700 + state)
    p = make_problem(701 + 2 * state, B, T, I, H, dtype, state=state)
    resets = _chunk_resets(rng, B, T)
    tm = (lambda a: np.swapaxes(a, 0, 1)) if time_major else (lambda a: a)
    x = tf.constant(tm(p["inputs"]))
    K, R, b = (tf.constant(p[k]) for k in ("kernel", "recurrent_kernel", "bias"))
    h0 = None if not state else tf.constant(p["h0"])
    c0 = None if not state else tf.constant(p["c0"])
    r = tf.constant(tm(resets))
    dY, dh, dc = tf.constant(tm(p["d_outputs"])), tf.constant(p["d_h"]), tf.constant(p["d_c"])
    srcs = [x, K, R, b] + ([h0, c0] if state else [])

    def both():
        res = []
        for fn in (_chunked, None):
            with tf.GradientTape() as tape:
                tape.watch(srcs)
                if fn is None:
                    y, h, c = rl.reset_lstm(x, K, R, b, resets=r,
                                            initial_state=None if h0 is None else (h0, c0),
                                            time_major=time_major)
                else:
                    y, h, c = fn(rl, tf, x, K, R, b, r, None, h0, c0, time_major)
                loss = tf.reduce_sum(y * dY) + tf.reduce_sum(h * dh) + tf.reduce_sum(c * dc)
            res.append(((y, h, c), tape.gradient(loss, srcs)))
        return res

    (co, cg), (fo, fg) = both() if mode == "eager" else tf.function(both)()
    for name, a, e in zip(("outputs", "h_T", "c_T"), co, fo):
        assert_close(a.numpy(), e.numpy(), dtype, name)
    for name, a, e in zip(DIFF_NAMES, cg, fg):
        assert a is not None and e is not None, name
        assert_close(a.numpy(), e.numpy(), dtype, "d_" + name)
    # and both equal the reference (so chunking is not trivially equal to something wrong)
    (ry, rh, rc) = reference_forward(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                     resets, p["h0"], p["c0"])
    assert_close(tm(co[0].numpy()), ry, dtype, "outputs vs reference")
    assert_close(co[1].numpy(), rh, dtype, "h_T vs reference")


def test_stateful_chunking_with_mask(dtype):
    """With a mask, each chunk's 'previous output' restarts at 0, so only the final state and the
    outputs at unmasked steps must agree; gradients of a loss on exactly those agree too."""
    tf = tf_()
    rl = lib()
    B, T, I, H = 8, sum(CHUNKS), 3, 5
    rng = np.random.default_rng(710)
    p = make_problem(711, B, T, I, H, dtype, state=True, mask=True)
    resets = _chunk_resets(rng, B, T)
    mask = p["mask"].copy()
    mask[4, 3] = False   # masked first step of a chunk, right at a reset
    x, K, R, b, h0, c0 = (tf.constant(p[k]) for k in DIFF_NAMES)
    r, m = tf.constant(resets), tf.constant(mask)
    mf = tf.constant(mask.astype(dtype))[:, :, None]
    dY, dh, dc = tf.constant(p["d_outputs"]), tf.constant(p["d_h"]), tf.constant(p["d_c"])
    srcs = [x, K, R, b, h0, c0]
    res = []
    for chunked in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(srcs)
            if chunked:
                y, h, c = _chunked(rl, tf, x, K, R, b, r, m, h0, c0, False)
            else:
                y, h, c = rl.reset_lstm(x, K, R, b, resets=r, initial_state=(h0, c0), mask=m)
            loss = tf.reduce_sum(y * mf * dY) + tf.reduce_sum(h * dh) + tf.reduce_sum(c * dc)
        res.append(((y * mf, h, c), tape.gradient(loss, srcs)))
    (co, cg), (fo, fg) = res
    for name, a, e in zip(("masked outputs", "h_T", "c_T"), co, fo):
        assert_close(a.numpy(), e.numpy(), dtype, name)
    for name, a, e in zip(DIFF_NAMES, cg, fg):
        assert_close(a.numpy(), e.numpy(), dtype, "d_" + name)
    ry, rh, rc = reference_forward(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                   resets, p["h0"], p["c0"], mask)
    assert_close(fo[2].numpy(), rc, dtype, "c_T vs reference")


# --------------------------------------------------------------------------- the one-step cell

@pytest.mark.parametrize("reset_kind", ["none", "bool", "int32", "float"])
def test_cell_equals_one_step(reset_kind, dtype, mode):
    tf = tf_()
    rl = lib()
    B, I, H = 6, 4, 5
    rng = np.random.default_rng(800)
    K, R, b = random_weights(rng, I, H, dtype)
    x = rng.uniform(-1, 1, (B, I)).astype(dtype)
    h = rng.uniform(-0.8, 0.8, (B, H)).astype(dtype)
    c = rng.uniform(-1, 1, (B, H)).astype(dtype)
    reset = np.array([True, False, True, False, False, True])
    reset_arg = {"none": None, "bool": reset, "int32": reset.astype(np.int32),
                 "float": reset.astype(np.float32)}[reset_kind]
    dh = rng.normal(size=(B, H)).astype(dtype)
    dc = rng.normal(size=(B, H)).astype(dtype)
    ts = [tf.constant(a) for a in (x, h, c, K, R, b)]
    rt = None if reset_arg is None else tf.constant(reset_arg)

    def run(xx, hh, cc, KK, RR, bb):
        with tf.GradientTape() as tape:
            tape.watch([xx, hh, cc, KK, RR, bb])
            h1, c1 = rl.reset_lstm_cell(xx, hh, cc, KK, RR, bb, reset=rt)
            loss = tf.reduce_sum(h1 * dh) + tf.reduce_sum(c1 * dc)
        return (h1, c1), tape.gradient(loss, [xx, hh, cc, KK, RR, bb])

    (h1, c1), g = run(*ts) if mode == "eager" else tf.function(run)(*ts)
    assert h1.shape == (B, H) and c1.shape == (B, H)
    # numpy reference
    rr = None if reset_arg is None else reset
    rh, rc = reference_cell(x, h, c, K, R, b, rr)
    assert_close(h1.numpy(), rh, dtype, "h")
    assert_close(c1.numpy(), rc, dtype, "c")
    rg = reference_backward(x[:, None], K, R, b, None if rr is None else rr[:, None], h, c,
                            d_h=dh, d_c=dc)
    for name, a, key in zip(("x", "h", "c", "kernel", "recurrent_kernel", "bias"), g,
                            ("inputs", "h0", "c0", "kernel", "recurrent_kernel", "bias")):
        assert a is not None, name
        e = rg[key][:, 0] if key == "inputs" else rg[key]
        assert_close(a.numpy(), e, dtype, "d_" + name)
    # the sequence op with T=1
    y, hs, cs = rl.reset_lstm(x[:, None], K, R, b,
                              resets=None if reset_arg is None else reset_arg[:, None],
                              initial_state=(h, c))
    assert_close(h1.numpy(), hs.numpy(), dtype, "h vs reset_lstm")
    assert_close(c1.numpy(), cs.numpy(), dtype, "c vs reset_lstm")
    assert_close(h1.numpy(), y.numpy()[:, 0], dtype, "h vs reset_lstm outputs")
    if reset_arg is not None:
        # reset rows do not depend on h, c
        assert not np.any(g[1].numpy()[reset]) and not np.any(g[2].numpy()[reset])
        assert np.any(g[1].numpy()[~reset])


# --------------------------------------------------------------------------- empty shapes

@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("state", [False, True], ids=["zero_state", "initial_state"])
@pytest.mark.parametrize("BT", [(0, 4), (3, 0), (0, 0)], ids=["B0", "T0", "B0T0"])
def test_empty_batch_or_time(BT, state, time_major, dtype, mode):
    B, T = BT
    I, H = 3, 4
    p = make_problem(900, B, T, I, H, dtype, resets=True, mask=True, state=state)
    outs, grads = op_on_problem(mode, p, time_major=time_major, unconnected_zero=True)
    y, h, c = outs
    assert y.shape == (B, T, H) and h.shape == (B, H) and c.shape == (B, H)
    assert y.dtype == np.dtype(dtype)
    if state and T == 0:
        np.testing.assert_array_equal(h, p["h0"])
        np.testing.assert_array_equal(c, p["c0"])
    elif not state:
        np.testing.assert_array_equal(h, np.zeros((B, H)))
        np.testing.assert_array_equal(c, np.zeros((B, H)))
    expect_shapes = dict(inputs=(B, T, I), kernel=(I, 4 * H), recurrent_kernel=(H, 4 * H),
                         bias=(4 * H,), h0=(B, H), c0=(B, H))
    for n in DIFF_NAMES:
        if n in ("h0", "c0") and not state:
            continue
        g = grads[n]
        assert g is not None and g.shape == expect_shapes[n], (n, None if g is None else g.shape)
        if n in ("h0", "c0") and T == 0:
            np.testing.assert_array_equal(g, p["d_h"] if n == "h0" else p["d_c"])
        else:
            np.testing.assert_array_equal(g, np.zeros(expect_shapes[n]))


def test_empty_without_resets_or_mask(dtype):
    rl = lib()
    I, H = 3, 4
    K, R, b = random_weights(np.random.default_rng(901), I, H, dtype)
    for B, T in [(0, 5), (2, 0)]:
        y, h, c = rl.reset_lstm(np.zeros((B, T, I), dtype), K, R, b)
        assert tuple(y.shape) == (B, T, H) and tuple(h.shape) == (B, H)
        assert tuple(c.shape) == (B, H)
        assert not np.any(h.numpy()) and not np.any(c.numpy())


# --------------------------------------------------------------------------- static shapes

@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("optional", [False, True], ids=["bare", "with_optional"])
def test_static_shape_inference(time_major, optional):
    tf = tf_()
    rl = lib()
    B, T, I, H = 3, 7, 5, 6
    lead = [T, B] if time_major else [B, T]
    seen = {}

    def make(signature, expect):
        @tf.function(input_signature=signature)
        def f(x, K, R, b, r, m, h0, c0):
            kw = {}
            if optional:
                kw = dict(resets=r, mask=m, initial_state=(h0, c0))
            y, h, c = rl.reset_lstm(x, K, R, b, time_major=time_major, **kw)
            seen[expect] = (y.shape.as_list(), h.shape.as_list(), c.shape.as_list())
            return y, h, c
        return f

    full = [tf.TensorSpec(lead + [I], tf.float32), tf.TensorSpec([I, 4 * H], tf.float32),
            tf.TensorSpec([H, 4 * H], tf.float32), tf.TensorSpec([4 * H], tf.float32),
            tf.TensorSpec(lead, tf.bool), tf.TensorSpec(lead, tf.bool),
            tf.TensorSpec([B, H], tf.float32), tf.TensorSpec([B, H], tf.float32)]
    make(full, "full").get_concrete_function()
    y_shape = [T, B, H] if time_major else [B, T, H]
    assert seen["full"] == (y_shape, [B, H], [B, H])

    # unknown batch and time: H must still come out of the weights
    lead_u = [None, None]
    part = [tf.TensorSpec(lead_u + [I], tf.float32), tf.TensorSpec([I, 4 * H], tf.float32),
            tf.TensorSpec([H, 4 * H], tf.float32), tf.TensorSpec([4 * H], tf.float32),
            tf.TensorSpec(lead_u, tf.bool), tf.TensorSpec(lead_u, tf.bool),
            tf.TensorSpec([None, H], tf.float32), tf.TensorSpec([None, H], tf.float32)]
    make(part, "part").get_concrete_function()
    assert seen["part"] == ([None, None, H], [None, H], [None, H])

    # batch known only from the inputs: B must propagate to the states
    part_b = [tf.TensorSpec(lead + [None], tf.float32), tf.TensorSpec([None, 4 * H], tf.float32),
              tf.TensorSpec([H, None], tf.float32), tf.TensorSpec([None], tf.float32),
              tf.TensorSpec(lead, tf.bool), tf.TensorSpec(lead, tf.bool),
              tf.TensorSpec([B, H], tf.float32), tf.TensorSpec([B, H], tf.float32)]
    make(part_b, "part_b").get_concrete_function()
    assert seen["part_b"] == (y_shape, [B, H], [B, H])


def test_cell_static_shape_inference():
    tf = tf_()
    rl = lib()
    B, I, H = 3, 5, 6
    seen = {}

    @tf.function(input_signature=[tf.TensorSpec([B, I], tf.float32),
                                  tf.TensorSpec([B, H], tf.float32),
                                  tf.TensorSpec([B, H], tf.float32),
                                  tf.TensorSpec([I, 4 * H], tf.float32),
                                  tf.TensorSpec([H, 4 * H], tf.float32),
                                  tf.TensorSpec([4 * H], tf.float32),
                                  tf.TensorSpec([B], tf.bool)])
    def f(x, h, c, K, R, b, r):
        h1, c1 = rl.reset_lstm_cell(x, h, c, K, R, b, reset=r)
        seen["s"] = (h1.shape.as_list(), c1.shape.as_list())
        return h1, c1

    f.get_concrete_function()
    assert seen["s"] == ([B, H], [B, H])


# --------------------------------------------------------------------------- build_info

def test_build_info():
    rl = lib()
    info = rl.build_info()
    assert isinstance(info, dict)
    for key in ("version", "tensorflow", "compiler", "cuda", "simd"):
        assert key in info, key
    assert info["version"] == rl.__version__
    assert isinstance(info["version"], str) and info["version"]
    assert isinstance(info["tensorflow"], str) and info["tensorflow"].strip()
    assert isinstance(info["compiler"], str) and info["compiler"].strip()
    assert isinstance(info["cuda"], bool)
    assert info["simd"] is not None
