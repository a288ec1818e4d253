"""The reset-LSTM in stock TensorFlow ops: what a portable export traces instead of the custom op.

``portable_reset_lstm`` has the contract of ``resetlstm.reset_lstm`` (DESIGN.md section 1:
Keras weight layout, gates i, f, c, o; a reset zeroes the row's h and c before its step, as a
select, so no NaN or Inf crosses it; Keras masking) built from ops every TensorFlow runtime has:
one MatMul for the input projection of all steps, then per step one MatMul over the state, the
gate math and a SelectV2 per reset / mask. One step is traced as it is; longer or unknown
sequences loop in a ``tf.while_loop`` (a TensorArray collects the outputs).

``lowered(model)`` is a context manager under which every ``ResetLSTM`` of ``model`` (nested
models and wrappers included) computes through ``portable_reset_lstm``: whatever traces the model
inside it (``tf.function``, ``model.export``, a converter) gets a graph without the custom op.
The layer's own code does everything around the op (go_backwards with its backward resets,
masks and zero_output_for_mask, initial_state, stateful state variables, return_sequences /
return_state, dtype policies: ``ResetLSTM._op_arguments`` and ``_layer_outputs``); the
equality with the fused layer is tested in tests/test_export.py. It lowers inference only: a call with ``training=True`` on a layer with
dropout is refused.
"""
from __future__ import annotations

import contextlib
import functools

import tensorflow as tf

from resetlstm.tf.model_layers import reset_lstm_layers

__all__ = ["portable_reset_lstm", "lowered"]

_HALF = (tf.float16, tf.bfloat16)


def _flags(value, name):
    if value is None:
        return None
    t = tf.convert_to_tensor(value)
    if t.dtype == tf.bool:
        return t
    if not (t.dtype.is_integer or t.dtype.is_floating):
        raise ValueError(f"portable_reset_lstm: `{name}` must be bool or 0/1 numbers, got "
                         f"{t.dtype.name}")
    return tf.not_equal(t, tf.zeros([], t.dtype))


def _lstm_step(xz, h, c, y, recurrent_kernel, reset=None, mask=None, drop=None):
    """One step for all rows. xz: [B, 4H] (x_t @ kernel + bias); h, c, y: [B, H];
    reset, mask: [B] bool or None; drop: [B, H] or None. Returns (h, c, y) after the step."""
    if reset is not None:  # a select, not a multiply: nothing before a reset reaches past it
        r = reset[:, None]
        h = tf.where(r, tf.zeros_like(h), h)
        c = tf.where(r, tf.zeros_like(c), c)
    z = xz + tf.matmul(h if drop is None else drop * h, recurrent_kernel)
    i, f, g, o = tf.split(z, 4, axis=1)
    c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    h_new = tf.sigmoid(o) * tf.tanh(c_new)
    if mask is None:
        return h_new, c_new, h_new
    m = mask[:, None]  # a masked step carries the state and repeats the previous output
    return tf.where(m, h_new, h), tf.where(m, c_new, c), tf.where(m, h_new, y)


