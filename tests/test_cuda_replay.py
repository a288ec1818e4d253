"""The CUDA launch sequence (tests/cuda_replay.py, a kernel-by-kernel numpy mirror of
recurrence_cuda_forward.cu / recurrence_cuda_backward.cu) against the CPU kernels: every flag combination,
both layouts, recurrent dropout, empty dimensions. The CUDA code itself runs in test_gpu.py on a
machine with a GPU."""
import itertools

import numpy as np
import pytest

import cuda_replay
from conftest import make_problem

FLAGS = list(itertools.product([False, True], repeat=4))


def native():
    from resetlstm import _native
    return _native


def layout(a, time_major):
    return None if a is None or not time_major else np.ascontiguousarray(np.swapaxes(a, 0, 1))


def cpu_run(p, time_major):
    """The CPU kernels (_native.forward then backward) in the given layout."""
    tm = lambda a: layout(a, time_major) if time_major else a  # noqa: E731
    x, r, m, dy = tm(p["inputs"]), tm(p["resets"]), tm(p["mask"]), tm(p["d_outputs"])
    args = (x, p["kernel"], p["recurrent_kernel"], p["bias"])
    fwd = native().forward(*args, resets=r, mask=m, h0=p["h0"], c0=p["c0"],
                           time_major=time_major, recurrent_dropout_mask=p["dropout"])
    bwd = native().backward(*args, r, m, p["h0"], p["c0"], fwd[0], fwd[3], fwd[4], dy, p["d_h"],
                            p["d_c"], time_major=time_major, recurrent_dropout_mask=p["dropout"])
    return fwd, bwd


def run_both(p, time_major):
    return cpu_run(p, time_major), cuda_replay.forward_backward(p, time_major)


def compare(cpu, gpu, tol):
    names = ["outputs", "h", "c", "gates", "cells", "d_inputs", "d_kernel",
             "d_recurrent_kernel", "d_bias", "d_h0", "d_c0"]
    for name, a, b in zip(names, list(cpu[0]) + list(cpu[1]), list(gpu[0]) + list(gpu[1])):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        scale = max(1.0, float(np.abs(a).max())) if a.size else 1.0
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol * scale, err_msg=name)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("resets, mask, state, dropout", FLAGS,
                         ids=["".join(n for n, on in zip("RMSD", f) if on) or "plain"
                              for f in FLAGS])
def test_cuda_sequence_matches_cpu_kernel(resets, mask, state, dropout, time_major):
    p = make_problem(900 + 16 * time_major + 8 * resets + 4 * mask + 2 * state + dropout,
                     5, 7, 4, 6, np.float64, resets=resets, mask=mask, state=state,
                     dropout=dropout)
    cpu, gpu = run_both(p, time_major)
    compare(cpu, gpu, 1e-12)


@pytest.mark.parametrize("upstream", [("outputs",), ("h",), ("c",), ()], ids=lambda u: "+".join(u)
                         or "none")
def test_cuda_sequence_single_upstream(upstream):
    p = make_problem(950, 4, 6, 3, 5, np.float64, resets=True, mask=True, state=True,
                     dropout=True, upstream=upstream)
    cpu, gpu = run_both(p, False)
    compare(cpu, gpu, 1e-12)


@pytest.mark.parametrize("shape", [(3, 0, 4, 5), (0, 4, 3, 2), (2, 3, 0, 4), (1, 1, 1, 1)],
                         ids=["T0", "B0", "I0", "1x1x1x1"])
def test_cuda_sequence_empty_and_tiny(shape):
    B, T, I, H = shape
    p = make_problem(960, B, T, I, H, np.float64, resets=True, mask=True, state=True,
                     dropout=True)
    cpu, gpu = run_both(p, False)
    compare(cpu, gpu, 1e-12)


def test_cuda_sequence_float32():
    p = make_problem(970, 8, 12, 16, 16, np.float32, resets=True, mask=True, state=True,
                     dropout=True)
    cpu, gpu = run_both(p, True)
    compare(cpu, gpu, 2e-5)


# ---- half storage types ----------------------------------------------------------------------

