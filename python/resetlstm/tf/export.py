"""Deploy anywhere: models with ``ResetLSTM`` / ``ResetGRU`` exported for stock runtimes.

A model exported as it is (``model.export``, ``StreamingModel.export``) holds the custom ops
``ResetLSTM`` / ``ResetGRU`` and loads only where ``import resetlstm`` ran. These exporters trace it with the
op lowered to stock TensorFlow ops (``resetlstm.tf.portable``), so the result runs anywhere:

- ``export_portable(model, path)``: a SavedModel (``serve`` endpoint and ``serving_default``
  signature, as ``model.export`` writes) for ``tf.saved_model.load``, TF Serving, converters;
- ``export_litert(model, path)``: a ``.tflite`` flatbuffer of builtin ops only (no Flex ops),
  for the LiteRT interpreter (``ai-edge-litert``) on a phone or a server;
- ``export_onnx(model, path)``: an ONNX model (through ``tf2onnx``) for ONNX Runtime.

``model`` is a Keras model (the whole-sequence function, inputs as the model's inputs, outputs
``output_0``, ...) or a :class:`resetlstm.StreamingModel`: then LiteRT and ONNX get its step in
the explicit-state form ``(inputs..., new_stream, h, c) -> (output_0, ..., h_next, c_next)``,
the usual on-device form, where ``h`` is ``[slots, state_size]`` float32 (the h of every
``ResetLSTM`` and ``ResetGRU`` side by side, ``StreamingModel.state_size`` columns), ``c``
``[slots, cell_state_size]`` (the c of every ``ResetLSTM``; a model of GRUs only has no ``c``
and no ``c_next``), zeros for a fresh server, and ``new_stream`` zeroes a slot's state before
the step.
"""
from __future__ import annotations

import os

import tensorflow as tf
import keras

from resetlstm.tf.model_layers import reset_layers
from resetlstm.tf.portable import lowered
from resetlstm.tf.stock_ops import check_stock
from resetlstm.tf.streaming import StreamingModel

__all__ = ["export_portable", "export_litert", "export_onnx", "portable_function"]

def _is_streaming(model):
    return isinstance(model, StreamingModel)


def _input_structure(model, batch_size, caller):
    """The model's inputs as a structure of named TensorSpecs."""
    if not getattr(model, "inputs", None):
        raise ValueError(f"{caller}: `model` must be a built functional or Sequential Keras "
                         "model (with model.inputs); for a subclassed model pass "
                         "`input_signature`")
    structure = model.input

    def spec(x):
        shape = list(x.shape)
        if batch_size is not None:
            if shape[0] is not None and shape[0] != batch_size:
                raise ValueError(f"{caller}: model input '{x.name}' has a fixed batch size "
                                 f"{shape[0]}, received batch_size={batch_size}")
            shape[0] = batch_size
        return tf.TensorSpec(shape, x.dtype, name=x.name)

    return tf.nest.map_structure(spec, structure)


