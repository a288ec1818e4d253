"""The reset-GRU as PyTorch custom operators (``torch.ops.resetlstm.gru_forward`` and
``torch.ops.resetlstm.gru_backward``) with autograd and fake (meta) implementations, over the
same kernels and in the same way as the LSTM's (resetlstm.torch.ops): CPU tensors run the
framework-free CPU kernels of ``resetlstm._native`` on zero-copy views, CUDA tensors the CUDA
kernels on torch's current stream; double backward goes through a differentiable composite.

``reset_gru`` is the functional API in Keras layout (the arguments and semantics of
``resetlstm.reset_gru``)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from resetlstm import _native
from resetlstm._states import single_state
from resetlstm.torch.composite import reset_gru_composite
from resetlstm.torch.ops import (Arguments, _allow_tf32, _np, _sequence_shape, _tensor, _threads,
                                 creating_graph, differentiable_backward, refuse_double_backward)

__all__ = ["reset_gru"]


@torch.library.custom_op("resetlstm::gru_forward", mutates_args=(), device_types="cpu")
def _gru_forward(inputs: Tensor, kernel: Tensor, recurrent_kernel: Tensor, bias: Tensor,
                 resets: Optional[Tensor], mask: Optional[Tensor], h0: Optional[Tensor],
                 recurrent_dropout_mask: Optional[Tensor], time_major: bool, training: bool,
                 reset_after: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(outputs, h_T, gates); gates (the saved activations) is empty ([0]) when ``training``
    is False."""
    return _gru_forward_cpu(inputs, kernel, recurrent_kernel, bias, resets, mask, h0,
                            recurrent_dropout_mask, time_major, training, reset_after)


def _gru_forward_cpu(inputs, kernel, recurrent_kernel, bias, resets, mask, h0,
                     recurrent_dropout_mask, time_major, training, reset_after):
    results = _native.gru_forward(
        _np(inputs), _np(kernel), _np(recurrent_kernel), _np(bias), resets=_np(resets),
        mask=_np(mask), h0=_np(h0), time_major=time_major, training=training,
        num_threads=_threads(), recurrent_dropout_mask=_np(recurrent_dropout_mask),
        reset_after=reset_after)
    return tuple(_tensor(a, inputs.dtype) for a in results)


@_gru_forward.register_kernel("cuda")
def _gru_forward_cuda(inputs, kernel, recurrent_kernel, bias, resets, mask, h0,
                      recurrent_dropout_mask, time_major, training, reset_after):
    return tuple(_native.gru_forward_cuda(
        inputs, kernel, recurrent_kernel, bias, resets=resets, mask=mask, h0=h0,
        time_major=time_major, training=training, allow_tf32=_allow_tf32(),
        stream=torch.cuda.current_stream(inputs.device).cuda_stream,
        recurrent_dropout_mask=recurrent_dropout_mask, reset_after=reset_after))


@_gru_forward.register_fake
def _gru_forward_fake(inputs, kernel, recurrent_kernel, bias, resets, mask, h0,
                      recurrent_dropout_mask, time_major, training, reset_after):
    H = recurrent_kernel.shape[0]
    B = inputs.shape[1] if time_major else inputs.shape[0]
    saved = (4 if reset_after else 3) * H
    gates = inputs.new_empty(_sequence_shape(inputs, saved) if training else (0,))
    return inputs.new_empty(_sequence_shape(inputs, H)), inputs.new_empty((B, H)), gates


