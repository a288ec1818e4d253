"""torch's own tests for torch.nn.LSTM and torch.nn.GRU, run against resetlstm.torch.ResetLSTM
and ResetGRU.

The samples are torch's: the ``module_db`` entries of ``torch.nn.LSTM`` and ``torch.nn.GRU`` in
``torch.testing._internal.common_modules`` (constructor and forward inputs, reference function,
error inputs). The checks follow the generic module checks of torch's
test/test_modules.py (forward against the reference and against torch's module, factory kwargs,
repr, pickle, non-contiguous inputs, gradcheck and gradgradcheck of the total and each partial
derivative, the layout of outputs and gradients, train/eval, construction on the meta device,
errors) and the LSTM/GRU tests of torch's test/test_nn.py that apply to a module with these
parameters on the CPU (argument checks, explicit zero state, empty batch, empty sequence, old
pickles without proj_size, retained graphs, double backward through many layers, weight norm).

Written for this project; only the samples come from torch. Samples with ``proj_size > 0``
check that ResetLSTM refuses them, naming torch.nn.LSTM (the kernels have no projection).
"""
import copy
import io
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rt = pytest.importorskip("resetlstm.torch")
common_modules = pytest.importorskip(
    "torch.testing._internal.common_modules",
    reason="torch's test helpers (torch.testing._internal) need expecttest")
nn = torch.nn

CELLS = {"LSTM": (nn.LSTM, rt.ResetLSTM), "GRU": (nn.GRU, rt.ResetGRU)}
INFO = {cell: next(info for info in common_modules.module_db if info.module_cls is torch_cls)
        for cell, (torch_cls, _) in CELLS.items()}
DTYPES = [torch.float32, torch.float64]


def samples(cell="LSTM", dtype=torch.float64, requires_grad=False, training=True):
    """torch's forward samples for nn.LSTM or nn.GRU: (constructor kwargs, forward args,
    sample)."""
    found = []
    info = INFO[cell]
    for sample in info.module_inputs_func(info, device="cpu", dtype=dtype,
                                          requires_grad=requires_grad, training=training):
        if sample.forward_input is None:
            continue
        c = sample.constructor_input
        kwargs = dict(c.kwargs)
        for name, value in zip(("input_size", "hidden_size"), c.args):
            kwargs[name] = value
        found.append((kwargs, sample.forward_input.args, sample))
    return found


def supported(cell="LSTM"):
    return [s for s in samples(cell) if not s[0].get("proj_size")]


def sample_id(cell, s):
    k = s[0]
    return (f"{cell}:bias={k['bias']},bf={k['batch_first']},bi={k['bidirectional']}"
            f",hx={len(s[1]) > 1}")


CASES = [(cell, index) for cell in CELLS for index in range(len(supported(cell)))]
CASE_IDS = [sample_id(cell, supported(cell)[index]) for cell, index in CASES]


def build_pair(kwargs, dtype, cell="LSTM"):
    torch.manual_seed(0)
    torch_cls, ours_cls = CELLS[cell]
    ref = torch_cls(**kwargs).to(dtype)
    ours = ours_cls(**kwargs).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def fresh_args(cell, index, dtype, requires_grad=False):
    """The forward args of supported sample `index`, made anew (torch's samples are random)."""
    torch.manual_seed(index)
    kwargs, args, _ = [s for s in samples(cell, dtype, requires_grad)
                       if not s[0].get("proj_size")][index]
    return kwargs, args


def leaves(obj):
    return torch.utils._pytree.tree_leaves(obj)


def assert_close(got, want, atol):
    got, want = leaves(got), leaves(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=0, atol=atol)


TOL = {torch.float32: 2e-6, torch.float64: 1e-13}


# ---------------------------------------------------------------- the module_db samples

