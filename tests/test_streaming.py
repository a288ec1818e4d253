"""resetlstm.StreamingModel: continuous batching of many streams through a few slots, against
each stream run alone through an equivalent keras.layers.LSTM model (the independent
reference)."""
import numpy as np
import pytest

import keras
import tensorflow as tf

import resetlstm
from resetlstm import StreamingModel
from resetlstm.keras import ResetLSTM
from test_layer import run_python

V, E, H1, H2 = 23, 6, 9, 7


CELLS = {"lstm": ("LSTM", "LSTM"), "gru": ("GRU", "GRU"), "mixed": ("GRU", "LSTM")}


def lm(lstm, stateful_batch=None, seq_len=None, with_resets=True, cell="lstm"):
    """Embedding -> LSTM(H1) -> LSTM(H2) -> Dense(V), with ResetLSTM (resets input) or
    keras.layers.LSTM; ``cell`` "gru": both layers GRUs (ResetGRU or keras.layers.GRU),
    "mixed": a GRU then an LSTM. stateful_batch: a stateful model with that fixed batch (as
    trained)."""
    first, second = CELLS[cell]
    shape = dict(batch_shape=(stateful_batch, seq_len))
    tokens = keras.Input(dtype="int32", name="tokens", **shape)
    h = keras.layers.Embedding(V, E)(tokens)
    stateful = stateful_batch is not None
    if lstm is ResetLSTM:
        inputs = [tokens]
        kwargs = {}
        if with_resets:
            resets = keras.Input(dtype="bool", name="resets", **shape)
            inputs.append(resets)
            kwargs = dict(resets=resets)
        h = getattr(resetlstm, f"Reset{first}")(H1, return_sequences=True,
                                                 stateful=stateful)(h, **kwargs)
        h = getattr(resetlstm, f"Reset{second}")(H2, return_sequences=True,
                                                  stateful=stateful)(h, **kwargs)
    else:
        inputs = tokens
        h = getattr(keras.layers, first)(H1, return_sequences=True)(h)
        h = getattr(keras.layers, second)(H2, return_sequences=True)(h)
    return keras.Model(inputs, keras.layers.Dense(V)(h))


def trained_pair(seed=0, cell="lstm", **kwargs):
    """A ResetLSTM (ResetGRU, both: ``cell``) model with random (non-trivial) weights and the
    keras.layers.LSTM (GRU) model holding the same weights."""
    keras.utils.set_random_seed(seed)
    ours = lm(ResetLSTM, cell=cell, **kwargs)
    rng = np.random.default_rng(seed)
    ours.set_weights([rng.normal(0, 0.4, w.shape).astype("float32") for w in ours.get_weights()])
    ref = lm(keras.layers.LSTM, cell=cell)
    ref.set_weights(ours.get_weights())
    return ours, ref


def serve(server, streams, rng, release_some=True):
    """Continuous batching: streams queue for the server's slots, join at random steps when a
    slot is free (new_stream=True at their first step), leave after their last step. Returns
    each stream's outputs [len, V] and how many steps ran."""
    slots = server.slots
    queue = list(range(len(streams)))
    holder = [None] * slots       # stream index in each slot
    position = [0] * slots
    outputs = [[] for _ in streams]
    steps = 0
    while queue or any(h is not None for h in holder):
        new = np.zeros(slots, bool)
        tokens = rng.integers(0, V, size=slots).astype("int32")  # garbage in idle slots
        for s in range(slots):
            if holder[s] is None and queue and rng.random() < 0.6:  # join at a random step
                holder[s], position[s], new[s] = queue.pop(0), 0, True
            if holder[s] is not None:
                tokens[s] = streams[holder[s]][position[s]]
        out = np.asarray(server.step(tokens, new))
        ended = []
        for s in range(slots):
            if holder[s] is not None:
                outputs[holder[s]].append(out[s])
                position[s] += 1
                if position[s] == len(streams[holder[s]]):
                    holder[s] = None
                    ended.append(s)
        if release_some and ended and rng.random() < 0.5:
            server.release(ended)  # optional: new_stream resets anyway
        steps += 1
    return [np.stack(o) for o in outputs], steps


