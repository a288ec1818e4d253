"""Portable export (resetlstm.tf.portable, resetlstm.tf.export): the stock-op lowerings against the
fused ops and the float64 references, every ResetLSTM and ResetGRU option against the fused model,
the refusals, and
the exported SavedModel / LiteRT / ONNX models run in fresh processes where resetlstm cannot be
imported (and, for LiteRT and ONNX Runtime, TensorFlow neither)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras
import tensorflow as tf

import resetlstm
from resetlstm import StreamingModel
from resetlstm.tf.export import export_litert, export_onnx, export_portable, portable_function
from resetlstm.keras import ResetGRU, ResetLSTM
from resetlstm.tf.model_layers import reset_layers
from resetlstm.tf.portable import lowered, portable_reset_gru, portable_reset_lstm
from reference import reference_forward
from test_streaming import V, serve, trained_pair

HAVE_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("tf2onnx", "onnxruntime"))
ATOL = 1e-5


# ------------------------------------------------------------------ the lowering of the op
def _problem(rng, B, T, I, H, dtype="float32"):
    x = rng.normal(size=(B, T, I)).astype(dtype)
    k = rng.normal(0, 0.5, size=(I, 4 * H)).astype(dtype)
    r = rng.normal(0, 0.5, size=(H, 4 * H)).astype(dtype)
    b = rng.normal(0, 0.5, size=4 * H).astype(dtype)
    return x, k, r, b


@pytest.mark.parametrize("B,T,I,H", [(3, 1, 4, 5), (4, 9, 3, 6), (2, 0, 3, 2), (1, 5, 1, 1)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_portable_op_equals_fused_op_and_reference(B, T, I, H, dtype):
    rng = np.random.default_rng(B * 100 + T)
    x, k, r, b = _problem(rng, B, T, I, H, dtype)
    resets = rng.random((B, T)) < 0.3
    mask = rng.random((B, T)) < 0.7
    h0, c0 = (rng.normal(size=(B, H)).astype(dtype) for _ in range(2))
    drop = (rng.random((B, H)) < 0.8).astype(dtype) / 0.8
    tol = ATOL if dtype == "float32" else 1e-12
    for kwargs in (dict(), dict(resets=resets), dict(resets=resets, mask=mask,
                                                     initial_state=(h0, c0)),
                   dict(mask=mask, recurrent_dropout_mask=drop)):
        got = portable_reset_lstm(x, k, r, b, **kwargs)
        fused = resetlstm.reset_lstm(x, k, r, b, **kwargs)
        ref = reference_forward(x, k, r, b, kwargs.get("resets"),
                                *(kwargs.get("initial_state") or (None, None)),
                                mask=kwargs.get("mask"),
                                dropout=kwargs.get("recurrent_dropout_mask"))
        for a, f, e in zip(got, fused, ref):
            assert a.dtype == dtype and a.shape == f.shape
            np.testing.assert_allclose(a, f, rtol=0, atol=tol)
            np.testing.assert_allclose(a, e, rtol=0, atol=tol)
    # time-major layout and 0/1 flags
    tm = portable_reset_lstm(np.swapaxes(x, 0, 1), k, r, b, resets=resets.T.astype("int32"),
                             time_major=True)
    np.testing.assert_allclose(np.swapaxes(tm[0], 0, 1),
                               resetlstm.reset_lstm(x, k, r, b, resets=resets)[0], atol=tol)


def test_portable_op_in_a_graph_with_unknown_batch_and_time():
    rng = np.random.default_rng(1)
    x, k, r, b = _problem(rng, 3, 7, 4, 5)
    resets = rng.random((3, 7)) < 0.3

    def traced(batch):
        return tf.function(lambda x, s: portable_reset_lstm(x, k, r, b, resets=s),
                           input_signature=[tf.TensorSpec([batch, None, 4]),
                                            tf.TensorSpec([batch, None], tf.bool)])

    for f, B, T in ((traced(None), 3, 7), (traced(None), 1, 1), (traced(2), 2, 0)):
        got = f(x[:B, :T], resets[:B, :T])
        for a, e in zip(got, resetlstm.reset_lstm(x[:B, :T], k, r, b, resets=resets[:B, :T])):
            np.testing.assert_allclose(a, e, atol=ATOL)


def test_no_nan_crosses_a_reset():
    """The reset is a select: a NaN in a row's state before its reset does not reach past it
    (a multiply by 0 would make it NaN)."""
    rng = np.random.default_rng(2)
    x, k, r, b = _problem(rng, 2, 8, 3, 4)
    x[0, 2] = np.nan
    resets = np.zeros((2, 8), bool)
    resets[0, 5] = True
    got = [np.asarray(t) for t in portable_reset_lstm(x, k, r, b, resets=resets)]
    fused = [np.asarray(t) for t in resetlstm.reset_lstm(x, k, r, b, resets=resets)]
    assert np.isnan(got[0][0, 2:5]).all() and np.isfinite(got[0][0, 5:]).all()
    np.testing.assert_allclose(got[0], fused[0], atol=ATOL)  # NaN at the same positions
    ref = reference_forward(x[:, 5:], k, r, b)[0]
    np.testing.assert_allclose(got[0][0, 5:], ref[0], atol=ATOL)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("B,T,I,H", [(3, 1, 4, 5), (4, 9, 3, 6), (2, 0, 3, 2)])
def test_portable_gru_equals_fused_op_and_reference(B, T, I, H, reset_after):
    """portable_reset_gru (float64) against the fused reset_gru and the float64 reference,
    with every option, both forms; time-major and 0/1 flags."""
    from reference_gru import gru_reference_forward

    rng = np.random.default_rng(B * 10 + T)
    x = rng.normal(size=(B, T, I))
    k, r = rng.normal(0, 0.5, size=(I, 3 * H)), rng.normal(0, 0.5, size=(H, 3 * H))
    b = rng.normal(0, 0.5, size=(2, 3 * H) if reset_after else (3 * H,))
    resets, mask = rng.random((B, T)) < 0.3, rng.random((B, T)) < 0.7
    h0 = rng.normal(size=(B, H))
    drop = (rng.random((B, H)) < 0.8) / 0.8
    for kwargs in (dict(), dict(resets=resets), dict(resets=resets, mask=mask, initial_state=h0),
                   dict(mask=mask, recurrent_dropout_mask=drop)):
        got = portable_reset_gru(x, k, r, b, reset_after=reset_after, **kwargs)
        fused = resetlstm.reset_gru(x, k, r, b, reset_after=reset_after, **kwargs)
        ref = gru_reference_forward(x, k, r, b, kwargs.get("resets"), kwargs.get("initial_state"),
                                    kwargs.get("mask"), kwargs.get("recurrent_dropout_mask"),
                                    reset_after=reset_after)
        assert len(got) == 2
        for a, f, e in zip(got, fused, ref):
            assert a.dtype == tf.float64 and a.shape == f.shape
            np.testing.assert_allclose(a, f, rtol=0, atol=1e-12)
            np.testing.assert_allclose(a, e, rtol=0, atol=1e-12)
    tm = portable_reset_gru(np.swapaxes(x, 0, 1), k, r, b, resets=resets.T.astype("int32"),
                            time_major=True, reset_after=reset_after)
    np.testing.assert_allclose(np.swapaxes(tm[0], 0, 1), resetlstm.reset_gru(
        x, k, r, b, resets=resets, reset_after=reset_after)[0], atol=1e-12)
    with pytest.raises(ValueError, match=r"portable_reset_gru: with reset_after=.* `bias` must "
                                         r"be"):
        portable_reset_gru(x, k, r, b[0] if reset_after else np.stack([b, b]),
                           reset_after=reset_after)


def test_portable_op_refusals():
    x, k, r, b = _problem(np.random.default_rng(0), 2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"`inputs` must be float32, float64, float16 or "
                                         r"bfloat16, got int32"):
        portable_reset_lstm(x.astype("int32"), k, r, b)
    with pytest.raises(ValueError, match=r"`inputs` must be rank 3 \[B, T, I\]"):
        portable_reset_lstm(x[0], k, r, b)
    with pytest.raises(ValueError, match=r"`resets` must be bool or 0/1 numbers, got string"):
        portable_reset_lstm(x, k, r, b, resets=np.full((2, 3), "a"))


# ------------------------------------------------------------------ layer semantics, in process
def _weights(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype("float32")
                       for w in model.get_weights()])
    return model


def rich_model(batch=None):
    """Embedding(mask_zero) -> Bidirectional(ResetLSTM, zero_output_for_mask) with resets ->
    ResetLSTM(go_backwards, last step) -> Dense: masks, both directions, backward resets."""
    tokens = keras.Input(batch_shape=(batch, None), dtype="int32", name="tokens")
    resets = keras.Input(batch_shape=(batch, None), dtype="bool", name="resets")
    h = keras.layers.Embedding(V, 5, mask_zero=True)(tokens)
    h = resetlstm.Bidirectional(ResetLSTM(6, return_sequences=True, zero_output_for_mask=True))(
        h, resets=resets)
    h = ResetLSTM(4, go_backwards=True, use_bias=False)(h, resets=resets)
    return _weights(keras.Model([tokens, resets], keras.layers.Dense(3)(h)), 7)


def rich_gru_model(batch=None):
    """rich_model's options on GRUs: Embedding(mask_zero) -> Bidirectional(ResetGRU of the
    reset-before form, zero_output_for_mask) with resets -> ResetGRU(go_backwards, no bias, last
    step) -> ResetLSTM -> Dense; both cells in one model."""
    tokens = keras.Input(batch_shape=(batch, None), dtype="int32", name="tokens")
    resets = keras.Input(batch_shape=(batch, None), dtype="bool", name="resets")
    h = keras.layers.Embedding(V, 5, mask_zero=True)(tokens)
    h = resetlstm.Bidirectional(ResetGRU(6, return_sequences=True, zero_output_for_mask=True,
                                         reset_after=False))(h, resets=resets)
    h = ResetGRU(4, go_backwards=True, use_bias=False, return_sequences=True)(h, resets=resets)
    h = ResetLSTM(3)(h, resets=resets)
    return _weights(keras.Model([tokens, resets], keras.layers.Dense(3)(h)), 9)


def state_model():
    """initial_state from model inputs, return_state, a non-default layer (no bias)."""
    x = keras.Input((None, 3), name="x")
    h0, c0 = keras.Input((5,), name="h0"), keras.Input((5,), name="c0")
    y, h, c = ResetLSTM(5, return_sequences=True, return_state=True)(x, initial_state=[h0, c0])
    return _weights(keras.Model([x, h0, c0], [keras.layers.Dense(2)(y), h, c]), 8)


def rich_data(rng, B=3, T=9):
    tokens = rng.integers(0, V, size=(B, T)).astype("int32")
    tokens[0, 3:5] = 0  # masked steps
    tokens[1, -2:] = 0
    return [tokens, rng.random((B, T)) < 0.25]


def lowered_call(model, inputs):
    with lowered(model):
        return tf.nest.map_structure(np.asarray, tf.function(
            lambda x: model(x, training=False), autograph=False)(inputs))


def test_every_layer_option_equals_the_fused_model():
    rng = np.random.default_rng(3)
    ours, _ = trained_pair()
    cases = [(ours, [rng.integers(0, V, (4, 11)).astype("int32"), rng.random((4, 11)) < 0.2]),
             (rich_model(), rich_data(rng)),
             (rich_gru_model(), rich_data(rng)),
             (trained_pair(cell="gru")[0], [rng.integers(0, V, (4, 11)).astype("int32"),
                                            rng.random((4, 11)) < 0.2]),
             (state_model(), [rng.normal(size=(2, 6, 3)).astype("float32"),
                              rng.normal(size=(2, 5)).astype("float32"),
                              rng.normal(size=(2, 5)).astype("float32")])]
    for model, inputs in cases:
        fused = tf.nest.map_structure(np.asarray, model(inputs))
        got = lowered_call(model, inputs)
        for a, e in zip(tf.nest.flatten(got), tf.nest.flatten(fused)):
            np.testing.assert_allclose(a, e, rtol=0, atol=ATOL)
    # the context restores the fused call
    assert all("call" not in vars(layer) for layer in reset_layers(ours))


def test_stateful_model_carries_its_state_like_the_fused_one():
    rng = np.random.default_rng(4)
    fused, _ = trained_pair(seed=4, stateful_batch=3, seq_len=5)
    portable, _ = trained_pair(seed=4, stateful_batch=3, seq_len=5)
    batches = [[rng.integers(0, V, (3, 5)).astype("int32"), rng.random((3, 5)) < 0.2]
               for _ in range(3)]
    with lowered(portable):
        call = tf.function(lambda x: portable(x, training=False), autograph=False)
        for batch in batches:
            np.testing.assert_allclose(call(batch), fused(batch), rtol=0, atol=ATOL)
    pairs = zip(reset_layers(fused), reset_layers(portable))
    for a, b in ((a, b) for x, y in pairs for a, b in zip(x.states, y.states)):
        assert np.abs(a.numpy()).max() > 0.1  # the state carried something
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("policy,tol", [("mixed_float16", 2e-3), ("mixed_bfloat16", 3e-2)])
def test_mixed_precision_is_lowered_in_float32(policy, tol):
    """Half policies: the arguments in the half type, float32 arithmetic and cell state, the
    results rounded (the CPU op's float16 path; its bf16 kernels round more, hence the bf16
    tolerance)."""
    x = np.random.default_rng(5).normal(size=(4, 12, 6)).astype("float32")
    layer = ResetLSTM(8, return_sequences=True, dtype=policy)
    model = keras.Sequential([keras.Input((None, 6)), layer])
    _weights(model, 5)
    got = lowered_call(model, x)
    assert got.dtype == layer.compute_dtype
    np.testing.assert_allclose(np.asarray(got, "float32"),
                               np.asarray(model(x), "float32"), rtol=0, atol=tol)


# ------------------------------------------------------------------ refusals
class SubModel(keras.Model):
    """A subclassed model: no model.inputs, so the exporters need an input signature."""

    def __init__(self):
        super().__init__()
        self.lstm = ResetLSTM(4, return_sequences=True)

    def call(self, inputs):
        x, resets = inputs
        return self.lstm(x, resets=resets)


def test_refusals_name_the_layer_and_the_alternative(tmp_path, monkeypatch):
    x = keras.Input((None, 3), name="x")
    plain = keras.Model(x, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="has no ResetLSTM or ResetGRU layer; export it with model.export"):
        export_portable(plain, tmp_path / "a")

    half = keras.Model(x, ResetLSTM(4, dtype="mixed_float16", name="half_lstm")(x))
    for export, runtime in ((export_litert, "LiteRT"), (export_onnx, "ONNX")):
        with pytest.raises(ValueError, match=rf"ResetLSTM 'half_lstm' computes in float16 "
                                             rf"\(dtype policy mixed_float16\); {runtime} "
                                             "export needs a float32 model"):
            export(half, tmp_path / "m")
    stateful, _ = trained_pair(stateful_batch=2, seq_len=3)
    name = reset_layers(stateful)[0].name
    for export, runtime in ((export_litert, "LiteRT"), (export_onnx, "ONNX")):
        with pytest.raises(ValueError, match=rf"ResetLSTM '{name}' is stateful .* Serve "
                                             rf"streams with resetlstm.StreamingModel"):
            export(stateful, tmp_path / "m")

    class DirectOp(keras.layers.Layer):  # calls the fused op itself, not through ResetLSTM
        def call(self, x):
            w = tf.ones([3, 16])
            return resetlstm.reset_lstm(x, w, tf.ones([4, 16]), tf.zeros([16]))[0]

    direct = keras.Model(x, DirectOp(name="direct_op")(ResetLSTM(3, return_sequences=True)(x)))
    with pytest.raises(ValueError, match=r"still holds resetlstm's custom op at "
                                         r"\['.*direct_op.*'\]: only ResetLSTM and ResetGRU layers "
                                         r"are lowered.*portable_reset_lstm"):
        export_portable(direct, tmp_path / "d")

    lstm = ResetLSTM(3, dropout=0.5, name="dropping")
    model = keras.Model(x, lstm(x))
    with lowered(model):
        with pytest.raises(ValueError, match="ResetLSTM 'dropping': the portable lowering is "
                                             "for inference"):
            model(np.zeros((1, 2, 3), "float32"), training=True)
        with pytest.raises(RuntimeError, match="ResetLSTM 'dropping' is already lowered"):
            with lowered(model):
                pass
    assert "call" not in vars(lstm)

    sub = SubModel()
    sub([np.zeros((1, 2, 3), "float32"), np.zeros((1, 2), bool)])
    with pytest.raises(ValueError, match="must be a built functional or Sequential Keras model "
                                         r"\(with model.inputs\); for a subclassed model pass "
                                         "`input_signature`"):
        export_portable(sub, tmp_path / "s")
    xf = keras.Input(batch_shape=(2, 4, 3), name="xf")
    fixed = keras.Model(xf, ResetLSTM(2)(xf))
    with pytest.raises(ValueError, match="model input 'xf' has a fixed batch size 2, received "
                                         "batch_size=5"):
        export_litert(fixed, tmp_path / "f.tflite", batch_size=5)

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="export_portable traces TensorFlow graphs; Keras runs "
                                         "on 'jax'"):
        export_portable(model, tmp_path / "j")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ImportError, match="export_onnx needs tf2onnx"):
        export_onnx(model, tmp_path / "o.onnx")


def test_subclassed_model_with_input_signature(tmp_path):
    sub = SubModel()
    x = np.random.default_rng(6).normal(size=(2, 5, 3)).astype("float32")
    resets = np.zeros((2, 5), bool)
    resets[:, 2] = True
    expected = np.asarray(sub([x, resets]))
    sig = [tf.TensorSpec([None, None, 3], name="x"), tf.TensorSpec([None, None], tf.bool,
                                                                    name="resets")]
    fn = portable_function(sub, input_signature=sig)
    np.testing.assert_allclose(fn(x, resets)["output_0"], expected, atol=ATOL)
    export_portable(sub, tmp_path / "sub", input_signature=sig)
    loaded = tf.saved_model.load(str(tmp_path / "sub"))
    np.testing.assert_allclose(loaded.serve([x, resets]), expected, atol=ATOL)


# ------------------------------------------------------------------ fresh processes
BLOCK = """
    import importlib.abc, sys
    BLOCKED = {blocked!r}
    class Block(importlib.abc.MetaPathFinder):  # these are not installed, as far as we know
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, Block())
    try:
        import resetlstm
        raise SystemExit("resetlstm is importable")
    except ModuleNotFoundError:
        pass
    import json
    import numpy as np
    d = sys.argv[1]
    manifest = json.load(open(f"{{d}}/manifest.json"))
    errors = {{}}
    def err(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape, (a.shape, b.shape)
        return float(np.abs(a - b).max()) if a.size else 0.0
    def replay(step, data, sizes):
        # explicit state (h, and c where the model has LSTMs): zeros, release = zero those
        # rows; every step's outputs
        slots = data["tokens"].shape[1]
        state = [np.zeros((slots, n), np.float32) for n in sizes if n]
        worst = 0.0
        for t in range(len(data["tokens"])):
            for s in state:
                s[data["release"][t]] = 0
            y, *state = step(data["tokens"][t], data["new"][t], *state)
            worst = max(worst, err(y, data["expected"][t]))
        return worst
"""

SAVED_MODEL_CHECK = BLOCK.format(blocked=("resetlstm",)) + """
    import tensorflow as tf
    for name, case in manifest["saved_model"].items():
        data = np.load(f"{d}/{name}.npz")
        loaded = tf.saved_model.load(f"{d}/{name}")
        if case == "streaming":
            sig, worst = loaded.signatures["step"], 0.0
            for t in range(len(data["tokens"])):
                if data["release"][t].any():
                    loaded.signatures["release"](slots=tf.constant(data["release"][t]))
                out = sig(inputs=tf.constant(data["tokens"][t]),
                          new_stream=tf.constant(data["new"][t]))
                worst = max(worst, err(out["output_0"], data["expected"][t]))
            errors[name] = worst
            continue
        inputs = [data[f"in{i}"] for i in range(case["inputs"])]
        inputs = inputs[0] if case["single"] else inputs
        worst = 0.0
        for call in range(case["calls"]):  # a stateful model carries its state
            got = tf.nest.flatten(loaded.serve(inputs))
            worst = max([worst] + [err(g, data[f"out{call}_{i}"]) for i, g in enumerate(got)])
        sig = loaded.signatures["serving_default"]
        assert not [op.type for op in sig.graph.get_operations()
                    if op.type.startswith(("ResetLSTM", "ResetGRU"))]
        errors[name] = worst
    print(json.dumps(errors))
"""

RUNTIME_CHECK = BLOCK.format(blocked=("resetlstm", "tensorflow", "keras")) + """
    for name, case in manifest["runtimes"].items():
        data = np.load(f"{d}/{name}.npz")
        if case["runtime"] == "litert":
            from ai_edge_litert.interpreter import Interpreter
            runner = Interpreter(model_path=f"{d}/{name}.tflite").get_signature_runner()
            def call(**feeds):
                out = runner(**feeds)
                return [out[k] for k in case["outputs"]]
        else:
            import onnxruntime as ort
            session = ort.InferenceSession(f"{d}/{name}.onnx",
                                           providers=["CPUExecutionProvider"])
            def call(**feeds):
                return session.run(case["outputs"], feeds)
        if case["kind"] == "streaming":
            def step(x, new, *state):
                return call(inputs=x, new_stream=new, **dict(zip("hc", state)))
            errors[name] = replay(step, data, (case["state_size"], case["cell_state_size"]))
        else:  # whole sequences, two lengths (the time axis is dynamic)
            errors[name] = max(err(call(tokens=data[f"tokens{k}"], resets=data[f"resets{k}"])[0],
                                   data[f"expected{k}"]) for k in range(2))
    assert "tensorflow" not in sys.modules
    print(json.dumps(errors))
"""


def run_fresh(script, directory, manifest):
    """Writes `manifest` and runs `script` in a fresh interpreter, where resetlstm's source is
    not on the path (and the script blocks the import anyway, in case it is installed); checks
    that every case of the manifest agrees with the fused model to ATOL."""
    (directory / "manifest.json").write_text(json.dumps(manifest))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(directory)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=directory)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}"
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    print("max |runtime - fused|:", errors)
    (cases,) = manifest.values()
    assert set(errors) == set(cases)
    for name, e in errors.items():
        assert e <= ATOL, (name, e)


class Recorder:
    """Stands in for a StreamingModel in test_streaming.serve: passes the calls on and records
    the schedule (tokens, new streams, slots released before each step) and the fused
    outputs."""

    def __init__(self, server):
        self.server, self.slots = server, server.slots
        self.log = {"tokens": [], "new": [], "release": [], "expected": []}
        self._pending = np.zeros(self.slots, bool)

    def step(self, tokens, new):
        out = np.asarray(self.server.step(tokens, new))
        for key, value in zip(self.log, (tokens, new, self._pending, out)):
            self.log[key].append(np.array(value))
        self._pending = np.zeros(self.slots, bool)
        return out

    def release(self, slots):
        self._pending[slots] = True
        self.server.release(slots)

    def serve(self, seed):
        """K streams of random lengths join the slots at random steps and leave (some
        released)."""
        rng = np.random.default_rng(seed)
        streams = [rng.integers(0, V, size=n) for n in rng.integers(1, 12, size=10)]
        _, steps = serve(self, streams, rng)
        assert steps < sum(len(s) for s in streams)  # the slots were shared
        assert np.stack(self.log["release"]).any() and np.stack(self.log["new"])[1:].any()
        return self

    def save(self, path):
        np.savez(path, **{key: np.stack(value) for key, value in self.log.items()})


def test_saved_models_run_without_resetlstm(tmp_path):
    rng = np.random.default_rng(10)
    ours, _ = trained_pair(seed=10)
    sub_stateful, _ = trained_pair(seed=11, stateful_batch=3, seq_len=4)
    cases = {"lm": (ours, [rng.integers(0, V, (4, 11)).astype("int32"),
                           rng.random((4, 11)) < 0.2], 1),
             "rich": (rich_model(), rich_data(rng), 1),
             "rich_gru": (rich_gru_model(), rich_data(rng), 1),
             "state_io": (state_model(), [rng.normal(size=(2, 6, 3)).astype("float32"),
                                          rng.normal(size=(2, 5)).astype("float32"),
                                          rng.normal(size=(2, 5)).astype("float32")], 1),
             "stateful": (sub_stateful, [rng.integers(0, V, (3, 4)).astype("int32"),
                                         rng.random((3, 4)) < 0.3], 2)}
    manifest = {"saved_model": {}}
    for name, (model, inputs, calls) in cases.items():
        export_portable(model, tmp_path / name)  # a stateful model: its state as of now
        arrays = {f"in{i}": a for i, a in enumerate(inputs)}
        for call in range(calls):
            outs = tf.nest.flatten(model.predict_on_batch(inputs))
            arrays.update({f"out{call}_{i}": np.asarray(y) for i, y in enumerate(outs)})
        np.savez(tmp_path / f"{name}.npz", **arrays)
        manifest["saved_model"][name] = dict(inputs=len(inputs), single=False, calls=calls)
    recorder = Recorder(StreamingModel(ours, slots=3))
    recorder.server.export(tmp_path / "streaming", portable=True)  # all slots zero
    recorder.serve(seed=12).save(tmp_path / "streaming.npz")
    manifest["saved_model"]["streaming"] = "streaming"
    recorder = Recorder(StreamingModel(trained_pair(seed=13, cell="mixed")[0], slots=3))
    recorder.server.export(tmp_path / "streaming_mixed", portable=True)
    recorder.serve(seed=14).save(tmp_path / "streaming_mixed.npz")
    manifest["saved_model"]["streaming_mixed"] = "streaming"
    run_fresh(SAVED_MODEL_CHECK, tmp_path, manifest)


@pytest.mark.skipif(not (HAVE_LITERT and HAVE_ONNX),
                    reason="needs ai-edge-litert, tf2onnx and onnxruntime (the deploy extra)")
def test_litert_and_onnx_run_without_resetlstm_or_tensorflow(tmp_path):
    rng = np.random.default_rng(20)
    B = 3
    runtimes = {}
    # streaming steps: LSTMs (h and c), GRUs only (h alone), a GRU and an LSTM (h wider than c)
    for seed, cell in ((20, "lstm"), (22, "gru"), (24, "mixed")):
        recorder = Recorder(StreamingModel(trained_pair(seed=seed, cell=cell)[0], slots=4))
        recorder.serve(seed=seed + 1)
        server = recorder.server
        assert (server.cell_state_size == 0) == (cell == "gru")
        outputs = ["output_0", "h_next"] + (["c_next"] if server.cell_state_size else [])
        for runtime, export in (("litert", export_litert), ("onnx", export_onnx)):
            name = f"stream_{cell}_{runtime}"
            recorder.save(tmp_path / f"{name}.npz")
            export(server, tmp_path / f"{name}.{'tflite' if runtime == 'litert' else 'onnx'}")
            runtimes[name] = dict(kind="streaming", outputs=outputs, runtime=runtime,
                                  state_size=server.state_size,
                                  cell_state_size=server.cell_state_size)
    for label, rich in (("seq", rich_model()), ("seq_gru", rich_gru_model())):
        arrays = {}
        for k, T in enumerate((9, 4)):
            arrays[f"tokens{k}"], arrays[f"resets{k}"] = rich_data(rng, B, T)
            arrays[f"expected{k}"] = np.asarray(rich([arrays[f"tokens{k}"],
                                                      arrays[f"resets{k}"]]))
        np.savez(tmp_path / f"{label}_litert.npz", **arrays)
        np.savez(tmp_path / f"{label}_onnx.npz", **arrays)
        export_litert(rich, tmp_path / f"{label}_litert.tflite", batch_size=B)
        export_onnx(rich, tmp_path / f"{label}_onnx.onnx")
        for runtime in ("litert", "onnx"):
            runtimes[f"{label}_{runtime}"] = dict(kind="sequence", outputs=["output_0"],
                                                  runtime=runtime)
    run_fresh(RUNTIME_CHECK, tmp_path, {"runtimes": runtimes})