def test_the_samples_cover_what_they_should():
    """torch's LSTM entry: 32 samples over bias, batch_first, bidirectional, proj_size, with and
    without hx; those without proj_size (16) all run below. Its GRU entry: 16, all run."""
    assert len(samples("LSTM")) == 32
    assert len(supported("LSTM")) == 16
    assert len(samples("GRU")) == len(supported("GRU")) == 16


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell, index", CASES, ids=CASE_IDS)
def test_forward_matches_reference_and_torch(cell, index, dtype):
    kwargs, args = fresh_args(cell, index, dtype)
    ref, ours = build_pair(kwargs, dtype, cell)
    ours.train(True)
    out = ours(*args)
    assert_close(out, ref(*args), TOL[dtype])
    sample = supported(cell)[index][2]
    assert_close(out, sample.reference_fn(ours, *args, batch_first=kwargs["batch_first"]),
                 TOL[dtype])
    # .float() / .double() convert every parameter, and the module still runs
    getattr(ours, "double" if dtype == torch.float64 else "float")()
    ours(*args)
    assert all(p.dtype == dtype and p.device.type == "cpu" for p in ours.parameters())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_proj_size_samples_are_refused_naming_torch_nn_lstm(dtype):
    refused = [s for s in samples("LSTM", dtype) if s[0].get("proj_size")]
    assert len(refused) == 16
    for kwargs, _, _ in refused:
        with pytest.raises(ValueError, match="proj_size.*torch.nn.LSTM"):
            rt.ResetLSTM(**kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_factory_kwargs(cell, dtype):
    torch_cls, ours_cls = CELLS[cell]
    for kwargs, _, _ in supported(cell):
        m = ours_cls(**kwargs, device="cpu", dtype=dtype)
        ref = torch_cls(**kwargs, device="cpu", dtype=dtype)
        assert [(n, p.dtype, p.device, p.shape) for n, p in m.named_parameters()] == \
            [(n, p.dtype, p.device, p.shape) for n, p in ref.named_parameters()]
        assert list(m.buffers()) == []


@pytest.mark.parametrize("cell", CELLS)
def test_repr_and_str(cell):
    torch_cls, ours_cls = CELLS[cell]
    for kwargs, _, _ in supported(cell):
        m = ours_cls(**kwargs)
        text = repr(torch_cls(**kwargs))
        assert repr(m) == str(m) == "Reset" + text


@pytest.mark.parametrize("cell, index", CASES, ids=CASE_IDS)
def test_pickle_round_trip_gives_the_same_outputs(cell, index):
    kwargs, args = fresh_args(cell, index, torch.float64)
    _, ours = build_pair(kwargs, torch.float64, cell)
    out = ours(*args)
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    copy_ = torch.load(buffer, weights_only=False)
    assert type(copy_) is CELLS[cell][1]
    assert_close(copy_(*args), out, 0)
    assert_close(pickle.loads(pickle.dumps(ours))(*args), out, 0)


def _non_contiguous(t):
    """The same values in a tensor that is not contiguous (every other element of a wider
    one), with the same requires_grad."""
    wide = torch.repeat_interleave(t.detach(), 2, dim=-1)[..., ::2]
    assert not wide.is_contiguous()
    return wide.requires_grad_(t.requires_grad)


def _outputs_and_grads(m, args, grads_out):
    for p in m.parameters():
        p.grad = None
    out = m(*args)
    flat = leaves(out)
    wrt = [t for t in leaves(args) if t.requires_grad] + list(m.parameters())
    grads = torch.autograd.grad(flat, wrt, grads_out)
    return flat, grads


@pytest.mark.parametrize("cell, index", CASES, ids=CASE_IDS)
def test_non_contiguous_inputs_and_gradients(cell, index):
    kwargs, args = fresh_args(cell, index, torch.float64, requires_grad=True)
    _, m = build_pair(kwargs, torch.float64, cell)
    out = leaves(m(*args))
    g = torch.Generator().manual_seed(5)
    grads_out = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in out]
    want_out, want_grads = _outputs_and_grads(m, args, grads_out)
    nc_args = torch.utils._pytree.tree_map(_non_contiguous, args)
    nc_grads_out = [_non_contiguous(t) for t in grads_out]
    for a in (args, nc_args):
        for go in (grads_out, nc_grads_out):
            got_out, got_grads = _outputs_and_grads(m, a, go)
            assert_close(got_out, want_out, 0)
            assert_close(got_grads, want_grads, 1e-14)


