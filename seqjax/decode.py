"""Sampling from autoregressive models: temperature, top-k, nucleus (top-p), greedy.

:func:`generate` primes a model's carry on a prompt and then runs ONE ``jax.lax.scan`` over the
generated steps, so producing ``N`` tokens is a single compiled call (no Python loop, no
per-token dispatch). The model is described by two pure functions, so any embedding, cell
stack and readout works:

.. code-block:: python

    def step_fn(params, carry, token_B):          # one token per sequence
        carry, y = cell(params.rnn, carry, params.embed[token_B])
        return carry, y @ params.w_out             # logits [B, V]

    tokens, carry = seqjax.decode.generate(step_fn, params, carry, prompt_BP, key,
                                           length=500, temperature=0.8, top_p=0.95)

Sampling order (as in most LM toolkits): divide the logits by ``temperature``, keep the
``top_k`` most likely tokens, then the smallest set of those whose probability mass reaches
``top_p``, renormalise and draw. ``temperature=0`` is greedy decoding (argmax).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.typing import Array, PRNGKey, PyTree

__all__ = ["filter_top_k", "filter_top_p", "generate", "sample_logits"]

StepFn = Callable[[PyTree, PyTree, Array], tuple[PyTree, Array]]
PrimeFn = Callable[[PyTree, PyTree, Array], tuple[PyTree, Array]]


def _check_sampling(temperature: Any, top_k: Any, top_p: Any, vocab: int | None = None) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number >= 0, got {temperature!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise TypeError(f"top_k must be a positive int or None, got {top_k!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if vocab is not None and top_k > vocab:
            raise ValueError(f"top_k={top_k} exceeds the vocabulary size {vocab}")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)):
            raise TypeError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _top_p_mask_sorted(probs_desc: Array, top_p: float | Array) -> Array:
    """Keep-mask over probabilities sorted in descending order: the smallest prefix whose mass
    reaches ``top_p`` (a token is kept if the mass *before* it is still below ``top_p``)."""
    before = jnp.cumsum(probs_desc, axis=-1) - probs_desc
    return before < top_p


def filter_top_k(logits: Array, top_k: int) -> Array:
    """Sets every logit outside the ``top_k`` largest to ``-inf``.

    Exactly ``top_k`` entries survive per row (ties broken towards the lower index, as
    ``jax.lax.top_k`` does).

    Args:
      logits: ``[..., V]`` floating point.
      top_k: ``k`` in ``[1, V]``.

    Returns:
      ``[..., V]`` logits with ``V - k`` entries ``-inf``.

    Raises:
      ValueError, TypeError: a bad ``top_k``.

    Example:
      >>> filter_top_k(jnp.array([1.0, 3.0, 2.0]), 2).tolist()
      [-inf, 3.0, 2.0]
    """
    _check_sampling(1.0, top_k, None, logits.shape[-1])
    _, idx = lax.top_k(logits, top_k)
    keep = jnp.zeros(logits.shape, jnp.bool_)
    keep = jnp.put_along_axis(keep, idx, True, axis=-1, inplace=False)
    return jnp.where(keep, logits, jnp.asarray(-jnp.inf, logits.dtype))


def filter_top_p(logits: Array, top_p: float) -> Array:
    """Nucleus filtering (Holtzman et al. 2020): keeps the smallest set of most likely tokens
    whose total probability is at least ``top_p``; the rest become ``-inf``.

    Args:
      logits: ``[..., V]`` floating point (softmax over the last axis gives the probabilities).
      top_p: mass in ``(0, 1]``; 1 keeps every token.

    Returns:
      ``[..., V]`` logits with the excluded entries ``-inf``. The most likely token is always
      kept.

    Raises:
      ValueError, TypeError: a bad ``top_p``.

    Example:
      >>> probs = jnp.array([0.5, 0.3, 0.15, 0.05])
      >>> jnp.isfinite(filter_top_p(jnp.log(probs), 0.75)).tolist()
      [True, True, False, False]
    """
    _check_sampling(1.0, None, top_p)
    return _nucleus(logits, top_p, is_sorted=False)


def sample_logits(
    key: PRNGKey,
    logits: Array,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Array:
    """Draws one token per row of ``logits``.

    Args:
      key: a ``jax.random`` key.
      logits: ``[..., V]`` unnormalised log-probabilities.
      temperature: divides the logits; ``0`` returns the argmax (greedy, ``key`` unused).
      top_k: sample only among the ``k`` most likely tokens (None: all).
      top_p: then only among the smallest set with mass ``>= top_p`` (None: all).

    Returns:
      int32 token ids ``[...]``.

    Raises:
      ValueError, TypeError: bad sampling arguments.

    Example:
      >>> logits = jnp.log(jnp.array([[0.1, 0.6, 0.3]]))
      >>> sample_logits(jax.random.key(0), logits, temperature=0.0).tolist()
      [1]
    """
    _check_sampling(temperature, top_k, top_p, logits.shape[-1])
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return _sample(key, logits, temperature, top_k, top_p)


def _nucleus(logits: Array, top_p: float | Array, is_sorted: bool) -> Array:
    """``logits`` with entries outside the top-``p`` nucleus set to ``-inf``."""
    if is_sorted:
        keep = _top_p_mask_sorted(jax.nn.softmax(logits, axis=-1), top_p)
    else:
        order = jnp.argsort(-logits, axis=-1)
        probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
        keep = jnp.take_along_axis(
            _top_p_mask_sorted(probs, top_p), jnp.argsort(order, axis=-1), axis=-1
        )
    return jnp.where(keep, logits, jnp.asarray(-jnp.inf, logits.dtype))


def _sample(
    key: PRNGKey,
    logits: Array,
    temperature: float | Array,
    top_k: int | None,
    top_p: float | Array | None,
) -> Array:
    """Temperature, then top-k, then nucleus, then a categorical draw (arguments checked)."""
    logits = logits / temperature
    idx = None
    if top_k is not None and top_k < logits.shape[-1]:
        logits, idx = lax.top_k(logits, top_k)  # sorted descending
    if top_p is not None:
        logits = _nucleus(logits, top_p, is_sorted=idx is not None)
    choice = jax.random.categorical(key, logits, axis=-1)
    if idx is not None:
        choice = jnp.take_along_axis(idx, choice[..., None], axis=-1)[..., 0]
    return choice.astype(jnp.int32)


def generate(
    step_fn: StepFn,
    params: PyTree,
    carry: PyTree,
    prompt: Array,
    key: PRNGKey,
    *,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    prime_fn: PrimeFn | None = None,
) -> tuple[Array, PyTree]:
    """Continues each prompt by ``length`` sampled tokens in one compiled call.

    The prompt is read first (``prime_fn``, typically :func:`seqjax.scan` over the whole
    prompt, or ``step_fn`` scanned over it); its last logits give the first new token; then one
    ``lax.scan`` of ``length - 1`` steps feeds each sampled token back. Step ``t``'s draw uses
    ``fold_in(key, t)``, so a seed fixes the output and row ``b`` of a batch is an independent
    sample.

    ``step_fn`` and ``prime_fn`` are static arguments of the compiled function: pass the same
    function objects on every call (not fresh lambdas) to reuse the compilation.
    ``temperature`` and ``top_p`` are traced, so changing them does not recompile; ``length``,
    ``top_k`` and greedy (``temperature == 0``) do.

    Args:
      step_fn: ``(params, carry, tokens [B]) -> (carry, logits [B, V])``, one step.
      params: the model's parameters.
      carry: the model's carry for ``B`` sequences (e.g. zeros).
      prompt: int ``[B, P]`` token ids, ``P >= 1`` (use a separator token for "no prompt").
      key: a ``jax.random`` key.
      length: number of tokens to generate, ``>= 1``.
      temperature: ``> 0`` to sample, ``0`` for greedy decoding.
      top_k: restrict sampling to the ``k`` most likely tokens.
      top_p: nucleus sampling mass in ``(0, 1]``.
      prime_fn: ``(params, carry, prompt [B, P]) -> (carry, logits [B, P, V])``; None runs
        ``step_fn`` over the prompt.

    Returns:
      ``(tokens, carry)``: int32 ``[B, length]`` generated ids (prompt excluded) and the carry
      after reading the prompt and all generated tokens but the last, which is emitted, not
      fed back; to continue, call again with ``prompt=tokens[:, -1:]`` and this carry.

    Raises:
      ValueError: ``prompt`` not ``[B, P]`` with ``P >= 1``, ``length < 1``, bad sampling
        arguments.
      TypeError: a non-integer prompt, non-callable functions.

    Example:
      >>> V = 5
      >>> def step_fn(params, carry, tok):         # a counter: always predicts tok + 1
      ...     return carry, jax.nn.one_hot((tok + 1) % V, V) * 10.0
      >>> tokens, _ = generate(step_fn, None, jnp.zeros(()), jnp.array([[0, 2]]),
      ...                      jax.random.key(0), length=4, temperature=0.0)
      >>> tokens.tolist()
      [[3, 4, 0, 1]]
    """
    if not callable(step_fn) or (prime_fn is not None and not callable(prime_fn)):
        raise TypeError("step_fn (and prime_fn when given) must be callable")
    prompt = jnp.asarray(prompt)
    if not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise TypeError(f"prompt must hold integer token ids, got dtype {prompt.dtype}")
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be [B, P] token ids with P >= 1, got shape {prompt.shape}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    _check_sampling(temperature, top_k, top_p)
    greedy = temperature == 0
    return _generate(
        step_fn,
        prime_fn,
        length,
        top_k,
        greedy,
        top_p is not None,
        params,
        carry,
        prompt.astype(jnp.int32),
        key,
        jnp.asarray(1.0 if greedy else temperature, jnp.float32),
        jnp.asarray(1.0 if top_p is None else top_p, jnp.float32),
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _generate(
    step_fn,
    prime_fn,
    length,
    top_k,
    greedy,
    use_top_p,
    params,
    carry,
    prompt,
    key,
    temperature,
    top_p,
):
    if prime_fn is not None:
        carry, logits = prime_fn(params, carry, prompt)
        last = logits[:, -1]
    else:

        def read(c, tok):
            c, lg = step_fn(params, c, tok)
            return c, lg

        carry, logits = lax.scan(read, carry, prompt.T)
        last = logits[-1]

    def draw(t, lg):
        lg = lg.astype(jnp.promote_types(lg.dtype, jnp.float32))
        if greedy:
            return jnp.argmax(lg, axis=-1).astype(jnp.int32)
        return _sample(
            jax.random.fold_in(key, t), lg, temperature, top_k, top_p if use_top_p else None
        )

    first = draw(0, last)

    def body(state, t):
        c, tok = state
        c, lg = step_fn(params, c, tok)
        nxt = draw(t, lg)
        return (c, nxt), nxt

    (carry, _), rest = lax.scan(body, (carry, first), jnp.arange(1, length))
    tokens = jnp.concatenate([first[None], rest], axis=0).T
    return tokens, carry
