"""resetlstm.jax.reset_lstm (XLA FFI custom calls of the CPU kernels) against the float64 numpy
reference and jax.test_util.check_grads: forward and every gradient, under jit, eagerly, with
every optional argument, both layouts and every dtype; and its argument errors (the messages of
the TF op, before anything compiles). vmap and sharding: test_jax_transforms.py,
test_jax_sharding.py."""
import re

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import resetlstm.jax as rj  # noqa: E402
from conftest import DIFF_NAMES, assert_close, make_problem, reference_for  # noqa: E402
from reference import to_time_major  # noqa: E402
from test_errors import CASES, DTYPE_CASES, base  # noqa: E402


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def run(p, time_major=False, jit=True, dtype=None):
    """reset_lstm on a make_problem dict: ((outputs, h, c), grads by DIFF_NAMES), batch-major,
    with loss = sum(outputs*d_outputs) + sum(h*d_h) + sum(c*d_c)."""
    tm = to_time_major if time_major else (lambda a: a)
    cast = (lambda a: a) if dtype is None else (lambda a: None if a is None else
                                                jnp.asarray(a, dtype))
    names = [n for n in DIFF_NAMES if p[n] is not None]
    resets = None if p["resets"] is None else tm(p["resets"])
    mask = None if p["mask"] is None else tm(p["mask"])
    dropout = cast(p["dropout"])

    def loss(args):
        state = (args["h0"], args["c0"]) if "h0" in args else None
        y, h, c = rj.reset_lstm(args["inputs"], args["kernel"], args["recurrent_kernel"],
                                args["bias"], resets=resets, mask=mask, initial_state=state,
                                recurrent_dropout_mask=dropout, time_major=time_major)
        total = (jnp.sum(y * cast(tm(p["d_outputs"]))) + jnp.sum(h * cast(p["d_h"]))
                 + jnp.sum(c * cast(p["d_c"])))
        return total, (y, h, c)

    fn = jax.value_and_grad(loss, has_aux=True)
    if jit:
        fn = jax.jit(fn)
    args = {n: cast(tm(p[n]) if n == "inputs" else p[n]) for n in names}
    (_, (y, h, c)), grads = fn(args)
    if time_major:
        y = np.swapaxes(y, 0, 1)
        grads["inputs"] = np.swapaxes(grads["inputs"], 0, 1)
    return (np.asarray(y), np.asarray(h), np.asarray(c)), {k: np.asarray(v)
                                                         for k, v in grads.items()}


def check(p, outs, grads, dtype, factor=1.0):
    (ry, rh, rc), rg = reference_for(p)
    for name, got, want in zip(("outputs", "h", "c"), outs, (ry, rh, rc)):
        assert got.dtype == np.dtype(dtype), (name, got.dtype)
        assert_close(got, want, dtype, name, factor)
    for name in DIFF_NAMES:
        if p[name] is None:
            continue
        assert grads[name].dtype == np.dtype(dtype), (name, grads[name].dtype)
        assert_close(grads[name], rg[name], dtype, f"d_{name}", factor)


OPTIONS = {
    "plain": {},
    "resets_state": dict(resets=True, state=True),
    "everything": dict(resets=True, state=True, mask=True, dropout=True),
    "mask_only": dict(mask=True),
}


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
def test_float64_matches_reference(x64, options, time_major):
    p = make_problem(1, 5, 7, 4, 3, np.float64, **OPTIONS[options])
    outs, grads = run(p, time_major=time_major)
    check(p, outs, grads, np.float64)


def test_float32_jit_and_eager_match_reference():
    p = make_problem(2, 6, 9, 5, 8, np.float32, resets=True, state=True, mask=True,
                     dropout=True)
    jitted = run(p, jit=True)
    check(p, *jitted, np.float32)
    eager = run(p, jit=False)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        np.testing.assert_array_equal(a, b)  # the same kernels on the same data


def test_check_grads_float64(x64):
    p = make_problem(3, 3, 4, 3, 2, np.float64, resets=True, state=True, mask=True,
                     dropout=True)

    def f(x, k, r, b, h0, c0):
        return rj.reset_lstm(x, k, r, b, resets=p["resets"], mask=p["mask"],
                             initial_state=(h0, c0), recurrent_dropout_mask=p["dropout"])

    args = tuple(p[n] for n in DIFF_NAMES)
    # reverse mode (a custom_vjp), first and second order of the VJP's linearity checks
    check_grads(f, args, order=1, modes=("rev",), eps=1e-6, atol=1e-7, rtol=1e-7)
    check_grads(jax.jit(f), args, order=1, modes=("rev",), eps=1e-6, atol=1e-7, rtol=1e-7)


