"""Encoder, bridge and attentional decoder together; beam search over them; use from Flax."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import seqjax
import seqjax.flax.linen as sjl
import seqjax.flax.nnx as sjn
from seqjax.attention_decoder import AttentionDecoder, AttentionDecoderCarry
from seqjax.decode import beam_search, make_step_fn, tile_beams
from seqjax.seq2seq import Bridge, layer_states

B, S, I_SRC, I_TGT, HE = 2, 5, 3, 4, 3
ENC = seqjax.stack([seqjax.bidirectional(seqjax.LSTM(HE))] * 2)
LENGTHS = jnp.array([S, 3])


def src_data(seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(B, S, I_SRC)), jnp.float32)


@pytest.fixture(scope="module")
def encoded():
    params = ENC.init(jax.random.key(0), I_SRC)
    final, memory = seqjax.scan(ENC, params, src_data(), lengths=LENGTHS)
    return final, memory


def test_bidirectional_states_are_concatenated_and_copied(encoded):
    final, _ = encoded
    dec = seqjax.stack([seqjax.LSTM(2 * HE)] * 2)
    bridge = Bridge(ENC, dec)
    params = bridge.init(jax.random.key(1))
    assert params.layers == (None, None)  # sizes match: copy, no parameters
    carry = bridge(params, final)
    for k in range(2):
        f, b = final.layers[k].forward, final.layers[k].backward
        for name in ("h", "c"):
            want = np.concatenate([getattr(f, name), getattr(b, name)], -1)
            np.testing.assert_array_equal(np.asarray(getattr(carry.layers[k], name)), want)
    assert len(layer_states(ENC, final)) == 2


def test_dense_bridge_matches_numpy_and_maps_top_layer(encoded):
    final, _ = encoded
    dec = seqjax.stack([seqjax.GRU(5), seqjax.LSTM(4), seqjax.LSTM(4)])  # 3 layers from 2
    bridge = Bridge(ENC, dec)
    params = bridge.init(jax.random.key(2))
    carry = bridge(params, final)
    top = final.layers[-1]
    s = np.concatenate([top.forward.h, top.backward.h, top.forward.c, top.backward.c], -1)
    for k, layer in enumerate(carry.layers):
        for leaf, d in zip(jax.tree_util.tree_leaves(layer), params.layers[k], strict=True):
            want = np.tanh(s @ np.asarray(d.w) + np.asarray(d.b))
            np.testing.assert_allclose(np.asarray(leaf), want, rtol=1e-5, atol=1e-6)
    assert jax.tree_util.tree_structure(carry) == jax.tree_util.tree_structure(
        dec.initial_carry((B,))
    )
    zeros = Bridge(ENC, dec, mode="zeros")
    for leaf in jax.tree_util.tree_leaves(zeros(zeros.init(jax.random.key(0)), final)):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)


def test_bahdanau_decoder_starts_its_query_from_the_top_state(encoded):
    final, _ = encoded
    dec = AttentionDecoder(seqjax.GRU(2 * HE), memory_size=2 * HE, style="bahdanau")
    bridge = Bridge(ENC, dec, mode="dense")
    carry = bridge(bridge.init(jax.random.key(3)), final)
    assert isinstance(carry, AttentionDecoderCarry)
    np.testing.assert_array_equal(np.asarray(carry.output), np.asarray(carry.cell.h))


V, L, K = 6, 5, 3
DEC = AttentionDecoder(
    seqjax.stack([seqjax.LSTM(2 * HE)] * 2), memory_size=2 * HE, attention="additive"
)
BRIDGE = Bridge(ENC, DEC)


def test_beam_search_over_an_attentional_decoder_rescored_by_scan(encoded):
    """Carry gathering in beam search must keep each hypothesis' own decoder state."""
    final, memory = encoded
    k = jax.random.split(jax.random.key(4), 3)
    p_dec = DEC.init(k[0], I_TGT)
    emb = jax.random.normal(k[1], (V, I_TGT))
    w_out = 3.0 * jax.random.normal(k[2], (DEC.output_size, V))
    carry = BRIDGE(BRIDGE.init(k[0]), final)
    bound_k = DEC.bind(p_dec, tile_beams(memory, K), tile_beams(LENGTHS, K))

    @jax.jit
    def search(bound, carry):
        step = make_step_fn(DEC, bound, emb, w_out)
        return beam_search(
            step, carry, jnp.array([1, 1]), beam_size=K, max_length=L, eos_id=0, length_penalty=0.5
        )

    out = search(bound_k, carry)
    toks = out.tokens.reshape(B * K, L)
    inputs = jnp.concatenate([jnp.ones((B * K, 1), jnp.int32), toks[:, :-1]], axis=1)
    _, ys = seqjax.scan(DEC, bound_k, emb[inputs], carry=tile_beams(carry, K))
    logp = jax.nn.log_softmax(ys @ w_out)
    per_token = jnp.take_along_axis(logp, toks[..., None], axis=-1)[..., 0]
    valid = jnp.arange(L) < out.lengths.reshape(-1, 1)
    lp = jnp.sum(jnp.where(valid, per_token, 0.0), axis=1).reshape(B, K)
    np.testing.assert_allclose(np.asarray(out.log_probs), np.asarray(lp), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(out.scores)))


