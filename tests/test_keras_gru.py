"""resetlstm.ResetGRU (the Keras 3 layer) against keras.layers.GRU as the reference, on the
TensorFlow backend: weights, initialisation, config and files 1:1, dropout, the refusals, and a
fresh process that loads what was saved. The semantics shared with ResetLSTM (resets, stateful
streams, Bidirectional, masking, fit, mixed precision) run for both cells on every backend in
tests/keras_backend_cases.py; Keras' own gru_test.py runs against it in test_dropin.py."""
import numpy as np
import pytest

import keras
import tensorflow as tf

from resetlstm.keras import Bidirectional, ResetGRU, ResetLSTM
from test_layer import close, run_python


def twins(units, input_dim, **kwargs):
    """A built keras.layers.GRU and a ResetGRU with the same weights."""
    ref = keras.layers.GRU(units, **kwargs)
    ref.build((None, None, input_dim))
    layer = ResetGRU(units, **kwargs)
    layer.build((None, None, input_dim))
    layer.set_weights(ref.get_weights())
    return ref, layer


@pytest.mark.parametrize("reset_after", [True, False])
def test_same_weights_and_initialisation_as_keras_gru(reset_after):
    keras.utils.set_random_seed(3)
    ref = keras.layers.GRU(5, reset_after=reset_after)
    ref.build((None, 4, 3))
    keras.utils.set_random_seed(3)
    layer = ResetGRU(5, reset_after=reset_after)
    layer.build((None, 4, 3))
    assert isinstance(layer, keras.layers.GRU)
    assert [w.path.split("/", 1)[1] for w in layer.weights] == \
        [w.path.split("/", 1)[1] for w in ref.weights] == \
        ["gru_cell/kernel", "gru_cell/recurrent_kernel", "gru_cell/bias"]
    assert layer.cell.bias.shape == ((2, 15) if reset_after else (15,))
    for a, b in zip(layer.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert layer.supports_jit is False and layer.supports_masking


@pytest.mark.parametrize("kwargs", [dict(), dict(reset_after=False),
                                    dict(return_sequences=True, return_state=True),
                                    dict(go_backwards=True, return_sequences=True),
                                    dict(use_bias=False, reset_after=False)])
def test_outputs_match_keras_gru(kwargs):
    x = np.random.default_rng(0).normal(size=(3, 7, 4)).astype("float32")
    ref, layer = twins(5, 4, **kwargs)
    for got, want in zip(tf.nest.flatten(layer(x)), tf.nest.flatten(ref(x))):
        close(got, want)


def test_config_and_keras_files_are_one_to_one_with_keras_gru(tmp_path):
    ref = keras.layers.GRU(7, return_sequences=True, dropout=0.25, seed=4, reset_after=False,
                           kernel_regularizer="l2", recurrent_constraint="non_neg")
    layer = ResetGRU.from_config(ref.get_config())  # a stock config builds a ResetGRU
    config = layer.get_config()
    assert set(config) == set(ref.get_config()) | {"use_cudnn"}
    assert config["reset_after"] is False and config["units"] == 7
    assert isinstance(keras.layers.GRU.from_config(config), keras.layers.GRU)  # and back
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is ResetGRU and again.get_config() == config
    # the weights of a stock model move over 1:1 (Keras' .weights.h5 files key each layer by
    # its class name, so they load into a model of the same classes: move weights with
    # get_weights / set_weights, or save the model with ResetGRU as a .keras file)
    x = np.random.default_rng(1).normal(size=(2, 6, 3)).astype("float32")

    def model(cls):
        inputs = keras.Input((6, 3))
        return keras.Model(inputs, keras.layers.Dense(2)(cls(5, return_sequences=True)(inputs)))

    stock, ours = model(keras.layers.GRU), model(ResetGRU)
    ours.set_weights(stock.get_weights())
    close(ours(x), stock(x))
    ours.save(tmp_path / "ours.keras")
    loaded = keras.models.load_model(tmp_path / "ours.keras")
    assert type(loaded.layers[1]) is ResetGRU
    close(loaded(x), stock(x))


def test_dropout_matches_keras_gru():
    x = np.random.default_rng(2).normal(size=(5, 4, 6)).astype("float32")
    ref, layer = twins(3, 6, dropout=0.4, seed=11, return_sequences=True)
    close(layer(x, training=True), ref(x, training=True))  # same seed generator, same mask
    plain = ResetGRU(3, return_sequences=True)
    plain.build((None, None, 6))
    plain.set_weights(layer.get_weights())
    close(layer(x, training=False), plain(x))
    assert not np.allclose(layer(x, training=True), plain(x))


def test_recurrent_dropout_trains_and_leaves_inference_alone():
    """One tied mask on h per call (documented); inference equals the layer without it."""
    x = np.random.default_rng(3).normal(size=(4, 6, 3)).astype("float32")
    ref, layer = twins(5, 3, recurrent_dropout=0.5, seed=2, return_sequences=True)
    close(layer(x, training=False), ref(x, training=False))
    first, second = layer(x, training=True), layer(x, training=True)
    assert not np.allclose(first, layer(x, training=False)) and not np.allclose(first, second)


@pytest.mark.parametrize("kwargs, match", [
    (dict(activation="relu"), r"activation='tanh'.*received activation='relu'.*"
                              r"keras.layers.GRU"),
    (dict(recurrent_activation="hard_sigmoid"),
     r"recurrent_activation='sigmoid'.*hard_sigmoid.*keras.layers.GRU"),
    (dict(dropout=1.0), r"`dropout`.*\[0, 1\).*dropout=1.0"),
    (dict(recurrent_dropout=-0.5), r"`recurrent_dropout`.*\[0, 1\).*recurrent_dropout=-0.5"),
    (dict(use_cudnn="yes"), r"`use_cudnn` must be 'auto', True or False.*use_cudnn='yes'"),
    (dict(implementation=3), r"`implementation`.*0, 1 or 2.*implementation=3"),
])
def test_unsupported_arguments_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResetGRU(4, **kwargs)
    with pytest.raises(ValueError, match=r"`units` must be a positive integer.*units=0"):
        ResetGRU(0)


@pytest.mark.parametrize("kwargs", [
    dict(reset_after=False), dict(go_backwards=True), dict(unroll=True), dict(use_cudnn=True),
    dict(use_cudnn=False), dict(recurrent_dropout=0.3), dict(zero_output_for_mask=True),
    dict(dropout=0.2, recurrent_dropout=0.2, go_backwards=True, unroll=True, use_cudnn=True,
         reset_after=False, implementation=1),
    dict(implementation=0),  # Keras 2's legacy value, which keras.layers.GRU still accepts
])
def test_every_keras_gru_argument_is_accepted_and_kept(kwargs):
    layer = ResetGRU(4, **kwargs)
    config = layer.get_config()
    for name, value in kwargs.items():
        if name != "implementation":  # not part of keras.layers.GRU's config either
            assert config[name] == value and getattr(layer, name) == value, name
    assert ResetGRU.from_config(config).get_config() == config
    x = np.random.default_rng(4).normal(size=(2, 5, 3)).astype("float32")
    # inference is keras.layers.GRU's, whatever the arguments (keras.layers.GRU itself raises
    # for use_cudnn=True without a GPU, so the reference runs with the default there)
    ref, ours = twins(4, 3, **kwargs)
    stock = keras.layers.GRU.from_config({**ref.get_config(), "use_cudnn": "auto"})
    stock.build((None, None, 3))
    stock.set_weights(ref.get_weights())
    close(ours(x), stock(x))


def test_bad_inputs_name_argument_expected_and_received():
    layer = ResetGRU(3, return_sequences=True)
    x = np.zeros((2, 4, 5), "float32")
    layer(x)
    cases = [
        (dict(sequences=x, initial_state=[np.zeros((2, 3), "float32")] * 2),
         r"`initial_state` must be a list \[h0\] of 1 \[batch, units\] tensor\(s\), "
         r"received 2 tensor"),
        (dict(sequences=x, initial_state=np.zeros((2, 4), "float32")),
         r"`initial_state` h0 must have shape \[batch, units\] = \(2, 3\), received shape "
         r"\(2, 4\)"),
        (dict(sequences=x, resets=np.zeros((2, 3), bool)),
         r"`resets` must have shape \[batch, timesteps\] = \(2, 4\).*received shape \(2, 3\)"),
        (dict(sequences=np.zeros((2, 4, 6), "float32")),
         r"`sequences` \(the inputs\) must have 5 features.*received shape \(2, 4, 6\)"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            layer(**kwargs)
    lstm = ResetLSTM(3)
    with pytest.raises(ValueError, match=r"`resets` needs both wrapped layers to take `resets` "
                                         r"\(resetlstm.ResetLSTM or ResetGRU\)"):
        Bidirectional(keras.layers.GRU(3), backward_layer=ResetGRU(3, go_backwards=True))(
            x, resets=np.zeros((2, 4), bool))
    assert lstm.get_config()["units"] == 3


LOAD_SCRIPT = """
    import sys
    import numpy as np
    import tensorflow as tf
    import keras
    import resetlstm  # registers the ops and the layers; nothing else

    d = sys.argv[1]
    data = np.load(f"{d}/data.npz")

    def check(name, got, want):
        err = float(np.max(np.abs(np.asarray(got) - want)))
        assert err <= 1e-6, (name, err)

    model = keras.models.load_model(f"{d}/model.keras")
    assert [type(layer).__name__ for layer in model.layers].count("ResetGRU") == 2
    check("keras", model.predict_on_batch([data["x"], data["r"]]), data["expected"])
    exported = tf.saved_model.load(f"{d}/exported")
    check("export", exported.serve([data["x"], data["r"]]), data["expected"])
    stream = tf.saved_model.load(f"{d}/stream_exported")  # stateful: the state carries over
    check("stream", [stream.serve([a, b]) for a, b in zip(data["xs"], data["rs"])],
          data["expected_stream"])
    print("OK")
"""


def test_save_and_load_in_a_fresh_process(tmp_path):
    rng = np.random.default_rng(10)
    B, T, I = 3, 6, 4
    x = rng.normal(size=(B, T, I)).astype("float32")
    x[0, 4:] = 0.0  # masked tail
    r = rng.random((B, T)) < 0.3
    inputs, resets = keras.Input((T, I)), keras.Input((T,), dtype="bool")
    h = keras.layers.Masking(0.0)(inputs)
    h = ResetGRU(5, return_sequences=True, reset_after=False)(h, resets=resets)
    h = ResetGRU(4, return_sequences=True, go_backwards=True)(h, resets=resets)
    model = keras.Model([inputs, resets], keras.layers.Dense(2)(h))
    model.set_weights([w + 0.1 for w in model.get_weights()])
    expected = model.predict_on_batch([x, r])
    model.save(tmp_path / "model.keras")
    model.export(str(tmp_path / "exported"), verbose=False)

    s_in = keras.Input(batch_shape=(B, T, I))
    s_resets = keras.Input(batch_shape=(B, T), dtype="bool")
    gru = ResetGRU(5, return_sequences=True, stateful=True)
    stream = keras.Model([s_in, s_resets], gru(s_in, resets=s_resets))
    xs = rng.normal(size=(2, B, T, I)).astype("float32")
    rs = rng.random((2, B, T)) < 0.2
    expected_stream = [stream.predict_on_batch([a, b]) for a, b in zip(xs, rs)]
    gru.reset_state()
    stream.export(str(tmp_path / "stream_exported"), verbose=False)
    np.savez(tmp_path / "data.npz", x=x, r=r, expected=expected, xs=xs, rs=rs,
             expected_stream=np.stack(expected_stream))
    assert "OK" in run_python(LOAD_SCRIPT, tmp_path)
