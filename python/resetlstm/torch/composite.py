"""The reset-LSTM and the reset-GRU as loops of differentiable torch operations: the ops'
contract (DESIGN.md: Keras layout, gates i, f, c, o / z, r, h; a reset zeroes the row's state
before its step, as a select; Keras masking; the recurrent dropout mask on h in the recurrent
matmuls) step by step.

The fused kernels compute first derivatives only. When a gradient is taken with
``create_graph=True`` (double backward: gradient penalties, MAML, Hessian-vector products), the
op's backward differentiates this composite instead, so the gradient it returns is itself
differentiable; ``torch.autograd.gradgradcheck`` checks it against finite differences in the
tests. Nothing else runs it: it is T small steps where the fused op is one call.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["reset_lstm_composite", "reset_gru_composite"]


def _scan(inputs: Tensor, kernel: Tensor, bias: Tensor, resets: Optional[Tensor],
          mask: Optional[Tensor], states, hidden: int, time_major: bool, step):
    """The loop every cell shares: the input projection of all steps, then per step the resets
    (a select: nothing before a reset reaches past it), the cell's ``step(x_proj_t, states)``
    -> new states (h first), and Keras masking (a masked step carries the states and repeats
    the previous output). ``states``: the initial [B, H] tensors, None for zeros. Returns
    (outputs, the final states)."""
    x = inputs if time_major else inputs.transpose(0, 1)  # [T, B, I]
    steps, batch = x.shape[0], x.shape[1]

    def by_step(flags):
        return None if flags is None else (flags if time_major else flags.transpose(0, 1))

    resets, mask = by_step(resets), by_step(mask)
    zeros = x.new_zeros(batch, hidden)
    states = tuple(zeros if s is None else s for s in states)
    y = zeros
    xz = x @ kernel + bias  # [T, B, G*H]: the input projection of every step
    outputs = []
    for t in range(steps):
        if resets is not None:
            r = resets[t].unsqueeze(1)
            states = tuple(torch.where(r, zeros, s) for s in states)
        new = step(xz[t], states)
        if mask is None:
            states, y = new, new[0]
        else:
            m = mask[t].unsqueeze(1)
            states = tuple(torch.where(m, n, s) for n, s in zip(new, states))
            y = torch.where(m, new[0], y)
        outputs.append(y)
    out = torch.stack(outputs) if outputs else x.new_zeros(0, batch, hidden)
    return (out if time_major else out.transpose(0, 1)), states


def reset_lstm_composite(inputs: Tensor, kernel: Tensor, recurrent_kernel: Tensor, bias: Tensor,
                         resets: Optional[Tensor], mask: Optional[Tensor], h0: Optional[Tensor],
                         c0: Optional[Tensor], recurrent_dropout_mask: Optional[Tensor],
                         time_major: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(outputs, h_T, c_T) as ``resetlstm.torch.ops._forward`` computes them, in torch ops.
    inputs [B, T, I] ([T, B, I] if time_major); kernel [I, 4H]; recurrent_kernel [H, 4H];
    bias [4H]; resets, mask [B, T] ([T, B]) bool or None; h0, c0 [B, H] or None;
    recurrent_dropout_mask [B, H] or None."""
    H = recurrent_kernel.shape[0]

    def step(xz, states):
        h, c = states
        h_in = h if recurrent_dropout_mask is None else recurrent_dropout_mask * h
        i, f, g, o = (xz + h_in @ recurrent_kernel).split(H, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    out, (h, c) = _scan(inputs, kernel, bias, resets, mask, (h0, c0), H, time_major, step)
    return out, h, c


def reset_gru_composite(inputs: Tensor, kernel: Tensor, recurrent_kernel: Tensor, bias: Tensor,
                        resets: Optional[Tensor], mask: Optional[Tensor], h0: Optional[Tensor],
                        recurrent_dropout_mask: Optional[Tensor], time_major: bool,
                        reset_after: bool) -> Tuple[Tensor, Tensor]:
    """(outputs, h_T) as ``resetlstm.torch.gru_ops._gru_forward`` computes them, in torch ops.
    kernel [I, 3H], recurrent_kernel [H, 3H] (gates z, r, h); bias [2, 3H] with reset_after,
    else [3H]."""
    H = recurrent_kernel.shape[0]

    def step(xz, states):
        (h,) = states
        g = h if recurrent_dropout_mask is None else recurrent_dropout_mask * h
        x_z, x_r, x_n = xz.split(H, dim=1)
        if reset_after:
            h_z, h_r, h_n = (g @ recurrent_kernel + bias[1]).split(H, dim=1)
            z, r = torch.sigmoid(x_z + h_z), torch.sigmoid(x_r + h_r)
            n = torch.tanh(x_n + r * h_n)
        else:
            h_z, h_r = (g @ recurrent_kernel[:, :2 * H]).split(H, dim=1)
            z, r = torch.sigmoid(x_z + h_z), torch.sigmoid(x_r + h_r)
            n = torch.tanh(x_n + (r * g) @ recurrent_kernel[:, 2 * H:])
        return (z * h + (1 - z) * n,)

    out, (h,) = _scan(inputs, kernel, bias[0] if reset_after else bias, resets, mask, (h0,), H,
                      time_major, step)
    return out, h