@pytest.mark.parametrize("cell, index", CASES, ids=CASE_IDS)
def test_outputs_and_gradients_are_contiguous_like_torch(cell, index):
    """test_modules' memory-format check: every output, and every gradient that
    torch.autograd.grad returns (inputs, hx and each parameter), is contiguous and equals
    torch.nn.LSTM's / GRU's."""
    kwargs, args = fresh_args(cell, index, torch.float64, requires_grad=True)
    ref, ours = build_pair(kwargs, torch.float64, cell)
    results = {}
    for name, m in (("ref", ref), ("ours", ours)):
        out = leaves(m(*args))
        assert all(o.is_contiguous() for o in out), name
        g = torch.Generator().manual_seed(7)
        grads_out = [torch.rand(o.shape, generator=g, dtype=o.dtype) for o in out]
        wrt = [t for t in leaves(args) if t.requires_grad] + list(m.parameters())
        grads = torch.autograd.grad(out, wrt, grads_out)
        assert all(gr.is_contiguous() for gr in grads), \
            [(n, gr.stride()) for (n, _), gr in zip(m.named_parameters(), grads[-4:])]
        results[name] = (out, grads)
    assert_close(results["ours"], results["ref"], 1e-13)


def _gradient_checks(cell, index, check):
    """test_modules' gradient helper: `check` over inputs and all parameters together, then
    over each parameter and each input alone."""
    kwargs, args = fresh_args(cell, index, torch.float64, requires_grad=True)
    _, m = build_pair(kwargs, torch.float64, cell)
    params = tuple(m.parameters())
    flat_args, spec = torch.utils._pytree.tree_flatten(args)

    def fn(*flat):
        call_args = torch.utils._pytree.tree_unflatten(list(flat[:len(flat_args)]), spec)
        return tuple(leaves(m(*call_args)))

    everything = tuple(flat_args) + params
    assert check(fn, everything)
    for i, p in enumerate(everything):
        flags = [t.requires_grad for t in everything]
        for t in everything:
            t.requires_grad_(False)
        p.requires_grad_(True)
        assert check(fn, everything), i
        for t, f in zip(everything, flags):
            t.requires_grad_(f)


@pytest.mark.parametrize("cell, index", CASES, ids=CASE_IDS)
def test_gradcheck(cell, index):
    _gradient_checks(cell, index,
                     lambda fn, xs: torch.autograd.gradcheck(fn, xs, nondet_tol=0.0))


GRADGRAD_CASES = [(cell, index) for cell, index in CASES if index in (0, 3, 5, 6, 9, 12, 15)]


@pytest.mark.parametrize("cell, index", GRADGRAD_CASES,
                         ids=[CASE_IDS[CASES.index(c)] for c in GRADGRAD_CASES])
def test_gradgradcheck(cell, index):
    """Double backward (the module_db entries say supports_gradgrad)."""
    _gradient_checks(cell, index, lambda fn, xs: torch.autograd.gradgradcheck(fn, xs,
                                                                              nondet_tol=0.0))


@pytest.mark.parametrize("cell", CELLS)
def test_train_and_eval_give_the_same_results_without_dropout(cell):
    for index, (kwargs, _, _) in enumerate(supported(cell)):
        _, args = fresh_args(cell, index, torch.float64)
        _, m = build_pair(kwargs, torch.float64, cell)
        assert_close(m.train()(*args), m.eval()(*args), 0)


@pytest.mark.parametrize("cell", CELLS)
def test_train_and_eval_differ_with_dropout_between_layers(cell):
    m = CELLS[cell][1](2, 3, num_layers=2, dropout=0.9, dtype=torch.float64)
    x = torch.randn(6, 2, dtype=torch.float64)
    torch.manual_seed(1)
    train = m.train()(x)[0]
    assert not torch.equal(train, m.eval()(x)[0])
    assert torch.equal(m.eval()(x)[0], m.eval()(x)[0])


