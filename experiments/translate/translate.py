"""Translating with a trained run, and measuring it: exact match, BLEU, chrF, by length.

BLEU and chrF are sacrebleu's corpus scores (``sacrebleu.corpus_bleu`` / ``corpus_chrf`` with
their default settings: 13a tokenisation, BLEU-4, chrF with character 6-grams and beta 2) of the
detokenised translations against the ``num2words`` references; ``bleu_pieces`` is BLEU over the
target tokens (see :func:`bleu_pieces`: German numbers are single words).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from experiments.scaffold import UsageError
from experiments.translate.config import TranslateConfig
from experiments.translate.input_pipeline import (
    Dataset,
    decode_target,
    encode_sources,
    source_words,
    split_arrays,
    target_pieces,
    unknown_words,
    widths,
)
from experiments.translate.model import Seq2Seq, Seq2SeqParams, attention_weights, translate_ids

#: Rows per compiled decoding call (a fixed shape: one compilation per beam size).
CHUNK = 256


def check_inputs(texts: Sequence[str], ds: Dataset) -> None:
    """Raises :class:`UsageError` naming the words of ``texts`` the model does not know.

    Raises:
      UsageError: unknown words, or an input without any word.
    """
    for i, t in enumerate(texts):
        if not source_words(t):
            raise UsageError(
                f"expected English number words on every input, got an empty input (number {i + 1})"
            )
    unknown = unknown_words(texts, ds.source_vocab)
    if unknown:
        raise UsageError(
            f"expected English number words from 0 to 999999, got unknown words: "
            f"{', '.join(repr(w) for w in unknown)}"
        )


def translate_texts(
    model: Seq2Seq,
    params: Seq2SeqParams,
    ds: Dataset,
    config: TranslateConfig,
    texts: Sequence[str],
    *,
    beam: int = 4,
    length_penalty: float = 0.6,
    max_length: int | None = None,
) -> list[str]:
    """Translations of ``texts`` (English number words), in input order.

    Args:
      model, params: the model.
      ds: the run's dataset (vocabularies).
      config: the run's configuration (source reversal, decode length).
      texts: English inputs; check unknown words first with :func:`check_inputs`.
      beam: beam size (1: greedy).
      length_penalty: GNMT's ``alpha``.
      max_length: most target tokens (default: the longest training target plus 4).

    Returns:
      One translation per input.
    """
    if not texts:
        return []
    S, T = widths(ds)
    L = max_length or config.max_decode or T + 4
    src, src_len = encode_sources(texts, ds.source_vocab, config.reverse_source, S)
    n = src.shape[0]
    rows = min(n, CHUNK)
    out = []
    for start in range(0, n, rows):
        s, sl = src[start : start + rows], src_len[start : start + rows]
        pad = rows - s.shape[0]
        if pad:  # a fixed shape for the last chunk: repeat its first row
            s = np.concatenate([s, np.repeat(s[:1], pad, 0)])
            sl = np.concatenate([sl, np.repeat(sl[:1], pad, 0)])
        tokens, _ = translate_ids(
            model, params, s, sl, beam_size=beam, max_length=L, length_penalty=length_penalty
        )
        out += [decode_target(r, ds.target_vocab) for r in np.asarray(tokens)[: rows - pad]]
    return out


def exact_match(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Fraction of ``hyps`` equal to their reference."""
    return float(np.mean([h == r for h, r in zip(hyps, refs, strict=True)])) if refs else 0.0


def bleu_chrf(hyps: Sequence[str], refs: Sequence[str]) -> tuple[float, float]:
    """sacrebleu corpus BLEU and chrF (0-100).

    Raises:
      UsageError: sacrebleu is not installed.
    """
    try:
        import sacrebleu
    except ImportError:
        raise UsageError(
            "expected the sacrebleu package for BLEU/chrF, got none installed "
            "(pip install 'seqjax[translate]')"
        ) from None
    return (
        float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score),
        float(sacrebleu.corpus_chrf(list(hyps), [list(refs)]).score),
    )


def bleu_pieces(hyps: Sequence[str], refs: Sequence[str], lang: str, level: str) -> float:
    """sacrebleu corpus BLEU over the target tokens (``tokenize="none"``).

    BLEU on the detokenised text scores German 0: each of its numbers is one word, so no
    sentence has the 2- to 4-grams BLEU multiplies in. Over number morphemes it measures what
    it does for French.
    """
    import sacrebleu

    def join(texts: Sequence[str]) -> list[str]:
        return [" ".join(p.strip() for p in target_pieces(t, lang, level)) for t in texts]

    return float(sacrebleu.corpus_bleu(join(hyps), [join(refs)], tokenize="none").score)


