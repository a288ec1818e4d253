"""`ResetLSTM`: a drop-in for `torch.nn.LSTM` whose state can be reset per batch row at any
time step, computed by the fused op (``resetlstm.torch.reset_lstm``) one layer and direction at a
time."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from resetlstm.torch._rnn import ResetRNNBase, backward_resets
from resetlstm.torch.layout import to_kernel_layout
from resetlstm.torch.ops import reset_lstm

__all__ = ["ResetLSTM", "backward_resets"]

# torch.nn.LSTM's gate blocks (i, f, g, o) are the kernels' (i, f, c, o)
_ORDER = (0, 1, 2, 3)


class ResetLSTM(ResetRNNBase):
    """A drop-in for ``torch.nn.LSTM`` with per-row resets.

    Same constructor (``input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None``), same parameters
    (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ``..._reverse``,
    created by the same ``torch.nn.RNNBase`` with the same initialisation, so ``state_dict``s
    load both ways), same call and return (batched, unbatched, ``hx``), plus ``resets``::

        output, (h_n, c_n) = lstm(input, hx=None, resets=None)

    ``resets``: ``[batch, seq]`` when ``batch_first`` else ``[seq, batch]`` (``[seq]`` for
    unbatched input), bool or 0/1. True at (b, t) zeroes row b's h and c in every layer before
    step t, in forward time; the reverse direction of a bidirectional module starts each
    sequence from a zero state at its last step (``backward_resets``), so neither direction
    carries state across a reset. No gradient crosses a reset.

    Inside ``torch.autocast`` the module computes in the autocast dtype, as ``torch.nn.LSTM``
    does (float32 accumulation and cell state inside the fused kernels).

    Refused, with the alternative named: ``proj_size > 0`` and ``PackedSequence`` input.

    It is an ``nn.RNNBase`` (mode "LSTM") but not an ``nn.LSTM``: TorchDynamo refuses to trace
    instances of ``nn.LSTM`` (``torch._dynamo.config.allow_rnn``), and this module is meant to
    compile (``torch.compile(model, fullgraph=True)``).
    """

    STATES = ("h_0", "c_0")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None):
        if proj_size:
            raise ValueError(
                f"resetlstm.torch.ResetLSTM does not support proj_size (got {proj_size!r}): the "
                "fused kernel has no projection. Use torch.nn.LSTM(proj_size=...), or follow "
                "ResetLSTM with a torch.nn.Linear (which projects the outputs, not the state)")
        super().__init__("LSTM", input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None,
                resets=None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        return super().forward(input, hx, resets)

    def _layer_weights(self, name: str, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
        """(kernel [I, 4H], recurrent_kernel [H, 4H], bias [4H]) of layer-direction `name`
        (e.g. "l0_reverse") in the kernels' layout: the transposed weights (torch's gate order
        i, f, g, o is the kernels' i, f, c, o) and the sum of the two biases."""
        w_ih, w_hh, b_ih, b_hh = self._weights(name)
        kernel, recurrent = to_kernel_layout([w_ih.to(dtype), w_hh.to(dtype)], _ORDER)
        bias = (b_ih + b_hh).to(dtype) if self.bias else kernel.new_zeros(kernel.shape[1])
        return kernel, recurrent, bias

    @staticmethod
    def _run(seq, kernel, recurrent, bias, resets, state, time_major):
        return reset_lstm(seq, kernel, recurrent, bias, resets=resets, initial_state=state,
                          time_major=time_major)
