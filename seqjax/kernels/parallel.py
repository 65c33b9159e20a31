"""Two fast forms of linear recurrences ``h_t = a_t * h_{t-1} + b_t`` (minimal RNNs).

For a cell whose gates depend on the input only (:class:`seqjax.MinGRU`,
:class:`seqjax.MinLSTM`), the step is an affine map of the state. Two kernels use that:

``"parallel"`` (:func:`run_layer`): affine maps compose associatively, applying ``(a_1, b_1)``
then ``(a_2, b_2)`` is ``(a_1 a_2, a_2 b_1 + b_2)``, so ``jax.lax.associative_scan`` computes
every prefix composition in O(log T) depth. As in Feng et al. (2024) the scan runs in log space
(``a, b > 0``), where composition is ``(la_1 + la_2, logaddexp(lb_1 + la_2, lb_2))``: no product
of many gates underflows before it is combined. The initial carry then enters linearly,
``h_t = A_t h_0 + B_t``, so it may have any sign.

``"sequential"`` (:func:`run_sequential`): the step-by-step recurrence, reorganised for a CPU.
Time is cut into chunks of ``SEQUENTIAL_CHUNK`` steps; per chunk, one input-projection matmul
and the gate math for all its steps at once, then the chunk's recurrence (one multiply-add per
step, in the same linear-space form and dtypes as ``cell.step``, so it is exactly as stable).
A hand-written backward keeps only the carries at chunk starts: it recomputes each chunk's
projection, gates and states, runs the reverse recurrence ``dh_t = g_t + a_{t+1} dh_{t+1}``
(itself linear) and adds the chunk's weight gradient. No ``[T, B, 2H]`` temporary is ever
allocated: on CPU, fresh large buffers cost more in page faults than the arithmetic on them.

A masked-out step is the identity map ``a = 1, b = 0`` (in the parallel form ``la = 0``, ``lb``
a very negative finite number rather than ``-inf``, whose ``logaddexp`` gradient would be NaN):
the carry passes through and the output there is zero, as in
:func:`seqjax.scan_engine.masked_scan`. ``reverse=True`` runs from the last step to the first.

When ``impl="auto"`` picks which: the parallel form on GPU and TPU, the sequential one on CPU
(see :data:`CPU_RULE`). ``impl="parallel"`` or ``impl="sequential"`` forces one on any
backend; ``impl="reference"`` forces the plain ``lax.scan`` of ``cell.step``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, overload

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.scan_engine import ScanOptions
from seqjax.typing import Array, PyTree

__all__ = [
    "CPU_RULE",
    "SEQUENTIAL_CHUNK",
    "layer_unsupported_reason",
    "linear_scan",
    "run_layer",
    "run_sequential",
    "sequential_scan",
    "sequential_unsupported_reason",
]

#: Why ``impl="auto"`` does not take the parallel form of a minimal RNN on CPU.
CPU_RULE = (
    "on CPU impl='auto' takes the chunked sequential kernel: measured on 2 cores (MinGRU, B=8, "
    "T=4096, H=256, forward+backward) it was faster than the associative scan; force "
    "impl='parallel'"
)

#: Steps per chunk of the sequential kernel (one input-projection matmul per chunk). Measured
#: on 2 cores (MinGRU, B=8, T=4096, H=256, forward+backward): 32, 64 and 128 within noise of
#: each other, 256 slower; and ``unroll=1`` (the default) faster than 8.
SEQUENTIAL_CHUNK = 64

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


# -- the chunked sequential kernel --------------------------------------------------------------


class _SeqConfig(NamedTuple):
    """Static configuration of one :func:`_seq_core` call (hashable)."""

    cell: Any
    chunk: int
    reverse: bool
    unroll: int


def _bcast(m: Array, x: Array) -> Array:
    return jnp.reshape(m, m.shape + (1,) * (x.ndim - m.ndim))


def _chunk_coefficients(cell, params, x: Array, m: Array | None) -> tuple[Array, Array]:
    """``(a, b)`` of a chunk ``x [K, N, I]``; masked steps become the identity ``(1, 0)``."""
    a, b = cell.coefficients(cell.project_inputs(params, x))
    if m is not None:
        a = jnp.where(_bcast(m, a), a, jnp.ones((), a.dtype))
        b = jnp.where(_bcast(m, b), b, jnp.zeros((), b.dtype))
    return a, b


def _recurrence(a: Array, b: Array, h: Array, reverse: bool, unroll: int) -> tuple[Array, Array]:
    """``h_t = a_t h_{t-1} + b_t`` over axis 0 as ``cell.step`` computes it (state in ``h``'s
    dtype, arithmetic in ``a``'s); returns ``(h_last, hs)``."""

    def step(h, ab):
        h = (ab[0] * h.astype(ab[0].dtype) + ab[1]).astype(h.dtype)
        return h, h

    return lax.scan(step, h, (a, b), reverse=reverse, unroll=unroll)


@overload
def _slice(x: Array, start, k: int) -> Array: ...
@overload
def _slice(x: None, start, k: int) -> None: ...
def _slice(x: Array | None, start, k: int) -> Array | None:
    """Steps ``[start, start + k)`` of ``x [T, ...]`` (None stays None: no mask)."""
    return None if x is None else lax.dynamic_slice_in_dim(x, start, k, 0)


def _over_chunks(T: int, K: int, reverse: bool, body, init):
    """Runs ``body(state, start, k)`` over the chunks ``[j K, j K + k)`` of ``T`` steps in the
    processing order of ``reverse``: whole chunks in a loop, a shorter last one outside it."""
    n, rest = divmod(T, K)

    def whole(state):
        return lax.fori_loop(
            0, n, lambda i, s: body(s, (n - 1 - i if reverse else i) * K, K), state
        )

    def tail(state):
        return body(state, n * K, rest) if rest else state

    return whole(tail(init)) if reverse else tail(whole(init))


def _seq_core(config: _SeqConfig, params, h0: Array, xs: Array, mask: Array | None):
    """``(h_final [N, H], ys [T, N, H])`` of the cell over ``xs [T, N, I]``."""
    return _seq_core_fwd(config, params, h0, xs, mask)[0]


seq_core = jax.custom_vjp(_seq_core, nondiff_argnums=(0,))


def _seq_core_fwd(config: _SeqConfig, params, h0, xs, mask):
    cell, K = config.cell, config.chunk
    T, N = xs.shape[:2]
    ys = jnp.zeros((T, N, cell.output_size), h0.dtype)
    starts = jnp.zeros((-(-T // K), N, cell.output_size), h0.dtype)

    def body(state, start, k):
        h, ys, starts = state
        m = _slice(mask, start, k)
        a, b = _chunk_coefficients(cell, params, _slice(xs, start, k), m)
        h_end, hs = _recurrence(a, b, h, config.reverse, config.unroll)
        if m is not None:
            hs = jnp.where(_bcast(m, hs), hs, jnp.zeros((), hs.dtype))
        starts = lax.dynamic_update_index_in_dim(starts, h, start // K, 0)
        return h_end, lax.dynamic_update_slice_in_dim(ys, hs, start, 0), starts

    h_end, ys, starts = _over_chunks(T, K, config.reverse, body, (h0, ys, starts))
    return (h_end, ys), (params, starts, xs, mask)


def _seq_core_bwd(config: _SeqConfig, residuals, cotangents):
    params, starts, xs, mask = residuals
    d_final, dys = cotangents
    cell, K = config.cell, config.chunk
    zero_dparams = jax.tree_util.tree_map(jnp.zeros_like, params)

    def body(state, start, k):
        d, dparams, dxs = state
        m = _slice(mask, start, k)
        h_start = lax.dynamic_index_in_dim(starts, start // K, 0, keepdims=False)
        (a, b), pull = jax.vjp(
            lambda p, x: _chunk_coefficients(cell, p, x, m), params, _slice(xs, start, k)
        )
        _, hs = _recurrence(a, b, h_start, config.reverse, config.unroll)
        h0 = h_start[None].astype(hs.dtype)  # the state before the chunk's first step
        h_prev = jnp.concatenate([hs[1:], h0] if config.reverse else [h0, hs[:-1]])
        g = _slice(dys, start, k).astype(a.dtype)
        if m is not None:
            g = jnp.where(_bcast(m, g), g, jnp.zeros((), g.dtype))

        def step(d_next, inp):  # d_next: gradient reaching h_t from the later steps
            a_t, g_t = inp
            dh = g_t + d_next
            return a_t * dh, dh

        d_start, dh = lax.scan(
            step, d.astype(a.dtype), (a, g), reverse=not config.reverse, unroll=config.unroll
        )
        dp, dx = pull((dh * h_prev.astype(dh.dtype), dh))
        dparams = jax.tree_util.tree_map(lambda s, t: s + t.astype(s.dtype), dparams, dp)
        dxs = lax.dynamic_update_slice_in_dim(dxs, dx.astype(dxs.dtype), start, 0)
        return d_start.astype(d.dtype), dparams, dxs

    T = xs.shape[0]
    # dxs is dropped by XLA when the inputs need no gradient (the first layer of a model)
    init = (d_final, zero_dparams, jnp.zeros_like(xs))
    dh0, dparams, dxs = _over_chunks(T, K, not config.reverse, body, init)
    return dparams, dh0, dxs, None


seq_core.defvjp(_seq_core_fwd, _seq_core_bwd)


def sequential_scan(
    cell,
    params: PyTree,
    h0: Array,
    xs: Array,
    mask: Array | None = None,
    *,
    reverse: bool = False,
    chunk: int = SEQUENTIAL_CHUNK,
    unroll: int = 1,
) -> tuple[Array, Array]:
    """A minimal RNN over ``xs`` by the chunked sequential kernel (see the module docstring).

    Equal to the reference ``lax.scan`` of ``cell.step`` in value and gradient; reverse-mode
    differentiable only (a custom VJP).

    Args:
      cell: a :class:`seqjax.MinGRU` or :class:`seqjax.MinLSTM` (anything with
        ``project_inputs``, ``coefficients`` and ``output_size``).
      params: its parameters.
      h0: initial state ``[*B, H]``.
      xs: inputs ``[T, *B, I]`` (time-major).
      mask: ``[T, *B]`` booleans (False: the identity step, output zero) or None.
      reverse: run from ``T - 1`` down to 0 (outputs stay in input order).
      chunk: steps per chunk (a positive int).
      unroll: steps per iteration of the recurrence loops (a positive int).

    Returns:
      ``(h_final [*B, H], ys [T, *B, H])`` in ``h0``'s dtype, ``ys`` zero where masked.

    Raises:
      ValueError: ``chunk`` or ``unroll`` is not a positive int.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.MinGRU(4)
      >>> params = cell.init(jax.random.key(0), 3)
      >>> xs = jax.random.normal(jax.random.key(1), (10, 2, 3))
      >>> h, ys = sequential_scan(cell, params, jnp.zeros((2, 4)), xs, chunk=4)
      >>> _, ys_ref = seqjax.scan(cell, params, xs, time_major=True, impl="reference")
      >>> ys.shape, bool(jnp.allclose(ys, ys_ref, atol=1e-6))
      ((10, 2, 4), True)
    """
    for name, v in (("chunk", chunk), ("unroll", unroll)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    T, batch_shape = xs.shape[0], xs.shape[1:-1]
    if T == 0:  # nothing to scan: the carry passes through
        return h0, jnp.zeros(xs.shape[:-1] + (cell.output_size,), h0.dtype)
    N = 1
    for n in batch_shape:
        N *= n
    flat_mask = None if mask is None else jnp.reshape(mask, (T, N))
    config = _SeqConfig(cell, min(chunk, T), reverse, unroll)
    h_final, ys = seq_core(
        config, params, jnp.reshape(h0, (N, -1)), jnp.reshape(xs, (T, N, -1)), flat_mask
    )
    return h_final.reshape(h0.shape), ys.reshape((T,) + batch_shape + (-1,))


def sequential_unsupported_reason(
    cell, xs: Array, mask: Array | None, *, reverse: bool, options: ScanOptions
) -> str | None:
    """Why the sequential kernel cannot run this layer: never (any mask, direction, remat).

    ``remat`` is accepted and changes nothing: the kernel already keeps only the carries at chunk
    starts and recomputes each chunk in the backward pass.
    """
    del cell, xs, mask, reverse, options
    return None


def run_sequential(
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
    """:func:`sequential_scan` with the kernel registry's signature (see ``Kernel.run``)."""
    del options  # remat: the kernel recomputes chunks anyway
    h, ys = sequential_scan(cell, params, carry.h, xs, mask, reverse=reverse, unroll=unroll)
    return type(carry)(h=h), ys