@pytest.mark.parametrize("cell", CELLS)
def test_construction_and_shapes_on_the_meta_device(cell):
    """test_modules' device-context check: parameters made under torch.device('meta') have
    the metadata of those made on the CPU; and the module computes shapes there, as
    torch.nn.LSTM and GRU do (the ops' fake implementations)."""
    torch_cls, ours_cls = CELLS[cell]
    for kwargs, args, _ in supported(cell):
        cpu = ours_cls(**kwargs)
        with torch.device("meta"):
            meta = ours_cls(**kwargs)
            ref = torch_cls(**kwargs)
        for p_meta, p_cpu in zip(meta.parameters(), cpu.parameters()):
            assert p_meta.is_meta
            assert (p_meta.shape, p_meta.dtype, p_meta.stride()) == \
                (p_cpu.shape, p_cpu.dtype, p_cpu.stride())
        meta_args = torch.utils._pytree.tree_map(lambda t: t.to("meta", torch.float32), args)
        got, want = leaves(meta(*meta_args)), leaves(ref(*meta_args))
        assert [(t.device.type, t.shape, t.dtype) for t in got] == \
            [(t.device.type, t.shape, t.dtype) for t in want]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_error_inputs_raise_as_torch_raises(cell, dtype):
    info = INFO[cell]
    errors = list(info.module_error_inputs_func(info, device="cpu", dtype=dtype,
                                                requires_grad=False, training=True))
    assert len(errors) >= 10
    Enum = common_modules.ModuleErrorEnum
    for error in errors:
        sample = error.module_error_input
        c = sample.constructor_input
        for cls in CELLS[cell]:  # the sample is right about torch's module, and about ours
            with pytest.raises(error.error_type, match=error.error_regex):
                m = cls(*c.args, **c.kwargs)
                if error.error_on == Enum.FORWARD_ERROR:
                    m(*sample.forward_input.args, **sample.forward_input.kwargs)


# ------------------------------------------------------ test_nn.py's LSTM and GRU tests

def hidden(cell, *states):
    """hx of `cell` from its state tensors: (h, c) for the LSTM, h for the GRU."""
    return tuple(states) if cell == "LSTM" else states[0]


@pytest.mark.parametrize("cell", CELLS)
def test_rnn_args_check(cell):
    """A wrong input size, hidden batch, hidden size or number of layers raises RuntimeError
    (in h or c), as torch.nn.LSTM and GRU do."""
    input_size, hidden_size, num_layers, batch, seq = 3, 5, 2, 4, 6
    m = CELLS[cell][1](input_size, hidden_size, num_layers)
    n = 2 if cell == "LSTM" else 1
    good_x = (seq, batch, input_size)
    good_h = (num_layers, batch, hidden_size)
    m(torch.randn(good_x), hidden(cell, *[torch.randn(good_h)] * n))
    for axis in (1, 2):
        bad = list(good_x)
        bad[axis] = 7
        with pytest.raises(RuntimeError):
            m(torch.randn(bad), hidden(cell, *[torch.randn(good_h)] * n))
    for axis in (0, 1, 2):
        bad = list(good_h)
        bad[axis] = 7
        for which in range(n):
            states = [torch.randn(bad if i == which else good_h) for i in range(n)]
            with pytest.raises(RuntimeError):
                m(torch.randn(good_x), hidden(cell, *states))


@pytest.mark.parametrize("cell", CELLS)
def test_forward_exception_messages(cell):
    m = CELLS[cell][1](10, 20, batch_first=True)
    with pytest.raises(RuntimeError, match="Expected hidden.*size.*got"):
        m(torch.randn(2, 3, 10), hidden(cell, torch.randn(1, 2, 19), torch.randn(1, 2, 20)))
    with pytest.raises(RuntimeError, match=r"input\.size\(-1\) must be equal to input_size"):
        m(torch.randn(2, 3, 3))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_explicit_zero_state_equals_the_default(cell, bidirectional):
    m = CELLS[cell][1](30, 20, 2, bidirectional=bidirectional)
    x = torch.randn(10, 32, 30)
    d = 2 if bidirectional else 1
    zeros = torch.zeros(2 * d, 32, 20)
    y0, s0 = m(x)
    y1, s1 = m(x, hidden(cell, zeros, zeros))
    assert torch.equal(y0, y1)
    assert all(torch.equal(a, b) for a, b in zip(leaves(s0), leaves(s1)))


