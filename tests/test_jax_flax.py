"""resetlstm.jax.linen.ResetLSTM against the recurrent-RL pattern it replaces: lax.scan over
flax.linen.OptimizedLSTMCell with the carry reset by jnp.where(resets[:, None], initial_carry,
carry), the same parameters (converted with params_from_optimized_lstm_cell): the same
outputs, final carry and gradients. The same for ResetGRU against flax.linen.GRUCell, and for
ScannedRNN against PureJaxRL's ScannedRNN pattern (written out below)."""
import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nn = pytest.importorskip("flax.linen")
import jax.numpy as jnp  # noqa: E402

from resetlstm.jax import linen  # noqa: E402
from resetlstm.jax.linen import (ResetGRU, ResetLSTM, params_from_gru_cell,  # noqa: E402
                                 params_from_optimized_lstm_cell)

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


# ----------------------------------------------------------------------------------------------
# The GRU


def gru_data(seed=0, features=H):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(T, B, features if features != H else I))
    resets = rng.random((T, B)) < 0.25
    resets[0, 0] = resets[3, 1] = True
    carry = rng.normal(size=(B, H if features == H else features))
    return inputs, resets, carry


def perturbed(tree, seed):
    """Every parameter moved by its own random amount, so that biases are non-zero and differ
    (their conversion is checked too)."""
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [leaf + 0.2 * rng.normal(size=leaf.shape)
                                        for leaf in leaves])


