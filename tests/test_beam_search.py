"""Beam search against exhaustive search, teacher-forced rescoring and constructed cases."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from seqjax.decode import (
    beam_search,
    generate,
    gnmt_length_penalty,
    make_step_fn,
    tile_beams,
)

E, H = 3, 5
CELL = seqjax.LSTM(H)


def init_lm(seed, V):
    k = jax.random.split(jax.random.key(seed), 4)
    return dict(
        cell=CELL.init(k[0], E),
        emb=jax.random.normal(k[1], (V, E)),
        w=2.0 * jax.random.normal(k[2], (H, V)),
        b=jax.random.normal(k[3], (V,)),
    )


def random_carry(seed, batch):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda z: jnp.asarray(rng.normal(size=z.shape).astype(np.float32)),
        CELL.initial_carry((batch,)),
    )


def lm_step_fn(lm):
    return make_step_fn(CELL, lm["cell"], lm["emb"], lm["w"], lm["b"])


@functools.partial(
    jax.jit, static_argnames=("beam_size", "max_length", "eos_id", "length_penalty", "num_return")
)
def search(lm, carry, start, **kw):
    return beam_search(lm_step_fn(lm), carry, start, **kw)


@jax.jit
def teacher_forced_log_prob(lm, carry, start, tokens, lengths):
    """Sum of log p(token_t | prefix) over each sequence's first ``lengths`` tokens."""
    step = lm_step_fn(lm)
    inputs = jnp.concatenate([start[:, None], tokens[:, :-1]], axis=1)

    def body(c, t):
        c, logp = step(c, inputs[:, t])
        lp = jnp.take_along_axis(logp, tokens[:, t][:, None], axis=1)[:, 0]
        return c, jnp.where(t < lengths, lp, 0.0)

    _, lps = jax.lax.scan(body, carry, jnp.arange(tokens.shape[1]))
    return lps.sum(0)


def all_hypotheses(V, eos, L):
    """Every output up to length L: ending in EOS (EOS nowhere else), or L tokens without EOS."""
    words = [v for v in range(V) if v != eos]
    out = []
    for n in range(L):
        out += [list(p) + [eos] for p in itertools.product(words, repeat=n)]
    out += [list(p) for p in itertools.product(words, repeat=L)]
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_wide_beam_equals_exhaustive_search(alpha):
    V, eos, L, K = 3, 2, 3, 16
    hyps = all_hypotheses(V, eos, L)
    assert len(hyps) == 15 <= K
    lm = init_lm(0, V)
    carry, start = random_carry(1, 2), jnp.array([0, 1])
    out = search(lm, carry, start, beam_size=K, max_length=L, eos_id=eos, length_penalty=alpha)
    toks = np.zeros((len(hyps), L), np.int32)
    lens = np.array([len(h) for h in hyps])
    for n, h in enumerate(hyps):
        toks[n, : len(h)] = h
    for b in range(2):
        row = jax.tree_util.tree_map(lambda x, b=b: jnp.repeat(x[b : b + 1], len(hyps), 0), carry)
        lp = np.asarray(
            teacher_forced_log_prob(
                lm, row, jnp.full((len(hyps),), start[b]), jnp.asarray(toks), jnp.asarray(lens)
            )
        )
        scores = lp / ((5.0 + lens) / 6.0) ** alpha
        order = np.argsort(-scores, kind="stable")
        n = len(hyps)
        np.testing.assert_array_equal(np.asarray(out.lengths[b, :n]), lens[order])
        np.testing.assert_array_equal(np.asarray(out.tokens[b, :n]), toks[order])
        np.testing.assert_allclose(np.asarray(out.scores[b, :n]), scores[order], rtol=1e-5)
        np.testing.assert_allclose(np.asarray(out.log_probs[b, :n]), lp[order], rtol=1e-5)
        # slots beyond the hypothesis count are empty
        assert np.all(np.asarray(out.scores[b, n:]) == -np.inf)
        assert np.all(np.asarray(out.lengths[b, n:]) == 0)


@pytest.fixture(scope="module")
def wide_search():
    """A larger vocabulary and a narrow beam: pruning happens."""
    V, eos, L, K = 7, 0, 6, 3
    lm = init_lm(2, V)
    carry, start = random_carry(3, 4), jnp.array([1, 2, 3, 1])
    kw = dict(beam_size=K, max_length=L, eos_id=eos, length_penalty=0.6)
    return lm, carry, start, kw, search(lm, carry, start, **kw)


def test_scores_equal_teacher_forced_log_probs(wide_search):
    lm, carry, start, kw, out = wide_search
    B, K, L = out.tokens.shape
    lp = teacher_forced_log_prob(
        lm,
        tile_beams(carry, K),
        jnp.repeat(start, K),
        out.tokens.reshape(B * K, L),
        out.lengths.reshape(-1),
    ).reshape(B, K)
    np.testing.assert_allclose(np.asarray(out.log_probs), np.asarray(lp), rtol=1e-5, atol=1e-5)
    penalty = gnmt_length_penalty(out.lengths, kw["length_penalty"])
    np.testing.assert_allclose(
        np.asarray(out.scores), np.asarray(out.log_probs / penalty), rtol=1e-6
    )
    s = np.asarray(out.scores)
    assert np.all(np.isfinite(s)) and np.all(np.diff(s, axis=1) <= 0)  # best first


def test_ended_hypotheses_stop_growing(wide_search):
    *_, kw, out = wide_search
    toks, lens = np.asarray(out.tokens), np.asarray(out.lengths)
    eos, L = kw["eos_id"], kw["max_length"]
    for b, k in np.ndindex(lens.shape):
        n = lens[b, k]
        assert 1 <= n <= L
        assert np.all(toks[b, k, n:] == 0)  # pad_id after the end
        assert eos not in toks[b, k, : n - 1]
        if n < L:
            assert toks[b, k, n - 1] == eos
    assert (lens < L).any()  # the case is not vacuous


