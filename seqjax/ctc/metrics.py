"""Character and word error rates (through ``jiwer``) and label-to-text conversion.

Error rates are corpus-level, as speech papers report them: the total number of edits
(substitutions, deletions, insertions) over all pairs divided by the total reference length,
not a mean of per-utterance rates. ``jiwer`` (install the ``speech`` extra) computes the
alignments; its default transforms strip leading and trailing spaces and, for words, collapse
repeated spaces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["cer", "labels_to_text", "wer"]


def _jiwer():
    try:
        import jiwer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "seqjax.ctc.cer and wer need the 'jiwer' package: pip install 'seqjax[speech]' "
            "(or pip install jiwer)"
        ) from err
    return jiwer


def _pairs(refs: str | Sequence[str], hyps: str | Sequence[str]) -> tuple[list[str], list[str]]:
    refs = [refs] if isinstance(refs, str) else list(refs)
    hyps = [hyps] if isinstance(hyps, str) else list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses")
    for name, texts in (("refs", refs), ("hyps", hyps)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{i}] must be a str, got {type(text).__name__}")
    return refs, hyps


def cer(refs: str | Sequence[str], hyps: str | Sequence[str]) -> float:
    """Character error rate: character edits over reference characters, over the corpus.

    Args:
      refs: reference transcript, or a sequence of them.
      hyps: hypotheses, as many as ``refs``.

    Returns:
      ``(S + D + I) / N`` summed over all pairs (can exceed 1 with many insertions; 0 for an
      empty corpus, and the insertion count when every reference is empty).

    Raises:
      ValueError: different numbers of references and hypotheses.
      TypeError: an entry that is not a string.
      ImportError: ``jiwer`` is not installed.

    Example:
      >>> cer(["40172", "9"], ["4072", "9"])  # one deletion in six characters
      0.166...
    """
    refs, hyps = _pairs(refs, hyps)
    return float(_jiwer().cer(reference=refs, hypothesis=hyps))


def wer(refs: str | Sequence[str], hyps: str | Sequence[str]) -> float:
    """Word error rate: word edits over reference words (words split at spaces), over the corpus.

    Args:
      refs: reference transcript, or a sequence of them.
      hyps: hypotheses, as many as ``refs``.

    Returns:
      ``(S + D + I) / N`` in words, summed over all pairs.

    Raises:
      ValueError: different numbers of references and hypotheses.
      TypeError: an entry that is not a string.
      ImportError: ``jiwer`` is not installed.

    Example:
      >>> wer(["four zero one", "seven"], ["four two one", "seven"])
      0.25
    """
    refs, hyps = _pairs(refs, hyps)
    return float(_jiwer().wer(reference=refs, hypothesis=hyps))


def labels_to_text(labels: ArrayLike, lengths: ArrayLike, alphabet: Sequence[str]) -> list[str]:
    """Joins padded label rows into strings, e.g. the output of a decoder.

    Args:
      labels: ``[B, L]`` integer class indices (or ``[L]`` for one sequence).
      lengths: ``[B]`` labels per row (or a scalar).
      alphabet: the string of each class index (the blank's entry is never used).

    Returns:
      ``B`` strings (a list even for one row).

    Raises:
      ValueError: mismatched shapes, lengths out of range, or an index outside ``alphabet``.

    Example:
      >>> labels_to_text(np.array([[2, 1, 0], [3, 0, 0]]), np.array([2, 1]), "_abc")
      ['ba', 'c']
    """
    rows = np.atleast_2d(np.asarray(labels))
    counts = np.atleast_1d(np.asarray(lengths))
    if rows.ndim != 2 or counts.shape != (rows.shape[0],):
        raise ValueError(
            f"labels must be [B, L] with lengths [B], got {rows.shape} and {counts.shape}"
        )
    if counts.size and (counts.min() < 0 or counts.max() > rows.shape[1]):
        raise ValueError(f"lengths must lie in [0, {rows.shape[1]}], got {counts.tolist()}")
    out = []
    for row, n in zip(rows, counts, strict=True):
        row = row[: int(n)]
        if row.size and (row.min() < 0 or row.max() >= len(alphabet)):
            raise ValueError(f"label indices must lie in [0, {len(alphabet)}), got {row.tolist()}")
        out.append("".join(alphabet[int(i)] for i in row))
    return out
