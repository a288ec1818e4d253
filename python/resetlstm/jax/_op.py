"""``reset_lstm`` on JAX arrays: argument checks at trace time (before anything compiles), and a
``jax.custom_vjp`` over the forward and backward primitives."""
from __future__ import annotations

import functools

import jax

from resetlstm.jax import _batching, _lowering, _sharding  # noqa: F401  (register the rules)
from resetlstm.jax import _ffi
from resetlstm.jax._args import check_time_major, flag_array, float_array, present, shape
from resetlstm.jax._primitives import Config, backward_p, forward_p

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _reset_lstm(cfg, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0, dropout):
    outputs, h, c = forward_p.bind(
        *present(inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0, dropout),
        cfg=cfg, training=False)
    return outputs, h, c


def _reset_lstm_fwd(cfg, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0, dropout):
    outputs, h, c, gates, cells = forward_p.bind(
        *present(inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0, dropout),
        cfg=cfg, training=True)
    saved = (inputs, kernel, recurrent_kernel, resets, mask, h0, c0, dropout, outputs, gates,
             cells)
    return (outputs, h, c), saved


def _reset_lstm_bwd(cfg, saved, cotangents):
    inputs, kernel, recurrent_kernel, resets, mask, h0, c0, dropout, outputs, gates, cells = saved
    d_outputs, d_h, d_c = cotangents
    dx, dk, drk, db, dh0, dc0 = backward_p.bind(
        *present(inputs, kernel, recurrent_kernel, resets, mask, h0, c0, dropout),
        outputs, gates, cells, d_outputs, d_h, d_c, cfg=cfg)
    if not cfg.has_state:
        dh0 = dc0 = None
    # resets, mask and the recurrent dropout mask are constants of the op: no gradient
    return dx, dk, drk, db, None, None, dh0, dc0, None


_reset_lstm.defvjp(_reset_lstm_fwd, _reset_lstm_bwd)


def reset_lstm(inputs, kernel, recurrent_kernel, bias, resets=None, mask=None,
               initial_state=None, recurrent_dropout_mask=None, time_major: bool = False):
    """Runs an LSTM over a sequence whose state can be reset per batch row at any step.

    The semantics of ``resetlstm.reset_lstm`` (the TensorFlow op), as XLA FFI custom calls of
    the same kernels: works under ``jax.jit``, ``jax.grad`` / ``value_and_grad`` and
    ``jax.vmap``, and with the batch axis sharded over devices (each device runs its rows).

    Args:
      inputs: [B, T, I] float32, float64, bfloat16 or float16 ([T, B, I] if ``time_major``).
        All float arguments share its dtype; results and gradients come back in it. Half types
        compute in float32 inside (float32 accumulation, float32 cell state). On the CPU
        bfloat16 runs in the bf16 kernels when the CPU has AVX512-BF16, and float16 (or
        bfloat16 without AVX512-BF16) runs the float32 kernels on widened copies; on a GPU
        float16 and bfloat16 (compute capability 8.0+) run in half kernels.
      kernel: [I, 4H], recurrent_kernel: [H, 4H], bias: [4H]. Keras layout, gates i, f, c, o.
      resets: optional [B, T] ([T, B]) bool or 0/1: True at (b, t) zeroes row b's h and c
        before step t (a select: nothing, not even a NaN, crosses a reset).
      mask: optional [B, T] ([T, B]) bool or 0/1, Keras masking: a masked step carries the
        state and repeats the previous output (zeros before the first unmasked step).
      initial_state: optional pair (h0, c0), each [B, H]; zeros when absent.
      recurrent_dropout_mask: optional [B, H]: every step computes
        ``z = x_t @ kernel + (m * h) @ recurrent_kernel + bias``.
      time_major: whether the first two axes of inputs/outputs/resets/mask are (T, B).

    Returns:
      (outputs [B, T, H], h_T [B, H], c_T [B, H]). Differentiable with respect to inputs,
      kernel, recurrent_kernel, bias and initial_state; resets, mask and
      recurrent_dropout_mask get zero gradients.
    """
    time_major = check_time_major(time_major, "reset_lstm")
    inputs = float_array(inputs, "inputs")
    dtype = inputs.dtype
    kernel = float_array(kernel, "kernel", dtype)
    recurrent_kernel = float_array(recurrent_kernel, "recurrent_kernel", dtype)
    bias = float_array(bias, "bias", dtype)
    resets = None if resets is None else flag_array(resets, "resets")
    mask = None if mask is None else flag_array(mask, "mask")
    h0 = c0 = None
    if initial_state is not None:
        if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
            length = f" of length {len(initial_state)}" if hasattr(initial_state, "__len__") else ""
            raise ValueError("reset_lstm: `initial_state` must be a pair (h0, c0) of [B, H] "
                             f"arrays, got {type(initial_state).__name__}{length}")
        h0 = float_array(initial_state[0], "initial_state[0] (h)", dtype)
        c0 = float_array(initial_state[1], "initial_state[1] (c)", dtype)
    dropout = None
    if recurrent_dropout_mask is not None:
        dropout = float_array(recurrent_dropout_mask, "recurrent_dropout_mask", dtype)

    _ffi.check_shapes(shape(inputs), shape(kernel), shape(recurrent_kernel), shape(bias),
                      shape(resets), shape(mask), shape(h0), shape(c0), shape(dropout),
                      bool(time_major))
    cfg = Config(time_major=bool(time_major), has_resets=resets is not None,
                 has_mask=mask is not None, has_state=h0 is not None,
                 has_dropout=dropout is not None)
    return _reset_lstm(cfg, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                       dropout)
