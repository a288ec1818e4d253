"""resetlstm: a fused LSTM whose state can be reset per batch row at any time step.

Public API (see DESIGN.md section 2)::

    outputs, h, c = resetlstm.reset_lstm(inputs, kernel, recurrent_kernel, bias,
                                         resets=None, initial_state=None, mask=None,
                                         time_major=False)
    h, c = resetlstm.reset_lstm_cell(x_t, h, c, kernel, recurrent_kernel, bias, reset=None)
    layer = resetlstm.ResetLSTM(units, return_sequences=False, return_state=False, stateful=False)
    packed = resetlstm.data.pack_documents(docs, batch_size, seq_len)
    resetlstm.build_info()
"""
from resetlstm import data
from resetlstm._version import __version__
from resetlstm.layers import ResetLSTM  # importing registers the layer for load_model
from resetlstm.ops import build_info, reset_lstm, reset_lstm_cell

__all__ = ["__version__", "build_info", "reset_lstm", "reset_lstm_cell", "ResetLSTM", "data"]