def max_abs(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_gru_equals_scan_over_gru_cell():
    inputs, resets, carry = gru_data()
    cell = nn.GRUCell(H, param_dtype=jnp.float64)
    cell_params = perturbed(cell.init(jax.random.key(1), carry, inputs[0]), 3)
    module = ResetGRU(H, param_dtype=jnp.float64)
    params = params_from_gru_cell(cell_params)

    def ours(params, inputs, carry):
        h, y = module.apply({"params": params}, carry, (inputs, resets))
        return jnp.sum(y ** 2) + jnp.sum(jnp.sin(h)), (h, y)

    def theirs(cell_params, inputs, carry):
        h, y = scanned_cell(cell, cell_params, carry, inputs, resets)
        return jnp.sum(y ** 2) + jnp.sum(jnp.sin(h)), (h, y)

    (_, got), (g_params, g_inputs, g_carry) = jax.jit(jax.value_and_grad(
        ours, argnums=(0, 1, 2), has_aux=True))(params, inputs, carry)
    (_, want), (g_cell, g_inputs_ref, g_carry_ref) = jax.value_and_grad(
        theirs, argnums=(0, 1, 2), has_aux=True)(cell_params, inputs, carry)
    assert not np.allclose(got[0], carry)  # the state moved
    print("ResetGRU vs scan: outputs/h", max_abs(got, want))
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-12)
    converted = params_from_gru_cell(g_cell)
    print("ResetGRU vs scan: grads", max_abs((g_params["kernel"], g_params["recurrent_kernel"],
                                              g_params["bias"][0], g_params["bias"][1, 2 * H:],
                                              g_inputs, g_carry),
                                             (converted["kernel"],
                                              converted["recurrent_kernel"],
                                              converted["bias"][0], converted["bias"][1, 2 * H:],
                                              g_inputs_ref, g_carry_ref)))
    for name in ("kernel", "recurrent_kernel"):
        np.testing.assert_allclose(g_params[name], converted[name], rtol=0, atol=1e-12,
                                   err_msg=name)
    # the biases GRUCell has: all input ones and the recurrent one of n
    np.testing.assert_allclose(g_params["bias"][0], converted["bias"][0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(g_params["bias"][1, 2 * H:], converted["bias"][1, 2 * H:],
                               rtol=0, atol=1e-12)
    # the recurrent biases of z and r (which GRUCell lacks) enter as the input ones do
    np.testing.assert_allclose(g_params["bias"][1, :2 * H], g_params["bias"][0, :2 * H],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(g_inputs, g_inputs_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g_carry, g_carry_ref, rtol=0, atol=1e-12)
    # a reset cuts the gradient to the initial state of that row
    g_carry = np.asarray(g_carry)
    assert np.all(g_carry[resets[0]] == 0) and np.all(np.any(g_carry[~resets[0]] != 0, axis=1))


def test_gru_batch_major_init_and_no_resets():
    inputs, resets, carry = gru_data(1)
    module = ResetGRU(H, param_dtype=jnp.float64)
    variables = module.init(jax.random.key(2), carry, (inputs, resets))
    shapes = jax.tree.map(jnp.shape, variables["params"])
    assert shapes == {"kernel": (I, 3 * H), "recurrent_kernel": (H, 3 * H), "bias": (2, 3 * H)}
    assert not np.any(np.asarray(variables["params"]["bias"]))
    # each gate's recurrent block is orthogonal, as GRUCell's hz, hr, hn
    rk = np.asarray(variables["params"]["recurrent_kernel"])
    for g in range(3):
        block = rk[:, g * H:(g + 1) * H]
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-10)
    variables = {"params": perturbed(variables["params"], 4)}
    h, y = module.apply(variables, carry, (inputs, resets))
    bm = ResetGRU(H, time_major=False, param_dtype=jnp.float64)
    h2, y2 = bm.apply(variables, carry, (np.swapaxes(inputs, 0, 1), resets.T))
    assert y2.shape == (B, T, H)
    np.testing.assert_allclose(np.swapaxes(y2, 0, 1), y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h2, h, rtol=0, atol=1e-12)
    # inputs alone: no resets; equal to resets that are all False, not to these resets
    _, y3 = module.apply(variables, carry, inputs)
    _, y4 = module.apply(variables, carry, (inputs, np.zeros_like(resets)))
    np.testing.assert_allclose(y3, y4, rtol=0, atol=1e-12)
    assert not np.allclose(y3, y)
    zeros = module.initialize_carry(jax.random.key(0), (B, I))
    assert zeros.shape == (B, H) and not np.any(np.asarray(zeros))


def test_gru_conversion_refuses_other_params():
    lstm = nn.OptimizedLSTMCell(H).init(jax.random.key(0), (np.zeros((B, H)),) * 2,
                                        np.zeros((B, I)))
    with pytest.raises(ValueError, match=r"params_from_gru_cell: .*missing \['ir/kernel'"):
        params_from_gru_cell(lstm)
    gru = nn.GRUCell(H).init(jax.random.key(0), np.zeros((B, H)), np.zeros((B, I)))
    del gru["params"]["hn"]["bias"]
    with pytest.raises(ValueError, match=r"missing \['hn/bias'\]$"):
        params_from_gru_cell(gru)
    # a ScannedRNN's tree holds the cell one level down
    with pytest.raises(ValueError, match="missing"):
        params_from_gru_cell({"params": {"GRUCell_1": gru["params"]}})


# PureJaxRL's ScannedRNN pattern (purejaxrl/ppo_rnn.py), written out here as the reference.
class ScannedRNN(nn.Module):
    @functools.partial(nn.scan, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=0, out_axes=0)
    @nn.compact
    def __call__(self, carry, x):
        ins, resets = x
        start = self.initialize_carry(ins.shape[0], ins.shape[1])
        carry = jnp.where(resets[:, np.newaxis], start, carry)
        return nn.GRUCell(features=ins.shape[1])(carry, ins)

    @staticmethod
    def initialize_carry(batch_size, hidden_size):
        cell = nn.GRUCell(features=hidden_size)
        return cell.initialize_carry(jax.random.PRNGKey(0), (batch_size, hidden_size))


class Agent(nn.Module):
    """A PureJaxRL-style network around a ScannedRNN class (the reference or ours)."""
    rnn: type

    @nn.compact
    def __call__(self, hidden, x):
        obs, dones = x
        embedding = nn.relu(nn.Dense(F)(obs))
        hidden, embedding = self.rnn()(hidden, (embedding, dones))
        return hidden, nn.Dense(2)(embedding)


F = 7


def scanned_data(seed=5):
    rng = np.random.default_rng(seed)
    ins = rng.normal(size=(T, B, F))
    resets = rng.random((T, B)) < 0.25
    resets[0, 0] = resets[3, 1] = True
    carry = rng.normal(size=(B, F))
    return ins, resets, carry


def test_scanned_rnn_init_draws_the_original_tree():
    ins, resets, carry = (np.asarray(a, np.float32) for a in scanned_data())
    key = jax.random.key(7)
    want = ScannedRNN().init(key, carry, (ins, resets))
    got = linen.ScannedRNN().init(key, carry, (ins, resets))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert list(got["params"]) == ["GRUCell_1"]
    assert jax.tree.map(jnp.shape, got) == jax.tree.map(jnp.shape, want)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    # inside a network: the same auto-name (ScannedRNN_0), so the same values everywhere
    obs = np.ones((T, B, 3), np.float32)
    want = Agent(ScannedRNN).init(key, carry, (obs, resets))
    got = Agent(linen.ScannedRNN).init(key, carry, (obs, resets))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    other = linen.ScannedRNN().init(jax.random.key(8), carry, (ins, resets))
    assert not np.array_equal(other["params"]["GRUCell_1"]["ir"]["kernel"],
                              want["params"]["ScannedRNN_0"]["GRUCell_1"]["ir"]["kernel"])
    zeros = linen.ScannedRNN.initialize_carry(B, F)
    want_zeros = ScannedRNN.initialize_carry(B, F)
    assert zeros.shape == want_zeros.shape and zeros.dtype == want_zeros.dtype
    assert not np.any(np.asarray(zeros))


def scanned_params(seed=9):
    ins, resets, carry = scanned_data()
    variables = ScannedRNN().init(jax.random.key(seed), carry, (ins, resets))
    return jax.tree.map(lambda p: np.asarray(p, np.float64), perturbed(variables, seed))


def test_scanned_rnn_equals_the_original():
    ins, resets, carry = scanned_data()
    variables = scanned_params()

    def loss(module, variables, ins, carry, resets):
        h, ys = module.apply(variables, carry, (ins, resets))
        return jnp.sum(ys ** 2) + jnp.sum(jnp.sin(h)), (h, ys)

    grad = functools.partial(jax.value_and_grad, argnums=(0, 1, 2), has_aux=True)
    (_, got), g_got = jax.jit(grad(functools.partial(loss, linen.ScannedRNN())))(
        variables, ins, carry, resets)
    (_, want), g_want = grad(functools.partial(loss, ScannedRNN()))(variables, ins, carry, resets)
    assert got[1].shape == (T, B, F) and got[0].shape == (B, F)
    assert jax.tree.structure(g_got) == jax.tree.structure(g_want)
    print("ScannedRNN vs original: outputs/h", max_abs(got, want), "grads", max_abs(g_got, g_want))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # PureJaxRL's dones may be 0/1 floats (its init does so)
    h_f, ys_f = linen.ScannedRNN().apply(variables, carry, (ins, resets.astype(np.float32)))
    np.testing.assert_array_equal(ys_f, got[1])
    # a tree with the cell at GRUCell_0 (the original's earlier version) is used as it is
    old = {"params": {"GRUCell_0": variables["params"]["GRUCell_1"]}}
    h_old, ys_old = linen.ScannedRNN().apply(old, carry, (ins, resets))
    np.testing.assert_array_equal(ys_old, got[1])


def test_scanned_rnn_under_vmap_and_jit():
    # N independent sequences (say, one per agent), the parameters shared
    rng = np.random.default_rng(11)
    N = 3
    ins = rng.normal(size=(N, T, B, F))
    resets = rng.random((N, T, B)) < 0.25
    carry = rng.normal(size=(N, B, F))
    variables = scanned_params(12)

    def run(module):
        def loss(variables, ins, carry, resets):
            h, ys = module.apply(variables, carry, (ins, resets))
            return jnp.sum(ys ** 3) + jnp.sum(h), (h, ys)

        def total(variables, ins, carry, resets):
            values, aux = jax.vmap(loss, in_axes=(None, 0, 0, 0))(variables, ins, carry, resets)
            return jnp.sum(values), aux
        return jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True))(
            variables, ins, carry, resets)

    (_, got), g_got = run(linen.ScannedRNN())
    (_, want), g_want = run(ScannedRNN())
    assert got[1].shape == (N, T, B, F)
    print("ScannedRNN vmap: outputs/h", max_abs(got, want), "grads", max_abs(g_got, g_want))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


