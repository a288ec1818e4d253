"""PyTorch front end: the fused reset-LSTM as torch custom operators and a drop-in for
``torch.nn.LSTM`` with per-row resets. Needs torch (``pip install "resetlstm[torch]"``), not
TensorFlow.

    import resetlstm.torch as rt
    lstm = rt.ResetLSTM(input_size, hidden_size, num_layers=1, batch_first=False)
    output, (h_n, c_n) = lstm(x, hx=None, resets=None)
    gru = rt.ResetGRU(input_size, hidden_size)          # a drop-in for torch.nn.GRU
    output, h_n = gru(x, hx=None, resets=None)
    outputs, h, c = rt.reset_lstm(x, kernel, recurrent_kernel, bias, resets=None)  # Keras layout
    outputs, h = rt.reset_gru(x, kernel, recurrent_kernel, bias, resets=None)      # [I, 3H] ...
"""
from resetlstm.torch.gru import ResetGRU
from resetlstm.torch.gru_ops import reset_gru
from resetlstm.torch.lstm import ResetLSTM, backward_resets
from resetlstm.torch.ops import reset_lstm

__all__ = ["ResetLSTM", "ResetGRU", "backward_resets", "reset_lstm", "reset_gru"]
