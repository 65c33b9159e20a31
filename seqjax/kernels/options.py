"""Trace-time options of the sequence engines, set by :func:`seqjax.scan` for one call.

Combinators run their layers through ``Cell.scan_time_major``, whose signature is shared by every
cell; rather than threading new keywords through every combinator, :func:`seqjax.scan` sets these
options in a context variable for the duration of its (trace-time) call, and the per-layer
dispatch in :func:`seqjax.kernels.scan_layer` reads them. Because they are read while tracing,
a jitted function sees the options of the ``seqjax.scan`` call inside it, as with any Python
argument.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp

from seqjax.typing import DType

IMPLS = ("auto", "fused", "cudnn", "reference")


@dataclasses.dataclass(frozen=True)
class KernelOptions:
    """Options of one :func:`seqjax.scan` call, as the per-layer dispatch sees them.

    Attributes:
      impl: ``"auto"`` (default: cuDNN on GPU where supported, else the fused kernel where
        supported, else the reference scan), or force ``"fused"``, ``"cudnn"`` or
        ``"reference"`` (tests and benchmarks; a forced kernel that cannot run the cell raises).
      remat: False, True (recompute activations in chunks of about ``sqrt(T)`` steps), or a
        positive int chunk length.
      compute_dtype: matmul dtype overriding each cell's ``dtype`` (e.g. ``jnp.bfloat16``);
        carries and accumulation stay float32. None keeps the cells' own setting.
      lengths_prefix: the mask came from ``lengths`` (every sequence valid on a prefix), which
        cuDNN needs; set by :func:`seqjax.scan`.
    """

    impl: str = "auto"
    remat: bool | int = False
    compute_dtype: DType | None = None
    lengths_prefix: bool = False

    def __post_init__(self):
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {self.impl!r}")
        r = self.remat
        if not isinstance(r, (bool, int)) or (not isinstance(r, bool) and r < 1):
            raise ValueError(f"remat must be a bool or a positive int chunk length, got {r!r}")
        if self.compute_dtype is not None:
            dt = jnp.dtype(self.compute_dtype)
            if not jnp.issubdtype(dt, jnp.floating):
                raise TypeError(f"compute_dtype must be a floating dtype, got {dt}")


_OPTIONS: contextvars.ContextVar[KernelOptions] = contextvars.ContextVar(
    "seqjax_kernel_options", default=KernelOptions()
)  # noqa: B039 (frozen dataclass)


def current() -> KernelOptions:
    """The options in effect (the defaults outside a :func:`seqjax.scan` call)."""
    return _OPTIONS.get()


@contextlib.contextmanager
def using(**changes: Any) -> Iterator[KernelOptions]:
    """Context manager that sets kernel options for the code (trace) inside it.

    Args:
      **changes: fields of :class:`KernelOptions` to change.

    Yields:
      The options in effect inside the block.

    Raises:
      ValueError: an unknown ``impl`` or an invalid ``remat``.
      TypeError: an unknown option name or a non-floating ``compute_dtype``.

    Example:
      >>> from seqjax.kernels import options
      >>> with options.using(impl="reference") as opts:
      ...     opts.impl
      'reference'
    """
    opts = dataclasses.replace(current(), **changes)
    token = _OPTIONS.set(opts)
    try:
        yield opts
    finally:
        _OPTIONS.reset(token)
