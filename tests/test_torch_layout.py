"""resetlstm.torch.layout: torch.nn.LSTM / GRU weights in the kernels' layout and back, against
the same conversion written with torch's own ops (chunk, cat, transpose), on the CPU path
(resetlstm._native.gate_transpose, tested bit for bit in test_native.py) and the generic one;
opcheck, gradients, double backward, refusals."""
import pytest

torch = pytest.importorskip("torch")

from resetlstm.torch import layout  # noqa: E402
from resetlstm.torch.layout import from_kernel_layout, to_kernel_layout  # noqa: E402


def reference(weight, order):
    blocks = weight.chunk(len(order), 0)
    return torch.cat([blocks[g] for g in order], 0).t()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("order, H, n", [((1, 0, 2), 5, 7), ((0, 1, 2, 3), 33, 40),
                                         ((2, 0, 1), 64, 1), ((1, 0, 2), 1, 70)])
def test_equals_torch_ops_both_ways(dtype, order, H, n):
    weight = torch.randn(len(order) * H, n).to(dtype)
    kernel = to_kernel_layout([weight], order)[0]
    assert kernel.dtype == dtype and kernel.is_contiguous()
    assert torch.equal(kernel, reference(weight, order))
    assert torch.equal(from_kernel_layout([kernel], order)[0], weight)
    # the generic path (other devices, the meta device) gives the same
    assert torch.equal(layout._generic_to_kernel([weight], list(order))[0], kernel)
    assert torch.equal(layout._generic_from_kernel([kernel], list(order))[0], weight)
    strided = torch.randn(n, len(order) * H).to(dtype).t()  # not contiguous
    assert torch.equal(to_kernel_layout([strided], order)[0], reference(strided, order))


def test_custom_ops_pass_opcheck():
    """The ops torch.compile traces: schema, fake (meta) implementation and autograd as
    torch.library.opcheck checks them."""
    weights = [torch.randn(9, 4, requires_grad=True), torch.randn(9, 3, requires_grad=True)]
    torch.library.opcheck(layout._to_kernel, (weights, [1, 0, 2]))
    kernels = [torch.randn(4, 12, requires_grad=True)]
    torch.library.opcheck(layout._from_kernel, (kernels, [0, 1, 2, 3]))


def test_gradients_and_double_backward():
    weights = [torch.randn(9, 4, dtype=torch.float64, requires_grad=True),
               torch.randn(9, 3, dtype=torch.float64, requires_grad=True)]
    torch.autograd.gradcheck(lambda *w: tuple(to_kernel_layout(w, (1, 0, 2))), weights)
    torch.autograd.gradgradcheck(lambda *w: tuple(to_kernel_layout(w, (1, 0, 2))), weights)
    kernels = [torch.randn(4, 9, dtype=torch.float64, requires_grad=True)]
    torch.autograd.gradcheck(lambda k: from_kernel_layout([k], (2, 0, 1))[0], kernels)
    torch.autograd.gradgradcheck(lambda k: from_kernel_layout([k], (2, 0, 1))[0], kernels)
    # the gradient lands in the weight's own layout, contiguous
    w = torch.randn(12, 5, requires_grad=True)
    g = torch.randn(5, 12)
    to_kernel_layout([w], (0, 1, 2, 3))[0].backward(g)
    assert w.grad.is_contiguous() and torch.equal(w.grad, g.t())


def test_refusals_name_the_problem():
    w = torch.randn(9, 4)
    with pytest.raises(ValueError, match=r"`order` must be a permutation of 0..2, got \[0, 0, 1\]"):
        to_kernel_layout([w], (0, 0, 1))
    with pytest.raises(ValueError, match=r"dim 0 is a multiple of 4 \(the gates\), got shape "
                                         r"\[9, 4\]"):
        to_kernel_layout([w], (0, 1, 2, 3))
    with pytest.raises(ValueError, match=r"dim 1 is a multiple of 3.*got shape \[9\]"):
        from_kernel_layout([torch.randn(9)], (1, 0, 2))
