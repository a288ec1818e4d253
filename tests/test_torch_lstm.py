"""resetlstm.torch.ResetLSTM and ResetGRU, the drop-ins for torch.nn.LSTM and torch.nn.GRU:
same parameters and state_dict, the same results and gradients as torch's module (float64) for
every constructor option and call form, per-row resets (each sequence of a packed row equals
torch's module on it alone, both directions, every layer), torch.compile, dtypes, autocast, and
clear refusals."""
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rt = pytest.importorskip("resetlstm.torch")
nn = torch.nn

CONFIGS = [dict(), dict(batch_first=True), dict(num_layers=3), dict(bidirectional=True),
           dict(num_layers=2, bidirectional=True, batch_first=True), dict(bias=False),
           dict(num_layers=2, dropout=0.3)]


CELLS = {"LSTM": (nn.LSTM, rt.ResetLSTM), "GRU": (nn.GRU, rt.ResetGRU)}
STATES = {"LSTM": 2, "GRU": 1}


def pair(cell="LSTM", input_size=5, hidden_size=7, dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    torch_cls, ours_cls = CELLS[cell]
    ref = torch_cls(input_size, hidden_size, dtype=dtype, **kwargs)
    ours = ours_cls(input_size, hidden_size, dtype=dtype, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def states(hx):
    """The state tensors of hx or of a module's returned state: (h, c) or h."""
    return list(hx) if isinstance(hx, (tuple, list)) else [hx]


def make_hx(cell, *shape, requires_grad=False):
    hx = tuple(torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)
               for _ in range(STATES[cell]))
    return hx if cell == "LSTM" else hx[0]


def run(module, x, hx=None, **kwargs):
    """Outputs and the gradients of a fixed random loss w.r.t. x, hx and every parameter."""
    y, last = module(x, hx, **kwargs) if hx is not None else module(x, **kwargs)
    outs = [y] + states(last)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outs)
    leaves = [x] + ([] if hx is None else states(hx)) + list(module.parameters())
    grads = torch.autograd.grad(loss, leaves)
    return outs, grads


def assert_same(a, b, atol=1e-12):
    for u, v in zip(a, b):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_allclose(u.detach().numpy(), v.detach().numpy(), rtol=0, atol=atol)


@pytest.mark.parametrize("cell", CELLS)
def test_parameters_and_state_dict_are_torch_s(cell):
    ref, ours = pair(cell, num_layers=2, bidirectional=True)
    assert [(n, p.shape) for n, p in ref.named_parameters()] == \
        [(n, p.shape) for n, p in ours.named_parameters()]
    torch.manual_seed(3)
    fresh = CELLS[cell][0](5, 7, num_layers=2, bidirectional=True, dtype=torch.float64)
    fresh.load_state_dict(ours.state_dict())  # and back
    for (n, p), (_, q) in zip(fresh.named_parameters(), ours.named_parameters()):
        assert torch.equal(p, q), n
    # the same initialisation: uniform(-1/sqrt(H), 1/sqrt(H))
    bound = 1 / np.sqrt(7)
    assert all(float(p.detach().abs().max()) <= bound for p in CELLS[cell][1](5, 7).parameters())
    assert isinstance(ours, nn.RNNBase) and ours.mode == cell
    assert repr(ours).startswith(f"Reset{cell}(5, 7, num_layers=2, bidirectional=True)")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(map(str, c.items())) or "default")
@pytest.mark.parametrize("with_hx", [False, True], ids=["zeros", "hx"])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch(cell, config, with_hx):
    ref, ours = pair(cell, **config)
    D = 2 if config.get("bidirectional") else 1
    L = config.get("num_layers", 1)
    shape = (4, 6, 5) if config.get("batch_first") else (6, 4, 5)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    hx = None
    if with_hx:
        hx = make_hx(cell, L * D, 4, 7, requires_grad=True)
    ref.eval(), ours.eval()  # dropout (training only) is checked below
    assert_same(run(ref, x, hx)[0], run(ours, x, hx)[0])
    assert_same(run(ref, x, hx)[1], run(ours, x, hx)[1], atol=1e-11)


