"""resetlstm.ResetLSTM (the Keras 3 layer) against keras.layers.LSTM as the reference."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras
import tensorflow as tf

import resetlstm
from resetlstm.data import pack_documents
from resetlstm.keras import ResetLSTM

ATOL = 2e-5  # float32, short sequences


def close(actual, expected, atol=ATOL, err_msg=""):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=atol,
                               err_msg=err_msg)


def twins(units, input_dim, **kwargs):
    """A built keras.layers.LSTM and a ResetLSTM with the same weights."""
    ref = keras.layers.LSTM(units, **kwargs)
    ref.build((None, None, input_dim))
    layer = ResetLSTM(units, **kwargs)
    layer.build((None, None, input_dim))
    layer.set_weights(ref.get_weights())
    return ref, layer


def segments(resets_row):
    """[start, end) of the pieces a row's resets cut it into."""
    starts = [0] + [t for t in range(1, len(resets_row)) if resets_row[t]]
    return list(zip(starts, starts[1:] + [len(resets_row)]))


# ------------------------------------------------------------------ drop-in for keras.layers.LSTM

def test_same_weights_and_initialisation_as_keras_lstm():
    keras.utils.set_random_seed(3)
    ref = keras.layers.LSTM(5)
    ref.build((None, 4, 3))
    keras.utils.set_random_seed(3)
    layer = ResetLSTM(5)
    layer.build((None, 4, 3))
    assert [w.name for w in layer.weights] == [w.name for w in ref.weights] == \
        ["kernel", "recurrent_kernel", "bias"]
    assert [w.path.split("/", 1)[1] for w in layer.weights] == \
        [w.path.split("/", 1)[1] for w in ref.weights]
    for a, b in zip(layer.get_weights(), ref.get_weights()):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # same initializers, same order, unit_forget_bias
    assert layer.supports_jit is False and layer.supports_masking


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(return_sequences=True),
    dict(return_state=True),
    dict(return_sequences=True, return_state=True, use_bias=False),
    dict(unit_forget_bias=False, bias_initializer="random_normal", return_sequences=True),
    dict(dtype="float64", return_sequences=True, return_state=True),
])
def test_outputs_match_keras_lstm(kwargs):
    rng = np.random.default_rng(0)
    dtype = kwargs.get("dtype", "float32")
    x = rng.normal(size=(4, 7, 3)).astype(dtype)
    ref, layer = twins(6, 3, **kwargs)
    for a, b in zip(keras.tree.flatten(layer(x)), keras.tree.flatten(ref(x))):
        assert a.dtype == b.dtype == dtype
        close(a, b)
    # initial_state as in keras.layers.LSTM
    h0, c0 = (rng.normal(size=(4, 6)).astype(dtype) for _ in range(2))
    for a, b in zip(keras.tree.flatten(layer(x, initial_state=[h0, c0])),
                    keras.tree.flatten(ref(x, initial_state=[h0, c0]))):
        close(a, b)


def test_config_round_trips_with_keras_lstm():
    ref = keras.layers.LSTM(7, return_sequences=True, dropout=0.25, seed=4,
                            kernel_regularizer="l2", recurrent_constraint="non_neg")
    layer = ResetLSTM.from_config(ref.get_config())  # a stock config builds a ResetLSTM
    config = layer.get_config()
    # keras' config plus use_cudnn, which keras.layers.LSTM does not serialize
    assert set(config) == set(ref.get_config()) | {"use_cudnn"}
    assert config["units"] == 7 and config["dropout"] == 0.25 and config["return_sequences"]
    assert isinstance(layer.kernel_regularizer, keras.regularizers.L2)
    assert isinstance(keras.layers.LSTM.from_config(config), keras.layers.LSTM)  # and back
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is ResetLSTM and again.get_config() == config


