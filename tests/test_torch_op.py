"""The PyTorch custom ops (resetlstm.torch.reset_lstm / torch.ops.resetlstm.*) against the float64
numpy reference, torch.autograd.gradcheck and torch.library.opcheck; dtypes; argument errors."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import assert_close, make_problem, reference_for

torch = pytest.importorskip("torch")
rt = pytest.importorskip("resetlstm.torch")
from resetlstm import _native  # noqa: E402
from resetlstm.torch import ops  # noqa: E402

DIFF = ("inputs", "kernel", "recurrent_kernel", "bias", "h0", "c0")


def torch_run(p, dtype=torch.float64, time_major=False, grad=True):
    """The op on a batch-major make_problem dict: ((y, h, c), grads by name) as float64 numpy,
    with loss = sum(y * d_outputs) + sum(h * d_h) + sum(c * d_c)."""
    tm = (lambda a: np.swapaxes(a, 0, 1)) if time_major else (lambda a: a)
    t = {n: None if p[n] is None else torch.tensor(tm(p[n]) if n == "inputs" else p[n],
                                                   dtype=dtype, requires_grad=grad)
         for n in DIFF}
    state = None if t["h0"] is None else (t["h0"], t["c0"])
    flags = {n: None if p[n] is None else torch.tensor(tm(p[n])) for n in ("resets", "mask")}
    drop = None if p["dropout"] is None else torch.tensor(p["dropout"], dtype=dtype)
    y, h, c = rt.reset_lstm(t["inputs"], t["kernel"], t["recurrent_kernel"], t["bias"],
                            resets=flags["resets"], initial_state=state, mask=flags["mask"],
                            time_major=time_major, recurrent_dropout_mask=drop)
    assert y.dtype == h.dtype == c.dtype == dtype
    grads = {}
    if grad:
        loss = sum((out.double() * torch.tensor(tm(p[u]) if u == "d_outputs" else p[u])).sum()
                   for out, u in ((y, "d_outputs"), (h, "d_h"), (c, "d_c")) if p[u] is not None)
        loss.backward()
        grads = {n: t[n].grad.double().numpy() for n in DIFF if t[n] is not None}
        if time_major:
            grads["inputs"] = np.swapaxes(grads["inputs"], 0, 1)
    y = y.detach().double().numpy()
    return (tm(y), h.detach().double().numpy(), c.detach().double().numpy()), grads


CASES = [dict(), dict(resets=True), dict(resets=True, state=True),
         dict(resets=True, state=True, mask=True), dict(resets=True, state=True, dropout=True)]


@pytest.mark.parametrize("case", CASES, ids=["plain", "resets", "resets+state", "masked",
                                             "dropout"])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch-major", "time-major"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_op_matches_float64_reference(case, time_major, dtype):
    p = make_problem(7, 5, 9, 4, 6, **case)
    (y, h, c), grads = torch_run(p, dtype, time_major)
    (ry, rh, rc), rgrads = reference_for(p)
    npdtype = np.float64 if dtype == torch.float64 else np.float32
    for name, got, want in (("outputs", y, ry), ("h", h, rh), ("c", c, rc)):
        assert_close(got, want, npdtype, name)
    for name, g in grads.items():
        assert_close(g, rgrads[name], npdtype, f"d_{name}", factor=10)
    assert set(grads) == {n for n in DIFF if p[n] is not None}


def test_gradcheck_float64():
    """torch.autograd.gradcheck (finite differences) through resets, a mask, an initial state
    and a recurrent dropout mask."""
    p = make_problem(3, 3, 5, 2, 3, resets=True, state=True, mask=True, dropout=True)
    resets, mask = torch.tensor(p["resets"]), torch.tensor(p["mask"])
    drop = torch.tensor(p["dropout"])
    args = [torch.tensor(p[n], requires_grad=True) for n in DIFF]

    def f(x, k, r, b, h0, c0):
        return rt.reset_lstm(x, k, r, b, resets=resets, initial_state=(h0, c0), mask=mask,
                             recurrent_dropout_mask=drop)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("training", [True, False])
def test_opcheck(training):
    """torch.library.opcheck: schema, autograd registration, fake tensors and AOT dispatch (with
    training=False the backward recomputes the activations the forward did not save)."""
    p = make_problem(5, 3, 4, 3, 5, resets=True, state=True, mask=True, dropout=True)
    x, k, r, b, h0, c0 = (torch.tensor(p[n], dtype=torch.float32, requires_grad=True)
                          for n in DIFF)
    flags = torch.tensor(p["resets"]), torch.tensor(p["mask"])
    drop = torch.tensor(p["dropout"], dtype=torch.float32)
    op = torch.ops.resetlstm.forward.default
    torch.library.opcheck(op, (x, k, r, b, *flags, h0, c0, drop, False, training))
    torch.library.opcheck(op, (x, k, r, b, None, None, None, None, None, True, training))


def test_opcheck_backward_op():
    p = make_problem(6, 2, 3, 2, 4, resets=True, state=True)
    x, k, r, b, h0, c0 = (torch.tensor(p[n], dtype=torch.float32) for n in DIFF)
    resets = torch.tensor(p["resets"])
    y, h, c, gates, cells = torch.ops.resetlstm.forward(x, k, r, b, resets, None, h0, c0, None,
                                                        False, True)
    dy = torch.randn_like(y)
    torch.library.opcheck(torch.ops.resetlstm.backward.default,
                          (x, k, r, resets, None, h0, c0, None, y, gates, cells, dy, None, None,
                           False))


def test_half_types():
    """bfloat16 runs the CPU bf16 kernels where the CPU has AVX512-BF16 (else float32 inside),
    float16 is widened to float32 on the CPU: results and gradients in the argument dtype,
    within a few half-precision roundings of float32."""
    p = make_problem(11, 6, 12, 8, 16, resets=True, state=True)
    (y32, h32, c32), g32 = torch_run(p, torch.float32)
    for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 4e-3)):
        (y, h, c), g = torch_run(p, dtype)
        for name, got, want in (("outputs", y, y32), ("h", h, h32), ("c", c, c32)):
            assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max()), (dtype, name)
        for name in g:
            scale = np.abs(g32[name]).max()
            assert np.abs(g[name] - g32[name]).max() <= 2 * tol * scale, (dtype, name)
    assert ops._runs_natively(torch.bfloat16, torch.device("cpu")) == (
        _native.bf16_gemm() == "avx512_bf16")
    assert not ops._runs_natively(torch.float16, torch.device("cpu"))


def test_no_gradient_without_requires_grad_saves_nothing():
    p = make_problem(2, 2, 3, 2, 3)
    x, k, r, b = (torch.tensor(p[n]) for n in DIFF[:4])
    out = torch.ops.resetlstm.forward(x, k, r, b, None, None, None, None, None, False, False)
    assert out[3].numel() == 0 and out[4].numel() == 0
    y, _, _ = rt.reset_lstm(x, k, r, b)
    assert not y.requires_grad
    np.testing.assert_allclose(y.numpy(), out[0].numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch-major", "time-major"])
def test_gradgradcheck_float64(time_major):
    """Double backward (create_graph=True) against finite differences of the gradient, through
    resets, a mask, an initial state and a recurrent dropout mask."""
    p = make_problem(3, 3, 4, 2, 3, resets=True, state=True, mask=True, dropout=True)
    tm = (lambda a: a.transpose(0, 1)) if time_major else (lambda a: a)
    resets, mask = tm(torch.tensor(p["resets"])), tm(torch.tensor(p["mask"]))
    drop = torch.tensor(p["dropout"])
    args = [torch.tensor(p[n], requires_grad=True) for n in DIFF]
    args[0] = tm(args[0].detach()).requires_grad_()

    def f(x, k, r, b, h0, c0):
        return rt.reset_lstm(x, k, r, b, resets=resets, initial_state=(h0, c0), mask=mask,
                             recurrent_dropout_mask=drop, time_major=time_major)

    assert torch.autograd.gradgradcheck(f, args)


def test_double_backward_matches_the_fused_first_derivative():
    """Under create_graph the gradient comes from the composite: the same values as the fused
    kernels' (float64), and a gradient of it that equals torch.nn.LSTM's."""
    p = make_problem(4, 4, 6, 3, 5, resets=True, state=True)
    resets = torch.tensor(p["resets"])
    args = [torch.tensor(p[n], requires_grad=True) for n in DIFF]

    def grads(create_graph):
        y, h, c = rt.reset_lstm(*args[:4], resets=resets, initial_state=tuple(args[4:]))
        loss = (y.sin().sum() + h.sum() + (c * c).sum())
        return torch.autograd.grad(loss, args, create_graph=create_graph)

    fused, composite = grads(False), grads(True)
    for a, b in zip(fused, composite):
        assert b.requires_grad
        np.testing.assert_allclose(b.detach().numpy(), a.numpy(), rtol=0, atol=1e-12)
    # without resets the op is torch.nn.LSTM: the second derivative must agree too
    x, k, r, b, h0, c0 = args
    lstm = torch.nn.LSTM(3, 5, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(k.t())
        lstm.weight_hh_l0.copy_(r.t())
        lstm.bias_ih_l0.copy_(b)
        lstm.bias_hh_l0.zero_()
    second = []
    for run in (lambda: rt.reset_lstm(x, k, r, b, initial_state=(h0, c0))[0],
                lambda: lstm(x, (h0[None], c0[None]))[0]):
        (dx,) = torch.autograd.grad(run().tanh().sum(), x, create_graph=True)
        (ddx,) = torch.autograd.grad((dx ** 2).sum(), x)
        second.append(ddx)
    np.testing.assert_allclose(second[0].numpy(), second[1].numpy(), rtol=0, atol=1e-12)


def test_resets_as_numbers_and_numpy():
    p = make_problem(4, 3, 5, 2, 3, resets=True)
    x, k, r, b = (torch.tensor(p[n]) for n in DIFF[:4])
    want = rt.reset_lstm(x, k, r, b, resets=torch.tensor(p["resets"]))[0]
    for resets in (p["resets"].astype(np.int32), p["resets"].astype(np.float32),
                   p["resets"].tolist()):
        got = rt.reset_lstm(x, k, r, b, resets=resets)[0]
        np.testing.assert_array_equal(got.numpy(), want.numpy())


class _OnAnotherDevice(torch.Tensor):
    """A CPU tensor that says it lives on an XLA device (none is installed here)."""

    @property
    def device(self):
        return torch.device("xla", 0)


def test_meta_tensors_give_shapes():
    x, k = torch.zeros(2, 3, 4, device="meta"), torch.zeros(4, 20, device="meta")
    r, b = torch.zeros(5, 20, device="meta"), torch.zeros(20, device="meta")
    y, h, c = rt.reset_lstm(x, k, r, b, resets=torch.zeros(2, 3, dtype=torch.bool, device="meta"))
    assert (y.shape, h.shape, c.shape) == ((2, 3, 5), (2, 5), (2, 5))
    assert y.is_meta and h.is_meta and c.is_meta


def test_argument_errors_name_the_argument():
    x, k = torch.zeros(2, 3, 4), torch.zeros(4, 20)
    r, b = torch.zeros(5, 20), torch.zeros(20)
    cases = [
        (lambda: rt.reset_lstm(x.numpy(), k, r, b), TypeError, "`inputs` must be a torch.Tensor"),
        (lambda: rt.reset_lstm(x.int(), k, r, b), ValueError, "`inputs` must be float32"),
        (lambda: rt.reset_lstm(x, k.double(), r, b), ValueError,
         "`kernel` has dtype torch.float64 but `inputs` has torch.float32"),
        (lambda: rt.reset_lstm(x, k, r[:4], b), ValueError, "`recurrent_kernel` must have shape"),
        (lambda: rt.reset_lstm(x, k, r, b, resets=torch.zeros(3, 2, dtype=torch.bool)),
         ValueError, "`resets` must have shape"),
        (lambda: rt.reset_lstm(x, k, r, b, resets=torch.zeros(2, 3, dtype=torch.complex64)),
         ValueError, "`resets` must be bool or 0/1 numbers"),
        (lambda: rt.reset_lstm(x, k, r, b, initial_state=torch.zeros(2, 5)), ValueError,
         "`initial_state` must be a pair"),
        (lambda: rt.reset_lstm(x, k, r, b, initial_state=(torch.zeros(2, 5), torch.zeros(3, 5))),
         ValueError, r"initial_state\[1\] \(c\)` must have shape \[B, H\] = \[2, 5\]"),
        (lambda: rt.reset_lstm(x, k, r, b, recurrent_dropout_mask=torch.zeros(2, 5).double()),
         ValueError, "`recurrent_dropout_mask` has dtype"),
        (lambda: rt.reset_lstm(x.as_subclass(_OnAnotherDevice), k, r, b), ValueError,
         "`inputs` is on xla:0; resetlstm runs on CPU and CUDA"),
        (lambda: rt.reset_lstm(x.to("meta"), k, r, b), ValueError,
         "`kernel` is on cpu but `inputs` is on meta"),
    ]
    for call, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            call()


def test_cuda_registration_reaches_the_cuda_binding(monkeypatch):
    """The CUDA kernels of the custom ops pass their arguments to _native.forward_cuda /
    backward_cuda by the names those take (run here on CPU tensors, which the binding refuses
    after parsing the call: a CUDA build says the arrays are not on a CUDA device, a CPU-only
    build that it has no CUDA). Nothing of the CUDA path itself runs here (no GPU)."""
    class Stream:
        cuda_stream = 0

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    p = make_problem(1, 2, 3, 2, 3, resets=True, state=True)
    x, k, r, b, h0, c0 = (torch.tensor(p[n]) for n in DIFF)
    resets = torch.tensor(p["resets"])
    expected = "CUDA" if _native.cuda_unavailable_reason().startswith("resetlstm was built") \
        else "must be a CUDA|on a CUDA device|DLPack"
    with pytest.raises((ValueError, RuntimeError), match=expected):
        ops._forward_cuda(x, k, r, b, resets, None, h0, c0, None, False, True)
    with pytest.raises((ValueError, RuntimeError), match=expected):
        ops._backward_cuda(x, k, r, resets, None, h0, c0, None, x, x, x, None, None, None, False)


def test_works_without_tensorflow_and_keras():
    """`import resetlstm.torch`, forward and backward in a process where tensorflow and keras
    cannot be imported; neither is imported along the way."""
    script = textwrap.dedent("""
        import sys
        sys.modules["tensorflow"] = sys.modules["keras"] = None  # as if not installed
        import torch
        import resetlstm.torch as rt
        lstm = rt.ResetLSTM(3, 4, num_layers=2, bidirectional=True)
        x = torch.randn(5, 2, 3, requires_grad=True)
        y, (h, c) = lstm(x, resets=torch.tensor([[1, 0]] + [[0, 1]] * 4))
        y.sum().backward()
        assert x.grad is not None and all(p.grad is not None for p in lstm.parameters())
        assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")
                    and sys.modules[m] is not None]
        print("OK")
    """)
    import resetlstm
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(resetlstm.__file__)))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("OK")


def test_kernels_run_on_torchs_openmp_threads():
    """Importing resetlstm.torch attaches torch's OpenMP runtime (_native then runs the kernels
    on torch's thread team): the same results bit for bit as on _native's own pool; a path
    that is not a loaded OpenMP runtime is refused; a forked child has none of the parent's
    OpenMP threads and uses the own pool."""
    import re

    runtime = _native.openmp_runtime()
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch's intra-op pool is not OpenMP here")
    assert re.search(r"lib(g|i|)omp", os.path.basename(runtime)), runtime
    p = make_problem(9, 12, 7, 5, 16, resets=True, state=True)
    x, k, r, b, h0, c0 = (torch.tensor(p[n], dtype=torch.float32) for n in DIFF)
    resets = torch.tensor(p["resets"])

    def run():
        out = torch.ops.resetlstm.forward(x, k, r, b, resets, None, h0, c0, None, False, True)
        grads = torch.ops.resetlstm.backward(x, k, r, resets, None, h0, c0, None, out[0],
                                             out[3], out[4], torch.ones_like(out[0]), None,
                                             None, False)
        return [t.clone() for t in out + grads]

    with_team = run()
    try:
        _native.use_openmp_runtime("")
        assert _native.openmp_runtime() == ""
        own_pool = run()
    finally:
        _native.use_openmp_runtime(runtime)
    for a, b_ in zip(with_team, own_pool):
        assert torch.equal(a, b_)
    with pytest.raises(ValueError, match="is not loaded in this process"):
        _native.use_openmp_runtime("/nonexistent/libgomp.so.1")
    libc = next(line.split()[-1] for line in open("/proc/self/maps")
                if re.search(r"/libc\.so", line))
    with pytest.raises(ValueError, match="has no GOMP_parallel"):
        _native.use_openmp_runtime(libc)
    assert _native.openmp_runtime() == runtime
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no attached runtime, the kernels still run (own pool)
        import signal

        signal.alarm(120)  # a hang kills the child; the parent then reads no "ok"
        ok = _native.openmp_runtime() == "" and all(
            torch.equal(a, b_) for a, b_ in zip(run(), with_team))
        os.write(write, b"ok" if ok else b"bad")
        os._exit(0)
    os.close(write)
    assert os.read(read, 16) == b"ok"
    os.waitpid(pid, 0)
