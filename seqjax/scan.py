"""Running a cell over time: batch layout, lengths and masks, direction, unrolling.

One place handles these for every cell and combinator (as Haiku's ``dynamic_unroll`` and
recurrentgemma's ``scan.py`` do), so a cell only defines one step. :func:`scan` validates its
arguments, builds the :class:`ScanOptions` and calls ``cell.scan_time_major``; the time loop
itself, the masking, remat and the kernel registry live in :mod:`seqjax.scan_engine` (a module
below the cells), re-exported here.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from seqjax import _checks, _params
from seqjax.cells.base import Cell, accum_dtype
from seqjax.scan_engine import (
    ScanOptions,
    masked_scan,
    register_kernel,
    registered_kernels,
    tree_select,
)
from seqjax.typing import Array, PRNGKey, PyTree

__all__ = [
    "ScanOptions",
    "masked_scan",
    "register_kernel",
    "registered_kernels",
    "scan",
    "tree_select",
]


def scan(
    cell: Cell,
    params: PyTree,
    xs: Array,
    *,
    carry: PyTree | None = None,
    lengths: Array | None = None,
    mask: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int = 1,
    key: PRNGKey | None = None,
    remat: bool | int = False,
    compute_dtype: Any = None,
    impl: str = "auto",
    options: ScanOptions | None = None,
    check_lengths: bool = False,
) -> tuple[PyTree, Array]:
    """Runs ``cell`` over a sequence with ``jax.lax.scan`` (``(final_carry, ys)`` order).

    Padding semantics: a step at or past a sequence's length (or False in ``mask``) leaves that
    sequence's carry unchanged and outputs zeros, so ``final_carry`` is the state after its last
    valid step and padding never influences valid outputs.

    Args:
      cell: a seqjax cell or combinator.
      params: the cell's parameters.
      xs: inputs ``[*B, T, I]`` (or ``[T, *B, I]`` with ``time_major=True``); any number of
        leading batch dimensions, including none.
      carry: initial carry, leaves ``[*B, n]``; default ``cell.initial_carry(B)`` in float32
        (float64 for float64 inputs).
      lengths: integer valid lengths ``[*B]`` in ``[0, T]``. Concrete lengths (an eager call,
        or an array a jitted function closes over) are checked at trace time; traced lengths
        (an argument of a jitted function) have no values then, and are only checked with
        ``check_lengths=True`` (unchecked, a length above ``T`` acts as ``T``, below 0 as 0).
      mask: boolean validity ``[*B, T]`` (``[T, *B]`` when time-major), an alternative to
        ``lengths`` that also allows holes; a False step is skipped.
      reverse: process each sequence backwards from its last valid step; outputs stay in input
        order (the backward half of a bidirectional layer).
      time_major: ``xs``, ``mask`` and ``ys`` put time first.
      unroll: time steps per loop iteration of ``lax.scan``.
      key: randomness for dropout layers and stochastic wrappers; None runs them
        deterministically (evaluation mode).
      remat: recompute activations in the backward pass instead of storing them, to cut memory
        on long sequences: the steps run in chunks whose boundary carries alone are kept;
        True uses chunks of ``ceil(sqrt(T))`` steps, an int sets the chunk length (fused
        kernels and reference scan alike). Same results.
      compute_dtype: matmul dtype for every layer (e.g. ``jnp.bfloat16``), overriding the cells'
        ``dtype``; carries and accumulation stay float32. None keeps the cells' setting.
      impl: kernel choice, ``"auto"`` (default; see :mod:`seqjax.kernels`), or ``"fused"``,
        ``"cudnn"``, ``"parallel"`` (associative scan of :class:`seqjax.MinGRU` and
        :class:`seqjax.MinLSTM`, quadratic form of :class:`seqjax.MLSTM`), ``"chunkwise"``
        (:class:`seqjax.MLSTM`), ``"reference"`` to force one (tests and benchmarks).
      options: the three settings above as one :class:`ScanOptions` value, instead of the
        keywords (pass one or the other).
      check_lengths: also check traced ``lengths`` with :func:`jax.experimental.checkify.check`
        (one reduction per call); the jitted function must then be wrapped in
        ``checkify.checkify(f, errors=checkify.user_checks)``, whose error's ``.throw()``
        raises for lengths outside ``[0, T]``. Without that wrapper JAX refuses to compile it.

    Returns:
      ``(final_carry, ys)``: the carry after the last valid step, and outputs
      ``[*B, T, output_size]`` (``[T, *B, output_size]`` when time-major), zero at padded steps.

    Raises:
      TypeError: ``xs`` is not floating point, ``lengths`` not integer, ``mask`` not boolean,
        or ``cell`` not a seqjax cell.
      ValueError: wrong rank or feature size of ``xs``, a carry or ``lengths`` whose shape does
        not match the batch, concrete lengths outside ``[0, T]``, both ``lengths`` and ``mask``,
        an unknown ``impl``, a forced ``impl`` that cannot run a layer, a bad ``remat``, both
        ``options`` and one of ``remat``/``compute_dtype``/``impl``. All are raised at trace
        time.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.LSTM(hidden_size=8)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> xs = jnp.ones((4, 10, 3))                       # [B, T, I]
      >>> final, ys = seqjax.scan(cell, params, xs, lengths=jnp.array([10, 7, 3, 0]))
      >>> ys.shape, final.h.shape
      ((4, 10, 8), (4, 8))
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"scan expects a seqjax cell, got {type(cell).__name__}")
    _params.check_params(cell, params)  # what cell.init creates: type, fields, shapes
    if options is None:
        options = ScanOptions(impl=impl, remat=remat, compute_dtype=compute_dtype)
    elif not isinstance(options, ScanOptions):
        raise TypeError(f"options must be a seqjax.ScanOptions, got {type(options).__name__}")
    elif (impl, remat, compute_dtype) != ("auto", False, None):
        raise ValueError(
            "pass either options=ScanOptions(...) or the impl/remat/compute_dtype keywords, "
            "not both"
        )
    for flag, value in (("reverse", reverse), ("time_major", time_major)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(
                f"{flag} must be a Python bool, got {type(value).__name__} (under "
                f"jax.jit, mark it static: static_argnames=('{flag}',))"
            )
    xs = _checks.array_like("xs", xs)
    _checks.floating("xs", xs)
    if xs.ndim < 2:
        layout = "[T, *B, I]" if time_major else "[*B, T, I]"
        raise ValueError(f"xs must have at least 2 dimensions {layout}, got shape {xs.shape}")
    _checks.feature_size("xs", xs, cell.input_size_of(params))
    unroll = _checks.index("unroll", unroll)
    if unroll < 1:
        raise ValueError(f"unroll must be >= 1, got {unroll}")

    xs_t = xs if time_major else jnp.moveaxis(xs, -2, 0)  # [T, *B, I]
    T, batch_shape = xs_t.shape[0], tuple(xs_t.shape[1:-1])
    mask_t = _time_mask(lengths, mask, T, batch_shape, time_major, check_lengths)

    if carry is None:
        carry = cell.initial_carry(batch_shape, accum_dtype(xs.dtype))
    else:
        cell.check_carry(carry, batch_shape)

    final, ys_t = cell.scan_time_major(
        params,
        carry,
        xs_t,
        mask_t,
        reverse=bool(reverse),
        unroll=unroll,
        key=key,
        options=options.replace(lengths_prefix=lengths is not None),
    )
    ys = ys_t if time_major else jnp.moveaxis(ys_t, 0, -2)
    return final, ys


def _time_mask(
    lengths: Any,
    mask: Any,
    T: int,
    batch_shape: tuple[int, ...],
    time_major: bool,
    check_lengths: bool = False,
) -> Array | None:
    """Builds the ``[T, *B]`` validity mask from ``lengths`` or ``mask`` (or None)."""
    if lengths is not None and mask is not None:
        raise ValueError("pass either lengths or mask, not both")
    if lengths is not None:
        lengths = _checks.array_like("lengths", lengths)
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
        if tuple(lengths.shape) != batch_shape:
            raise ValueError(
                f"lengths must have the batch shape {batch_shape}, got {tuple(lengths.shape)}"
            )
        _checks.lengths_in_range(lengths, T, traced=check_lengths)
        steps = jnp.arange(T, dtype=lengths.dtype).reshape((T,) + (1,) * len(batch_shape))
        return steps < lengths[None]
    if mask is not None:
        mask = _checks.array_like("mask", mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"mask must be boolean, got dtype {mask.dtype}")
        expected = (T,) + batch_shape if time_major else batch_shape + (T,)
        if tuple(mask.shape) != expected:
            layout = "[T, *B]" if time_major else "[*B, T]"
            raise ValueError(f"mask must have shape {layout} = {expected}, got {tuple(mask.shape)}")
        return mask if time_major else jnp.moveaxis(mask, -1, 0)
    return None
