"""Continuous-batching streaming inference: one fused step serves many live streams.

A served stateful model holds many streams at once (a keyboard, a streaming transcriber, an RL
policy in many environments). :class:`StreamingModel` gives each stream a *slot*, one batch row,
and computes one time step for every slot per call; when a stream ends and a new one takes its
slot, that row is reset inside the same fused step (the reset is per row, so no other slot is
disturbed and no state is gathered or scattered in Python)::

    server = resetlstm.StreamingModel(trained_model, slots=256)
    out = server.step(tokens, new_stream)      # tokens [256] (one step), new_stream [256] bool
    server.release([3, 17])                    # streams in slots 3 and 17 ended
    server.export("served/")                   # SavedModel with `step` and `release` signatures
"""
from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf
import keras

from resetlstm.keras import ResetGRU, ResetLSTM
from resetlstm.tf.model_layers import all_layers
from resetlstm.tf.ops import _flag_tensor
from resetlstm.tf.portable import lowered
from resetlstm.tf.stock_ops import check_stock

__all__ = ["StreamingModel"]


_RESET_LAYERS = (ResetLSTM, ResetGRU)


def _lowered_if(portable, model):
    """resetlstm.tf.portable.lowered(model) when ``portable``, else nothing."""
    return lowered(model) if portable else contextlib.nullcontext()


def _resets_inputs(model):
    """Indices of the model inputs that go straight into some reset layer's ``resets``."""
    inputs = list(model.inputs)
    found = set()
    for layer in all_layers(model):
        if not isinstance(layer, _RESET_LAYERS):
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            value = node.arguments.kwargs.get("resets")
            for i, tensor in enumerate(inputs):
                if value is tensor:
                    found.add(i)
    return sorted(found)


