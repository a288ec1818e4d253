"""The fused reset-LSTM as PyTorch custom operators (``torch.ops.resetlstm.forward`` and
``torch.ops.resetlstm.backward``) with autograd and fake (meta) implementations, so they work
eagerly, under ``torch.compile(fullgraph=True)`` and under ``torch.library.opcheck``.

CPU tensors run the framework-free CPU kernels of ``resetlstm._native`` on zero-copy numpy views
of the tensors (results are wrapped back without a copy) on the module's persistent thread pool,
as many threads as ``torch.get_num_threads()``. CUDA tensors run the CUDA kernels through
DLPack on torch's current stream (``_native.forward_cuda``); TF32 follows
``torch.backends.cuda.matmul.allow_tf32``, as ``torch.matmul`` does.

``reset_lstm`` is the functional API in Keras layout (the arguments and semantics of
``resetlstm.reset_lstm``); ``resetlstm.torch.ResetLSTM`` builds the ``torch.nn.LSTM`` drop-in on it.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from resetlstm import _native
from resetlstm.torch.composite import reset_lstm_composite

__all__ = ["reset_lstm"]

_KERNEL_DTYPES = (torch.float32, torch.float64)
_HALF_DTYPES = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------- tensors <-> numpy

def _np(t: Optional[Tensor]):
    """A zero-copy numpy view of a CPU tensor (bfloat16 as ml_dtypes.bfloat16), or None."""
    if t is None:
        return None
    t = t.detach()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _tensor(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    """A numpy result of _native as a tensor of `dtype`, without a copy."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _torch_openmp_runtime():
    """The path of the OpenMP runtime torch's intra-op pool runs on, as loaded in this process
    (torch/lib/libgomp.so.1 in the Linux wheels), or None (another parallel backend, or no
    /proc)."""
    import os
    import re

    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    try:
        with open("/proc/self/maps") as maps:
            loaded = {line.split()[-1] for line in maps if re.search(r"/lib(g|i|)omp[^/]*\.so", line)}
    except OSError:
        return None
    ours = sorted(p for p in loaded if p.startswith(torch_dir))
    return (ours or sorted(loaded) or [None])[0]


def _share_torch_threads() -> None:
    """Runs _native's kernels on torch's OpenMP team instead of a pool of its own, whose threads
    would take turns with torch's spinning OpenMP threads for the same cores (see
    csrc/python/openmp_team.h). Nothing changes where torch's runtime cannot be attached."""
    path = _torch_openmp_runtime()
    if path and not _native.openmp_runtime():
        try:
            _native.use_openmp_runtime(path)
        except ValueError:  # pragma: no cover - a runtime without the GNU ABI
            pass


_share_torch_threads()


# ---------------------------------------------------------------------------- forward

