"""Chorale data for training: the split, training crops as a function of the step, and
evaluation batches of whole chorales."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from experiments.music.config import MusicConfig
from experiments.scaffold import UsageError
from seqjax.data import music
from seqjax.train import batch_indices

#: Chorales per evaluation batch (the last batch is padded with empty rows).
EVAL_BATCH = 16


class Dataset(NamedTuple):
    """The split chorales: ``train``, ``valid``, ``test`` lists of :class:`music.Chorale`."""

    train: list[music.Chorale]
    valid: list[music.Chorale]
    test: list[music.Chorale]

    def manifest(self) -> dict[str, list[str]]:
        """BWV identifiers of each split (saved in the run directory as ``data.json``)."""
        return {name: [c.bwv for c in getattr(self, name)] for name in self._fields}


def load_dataset(config: MusicConfig) -> Dataset:
    """Reads (from the cache) and splits the corpus's four-part chorales.

    Raises:
      UsageError: ``music21`` is missing.
    """
    try:
        bwvs = music.corpus_bwvs()
        if config.max_chorales is not None:
            bwvs = bwvs[: config.max_chorales]
        chorales = music.load_chorales(bwvs, step=config.step, transpose=config.transpose)
    except ImportError as e:
        raise UsageError(f"expected the music21 package, got {e}") from None
    if len(chorales) < 3:
        raise UsageError(
            f"--max-chorales: expected at least 3 four-part chorales, got {len(chorales)} among "
            f"the first {config.max_chorales}"
        )
    parts = music.split(chorales, seed=config.split_seed)
    return Dataset(parts["train"], parts["valid"], parts["test"])


def _pair(roll: np.ndarray, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of frames ``[start, start + length)``: input ``t`` is frame ``t-1``."""
    K = roll.shape[1]
    padded = np.concatenate([np.zeros((1, K), bool), roll])
    targets = roll[start : start + length]
    inputs = padded[start : start + len(targets)]
    return inputs, targets


def train_batch(train: list[music.Chorale], config: MusicConfig, step: int) -> dict:
    """Batch ``step``: chorales by :func:`seqjax.train.batch_indices`, each cropped to
    ``config.window`` frames at a start drawn from ``(seed, step)`` (so a resumed run sees
    the same batches).

    Returns:
      ``inputs``, ``targets`` float32 ``[B, window, 88]`` and ``mask`` ``[B, window]``.
    """
    idx = batch_indices(step, len(train), config.batch_size, seed=config.seed)
    rng = np.random.default_rng([config.seed, step, 7])
    W, K = config.window, music.KEYS
    out = {
        "inputs": np.zeros((len(idx), W, K), np.float32),
        "targets": np.zeros((len(idx), W, K), np.float32),
        "mask": np.zeros((len(idx), W), np.float32),
    }
    for row, i in enumerate(idx):
        roll = train[int(i)].roll
        start = int(rng.integers(0, len(roll) - W + 1)) if len(roll) > W else 0
        x, y = _pair(roll, start, W)
        out["inputs"][row, : len(x)] = x
        out["targets"][row, : len(y)] = y
        out["mask"][row, : len(y)] = 1.0
    return out


def eval_batches(chorales: list[music.Chorale], length: int | None = None) -> list[dict]:
    """Whole chorales in batches of :data:`EVAL_BATCH`, all padded to one shape (one compile).

    Args:
      chorales: the chorales.
      length: padded length (default: the longest, rounded up to a multiple of 16).
    """
    if length is None:
        length = -(-max(c.frames for c in chorales) // 16) * 16
    K = music.KEYS
    batches = []
    for s in range(0, len(chorales), EVAL_BATCH):
        group = chorales[s : s + EVAL_BATCH]
        b = {
            "inputs": np.zeros((EVAL_BATCH, length, K), np.float32),
            "targets": np.zeros((EVAL_BATCH, length, K), np.float32),
            "mask": np.zeros((EVAL_BATCH, length), np.float32),
        }
        for row, c in enumerate(group):
            x, y = _pair(c.roll, 0, length)
            b["inputs"][row, : len(x)] = x
            b["targets"][row, : len(y)] = y
            b["mask"][row, : len(y)] = 1.0
        batches.append(b)
    return batches
