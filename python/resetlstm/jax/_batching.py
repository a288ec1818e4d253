"""vmap of the op.

Forward: with the weights unmapped, the mapped axis (size N) is folded into the batch (rows
never interact): every mapped data argument [.., N, B, ..] becomes [.., N*B, ..] (an unmapped
one is broadcast to the N instances first), the kernels run once, and the results are split
back. Backward: each instance needs weight gradients over its own rows, which one call over
N*B rows cannot give, so the kernels run once per instance (``lax.map``); the same when the
weights themselves are mapped (an ensemble of models), forward included. Both compose with
jit and grad (vmap of grad, grad of vmap).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.interpreters import batching

from resetlstm.jax._primitives import WEIGHTS, backward_p, forward_p


def _size(args, bdims):
    return next(x.shape[d] for x, d in zip(args, bdims) if d is not None)


def _per_instance(primitive, args, bdims, params):
    """Runs `primitive` once per mapped instance; results mapped along axis 0."""
    mapped = [jnp.moveaxis(x, d, 0) for x, d in zip(args, bdims) if d is not None]

    def one(slices):
        it = iter(slices)
        return primitive.bind(*(next(it) if d is not None else x for x, d in zip(args, bdims)),
                              **params)

    outs = jax.lax.map(one, mapped)
    return list(outs), [0] * len(outs)


def _forward_batch(args, bdims, *, cfg, training):
    names = cfg.forward_names()
    if any(d is not None for n, d in zip(names, bdims) if n in WEIGHTS):
        return _per_instance(forward_p, args, bdims, dict(cfg=cfg, training=training))
    n = _size(args, bdims)
    folded = []
    for name, x, d in zip(names, args, bdims):
        if name in WEIGHTS:
            folded.append(x)
            continue
        b = cfg.axes(name).index("b")
        if d is None:
            x, d = jnp.broadcast_to(x[None], (n,) + x.shape), 0
        x = jnp.moveaxis(x, d, b)  # [.., N, B, ..]
        folded.append(x.reshape(x.shape[:b] + (n * x.shape[b + 1],) + x.shape[b + 2:]))
    outs = forward_p.bind(*folded, cfg=cfg, training=training)
    results, out_dims = [], []
    for name, y in zip(cfg.forward_results(training), outs):
        b = cfg.axes(name).index("b")
        results.append(y.reshape(y.shape[:b] + (n, y.shape[b] // n) + y.shape[b + 1:]))
        out_dims.append(b)
    return results, out_dims


def _backward_batch(args, bdims, *, cfg):
    return _per_instance(backward_p, args, bdims, dict(cfg=cfg))


batching.primitive_batchers[forward_p] = _forward_batch
batching.primitive_batchers[backward_p] = _backward_batch
