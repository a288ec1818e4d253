"""The GRU through the recurrence engine's CPU kernels (resetlstm._native.gru_forward /
gru_backward), both of Keras' forms, against the independent float64 reference of
tests/reference_gru.py (itself checked against finite differences here): resets, masks, an
initial state, recurrent dropout, both layouts, float32 / float64 / bfloat16, any thread count,
the row and column splits and the per-step input projection; the CUDA launch sequence replayed in
numpy (tests/cuda_replay.py); clear errors for bad arguments."""
import numpy as np
import pytest

import cuda_replay
from conftest import assert_close, gru_reference_for, make_gru_problem
from reference_gru import gru_finite_differences

GRU_GRADS = ("inputs", "kernel", "recurrent_kernel", "bias", "h0")
FORMS = [True, False]
FORM_IDS = ["reset_after", "reset_before"]
SCENARIOS = {
    "plain": dict(),
    "resets": dict(resets=True),
    "resets+state": dict(resets=True, state=True),
    "masked": dict(resets=True, state=True, mask=True),
    "dropout": dict(resets=True, state=True, dropout=True),
    "everything": dict(resets=True, state=True, mask=True, dropout=True),
}


def native():
    from resetlstm import _native
    return _native


def layout(a, time_major):
    return None if a is None else (np.ascontiguousarray(np.swapaxes(a, 0, 1)) if time_major
                                   else a)


def gru_run(p, time_major=False, training=True, num_threads=0, upstream=True):
    """_native.gru_forward (+ gru_backward) on a batch-major problem; results batch-major:
    ((outputs, h_T), grads by name or None, gates)."""
    nat = native()
    tm = lambda a: layout(a, time_major)  # noqa: E731
    x, r, m = tm(p["inputs"]), tm(p["resets"]), tm(p["mask"])
    y, h, gates = nat.gru_forward(x, p["kernel"], p["recurrent_kernel"], p["bias"], resets=r,
                                  mask=m, h0=p["h0"], time_major=time_major, training=training,
                                  num_threads=num_threads, recurrent_dropout_mask=p["dropout"],
                                  reset_after=p["reset_after"])
    grads = None
    if upstream:
        res = nat.gru_backward(x, p["kernel"], p["recurrent_kernel"], p["bias"], r, m, p["h0"],
                               y, gates, tm(p["d_outputs"]), p["d_h"], time_major=time_major,
                               num_threads=num_threads, recurrent_dropout_mask=p["dropout"],
                               reset_after=p["reset_after"])
        assert len(res) == 5
        grads = dict(zip(GRU_GRADS, (np.asarray(g) for g in res)))
        grads["inputs"] = layout(grads["inputs"], time_major)
    return (layout(np.asarray(y), time_major), np.asarray(h)), grads, gates


def check(p, outs, grads, dtype, factor=1.0):
    (ry, rh), rg = gru_reference_for(p)
    assert_close(outs[0], ry, dtype, "outputs", factor)
    assert_close(outs[1], rh, dtype, "h_T", factor)
    if grads is not None:
        for n in GRU_GRADS:
            assert_close(grads[n], rg[n], dtype, f"d_{n}", factor * 10)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("scenario", ["resets+state", "everything"])
def test_reference_bptt_matches_finite_differences(scenario, reset_after):
    """The float64 reference's hand-written BPTT against central finite differences."""
    p = make_gru_problem(100 + list(SCENARIOS).index(scenario), 3, 5, 4, 3,
                         reset_after=reset_after, **SCENARIOS[scenario])
    _, grads = gru_reference_for(p)
    fd = gru_finite_differences(p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                p["resets"], p["h0"], p["mask"], p["d_outputs"], p["d_h"],
                                p["dropout"], reset_after)
    for n in GRU_GRADS:
        np.testing.assert_allclose(grads[n], fd[n], rtol=1e-6, atol=1e-8, err_msg=n)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_gru_vs_reference(scenario, time_major, reset_after, dtype):
    p = make_gru_problem(200 + list(SCENARIOS).index(scenario), 6, 9, 5, 7, dtype,
                         reset_after=reset_after, **SCENARIOS[scenario])
    outs, grads, gates = gru_run(p, time_major=time_major)
    assert outs[0].dtype == np.dtype(dtype)
    assert gates.shape[-1] == (4 if reset_after else 3) * 7
    check(p, outs, grads, dtype)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("num_threads", [1, 2, 3, -3], ids=["1", "2", "3", "3serial"])
