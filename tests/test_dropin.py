"""ResetLSTM as a full drop-in for keras.layers.LSTM: go_backwards (with the backward reset rule),
zero_output_for_mask, unroll, use_cudnn, recurrent dropout, and Bidirectional (Keras' wrapper and
resetlstm.Bidirectional over packed documents). References: keras.layers.LSTM /
keras.layers.Bidirectional with the same weights, the float64 numpy reference, and each document
run alone."""
import os
import subprocess
import sys

import numpy as np
import pytest

import keras
import tensorflow as tf

import resetlstm
from resetlstm.data import pack_documents
from resetlstm.keras import ResetLSTM, backward_resets

from conftest import random_dropout_mask
from reference import reference_forward
from test_layer import close, run_python, segments, twins


def flat(outputs):
    return [np.asarray(o) for o in keras.tree.flatten(outputs)]


def random_problem(seed, B=4, T=9, I=3, H=5, dtype="float32"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    mask = rng.random((B, T)) < 0.7
    mask[0] = True                      # one row unmasked,
    mask[1, 0] = mask[1, -1] = False    # one masked at both ends,
    mask[2] = False                     # one fully masked
    state = [rng.normal(size=(B, H)).astype(dtype) for _ in range(2)]
    return x, mask, state


# ------------------------------------------------------------------ go_backwards

@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(return_sequences=True),
    dict(return_sequences=True, return_state=True),
    dict(return_sequences=True, zero_output_for_mask=True),
    dict(return_state=True, zero_output_for_mask=True),
], ids=lambda k: "-".join(k) or "default")
@pytest.mark.parametrize("with_mask", [False, True], ids=["", "mask"])
@pytest.mark.parametrize("with_state", [False, True], ids=["", "state"])
def test_go_backwards_matches_keras_lstm(kwargs, with_mask, with_state):
    x, mask, state = random_problem(1)
    ref, layer = twins(5, 3, go_backwards=True, **kwargs)
    call = dict(mask=mask if with_mask else None, initial_state=state if with_state else None)
    for a, b in zip(flat(layer(x, **call)), flat(ref(x, **call))):
        close(a, b)


def test_go_backwards_gradients_match_keras_lstm():
    x, mask, state = random_problem(2)
    ref, layer = twins(5, 3, go_backwards=True, return_sequences=True, return_state=True)
    grads = []
    for lstm in (layer, ref):
        xt = tf.constant(x)
        h0, c0 = (tf.constant(s) for s in state)
        with tf.GradientTape() as tape:
            tape.watch([xt, h0, c0])
            y, h, c = lstm(xt, mask=mask, initial_state=[h0, c0])
            loss = tf.reduce_sum(y * y) + tf.reduce_sum(h) + 2 * tf.reduce_sum(c)
        grads.append(tape.gradient(loss, [xt, h0, c0] + lstm.trainable_weights))
    for a, b in zip(*grads):
        close(a, b, atol=5e-5)


def test_go_backwards_stateful_matches_keras_lstm():
    rng = np.random.default_rng(3)
    ref = keras.layers.LSTM(4, go_backwards=True, stateful=True, return_sequences=True)
    layer = ResetLSTM(4, go_backwards=True, stateful=True, return_sequences=True)
    for lstm in (ref, layer):
        lstm.build((2, 5, 3))
    layer.set_weights(ref.get_weights())
    for _ in range(3):  # the state carries from chunk to chunk exactly as in keras
        x = rng.normal(size=(2, 5, 3)).astype("float32")
        close(layer(x), ref(x))
    layer.reset_state()
    ref.reset_state()
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    close(layer(x), ref(x))


