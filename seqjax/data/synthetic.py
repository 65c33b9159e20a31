"""Synthetic long-lag tasks: the adding problem and the copy memory task.

Both generators are pure functions of a PRNG key: the same key gives the same batch, on any
backend, and a batch of size ``B`` is one vectorised draw (no Python loop over examples).

The adding problem (Hochreiter & Schmidhuber 1997, in the generic form of Le et al. 2015 and
Arjovsky et al. 2016): each example is ``T`` steps of two features, a value uniform in
``[0, 1)`` and a marker that is 1 at exactly two steps (one in each half of the sequence) and 0
elsewhere; the target is the sum of the two marked values. Predicting the mean (1) always gives
mean squared error ``Var(u1 + u2) = 2 / 12 = 1/6``, the baseline a model must beat.

The copy memory task (Arjovsky et al. 2016): ``K = 10`` symbols drawn from ``{1..8}``, then
``T - 1`` blanks (0), a delimiter (9) and ``K`` more blanks: ``T + 2K`` input steps. The target
is blank for the first ``T + K`` steps and then the ``K`` symbols. A memoryless model that
outputs blank and then the uniform distribution over the 8 symbols scores the cross-entropy
``K ln 8 / (T + 2K)`` per step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax.typing import Array, DType, PRNGKey

#: Mean squared error of always predicting the mean target 1 in the adding problem.
ADDING_BASELINE_MSE = 1.0 / 6.0

#: Token ids of the copy memory task.
COPY_BLANK = 0
COPY_DELIMITER = 9


class AddingBatch(NamedTuple):
    """A batch of the adding problem.

    Attributes:
      inputs: ``[B, T, 2]`` float; feature 0 the values in ``[0, 1)``, feature 1 the markers.
      targets: ``[B]`` float, the sum of the two marked values.
    """

    inputs: Array
    targets: Array


class CopyBatch(NamedTuple):
    """A batch of the copy memory task.

    Attributes:
      inputs: ``[B, T + 2K]`` int32 tokens in ``[0, num_symbols + 2)``.
      targets: ``[B, T + 2K]`` int32 tokens in ``[0, num_symbols + 1)``: blank, then the ``K``
        symbols in the last ``K`` steps.
    """

    inputs: Array
    targets: Array


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def adding_problem(
    key: PRNGKey, batch_size: int, length: int, dtype: DType = jnp.float32
) -> AddingBatch:
    """Draws a batch of the adding problem.

    One marker is placed uniformly in ``[0, ceil(T/2))`` and the other in ``[ceil(T/2), T)``
    (Arjovsky et al. 2016), so the two marked steps are distinct and the first lies in the
    first half: the model must carry a value across up to ``T - 1`` steps.

    Args:
      key: a PRNG key.
      batch_size: ``B``.
      length: ``T >= 2``.
      dtype: floating dtype of ``inputs`` and ``targets``.

    Returns:
      :class:`AddingBatch` with ``inputs [B, T, 2]`` and ``targets [B]``.

    Raises:
      TypeError: a size that is not an int, or a non-floating ``dtype``.
      ValueError: ``batch_size < 1`` or ``length < 2``.

    Example:
      >>> import jax
      >>> from seqjax.data.synthetic import adding_problem
      >>> batch = adding_problem(jax.random.key(0), batch_size=4, length=50)
      >>> batch.inputs.shape, batch.targets.shape
      ((4, 50, 2), (4,))
    """
    _check_positive("batch_size", batch_size)
    _check_positive("length", length)
    if length < 2:
        raise ValueError(f"length must be >= 2 for two markers, got {length}")
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {jnp.dtype(dtype)}")
    k_val, k_first, k_second = jax.random.split(key, 3)
    half = (length + 1) // 2
    values = jax.random.uniform(k_val, (batch_size, length), dtype=dtype)
    first = jax.random.randint(k_first, (batch_size,), 0, half)
    second = jax.random.randint(k_second, (batch_size,), half, length)
    steps = jnp.arange(length)
    marks = (steps[None, :] == first[:, None]) | (steps[None, :] == second[:, None])
    marks = marks.astype(dtype)
    targets = jnp.sum(values * marks, axis=1)
    return AddingBatch(inputs=jnp.stack([values, marks], axis=-1), targets=targets)


def copy_memory(
    key: PRNGKey, batch_size: int, delay: int, *, num_symbols: int = 8, copy_length: int = 10
) -> CopyBatch:
    """Draws a batch of the copy memory task.

    Token ids: 0 blank, ``1..num_symbols`` data, ``num_symbols + 1`` the delimiter (9 in the
    standard setting). Inputs: ``K`` data symbols, ``T - 1`` blanks, the delimiter, ``K``
    blanks. Targets: ``T + K`` blanks, then the ``K`` data symbols.

    Args:
      key: a PRNG key.
      batch_size: ``B``.
      delay: ``T >= 1``, the number of steps between the last symbol and the first recall.
      num_symbols: size of the data alphabet (8 in Arjovsky et al.).
      copy_length: ``K``, symbols to remember (10 in Arjovsky et al.).

    Returns:
      :class:`CopyBatch` with ``inputs`` and ``targets`` both ``[B, T + 2K]`` int32.

    Raises:
      TypeError: a size that is not an int.
      ValueError: a size below 1.

    Example:
      >>> import jax
      >>> from seqjax.data.synthetic import copy_memory
      >>> batch = copy_memory(jax.random.key(0), batch_size=2, delay=5)
      >>> batch.inputs.shape
      (2, 25)
    """
    _check_positive("batch_size", batch_size)
    _check_positive("delay", delay)
    _check_positive("num_symbols", num_symbols)
    _check_positive("copy_length", copy_length)
    K = copy_length
    symbols = jax.random.randint(key, (batch_size, K), 1, num_symbols + 1, dtype=jnp.int32)
    blank = jnp.full((batch_size, delay - 1), COPY_BLANK, jnp.int32)
    delim = jnp.full((batch_size, 1), num_symbols + 1, jnp.int32)
    tail = jnp.full((batch_size, K), COPY_BLANK, jnp.int32)
    inputs = jnp.concatenate([symbols, blank, delim, tail], axis=1)
    lead = jnp.full((batch_size, delay + K), COPY_BLANK, jnp.int32)
    targets = jnp.concatenate([lead, symbols], axis=1)
    return CopyBatch(inputs=inputs, targets=targets)


def copy_baseline_xent(delay: int, *, num_symbols: int = 8, copy_length: int = 10) -> float:
    """Cross-entropy per step (nats) of the memoryless copy-task strategy.

    Blank with certainty for the first ``T + K`` steps, uniform over the symbols for the last
    ``K``: ``K ln(num_symbols) / (T + 2K)`` (Arjovsky et al. 2016: ``10 ln 8 / (T + 20)``).

    Args:
      delay: ``T``.
      num_symbols: data alphabet size.
      copy_length: ``K``.

    Returns:
      The baseline cross-entropy in nats per time step.

    Raises:
      TypeError, ValueError: as :func:`copy_memory`.

    Example:
      >>> round(copy_baseline_xent(100), 4)
      0.1733
    """
    _check_positive("delay", delay)
    _check_positive("num_symbols", num_symbols)
    _check_positive("copy_length", copy_length)
    return copy_length * math.log(num_symbols) / (delay + 2 * copy_length)
