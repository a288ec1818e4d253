"""The op's JAX primitives and their shapes.

Two pairs, as JAX's own cuDNN attention is built:

- ``forward_p`` / ``backward_p``: what ``reset_lstm`` binds. vmap batches them
  (``_batching``); they lower through ``custom_partitioning`` (``_sharding``), so a batch sharded
  over devices runs shard by shard.
- ``forward_kernel_p`` / ``backward_kernel_p``: one call of the kernels on whatever rows the
  device holds; they lower to the XLA FFI custom call (``_lowering``).

Operands are the present arguments only, in this order (``Config`` says which are present and
which cell runs; the GRU has no c0, c, cells, d_c, d_c0): forward ``inputs, kernel,
recurrent_kernel, bias, [resets], [mask], [h0, c0], [dropout]``; backward ``inputs, kernel,
recurrent_kernel, [resets], [mask], [h0, c0], [dropout], outputs, gates, cells, d_outputs, d_h,
d_c``. Results: forward ``outputs, h, c`` (+ ``gates, cells`` with ``training``), backward
``d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0, d_c0``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from jax.extend.core import Primitive
from jax.core import ShapedArray

from resetlstm.jax import _ffi


# The cells: their FFI attribute (cpu::CellType), gates per unit, saved activations per unit,
# bias rows, whether they have a cell state.
CELLS = {"lstm": (0, 4, 4, 1, True), "gru": (1, 3, 4, 2, False),
         "gru_reset_before": (2, 3, 3, 1, False)}


class Config(NamedTuple):
    """The static part of a call: the cell, the layout and which optional arguments are
    present."""

    time_major: bool
    has_resets: bool
    has_mask: bool
    has_state: bool
    has_dropout: bool
    cell: str = "lstm"

    @property
    def cell_state(self) -> bool:
        return CELLS[self.cell][4]

    def optional_names(self):
        state = ("h0", "c0") if self.cell_state else ("h0",)
        return ((("resets",) if self.has_resets else ())
                + (("mask",) if self.has_mask else ())
                + (state if self.has_state else ())
                + (("dropout",) if self.has_dropout else ()))

    def forward_names(self):
        return ("inputs", "kernel", "recurrent_kernel", "bias") + self.optional_names()

    def backward_names(self):
        saved = ("outputs", "gates", "cells", "d_outputs", "d_h", "d_c") if self.cell_state \
            else ("outputs", "gates", "d_outputs", "d_h")
        return ("inputs", "kernel", "recurrent_kernel") + self.optional_names() + saved

    def forward_results(self, training: bool):
        names = ("outputs", "h", "c", "gates", "cells") if self.cell_state \
            else ("outputs", "h", "gates")
        return names if training else names[:len(names) - (2 if self.cell_state else 1)]

    def backward_results(self):
        names = ("d_inputs", "d_kernel", "d_recurrent_kernel", "d_bias", "d_h0")
        return names + (("d_c0",) if self.cell_state else ())

    def axes(self, name: str) -> str:
        """What each axis of an operand or result holds: "b" batch, "t" time, "i" input
        features, "h" hidden units, "g" the gates' units (G*H), "s" the saved activations'
        (S*H), "r" the GRU's two bias rows. Time-major swaps "b" and "t"."""
        a = AXES[name]
        if name in ("bias", "d_bias") and CELLS[self.cell][3] > 1:
            a = "r" + a
        if self.time_major and a.startswith("bt"):
            a = "tb" + a[2:]
        return a

    def sizes(self, B, T, I, H) -> dict:
        _, gates, saved, rows, _ = CELLS[self.cell]
        return {"b": B, "t": T, "i": I, "h": H, "g": gates * H, "s": saved * H, "r": rows}

    def flags(self) -> dict:
        """The FFI call's attributes."""
        flags = dict(self._asdict())
        flags["cell"] = np.int32(CELLS[self.cell][0])
        return flags


AXES = {
    "inputs": "bti", "kernel": "ig", "recurrent_kernel": "hg", "bias": "g", "resets": "bt",
    "mask": "bt", "h0": "bh", "c0": "bh", "dropout": "bh", "outputs": "bth", "gates": "bts",
    "cells": "bth", "d_outputs": "bth", "d_h": "bh", "d_c": "bh", "h": "bh", "c": "bh",
    "d_inputs": "bti", "d_kernel": "ig", "d_recurrent_kernel": "hg", "d_bias": "g",
    "d_h0": "bh", "d_c0": "bh",
}
WEIGHTS = ("kernel", "recurrent_kernel", "bias")


def dims(cfg: Config, names, avals) -> tuple:
    """(B, T, I, H) of a call with operands `names`, validated (the messages every binding
    gives)."""
    named = dict(zip(names, avals))
    shape = lambda n: tuple(named[n].shape) if n in named else None  # noqa: E731
    return _ffi.check_shapes(shape("inputs"), shape("kernel"), shape("recurrent_kernel"),
                             shape("bias"), shape("resets"), shape("mask"), shape("h0"),
                             shape("c0"), shape("dropout"), cfg.time_major,
                             CELLS[cfg.cell][0])


def result_shapes(names, cfg: Config, B, T, I, H) -> list:
    size = cfg.sizes(B, T, I, H)
    return [tuple(size[a] for a in cfg.axes(n)) for n in names]


def _forward_abstract(*avals, cfg: Config, training: bool):
    B, T, I, H = dims(cfg, cfg.forward_names(), avals)
    names = cfg.forward_results(training)
    return [ShapedArray(s, avals[0].dtype) for s in result_shapes(names, cfg, B, T, I, H)]


def _backward_abstract(*avals, cfg: Config):
    B, T, I, H = dims(cfg, cfg.backward_names(), avals)
    return [ShapedArray(s, avals[0].dtype)
            for s in result_shapes(cfg.backward_results(), cfg, B, T, I, H)]


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