# The same pattern over an LSTM: nn.scan over nn.OptimizedLSTMCell, carry (c, h) reset to zeros.
class ScannedLSTMPattern(nn.Module):
    @functools.partial(nn.scan, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=0, out_axes=0)
    @nn.compact
    def __call__(self, carry, x):
        ins, resets = x
        start = self.initialize_carry(ins.shape[0], ins.shape[1])
        carry = jax.tree.map(lambda s, c: jnp.where(resets[:, np.newaxis], s, c), start, carry)
        return nn.OptimizedLSTMCell(features=ins.shape[1])(carry, ins)

    @staticmethod
    def initialize_carry(batch_size, hidden_size):
        cell = nn.OptimizedLSTMCell(features=hidden_size)
        return cell.initialize_carry(jax.random.PRNGKey(0), (batch_size, hidden_size))


def test_scanned_lstm_equals_the_pattern_and_draws_its_tree():
    ins, resets, h = scanned_data(21)
    carry = (np.random.default_rng(22).normal(size=h.shape), h)
    key = jax.random.key(3)
    f32 = [np.asarray(a, np.float32) for a in (ins, resets)]
    c32 = tuple(np.asarray(a, np.float32) for a in carry)
    want = ScannedLSTMPattern().init(key, c32, tuple(f32))
    got = linen.ScannedLSTM().init(key, c32, tuple(f32))
    assert list(got["params"]) == ["OptimizedLSTMCell_1"]
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(np.testing.assert_array_equal, got, want)

    variables = jax.tree.map(lambda p: np.asarray(p, np.float64), perturbed(want, 23))

    def loss(module, variables, ins, carry, resets):
        (c, h), ys = module.apply(variables, carry, (ins, resets))
        return jnp.sum(ys ** 2) + jnp.sum(jnp.sin(h)) + jnp.sum(c ** 3), (c, h, ys)

    grad = functools.partial(jax.value_and_grad, argnums=(0, 1, 2), has_aux=True)
    (_, got_out), g_got = jax.jit(grad(functools.partial(loss, linen.ScannedLSTM())))(
        variables, ins, carry, resets)
    (_, want_out), g_want = grad(functools.partial(loss, ScannedLSTMPattern()))(
        variables, ins, carry, resets)
    print("ScannedLSTM vs the pattern:", max_abs(got_out, want_out), max_abs(g_got, g_want))
    for a, b in zip(got_out, want_out):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert jax.tree.structure(g_got) == jax.tree.structure(g_want)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # vmap over independent sequences, the parameters shared
    stacked = [np.stack([a, 0.5 * a]) for a in (ins, resets.astype(np.float64))]
    stacked_carry = tuple(np.stack([s, -s]) for s in carry)
    apply = jax.vmap(lambda i, c, r: linen.ScannedLSTM().apply(variables, c, (i, r > 0)))
    (c_v, h_v), ys_v = jax.jit(apply)(stacked[0], stacked_carry, stacked[1])
    for n in range(2):
        (c_n, h_n), ys_n = ScannedLSTMPattern().apply(
            variables, tuple(s[n] for s in stacked_carry), (stacked[0][n], resets))
        np.testing.assert_allclose(ys_v[n], ys_n, rtol=0, atol=1e-12)
        np.testing.assert_allclose(c_v[n], c_n, rtol=0, atol=1e-12)
    zeros = linen.ScannedLSTM.initialize_carry(B, F)
    assert all(z.shape == (B, F) and not np.any(np.asarray(z)) for z in zeros)
