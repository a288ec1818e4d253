"""The Keras layer on whatever Keras backend this process runs (KERAS_BACKEND), written once for
all of them. tests/test_keras_backends.py runs this file under pytest in one process per backend
(a process's Keras backend is fixed at its first `import keras`); it is not collected directly.

Every check is against keras.layers.LSTM / GRU on the same backend (float64, so tolerances are
tight), against the float64 numpy references, or against the layer itself run another way. The
checks whose semantics do not depend on the cell run for both ResetLSTM and ResetGRU."""
import os

import numpy as np
import pytest

import keras
from keras import ops

import resetlstm
from resetlstm.data import pack_documents

BACKEND = keras.backend.backend()
F64 = 1e-10
# keras.layers.LSTM itself: float64 to ~1e-15 of the numpy reference on TensorFlow and torch,
# but only to ~1e-7 on JAX (measured), so comparisons with it use this there; the comparisons
# with the float64 reference (test_matches_float64_reference) stay at F64 on every backend.
KERAS = 1e-6 if BACKEND == "jax" else F64


def npy(x):
    return ops.convert_to_numpy(x)


LAYERS = {"lstm": (keras.layers.LSTM, resetlstm.ResetLSTM),
          "gru": (keras.layers.GRU, resetlstm.ResetGRU)}
CELLS = pytest.mark.parametrize("cell", sorted(LAYERS))


def pair(units, dtype="float64", cell="lstm", **kwargs):
    """(keras.layers.LSTM, ResetLSTM) -- or (keras.layers.GRU, ResetGRU) -- with the same
    weights, built for inputs [., ., 5]."""
    stock, reset = LAYERS[cell]
    ref = stock(units, dtype=dtype, **kwargs)
    ours = reset(units, dtype=dtype, **kwargs)
    ref.build((None, None, 5))
    ours.build((None, None, 5))
    ours.set_weights(ref.get_weights())
    return ref, ours


