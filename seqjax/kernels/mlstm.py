r"""The parallel and chunk-wise forms of the mLSTM (:class:`seqjax.MLSTM`).

The mLSTM's gates see the input only, so its state after step ``t`` is a weighted sum over the
steps ``j <= t`` and the initial state. Per head, with ``F_t = \sum_{l \le t} \log f_l``:

.. math::

    \log D_{tj} = \tilde\imath_j + F_t - F_j \;(j \le t), \qquad
    \log g_t = m_0 + F_t \;(\text{the initial state } C_0, n_0, m_0), \\
    m_t = \max(\log g_t, \max_j \log D_{tj}), \qquad
    \tilde h_t = \frac{e^{\log g_t - m_t} C_0^\top q_t + \sum_j e^{\log D_{tj} - m_t}
        (q_t \cdot k_j) v_j}{\max(|e^{\log g_t - m_t} n_0^\top q_t + \sum_j e^{\log D_{tj} - m_t}
        (q_t \cdot k_j)|,\; e^{-m_t}) + \epsilon}

:func:`mlstm_block` computes this for a block of steps (one ``[T, T]`` matrix per head). ``m_t``
is exactly the recurrent form's stabiliser (its recursion unrolled, the initial state included
as one more column), so all three forms compute the same numbers up to rounding, ``eps``
included, and the state after the block (``C_T, n_T, m_T``) is the step's carry.

- ``impl="parallel"`` (:func:`run_parallel`): one block over the whole sequence, O(T^2 D) work
  and memory per head, depth independent of T.
- ``impl="chunkwise"`` (:func:`run_chunkwise`): the sequence cut into chunks of
  ``cell.chunk_size`` steps, :func:`mlstm_block` within a chunk, ``lax.scan`` over chunks
  carrying ``(C, n, m)``: O(T L D + T D^2) work, T / L sequential steps.

A masked-out step has ``\log f = 0`` and ``\tilde\imath = -\infty``: it adds nothing and forgets
nothing, so the carry passes through it, exactly as in :func:`seqjax.scan_engine.masked_scan`;
its output is zero. ``reverse=True`` runs the flipped sequence. ``-inf`` only enters as a
constant through ``jnp.where`` and is only ever exponentiated (to 0), never subtracted from
itself, so values and gradients stay finite; ``m_t`` is finite because the initial-state column
always is.

When ``impl="auto"`` picks which: see :data:`AUTO_RULE`.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from seqjax.scan_engine import ScanOptions
from seqjax.typing import Array, PyTree

__all__ = [
    "AUTO_RULE",
    "chunkwise_unsupported_reason",
    "mlstm_block",
    "parallel_unsupported_reason",
    "run_chunkwise",
    "run_parallel",
]

#: How ``impl="auto"`` chooses among the mLSTM's forms. Measured on a 2-core CPU (load average
#: about 14, forward+backward, best of 3): B=8, H=64, 4 heads, T=16 / 256 / 1,024 / 4,096:
#: step 2.3 / 109 / 446 / 2,304 ms, chunk-wise (chunks of 64) 0.8 / 46 / 139 / 808 ms,
#: parallel 0.6 / 69 / 2,328 ms / (not run); B=8, H=256, T=512: step 2.7 s, chunk-wise 0.36 s,
#: parallel 0.72 s. The chunk-wise form wins or ties everywhere (for T <= chunk_size it is the
#: parallel form in one block), so the rule needs no length test; GPU and TPU were not
#: measured, and the same rule applies there (the chunk-wise form also bounds memory in T).
AUTO_RULE = (
    "impl='auto' runs the chunk-wise form of an MLSTM on every backend and for every length "
    "(the step-by-step form when remat is set); the quadratic parallel form only when forced "
    "with impl='parallel'"
)


def mlstm_block(
    q: Array,
    k: Array,
    v: Array,
    log_i: Array,
    log_f: Array,
    c0: Array,
    n0: Array,
    m0: Array,
    eps: float,
) -> tuple[Array, Array, tuple[Array, Array, Array]]:
    """The mLSTM over a block of ``L`` steps from the state ``(c0, n0, m0)``, in parallel.

    Args:
      q: queries ``[..., L, D]``.
      k: keys (already divided by ``sqrt(D)``) ``[..., L, D]``.
      v: values ``[..., L, D]``.
      log_i: input-gate pre-activations ``[..., L]`` (``-inf`` at masked steps).
      log_f: log forget gates ``[..., L]`` (0 at masked steps).
      c0: initial memory ``[..., D, D]`` (keys by values).
      n0: initial normaliser ``[..., D]``.
      m0: initial stabiliser ``[...]``.
      eps: added to the denominator.

    Returns:
      ``(num [..., L, D], den [..., L], (c, n, m))``: ``h~ = num / den[..., None]`` and the
      state after the block.

    Example:
      >>> import jax.numpy as jnp
      >>> L, D = 3, 2
      >>> q = k = v = jnp.ones((L, D))
      >>> num, den, (c, n, m) = mlstm_block(
      ...     q, k, v, jnp.zeros(L), jnp.zeros(L), jnp.zeros((D, D)), jnp.zeros(D), 0.0, 0.0)
      >>> (num / den[:, None])[:, 0]   # f = 1, i = 1: the running mean of v
      Array([1., 1., 1.], dtype=float32)
    """
    L = q.shape[-2]
    F = jnp.cumsum(log_f, axis=-1)
    log_d = log_i[..., None, :] + F[..., :, None] - F[..., None, :]  # [..., t, j]
    causal = jnp.tril(jnp.ones((L, L), bool))
    log_d = jnp.where(causal, log_d, -jnp.inf)
    log_g = jnp.asarray(m0)[..., None] + F  # [..., L]
    m = lax.stop_gradient(jnp.maximum(log_g, jnp.max(log_d, axis=-1)))
    d = jnp.exp(log_d - m[..., None])
    g = jnp.exp(log_g - m)
    s = jnp.einsum("...td,...jd->...tj", q, k) * d
    num = g[..., None] * jnp.einsum("...td,...de->...te", q, c0) + jnp.einsum(
        "...tj,...je->...te", s, v
    )
    qn = g * jnp.einsum("...td,...d->...t", q, n0) + jnp.sum(s, axis=-1)
    den = jnp.maximum(jnp.abs(qn), jnp.exp(-m)) + jnp.asarray(eps, q.dtype)
    d_last, g_last = d[..., -1, :], g[..., -1]
    c = g_last[..., None, None] * c0 + jnp.einsum("...j,...jd,...je->...de", d_last, k, v)
    n = g_last[..., None] * n0 + jnp.einsum("...j,...jd->...d", d_last, k)
    return num, den, (c, n, m[..., -1])


def _prepare(cell, params, carry, xs, mask, reverse):
    """Projected inputs per head, time on axis -2 (``[*B, NH, T, D]``), and the carry."""
    xps = cell.project_inputs(params, xs)  # [T, *B, K]
    if reverse:
        xps = jnp.flip(xps, 0)
        mask = None if mask is None else jnp.flip(mask, 0)
    s = cell.split(xps)
    log_i, log_f = s.log_i, s.log_f  # [T, *B, NH]
    if mask is not None:
        m = mask[..., None]
        log_i = jnp.where(m, log_i, -jnp.inf)
        log_f = jnp.where(m, log_f, jnp.zeros((), log_f.dtype))

    def heads_time(a):  # [T, *B, NH, D] -> [*B, NH, T, D]
        return jnp.moveaxis(a, 0, -2)

    def gates_time(a):  # [T, *B, NH] -> [*B, NH, T]
        return jnp.moveaxis(a, 0, -1)

    state = cell.unflatten_carry(carry, xps.dtype)
    inputs = (heads_time(s.q), heads_time(s.k), heads_time(s.v))
    inputs += (gates_time(log_i), gates_time(log_f))
    return inputs, state, s.o, mask


def _finish(cell, carry, num, den, state, o, mask, reverse):
    """Outputs ``[T, *B, H]`` (zero where masked, input order) and the final carry."""
    h = num / den[..., None]  # [*B, NH, T, D]
    h = jnp.moveaxis(h, -2, 0)  # [T, *B, NH, D]
    h = h.reshape(h.shape[:-2] + (cell.hidden_size,))
    if o is not None:
        h = o * h
    if mask is not None:
        h = jnp.where(mask[..., None], h, jnp.zeros((), h.dtype))
    if reverse:
        h = jnp.flip(h, 0)
    dt = carry.c.dtype
    return cell.flatten_carry(*state, dt), h.astype(dt)


def _empty(cell, carry, xs):
    return carry, jnp.zeros(xs.shape[:-1] + (cell.output_size,), carry.c.dtype)


def run_parallel(
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
    """The quadratic parallel form, with the kernel registry's signature (``Kernel.run``)."""
    del unroll, options
    if xs.shape[0] == 0:
        return _empty(cell, carry, xs)
    (q, k, v, log_i, log_f), (c0, n0, m0), o, mask = _prepare(
        cell, params, carry, xs, mask, reverse
    )
    num, den, state = mlstm_block(q, k, v, log_i, log_f, c0, n0, m0, cell.eps)
    return _finish(cell, carry, num, den, state, o, mask, reverse)


