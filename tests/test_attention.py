"""Attention and the attentional decoder against NumPy references and padding properties."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import seqjax
from seqjax.attention import SCORES, Attention, doubly_stochastic_penalty, masked_softmax
from seqjax.attention_decoder import AttentionDecoder, scan_with_weights

B, S, M, H, I, T = 3, 4, 5, 6, 3, 4


def np_masked_softmax(e, mask):
    e = np.where(mask, e, -np.inf)
    top = np.max(e, -1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    w = np.where(mask, np.exp(e - top), 0.0)
    total = w.sum(-1, keepdims=True)
    return w / np.where(total > 0, total, 1.0)


def np_attend(score, p, memory, mask, q):
    """Scores written from the equations; ``p`` holds NumPy arrays."""
    if score == "additive":
        e = np.tanh(q[:, None, :] @ p.w_query + memory @ p.w_memory) @ p.v
    elif score == "general":
        e = np.einsum("bq,qm,bsm->bs", q, p.w_query, memory)
    else:
        e = np.einsum("bm,bsm->bs", q, memory)
    w = np_masked_softmax(e, mask)
    return np.einsum("bs,bsm->bm", w, np.where(mask[..., None], memory, 0.0)), w


def to_np(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


def data(seed, s=S):
    rng = np.random.default_rng(seed)
    memory = rng.normal(size=(B, s, M)).astype(np.float32)
    xs = rng.normal(size=(B, T, I)).astype(np.float32)
    return memory, xs


@pytest.mark.parametrize("score", SCORES)
def test_scores_match_numpy(score):
    att = Attention(score, hidden_size=7 if score == "additive" else None)
    Q = M if score == "dot" else H
    params = att.init(jax.random.key(1), Q, M)
    memory, _ = data(0)
    q = np.random.default_rng(1).normal(size=(B, Q)).astype(np.float32)
    lengths = np.array([S, 2, 0])
    mem = att.precompute(params, memory, jnp.asarray(lengths))
    context, weights = att(params, mem, jnp.asarray(q))
    mask = np.arange(S) < lengths[:, None]
    ref_c, ref_w = np_attend(score, to_np(params), memory.astype(np.float64), mask, q)
    np.testing.assert_allclose(np.asarray(weights), ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(context), ref_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(weights)[~mask], 0.0)  # exactly zero on padding
    np.testing.assert_allclose(np.asarray(weights).sum(-1), [1.0, 1.0, 0.0], rtol=1e-6)


def test_masked_softmax_empty_row_has_finite_gradient():
    mask = jnp.array([[True, False], [False, False]])

    def f(e):
        return jnp.sum(masked_softmax(e, mask) * jnp.array([1.0, 2.0]))

    e = jnp.array([[0.3, 1e4], [-1e4, 2.0]])
    assert np.asarray(masked_softmax(e, mask)).tolist() == [[1.0, 0.0], [0.0, 0.0]]
    g = np.asarray(jax.grad(f)(e))
    assert np.all(np.isfinite(g)) and np.all(g == 0.0)


# -- one decoder step against NumPy ---------------------------------------------------------
STEP_CASES = {
    "luong-feeding-additive": dict(style="luong", attention="additive", attention_size=7),
    "luong-nofeed-general-gate": dict(
        style="luong", attention="general", input_feeding=False, gate=True, attentional_size=4
    ),
    "bahdanau-dot-gate": dict(style="bahdanau", attention="dot", gate=True),
}


@pytest.mark.parametrize("case", sorted(STEP_CASES))
def test_decoder_step_matches_numpy(case):
    kw = STEP_CASES[case]
    hidden = M if kw["attention"] == "dot" else H
    cell = seqjax.SimpleRNN(hidden)
    dec = AttentionDecoder(cell, memory_size=M, **kw)
    params = dec.init(jax.random.key(2), I)
    memory, xs = data(3)
    lengths = np.array([S, 3, 1])
    bound = dec.bind(params, memory, jnp.asarray(lengths))
    rng = np.random.default_rng(4)
    carry = dec.initial_carry((B,))
    carry = jax.tree_util.tree_map(
        lambda z: jnp.asarray(rng.normal(size=z.shape).astype(np.float32)), carry
    )
    new, y, w = dec.step_with_weights(bound, carry, xs[:, 0])
    new2, y2 = dec(bound, carry, xs[:, 0])
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))

    p = to_np(params)
    pc = {k: v for k, v in p.cell._asdict().items() if v is not None}
    mask = np.arange(S) < lengths[:, None]
    mem64, x = memory.astype(np.float64), xs[:, 0].astype(np.float64)
    h_prev, fed = np.asarray(carry.cell.h, np.float64), np.asarray(carry.output, np.float64)

    def attend(q):
        c, a = np_attend(kw["attention"], p.attention, mem64, mask, q)
        if kw.get("gate"):
            c = ref.sigmoid(q @ p.w_gate + p.b_gate)[:, None] * c
        return c, a

    if kw["style"] == "bahdanau":
        c, a = attend(fed)
        h = ref.rnn_step(cell, pc, h_prev, np.concatenate([x, c], -1))
        ref_y, ref_out = np.concatenate([h, c], -1), h
    else:
        x_in = np.concatenate([x, fed], -1) if kw.get("input_feeding", True) else x
        h = ref.rnn_step(cell, pc, h_prev, x_in)
        c, a = attend(h)
        ref_y = ref_out = np.tanh(np.concatenate([c, h], -1) @ p.w_out)
    for got, want in ((y, ref_y), (w, a), (new.cell.h, h), (new.output, ref_out)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-6)
    assert y.shape == (B, dec.output_size)


# -- whole sequences: scan, padding, gradients ----------------------------------------------
DECODERS = {
    "additive": AttentionDecoder(seqjax.LSTM(H), memory_size=M, attention="additive"),
    "general": AttentionDecoder(
        seqjax.stack([seqjax.GRU(H), seqjax.LSTM(H)]),
        memory_size=M,
        attention="general",
        style="bahdanau",
        gate=True,
    ),
    "dot": AttentionDecoder(seqjax.LSTM(M), memory_size=M, attention="dot", input_feeding=False),
}
PARAMS = {k: d.init(jax.random.key(5), I) for k, d in DECODERS.items()}


@functools.partial(jax.jit, static_argnums=0)
def run(name, params, memory, lengths, xs, tgt_lengths):
    """Outputs, weights and d(loss)/d(memory) of a teacher-forced pass."""
    dec = DECODERS[name]

    def loss(memory):
        bound = dec.bind(params, memory, lengths)
        final, ys, w = scan_with_weights(dec, bound, xs, lengths=tgt_lengths)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.output**2), (ys, w)

    (_, (ys, w)), g = jax.value_and_grad(loss, has_aux=True)(memory)
    return ys, w, g


@settings(max_examples=6)
@given(
    st.sampled_from(sorted(DECODERS)),
    st.lists(st.integers(0, S), min_size=B, max_size=B),
    st.integers(0, 2**16),
)
def test_memory_padding_never_changes_a_result(name, lengths, seed):
    extra = 2  # one padded shape: every new shape recompiles
    memory, xs = data(seed)
    rng = np.random.default_rng(seed + 1)
    # the original memory's own padding is random too; the padded copy appends more of it
    noise = rng.normal(size=(B, S, M)).astype(np.float32) * 10
    valid = np.arange(S)[None, :, None] < np.array(lengths)[:, None, None]
    memory = np.where(valid, memory, noise)
    # beyond S: NaN and inf, which must not leak into values or gradients either
    extra_pad = np.where(rng.uniform(size=(B, extra, M)) < 0.5, np.nan, np.inf).astype(np.float32)
    padded = np.concatenate([memory, extra_pad], axis=1)
    lens, tgt = jnp.array(lengths), jnp.array([T, 2, 0])
    ys, w, g = run(name, PARAMS[name], memory, lens, xs, tgt)
    ys_p, w_p, g_p = run(name, PARAMS[name], padded, lens, xs, tgt)
    np.testing.assert_allclose(np.asarray(ys_p), np.asarray(ys), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(w_p)[..., :S], np.asarray(w), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(w_p)[..., S:], 0.0)
    np.testing.assert_allclose(np.asarray(g_p)[:, :S], np.asarray(g), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(g_p)[:, S:], 0.0)
    # weights: a distribution over the valid positions at valid target steps, zero elsewhere
    w = np.asarray(w)
    pos_valid = np.arange(S)[None, None, :] < np.array(lengths)[:, None, None]
    np.testing.assert_array_equal(w[~np.broadcast_to(pos_valid, w.shape)], 0.0)
    step_valid = np.arange(T)[None, :] < np.asarray(tgt)[:, None]
    sums = w.sum(-1)
    expect = np.where(step_valid & (np.array(lengths)[:, None] > 0), 1.0, 0.0)
    np.testing.assert_allclose(sums, expect, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_scan_equals_a_python_loop_of_steps(name):
    dec, params = DECODERS[name], PARAMS[name]
    memory, xs = data(7)
    bound = dec.bind(params, memory, jnp.array([S, 1, 3]))
    final, ys, w = scan_with_weights(dec, bound, xs)
    _, ys_plain = seqjax.scan(dec, bound, xs)
    np.testing.assert_array_equal(np.asarray(ys_plain), np.asarray(ys))
    carry = dec.initial_carry((B,))
    for t in range(T):
        carry, y, w_t = dec.step_with_weights(bound, carry, xs[:, t])
        np.testing.assert_allclose(np.asarray(ys[:, t]), np.asarray(y), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(w[:, t]), np.asarray(w_t), rtol=1e-5, atol=1e-6)
    for a, b in zip(
        jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(carry), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["additive", "general"])
def test_gradients_match_finite_differences(name, x64):
    dec = DECODERS[name]
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), PARAMS[name])
    memory, xs = data(8)
    memory, xs = jnp.asarray(memory, jnp.float64), jnp.asarray(xs, jnp.float64)
    lengths = jnp.array([S, 2, 0])

    def loss(params, memory, xs):
        _, ys = seqjax.scan(
            dec, dec.bind(params, memory, lengths), xs, lengths=jnp.array([T, 3, 2])
        )
        return jnp.sum(jnp.tanh(ys))

    check_grads(jax.jit(loss), (params, memory, xs), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_doubly_stochastic_penalty_matches_numpy():
    rng = np.random.default_rng(9)
    w = rng.uniform(size=(2, T, S)).astype(np.float32)
    mask = np.array([[True] * S, [True, True, False, False]])
    got = doubly_stochastic_penalty(jnp.asarray(w), jnp.asarray(mask), target=0.5)
    want = np.where(mask, (0.5 - w.sum(1)) ** 2, 0.0).sum(-1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_errors():
    dec = DECODERS["additive"]
    params = PARAMS["additive"]
    memory, xs = data(0)
    with pytest.raises(ValueError, match="bind"):
        seqjax.scan(dec, params, xs)
    with pytest.raises(ValueError, match="features"):
        dec.bind(params, memory[..., :2])
    with pytest.raises(ValueError, match="batch shape"):
        dec.bind(params, memory, jnp.array([1, 2]))
    with pytest.raises(TypeError, match="integers"):
        dec.bind(params, memory, jnp.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="not both"):
        dec.bind(params, memory, jnp.array([1, 2, 3]), mask=jnp.ones((B, S), bool))
    bound = dec.bind(params, memory[:2])
    with pytest.raises(ValueError, match="tile_beams"):
        dec(bound, dec.initial_carry((B,)), xs[:, 0])
    with pytest.raises(ValueError, match="dot attention"):
        AttentionDecoder(seqjax.LSTM(H), memory_size=M, attention="dot")
    with pytest.raises(TypeError, match="bidirectional"):
        AttentionDecoder(seqjax.bidirectional(seqjax.LSTM(H)), memory_size=M)
    with pytest.raises(ValueError, match="input_feeding"):
        AttentionDecoder(seqjax.LSTM(H), memory_size=M, style="bahdanau", input_feeding=False)
    with pytest.raises(TypeError, match="hidden_size"):
        Attention("additive")


def test_decoder_definition_is_hashable_and_round_trips_config():
    dec = DECODERS["general"]
    assert hash(dec) == hash(dec.replace())
    assert seqjax.cell_from_config(seqjax.cell_to_config(dec)) == dec