def value_and_grads(loss_fn, variables):
    """loss_fn() and its gradients w.r.t. `variables` (keras.Variables), by the backend's own
    autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        return npy(loss), [npy(g) for g in tape.gradient(loss, [v.value for v in variables])]
    if BACKEND == "torch":
        for v in variables:
            v.value.grad = None
        loss = loss_fn()
        loss.backward()
        return npy(loss.detach()), [npy(v.value.grad) for v in variables]
    if BACKEND == "jax":
        import jax

        def f(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn()

        loss, grads = jax.value_and_grad(f)([v.value for v in variables])
        return npy(loss), [npy(g) for g in grads]
    raise AssertionError(BACKEND)


def rng_inputs(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape)


def test_runs_on_this_backend_without_tensorflow():
    import sys

    if BACKEND != "tensorflow":
        assert "tensorflow" not in sys.modules, "the layer imported TensorFlow"
    layer = resetlstm.ResetLSTM(3)
    assert layer.supports_jit == (BACKEND != "tensorflow")


@pytest.mark.parametrize("kwargs", [dict(), dict(return_sequences=True, return_state=True),
                                    dict(go_backwards=True, return_sequences=True),
                                    dict(use_bias=False), dict(unit_forget_bias=False)],
                         ids=["default", "sequences+state", "go_backwards", "no-bias",
                              "no-forget-bias"])
def test_outputs_and_gradients_equal_keras_lstm(kwargs):
    ref, ours = pair(7, **kwargs)
    x = rng_inputs(0, 4, 9, 5)
    h0, c0 = rng_inputs(1, 4, 7), rng_inputs(2, 4, 7)
    weights = ops.convert_to_tensor(rng_inputs(3, 4, 9 if kwargs.get("return_sequences") else 1, 7))

    def loss(layer):
        def fn():
            out = layer(x, initial_state=[h0, c0])
            outs = out if isinstance(out, (list, tuple)) else [out]
            y = ops.reshape(outs[0], (4, -1, 7))
            total = ops.sum(y * weights)
            for s in outs[1:]:
                total = total + 0.5 * ops.sum(s)
            return total
        return fn

    want, want_grads = value_and_grads(loss(ref), ref.trainable_variables)
    got, got_grads = value_and_grads(loss(ours), ours.trainable_variables)
    np.testing.assert_allclose(got, want, rtol=KERAS, atol=KERAS)
    assert len(got_grads) == len(want_grads) == len(ours.trainable_variables)
    for a, b in zip(got_grads, want_grads):
        assert a is not None and np.abs(a).sum() > 0
        np.testing.assert_allclose(a, b, rtol=max(KERAS, 1e-9), atol=KERAS)


def test_matches_float64_reference():
    """Outputs, final state and the gradients of every weight and of the initial state, with
    resets, against the float64 numpy reference (tests/reference.py)."""
    from reference import reference_forward_backward

    layer = resetlstm.ResetLSTM(6, return_sequences=True, return_state=True, dtype="float64")
    layer.build((None, None, 5))
    rng = np.random.default_rng(10)
    x = rng.normal(size=(4, 9, 5))
    resets = rng.random((4, 9)) < 0.3
    d_y, d_h, d_c = rng.normal(size=(4, 9, 6)), rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    h0 = keras.Variable(rng.normal(size=(4, 6)), dtype="float64")
    c0 = keras.Variable(rng.normal(size=(4, 6)), dtype="float64")

    upstream = [ops.convert_to_tensor(a) for a in (d_y, d_h, d_c)]

    def loss():
        outs = layer(x, initial_state=[h0, c0], resets=resets)
        return sum(ops.sum(o * u) for o, u in zip(outs, upstream))

    variables = [layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias, h0, c0]
    _, grads = value_and_grads(loss, variables)
    weights = [npy(v) for v in variables[:3]]
    (ry, rh, rc), rgrads = reference_forward_backward(x, *weights, resets, npy(h0), npy(c0),
                                                       None, d_y, d_h, d_c)
    y, h, c = layer(x, initial_state=[h0, c0], resets=resets)
    for got, want in ((y, ry), (h, rh), (c, rc)):
        np.testing.assert_allclose(npy(got), want, atol=F64)
    for got, name in zip(grads, ("kernel", "recurrent_kernel", "bias", "h0", "c0")):
        np.testing.assert_allclose(got, rgrads[name], rtol=1e-9, atol=F64)


@pytest.mark.parametrize("kwargs", [dict(), dict(reset_after=False),
                                    dict(return_sequences=True, return_state=True),
                                    dict(go_backwards=True, return_sequences=True),
                                    dict(use_bias=False), dict(use_bias=False, reset_after=False)],
                         ids=["default", "reset-before", "sequences+state", "go_backwards",
                              "no-bias", "no-bias-reset-before"])
def test_outputs_and_gradients_equal_keras_gru(kwargs):
    ref, ours = pair(7, cell="gru", **kwargs)
    x = rng_inputs(0, 4, 9, 5)
    h0 = rng_inputs(1, 4, 7)
    weights = ops.convert_to_tensor(rng_inputs(3, 4, 9 if kwargs.get("return_sequences") else 1, 7))

    def loss(layer):
        def fn():
            out = layer(x, initial_state=h0)
            outs = out if isinstance(out, (list, tuple)) else [out]
            total = ops.sum(ops.reshape(outs[0], (4, -1, 7)) * weights)
            for s in outs[1:]:
                total = total + 0.5 * ops.sum(s)
            return total
        return fn

    if kwargs.get("return_state"):
        got, want = ours(x, initial_state=h0), ref(x, initial_state=h0)
        assert len(got) == len(want) == 2  # [output, h], as keras.layers.GRU returns
    # keras.layers.GRU(reset_after=False) on torch is ~4e-8 from the float64 reference (measured;
    # ResetGRU is 2e-16 from it there, test_gru_matches_float64_reference checks that at F64)
    tol = 1e-6 if BACKEND == "torch" and kwargs.get("reset_after") is False else KERAS
    want, want_grads = value_and_grads(loss(ref), ref.trainable_variables)
    got, got_grads = value_and_grads(loss(ours), ours.trainable_variables)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    assert len(got_grads) == len(want_grads) == len(ours.trainable_variables)
    for a, b in zip(got_grads, want_grads):
        assert a is not None and np.abs(a).sum() > 0
        np.testing.assert_allclose(a, b, rtol=max(tol, 1e-9), atol=tol)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_matches_float64_reference(reset_after):
    """ResetGRU's outputs, final state and the gradients of every weight and of h0, with
    resets, against the float64 numpy reference (tests/reference_gru.py), both forms."""
    from reference_gru import gru_reference_backward, gru_reference_forward

    layer = resetlstm.ResetGRU(6, return_sequences=True, return_state=True, dtype="float64",
                               reset_after=reset_after)
    layer.build((None, None, 5))
    rng = np.random.default_rng(12)
    layer.cell.bias.assign(rng.normal(size=layer.cell.bias.shape))
    x = rng.normal(size=(4, 9, 5))
    resets = rng.random((4, 9)) < 0.3
    d_y, d_h = rng.normal(size=(4, 9, 6)), rng.normal(size=(4, 6))
    h0 = keras.Variable(rng.normal(size=(4, 6)), dtype="float64")
    upstream = [ops.convert_to_tensor(a) for a in (d_y, d_h)]

    def loss():
        outs = layer(x, initial_state=[h0], resets=resets)
        return sum(ops.sum(o * u) for o, u in zip(outs, upstream))

    variables = [layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias, h0]
    _, grads = value_and_grads(loss, variables)
    weights = [npy(v) for v in variables[:3]]
    ry, rh = gru_reference_forward(x, *weights, resets, npy(h0), reset_after=reset_after)
    rgrads = gru_reference_backward(x, *weights, resets, npy(h0), d_outputs=d_y, d_h=d_h,
                                    reset_after=reset_after)
    y, h = layer(x, initial_state=[h0], resets=resets)
    np.testing.assert_allclose(npy(y), ry, atol=F64)
    np.testing.assert_allclose(npy(h), rh, atol=F64)
    for got, name in zip(grads, ("kernel", "recurrent_kernel", "bias", "h0")):
        np.testing.assert_allclose(got, rgrads[name], rtol=1e-9, atol=F64)


@CELLS
def test_documents_alone_with_resets_and_go_backwards(cell):
    """Documents packed end to end: each document's outputs equal keras.layers.LSTM (GRU) on it
    alone, reading forwards and (go_backwards) backwards."""
    rng = np.random.default_rng(4)
    docs = [rng.normal(size=(n, 5)) for n in (6, 3, 9, 4, 7, 2, 5)]
    packed = pack_documents(docs, batch_size=3, seq_len=14, dtype=np.float64)
    for backwards in (False, True):
        ref, ours = pair(6, cell=cell, return_sequences=True, go_backwards=backwards)
        y = npy(ours(packed.stream_inputs, resets=packed.stream_resets))
        if backwards:
            y = y[:, ::-1]
        for doc, b, offset in zip(docs, packed.doc_stream, packed.doc_offset):
            alone = npy(ref(doc[None]))[0]
            alone = alone[::-1] if backwards else alone
            np.testing.assert_allclose(y[b, offset:offset + len(doc)], alone, atol=KERAS)


@CELLS
def test_bidirectional_over_packed_documents(cell):
    """resetlstm.Bidirectional over packed documents: every document equals the stock
    Bidirectional on it alone (no state leaks between documents in either direction)."""
    stock, reset = LAYERS[cell]
    rng = np.random.default_rng(5)
    docs = [rng.normal(size=(n, 5)) for n in (5, 9, 3, 7, 6, 4)]
    packed = pack_documents(docs, batch_size=2, seq_len=20, dtype=np.float64)
    bi = resetlstm.Bidirectional(reset(4, return_sequences=True, dtype="float64"))
    y = npy(bi(packed.stream_inputs, resets=packed.stream_resets))
    ref = keras.layers.Bidirectional(stock(4, return_sequences=True, dtype="float64"))
    ref.build((None, None, 5))
    ref.set_weights(bi.get_weights())
    for doc, b, offset in zip(docs, packed.doc_stream, packed.doc_offset):
        np.testing.assert_allclose(y[b, offset:offset + len(doc)], npy(ref(doc[None]))[0],
                                   atol=KERAS)


@CELLS
def test_stateful_streams_and_reset_state_rows(cell):
    x = rng_inputs(6, 3, 10, 5)
    _, whole = pair(4, cell=cell, return_sequences=True)
    layer = LAYERS[cell][1](4, return_sequences=True, stateful=True, dtype="float64")
    layer.build((3, None, 5))
    layer.set_weights(whole.get_weights())
    first, second = npy(layer(x[:, :6])), npy(layer(x[:, 6:]))
    np.testing.assert_allclose(np.concatenate([first, second], 1), npy(whole(x)), atol=F64)
    # reset_state(rows): row 1 restarts from zeros, rows 0 and 2 continue
    layer.reset_state()
    layer(x[:, :6])
    layer.reset_state(rows=[1])
    y = npy(layer(x[:, 6:]))
    np.testing.assert_allclose(y[1], npy(whole(x[1:2, 6:]))[0], atol=F64)
    np.testing.assert_allclose(y[[0, 2]], npy(whole(x))[[0, 2], 6:], atol=F64)
    layer.reset_state(rows=np.array([True, False, True]))
    assert np.all(npy(layer.states[0])[[0, 2]] == 0) and np.any(npy(layer.states[0])[1] != 0)
    assert len(layer.states) == len(whole.states if whole.states else layer._STATES)
    with pytest.raises(ValueError, match=r"`rows` indices must be in \[-3, 3\)"):
        layer.reset_state(rows=[3])
    with pytest.raises(ValueError, match="stateful with state for batch size 3"):
        layer(x[:2])


@CELLS
def test_stateful_state_carries_through_fit_and_predict(cell):
    """predict over two batches of the same 4 streams equals two eager calls (the second
    continues from the first's state), and fit leaves the streams' state behind, on every
    backend (keras.layers.LSTM restarts from zeros at every batch on JAX)."""
    inputs = keras.Input(batch_shape=(4, 6, 3))
    lstm = LAYERS[cell][1](5, return_sequences=True, stateful=True)
    model = keras.Model(inputs, lstm(inputs))
    x = rng_inputs(11, 8, 6, 3).astype("float32")
    first, second = npy(model(x[:4])), npy(model(x[4:]))
    lstm.reset_state()
    predicted = model.predict(x, batch_size=4, verbose=0)
    np.testing.assert_allclose(predicted, np.concatenate([first, second]), atol=1e-6)
    np.testing.assert_allclose(npy(lstm.states[0]), second[:, -1], atol=1e-6)
    assert len(lstm.get_weights()) == 3  # the state is not a weight (kernels and bias only)
    lstm.reset_state()
    model.compile("sgd", "mse")
    model.fit(x, np.zeros((8, 6, 5)), batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert np.abs(npy(lstm.states[0])).max() > 0, "fit did not keep the streams' state"


def test_gru_masking_equals_keras():
    """ResetGRU's masking against the float64 reference and keras.layers.GRU, both forms."""
    from reference_gru import gru_reference_forward

    x = rng_inputs(7, 3, 8, 5)
    mask = np.ones((3, 8), bool)
    mask[0, 5:] = False
    mask[2, :2] = False
    for reset_after in (True, False):
        for zero_output in (False, True):
            ref, ours = pair(4, cell="gru", return_sequences=True, reset_after=reset_after,
                             zero_output_for_mask=zero_output)
            got = npy(ours(x, mask=mask))
            want = gru_reference_forward(x, *ours.get_weights(), mask=mask,
                                         reset_after=reset_after)[0]
            if zero_output:
                want = want * mask[..., None]
            np.testing.assert_allclose(got, want, atol=F64)
            np.testing.assert_allclose(got, npy(ref(x, mask=mask)), atol=1e-6)


def test_masking_equals_keras():
    """Keras masking semantics against the float64 numpy reference (1e-10) and keras.layers.LSTM
    (1e-6: keras' own masked loop rounds to float32 somewhere on the torch backend)."""
    from reference import reference_forward

    x = rng_inputs(7, 3, 8, 5)
    mask = np.ones((3, 8), bool)
    mask[0, 5:] = False
    mask[2, :2] = False
    for zero_output in (False, True):
        ref, ours = pair(4, return_sequences=True, zero_output_for_mask=zero_output)
        got = npy(ours(x, mask=mask))
        want = reference_forward(x, *ours.get_weights(), mask=mask)[0]
        if zero_output:
            want = want * mask[..., None]
        np.testing.assert_allclose(got, want, atol=F64)
        np.testing.assert_allclose(got, npy(ref(x, mask=mask)), atol=1e-6)
    # a mask from the layers before (Masking) is picked up too
    inp = keras.Input((8, 5), dtype="float64")
    masked = keras.layers.Masking(0.0, dtype="float64")(inp)
    ref, ours = pair(4, return_sequences=True)
    xm = x * mask[..., None]
    np.testing.assert_allclose(npy(keras.Model(inp, ours(masked))(xm)),
                               reference_forward(xm, *ours.get_weights(), mask=mask)[0],
                               atol=F64)


@CELLS
def test_fit_trains_every_weight(cell):
    """model.fit moves every weight of the layer (never 'gradients do not exist') and lowers
    the loss; packed documents with resets as a second input, stateful streams."""
    rng = np.random.default_rng(8)
    docs = [rng.integers(1, 20, size=n) for n in rng.integers(5, 40, size=60)]
    packed = pack_documents(docs, batch_size=8, seq_len=16, dtype=np.int32)
    tokens = keras.Input(batch_shape=(8, 16), dtype="int32")
    resets = keras.Input(batch_shape=(8, 16), dtype="bool")
    lstm = LAYERS[cell][1](16, return_sequences=True, stateful=True)
    h = lstm(keras.layers.Embedding(20, 8)(tokens), resets=resets)
    model = keras.Model([tokens, resets], keras.layers.Dense(20)(h))
    model.compile(keras.optimizers.Adam(0.02),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [npy(v).copy() for v in lstm.trainable_variables]
    history = model.fit([packed.inputs, packed.resets], packed.targets,
                        sample_weight=packed.sample_weights, batch_size=8, shuffle=False,
                        epochs=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0], losses
    for v, b in zip(lstm.trainable_variables, before):
        assert np.abs(npy(v) - b).max() > 1e-4, f"{v.path} did not train"


@CELLS
def test_mixed_precision_bfloat16(cell):
    x = rng_inputs(9, 4, 12, 5).astype("float32")
    layer = LAYERS[cell][1](8, return_sequences=True, dtype="mixed_bfloat16")
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert layer.cell.kernel.dtype == "float32"
    full = LAYERS[cell][1](8, return_sequences=True)
    full.build(x.shape)
    full.set_weights(layer.get_weights())
    assert np.abs(npy(ops.cast(y, "float32")) - npy(full(x))).max() < 2e-2


def test_tensorflow_only_api_refuses_other_backends():
    if BACKEND == "tensorflow":
        pytest.skip("the TensorFlow backend runs it")
    pytest.importorskip("tensorflow")
    model = keras.Sequential([keras.Input((None, 3)), resetlstm.ResetLSTM(4)])
    with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow"):
        resetlstm.StreamingModel(model, slots=2)
    with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow"):
        resetlstm.export_portable(model, "unused")


def test_keras_files_move_between_backends():
    """With RESETLSTM_XFER set (tests/test_keras_backends.py does): load the .keras file that
    another backend saved there and reproduce its outputs; save one of this backend's."""
    where = os.environ.get("RESETLSTM_XFER")
    if not where:
        pytest.skip("run by tests/test_keras_backends.py")
    data = np.load(os.path.join(where, "inputs.npz"))
    model = keras.models.load_model(os.path.join(where, "tensorflow.keras"))
    got = npy(model([data["x"], data["resets"]]))
    np.testing.assert_allclose(got, data["tensorflow"], atol=1e-5)
    model.save(os.path.join(where, f"{BACKEND}.keras"))
    np.save(os.path.join(where, f"{BACKEND}.npy"), got)