def test_gru_threads_slabs_and_inference(num_threads, reset_after):
    """Any thread count (uneven slabs at 3; -3 runs the tasks one after another), training and
    inference give the reference's results; inference saves nothing."""
    p = make_gru_problem(300, 11, 8, 6, 9, np.float64, reset_after=reset_after, resets=True,
                         state=True, mask=True, dropout=True)
    outs, grads, _ = gru_run(p, num_threads=num_threads)
    check(p, outs, grads, np.float64)
    outs, _, gates = gru_run(p, training=False, num_threads=num_threads, upstream=False)
    assert gates.size == 0
    check(p, outs, None, np.float64)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("projection", ["hoisted", "per_step"])
def test_gru_input_projection_modes(projection, reset_after, monkeypatch):
    """The input projection hoisted (one GEMM before the loop) or per step into its own buffer
    (the GRU keeps x W apart from h R): the same results."""
    monkeypatch.setenv("RESETLSTM_CPU_INPUT", projection)
    p = make_gru_problem(310, 7, 6, 10, 8, np.float64, reset_after=reset_after, resets=True,
                         state=True, mask=True, dropout=True)
    for time_major in (False, True):
        outs, grads, _ = gru_run(p, time_major=time_major, num_threads=2)
        check(p, outs, grads, np.float64)


@pytest.mark.parametrize("split", ["rows", "columns"])
def test_gru_splits(split, monkeypatch):
    """The column split (hidden units across threads, a barrier per step) serves the GRU with
    reset_after; without it (two GEMMs per step, the second needing every unit's r * h) the
    kernels keep to rows whatever is asked."""
    monkeypatch.setenv("RESETLSTM_CPU_SPLIT", split)
    for reset_after in (True, False):
        p = make_gru_problem(320, 5, 7, 6, 96, np.float64, reset_after=reset_after, resets=True,
                             state=True, mask=True, dropout=True)
        outs, grads, _ = gru_run(p, num_threads=3)
        check(p, outs, grads, np.float64)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
def test_gru_bfloat16(reset_after):
    """bfloat16 arguments: bf16 GEMM operands, float32 accumulation and state; within bf16's
    precision of the float64 reference."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p = make_gru_problem(330, 6, 12, 8, 16, np.float32, reset_after=reset_after, resets=True,
                         state=True, mask=True, dropout=True)
    p16 = {k: v.astype(ml_dtypes.bfloat16) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
           else v for k, v in p.items()}
    p_exact = {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype ==
               ml_dtypes.bfloat16 else v for k, v in p16.items()}
    outs, grads, gates = gru_run(p16)
    assert outs[0].dtype == ml_dtypes.bfloat16 and gates.dtype == ml_dtypes.bfloat16
    (ry, rh), rg = gru_reference_for(p_exact)
    for name, a, e in [("outputs", outs[0], ry), ("h_T", outs[1], rh)] + \
            [(f"d_{n}", grads[n], rg[n]) for n in GRU_GRADS]:
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(a, e, rtol=0, atol=3e-2 * scale, err_msg=name)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("shape", [(3, 0, 4, 5), (0, 4, 3, 2), (2, 3, 0, 4), (1, 1, 1, 1)],
                         ids=["T0", "B0", "I0", "1x1x1x1"])
def test_gru_empty_and_tiny(shape, reset_after):
    B, T, I, H = shape
    p = make_gru_problem(340, B, T, I, H, np.float64, reset_after=reset_after, resets=True,
                         state=True, mask=True, dropout=True)
    outs, grads, _ = gru_run(p)
    check(p, outs, grads, np.float64)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_gru_cuda_sequence_matches_cpu_kernel(scenario, time_major, reset_after):
    """The CUDA launch sequence for the GRU (recurrence_cuda_*.cu, replayed in numpy) against
    the CPU kernels: every output, the saved activations included (masked steps hold x W + h R),
    and every gradient."""
    p = make_gru_problem(400 + list(SCENARIOS).index(scenario), 5, 7, 4, 6, np.float64,
                         reset_after=reset_after, **SCENARIOS[scenario])
    (y, h), grads, gates = gru_run(p, time_major=time_major)
    cell = "gru" if reset_after else "gru_reset_before"
    fwd, bwd = cuda_replay.forward_backward(p, time_major, cell=cell)
    tm = lambda a: layout(a, time_major)  # noqa: E731
    pairs = [("outputs", tm(y), fwd[0]), ("h", h, fwd[1]), ("gates", gates, fwd[3])] + \
        [(f"d_{n}", tm(grads[n]) if n == "inputs" else grads[n], g)
         for n, g in zip(GRU_GRADS, bwd[:5])]
    for name, a, b in pairs:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        scale = max(1.0, float(np.abs(a).max())) if a.size else 1.0
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * scale, err_msg=name)
    assert fwd[2].size == 0 and fwd[4].size == 0 and bwd[5].size == 0  # no cell state


def test_gru_cuda_bf16_sequence_matches_cpu_bf16_kernel():
    """The bf16 launch sequence of both forms against the CPU bf16 kernels: rounded at the same
    places, so nearly every value is bit-identical."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for reset_after in (True, False):
        p = make_gru_problem(450, 6, 14, 12, 16, np.float32, reset_after=reset_after,
                             resets=True, state=True, mask=True, dropout=True)
        p16 = {k: v.astype(ml_dtypes.bfloat16) if isinstance(v, np.ndarray) and v.dtype.kind ==
               "f" else v for k, v in p.items()}
        p32 = {k: v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype ==
               ml_dtypes.bfloat16 else v for k, v in p16.items()}
        (y, h), grads, gates = gru_run(p16)
        fwd, bwd = cuda_replay.forward_backward(
            p32, False, "bfloat16", cell="gru" if reset_after else "gru_reset_before")
        equal = total = 0
        for a, b in [(y, fwd[0]), (h, fwd[1]), (gates, fwd[3])] + \
                [(grads[n], g) for n, g in zip(GRU_GRADS, bwd[:5])]:
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            equal, total = equal + np.sum(a == b), total + a.size
            ulp = 2.0 ** -7 * np.maximum(np.abs(a), np.abs(a).max() / 64)
            assert np.all(np.abs(a - b) <= 6 * ulp)
        assert equal / total >= 0.95, (reset_after, equal / total)


