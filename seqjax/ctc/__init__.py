"""Connectionist temporal classification: loss, decoders, alignments and error rates.

The whole path from per-frame scores to text, for models trained with CTC (Graves et al.
2006) such as speech or handwriting recognisers:

.. code-block:: python

    from seqjax import ctc

    loss = ctc.ctc_loss(logits_BTV, frames_B, labels_BL, label_lengths_B, reduction="mean")
    labels_BT, lengths_B = ctc.greedy_decode(logits_BTV, frames_B)
    result = ctc.beam_search(logits_BTV, frames_B, beam_width=16, lm=lm, lm_weight=0.5)
    error = ctc.cer(references, ctc.labels_to_text(labels_BT, lengths_B, alphabet))

- :mod:`seqjax.ctc.loss`: :func:`~seqjax.ctc.loss.ctc_loss` over ``optax.ctc_loss`` with
  lengths instead of padding masks, PyTorch's reductions and ``zero_infinity``;
  :func:`~seqjax.ctc.loss.frame_posteriors` and the Viterbi
  :func:`~seqjax.ctc.loss.best_alignment` for plots.
- :mod:`seqjax.ctc.decoding`: best-path :func:`~seqjax.ctc.decoding.greedy_decode` and a
  compiled prefix :func:`~seqjax.ctc.decoding.beam_search` with shallow fusion of a
  :class:`~seqjax.ctc.decoding.LanguageModel` (e.g. from a seqjax character LM through
  :func:`~seqjax.ctc.decoding.cell_language_model`).
- :mod:`seqjax.ctc.metrics`: corpus-level :func:`~seqjax.ctc.metrics.cer` and
  :func:`~seqjax.ctc.metrics.wer` (through ``jiwer``) and
  :func:`~seqjax.ctc.metrics.labels_to_text`.
"""

from __future__ import annotations

from seqjax.ctc.decoding import (
    BeamSearchResult,
    LanguageModel,
    beam_search,
    cell_language_model,
    greedy_decode,
)
from seqjax.ctc.loss import Alignment, best_alignment, ctc_loss, frame_posteriors
from seqjax.ctc.metrics import cer, labels_to_text, wer

__all__ = [
    "Alignment",
    "BeamSearchResult",
    "LanguageModel",
    "beam_search",
    "best_alignment",
    "cell_language_model",
    "cer",
    "ctc_loss",
    "frame_posteriors",
    "greedy_decode",
    "labels_to_text",
    "wer",
]