def make_regression_model(layer_cls, **kwargs):
    inputs = keras.Input((6, 3))
    h = layer_cls(5, return_sequences=True, kernel_regularizer=keras.regularizers.L2(0.01),
                  recurrent_constraint=keras.constraints.MaxNorm(0.8), **kwargs)(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_step_matches_keras_lstm(optimizer):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 6, 3)).astype("float32")
    y = rng.normal(size=(8, 6, 2)).astype("float32")
    ref = make_regression_model(keras.layers.LSTM)
    model = make_regression_model(ResetLSTM)
    model.set_weights(ref.get_weights())
    for m in (ref, model):
        opt = keras.optimizers.SGD(0.3) if optimizer == "sgd" else keras.optimizers.Adam(0.01)
        m.compile(opt, "mse")
    initial = ref.get_weights()
    loss_ref = ref.train_on_batch(x, y)
    loss = model.train_on_batch(x, y)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    for w, a, b, w0 in zip(model.weights, model.get_weights(), ref.get_weights(), initial):
        assert np.abs(b - w0).max() > 1e-4, f"{w.path} did not change"
        close(a - w0, b - w0, atol=1e-6, err_msg=w.path)  # the updates themselves


def test_dropout_matches_keras_lstm():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 4, 6)).astype("float32")
    ref, layer = twins(3, 6, dropout=0.4, seed=11, return_sequences=True)
    # same seed generator, same draws: the same mask on the inputs at every step
    close(layer(x, training=True), ref(x, training=True))
    plain = ResetLSTM(3, return_sequences=True)
    plain.build((None, None, 6))
    plain.set_weights(layer.get_weights())
    close(layer(x, training=False), plain(x))  # inference: no dropout
    assert not np.allclose(layer(x, training=True), plain(x))


@pytest.mark.parametrize("kwargs, match", [
    (dict(activation="relu"), r"activation='tanh'.*received activation='relu'"),
    (dict(recurrent_activation="hard_sigmoid"),
     r"recurrent_activation='sigmoid'.*received recurrent_activation='hard_sigmoid'"),
    (dict(dropout=1.0), r"`dropout`.*\[0, 1\).*dropout=1.0"),
    (dict(dropout=-0.1), r"`dropout`.*\[0, 1\).*dropout=-0.1"),
    (dict(recurrent_dropout=1.0), r"`recurrent_dropout`.*\[0, 1\).*recurrent_dropout=1.0"),
    (dict(recurrent_dropout=-0.5), r"`recurrent_dropout`.*\[0, 1\).*recurrent_dropout=-0.5"),
    (dict(recurrent_dropout="0.2"), r"`recurrent_dropout`.*\[0, 1\).*recurrent_dropout='0.2'"),
    (dict(use_cudnn="yes"), r"`use_cudnn` must be 'auto', True or False.*use_cudnn='yes'"),
    (dict(implementation=3), r"`implementation`.*0, 1 or 2.*implementation=3"),
])
def test_unsupported_arguments_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResetLSTM(4, **kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(go_backwards=True), dict(unroll=True), dict(zero_output_for_mask=True),
    dict(use_cudnn=True), dict(use_cudnn=False), dict(recurrent_dropout=0.3),
    dict(dropout=0.2, recurrent_dropout=0.2, go_backwards=True, unroll=True, use_cudnn=True,
         zero_output_for_mask=True, implementation=1),
])
def test_every_keras_lstm_argument_is_accepted_and_kept(kwargs):
    layer = ResetLSTM(4, **kwargs)
    assert isinstance(layer, keras.layers.LSTM)
    config = layer.get_config()
    for name, value in kwargs.items():
        if name != "implementation":  # not part of keras.layers.LSTM's config either
            assert config[name] == value and getattr(layer, name) == value, name
    again = ResetLSTM.from_config(config)
    assert again.get_config() == config


def test_bad_units():
    with pytest.raises(ValueError, match=r"`units` must be a positive integer.*units=0"):
        ResetLSTM(0)


def test_supported_activation_spellings():
    assert ResetLSTM(2, activation=keras.activations.tanh, recurrent_activation=tf.sigmoid,
                     use_cudnn=False, implementation=1).activation is keras.activations.tanh


def test_no_xla():
    model = make_regression_model(ResetLSTM)
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile("sgd", "mse", jit_compile=True)
    assert model.jit_compile is False


# ------------------------------------------------------------------ resets and stateful streams

