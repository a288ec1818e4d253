"""resetlstm.jax.linen.ResetLSTM against the recurrent-RL pattern it replaces: lax.scan over
flax.linen.OptimizedLSTMCell with the carry reset by jnp.where(resets[:, None], initial_carry,
carry), the same parameters (converted with params_from_optimized_lstm_cell): the same
outputs, final carry and gradients."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
nn = pytest.importorskip("flax.linen")
import jax.numpy as jnp  # noqa: E402

from resetlstm.jax.linen import ResetLSTM, params_from_optimized_lstm_cell  # noqa: E402

T, B, I, H = 9, 5, 4, 6


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def scanned_cell(cell, params, carry, inputs, resets):
    """The PureJaxRL ScannedRNN pattern: time-major scan, the carry reset to the initial
    (zero) carry where an episode starts."""
    initial = cell.initialize_carry(jax.random.key(0), inputs.shape[1:])

    def step(carry, x_and_reset):
        x, reset = x_and_reset
        carry = jax.tree.map(lambda i, c: jnp.where(reset[:, None], i, c), initial, carry)
        return cell.apply(params, carry, x)

    return jax.lax.scan(step, carry, (inputs, resets))


def data(seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(T, B, I))
    resets = rng.random((T, B)) < 0.25
    resets[0, 0] = resets[3, 1] = True
    carry = (rng.normal(size=(B, H)), rng.normal(size=(B, H)))  # (c, h)
    return inputs, resets, carry


def test_equals_scan_over_optimized_lstm_cell():
    inputs, resets, carry = data()
    cell = nn.OptimizedLSTMCell(H, param_dtype=jnp.float64)
    cell_params = cell.init(jax.random.key(1), carry, inputs[0])
    # a non-zero bias, so that its conversion is checked too
    cell_params = jax.tree.map(lambda p: p + 0.1 * jnp.ones_like(p), cell_params)
    module = ResetLSTM(H, param_dtype=jnp.float64)
    params = params_from_optimized_lstm_cell(cell_params)

    def ours(params, carry):
        (c, h), y = module.apply({"params": params}, carry, (inputs, resets))
        return jnp.sum(y ** 2) + jnp.sum(c) + jnp.sum(h * h), (c, h, y)

    def theirs(cell_params, carry):
        (c, h), y = scanned_cell(cell, cell_params, carry, inputs, resets)
        return jnp.sum(y ** 2) + jnp.sum(c) + jnp.sum(h * h), (c, h, y)

    (_, got), (g_params, g_carry) = jax.jit(jax.value_and_grad(ours, argnums=(0, 1),
                                                               has_aux=True))(params, carry)
    (_, want), (g_cell, g_carry_ref) = jax.value_and_grad(theirs, argnums=(0, 1),
                                                          has_aux=True)(cell_params, carry)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    converted = params_from_optimized_lstm_cell(g_cell)
    for name in ("kernel", "recurrent_kernel", "bias"):
        np.testing.assert_allclose(g_params[name], converted[name], rtol=1e-9, atol=1e-9,
                                   err_msg=name)
    for a, b in zip(g_carry, g_carry_ref):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_batch_major_init_and_no_resets():
    inputs, resets, carry = data(1)
    module = ResetLSTM(H, param_dtype=jnp.float64)
    variables = module.init(jax.random.key(2), carry, (inputs, resets))
    shapes = jax.tree.map(jnp.shape, variables["params"])
    assert shapes == {"kernel": (I, 4 * H), "recurrent_kernel": (H, 4 * H), "bias": (4 * H,)}
    # each gate's recurrent block is orthogonal, as in Flax's cells
    rk = np.asarray(variables["params"]["recurrent_kernel"])
    for g in range(4):
        block = rk[:, g * H:(g + 1) * H]
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-10)
    (c, h), y = module.apply(variables, carry, (inputs, resets))
    bm = ResetLSTM(H, time_major=False, param_dtype=jnp.float64)
    (c2, h2), y2 = bm.apply(variables, carry, (np.swapaxes(inputs, 0, 1), resets.T))
    np.testing.assert_allclose(np.swapaxes(y2, 0, 1), y, rtol=1e-12, atol=1e-12)
    # inputs alone: no resets; equal to resets that are all False
    _, y3 = module.apply(variables, carry, inputs)
    _, y4 = module.apply(variables, carry, (inputs, np.zeros_like(resets)))
    np.testing.assert_allclose(y3, y4, rtol=1e-12, atol=1e-12)
    zeros = module.initialize_carry(jax.random.key(0), (B, I))
    assert [z.shape for z in zeros] == [(B, H), (B, H)] and not np.any(np.asarray(zeros))


def test_conversion_refuses_other_params():
    with pytest.raises(ValueError, match=r"missing \['hi', 'hf', 'hg', 'ho'\]"):
        params_from_optimized_lstm_cell({"params": {f"i{g}": {} for g in "ifgo"}})