def test_gru_bad_arguments_are_named():
    nat = native()
    x = np.zeros((2, 3, 4), np.float32)
    k, r = np.zeros((4, 15), np.float32), np.zeros((5, 15), np.float32)
    b2, b1 = np.zeros((2, 15), np.float32), np.zeros(15, np.float32)
    cases = [
        (lambda: nat.gru_forward(x, np.zeros((4, 20), np.float32), r, b2), "reset_gru: `kernel`"
         r".*\[I, 3H\]|reset_gru: `recurrent_kernel` must have shape \[H, 3H\]"),
        (lambda: nat.gru_forward(x, k, r, b1), r"reset_gru: `bias` must be rank 2 \[2, 3H\].*"
         r"reset_after=True"),
        (lambda: nat.gru_forward(x, k, r, b2, reset_after=False), r"reset_gru: `bias` must be "
         r"rank 1 \[3H\].*reset_after=False"),
        (lambda: nat.gru_forward(x, k, r, np.zeros((3, 15), np.float32)),
         r"`bias` must have shape \[2, 3H\] = \[2, 15\]"),
        (lambda: nat.gru_forward(x, k, r, b2, h0=np.zeros((3, 5), np.float32)),
         r"`initial_state` must have shape \[B, H\] = \[2, 5\]"),
        (lambda: nat.gru_forward(x, k, r, b2, resets=np.zeros((3, 2), bool)),
         r"`resets` must have shape \[B, T\] = \[2, 3\]"),
        (lambda: nat.gru_forward(x, k, r, b2.astype(np.float64)),
         r"reset_gru: `bias` has dtype float64 but `inputs` has float32"),
        (lambda: nat.gru_forward(*(a.astype(np.int32) for a in (x, k, r, b2))),
         r"reset_gru: `inputs` must be float32, float64 or bfloat16"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()
    y, h, gates = nat.gru_forward(x, k, r, b2)
    with pytest.raises(ValueError, match=r"reset_gru backward: `gates` has the wrong shape"):
        nat.gru_backward(x, k, r, b2, None, None, None, y, gates[..., :15], y, h)
    with pytest.raises(ValueError, match=r"reset_gru backward: `gates` has the wrong shape"):
        nat.gru_backward(x, k, r, np.zeros(15, np.float32), None, None, None, y, gates, y, h,
                         reset_after=False)  # the reset_after=True forward saved 4H
