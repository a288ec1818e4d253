"""What the drop-ins for torch.nn.LSTM and torch.nn.GRU share: the module (an ``nn.RNNBase``
with torch's parameters), the checks with torch's messages, the loop over layers and
directions around the fused op, and the resets of the reverse direction."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["ResetRNNBase", "backward_resets"]


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


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The lower-precision dtype of an enabled torch.autocast region on `device_type`, else None
    (torch.nn.LSTM and GRU run in it there too)."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


class ResetRNNBase(nn.RNNBase):
    """An ``nn.RNNBase`` of ``mode`` "LSTM" or "GRU" whose forward runs the fused op one layer
    and direction at a time. A subclass names its states (``STATES``) and supplies
    ``_layer_weights`` (the kernels' layout) and ``_run`` (the op on one layer-direction)."""

    STATES: Tuple[str, ...] = ()

    def forward(self, input: Tensor, hx=None, resets=None):
        mode, cls = self.mode, type(self).__name__
        if isinstance(input, PackedSequence):
            raise TypeError(
                f"resetlstm.torch.{cls} does not take a PackedSequence: lay the sequences end "
                "to end in the batch rows and pass `resets` (True at each sequence's first "
                "step; resetlstm.data.pack_documents builds such streams), or pad them into one "
                f"tensor; torch.nn.{mode} takes PackedSequence input")
        if not isinstance(input, Tensor) or input.dim() not in (2, 3):
            got = f"{input.dim()}D" if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"{mode}: Expected input to be 2D or 3D, got {got} instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        time_dim = 1 - batch_dim
        D = 2 if self.bidirectional else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        if input.shape[1 - batch_dim] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        states = None if hx is None else self._hidden_states(input, hx, is_batched)
        self.check_input(input, None)  # torch's checks and messages from here on
        if states is not None:
            expected = self.get_expected_hidden_size(input, None)
            for i, state in enumerate(states):
                index = f"[{i}]" if len(states) > 1 else ""
                self.check_hidden_size(state, expected, f"Expected hidden{index} size {{}}, "
                                       "got {}")
        if resets is not None:
            resets = self._check_resets(resets, input, is_batched, batch_dim)

        dtype = self._autocast_dtype(input.device.type) or input.dtype
        x = input.to(dtype)
        states = None if states is None else tuple(s.to(dtype) for s in states)
        finals = [[] for _ in self.STATES]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                k = layer * D + direction
                suffix = "_reverse" if direction else ""
                weights = self._layer_weights(f"l{layer}{suffix}", dtype)
                seq, r = x, resets
                if direction:
                    seq = x.flip(time_dim)
                    r = None if resets is None else backward_resets(resets, time_dim)
                y, *last = self._run(seq, *weights, r,
                                     None if states is None else tuple(s[k] for s in states),
                                     not self.batch_first)
                outputs.append(y.flip(time_dim) if direction else y)
                for acc, s in zip(finals, last):
                    acc.append(s)
            x = outputs[0] if D == 1 else torch.cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, p=self.dropout, training=True)
        finals = [torch.stack(f) for f in finals]
        if not is_batched:
            x = x.squeeze(batch_dim)
            finals = [f.squeeze(1) for f in finals]
        return x, (tuple(finals) if len(finals) > 1 else finals[0])

    def _autocast_dtype(self, device_type: str) -> Optional[torch.dtype]:
        """The dtype this module computes in under an enabled torch.autocast on
        `device_type` (None: its input's), as torch's module of the same mode does there."""
        return autocast_dtype(device_type)

    def _hidden_states(self, input: Tensor, hx, is_batched: bool) -> Tuple[Tensor, ...]:
        """hx as a tuple of [layers * D, batch, H] tensors, checked as torch.nn.LSTM / GRU
        check it (dtype and device outside autocast; dimensions), with their messages."""
        mode, n = self.mode, len(self.STATES)
        if n > 1:
            if not isinstance(hx, (tuple, list)):
                raise ValueError(f"{mode}: `hx` must be a tuple ({', '.join(self.STATES)}) of "
                                 f"tensors, got {type(hx).__name__}")
            if len(hx) != n:
                raise RuntimeError(f"{mode.lower()} expects two hidden states "
                                   f"({', '.join(self.STATES)}), got {len(hx)}")
            states = tuple(hx)
        else:
            if not isinstance(hx, Tensor):
                raise ValueError(f"{mode}: `hx` must be a tensor {self.STATES[0]} "
                                 f"[num_layers * num_directions, batch, hidden_size], got "
                                 f"{type(hx).__name__}")
            states = (hx,)
        for name, state in zip(self.STATES, states):
            if not isinstance(state, Tensor):
                raise TypeError(f"{mode}: `hx` must hold tensors ({', '.join(self.STATES)}); "
                                f"{name} is a {type(state).__name__}")
            if state.device != input.device:
                raise RuntimeError(
                    "Input and hidden tensors are not at the same device, found input tensor "
                    f"at {input.device} and hidden tensor ({name}) at {state.device}")
            if state.dtype != input.dtype and self._autocast_dtype(input.device.type) is None:
                raise RuntimeError(
                    f"{mode}: hidden state {name} has dtype {state.dtype} but the input has "
                    f"{input.dtype}; {' and '.join(self.STATES)} must have the input's dtype "
                    f"(convert: {name}.to({input.dtype}))")
        want = 3 if is_batched else 2
        if any(s.dim() != want for s in states):
            kind = "batched 3-D" if is_batched else "unbatched 2-D"
            if n > 1:
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {want}-D but got "
                    f"({states[0].dim()}-D, {states[1].dim()}-D) tensors")
            raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got "
                               f"{states[0].dim()}-D tensor")
        if not is_batched:
            states = tuple(s.unsqueeze(1) for s in states)
        return states

    def _check_resets(self, resets, input: Tensor, is_batched: bool, batch_dim: int) -> Tensor:
        cls = type(self).__name__
        resets = torch.as_tensor(resets, device=input.device)
        if not is_batched:
            if resets.dim() != 1:
                raise ValueError(f"{cls}: for unbatched input `resets` must be [seq] = "
                                 f"[{input.shape[1 - batch_dim]}], got shape "
                                 f"{list(resets.shape)}")
            resets = resets.unsqueeze(batch_dim)
        expected = list(input.shape[:2])
        if list(resets.shape) != expected:
            layout = "[batch, seq]" if self.batch_first else "[seq, batch]"
            raise ValueError(
                f"{cls}: `resets` must have shape {layout} = {expected} (batch_first="
                f"{self.batch_first}, input shape {list(input.shape)}), got shape "
                f"{list(resets.shape)}")
        return resets

    def _weights(self, name: str):
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer-direction `name`, the biases None
        without them. Read at every call: a copy kept between calls could not see a parameter
        changed through `.data` (which bumps no version counter: target networks, EMA and polyak
        updates do it)."""
        weights = (getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}"))
        if not self.bias:
            return weights + (None, None)
        return weights + (getattr(self, f"bias_ih_{name}"), getattr(self, f"bias_hh_{name}"))