@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_input(cell):
    ref, ours = pair(cell, num_layers=2, bidirectional=True)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    hx = make_hx(cell, 4, 7, requires_grad=True)
    outs, _ = run(ours, x, hx)
    assert outs[0].shape == (6, 14) and all(s.shape == (4, 7) for s in outs[1:])
    assert_same(run(ref, x, hx)[0], outs)
    assert_same(run(ref, x)[1], run(ours, x)[1], atol=1e-11)
    # resets [seq] for unbatched input: the same as the batched call
    r = torch.tensor([0, 0, 1, 0, 1, 0], dtype=torch.bool)
    y1 = ours(x, resets=r)[0]
    y2 = ours(x[:, None], resets=r[:, None])[0][:, 0]
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_between_layers_in_training(cell):
    """dropout=1.0 zeroes every layer's output but the last's, in torch's module and here alike
    (deterministic); 0 < dropout < 1 draws masks (outputs differ from eval mode, and between
    calls) and eval mode never drops."""
    ref, ours = pair(cell, num_layers=3, dropout=1.0)
    ref.train(), ours.train()
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    assert_same(ref(x)[0], ours(x)[0])
    _, ours = pair(cell, num_layers=2, dropout=0.5)
    ours.train()
    a, b = ours(x)[0], ours(x)[0]
    assert not torch.equal(a, b)
    ours.eval()
    assert torch.equal(ours(x)[0], ours(x)[0])


@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True),
                                    dict(batch_first=True, bidirectional=True)],
                         ids=["1-layer", "2-layer-bi", "batch-first-bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_resets_give_each_sequence_alone(cell, config):
    """Sequences laid end to end in each row, resets at their first steps: every sequence's
    outputs equal torch's module on that sequence alone (from zeros) in every direction and
    layer, and gradients reach every parameter."""
    ref, ours = pair(cell, **config)
    batch_first = config.get("batch_first", False)
    rng = np.random.default_rng(0)
    rows = [[5, 3, 4], [12], [1, 6, 2, 3]]  # sequence lengths per row, 12 steps each
    x = torch.randn(3, 12, 5, dtype=torch.float64)  # batch-major here
    resets = torch.zeros(3, 12, dtype=torch.bool)
    starts = []
    for b, lengths in enumerate(rows):
        t = 0
        for n in lengths:
            resets[b, t] = True
            starts.append((b, t, n))
            t += n
    xs, rs = (x, resets) if batch_first else (x.transpose(0, 1), resets.t())
    y = ours(xs.requires_grad_(), resets=rs)[0]
    if not batch_first:
        y = y.transpose(0, 1)
    for b, t, n in starts:
        seq = x[b:b + 1, t:t + n]
        alone = ref(seq if batch_first else seq.transpose(0, 1))[0]
        alone = alone if batch_first else alone.transpose(0, 1)
        np.testing.assert_allclose(y[b, t:t + n].detach().numpy(), alone[0].detach().numpy(),
                                   rtol=0, atol=1e-12)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.parameters())
    del rng


@pytest.mark.parametrize("cell", CELLS)
def test_reset_zeroes_hx_too(cell):
    """A reset at step 0 discards hx for that row, in every layer."""
    _, ours = pair(cell, num_layers=2)
    x = torch.randn(5, 2, 5, dtype=torch.float64)
    hx = make_hx(cell, 2, 2, 7)
    resets = torch.tensor([[True, False]] + [[False, False]] * 4)
    y, _ = ours(x, hx, resets=resets)
    y0, _ = ours(x)
    y1, _ = ours(x, hx)
    assert torch.equal(y[:, 0], y0[:, 0]) and torch.equal(y[:, 1], y1[:, 1])


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("cell", CELLS)
def test_torch_compile_fullgraph(cell, backend):
    """A model that contains the module compiles with fullgraph=True (no graph break) and gives
    the eager results and gradients. aot_eager traces the ops' fake kernels and autograd
    formulas without generating code; inductor also generates C++ for the rest of the model, so
    it needs a C++ compiler (the wheel check runs the tests with none on PATH)."""
    if backend == "inductor" and not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("inductor on CPU needs a C++ compiler and none is on PATH")
    torch._dynamo.reset()
    torch.manual_seed(0)
    lstm = CELLS[cell][1](4, 8, num_layers=2, bidirectional=True, batch_first=True)
    head = nn.Linear(16, 3)

    def f(x, resets):
        y, _ = lstm(x, resets=resets)
        return head(y).square().mean()

    x = torch.randn(3, 7, 4)
    resets = torch.rand(3, 7) < 0.3
    eager = f(x, resets)
    eager_grads = torch.autograd.grad(eager, list(lstm.parameters()))
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    got = compiled(x, resets)
    got_grads = torch.autograd.grad(got, list(lstm.parameters()))
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cell", CELLS)
def test_half_modules_and_autocast(cell, dtype):
    """Modules in bfloat16 / float16 (float32 accumulation inside) and float32 modules under
    torch.autocast(bfloat16) stay close to float32 and return the half dtype, as torch's
    modules do."""
    ref, ours = pair(cell, 4, 6, dtype=torch.float32, num_layers=2)
    x = torch.randn(9, 3, 4)
    want = ref(x)[0]
    half = CELLS[cell][1](4, 6, num_layers=2, dtype=dtype)
    half.load_state_dict(ours.state_dict())
    got = half(x.to(dtype))[0]
    assert got.dtype == dtype
    assert (got.float() - want).abs().max() < 2e-2
    if dtype == torch.bfloat16:  # nn.LSTM follows CPU autocast, nn.GRU does not
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = ours(x)[0]
            auto_ref = ref(x)[0]
        assert auto.dtype == auto_ref.dtype == (torch.bfloat16 if cell == "LSTM"
                                                else torch.float32)
        assert (auto.float() - want).abs().max() < 2e-2


