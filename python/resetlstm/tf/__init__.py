"""TensorFlow front end: the fused reset-LSTM and reset-GRU as TensorFlow ops with registered
gradients (CPU and GPU kernels), and, for Keras models on the TensorFlow backend, continuous-batching
streaming inference and exports that run without resetlstm.

    import resetlstm.tf as rtf
    outputs, h, c = rtf.reset_lstm(inputs, kernel, recurrent_kernel, bias, resets=None,
                                   initial_state=None, mask=None, time_major=False)
    h, c = rtf.reset_lstm_cell(x_t, h, c, kernel, recurrent_kernel, bias, reset=None)
    outputs, h = rtf.reset_gru(inputs, kernel, recurrent_kernel, bias, resets=None,
                               reset_after=True)             # kernels [I, 3H], [H, 3H]
    h = rtf.reset_gru_cell(x_t, h, kernel, recurrent_kernel, bias, reset=None)
    server = rtf.StreamingModel(model, slots=256)
    rtf.export_portable(model, path)      # also export_litert, export_onnx: stock ops only

Importing this module loads TensorFlow and registers the ops (so SavedModels holding them
load); the streaming and export parts load Keras on first use.
"""
import importlib

from resetlstm.tf.gru import reset_gru, reset_gru_cell
from resetlstm.tf.ops import build_info, reset_lstm, reset_lstm_cell

__all__ = ["build_info", "reset_lstm", "reset_lstm_cell", "reset_gru", "reset_gru_cell",
           "StreamingModel", "export_portable",
           "export_litert", "export_onnx", "portable_reset_lstm", "portable_reset_gru",
           "lowered"]

# name -> module, imported on first use (they need Keras)
_KERAS_PARTS = {"StreamingModel": "resetlstm.tf.streaming",
                "export_portable": "resetlstm.tf.export", "export_litert": "resetlstm.tf.export",
                "export_onnx": "resetlstm.tf.export",
                "portable_reset_lstm": "resetlstm.tf.portable",
                "portable_reset_gru": "resetlstm.tf.portable", "lowered": "resetlstm.tf.portable"}


def __getattr__(name):
    if name in _KERAS_PARTS:
        value = getattr(importlib.import_module(_KERAS_PARTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'resetlstm.tf' has no attribute {name!r}")
