"""The parallel-in-time form of linear recurrences ``h_t = a_t * h_{t-1} + b_t`` (minimal RNNs).

For a cell whose gates depend on the input only (:class:`seqjax.MinGRU`,
:class:`seqjax.MinLSTM`), the step is an affine map of the state, and affine maps compose
associatively: applying ``(a_1, b_1)`` then ``(a_2, b_2)`` is ``(a_1 a_2, a_2 b_1 + b_2)``.
``jax.lax.associative_scan`` computes every prefix composition in O(log T) depth. As in Feng et
al. (2024) the scan runs in log space (``a, b > 0``), where composition is
``(la_1 + la_2, logaddexp(lb_1 + la_2, lb_2))``: no product of many gates underflows before it
is combined. The initial carry then enters linearly, ``h_t = A_t h_0 + B_t``, so it may have
any sign.

A masked-out step is the identity map ``a = 1, b = 0`` (``la = 0``, ``lb`` a very negative
finite number rather than ``-inf``, whose ``logaddexp`` gradient would be NaN): the carry
passes through and the output there is zero, as in :func:`seqjax.scan_engine.masked_scan`.
``reverse=True`` scans the flipped sequence.

When ``impl="auto"`` picks it: on GPU and TPU always; on CPU never (the sequential form is
faster there, see :data:`CPU_RULE`). ``impl="parallel"`` forces it on any backend;
``impl="reference"`` forces the step-by-step form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.scan_engine import ScanOptions
from seqjax.typing import Array, PyTree

__all__ = ["CPU_RULE", "layer_unsupported_reason", "linear_scan", "run_layer"]

#: Why ``impl="auto"`` keeps the sequential form of a minimal RNN on CPU.
CPU_RULE = (
    "on CPU impl='auto' keeps the sequential form: measured on 2 cores (MinGRU, B=8, T=4096, "
    "H=256, forward+backward) it was faster than the associative scan; force impl='parallel'"
)

_NEG = -1e30  # log b of a masked step: exp() is exactly 0, sums with it stay finite


def _combine(earlier: tuple[Array, Array], later: tuple[Array, Array]) -> tuple[Array, Array]:
    """Composes two affine maps in log space: ``earlier`` applied first."""
    la1, lb1 = earlier
    la2, lb2 = later
    return la1 + la2, jnp.logaddexp(lb1 + la2, lb2)


def linear_scan(
    log_a: Array, log_b: Array, h0: Array, mask: Array | None = None, *, reverse: bool = False
) -> tuple[Array, Array]:
    """All states of ``h_t = a_t h_{t-1} + b_t`` by a log-space associative scan over axis 0.

    Args:
      log_a: ``log a_t``, ``[T, *B, H]``.
      log_b: ``log b_t``, ``[T, *B, H]``.
      h0: initial state ``[*B, H]``, any sign.
      mask: ``[T, *B]`` booleans (False: the identity step, output zero) or None.
      reverse: run from ``T - 1`` down to 0 (outputs stay in input order).

    Returns:
      ``(h_final [*B, H], hs [T, *B, H])`` in ``log_a``'s dtype, ``hs`` zero where masked.

    Example:
      >>> import jax.numpy as jnp
      >>> a, b = jnp.array([[0.5], [0.5]]), jnp.array([[1.0], [2.0]])
      >>> _, hs = linear_scan(jnp.log(a), jnp.log(b), jnp.array([4.0]))
      >>> hs[:, 0]   # 0.5 * 4 + 1 = 3, then 0.5 * 3 + 2 = 3.5
      Array([3. , 3.5], dtype=float32)
    """
    if mask is not None:
        m = jnp.reshape(mask, mask.shape + (1,) * (log_a.ndim - mask.ndim))
        log_a = jnp.where(m, log_a, jnp.zeros((), log_a.dtype))
        log_b = jnp.where(m, log_b, jnp.full((), _NEG, log_b.dtype))
    if reverse:
        log_a, log_b = jnp.flip(log_a, 0), jnp.flip(log_b, 0)
    cum_a, cum_b = lax.associative_scan(_combine, (log_a, log_b), axis=0)
    hs = jnp.exp(cum_a) * h0.astype(log_a.dtype) + jnp.exp(cum_b)
    final = hs[-1]
    if reverse:
        hs = jnp.flip(hs, 0)
    if mask is not None:
        hs = jnp.where(m, hs, jnp.zeros((), hs.dtype))
    return final, hs


def layer_unsupported_reason(
    cell, xs: Array, mask: Array | None, *, reverse: bool, options: ScanOptions
) -> str | None:
    """Why the parallel form cannot (or, under ``impl="auto"``, should not) run this layer."""
    del mask, reverse  # any mask, either direction
    if options.remat is not False:
        return "remat is not supported by the parallel form (use impl='reference' with remat)"
    if options.impl == "auto" and jax.default_backend() == "cpu":
        return CPU_RULE
    return None


def run_layer(
    cell,
    params: PyTree,
    carry: PyTree,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool,
    unroll: int,
    options: ScanOptions,
) -> tuple[PyTree, Array]:
    """The parallel form with the kernel registry's signature (see ``Kernel.run``)."""
    del unroll, options  # no loop to unroll; remat is refused by layer_unsupported_reason
    if xs.shape[0] == 0:  # nothing to scan: the carry passes through
        return carry, jnp.zeros(xs.shape[:-1] + (cell.output_size,), carry.h.dtype)
    xps = cell.project_inputs(params, xs)
    log_a, log_b = cell.log_coefficients(xps)
    final, hs = linear_scan(log_a, log_b, carry.h, mask, reverse=reverse)
    return type(carry)(h=final.astype(carry.h.dtype)), hs.astype(carry.h.dtype)