def half_problem(p, dtype):
    """The problem's float arrays rounded to `dtype` (an ml_dtypes/numpy half type), and the
    same values as float32 for the replay."""
    rounded = {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
               for k, v in p.items()}
    as_f32 = {k: v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == dtype else v
              for k, v in rounded.items()}
    return rounded, as_f32


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("resets, mask, state, dropout", FLAGS,
                         ids=["".join(n for n, on in zip("RMSD", f) if on) or "plain"
                              for f in FLAGS])
def test_cuda_bf16_sequence_matches_cpu_bf16_kernel(resets, mask, state, dropout, time_major):
    """The bf16 launch sequence (float32 z, state and running gradients; bf16 GEMM operands,
    saved activations and results) against the CPU bf16 kernels, which round at the same
    places: nearly every value is bit-identical. Where they differ, float32 summation order
    flipped a rounding; that stays within a few bf16 ulps. Rounding anywhere else (or nowhere)
    breaks the bit-identity of many values (checked: an unrounded replay matches 0-66 %, one
    that also rounds c or dh every step fails too)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p = make_problem(1100 + 16 * time_major + 8 * resets + 4 * mask + 2 * state + dropout,
                     6, 14, 12, 16, np.float32, resets=resets, mask=mask, state=state,
                     dropout=dropout)
    p16, p32 = half_problem(p, ml_dtypes.bfloat16)
    cpu = cpu_run(p16, time_major)  # the CPU kernels in bf16
    gpu = cuda_replay.forward_backward(p32, time_major, "bfloat16")
    names = ["outputs", "h", "c", "gates", "cells", "d_inputs", "d_kernel",
             "d_recurrent_kernel", "d_bias", "d_h0", "d_c0"]
    equal = total = 0
    for name, a, b in zip(names, list(cpu[0]) + list(cpu[1]), list(gpu[0]) + list(gpu[1])):
        assert np.asarray(a).dtype == ml_dtypes.bfloat16, name
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        if not a.size:
            continue
        equal, total = equal + np.sum(a == b), total + a.size
        # One flipped rounding spreads through a row's GEMMs (dz -> dh -> d_h0): per array at
        # least 80 % bit-identical, and within 6 bf16 ulps (2^-7 relative each) of the value, or
        # of 1/64 of the array's scale for values small because terms cancelled.
        assert np.mean(a == b) >= 0.8, (name, np.mean(a == b))
        ulp = 2.0 ** -7 * np.maximum(np.abs(a), np.abs(a).max() / 64)
        assert np.all(np.abs(a - b) <= 6 * ulp), (name, float(np.max(np.abs(a - b) / ulp)))
    assert equal / total >= 0.97, equal / total


def test_cuda_f16_sequence_against_float32_kernel():
    """float16 (no CPU kernel takes it): the replay with float16 rounding against the CPU
    float32 kernel on the same half-representable arguments, within float16's precision
    (2^-11 relative per rounding, compounded over 20 steps), and visibly rounded."""
    p = make_problem(1200, 8, 20, 16, 16, np.float32, resets=True, mask=True, state=True,
                     dropout=True)
    _, p32 = half_problem(p, np.float16)
    cpu = cpu_run(p32, False)
    gpu = cuda_replay.forward_backward(p32, False, "float16")
    for a, b in zip(list(cpu[0]) + list(cpu[1]), list(gpu[0]) + list(gpu[1])):
        np.testing.assert_array_equal(np.asarray(b).astype(np.float16).astype(np.float32), b)
    compare(cpu, gpu, 4e-3)


def test_round_bf16_matches_ml_dtypes():
    """tests/cuda_replay.round_bf16 (pure numpy, for the GPU machine) is ml_dtypes' conversion:
    ties to even, overflow to inf, NaN kept."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2 ** 32, 200000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000,
                        0x80000000, 0x00000001], np.uint32)  # ties both ways, overflow, inf, +-0
    x = np.concatenate([bits, special]).view(np.float32)
    got = cuda_replay.round_bf16(x)
    with np.errstate(invalid="ignore"):  # NaN payloads
        want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    finite = ~np.isnan(want)
    np.testing.assert_array_equal(got[finite], want[finite])
    assert np.isnan(got[~finite]).all()
