"""resetlstm.torch.reset_gru (the custom ops resetlstm::gru_forward / gru_backward, both of
Keras' forms) against the float64 reference of tests/reference_gru.py and torch.nn.GRU: the
forward and every gradient, gradcheck and gradgradcheck (double backward through the composite),
torch.library.opcheck, each packed document equal to torch.nn.GRU on it alone, half types, meta
tensors, errors that name the argument."""
import numpy as np
import pytest

from conftest import (assert_close, document_segments, gru_reference_for, gru_weights_to_torch,
                      make_gru_problem)

torch = pytest.importorskip("torch")
rt = pytest.importorskip("resetlstm.torch")

GRADS = ("inputs", "kernel", "recurrent_kernel", "bias", "h0")
FORMS = [True, False]
FORM_IDS = ["reset_after", "reset_before"]
SCENARIOS = {
    "plain": dict(),
    "resets+state": dict(resets=True, state=True),
    "masked": dict(resets=True, state=True, mask=True),
    "everything": dict(resets=True, state=True, mask=True, dropout=True),
}


def tensors(p, dtype=torch.float64, grad=True):
    t = {n: torch.tensor(p[n], dtype=dtype, requires_grad=grad) for n in GRADS
         if p[n] is not None}
    flags = {n: None if p[n] is None else torch.tensor(p[n]) for n in ("resets", "mask")}
    drop = None if p["dropout"] is None else torch.tensor(p["dropout"], dtype=dtype)
    return t, flags, drop


def run(p, t, flags, drop, time_major=False):
    tm = (lambda a: None if a is None else a.transpose(0, 1)) if time_major else (lambda a: a)
    y, h = rt.reset_gru(tm(t["inputs"]), t["kernel"], t["recurrent_kernel"], t["bias"],
                        resets=tm(flags["resets"]), mask=tm(flags["mask"]),
                        initial_state=t.get("h0"), recurrent_dropout_mask=drop,
                        time_major=time_major, reset_after=p["reset_after"])
    return tm(y), h


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_reset_gru_vs_reference(scenario, time_major, reset_after):
    p = make_gru_problem(700 + list(SCENARIOS).index(scenario), 5, 7, 4, 6,
                         reset_after=reset_after, **SCENARIOS[scenario])
    t, flags, drop = tensors(p)
    y, h = run(p, t, flags, drop, time_major)
    loss = (y * torch.tensor(p["d_outputs"])).sum() + (h * torch.tensor(p["d_h"])).sum()
    grads = dict(zip(t, torch.autograd.grad(loss, list(t.values()))))
    (ry, rh), rg = gru_reference_for(p)
    assert_close(y.detach().numpy(), ry, np.float64, "outputs")
    assert_close(h.detach().numpy(), rh, np.float64, "h_T")
    for n, g in grads.items():
        assert g.is_contiguous() or (time_major and n == "inputs")  # (a transposed view's)
        assert_close(g.numpy(), rg[n], np.float64, f"d_{n}", factor=10)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
def test_gradcheck_and_gradgradcheck(reset_after):
    p = make_gru_problem(720, 3, 4, 3, 2, reset_after=reset_after, resets=True, state=True,
                         mask=True, dropout=True)
    t, flags, drop = tensors(p)

    def f(x, k, r, b, h0):
        return rt.reset_gru(x, k, r, b, resets=flags["resets"], mask=flags["mask"],
                            initial_state=h0, recurrent_dropout_mask=drop,
                            reset_after=reset_after)

    args = [t[n] for n in GRADS]
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("training", [True, False])
def test_opcheck(training, reset_after):
    """torch.library.opcheck: schema, autograd registration, fake tensors, AOT dispatch (without
    training the backward recomputes the forward's activations)."""
    p = make_gru_problem(730, 4, 5, 3, 4, np.float32, reset_after=reset_after, resets=True,
                         state=True, mask=True, dropout=True)
    t, flags, drop = tensors(p, torch.float32)
    op = torch.ops.resetlstm.gru_forward.default
    torch.library.opcheck(op, (t["inputs"], t["kernel"], t["recurrent_kernel"], t["bias"],
                               flags["resets"], flags["mask"], t["h0"], drop, False, training,
                               reset_after))
    torch.library.opcheck(op, (t["inputs"].transpose(0, 1).contiguous(), t["kernel"],
                               t["recurrent_kernel"], t["bias"], None, None, None, None, True,
                               training, reset_after))


