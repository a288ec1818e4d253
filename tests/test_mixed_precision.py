"""float16 / bfloat16: the op (widened: the float32 kernel's results on the rounded arguments,
rounded once; bfloat16 on a CPU with AVX512-BF16 runs the bf16 kernels, see test_bf16.py), its
accuracy against float32, and the Keras mixed-precision policies (layer, Bidirectional, training
with the demo)."""
import numpy as np
import pytest

import keras
import tensorflow as tf

import resetlstm
from resetlstm import demo
from resetlstm.keras import ResetLSTM

from conftest import DIFF_NAMES, make_problem, run_reset_lstm

HALF = ["float16", "bfloat16"]


def as_dtype(p, dtype):
    """The problem's float arrays in `dtype` (flags untouched)."""
    out = dict(p)
    for name in DIFF_NAMES + ("dropout", "d_outputs", "d_h", "d_c"):
        if p.get(name) is not None:
            out[name] = np.asarray(tf.cast(p[name], dtype))
    return out


def run(p, mode="eager"):
    outs, grads, _ = run_reset_lstm(mode, p["inputs"], p["kernel"], p["recurrent_kernel"],
                                    p["bias"], resets=p["resets"], h0=p["h0"], c0=p["c0"],
                                    mask=p["mask"], d_outputs=p["d_outputs"], d_h=p["d_h"],
                                    d_c=p["d_c"], dropout=p["dropout"])
    return outs, grads


def f32(a):
    return np.asarray(tf.cast(a, tf.float32))


@pytest.fixture
def widened_bf16(monkeypatch):
    """bfloat16 through the float32 kernels (what reset_lstm does without AVX512-BF16 or with
    a GPU; tests/test_bf16.py covers the bf16 kernels)."""
    monkeypatch.setattr(resetlstm.tf.ops, "_NATIVE_BF16", False)


@pytest.mark.parametrize("half", HALF)
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_half_op_is_the_float32_kernel_rounded_once(half, mode, widened_bf16):
    """Widened half arguments (float16 always, bfloat16 where the bf16 kernels are not used):
    the float32 kernel runs, results are rounded back: the outputs and every gradient are
    bit-identical to the float32 op on the widened arguments, rounded to the half type, and
    come back in the arguments' dtype."""
    p = make_problem(1, 5, 9, 6, 7, np.float32, resets=True, state=True, mask=True,
                     dropout=True)
    ph = as_dtype(p, half)
    (y, h, c), grads = run(ph, mode)
    (y32, h32, c32), grads32 = run(as_dtype(ph, "float32"), mode)
    for name, got, want in (("outputs", y, y32), ("h", h, h32), ("c", c, c32)):
        assert tf.as_dtype(got.dtype).name == half, name
        np.testing.assert_array_equal(f32(got), f32(tf.cast(want, half)), err_msg=name)
    for name in DIFF_NAMES:
        assert tf.as_dtype(grads[name].dtype).name == half, name
        np.testing.assert_array_equal(f32(grads[name]), f32(tf.cast(grads32[name], half)),
                                      err_msg="d_" + name)


# Accuracy against the float32 op at (B, T, I, H) = (64, 50, 128, 128), Keras-like weights (glorot
# kernel, orthogonal recurrent kernel, forget bias 1), random resets and initial state: the
# largest error of each result relative to its largest magnitude. Measured on an AMD EPYC (Zen 5,
# 2 cores): float16 <= 6.0e-4 (widened: about one rounding of the arguments and the result,
# half-ulp 4.9e-4), bfloat16 <= 4.4e-3 widened and <= 6.5e-3 in the bf16 kernels (which also round
# h before each recurrent matmul and the saved activations; half-ulp 3.9e-3), not an error growing
# over the 50 steps.
ACCURACY_BOUND = {"float16": 1e-3, "bfloat16": 8e-3}


def keras_like_problem(seed, B, T, I, H):
    p = make_problem(seed, B, T, I, H, np.float32, resets=True, state=True, upstream=("outputs",))
    rng = np.random.default_rng(seed)
    p["kernel"] = (rng.uniform(-1, 1, (I, 4 * H)) * np.sqrt(6 / (I + 4 * H))).astype(np.float32)
    p["recurrent_kernel"] = np.linalg.qr(rng.normal(size=(4 * H, H)))[0].T.astype(np.float32)
    p["bias"] = np.zeros(4 * H, np.float32)
    p["bias"][H:2 * H] = 1.0
    return p


