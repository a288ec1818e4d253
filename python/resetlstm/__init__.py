"""resetlstm: fused recurrent layers whose state can be reset per batch row at any time step.

Each front end is a subpackage that loads only its own framework::

    import resetlstm.keras    # ResetLSTM, ResetGRU, Bidirectional: Keras 3, any backend
    import resetlstm.tf       # the TensorFlow op, streaming inference, portable exports
    import resetlstm.torch    # PyTorch: a drop-in for torch.nn.LSTM and the op
    import resetlstm.jax      # JAX: the op as XLA FFI calls, Flax modules

``import resetlstm`` itself loads no framework. The names of DESIGN.md section 2 stay here and
load their front end on first use::

    outputs, h, c = resetlstm.reset_lstm(inputs, kernel, recurrent_kernel, bias,
                                         resets=None, initial_state=None, mask=None,
                                         time_major=False)               # resetlstm.tf
    h, c = resetlstm.reset_lstm_cell(x_t, h, c, kernel, recurrent_kernel, bias, reset=None)
    outputs, h = resetlstm.reset_gru(inputs, kernel, recurrent_kernel, bias, resets=None,
                                     reset_after=True)             # resetlstm.tf
    layer = resetlstm.ResetLSTM(units, return_sequences=False, stateful=False)  # resetlstm.keras
    layer = resetlstm.ResetGRU(units, reset_after=True)  # keras.layers.GRU's arguments too
    bi = resetlstm.Bidirectional(resetlstm.ResetLSTM(units, return_sequences=True))
    server = resetlstm.StreamingModel(trained_model, slots=256)           # resetlstm.tf
    resetlstm.export_portable(model, path)   # also export_litert, export_onnx: stock ops only
    resetlstm.build_info()
    packed = resetlstm.data.pack_documents(docs, batch_size, seq_len)     # numpy only

Once the process imports Keras (before or after resetlstm), the layers are registered with it,
so ``keras.models.load_model`` reads files that hold them; once it imports TensorFlow, the op
is registered, so SavedModels that hold it load.
"""
import importlib

from resetlstm import data
from resetlstm._after_import import after_import
from resetlstm._version import __version__

__all__ = ["__version__", "build_info", "reset_lstm", "reset_lstm_cell", "reset_gru",
           "reset_gru_cell", "ResetLSTM", "ResetGRU",
           "Bidirectional", "StreamingModel", "data", "export_portable", "export_litert",
           "export_onnx", "portable_reset_lstm"]

# name -> (module, the extra that installs what it needs)
_LAZY = {"ResetLSTM": ("resetlstm.keras", "tensorflow"),
         "ResetGRU": ("resetlstm.keras", "tensorflow"),
         "Bidirectional": ("resetlstm.keras", "tensorflow"),
         "build_info": ("resetlstm.tf.ops", "tensorflow"),
         "reset_lstm": ("resetlstm.tf.ops", "tensorflow"),
         "reset_lstm_cell": ("resetlstm.tf.ops", "tensorflow"),
         "reset_gru": ("resetlstm.tf.gru", "tensorflow"),
         "reset_gru_cell": ("resetlstm.tf.gru", "tensorflow"),
         "StreamingModel": ("resetlstm.tf.streaming", "tensorflow"),
         "export_portable": ("resetlstm.tf.export", "tensorflow"),
         "export_litert": ("resetlstm.tf.export", "tensorflow"),
         "export_onnx": ("resetlstm.tf.export", "tensorflow"),
         "portable_reset_lstm": ("resetlstm.tf.portable", "tensorflow")}
_FRAMEWORKS = ("tensorflow", "keras", "torch", "jax", "jaxlib")


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'resetlstm' has no attribute {name!r}")
    module_name, extra = _LAZY[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] not in _FRAMEWORKS:
            raise
        raise ImportError(
            f"resetlstm.{name} ({module_name}) needs {e.name}, which is not installed (pip "
            f'install "resetlstm[{extra}]"; the Keras layers also run on Keras with torch or '
            "jax and KERAS_BACKEND set); without it resetlstm.torch, resetlstm.jax, "
            "resetlstm._native (numpy / CUDA arrays) and resetlstm.data are available"
        ) from None
    value = getattr(module, name)
    globals()[name] = value
    return value


def _register_keras_layers():
    importlib.import_module("resetlstm.keras")


def _register_tf_op():
    import os

    library = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_resetlstm_ops.so")
    if os.path.exists(library):  # not in builds without the TensorFlow op (RESETLSTM_TF=OFF)
        importlib.import_module("resetlstm.tf")  # the ops and their gradients


after_import("keras", _register_keras_layers)
after_import("tensorflow", _register_tf_op)
