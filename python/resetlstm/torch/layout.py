"""torch.nn.LSTM's and GRU's weight layout and the kernels' (Keras'), converted both ways by two
torch custom operators with fake implementations (``torch.compile(fullgraph=True)`` traces
them), differentiable through ``to_kernel_layout`` / ``from_kernel_layout`` (each the other's
gradient, so double backward works):

- ``resetlstm::to_kernel_layout(weights, order)``: each weight [G*H, n] as [n, G*H], the
  kernels' gate block j being torch's row block ``order[j]`` (LSTM: (0, 1, 2, 3); GRU:
  (1, 0, 2), torch's r, z, n as z, r, h);
- ``resetlstm::from_kernel_layout(kernels, order)``: the inverse.

A list per call, so that a layer's weights take one autograd node (each node costs tens of
microseconds per call, which a small batch notices).

The drop-in modules convert their weights at every call (so that a parameter changed in place,
through ``.data`` too, is always seen), and the gradients back. On the CPU one pass of
``resetlstm._native.gate_transpose`` does each (a tiled copy); other devices use torch ops.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from resetlstm import _native

__all__ = ["to_kernel_layout", "from_kernel_layout"]

# the integer dtype of each float dtype's size: the CPU copy moves bits
_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _cpu(t: Tensor, order: List[int], to_kernel: bool) -> Tensor:
    src = t.detach().contiguous()
    bits = _BITS[src.element_size()]
    out = _native.gate_transpose(src.view(bits).numpy(), len(order), list(order), to_kernel)
    return torch.from_numpy(out).view(t.dtype)


def _generic_to_kernel(weights, order):
    """to_kernel_layout in torch ops (any device)."""
    out = []
    for weight in weights:
        blocks = weight.chunk(len(order), 0)
        out.append(torch.cat([blocks[g] for g in order], 0).t().contiguous())
    return out


def _generic_from_kernel(kernels, order):
    """from_kernel_layout in torch ops (any device)."""
    where = {g: j for j, g in enumerate(order)}  # torch block g is the kernels' block where[g]
    out = []
    for kernel in kernels:
        blocks = kernel.t().chunk(len(order), 0)
        out.append(torch.cat([blocks[where[g]] for g in range(len(order))], 0).contiguous())
    return out


@torch.library.custom_op("resetlstm::to_kernel_layout", mutates_args=())
def _to_kernel(weights: List[Tensor], order: List[int]) -> List[Tensor]:
    return _generic_to_kernel(weights, order)


@_to_kernel.register_kernel("cpu")
def _to_kernel_cpu(weights, order):
    return [_cpu(w, order, True) for w in weights]


@_to_kernel.register_fake
def _to_kernel_fake(weights, order):
    return [w.new_empty(w.shape[1], w.shape[0]) for w in weights]


@torch.library.custom_op("resetlstm::from_kernel_layout", mutates_args=())
def _from_kernel(kernels: List[Tensor], order: List[int]) -> List[Tensor]:
    return _generic_from_kernel(kernels, order)


@_from_kernel.register_kernel("cpu")
def _from_kernel_cpu(kernels, order):
    return [_cpu(k, order, False) for k in kernels]


@_from_kernel.register_fake
def _from_kernel_fake(kernels, order):
    return [k.new_empty(k.shape[1], k.shape[0]) for k in kernels]


def _save_order(ctx, inputs, output):
    ctx.order = inputs[1]


def _grads(convert):
    def backward(ctx, grads):
        return convert(list(grads), ctx.order), None
    return backward


# the ops' autograd, for torch.compile (the eager path below is cheaper per call)
_to_kernel.register_autograd(_grads(_from_kernel), setup_context=_save_order)
_from_kernel.register_autograd(_grads(_to_kernel), setup_context=_save_order)


class _Layout(torch.autograd.Function):
    """The conversion in eager mode, ``to_kernel`` choosing the direction; its gradient is the
    other direction, so double backward works. An autograd.Function on the CPU kernel itself
    costs about half of what the custom op with its registered autograd costs per call
    (measured: 151 vs 257 us fwd+bwd for a GRU layer's three tensors at H = 128); under
    torch.compile, which does not trace this Function's context, the custom ops run. Off the
    CPU the forward calls the custom op (its generic kernel)."""

    @staticmethod
    def forward(to_kernel, order, *tensors):
        tensors = list(tensors)
        if any(t.device.type != "cpu" for t in tensors):
            return tuple((_to_kernel if to_kernel else _from_kernel)(tensors, order))
        # on the CPU the kernel directly: the dispatcher's round trip costs as much as the copy
        return tuple(_cpu(t, order, to_kernel) for t in tensors)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.to_kernel, ctx.order = inputs[0], inputs[1]

    @staticmethod
    def backward(ctx, *grads):
        return (None, None) + _Layout.apply(not ctx.to_kernel, ctx.order, *grads)


def _convert(tensors: Sequence[Tensor], order: Sequence[int], to_kernel: bool) -> List[Tensor]:
    """Both public functions: the checks, then the custom op where torch.compile traces, the
    eager Function otherwise."""
    what, axis = ("to_kernel_layout", 0) if to_kernel else ("from_kernel_layout", 1)
    for t in tensors:
        order = _checked(t, order, axis, what)
    if torch.compiler.is_compiling():
        return (_to_kernel if to_kernel else _from_kernel)(list(tensors), order)
    return list(_Layout.apply(to_kernel, order, *tensors))


def _checked(t: Tensor, order: Sequence[int], axis: int, what: str) -> List[int]:
    order = [int(g) for g in order]
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"{what}: `order` must be a permutation of 0..{len(order) - 1}, got "
                         f"{order}")
    if t.dim() != 2 or t.shape[axis] % len(order):
        raise ValueError(f"{what}: expected a 2-D tensor whose dim {axis} is a multiple of "
                         f"{len(order)} (the gates), got shape {list(t.shape)}")
    return order


def to_kernel_layout(weights: Sequence[Tensor], order: Sequence[int]) -> List[Tensor]:
    """Torch weights [G*H, n] as the kernels' [n, G*H], gate block j = torch's block order[j];
    all of them in one call and one autograd node (differentiable, twice)."""
    return _convert(weights, order, True)


def from_kernel_layout(kernels: Sequence[Tensor], order: Sequence[int]) -> List[Tensor]:
    """The inverse of ``to_kernel_layout``: the kernels' [n, G*H] as torch weights [G*H, n]."""
    return _convert(kernels, order, False)
