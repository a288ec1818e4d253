"""`ResetLSTM`, `ResetGRU` and `Bidirectional`: Keras 3 drop-ins for `keras.layers.LSTM`,
`keras.layers.GRU` and `keras.layers.Bidirectional` on the fused ops.

`ResetLSTM` is a subclass of `keras.layers.LSTM`: same constructor arguments, weights (a
`keras.layers.LSTMCell` named ``lstm_cell`` holds ``kernel``, ``recurrent_kernel``, ``bias``, Keras
layout and gate order i, f, c, o), config, masking and call signature, so ``isinstance`` checks and
Keras' own wrappers treat it as an LSTM; `ResetGRU` is the same for `keras.layers.GRU` (a
``gru_cell``, gates z, r, h, both ``reset_after`` forms). On top of that ``call`` takes ``resets``
([batch, timesteps] bool): True at (b, t) zeroes row b's state before step t, in forward time
whatever the direction; stateful layers keep one stream per batch row with a per-row
``reset_state(rows)``. Both share one implementation (``_ResetRNN``); a cell adds its state
names and its op.
"""
import numpy as np
import keras
from keras import ops

from resetlstm.keras import _backend as _keras_backend

try:  # Keras 3.6+: the mask attached to a tensor, on every backend
    from keras.src.backend.common.masking import get_keras_mask as _get_keras_mask
except ImportError:  # pragma: no cover
    def _get_keras_mask(x):
        return getattr(x, "_keras_mask", None)

__all__ = ["ResetLSTM", "ResetGRU", "Bidirectional", "backward_resets"]

_TANH = (keras.activations.tanh, ops.tanh)
_SIGMOID = (keras.activations.sigmoid, ops.sigmoid)
if _keras_backend.backend() == "tensorflow":
    import tensorflow as tf

    import resetlstm.tf.ops  # noqa: F401  registers the op, so SavedModels of the layer load

    _TANH += (tf.tanh, tf.math.tanh)
    _SIGMOID += (tf.sigmoid, tf.math.sigmoid)


def _describe(fn):
    name = getattr(fn, "__name__", None)
    return repr(name) if name else repr(fn)


