"""The corpus of the character LM: loading, splits, vocabulary, TBPTT streams and windows."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from experiments.char_lm.config import CharLMConfig
from experiments.scaffold import UsageError
from seqjax.data import text as textdata
from seqjax.train import stream_window


class Corpus(NamedTuple):
    """Encoded splits and the vocabulary."""

    vocab: textdata.Vocab
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    chars: int


def load_corpus(config: CharLMConfig) -> Corpus:
    """Loads, cuts and encodes the corpus; the vocabulary comes from the training split.

    Raises:
      UsageError: ``config.data`` is missing, a directory, empty, binary or not UTF-8.
    """
    try:
        text = textdata.load_text(config.data)
    except (OSError, ValueError) as e:  # FileNotFoundError, IsADirectoryError, empty, binary
        raise UsageError(f"--data: expected a non-empty UTF-8 text file; {e}") from None
    if config.max_chars is not None:
        text = text[: config.max_chars]
    splits = textdata.split_text(text, config.val_fraction, config.test_fraction)
    vocab = textdata.Vocab.build(splits.train)
    return Corpus(
        vocab,
        vocab.encode(splits.train),
        vocab.encode(splits.val),
        vocab.encode(splits.test),
        len(text),
    )


def eval_streams(tokens: np.ndarray, config: CharLMConfig, name: str) -> np.ndarray:
    """``[B', N]`` streams of a held-out split, ``B' <= batch_size`` so short splits still fit.

    Raises:
      UsageError: the split is shorter than one window.
    """
    per_stream = config.seq_len + 1
    n_streams = min(config.batch_size, len(tokens) // per_stream)
    if n_streams < 1:
        raise UsageError(
            f"--seq-len: expected the {name} split to hold one window of --seq-len "
            f"{config.seq_len} + 1 characters, got {len(tokens)} characters; use more text, "
            f"a larger --{name}-fraction or a smaller --seq-len"
        )
    return textdata.make_streams(tokens, n_streams)


def windows(streams: np.ndarray, seq_len: int) -> list[dict[str, np.ndarray]]:
    """Every full TBPTT window of ``streams`` in order (the first one flags a carry reset)."""
    n = (streams.shape[1] - 1) // seq_len
    return [stream_window(streams, k, seq_len) for k in range(n)]


def train_streams(corpus: Corpus, config: CharLMConfig) -> np.ndarray:
    """``[batch_size, N]`` contiguous training streams.

    Raises:
      UsageError: the training split is too short for the batch shape.
    """
    need = config.batch_size * (config.seq_len + 1)
    if len(corpus.train) < need:
        raise UsageError(
            f"--batch-size x (--seq-len + 1): the training split needs at least {need} "
            f"characters ({config.batch_size} x {config.seq_len + 1}), got "
            f"{len(corpus.train)}"
        )
    return textdata.make_streams(corpus.train, config.batch_size)
