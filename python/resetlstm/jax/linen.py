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
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

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
