"""Every argument check of _native.forward_cuda / backward_cuda, on any machine: the bindings
validate kind, device, dtype, shape and contiguity from the DLPack metadata before anything needs
a GPU, so fake CUDA arrays (tests/fake_dlpack.py) exercise them here. Calls that pass validation
reach the launch step, which on a machine without a GPU raises "CUDA is not available"; those are
skipped where a GPU is present (they would launch on fake pointers; test_gpu.py covers that)."""
import numpy as np
import pytest

from fake_dlpack import FakeCudaArray, fake, kDLCPU, lstm_args

from resetlstm import _native as nat

if "without CUDA" in nat.cuda_unavailable_reason():
    pytest.skip("this build has no CUDA path", allow_module_level=True)

no_gpu = pytest.mark.skipif(nat.cuda_available(), reason="passes validation: would launch on "
                                                         "fake pointers (test_gpu.py covers it)")
NOT_AVAILABLE = r"CUDA is not available"


def forward(*args, **kw):
    kw.setdefault("stream", 0)
    return nat.forward_cuda(*args, **kw)


def backward(x, k, r, b, saved=None, **kw):
    """backward_cuda with forward-shaped saved tensors (overridable by name)."""
    B, T, I = x.shape
    H = r.shape[0]
    args = dict(resets=None, mask=None, h0=None, c0=None, outputs=fake((B, T, H)),
                gates=fake((B, T, 4 * H)), cell_states=fake((B, T, H)), d_outputs=None,
                d_h=None, d_c=None)
    args.update(saved or {})
    kw.setdefault("stream", 0)
    return nat.backward_cuda(x, k, r, b, *args.values(), **kw)


@no_gpu
def test_valid_call_passes_validation_and_stops_at_the_launch():
    x, k, r, b = lstm_args()
    with pytest.raises(RuntimeError, match=NOT_AVAILABLE):
        forward(x, k, r, b, resets=fake((2, 3), "bool"), mask=fake((2, 3), "bool"),
                h0=fake((2, 2)), c0=fake((2, 2)), recurrent_dropout_mask=fake((2, 2)))
    with pytest.raises(RuntimeError, match=NOT_AVAILABLE):
        backward(x, k, r, b)
    # the caller's stream reached every array's __dlpack__ (0, the legacy stream, is spelled 1)
    assert x.streams and set(x.streams) == {1}


@pytest.mark.parametrize("which, bad, message", [
    ("recurrent_kernel", fake((3, 8)), r"`recurrent_kernel` must have shape \[H, 4H\] = \[2, 8\] "
                                       r"\(H from `kernel` \[4, 8\]\), got \[3, 8\]"),
    ("kernel", fake((5, 8)), r"`kernel` must have shape \[I, 4H\] with I = 4 .* got \[5, 8\]"),
    ("bias", fake((9,)), r"`bias` must have shape \[4H\] = \[8\], got \[9\]"),
    ("inputs", fake((2, 3)), r"`inputs` must be rank 3 \[B, T, I\], got shape \[2, 3\] \(rank 2\)"),
], ids=lambda v: v if isinstance(v, str) and " " not in v else None)
def test_shape_errors_name_argument_and_numbers(which, bad, message):
    args = dict(zip(("inputs", "kernel", "recurrent_kernel", "bias"), lstm_args()))
    args[which] = bad
    with pytest.raises(ValueError, match=message):
        forward(*args.values())


@pytest.mark.parametrize("kw, message", [
    (dict(resets=fake((9, 3), "bool")), r"`resets` must have shape \[B, T\] = \[2, 3\].* got \[9, 3\]"),
    (dict(mask=fake((2, 7), "bool")), r"`mask` must have shape \[B, T\] = \[2, 3\].* got \[2, 7\]"),
    (dict(h0=fake((2, 5)), c0=fake((2, 2))), r"`initial_state\[0\] \(h\)` must have shape \[B, H\] "
                                             r"= \[2, 2\], got \[2, 5\]"),
    (dict(h0=fake((2, 2))), r"`initial_state` needs both h0 and c0"),
    (dict(recurrent_dropout_mask=fake((2, 3))), r"`recurrent_dropout_mask` must have shape "
                                                r"\[B, H\] = \[2, 2\], got \[2, 3\]"),
], ids=["resets", "mask", "h0", "h0_alone", "dropout_mask"])
def test_optional_argument_shape_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        forward(*lstm_args(), **kw)


@pytest.mark.parametrize("name", ["outputs", "gates", "cell_states", "d_outputs", "d_h", "d_c"])
def test_backward_rejects_tensors_not_from_this_forward(name):
    x, k, r, b = lstm_args()
    wrong = fake((2, 2, 8)) if name == "gates" else fake((2, 2, 2)) if name in (
        "outputs", "cell_states", "d_outputs") else fake((1, 2))
    with pytest.raises(ValueError, match=rf"`{name}` has the wrong shape \(\[[0-9, ]+\], expected "
                                         r"\[[0-9, ]+\]\)"):
        backward(x, k, r, b, {name: wrong})
    # the saved activations of an inference forward (empty) are refused by name
    with pytest.raises(ValueError, match=r"`gates` has the wrong shape \(\[0\]"):
        backward(x, k, r, b, {"gates": fake((0,)), "cell_states": fake((0,))})