def test_batch_entries_are_independent(wide_search):
    lm, carry, start, kw, out = wide_search
    for b in range(start.shape[0]):
        row = jax.tree_util.tree_map(lambda x, b=b: x[b : b + 1], carry)
        one = search(lm, row, start[b : b + 1], **kw)
        for got, want in zip(one, out, strict=True):
            np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[b]), rtol=1e-6)


def test_beam_size_one_is_greedy_decoding():
    V, L = 7, 8
    lm = init_lm(4, V)
    carry, start = random_carry(5, 3), jnp.array([1, 2, 3])
    step = lm_step_fn(lm)
    greedy, _ = generate(
        lambda params, c, tok: step(c, tok),
        None,
        carry,
        start[:, None],
        jax.random.key(0),
        length=L,
        temperature=0.0,
    )
    greedy = np.asarray(greedy)
    out = search(lm, carry, start, beam_size=1, max_length=L)
    np.testing.assert_array_equal(np.asarray(out.tokens[:, 0]), greedy)
    # with an end token, beam 1 stops where greedy decoding first emits it
    eos = int(greedy[0, 2])
    out = search(lm, carry, start, beam_size=1, max_length=L, eos_id=eos)
    for b in range(3):
        n = int(out.lengths[b, 0])
        hits = np.flatnonzero(greedy[b] == eos)
        assert n == (hits[0] + 1 if len(hits) else L)
        np.testing.assert_array_equal(np.asarray(out.tokens[b, 0, :n]), greedy[b, :n])


def table_step_fn(table):
    """A model whose next-token distribution depends only on the last token."""
    logp = jnp.log(jnp.asarray(table, jnp.float32))

    def step_fn(carry, tokens):
        return carry, logp[tokens]

    return step_fn


def test_length_penalty_changes_the_ranking_as_computed():
    # tokens: 0 = BOS, 1 = "a", 2 = EOS
    table = [[1e-6, 0.55, 0.45], [1e-6, 0.2, 0.8], [1 / 3] * 3]
    short, long_ = np.log(0.45), np.log(0.55) + np.log(0.8)  # "EOS" vs "a EOS"
    assert short > long_ and short < long_ / (7 / 6)
    for alpha, best, best_score in ((0.0, [2], short), (1.0, [1, 2], long_ / (7 / 6))):
        out = jax.jit(
            lambda c, s, alpha=alpha: beam_search(
                table_step_fn(table),
                c,
                s,
                beam_size=2,
                max_length=3,
                eos_id=2,
                length_penalty=alpha,
            )
        )(jnp.zeros((1, 1)), jnp.array([0]))
        n = int(out.lengths[0, 0])
        assert np.asarray(out.tokens[0, 0, :n]).tolist() == best
        np.testing.assert_allclose(float(out.scores[0, 0]), best_score, rtol=1e-5)


def test_beam_one_keeps_only_the_top_extension_even_when_a_pruned_end_scores_better():
    # tokens: 0 = BOS, 1 = "a", 2 = EOS, 3 = "b". Greedy: "a EOS" (log .6 + log .6), although
    # "EOS" (log .4) scores higher: it ranked second at step 0, outside the beam of one.
    table = [[1e-6, 0.6, 0.4, 1e-6], [1e-6, 1e-6, 0.6, 0.4], [0.25] * 4, [0.25] * 4]
    out = jax.jit(
        lambda c, s: beam_search(table_step_fn(table), c, s, beam_size=1, max_length=4, eos_id=2)
    )(jnp.zeros((1, 1)), jnp.array([0]))
    n = int(out.lengths[0, 0])
    assert np.asarray(out.tokens[0, 0, :n]).tolist() == [1, 2]
    np.testing.assert_allclose(float(out.log_probs[0, 0]), 2 * np.log(0.6), rtol=1e-5)


def test_loop_stops_once_every_beam_has_ended():
    calls = []

    def step_fn(carry, tokens):
        jax.debug.callback(lambda: calls.append(1))
        # EOS (token 2) is almost certain after every token
        return carry, jnp.log(jnp.array([[0.01, 0.01, 0.98]] * tokens.shape[0]))

    out = jax.jit(lambda c, s: beam_search(step_fn, c, s, beam_size=2, max_length=50, eos_id=2))(
        jnp.zeros((1, 1)), jnp.array([0])
    )
    jax.effects_barrier()
    assert np.asarray(out.lengths[0]).tolist() == [1, 2]
    assert len(calls) == 2  # not 50


def test_errors():
    step = table_step_fn([[0.5, 0.5], [0.5, 0.5]])
    start = jnp.array([0, 1])
    with pytest.raises(ValueError, match="batch axis"):
        beam_search(step, jnp.zeros((3, 1)), start, beam_size=2, max_length=3)
    with pytest.raises(ValueError, match="num_return"):
        beam_search(step, jnp.zeros((2, 1)), start, beam_size=2, max_length=3, num_return=3)
    with pytest.raises(ValueError, match="vocabulary"):
        beam_search(step, jnp.zeros((2, 1)), start, beam_size=2, max_length=3, eos_id=5)
    with pytest.raises(ValueError, match="start_tokens"):
        beam_search(step, jnp.zeros((2, 1)), start[:, None], beam_size=2, max_length=3)
    with pytest.raises(ValueError, match="log-probabilities"):
        beam_search(lambda c, t: (c, jnp.zeros((1, 2))), jnp.zeros((2, 1)), start, beam_size=2,
                    max_length=3)  # fmt: skip