class StreamingModel:
    """Serves a trained model whose recurrent layers are ``ResetLSTM`` or ``ResetGRU``, one step
    at a time for ``slots`` concurrent streams.

    Args:
      model: a functional or Sequential Keras model with at least one ``ResetLSTM`` or
        ``ResetGRU`` (stacked ones, of either cell, are fine: all of them reset together) and
        no other recurrent layer. Stateful or
        not, and built for any batch size and sequence length: the streaming copy is built for
        ``[slots, 1, ...]``. Model inputs that feed a reset layer's ``resets`` are filled from
        ``new_stream``; the others are the step's ``inputs``.
      slots: number of concurrent streams (batch rows).

    The streaming copy holds its own copy of the weights (taken now; :meth:`sync_weights`
    copies them again after more training) and, in every reset layer, the state of every slot.

    ``step(inputs, new_stream)``: ``inputs`` has the model's per-step shape with the slots first
    (``[slots]`` token ids, ``[slots, features]``, ...; a list for several inputs), ``new_stream``
    ``[slots]`` bool: True where a new stream starts in that slot at this step (its state is
    zeroed before the step, in every reset layer). Returns the model's outputs for this step, with
    the time axis dropped from outputs of rank >= 3 (``[slots, 1, V]`` -> ``[slots, V]``); rank-2
    outputs (``return_sequences=False``) come as they are. Slots that hold no stream compute
    anyway (their outputs are meaningless; release them so that nothing carries over).
    """

    def __init__(self, model, slots):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "StreamingModel runs the model in TensorFlow graphs (tf.function, SavedModel "
                f"export); Keras runs on {keras.backend.backend()!r} in this process. Serve from "
                "a process with KERAS_BACKEND=tensorflow (weights and .keras files are the same "
                "on every backend), or step a stateful model with resets yourself.")
        if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) or slots < 1:
            raise ValueError(f"StreamingModel: `slots` must be a positive integer, received "
                             f"slots={slots!r}")
        if not isinstance(model, keras.Model):
            raise TypeError(f"StreamingModel: `model` must be a keras.Model, received "
                            f"{type(model).__name__}")
        if not isinstance(model, keras.Sequential) and not hasattr(model, "_nodes_by_depth"):
            raise ValueError(
                f"StreamingModel: `model` must be a functional or Sequential Keras model (it is "
                f"rebuilt for [slots, 1] inputs from its config), received a subclassed "
                f"{type(model).__name__}")
        if not model.built or not model.inputs:
            raise ValueError("StreamingModel: `model` must be built (have inputs); build it "
                             "with keras.Input or call it once")
        self.slots = int(slots)
        self._check_layers(model)
        self._source = model
        self._resets_at = _resets_inputs(model)
        self._input_specs = []
        new_inputs = []
        for i, x in enumerate(model.inputs):
            if i in self._resets_at:
                new_inputs.append(keras.Input(batch_shape=(self.slots, 1), dtype=x.dtype,
                                              name=x.name))
                continue
            if len(x.shape) < 2:
                raise ValueError(f"StreamingModel: model input '{x.name}' has shape "
                                 f"{tuple(x.shape)}; every input needs [batch, time, ...]")
            feature_shape = tuple(x.shape[2:])
            if any(d is None for d in feature_shape):
                raise ValueError(f"StreamingModel: model input '{x.name}' must have known "
                                 f"feature dimensions, has shape {tuple(x.shape)}")
            self._input_specs.append((x.name, feature_shape, x.dtype))
            new_inputs.append(keras.Input(batch_shape=(self.slots, 1) + feature_shape,
                                          dtype=x.dtype, name=x.name))

        def clone_layer(layer):
            config = layer.get_config()
            if isinstance(layer, _RESET_LAYERS):
                config["stateful"] = True  # the slots' state lives in the layer, per row
            return layer.__class__.from_config(config)

        structure = model.input
        if isinstance(structure, dict):
            raise ValueError("StreamingModel: models with dict inputs are not supported; "
                             "build the model with a list of inputs")
        self._model = keras.models.clone_model(
            model, input_tensors=(type(structure)(new_inputs)
                                  if isinstance(structure, (list, tuple)) else new_inputs[0]),
            clone_function=clone_layer, recursive=True)
        self._layers = [l for l in all_layers(self._model) if isinstance(l, _RESET_LAYERS)]
        self.sync_weights()
        self._step_fn = tf.function(self._step_graph, reduce_retracing=True)
        self._release_fn = tf.function(self._zero_slots, reduce_retracing=True)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_layers(model):
        found = 0
        for layer in all_layers(model):
            if isinstance(layer, _RESET_LAYERS):
                if layer.go_backwards:
                    raise ValueError(
                        f"StreamingModel: {type(layer).__name__} '{layer.name}' has "
                        "go_backwards=True; a "
                        "stream is served forward in time, one step at a time")
                found += 1
            elif isinstance(layer, keras.layers.Bidirectional):
                raise ValueError(f"StreamingModel: layer '{layer.name}' is Bidirectional; its "
                                 "backward half needs the future of the stream")
            elif isinstance(layer, keras.layers.RNN):
                raise ValueError(
                    f"StreamingModel: layer '{layer.name}' is a {type(layer).__name__}, whose "
                    "state cannot be reset per slot; use resetlstm.ResetLSTM or ResetGRU for "
                    "every recurrent layer (their weights load 1:1 from keras.layers.LSTM and "
                    "GRU)")
        if not found:
            raise ValueError("StreamingModel: `model` has no ResetLSTM or ResetGRU layer; "
                             "there is no state to stream")

    def _convert(self, inputs, new_stream):
        """Python-side checks with messages that name the argument, then tensors."""
        specs = self._input_specs
        if len(specs) == 1 and not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        if not isinstance(inputs, (list, tuple)) or len(inputs) != len(specs):
            raise ValueError(f"StreamingModel.step: `inputs` must be {len(specs)} array(s) "
                             f"({', '.join(s[0] for s in specs)}), received "
                             f"{len(inputs) if isinstance(inputs, (list, tuple)) else 1}")
        tensors = []
        for x, (name, feature_shape, dtype) in zip(inputs, specs):
            x = tf.convert_to_tensor(x)
            expected = (self.slots,) + feature_shape
            if tuple(x.shape) != expected:
                raise ValueError(f"StreamingModel.step: `inputs` '{name}' must have shape "
                                 f"[slots, ...] = {expected} (one step for every slot), "
                                 f"received shape {tuple(x.shape)}")
            tensors.append(tf.cast(x, dtype) if x.dtype != dtype else x)
        new_stream = tf.convert_to_tensor(new_stream)
        if tuple(new_stream.shape) != (self.slots,):
            raise ValueError(f"StreamingModel.step: `new_stream` must have shape [slots] = "
                             f"({self.slots},), received shape {tuple(new_stream.shape)}")
        return tensors, _flag_tensor(new_stream, "new_stream", "StreamingModel.step")

    # ------------------------------------------------------------------ graph
    def _step_graph(self, inputs, new_stream):
        self._zero_slots(new_stream)  # zero before the step = reset at the step, every layer
        return self._call_model(inputs, new_stream)

    def _call_model(self, inputs, new_stream):
        """The streaming copy on one step of ``inputs`` (the step inputs, [slots, ...] each),
        ``new_stream`` filling the model's resets inputs; outputs with the time axis dropped."""
        step_inputs = [tf.expand_dims(x, 1) for x in inputs]
        flags = tf.expand_dims(new_stream, 1)
        full, k = [], 0
        for i, x in enumerate(self._model.inputs):
            if i in self._resets_at:
                full.append(tf.cast(flags, x.dtype))
            else:
                full.append(step_inputs[k])
                k += 1
        outputs = self._model(full if len(full) > 1 else full[0], training=False)
        return tf.nest.map_structure(
            lambda y: tf.squeeze(y, 1) if y.shape.rank >= 3 else y, outputs)

    def _zero_slots(self, rows):
        for layer in self._layers:
            layer._reset_rows(rows)

    # ------------------------------------------------------------------ public
    def step(self, inputs, new_stream):
        """One time step for every slot; see the class docstring."""
        tensors, new_stream = self._convert(inputs, new_stream)
        return self._step_fn(tensors, new_stream)

    def release(self, slots):
        """Zero the state of ``slots`` (indices, or a bool vector [slots]): their streams ended.
        A new stream can then start there with or without ``new_stream``."""
        rows = self._layers[0]._rows_to_reset(slots, self.slots)
        self._release_fn(rows)

    def reset(self):
        """Zero every slot."""
        for layer in self._layers:
            layer.reset_state()

    def sync_weights(self):
        """Copy the source model's current weights into the streaming copy."""
        self._model.set_weights(self._source.get_weights())

    @property
    def model(self):
        """The streaming copy (stateful, built for [slots, 1, ...] inputs)."""
        return self._model

    @property
    def state_size(self):
        """Columns of the explicit state ``h`` of the portable step: the units of every
        ResetLSTM and ResetGRU, side by side in the model's layer order."""
        return sum(layer.units for layer in self._layers)

    @property
    def cell_state_size(self):
        """Columns of the explicit cell state ``c`` of the portable step: the units of every
        ResetLSTM, side by side in the model's layer order (0: GRUs only, the step has no
        ``c``)."""
        return sum(layer.units for layer in self._with_c())

    def _with_c(self):
        return [layer for layer in self._layers if "c" in layer._STATES]

    def _step_specs(self):
        return [tf.TensorSpec((self.slots,) + shape, dtype, name=f"inputs_{i}" if i else
                              "inputs")
                for i, (_, shape, dtype) in enumerate(self._input_specs)]

    def export(self, path, portable=False):
        """Writes a SavedModel that serves this model with the slots' state in variables:

        - ``step(inputs, new_stream)`` (also ``serving_default``): as :meth:`step`, inputs
          already of the right shapes and dtypes; outputs ``{"output_0": ..., ...}``;
        - ``release(slots)``: ``slots`` a bool vector [slots] (True = zero that slot).

        The state starts as it is now (call :meth:`reset` first for a clean server).
        ``portable=False``: the graph holds the fused op; load with ``import resetlstm`` first
        (it registers the op), then ``tf.saved_model.load(path)``; TF Serving needs the op
        library ``resetlstm/_resetlstm_ops.so`` loaded as a custom op. ``portable=True``: every
        ResetLSTM / ResetGRU is lowered to stock TensorFlow ops (``resetlstm.tf.portable``), so it loads in
        any TensorFlow process and in stock TF Serving, without resetlstm (same outputs to
        ~1e-6; the fused op is faster, see docs/deploying.md).
        """
        module = tf.Module()
        module.variables_ = [v.value for v in self._model.weights]
        module.state_ = [v.value for layer in self._layers for v in layer.states]
        specs = self._step_specs()
        flags = tf.TensorSpec((self.slots,), tf.bool, name="new_stream")

        def outputs_dict(outputs):
            flat = tf.nest.flatten(outputs)
            return {f"output_{i}": y for i, y in enumerate(flat)}

        @tf.function(input_signature=[*specs, flags])
        def step(*args):
            return outputs_dict(self._step_graph(list(args[:-1]), args[-1]))

        @tf.function(input_signature=[tf.TensorSpec((self.slots,), tf.bool, name="slots")])
        def release(rows):
            self._zero_slots(rows)
            return {"released": tf.reduce_sum(tf.cast(rows, tf.int32))}

        module.step, module.release = step, release
        with _lowered_if(portable, self._model):
            concrete = step.get_concrete_function()
            if portable:
                check_stock(concrete, "StreamingModel.export")
            tf.saved_model.save(module, str(path), signatures={
                "serving_default": concrete,
                "step": concrete,
                "release": release.get_concrete_function()})

    def _explicit_step_function(self):
        """The step in stock ops with the state as explicit inputs and outputs, traced:
        ``f(<inputs>, new_stream, h, c) -> {"output_0": ..., "h_next": h', "c_next": c'}``,
        ``h`` ``[slots, state_size]`` float32 (every layer's h side by side), ``c`` ``[slots,
        cell_state_size]`` (every ResetLSTM's c side by side; absent, with ``c_next``, when the
        model has GRUs only); the variables of the streaming copy are neither read nor
        written."""
        with_c = self._with_c()
        sizes = {"h": self.state_size, "c": self.cell_state_size}
        names = ("h", "c") if with_c else ("h",)
        state = [tf.TensorSpec((self.slots, sizes[n]), tf.float32, name=n) for n in names]
        flags = tf.TensorSpec((self.slots,), tf.bool, name="new_stream")
        context = {}

        @tf.function(input_signature=[*self._step_specs(), flags, *state], autograph=False)
        def step(*args):
            *inputs, new_stream = args[:-len(names)]
            given = args[-len(names):]
            fresh = new_stream[:, None]  # a new stream starts from zeros, in every layer
            given = [tf.where(fresh, tf.zeros_like(s), s) for s in given]
            h_parts = tf.split(given[0], [layer.units for layer in self._layers], axis=1)
            c_parts = dict(zip(with_c, tf.split(given[1], [layer.units for layer in with_c],
                                                axis=1))) if with_c else {}
            lowering = context["lowering"]
            lowering.explicit = {
                layer: (h,) + ((c_parts[layer],) if layer in c_parts else ())
                for layer, h in zip(self._layers, h_parts)}
            outputs = self._call_model(inputs, new_stream)
            result = {f"output_{i}": y for i, y in enumerate(tf.nest.flatten(outputs))}
            result["h_next"] = tf.concat([tf.cast(lowering.final[layer][0], tf.float32)
                                          for layer in self._layers], axis=1)
            if with_c:
                result["c_next"] = tf.concat([tf.cast(lowering.final[layer][1], tf.float32)
                                              for layer in with_c], axis=1)
            return result

        with lowered(self._model) as context["lowering"]:
            concrete = step.get_concrete_function()
        check_stock(concrete, "StreamingModel (explicit-state step)")
        return step

    def __repr__(self):
        return (f"StreamingModel(slots={self.slots}, model={self._source.name!r}, "
                f"reset layers={len(self._layers)})")
