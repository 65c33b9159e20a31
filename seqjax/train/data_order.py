"""Data order as a pure function of the step number, so a resumed run sees the same batches.

A run that restarts from step ``s`` must feed exactly the batches an uninterrupted run would
have fed from ``s`` on. Iterators with hidden state make that hard; a function
``batch(step)`` makes it trivial. These helpers compute the two common orders.
"""

from __future__ import annotations

import numpy as np

__all__ = ["batch_indices", "stream_window"]


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int = 0) -> np.ndarray:
    """Example indices of batch ``step`` when shuffling without replacement, epoch by epoch.

    Epoch ``e`` uses the permutation ``default_rng([seed, e])``; batch ``step`` takes
    positions ``[step * B, (step + 1) * B)`` of the concatenated epochs (an epoch's last
    partial batch wraps into the next epoch's permutation), so every example is seen once per
    epoch and the order depends only on ``(seed, step)``.

    Args:
      step: the step number (>= 0).
      num_examples: dataset size (>= 1).
      batch_size: examples per batch (>= 1).
      seed: shuffling seed.

    Returns:
      int64 ``[batch_size]`` indices into the dataset.

    Raises:
      ValueError: negative step or non-positive sizes.

    Example:
      >>> idx = np.concatenate([batch_indices(s, 6, 2, seed=1) for s in range(3)])
      >>> sorted(idx.tolist())
      [0, 1, 2, 3, 4, 5]
    """
    if step < 0 or num_examples < 1 or batch_size < 1:
        raise ValueError(
            f"need step >= 0, num_examples >= 1, batch_size >= 1; got step={step}, "
            f"num_examples={num_examples}, batch_size={batch_size}"
        )
    start = step * batch_size
    positions = np.arange(start, start + batch_size)
    epochs = positions // num_examples
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(num_examples)
        sel = epochs == e
        out[sel] = perm[positions[sel] % num_examples]
    return out


def stream_window(streams: np.ndarray, step: int, seq_len: int) -> dict[str, np.ndarray]:
    """Window ``step`` of ``B`` parallel token streams, for truncated BPTT.

    The classic language-model batching (Zaremba et al. 2014): a corpus is cut into ``B``
    contiguous streams ``[B, N]``; batch ``k`` holds positions ``[k*L, k*L + L)`` of every
    stream as inputs and the next positions as targets, so the carry of row ``b`` at the end of
    batch ``k`` is the right start for batch ``k + 1``. After the last full window the streams
    start over and ``reset`` is True, so the carry is zeroed at that boundary.

    Args:
      streams: integer ``[B, N]`` tokens.
      step: the step number (>= 0).
      seq_len: ``L``, the truncation length (``1 <= L <= N - 1``).

    Returns:
      ``{"inputs": [B, L], "targets": [B, L], "reset": bool [B]}``.

    Raises:
      ValueError: a bad shape or ``seq_len``.

    Example:
      >>> s = np.arange(10).reshape(1, 10)
      >>> w = stream_window(s, 1, 3)
      >>> w["inputs"].tolist(), w["targets"].tolist(), w["reset"].tolist()
      ([[3, 4, 5]], [[4, 5, 6]], [False])
    """
    streams = np.asarray(streams)
    if streams.ndim != 2:
        raise ValueError(f"streams must be [B, N], got shape {streams.shape}")
    n_windows = (streams.shape[1] - 1) // seq_len if seq_len >= 1 else 0
    if seq_len < 1 or n_windows < 1:
        raise ValueError(
            f"seq_len must be in [1, N - 1] = [1, {streams.shape[1] - 1}], got {seq_len}"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    k = step % n_windows
    lo = k * seq_len
    reset = np.full((streams.shape[0],), k == 0)
    return {
        "inputs": streams[:, lo : lo + seq_len],
        "targets": streams[:, lo + 1 : lo + seq_len + 1],
        "reset": reset,
    }
