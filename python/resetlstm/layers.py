"""`ResetLSTM`: a Keras 3 drop-in for `keras.layers.LSTM` on the fused reset-LSTM op.

Same weights (a `keras.layers.LSTMCell` named ``lstm_cell`` holds ``kernel``, ``recurrent_kernel``,
``bias``, Keras layout and gate order i, f, c, o), same constructor arguments and config keys as
`keras.layers.LSTM`, same masking. On top of that, ``call`` takes ``resets`` ([batch, timesteps]
bool): True at (b, t) zeroes row b's state before step t, and stateful layers keep one stream per
batch row with a per-row ``reset_state(rows)``.
"""
import numpy as np
import tensorflow as tf
import keras
from keras import ops

from resetlstm.ops import reset_lstm

__all__ = ["ResetLSTM"]

_TANH = (keras.activations.tanh, tf.tanh, tf.math.tanh, ops.tanh)
_SIGMOID = (keras.activations.sigmoid, tf.sigmoid, tf.math.sigmoid, ops.sigmoid)


class _StreamState(tf.Module):
    """The stateful layer's (h, c) variables. Kept out of Keras tracking, as keras.layers.LSTM
    does (the state is not a weight: not in `get_weights()`, not in `.keras` files, and its shape
    depends on the batch size), but tracked by TensorFlow so that `tf.saved_model.save` and
    `model.export` can capture it."""

    def __init__(self, h, c):
        super().__init__(name="stream_state")
        self.h, self.c = h, c


def _describe(fn):
    name = getattr(fn, "__name__", None)
    return repr(name) if name else repr(fn)