def test_backward_resets_rule():
    """Reversed step s resets when a document starts at forward step T-s (the step after the
    forward step it reads); reversed step 0 never does."""
    resets = np.array([[1, 0, 0, 1, 0, 0],
                       [0, 0, 0, 0, 0, 1],
                       [1, 1, 1, 1, 1, 1]], bool)
    # row 0: documents [0, 3) and [3, 6); read backwards: steps 5 4 3 | 2 1 0, a reset before
    # reversed step 3 (forward step 2, the last step of the first document)
    expected = np.array([[0, 0, 0, 1, 0, 0],
                         [0, 1, 0, 0, 0, 0],
                         [0, 1, 1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(backward_resets(resets), expected)
    T = resets.shape[1]
    got = np.asarray(backward_resets(resets))
    for s in range(1, T):
        np.testing.assert_array_equal(got[:, s], resets[:, T - s])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_go_backwards_with_resets_reads_every_document_backwards_alone(dtype):
    """Each segment between resets, read by the backward layer, equals keras' go_backwards LSTM
    on that segment alone (outputs in reversed order, as keras returns them)."""
    rng = np.random.default_rng(4)
    B, T, I, H = 5, 12, 3, 4
    x = rng.normal(size=(B, T, I)).astype(dtype)
    resets = rng.random((B, T)) < 0.25
    resets[0, :] = False
    resets[1, [0, 1, 2, 7, 11]] = True   # documents of length 1 and a reset at the last step
    ref, layer = twins(H, I, go_backwards=True, return_sequences=True, dtype=dtype)
    y = np.flip(np.asarray(layer(x, resets=resets)), axis=1)  # back to forward time
    atol = 1e-12 if dtype == "float64" else 2e-6
    for b in range(B):
        for s, e in segments(resets[b]):
            alone = np.flip(np.asarray(ref(x[b:b + 1, s:e])), axis=1)[0]
            close(y[b, s:e], alone, atol=atol, err_msg=f"row {b} [{s}, {e})")
    # not vacuous: without the resets the first segments differ
    y_plain = np.flip(np.asarray(layer(x)), axis=1)
    assert np.abs(y_plain - y).max() > 1e-3


# ------------------------------------------------------------------ zero_output_for_mask, unroll,
#                                                                    use_cudnn

@pytest.mark.parametrize("return_sequences", [True, False])
def test_zero_output_for_mask_matches_keras(return_sequences):
    x, mask, _ = random_problem(5)
    mask[3, -1] = False  # the last step masked: return_sequences=False then returns zeros there
    ref, layer = twins(5, 3, zero_output_for_mask=True, return_sequences=return_sequences)
    y = np.asarray(layer(x, mask=mask))
    close(y, ref(x, mask=mask))
    if return_sequences:
        assert not y[~mask].any() and np.abs(y[mask]).min() > 0
    else:
        assert not y[3].any()
    _, plain = twins(5, 3, return_sequences=return_sequences)
    plain.set_weights(layer.get_weights())
    assert np.abs(np.asarray(plain(x, mask=mask)) - y).max() > 1e-3  # the flag does something


def test_unroll_and_use_cudnn_compute_the_same_function():
    x, mask, state = random_problem(6)
    ref, base = twins(5, 3, return_sequences=True, return_state=True)
    expected = flat(ref(x, mask=mask, initial_state=state))
    for kwargs in (dict(unroll=True), dict(use_cudnn=True), dict(use_cudnn=False),
                   dict(unroll=True, use_cudnn=True)):
        layer = ResetLSTM(5, return_sequences=True, return_state=True, **kwargs)
        layer.build((None, None, 3))
        layer.set_weights(base.get_weights())
        for a, b in zip(flat(layer(x, mask=mask, initial_state=state)), expected):
            close(a, b)
    # keras' unroll=True agrees as well
    unrolled, _ = twins(5, 3, return_sequences=True, unroll=True)
    unrolled.set_weights(base.get_weights())
    close(unrolled(x), flat(base(x))[0])


def test_integer_inputs_are_promoted_like_keras():
    x = np.arange(24).reshape(2, 4, 3) % 5
    ref, layer = twins(3, 3)
    out = layer(x)
    assert out.dtype == "float32"
    close(out, ref(x))


# ------------------------------------------------------------------ recurrent dropout

def test_recurrent_dropout_applies_the_drawn_masks_through_the_op():
    """In training the layer draws one input mask [B, I] and one recurrent mask [B, H] per call
    and the result is the op with exactly those masks; a twin with the same seed draws the same
    masks."""
    rng = np.random.default_rng(7)
    B, T, I, H = 6, 8, 4, 5
    x = rng.normal(size=(B, T, I)).astype("float64")
    resets = rng.random((B, T)) < 0.2
    layer = ResetLSTM(H, return_sequences=True, return_state=True, dropout=0.25,
                      recurrent_dropout=0.4, seed=13, dtype="float64")
    twin = ResetLSTM(H, return_sequences=True, return_state=True, dropout=0.25,
                     recurrent_dropout=0.4, seed=13, dtype="float64")
    layer.build(x.shape)
    twin.build(x.shape)
    twin.set_weights(layer.get_weights())
    got = flat(layer(x, resets=resets, training=True))
    input_mask, recurrent_mask = (np.asarray(m) for m in twin._dropout_masks(
        tf.constant(x), training=True))
    assert input_mask.shape == (B, I) and recurrent_mask.shape == (B, H)
    kernel, recurrent_kernel, bias = layer.get_weights()
    want = reference_forward(x * input_mask[:, None, :], kernel, recurrent_kernel, bias, resets,
                             dropout=recurrent_mask)
    for a, b, name in zip(got, want, ("outputs", "h", "c")):
        np.testing.assert_allclose(a, b, atol=1e-12, err_msg=name)
    # a new call draws new masks; inference uses none
    assert np.abs(flat(layer(x, resets=resets, training=True))[0] - got[0]).max() > 1e-3
    plain = reference_forward(x, kernel, recurrent_kernel, bias, resets)
    np.testing.assert_allclose(flat(layer(x, resets=resets, training=False))[0], plain[0],
                               atol=1e-12)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_recurrent_dropout_mask_statistics(rate):
    """The drawn recurrent mask: values exactly 0 or 1/(1-rate), zeros at the given rate
    (binomial, 5 sigma), independent of the input mask and redrawn per call."""
    B, H, I = 512, 96, 7
    layer = ResetLSTM(H, recurrent_dropout=rate, dropout=0.3, seed=1)
    x = tf.zeros([B, 2, I])
    layer.build(x.shape)
    masks = [layer._dropout_masks(x, training=True) for _ in range(2)]
    for input_mask, m in masks:
        m = np.asarray(m)
        assert m.shape == (B, H)
        kept = m != 0
        np.testing.assert_allclose(m[kept], 1.0 / (1.0 - rate), rtol=1e-6)
        n = m.size
        sigma = np.sqrt(n * rate * (1 - rate))
        assert abs((~kept).sum() - n * rate) < 5 * sigma
        # the mean of an inverted-dropout mask is 1
        assert abs(m.mean() - 1.0) < 5 * np.sqrt(rate / (1 - rate) / n)
        assert np.asarray(input_mask).shape == (B, I)
    assert not np.array_equal(np.asarray(masks[0][1]), np.asarray(masks[1][1]))
    assert layer._dropout_masks(x, training=False) == (None, None)


def test_recurrent_dropout_trains_and_is_regularising_noise_only_in_training():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(16, 10, 4)).astype("float32")
    y = rng.normal(size=(16, 10, 2)).astype("float32")
    inputs = keras.Input((10, 4))
    h = ResetLSTM(8, return_sequences=True, recurrent_dropout=0.3, seed=2)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile(keras.optimizers.Adam(0.02), "mse")
    before = model.evaluate(x, y, verbose=0)
    np.testing.assert_array_equal(model.predict_on_batch(x), model.predict_on_batch(x))
    history = model.fit(x, y, epochs=30, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.evaluate(x, y, verbose=0) < 0.8 * before


# ------------------------------------------------------------------ Bidirectional

def bidirectional_twins(merge_mode="concat", **kwargs):
    ref = keras.layers.Bidirectional(keras.layers.LSTM(4, **kwargs), merge_mode=merge_mode)
    ours = keras.layers.Bidirectional(ResetLSTM(4, **kwargs), merge_mode=merge_mode)
    for layer in (ref, ours):
        layer.build((None, None, 3))
    ours.set_weights(ref.get_weights())
    return ref, ours


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("kwargs", [dict(), dict(return_sequences=True),
                                    dict(return_sequences=True, return_state=True),
                                    dict(return_state=True)],
                         ids=lambda k: "-".join(k) or "default")
def test_keras_bidirectional_of_resetlstm_matches_keras(merge_mode, kwargs):
    x, mask, state = random_problem(9, H=4)
    ref, ours = bidirectional_twins(merge_mode, **kwargs)
    assert type(ours.backward_layer) is ResetLSTM and ours.backward_layer.go_backwards
    state4 = state + [s[::-1].copy() for s in state]
    for call in (dict(), dict(mask=mask), dict(initial_state=state4)):
        for a, b in zip(flat(ours(x, **call)), flat(ref(x, **call))):
            close(a, b)


def test_keras_bidirectional_training_step_matches_keras():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(8, 6, 3)).astype("float32")
    y = rng.normal(size=(8, 6, 2)).astype("float32")
    models = []
    for cls in (keras.layers.LSTM, ResetLSTM):
        inputs = keras.Input((6, 3))
        h = keras.layers.Bidirectional(cls(4, return_sequences=True))(inputs)
        models.append(keras.Model(inputs, keras.layers.Dense(2)(h)))
    ref, model = models
    model.set_weights(ref.get_weights())
    for m in models:
        m.compile(keras.optimizers.SGD(0.3), "mse")
    initial = ref.get_weights()
    assert model.train_on_batch(x, y) == pytest.approx(ref.train_on_batch(x, y), rel=1e-5)
    for a, b, w0 in zip(model.get_weights(), ref.get_weights(), initial):
        assert np.abs(b - w0).max() > 1e-4
        close(a - w0, b - w0, atol=1e-6)


def packed_problem(seed, dtype, B=3, I=3, n_docs=9):
    """Documents of random lengths (one of length 1) packed into B streams, one chunk."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 12, size=n_docs)
    lengths[2] = 1
    docs = [rng.normal(size=(n, I)).astype(dtype) for n in lengths]
    longest = int(np.ceil(lengths.sum() / B)) + int(lengths.max())
    packed = pack_documents(docs, batch_size=B, seq_len=longest)
    assert packed.num_batches == 1 and packed.padding_fraction > 0
    return docs, packed


@pytest.mark.parametrize("dtype, atol", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_bidirectional_over_packed_documents_equals_each_document_alone(dtype, atol, merge_mode):
    docs, packed = packed_problem(11, dtype)
    H = 4
    ref = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True, dtype=dtype),
                                     merge_mode=merge_mode, dtype=dtype)
    ours = resetlstm.Bidirectional(ResetLSTM(H, return_sequences=True, dtype=dtype),
                                   merge_mode=merge_mode, dtype=dtype)
    ref.build((None, None, 3))
    ours.build((None, None, 3))
    # random biases too: with keras' zero cell-gate bias a zero input keeps a zero state zero,
    # which would hide state leaking out of the padding
    rng = np.random.default_rng(1)
    ref.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(dtype) for w in ref.get_weights()])
    ours.set_weights(ref.get_weights())
    y = np.asarray(ours(packed.stream_inputs, resets=packed.stream_resets))
    assert y.dtype == dtype
    for i, d in enumerate(docs):
        b, off = packed.doc_stream[i], packed.doc_offset[i]
        alone = np.asarray(ref(d[None]))[0]
        np.testing.assert_allclose(y[b, off:off + len(d)], alone, rtol=0, atol=atol,
                                   err_msg=f"document {i} (length {len(d)})")
    # not vacuous: without resets the documents see each other
    y_plain = np.asarray(ours(packed.stream_inputs))
    assert np.abs(y_plain - y).max() > 1e-2


def test_no_gradient_crosses_a_document_boundary_in_either_direction():
    docs, packed = packed_problem(12, "float64")
    bi = resetlstm.Bidirectional(ResetLSTM(4, return_sequences=True, dtype="float64"),
                                 dtype="float64")
    x = tf.constant(packed.stream_inputs)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = bi(x, resets=packed.stream_resets)
        per_doc = [tf.reduce_sum(y[b, off:off + len(d)] ** 2)
                   for d, b, off in zip(docs, packed.doc_stream, packed.doc_offset)]
    checked = 0
    for i, (loss, b, off) in enumerate(zip(per_doc, packed.doc_stream, packed.doc_offset)):
        g = np.asarray(tape.gradient(loss, x))
        inside = np.zeros(g.shape[:2], bool)
        inside[b, off:off + len(docs[i])] = True
        assert not g[~inside].any(), f"document {i} depends on inputs outside it"
        assert np.abs(g[inside]).max() > 0
        checked += 1
    assert checked == len(docs)
    # both directions carry information inside a document: the first step's output depends on
    # the last step's input (backward) and the last on the first (forward)
    d, b, off = docs[0], packed.doc_stream[0], packed.doc_offset[0]
    n = len(d)
    assert n >= 2
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = bi(x, resets=packed.stream_resets)
        first, last = tf.reduce_sum(y[b, off]), tf.reduce_sum(y[b, off + n - 1])
    assert np.abs(np.asarray(tape.gradient(first, x))[b, off + n - 1]).max() > 0
    assert np.abs(np.asarray(tape.gradient(last, x))[b, off]).max() > 0


def test_resetlstm_bidirectional_without_resets_is_keras_bidirectional():
    x, mask, state = random_problem(13, H=4)
    ref, _ = bidirectional_twins(return_sequences=True, return_state=True)
    ours = resetlstm.Bidirectional(ResetLSTM(4, return_sequences=True, return_state=True))
    ours.build((None, None, 3))
    ours.set_weights(ref.get_weights())
    state4 = state + state
    for call in (dict(), dict(mask=mask), dict(initial_state=state4)):
        for a, b in zip(flat(ours(x, **call)), flat(ref(x, **call))):
            close(a, b)
    # with resets and merge_mode=None / return_state the structure is keras'
    ours_none = resetlstm.Bidirectional(ResetLSTM(4, return_state=True), merge_mode=None)
    out = ours_none(x, resets=np.zeros(x.shape[:2], bool))
    assert len(out) == 6 and all(o.shape == (4, 4) for o in out)


def test_resetlstm_bidirectional_config_and_errors():
    bi = resetlstm.Bidirectional(ResetLSTM(3, return_sequences=True, recurrent_dropout=0.1),
                                 merge_mode="ave")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(bi))
    assert type(again) is resetlstm.Bidirectional and again.merge_mode == "ave"
    assert type(again.backward_layer) is ResetLSTM and again.backward_layer.go_backwards
    assert again.forward_layer.recurrent_dropout == 0.1
    stock = resetlstm.Bidirectional(keras.layers.LSTM(3))
    x = np.zeros((2, 4, 3), "float32")
    with pytest.raises(ValueError, match=r"`resets` needs both wrapped layers.*is a LSTM"):
        stock(x, resets=np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match=r"`resets` must have shape \[batch, timesteps\] = "
                                         r"\(2, 4\).*received shape \(3, 4\)"):
        bi(x, resets=np.zeros((3, 4), bool))


BIDI_SAVE = """
    import sys
    import numpy as np
    import tensorflow as tf
    import keras
    import resetlstm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 4)).astype("float32")
    x[1, 5:] = 0.0  # masked tail
    r = rng.random((3, 7)) < 0.3
    inputs = keras.Input((7, 4))
    resets = keras.Input((7,), dtype="bool")
    h = keras.layers.Masking()(inputs)
    h = resetlstm.Bidirectional(resetlstm.ResetLSTM(5, return_sequences=True))(h, resets=resets)
    h = keras.layers.Bidirectional(resetlstm.ResetLSTM(3, recurrent_dropout=0.2))(h)
    model = keras.Model([inputs, resets], keras.layers.Dense(2)(h))
    model.compile("adam", "mse")
    model.fit([x, r], rng.normal(size=(3, 2)), epochs=2, verbose=0)
    expected = np.asarray(model.predict_on_batch([x, r]))
    d = sys.argv[1]
    model.save(f"{d}/bi.keras")
    model.export(f"{d}/bi_exported", verbose=False)
    tf.saved_model.save(model, f"{d}/bi_saved")
    np.savez(f"{d}/bi.npz", x=x, r=r, expected=expected)
    print("saved")
