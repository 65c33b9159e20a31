"""Sampling and the compiled decode loop, against NumPy references and a Python loop."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import seqjax
from seqjax.decode import filter_top_k, filter_top_p, generate, sample_logits

V = 7


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_nucleus(logits, p):
    """Reference: the smallest set of most likely tokens whose probability reaches ``p``."""
    probs = np_softmax(np.asarray(logits, np.float64))
    keep = np.zeros(probs.shape, bool)
    for row in np.ndindex(probs.shape[:-1]):
        order = np.argsort(-probs[row], kind="stable")
        mass, chosen = 0.0, []
        for i in order:
            chosen.append(i)
            mass += probs[row][i]
            if mass >= p - 1e-6:  # float32 cumsum in the implementation
                break
        keep[row][chosen] = True
    return keep


logit_rows = st.lists(st.floats(-4, 4, width=32), min_size=V, max_size=V, unique=True)


@given(st.lists(logit_rows, min_size=1, max_size=3), st.integers(1, V))
def test_filter_top_k_keeps_exactly_the_k_largest(rows, k):
    logits = np.array(rows, np.float32)
    out = np.asarray(filter_top_k(jnp.asarray(logits), k))
    ref = np.argsort(-logits, axis=-1)[:, :k]
    for r in range(len(rows)):
        assert set(np.flatnonzero(np.isfinite(out[r]))) == set(ref[r])
        np.testing.assert_array_equal(out[r][ref[r]], logits[r][ref[r]])


@given(st.lists(logit_rows, min_size=1, max_size=3), st.floats(0.05, 1.0))
@example(rows=[[1.5, -1.1754943508222875e-38, 0.0, 1.0, 2.0, 0.5, -1.0]], p=0.875)  # a tie
def test_filter_top_p_matches_numpy_smallest_set(rows, p):
    logits = np.array(rows, np.float32)
    keep = np.isfinite(np.asarray(filter_top_p(jnp.asarray(logits), p)))
    ref = np_nucleus(logits, p)
    # float32 vs float64 mass can disagree only for a token whose inclusion sits at p exactly;
    # and two tokens of equal probability (distinct logits such as 0.0 and -1e-38 round to the
    # same exp) may swap at the boundary: either smallest set is correct.
    probs = np_softmax(logits.astype(np.float64))
    for r in range(len(rows)):
        if not np.array_equal(keep[r], ref[r]):
            diff = np.flatnonzero(keep[r] != ref[r])
            if len(diff) == 2 and probs[r][diff[0]] == probs[r][diff[1]]:
                assert keep[r][diff].sum() == 1 and keep[r].sum() == ref[r].sum()
                continue
            assert len(diff) == 1
            mass_before = probs[r][probs[r] > probs[r][diff[0]]].sum()
            assert abs(mass_before - p) < 1e-5
        assert keep[r][np.argmax(logits[r])]


@pytest.fixture(scope="module")
def draws():
    """4000 draws for one row of logits under several settings (one compile each)."""
    logits = jnp.log(jnp.array([0.35, 0.25, 0.15, 0.1, 0.08, 0.05, 0.02], jnp.float32))
    keys = jax.random.split(jax.random.key(0), 4000)

    def many(**kw):
        return np.asarray(jax.jit(jax.vmap(lambda k: sample_logits(k, logits, **kw)))(keys))

    return logits, many


def assert_frequencies(samples, probs):
    n = len(samples)
    freq = np.bincount(samples, minlength=len(probs)) / n
    sigma = np.sqrt(np.maximum(probs * (1 - probs), 1e-12) / n)
    assert np.all(np.abs(freq - probs) <= 5 * sigma + 1e-9), (freq, probs)


def test_top_k_never_samples_outside_the_k_best(draws):
    logits, many = draws
    s = many(top_k=3)
    assert set(np.unique(s)) == {0, 1, 2}
    p = np_softmax(np.asarray(logits)[:3].astype(np.float64))
    assert_frequencies(s, np.concatenate([p, np.zeros(V - 3)]))


def test_top_p_samples_the_renormalised_nucleus(draws):
    logits, many = draws
    s = many(top_p=0.7)  # 0.35 + 0.25 = 0.6 < 0.7 -> the nucleus is {0, 1, 2}
    assert set(np.unique(s)) <= {0, 1, 2}
    p = np.array([0.35, 0.25, 0.15]) / 0.75
    assert_frequencies(s, np.concatenate([p, np.zeros(V - 3)]))


def test_top_k_then_top_p(draws):
    logits, many = draws
    s = many(top_k=4, top_p=0.5)  # within the top 4 (mass 0.85): 0.35/0.85 < 0.5 -> {0, 1}
    p = np.array([0.35, 0.25]) / 0.6
    assert_frequencies(s, np.concatenate([p, np.zeros(V - 2)]))


def test_temperature_scales_the_distribution(draws):
    logits, many = draws
    s = many(temperature=2.0)
    assert_frequencies(s, np_softmax(np.asarray(logits, np.float64) / 2.0))


def test_temperature_zero_and_tiny_are_greedy():
    logits = jax.random.normal(jax.random.key(1), (5, V))
    argmax = np.argmax(np.asarray(logits), axis=-1)
    np.testing.assert_array_equal(
        np.asarray(sample_logits(jax.random.key(2), logits, temperature=0.0)), argmax
    )
    np.testing.assert_array_equal(
        np.asarray(sample_logits(jax.random.key(3), logits, temperature=1e-4)), argmax
    )


def test_bad_sampling_arguments():
    logits = jnp.zeros((2, V))
    with pytest.raises(ValueError, match="temperature"):
        sample_logits(jax.random.key(0), logits, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        sample_logits(jax.random.key(0), logits, top_k=0)
    with pytest.raises(ValueError, match="vocabulary size"):
        filter_top_k(logits, V + 1)
    with pytest.raises(ValueError, match="top_p"):
        filter_top_p(logits, 1.5)
    with pytest.raises(TypeError, match="top_k"):
        sample_logits(jax.random.key(0), logits, top_k=2.5)


# -- the decode loop on a real (tiny) model --------------------------------------------------
class LM(NamedTuple):
    embed: jax.Array
    rnn: object
    w_out: jax.Array


CELL = seqjax.stack([seqjax.LSTM(6), seqjax.GRU(5)])


def step_fn(params, carry, tok):
    carry, y = CELL(params.rnn, carry, params.embed[tok])
    return carry, y @ params.w_out


def prime_fn(params, carry, tokens):
    carry, ys = seqjax.scan(CELL, params.rnn, params.embed[tokens], carry=carry)
    return carry, ys @ params.w_out


@pytest.fixture(scope="module")
def lm():
    k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
    params = LM(
        embed=jax.random.normal(k1, (V, 3)),
        rnn=CELL.init(k2, 3),
        w_out=2.0 * jax.random.normal(k3, (5, V)),
    )
    prompt = jnp.array([[1, 2, 3], [4, 5, 6], [1, 2, 3]], jnp.int32)
    return params, CELL.initial_carry((3,)), prompt


@pytest.mark.parametrize("kw", [dict(temperature=0.9, top_k=4, top_p=0.9), dict(temperature=0.0)])
def test_decode_loop_equals_python_loop_of_steps(lm, kw):
    params, carry0, prompt = lm
    key = jax.random.key(5)
    length = 8
    tokens, final = generate(step_fn, params, carry0, prompt, key, length=length, **kw)
    assert tokens.shape == (3, length) and tokens.dtype == jnp.int32

    step = jax.jit(step_fn)
    carry = carry0
    for t in range(prompt.shape[1]):
        carry, logits = step(params, carry, prompt[:, t])
    ref = []
    for t in range(length):
        tok = sample_logits(jax.random.fold_in(key, t), logits, **kw)
        ref.append(np.asarray(tok))
        if t < length - 1:
            carry, logits = step(params, carry, tok)
    np.testing.assert_array_equal(np.asarray(tokens), np.stack(ref, axis=1))
    for a, b in zip(
        jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(carry), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_prime_with_scan_equals_priming_with_steps(lm):
    params, carry0, prompt = lm
    key = jax.random.key(6)
    a, ca = generate(step_fn, params, carry0, prompt, key, length=6, temperature=0.0)
    b, cb = generate(
        step_fn, params, carry0, prompt, key, length=6, temperature=0.0, prime_fn=prime_fn
    )
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for x, y in zip(jax.tree_util.tree_leaves(ca), jax.tree_util.tree_leaves(cb), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_seeded_and_independent_rows(lm):
    params, carry0, prompt = lm
    run = lambda seed: np.asarray(
        generate(  # noqa: E731
            step_fn,
            params,
            carry0,
            prompt,
            jax.random.key(seed),
            length=30,
            temperature=1.5,
            prime_fn=prime_fn,
        )[0]
    )
    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[2])  # same prompt in rows 0 and 2, different samples


def test_continuing_from_the_returned_carry(lm):
    """Two greedy calls of 4 tokens, the second primed on the last token, equal one of 8."""
    params, carry0, prompt = lm
    key = jax.random.key(9)
    whole, _ = generate(step_fn, params, carry0, prompt, key, length=8, temperature=0.0)
    first, carry = generate(step_fn, params, carry0, prompt, key, length=4, temperature=0.0)
    second, _ = generate(step_fn, params, carry, first[:, -1:], key, length=4, temperature=0.0)
    np.testing.assert_array_equal(
        np.asarray(whole), np.concatenate([np.asarray(first), np.asarray(second)], 1)
    )


def test_generate_errors(lm):
    params, carry0, prompt = lm
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="P >= 1"):
        generate(step_fn, params, carry0, prompt[:, :0], key, length=3)
    with pytest.raises(TypeError, match="integer"):
        generate(step_fn, params, carry0, prompt.astype(jnp.float32), key, length=3)
    with pytest.raises(ValueError, match="length"):
        generate(step_fn, params, carry0, prompt, key, length=0)
    with pytest.raises(ValueError, match="top_p"):
        generate(step_fn, params, carry0, prompt, key, length=3, top_p=0.0)
