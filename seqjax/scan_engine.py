"""The time loop under :func:`seqjax.scan`: options, masking, remat and the kernel registry.

This module is the bottom of the sequence machinery and imports no cell: it runs any object with
``project_inputs`` and ``step`` methods. ``Cell.scan_time_major`` (in ``seqjax/cells/base.py``)
delegates to :func:`scan_layer` here, combinators pass their :class:`ScanOptions` down to every
layer, and fast kernels (``seqjax/kernels``) *register* the cell types they accelerate with
:func:`register_kernel`; the registry is filled when ``seqjax`` is imported. So cells never
import kernels, and the options are an explicit argument, never hidden state.

Dispatch for one layer (:func:`choose`): with ``impl="auto"`` the registered kernels for the
cell's exact type are tried from the highest priority down and the first one whose
``unsupported_reason`` returns None runs; otherwise the reference scan (:func:`reference_scan`)
runs. A forced ``impl`` that cannot run the layer raises.

(Over 450 lines with reason: the options, the registry that validates their ``impl`` and the
masked, chunked loop they configure are one unit; more than half of it is docstrings.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seqjax.typing import Array, DType, PyTree

__all__ = [
    "Kernel",
    "ScanOptions",
    "choose",
    "chunk_length",
    "masked_scan",
    "reference_scan",
    "register_kernel",
    "registered_kernels",
    "scan_layer",
    "scan_steps",
    "tree_select",
    "with_compute_dtype",
]

BUILTIN_IMPLS = ("auto", "reference")


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """How :func:`seqjax.scan` runs every layer: a frozen, hashable value passed down explicitly.

    ``seqjax.scan(..., impl=, remat=, compute_dtype=)`` builds one; combinators hand it to each
    layer's ``scan_time_major`` unchanged.

    Attributes:
      impl: ``"auto"`` (default: the fastest registered kernel that supports the layer, else the
        reference scan), ``"reference"``, or the name of a registered kernel (``"fused"``,
        ``"cudnn"``, ``"parallel"``, ``"chunkwise"``) to force it; a forced kernel that cannot
        run a layer raises.
      remat: False, True (recompute activations in the backward pass in chunks of
        ``ceil(sqrt(T))`` steps), or a positive int chunk length; see :func:`chunk_length`.
      compute_dtype: matmul dtype for every layer, overriding the cells' ``dtype`` (e.g.
        ``jnp.bfloat16``); carries and accumulation stay float32. None keeps the cells' own.
      lengths_prefix: the mask came from ``lengths`` (each sequence valid on a prefix), which
        cuDNN needs; :func:`seqjax.scan` sets it.

    Raises:
      ValueError: an unknown ``impl`` or a ``remat`` that is neither a bool nor a positive int.
      TypeError: a ``compute_dtype`` that is not a floating dtype, or a non-bool
        ``lengths_prefix``.

    Example:
      >>> import jax.numpy as jnp
      >>> from seqjax import ScanOptions
      >>> opts = ScanOptions(remat=8, compute_dtype=jnp.bfloat16)
      >>> opts.compute_dtype, hash(opts) == hash(ScanOptions(remat=8, compute_dtype="bfloat16"))
      (dtype(bfloat16), True)
    """

    impl: str = "auto"
    remat: bool | int = False
    compute_dtype: DType | None = None
    lengths_prefix: bool = False

    def __post_init__(self):
        impls = BUILTIN_IMPLS + tuple(sorted(_KERNEL_NAMES))
        if not isinstance(self.impl, str) or self.impl not in impls:
            raise ValueError(f"impl must be one of {impls}, got {self.impl!r}")
        remat = self.remat
        if isinstance(remat, (bool, np.bool_)):
            object.__setattr__(self, "remat", bool(remat))
        elif isinstance(remat, (int, np.integer)) and remat >= 1:
            object.__setattr__(self, "remat", int(remat))
        else:
            raise ValueError(f"remat must be a bool or a positive int chunk length, got {remat!r}")
        if self.compute_dtype is not None:
            try:
                dtype = jnp.dtype(self.compute_dtype)
            except TypeError as err:
                raise TypeError(
                    f"compute_dtype must be a floating dtype, got {self.compute_dtype!r}"
                ) from err
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(f"compute_dtype must be a floating dtype, got {dtype}")
            object.__setattr__(self, "compute_dtype", dtype)
        if not isinstance(self.lengths_prefix, (bool, np.bool_)):
            raise TypeError(f"lengths_prefix must be a bool, got {self.lengths_prefix!r}")
        object.__setattr__(self, "lengths_prefix", bool(self.lengths_prefix))

    def replace(self, **changes: Any) -> ScanOptions:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# -- the kernel registry ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A fast path for one cell type, as :func:`register_kernel` records it.

    Attributes:
      name: what ``impl=`` forces it with (e.g. ``"fused"``).
      priority: higher runs first under ``impl="auto"``.
      unsupported_reason: ``(cell, xs, mask, *, reverse, options) -> str | None``: why this layer
        call cannot use the kernel (None when it can, the backend included).
      run: ``(cell, params, carry, xs, mask, *, reverse, unroll, options) -> (carry, ys)``, the
        contract of ``Cell.scan_time_major`` on time-major ``xs [T, *B, I]``.
    """

    name: str
    priority: int
    unsupported_reason: Callable[..., str | None]
    run: Callable[..., tuple[PyTree, Array]]