@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch_forward_and_backward(cell):
    m = CELLS[cell][1](3, 4)
    x = torch.zeros(5, 0, 3, requires_grad=True)
    y, states = m(x)
    assert y.shape == (5, 0, 4) and all(s.shape == (1, 0, 4) for s in leaves(states))
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_empty_sequence_raises_as_torch_does(cell, bidirectional):
    for cls in CELLS[cell]:
        m = cls(5, 6, bidirectional=bidirectional, dtype=torch.float64)
        for x in (torch.ones(0, 10, 5, dtype=torch.float64),
                  torch.ones(0, 5, dtype=torch.float64)):
            with pytest.raises(RuntimeError,
                               match="Expected sequence length to be larger than 0 in RNN"):
                m(x)


def test_hidden_state_dtype_mismatch_raises_as_nn_lstm_does():
    """nn.LSTM raises a RuntimeError (whose text depends on its backend) for an h_0 or c_0 of
    another dtype than the input; ResetLSTM raises one that names the state and the dtypes."""
    x = torch.randn(5, 2, 3)
    good = torch.zeros(1, 2, 4)
    for bad in (good.double(), good.long(), good.half()):
        for hx in ((bad, good), (good, bad)):
            with pytest.raises(RuntimeError):
                nn.LSTM(3, 4)(x, hx)
            name = "h_0" if hx[0] is bad else "c_0"
            with pytest.raises(RuntimeError, match=f"{name} has dtype {bad.dtype} but the input "
                                                   f"has torch.float32"):
                rt.ResetLSTM(3, 4)(x, hx)
    with pytest.raises(RuntimeError):  # a float32 state into a float64 module
        nn.LSTM(3, 4).double()(x.double(), (good, good))
    with pytest.raises(RuntimeError, match="h_0 has dtype torch.float32"):
        rt.ResetLSTM(3, 4).double()(x.double(), (good, good))
    # inside autocast the states are cast with everything else, as nn.LSTM does
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = rt.ResetLSTM(3, 4)(x, (good.double(), good))
    assert y.dtype == torch.bfloat16


def test_gru_hidden_state_dtype_device_and_form():
    """nn.GRU raises a RuntimeError for an h_0 of another dtype; ResetGRU raises one naming
    it, and one for another device, as for the LSTM; a tuple hx (the LSTM's form) is refused
    with a ValueError that says what hx must be."""
    x = torch.randn(5, 2, 3)
    good = torch.zeros(1, 2, 4)
    for bad in (good.double(), good.long(), good.half()):
        with pytest.raises(RuntimeError):
            nn.GRU(3, 4)(x, bad)
        with pytest.raises(RuntimeError, match=f"h_0 has dtype {bad.dtype} but the input has "
                                               "torch.float32"):
            rt.ResetGRU(3, 4)(x, bad)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # nn.GRU ignores CPU autocast
        for cls in (nn.GRU, rt.ResetGRU):
            with pytest.raises(RuntimeError):
                cls(3, 4)(x, good.double())
            assert cls(3, 4)(x, good)[0].dtype == torch.float32
    with pytest.raises(RuntimeError, match="not at the same device.*cpu.*meta"):
        rt.ResetGRU(3, 4)(x, good.to("meta"))
    with pytest.raises(ValueError, match="`hx` must be a tensor h_0"):
        rt.ResetGRU(3, 4)(x, (good, good))
    with pytest.raises(RuntimeError, match="For batched 3-D input, hx should also be 3-D but "
                                           "got 2-D tensor"):
        rt.ResetGRU(3, 4)(x, good[0])
    with pytest.raises(RuntimeError, match="For unbatched 2-D input, hx should also be 2-D but "
                                           "got 3-D tensor"):
        rt.ResetGRU(3, 4)(x[:, 0], good)