def test_each_document_equals_torch_nn_gru_alone():
    """With resets, every packed document's outputs equal torch.nn.GRU (weights converted from
    Keras' layout and gate order) run on it alone from a zero state (float64, 1e-10), and no
    output depends on an input outside its document."""
    p = make_gru_problem(740, 4, 18, 5, 6, reset_after=True, resets=True)
    y, _ = rt.reset_gru(*(torch.tensor(p[n]) for n in ("inputs", "kernel", "recurrent_kernel",
                                                       "bias")),
                        resets=torch.tensor(p["resets"]))
    gru = torch.nn.GRU(5, 6, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for param, value in zip((gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0,
                                 gru.bias_hh_l0),
                                gru_weights_to_torch(p["kernel"], p["recurrent_kernel"],
                                                     p["bias"])):
            param.copy_(torch.from_numpy(value))
        segments = list(document_segments(p["resets"]))
        assert len(segments) > 8
        for b, s, e in segments:
            alone, _ = gru(torch.tensor(p["inputs"][b:b + 1, s:e]))
            np.testing.assert_allclose(y[b, s:e].numpy(), alone[0].numpy(), rtol=0, atol=1e-10)
    x2 = torch.tensor(p["inputs"])
    b, s, e = segments[2]
    x2[b, :s] += 1
    x2[b, e:] -= 1
    y2, _ = rt.reset_gru(x2, *(torch.tensor(p[n]) for n in ("kernel", "recurrent_kernel",
                                                           "bias")),
                         resets=torch.tensor(p["resets"]))
    assert torch.equal(y2[b, s:e], y[b, s:e])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types(dtype):
    p = make_gru_problem(750, 3, 6, 4, 8, np.float32, resets=True, state=True)
    t, flags, _ = tensors(p, torch.float32, grad=False)
    y32, _ = run(p, t, flags, None)
    half = {n: v.to(dtype).requires_grad_() for n, v in t.items()}
    y, h = run(p, half, flags, None)
    assert y.dtype == h.dtype == dtype
    y.float().sum().backward()
    assert all(v.grad.dtype == dtype for v in half.values())
    np.testing.assert_allclose(y.float().detach().numpy(), y32.numpy(), atol=3e-2)


def test_meta_tensors_give_shapes():
    x, k = torch.zeros(2, 3, 4, device="meta"), torch.zeros(4, 15, device="meta")
    r, b = torch.zeros(5, 15, device="meta"), torch.zeros(2, 15, device="meta")
    y, h = rt.reset_gru(x, k, r, b)
    assert (y.shape, h.shape) == ((2, 3, 5), (2, 5)) and y.is_meta


def test_errors_name_the_argument():
    x, k, r = torch.zeros(2, 3, 4), torch.zeros(4, 15), torch.zeros(5, 15)
    b2 = torch.zeros(2, 15)
    cases = [
        (lambda: rt.reset_gru(x, k, r, torch.zeros(15)), ValueError,
         r"reset_gru: `bias` must be rank 2 \[2, 3H\]"),
        (lambda: rt.reset_gru(x, k, r, b2, reset_after=False), ValueError,
         r"reset_gru: `bias` must be rank 1 \[3H\]"),
        (lambda: rt.reset_gru(x, k, r, b2.double()), ValueError,
         r"reset_gru: `bias` has dtype torch.float64 but `inputs` has torch.float32"),
        (lambda: rt.reset_gru(x, k, r, b2, initial_state=torch.zeros(3, 5)), ValueError,
         r"`initial_state` must have shape \[B, H\] = \[2, 5\]"),
        (lambda: rt.reset_gru(x, k, r, b2, initial_state=(torch.zeros(2, 5),) * 2), ValueError,
         r"`initial_state` must be h0 \[B, H\]"),
        (lambda: rt.reset_gru(x, k, r, b2, resets=torch.zeros(3, 2)), ValueError,
         r"`resets` must have shape \[B, T\] = \[2, 3\]"),
        (lambda: rt.reset_gru(x, k.numpy(), r, b2), TypeError,
         r"reset_gru: `kernel` must be a torch.Tensor"),
    ]
    for call, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            call()