@pytest.mark.parametrize("with_resets,cell", [(True, "lstm"), (False, "lstm"), (True, "gru"),
                                              (False, "mixed")])
def test_each_stream_gets_exactly_its_alone_outputs(with_resets, cell):
    ours, ref = trained_pair(with_resets=with_resets, cell=cell)
    rng = np.random.default_rng(1)
    lengths = [1, 14, 3, 9, 20, 2, 7, 11, 5, 16, 8, 4]
    streams = [rng.integers(0, V, size=n) for n in lengths]
    server = StreamingModel(ours, slots=4)
    got, steps = serve(server, streams, rng)
    assert steps < sum(lengths)  # slots were shared
    for stream, out in zip(streams, got):
        alone = ref.predict_on_batch(stream[None].astype("int32"))[0]  # keras' layers, alone
        assert out.shape == alone.shape
        np.testing.assert_allclose(out, alone, rtol=0, atol=1e-5)


def test_stateful_fixed_batch_model_and_stream_isolation():
    """A model trained stateful with batch 8 x 5 steps serves 3 slots; its own state is left
    alone. Without new_stream or release, a slot continues the previous stream (the control)."""
    ours, ref = trained_pair(seed=2, stateful_batch=8, seq_len=5)
    ours.predict_on_batch([np.ones((8, 5), "int32"), np.zeros((8, 5), bool)])
    own = [layer for layer in ours.layers if isinstance(layer, ResetLSTM)][0]
    before = [v.numpy().copy() for v in own.states]
    server = StreamingModel(ours, slots=3)
    rng = np.random.default_rng(3)
    streams = [rng.integers(0, V, size=n) for n in (6, 2, 9, 4, 5)]
    got, _ = serve(server, streams, rng, release_some=False)
    for stream, out in zip(streams, got):
        np.testing.assert_allclose(out, ref.predict_on_batch(stream[None].astype("int32"))[0],
                                   rtol=0, atol=1e-5)
    for a, b in zip(before, own.states):
        np.testing.assert_array_equal(a, b.numpy())

    # control: a second stream in slot 0 without new_stream continues from the first one
    server.reset()
    a, b = streams[0], streams[1]
    for t, tok in enumerate(a):
        server.step(np.array([tok, 0, 0], "int32"), np.array([t == 0, False, False]))
    carried = np.asarray(server.step(np.array([b[0], 0, 0], "int32"), np.zeros(3, bool)))[0]
    alone = ref.predict_on_batch(b[None, :1].astype("int32"))[0, 0]
    assert np.abs(carried - alone).max() > 1e-3
    server.release(np.array([True, False, False]))
    fresh = np.asarray(server.step(np.array([b[0], 0, 0], "int32"), np.zeros(3, bool)))[0]
    np.testing.assert_allclose(fresh, alone, atol=1e-5)


def test_sync_weights_and_feature_inputs():
    keras.utils.set_random_seed(4)
    x = keras.Input((None, 3))
    model = keras.Model(x, keras.layers.Dense(2)(ResetLSTM(4)(x)))  # last step only: [B, 4]
    server = StreamingModel(model, slots=2)
    feats = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
    outs = [np.asarray(server.step(feats[:, t], np.array([t == 0] * 2))) for t in range(6)]
    np.testing.assert_allclose(outs[-1], model.predict_on_batch(feats), atol=1e-5)
    model.set_weights([w + 0.1 for w in model.get_weights()])
    server.sync_weights()
    server.reset()
    outs = [np.asarray(server.step(feats[:, t], np.zeros(2, bool))) for t in range(6)]
    np.testing.assert_allclose(outs[-1], model.predict_on_batch(feats), atol=1e-5)


