"""resetlstm.jax.reset_gru (the XLA FFI calls with cell=GRU, both of Keras' forms) against the
float64 reference of tests/reference_gru.py: forward and gradients under jit and grad, vmap, the
batch sharded over devices without gathering, equality with a jitted lax.scan GRU with jnp.where
resets (the PureJaxRL pattern), errors that name the argument."""
import os

import numpy as np
import pytest

from conftest import assert_close, gru_reference_for, make_gru_problem

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
rj = pytest.importorskip("resetlstm.jax")

GRADS = ("inputs", "kernel", "recurrent_kernel", "bias", "h0")
FORMS = [True, False]
FORM_IDS = ["reset_after", "reset_before"]


@pytest.fixture(autouse=True)
def x64():
    """float64 in this module's tests only (a process-wide jax_enable_x64 would change the
    default dtypes of every JAX test collected after this module)."""
    with jax.enable_x64(True):
        yield


def loss_and_grads(p, time_major=False):
    tm = (lambda a: None if a is None else jnp.swapaxes(a, 0, 1)) if time_major else \
        (lambda a: a)

    def loss(x, k, r, b, h0):
        y, h = rj.reset_gru(tm(x), k, r, b, resets=tm(p["resets"]), mask=tm(p["mask"]),
                            initial_state=h0, recurrent_dropout_mask=p["dropout"],
                            time_major=time_major, reset_after=p["reset_after"])
        y = tm(y)
        return jnp.sum(y * p["d_outputs"]) + jnp.sum(h * p["d_h"]), (y, h)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))(
        *(p[n] for n in GRADS))


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("dropout", [False, True], ids=["", "dropout"])
def test_reset_gru_vs_reference(dropout, time_major, reset_after):
    p = make_gru_problem(800 + 2 * dropout + time_major, 5, 7, 4, 6, reset_after=reset_after,
                         resets=True, state=True, mask=True, dropout=dropout)
    grads, (y, h) = loss_and_grads(p, time_major)
    (ry, rh), rg = gru_reference_for(p)
    assert_close(np.asarray(y), ry, np.float64, "outputs")
    assert_close(np.asarray(h), rh, np.float64, "h_T")
    for n, g in zip(GRADS, grads):
        assert_close(np.asarray(g), rg[n], np.float64, f"d_{n}", factor=10)


def scan_gru(x, kernel, recurrent_kernel, bias, resets, reset_after=True):
    """The PureJaxRL pattern: lax.scan over a GRU cell, the carry reset with jnp.where."""
    H = recurrent_kernel.shape[0]
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, jnp.zeros_like(bias))

    def step(h, inp):
        x_t, reset = inp
        h = jnp.where(reset[:, None], 0.0, h)
        xz = x_t @ kernel + b_in
        if reset_after:
            hz = h @ recurrent_kernel + b_rec
            z = jax.nn.sigmoid(xz[:, :H] + hz[:, :H])
            r = jax.nn.sigmoid(xz[:, H:2 * H] + hz[:, H:2 * H])
            n = jnp.tanh(xz[:, 2 * H:] + r * hz[:, 2 * H:])
        else:
            hz = h @ recurrent_kernel[:, :2 * H]
            z = jax.nn.sigmoid(xz[:, :H] + hz[:, :H])
            r = jax.nn.sigmoid(xz[:, H:2 * H] + hz[:, H:])
            n = jnp.tanh(xz[:, 2 * H:] + (r * h) @ recurrent_kernel[:, 2 * H:])
        h = z * h + (1 - z) * n
        return h, h

    h0 = jnp.zeros((x.shape[0], H), x.dtype)
    h, ys = jax.lax.scan(step, h0, (jnp.swapaxes(x, 0, 1), jnp.swapaxes(resets, 0, 1)))
    return jnp.swapaxes(ys, 0, 1), h


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
def test_equals_the_scanned_gru_with_where_resets(reset_after):
    p = make_gru_problem(820, 6, 20, 5, 8, reset_after=reset_after, resets=True)
    args = (p["inputs"], p["kernel"], p["recurrent_kernel"], p["bias"])

    def loss(fn):
        return lambda *a: jnp.sum(fn(*a)[0] ** 2)

    ours = jax.jit(lambda *a: rj.reset_gru(*a, resets=p["resets"], reset_after=reset_after))
    scan = jax.jit(lambda *a: scan_gru(*a, p["resets"], reset_after))
    for a, b in zip(ours(*args), scan(*args)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)
    g1 = jax.jit(jax.grad(loss(lambda *a: rj.reset_gru(*a, resets=p["resets"],
                                                       reset_after=reset_after)),
                          argnums=(0, 1, 2, 3)))(*args)
    g2 = jax.jit(jax.grad(loss(lambda *a: scan_gru(*a, p["resets"], reset_after)),
                          argnums=(0, 1, 2, 3)))(*args)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-11)


