"""resetlstm.jax.reset_lstm with the batch sharded over 2 (host) devices: the same results and
gradients as on one device, each device running the kernels on its own rows (no all-gather of
the inputs in the compiled program; the weight gradients summed by one all-reduce). Runs in a
subprocess, since XLA_FLAGS must be set before jax is imported."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import resetlstm.jax as rj
    from conftest import make_problem

    assert len(jax.devices()) == 2
    mesh = Mesh(np.array(jax.devices()), ("data",))

    def loss(x, k, r, b, h0, c0, resets, mask, drop, dy, time_major):
        y, h, c = rj.reset_lstm(x, k, r, b, resets=resets, mask=mask, initial_state=(h0, c0),
                                recurrent_dropout_mask=drop, time_major=time_major)
        return jnp.sum(y * dy) + jnp.sum(h * h) + jnp.sum(c), y

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4, 5), has_aux=True),
                   static_argnums=(10,))

    def check(B, time_major, expect_sharded):
        p = make_problem(B, B, 7, 6, 5, np.float32, resets=True, state=True, mask=True,
                         dropout=True)
        seq = lambda a: np.swapaxes(a, 0, 1).copy() if time_major else a
        args = [seq(p["inputs"]), p["kernel"], p["recurrent_kernel"], p["bias"], p["h0"],
                p["c0"], seq(p["resets"]), seq(p["mask"]), p["dropout"], seq(p["d_outputs"])]
        one = step(*args, time_major)
        batch = P(None, "data") if time_major else P("data")
        placed = [jax.device_put(a, NamedSharding(mesh, batch if a.ndim >= 2 and k in (0, 6, 7, 9)
                                                  else P("data") if k in (4, 5, 8) else P()))
                  for k, a in enumerate(args)]
        two = step(*placed, time_major)
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-6)
        hlo = step.lower(*placed, time_major).compile().as_text()
        calls = [l for l in hlo.splitlines() if "custom-call(" in l and "resetlstm" in l]
        assert len(calls) == 2, calls
        assert ("all-gather" not in hlo) == expect_sharded, hlo
        local = B // 2 if expect_sharded else B
        shape = f"f32[{7},{local},6]" if time_major else f"f32[{local},7,6]"
        assert all(shape in l for l in calls), (shape, calls)
        y_sharding = two[0][1].sharding
        return y_sharding

    # batch-major and time-major, the batch split 4 + 4 rows
    assert check(8, False, True).spec[0] == "data"
    assert check(8, True, True).spec[1] == "data"
    # a batch that does not split evenly (5 of 6 sharded rows, inside the program): gathered
    # and run whole, the same results
    p = make_problem(1, 6, 7, 6, 5, np.float32, resets=True)
    w = (p["kernel"], p["recurrent_kernel"], p["bias"])
    def five(x, resets, k, r, b):
        y = rj.reset_lstm(x[:5], k, r, b, resets=resets[:5])[0]
        return jnp.sum(y * y), y
    g = jax.jit(jax.value_and_grad(five, argnums=(0, 2), has_aux=True))
    want = g(p["inputs"], p["resets"], *w)
    xs = jax.device_put(p["inputs"], NamedSharding(mesh, P("data")))
    rs = jax.device_put(p["resets"], NamedSharding(mesh, P("data")))
    got = g(xs, rs, *w)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-6)
    hlo = g.lower(xs, rs, *w).compile().as_text()
    calls = [l for l in hlo.splitlines() if "custom-call(" in l and "resetlstm" in l]
    assert len(calls) == 2 and all("f32[5,7,5]" in l for l in calls), calls

    # inside shard_map each device calls the op on its rows directly
    p = make_problem(0, 8, 7, 6, 5, np.float32, resets=True)
    def local(x, resets, k, r, b):
        return rj.reset_lstm(x, k, r, b, resets=resets)[0]
    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P("data"), P(), P(), P()),
                              out_specs=P("data")))
    w = (p["kernel"], p["recurrent_kernel"], p["bias"])
    np.testing.assert_allclose(f(p["inputs"], p["resets"], *w),
                               local(p["inputs"], p["resets"], *w), rtol=2e-6, atol=2e-6)
    print("OK")
    """
)


def test_batch_sharded_over_two_devices():
    import resetlstm

    repo = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, tests]))
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert result.stdout.strip().endswith("OK")