def test_resets_restart_the_sequence_like_separate_keras_lstm_calls():
    rng = np.random.default_rng(4)
    B, T, I, H = 4, 9, 3, 5
    x = rng.normal(size=(B, T, I)).astype("float32")
    resets = np.zeros((B, T), bool)
    resets[0, [0, 3, 4, 8]] = True
    resets[1, 5] = True
    resets[3, 1:] = rng.random(T - 1) < 0.4
    ref, layer = twins(H, I, return_sequences=True)
    y = layer(x, resets=resets).numpy()
    y01 = layer(x, resets=resets.astype("float32")).numpy()  # 0/1 numbers work too
    np.testing.assert_array_equal(y, y01)
    for b in range(B):
        for s, e in segments(resets[b]):
            close(y[b, s:e], ref(x[b:b + 1, s:e])[0], err_msg=f"row {b} steps {s}:{e}")


def stream_model(B, T, I, H, **kwargs):
    inputs = keras.Input(batch_shape=(B, T, I))
    resets = keras.Input(batch_shape=(B, T), dtype="bool")
    layer = ResetLSTM(H, return_sequences=True, stateful=True, **kwargs)
    return keras.Model([inputs, resets], layer(inputs, resets=resets)), layer


def test_stateful_stream_equals_one_long_sequence():
    rng = np.random.default_rng(5)
    B, K, T, I, H = 3, 4, 5, 2, 6
    x = rng.normal(size=(B, K * T, I)).astype("float32")
    resets = rng.random((B, K * T)) < 0.15
    resets[:, 0] = True
    resets[1, T] = True  # a reset on the first step of a batch
    whole = ResetLSTM(H, return_sequences=True, return_state=True)
    y_whole, h_whole, c_whole = whole(x, resets=resets)
    model, layer = stream_model(B, T, I, H)
    model.set_weights(whole.get_weights())
    chunks = [model.predict_on_batch([x[:, k * T:(k + 1) * T], resets[:, k * T:(k + 1) * T]])
              for k in range(K)]  # tf.function path: the state variables carry between calls
    close(np.concatenate(chunks, axis=1), y_whole)
    close(layer.states[0], h_whole)
    close(layer.states[1], c_whole)
    # the eager path gives the same stream
    layer.reset_state()
    eager = [layer(x[:, k * T:(k + 1) * T], resets=resets[:, k * T:(k + 1) * T]) for k in range(K)]
    close(np.concatenate(eager, axis=1), y_whole)


def test_packed_documents_through_stateful_layer_match_keras_lstm_per_document():
    rng = np.random.default_rng(6)
    I, H = 3, 4
    docs = [rng.normal(size=(n, I)).astype("float32") for n in rng.integers(1, 17, size=12)]
    packed = pack_documents(docs, batch_size=3, seq_len=5)
    model, layer = stream_model(3, 5, I, H)
    ref = keras.layers.LSTM(H, return_sequences=True)
    ref.build((None, None, I))
    model.set_weights(ref.get_weights())
    outs = [model.predict_on_batch(list(inputs)) for inputs, _, _ in packed.dataset()]
    streams = np.concatenate(outs, axis=1)  # [B, K*T, H]
    for i, d in enumerate(docs):
        b, off = packed.doc_stream[i], packed.doc_offset[i]
        close(streams[b, off:off + len(d)], ref(d[None])[0], err_msg=f"document {i}")


def test_reset_state_rows():
    rng = np.random.default_rng(7)
    B, T, I, H = 4, 3, 2, 5
    x1, x2 = (rng.normal(size=(B, T, I)).astype("float32") for _ in range(2))
    layer = ResetLSTM(H, return_sequences=True, return_state=True, stateful=True)
    plain = ResetLSTM(H, return_sequences=True)
    layer(x1)
    plain.build((None, None, I))
    plain.set_weights(layer.get_weights())
    h1, c1 = (v.numpy() for v in layer.states)
    assert np.abs(h1).min() > 0
    assert len(layer.weights) == 3  # the state is not a weight, as in keras.layers.LSTM

    layer.reset_state([1, -1])  # indices, negative from the end
    h, c = (v.numpy() for v in layer.states)
    keep = np.array([True, False, True, False])
    np.testing.assert_array_equal(h[keep], h1[keep])
    np.testing.assert_array_equal(c[keep], c1[keep])
    assert not h[~keep].any() and not c[~keep].any()
    # the next call continues the kept rows and restarts the reset ones
    y2 = layer(x2)[0]
    close(y2, plain(x2, initial_state=[h, c]))
    close(y2[~keep], plain(x2[~keep]))

    h2 = layer.states[0].numpy()
    layer.reset_state(np.array([True, False, False, False]))  # a bool vector
    assert not layer.states[0].numpy()[0].any()
    np.testing.assert_array_equal(layer.states[0].numpy()[1:], h2[1:])
    tf.function(layer.reset_state)(tf.constant([2]))  # works traced, with a tensor
    assert not layer.states[0].numpy()[2].any() and layer.states[0].numpy()[3].any()
    layer.reset_state([])  # nothing
    assert layer.states[0].numpy()[1].any() and layer.states[0].numpy()[3].any()
    layer.reset_state(3)  # a scalar index
    layer.reset_state([1, 1])  # repeated
    assert not layer.states[0].numpy()[1].any() and not layer.states[0].numpy()[3].any()
    layer(x1)
    layer.reset_states()  # keras.layers.LSTM's alias: everything
    assert not layer.states[0].numpy().any() and not layer.states[1].numpy().any()


