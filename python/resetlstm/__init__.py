"""resetlstm: a fused LSTM whose state can be reset per batch row at any time step.

Public API (see DESIGN.md section 2)::

    outputs, h, c = resetlstm.reset_lstm(inputs, kernel, recurrent_kernel, bias,
                                         resets=None, initial_state=None, mask=None,
                                         time_major=False)
    h, c = resetlstm.reset_lstm_cell(x_t, h, c, kernel, recurrent_kernel, bias, reset=None)
    layer = resetlstm.ResetLSTM(units, return_sequences=False, return_state=False, stateful=False)
    bi = resetlstm.Bidirectional(resetlstm.ResetLSTM(units, return_sequences=True))
    y = bi(x, resets=resets)      # resets in forward time go to both directions
    packed = resetlstm.data.pack_documents(docs, batch_size, seq_len)
    server = resetlstm.StreamingModel(trained_model, slots=256)   # continuous batching
    outputs = server.step(inputs, new_stream)                       # one step, every slot
    resetlstm.export_portable(model, path)   # also export_litert, export_onnx: stock ops only
    resetlstm.build_info()

    import resetlstm.torch    # PyTorch: a drop-in for torch.nn.LSTM and the op (no TensorFlow)
    import resetlstm.jax      # JAX: the op as an XLA FFI call (no TensorFlow)

What needs which framework: ``ResetLSTM`` and ``Bidirectional`` run on Keras 3 with any of its
TensorFlow, JAX and PyTorch backends (imported here whenever Keras is installed, so that
``keras.models.load_model`` finds them); ``reset_lstm``, ``reset_lstm_cell``, ``StreamingModel``,
the exporters and ``build_info`` are the TensorFlow op and load TensorFlow on first use; ``data`` and
``_native`` need numpy only.
"""
from resetlstm import data
from resetlstm._version import __version__

__all__ = ["__version__", "build_info", "reset_lstm", "reset_lstm_cell", "ResetLSTM",
           "Bidirectional", "StreamingModel", "data", "export_portable", "export_litert",
           "export_onnx", "portable_reset_lstm"]

_KERAS_MISSING = None
try:
    from resetlstm.layers import Bidirectional, ResetLSTM  # importing registers them for load_model
except ModuleNotFoundError as _error:  # no Keras, or no package for Keras' backend
    if _error.name is None or _error.name.split(".")[0] not in ("tensorflow", "keras", "torch",
                                                                "jax", "jaxlib"):
        raise
    _KERAS_MISSING = _error.name

# The TensorFlow API, imported on first use (TensorFlow takes seconds to import, and the torch
# and JAX front ends do not need it).
_TF_API = {"build_info": "resetlstm.ops", "reset_lstm": "resetlstm.ops",
           "reset_lstm_cell": "resetlstm.ops", "StreamingModel": "resetlstm.streaming",
           "export_portable": "resetlstm.export", "export_litert": "resetlstm.export",
           "export_onnx": "resetlstm.export", "portable_reset_lstm": "resetlstm.portable"}


def __getattr__(name):
    import importlib

    if name in _TF_API:
        try:
            module = importlib.import_module(_TF_API[name])
        except ModuleNotFoundError as e:
            if e.name is None or e.name.split(".")[0] not in ("tensorflow", "keras"):
                raise
            raise ImportError(
                f"resetlstm.{name} needs {e.name}, which is not installed (pip install "
                '"resetlstm[tensorflow]"); without it resetlstm.torch, resetlstm.jax, '
                "resetlstm._native (numpy / CUDA arrays) and resetlstm.data are available"
            ) from None
        value = getattr(module, name)
        globals()[name] = value
        return value
    if name in ("ResetLSTM", "Bidirectional"):
        raise ImportError(
            f"resetlstm.{name} needs Keras 3 and the package of its backend; {_KERAS_MISSING} "
            'is not installed (pip install "resetlstm[tensorflow]", or keras with torch or jax '
            "and KERAS_BACKEND set)")
    raise AttributeError(f"module 'resetlstm' has no attribute {name!r}")
