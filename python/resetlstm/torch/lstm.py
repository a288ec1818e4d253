"""`ResetLSTM`: a drop-in for `torch.nn.LSTM` whose state can be reset per batch row at any
time step, computed by the fused op (``resetlstm.torch.reset_lstm``) one layer and direction at a
time."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from resetlstm.torch.ops import reset_lstm

__all__ = ["ResetLSTM", "backward_resets"]


def backward_resets(resets: Tensor, time_axis: int) -> Tensor:
    """The resets of the backward direction, for the time-reversed sequence.

    ``resets[b, t]`` means "a new sequence starts at step t" in forward time. Read backwards a
    sequence starts at its *last* step, so reversed step s (forward step T-1-s) resets when a
    sequence starts at forward step T-s, the step after it: ``result[s] = resets[T-s]`` along
    ``time_axis`` for s >= 1 and ``result[0] = False`` (the rule of
    ``resetlstm.keras.backward_resets``)."""
    flipped = resets.flip(time_axis)
    first = torch.zeros_like(flipped.narrow(time_axis, 0, 1))
    return torch.cat([first, flipped.narrow(time_axis, 0, flipped.shape[time_axis] - 1)],
                     time_axis)


class _KerasLayout(torch.autograd.Function):
    """``weight.t().contiguous()``: a torch weight [4H, in] as the kernels' [in, 4H]. Its gradient
    comes back contiguous in the weight's own layout, as torch.nn.LSTM's does (plain
    ``.t().contiguous()`` would hand ``torch.autograd.grad`` a transposed view), and stays
    differentiable (double backward)."""

    @staticmethod
    def forward(weight: Tensor) -> Tensor:
        return weight.t().contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.t().contiguous()


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The lower-precision dtype of an enabled torch.autocast region on `device_type`, else None
    (torch.nn.LSTM runs in it there too)."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


class ResetLSTM(nn.RNNBase):
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
        if isinstance(input, PackedSequence):
            raise TypeError(
                "resetlstm.torch.ResetLSTM does not take a PackedSequence: lay the sequences "
                "end to end in the batch rows and pass `resets` (True at each sequence's first "
                "step; resetlstm.data.pack_documents builds such streams), or pad them into one "
                "tensor; torch.nn.LSTM takes PackedSequence input")
        if not isinstance(input, Tensor) or input.dim() not in (2, 3):
            got = f"{input.dim()}D" if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {got} instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        time_dim = 1 - batch_dim
        D = 2 if self.bidirectional else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        batch = input.shape[batch_dim]
        if input.shape[1 - batch_dim] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if hx is not None:
            if not isinstance(hx, (tuple, list)):
                raise ValueError("LSTM: `hx` must be a tuple (h_0, c_0) of tensors, got "
                                 f"{type(hx).__name__}")
            if len(hx) != 2:
                raise RuntimeError(f"lstm expects two hidden states (h_0, c_0), got {len(hx)}")
            self._check_hidden_types(input, hx)
            want = 3 if is_batched else 2
            if hx[0].dim() != want or hx[1].dim() != want:
                raise RuntimeError(
                    f"For {'batched 3-D' if is_batched else 'unbatched 2-D'} input, hx and cx "
                    f"should also be {want}-D but got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            if not is_batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        if hx is None:  # zeros, as in torch.nn.LSTM; the op starts from zeros without them
            zeros = torch.zeros(self.num_layers * D, batch, self.hidden_size, dtype=input.dtype,
                                device=input.device)
            self._check_forward_args(input, (zeros, zeros))
        else:
            self._check_forward_args(input, hx)
        if resets is not None:
            resets = self._check_resets(resets, input, is_batched, batch_dim)

        dtype = _autocast_dtype(input.device.type) or input.dtype
        x = input.to(dtype)
        h0, c0 = (None, None) if hx is None else (hx[0].to(dtype), hx[1].to(dtype))
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                k = layer * D + direction
                suffix = "_reverse" if direction else ""
                kernel, recurrent, bias = self._kernel_weights(f"l{layer}{suffix}", dtype)
                seq, r = x, resets
                if direction:
                    seq = x.flip(time_dim)
                    r = None if resets is None else backward_resets(resets, time_dim)
                y, h, c = reset_lstm(seq, kernel, recurrent, bias, resets=r,
                                     initial_state=None if h0 is None else (h0[k], c0[k]),
                                     time_major=not self.batch_first)
                outputs.append(y.flip(time_dim) if direction else y)
                h_n.append(h)
                c_n.append(c)
            x = outputs[0] if D == 1 else torch.cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, p=self.dropout, training=True)
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if not is_batched:
            x, h_n, c_n = x.squeeze(batch_dim), h_n.squeeze(1), c_n.squeeze(1)
        return x, (h_n, c_n)

    def _kernel_weights(self, name: str, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
        """(kernel [I, 4H], recurrent_kernel [H, 4H], bias [4H]) of layer-direction `name`
        (e.g. "l0_reverse") in the kernels' layout: the transposed weights (torch's gate order
        i, f, g, o is the kernels' i, f, c, o) and the sum of the two biases. Made at every
        call: a copy kept between calls could not see a parameter changed through `.data`
        (which bumps no version counter: target networks, EMA and polyak updates do it)."""
        w_ih, w_hh = getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}")
        kernel = _KerasLayout.apply(w_ih.to(dtype))
        recurrent = _KerasLayout.apply(w_hh.to(dtype))
        if self.bias:
            bias = (getattr(self, f"bias_ih_{name}") + getattr(self, f"bias_hh_{name}")).to(dtype)
        else:
            bias = kernel.new_zeros(kernel.shape[1])
        return kernel, recurrent, bias

    def _check_forward_args(self, input: Tensor, hx) -> None:
        """torch.nn.LSTM's checks of the input (size; dtype, outside autocast) and of both state
        shapes, with its messages."""
        self.check_input(input, None)
        expected = self.get_expected_hidden_size(input, None)
        self.check_hidden_size(hx[0], expected, "Expected hidden[0] size {}, got {}")
        self.check_hidden_size(hx[1], expected, "Expected hidden[1] size {}, got {}")

    @staticmethod
    def _check_hidden_types(input: Tensor, hx) -> None:
        """h_0 and c_0 must be tensors of the input's dtype (outside autocast, which casts them
        all) on the input's device: torch.nn.LSTM raises RuntimeErrors for both."""
        for name, state in (("h_0", hx[0]), ("c_0", hx[1])):
            if not isinstance(state, Tensor):
                raise TypeError(f"LSTM: `hx` must hold tensors (h_0, c_0); {name} is a "
                                f"{type(state).__name__}")
            if state.device != input.device:
                raise RuntimeError(
                    "Input and hidden tensors are not at the same device, found input tensor "
                    f"at {input.device} and hidden tensor ({name}) at {state.device}")
            if state.dtype != input.dtype and _autocast_dtype(input.device.type) is None:
                raise RuntimeError(
                    f"LSTM: hidden state {name} has dtype {state.dtype} but the input has "
                    f"{input.dtype}; h_0 and c_0 must have the input's dtype (convert them: "
                    f"{name}.to({input.dtype}))")

    def _check_resets(self, resets, input: Tensor, is_batched: bool, batch_dim: int) -> Tensor:
        resets = torch.as_tensor(resets, device=input.device)
        if not is_batched:
            if resets.dim() != 1:
                raise ValueError(f"ResetLSTM: for unbatched input `resets` must be [seq] = "
                                 f"[{input.shape[1 - batch_dim]}], got shape "
                                 f"{list(resets.shape)}")
            resets = resets.unsqueeze(batch_dim)
        expected = list(input.shape[:2])
        if list(resets.shape) != expected:
            layout = "[batch, seq]" if self.batch_first else "[seq, batch]"
            raise ValueError(
                f"ResetLSTM: `resets` must have shape {layout} = {expected} (batch_first="
                f"{self.batch_first}, input shape {list(input.shape)}), got shape "
                f"{list(resets.shape)}")
        return resets
