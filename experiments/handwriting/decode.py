"""Decoding digit lines: greedy and prefix beam search over CTC, error rates, alignments."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.handwriting.config import LinesConfig
from experiments.handwriting.input_pipeline import LineSet, length_bounds, line_image, pad_frames
from experiments.handwriting.model import LinesParams, forward
from seqjax import ctc


@functools.lru_cache(maxsize=8)
def forward_fn(cell, config: LinesConfig):
    """The jitted ``(params, inputs, lengths) -> logits`` of a model."""
    return jax.jit(functools.partial(forward, cell, config))


#: The string of each CTC class: 0 is the blank, digit d is class d + 1.
CLASSES = "_0123456789"


def to_text(labels: np.ndarray, lengths: np.ndarray) -> list[str]:
    """CTC classes (digit + 1) to digit strings."""
    return ctc.labels_to_text(labels, lengths, CLASSES)


def recognize(
    cell,
    config: LinesConfig,
    params: LinesParams,
    lines: list[np.ndarray],
    *,
    beam: int = 0,
    batch_size: int = 64,
    bounds: list[int] | None = None,
) -> list[str]:
    """Digit strings of line images ``[height, W]`` (ink in [0, 1]): greedy or beam search.

    Args:
      cell, config, params: the model.
      lines: the images, each with ``config.height`` rows.
      beam: 0 for greedy (best path) decoding, else the prefix beam width.
      batch_size: lines per forward pass (the last batch is padded with empty rows).
      bounds: allowed padded frame counts (default: multiples of 16 over the longest line).
    """
    if bounds is None:
        bounds = length_bounds(max(x.shape[1] for x in lines), config.cols_per_frame)
    fwd = forward_fn(cell, config)
    out: list[str] = []
    for s in range(0, len(lines), batch_size):
        chunk = lines[s : s + batch_size]
        x, lengths = pad_frames(chunk, config.cols_per_frame, bounds, rows=batch_size)
        logits = fwd(params, jnp.asarray(x), jnp.asarray(lengths))
        if beam <= 0:
            labels, n = ctc.greedy_decode(logits, jnp.asarray(lengths))
        else:
            res = ctc.beam_search(
                logits,
                jnp.asarray(lengths),
                beam_width=beam,
                max_length=max(16, 2 * config.max_digits),
            )
            labels, n = res.labels[:, 0], res.lengths[:, 0]
        out += to_text(np.asarray(labels), np.asarray(n))[: len(chunk)]
    return out


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Character error rate over digits, its substitution, deletion and insertion parts (per
    reference digit, from ``jiwer``'s alignment) and whole-line accuracy (every digit right)."""
    import jiwer  # a dependency of seqjax.ctc.cer already

    kinds = jiwer.process_characters(refs, hyps)
    digits = max(1, sum(len(r) for r in refs))
    return {
        "cer": ctc.cer(refs, hyps),
        "substitutions": kinds.substitutions / digits,
        "deletions": kinds.deletions / digits,
        "insertions": kinds.insertions / digits,
        "line_accuracy": float(np.mean([r == h for r, h in zip(refs, hyps, strict=True)])),
    }


def evaluate_decoders(
    cell, config: LinesConfig, params: LinesParams, ds: LineSet
) -> dict[str, dict[str, float]]:
    """CER and line accuracy of greedy and beam decoding on a set."""
    lines = [line_image(ds, i) for i in range(len(ds))]
    bounds = length_bounds(int(ds.widths.max()), config.cols_per_frame)
    run = functools.partial(recognize, cell, config, params, lines, bounds=bounds)
    return {
        "greedy": error_rates(ds.texts, run()),
        f"beam{config.beam}": error_rates(ds.texts, run(beam=config.beam)),
    }


def posteriors_and_alignment(
    cell, config: LinesConfig, params: LinesParams, image: np.ndarray, text: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """Frame posteriors ``[T, 11]``, the forced alignment ``[T]`` (class per frame) of ``text``
    and the greedy reading of one line."""
    bounds = length_bounds(image.shape[1], config.cols_per_frame)
    x, lengths = pad_frames([image], config.cols_per_frame, bounds)
    logits = forward_fn(cell, config)(params, jnp.asarray(x), jnp.asarray(lengths))
    n = int(lengths[0])
    post = np.asarray(ctc.frame_posteriors(logits, jnp.asarray(lengths)))[0, :n]
    labels = np.array([[int(c) + 1 for c in text]], np.int32)
    ali = ctc.best_alignment(
        logits, jnp.asarray(lengths), jnp.asarray(labels), jnp.asarray([len(text)], jnp.int32)
    )
    greedy, k = ctc.greedy_decode(logits, jnp.asarray(lengths))
    return post, np.asarray(ali.tokens)[0, :n], to_text(np.asarray(greedy), np.asarray(k))[0]
