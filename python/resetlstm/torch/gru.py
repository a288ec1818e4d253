"""`ResetGRU`: a drop-in for `torch.nn.GRU` whose state can be reset per batch row at any time
step, computed by the fused op (``resetlstm.torch.reset_gru``) one layer and direction at a
time."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from resetlstm.torch._rnn import ResetRNNBase
from resetlstm.torch.gru_ops import reset_gru
from resetlstm.torch.layout import to_kernel_layout

__all__ = ["ResetGRU"]


# the kernels' gate blocks (z, r, h) are torch.nn.GRU's blocks (r, z, n) in this order
_ORDER = (1, 0, 2)


class ResetGRU(ResetRNNBase):
    """A drop-in for ``torch.nn.GRU`` with per-row resets.

    Same constructor (``input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None``), same parameters
    (``weight_ih_l0`` [3H, I] with torch's gate order r, z, n, ``weight_hh_l0``, ``bias_ih_l0``,
    ``bias_hh_l0``, ``..._reverse``, made by the same ``torch.nn.RNNBase``, so ``state_dict``s
    load both ways), same call and return (batched, unbatched, ``hx``), plus ``resets``::

        output, h_n = gru(input, hx=None, resets=None)

    torch.nn.GRU's cell is Keras' ``reset_after=True`` form (the candidate reads
    ``r * (W_hn h + b_hn)``), which the fused op computes with the weights reordered to its
    z, r, h blocks at every call. ``resets``: ``[batch, seq]`` when ``batch_first`` else
    ``[seq, batch]`` (``[seq]`` unbatched), bool or 0/1: True at (b, t) zeroes row b's h in every
    layer before step t, in forward time; the reverse direction of a bidirectional module starts
    each sequence from zero at its last step. No gradient crosses a reset. Under
    ``torch.autocast`` it computes as ``torch.nn.GRU`` does: in the autocast dtype on CUDA, in
    its input's dtype on the CPU.

    Refused, with the alternative named: ``PackedSequence`` input. An ``nn.RNNBase`` (mode
    "GRU") but not an ``nn.GRU``, so that ``torch.compile(fullgraph=True)`` traces it.
    """

    STATES = ("h_0",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: Optional[int] = None, device=None, dtype=None):
        if proj_size is not None:  # torch.nn.GRU's error, for any proj_size
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None,
                resets=None) -> Tuple[Tensor, Tensor]:
        return super().forward(input, hx, resets)

    def _autocast_dtype(self, device_type: str) -> Optional[torch.dtype]:
        """torch.nn.GRU follows autocast on CUDA (cuDNN's RNN is cast) but not on the CPU, where
        it runs in its input's dtype; so does this module."""
        return None if device_type == "cpu" else super()._autocast_dtype(device_type)

    def _layer_weights(self, name: str, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
        """(kernel [I, 3H], recurrent_kernel [H, 3H], bias [2, 3H]) of layer-direction `name`
        in the kernels' layout: gate blocks reordered to z, r, h, weights transposed, the input
        and recurrent biases as the two rows (zeros without bias)."""
        w_ih, w_hh, b_ih, b_hh = self._weights(name)
        if self.bias:  # each bias as a [3H, 1] weight: [1, 3H] reordered, then the two rows
            kernel, recurrent, b_in, b_rec = to_kernel_layout(
                [w.to(dtype) for w in (w_ih, w_hh, b_ih[:, None], b_hh[:, None])], _ORDER)
            return kernel, recurrent, torch.cat([b_in, b_rec])
        kernel, recurrent = to_kernel_layout([w_ih.to(dtype), w_hh.to(dtype)], _ORDER)
        return kernel, recurrent, kernel.new_zeros(2, kernel.shape[1])

    @staticmethod
    def _run(seq, kernel, recurrent, bias, resets, state, time_major):
        return reset_gru(seq, kernel, recurrent, bias, resets=resets,
                         initial_state=None if state is None else state[0],
                         time_major=time_major)
