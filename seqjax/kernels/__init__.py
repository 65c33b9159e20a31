"""Fast recurrent kernels that :func:`seqjax.scan` picks automatically, layer by layer.

Every plain cell runs over a sequence through ``Cell.scan_time_major``, which calls
:func:`scan_layer`; stacks and bidirectional layers call it once per layer and direction, so the
choice below covers them too. The user never picks a kernel: results equal the reference path in
value and gradient (see ``tests/test_kernels.py``).

Dispatch for ``impl="auto"`` (the default):

1. **cuDNN** (:mod:`seqjax.kernels.cudnn`) for a plain float32 LSTM on a CUDA GPU, forward
   direction, no mask or a ``lengths`` mask, no remat;
2. **fused** (:mod:`seqjax.kernels.fused`) for LSTM (every option but ``layer_norm`` and
   ``full_gate_recurrence``), GRU (both forms) and SimpleRNN: one fused gate matmul per step,
   gate math in one pass, a hand-written backward from saved activations whose reverse scan
   carries only ``dh``/``dc``, optional chunked remat (per-chunk weight-gradient matmuls);
3. **reference**: ``project_inputs`` once, then ``lax.scan`` of ``Cell.step`` differentiated by
   JAX (``remat`` wraps the step in ``jax.checkpoint``).

The options come from :func:`seqjax.scan` (``remat``, ``compute_dtype``, ``impl``) through
:mod:`seqjax.kernels.options`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax

from seqjax.cells.base import Cell, masked_scan
from seqjax.kernels import cudnn, options
from seqjax.kernels.fused import chunk_length, fused_scan, unsupported_reason
from seqjax.typing import Array, PyTree

__all__ = [
    "XLA_CPU_EIGEN_DOTS",
    "chunk_length",
    "choose",
    "cudnn",
    "eigen_dots_supported",
    "fused_scan",
    "options",
    "reference_scan",
    "scan_layer",
    "unsupported_reason",
]


# XLA:CPU (jaxlib 0.10) sends float32 dots to its YNNPACK library by default. This per-compile
# option sends them to Eigen instead. Measured on the 2-core Xeon (docs/performance.md): the
# fused LSTM/GRU training step is 15-17 % faster at H = 1024 (skinny, weight-streaming recurrent
# matmuls) and 2-14 % slower at H = 256 and 512, so it is a tuning knob, not a default. It is an
# experimental XLA option: check :func:`eigen_dots_supported` before relying on it.
XLA_CPU_EIGEN_DOTS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def eigen_dots_supported() -> bool:
    """Whether the default backend is XLA:CPU and accepts :data:`XLA_CPU_EIGEN_DOTS`.

    Pass the dict as ``jax.jit(..., compiler_options=XLA_CPU_EIGEN_DOTS)`` (or the
    ``compiler_options`` of :func:`seqjax.train.make_train_step`) for large hidden sizes on CPU.

    Returns:
      True when a tiny matmul compiles with the option on this backend.
    """
    if jax.default_backend() != "cpu":
        return False
    try:
        jax.jit(lambda a: a @ a, compiler_options=XLA_CPU_EIGEN_DOTS).lower(
            jax.numpy.ones((2, 2), "float32")
        ).compile()
    except Exception:  # noqa: BLE001 - any rejection means "not available in this jaxlib"
        return False
    return True


def _with_compute_dtype(cell: Cell, compute_dtype) -> Cell:
    if compute_dtype is None or not dataclasses.is_dataclass(cell):
        return cell
    if "dtype" not in {f.name for f in dataclasses.fields(cell)}:
        return cell
    return cell.replace(dtype=compute_dtype)


def choose(
    cell: Cell,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool = False,
    opts: options.KernelOptions | None = None,
) -> str:
    """The kernel :func:`scan_layer` runs for this layer call: ``"cudnn"``, ``"fused"`` or
    ``"reference"``.

    Args:
      cell: the layer's cell definition (after any ``compute_dtype`` override).
      xs: its inputs ``[T, *B, I]`` (only dtype and backend matter).
      mask: its ``[T, *B]`` mask or None.
      reverse: direction.
      opts: options; default the ones in effect.

    Returns:
      The kernel name.

    Raises:
      ValueError: ``impl`` forces a kernel that cannot run this layer.

    Example:
      >>> import jax.numpy as jnp, seqjax
      >>> from seqjax.kernels import choose
      >>> choose(seqjax.GRU(4), jnp.ones((3, 2, 5)), None)
      'fused'
      >>> choose(seqjax.LSTM(4, layer_norm=True), jnp.ones((3, 2, 5)), None)
      'reference'
    """
    opts = options.current() if opts is None else opts
    fused_reason = unsupported_reason(cell)
    cudnn_reason = cudnn.unsupported_reason(
        cell,
        dtype=xs.dtype,
        reverse=reverse,
        mask_is_lengths=opts.lengths_prefix,
        has_mask=mask is not None,
        remat=opts.remat,
    )
    if cudnn_reason is None and not cudnn.available():
        cudnn_reason = f"no CUDA GPU (default backend: {jax.default_backend()})"
    if opts.impl == "reference":
        return "reference"
    if opts.impl == "fused":
        if fused_reason is not None:
            raise ValueError(f"impl='fused' cannot run this layer: {fused_reason}")
        return "fused"
    if opts.impl == "cudnn":
        if cudnn_reason is not None:
            raise ValueError(f"impl='cudnn' cannot run this layer: {cudnn_reason}")
        return "cudnn"
    if cudnn_reason is None:
        return "cudnn"
    return "fused" if fused_reason is None else "reference"


def reference_scan(
    cell: Cell,
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

    Args:
      cell: any cell with ``project_inputs``/``step``.
      params: its parameters.
      carry: initial carry, leaves ``[*B, n]``.
      xs: ``[T, *B, I]``.
      mask: ``[T, *B]`` or None.
      reverse: process time backwards.
      unroll: passed to ``lax.scan``.
      remat: truthy to recompute each step's activations in the backward pass
        (``jax.checkpoint`` around the step).

    Returns:
      ``(final_carry, ys [T, *B, output_size])``.
    """
    xps = cell.project_inputs(params, xs)

    def step(c, xp):
        return cell.step(params, c, xp)

    if remat:
        step = jax.checkpoint(step)
    return masked_scan(step, carry, xps, mask, reverse=reverse, unroll=unroll)


