"""CTC loss over :func:`optax.ctc_loss`, frame posteriors and the best (Viterbi) alignment.

Every function takes the usual padded-batch form: ``logits [B, T, V]`` with integer
``logit_lengths [B]`` and, where labels are involved, ``labels [B, L]`` with integer
``label_lengths [B]``. Frames at or after a sequence's length and labels at or after its label
length are ignored, whatever they hold; no padding masks are needed.

A labelling of ``L`` labels with ``R`` adjacent repeats (``"aab"`` has one) needs at least
``L + R`` frames, because CTC must put a blank between two equal labels. Shorter inputs have
probability zero: their loss is ``inf`` (as PyTorch's) unless ``zero_infinity=True``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from seqjax import _checks
from seqjax.typing import Array

__all__ = ["Alignment", "best_alignment", "ctc_loss", "frame_posteriors"]


# -- validation shared by every CTC function ------------------------------------------------


def _integer_vector(name: str, value: Any, batch: int) -> Array:
    x = _checks.array_like(name, value)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")
    if x.shape != (batch,):
        raise ValueError(f"{name} must have shape [B] = ({batch},), got {tuple(x.shape)}")
    return x.astype(jnp.int32)


def _in_range(name: str, x: Array, upper: int, what: str) -> None:
    if _checks.is_concrete(x) and x.size:
        lo, hi = int(jnp.min(x)), int(jnp.max(x))
        if lo < 0 or hi > upper:
            raise ValueError(
                f"{name} must lie in [0, {upper}] ({what}), got values in [{lo}, {hi}]"
            )


def check_logits(logits: Any, logit_lengths: Any, blank: Any) -> tuple[Array, Array, int]:
    """Validates ``logits [B, T, V]``, ``logit_lengths [B]`` and ``blank``; returns them."""
    logits = _checks.array_like("logits", logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape [B, T, V], got shape {tuple(logits.shape)}")
    _checks.floating("logits", logits)
    batch, time, vocab = logits.shape
    if time < 1 or vocab < 1:
        raise ValueError(f"logits need at least one frame and one class, got shape {logits.shape}")
    blank = _checks.index("blank", blank)
    if not 0 <= blank < vocab:
        raise ValueError(f"blank must be a class index in [0, {vocab}), got {blank}")
    logit_lengths = _integer_vector("logit_lengths", logit_lengths, batch)
    _in_range("logit_lengths", logit_lengths, time, "T = logits.shape[1]")
    return logits, logit_lengths, blank


def check_labels(labels: Any, label_lengths: Any, batch: int, vocab: int, blank: int):
    """Validates ``labels [B, L]`` and ``label_lengths [B]`` against the logits; returns them."""
    labels = _checks.array_like("labels", labels)
    if labels.ndim != 2 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape [B, L] with B = {batch}, got {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    label_lengths = _integer_vector("label_lengths", label_lengths, batch)
    _in_range("label_lengths", label_lengths, labels.shape[1], "L = labels.shape[1]")
    labels = labels.astype(jnp.int32)
    if _checks.is_concrete(labels) and _checks.is_concrete(label_lengths):
        lab = np.asarray(labels)
        valid = np.arange(lab.shape[1])[None] < np.asarray(label_lengths)[:, None]
        bad = valid & ((lab < 0) | (lab >= vocab) | (lab == blank))
        if bad.any():
            b, n = np.argwhere(bad)[0]
            raise ValueError(
                f"labels[{b}, {n}] = {lab[b, n]}: labels within label_lengths must be class "
                f"indices in [0, {vocab}) other than blank = {blank}"
            )
    return labels, label_lengths


def compute_dtype(logits: Array) -> Any:
    # Half-precision logits are upcast: the forward recursion sums hundreds of log terms.
    return jnp.float32 if jnp.finfo(logits.dtype).bits < 32 else logits.dtype


def _valid(lengths: Array, size: int) -> Array:
    return jnp.arange(size, dtype=jnp.int32)[None, :] < lengths[:, None]


def min_frames(labels: Array, label_lengths: Array) -> Array:
    """``[B]`` fewest frames that can emit each labelling: its length plus its adjacent repeats."""
    valid = _valid(label_lengths, labels.shape[1])
    repeats = (labels[:, 1:] == labels[:, :-1]) & valid[:, 1:]
    return label_lengths + jnp.sum(repeats, axis=1, dtype=jnp.int32)


# -- the loss -------------------------------------------------------------------------------


def ctc_loss(
    logits: Array,
    logit_lengths: Array,
    labels: Array,
    label_lengths: Array,
    *,
    blank: int = 0,
    reduction: str = "none",
    zero_infinity: bool = False,
) -> Array:
    """Connectionist temporal classification loss (Graves et al. 2006), as PyTorch defines it.

    The negative log-probability of each labelling summed over all its alignments, computed by
    :func:`optax.ctc_loss` (its padding masks are built here from the lengths). Infeasible rows
    (fewer frames than the labelling needs, see the module docstring) give ``inf`` instead of
    optax's large finite stand-in, and their gradient is zero (PyTorch's is NaN);
    ``zero_infinity=True`` makes their loss 0.

    Args:
      logits: ``[B, T, V]`` unnormalised scores (log-softmax is applied here); half precision is
        computed in float32.
      logit_lengths: ``[B]`` integer frames per sequence, in ``[0, T]``.
      labels: ``[B, L]`` integer targets, right-padded (padding values are ignored).
      label_lengths: ``[B]`` integer labels per sequence, in ``[0, L]``.
      blank: index of the blank class.
      reduction: ``"none"`` (per-sequence ``[B]``), ``"sum"``, or ``"mean"``: each loss divided by
        its label length (at least 1), then averaged over the batch, as PyTorch does.
      zero_infinity: replace the loss of infeasible rows by 0.

    Returns:
      ``[B]`` losses for ``reduction="none"``, else a scalar; float32, or float64 for float64
      logits.

    Raises:
      ValueError, TypeError: wrong ranks, shapes or dtypes, a blank outside ``[0, V)``, lengths
        out of range, labels equal to blank or outside ``[0, V)`` (values checked when concrete).

    Example:
      >>> logits = jnp.zeros((1, 3, 3))  # uniform over {blank, a, b}
      >>> loss = ctc_loss(logits, jnp.array([3]), jnp.array([[1, 2]]), jnp.array([2]))
      >>> # 5 of the 27 paths collapse to "ab": aab, abb, _ab, a_b, ab_
      >>> bool(jnp.allclose(loss, -jnp.log(5 / 27)))
      True
    """
    logits, logit_lengths, blank = check_logits(logits, logit_lengths, blank)
    batch, time, vocab = logits.shape
    labels, label_lengths = check_labels(labels, label_lengths, batch, vocab, blank)
    _checks.one_of("reduction", reduction, ("none", "mean", "sum"))
    if not isinstance(zero_infinity, bool):
        raise TypeError(f"zero_infinity must be a bool, got {zero_infinity!r}")

    loss = _per_sequence_loss(logits, logit_lengths, labels, label_lengths, blank, zero_infinity)
    if reduction == "sum":
        return jnp.sum(loss)
    if reduction == "mean":
        return jnp.mean(loss / jnp.maximum(label_lengths, 1).astype(loss.dtype))
    return loss


@functools.partial(jax.jit, static_argnums=(4, 5))
def _per_sequence_loss(logits, logit_lengths, labels, label_lengths, blank, zero_infinity):
    """``[B]`` losses of checked inputs; jitted so that eager calls reuse one compilation."""
    (batch, time, _), dtype = logits.shape, compute_dtype(logits)
    if labels.shape[1] == 0:  # optax needs one label column, padded or not
        labels = jnp.zeros((batch, 1), jnp.int32)
    label_valid = _valid(label_lengths, labels.shape[1])
    labels = jnp.where(label_valid, labels, 0)
    # optax mixes float32 constants into the recursion: standard promotion keeps float64 exact
    # under a strict promotion setting.
    with jax.numpy_dtype_promotion("standard"):
        loss = optax.ctc_loss(
            logits.astype(dtype),
            (~_valid(logit_lengths, time)).astype(dtype),
            labels,
            (~label_valid).astype(dtype),
            blank_id=blank,
        ).astype(dtype)
    infeasible = logit_lengths < min_frames(labels, label_lengths)
    fill = jnp.zeros((), dtype) if zero_infinity else jnp.asarray(jnp.inf, dtype)
    loss = jnp.where(infeasible, fill, loss)
    return loss


# -- posteriors and alignment ---------------------------------------------------------------


def frame_posteriors(logits: Array, logit_lengths: Array) -> Array:
    """Per-frame class probabilities, zero after each sequence's length (for plotting).

    Args:
      logits: ``[B, T, V]`` unnormalised scores.
      logit_lengths: ``[B]`` integer frames per sequence.

    Returns:
      ``[B, T, V]`` softmax over ``V`` at valid frames, zeros elsewhere.

    Raises:
      ValueError, TypeError: wrong shapes, dtypes or lengths.

    Example:
      >>> post = frame_posteriors(jnp.zeros((1, 3, 2)), jnp.array([2]))
      >>> post[0].tolist()
      [[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]]
    """
    logits, logit_lengths, _ = check_logits(logits, logit_lengths, 0)
    probs = jax.nn.softmax(logits.astype(compute_dtype(logits)), axis=-1)
    return jnp.where(_valid(logit_lengths, logits.shape[1])[..., None], probs, 0)


class Alignment(NamedTuple):
    """The most probable CTC path of each sequence (see :func:`best_alignment`).

    Attributes:
      tokens: ``[B, T]`` class emitted at each frame (``blank`` for blank frames, frames after
        the length, and infeasible rows).
      label_index: ``[B, T]`` position in ``labels`` of the label emitted at each frame, ``-1``
        where ``tokens`` is blank.
      log_prob: ``[B]`` log-probability of the path (``-inf`` when infeasible).
    """

    tokens: Array
    label_index: Array
    log_prob: Array


def best_alignment(
    logits: Array,
    logit_lengths: Array,
    labels: Array,
    label_lengths: Array,
    *,
    blank: int = 0,
) -> Alignment:
    """Forced alignment: the single most probable path that collapses to the labels.

    A max-product (Viterbi) pass over the CTC lattice of ``2 L + 1`` states (blank, label 1,
    blank, ..., label L, blank), then a backtrace; both are ``lax.scan`` loops, so the function
    can be jitted. Ties go to staying in a state, then to the nearer predecessor.

    Args:
      logits: ``[B, T, V]`` unnormalised scores.
      logit_lengths: ``[B]`` integer frames per sequence.
      labels: ``[B, L]`` integer targets, right-padded.
      label_lengths: ``[B]`` integer labels per sequence.
      blank: index of the blank class.

    Returns:
      An :class:`Alignment` of ``tokens [B, T]``, ``label_index [B, T]`` and ``log_prob [B]``.

    Raises:
      ValueError, TypeError: as for :func:`ctc_loss`.

    Example:
      >>> logits = jnp.log(jnp.array([[[0.1, 0.8, 0.1], [0.6, 0.3, 0.1],
      ...                               [0.3, 0.1, 0.6], [0.1, 0.1, 0.8]]]))
      >>> ali = best_alignment(logits, jnp.array([4]), jnp.array([[1, 2]]), jnp.array([2]))
      >>> ali.tokens.tolist(), ali.label_index.tolist()
      ([[1, 0, 2, 2]], [[0, -1, 1, 1]])
    """
    logits, logit_lengths, blank = check_logits(logits, logit_lengths, blank)
    batch, time, vocab = logits.shape
    labels, label_lengths = check_labels(labels, label_lengths, batch, vocab, blank)
    return Alignment(*_align(logits, logit_lengths, labels, label_lengths, blank))


@functools.partial(jax.jit, static_argnums=4)
def _align(logits, logit_lengths, labels, label_lengths, blank):
    log_probs = jax.nn.log_softmax(logits.astype(compute_dtype(logits)), axis=-1)
    return jax.vmap(_viterbi, in_axes=(0, 0, 0, 0, None))(
        log_probs, logit_lengths, labels, label_lengths, blank
    )


def _viterbi(lp_TV: Array, length: Array, labels: Array, n_labels: Array, blank: int):
    """One sequence: best path over the extended label sequence, and its backtrace."""
    time = lp_TV.shape[0]
    n_states = 2 * labels.shape[0] + 1
    s = jnp.arange(n_states, dtype=jnp.int32)
    ext = jnp.full((n_states,), blank, jnp.int32).at[1::2].set(labels)
    live = s <= 2 * n_labels
    skip = (s % 2 == 1) & (s >= 2) & (ext != jnp.roll(ext, 2))
    neg = jnp.asarray(-jnp.inf, lp_TV.dtype)
    emit_TS = lp_TV[:, ext]

    def shift(x, k):
        return (
            jnp.concatenate([jnp.full((k,), neg), x[:-k]])
            if k < n_states
            else jnp.full_like(x, neg)
        )

    def forward(delta, inputs):
        emit, t = inputs
        cand = jnp.stack([delta, shift(delta, 1), jnp.where(skip, shift(delta, 2), neg)])
        step = jnp.argmax(cand, axis=0).astype(
            jnp.int32
        )  # first maximum: stay, then s - 1, then s - 2
        new = jnp.where(live, jnp.max(cand, axis=0) + emit, neg)
        active = t < length
        return jnp.where(active, new, delta), jnp.where(active, s - step, s)

    delta0 = jnp.where(s == 0, jnp.zeros((), lp_TV.dtype), neg)  # virtual start before frame 0
    delta, back_TS = lax.scan(forward, delta0, (emit_TS, jnp.arange(time, dtype=jnp.int32)))
    last, before = 2 * n_labels, jnp.maximum(2 * n_labels - 1, 0)
    end = jnp.where((n_labels > 0) & (delta[before] > delta[last]), before, last)
    log_prob = delta[end]

    def backward(state, back_S):
        return back_S[state], state

    _, states = lax.scan(backward, end, back_TS, reverse=True)
    keep = (jnp.arange(time, dtype=jnp.int32) < length) & (states % 2 == 1) & jnp.isfinite(log_prob)
    tokens = jnp.where(keep, ext[states], blank)
    return tokens, jnp.where(keep, (states - 1) // 2, -1), log_prob