def portable_reset_lstm(inputs, kernel, recurrent_kernel, bias, resets=None, initial_state=None,
                        mask=None, time_major=False, recurrent_dropout_mask=None):
    """``resetlstm.reset_lstm`` in stock TensorFlow ops (same arguments, same results).

    float16 / bfloat16 arguments are computed as the CPU op widens them: the arguments as
    given, float32 arithmetic and cell state, results rounded once to the argument dtype.
    Returns ``(outputs [B, T, H], h_T [B, H], c_T [B, H])`` (``[T, B, H]`` if time_major).

    Traced with a time axis of unknown length, the steps run in a ``tf.while_loop`` whose
    outputs a TensorArray collects; such a graph cannot run T = 0 when the batch size is unknown
    too (TensorFlow cannot stack an empty list of unknown shape): give either a static size.
    """
    with tf.name_scope("portable_reset_lstm"):
        x = tf.convert_to_tensor(inputs)
        dtype = x.dtype
        if dtype not in (tf.float32, tf.float64) + _HALF:
            raise ValueError("portable_reset_lstm: `inputs` must be float32, float64, float16 "
                             f"or bfloat16, got {dtype.name}")
        if x.shape.rank != 3:
            raise ValueError("portable_reset_lstm: `inputs` must be rank 3 [B, T, I], got shape "
                             f"{x.shape}")
        work = tf.float64 if dtype == tf.float64 else tf.float32

        def widen(value):
            return tf.cast(tf.cast(value, dtype), work)

        kernel, recurrent_kernel, bias = map(widen, (kernel, recurrent_kernel, bias))
        units = recurrent_kernel.shape[0]
        if units is None:
            raise ValueError("portable_reset_lstm: `recurrent_kernel` needs a static shape "
                             "[H, 4H]")
        resets, mask = _flags(resets, "resets"), _flags(mask, "mask")
        if not time_major:  # loop over the leading axis
            x = tf.transpose(x, [1, 0, 2])
            resets = None if resets is None else tf.transpose(resets)
            mask = None if mask is None else tf.transpose(mask)
        steps, batch = x.shape[0], x.shape[1]
        shape = tf.shape(x)
        # the input projection of every step: one [T*B, I] x [I, 4H] MatMul
        xz = tf.matmul(tf.reshape(widen(x), [-1, shape[2]]), kernel) + bias
        xz = tf.reshape(xz, tf.stack([shape[0], shape[1], 4 * units]))
        if initial_state is None:
            h = c = tf.zeros(tf.stack([shape[1], units]), work)
        else:
            h, c = (widen(s) for s in initial_state)
        drop = None if recurrent_dropout_mask is None else widen(recurrent_dropout_mask)
        y = tf.zeros_like(h)

        def at(flags, t):
            return None if flags is None else flags[t]

        if steps == 1:  # the streaming step: no loop
            h, c, y = _lstm_step(xz[0], h, c, y, recurrent_kernel, at(resets, 0), at(mask, 0),
                                 drop)
            outputs = y[None]
        elif steps == 0:
            outputs = tf.zeros(tf.stack([0, shape[1], units]), work)
        else:
            ta = tf.TensorArray(work, size=shape[0], element_shape=tf.TensorShape([batch, units]))

            def body(t, h, c, y, ta):
                h, c, y = _lstm_step(xz[t], h, c, y, recurrent_kernel, at(resets, t),
                                     at(mask, t), drop)
                return t + 1, h, c, y, ta.write(t, y)

            _, h, c, y, ta = tf.while_loop(lambda t, *_: t < shape[0], body,
                                           (tf.constant(0), h, c, y, ta))
            outputs = ta.stack()
        if not time_major:
            outputs = tf.transpose(outputs, [1, 0, 2])
        return tuple(tf.cast(t, dtype) for t in (outputs, h, c))


class _Lowering:
    """State of one ``lowered`` context: explicit (h, c) per layer to start from (instead of a
    stateful layer's variables) and the (h, c) each layer ended with."""

    def __init__(self, layers):
        self.layers = layers
        self.explicit = {}   # layer -> (h, c) tensors
        self.final = {}      # layer -> (h, c) tensors of the last call


def _lowered_call(lowering, layer, sequences, initial_state=None, mask=None, training=False,
                  resets=None):
    """``ResetLSTM.call`` with the fused op replaced by ``portable_reset_lstm`` (the layer's own
    semantics before and after the op), starting from the lowering's explicit state where it
    has one for the layer (whose variables are then left alone)."""
    if training is True and (layer.dropout or layer.recurrent_dropout):
        raise ValueError(f"ResetLSTM '{layer.name}': the portable lowering is for inference; it "
                         "was called with training=True and dropout. Train with the fused op "
                         "and export the trained model.")
    explicit = lowering.explicit.get(layer)
    if initial_state is None and explicit is not None:
        initial_state = list(explicit)
    args = layer._op_arguments(sequences, initial_state, mask, training, resets)
    outputs, h, c = portable_reset_lstm(**args)
    lowering.final[layer] = (h, c)
    if explicit is None:
        layer._store_state(h, c)
    return layer._layer_outputs(outputs, h, c, args["mask"])


@contextlib.contextmanager
def lowered(model):
    """Within this context every ``ResetLSTM`` of ``model`` computes in stock TensorFlow ops
    (``portable_reset_lstm``) instead of the custom op; yields a ``_Lowering`` (used by the
    exporters for explicit state). Trace (``tf.function``, export, convert) inside it."""
    layers = reset_lstm_layers(model)
    for layer in layers:
        if "call" in vars(layer):
            raise RuntimeError(f"ResetLSTM '{layer.name}' is already lowered (nested "
                               "resetlstm.tf.portable.lowered contexts on one model)")
    lowering = _Lowering(layers)
    try:
        for layer in layers:  # an instance attribute: Keras looks `self.call` up at each call
            object.__setattr__(layer, "call", functools.partial(_lowered_call, lowering, layer))
        yield lowering
    finally:
        for layer in layers:
            if "call" in vars(layer):
                object.__delattr__(layer, "call")