def test_dtype_errors():
    x, k, r, b = lstm_args()
    with pytest.raises(ValueError, match=r"`kernel` has dtype float64 but `inputs` has float32"):
        forward(x, fake((4, 8), "float64"), r, b)
    with pytest.raises(ValueError, match=r"`inputs` must be float32, float64, float16 or "
                                         r"bfloat16, got int32"):
        forward(*lstm_args(dtype="int32"))
    with pytest.raises(ValueError, match=r"`bias` has dtype float16 but `inputs` has bfloat16"):
        forward(*lstm_args(dtype="bfloat16")[:3], fake((8,), "float16"))
    with pytest.raises(ValueError, match=r"`resets` must be a bool array, got float32"):
        forward(x, k, r, b, resets=fake((2, 3)))
    with pytest.raises(ValueError, match=r"`mask` must be a bool array, got int32"):
        forward(x, k, r, b, mask=fake((2, 3), "int32"))
    with pytest.raises(ValueError, match=r"`recurrent_dropout_mask` has dtype float64"):
        forward(x, k, r, b, recurrent_dropout_mask=fake((2, 2), "float64"))
    with pytest.raises(ValueError, match=r"`d_h` has dtype float64 but `inputs` has float32"):
        backward(x, k, r, b, {"d_h": fake((2, 2), "float64")})


def test_device_errors():
    x, k, r, b = lstm_args()
    with pytest.raises(ValueError, match=r"`bias` is on CUDA device 1 but `inputs` on device 0"):
        forward(x, k, r, FakeCudaArray((8,), device=(2, 1)))
    with pytest.raises(ValueError, match=r"`recurrent_kernel` is not in CUDA device memory "
                                         r"\(DLPack device type 1\)"):
        forward(x, k, FakeCudaArray((2, 8), device=(kDLCPU, 0)), b)
    with pytest.raises(ValueError, match=r"`kernel` is not in CUDA device memory"):
        forward(x, np.zeros((4, 8), np.float32), r, b)  # numpy speaks DLPack, from the CPU
    with pytest.raises(TypeError, match=r"`inputs` must be a CUDA array .*got list"):
        forward([[[0.0]]], k, r, b)


def test_non_contiguous_is_refused_by_name():
    x, k, r, b = lstm_args()
    transposed = FakeCudaArray((2, 3, 4), strides=(4, 8, 1))
    with pytest.raises(ValueError, match=r"`inputs` must be C-contiguous"):
        forward(transposed, k, r, b)
    with pytest.raises(ValueError, match=r"`kernel` must be C-contiguous"):
        forward(x, FakeCudaArray((4, 8), strides=(1, 4)), r, b)


@no_gpu
@pytest.mark.parametrize("shape, strides", [
    ((0, 3, 4), (7, 9, 11)),     # B = 0 with arbitrary strides
    ((2, 0, 4), (0, 0, 0)),      # T = 0
    ((2, 3, 0), (5, 5, 5)),      # I = 0
    ((1, 3, 4), (999, 4, 1)),    # size-1 dimension: its stride does not matter
    ((2, 1, 4), (4, 123, 1)),
    ((2, 3, 4), None),           # no strides: compact
], ids=["B0", "T0", "I0", "B1", "T1", "compact"])
def test_empty_and_size_one_dimensions_count_as_contiguous(shape, strides):
    B, T, I = shape
    x = FakeCudaArray(shape, strides=strides)
    with pytest.raises(RuntimeError, match=NOT_AVAILABLE):
        forward(x, fake((I, 8)), fake((2, 8)), fake((8,)), resets=fake((B, T), "bool"))


@no_gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_dtypes_pass_validation(dtype):
    """float16 and bfloat16 arrays are accepted by both directions (every float argument in the
    same half type) and reach the launch."""
    x, k, r, b = lstm_args(dtype=dtype)
    with pytest.raises(RuntimeError, match=NOT_AVAILABLE):
        forward(x, k, r, b, resets=fake((2, 3), "bool"), h0=fake((2, 2), dtype),
                c0=fake((2, 2), dtype), recurrent_dropout_mask=fake((2, 2), dtype))
    saved = {name: fake(shape, dtype) for name, shape in
             (("outputs", (2, 3, 2)), ("gates", (2, 3, 8)), ("cell_states", (2, 3, 2)),
              ("d_outputs", (2, 3, 2)), ("d_h", (2, 2)))}
    with pytest.raises(RuntimeError, match=NOT_AVAILABLE):
        backward(x, k, r, b, saved)
    with pytest.raises(ValueError, match=rf"`gates` has dtype float32 but `inputs` has {dtype}"):
        backward(x, k, r, b, dict(saved, gates=fake((2, 3, 8))))


@pytest.mark.parametrize("dtype, major, minor, supported", [
    ("float16", 7, 5, True), ("float32", 7, 5, True), ("float64", 7, 5, True),
    ("bfloat16", 7, 5, False), ("bfloat16", 8, 0, True), ("bfloat16", 9, 0, True),
    ("bfloat16", 12, 0, True),
])
def test_dtype_support_per_architecture(dtype, major, minor, supported):
    """What the CUDA kernels refuse before launching (bfloat16 below compute capability 8.0),
    with a message that names the dtype, the requirement and the device's capability."""
    why = nat.cuda_dtype_unsupported_reason(dtype, major, minor)
    if supported:
        assert why == ""
    else:
        assert why == ("bfloat16 needs an NVIDIA GPU of compute capability 8.0 or newer "
                       f"(Ampere: bf16 tensor cores); this one is {major}.{minor}: use float16 "
                       "or float32")
    assert "unknown dtype 'int8'" in nat.cuda_dtype_unsupported_reason("int8", 9, 0)