@pytest.mark.parametrize("rows, match", [
    ([4], r"`rows` indices must be in \[-4, 4\).*batch size 4, received \[4\]"),
    ([0, -5], r"received \[-5\]"),
    (np.ones(3, bool), r"bool `rows` must have shape \[batch\] = \(4,\), received shape \(3,\)"),
    ([0.5], r"`rows` must be None, integer row indices.*received dtype float32"),
])
def test_reset_state_bad_rows(rows, match):
    layer = ResetLSTM(2, stateful=True)
    layer.build((4, 3, 1))
    with pytest.raises(ValueError, match=match):
        layer.reset_state(rows)


def test_stateful_batch_size_change_raises():
    model, layer = stream_model(4, 3, 2, 5)
    x3 = np.zeros((3, 3, 2), "float32")
    r3 = np.zeros((3, 3), bool)
    pattern = r"stateful with state for batch size 4.*received batch size 3"
    with pytest.raises(ValueError, match=pattern):
        layer(x3)
    with pytest.raises(ValueError, match=pattern):
        model.predict([x3, r3], verbose=0)
    # batch unknown while tracing: checked when it runs
    traced = tf.function(lambda x: layer(x), input_signature=[tf.TensorSpec([None, 3, 2])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"batch size 4[\s\S]*\[3\][\s\S]*\[4\]"):
        traced(x3)
    traced(np.zeros((4, 3, 2), "float32"))
    with pytest.raises(ValueError, match=r"stateful=True needs a static batch size.*\(None, 3, 2\)"):
        ResetLSTM(2, stateful=True)(keras.Input((3, 2)))


# ------------------------------------------------------------------ masking

def masked_batch(rng, B=5, T=7, I=3):
    mask = rng.random((B, T)) < 0.7
    mask[0, :2] = False  # leading masked steps
    mask[1, -3:] = False  # right padding
    mask[2, :] = False  # fully masked row
    mask[3, :] = True
    x = rng.normal(size=(B, T, I)).astype("float32")
    x[~mask] = 0.0
    return x, mask


@pytest.mark.parametrize("kwargs", [dict(return_sequences=True), dict(),
                                    dict(return_sequences=True, return_state=True)])
def test_masking_layer_matches_keras_lstm(kwargs):
    rng = np.random.default_rng(8)
    x, mask = masked_batch(rng)
    masked = keras.layers.Masking(0.0)(x)
    ref, layer = twins(4, 3, **kwargs)
    expected = keras.tree.flatten(ref(masked))
    no_resets = np.zeros(mask.shape, bool)
    # mask from the Keras mask alone, and with a resets tensor as second argument
    for got in (layer(masked), layer(masked, resets=no_resets), layer(x, mask=mask)):
        for a, b in zip(keras.tree.flatten(got), expected):
            close(a, b)
        out = keras.tree.flatten(got)[0]
        if kwargs.get("return_sequences"):
            np.testing.assert_array_equal(out._keras_mask, mask)  # propagated like LSTM
        else:
            assert getattr(out, "_keras_mask", None) is None


def embedding_model(layer_cls, with_resets):
    tokens = keras.Input((8,), dtype="int32")
    h = keras.layers.Embedding(20, 4, mask_zero=True)(tokens)
    if with_resets:
        resets = keras.Input((8,), dtype="bool")
        h = layer_cls(6, return_sequences=True)(h, resets=resets)
        inputs = [tokens, resets]
    else:
        h = layer_cls(6, return_sequences=True)(h)
        inputs = tokens
    h = layer_cls(5)(h)  # the second layer sees the mask propagated by the first
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def test_embedding_mask_zero_matches_keras_lstm_forward_and_training_step():
    rng = np.random.default_rng(9)
    tokens = rng.integers(1, 20, size=(6, 8)).astype("int32")
    tokens[0, :3] = 0
    tokens[1, 5:] = 0
    tokens[2, :] = 0
    tokens[3, 2:4] = 0
    labels = rng.integers(0, 3, size=6)
    ref = embedding_model(keras.layers.LSTM, with_resets=False)
    for with_resets in (False, True):
        model = embedding_model(ResetLSTM, with_resets)
        model.set_weights(ref.get_weights())
        inputs = [tokens, np.zeros(tokens.shape, bool)] if with_resets else tokens
        close(model.predict_on_batch(inputs), ref.predict_on_batch(tokens))
    # one training step through the masked layers gives the same weights (reusing `model`)
    for m in (ref, model):
        m.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(True))
    ref.train_on_batch(tokens, labels)
    model.train_on_batch([tokens, np.zeros(tokens.shape, bool)], labels)
    for name, a, b in zip([w.path for w in model.weights], model.get_weights(), ref.get_weights()):
        close(a, b, atol=1e-5, err_msg=name)


