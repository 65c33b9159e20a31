"""Argument validation shared by cells, ``scan`` and the combinators.

Every check runs on static information (shapes, dtypes, Python values) so that errors surface at
trace time with a message naming what was expected and what arrived, instead of as an XLA shape
error deep inside a compiled function.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.experimental import checkify


def positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raises unless ``value`` is a positive Python/NumPy integer (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")


def one_of(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def non_negative_float(
    name: str,
    value: Any,
    *,
    allow_none: bool = False,
    upper: float | None = None,
    upper_inclusive: bool = True,
) -> None:
    """Raises unless ``value`` is a real number >= 0 (and <= ``upper`` when given)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if upper is not None:
        bad = value > upper if upper_inclusive else value >= upper
        if bad:
            rel = "<=" if upper_inclusive else "<"
            raise ValueError(f"{name} must be {rel} {upper}, got {value}")


def array_like(name: str, value: Any) -> jax.Array:
    """Returns ``value`` as a JAX array, or raises TypeError naming what arrived."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return jnp.asarray(value)
    if hasattr(value, "__jax_array__"):
        return jnp.asarray(value)
    if isinstance(value, (list, tuple, int, float)):
        return jnp.asarray(value)
    raise TypeError(f"{name} must be an array, got {type(value).__name__}")


def floating(name: str, x: jax.Array) -> None:
    """Raises TypeError unless ``x`` has a floating dtype (suggesting an embedding for ids)."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        hint = ""
        if jnp.issubdtype(x.dtype, jnp.integer):
            hint = (
                f"; {name} has integer dtype {x.dtype}: token ids? embed them first, e.g. "
                f"jnp.take(embedding, ids, axis=0) with an embedding [vocab_size, I]"
            )
        raise TypeError(
            f"{name} must have a floating dtype (float32, bfloat16, ...), got {x.dtype}{hint}"
        )


def feature_size(name: str, x: jax.Array, expected: int) -> None:
    """Raises ValueError unless the last axis of ``x`` has ``expected`` entries."""
    if x.ndim < 1:
        raise ValueError(f"{name} must have a feature axis of size {expected}, got a scalar")
    if x.shape[-1] != expected:
        raise ValueError(
            f"{name} has {x.shape[-1]} features on its last axis but the parameters expect "
            f"{expected} (shape {tuple(x.shape)})"
        )


def tree_shapes_match(name: str, got: Any, expected: Any) -> None:
    """Raises ValueError unless two pytrees have the same structure and leaf shapes.

    ``expected`` may hold ``jax.ShapeDtypeStruct`` leaves (from ``jax.eval_shape``).
    """
    got_leaves, got_def = jax.tree_util.tree_flatten(got)
    exp_leaves, exp_def = jax.tree_util.tree_flatten(expected)
    if got_def != exp_def:
        raise ValueError(f"{name} has structure {got_def}, expected {exp_def}")
    for path_leaf, g, e in zip(
        jax.tree_util.tree_leaves_with_path(expected), got_leaves, exp_leaves, strict=True
    ):
        gshape = tuple(np.shape(g))
        if gshape != tuple(e.shape):
            where = jax.tree_util.keystr(path_leaf[0])
            raise ValueError(
                f"{name}{where} has shape {gshape}, expected {tuple(e.shape)} "
                "(the carry's leading dimensions must equal the input's batch dimensions)"
            )


def lengths_in_range(lengths: jax.Array, T: int, *, traced: bool = False) -> None:
    """Checks ``0 <= lengths <= T``: now if the values are known, else optionally at run time.

    Concrete lengths (eager calls, or arrays closed over by a jitted function) are read on the
    host and checked at trace time. Traced lengths (arguments of a jitted function) have no
    values yet; with ``traced=True`` they get a :func:`jax.experimental.checkify.check`, which
    needs the caller's function to be wrapped in ``checkify.checkify(...,
    errors=checkify.user_checks)`` (the check then costs one reduction per call).

    Args:
      lengths: integer lengths ``[*B]``.
      T: the number of time steps.
      traced: also check traced lengths with ``checkify``.

    Raises:
      ValueError: concrete lengths outside ``[0, T]``; or, from JAX when the function is
        compiled, ``traced=True`` with traced lengths outside ``checkify.checkify``.
    """
    if not lengths.size:
        return
    msg = f"lengths must lie in [0, T={T}], got values in [{{lo}}, {{hi}}]"
    if is_concrete(lengths):
        # Read on the host: jnp reductions would be staged (and abstract) inside a jit trace.
        host = np.asarray(jax.device_get(lengths))
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi > T:
            raise ValueError(msg.format(lo=lo, hi=hi))
        return
    if not traced:
        return
    lo, hi = jnp.min(lengths), jnp.max(lengths)
    # Outside checkify.checkify, JAX refuses to compile this ("Cannot abstractly evaluate a
    # checkify.check which was not functionalized"): an error at compile time, never a
    # silently skipped check.
    checkify.check((lo >= 0) & (hi <= T), msg, lo=lo, hi=hi)


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values known at trace time (not a tracer)."""
    return not isinstance(x, Tracer)


def index(name: str, value: Any) -> int:
    """Returns ``value`` as a Python int, or raises TypeError."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None
