"""Flax (linen) module for the recurrent-RL pattern: a whole sequence with per-step resets.

PureJaxRL-style agents scan an LSTM cell over time and reset the carry where an episode
starts::

    def step(carry, x_and_reset):
        x, reset = x_and_reset
        carry = jax.tree.map(lambda init, c: jnp.where(reset[:, None], init, c),
                             initial_carry, carry)
        return cell(carry, x)
    carry, outputs = jax.lax.scan(step, carry, (inputs, resets))

``ResetLSTM(features)(carry, (inputs, resets))`` returns the same ``(carry, outputs)`` in one
fused call (``resetlstm.jax.reset_lstm``), with ``initial_carry`` the zero state (what
``initialize_carry`` gives with Flax's default ``carry_init``). Like the scan, it is
time-major by default: inputs [T, B, I], resets [T, B], outputs [T, B, H]; the carry is
``(c, h)``, each [B, H], in Flax's order.

Parameters are in Keras layout, gates i, f, c, o: ``kernel`` [I, 4H], ``recurrent_kernel``
[H, 4H], ``bias`` [4H]. ``params_from_optimized_lstm_cell`` converts the parameters of
``flax.linen.OptimizedLSTMCell`` (or ``LSTMCell``, which has the same ones).

The GRU: ``ResetGRU(features)(h, (inputs, resets))`` returns ``(h_T, outputs)`` with one fused
``resetlstm.jax.reset_gru`` call; the carry is h alone, as ``flax.linen.GRUCell``'s. Its
parameters are in Keras layout, gates z, r, h: ``kernel`` [I, 3H], ``recurrent_kernel``
[H, 3H], ``bias`` [2, 3H] (input and recurrent bias); ``params_from_gru_cell`` converts
``GRUCell``'s. ``ScannedRNN`` is a drop-in replacement for PureJaxRL's module of that name
(``nn.scan`` over ``nn.GRUCell``): the same call, the same parameter tree, the same initial
values for the same key; ``ScannedLSTM`` is the same pattern over ``nn.OptimizedLSTMCell``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from resetlstm.jax._gru_op import reset_gru
from resetlstm.jax._op import reset_lstm

_GATES = ("i", "f", "g", "o")  # Flax's names of Keras' i, f, c, o


def params_from_optimized_lstm_cell(cell_params) -> dict:
    """``{'kernel', 'recurrent_kernel', 'bias'}`` (Keras layout) from the parameters of a
    ``flax.linen.OptimizedLSTMCell`` or ``LSTMCell``: ``i{g}/kernel`` [I, H] (no bias) and
    ``h{g}/kernel`` [H, H], ``h{g}/bias`` [H] for the gates g = i, f, g, o, concatenated
    along the last axis in that order. Accepts the cell's ``params`` collection or the
    variables dict holding it."""
    p = cell_params.get("params", cell_params)
    missing = [f"{side}{g}" for side in "ih" for g in _GATES if f"{side}{g}" not in p]
    if missing:
        raise ValueError("params_from_optimized_lstm_cell: expected the parameters of a "
                         f"flax.linen.OptimizedLSTMCell (ii, if, ..., ho), missing {missing}")
    return {
        "kernel": jnp.concatenate([p[f"i{g}"]["kernel"] for g in _GATES], axis=-1),
        "recurrent_kernel": jnp.concatenate([p[f"h{g}"]["kernel"] for g in _GATES], axis=-1),
        "bias": jnp.concatenate([p[f"h{g}"]["bias"] for g in _GATES], axis=-1),
    }


def _blockwise(init: Callable, blocks: int) -> Callable:
    """An initializer of [n, blocks * m] that fills each [n, m] block with `init` (Flax's
    cells initialize each gate's recurrent kernel as its own orthogonal matrix)."""
    def initializer(key, shape, dtype=jnp.float32):
        keys = jax.random.split(key, blocks)
        width = shape[-1] // blocks
        return jnp.concatenate([init(k, shape[:-1] + (width,), dtype) for k in keys], axis=-1)
    return initializer


class ResetLSTM(nn.Module):
    """An LSTM over a whole sequence whose state resets to zero where ``resets`` is True.

    Attributes:
      features: hidden size H.
      time_major: inputs [T, B, I] and resets [T, B] (default, as ``lax.scan`` takes them);
        False: [B, T, I] and [B, T].
      kernel_init, recurrent_kernel_init, bias_init: as ``flax.linen.OptimizedLSTMCell``'s
        (lecun_normal; orthogonal per gate; zeros), so that a fresh module draws from the same
        distributions.
      dtype: the computation dtype (default: promoted from inputs, carry and parameters);
        param_dtype: the parameters' dtype.

    ``__call__(carry, xs)``: ``carry`` = (c, h), each [B, H]; ``xs`` = (inputs, resets) or
    inputs alone (no resets). Returns ``((c_T, h_T), outputs)``.
    """

    features: int
    time_major: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    recurrent_kernel_init: Callable = _blockwise(nn.initializers.orthogonal(), 4)
    bias_init: Callable = nn.initializers.zeros_init()
    dtype: Optional[Any] = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, xs):
        inputs, resets = xs if isinstance(xs, (tuple, list)) else (xs, None)
        c, h = carry
        H = self.features
        kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], 4 * H),
                            self.param_dtype)
        recurrent_kernel = self.param("recurrent_kernel", self.recurrent_kernel_init,
                                      (H, 4 * H), self.param_dtype)
        bias = self.param("bias", self.bias_init, (4 * H,), self.param_dtype)
        inputs, kernel, recurrent_kernel, bias, c, h = promote_dtype(
            inputs, kernel, recurrent_kernel, bias, c, h, dtype=self.dtype)
        outputs, h, c = reset_lstm(inputs, kernel, recurrent_kernel, bias, resets=resets,
                                   initial_state=(h, c), time_major=self.time_major)
        return (c, h), outputs

    @nn.nowrap
    def initialize_carry(self, rng, input_shape) -> tuple:
        """The zero carry (c, h), as Flax's cells: `input_shape` is one step's input shape
        ([B, I]; every axis but the last is batch)."""
        del rng
        zeros = jnp.zeros(tuple(input_shape[:-1]) + (self.features,), self.param_dtype)
        return zeros, zeros


