"""Lowering of the kernel primitives to the XLA FFI custom calls (csrc/jax/ffi_args.h has
the call layout): absent optional arguments become zero-size placeholders, half dtypes without
kernels on the platform are widened to float32 around the call (``_ffi.kernel_dtype``), and
the call gets one more result than the primitive: its workspace, a uint8 buffer that XLA
allocates with the computation's other temporaries (so the handlers allocate nothing, on CPU
and GPU alike; the FFI's scratch allocator exists only on GPUs)."""
from __future__ import annotations

import functools

import jax
import numpy as np
from jax.core import ShapedArray
from jax.extend.mlir import ir
from jax.extend.mlir.dialects import stablehlo as hlo
from jax.interpreters import mlir

from resetlstm.jax import _ffi
from resetlstm.jax._primitives import (CELLS, Config, backward_kernel_p, dims, forward_kernel_p)

# The custom calls' operands (ffi_args.h), every optional one present or a placeholder.
_OPTIONAL = ("resets", "mask", "h0", "c0", "dropout")
_LAYOUT = {
    "forward": ("inputs", "kernel", "recurrent_kernel", "bias") + _OPTIONAL,
    "backward": (("inputs", "kernel", "recurrent_kernel") + _OPTIONAL
                 + ("outputs", "gates", "cells", "d_outputs", "d_h", "d_c")),
}
# The custom calls' results (before the workspace); a cell without a cell state gets [0]
# placeholders for c, cells, d_c0, as the forward without training does for gates and cells.
_RESULTS = {
    "forward": ("outputs", "h", "c", "gates", "cells"),
    "backward": ("d_inputs", "d_kernel", "d_recurrent_kernel", "d_bias", "d_h0", "d_c0"),
}


def _convert(value, aval, dtype):
    if aval.dtype == dtype:
        return value
    return hlo.convert(ir.RankedTensorType.get(aval.shape, mlir.dtype_to_ir_type(np.dtype(dtype))),
                       value)


def _allow_tf32() -> bool:
    """float32 GEMMs on CUDA may use TF32 unless JAX's default matmul precision asks for full
    float32 ("highest" / "float32"), as XLA's own dots do."""
    precision = jax.config.jax_default_matmul_precision
    return str(precision).lower() not in ("highest", "float32")


def _lower(ctx, *operands, platform: str, cfg: Config, direction: str, training=None):
    names = cfg.forward_names() if direction == "forward" else cfg.backward_names()
    dtype = ctx.avals_in[0].dtype
    kdtype = _ffi.kernel_dtype(platform, dtype)
    present = dict(zip(names, zip(operands, ctx.avals_in)))
    values, avals = [], []

    for name in _LAYOUT[direction]:
        kind = "bool" if name in ("resets", "mask") else "float"
        if name in present:
            value, aval = present[name]
            if kind == "float":
                value, aval = _convert(value, aval, kdtype), aval.update(dtype=kdtype)
        else:  # an absent optional argument: a zero-size placeholder
            ph = np.zeros((0,), np.bool_ if kind == "bool" else kdtype)
            value, aval = mlir.ir_constant(ph), ShapedArray(ph.shape, ph.dtype)
        values.append(value)
        avals.append(aval)

    shape = dims(cfg, names, ctx.avals_in)
    flag = training if direction == "forward" else cfg.has_mask
    nbytes = _ffi.workspace_bytes(platform, direction, kdtype, shape, cfg.time_major, flag,
                                  CELLS[cfg.cell][0])
    results = (cfg.forward_results(training) if direction == "forward"
               else cfg.backward_results())
    produced = dict(zip(results, ctx.avals_out))
    avals_out = [produced[n].update(dtype=kdtype) if n in produced
                 else ShapedArray((0,), kdtype) for n in _RESULTS[direction]]
    avals_out.append(ShapedArray((nbytes,), np.uint8))
    attrs = cfg.flags()
    if direction == "forward":
        attrs["training"] = bool(training)
    if platform == "cuda":
        attrs["allow_tf32"] = _allow_tf32()
    lowering = jax.ffi.ffi_lowering(_ffi.FORWARD if direction == "forward" else _ffi.BACKWARD)
    outs = dict(zip(_RESULTS[direction],
                    lowering(ctx.replace(avals_in=avals, avals_out=avals_out), *values,
                             **attrs)))
    return [_convert(outs[n], a.update(dtype=kdtype), a.dtype)
            for n, a in zip(results, ctx.avals_out)]


def _forward_lowering(ctx, *operands, cfg: Config, training: bool, platform: str):
    return _lower(ctx, *operands, platform=platform, cfg=cfg, direction="forward",
                  training=training)


def _backward_lowering(ctx, *operands, cfg: Config, platform: str):
    return _lower(ctx, *operands, platform=platform, cfg=cfg, direction="backward")


for _platform in _ffi.PLATFORMS:
    mlir.register_lowering(forward_kernel_p,
                           functools.partial(_forward_lowering, platform=_platform),
                           platform=_platform)
    mlir.register_lowering(backward_kernel_p,
                           functools.partial(_backward_lowering, platform=_platform),
                           platform=_platform)
