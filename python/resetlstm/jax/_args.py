"""Argument checks shared by the ops of resetlstm.jax (at trace time, before anything
compiles), with messages that name the op and the argument."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_FLOAT_DTYPES = ("float32", "float64", "bfloat16", "float16")


def float_array(value, name: str, dtype=None, op: str = "reset_lstm"):
    """`value` as a jax array of `dtype` (python numbers and lists take it); an error naming the
    argument when it is an array of another dtype."""
    if dtype is not None and not hasattr(value, "dtype"):
        return jnp.asarray(value, dtype=dtype)
    x = jnp.asarray(value)
    if dtype is None:
        if x.dtype.name not in _FLOAT_DTYPES:
            raise ValueError(f"{op}: `{name}` must be float32, float64, float16 or "
                             f"bfloat16, got {x.dtype.name}")
    elif x.dtype != dtype:
        raise ValueError(f"{op}: `{name}` has dtype {x.dtype.name} but `inputs` has "
                         f"{np.dtype(dtype).name}; all float arguments must share one dtype")
    return x


def flag_array(value, name: str, op: str = "reset_lstm"):
    """bool, or 0/1 integers/floats (any nonzero value counts as True)."""
    x = jnp.asarray(value)
    if x.dtype == jnp.bool_:
        return x
    if not (jnp.issubdtype(x.dtype, jnp.integer) or jnp.issubdtype(x.dtype, jnp.floating)):
        raise ValueError(f"{op}: `{name}` must be bool or 0/1 numbers, got {x.dtype.name}")
    return x != 0


def present(*args):
    return [a for a in args if a is not None]


def check_time_major(time_major, op: str) -> bool:
    if not isinstance(time_major, (bool, np.bool_)):
        raise ValueError(f"{op}: `time_major` must be a Python bool, got "
                         f"{type(time_major).__name__}")
    return bool(time_major)


def shape(x):
    return None if x is None else tuple(x.shape)