def by_length(sources: Sequence[str], hyps: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """Exact match per source length in words: ``{length: [accuracy, count]}``."""
    groups: dict[int, list[bool]] = {}
    for s, h, r in zip(sources, hyps, refs, strict=True):
        groups.setdefault(len(source_words(s)), []).append(h == r)
    return {str(k): [float(np.mean(v)), len(v)] for k, v in sorted(groups.items())}


def evaluate_model(
    model: Seq2Seq,
    params: Seq2SeqParams,
    ds: Dataset,
    config: TranslateConfig,
    *,
    split: str = "test",
    beams: Sequence[int] = (1, 4, 8),
    length_penalty: float = 0.6,
) -> dict[str, Any]:
    """Exact match, BLEU and chrF for each beam size, and exact match by source length.

    Returns:
      ``{"split", "examples", "length_penalty", "beam_<k>": {"exact_match", "bleu",
      "bleu_pieces", "chrf", "decode_s", "by_length"}, "examples_wrong": [...]}`` (up to 10
      errors of the largest beam, ``[source, hypothesis, reference]``).
    """
    sources, refs = ds.source[split], ds.target[split]
    out: dict[str, Any] = {"split": split, "examples": len(refs), "length_penalty": length_penalty}
    hyps: list[str] = []
    for k in beams:
        t0 = time.perf_counter()
        hyps = translate_texts(
            model, params, ds, config, sources, beam=k, length_penalty=length_penalty
        )
        dt = time.perf_counter() - t0
        bleu, chrf = bleu_chrf(hyps, refs)
        out[f"beam_{k}"] = {
            "exact_match": exact_match(hyps, refs),
            "bleu": bleu,
            "bleu_pieces": bleu_pieces(hyps, refs, ds.pair.split("-")[1], ds.level),
            "chrf": chrf,
            "decode_s": dt,
            "by_length": by_length(sources, hyps, refs),
        }
    out["examples_wrong"] = [
        [s, h, r] for s, h, r in zip(sources, hyps, refs, strict=True) if h != r
    ][:10]
    return out


def heatmaps(
    model: Seq2Seq,
    params: Seq2SeqParams,
    ds: Dataset,
    config: TranslateConfig,
    numbers: Sequence[int],
    path: str,
    *,
    beam: int = 4,
) -> list[dict[str, Any]]:
    """Draws the attention weights of the model's own translations of ``numbers`` to ``path``.

    Returns:
      Per example ``{"number", "source", "translation", "source_tokens", "target_tokens"}``.

    Raises:
      ValueError: a model without attention.
    """
    from experiments.scaffold import pyplot
    from experiments.translate.input_pipeline import num2words

    lang = ds.pair.split("-")[1]
    texts = [num2words(n, "en") for n in numbers]
    hyps = translate_texts(model, params, ds, config, texts, beam=beam)
    sub = ds._replace(source={"x": texts}, target={"x": hyps})
    arrays = split_arrays(sub, "x", config.reverse_source, widths(ds))
    w = np.asarray(
        jax.device_get(
            attention_weights(
                model,
                params,
                arrays["src"],
                arrays["src_len"],
                arrays["tgt_in"],
                arrays["tgt_len"],
            )
        )
    )
    info = []
    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, len(numbers), figsize=(5.2 * len(numbers), 4.8), squeeze=False)
    for i, (n, src, hyp) in enumerate(zip(numbers, texts, hyps, strict=True)):
        src_tok = source_words(src)
        if config.reverse_source:
            src_tok = src_tok[::-1]
        tgt_tok = [*target_pieces(hyp, lang, ds.level), "</s>"]
        info.append(
            dict(
                number=n, source=src, translation=hyp, source_tokens=src_tok, target_tokens=tgt_tok
            )
        )
        if plt is None:
            continue
        ax = axes[0, i]
        ax.imshow(w[i, : len(tgt_tok), : len(src_tok)], cmap="Greys", vmin=0, vmax=1)
        ax.set_xticks(range(len(src_tok)), src_tok, rotation=70, fontsize=8)
        ax.set_yticks(range(len(tgt_tok)), [t.strip() or "_" for t in tgt_tok], fontsize=8)
        ax.set_title(f"{n}", fontsize=9)
    if plt is not None:
        fig.suptitle(f"attention weights, {ds.pair} ({config.attention}); rows: output pieces")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return info
