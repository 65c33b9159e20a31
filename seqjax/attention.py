"""Attention over a memory with lengths: additive, dot and general scores.

Scores between a query ``q [*B, Q]`` and a memory ``m [*B, S, M]`` of ``S`` positions:

.. math::

    \\text{additive (Bahdanau et al. 2015):}\\quad & e_s = v^\\top \\tanh(W_q q + W_m m_s) \\\\
    \\text{dot (Luong et al. 2015):}\\quad & e_s = q^\\top m_s \\quad (Q = M) \\\\
    \\text{general (Luong et al. 2015):}\\quad & e_s = q^\\top W m_s

The weights are a softmax of ``e`` over the *valid* positions only (padding gets exactly zero
weight; a memory of length 0 gives all-zero weights and a zero context, never NaN), and the
context is ``c = sum_s a_s m_s``. Everything that depends on the memory alone (``W_m m`` and
``W^T m``) is computed once per sequence by :meth:`Attention.precompute`, not at every step.

The attentional decoder cell built on these scores is
:class:`seqjax.attention_decoder.AttentionDecoder`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from seqjax import _checks
from seqjax.cells.base import glorot_uniform
from seqjax.typing import Array, DType, PRNGKey

__all__ = [
    "Attention",
    "AttentionMemory",
    "AttentionParams",
    "doubly_stochastic_penalty",
    "masked_softmax",
]

SCORES = ("additive", "dot", "general")


class AttentionParams(NamedTuple):
    """Parameters of :class:`Attention`; absent ones are None.

    Attributes:
      w_query: ``[Q, A]`` (additive) or ``[Q, M]`` (general ``W``); None for dot.
      w_memory: ``[M, A]`` (additive only).
      v: ``[A]`` (additive only).
    """

    w_query: Array | None = None
    w_memory: Array | None = None
    v: Array | None = None


class AttentionMemory(NamedTuple):
    """A memory prepared for attention by :meth:`Attention.precompute`.

    Attributes:
      values: the memory ``[*B, S, M]``, zero at padded positions.
      keys: what the scores read, ``[*B, S, K]``: ``W_m m`` (additive, ``K = A``), ``m W^T``
        (general, ``K = Q``) or ``m`` itself (dot).
      mask: ``[*B, S]`` booleans, True at valid positions.
    """

    values: Array
    keys: Array
    mask: Array


def masked_softmax(scores: Array, mask: Array) -> Array:
    """Softmax over the last axis restricted to ``mask``; masked entries get exactly 0.

    A row with no valid entry gives all zeros (no NaN, in value or gradient).

    Args:
      scores: ``[..., S]`` floating point.
      mask: ``[..., S]`` booleans.

    Returns:
      ``[..., S]`` weights summing to 1 over the valid entries of each row (0 for empty rows).

    Example:
      >>> import jax.numpy as jnp
      >>> from seqjax.attention import masked_softmax
      >>> masked_softmax(jnp.array([0.0, 0.0, 5.0]), jnp.array([True, True, False])).tolist()
      [0.5, 0.5, 0.0]
    """
    top = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1, keepdims=True)
    top = lax.stop_gradient(jnp.where(jnp.isfinite(top), top, jnp.zeros((), top.dtype)))
    # exp of a where-guarded argument: the unselected branch must stay finite for the gradient
    z = jnp.where(mask, scores - top, jnp.zeros((), scores.dtype))
    e = jnp.where(mask, jnp.exp(z), jnp.zeros((), scores.dtype))
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total > 0, total, jnp.ones((), total.dtype))


def _field(params: AttentionParams, name: str) -> Array:
    value = getattr(params, name)
    if value is None:
        raise ValueError(
            f"AttentionParams.{name} is None, but this score needs it (parameters made for "
            "another score?)"
        )
    return value


def _memory_mask(memory: Array, lengths: Any, mask: Any) -> Array:
    batch, S = tuple(memory.shape[:-2]), memory.shape[-2]
    if lengths is not None and mask is not None:
        raise ValueError("pass either lengths or mask for the memory, not both")
    if lengths is not None:
        lengths = _checks.array_like("lengths", lengths)
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"memory lengths must be integers, got dtype {lengths.dtype}")
        if tuple(lengths.shape) != batch:
            raise ValueError(
                f"memory lengths must have the batch shape {batch}, got {tuple(lengths.shape)}"
            )
        return jnp.arange(S, dtype=lengths.dtype) < lengths[..., None]
    if mask is not None:
        mask = _checks.array_like("mask", mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"memory mask must be boolean, got dtype {mask.dtype}")
        if tuple(mask.shape) != batch + (S,):
            raise ValueError(f"memory mask must have shape {batch + (S,)}, got {mask.shape}")
        return mask
    return jnp.ones(batch + (S,), jnp.bool_)


@dataclasses.dataclass(frozen=True)
class Attention:
    """Attention scores over a memory: additive, dot or general (see the module docstring).

    Attributes:
      score: ``"additive"`` (Bahdanau, "concat" in Luong et al.), ``"dot"`` or ``"general"``.
      hidden_size: ``A``, the hidden size of the additive score (required there, else None).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from seqjax.attention import Attention
      >>> att = Attention("additive", hidden_size=8)
      >>> params = att.init(jax.random.key(0), query_size=4, memory_size=6)
      >>> memory = att.precompute(params, jnp.ones((2, 5, 6)), lengths=jnp.array([5, 2]))
      >>> context, weights = att(params, memory, jnp.ones((2, 4)))
      >>> context.shape, weights[1].tolist()
      ((2, 6), [0.5, 0.5, 0.0, 0.0, 0.0])
    """

    score: str = "additive"
    hidden_size: int | None = None

    def __post_init__(self):
        _checks.one_of("Attention.score", self.score, SCORES)
        if self.score == "additive":
            _checks.positive_int("Attention.hidden_size (additive)", self.hidden_size)
        elif self.hidden_size is not None:
            raise ValueError(
                f"Attention.hidden_size is the additive score's size; {self.score!r} has none "
                f"(got {self.hidden_size})"
            )

    def init(
        self, key: PRNGKey, query_size: int, memory_size: int, dtype: DType = jnp.float32
    ) -> AttentionParams:
        """Creates the score's parameters (Glorot-uniform matrices).

        Args:
          key: a ``jax.random`` key.
          query_size: ``Q``, features of the query.
          memory_size: ``M``, features of each memory position.
          dtype: parameter dtype.

        Returns:
          :class:`AttentionParams`.

        Raises:
          ValueError: dot attention with ``Q != M``, or non-positive sizes.
        """
        _checks.positive_int("query_size", query_size)
        _checks.positive_int("memory_size", memory_size)
        if self.score == "dot":
            if query_size != memory_size:
                raise ValueError(
                    f"dot attention needs the query size to equal the memory size, got "
                    f"query {query_size} and memory {memory_size} (use 'general' or 'additive')"
                )
            return AttentionParams()
        if self.score == "general":
            return AttentionParams(w_query=glorot_uniform(key, (query_size, memory_size), dtype))
        k_q, k_m, k_v = jax.random.split(key, 3)
        A = self.hidden_size
        return AttentionParams(
            w_query=glorot_uniform(k_q, (query_size, A), dtype),
            w_memory=glorot_uniform(k_m, (memory_size, A), dtype),
            v=glorot_uniform(k_v, (A, 1), dtype)[:, 0],
        )

    def memory_size_of(self, params: AttentionParams) -> int | None:
        """The ``M`` that ``params`` were made for (None for dot: it has no parameters)."""
        if self.score == "additive":
            return int(_field(params, "w_memory").shape[0])
        if self.score == "general":
            return int(_field(params, "w_query").shape[1])
        return None

    def precompute(
        self,
        params: AttentionParams,
        memory: Array,
        lengths: Array | None = None,
        *,
        mask: Array | None = None,
    ) -> AttentionMemory:
        """Prepares a memory once per sequence: padding zeroed, keys projected, mask built.

        Args:
          params: from :meth:`init`.
          memory: ``[*B, S, M]`` floating point (e.g. encoder outputs).
          lengths: integer valid lengths ``[*B]``; positions ``>= length`` are padding.
          mask: boolean ``[*B, S]`` validity, instead of ``lengths``. Neither: all valid.

        Returns:
          :class:`AttentionMemory`.

        Raises:
          TypeError: non-floating memory, non-integer lengths, non-boolean mask.
          ValueError: memory rank < 2, a feature size that differs from the parameters',
            lengths/mask of the wrong shape, both lengths and mask.
        """
        memory = _checks.array_like("memory", memory)
        _checks.floating("memory", memory)
        if memory.ndim < 2:
            raise ValueError(f"memory must be [*B, S, M], got shape {tuple(memory.shape)}")
        M = self.memory_size_of(params)
        if M is not None:
            _checks.feature_size("memory", memory, M)
        valid = _memory_mask(memory, lengths, mask)
        values = jnp.where(valid[..., None], memory, jnp.zeros((), memory.dtype))
        if self.score == "additive":
            keys = values @ _field(params, "w_memory").astype(values.dtype)
        elif self.score == "general":
            keys = values @ _field(params, "w_query").astype(values.dtype).T
        else:
            keys = values
        return AttentionMemory(values=values, keys=keys, mask=valid)

    def scores(self, params: AttentionParams, memory: AttentionMemory, query: Array) -> Array:
        """Unnormalised scores ``e [*B, S]`` of ``query [*B, Q]`` against every position."""
        if self.score == "additive":
            q = query @ _field(params, "w_query").astype(query.dtype)
            hidden = jnp.tanh(memory.keys + q[..., None, :].astype(memory.keys.dtype))
            return hidden @ _field(params, "v").astype(hidden.dtype)
        return jnp.einsum("...sk,...k->...s", memory.keys, query.astype(memory.keys.dtype))

    def __call__(
        self, params: AttentionParams, memory: AttentionMemory, query: Array
    ) -> tuple[Array, Array]:
        """Attends with ``query`` over a prepared memory.

        Args:
          params: from :meth:`init`.
          memory: from :meth:`precompute`, ``values [*B, S, M]``.
          query: ``[*B, Q]``, with the memory's batch shape.

        Returns:
          ``(context [*B, M], weights [*B, S])``; weights are 0 on padding.

        Raises:
          ValueError: the query's batch shape or feature size does not fit.
        """
        batch = tuple(memory.values.shape[:-2])
        if tuple(query.shape[:-1]) != batch:
            raise ValueError(
                f"query batch shape {tuple(query.shape[:-1])} differs from the memory's {batch} "
                "(tile the memory for beams with seqjax.decode.tile_beams)"
            )
        if self.score == "additive":
            expected_q = _field(params, "w_query").shape[0]
        else:
            expected_q = memory.keys.shape[-1]
        _checks.feature_size("query", query, int(expected_q))
        weights = masked_softmax(self.scores(params, memory, query), memory.mask)
        context = jnp.einsum("...s,...sm->...m", weights.astype(memory.values.dtype), memory.values)
        return context, weights


def doubly_stochastic_penalty(
    weights: Array, mask: Array | None = None, *, target: float = 1.0
) -> Array:
    """Xu et al. (2015)'s doubly stochastic attention regulariser ``sum_s (target - sum_t a_ts)^2``.

    Encourages every memory position (image region) to receive, over the whole output, a total
    attention of ``target``. Multiply by ``lambda`` and add to the loss.

    Args:
      weights: attention weights ``[*B, T, S]`` (zero at padded target steps, as
        :func:`seqjax.attention_decoder.scan_with_weights` returns them).
      mask: ``[*B, S]`` valid memory positions (e.g. ``params.memory.mask``); None: all valid.
      target: the total attention each position should receive.

    Returns:
      The penalty per sequence, ``[*B]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from seqjax.attention import doubly_stochastic_penalty
      >>> w = jnp.array([[[1.0, 0.0], [1.0, 0.0]]])          # both steps look at position 0
      >>> doubly_stochastic_penalty(w).tolist()               # (1 - 2)^2 + (1 - 0)^2
      [2.0]
    """
    total = jnp.sum(weights, axis=-2)
    sq = jnp.square(jnp.asarray(target, total.dtype) - total)
    if mask is not None:
        sq = jnp.where(mask, sq, jnp.zeros((), sq.dtype))
    return jnp.sum(sq, axis=-1)