"""

BIDI_LOAD = """
    import sys
    import numpy as np
    import tensorflow as tf
    import keras
    import resetlstm

    d = sys.argv[1]
    data = np.load(f"{d}/bi.npz")
    x, r, expected = data["x"], data["r"], data["expected"]

    def check(name, got):
        err = float(np.max(np.abs(np.asarray(got) - expected)))
        print(name, err)
        assert err <= 1e-6, (name, err)

    model = keras.models.load_model(f"{d}/bi.keras")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Bidirectional") == 2, kinds
    check("keras", model.predict_on_batch([x, r]))
    exported = tf.saved_model.load(f"{d}/bi_exported")
    check("export", exported.serve([x, r]))
    saved = tf.saved_model.load(f"{d}/bi_saved")
    sig = saved.signatures["serving_default"]
    names = sorted(sig.structured_input_signature[1])
    check("saved_model", list(sig(**dict(zip(names, (tf.constant(x), tf.constant(r)))))
                              .values())[0])
    print("OK")
"""


def test_bidirectional_save_and_load_in_a_fresh_process(tmp_path):
    run_python(BIDI_SAVE, tmp_path)
    assert "OK" in run_python(BIDI_LOAD, tmp_path)


# ------------------------------------------------------------------ Keras' own tests

@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax"])
def test_keras_own_rnn_tests_pass_against_resetlstm(backend):
    """Keras' own LSTM, GRU, Bidirectional, RNN and Masking tests (shipped in the installed keras
    package) with keras.layers.LSTM and GRU replaced by ResetLSTM and ResetGRU, on each Keras
    backend: none may fail."""
    pytest.importorskip(backend)
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                        "keras_rnn_tests.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND=backend)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, tool, "-q", "-p", "no:randomly", "-rA"], env=env,
                          capture_output=True, text=True, timeout=600)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "LSTM -> <class 'resetlstm.keras.layers.ResetLSTM'>" in proc.stdout, tail
    assert "GRU -> <class 'resetlstm.keras.layers.ResetGRU'>" in proc.stdout, tail
    summary = [line for line in proc.stdout.splitlines() if " passed" in line][-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 43 and "failed" not in summary and "error" not in summary, summary
    gru_passed = [line for line in proc.stdout.splitlines()
                  if line.startswith("PASSED") and "gru_test.py" in line]
    assert len(gru_passed) >= 8, "\n".join(gru_passed)
