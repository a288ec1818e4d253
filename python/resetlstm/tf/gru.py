"""The reset-GRU as TensorFlow ops (``ResetGRU``, ``ResetGRUGrad``, from the op library
resetlstm.tf.ops loads) with their registered gradient."""
from __future__ import annotations

import tensorflow as tf

from resetlstm._states import single_state
from resetlstm.tf.ops import (_could_record_gradient, _flag_tensor, _float_tensor, _ops,
                              _runs_natively)

__all__ = ["reset_gru", "reset_gru_cell"]


def _bias_rank(reset_after: bool) -> int:
    return 2 if reset_after else 1


def reset_gru(inputs, kernel, recurrent_kernel, bias, resets=None, initial_state=None,
              mask=None, time_major: bool = False, recurrent_dropout_mask=None,
              reset_after: bool = True):
    """Runs a GRU over a sequence whose state can be reset per batch row at any step.

    The contract of ``resetlstm.reset_lstm`` (DESIGN.md, "The GRU") with the GRU cell of Keras,
    in either of its forms::

        z = sigmoid(x W_z + b_z + h U_z [+ bu_z]);  r = sigmoid(x W_r + b_r + h U_r [+ bu_r])
        reset_after=True:  n = tanh(x W_h + b_h + r * (h U_h + bu_h))   (Keras' default, the
                                                                         cuDNN / torch form)
        reset_after=False: n = tanh(x W_h + b_h + (r * h) U_h)
        h = z * h + (1 - z) * n

    Args:
      inputs: [B, T, I] float32, float64, float16 or bfloat16 ([T, B, I] if ``time_major``);
        all float arguments share its dtype (half types compute in float32 inside, as for
        ``reset_lstm``).
      kernel: [I, 3H], recurrent_kernel: [H, 3H]: Keras layout, gates z, r, h, so the weights
        of ``keras.layers.GRU`` load 1:1.
      bias: [2, 3H] (input bias, recurrent bias) with ``reset_after``, [3H] without.
      resets: optional [B, T] bool or 0/1: True at (b, t) zeroes row b's h before step t. No
        gradient crosses a reset.
      initial_state: optional h0 [B, H] (or a list holding it); zeros when absent.
      mask: optional [B, T] bool, Keras masking.
      time_major: whether the first two axes of inputs/outputs/resets/mask are (T, B).
      recurrent_dropout_mask: optional [B, H]: the recurrent matmuls read
        ``recurrent_dropout_mask * h`` (the carried state is not scaled). No gradient.
      reset_after: which of Keras' two forms (above).

    Returns:
      (outputs [B, T, H], h_T [B, H]) in the dtype of ``inputs``.
    """
    with tf.name_scope("reset_gru"):
        inputs = _float_tensor(inputs, "inputs", caller="reset_gru")
        dtype = inputs.dtype
        kernel = _float_tensor(kernel, "kernel", dtype, caller="reset_gru")
        recurrent_kernel = _float_tensor(recurrent_kernel, "recurrent_kernel", dtype,
                                         caller="reset_gru")
        bias = _float_tensor(bias, "bias", dtype, caller="reset_gru")
        reset_after = bool(reset_after)
        if bias.shape.rank is not None and bias.shape.rank != _bias_rank(reset_after):
            layout = "[2, 3H] (input and recurrent bias)" if reset_after else "[3H]"
            raise ValueError(f"reset_gru: with reset_after={reset_after} `bias` must be "
                             f"{layout}, got shape {bias.shape}")
        placeholder_flags = tf.zeros([0], tf.bool)
        placeholder_state = tf.zeros([0], dtype)
        use_resets, use_mask = resets is not None, mask is not None
        resets = _flag_tensor(resets, "resets", "reset_gru") if use_resets else placeholder_flags
        mask = _flag_tensor(mask, "mask", "reset_gru") if use_mask else placeholder_flags
        use_initial_state = initial_state is not None
        if use_initial_state:
            h0 = _float_tensor(single_state(initial_state), "initial_state", dtype,
                               caller="reset_gru")
        else:
            h0 = placeholder_state
        use_recurrent_dropout = recurrent_dropout_mask is not None
        drop = (_float_tensor(recurrent_dropout_mask, "recurrent_dropout_mask", dtype,
                              caller="reset_gru")
                if use_recurrent_dropout else placeholder_state)
        floats = [inputs, kernel, recurrent_kernel, bias, h0, drop]
        widen = not _runs_natively(dtype, placeholder_state)
        if widen:  # float32 kernels; see resetlstm.tf.ops
            floats = [tf.cast(t, tf.float32) for t in floats]
        x, k, rk, b, h0, drop = floats
        outputs, h, _ = _ops.reset_gru(
            x, k, rk, b, resets, mask, h0, drop, reset_after=reset_after,
            time_major=bool(time_major), use_resets=use_resets, use_mask=use_mask,
            use_initial_state=use_initial_state, use_recurrent_dropout=use_recurrent_dropout,
            training=_could_record_gradient())
        if widen:
            outputs, h = tf.cast(outputs, dtype), tf.cast(h, dtype)
        return outputs, h