_GRU_LEAVES = ("ir/kernel", "ir/bias", "iz/kernel", "iz/bias", "in/kernel", "in/bias",
               "hr/kernel", "hz/kernel", "hn/kernel", "hn/bias")


def params_from_gru_cell(cell_params) -> dict:
    """``{'kernel', 'recurrent_kernel', 'bias'}`` (Keras layout, ``reset_after``) from the
    parameters of a ``flax.linen.GRUCell``: the input dense layers ``iz, ir, in`` (kernel
    [I, H] and bias [H] each) and the state ones ``hz, hr`` (kernel [H, H], no bias) and
    ``hn`` (kernel [H, H], bias [H]).

    ``GRUCell`` computes r = σ(ir(x) + hr(h)), z = σ(iz(x) + hz(h)),
    n = tanh(in(x) + r * hn(h)), h' = (1 - z) * n + z * h, which is the Keras GRU with
    ``kernel`` = [iz | ir | in], ``recurrent_kernel`` = [hz | hr | hn] (concatenated along the
    last axis, gate order z, r, h) and ``bias`` = [[b_iz, b_ir, b_in], [0, 0, b_hn]]: the
    recurrent biases of z and r are zeros (GRUCell has none). Differentiable, so gradients
    flow back to the cell's parameters. Accepts the cell's ``params`` collection or the
    variables dict holding it."""
    p = cell_params.get("params", cell_params)
    missing = [leaf for leaf in _GRU_LEAVES
               if leaf.split("/")[0] not in p or leaf.split("/")[1] not in p[leaf.split("/")[0]]]
    if missing:
        raise ValueError("params_from_gru_cell: expected the parameters of a flax.linen.GRUCell "
                         f"({', '.join(_GRU_LEAVES)}), missing {missing}")
    b_hn = p["hn"]["bias"]
    zeros = jnp.zeros_like(b_hn)
    return {
        "kernel": jnp.concatenate([p[g]["kernel"] for g in ("iz", "ir", "in")], axis=-1),
        "recurrent_kernel": jnp.concatenate([p[g]["kernel"] for g in ("hz", "hr", "hn")],
                                            axis=-1),
        "bias": jnp.stack([jnp.concatenate([p[g]["bias"] for g in ("iz", "ir", "in")]),
                           jnp.concatenate([zeros, zeros, b_hn])]),
    }


