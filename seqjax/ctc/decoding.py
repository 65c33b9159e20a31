"""CTC decoding: best path (greedy) and prefix beam search with optional shallow LM fusion.

Prefix beam search (Graves 2012, ch. 7; Hannun et al. 2014) keeps the ``K`` most probable
*labellings* rather than paths: each hypothesis carries the log-probability of all paths that
collapse to it and end in a blank (``p_b``) or in its last label (``p_nb``). At every frame each
hypothesis either stays (a blank, or a repeat of its last label) or is extended by a label; an
extension that equals another hypothesis is merged into it. With a beam wide enough to hold
every labelling the scores are exact; a narrower beam prunes.

Everything runs in one compiled ``lax.scan`` over time with fixed shapes: prefixes are padded
``[K, T]`` integer arrays and merging compares them exactly (``O(K^2 T)`` work per frame, fine
for character vocabularies and beams up to a few dozen).

Shallow fusion ranks hypotheses by ``log p_ctc + lm_weight * log p_lm + length_bonus * |y|``.
The language model is a :class:`LanguageModel`: an initial state (any pytree), the log-probs of
the first label, and a step ``step(state, token) -> (state, log_probs [V])`` over the CTC
vocabulary (the blank's entry is ignored). :func:`cell_language_model` builds one from a seqjax
cell, an embedding and a readout.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seqjax import _checks
from seqjax.ctc.loss import check_logits, compute_dtype
from seqjax.typing import Array, PyTree

__all__ = [
    "BeamSearchResult",
    "LanguageModel",
    "beam_search",
    "cell_language_model",
    "greedy_decode",
]

_PAD = -1  # prefix padding inside the search; never a class index


def greedy_decode(logits: Array, logit_lengths: Array, *, blank: int = 0) -> tuple[Array, Array]:
    """Best-path decoding: the argmax class per frame, repeats collapsed, blanks removed.

    Fixed output shapes, so it can be jitted (value checks are skipped on traced inputs).

    Args:
      logits: ``[B, T, V]`` scores or log-probabilities.
      logit_lengths: ``[B]`` integer frames per sequence; later frames are ignored.
      blank: index of the blank class.

    Returns:
      ``(labels [B, T], lengths [B])``: int32 labels left-aligned in each row, padded with
      ``blank`` after ``lengths``.

    Raises:
      ValueError, TypeError: wrong shapes, dtypes, lengths or blank.

    Example:
      >>> best = jnp.array([[1, 1, 0, 1, 2, 2, 0]])  # argmax per frame: a a _ a b b _
      >>> labels, lengths = greedy_decode(jax.nn.one_hot(best, 3), jnp.array([7]))
      >>> labels[0, : int(lengths[0])].tolist()
      [1, 1, 2]
    """
    logits, logit_lengths, blank = check_logits(logits, logit_lengths, blank)
    return _greedy(logits, logit_lengths, blank)


@functools.partial(jax.jit, static_argnums=2)
def _greedy(logits: Array, logit_lengths: Array, blank: int) -> tuple[Array, Array]:
    batch, time, _ = logits.shape
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    previous = jnp.concatenate([jnp.full((batch, 1), _PAD, jnp.int32), best[:, :-1]], axis=1)
    keep = (
        (jnp.arange(time, dtype=jnp.int32)[None] < logit_lengths[:, None])
        & (best != blank)
        & (best != previous)
    )
    # Scatter kept frames to their rank; dropped frames go out of range and vanish.
    slot = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, time)
    rows = jnp.broadcast_to(jnp.arange(batch, dtype=jnp.int32)[:, None], (batch, time))
    labels = jnp.full((batch, time), blank, jnp.int32).at[rows, slot].set(best, mode="drop")
    return labels, jnp.sum(keep, axis=1, dtype=jnp.int32)


class LanguageModel(NamedTuple):
    """A label-level language model for shallow fusion in :func:`beam_search`.

    Attributes:
      step: ``step(state, token) -> (state, log_probs)``: feeds one label (an int32 scalar CTC
        class index) and returns the new state and the ``[V]`` log-probabilities of the next
        label over the CTC vocabulary. Called with vmap over hypotheses; a
        ``jax.tree_util.Partial`` carries its parameters as arrays (no recompilation for new
        values); a plain function is a static argument of the compiled search.
      initial_state: the state before the first label (any pytree of arrays).
      initial_log_probs: ``[V]`` log-probabilities of the first label.
    """

    step: Callable[[PyTree, Array], tuple[PyTree, Array]]
    initial_state: PyTree
    initial_log_probs: Array


class BeamSearchResult(NamedTuple):
    """Hypotheses of :func:`beam_search`, best first.

    Attributes:
      labels: ``[B, N, max_length]`` int32 labellings (``max_length`` defaults to ``T``), padded
        with ``blank`` after ``lengths``.
      lengths: ``[B, N]`` int32 label counts.
      scores: ``[B, N]`` fused scores ``ctc + lm_weight * lm + length_bonus * length``
        (``-inf`` marks an empty slot when fewer than ``N`` labellings are reachable).
      ctc_log_probs: ``[B, N]`` CTC log-probabilities of the labellings (over the beam's paths).
      lm_log_probs: ``[B, N]`` language-model log-probabilities (0 without a model).
    """

    labels: Array
    lengths: Array
    scores: Array
    ctc_log_probs: Array
    lm_log_probs: Array


@dataclasses.dataclass(frozen=True)
class _CellLMStep:
    """Step of :func:`cell_language_model`; hashable, so equal cells share a compilation."""

    cell: Any

    def __call__(self, weights, state, token):
        params, embed, w_out, b_out, vocab_map = weights
        state, y = self.cell(params, state, embed[vocab_map[token]])
        return state, jax.nn.log_softmax(y @ w_out + b_out)[vocab_map]


def cell_language_model(
    cell: Any,
    params: PyTree,
    embed: Array,
    w_out: Array,
    b_out: Array,
    *,
    bos: int,
    vocab_map: Array | None = None,
) -> LanguageModel:
    """A :class:`LanguageModel` from a seqjax cell with an embedding and a linear readout.

    The model reads ``embed[token]``, steps the cell and predicts ``y @ w_out + b_out``, the
    layout of a seqjax character LM. It is primed with the ``bos`` token (the separator the
    LM saw before each line in training) from the cell's zero carry.

    Args:
      cell: a seqjax cell (or stack) definition.
      params: its parameters.
      embed: ``[V_lm, E]`` input embedding.
      w_out: ``[O, V_lm]`` readout weights (``O`` the cell's output size).
      b_out: ``[V_lm]`` readout bias.
      bos: LM token fed first.
      vocab_map: ``[V]`` LM token of each CTC class (the blank's entry is ignored but must be a
        valid LM token); default the identity (``V = V_lm``).

    Returns:
      A :class:`LanguageModel` whose step is a ``jax.tree_util.Partial`` over the arrays.

    Raises:
      ValueError: inconsistent shapes or a ``bos`` / ``vocab_map`` outside the LM vocabulary.

    Example:
      >>> import seqjax
      >>> cell = seqjax.GRU(hidden_size=4)
      >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
      >>> lm = cell_language_model(cell, cell.init(k1, 2), jax.random.normal(k2, (3, 2)),
      ...                          jax.random.normal(k3, (4, 3)), jnp.zeros(3), bos=0)
      >>> state, log_probs = lm.step(lm.initial_state, jnp.int32(1))
      >>> log_probs.shape, bool(jnp.allclose(jnp.exp(log_probs).sum(), 1.0))
      ((3,), True)
    """
    embed, w_out, b_out = (
        _checks.array_like(n, a) for n, a in (("embed", embed), ("w_out", w_out), ("b_out", b_out))
    )
    if embed.ndim != 2 or w_out.ndim != 2 or b_out.shape != (w_out.shape[-1],):
        raise ValueError(
            "expected embed [V_lm, E], w_out [O, V_lm], b_out [V_lm], got shapes "
            f"{embed.shape}, {w_out.shape}, {b_out.shape}"
        )
    n_lm = embed.shape[0]
    if w_out.shape[1] != n_lm:
        raise ValueError(f"w_out predicts {w_out.shape[1]} tokens but embed has {n_lm}")
    bos = _checks.index("bos", bos)
    if not 0 <= bos < n_lm:
        raise ValueError(f"bos must be an LM token in [0, {n_lm}), got {bos}")
    vocab_map = (
        jnp.arange(n_lm, dtype=jnp.int32)
        if vocab_map is None
        else _checks.array_like("vocab_map", vocab_map)
    )
    if vocab_map.ndim != 1 or not jnp.issubdtype(vocab_map.dtype, jnp.integer):
        raise ValueError(
            f"vocab_map must be an integer vector [V], got {vocab_map.dtype} {vocab_map.shape}"
        )
    if _checks.is_concrete(vocab_map) and not np.all(
        (np.asarray(vocab_map) >= 0) & (np.asarray(vocab_map) < n_lm)
    ):
        raise ValueError(f"vocab_map entries must be LM tokens in [0, {n_lm})")
    weights = (params, embed, w_out, b_out, vocab_map.astype(jnp.int32))
    state, y = cell(params, cell.initial_carry(batch_shape=()), embed[bos])
    first = jax.nn.log_softmax(y @ w_out + b_out)[vocab_map]
    return LanguageModel(jax.tree_util.Partial(_CellLMStep(cell), weights), state, first)


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, int, float))


def beam_search(
    logits: Array,
    logit_lengths: Array,
    *,
    beam_width: int,
    blank: int = 0,
    top_k: int = 1,
    lm: LanguageModel | None = None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    max_length: int | None = None,
) -> BeamSearchResult:
    """Batched CTC prefix beam search with optional shallow fusion, compiled once per shape.

    Args:
      logits: ``[B, T, V]`` scores or log-probabilities (log-softmax is applied here).
      logit_lengths: ``[B]`` integer frames per sequence.
      beam_width: ``K``, hypotheses kept after each frame.
      blank: index of the blank class.
      top_k: ``N <= K`` hypotheses returned per sequence.
      lm: optional :class:`LanguageModel` over the CTC vocabulary.
      lm_weight: weight of the LM log-probability in the ranking.
      length_bonus: added per label (counters the LM's preference for short outputs).
      max_length: longest labelling considered (default ``T``); smaller values cut the
        ``O(K^2 T)`` prefix comparison.

    Returns:
      A :class:`BeamSearchResult` with ``labels [B, N, max_length]`` and ``[B, N]`` scores.

    Raises:
      ValueError, TypeError: bad shapes, lengths, blank, widths or weights; an LM whose
        log-probabilities are not ``[V]``.

    Example:
      >>> probs = jnp.array([[[0.5, 0.4, 0.1], [0.5, 0.4, 0.1]]])  # greedy says "" (p = .25)
      >>> res = beam_search(jnp.log(probs), jnp.array([2]), beam_width=4, top_k=2)
      >>> res.labels[0, 0, : int(res.lengths[0, 0])].tolist()  # "a": .4*.4 + .4*.5 + .5*.4
      [1]
      >>> [round(p, 2) for p in jnp.exp(res.ctc_log_probs[0]).tolist()]
      [0.56, 0.25]
    """
    logits, logit_lengths, blank = check_logits(logits, logit_lengths, blank)
    batch, time, vocab = logits.shape
    _checks.positive_int("beam_width", beam_width)
    _checks.positive_int("top_k", top_k)
    if top_k > beam_width:
        raise ValueError(f"top_k={top_k} exceeds beam_width={beam_width}")
    _checks.positive_int("max_length", max_length, allow_none=True)
    max_length = time if max_length is None else min(max_length, time)
    for name, value in (("lm_weight", lm_weight), ("length_bonus", length_bonus)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, jax.Array)):
            raise TypeError(f"{name} must be a number, got {value!r}")
    if lm is not None:
        if not isinstance(lm, LanguageModel):
            raise TypeError(f"lm must be a seqjax.ctc.LanguageModel, got {type(lm).__name__}")
        _, lp = jax.eval_shape(lm.step, lm.initial_state, jnp.zeros((), jnp.int32))
        for what, shape in (
            ("step's log_probs", lp.shape),
            ("initial_log_probs", jnp.shape(lm.initial_log_probs)),
        ):
            if tuple(shape) != (vocab,):
                raise ValueError(f"the LM's {what} must have shape [V] = ({vocab},), got {shape}")
    dtype = compute_dtype(logits)
    leaves, treedef = jax.tree_util.tree_flatten(lm)
    dynamic = [x if _is_array(x) else None for x in leaves]
    static = tuple(None if _is_array(x) else x for x in leaves)
    return _beam_search(
        jax.nn.log_softmax(logits.astype(dtype), axis=-1),
        logit_lengths,
        dynamic,
        jnp.asarray(lm_weight, dtype),
        jnp.asarray(length_bonus, dtype),
        beam_width=beam_width,
        top_k=top_k,
        blank=blank,
        max_length=max_length,
        lm_static=(treedef, static),
    )


@functools.partial(
    jax.jit, static_argnames=("beam_width", "top_k", "blank", "max_length", "lm_static")
)
def _beam_search(
    log_probs,
    lengths,
    lm_dynamic,
    lm_weight,
    length_bonus,
    *,
    beam_width,
    top_k,
    blank,
    max_length,
    lm_static,
):
    treedef, static = lm_static
    lm = jax.tree_util.tree_unflatten(
        treedef, [s if d is None else d for d, s in zip(lm_dynamic, static, strict=True)]
    )
    search = functools.partial(
        _search_one,
        lm=lm,
        lm_weight=lm_weight,
        length_bonus=length_bonus,
        beam_width=beam_width,
        top_k=top_k,
        blank=blank,
        max_length=max_length,
    )
    return BeamSearchResult(*jax.vmap(search)(log_probs, lengths))


def _weighted(weight: Array, x: Array) -> Array:
    """``weight * x`` with ``0 * -inf = 0``: a zero weight switches a forbidding LM off."""
    return jnp.where(weight == 0, jnp.zeros_like(x), weight * x)


def _search_one(
    lp_TV, length, *, lm, lm_weight, length_bonus, beam_width, top_k, blank, max_length
):
    """Prefix beam search over one sequence ``lp_TV [T, V]`` of log-probabilities."""
    k_beams, vocab = beam_width, lp_TV.shape[1]
    dtype = lp_TV.dtype
    neg = jnp.asarray(-jnp.inf, dtype)
    tokens = jnp.arange(vocab, dtype=jnp.int32)
    if lm is None:
        lm_state = jnp.zeros((k_beams,), dtype)
        lm_next = jnp.zeros((k_beams, vocab), dtype)
        lm_step = None
    else:
        lm_state = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (k_beams, *jnp.shape(x))), lm.initial_state
        )
        lm_next = jnp.broadcast_to(lm.initial_log_probs.astype(dtype), (k_beams, vocab))
        lm_step = jax.vmap(lm.step)
    init = dict(
        prefix=jnp.full((k_beams, max_length), _PAD, jnp.int32),
        plen=jnp.zeros((k_beams,), jnp.int32),
        last=jnp.full((k_beams,), _PAD, jnp.int32),
        pb=jnp.full((k_beams,), neg).at[0].set(0),
        pnb=jnp.full((k_beams,), neg),
        lm_score=jnp.zeros((k_beams,), dtype),
        lm_state=lm_state,
        lm_next=lm_next,
    )

    def fused(acoustic, lm_score, plen):
        return acoustic + _weighted(lm_weight, lm_score) + length_bonus * plen.astype(dtype)

    def frame(beam, inputs):
        lp, t = inputs
        prefix, plen, last, pb, pnb = (beam[k] for k in ("prefix", "plen", "last", "pb", "pnb"))
        total = jnp.logaddexp(pb, pnb)
        alive = total > neg
        stay_pb = total + lp[blank]
        stay_pnb = jnp.where(plen > 0, pnb + lp[jnp.maximum(last, 0)], neg)
        # Extending by c: from every path, except that a repeat of the last label needs a
        # blank in between (only p_b may be extended).
        ext = jnp.where(tokens[None] == last[:, None], pb[:, None], total[:, None]) + lp[None]
        ext = jnp.where((tokens[None] == blank) | (plen[:, None] >= max_length), neg, ext)
        # Merge: hypothesis j is the extension of k by c when j minus its last label equals k.
        trimmed = jnp.where(
            jnp.arange(max_length, dtype=jnp.int32)[None] == plen[:, None] - 1, _PAD, prefix
        )
        is_child = jnp.all(prefix[:, None, :] == trimmed[None, :, :], axis=-1)  # [k, j]
        is_child &= (plen[None, :] > 0) & alive[None, :] & alive[:, None]
        match = is_child[:, None, :] & (tokens[None, :, None] == last[None, None, :])  # [k,c,j]
        merged = jax.nn.logsumexp(jnp.where(match, ext[:, :, None], neg), axis=(0, 1))
        stay_pnb = jnp.logaddexp(stay_pnb, jnp.where(jnp.any(match, axis=(0, 1)), merged, neg))
        ext = jnp.where(jnp.any(match, axis=2), neg, ext)

        stay_score = fused(jnp.logaddexp(stay_pb, stay_pnb), beam["lm_score"], plen)
        ext_score = fused(ext, beam["lm_score"][:, None] + beam["lm_next"], plen[:, None] + 1)
        _, pick = lax.top_k(jnp.concatenate([stay_score, ext_score.reshape(-1)]), k_beams)
        is_ext = pick >= k_beams
        src = jnp.where(is_ext, (pick - k_beams) // vocab, pick)
        tok = jnp.where(is_ext, (pick - k_beams) % vocab, 0).astype(jnp.int32)
        at_end = jnp.arange(max_length, dtype=jnp.int32)[None] == plen[src][:, None]
        new = dict(
            prefix=jnp.where(is_ext[:, None] & at_end, tok[:, None], prefix[src]),
            plen=plen[src] + is_ext.astype(jnp.int32),
            last=jnp.where(is_ext, tok, last[src]),
            pb=jnp.where(is_ext, neg, stay_pb[src]),
            pnb=jnp.where(is_ext, ext[src, tok], stay_pnb[src]),
            lm_score=beam["lm_score"][src] + jnp.where(is_ext, beam["lm_next"][src, tok], 0),
        )
        parent_state = jax.tree_util.tree_map(lambda x: x[src], beam["lm_state"])
        parent_next = beam["lm_next"][src]
        if lm_step is None:
            new["lm_state"], new["lm_next"] = parent_state, parent_next
        else:
            state, nxt = lm_step(parent_state, tok)

            def pick_leaf(a, b):
                return jnp.where(is_ext.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

            new["lm_state"] = jax.tree_util.tree_map(pick_leaf, state, parent_state)
            new["lm_next"] = jnp.where(is_ext[:, None], nxt.astype(dtype), parent_next)
        active = t < length
        return jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, beam), None

    beam, _ = lax.scan(frame, init, (lp_TV, jnp.arange(lp_TV.shape[0], dtype=jnp.int32)))
    acoustic = jnp.logaddexp(beam["pb"], beam["pnb"])
    scores = fused(acoustic, beam["lm_score"], beam["plen"])
    best, order = lax.top_k(scores, top_k)
    found = acoustic[order] > neg  # empty slots: no labelling left to fill them
    labels = jnp.where(found[:, None], beam["prefix"][order], _PAD)
    return (
        jnp.where(labels == _PAD, blank, labels),
        jnp.where(found, beam["plen"][order], 0),
        best,
        acoustic[order],
        jnp.where(found, beam["lm_score"][order], neg),
    )
