"""Data of the long-lag tasks: batches drawn from a key, input/output sizes, baselines."""

from __future__ import annotations

import jax

from experiments.long_range import formal
from seqjax.data import synthetic

# Adding: values + markers. Copy: one-hot over blank, 8 symbols, delimiter; targets blank + 8.
COPY_SYMBOLS = 8
COPY_IN = COPY_SYMBOLS + 2
COPY_OUT = COPY_SYMBOLS + 1


def io_sizes(task: str) -> tuple[int, int]:
    """``(input_size, output_size)`` of the model for ``task``."""
    if task in formal.FORMAL_TASKS:
        return formal.VOCAB[task], formal.CLASSES[task]
    return (2, 1) if task == "adding" else (COPY_IN, COPY_OUT)


def make_batch(task: str, key: jax.Array, batch_size: int, length: int, min_length: int = 1):
    """``(inputs, targets)`` of one batch of ``task``.

    Parity and modarith: ``inputs = (tokens [B, length], lengths [B])`` with lengths drawn from
    ``[min_length, length]`` (see :func:`experiments.long_range.formal.make_formal_batch`).
    """
    if task in formal.FORMAL_TASKS:
        return formal.make_formal_batch(task, key, batch_size, length, min_length)
    if task == "adding":
        b = synthetic.adding_problem(key, batch_size, length)
    else:
        b = synthetic.copy_memory(key, batch_size, length, num_symbols=COPY_SYMBOLS)
    return b.inputs, b.targets


def baseline(task: str, length: int) -> float:
    """The memoryless baseline: 1/6 (adding MSE), ``10 ln 8 / (T + 20)`` (copy xent) or the
    chance accuracy (parity 1/2, modarith 1/5)."""
    if task in formal.FORMAL_TASKS:
        return formal.chance(task)
    if task == "adding":
        return synthetic.ADDING_BASELINE_MSE
    return synthetic.copy_baseline_xent(length, num_symbols=COPY_SYMBOLS)