_REGISTRY: dict[type, tuple[Kernel, ...]] = {}
_KERNEL_NAMES: set[str] = set()


def register_kernel(
    cell_type: type,
    *,
    name: str,
    run: Callable[..., tuple[PyTree, Array]],
    unsupported_reason: Callable[..., str | None],
    priority: int = 0,
) -> Kernel:
    """Registers a fast kernel for ``cell_type`` (exactly that type: subclasses are not covered).

    Args:
      cell_type: the cell class the kernel runs.
      name: the kernel's name for ``impl=`` (not ``"auto"`` or ``"reference"``).
      run: the kernel (see :class:`Kernel`).
      unsupported_reason: the kernel's applicability test (see :class:`Kernel`).
      priority: order under ``impl="auto"``, highest first.

    Returns:
      The registered :class:`Kernel`.

    Raises:
      ValueError: a reserved name, or ``name`` already registered for ``cell_type``.
    """
    if name in BUILTIN_IMPLS or not isinstance(name, str) or not name:
        raise ValueError(f"a kernel name must be a non-empty string other than {BUILTIN_IMPLS}")
    existing = _REGISTRY.get(cell_type, ())
    if any(k.name == name for k in existing):
        raise ValueError(f"a kernel named {name!r} is already registered for {cell_type.__name__}")
    kernel = Kernel(name=name, priority=priority, unsupported_reason=unsupported_reason, run=run)
    _REGISTRY[cell_type] = tuple(sorted(existing + (kernel,), key=lambda k: -k.priority))
    _KERNEL_NAMES.add(name)
    return kernel


def registered_kernels(cell_type: type) -> tuple[Kernel, ...]:
    """The kernels registered for ``cell_type``, highest priority first."""
    return _REGISTRY.get(cell_type, ())


def with_compute_dtype(cell: Any, compute_dtype: DType | None) -> Any:
    """``cell`` with its ``dtype`` field replaced by ``compute_dtype`` (when it has one)."""
    if compute_dtype is None or not dataclasses.is_dataclass(cell) or isinstance(cell, type):
        return cell  # nothing to set, or not a dataclass instance (a class is not a cell)
    if "dtype" not in {f.name for f in dataclasses.fields(cell)}:
        return cell
    return dataclasses.replace(cell, dtype=compute_dtype)