def test_refusals_name_the_alternative():
    with pytest.raises(ValueError, match="proj_size.*torch.nn.LSTM"):
        rt.ResetLSTM(4, 6, proj_size=3)
    lstm = rt.ResetLSTM(4, 6)
    packed = nn.utils.rnn.pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    with pytest.raises(TypeError, match="PackedSequence.*resets"):
        lstm(packed)
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        lstm(torch.randn(1, 2, 3, 4))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        lstm(torch.randn(3, 2, 5))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size \(1, 2, 6\)"):
        lstm(torch.randn(3, 2, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 3, 6)))
    with pytest.raises(RuntimeError, match="hx and cx should also be 3-D"):
        lstm(torch.randn(3, 2, 4), (torch.zeros(2, 6), torch.zeros(2, 6)))
    with pytest.raises(ValueError, match=r"`resets` must have shape \[seq, batch\] = \[3, 2\]"):
        lstm(torch.randn(3, 2, 4), resets=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"unbatched input `resets` must be \[seq\] = \[3\]"):
        lstm(torch.randn(3, 4), resets=torch.zeros(3, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match weight"):
        lstm(torch.randn(3, 2, 4, dtype=torch.float64))


def test_gru_refusals_name_the_alternative():
    gru = rt.ResetGRU(4, 6)
    packed = nn.utils.rnn.pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    with pytest.raises(TypeError, match="PackedSequence.*resets.*torch.nn.GRU"):
        gru(packed)
    with pytest.raises(ValueError, match="GRU: Expected input to be 2D or 3D, got 4D"):
        gru(torch.randn(1, 2, 3, 4))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 2, 6\)"):
        gru(torch.randn(3, 2, 4), torch.zeros(1, 3, 6))
    with pytest.raises(ValueError, match=r"ResetGRU: `resets` must have shape \[seq, batch\]"):
        gru(torch.randn(3, 2, 4), resets=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match weight"):
        gru(torch.randn(3, 2, 4, dtype=torch.float64))
    for cls in (nn.GRU, rt.ResetGRU):  # nn.RNNBase refuses it for the GRU, in both
        with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
            cls(4, 6, proj_size=2)


@pytest.mark.parametrize("cell", CELLS)
def test_every_call_sees_the_current_parameters(cell):
    """Parameters changed in place between calls (an optimizer step, load_state_dict, and
    writes through `.data`, which bump no version counter: target networks and polyak updates
    do that) are what the next call computes with."""
    ref, ours = pair(cell, num_layers=2, bidirectional=True)
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        ours(x)
        for p in ours.parameters():
            p.data.mul_(0.5)
        ref.load_state_dict(ours.state_dict())
        assert_same(ours(x)[0:1], ref(x)[0:1])
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1)
    ours(x)[0].sum().backward()
    optimizer.step()
    ref.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert_same(ours(x)[0:1], ref(x)[0:1])
        assert ours.float()(x.float())[0].dtype == torch.float32
