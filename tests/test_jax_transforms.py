"""resetlstm.jax.reset_lstm under jax.vmap, composed with grad and jit, against the same op
called once per instance (itself checked against the float64 reference in test_jax_op.py);
and the CUDA lowering (compiled in when nvcc was found; lowered here, never run: no GPU)."""
import re

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import resetlstm.jax as rj  # noqa: E402
from conftest import make_problem  # noqa: E402

N = 3  # instances under vmap


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def problem(time_major=False):
    """N instances of a (B, T, I, H) = (4, 6, 3, 5) problem with every optional argument."""
    ps = [make_problem(10 + n, 4, 6, 3, 5, np.float64, resets=True, state=True, mask=True,
                       dropout=True) for n in range(N)]
    stack = {k: np.stack([p[k] for p in ps]) for k in ps[0]}
    if time_major:
        for k in ("inputs", "resets", "mask", "d_outputs"):
            stack[k] = np.swapaxes(stack[k], 1, 2)
    return stack


def loss_fn(time_major):
    def loss(x, k, r, b, h0, c0, resets, mask, drop, dy):
        y, h, c = rj.reset_lstm(x, k, r, b, resets=resets, mask=mask, initial_state=(h0, c0),
                                recurrent_dropout_mask=drop, time_major=time_major)
        return jnp.sum(y * dy) + jnp.sum(h * h) + jnp.sum(c)
    return loss


ARGS = ("inputs", "kernel", "recurrent_kernel", "bias", "h0", "c0", "resets", "mask", "dropout",
        "d_outputs")
GRAD_ARGNUMS = (0, 1, 2, 3, 4, 5)


def per_instance(fn, s, mapped):
    outs = [fn(*[s[a][n] if a in mapped else s[a][0] for a in ARGS]) for n in range(N)]
    return jax.tree.map(lambda *xs: np.stack(xs), *outs)


def close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("mapped", [
    ("inputs", "h0", "c0", "resets", "mask", "dropout", "d_outputs"),  # data: folded into B
    ("inputs", "d_outputs"),                   # shared resets/state: broadcast, then folded
    ("resets", "d_outputs"),                   # only the resets differ
    ("kernel", "recurrent_kernel", "bias", "d_outputs"),  # an ensemble: run per instance
], ids=["data", "inputs_only", "resets_only", "weights"])
def test_vmap_value_and_grad(mapped, time_major):
    """vmap(jit(value_and_grad)) and the forward alone equal the per-instance calls: per-example
    weight gradients (each instance's own rows), every result in its instance's slot."""
    s = problem(time_major)
    loss = loss_fn(time_major)
    in_axes = [0 if a in mapped else None for a in ARGS]
    args = [s[a] if a in mapped else s[a][0] for a in ARGS]
    fwd = lambda *a: rj.reset_lstm(*a[:4], resets=a[6], mask=a[7], initial_state=a[4:6],  # noqa
                                   recurrent_dropout_mask=a[8], time_major=time_major)
    close(jax.vmap(fwd, in_axes=in_axes)(*args), per_instance(fwd, s, mapped))
    vg = jax.jit(jax.value_and_grad(loss, argnums=GRAD_ARGNUMS))
    close(jax.vmap(vg, in_axes=in_axes)(*args), per_instance(vg, s, mapped))


def test_grad_of_vmap_and_nested_vmap():
    """grad of a vmapped loss sums the instances' weight gradients; vmap of vmap folds twice."""
    s = problem()
    loss = loss_fn(False)
    mapped = ("inputs", "resets", "d_outputs")
    in_axes = [0 if a in mapped else None for a in ARGS]
    args = [s[a] if a in mapped else s[a][0] for a in ARGS]

    def total(k, r):
        a = list(args)
        a[1], a[2] = k, r
        return jnp.sum(jax.vmap(loss, in_axes=in_axes)(*a))

    g = jax.jit(jax.grad(total, argnums=(0, 1)))(s["kernel"][0], s["recurrent_kernel"][0])
    each = per_instance(jax.grad(loss, argnums=(1, 2)), s, mapped)
    close(g, [e.sum(axis=0) for e in each])
    # vmap of vmap: [2, N, B, T, I] inputs
    x2 = np.stack([s["inputs"], s["inputs"][::-1]])
    k, r, b = s["kernel"][0], s["recurrent_kernel"][0], s["bias"][0]
    y2 = jax.vmap(jax.vmap(lambda x: rj.reset_lstm(x, k, r, b)[0]))(x2)
    close(y2[1, 0], rj.reset_lstm(s["inputs"][-1], k, r, b)[0])


def test_vmap_folds_into_one_call():
    """With unmapped weights the vmapped forward is one kernel call over N*B rows."""
    s = problem()
    k, r, b = s["kernel"][0], s["recurrent_kernel"][0], s["bias"][0]
    hlo = jax.jit(jax.vmap(lambda x: rj.reset_lstm(x, k, r, b)[0])).lower(
        s["inputs"]).as_text()
    calls = [line for line in hlo.splitlines() if "custom_call @resetlstm_forward" in line]
    assert len(calls) == 1 and "tensor<12x6x3xf64>" in calls[0], calls


def test_cuda_lowering():
    """The CUDA custom calls as XLA would get them on a GPU (lowered with jax.export; this
    machine has no GPU, so they never run here): same layout as on the CPU, JAX's matmul
    precision as allow_tf32, float16 in half kernels, a workspace with room for cuBLAS's."""
    from jax import export

    from resetlstm.jax import _ffi

    if "cuda" not in _ffi.PLATFORMS:
        pytest.skip("this build has no CUDA handlers (nvcc was not found at build time)")
    checks = [export.DisabledSafetyCheck.custom_call(t) for t in (_ffi.FORWARD, _ffi.BACKWARD)]
    s = problem()
    for dtype in ("float32", "float16", "bfloat16"):
        x, k, r, b = (jnp.asarray(s[n][0], dtype) for n in ("inputs", "kernel",
                                                          "recurrent_kernel", "bias"))
        f = jax.jit(jax.grad(lambda x: jnp.sum(rj.reset_lstm(x, k, r, b,
                                                             resets=s["resets"][0])[0])))
        text = export.export(f, platforms=["cuda"], disabled_checks=checks)(x).mlir_module()
        fwd = next(l for l in text.splitlines() if "custom_call @resetlstm_forward" in l)
        bwd = next(l for l in text.splitlines() if "custom_call @resetlstm_backward" in l)
        short = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}[dtype]
        assert f"tensor<4x6x3x{short}>" in fwd and "allow_tf32 = true" in fwd, fwd
        assert "has_resets = true" in bwd, bwd
        workspace = int(re.search(r"tensor<(\d+)xui8>", fwd).group(1))
        assert workspace > 32 << 20  # cuBLAS's workspace is carved out of it
    with jax.default_matmul_precision("highest"):
        x = jnp.asarray(s["inputs"][0], "float32")
        text = export.export(jax.jit(lambda x: rj.reset_lstm(x, *(jnp.asarray(
            s[n][0], "float32") for n in ("kernel", "recurrent_kernel", "bias")))[0]),
            platforms=["cuda"], disabled_checks=checks)(x).mlir_module()
        assert "allow_tf32 = false" in text