def test_hidden_state_arity_and_device():
    m = rt.ResetLSTM(3, 4)
    x = torch.randn(5, 2, 3)
    h = torch.zeros(1, 2, 4)
    for cls in (nn.LSTM, rt.ResetLSTM):
        with pytest.raises(RuntimeError, match="lstm expects two hidden states"):
            cls(3, 4)(x, (h, h, h))
    with pytest.raises(RuntimeError, match="not at the same device.*cpu.*meta"):
        m(x, (h.to("meta"), h))


def test_old_pickle_without_proj_size_loads():
    """Modules pickled by torch < 1.8 have no proj_size; RNNBase.__setstate__ fills it in."""
    m = rt.ResetLSTM(2, 3)
    x = torch.randn(32, 5, 2)
    state = copy.copy(m.__dict__)
    del state["proj_size"]
    old = rt.ResetLSTM.__new__(rt.ResetLSTM)
    old.__setstate__(state)
    assert old.proj_size == 0
    assert torch.equal(old(x)[0], m(x)[0])


@pytest.mark.parametrize("cell", CELLS)
def test_retained_graph_gives_the_same_gradients_every_time(cell):
    m = CELLS[cell][1](10, 20, num_layers=2, dtype=torch.float64)
    x = torch.randn(5, 6, 10, dtype=torch.float64, requires_grad=True)
    y, states = m(x)
    loss = y.sum() + sum(s.sum() for s in leaves(states))
    first = None
    for _ in range(5):
        x.grad = None
        m.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        grads = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
        if first is None:
            first = grads
        for a, b in zip(grads, first):
            assert torch.equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_grad_and_gradgrad(cell, bias):
    m = CELLS[cell][1](4, 4, bias=bias, dtype=torch.float64)
    x = torch.rand(1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: m(x)[0], (x, *m.parameters()))
    assert torch.autograd.gradgradcheck(lambda x, *p: m(x)[0], (x, *m.parameters()))


@pytest.mark.parametrize("cell", CELLS)
def test_differentiable_backward_through_many_layers_matches_torch(cell):
    """d(out)/dx taken with create_graph=True, then differentiated again, through 20 layers:
    the same values as torch.nn.LSTM's / GRU's (float64)."""
    ref, ours = build_pair(dict(input_size=3, hidden_size=3, num_layers=20, batch_first=True),
                           torch.float64, cell)
    results = []
    for m in (ref, ours):
        x = torch.randn(10, 12, 3, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(3)).requires_grad_()
        out = m(x)[0]
        (dx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        (dx.pow(2).sum()).backward()
        results.append((dx.detach(), x.grad, [p.grad for p in m.parameters()]))
    assert_close(results[1], results[0], 1e-11)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("flavour", ["weight_norm", "parametrizations"])
def test_weight_norm_on_a_weight(cell, flavour):
    """A weight computed by torch.nn.utils.weight_norm (or the parametrization) is what the
    module computes with, as in torch.nn.LSTM and GRU; removing it restores a plain
    parameter."""
    ref, ours = build_pair(dict(input_size=32, hidden_size=32), torch.float64, cell)
    x = torch.randn(4, 3, 32, dtype=torch.float64)
    for m in (ref, ours):
        if flavour == "weight_norm":
            with warnings.catch_warnings():  # deprecated in favour of the parametrization
                warnings.simplefilter("ignore", FutureWarning)
                nn.utils.weight_norm(m, name="weight_ih_l0")
        else:
            nn.utils.parametrizations.weight_norm(m, name="weight_ih_l0")
    for m in (ref, ours):
        with torch.no_grad():  # change g: the weight follows
            g = m.weight_ih_l0_g if flavour == "weight_norm" else \
                m.parametrizations.weight_ih_l0.original0
            g.mul_(1.5)
    assert_close(ours(x), ref(x), 1e-13)
    y = ours(x)[0].sum()
    y.backward()
    v = ours.weight_ih_l0_v if flavour == "weight_norm" else \
        ours.parametrizations.weight_ih_l0.original1
    assert v.grad is not None and v.grad.abs().sum() > 0
    if flavour == "weight_norm":
        nn.utils.remove_weight_norm(ours, name="weight_ih_l0")
        assert "weight_ih_l0" in dict(ours.named_parameters())
        assert_close(ours(x), ref(x), 1e-13)
