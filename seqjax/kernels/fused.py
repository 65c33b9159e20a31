"""Fused recurrent kernels: one layer over a sequence with a hand-written backward pass.

The reference path (``Cell.step`` under ``lax.scan``, differentiated by JAX) is correct but
generic: its backward pass recomputes or re-reads every intermediate the tracer saved, slices
gates one by one and transposes weights inside the loop. The fused kernel is written for the
recurrence:

- **forward**: per step, the input projection and ONE fused gate matmul ``h_{t-1} @ W_hh``
  (``[B, H] x [H, G*H]``), then the gate activations in one elementwise pass over the
  contiguous ``[B, G*H]`` pre-activations (a single ``tanh``: ``sigmoid(x) = (1 + tanh(x/2))/2``);
  the step saves its gate *activations*, not the pre-activations, so the backward pass needs no
  transcendental recomputation;
- **backward** (a ``jax.custom_vjp``): a reverse scan whose recurrent carry is only the
  recurrent gradients (``dh``, ``dc``), with the gate derivatives written by hand from the saved
  activations (LSTM without peepholes/clip/NIAF, GRU both forms, SimpleRNN; other LSTM options
  differentiate the shared gate function with ``jax.vjp``); weight transposes are hoisted out of
  the loop;
- **remat**: only the carries at chunk boundaries (every ``K ~ sqrt(T)`` steps) are kept; the
  backward recomputes each chunk's forward pass before reversing it, and the chunk's weight
  gradients are single ``[H, K*B] x [K*B, G*H]`` matmuls (``dW_hh = h_prev^T @ da``), as are
  its input-projection gradients.

The code is in three parts: this module (the entry point: batch shapes, direction, padding to
whole chunks), ``fused_specs.py`` (per cell type: what a step reads, saves and how it is
differentiated, around the cells' own gate functions) and ``fused_engine.py`` (the generic
forward/backward scans and where the weight-gradient matmuls go; the measured choice is
explained in docs/performance.md).

Masks (``lengths``) follow the reference semantics: a masked step keeps the carry and outputs
zero; in the backward pass it passes the carry gradient through untouched. ``reverse`` runs the
forward kernel on the time-flipped sequence.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from seqjax.cells.base import Cell
from seqjax.kernels.fused_engine import FusedConfig, fused_core
from seqjax.kernels.fused_specs import spec_for, unsupported_reason
from seqjax.scan_engine import ScanOptions, chunk_length
from seqjax.typing import Array, PyTree

__all__ = [
    "fused_scan",
    "layer_unsupported_reason",
    "run_layer",
    "unsupported_reason",
]


def fused_scan(
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
    """Runs one LSTM, GRU or SimpleRNN layer over ``xs`` with the fused kernel.

    Same contract and results (values and gradients) as ``Cell.scan_time_major`` on the
    reference path; :func:`seqjax.scan` calls it automatically.

    Args:
      cell: an :class:`~seqjax.LSTM` (not ``layer_norm`` / ``full_gate_recurrence``),
        :class:`~seqjax.GRU` or :class:`~seqjax.SimpleRNN` definition.
      params: its parameters.
      carry: initial carry, leaves ``[*B, n]``.
      xs: inputs ``[T, *B, I]``.
      mask: ``[T, *B]`` booleans or None.
      reverse: process time backwards (outputs stay in input order).
      unroll: steps per loop iteration of the inner scans.
      remat: recompute activations in the backward pass in chunks (see
        :func:`seqjax.scan_engine.chunk_length`).

    Returns:
      ``(final_carry, ys)`` with ``ys [T, *B, output_size]``, zero at masked steps.

    Raises:
      ValueError: the cell has no fused kernel.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.kernels import fused_scan
      >>> cell = seqjax.LSTM(4)
      >>> p = cell.init(jax.random.key(0), 3)
      >>> final, ys = fused_scan(cell, p, cell.initial_carry((2,)), jnp.ones((5, 2, 3)), None)
      >>> ys.shape
      (5, 2, 4)
    """
    spec = spec_for(cell)
    T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    Bf = math.prod(batch_shape)
    state0 = tuple(leaf.reshape((Bf, leaf.shape[-1])) for leaf in spec.state(carry))
    xs_f = xs.reshape((T, Bf, xs.shape[-1]))
    mask_f = None if mask is None else mask.reshape((T, Bf))
    if reverse:
        xs_f = jnp.flip(xs_f, axis=0)
        mask_f = None if mask_f is None else jnp.flip(mask_f, axis=0)
    K = chunk_length(T, remat)
    T_run = T
    if K and T % K:
        # pad to whole chunks with skipped steps (they keep the carry and output zeros)
        T_run = -(-T // K) * K
        pad = T_run - T
        xs_f = jnp.concatenate([xs_f, jnp.zeros((pad,) + xs_f.shape[1:], xs_f.dtype)])
        valid = jnp.ones((T, Bf), bool) if mask_f is None else mask_f
        mask_f = jnp.concatenate([valid, jnp.zeros((pad, Bf), bool)])
    if T == 0:
        final_state, hs = state0, jnp.zeros((0, Bf, cell.output_size), state0[0].dtype)
    else:
        config = FusedConfig(spec=spec, unroll=int(unroll), chunk=K)
        final_state, hs = fused_core(config, params, state0, xs_f, mask_f)
    if mask_f is not None:
        hs = jnp.where(mask_f[..., None], hs, jnp.zeros((), hs.dtype))
    hs = hs[:T]
    if reverse:
        hs = jnp.flip(hs, axis=0)
    ys = hs.reshape((T,) + batch_shape + (hs.shape[-1],))
    final_state = tuple(s.reshape(batch_shape + (s.shape[-1],)) for s in final_state)
    return spec.carry(final_state, carry), ys


def layer_unsupported_reason(
    cell: Cell, xs: Array, mask: Array | None, *, reverse: bool, options: ScanOptions
) -> str | None:
    """:func:`seqjax.kernels.unsupported_reason` with the kernel registry's
    signature."""
    del xs, mask, reverse, options  # any shape, dtype, direction, mask and remat
    return unsupported_reason(cell)


def run_layer(
    cell: Cell,
    params: PyTree,
    carry: PyTree,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool,
    unroll: int,
    options: ScanOptions,
) -> tuple[PyTree, Array]:
    """:func:`fused_scan` with the kernel registry's signature."""
    return fused_scan(
        cell, params, carry, xs, mask, reverse=reverse, unroll=unroll, remat=options.remat
    )