def choose(
    cell: Any,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool = False,
    options: ScanOptions = ScanOptions(),
) -> str:
    """The kernel :func:`scan_layer` runs for this layer call (a registered name or
    ``"reference"``).

    Args:
      cell: the layer's cell definition (after any ``compute_dtype`` override).
      xs: its inputs ``[T, *B, I]`` (only dtype and backend matter).
      mask: its ``[T, *B]`` mask or None.
      reverse: direction.
      options: the scan options.

    Returns:
      The kernel name.

    Raises:
      ValueError: ``options.impl`` forces a kernel that cannot run this layer.

    Example:
      >>> import jax.numpy as jnp, seqjax
      >>> from seqjax.scan_engine import choose
      >>> choose(seqjax.GRU(4), jnp.ones((3, 2, 5)), None)
      'fused'
      >>> choose(seqjax.LSTM(4, layer_norm=True), jnp.ones((3, 2, 5)), None)
      'reference'
    """
    if options.impl == "reference":
        return "reference"
    kernels = registered_kernels(type(cell))
    for kernel in kernels:
        if options.impl not in ("auto", kernel.name):
            continue
        reason = kernel.unsupported_reason(cell, xs, mask, reverse=reverse, options=options)
        if reason is None:
            return kernel.name
        if options.impl == kernel.name:
            raise ValueError(f"impl={options.impl!r} cannot run this layer: {reason}")
    if options.impl == "auto":
        return "reference"
    raise ValueError(
        f"impl={options.impl!r} cannot run this layer: no {options.impl} kernel for "
        f"{type(cell).__name__}"
    )


# -- masking and remat --------------------------------------------------------------------------


