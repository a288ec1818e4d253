"""The reset-LSTM and reset-GRU in stock TensorFlow ops: what a portable export traces instead of
the custom ops.

``portable_reset_lstm`` has the contract of ``resetlstm.reset_lstm`` (DESIGN.md section 1:
Keras weight layout, gates i, f, c, o; a reset zeroes the row's h and c before its step, as a
select, so no NaN or Inf crosses it; Keras masking) built from ops every TensorFlow runtime has:
one MatMul for the input projection of all steps, then per step one MatMul over the state, the
gate math and a SelectV2 per reset / mask. One step is traced as it is; longer or unknown
sequences loop in a ``tf.while_loop`` (a TensorArray collects the outputs).

``portable_reset_gru`` is the same for ``resetlstm.reset_gru`` (both of Keras' forms).

``lowered(model)`` is a context manager under which every ``ResetLSTM`` and ``ResetGRU`` of
``model`` (nested models and wrappers included) computes through these: whatever traces the model
inside it (``tf.function``, ``model.export``, a converter) gets a graph without the custom ops.
The layer's own code does everything around the op (go_backwards with its backward resets,
masks and zero_output_for_mask, initial_state, stateful state variables, return_sequences /
return_state, dtype policies: the layers' ``_op_arguments`` and ``_layer_outputs``); the
equality with the fused layer is tested in tests/test_export.py. It lowers inference only: a call with ``training=True`` on a layer with
dropout is refused.
"""
from __future__ import annotations

import contextlib
import functools

import tensorflow as tf

from resetlstm.tf.model_layers import reset_layers

__all__ = ["portable_reset_lstm", "portable_reset_gru", "lowered"]

_HALF = (tf.float16, tf.bfloat16)


def _flags(value, name, caller):
    if value is None:
        return None
    t = tf.convert_to_tensor(value)
    if t.dtype == tf.bool:
        return t
    if not (t.dtype.is_integer or t.dtype.is_floating):
        raise ValueError(f"{caller}: `{name}` must be bool or 0/1 numbers, got "
                         f"{t.dtype.name}")
    return tf.not_equal(t, tf.zeros([], t.dtype))


def _select_resets(states, reset):
    """Zero the rows of every state tensor where ``reset`` ([B] bool or None) is True: a select,
    not a multiply, so nothing before a reset reaches past it (not even a NaN or Inf)."""
    if reset is None:
        return states
    r = reset[:, None]
    return tuple(tf.where(r, tf.zeros_like(s), s) for s in states)


def _lstm_step(xz, states, recurrent_kernel, drop, recurrent_bias=None):
    """One LSTM step for all rows. xz: [B, 4H] (x_t @ kernel + bias); states (h, c). Returns
    (h, c) after the step; the output is h. (No recurrent bias: the LSTM's one bias is in xz.)"""
    h, c = states
    z = xz + tf.matmul(h if drop is None else drop * h, recurrent_kernel)
    i, f, g, o = tf.split(z, 4, axis=1)
    c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c_new), c_new


def _gru_step(reset_after):
    """One GRU step of the given form (DESIGN.md "The GRU"; Keras' GRUCell): xz [B, 3H]
    (x_t @ kernel + input bias), states (h,), the recurrent bias [3H] with ``reset_after``.
    Returns (h,) after the step."""
    def step(xz, states, recurrent_kernel, drop, recurrent_bias=None):
        (h,) = states
        hd = h if drop is None else drop * h
        x_z, x_r, x_n = tf.split(xz, 3, axis=1)
        if reset_after:
            h_z, h_r, h_n = tf.split(tf.matmul(hd, recurrent_kernel) + recurrent_bias, 3, axis=1)
            z, r = tf.sigmoid(x_z + h_z), tf.sigmoid(x_r + h_r)
            n = tf.tanh(x_n + r * h_n)
        else:
            units = recurrent_kernel.shape[0]
            h_z, h_r = tf.split(tf.matmul(hd, recurrent_kernel[:, :2 * units]), 2, axis=1)
            z, r = tf.sigmoid(x_z + h_z), tf.sigmoid(x_r + h_r)
            n = tf.tanh(x_n + tf.matmul(r * hd, recurrent_kernel[:, 2 * units:]))
        return (z * h + (1.0 - z) * n,)
    return step