@keras.saving.register_keras_serializable(package="resetlstm")
class ResetLSTM(keras.layers.Layer):
    """Long Short-Term Memory layer whose state can be reset per batch row at any step.

    A drop-in for `keras.layers.LSTM` (same arguments, weights, config and masking) computed by
    the fused ``resetlstm.reset_lstm`` op, plus:

    - ``resets`` call argument, ``[batch, timesteps]`` bool (or 0/1): True at (b, t) zeroes row
      b's h and c before step t. In functional models pass a second
      ``keras.Input(shape=(timesteps,), dtype="bool")``.
    - ``stateful=True``: every batch row is one persistent stream; the final state of row b is
      row b's initial state in the next call. ``reset_state(rows=None)`` zeroes all rows, or only
      the given rows (indices or a bool vector [batch]). Calling with another batch size than the
      one the state was built for raises an error (no silent broadcast).

    Arguments keras.layers.LSTM has and this layer cannot honour raise a ValueError at
    construction: ``activation`` other than tanh, ``recurrent_activation`` other than sigmoid,
    ``recurrent_dropout``, ``go_backwards``, ``unroll``, ``use_cudnn=True``,
    ``zero_output_for_mask``. ``dropout`` is honoured exactly as keras.layers.LSTM does it: in
    training, one dropout mask per sequence on the inputs, the same at every step (drawn from the
    same seed generator, so ``seed`` gives the same mask as a stock LSTM with that seed).

    The op is not XLA-compilable: ``supports_jit`` is False, so
    ``model.compile(jit_compile="auto")`` does not use XLA.

    Call arguments:
      inputs: ``[batch, timesteps, features]``.
      resets: optional ``[batch, timesteps]`` bool / 0-1.
      initial_state: optional list ``[h0, c0]``, each ``[batch, units]``; overrides the stored
        state of a stateful layer for this call (the final state is stored as usual).
      mask: optional ``[batch, timesteps]`` bool, keras.layers.LSTM semantics (a masked step
        carries the state and repeats the previous output). Taken from the inputs' Keras mask
        (``Masking``, ``Embedding(mask_zero=True)``) when not given.
      training: Python bool; only used by ``dropout``.
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False,
                 return_state=False, go_backwards=False, stateful=False, unroll=False,
                 use_cudnn="auto", zero_output_for_mask=False, **kwargs):
        cls = type(self).__name__
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"{cls}: `units` must be a positive integer, received units={units!r}")
        act = keras.activations.get(activation)
        if act not in _TANH:
            raise ValueError(
                f"{cls} supports only activation='tanh' (the fused kernel computes tanh), "
                f"received activation={_describe(act)}. Use keras.layers.LSTM for other "
                "activations.")
        rec_act = keras.activations.get(recurrent_activation)
        if rec_act not in _SIGMOID:
            raise ValueError(
                f"{cls} supports only recurrent_activation='sigmoid' (the fused kernel computes "
                f"sigmoid), received recurrent_activation={_describe(rec_act)}. Use "
                "keras.layers.LSTM for other recurrent activations.")
        if recurrent_dropout:
            raise ValueError(
                f"{cls} does not support `recurrent_dropout` (the fused kernel has no dropout on "
                "the recurrent state): expected 0, received "
                f"recurrent_dropout={recurrent_dropout!r}")
        if not (isinstance(dropout, (int, float, np.floating)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"{cls}: `dropout` must be a float in [0, 1), "
                             f"received dropout={dropout!r}")
        for name, value in (("go_backwards", go_backwards), ("unroll", unroll),
                            ("zero_output_for_mask", zero_output_for_mask)):
            if value:
                hint = (" Reverse the time axis of the inputs (and resets/mask) yourself, e.g. "
                        "with keras.ops.flip(x, axis=1)." if name == "go_backwards" else "")
                raise ValueError(f"{cls} does not support `{name}`: expected False, received "
                                 f"{name}={value!r}.{hint}")
        if use_cudnn not in ("auto", False):
            raise ValueError(f"{cls} never uses cuDNN (it runs its own fused kernel): `use_cudnn` "
                             f"must be 'auto' or False, received use_cudnn={use_cudnn!r}")
        implementation = kwargs.pop("implementation", 2)
        if implementation not in (1, 2):  # keras' two matmul layouts; the same math here
            raise ValueError(f"{cls}: `implementation` must be 1 or 2, "
                             f"received implementation={implementation!r}")
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        # The weights live in a stock LSTMCell, exactly as in keras.layers.LSTM: same names,
        # shapes, initializers (incl. unit_forget_bias), regularizers, constraints and the seed
        # generator that draws the dropout mask.
        self.cell = keras.layers.LSTMCell(
            units, activation=activation, recurrent_activation=recurrent_activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias, kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint, dropout=dropout, seed=seed,
            dtype=kwargs.get("dtype"), trainable=kwargs.get("trainable", True),
            name="lstm_cell")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.stateful = bool(stateful)
        self.use_cudnn = use_cudnn
        self.supports_masking = True
        self.supports_jit = False  # custom op: not XLA-compilable
        self._stream = None  # _StreamState once a stateful layer is built

    # ----------------------------------------------------------------- LSTM-compatible attributes
    units = property(lambda self: self.cell.units)
    activation = property(lambda self: self.cell.activation)
    recurrent_activation = property(lambda self: self.cell.recurrent_activation)
    use_bias = property(lambda self: self.cell.use_bias)
    unit_forget_bias = property(lambda self: self.cell.unit_forget_bias)
    kernel_initializer = property(lambda self: self.cell.kernel_initializer)
    recurrent_initializer = property(lambda self: self.cell.recurrent_initializer)
    bias_initializer = property(lambda self: self.cell.bias_initializer)
    kernel_regularizer = property(lambda self: self.cell.kernel_regularizer)
    recurrent_regularizer = property(lambda self: self.cell.recurrent_regularizer)
    bias_regularizer = property(lambda self: self.cell.bias_regularizer)
    kernel_constraint = property(lambda self: self.cell.kernel_constraint)
    recurrent_constraint = property(lambda self: self.cell.recurrent_constraint)
    bias_constraint = property(lambda self: self.cell.bias_constraint)
    dropout = property(lambda self: self.cell.dropout)
    recurrent_dropout = property(lambda self: 0.0)
    go_backwards = property(lambda self: False)
    unroll = property(lambda self: False)
    zero_output_for_mask = property(lambda self: False)
    state_size = property(lambda self: [self.units, self.units])

    @property
    def states(self):
        """The stateful layer's ``[h, c]`` variables (None when not stateful or not built)."""
        return None if self._stream is None else [self._stream.h, self._stream.c]

    # ----------------------------------------------------------------- build / shapes / masks
    def _fail(self, what):
        raise ValueError(f"{type(self).__name__} '{self.name}': {what}")

    def _check_shapes(self, inputs_shape, resets_shape=None, mask_shape=None,
                      initial_state_shape=None):
        """Static shape checks shared by symbolic (functional) and real calls; unknown
        dimensions pass (the op checks them at run time)."""
        def agree(shape, expected):
            return len(shape) == len(expected) and all(
                a is None or b is None or a == b for a, b in zip(shape, expected))

        if inputs_shape is None or len(inputs_shape) != 3 or inputs_shape[-1] is None:
            self._fail("`inputs` must have rank 3 [batch, timesteps, features] with a known "
                       "feature dimension, received shape "
                       f"{None if inputs_shape is None else tuple(inputs_shape)}")
        inputs_shape = tuple(inputs_shape)
        if self.cell.built and inputs_shape[-1] != self.cell.kernel.shape[0]:
            self._fail(f"`inputs` must have {self.cell.kernel.shape[0]} features (the layer was "
                       f"built for that), received shape {inputs_shape}")
        for name, shape in (("resets", resets_shape), ("mask", mask_shape)):
            if shape is not None and not agree(tuple(shape), inputs_shape[:2]):
                self._fail(f"`{name}` must have shape [batch, timesteps] = {inputs_shape[:2]} "
                           f"(from `inputs` of shape {inputs_shape}), received shape "
                           f"{tuple(shape)}")
        if initial_state_shape is not None:
            if len(initial_state_shape) != 2:
                self._fail("`initial_state` must be a list [h0, c0] of two [batch, units] "
                           f"tensors, received {len(initial_state_shape)} tensor(s)")
            for name, shape in zip(("h0", "c0"), initial_state_shape):
                if not agree(tuple(shape), (inputs_shape[0], self.units)):
                    self._fail(f"`initial_state` {name} must have shape [batch, units] = "
                               f"{(inputs_shape[0], self.units)}, received shape {tuple(shape)}")
        if self._stream is not None and inputs_shape[0] is not None:
            expected = int(self._stream.h.shape[0])
            if inputs_shape[0] != expected:
                self._fail(f"the layer is stateful with state for batch size {expected} (one "
                           "stream per row); `inputs` must have that batch size, received batch "
                           f"size {inputs_shape[0]} (inputs shape {inputs_shape}). Use the same "
                           "batch size, or build a new layer for the new one.")

    def build(self, inputs_shape):
        self._check_shapes(inputs_shape)
        batch = inputs_shape[0]
        if not self.cell.built:
            self.cell.build((batch, inputs_shape[-1]))
        if self.stateful and self._stream is None:
            if batch is None:
                self._fail("stateful=True needs a static batch size (one stream per batch row): "
                           "use keras.Input(batch_shape=(batch, timesteps, features)); received "
                           f"inputs shape {tuple(inputs_shape)}")
            self._create_state(int(batch))

    def _create_state(self, batch_size):
        def var(name):
            return keras.Variable(np.zeros((batch_size, self.units)), trainable=False,
                                  dtype=self.variable_dtype, name=name)

        with keras.name_scope(self.name, caller=self):
            self._stream = _StreamState(var("state_h"), var("state_c"))

    def compute_output_shape(self, inputs_shape, resets_shape=None, initial_state_shape=None):
        self._check_shapes(inputs_shape, resets_shape, None, initial_state_shape)
        batch, steps = inputs_shape[0], inputs_shape[1]
        out = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return out, (batch, self.units), (batch, self.units)
        return out

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        return [out, None, None] if self.return_state else out

    # ----------------------------------------------------------------- call
    def call(self, inputs, resets=None, initial_state=None, mask=None, training=None):
        if mask is None:
            # Keras fills `mask` itself only when `inputs` is the sole tensor argument.
            mask = getattr(inputs, "_keras_mask", None)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        inputs = tf.convert_to_tensor(inputs)
        resets = None if resets is None else tf.convert_to_tensor(resets)
        mask = None if mask is None else tf.convert_to_tensor(mask)
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]  # reported by _check_shapes
            initial_state = [tf.cast(tf.convert_to_tensor(s), inputs.dtype) for s in initial_state]
        self._check_shapes(inputs.shape, None if resets is None else resets.shape,
                           None if mask is None else mask.shape,
                           None if initial_state is None else [s.shape for s in initial_state])

        if self.stateful:
            if self._stream is None:
                self.build(inputs.shape)
            if inputs.shape[0] is None:  # batch unknown while tracing: check at run time
                expected = int(self._stream.h.shape[0])
                check = tf.debugging.assert_equal(
                    tf.shape(inputs)[0], expected, summarize=1,
                    message=f"{type(self).__name__} '{self.name}': the layer is stateful with "
                            f"state for batch size {expected} (one stream per row); `inputs` "
                            "must have that batch size. Received batch size (x) vs expected (y)")
                with tf.control_dependencies([check]):
                    inputs = tf.identity(inputs)
            if initial_state is None:
                initial_state = [tf.cast(self._stream.h.value, inputs.dtype),
                                 tf.cast(self._stream.c.value, inputs.dtype)]

        if training and self.cell.dropout > 0:
            # As keras.layers.LSTM: one mask per sequence from the cell's seed generator, on the
            # inputs at every step.
            dp_mask = self.cell.get_dropout_mask(inputs[:, 0, :])
            self.cell.reset_dropout_mask()
            inputs = inputs * tf.expand_dims(tf.cast(dp_mask, inputs.dtype), 1)

        dtype = inputs.dtype
        bias = (tf.cast(self.cell.bias, dtype) if self.use_bias
                else tf.zeros([4 * self.units], dtype=dtype))
        outputs, h, c = reset_lstm(inputs, tf.cast(self.cell.kernel, dtype),
                                   tf.cast(self.cell.recurrent_kernel, dtype), bias,
                                   resets=resets, initial_state=initial_state, mask=mask)
        if self.stateful:
            self._stream.h.assign(tf.cast(h, self._stream.h.dtype))
            self._stream.c.assign(tf.cast(c, self._stream.c.dtype))
        output = outputs if self.return_sequences else outputs[:, -1]
        if self.return_state:
            return output, h, c
        return output

    # ----------------------------------------------------------------- stateful streams
    def reset_state(self, rows=None):
        """Zero the stored state of all rows (``rows=None``), or of the given rows: integer
        indices (negative ones count from the end) or a bool vector [batch] (True = reset).
        Does nothing for a layer that is not stateful or not built yet."""
        if self._stream is None:
            return
        batch = int(self._stream.h.shape[0])
        if rows is None:
            for v in (self._stream.h, self._stream.c):
                v.assign(tf.zeros_like(v.value))
            return
        reset = self._rows_to_reset(rows, batch)
        for v in (self._stream.h, self._stream.c):
            value = tf.convert_to_tensor(v.value)
            v.assign(tf.where(reset[:, None], tf.zeros_like(value), value))

    def _rows_to_reset(self, rows, batch):
        name = f"{type(self).__name__} '{self.name}'.reset_state"
        if isinstance(rows, (list, tuple)) and not rows:
            rows = np.zeros([0], np.int64)
        rows_t = tf.convert_to_tensor(rows)
        if rows_t.dtype == tf.bool:
            if tuple(rows_t.shape) != (batch,):
                raise ValueError(f"{name}: a bool `rows` must have shape [batch] = ({batch},), "
                                 f"received shape {tuple(rows_t.shape)}")
            return rows_t
        if not rows_t.dtype.is_integer or rows_t.shape.rank not in (0, 1):
            raise ValueError(f"{name}: `rows` must be None, integer row indices (a scalar or "
                             f"a vector) or a bool vector of shape ({batch},); received dtype "
                             f"{rows_t.dtype.name} shape {tuple(rows_t.shape)}")
        index = tf.cast(tf.reshape(rows_t, [-1]), tf.int64)
        if tf.executing_eagerly():
            values = index.numpy()
            bad = values[(values < -batch) | (values >= batch)]
            if bad.size:
                raise ValueError(f"{name}: `rows` indices must be in [-{batch}, {batch}) for the "
                                 f"state's batch size {batch}, received {bad.tolist()}")
        else:
            tf.debugging.assert_less(index, tf.constant(batch, tf.int64),
                                     message=f"{name}: `rows` index >= batch size {batch}")
            tf.debugging.assert_greater_equal(index, tf.constant(-batch, tf.int64),
                                              message=f"{name}: `rows` index < -{batch}")
        index = tf.where(index < 0, index + batch, index)
        hits = tf.scatter_nd(index[:, None], tf.ones_like(index, dtype=tf.int32), [batch])
        return hits > 0  # repeated indices add up

    def reset_states(self, rows=None):
        """Alias of :meth:`reset_state` (keras.layers.LSTM compatibility)."""
        self.reset_state(rows)

    # ----------------------------------------------------------------- config
    def get_config(self):
        ser = keras.saving.serialize_keras_object
        config = {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": False,
            "stateful": self.stateful,
            "unroll": False,
            "zero_output_for_mask": False,
            "units": self.units,
            "activation": "tanh",  # the only ones accepted (any spelling of them)
            "recurrent_activation": "sigmoid",
            "use_bias": self.use_bias,
            "kernel_initializer": ser(self.kernel_initializer),
            "recurrent_initializer": ser(self.recurrent_initializer),
            "bias_initializer": ser(self.bias_initializer),
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_regularizer": ser(self.kernel_regularizer),
            "recurrent_regularizer": ser(self.recurrent_regularizer),
            "bias_regularizer": ser(self.bias_regularizer),
            "activity_regularizer": ser(self.activity_regularizer),
            "kernel_constraint": ser(self.kernel_constraint),
            "recurrent_constraint": ser(self.recurrent_constraint),
            "bias_constraint": ser(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": 0.0,
            "seed": self.cell.seed,
        }
        return {**super().get_config(), **config}