def tree_select(pred: Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """``where(pred, a, b)`` leaf by leaf, broadcasting ``pred [*B]`` over trailing axes."""

    def select(a, b):
        p = jnp.reshape(pred, pred.shape + (1,) * (a.ndim - pred.ndim))
        return jnp.where(p, a, b)

    return jax.tree_util.tree_map(select, on_true, on_false)


def chunk_length(T: int, remat: bool | int) -> int:
    """Chunk length ``K`` for ``remat`` over ``T`` steps (0: no remat).

    Args:
      T: sequence length.
      remat: False, True (``K = ceil(sqrt(T))``) or an explicit positive chunk length.

    Returns:
      ``K`` clipped to ``[1, T]``, or 0 when ``remat`` is False.

    Example:
      >>> chunk_length(4096, True), chunk_length(10, 4), chunk_length(3, 50)
      (64, 4, 3)
    """
    if remat is False or T == 0:
        return 0
    K = math.isqrt(T - 1) + 1 if remat is True else int(remat)
    return max(1, min(K, T))


def masked_scan(
    step_fn: Callable[[PyTree, Any], tuple[PyTree, Array]],
    carry: PyTree,
    xs: PyTree,
    mask: Array | None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool | int = False,
) -> tuple[PyTree, Array]:
    """``lax.scan`` of ``step_fn(carry, x) -> (carry, y)`` where masked-out steps are skipped.

    A step whose ``mask`` entry is False leaves the carry unchanged and outputs zeros. Because a
    reverse scan visits padded steps first and skips them, ``reverse=True`` processes each
    sequence backwards from its own last valid step; the outputs stay in input order.

    With ``remat`` the steps run in chunks of ``K = chunk_length(T, remat)`` under
    ``jax.checkpoint``: the backward pass keeps only the carries at chunk boundaries and
    recomputes each chunk's steps (memory ``O(T/K + K)`` instead of ``O(T)``), same results.

    Args:
      step_fn: ``(carry, x_t) -> (carry, y_t)``.
      carry: initial carry, leaves ``[*B, n]``.
      xs: pytree of ``[T, *B, ...]`` arrays.
      mask: ``[T, *B]`` booleans or None.
      reverse: scan from the last time step to the first.
      unroll: passed to ``lax.scan``.
      remat: False, True or a chunk length (see :func:`chunk_length`).

    Returns:
      ``(final_carry, ys)``, ``ys`` of shape ``[T, *B, n_out]``.

    Example:
      >>> import jax.numpy as jnp
      >>> step = lambda c, x: (c + x, c + x)
      >>> mask = jnp.array([True, False, True])
      >>> masked_scan(step, jnp.zeros(()), jnp.array([1.0, 2.0, 3.0]), mask)
      (Array(4., dtype=float32), Array([1., 0., 4.], dtype=float32))
    """
    leaves = jax.tree_util.tree_leaves(xs)
    T = leaves[0].shape[0] if leaves else 0
    K = chunk_length(T, remat)
    if K:
        return _chunked_scan(step_fn, carry, xs, mask, K, reverse=reverse, unroll=unroll)
    if mask is None:
        return lax.scan(step_fn, carry, xs, reverse=reverse, unroll=unroll)

    def body(c, inp):
        x_t, m_t = inp
        c_new, y = step_fn(c, x_t)
        c_new = tree_select(m_t, c_new, c)
        y = jnp.where(
            jnp.reshape(m_t, m_t.shape + (1,) * (y.ndim - m_t.ndim)), y, jnp.zeros((), y.dtype)
        )
        return c_new, y

    return lax.scan(body, carry, (xs, mask), reverse=reverse, unroll=unroll)


def _chunked_scan(step_fn, carry, xs, mask, K, *, reverse, unroll):
    """:func:`masked_scan` as an outer scan over checkpointed chunks of ``K`` steps."""
    T = jax.tree_util.tree_leaves(xs)[0].shape[0]
    batch_shape = jax.tree_util.tree_leaves(carry)[0].shape[:-1]
    T_run = -(-T // K) * K
    if T_run != T:
        # pad to whole chunks with skipped steps (they keep the carry and output zeros)
        valid = jnp.ones((T,) + batch_shape, bool) if mask is None else mask
        mask = jnp.concatenate([valid, jnp.zeros((T_run - T,) + valid.shape[1:], bool)])
        xs = jax.tree_util.tree_map(
            lambda x: jnp.concatenate([x, jnp.zeros((T_run - T,) + x.shape[1:], x.dtype)]), xs
        )

    def chunks(x):
        return x.reshape((T_run // K, K) + x.shape[1:])

    # prevent_cse=False: the enclosing scan already keeps XLA from merging the recomputation
    # with the forward pass (as jax.checkpoint's documentation advises inside scans).
    @functools.partial(jax.checkpoint, prevent_cse=False)
    def chunk(c, inp):
        x_chunk, m_chunk = inp
        return masked_scan(step_fn, c, x_chunk, m_chunk, reverse=reverse, unroll=unroll)

    mask_chunks = None if mask is None else chunks(mask)
    final, ys = lax.scan(
        chunk, carry, (jax.tree_util.tree_map(chunks, xs), mask_chunks), reverse=reverse
    )
    return final, ys.reshape((T_run,) + ys.shape[2:])[:T]


# -- one layer ----------------------------------------------------------------------------------


def reference_scan(
    cell: Any,
    params: PyTree,
    carry: PyTree,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool | int = False,
) -> tuple[PyTree, Array]:
    """The reference engine: hoisted ``project_inputs``, then ``lax.scan`` of ``cell.step``.

    Differentiated by JAX, it supports every transformation (forward mode included).

    Args:
      cell: any cell with ``project_inputs``/``step``.
      params: its parameters.
      carry: initial carry, leaves ``[*B, n]``.
      xs: ``[T, *B, I]``.
      mask: ``[T, *B]`` or None.
      reverse: process time backwards.
      unroll: passed to ``lax.scan``.
      remat: checkpoint chunks of steps (see :func:`masked_scan`).

    Returns:
      ``(final_carry, ys [T, *B, output_size])``.
    """
    xps = cell.project_inputs(params, xs)

    def step(c, xp):
        return cell.step(params, c, xp)

    return masked_scan(step, carry, xps, mask, reverse=reverse, unroll=unroll, remat=remat)


def scan_layer(
    cell: Any,
    params: PyTree,
    carry: PyTree,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    options: ScanOptions,
) -> tuple[PyTree, Array]:
    """Runs one plain layer over a time-major sequence with the kernel :func:`choose` picks.

    This is the body of ``Cell.scan_time_major`` for plain cells.

    Args:
      cell: the layer's cell definition.
      params: its parameters.
      carry: initial carry, leaves ``[*B, n]``.
      xs: ``[T, *B, I]``.
      mask: ``[T, *B]`` booleans or None.
      reverse: process time backwards (outputs stay in input order).
      unroll: steps per loop iteration.
      options: ``impl``, ``remat`` and ``compute_dtype`` of the enclosing scan.

    Returns:
      ``(final_carry, ys [T, *B, output_size])``, ys zero at masked steps.

    Raises:
      ValueError: a forced ``impl`` cannot run this layer.
      TypeError: a forced kernel under forward-mode autodiff.
    """
    cell = with_compute_dtype(cell, options.compute_dtype)
    kind = choose(cell, xs, mask, reverse=reverse, options=options)
    if kind != "reference":
        (kernel,) = [k for k in registered_kernels(type(cell)) if k.name == kind]
        try:
            return kernel.run(
                cell, params, carry, xs, mask, reverse=reverse, unroll=unroll, options=options
            )
        except TypeError as err:
            # The fast kernels define reverse-mode derivatives only (custom VJPs). Under
            # forward-mode autodiff (jax.jvp, jacfwd, hessian, linearize) JAX refuses them while
            # tracing; the reference scan computes the same function and supports every
            # transformation, so take it, unless the caller forced a kernel.
            if not _is_forward_mode_refusal(err):
                raise
            if options.impl != "auto":
                raise TypeError(
                    f"impl={options.impl!r} supports reverse-mode autodiff only; use "
                    "impl='auto' or 'reference' under jax.jvp/jacfwd/hessian"
                ) from err
    return reference_scan(
        cell, params, carry, xs, mask, reverse=reverse, unroll=unroll, remat=options.remat
    )


def scan_steps(
    what: str,
    step_fn: Callable[[PyTree, Any], tuple[PyTree, Array]],
    carry: PyTree,
    xs: PyTree,
    mask: Array | None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    options: ScanOptions,
) -> tuple[PyTree, Array]:
    """:func:`masked_scan` for layers that only run step by step (e.g. zoneout), with options.

    Honours ``options.remat``; ``compute_dtype`` is the caller's to apply to its cells. Such a
    layer has no fast kernel, so a forced kernel ``impl`` raises.

    Args:
      what: the layer's name, for the error message.
      step_fn: ``(carry, x_t) -> (carry, y_t)``.
      carry: initial carry.
      xs: pytree of ``[T, *B, ...]`` arrays.
      mask: ``[T, *B]`` booleans or None.
      reverse: scan backwards.
      unroll: passed to ``lax.scan``.
      options: the scan options.

    Returns:
      ``(final_carry, ys)``.

    Raises:
      ValueError: ``options.impl`` forces a kernel.
    """
    if options.impl not in BUILTIN_IMPLS:
        raise ValueError(
            f"impl={options.impl!r} cannot run this layer: {what} runs step by step on the "
            "reference scan (use impl='auto' or 'reference')"
        )
    return masked_scan(
        step_fn, carry, xs, mask, reverse=reverse, unroll=unroll, remat=options.remat
    )


def _is_forward_mode_refusal(err: TypeError) -> bool:
    """True for JAX's "can't apply forward-mode autodiff (jvp) to a custom_vjp function"."""
    msg = str(err)
    return "forward-mode" in msg and "custom_vjp" in msg