class ResetGRU(nn.Module):
    """A GRU over a whole sequence whose state resets to zero where ``resets`` is True.

    The cell is ``flax.linen.GRUCell``'s (Keras' ``reset_after`` form):
    z = σ(x W_z + b_z + h U_z + bu_z), r = σ(x W_r + b_r + h U_r + bu_r),
    n = tanh(x W_h + b_h + r * (h U_h + bu_h)), h' = z * h + (1 - z) * n.

    Attributes:
      features: hidden size H.
      time_major: inputs [T, B, I] and resets [T, B] (default, as ``lax.scan`` takes them);
        False: [B, T, I] and [B, T].
      kernel_init, recurrent_kernel_init, bias_init: as ``flax.linen.GRUCell``'s
        (lecun_normal; orthogonal per gate; zeros), so that a fresh module draws from the same
        distributions.
      dtype: the computation dtype (default: promoted from inputs, carry and parameters);
        param_dtype: the parameters' dtype.

    Parameters (Keras layout, gates z, r, h): ``kernel`` [I, 3H], ``recurrent_kernel``
    [H, 3H], ``bias`` [2, 3H] (the input bias row, then the recurrent bias row).

    ``__call__(carry, xs)``: ``carry`` = h [B, H]; ``xs`` = (inputs, resets) or inputs alone
    (no resets). Returns ``(h_T, outputs)``, outputs [T, B, H] ([B, T, H] if not
    ``time_major``).
    """

    features: int
    time_major: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    recurrent_kernel_init: Callable = _blockwise(nn.initializers.orthogonal(), 3)
    bias_init: Callable = nn.initializers.zeros_init()
    dtype: Optional[Any] = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, xs):
        inputs, resets = xs if isinstance(xs, (tuple, list)) else (xs, None)
        H = self.features
        kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], 3 * H),
                            self.param_dtype)
        recurrent_kernel = self.param("recurrent_kernel", self.recurrent_kernel_init,
                                      (H, 3 * H), self.param_dtype)
        bias = self.param("bias", self.bias_init, (2, 3 * H), self.param_dtype)
        inputs, kernel, recurrent_kernel, bias, h = promote_dtype(
            inputs, kernel, recurrent_kernel, bias, carry, dtype=self.dtype)
        outputs, h = reset_gru(inputs, kernel, recurrent_kernel, bias, resets=resets,
                               initial_state=h, time_major=self.time_major)
        return h, outputs

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        """The zero carry h, as ``flax.linen.GRUCell``'s: `input_shape` is one step's input
        shape ([B, I]; every axis but the last is batch)."""
        del rng
        return jnp.zeros(tuple(input_shape[:-1]) + (self.features,), self.param_dtype)


# Where the GRUCell's parameters sit in a ScannedRNN's tree: PureJaxRL's module builds a
# throwaway ``nn.GRUCell`` in ``initialize_carry``, called inside its compact ``__call__``, which
# takes the name GRUCell_0, so the cell that runs is GRUCell_1. Its earlier version, written for
# Flax's former static ``nn.GRUCell.initialize_carry``, builds no such cell: its cell is GRUCell_0.
_SCANNED_CELL_NAMES = ("GRUCell_1", "GRUCell_0")