def reset_gru_cell(x_t, h, kernel, recurrent_kernel, bias, reset=None, reset_after=True):
    """One GRU step with an optional per-row reset: ``reset_gru`` with T = 1.

    Args:
      x_t: [B, I]; h: [B, H]; kernel [I, 3H]; recurrent_kernel [H, 3H]; bias [2, 3H] with
      ``reset_after``, else [3H]; reset: optional [B] bool or 0/1 (zeroes that row's h first).

    Returns:
      h after the step, [B, H].
    """
    with tf.name_scope("reset_gru_cell"):
        x_t = _float_tensor(x_t, "x_t", caller="reset_gru_cell")
        h = _float_tensor(h, "h", x_t.dtype, caller="reset_gru_cell")
        for name, t, width in (("x_t", x_t, "I"), ("h", h, "H")):
            if t.shape.rank is not None and t.shape.rank != 2:
                raise ValueError(f"reset_gru_cell: `{name}` must be rank 2 [B, {width}], got "
                                 f"shape {t.shape}")
        resets = None
        if reset is not None:
            reset = _flag_tensor(reset, "reset", "reset_gru_cell")
            if reset.shape.rank is not None and reset.shape.rank != 1:
                raise ValueError(f"reset_gru_cell: `reset` must be rank 1 [B], got shape "
                                 f"{reset.shape}")
            resets = reset[:, None]
        _, h_next = reset_gru(x_t[:, None, :], kernel, recurrent_kernel, bias, resets=resets,
                              initial_state=h, reset_after=reset_after)
        return h_next


@tf.RegisterGradient("ResetGRU")
def _reset_gru_grad(op, d_outputs, d_h, _d_gates):
    """BPTT through ResetGRU. resets, mask and the recurrent dropout mask get no gradient;
    neither do the placeholders of absent optional arguments."""
    inputs, kernel, recurrent_kernel, _bias, resets, mask, h0, drop = op.inputs
    outputs, h, gates = op.outputs
    if not op.get_attr("training"):
        raise ValueError(
            "reset_gru: the forward pass ran without saving activations (no GradientTape was "
            "recording); call it under the tape you take the gradient from")
    d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
    d_h = tf.zeros_like(h) if d_h is None else d_h
    use_initial_state = op.get_attr("use_initial_state")
    dx, dk, drk, db, dh0 = _ops.reset_gru_grad(
        inputs, kernel, recurrent_kernel, resets, mask, h0, drop, outputs, gates, d_outputs, d_h,
        reset_after=op.get_attr("reset_after"), time_major=op.get_attr("time_major"),
        use_resets=op.get_attr("use_resets"), use_mask=op.get_attr("use_mask"),
        use_initial_state=use_initial_state,
        use_recurrent_dropout=op.get_attr("use_recurrent_dropout"))
    return [dx, dk, drk, db, None, None, dh0 if use_initial_state else None, None]