def test_refusals_name_the_problem():
    ours, _ = trained_pair()
    with pytest.raises(ValueError, match=r"`slots` must be a positive integer, received slots=0"):
        StreamingModel(ours, 0)
    x = keras.Input((None, 3))
    with pytest.raises(ValueError, match="is a LSTM, whose state cannot be reset per slot"):
        StreamingModel(keras.Model(x, keras.layers.LSTM(2)(x)), 2)
    with pytest.raises(ValueError, match="is Bidirectional"):
        StreamingModel(keras.Model(x, keras.layers.Bidirectional(ResetLSTM(2))(x)), 2)
    with pytest.raises(ValueError, match="go_backwards=True"):
        StreamingModel(keras.Model(x, ResetLSTM(2, go_backwards=True)(x)), 2)
    with pytest.raises(ValueError, match="has no ResetLSTM or ResetGRU layer"):
        StreamingModel(keras.Model(x, keras.layers.Dense(2)(x)), 2)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.lstm = ResetLSTM(2)

        def call(self, x):
            return self.lstm(x)

    sub = Sub()
    sub(np.zeros((1, 2, 3), "float32"))
    with pytest.raises(ValueError, match="functional or Sequential"):
        StreamingModel(sub, 2)

    server = StreamingModel(ours, 3)
    with pytest.raises(ValueError, match=r"`inputs` 'tokens' must have shape \[slots, \.\.\.\] = "
                                         r"\(3,\) \(one step for every slot\), received shape "
                                         r"\(4,\)"):
        server.step(np.zeros(4, "int32"), np.zeros(3, bool))
    with pytest.raises(ValueError, match=r"`new_stream` must have shape \[slots\] = \(3,\), "
                                         r"received shape \(3, 1\)"):
        server.step(np.zeros(3, "int32"), np.zeros((3, 1), bool))
    with pytest.raises(ValueError, match=r"`new_stream` must be bool or 0/1 numbers"):
        server.step(np.zeros(3, "int32"), np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"`rows` indices must be in \[-3, 3\)"):
        server.release([3])
    out = server.step(np.zeros(3, "int32"), np.array([1, 0, 1]))  # 0/1 numbers are fine
    assert tuple(out.shape) == (3, V)


EXPORT_CHECK = """
    import sys
    import numpy as np
    import tensorflow as tf
    import resetlstm  # registers the op before loading

    d = sys.argv[1]
    data = np.load(f"{d}/data.npz")
    loaded = tf.saved_model.load(f"{d}/served")
    sig = loaded.signatures["step"]
    for t in range(len(data["tokens"])):
        if data["release"][t].any():
            loaded.signatures["release"](slots=tf.constant(data["release"][t]))
        out = sig(inputs=tf.constant(data["tokens"][t]), new_stream=tf.constant(data["new"][t]))
        err = float(np.abs(out["output_0"].numpy() - data["expected"][t]).max())
        assert err <= 1e-6, (t, err)
    print("OK", len(data["tokens"]))
"""


@pytest.mark.parametrize("cell", ["lstm", "mixed"])
def test_exported_step_signature_reproduces_in_a_fresh_process(tmp_path, cell):
    ours, _ = trained_pair(seed=5, cell=cell)
    server = StreamingModel(ours, slots=4)
    server.export(tmp_path / "served")   # the state as of now: all zero
    rng = np.random.default_rng(6)
    tokens = rng.integers(0, V, size=(12, 4)).astype("int32")
    new = rng.random((12, 4)) < 0.25
    release = np.zeros((12, 4), bool)
    release[5, 2] = release[9, 0] = True
    expected = []
    for t in range(12):
        if release[t].any():
            server.release(release[t])
        expected.append(np.asarray(server.step(tokens[t], new[t])))
    np.savez(tmp_path / "data.npz", tokens=tokens, new=new, release=release,
             expected=np.stack(expected))
    assert "OK 12" in run_python(EXPORT_CHECK, tmp_path)