def _check_rate(cls, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{cls}: `{name}` must be a float in [0, 1), received {name}={value!r}")


def backward_resets(resets):
    """The resets of the backward direction, for the time-reversed sequence.

    ``resets[b, t]`` means "a new document starts at step t" in forward time. Read backwards,
    a document starts at its *last* step, so the reversed sequence (reversed step s is forward
    step T-1-s) resets before reversed step s when a document starts at forward step T-s, the
    step after it: ``result[:, s] = resets[:, T-s]`` for s >= 1, and ``result[:, 0] = False``
    (the chunk's last step continues from the initial state). ``resets``: [batch, timesteps]
    (a tensor of the Keras backend, or anything it converts).
    """
    resets = ops.convert_to_tensor(resets)
    flipped = ops.flip(resets, axis=1)
    return ops.concatenate([ops.zeros_like(flipped[:, :1]), flipped[:, :-1]], axis=1)


def _tf_executing_eagerly():
    import tensorflow as tf

    return tf.executing_eagerly()


def _is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


class _ResetRNN:
    """What ``ResetLSTM`` and ``ResetGRU`` share, mixed in before the Keras layer they subclass:
    argument checks, shapes and masks, the stateful streams with per-row resets, dropout masks,
    go_backwards, and the call through the backend's fused op. A cell names its states
    (``_STATES``), its op (``_OP``) and the Keras layer it stands in for (``_ORIGINAL``), and
    supplies ``_zero_bias`` (and ``_op_options``, the op's own keyword arguments)."""

    _STATES = ("h",)   # the state tensors, in the order the op returns them after the outputs
    _ORIGINAL = ""     # the Keras layer this one stands in for, for messages
    _OP = ""           # the name of the cell's op in every front end

    def _init_reset_rnn(self, units, activation, recurrent_activation, dropout,
                        recurrent_dropout, use_cudnn, kwargs):
        """Checks the arguments the fused kernels constrain, before the Keras constructor runs;
        returns ``implementation`` (popped from ``kwargs``)."""
        cls = type(self).__name__
        _keras_backend.check_supported(cls, self._ORIGINAL)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"{cls}: `units` must be a positive integer, received units={units!r}")
        act = keras.activations.get(activation)
        if act not in _TANH:
            raise ValueError(
                f"{cls} supports only activation='tanh' (the fused kernel computes tanh), "
                f"received activation={_describe(act)}. Use {self._ORIGINAL} for other "
                "activations.")
        rec_act = keras.activations.get(recurrent_activation)
        if rec_act not in _SIGMOID:
            raise ValueError(
                f"{cls} supports only recurrent_activation='sigmoid' (the fused kernel computes "
                f"sigmoid), received recurrent_activation={_describe(rec_act)}. Use "
                f"{self._ORIGINAL} for other recurrent activations.")
        _check_rate(cls, "dropout", dropout)
        _check_rate(cls, "recurrent_dropout", recurrent_dropout)
        if use_cudnn not in ("auto", True, False):
            raise ValueError(f"{cls}: `use_cudnn` must be 'auto', True or False, received "
                             f"use_cudnn={use_cudnn!r}")
        implementation = kwargs.pop("implementation", 2)
        # keras' matmul layouts (0: Keras 2's legacy value, still accepted): the same math here
        if isinstance(implementation, bool) or implementation not in (0, 1, 2):
            raise ValueError(f"{cls}: `implementation` must be 0, 1 or 2, "
                             f"received implementation={implementation!r}")
        return implementation

    def _finish_init(self, return_sequences, return_state, go_backwards, stateful, unroll,
                     zero_output_for_mask):
        """After the Keras constructor: plain bools, and the checks and masking of this layer."""
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        # The layer checks its inputs itself, with messages that name the argument.
        self.input_spec = None
        self.supports_masking = True
        # The TF op is not XLA-compilable; JAX's op is an XLA FFI call (compiles under jit);
        # the torch op is a torch.library custom op (traced by torch.compile).
        self.supports_jit = _keras_backend.backend() != "tensorflow"

    # keras.layers.RNN keeps its state variables in `states`; this layer keeps them in a
    # _keras_backend.StreamState (TF-tracked on TensorFlow) and shows them here.
    @property
    def states(self):
        """The stateful layer's state variables, ``[h, c]`` (LSTM) or ``[h]`` (GRU); None when
        not stateful or not built."""
        return None if self._stream is None else list(self._stream.state_variables)

    @states.setter
    def states(self, value):
        if value is not None:
            raise AttributeError(f"{type(self).__name__}.states is read-only; use reset_state()")

    @property
    def variables(self):
        """Keras' ``variables`` (weights and seed state), on JAX with the stream state too: JAX
        trainers run stateless steps that carry only ``variables`` from one batch to the next,
        so without it a stateful layer would restart from zeros at every batch of ``fit``,
        ``evaluate`` and ``predict`` (as keras.layers.LSTM does there). The state stays out of
        ``weights``, ``get_weights()`` and ``.keras`` files on every backend."""
        variables = super().variables
        if self._stream is not None and _keras_backend.backend() == "jax":
            variables = variables + list(self._stream.state_variables)
        return variables

    _stream = None  # a _keras_backend.StreamState once a stateful layer is built

    # ----------------------------------------------------------------- build / shapes / masks
    def _fail(self, what):
        raise ValueError(f"{type(self).__name__} '{self.name}': {what}")

    def _check_shapes(self, sequences_shape, resets_shape=None, mask_shape=None,
                      initial_state_shape=None):
        """Static shape checks shared by symbolic (functional) and real calls; unknown
        dimensions pass (the op checks them at run time)."""
        def agree(shape, expected):
            return len(shape) == len(expected) and all(
                a is None or b is None or a == b for a, b in zip(shape, expected))

        if sequences_shape is None or len(sequences_shape) != 3 or sequences_shape[-1] is None:
            self._fail("`sequences` (the inputs) must have rank 3 [batch, timesteps, features] "
                       "with a known feature dimension, received shape "
                       f"{None if sequences_shape is None else tuple(sequences_shape)}")
        sequences_shape = tuple(sequences_shape)
        if self.cell.built and sequences_shape[-1] != self.cell.kernel.shape[0]:
            self._fail(f"`sequences` (the inputs) must have {self.cell.kernel.shape[0]} features "
                       f"(the layer was built for that), received shape {sequences_shape}")
        for name, shape in (("resets", resets_shape), ("mask", mask_shape)):
            if shape is not None and not agree(tuple(shape), sequences_shape[:2]):
                self._fail(f"`{name}` must have shape [batch, timesteps] = "
                           f"{sequences_shape[:2]} (from the inputs of shape {sequences_shape}), "
                           f"received shape {tuple(shape)}")
        if initial_state_shape is not None:
            names = [f"{state}0" for state in self._STATES]
            if len(initial_state_shape) != len(names):
                self._fail(f"`initial_state` must be a list [{', '.join(names)}] of "
                           f"{len(names)} [batch, units] tensor(s), received "
                           f"{len(initial_state_shape)} tensor(s)")
            for name, shape in zip(names, initial_state_shape):
                if not agree(tuple(shape), (sequences_shape[0], self.units)):
                    self._fail(f"`initial_state` {name} must have shape [batch, units] = "
                               f"{(sequences_shape[0], self.units)}, received shape "
                               f"{tuple(shape)}")
        if self._stream is not None and sequences_shape[0] is not None:
            expected = int(self._stream.h.shape[0])
            if sequences_shape[0] != expected:
                self._fail(f"the layer is stateful with state for batch size {expected} (one "
                           "stream per row); the inputs must have that batch size, received "
                           f"batch size {sequences_shape[0]} (inputs shape {sequences_shape}). "
                           "Use the same batch size, or build a new layer for the new one.")

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_shapes(sequences_shape)
        batch = sequences_shape[0]
        if not self.cell.built:
            self.cell.build((batch, sequences_shape[-1]))
        if self.stateful and self._stream is None:
            if batch is None:
                self._fail("stateful=True needs a static batch size (one stream per batch row): "
                           "use keras.Input(batch_shape=(batch, timesteps, features)); received "
                           f"inputs shape {tuple(sequences_shape)}")
            self._create_state(int(batch))

    def _create_state(self, batch_size):
        def var(name):
            # on_read: under a tf.distribute strategy each replica keeps its own copy, the
            # state of its own streams (no other strategy makes sense for per-row state); read
            # from outside the replicas, the first replica's copy is shown.
            return keras.Variable(np.zeros((batch_size, self.units)), trainable=False,
                                  dtype=self.variable_dtype, name=name,
                                  synchronization="on_read", aggregation="only_first_replica")

        with keras.name_scope(self.name, caller=self):
            self._stream = _keras_backend.stream_state(
                *(var(f"state_{state}") for state in self._STATES))

    def compute_output_shape(self, sequences_shape, initial_state_shape=None, resets_shape=None):
        self._check_shapes(sequences_shape, resets_shape, None, initial_state_shape)
        batch, steps = sequences_shape[0], sequences_shape[1]
        out = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return (out,) + tuple((batch, self.units) for _ in self._STATES)
        return out

    def compute_mask(self, sequences, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        return [out] + [None] * len(self._STATES) if self.return_state else out

    # ----------------------------------------------------------------- call
    def _dropout_masks(self, sequences, training):
        """(input mask [B, I] or None, recurrent mask [B, H] or None) for this call: in
        training, one draw per call and rate from the cell's seed generator, input mask first
        (the order keras.layers.RNN draws them in). Inference draws nothing, so an exported
        serving function holds no random op and no seed state."""
        def draw(rate, width):
            if not (training and rate):
                return None
            ones = ops.ones((ops.shape(sequences)[0], width), sequences.dtype)
            return keras.random.dropout(ones, rate=rate, seed=self.cell.seed_generator)

        return draw(self.cell.dropout, ops.shape(sequences)[2]), draw(self.cell.recurrent_dropout,
                                                                        self.units)

    def call(self, sequences, initial_state=None, mask=None, training=False, resets=None):
        args = self._op_arguments(sequences, initial_state, mask, training, resets)
        outputs, *states = self._op()(**args, **self._op_options())
        self._store_state(states)
        return self._layer_outputs(outputs, states, args["mask"])

    def _op(self):
        """The fused op ``_OP`` on the backend's tensors."""
        return _keras_backend.fused_op(self._OP)

    def _op_options(self):
        """The cell's own keyword arguments of its op (the GRU's ``reset_after``)."""
        return {}

    def _zero_bias(self, dtype):
        """The op's bias for ``use_bias=False``."""
        raise NotImplementedError

    def _op_arguments(self, sequences, initial_state, mask, training, resets):
        """The layer's semantics up to the fused op: the Keras mask, dtypes, shape checks, a
        stateful layer's stored state, the dropout masks, go_backwards. Returns the keyword
        arguments of the cell's op (``reset_lstm`` or ``reset_gru`` of any backend, or of
        ``resetlstm.tf.portable``) for this call, but for ``_op_options``."""
        if mask is None:
            # Keras fills `mask` itself only when `sequences` is the sole tensor argument.
            mask = _get_keras_mask(sequences)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        sequences = ops.convert_to_tensor(sequences)
        if not _is_float(sequences.dtype):  # integer inputs compute in the layer's dtype, as
            sequences = ops.cast(sequences, self.compute_dtype)  # keras' matmuls promote them
        dtype = keras.backend.standardize_dtype(sequences.dtype)
        resets = None if resets is None else ops.convert_to_tensor(resets)
        mask = None if mask is None else ops.convert_to_tensor(mask)
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]  # reported by _check_shapes
            initial_state = [ops.cast(ops.convert_to_tensor(s), dtype) for s in initial_state]
        self._check_shapes(sequences.shape, None if resets is None else resets.shape,
                           None if mask is None else mask.shape,
                           None if initial_state is None else [s.shape for s in initial_state])

        if self.stateful:
            if self._stream is None:
                self.build(sequences.shape)
            if sequences.shape[0] is None:  # batch unknown while tracing (TF): check at run time
                sequences = self._assert_stream_batch(sequences)
            if initial_state is None:
                # copies: the op's backward reads its initial state after _store_state has
                # overwritten the variables in place (torch)
                initial_state = [ops.copy(ops.cast(v.value, dtype))
                                 for v in self._stream.state_variables]

        input_mask, recurrent_mask = self._dropout_masks(sequences, training)
        if input_mask is not None:  # the same mask on the inputs at every step
            sequences = sequences * ops.expand_dims(input_mask, 1)
        if self.go_backwards:
            sequences = ops.flip(sequences, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
            resets = None if resets is None else backward_resets(resets)

        bias = ops.cast(self.cell.bias, dtype) if self.use_bias else self._zero_bias(dtype)
        return dict(inputs=sequences, kernel=ops.cast(self.cell.kernel, dtype),
                    recurrent_kernel=ops.cast(self.cell.recurrent_kernel, dtype), bias=bias,
                    resets=resets, initial_state=initial_state, mask=mask,
                    recurrent_dropout_mask=recurrent_mask)

    def _store_state(self, states):
        """A stateful layer keeps the final state (the op's, in ``_STATES`` order) for its next
        call."""
        if self.stateful:
            for v, value in zip(self._stream.state_variables, states):
                v.assign(ops.cast(value, v.dtype))

    def _layer_outputs(self, outputs, states, mask):
        """The layer's result from the op's outputs and final states; `mask` as the op got
        it."""
        if self.zero_output_for_mask and mask is not None:
            outputs = ops.where(ops.expand_dims(ops.cast(mask, "bool"), -1), outputs,
                                ops.zeros_like(outputs))
        output = outputs if self.return_sequences else outputs[:, -1]
        if self.return_state:
            return (output, *states)
        return output

    def _assert_stream_batch(self, sequences):
        """`sequences`, with a run-time check of its batch size against the stateful state's
        (a TF graph traced with an unknown batch size; other backends trace static shapes)."""
        import tensorflow as tf

        expected = int(self._stream.h.shape[0])
        check = tf.debugging.assert_equal(
            tf.shape(sequences)[0], expected, summarize=1,
            message=f"{type(self).__name__} '{self.name}': the layer is stateful with "
                    f"state for batch size {expected} (one stream per row); the inputs "
                    "must have that batch size. Received batch size (x) vs expected (y)")
        with tf.control_dependencies([check]):
            return tf.identity(sequences)

    # ----------------------------------------------------------------- stateful streams
    def reset_state(self, rows=None):
        """Zero the stored state of all rows (``rows=None``), or of the given rows: integer
        indices (negative ones count from the end) or a bool vector [batch] (True = reset).
        Does nothing for a layer that is not stateful or not built yet.

        Under a ``tf.distribute`` strategy with R replicas (called outside ``strategy.run``),
        each replica holds the state of its own ``batch`` streams and ``rows`` are global
        stream indices in ``[0, R * batch)``: stream ``g * batch + i`` is row i of replica g
        (the rule of ``resetlstm.data.PackedDocuments.distribute``)."""
        if self._stream is None:
            return
        batch = int(self._stream.h.shape[0])
        if rows is None:
            for v in self._stream.state_variables:
                v.assign(ops.zeros_like(v.value))
            return
        if _keras_backend.backend() != "tensorflow":
            self._reset_rows(self._rows_to_reset(rows, batch))
            return
        import tensorflow as tf

        # the strategy the state was created under (from any scope), else the current one
        strategy = getattr(self._stream.h.value, "distribute_strategy", None) \
            or tf.distribute.get_strategy()
        replicas = strategy.num_replicas_in_sync
        context = tf.distribute.get_replica_context()
        if replicas == 1 or (context is not None and context.strategy is strategy):
            # no strategy, or called by one replica (inside strategy.run): its own rows
            self._reset_rows(self._rows_to_reset(rows, batch))
            return
        # Under a strategy every replica holds the state of its own `batch` streams (the
        # variables are sync-on-read): rows are global stream indices, replica g owns
        # [g * batch, (g + 1) * batch) (resetlstm.data.PackedDocuments.distribute's rule), and
        # each replica zeroes its own rows.
        reset = self._rows_to_reset(rows, replicas * batch)

        def per_replica():
            g = tf.distribute.get_replica_context().replica_id_in_sync_group
            self._reset_rows(tf.reshape(reset, [replicas, batch])[g])

        strategy.run(per_replica)

    def _reset_rows(self, reset):
        for v in self._stream.state_variables:
            value = ops.convert_to_tensor(v.value)
            v.assign(ops.where(reset[:, None], ops.zeros_like(value), value))

    def _rows_to_reset(self, rows, batch):
        """``rows`` (indices or a bool vector) as a bool vector [batch] of the backend. Checked
        eagerly where the values are known, else (inside a TF graph) by assertions."""
        name = f"{type(self).__name__} '{self.name}'.reset_state"
        if isinstance(rows, (list, tuple)) and not rows:
            rows = np.zeros([0], np.int64)
        tensor = ops.convert_to_tensor(rows)
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if dtype == "bool":
            if tuple(tensor.shape) != (batch,):
                raise ValueError(f"{name}: a bool `rows` must have shape [batch] = ({batch},), "
                                 f"received shape {tuple(tensor.shape)}")
            return tensor
        if "int" not in dtype or len(tensor.shape) not in (0, 1):
            raise ValueError(f"{name}: `rows` must be None, integer row indices (a scalar or "
                             f"a vector) or a bool vector of shape ({batch},); received dtype "
                             f"{dtype} shape {tuple(tensor.shape)}")
        index = ops.reshape(ops.cast(tensor, "int64"), [-1])
        if _keras_backend.backend() == "tensorflow" and not _tf_executing_eagerly():
            import tensorflow as tf

            tf.debugging.assert_less(index, tf.constant(batch, tf.int64),
                                     message=f"{name}: `rows` index >= batch size {batch}")
            tf.debugging.assert_greater_equal(index, tf.constant(-batch, tf.int64),
                                              message=f"{name}: `rows` index < -{batch}")
        else:
            values = ops.convert_to_numpy(index)
            bad = values[(values < -batch) | (values >= batch)]
            if bad.size:
                raise ValueError(f"{name}: `rows` indices must be in [-{batch}, {batch}) for "
                                 f"the state's batch size {batch}, received {bad.tolist()}")
        index = ops.where(index < 0, index + batch, index)
        hits = ops.scatter(index[:, None], ops.ones_like(index, dtype="int32"), [batch])
        return hits > 0  # repeated indices add up

    def reset_states(self, rows=None):
        """Alias of :meth:`reset_state` (keras.layers.LSTM / GRU compatibility)."""
        self.reset_state(rows)

    # ----------------------------------------------------------------- config
    def get_config(self):
        # the Keras layer's config (every constructor argument but use_cudnn, which Keras does
        # not serialize) plus use_cudnn, so the whole configuration round-trips.
        return {**super().get_config(), "use_cudnn": self.use_cudnn}


@keras.saving.register_keras_serializable(package="resetlstm")
class ResetLSTM(_ResetRNN, keras.layers.LSTM):
    """Long Short-Term Memory layer whose state can be reset per batch row at any step.

    A drop-in for `keras.layers.LSTM` (a subclass of it: every constructor argument, the weights,
    config, masking and call signature are the same) computed by the fused
    ``resetlstm.reset_lstm`` op, plus:

    - ``resets`` call argument, ``[batch, timesteps]`` bool (or 0/1): True at (b, t) zeroes row
      b's h and c before step t. In functional models pass a second
      ``keras.Input(shape=(timesteps,), dtype="bool")``. ``resets`` always speaks forward time
      ("a document starts at step t"); with ``go_backwards=True`` the layer reads every document
      from its last step to its first and starts it from a zero state there (see
      ``backward_resets``), so no state crosses a document boundary in either direction.
    - ``stateful=True``: every batch row is one persistent stream; the final state of row b is
      row b's initial state in the next call. ``reset_state(rows=None)`` zeroes all rows, or only
      the given rows (indices or a bool vector [batch]). Calling with another batch size than the
      one the state was built for raises an error (no silent broadcast).

    Every argument of keras.layers.LSTM is honoured:

    - ``dropout``: as keras.layers.LSTM, in training one mask per sequence on the inputs, the same
      at every step, drawn from the cell's seed generator (with ``recurrent_dropout=0`` a stock
      LSTM with the same ``seed`` draws the same masks in training; it also draws unused ones in
      inference, which this layer does not).
    - ``recurrent_dropout``: in training one mask m [batch, units] per call (inverted dropout,
      kept units scaled by 1/(1-rate)) multiplies h before the recurrent matmul at every step,
      ``z = x_t W + (m * h) U + b``, fused into the kernel (CPU and CUDA); inference is unchanged.
      keras.layers.LSTM draws four independent masks, one per gate, for the inputs and for the
      state when recurrent_dropout > 0 (its per-gate "implementation 1" loop); here one mask is
      shared by the four gates (the tied form of Gal & Ghahramani's variational dropout), which
      keeps one recurrent matmul per step. Same rate, same expectation, same inference.
    - ``go_backwards``: the sequence (and mask, and resets as above) is read in reverse and,
      with ``return_sequences``, the outputs come back in reversed order, as in Keras.
    - ``zero_output_for_mask``: masked steps output zeros instead of repeating the previous
      output (the state is carried either way), as in Keras.
    - ``unroll``: accepted and kept in the config; the fused kernel computes the same function
      whether or not Keras would unroll the loop (there is no Python loop to unroll).
    - ``use_cudnn``: accepted ('auto', True or False, as Keras checks it) and kept in the config.
      resetlstm never calls cuDNN (cuDNN has no per-row resets and no recurrent dropout): its own
      fused kernel runs on CPU and GPU for every value, so ``use_cudnn=True`` ("use the fused
      native kernel, never a Python loop") is always satisfied and never raises.
    - Mixed precision (``mixed_float16``, ``mixed_bfloat16``): weights stay float32, the op gets
      them in the compute dtype, accumulates every matmul in float32 and keeps the cell state in
      float32 across the whole sequence; outputs come back in the compute dtype. Under
      ``mixed_bfloat16`` on a CPU with AVX512-BF16 the op runs its bf16 kernels (bf16 matmul
      operands, ~1.6x the float32 speed); on a GPU both policies run half kernels (bfloat16 on
      compute capability 8.0+); otherwise half types are widened to float32 inside.

    Only a non-tanh ``activation`` or a non-sigmoid ``recurrent_activation`` is refused (the
    fused kernel computes tanh and sigmoid), with a ValueError at construction; so are dropout
    rates outside [0, 1).

    The op is not XLA-compilable: ``supports_jit`` is False, so
    ``model.compile(jit_compile="auto")`` does not use XLA.

    Call arguments:
      sequences: ``[batch, timesteps, features]``.
      initial_state: optional list ``[h0, c0]``, each ``[batch, units]``; overrides the stored
        state of a stateful layer for this call (the final state is stored as usual).
      mask: optional ``[batch, timesteps]`` bool, keras.layers.LSTM semantics (a masked step
        carries the state and repeats the previous output, or outputs zeros with
        ``zero_output_for_mask``). Taken from the inputs' Keras mask (``Masking``,
        ``Embedding(mask_zero=True)``) when not given.
      training: Python bool; only used by ``dropout`` and ``recurrent_dropout``.
      resets: optional ``[batch, timesteps]`` bool / 0-1, in forward time.
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False,
                 return_state=False, go_backwards=False, stateful=False, unroll=False,
                 use_cudnn="auto", zero_output_for_mask=False, **kwargs):
        implementation = self._init_reset_rnn(units, activation, recurrent_activation, dropout,
                                              recurrent_dropout, use_cudnn, kwargs)
        # keras.layers.LSTM builds the LSTMCell that holds the weights (same names, shapes,
        # initializers incl. unit_forget_bias, regularizers, constraints and the seed generator
        # the dropout masks are drawn from) and sets the RNN attributes (return_sequences,
        # go_backwards, zero_output_for_mask, ...) that Keras' wrappers read and set.
        super().__init__(
            units, activation=activation, recurrent_activation=recurrent_activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias, kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
            dropout=dropout, recurrent_dropout=recurrent_dropout, seed=seed,
            return_sequences=return_sequences, return_state=return_state,
            go_backwards=go_backwards, stateful=stateful, unroll=unroll, use_cudnn=use_cudnn,
            zero_output_for_mask=zero_output_for_mask, implementation=implementation, **kwargs)
        self._finish_init(return_sequences, return_state, go_backwards, stateful, unroll,
                          zero_output_for_mask)

    _STATES = ("h", "c")
    _ORIGINAL = "keras.layers.LSTM"
    _OP = "reset_lstm"

    def _zero_bias(self, dtype):
        return ops.zeros([4 * self.units], dtype=dtype)


@keras.saving.register_keras_serializable(package="resetlstm")
class ResetGRU(_ResetRNN, keras.layers.GRU):
    """Gated Recurrent Unit layer whose state can be reset per batch row at any step.

    A drop-in for `keras.layers.GRU` (a subclass of it: every constructor argument, the weights
    -- a ``keras.layers.GRUCell`` named ``gru_cell`` with ``kernel`` [I, 3H],
    ``recurrent_kernel`` [H, 3H] and ``bias`` ([2, 3H] with ``reset_after``, else [3H]), gates
    z, r, h --, config, masking and call signature are the same) computed by the fused
    ``reset_gru`` op of the Keras backend, in either of Keras' forms (``reset_after=True``, the
    default and cuDNN's, or ``False``). On top of keras.layers.GRU, as ``ResetLSTM``:

    - ``resets`` call argument, ``[batch, timesteps]`` bool (or 0/1): True at (b, t) zeroes row
      b's h before step t, in forward time whatever the direction (with ``go_backwards`` a
      document is read from its last step, see ``backward_resets``); in functional models a
      second ``keras.Input(shape=(timesteps,), dtype="bool")``.
    - ``stateful=True``: one persistent stream per batch row; ``reset_state(rows=None)`` zeroes
      all rows or only the given ones; another batch size than the state's is an error.

    The other arguments behave as ``ResetLSTM`` documents: ``dropout`` (one input mask per
    sequence, drawn as keras.layers.GRU draws it without recurrent dropout);
    ``recurrent_dropout`` (one mask per call on h before the recurrent matmuls, shared by the
    three gates, where keras.layers.GRU draws one per gate); ``go_backwards``,
    ``zero_output_for_mask``, ``unroll``, ``use_cudnn`` (accepted, kept in the config; the fused
    kernel runs for every value), ``implementation`` and mixed precision (float32 weights,
    float32 accumulation and state, outputs in the compute dtype). Only a non-tanh
    ``activation`` or a non-sigmoid ``recurrent_activation`` is refused, with a ValueError
    naming keras.layers.GRU, and dropout rates outside [0, 1).

    Call arguments: ``sequences`` [batch, timesteps, features]; ``initial_state`` h0 [batch,
    units] (or a list holding it); ``mask`` [batch, timesteps] (from the inputs' Keras mask
    when not given); ``training``; ``resets`` [batch, timesteps], forward time. With
    ``return_state`` the layer returns ``[output, h]`` as keras.layers.GRU does.
    """

    _STATES = ("h",)
    _ORIGINAL = "keras.layers.GRU"
    _OP = "reset_gru"

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, reset_after=True,
                 use_cudnn="auto", zero_output_for_mask=False, **kwargs):
        implementation = self._init_reset_rnn(units, activation, recurrent_activation, dropout,
                                              recurrent_dropout, use_cudnn, kwargs)
        # keras.layers.GRU builds the GRUCell that holds the weights (names, shapes for either
        # reset_after, initializers, regularizers, constraints, the seed generator of the
        # dropout masks) and sets the RNN attributes Keras' wrappers read and set.
        super().__init__(
            units, activation=activation, recurrent_activation=recurrent_activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, return_sequences=return_sequences,
            return_state=return_state, go_backwards=go_backwards, stateful=stateful,
            unroll=unroll, reset_after=reset_after, use_cudnn=use_cudnn,
            zero_output_for_mask=zero_output_for_mask, implementation=implementation, **kwargs)
        self._finish_init(return_sequences, return_state, go_backwards, stateful, unroll,
                          zero_output_for_mask)

    def _op_options(self):
        return {"reset_after": bool(self.reset_after)}

    def _zero_bias(self, dtype):
        shape = [2, 3 * self.units] if self.reset_after else [3 * self.units]
        return ops.zeros(shape, dtype=dtype)


@keras.saving.register_keras_serializable(package="resetlstm")
class Bidirectional(keras.layers.Bidirectional):
    """`keras.layers.Bidirectional` whose call also takes ``resets``.

    ``resets`` ([batch, timesteps] bool, forward time: True where a document starts) goes to both
    directions: the forward layer resets before a document's first step, the backward layer
    (``go_backwards=True``) before a document's last step, so on documents packed end to end
    each direction sees every document exactly as if it were alone. Both wrapped layers must
    take ``resets`` (``ResetLSTM`` or ``ResetGRU``). Without ``resets`` it is keras.layers.Bidirectional.

    Call arguments: those of keras.layers.Bidirectional (``sequences``, ``initial_state``,
    ``mask``, ``training``) plus ``resets``.
    """

    def call(self, sequences, initial_state=None, mask=None, training=None, resets=None):
        if resets is None:
            return super().call(sequences, initial_state=initial_state, mask=mask,
                                training=training)
        for layer in (self.forward_layer, self.backward_layer):
            if "resets" not in layer.call_signature_parameters:
                raise ValueError(
                    f"Bidirectional '{self.name}': `resets` needs both wrapped layers to take "
                    f"`resets` (resetlstm.ResetLSTM or ResetGRU); layer '{layer.name}' is a "
                    f"{type(layer).__name__}")
        kwargs = {"resets": resets}
        if self.forward_layer._call_has_training_arg:
            kwargs["training"] = training
        if self.forward_layer._call_has_mask_arg:
            kwargs["mask"] = mask
        forward_state = backward_state = None
        if initial_state is not None:
            half = len(initial_state) // 2
            forward_state, backward_state = initial_state[:half], initial_state[half:]
        y = self.forward_layer(sequences, initial_state=forward_state, **kwargs)
        y_rev = self.backward_layer(sequences, initial_state=backward_state, **kwargs)
        return self._merge(y, y_rev)

    def _merge(self, y, y_rev):
        """Combines the two directions' results as keras.layers.Bidirectional does."""
        states = ()
        if self.return_state:
            states = tuple(y[1:]) + tuple(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        y = ops.cast(y, self.compute_dtype)
        y_rev = ops.cast(y_rev, self.compute_dtype)
        if self.return_sequences:
            y_rev = ops.flip(y_rev, axis=1)  # back to forward time
        if self.merge_mode == "concat":
            output = ops.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:  # None: both directions, unmerged
            output = (y, y_rev)
        if self.return_state:
            return (output + states) if self.merge_mode is None else (output,) + states
        return output
