"""The op's JAX primitives and their shapes.

Two pairs, as JAX's own cuDNN attention is built:

- ``forward_p`` / ``backward_p``: what ``reset_lstm`` binds. vmap batches them
  (``_batching``); they lower through ``custom_partitioning`` (``_sharding``), so a batch sharded
  over devices runs shard by shard.
- ``forward_kernel_p`` / ``backward_kernel_p``: one call of the kernels on whatever rows the
  device holds; they lower to the XLA FFI custom call (``_lowering``).

Operands are the present arguments only, in this order (``Config`` says which are present):
forward ``inputs, kernel, recurrent_kernel, bias, [resets], [mask], [h0, c0], [dropout]``;
backward ``inputs, kernel, recurrent_kernel, [resets], [mask], [h0, c0], [dropout], outputs,
gates, cells, d_outputs, d_h, d_c``. Results: forward ``outputs, h, c`` (+ ``gates, cells`` with
``training``), backward ``d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0, d_c0``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
from jax.extend.core import Primitive
from jax.core import ShapedArray

from resetlstm.jax import _ffi


class Config(NamedTuple):
    """The static part of a call: the layout and which optional arguments are present."""

    time_major: bool
    has_resets: bool
    has_mask: bool
    has_state: bool
    has_dropout: bool

    def optional_names(self):
        return ((("resets",) if self.has_resets else ())
                + (("mask",) if self.has_mask else ())
                + (("h0", "c0") if self.has_state else ())
                + (("dropout",) if self.has_dropout else ()))

    def forward_names(self):
        return ("inputs", "kernel", "recurrent_kernel", "bias") + self.optional_names()

    def backward_names(self):
        return (("inputs", "kernel", "recurrent_kernel") + self.optional_names()
                + ("outputs", "gates", "cells", "d_outputs", "d_h", "d_c"))

    def flags(self) -> dict:
        """The FFI call's attributes."""
        return dict(self._asdict())


FORWARD_RESULTS = ("outputs", "h", "c", "gates", "cells")
BACKWARD_RESULTS = ("d_inputs", "d_kernel", "d_recurrent_kernel", "d_bias", "d_h0", "d_c0")

# What each operand or result holds per axis, for batching and sharding: "b" batch, "t" time,
# "i" input features, "h" hidden units, "g" the 4 gates' units (4H). Batch-major layout;
# time_major swaps "b" and "t".
AXES = {
    "inputs": "bti", "kernel": "ig", "recurrent_kernel": "hg", "bias": "g", "resets": "bt",
    "mask": "bt", "h0": "bh", "c0": "bh", "dropout": "bh", "outputs": "bth", "gates": "btg",
    "cells": "bth", "d_outputs": "bth", "d_h": "bh", "d_c": "bh", "h": "bh", "c": "bh",
    "d_inputs": "bti", "d_kernel": "ig", "d_recurrent_kernel": "hg", "d_bias": "g",
    "d_h0": "bh", "d_c0": "bh",
}
WEIGHTS = ("kernel", "recurrent_kernel", "bias")


def axes(name: str, time_major: bool) -> str:
    a = AXES[name]
    if time_major and a.startswith("bt"):
        a = "tb" + a[2:]
    return a


def dims(cfg: Config, names, avals) -> tuple:
    """(B, T, I, H) of a call with operands `names`, validated (the messages every binding
    gives)."""
    named = dict(zip(names, avals))
    shape = lambda n: tuple(named[n].shape) if n in named else None  # noqa: E731
    return _ffi.check_shapes(shape("inputs"), shape("kernel"), shape("recurrent_kernel"),
                             shape("bias"), shape("resets"), shape("mask"), shape("h0"),
                             shape("c0"), shape("dropout"), cfg.time_major)


def result_shapes(names, cfg: Config, B, T, I, H) -> list:
    size = {"b": B, "t": T, "i": I, "h": H, "g": 4 * H}
    return [tuple(size[a] for a in axes(n, cfg.time_major)) for n in names]


def _forward_abstract(*avals, cfg: Config, training: bool):
    B, T, I, H = dims(cfg, cfg.forward_names(), avals)
    names = FORWARD_RESULTS if training else FORWARD_RESULTS[:3]
    return [ShapedArray(s, avals[0].dtype) for s in result_shapes(names, cfg, B, T, I, H)]


def _backward_abstract(*avals, cfg: Config):
    B, T, I, H = dims(cfg, cfg.backward_names(), avals)
    return [ShapedArray(s, avals[0].dtype)
            for s in result_shapes(BACKWARD_RESULTS, cfg, B, T, I, H)]


def _primitive(name, abstract, takes_training: bool):
    p = Primitive(name)
    p.multiple_results = True
    p.def_abstract_eval(abstract)
    # Outside jit (eager calls) a primitive runs as its own small jitted computation, compiled
    # once per static configuration and shapes.
    if takes_training:
        run = jax.jit(lambda *args, cfg, training: p.bind(*args, cfg=cfg, training=training),
                      static_argnames=("cfg", "training"))
    else:
        run = jax.jit(lambda *args, cfg: p.bind(*args, cfg=cfg), static_argnames=("cfg",))
    p.def_impl(run)
    return p


forward_p = _primitive("resetlstm_forward", _forward_abstract, takes_training=True)
backward_p = _primitive("resetlstm_backward", _backward_abstract, takes_training=False)
forward_kernel_p = _primitive("resetlstm_forward_kernel", _forward_abstract,
                              takes_training=True)
backward_kernel_p = _primitive("resetlstm_backward_kernel", _backward_abstract,
                               takes_training=False)
