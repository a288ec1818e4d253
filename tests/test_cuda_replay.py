"""The CUDA launch sequence (tests/cuda_replay.py, a kernel-by-kernel numpy mirror of
lstm_cuda_forward.cu / lstm_cuda_backward.cu) against the CPU kernels: every flag combination,
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


def run_both(p, time_major):
    tm = lambda a: layout(a, time_major) if time_major else a  # noqa: E731
    x, r, m, dy = tm(p["inputs"]), tm(p["resets"]), tm(p["mask"]), tm(p["d_outputs"])
    args = (x, p["kernel"], p["recurrent_kernel"], p["bias"])
    cpu_fwd = native().forward(*args, resets=r, mask=m, h0=p["h0"], c0=p["c0"],
                               time_major=time_major, recurrent_dropout_mask=p["dropout"])
    gpu_fwd = cuda_replay.forward(*args, resets=r, mask=m, h0=p["h0"], c0=p["c0"],
                                  dropout=p["dropout"], time_major=time_major)
    cpu_bwd = native().backward(*args, r, m, p["h0"], p["c0"], *cpu_fwd[0:1], cpu_fwd[3],
                                cpu_fwd[4], dy, p["d_h"], p["d_c"], time_major=time_major,
                                recurrent_dropout_mask=p["dropout"])
    gpu_bwd = cuda_replay.backward(x, p["kernel"], p["recurrent_kernel"], r, m, p["h0"], p["c0"],
                                   gpu_fwd[0], gpu_fwd[3], gpu_fwd[4], dy, p["d_h"], p["d_c"],
                                   dropout=p["dropout"], time_major=time_major)
    return (cpu_fwd, cpu_bwd), (gpu_fwd, gpu_bwd)


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