@pytest.mark.parametrize("reset_after", FORMS, ids=FORM_IDS)
def test_vmap_forward_and_gradients(reset_after):
    """vmap over a stack of independent sequences equals running each alone; gradients too (the
    backward runs once per instance)."""
    p = make_gru_problem(830, 3, 5, 4, 6, reset_after=reset_after, resets=True)
    xs = np.stack([p["inputs"], p["inputs"] * 0.5, -p["inputs"]])
    rs = np.stack([p["resets"], ~p["resets"], p["resets"]])
    w = (p["kernel"], p["recurrent_kernel"], p["bias"])

    def one(x, r):
        return rj.reset_gru(x, *w, resets=r, reset_after=reset_after)[0]

    batched = jax.jit(jax.vmap(one))(xs, rs)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(one(xs[i], rs[i])),
                                   rtol=0, atol=1e-13)
    grad = jax.vmap(jax.grad(lambda k, x, r: jnp.sum(rj.reset_gru(
        x, k, *w[1:], resets=r, reset_after=reset_after)[0] ** 2)), in_axes=(None, 0, 0))
    gs = jax.jit(grad)(w[0], xs, rs)
    for i in range(3):
        want = jax.grad(lambda k: jnp.sum(rj.reset_gru(xs[i], k, *w[1:], resets=rs[i],
                                                       reset_after=reset_after)[0] ** 2))(w[0])
        np.testing.assert_allclose(np.asarray(gs[i]), np.asarray(want), rtol=0, atol=1e-12)


def test_sharded_batch_runs_without_gathering():
    """The batch sharded over 2 host devices (a subprocess: XLA_FLAGS must be set before JAX
    starts): the same results as unsharded, and the compiled HLO has no all-gather."""
    import subprocess
    import sys
    import textwrap

    import resetlstm
    script = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import numpy as np, jax, jax.numpy as jnp
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        jax.config.update("jax_enable_x64", True)
        import resetlstm.jax as rj
        rng = np.random.default_rng(0)
        x = rng.normal(size=(8, 6, 4)); k = rng.normal(size=(4, 15)) * 0.3
        r = rng.normal(size=(5, 15)) * 0.3; b = rng.normal(size=(2, 15)) * 0.3
        resets = rng.random((8, 6)) < 0.3
        mesh = Mesh(np.array(jax.devices()), ("data",))
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        rs = jax.device_put(resets, NamedSharding(mesh, P("data")))
        loss = lambda x, k, rs: jnp.sum(rj.reset_gru(x, k, r, b, resets=rs)[0] ** 2)
        f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        (v1, (gx1, gk1)) = f(xs, k, rs)
        (v2, (gx2, gk2)) = f(x, k, resets)
        assert abs(float(v1) - float(v2)) < 1e-10
        assert np.allclose(gk1, gk2, atol=1e-10) and np.allclose(gx1, gx2, atol=1e-10)
        hlo = f.lower(xs, k, rs).compile().as_text()
        assert "all-gather" not in hlo, "gathered"
        print("OK")
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(resetlstm.__file__)),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_errors_name_the_argument():
    x, k, r = np.zeros((2, 3, 4), np.float32), np.zeros((4, 15), np.float32), \
        np.zeros((5, 15), np.float32)
    b2 = np.zeros((2, 15), np.float32)
    cases = [
        (lambda: rj.reset_gru(x, k, r, np.zeros(15, np.float32)),
         r"reset_gru: `bias` must be rank 2 \[2, 3H\]"),
        (lambda: rj.reset_gru(x, k, r, b2, reset_after=False),
         r"reset_gru: `bias` must be rank 1 \[3H\]"),
        (lambda: rj.reset_gru(x, k, r, b2.astype(np.float64)),
         r"reset_gru: `bias` has dtype float64 but `inputs` has float32"),
        (lambda: rj.reset_gru(x, k, r, b2, initial_state=np.zeros((3, 5), np.float32)),
         r"`initial_state` must have shape \[B, H\] = \[2, 5\]"),
        (lambda: rj.reset_gru(x, k, r, b2, reset_after=1), r"`reset_after` must be a Python bool"),
        (lambda: rj.reset_gru(x, k, r, b2, resets=np.zeros((2, 3), np.complex64)),
         r"reset_gru: `resets` must be bool or 0/1 numbers"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()
