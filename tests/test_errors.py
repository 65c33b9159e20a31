"""Bad input raises clear errors at trace time, naming what was expected and what arrived."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

import seqjax


@pytest.fixture(scope="module")
def lstm():
    cell = seqjax.LSTM(4)
    return cell, cell.init(jax.random.key(0), 3)


def test_wrong_rank(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*got shape \(3,\)"):
        seqjax.scan(cell, params, jnp.ones(3))


def test_wrong_feature_size_in_scan_and_step(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match="5 features .* expect 3"):
        seqjax.scan(cell, params, jnp.ones((2, 4, 5)))
    with pytest.raises(ValueError, match="5 features .* expect 3"):
        cell(params, cell.initial_carry((2,)), jnp.ones((2, 5)))


def test_non_float_inputs(lstm):
    cell, params = lstm
    with pytest.raises(TypeError, match="floating dtype.*int32"):
        seqjax.scan(cell, params, jnp.ones((2, 4, 3), jnp.int32))
    with pytest.raises(TypeError, match="must be an array"):
        seqjax.scan(cell, params, "hello")


def test_carry_batch_mismatch(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"carry.*shape \(5, 4\), expected \(2, 4\)"):
        seqjax.scan(cell, params, jnp.ones((2, 4, 3)), carry=cell.initial_carry((5,)))
    with pytest.raises(ValueError, match="carry has structure"):
        seqjax.scan(cell, params, jnp.ones((2, 4, 3)), carry=(jnp.zeros((2, 4)),))
    with pytest.raises(ValueError, match=r"expected \(2, 4\)"):
        cell(params, cell.initial_carry((5,)), jnp.ones((2, 3)))


def test_bad_lengths(lstm):
    cell, params = lstm
    xs = jnp.ones((2, 4, 3))
    with pytest.raises(TypeError, match="lengths must be integers, got dtype float32"):
        seqjax.scan(cell, params, xs, lengths=jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"batch shape \(2,\), got \(3,\)"):
        seqjax.scan(cell, params, xs, lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[0, T=4\], got values in \[1, 5\]"):
        seqjax.scan(cell, params, xs, lengths=jnp.array([1, 5]))
    with pytest.raises(ValueError, match=r"\[0, T=4\]"):
        seqjax.scan(cell, params, xs, lengths=jnp.array([-1, 2]))
    with pytest.raises(ValueError, match="either lengths or mask"):
        seqjax.scan(cell, params, xs, lengths=jnp.array([1, 2]), mask=jnp.ones((2, 4), bool))


def test_bad_mask(lstm):
    cell, params = lstm
    xs = jnp.ones((2, 4, 3))
    with pytest.raises(TypeError, match="mask must be boolean"):
        seqjax.scan(cell, params, xs, mask=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"mask must have shape \[\*B, T\] = \(2, 4\)"):
        seqjax.scan(cell, params, xs, mask=jnp.ones((4, 2), bool))


def test_errors_surface_at_trace_time_under_jit(lstm):
    cell, params = lstm
    run = jax.jit(lambda p, x, n: seqjax.scan(cell, p, x, lengths=n))
    with pytest.raises(ValueError, match="5 features"):
        run(params, jnp.ones((2, 4, 5)), jnp.array([1, 2]))
    with pytest.raises(TypeError, match="lengths must be integers"):
        run(params, jnp.ones((2, 4, 3)), jnp.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="static_argnames"):
        jax.jit(lambda p, x, r: seqjax.scan(cell, p, x, reverse=r))(
            params, jnp.ones((2, 4, 3)), True
        )


def test_bad_options():
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
        seqjax.LSTM(0)
    with pytest.raises(TypeError, match="hidden_size must be a positive int"):
        seqjax.GRU(4.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'peepholes'"):
        seqjax.LSTM(4, peepholes=True)
    with pytest.raises(ValueError, match=r"activation must be one of \('tanh', 'relu'\)"):
        seqjax.SimpleRNN(4, activation="sigmoid")
    with pytest.raises(TypeError, match="reset_after must be a bool"):
        seqjax.GRU(4, reset_after="yes")
    with pytest.raises(ValueError, match="coupled=True .* needs the forget gate"):
        seqjax.LSTM(4, coupled=True, forget_gate=False)
    with pytest.raises(ValueError, match="proj_size must be a positive int"):
        seqjax.LSTM(4, proj_size=0)
    with pytest.raises(ValueError, match="merge must be one of"):
        seqjax.bidirectional(seqjax.LSTM(4), merge="mean")
    with pytest.raises(ValueError, match="dropout must be < 1.0"):
        seqjax.stack([seqjax.LSTM(4)], dropout=1.0)
    with pytest.raises(TypeError, match="sequence of cells"):
        seqjax.stack(seqjax.LSTM(4))
    with pytest.raises(TypeError, match=r"layers\[1\] must be a seqjax cell"):
        seqjax.stack([seqjax.LSTM(4), "lstm"])
    with pytest.raises(TypeError, match="expects a seqjax cell"):
        seqjax.scan("lstm", None, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        seqjax.LSTM(4).init(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="unroll must be >= 1"):
        cell = seqjax.GRU(2)
        seqjax.scan(cell, cell.init(jax.random.key(0), 1), jnp.ones((3, 1)), unroll=0)


def test_concrete_lengths_closed_over_inside_jit_are_checked_not_traced(lstm):
    cell, params = lstm
    xs = jnp.ones((2, 4, 3))
    good, bad = jnp.array([4, 1]), jnp.array([4, 9])
    out = jax.jit(lambda p: seqjax.scan(cell, p, xs, lengths=good)[1])(params)
    assert out.shape == (2, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, T=4\], got values in \[4, 9\]"):
        jax.jit(lambda p: seqjax.scan(cell, p, xs, lengths=bad)[1])(params)


# -- hints for the likely cause -----------------------------------------------------------------
def test_whole_sequence_given_to_a_one_step_call(lstm):
    cell, params = lstm
    with pytest.raises(
        ValueError,
        match=r"x has shape \(2, 5, 3\) \(3 dims\) but the carry's batch shape is \(2,\): a "
        r"whole sequence \[\*B, T, I\]\? .*seqjax.scan\(cell, params, xs\)",
    ):
        cell(params, cell.initial_carry((2,)), jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"batch shape is \(\): a whole sequence"):
        cell(params, cell.initial_carry(), jnp.ones((5, 3)))
    # A carry that matches the extra axis is a batch, not a mistake.
    carry, y = cell(params, cell.initial_carry((2, 5)), jnp.ones((2, 5, 3)))
    assert y.shape == (2, 5, 4)


def test_integer_inputs_suggest_an_embedding(lstm):
    cell, params = lstm
    ids = jnp.zeros((2, 4), jnp.int32)
    hint = r"integer dtype int32: token ids\? embed them first, e\.g\. jnp\.take\(embedding, ids"
    with pytest.raises(TypeError, match="xs has " + hint):
        seqjax.scan(cell, params, ids[..., None])
    with pytest.raises(TypeError, match="x has " + hint):
        cell(params, cell.initial_carry((2,)), ids[:, :3])
    with pytest.raises(TypeError, match=r"floating dtype .*got bool$"):
        seqjax.scan(cell, params, jnp.ones((2, 4, 3), bool))


# -- lengths: concrete ones at trace time, traced ones with checkify ---------------------------
@pytest.fixture(scope="module")
def checked_run(lstm):
    cell, _ = lstm

    @jax.jit
    def run(params, xs, lengths):
        return seqjax.scan(cell, params, xs, lengths=lengths, check_lengths=True)[1]

    return checkify.checkify(run, errors=checkify.user_checks)


@pytest.mark.parametrize("lengths", [[12, 2], [-1, 2], [5, 4]])
def test_traced_lengths_out_of_range_raise_under_checkify(lstm, checked_run, lengths):
    _, params = lstm
    err, _ = checked_run(params, jnp.ones((2, 4, 3)), jnp.array(lengths))
    lo, hi = min(lengths), max(lengths)
    with pytest.raises(
        checkify.JaxRuntimeError, match=rf"\[0, T=4\], got values in \[{lo}, {hi}\]"
    ):
        err.throw()


def test_traced_lengths_in_range_pass_under_checkify(lstm, checked_run):
    cell, params = lstm
    xs = jax.random.normal(jax.random.key(1), (2, 4, 3))
    err, ys = checked_run(params, xs, jnp.array([4, 0]))
    assert err.get() is None
    expected = seqjax.scan(cell, params, xs, lengths=jnp.array([4, 0]))[1]
    chex.assert_trees_all_close(ys, expected, atol=1e-6)


def test_check_lengths_without_checkify_refuses_to_compile(lstm):
    cell, params = lstm
    run = jax.jit(lambda p, x, n: seqjax.scan(cell, p, x, lengths=n, check_lengths=True))
    with pytest.raises(ValueError, match=r"check.* without functionalizing it through .*checkify"):
        run(params, jnp.ones((2, 4, 3)), jnp.array([1, 2]))
    # Concrete lengths need no checkify: they are checked while tracing, as without the flag.
    with pytest.raises(ValueError, match=r"\[0, T=4\], got values in \[1, 5\]"):
        seqjax.scan(
            cell, params, jnp.ones((2, 4, 3)), lengths=jnp.array([1, 5]), check_lengths=True
        )


def test_traced_lengths_are_unchecked_by_default_and_clamp(lstm):
    """What the docs say happens without check_lengths: above T acts as T, below 0 as 0."""
    cell, params = lstm
    xs = jax.random.normal(jax.random.key(2), (2, 4, 3))
    run = jax.jit(lambda n: seqjax.scan(cell, params, xs, lengths=n)[1])
    chex.assert_trees_all_close(run(jnp.array([12, -1])), run(jnp.array([4, 0])))
