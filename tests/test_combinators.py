"""Deep stacks (DLSTM, DLSTMP, residual, dropout) and bidirectional layers."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax

B, T, I = 3, 6, 2
LENGTHS = jnp.array([6, 3, 0])


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.key(0), (B, T, I))


def manual_layers(cells, params, xs, lengths, residual=False):
    """Reference: independent scans, one per layer, feeding each into the next."""
    finals, x = [], xs
    for k, (cell, p) in enumerate(zip(cells, params, strict=True)):
        f, y = seqjax.scan(cell, p, x, lengths=lengths)
        if residual and k > 0:
            y = y + x
        finals.append(f)
        x = y
    return finals, x


def test_dlstmp_equals_layer_by_layer_scans(xs):
    cells = [seqjax.LSTM(4, proj_size=3), seqjax.LSTM(5, proj_size=2, peephole=True), seqjax.GRU(3)]
    deep = seqjax.stack(cells)
    params = deep.init(jax.random.key(1), I)
    final, ys = seqjax.scan(deep, params, xs, lengths=LENGTHS)
    want_finals, want = manual_layers(cells, params.layers, xs, LENGTHS)
    np.testing.assert_allclose(ys, want, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(final.layers, tuple(want_finals), rtol=1e-6, atol=1e-6)
    chex.assert_shape(params.layers[1].w_ih, (3, 4 * 5))  # layer 2 reads layer 1's projection
    assert deep.output_size == 3


def test_stack_stepping_equals_layerwise_sequence_run(xs):
    deep = seqjax.stack([seqjax.LSTM(4), seqjax.SimpleRNN(3)], residual=False)
    params = deep.init(jax.random.key(2), I)
    carry = deep.initial_carry((B,))
    stepped = []
    for t in range(T):
        carry, y = deep(params, carry, xs[:, t])
        stepped.append(y)
    final, ys = seqjax.scan(deep, params, xs)
    np.testing.assert_allclose(ys, jnp.stack(stepped, 1), rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(final, carry, rtol=1e-6, atol=1e-6)


def test_residual_adds_each_layers_input_after_the_first(xs):
    cells = [seqjax.LSTM(4), seqjax.LSTM(4), seqjax.GRU(4)]
    deep = seqjax.stack(cells, residual=True)
    params = deep.init(jax.random.key(3), I)
    _, ys = seqjax.scan(deep, params, xs, lengths=LENGTHS)
    _, want = manual_layers(cells, params.layers, xs, LENGTHS, residual=True)
    np.testing.assert_allclose(ys, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ys[2], 0.0)  # padding stays zero through residual sums
    with pytest.raises(ValueError, match="residual"):
        seqjax.stack([seqjax.LSTM(4), seqjax.LSTM(3)], residual=True)


def test_stack_dropout_only_with_key_and_reproducible(xs):
    deep = seqjax.stack([seqjax.LSTM(8), seqjax.LSTM(8)], dropout=0.5)
    plain = seqjax.stack([seqjax.LSTM(8), seqjax.LSTM(8)])
    params = deep.init(jax.random.key(4), I)
    _, y_eval = seqjax.scan(deep, params, xs)
    np.testing.assert_array_equal(y_eval, seqjax.scan(plain, params, xs)[1])
    _, y_a = seqjax.scan(deep, params, xs, key=jax.random.key(5))
    _, y_b = seqjax.scan(deep, params, xs, key=jax.random.key(5))
    _, y_c = seqjax.scan(deep, params, xs, key=jax.random.key(6))
    np.testing.assert_array_equal(y_a, y_b)
    assert not np.allclose(y_a, y_eval) and not np.allclose(y_a, y_c)

    # The dropout sits between the layers: layer 2 sees layer 1's outputs with about half of
    # the entries zeroed and the rest doubled.
    k_layer, k_drop = jax.random.split(jax.random.fold_in(jax.random.key(5), 0))
    _, h1 = seqjax.scan(deep.layers[0], params.layers[0], xs)
    dropped = seqjax.combinators.dropout(k_drop, jnp.moveaxis(h1, 1, 0), 0.5)
    _, y_manual = seqjax.scan(deep.layers[1], params.layers[1], jnp.moveaxis(dropped, 0, 1))
    np.testing.assert_allclose(y_a, y_manual, rtol=1e-6, atol=1e-6)


def test_dropout_statistics():
    x = jnp.ones((200, 500))
    y = seqjax.combinators.dropout(jax.random.key(0), x, 0.3)
    zero = float(jnp.mean(y == 0))
    assert abs(zero - 0.3) < 0.01  # 100k Bernoulli draws: sd 0.0015
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    assert seqjax.combinators.dropout(jax.random.key(0), x, 0.0) is x


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_equals_forward_and_reversed_scans(merge, xs):
    bi = seqjax.bidirectional(seqjax.LSTM(3, proj_size=2), merge=merge)
    params = bi.init(jax.random.key(7), I)
    final, ys = seqjax.scan(bi, params, xs, lengths=LENGTHS)
    f_final, f_ys = seqjax.scan(bi.forward, params.forward, xs, lengths=LENGTHS)
    b_final, b_ys = seqjax.scan(bi.backward, params.backward, xs, lengths=LENGTHS, reverse=True)
    want = jnp.concatenate([f_ys, b_ys], -1) if merge == "concat" else f_ys + b_ys
    np.testing.assert_allclose(ys, want, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(
        final, seqjax.BidirectionalCarry(f_final, b_final), rtol=1e-6, atol=1e-6
    )
    assert bi.output_size == (4 if merge == "concat" else 2)
    # The backward direction's state at t = 0 depends on every valid input of the sequence.
    assert not np.allclose(params.backward.w_ih, params.forward.w_ih)  # separate parameters


def test_bidirectional_cannot_be_stepped(xs):
    bi = seqjax.bidirectional(seqjax.GRU(3))
    params = bi.init(jax.random.key(8), I)
    with pytest.raises(TypeError, match="whole sequence"):
        bi(params, bi.initial_carry((B,)), xs[:, 0])


def test_deep_bidirectional_lstmp_is_one_expression(xs):
    deep = seqjax.stack([seqjax.bidirectional(seqjax.LSTM(4, proj_size=2))] * 3, dropout=0.1)
    params = deep.init(jax.random.key(9), I)
    final, ys = jax.jit(seqjax.scan, static_argnums=0)(deep, params, xs, lengths=LENGTHS)
    chex.assert_shape(ys, (B, T, 4))
    chex.assert_shape(params.layers[1].forward.w_ih, (4, 16))  # reads [fwd P, bwd P]
    np.testing.assert_array_equal(ys[2], 0.0)
    _, ref = manual_layers(deep.layers, params.layers, xs, LENGTHS)
    np.testing.assert_allclose(ys, ref, rtol=1e-6, atol=1e-6)
    leaves = jax.tree_util.tree_leaves(
        jax.grad(lambda p: jnp.sum(seqjax.scan(deep, p, xs, lengths=LENGTHS)[1] ** 2))(params)
    )
    assert all(float(jnp.abs(g).sum()) > 0 for g in leaves)  # every parameter gets gradient


def test_bidirectional_with_different_backward_cell(xs):
    bi = seqjax.bidirectional(seqjax.LSTM(3), backward=seqjax.GRU(5))
    params = bi.init(jax.random.key(10), I)
    _, ys = seqjax.scan(bi, params, xs)
    chex.assert_shape(ys, (B, T, 8))
    with pytest.raises(ValueError, match="equal output sizes"):
        seqjax.bidirectional(seqjax.LSTM(3), backward=seqjax.GRU(5), merge="sum")
