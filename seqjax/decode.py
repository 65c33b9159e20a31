"""Decoding autoregressive models: sampling (temperature, top-k, nucleus), greedy, beam search.

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

:func:`beam_search` keeps the ``k`` best hypotheses per batch entry in ONE ``lax.while_loop``
that stops as soon as no unfinished hypothesis can beat the finished ones. Its model is a single
function ``step_fn(carry, tokens [N]) -> (carry, log_probs [N, V])`` over ``N = B * k`` rows
(row ``b * k + j`` is beam ``j`` of batch entry ``b``); :func:`make_step_fn` builds one from a
seqjax cell, an embedding and a readout, and :func:`tile_beams` repeats anything per-sequence
(the initial carry is tiled for you; a bound attention memory must be tiled by the caller).

This module is longer than the project's ~450-line guideline on purpose: it is the one place for
every decoding algorithm, which share their argument checks and step-function conventions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from seqjax import _checks
from seqjax.typing import Array, PRNGKey, PyTree

__all__ = [
    "BeamSearchResult",
    "beam_search",
    "filter_top_k",
    "filter_top_p",
    "generate",
    "gnmt_length_penalty",
    "make_step_fn",
    "sample_logits",
    "tile_beams",
]

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


# -- beam search ------------------------------------------------------------------------------
BeamStepFn = Callable[[PyTree, Array], tuple[PyTree, Array]]


class BeamSearchResult(NamedTuple):
    """The ``k`` best hypotheses per batch entry, best first.

    Attributes:
      tokens: int32 ``[B, k, L]`` (``L = max_length``), ``pad_id`` after each hypothesis'
        length; a hypothesis that ended includes its EOS token.
      scores: ``[B, k]`` ranking scores, ``log_probs / gnmt_length_penalty(lengths, alpha)``;
        ``-inf`` marks an empty slot (fewer than ``k`` hypotheses exist).
      log_probs: ``[B, k]`` total log-probability of each hypothesis.
      lengths: int32 ``[B, k]`` tokens per hypothesis, EOS included (0 for an empty slot).
    """

    tokens: Array
    scores: Array
    log_probs: Array
    lengths: Array


def gnmt_length_penalty(lengths: Array | int, alpha: float | Array) -> Array:
    """GNMT's length penalty ``((5 + L) / 6) ** alpha`` (Wu et al. 2016, eq. 14).

    Args:
      lengths: hypothesis lengths ``[...]`` (tokens, EOS included).
      alpha: ``>= 0``; 0 ranks by log-probability, larger values favour longer outputs.

    Returns:
      float32 ``[...]``.

    Example:
      >>> gnmt_length_penalty(jnp.array([1, 7]), 1.0).tolist()
      [1.0, 2.0]
    """
    return ((5.0 + jnp.asarray(lengths, jnp.float32)) / 6.0) ** jnp.asarray(alpha, jnp.float32)


def tile_beams(tree: PyTree, beam_size: int) -> PyTree:
    """Repeats every leaf ``beam_size`` times along axis 0: ``[B, ...] -> [B * k, ...]``.

    Row ``b * k + j`` is beam ``j`` of entry ``b``, the layout :func:`beam_search` uses. Tile
    what the step function closes over per sequence, e.g. an attention memory before binding.

    Args:
      tree: a pytree of arrays with a leading batch axis ``B``.
      beam_size: ``k >= 1``.

    Returns:
      The same pytree with leaves ``[B * k, ...]``.

    Example:
      >>> tile_beams(jnp.array([[1, 2], [3, 4]]), 2).tolist()
      [[1, 2], [1, 2], [3, 4], [3, 4]]
    """
    _checks.positive_int("beam_size", beam_size)
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, beam_size, axis=0), tree)


def make_step_fn(
    cell: Any,
    params: PyTree,
    embedding: Array,
    readout: Array | Callable,
    bias: Array | None = None,
) -> BeamStepFn:
    """Builds ``step_fn(carry, tokens [N]) -> (carry, log_probs [N, V])`` from a seqjax cell.

    One step embeds the tokens, runs ``cell(params, carry, x)`` and reads out log-probabilities.
    With an attentional decoder, ``params`` are bound to a memory tiled with :func:`tile_beams`.

    Args:
      cell: a steppable seqjax cell (or :class:`seqjax.attention_decoder.AttentionDecoder`).
      params: its parameters.
      embedding: ``[V_in, I]`` input embedding table.
      readout: ``[D, V]`` output matrix, or a callable ``y [N, D] -> logits [N, V]``.
      bias: ``[V]`` output bias (with a matrix ``readout``).

    Returns:
      The step function.

    Example:
      >>> import seqjax
      >>> cell = seqjax.GRU(4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> step = make_step_fn(cell, params, jnp.ones((5, 3)), jnp.ones((4, 6)))
      >>> carry, log_probs = step(cell.initial_carry((2,)), jnp.array([0, 4]))
      >>> log_probs.shape
      (2, 6)
    """

    def step_fn(carry, tokens):
        x = jnp.take(embedding, tokens, axis=0)
        carry, y = cell(params, carry, x)
        if callable(readout):
            logits = readout(y)
        else:
            logits = y @ readout.astype(y.dtype)
            if bias is not None:
                logits = logits + bias.astype(logits.dtype)
        return carry, jax.nn.log_softmax(logits, axis=-1)

    return step_fn


def beam_search(
    step_fn: BeamStepFn,
    carry: PyTree,
    start_tokens: Array,
    *,
    beam_size: int,
    max_length: int,
    eos_id: int | None = None,
    length_penalty: float = 0.0,
    num_return: int | None = None,
    pad_id: int = 0,
) -> BeamSearchResult:
    """Batched beam search in one ``lax.while_loop``, for any pytree carry.

    Each step extends the ``k`` live hypotheses of every batch entry by every token and keeps
    the ``2k`` best extensions (ranked by log-probability). An extension ending in ``eos_id``
    among the ``k`` best is finished, scored ``log_prob / ((5 + L) / 6) ** length_penalty``, and
    joins the ``k`` best finished hypotheses; the ``k`` best extensions that do not end become
    the live ones, and the carry follows them. At ``max_length`` the ``k`` best extensions are
    finished whether or not they end. The loop stops early once no live hypothesis can still
    beat the worst finished one (exact for ``length_penalty >= 0``), so results equal running
    to ``max_length``. With ``beam_size=1`` and ``length_penalty=0`` this is greedy decoding.

    The function traces ``step_fn``; call it inside ``jax.jit`` so the loop compiles once.

    Args:
      step_fn: ``(carry, tokens [N]) -> (carry, log_probs [N, V])`` with ``N = B * k``
        (logits are fine too: they are normalised with ``log_softmax``).
      carry: the model's carry for the ``B`` sequences, every leaf ``[B, ...]`` (tiled here).
      start_tokens: int ``[B]``, the first input token of each sequence (e.g. BOS).
      beam_size: ``k >= 1``.
      max_length: ``L >= 1``, the most tokens a hypothesis may have.
      eos_id: the end token, or None (every hypothesis then runs to ``max_length``).
      length_penalty: GNMT's ``alpha >= 0``.
      num_return: how many hypotheses to return per entry (default ``beam_size``).
      pad_id: the token written after a hypothesis' end.

    Returns:
      :class:`BeamSearchResult` with ``tokens [B, num_return, L]``, ``scores``, ``log_probs``
      and ``lengths`` ``[B, num_return]``, best first.

    Raises:
      ValueError, TypeError: bad sizes, start tokens, ids, carry leaves without the batch axis,
        or a step function whose log-probabilities are not ``[N, V]``.

    Example:
      >>> V, EOS = 4, 3
      >>> def step_fn(carry, tok):               # a counter: always predicts tok + 1
      ...     return carry, jax.nn.one_hot((tok + 1) % V, V) * 10.0
      >>> search = jax.jit(lambda c, s: beam_search(step_fn, c, s, beam_size=2, max_length=5,
      ...                                           eos_id=EOS))
      >>> out = search(jnp.zeros((2, 1)), jnp.array([0, 2]))
      >>> out.tokens[:, 0].tolist(), out.lengths[:, 0].tolist()
      ([[1, 2, 3, 0, 0], [3, 0, 0, 0, 0]], [3, 1])
    """
    _checks.positive_int("beam_size", beam_size)
    _checks.positive_int("max_length", max_length)
    num_return = beam_size if num_return is None else num_return
    _checks.positive_int("num_return", num_return)
    if num_return > beam_size:
        raise ValueError(f"num_return ({num_return}) cannot exceed beam_size ({beam_size})")
    _checks.non_negative_float("length_penalty", length_penalty)
    _checks.index("pad_id", pad_id)
    if eos_id is not None:
        _checks.index("eos_id", eos_id)
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
    start_tokens = _checks.array_like("start_tokens", start_tokens)
    if not jnp.issubdtype(start_tokens.dtype, jnp.integer) or start_tokens.ndim != 1:
        raise ValueError(
            f"start_tokens must be integer ids [B], got {start_tokens.dtype} "
            f"{tuple(start_tokens.shape)}"
        )
    B, K, L = start_tokens.shape[0], beam_size, max_length
    for path, leaf in jax.tree_util.tree_leaves_with_path(carry):
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != B:
            raise ValueError(
                f"carry{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; every carry leaf "
                f"needs the batch axis B={B} first"
            )

    def advance(c, tokens):
        c, logp = step_fn(c, tokens.reshape(B * K))
        if jnp.ndim(logp) != 2 or logp.shape[0] != B * K:
            raise ValueError(
                f"step_fn must return log-probabilities [N={B * K}, V], got {jnp.shape(logp)}"
            )
        if eos_id is not None and not 0 <= eos_id < logp.shape[1]:
            raise ValueError(f"eos_id={eos_id} is outside the vocabulary [0, {logp.shape[1]})")
        logp = jax.nn.log_softmax(logp.astype(jnp.float32), axis=-1)
        return c, logp.reshape(B, K, -1)

    neg_inf = jnp.float32(-jnp.inf)
    best_possible_lp = gnmt_length_penalty(L, length_penalty)
    state = (
        jnp.int32(0),
        tile_beams(carry, K),
        jnp.full((B, K, L), pad_id, jnp.int32),  # live tokens
        jnp.where(jnp.arange(K) == 0, 0.0, neg_inf) * jnp.ones((B, 1), jnp.float32),  # live lp
        jnp.repeat(start_tokens.astype(jnp.int32)[:, None], K, axis=1),  # last live tokens
        jnp.full((B, K, L), pad_id, jnp.int32),  # finished tokens
        jnp.full((B, K), neg_inf),  # finished scores
        jnp.full((B, K), neg_inf),  # finished log-probabilities
        jnp.zeros((B, K), jnp.int32),  # finished lengths
    )

    def not_done(s):
        i, _, _, live_lp, _, _, fin_score, _, _ = s
        # a live hypothesis' score can only reach live_lp / lp(L) (log-probs only fall, lp grows)
        hopeless = jnp.min(fin_score, axis=1) >= jnp.max(live_lp, axis=1) / best_possible_lp
        return (i < L) & ~jnp.all(hopeless)

    def body(s):
        i, c, live, live_lp, last, fin, fin_score, fin_lp, fin_len = s
        c, logp = advance(c, last)
        V = logp.shape[-1]
        n2 = min(2 * K, K * V)
        cand_lp, idx = lax.top_k((live_lp[..., None] + logp).reshape(B, K * V), n2)
        parent, tok = idx // V, (idx % V).astype(jnp.int32)
        seqs = jnp.take_along_axis(live, parent[..., None], axis=1)
        seqs = jnp.where(jnp.arange(L) == i, tok[..., None], seqs)
        ends = (tok == eos_id) if eos_id is not None else jnp.zeros(tok.shape, jnp.bool_)
        finish = (ends | (i == L - 1)) & (jnp.arange(n2) < K) & jnp.isfinite(cand_lp)
        new_score = jnp.where(finish, cand_lp / gnmt_length_penalty(i + 1, length_penalty), neg_inf)
        all_score = jnp.concatenate([fin_score, new_score], axis=1)
        fin_score, pick = lax.top_k(all_score, K)
        fin = jnp.take_along_axis(jnp.concatenate([fin, seqs], 1), pick[..., None], axis=1)
        new_lp = jnp.where(finish, cand_lp, neg_inf)
        fin_lp = jnp.take_along_axis(jnp.concatenate([fin_lp, new_lp], 1), pick, axis=1)
        new_len = jnp.where(finish, i + 1, 0).astype(jnp.int32)
        fin_len = jnp.take_along_axis(jnp.concatenate([fin_len, new_len], 1), pick, axis=1)
        live_lp, keep = lax.top_k(jnp.where(ends, neg_inf, cand_lp), K)
        live = jnp.take_along_axis(seqs, keep[..., None], axis=1)
        last = jnp.take_along_axis(tok, keep, axis=1)
        rows = (jnp.arange(B)[:, None] * K + jnp.take_along_axis(parent, keep, axis=1)).reshape(-1)
        c = jax.tree_util.tree_map(lambda x: jnp.take(x, rows, axis=0), c)
        return i + 1, c, live, live_lp, last, fin, fin_score, fin_lp, fin_len

    out = lax.while_loop(not_done, body, state)
    _, _, _, _, _, fin, fin_score, fin_lp, fin_len = out
    return BeamSearchResult(
        tokens=fin[:, :num_return],
        scores=fin_score[:, :num_return],
        log_probs=fin_lp[:, :num_return],
        lengths=fin_len[:, :num_return],
    )