# -- Flax -------------------------------------------------------------------------------------
FENC = seqjax.bidirectional(seqjax.GRU(HE))
FDEC = AttentionDecoder(seqjax.GRU(2 * HE), memory_size=2 * HE, attention="dot")
FBRIDGE = Bridge(FENC, FDEC)  # copies [h_fwd; h_bwd]


def pure_forward(p_enc, p_dec, p_bridge, src, tgt):
    final, memory = seqjax.scan(FENC, p_enc, src, lengths=LENGTHS)
    carry = FBRIDGE(p_bridge, final)
    _, ys = seqjax.scan(FDEC, FDEC.bind(p_dec, memory, LENGTHS), tgt, carry=carry)
    return ys


class LinenSeq2Seq(nn.Module):
    """The encoder through the linen adapter, the decoder's parameters declared directly."""

    @nn.compact
    def __call__(self, src, tgt):
        final, memory = sjl.RNN(FENC, return_carry=True, name="encoder")(src, seq_lengths=LENGTHS)
        p_dec = self.param("decoder", lambda key: FDEC.init(key, tgt.shape[-1]))
        p_bridge = self.param("bridge", FBRIDGE.init)
        carry = FBRIDGE(p_bridge, final)
        _, ys = seqjax.scan(FDEC, FDEC.bind(p_dec, memory, LENGTHS), tgt, carry=carry)
        return ys


def test_linen_model_equals_the_pure_functions():
    src, tgt = src_data(1), jnp.ones((B, 4, I_TGT))
    model = LinenSeq2Seq()
    variables = jax.jit(model.init)(jax.random.key(5), src, tgt)
    ys = jax.jit(model.apply)(variables, src, tgt)
    p = variables["params"]
    p_enc = sjl.params_from_flax(FENC, p["encoder"])
    want = jax.jit(pure_forward)(p_enc, p["decoder"], p["bridge"], src, tgt)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_flax_adapters_cannot_bind_a_memory():
    """The adapters pass their stored parameters straight to the cell: no memory reaches it."""
    with pytest.raises(ValueError, match="bind"):
        sjl.RNN(FDEC).init(jax.random.key(0), jnp.ones((B, 4, I_TGT)))


class NnxSeq2Seq(nnx.Module):
    def __init__(self, rngs):
        self.encoder = sjn.RNN(FENC, in_features=I_SRC, rngs=rngs, return_carry=True)
        self.decoder = sjn.RNN(FDEC, in_features=I_TGT, rngs=rngs)  # holds the decoder's params
        self.bridge = nnx.data(FBRIDGE.init(jax.random.key(0)))  # (None, None): copying

    def __call__(self, src, tgt):
        final, memory = self.encoder(src, seq_lengths=LENGTHS, deterministic=True)
        bound = FDEC.bind(self.decoder.seqjax_params(), memory, LENGTHS)
        _, ys = seqjax.scan(FDEC, bound, tgt, carry=FBRIDGE(self.bridge, final))
        return ys


def test_nnx_model_gradients_equal_the_pure_functions():
    src, tgt = src_data(2), jnp.ones((B, 4, I_TGT))
    model = NnxSeq2Seq(nnx.Rngs(params=0))
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(jnp.sin(m(src, tgt)))))(model)
    p_enc, p_dec = model.encoder.seqjax_params(), model.decoder.seqjax_params()
    g_enc, g_dec = jax.jit(
        jax.grad(
            lambda a, b: jnp.sum(jnp.sin(pure_forward(a, b, model.bridge, src, tgt))),
            argnums=(0, 1),
        )
    )(p_enc, p_dec)
    got_dec = jax.tree_util.tree_leaves(nnx.to_pure_dict(grads)["decoder"])
    want_dec = jax.tree_util.tree_leaves(g_dec)
    assert len(got_dec) == len(want_dec) > 0
    assert any(float(jnp.abs(g).max()) > 0 for g in want_dec)
    got_enc = jax.tree_util.tree_leaves(nnx.to_pure_dict(grads)["encoder"])
    assert len(got_enc) == len(jax.tree_util.tree_leaves(g_enc))
    # compare as multisets of arrays: the pure dict orders leaves by key name
    for want in want_dec + jax.tree_util.tree_leaves(g_enc):
        assert any(
            g.shape == want.shape and np.allclose(g, want, rtol=1e-5, atol=1e-6)
            for g in got_dec + got_enc
        )
