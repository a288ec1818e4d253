"""Past one device: ``forward_p`` / ``backward_p`` lower through ``custom_partitioning``, so that
under ``jax.jit`` with the batch axis sharded over devices each device runs the kernels on its
own rows: no all-gather of the inputs. Only the batch axis may stay sharded (rows never
interact); every other axis, and the weights, are replicated for the call (XLA reshards an
argument sharded otherwise). The backward sums the weight gradients of the shards with one
psum over the batch's mesh axes. A batch that does not divide evenly over its devices is
gathered and run whole (a padded shard's rows would enter the weight gradients).

On one device (or inside ``shard_map``, where every mesh axis is manual) the partitioning
call lowers straight to the kernels.
"""
from __future__ import annotations

import math

import jax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.interpreters import mlir
from jax.sharding import NamedSharding, PartitionSpec

from resetlstm.jax._primitives import (Config, WEIGHTS, backward_kernel_p, backward_p,
                                       forward_kernel_p, forward_p)


def _batch_spec(cfg: Config, mesh, arg_shapes):
    """The mesh axes the batch of `inputs` (operand 0) is sharded over, or None."""
    sharding = arg_shapes[0].sharding
    if not isinstance(sharding, NamedSharding):
        return None
    spec = tuple(sharding.spec) + (None,) * (3 - len(sharding.spec))
    batch = spec[1 if cfg.time_major else 0]
    if batch is None:
        return None
    names = batch if isinstance(batch, tuple) else (batch,)
    shards = math.prod(mesh.shape[n] for n in names)
    B = arg_shapes[0].shape[1 if cfg.time_major else 0]
    return batch if shards > 1 and B % shards == 0 else None


def _shardings(mesh, names, cfg: Config, batch):
    """Each array sharded along its batch axis only."""
    return tuple(NamedSharding(mesh, PartitionSpec(*(batch if a == "b" else None
                                                      for a in cfg.axes(n))))
                 for n in names)


def _rule(names, results, cfg: Config) -> str:
    """The Shardy sharding rule: which axes of the operands and results are the same factor."""
    def spec(n):
        return " ".join(cfg.axes(n))
    return ", ".join(spec(n) for n in names) + " -> " + ", ".join(spec(n) for n in results)


# ---- forward ------------------------------------------------------------------------------------

def _forward_kernels(cfg, training, *args):
    return tuple(forward_kernel_p.bind(*args, cfg=cfg, training=training))


_forward = custom_partitioning(_forward_kernels, static_argnums=(0, 1))


def _forward_infer(cfg, training, mesh, arg_shapes, result_shape):
    return _shardings(mesh, cfg.forward_results(training), cfg,
                      _batch_spec(cfg, mesh, arg_shapes))


def _forward_partition(cfg, training, mesh, arg_shapes, result_shape):
    batch = _batch_spec(cfg, mesh, arg_shapes)

    def lower(*args):
        return _forward_kernels(cfg, training, *args)

    return (mesh, lower, _shardings(mesh, cfg.forward_results(training), cfg, batch),
            _shardings(mesh, cfg.forward_names(), cfg, batch))


def _forward_rule(cfg, training, mesh, value_types, result_types):
    return _rule(cfg.forward_names(), cfg.forward_results(training), cfg)


_forward.def_partition(partition=_forward_partition,
                       infer_sharding_from_operands=_forward_infer,
                       sharding_rule=_forward_rule)


# ---- backward -----------------------------------------------------------------------------------

def _backward_kernels(cfg, *args):
    return tuple(backward_kernel_p.bind(*args, cfg=cfg))


_backward = custom_partitioning(_backward_kernels, static_argnums=(0,))


def _backward_infer(cfg, mesh, arg_shapes, result_shape):
    return _shardings(mesh, cfg.backward_results(), cfg, _batch_spec(cfg, mesh, arg_shapes))


def _backward_partition(cfg, mesh, arg_shapes, result_shape):
    batch = _batch_spec(cfg, mesh, arg_shapes)

    def lower(*args):
        grads = list(_backward_kernels(cfg, *args))
        if batch is not None:  # each shard's weight gradients cover its rows only
            for k, name in enumerate(cfg.backward_results()):
                if name[2:] in WEIGHTS:
                    grads[k] = jax.lax.psum(grads[k], batch)
        return tuple(grads)

    return (mesh, lower, _shardings(mesh, cfg.backward_results(), cfg, batch),
            _shardings(mesh, cfg.backward_names(), cfg, batch))


def _backward_rule(cfg, mesh, value_types, result_types):
    return _rule(cfg.backward_names(), cfg.backward_results(), cfg)


_backward.def_partition(partition=_backward_partition,
                        infer_sharding_from_operands=_backward_infer,
                        sharding_rule=_backward_rule)


# ---- the public primitives lower through the partitioning calls ----------------------------------

mlir.register_lowering(
    forward_p,
    lambda ctx, *args, cfg, training: mlir.lower_fun(
        lambda *a: _forward(cfg, training, *a), multiple_results=True)(ctx, *args))
mlir.register_lowering(
    backward_p,
    lambda ctx, *args, cfg: mlir.lower_fun(
        lambda *a: _backward(cfg, *a), multiple_results=True)(ctx, *args))

try:  # the partitioning call needs the device assignment while lowering (as JAX's cuDNN ops)
    from jax._src import dispatch as _dispatch

    _dispatch.prim_requires_devices_during_lowering.update((forward_p, backward_p))
except (ImportError, AttributeError):  # pragma: no cover - a JAX without this private set
    pass