@pytest.mark.parametrize("half", HALF)
def test_half_accuracy_against_float32(half):
    p = keras_like_problem(0, 64, 50, 128, 128)
    (y, h, c), grads = run(as_dtype(p, half))
    (y32, h32, c32), grads32 = run(p)
    errors = {}
    for name, got, want in [("outputs", y, y32), ("h", h, h32), ("c", c, c32)] + \
            [("d_" + n, grads[n], grads32[n]) for n in DIFF_NAMES]:
        want = f32(want)
        errors[name] = float(np.abs(f32(got) - want).max() / np.abs(want).max())
    print(half, {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < ACCURACY_BOUND[half], errors
    assert min(errors.values()) > 0  # the half path is really half at the boundary


def test_dtype_errors_name_the_argument():
    x = np.zeros((2, 3, 4), np.float32)
    k, r, b = np.zeros((4, 8)), np.zeros((2, 8)), np.zeros(8)
    cast = lambda a, d: tf.cast(a, d)  # noqa: E731
    with pytest.raises(ValueError, match=r"`kernel` has dtype float16 but `inputs` has float32"):
        resetlstm.reset_lstm(x, cast(k, "float16"), cast(r, "float32"), cast(b, "float32"))
    with pytest.raises(ValueError, match=r"`recurrent_kernel` has dtype float16 but `inputs` has "
                                         r"bfloat16"):
        resetlstm.reset_lstm(cast(x, "bfloat16"), cast(k, "bfloat16"), cast(r, "float16"),
                             cast(b, "bfloat16"))
    with pytest.raises(ValueError, match=r"`recurrent_dropout_mask` has dtype float64 but "
                                         r"`inputs` has float16"):
        resetlstm.reset_lstm(cast(x, "float16"), cast(k, "float16"), cast(r, "float16"),
                             cast(b, "float16"), recurrent_dropout_mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"`inputs` must be float32, float64, float16 or "
                                         r"bfloat16, got int32"):
        resetlstm.reset_lstm(tf.zeros([2, 3, 4], tf.int32), k, r, b)


# ------------------------------------------------------------------ where half types run

class FakeDevice:
    def __init__(self, device):
        self.device = device


GPU_PROBE = FakeDevice("/job:localhost/replica:0/task:0/device:GPU:0")  # eager, on a GPU
GRAPH_PROBE = FakeDevice("")                                          # tf.function, no scope
CPU_PROBE = FakeDevice("/device:CPU:0")                               # pinned to the CPU


@pytest.mark.parametrize("gpu_half, cpu_bf16, probe, native", [
    # Ampere+ GPU: both half types native on it, widened only when the op is pinned to the CPU
    ({"float16", "bfloat16"}, False, GPU_PROBE, {"float16", "bfloat16"}),
    ({"float16", "bfloat16"}, False, GRAPH_PROBE, {"float16", "bfloat16"}),
    ({"float16", "bfloat16"}, False, CPU_PROBE, set()),
    ({"float16", "bfloat16"}, True, CPU_PROBE, {"bfloat16"}),
    # pre-Ampere GPU: bfloat16 widened on it
    ({"float16"}, True, GPU_PROBE, {"float16"}),
    # no GPU (or a CPU-only build): bfloat16 native with AVX512-BF16 only, float16 never
    (set(), True, GPU_PROBE, {"bfloat16"}),
    (set(), False, GRAPH_PROBE, set()),
], ids=["ampere-eager", "ampere-graph", "ampere-pinned-cpu", "ampere-pinned-bf16-cpu",
        "turing", "cpu-bf16", "cpu-plain"])
def test_which_half_types_run_natively(gpu_half, cpu_bf16, probe, native, monkeypatch):
    monkeypatch.setattr(resetlstm.tf.ops, "_GPU_HALF", frozenset(gpu_half))
    monkeypatch.setattr(resetlstm.tf.ops, "_NATIVE_BF16", cpu_bf16)
    got = {name for name in HALF if resetlstm.tf.ops._runs_natively(tf.as_dtype(name), probe)}
    assert got == native
    assert resetlstm.tf.ops._runs_natively(tf.float32, CPU_PROBE)


@pytest.mark.parametrize("cuda_build, capabilities, expected", [
    (True, [(9, 0)], {"float16", "bfloat16"}),
    (True, [(8, 0), (7, 5)], {"float16"}),  # every GPU must take bfloat16
    (True, [], set()),
    (False, [(9, 0)], set()),               # a CPU-only build never places the op on a GPU
])
def test_gpu_half_dtypes_from_the_devices(cuda_build, capabilities, expected, monkeypatch):
    """_gpu_half_dtypes() reads the physical GPUs' compute capabilities (faked here: no machine
    of this project's CI has a GPU) and build_info() reports the result."""
    gpus = [f"GPU:{i}" for i in range(len(capabilities))]
    monkeypatch.setattr(resetlstm.tf.ops, "_GPU_HALF", None)
    monkeypatch.setattr(resetlstm.tf.ops._build_info, "CUDA", cuda_build)
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: list(gpus) if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda d: {"compute_capability": capabilities[gpus.index(d)]})
    assert resetlstm.tf.ops._gpu_half_dtypes() == expected
    info = resetlstm.build_info()
    assert info["gpu_half"] == {"float16": "float16" in expected,
                                "bfloat16": "bfloat16" in expected}
    if expected:
        assert info["bf16"]["native"] == ("bfloat16" in expected)


def op_dtype(fn, dtype):
    """The T of the ResetLSTM node that tracing fn on [2, 3, 4] `dtype` inputs creates."""
    spec = tf.TensorSpec([2, 3, 4], dtype)
    graph = tf.function(fn).get_concrete_function(spec).graph
    (node,) = [op for op in graph.get_operations() if op.type == "ResetLSTM"]
    return node.get_attr("T")


def test_the_op_gets_half_arguments_where_it_runs_them(monkeypatch):
    """Through reset_lstm itself (traced, since no GPU runs it here): with a GPU that runs
    float16 the op node is float16, unless the caller pins the CPU, where it is float32."""
    monkeypatch.setattr(resetlstm.tf.ops, "_GPU_HALF", frozenset({"float16"}))
    weights = [tf.zeros([4, 8], tf.float16), tf.zeros([2, 8], tf.float16),
               tf.zeros([8], tf.float16)]

    def anywhere(x):
        return resetlstm.reset_lstm(x, *weights)[0]

    def on_cpu(x):
        with tf.device("/CPU:0"):
            return resetlstm.reset_lstm(x, *weights)[0]

    assert op_dtype(anywhere, tf.float16) == tf.float16
    assert op_dtype(on_cpu, tf.float16) == tf.float32


# ------------------------------------------------------------------ Keras policies

@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_layer_under_mixed_precision_policy(policy):
    """Outputs and states in the compute dtype, float32 weights and weight gradients, results
    within the half type's rounding of the float32 layer, and closer to it than
    keras.layers.LSTM under the same policy (which keeps its state and accumulates in the half
    type)."""
    half = policy.split("_")[1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 40, 24)).astype(np.float32)
    resets = rng.random((16, 40)) < 0.1
    base = ResetLSTM(32, return_sequences=True, return_state=True)
    base.build(x.shape)

    def twin(cls):
        layer = cls(32, return_sequences=True, return_state=True, dtype=policy)
        layer.build(x.shape)
        layer.set_weights(base.get_weights())
        return layer

    layer = twin(ResetLSTM)
    assert all(w.dtype == "float32" for w in layer.weights)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        out = layer(xt, resets=resets)
        loss = tf.reduce_sum(tf.cast(out[0], tf.float32) ** 2)
    assert all(o.dtype == half for o in out)
    assert all(g.dtype == tf.float32 for g in tape.gradient(loss, layer.trainable_weights))
    err = max(float(np.abs(f32(a) - np.asarray(b)).max())
              for a, b in zip(out, base(x, resets=resets)))
    # against keras.layers.LSTM under the same policy (no resets: keras has none)
    want = [np.asarray(a) for a in base(x)]
    err_ours = max(float(np.abs(f32(a) - b).max()) for a, b in zip(layer(x), want))
    err_stock = max(float(np.abs(f32(a) - b).max()) for a, b in zip(twin(keras.layers.LSTM)(x),
                                                                      want))
    print(policy, f"ResetLSTM {err:.1e} / {err_ours:.1e}, keras.layers.LSTM {err_stock:.1e}")
    assert err < ACCURACY_BOUND[half] and err_ours < ACCURACY_BOUND[half]
    assert err_ours < err_stock


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_bidirectional_and_stateful_under_mixed_precision(policy):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 10, 3)).astype(np.float32)
    resets = rng.random((4, 10)) < 0.2
    bi = resetlstm.Bidirectional(ResetLSTM(6, return_sequences=True, recurrent_dropout=0.2),
                                 dtype=policy)
    y = bi(x, resets=resets, training=True)
    assert y.dtype == policy.split("_")[1] and y.shape == (4, 10, 12)
    stream = ResetLSTM(6, stateful=True, dtype=policy)
    stream.build((4, 10, 3))
    first = stream(x, resets=resets)
    assert stream.states[0].dtype == "float32" and first.dtype == policy.split("_")[1]
    assert np.abs(np.asarray(stream.states[1])).max() > 0


@pytest.fixture(scope="module")
def demo_runs():
    runs = {}
    for policy in ("float32", "mixed_bfloat16"):
        runs[policy] = demo.main(["--quick", "--verbose", "0", "--seed", "2",
                                  "--dtype-policy", policy])
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored
    return runs


def test_fit_under_mixed_bfloat16_reaches_the_float32_loss(demo_runs):
    """The demo's --quick training run under mixed_bfloat16: final training loss (mean of the
    last 10% of steps) and validation bits per character within 2% of float32."""
    f, b = demo_runs["float32"]["resetlstm"], demo_runs["mixed_bfloat16"]["resetlstm"]
    print("float32", f["loss"], f["val_bpc"], "mixed_bfloat16", b["loss"], b["val_bpc"])
    assert b["loss"] == pytest.approx(f["loss"], rel=0.02)
    assert b["val_bpc"] == pytest.approx(f["val_bpc"], rel=0.02)
    assert f["loss"] < 4.0  # trained (uniform over 256 bytes is 5.5 nats)
