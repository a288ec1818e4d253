"""The reset-LSTM as a loop of differentiable torch operations: the op's contract (DESIGN.md
section 1: Keras layout, gates i, f, c, o; a reset zeroes the row's h and c before its step, as a
select; Keras masking; the recurrent dropout mask on h in the recurrent matmul) step by step.

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

__all__ = ["reset_lstm_composite"]


def reset_lstm_composite(inputs: Tensor, kernel: Tensor, recurrent_kernel: Tensor, bias: Tensor,
                         resets: Optional[Tensor], mask: Optional[Tensor], h0: Optional[Tensor],
                         c0: Optional[Tensor], recurrent_dropout_mask: Optional[Tensor],
                         time_major: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(outputs, h_T, c_T) as ``resetlstm.torch.ops._forward`` computes them, in torch ops.
    inputs [B, T, I] ([T, B, I] if time_major); kernel [I, 4H]; recurrent_kernel [H, 4H];
    bias [4H]; resets, mask [B, T] ([T, B]) bool or None; h0, c0 [B, H] or None;
    recurrent_dropout_mask [B, H] or None."""
    x = inputs if time_major else inputs.transpose(0, 1)  # [T, B, I]
    steps, batch = x.shape[0], x.shape[1]
    H = recurrent_kernel.shape[0]

    def by_step(flags):
        return None if flags is None else (flags if time_major else flags.transpose(0, 1))

    resets, mask = by_step(resets), by_step(mask)
    zeros = x.new_zeros(batch, H)
    h = zeros if h0 is None else h0
    c = zeros if c0 is None else c0
    y = zeros
    xz = x @ kernel + bias  # [T, B, 4H]: the input projection of every step
    outputs = []
    for t in range(steps):
        if resets is not None:  # a select: nothing before the reset reaches past it
            r = resets[t].unsqueeze(1)
            h = torch.where(r, zeros, h)
            c = torch.where(r, zeros, c)
        h_in = h if recurrent_dropout_mask is None else recurrent_dropout_mask * h
        i, f, g, o = (xz[t] + h_in @ recurrent_kernel).split(H, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        if mask is None:
            h, c, y = h_new, c_new, h_new
        else:  # a masked step carries the state and repeats the previous output
            m = mask[t].unsqueeze(1)
            h, c, y = torch.where(m, h_new, h), torch.where(m, c_new, c), torch.where(m, h_new, y)
        outputs.append(y)
    out = torch.stack(outputs) if outputs else x.new_zeros(0, batch, H)
    return (out if time_major else out.transpose(0, 1)), h, c
