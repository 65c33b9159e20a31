"""Formal-language tasks of the xLSTM paper (Beck et al. 2024): parity and modular arithmetic.

Both are regular languages that a finite automaton decides; what separates recurrences is
whether they learn the automaton and keep running it on sequences longer than those seen in
training. Each example is a token sequence with its own length and one label, read from the
output at the last valid step.

- ``parity``: bits, label = number of ones mod 2 (chance 1/2).
- ``modarith``: modular arithmetic without brackets, as in the xLSTM paper (after Deletang et
  al. 2023): numbers ``0 ... 4`` alternating with operators ``+ - *``, e.g. ``3 + 4 * 2 - 1``;
  label = the value with the usual precedence (``*`` before ``+ -``, left to right) mod 5
  (chance 1/5). Lengths are counted in tokens and are odd.

Training batches draw lengths uniformly from ``[1, length]``; the held-out sets are
``[1, length]`` (in distribution) and ``[length + 1, test_length]`` (longer: length
generalisation), each padded to its maximum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.typing import Array

FORMAL_TASKS = ("parity", "modarith")
MOD = 5
PLUS, MINUS, TIMES = MOD, MOD + 1, MOD + 2  # operator token ids after the digits 0 ... 4
VOCAB = {"parity": 2, "modarith": MOD + 3}
CLASSES = {"parity": 2, "modarith": MOD}
#: A run solves a task when its normalised accuracy on the longer lengths reaches this.
SOLVED_FORMAL = 0.9


def sample_lengths(key: Array, batch_size: int, min_length: int, max_length: int, task: str):
    """Lengths uniform in ``[min_length, max_length]`` (odd ones only for ``modarith``)."""
    if task == "modarith":  # 2k + 1 tokens for k operators
        lo, hi = min_length // 2, (max_length - 1) // 2
        return 2 * jax.random.randint(key, (batch_size,), lo, hi + 1) + 1
    return jax.random.randint(key, (batch_size,), min_length, max_length + 1)


def evaluate_modarith(tokens: Array, lengths: Array) -> Array:
    """Values mod 5 of ``[B, L]`` expressions (digits at even, operators at odd positions).

    A left-to-right automaton over (operator, number) pairs: ``total`` of the finished terms,
    the current ``term`` and its ``sign``; ``*`` multiplies the term, ``+``/``-`` close it.
    """
    first = tokens[:, 0] % MOD
    n = (tokens.shape[1] - 1) // 2  # (operator, number) pairs that fit the width
    ops, nums = tokens[:, 1 : 2 * n + 1 : 2], tokens[:, 2 : 2 * n + 2 : 2]
    n_pairs = (lengths - 1) // 2

    def step(state, inp):
        total, term, sign = state
        op, num, valid = inp
        closes = op != TIMES
        new_total = jnp.where(closes, (total + sign * term) % MOD, total)
        new_term = jnp.where(closes, num, (term * num) % MOD)
        new_sign = jnp.where(closes, jnp.where(op == MINUS, -1, 1), sign)
        keep = lambda new, old: jnp.where(valid, new, old)  # noqa: E731
        return (keep(new_total, total), keep(new_term, term), keep(new_sign, sign)), None

    valid = jnp.arange(n)[None, :] < n_pairs[:, None]
    init = (jnp.zeros_like(first), first, jnp.ones_like(first))
    (total, term, sign), _ = lax.scan(step, init, (ops.T, nums.T, valid.T))
    return (total + sign * term) % MOD


def make_formal_batch(
    task: str, key: Array, batch_size: int, max_length: int, min_length: int = 1
) -> tuple[tuple[Array, Array], Array]:
    """One batch: ``((tokens [B, max_length] int32, lengths [B]), labels [B])``.

    Tokens past an example's length are zero (padding, never read: the scan stops there).

    Args:
      task: ``"parity"`` or ``"modarith"``.
      key: PRNG key.
      batch_size: ``B``.
      max_length: longest length drawn (and the padded width).
      min_length: shortest length drawn.

    Returns:
      ``((tokens, lengths), labels)``.

    Raises:
      ValueError: an unknown task or ``min_length > max_length``.

    Example:
      >>> import jax
      >>> (tokens, lengths), labels = make_formal_batch("parity", jax.random.key(0), 3, 6)
      >>> tokens.shape, bool(((tokens.sum(1) % 2) == labels).all())
      ((3, 6), True)
    """
    if task not in FORMAL_TASKS:
        raise ValueError(f"task: expected one of {', '.join(FORMAL_TASKS)}, got {task!r}")
    if not 1 <= min_length <= max_length or (
        task == "modarith" and min_length // 2 > (max_length - 1) // 2
    ):
        raise ValueError(
            f"expected 1 <= min_length <= max_length (with an odd length between them for "
            f"modarith), got {min_length}, {max_length}"
        )
    k_len, k_tok, k_op = jax.random.split(key, 3)
    lengths = sample_lengths(k_len, batch_size, min_length, max_length, task)
    valid = jnp.arange(max_length)[None, :] < lengths[:, None]
    if task == "parity":
        tokens = jax.random.bernoulli(k_tok, 0.5, (batch_size, max_length)).astype(jnp.int32)
        tokens = jnp.where(valid, tokens, 0)
        return (tokens, lengths), jnp.sum(tokens, axis=1) % 2
    digits = jax.random.randint(k_tok, (batch_size, max_length), 0, MOD)
    ops = jax.random.randint(k_op, (batch_size, max_length), PLUS, TIMES + 1)
    tokens = jnp.where(jnp.arange(max_length) % 2 == 0, digits, ops)
    tokens = jnp.where(valid, tokens, 0).astype(jnp.int32)
    return (tokens, lengths), evaluate_modarith(tokens, lengths)


def chance(task: str) -> float:
    """Accuracy of guessing: 1/2 (parity) or 1/5 (modarith)."""
    return 1.0 / CLASSES[task]