def _recurrence(caller, gates, cell_step, inputs, kernel, recurrent_kernel, bias, resets,
                initial_state, mask, time_major, recurrent_dropout_mask, states,
                recurrent_bias=None):
    """The loop both cells share, in stock ops: checks, the input projection of every step in
    one MatMul, then per step the reset select, ``cell_step`` and the mask select; one step
    traced as it is, more in a ``tf.while_loop`` with a TensorArray. ``bias`` is the input-side
    bias [gates * H], ``recurrent_bias`` (the GRU's, or None) goes to ``cell_step``; ``states``
    the number of state tensors. Returns (outputs, *final states) in the dtype of ``inputs``."""
    x = tf.convert_to_tensor(inputs)
    dtype = x.dtype
    if dtype not in (tf.float32, tf.float64) + _HALF:
        raise ValueError(f"{caller}: `inputs` must be float32, float64, float16 or bfloat16, "
                         f"got {dtype.name}")
    if x.shape.rank != 3:
        raise ValueError(f"{caller}: `inputs` must be rank 3 [B, T, I], got shape {x.shape}")
    work = tf.float64 if dtype == tf.float64 else tf.float32

    def widen(value):
        return tf.cast(tf.cast(value, dtype), work)

    kernel, recurrent_kernel, bias = map(widen, (kernel, recurrent_kernel, bias))
    if recurrent_bias is not None:
        recurrent_bias = widen(recurrent_bias)
    units = recurrent_kernel.shape[0]
    if units is None:
        raise ValueError(f"{caller}: `recurrent_kernel` needs a static shape [H, {gates}H]")
    resets, mask = _flags(resets, "resets", caller), _flags(mask, "mask", caller)
    if not time_major:  # loop over the leading axis
        x = tf.transpose(x, [1, 0, 2])
        resets = None if resets is None else tf.transpose(resets)
        mask = None if mask is None else tf.transpose(mask)
    steps, batch = x.shape[0], x.shape[1]
    shape = tf.shape(x)
    # the input projection of every step: one [T*B, I] x [I, gates*H] MatMul
    xz = tf.matmul(tf.reshape(widen(x), [-1, shape[2]]), kernel) + bias
    xz = tf.reshape(xz, tf.stack([shape[0], shape[1], gates * units]))
    if initial_state is None:
        state = (tf.zeros(tf.stack([shape[1], units]), work),) * states
    else:
        state = tuple(widen(s) for s in initial_state)
    drop = None if recurrent_dropout_mask is None else widen(recurrent_dropout_mask)
    y = tf.zeros_like(state[0])

    def one_step(t, state, y):
        state = _select_resets(state, None if resets is None else resets[t])
        new = cell_step(xz[t], state, recurrent_kernel, drop, recurrent_bias)
        if mask is None:
            return new, new[0]
        m = mask[t][:, None]  # a masked step carries the state and repeats the previous output
        return tuple(tf.where(m, a, b) for a, b in zip(new, state)), tf.where(m, new[0], y)

    if steps == 1:  # the streaming step: no loop
        state, y = one_step(0, state, y)
        outputs = y[None]
    elif steps == 0:
        outputs = tf.zeros(tf.stack([0, shape[1], units]), work)
    else:
        ta = tf.TensorArray(work, size=shape[0], element_shape=tf.TensorShape([batch, units]))

        def body(t, state, y, ta):
            state, y = one_step(t, state, y)
            return t + 1, state, y, ta.write(t, y)

        _, state, y, ta = tf.while_loop(lambda t, *_: t < shape[0], body,
                                        (tf.constant(0), state, y, ta))
        outputs = ta.stack()
    if not time_major:
        outputs = tf.transpose(outputs, [1, 0, 2])
    return tuple(tf.cast(t, dtype) for t in (outputs, *state))


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
        return _recurrence("portable_reset_lstm", 4, _lstm_step, inputs, kernel,
                           recurrent_kernel, bias, resets, initial_state, mask, time_major,
                           recurrent_dropout_mask, states=2)