def run_chunkwise(
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
    """The chunk-wise form (chunks of ``cell.chunk_size`` steps), with ``Kernel.run``'s
    signature. The last chunk is padded with masked steps."""
    del options
    T = xs.shape[0]
    if T == 0:
        return _empty(cell, carry, xs)
    (q, k, v, log_i, log_f), state, o, mask = _prepare(cell, params, carry, xs, mask, reverse)
    L = min(cell.chunk_size, T)
    n_chunks = -(-T // L)
    pad = n_chunks * L - T

    def chunks(a, fill, time_axis):  # time axis -> [n_chunks, ..., L, ...]
        if pad:
            widths = [(0, 0)] * a.ndim
            widths[time_axis] = (0, pad)
            a = jnp.pad(a, widths, constant_values=fill)
        ax = a.ndim + time_axis
        a = a.reshape(a.shape[:ax] + (n_chunks, L) + a.shape[ax + 1 :])
        return jnp.moveaxis(a, ax, 0)

    xs_c = (chunks(q, 0.0, -2), chunks(k, 0.0, -2), chunks(v, 0.0, -2))
    xs_c += (chunks(log_i, -jnp.inf, -1), chunks(log_f, 0.0, -1))

    def body(st, inp):
        q_c, k_c, v_c, li_c, lf_c = inp
        num, den, st = mlstm_block(q_c, k_c, v_c, li_c, lf_c, *st, eps=cell.eps)
        return st, (num, den)

    state, (num, den) = lax.scan(body, state, xs_c, unroll=unroll)

    def unchunk(a, time_axis):  # [n_chunks, ..., L, ...] -> [..., T, ...]
        ax = a.ndim - 1 + time_axis  # index of L once the chunk axis moved back
        a = jnp.moveaxis(a, 0, ax)
        a = a.reshape(a.shape[:ax] + (n_chunks * L,) + a.shape[ax + 2 :])
        return lax.slice_in_dim(a, 0, T, axis=ax)

    num, den = unchunk(num, -2), unchunk(den, -1)
    return _finish(cell, carry, num, den, state, o, mask, reverse)


def parallel_unsupported_reason(
    cell, xs: Array, mask: Array | None, *, reverse: bool, options: ScanOptions
) -> str | None:
    """Why the parallel form does not run this layer (under ``"auto"`` it never does)."""
    del cell, xs, mask, reverse
    if options.remat is not False:
        return "remat is not supported by the parallel form (use impl='reference' with remat)"
    if options.impl == "auto":
        return AUTO_RULE
    return None


def chunkwise_unsupported_reason(
    cell, xs: Array, mask: Array | None, *, reverse: bool, options: ScanOptions
) -> str | None:
    """Why the chunk-wise form does not run this layer (see :data:`AUTO_RULE`)."""
    del cell, xs, mask, reverse
    if options.remat is not False:
        return "remat is not supported by the chunk-wise form (use impl='reference' with remat)"
    return None