# ------------------------------------------------------------------ bad inputs

def test_bad_inputs_name_argument_expected_and_received():
    layer = ResetLSTM(3, return_sequences=True)
    x = np.zeros((2, 4, 5), "float32")
    layer(x)
    cases = [
        (dict(sequences=np.zeros((2, 4), "float32")),
         r"`sequences` \(the inputs\) must have rank 3 \[batch, timesteps, features\].*"
         r"received shape \(2, 4\)"),
        (dict(sequences=np.zeros((2, 4, 6), "float32")),
         r"`sequences` \(the inputs\) must have 5 features.*received shape \(2, 4, 6\)"),
        (dict(sequences=x, resets=np.zeros((2, 3), bool)),
         r"`resets` must have shape \[batch, timesteps\] = \(2, 4\).*received shape \(2, 3\)"),
        (dict(sequences=x, resets=np.zeros((3, 4), bool)),
         r"`resets` must have shape \[batch, timesteps\] = \(2, 4\).*received shape \(3, 4\)"),
        (dict(sequences=x, resets=np.zeros((2, 4, 1), bool)),
         r"`resets` must have shape.*received shape \(2, 4, 1\)"),
        (dict(sequences=x, mask=np.zeros((4, 2), bool)),
         r"`mask` must have shape \[batch, timesteps\] = \(2, 4\).*received shape \(4, 2\)"),
        (dict(sequences=x, initial_state=[np.zeros((2, 3), "float32")]),
         r"`initial_state` must be a list \[h0, c0\].*received 1 tensor"),
        (dict(sequences=x, initial_state=[np.zeros((2, 3), "float32"),
                                          np.zeros((2, 4), "float32")]),
         r"`initial_state` c0 must have shape \[batch, units\] = \(2, 3\), received shape \(2, 4\)"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            layer(**kwargs)
    # functional models are checked when they are built
    with pytest.raises(ValueError, match=r"`resets` must have shape.*\(None, 4\).*\(None, 6\)"):
        ResetLSTM(3)(keras.Input((4, 5)), resets=keras.Input((6,), dtype="bool"))


# ------------------------------------------------------------------ fresh processes

def run_python(script, *args):
    """Run a script in a fresh interpreter that imports resetlstm from where we did."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}"
    return proc.stdout


LOAD_SCRIPT = """
    import sys
    import numpy as np
    import tensorflow as tf
    import keras
    import resetlstm  # registers the op and the layer; nothing else

    d = sys.argv[1]
    data = np.load(f"{d}/data.npz")
    x, r, expected = data["x"], data["r"], data["expected"]
    xs, rs, expected_stream = data["xs"], data["rs"], data["expected_stream"]

    def check(name, got, want):
        err = float(np.max(np.abs(np.asarray(got) - want)))
        print(name, err)
        assert err <= 1e-6, (name, err)

    model = keras.models.load_model(f"{d}/model.keras")
    assert "ResetLSTM" in [type(layer).__name__ for layer in model.layers]
    check("keras", model.predict_on_batch([x, r]), expected)
    exported = tf.saved_model.load(f"{d}/exported")  # keep the object: it owns the variables
    check("export", exported.serve([x, r]), expected)
    saved = tf.saved_model.load(f"{d}/saved_model")
    sig = saved.signatures["serving_default"]
    check("saved_model", sig(inputs=tf.constant(x), inputs_1=tf.constant(r))["output_0"], expected)

    # stateful: the state carries across calls in each format
    stream = keras.models.load_model(f"{d}/stream.keras")
    check("stream keras", [stream.predict_on_batch([a, b]) for a, b in zip(xs, rs)], expected_stream)
    stream_exported = tf.saved_model.load(f"{d}/stream_exported")
    check("stream export", [stream_exported.serve([a, b]) for a, b in zip(xs, rs)],
          expected_stream)
    print("OK")
"""


def test_save_and_load_in_a_fresh_process(tmp_path):
    rng = np.random.default_rng(10)
    B, T, I = 3, 6, 4
    x = rng.normal(size=(B, T, I)).astype("float32")
    x[0, 4:] = 0.0  # masked tail
    r = rng.random((B, T)) < 0.3

    inputs = keras.Input((T, I))
    resets = keras.Input((T,), dtype="bool")
    h = keras.layers.Masking(0.0)(inputs)
    h = ResetLSTM(5, return_sequences=True, dropout=0.1, kernel_regularizer="l2")(h, resets=resets)
    model = keras.Model([inputs, resets], keras.layers.Dense(2)(h))
    rl = next(lay for lay in model.layers if isinstance(lay, ResetLSTM))
    rl.set_weights([w + 0.1 for w in rl.get_weights()])
    expected = model.predict_on_batch([x, r])
    model.save(tmp_path / "model.keras")
    model.export(str(tmp_path / "exported"), verbose=False)
    tf.saved_model.save(model, str(tmp_path / "saved_model"))

    stream, layer = stream_model(B, T, I, 5)
    xs = rng.normal(size=(2, B, T, I)).astype("float32")
    rs = rng.random((2, B, T)) < 0.2
    expected_stream = [stream.predict_on_batch([a, b]) for a, b in zip(xs, rs)]
    assert not np.allclose(expected_stream[1], stream.predict_on_batch([xs[1], rs[1]]))
    layer.reset_state()  # saved state = the state at save time (export); .keras keeps no state
    stream.save(tmp_path / "stream.keras")
    stream.export(str(tmp_path / "stream_exported"), verbose=False)
    np.savez(tmp_path / "data.npz", x=x, r=r, expected=expected, xs=xs, rs=rs,
             expected_stream=np.stack(expected_stream))
    assert "OK" in run_python(LOAD_SCRIPT, tmp_path)


MIRRORED_SCRIPT = """
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from resetlstm.keras import ResetLSTM

    B, T, I, H = 8, 6, 3, 5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, I)).astype("float32")
    # resets as 0/1 floats: Keras 3.15's fit() under a MirroredStrategy cannot take bool inputs
    # at all (it MEAN-reduces a first batch, AddN has no bool kernel), stock LSTM included.
    r = (rng.random((B, T)) < 0.2).astype("float32")
    y = rng.normal(size=(B, T, 2)).astype("float32")

    def make():
        inputs, resets = keras.Input((T, I)), keras.Input((T,))
        h = ResetLSTM(H, return_sequences=True)(inputs, resets=resets)
        model = keras.Model([inputs, resets], keras.layers.Dense(2)(h))
        model.compile(keras.optimizers.SGD(0.5), "mse")
        return model

    single = make()
    initial = single.get_weights()
    single.fit([x, r], y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = make()
    mirrored.set_weights(initial)
    mirrored.fit([x, r], y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    for w, a, b, w0 in zip(single.weights, single.get_weights(), mirrored.get_weights(), initial):
        assert np.abs(a - w0).max() > 1e-4, f"{w.path} did not change"
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=w.path)
    print("OK")
"""


def test_mirrored_strategy_training_step_equals_single_device():
    assert "OK" in run_python(MIRRORED_SCRIPT)