def portable_reset_gru(inputs, kernel, recurrent_kernel, bias, resets=None, initial_state=None,
                       mask=None, time_major=False, recurrent_dropout_mask=None,
                       reset_after=True):
    """``resetlstm.reset_gru`` in stock TensorFlow ops (same arguments, same results, either
    form); as ``portable_reset_lstm`` for dtypes and loops. Returns ``(outputs, h_T)``."""
    caller = "portable_reset_gru"
    with tf.name_scope(caller):
        bias = tf.convert_to_tensor(bias)
        expected = 2 if reset_after else 1
        if bias.shape.rank != expected:
            raise ValueError(f"{caller}: with reset_after={bool(reset_after)} `bias` must be "
                             f"{'[2, 3H]' if reset_after else '[3H]'}, got shape {bias.shape}")
        if initial_state is not None and not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        return _recurrence(caller, 3, _gru_step(bool(reset_after)), inputs, kernel,
                           recurrent_kernel, bias[0] if reset_after else bias, resets,
                           initial_state, mask, time_major, recurrent_dropout_mask, states=1,
                           recurrent_bias=bias[1] if reset_after else None)


class _Lowering:
    """State of one ``lowered`` context: explicit states per layer to start from (instead of a
    stateful layer's variables) and the states each layer ended with ((h, c) for an LSTM, (h,)
    for a GRU)."""

    def __init__(self, layers):
        self.layers = layers
        self.explicit = {}   # layer -> state tensors
        self.final = {}      # layer -> state tensors of the last call


_PORTABLE = {"reset_lstm": portable_reset_lstm, "reset_gru": portable_reset_gru}


def _lowered_call(lowering, layer, sequences, initial_state=None, mask=None, training=False,
                  resets=None):
    """The layer's ``call`` with the fused op replaced by its stock-op twin (the layer's own
    semantics before and after the op), starting from the lowering's explicit state where it
    has one for the layer (whose variables are then left alone)."""
    if training is True and (layer.dropout or layer.recurrent_dropout):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': the portable lowering is for "
                         "inference; it was called with training=True and dropout. Train with "
                         "the fused op and export the trained model.")
    explicit = lowering.explicit.get(layer)
    if initial_state is None and explicit is not None:
        initial_state = list(explicit)
    args = layer._op_arguments(sequences, initial_state, mask, training, resets)
    outputs, *states = _PORTABLE[layer._OP](**args, **layer._op_options())
    lowering.final[layer] = tuple(states)
    if explicit is None:
        layer._store_state(states)
    return layer._layer_outputs(outputs, states, args["mask"])


@contextlib.contextmanager
def lowered(model):
    """Within this context every ``ResetLSTM`` and ``ResetGRU`` of ``model`` computes in stock
    TensorFlow ops (``portable_reset_lstm`` / ``portable_reset_gru``) instead of the custom
    ops; yields a ``_Lowering`` (used by the exporters for explicit state). Trace
    (``tf.function``, export, convert) inside it."""
    layers = reset_layers(model)
    for layer in layers:
        if "call" in vars(layer):
            raise RuntimeError(f"{type(layer).__name__} '{layer.name}' is already lowered "
                               "(nested resetlstm.tf.portable.lowered contexts on one model)")
    lowering = _Lowering(layers)
    try:
        for layer in layers:  # an instance attribute: Keras looks `self.call` up at each call
            object.__setattr__(layer, "call", functools.partial(_lowered_call, lowering, layer))
        yield lowering
    finally:
        for layer in layers:
            if "call" in vars(layer):
                object.__delattr__(layer, "call")