@torch.library.custom_op("resetlstm::gru_backward", mutates_args=(), device_types="cpu")
def _gru_backward(inputs: Tensor, kernel: Tensor, recurrent_kernel: Tensor, bias: Tensor,
                  resets: Optional[Tensor], mask: Optional[Tensor], h0: Optional[Tensor],
                  recurrent_dropout_mask: Optional[Tensor], outputs: Tensor, gates: Tensor,
                  d_outputs: Optional[Tensor], d_h: Optional[Tensor], time_major: bool,
                  reset_after: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """BPTT: (d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0). Absent upstream
    gradients (None) count as zeros."""
    results = _native.gru_backward(
        _np(inputs), _np(kernel), _np(recurrent_kernel), _np(bias), _np(resets), _np(mask),
        _np(h0), _np(outputs), _np(gates), _np(d_outputs), _np(d_h), time_major=time_major,
        num_threads=_threads(), recurrent_dropout_mask=_np(recurrent_dropout_mask),
        reset_after=reset_after)
    return tuple(_tensor(a, inputs.dtype) for a in results)


@_gru_backward.register_kernel("cuda")
def _gru_backward_cuda(inputs, kernel, recurrent_kernel, bias, resets, mask, h0,
                       recurrent_dropout_mask, outputs, gates, d_outputs, d_h, time_major,
                       reset_after):
    return tuple(_native.gru_backward_cuda(
        inputs, kernel, recurrent_kernel, bias, resets, mask, h0, outputs, gates, d_outputs,
        d_h, time_major=time_major, allow_tf32=_allow_tf32(),
        stream=torch.cuda.current_stream(inputs.device).cuda_stream,
        recurrent_dropout_mask=recurrent_dropout_mask, reset_after=reset_after))


@_gru_backward.register_fake
def _gru_backward_fake(inputs, kernel, recurrent_kernel, bias, resets, mask, h0,
                       recurrent_dropout_mask, outputs, gates, d_outputs, d_h, time_major,
                       reset_after):
    B = inputs.shape[1] if time_major else inputs.shape[0]
    H = recurrent_kernel.shape[0]
    return (torch.empty_like(inputs), torch.empty_like(kernel), torch.empty_like(recurrent_kernel),
            torch.empty_like(bias), inputs.new_empty((B, H)))


def _setup_context(ctx, inputs, output):
    (x, kernel, recurrent_kernel, bias, resets, mask, h0, drop, time_major, training,
     reset_after) = inputs
    outputs, _h, gates = output
    ctx.save_for_backward(x, kernel, recurrent_kernel, bias, resets, mask, h0, drop, outputs,
                          gates)
    ctx.time_major, ctx.training, ctx.reset_after = time_major, training, reset_after
    ctx.set_materialize_grads(False)  # absent upstream gradients stay None: zeros in the kernel


# Positions of the differentiable arguments of resetlstm::gru_forward: inputs, kernel,
# recurrent_kernel, bias, h0.
_DIFFERENTIABLE = (0, 1, 2, 3, 6)


def _gru_forward_backward(ctx, d_outputs, d_h, _d_gates):
    x, kernel, recurrent_kernel, bias, resets, mask, h0, drop, outputs, gates = ctx.saved_tensors
    if creating_graph():  # the gradient must be differentiable itself (double backward)
        return differentiable_backward(
            ctx, lambda *a: reset_gru_composite(*a, ctx.time_major, ctx.reset_after),
            (x, kernel, recurrent_kernel, bias, resets, mask, h0, drop), _DIFFERENTIABLE, 11,
            (d_outputs, d_h))
    if not ctx.training:  # the forward saved nothing: recompute it
        outputs, _, gates = _gru_forward(x, kernel, recurrent_kernel, bias, resets, mask, h0,
                                         drop, ctx.time_major, True, ctx.reset_after)
    dx, dk, drk, db, dh0 = _gru_backward(x, kernel, recurrent_kernel, bias, resets, mask, h0,
                                         drop, outputs, gates, d_outputs, d_h, ctx.time_major,
                                         ctx.reset_after)
    return dx, dk, drk, db, None, None, None if h0 is None else dh0, None, None, None, None


torch.library.register_autograd("resetlstm::gru_forward", _gru_forward_backward,
                                setup_context=_setup_context)


refuse_double_backward("resetlstm::gru_backward", "GRU")


def reset_gru(inputs: Tensor, kernel: Tensor, recurrent_kernel: Tensor, bias: Tensor,
              resets=None, initial_state=None, mask=None, time_major: bool = False,
              recurrent_dropout_mask: Optional[Tensor] = None, reset_after: bool = True):
    """Runs a GRU over a sequence whose state can be reset per batch row at any step.

    The arguments and semantics of ``resetlstm.reset_gru`` (the TensorFlow op), on torch
    tensors: ``inputs`` [B, T, I] ([T, B, I] if ``time_major``) float32, float64, bfloat16 or
    float16 on CPU or CUDA; ``kernel`` [I, 3H], ``recurrent_kernel`` [H, 3H] in Keras' layout
    and gate order z, r, h (torch.nn.GRU's ``weight_ih`` is [3H, I] in the order r, z, n:
    ``resetlstm.torch.ResetGRU`` converts); ``bias`` [2, 3H] (input, recurrent) with
    ``reset_after`` (torch.nn.GRU's form), [3H] without; ``resets`` [B, T] bool or 0/1, True at
    (b, t) zeroes row b's h before step t (no gradient crosses it); ``initial_state`` h0
    [B, H]; ``mask`` [B, T], Keras masking; ``recurrent_dropout_mask`` [B, H]: the recurrent
    matmuls read ``mask * h``. Differentiable w.r.t. inputs, kernel, recurrent_kernel, bias and
    the initial state (double backward included).

    Returns (outputs [B, T, H], h_T [B, H]).
    """
    initial_state = single_state(initial_state)
    states = None if initial_state is None else {"initial_state": initial_state}
    a = Arguments("reset_gru", inputs, kernel, recurrent_kernel, bias, resets, mask, states,
                  recurrent_dropout_mask)
    x, k, rk, b, *state = a.floats
    args = (x, k, rk, b, a.resets, a.mask, state[0] if state else None, a.drop,
            bool(time_major), a.training, bool(reset_after))
    if a.eager_cpu:
        outputs, h, _ = _gru_forward_cpu(*args)  # eager inference: no autograd, no tracing
    else:
        outputs, h, _ = _gru_forward(*args)
    return a.results(outputs, h)