def test_flags_as_numbers_and_no_gradient_to_constants(x64):
    p = make_problem(4, 4, 6, 3, 2, np.float64, resets=True, mask=True, dropout=True)
    x, k, r, b = (p[n] for n in ("inputs", "kernel", "recurrent_kernel", "bias"))
    want = rj.reset_lstm(x, k, r, b, resets=p["resets"], mask=p["mask"])
    for kind in (np.int32, np.float32, np.uint8):
        got = rj.reset_lstm(x, k, r, b, resets=p["resets"].astype(kind),
                            mask=p["mask"].astype(kind) * 3)  # any nonzero value is True
        for a, c in zip(got, want):
            np.testing.assert_array_equal(a, c)
    # the recurrent dropout mask, resets and mask are constants: zero cotangents
    g = jax.grad(lambda m: jnp.sum(rj.reset_lstm(x, k, r, b, recurrent_dropout_mask=m)[0]))(
        p["dropout"])
    assert not np.any(np.asarray(g))
    gr = jax.grad(lambda res: jnp.sum(rj.reset_lstm(x, k, r, b, resets=res)[0]))(
        p["resets"].astype(np.float64))
    assert not np.any(np.asarray(gr))


def test_no_gradient_crosses_a_reset(x64):
    """Outputs from a row's reset on do not depend on that row's earlier inputs or state."""
    p = make_problem(5, 3, 8, 2, 3, np.float64, state=True)
    resets = np.zeros((3, 8), bool)
    resets[1, 4] = True
    x, k, r, b, h0, c0 = (p[n] for n in DIFF_NAMES)

    def tail(x, h0):
        y, _, _ = rj.reset_lstm(x, k, r, b, resets=resets, initial_state=(h0, c0))
        return jnp.sum(y[1, 4:])

    dx, dh0 = jax.grad(tail, argnums=(0, 1))(x, h0)
    assert not np.any(np.asarray(dx)[1, :4]) and not np.any(np.asarray(dh0)[1])
    assert np.all(np.abs(np.asarray(dx)[1, 4:]).sum(axis=-1) > 0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_dtypes(dtype):
    """Results and gradients in the half dtype, close to float32 (bfloat16: 8 significant
    bits). On the CPU bfloat16 runs the bf16 kernels where the CPU has AVX512-BF16, float16 the
    float32 kernels on widened copies (converts around the custom call in the HLO)."""
    from resetlstm.jax import _ffi

    p = make_problem(6, 4, 12, 8, 6, np.float32, resets=True, state=True, mask=True)
    ref_outs, ref_grads = run(p)
    outs, grads = run(p, dtype=dtype)
    tol = 3e-2
    for got, want in zip(outs, ref_outs):
        assert got.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=tol)
    for name, want in ref_grads.items():
        assert grads[name].dtype == jnp.dtype(dtype), name
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(np.asarray(grads[name], np.float32), want, atol=tol * scale,
                                   err_msg=name)
    native = _ffi.kernel_dtype("cpu", dtype) == jnp.dtype(dtype)
    assert native == (dtype == "bfloat16" and _ffi.bf16_gemm() == "avx512_bf16")
    x = jnp.asarray(p["inputs"], dtype)
    w = [jnp.asarray(p[n], dtype) for n in ("kernel", "recurrent_kernel", "bias")]
    hlo = jax.jit(lambda x: rj.reset_lstm(x, *w)[0]).lower(x).as_text()
    kernel_type = "bf16" if native else "f32"
    call = next(line for line in hlo.splitlines() if "resetlstm_forward" in line)
    assert re.search(rf"tensor<4x12x8x{kernel_type}>", call), call


# ---- errors ------------------------------------------------------------------------------------

