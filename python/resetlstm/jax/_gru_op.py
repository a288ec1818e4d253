"""``reset_gru`` on JAX arrays: argument checks at trace time, and a ``jax.custom_vjp`` over the
same forward and backward primitives as ``reset_lstm`` (``Config.cell`` selects the GRU)."""
from __future__ import annotations

import functools

import jax

from resetlstm.jax import _batching, _lowering, _sharding  # noqa: F401  (register the rules)
from resetlstm.jax import _ffi
from resetlstm.jax._args import check_time_major, flag_array, float_array, present, shape
from resetlstm._states import single_state
from resetlstm.jax._primitives import CELLS, Config, backward_p, forward_p


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _reset_gru(cfg, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, dropout):
    outputs, h = forward_p.bind(
        *present(inputs, kernel, recurrent_kernel, bias, resets, mask, h0, dropout),
        cfg=cfg, training=False)
    return outputs, h


def _reset_gru_fwd(cfg, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, dropout):
    outputs, h, gates = forward_p.bind(
        *present(inputs, kernel, recurrent_kernel, bias, resets, mask, h0, dropout),
        cfg=cfg, training=True)
    return (outputs, h), (inputs, kernel, recurrent_kernel, resets, mask, h0, dropout, outputs,
                          gates)


def _reset_gru_bwd(cfg, saved, cotangents):
    inputs, kernel, recurrent_kernel, resets, mask, h0, dropout, outputs, gates = saved
    d_outputs, d_h = cotangents
    dx, dk, drk, db, dh0 = backward_p.bind(
        *present(inputs, kernel, recurrent_kernel, resets, mask, h0, dropout),
        outputs, gates, d_outputs, d_h, cfg=cfg)
    # resets, mask and the recurrent dropout mask are constants of the op: no gradient
    return dx, dk, drk, db, None, None, dh0 if cfg.has_state else None, None


_reset_gru.defvjp(_reset_gru_fwd, _reset_gru_bwd)


def reset_gru(inputs, kernel, recurrent_kernel, bias, resets=None, mask=None,
              initial_state=None, recurrent_dropout_mask=None, time_major: bool = False,
              reset_after: bool = True):
    """Runs a GRU over a sequence whose state can be reset per batch row at any step.

    The semantics of ``resetlstm.reset_gru`` (the TensorFlow op; DESIGN.md "The GRU"), as XLA
    FFI custom calls of the same kernels: works under ``jax.jit``, ``jax.grad``, ``jax.vmap``
    and with the batch axis sharded over devices.

    Args:
      inputs: [B, T, I] float32, float64, bfloat16 or float16 ([T, B, I] if ``time_major``);
        every float argument shares its dtype (half types compute in float32 inside).
      kernel: [I, 3H], recurrent_kernel: [H, 3H]: Keras layout, gates z, r, h.
      bias: [2, 3H] (input and recurrent bias) with ``reset_after``, [3H] without.
      resets: optional [B, T] bool or 0/1: True at (b, t) zeroes row b's h before step t.
      mask: optional [B, T] bool or 0/1, Keras masking.
      initial_state: optional h0 [B, H] (or a one-element list/tuple holding it).
      recurrent_dropout_mask: optional [B, H]: the recurrent matmuls read m * h.
      time_major: whether the first two axes of inputs/outputs/resets/mask are (T, B).
      reset_after: True: n = tanh(x W_h + b_h + r * (h U_h + bu_h)) (Keras' default, cuDNN's
        and torch.nn.GRU's form); False: n = tanh(x W_h + b_h + (r * h) U_h).

    Returns:
      (outputs [B, T, H], h_T [B, H]). Differentiable w.r.t. inputs, kernel, recurrent_kernel,
      bias and initial_state.
    """
    op = "reset_gru"
    time_major = check_time_major(time_major, op)
    if not isinstance(reset_after, bool):
        raise ValueError(f"{op}: `reset_after` must be a Python bool, got "
                         f"{type(reset_after).__name__}")
    inputs = float_array(inputs, "inputs", op=op)
    dtype = inputs.dtype
    kernel = float_array(kernel, "kernel", dtype, op)
    recurrent_kernel = float_array(recurrent_kernel, "recurrent_kernel", dtype, op)
    bias = float_array(bias, "bias", dtype, op)
    resets = None if resets is None else flag_array(resets, "resets", op)
    mask = None if mask is None else flag_array(mask, "mask", op)
    initial_state = single_state(initial_state, op)
    h0 = None if initial_state is None else float_array(initial_state, "initial_state", dtype, op)
    dropout = None
    if recurrent_dropout_mask is not None:
        dropout = float_array(recurrent_dropout_mask, "recurrent_dropout_mask", dtype, op)
    cell = "gru" if reset_after else "gru_reset_before"
    _ffi.check_shapes(shape(inputs), shape(kernel), shape(recurrent_kernel), shape(bias),
                      shape(resets), shape(mask), shape(h0), None, shape(dropout), time_major,
                      CELLS[cell][0])
    cfg = Config(time_major=time_major, has_resets=resets is not None, has_mask=mask is not None,
                 has_state=h0 is not None, has_dropout=dropout is not None, cell=cell)
    return _reset_gru(cfg, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, dropout)