@torch.library.custom_op("resetlstm::forward", mutates_args=(), device_types="cpu")
def _forward(inputs: Tensor, kernel: Tensor, recurrent_kernel: Tensor, bias: Tensor,
             resets: Optional[Tensor], mask: Optional[Tensor], h0: Optional[Tensor],
             c0: Optional[Tensor], recurrent_dropout_mask: Optional[Tensor], time_major: bool,
             training: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(outputs, h_T, c_T, gates, cell_states); gates and cell_states are empty ([0]) when
    ``training`` is False (nothing is saved for backward)."""
    return _forward_cpu(inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                        recurrent_dropout_mask, time_major, training)


def _forward_cpu(inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                 recurrent_dropout_mask, time_major, training):
    """The CPU kernel of resetlstm::forward, also called directly (without the dispatcher's
    ~0.1 ms) by eager inference calls on CPU tensors."""
    results = _native.forward(
        _np(inputs), _np(kernel), _np(recurrent_kernel), _np(bias), resets=_np(resets),
        mask=_np(mask), h0=_np(h0), c0=_np(c0), time_major=time_major, training=training,
        num_threads=_threads(), recurrent_dropout_mask=_np(recurrent_dropout_mask))
    return tuple(_tensor(a, inputs.dtype) for a in results)


@_forward.register_kernel("cuda")
def _forward_cuda(inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                  recurrent_dropout_mask, time_major, training):
    return tuple(_native.forward_cuda(
        inputs, kernel, recurrent_kernel, bias, resets=resets, mask=mask, h0=h0, c0=c0,
        time_major=time_major, training=training, allow_tf32=_allow_tf32(),
        stream=torch.cuda.current_stream(inputs.device).cuda_stream,
        recurrent_dropout_mask=recurrent_dropout_mask))


def _allow_tf32() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32)


def _sequence_shape(inputs: Tensor, width) -> tuple:
    """[B, T, width] ([T, B, width] when time-major): the first two axes of `inputs`."""
    return (inputs.shape[0], inputs.shape[1], width)


@_forward.register_fake
def _forward_fake(inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                  recurrent_dropout_mask, time_major, training):
    H = recurrent_kernel.shape[0]
    B = inputs.shape[1] if time_major else inputs.shape[0]
    outputs = inputs.new_empty(_sequence_shape(inputs, H))
    h, c = inputs.new_empty((B, H)), inputs.new_empty((B, H))
    if training:
        gates = inputs.new_empty(_sequence_shape(inputs, 4 * H))
        cells = inputs.new_empty(_sequence_shape(inputs, H))
    else:
        gates, cells = inputs.new_empty((0,)), inputs.new_empty((0,))
    return outputs, h, c, gates, cells


# ---------------------------------------------------------------------------- backward

@torch.library.custom_op("resetlstm::backward", mutates_args=(), device_types="cpu")
def _backward(inputs: Tensor, kernel: Tensor, recurrent_kernel: Tensor, resets: Optional[Tensor],
              mask: Optional[Tensor], h0: Optional[Tensor], c0: Optional[Tensor],
              recurrent_dropout_mask: Optional[Tensor], outputs: Tensor, gates: Tensor,
              cells: Tensor, d_outputs: Optional[Tensor], d_h: Optional[Tensor],
              d_c: Optional[Tensor], time_major: bool
              ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """BPTT: (d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0, d_c0). Absent upstream
    gradients (None) count as zeros."""
    # backward takes no bias (the gates it saved hold it); any [4H] array of the dtype will do
    bias = np.zeros(kernel.shape[1], _np(kernel).dtype)
    results = _native.backward(
        _np(inputs), _np(kernel), _np(recurrent_kernel), bias, _np(resets), _np(mask), _np(h0),
        _np(c0), _np(outputs), _np(gates), _np(cells), _np(d_outputs), _np(d_h), _np(d_c),
        time_major=time_major, num_threads=_threads(),
        recurrent_dropout_mask=_np(recurrent_dropout_mask))
    return tuple(_tensor(a, inputs.dtype) for a in results)


@_backward.register_kernel("cuda")
def _backward_cuda(inputs, kernel, recurrent_kernel, resets, mask, h0, c0, recurrent_dropout_mask,
                   outputs, gates, cells, d_outputs, d_h, d_c, time_major):
    bias = kernel.new_zeros(kernel.shape[1])
    return tuple(_native.backward_cuda(
        inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0, outputs, gates, cells,
        d_outputs, d_h, d_c, time_major=time_major, allow_tf32=_allow_tf32(),
        stream=torch.cuda.current_stream(inputs.device).cuda_stream,
        recurrent_dropout_mask=recurrent_dropout_mask))


@_backward.register_fake
def _backward_fake(inputs, kernel, recurrent_kernel, resets, mask, h0, c0, recurrent_dropout_mask,
                   outputs, gates, cells, d_outputs, d_h, d_c, time_major):
    B = inputs.shape[1] if time_major else inputs.shape[0]
    H = recurrent_kernel.shape[0]
    return (torch.empty_like(inputs), torch.empty_like(kernel), torch.empty_like(recurrent_kernel),
            kernel.new_empty((kernel.shape[1],)), inputs.new_empty((B, H)),
            inputs.new_empty((B, H)))


# ---------------------------------------------------------------------------- autograd

def _setup_context(ctx, inputs, output):
    (x, kernel, recurrent_kernel, bias, resets, mask, h0, c0, drop, time_major,
     training) = inputs
    outputs, _h, _c, gates, cells = output
    # Without saved activations (training=False) backward recomputes them: the op is
    # differentiable either way; reset_lstm asks for them whenever a gradient can be taken.
    # (The bias is kept either way, for the double-backward composite; it is not copied.)
    ctx.save_for_backward(x, kernel, recurrent_kernel, bias, resets, mask, h0, c0, drop,
                          outputs, gates, cells)
    ctx.time_major, ctx.training = time_major, training
    ctx.set_materialize_grads(False)  # absent upstream gradients stay None: zeros in the kernel


def _forward_backward(ctx, d_outputs, d_h, d_c, _d_gates, _d_cells):
    x, kernel, recurrent_kernel, bias, resets, mask, h0, c0, drop, outputs, gates, cells = \
        ctx.saved_tensors
    if creating_graph():  # the gradient must be differentiable itself (double backward)
        return differentiable_backward(
            ctx, lambda *a: reset_lstm_composite(*a, ctx.time_major),
            (x, kernel, recurrent_kernel, bias, resets, mask, h0, c0, drop), _DIFFERENTIABLE,
            11, (d_outputs, d_h, d_c))
    if not ctx.training:
        outputs, _, _, gates, cells = _forward(x, kernel, recurrent_kernel, bias, resets, mask,
                                               h0, c0, drop, ctx.time_major, True)
    dx, dk, drk, db, dh0, dc0 = _backward(x, kernel, recurrent_kernel, resets, mask, h0, c0,
                                          drop, outputs, gates, cells, d_outputs, d_h, d_c,
                                          ctx.time_major)
    if h0 is None:
        dh0 = dc0 = None
    return dx, dk, drk, db, None, None, dh0, dc0, None, None, None


# Positions of the differentiable arguments of resetlstm::forward: inputs, kernel,
# recurrent_kernel, bias, h0, c0.
_DIFFERENTIABLE = (0, 1, 2, 3, 6, 7)


torch.library.register_autograd("resetlstm::forward", _forward_backward,
                                setup_context=_setup_context)


def refuse_double_backward(backward_op: str, cell: str):
    """Registers the autograd of a fused backward op: an error, since double backward
    (create_graph=True) runs eagerly through the cell's differentiable composite instead."""
    def refuse(ctx, *grads):
        raise RuntimeError(f"resetlstm: the fused {cell} backward has no gradient of its own. "
                           "Double backward (create_graph=True) runs eagerly, through a "
                           f"differentiable composite of the {cell}; it is not available inside "
                           "torch.compile")

    torch.library.register_autograd(backward_op, refuse,
                                    setup_context=lambda ctx, inputs, output: None)


refuse_double_backward("resetlstm::backward", "LSTM")


# ---------------------------------------------------------------------------- functional API

def _runs_natively(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether `dtype` runs in the kernels of its own type (else half types are widened to
    float32 around the op): float16 and bfloat16 on CUDA (bfloat16 from compute capability 8.0),
    bfloat16 on CPUs with AVX512-BF16 (whose emulated bf16 GEMMs would be slower than float32)."""
    if dtype in _KERNEL_DTYPES:
        return True
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return not _native.cuda_dtype_unsupported_reason(str(dtype).split(".")[-1], major, minor)
    return dtype == torch.bfloat16 and _native.bf16_gemm() == "avx512_bf16"


def _check_float(value, name: str, like: Optional[Tensor] = None,
                 op: str = "reset_lstm") -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(value).__name__}")
    if like is None:
        if value.dtype not in _KERNEL_DTYPES + _HALF_DTYPES:
            raise ValueError(f"{op}: `{name}` must be float32, float64, float16 or "
                             f"bfloat16, got {value.dtype}")
        if value.device.type not in ("cpu", "cuda", "meta"):
            raise ValueError(f"{op}: `{name}` is on {value.device}; resetlstm runs on "
                             "CPU and CUDA tensors (and computes shapes on meta tensors)")
        return value
    if value.dtype != like.dtype:
        raise ValueError(f"{op}: `{name}` has dtype {value.dtype} but `inputs` has "
                         f"{like.dtype}; all float arguments must share one dtype")
    if value.device != like.device:
        raise ValueError(f"{op}: `{name}` is on {value.device} but `inputs` is on "
                         f"{like.device}; all arguments must be on one device")
    return value


def _check_flags(value, name: str, like: Tensor, op: str = "reset_lstm") -> Tensor:
    """bool, or 0/1 numbers (nonzero counts as True), on the device of `like`."""
    flags = torch.as_tensor(value, device=like.device)
    if flags.dtype == torch.bool:
        return flags
    if flags.is_complex() or flags.dtype.is_complex:
        raise ValueError(f"{op}: `{name}` must be bool or 0/1 numbers, got {flags.dtype}")
    return flags != 0


class Arguments:
    """An op's arguments checked (every float one a tensor of the dtype and device of
    `inputs`; resets and mask bool) and ready for the kernels: the float ones widened to
    float32 where their half type has no kernels here (``widen``; results are rounded back),
    and whether a gradient may be requested (``training``: the forward then saves what
    backward needs)."""

    def __init__(self, op, inputs, kernel, recurrent_kernel, bias, resets, mask, states,
                 recurrent_dropout_mask):
        """states: the initial-state tensors by name (checked like the weights), or None."""
        inputs = _check_float(inputs, "inputs", op=op)
        self.dtype = inputs.dtype
        floats = [inputs] + [_check_float(t, name, inputs, op) for name, t in
                             (("kernel", kernel), ("recurrent_kernel", recurrent_kernel),
                              ("bias", bias))]
        floats += [_check_float(t, name, inputs, op) for name, t in (states or {}).items()]
        self.drop = None if recurrent_dropout_mask is None else _check_float(
            recurrent_dropout_mask, "recurrent_dropout_mask", inputs, op)
        self.resets = None if resets is None else _check_flags(resets, "resets", inputs, op)
        self.mask = None if mask is None else _check_flags(mask, "mask", inputs, op)
        self.training = torch.is_grad_enabled() and any(t.requires_grad for t in floats)
        self.widen = not _runs_natively(self.dtype, inputs.device)
        if self.widen:
            floats = [t.float() for t in floats]
            self.drop = None if self.drop is None else self.drop.float()
        self.floats = floats  # inputs, kernel, recurrent_kernel, bias, *states
        self.eager_cpu = (not self.training and inputs.device.type == "cpu"
                          and not torch.compiler.is_compiling())

    def results(self, *tensors):
        """The kernels' results in the arguments' dtype."""
        return tuple(t.to(self.dtype) for t in tensors) if self.widen else tensors


def differentiable_backward(ctx, composite, args, differentiable, num_inputs, upstream):
    """An op's gradients as differentiable tensors (backward with create_graph=True): autograd
    through `composite(*args)`, the same computation in torch ops, recorded so that the
    gradients can be differentiated again. `differentiable`: the positions of `args` a gradient
    may flow to; `num_inputs`: the op's argument count; `upstream`: the gradients of the
    composite's results (None: zero)."""
    wanted = [i for i in differentiable if ctx.needs_input_grad[i] and args[i] is not None]
    results = [None] * num_inputs
    pairs = [(out, grad) for out, grad in zip(composite(*args), upstream) if grad is not None]
    if not wanted or not pairs:
        return tuple(results)
    grads = torch.autograd.grad([out for out, _ in pairs], [args[i] for i in wanted],
                                [grad for _, grad in pairs], create_graph=True,
                                allow_unused=True)
    for i, grad in zip(wanted, grads):
        results[i] = torch.zeros_like(args[i]) if grad is None else grad
    return tuple(results)


def creating_graph() -> bool:
    """Whether a backward runs with create_graph=True (eagerly: compiled graphs take first
    derivatives only)."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


def reset_lstm(inputs: Tensor, kernel: Tensor, recurrent_kernel: Tensor, bias: Tensor,
               resets=None, initial_state=None, mask=None, time_major: bool = False,
               recurrent_dropout_mask: Optional[Tensor] = None):
    """Runs an LSTM over a sequence whose state can be reset per batch row at any step.

    The arguments and semantics of ``resetlstm.reset_lstm`` (the TensorFlow op), on torch
    tensors: ``inputs`` [B, T, I] ([T, B, I] if ``time_major``) float32, float64, bfloat16 or
    float16 on CPU or CUDA; ``kernel`` [I, 4H], ``recurrent_kernel`` [H, 4H], ``bias`` [4H]
    (Keras layout, gates i, f, c, o: ``kernel = weight_ih.T`` of ``torch.nn.LSTM``, whose gate
    order i, f, g, o is the same); ``resets`` [B, T] bool or 0/1, True at (b, t) zeroes row b's
    h and c before step t (no gradient crosses it); ``initial_state`` (h0, c0), each [B, H];
    ``mask`` [B, T], Keras masking; ``recurrent_dropout_mask`` [B, H]: every step reads
    ``mask * h`` in the recurrent matmul. Differentiable w.r.t. inputs, kernel,
    recurrent_kernel, bias and the initial state.

    Half types compute in float32 inside (float32 accumulation, float32 cell state): bfloat16
    runs the CPU's bf16 kernels on AVX512-BF16 CPUs, float16 and bfloat16 run half kernels on
    CUDA (bfloat16 from compute capability 8.0); otherwise they are widened to float32 around
    the op, and results and gradients come back in the argument dtype either way.

    Returns (outputs [B, T, H], h_T [B, H], c_T [B, H]).
    """
    states = None
    if initial_state is not None:
        if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
            raise ValueError("reset_lstm: `initial_state` must be a pair (h0, c0) of [B, H] "
                             f"tensors, got {type(initial_state).__name__}")
        states = {"initial_state[0] (h)": initial_state[0],
                  "initial_state[1] (c)": initial_state[1]}
    a = Arguments("reset_lstm", inputs, kernel, recurrent_kernel, bias, resets, mask, states,
                  recurrent_dropout_mask)
    x, k, rk, b, *state = a.floats
    h0, c0 = state if state else (None, None)
    args = (x, k, rk, b, a.resets, a.mask, h0, c0, a.drop, bool(time_major), a.training)
    if a.eager_cpu:
        outputs, h, c, _, _ = _forward_cpu(*args)  # eager inference: no autograd, no tracing
    else:
        outputs, h, c, _, _ = _forward(*args)
    outputs, h, c = a.results(outputs, h, c)
    return outputs, h, c