def _check_layers(model, caller, runtime=None, streaming=False):
    """Refuse what a runtime without variables or without half types cannot run."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"{caller} traces TensorFlow graphs; Keras runs on "
                         f"{keras.backend.backend()!r}. Export from a process with "
                         "KERAS_BACKEND=tensorflow (weights and .keras files are the same).")
    layers = reset_layers(model)
    if not layers:
        raise ValueError(f"{caller}: `model` has no ResetLSTM or ResetGRU layer; export it "
                         "with model.export, it needs nothing of resetlstm")
    if runtime is None:
        return layers
    for layer in layers:
        if layer.compute_dtype != "float32":
            raise ValueError(
                f"{caller}: {type(layer).__name__} '{layer.name}' computes in "
                f"{layer.compute_dtype} (dtype "
                f"policy {layer.dtype_policy.name}); {runtime} export needs a float32 model. "
                "Rebuild it with dtype='float32', copy the weights (get_weights / "
                "set_weights) and export that (the runtime can quantize it itself).")
        if layer.stateful and not streaming:
            raise ValueError(
                f"{caller}: {type(layer).__name__} '{layer.name}' is stateful (its state lives in "
                f"variables); {runtime} export of a whole model is stateless. Serve streams "
                f"with resetlstm.StreamingModel(model, slots) and export that: its {runtime} "
                "step takes and returns the state explicitly.")
    return layers


def portable_function(model, batch_size=None, input_signature=None):
    """``model`` in stock TensorFlow ops as a ``tf.function`` with flat named inputs and a dict
    of outputs, already traced (``.get_concrete_function()`` returns that trace): the form the
    LiteRT and ONNX exports convert; call it, or convert it with other converter settings.
    Keras model: ``f(<model inputs by name>) -> {"output_0": ..., ...}``, batch dimension
    ``batch_size`` (None: as the model says). StreamingModel: the explicit-state step
    ``f(<inputs>, new_stream, h, c) -> {"output_0": ..., "h_next": ..., "c_next": ...}``.
    ``input_signature``: a structure of named ``tf.TensorSpec`` in place of the model's inputs
    (needed for subclassed models)."""
    if _is_streaming(model):
        return model._explicit_step_function()
    _check_layers(model, "portable_function")
    if input_signature is None:
        structure = _input_structure(model, batch_size, "portable_function")
    else:
        structure = input_signature
    flat = [tf.TensorSpec(s.shape, s.dtype, name=s.name or f"input_{i}")
            for i, s in enumerate(tf.nest.flatten(structure))]

    @tf.function(input_signature=flat, autograph=False)
    def serve(*args):
        outputs = model(tf.nest.pack_sequence_as(structure, list(args)), training=False)
        return {f"output_{i}": y for i, y in enumerate(tf.nest.flatten(outputs))}

    with lowered(model):
        concrete = serve.get_concrete_function()
    check_stock(concrete, "portable_function")
    return serve


def _tracked_module(concretes):
    """A tf.Module that tracks every variable the functions read (what saving needs)."""
    module = tf.Module()
    seen, variables = set(), []
    for concrete in concretes:
        for v in concrete.variables:
            if id(v) not in seen:
                seen.add(id(v))
                variables.append(v)
    module.captured_variables = variables
    return module


def export_portable(model, path, input_signature=None):
    """Writes a SavedModel of ``model`` whose graph holds only stock TensorFlow ops: it loads with
    ``tf.saved_model.load`` in any TensorFlow process, without resetlstm, and serves in stock
    TF Serving. Like ``model.export(path)``: endpoint ``serve(inputs)`` (the model's input
    structure) and signature ``serving_default`` (inputs by name, outputs ``output_0``, ...).
    A stateful model keeps its state in variables, as ``model.export`` does (it starts from the
    state the layers hold now). A :class:`StreamingModel` writes its ``step`` / ``release``
    SavedModel (``StreamingModel.export(path, portable=True)``).

    ``input_signature``: a structure of ``tf.TensorSpec`` (needed for subclassed models;
    default: the model's inputs)."""
    if _is_streaming(model):
        return model.export(path, portable=True)
    _check_layers(model, "export_portable")
    structure = input_signature
    if structure is None:
        structure = _input_structure(model, None, "export_portable")

    @tf.function(input_signature=[structure], autograph=False)
    def serve(inputs):
        return model(inputs, training=False)

    with lowered(model):
        concrete = serve.get_concrete_function()
        check_stock(concrete, "export_portable")
        module = _tracked_module([concrete])
        module.serve = serve
        tf.saved_model.save(module, os.fspath(path), signatures={"serving_default": concrete})


def _source_model(model):
    return model.model if _is_streaming(model) else model


def export_litert(model, path, batch_size=None, input_signature=None):
    """Writes ``model`` as a LiteRT (TensorFlow Lite) flatbuffer of builtin ops only and returns
    the path. A Keras model: the whole-sequence function for a fixed ``batch_size`` (default:
    the model's, else 1; the time axis may stay unknown, ``resize_tensor_input`` sets it), with
    resets, masks and every ResetLSTM option of the model. A :class:`StreamingModel`: its step in
    the explicit-state form (see the module docstring). float32 models only; stateful layers
    are served through StreamingModel. ``input_signature``: as for :func:`portable_function`
    (a subclassed model needs it; its batch dimension must then be fixed)."""
    caller = "export_litert"
    _check_layers(_source_model(model), caller, "LiteRT", streaming=_is_streaming(model))
    if not _is_streaming(model) and batch_size is None and input_signature is None:
        first = tf.nest.flatten(_input_structure(model, None, caller))[0]
        batch_size = first.shape[0] or 1
    function = portable_function(model, batch_size, input_signature)
    concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [concrete], _tracked_module([concrete]))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    data = converter.convert()
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def export_onnx(model, path, opset=17, input_signature=None):
    """Writes ``model`` as an ONNX model (converted by ``tf2onnx``, opset ``opset``) for ONNX
    Runtime and returns the path. Inputs by the model's input names, outputs ``output_0``, ...;
    batch and time axes as the model has them (unknown ones stay dynamic). A
    :class:`StreamingModel`: its explicit-state step (see the module docstring). float32
    models only; stateful layers are served through StreamingModel. ``input_signature``: as for
    :func:`portable_function`."""
    caller = "export_onnx"
    _check_layers(_source_model(model), caller, "ONNX", streaming=_is_streaming(model))
    try:
        import tf2onnx
    except ImportError as error:
        raise ImportError(f"{caller} needs tf2onnx and onnx (pip install tf2onnx onnx)") \
            from error
    function = portable_function(model, input_signature=input_signature)
    # from_function looks the trace up again (no retrace: the signature is fixed); lowered
    # anyway, so that a retrace could not bring the custom op back
    with lowered(_source_model(model)):
        proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                                 opset=opset)
    data = proto.SerializeToString()
    _check_onnx(caller, data)
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def _check_onnx(caller, data):
    """tf2onnx converts what it can and logs the rest (it runs with continue_on_error): a
    model it could not convert whole is refused here rather than written."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
        try:
            import onnxruntime
        except ImportError:
            return
        onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as error:  # the checker's and ONNX Runtime's own exception types
        raise ValueError(f"{caller}: tf2onnx did not convert the model into a valid ONNX model "
                         f"(its log above names the op it failed on): {error}") from error