def scan_layer(
    cell: Cell,
    params: PyTree,
    carry: PyTree,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool = False,
    unroll: int = 1,
) -> tuple[PyTree, Array]:
    """Runs one layer over a time-major sequence with the kernel :func:`choose` picks.

    This is the body of ``Cell.scan_time_major`` for plain cells; the options (``remat``,
    ``compute_dtype``, ``impl``) are those of the enclosing :func:`seqjax.scan` call.

    Args:
      cell: the layer's cell definition.
      params: its parameters.
      carry: initial carry, leaves ``[*B, n]``.
      xs: ``[T, *B, I]``.
      mask: ``[T, *B]`` booleans or None.
      reverse: process time backwards (outputs stay in input order).
      unroll: steps per loop iteration.

    Returns:
      ``(final_carry, ys [T, *B, output_size])``, ys zero at masked steps.
    """
    opts = options.current()
    cell = _with_compute_dtype(cell, opts.compute_dtype)
    kind = choose(cell, xs, mask, reverse=reverse, opts=opts)
    try:
        if kind == "cudnn":
            return cudnn.lstm_scan(cell, params, carry, xs, mask)
        if kind == "fused":
            return fused_scan(
                cell, params, carry, xs, mask, reverse=reverse, unroll=unroll, remat=opts.remat
            )
    except TypeError as err:
        # The fast kernels define reverse-mode derivatives only (custom VJPs). Under forward-mode
        # autodiff (jax.jvp, jacfwd, hessian, linearize) JAX refuses them while tracing; the
        # reference scan computes the same function and supports every transformation, so take
        # it, unless the caller forced a kernel.
        if not _is_forward_mode_refusal(err):
            raise
        if opts.impl != "auto":
            raise TypeError(
                f"impl={opts.impl!r} supports reverse-mode autodiff only; use "
                "impl='auto' or 'reference' under jax.jvp/jacfwd/hessian"
            ) from err
    return reference_scan(
        cell, params, carry, xs, mask, reverse=reverse, unroll=unroll, remat=opts.remat
    )


def _is_forward_mode_refusal(err: TypeError) -> bool:
    """True for JAX's "can't apply forward-mode autodiff (jvp) to a custom_vjp function"."""
    msg = str(err)
    return "forward-mode" in msg and "custom_vjp" in msg
