"""resetlstm: a fused LSTM whose state can be reset per batch row at any time step.

Public API (see DESIGN.md section 2)::

    outputs, h, c = resetlstm.reset_lstm(inputs, kernel, recurrent_kernel, bias,
                                         resets=None, initial_state=None, mask=None,
                                         time_major=False)
    h, c = resetlstm.reset_lstm_cell(x_t, h, c, kernel, recurrent_kernel, bias, reset=None)
    resetlstm.build_info()
"""
from resetlstm._version import __version__
from resetlstm.ops import build_info, reset_lstm, reset_lstm_cell

__all__ = ["__version__", "build_info", "reset_lstm", "reset_lstm_cell"]