class ScannedRNN(nn.Module):
    """A drop-in replacement for PureJaxRL's ``ScannedRNN`` (``nn.scan`` over ``nn.GRUCell``
    with the carry reset to zeros where an episode starts) that runs the whole sequence in one
    fused ``reset_gru`` call.

    ``__call__(carry, x)``: ``carry`` = h [B, F]; ``x`` = (ins [T, B, F], resets [T, B], bool
    or 0/1). The hidden size is F, ``ins.shape[-1]``, as in the original. Returns
    ``(h_T, ys)``, ys [T, B, F]; a reset at (t, b) zeroes row b's state before step t.

    Parameters: the tree of the original, ``{'GRUCell_1': {'ir', 'iz', 'in', 'hr', 'hz', 'hn'}}``
    (the cell's own dense layers), so its checkpoints load unchanged; a tree that holds
    ``GRUCell_0`` instead (the original's earlier version, for Flax's former static
    ``GRUCell.initialize_carry``) is used as it is. ``init``
    creates them by running ``nn.GRUCell`` once under the same name, so it draws the same values
    as the original for the same key (inside a parent, the class name ``ScannedRNN`` gives the
    same auto-name and so the same RNG stream). Each call converts them with
    ``params_from_gru_cell``; gradients come back in the same tree.

    Attributes (not in the original; the defaults are ``nn.GRUCell``'s): dtype, param_dtype.
    """

    dtype: Optional[Any] = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, x):
        ins, resets = x
        held = self.variables.get("params", {})
        name = next((n for n in _SCANNED_CELL_NAMES if n in held), _SCANNED_CELL_NAMES[0])
        cell = nn.GRUCell(features=ins.shape[-1], dtype=self.dtype,
                          param_dtype=self.param_dtype, name=name)
        cell_params = cell.variables.get("params")
        if not cell_params:  # initializing: create them as the original does
            cell(carry, ins[0])
            cell_params = cell.variables["params"]
        p = params_from_gru_cell(cell_params)
        ins, kernel, recurrent_kernel, bias, h = promote_dtype(
            ins, p["kernel"], p["recurrent_kernel"], p["bias"], carry, dtype=self.dtype)
        ys, h = reset_gru(ins, kernel, recurrent_kernel, bias, resets=resets, initial_state=h,
                          time_major=True)
        return h, ys

    @staticmethod
    def initialize_carry(batch_size, hidden_size):
        """Zeros [batch_size, hidden_size] float32, what the original returns (``nn.GRUCell``'s
        default ``carry_init`` and ``param_dtype``)."""
        return jnp.zeros((batch_size, hidden_size), jnp.float32)


class ScannedLSTM(nn.Module):
    """``ScannedRNN`` with an LSTM: the PureJaxRL pattern written over
    ``nn.OptimizedLSTMCell`` (``nn.scan``, the carry reset to zeros where an episode starts, a
    static ``initialize_carry``) as one fused ``reset_lstm`` call.

    ``__call__(carry, x)``: ``carry`` = (c, h), each [B, F] (Flax's order); ``x`` = (ins
    [T, B, F], resets [T, B], bool or 0/1). The hidden size is F, ``ins.shape[-1]``. Returns
    ``((c_T, h_T), ys)``, ys [T, B, F].

    Parameters: the tree that pattern makes, ``{'OptimizedLSTMCell_1': {'ii', 'if', 'ig',
    'io', 'hi', 'hf', 'hg', 'ho'}}`` (its ``initialize_carry`` builds a throwaway cell inside
    ``__call__``, which takes the name ``OptimizedLSTMCell_0``); a tree with the cell at
    ``OptimizedLSTMCell_0`` is used as it is. ``init`` runs ``nn.OptimizedLSTMCell`` once under
    that name, so it draws the same values for the same key; each call converts them with
    ``params_from_optimized_lstm_cell``.
    """

    dtype: Optional[Any] = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, x):
        ins, resets = x
        held = self.variables.get("params", {})
        names = ("OptimizedLSTMCell_1", "OptimizedLSTMCell_0")
        name = next((n for n in names if n in held), names[0])
        cell = nn.OptimizedLSTMCell(features=ins.shape[-1], dtype=self.dtype,
                                    param_dtype=self.param_dtype, name=name)
        cell_params = cell.variables.get("params")
        if not cell_params:  # initializing: create them as the pattern does
            cell(carry, ins[0])
            cell_params = cell.variables["params"]
        p = params_from_optimized_lstm_cell(cell_params)
        c, h = carry
        ins, kernel, recurrent_kernel, bias, c, h = promote_dtype(
            ins, p["kernel"], p["recurrent_kernel"], p["bias"], c, h, dtype=self.dtype)
        ys, h, c = reset_lstm(ins, kernel, recurrent_kernel, bias, resets=resets,
                              initial_state=(h, c), time_major=True)
        return (c, h), ys

    @staticmethod
    def initialize_carry(batch_size, hidden_size):
        """(c, h) zeros [batch_size, hidden_size] float32, as ``nn.OptimizedLSTMCell``'s."""
        zeros = jnp.zeros((batch_size, hidden_size), jnp.float32)
        return zeros, zeros
