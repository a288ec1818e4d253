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
    resetlstm.build_info()
"""
from resetlstm import data
from resetlstm._version import __version__

__all__ = ["__version__", "build_info", "reset_lstm", "reset_lstm_cell", "ResetLSTM",
           "Bidirectional", "StreamingModel", "data"]

try:
    from resetlstm.layers import Bidirectional, ResetLSTM  # importing registers them for load_model
    from resetlstm.ops import build_info, reset_lstm, reset_lstm_cell
    from resetlstm.streaming import StreamingModel
except ModuleNotFoundError as _error:  # a machine without TensorFlow: only _native and data
    if _error.name not in ("tensorflow", "keras"):
        raise
    _missing = _error.name

    def __getattr__(name):
        if name in ("build_info", "reset_lstm", "reset_lstm_cell", "ResetLSTM", "Bidirectional",
                    "StreamingModel"):
            raise ImportError(
                f"resetlstm.{name} needs {_missing}, which is not installed; without it only "
                "resetlstm._native (numpy / CUDA arrays) and resetlstm.data are available"
            )
        raise AttributeError(f"module 'resetlstm' has no attribute {name!r}")