def _call_jax(a, jit):
    names = [n for n in ("inputs", "kernel", "recurrent_kernel", "bias", "resets", "mask",
                         "h0", "c0", "dropout") if a[n] is not None]

    def body(*vals):
        v = dict(zip(names, vals))
        state = (v["h0"], v["c0"]) if "h0" in v else None
        return rj.reset_lstm(v["inputs"], v["kernel"], v["recurrent_kernel"], v["bias"],
                             resets=v.get("resets"), mask=v.get("mask"), initial_state=state,
                             recurrent_dropout_mask=v.get("dropout"), time_major=a["time_major"])

    return (jax.jit(body) if jit else body)(*[a[n] for n in names])


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_shapes(case, jit):
    """The TF op's bad-shape cases (test_errors.py), with its messages, raised while tracing."""
    _, overrides, arg_re, dims_re = case
    a = base()
    a.update(overrides)
    with pytest.raises(ValueError) as info:
        _call_jax(a, jit)
    msg = str(info.value)
    assert msg.startswith("reset_lstm: "), msg
    assert re.search(arg_re, msg), f"message does not name /{arg_re}/: {msg!r}"
    if dims_re is not None:
        assert re.search(dims_re, msg), f"message lacks received dims /{dims_re}/: {msg!r}"


@pytest.mark.parametrize("case", DTYPE_CASES, ids=[c[0] for c in DTYPE_CASES])
def test_mixed_dtypes(x64, case):
    _, overrides, arg_re = case
    a = base()
    a.update(overrides)
    with pytest.raises(ValueError, match=r"float64") as info:
        _call_jax(a, jit=True)
    assert re.search(arg_re, str(info.value)), str(info.value)


@pytest.mark.parametrize("case", [
    ("int_inputs", dict(inputs=np.zeros((3, 5, 6), np.int32)), r"`inputs` must be float32.*int32"),
    ("complex_resets", dict(resets=np.zeros((3, 5), np.complex64)),
     r"`resets` must be bool or 0/1 numbers, got complex64"),
    ("state_not_pair", dict(initial_state=np.zeros((3, 2), np.float32)),
     r"`initial_state` must be a pair \(h0, c0\).*ndarray of length 3"),
    ("time_major_array", dict(time_major=np.zeros(())), r"`time_major` must be a Python bool"),
], ids=lambda c: c[0] if isinstance(c, tuple) else c)
def test_bad_arguments(case):
    _, overrides, message = case
    a = base()
    kwargs = dict(resets=None, time_major=False)
    for key in ("resets", "initial_state", "time_major"):
        if key in overrides:
            kwargs[key] = overrides[key]
    inputs = overrides.get("inputs", a["inputs"])
    with pytest.raises(ValueError, match=message):
        rj.reset_lstm(inputs, a["kernel"], a["recurrent_kernel"], a["bias"], **kwargs)


def test_handler_checks_its_buffers():
    """The custom call's own validation (shared by the CPU and CUDA handlers,
    csrc/jax/ffi_args.h) runs when the target is called directly with inconsistent
    buffers: a clear error, never a crash."""
    from resetlstm.jax import _ffi

    B, T, I, H = 2, 3, 4, 5
    f32 = jnp.float32
    none_b, none_f = jnp.zeros((0,), bool), jnp.zeros((0,), f32)
    x, k = jnp.zeros((B, T, I), f32), jnp.zeros((I, 4 * H), f32)
    r, b = jnp.zeros((H, 4 * H), f32), jnp.zeros((4 * H,), f32)
    ws = _ffi.workspace_bytes("cpu", "forward", np.float32, (B, T, I, H), False, False, 0)
    attrs = dict(time_major=False, has_resets=False, has_mask=False, has_state=False,
                 has_dropout=False, cell=np.int32(0), training=False)

    def call(results, kernel=k):
        fn = jax.ffi.ffi_call(_ffi.FORWARD, results)
        return fn(x, kernel, r, b, none_b, none_b, none_f, none_f, none_f, **attrs)

    good = [jax.ShapeDtypeStruct(s, f32) for s in ((B, T, H), (B, H), (B, H), (0,), (0,))]
    workspace = jax.ShapeDtypeStruct((ws,), jnp.uint8)
    y = call(good + [workspace])[0]
    assert y.shape == (B, T, H)
    cases = [
        (good + [jax.ShapeDtypeStruct((ws - 1,), jnp.uint8)], k, r"workspace.*needed"),
        ([jax.ShapeDtypeStruct((B, T, H + 1), f32)] + good[1:] + [workspace], k,
         r"result `outputs` must be float32 \[2, 3, 5\], got float32 \[2, 3, 6\]"),
        (good + [workspace], jnp.zeros((I + 1, 4 * H), f32), r"`kernel` must have shape"),
        (good + [workspace], jnp.zeros((I, 4 * H), jnp.bfloat16), r"`kernel` has dtype bfloat16"),
    ]
    for results, kernel, message in cases:
        with pytest.raises(Exception, match=message):
            jax.block_until_ready(call(results, kernel))
