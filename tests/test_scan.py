"""Properties of seqjax.scan over random shapes, lengths and cells (hypothesis + chex)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqjax

CELLS = {
    "lstm": seqjax.LSTM(3, peephole=True, proj_size=2),
    "gru": seqjax.GRU(3),
    "rnn": seqjax.SimpleRNN(3),
    "stack": seqjax.stack([seqjax.LSTM(3), seqjax.GRU(2, reset_after=True)]),
}

# The property tests run seqjax.scan jitted: an eager scan traces and compiles its whole loop
# at every call, the jitted one once per (cell, shapes). test_jit_equals_eager checks that the
# eager path gives the same results over the same random problems.
scan = jax.jit(seqjax.scan, static_argnums=0, static_argnames=("reverse", "time_major"))


@st.composite
def problems(draw, max_batch_dims=2):
    """A random cell, batch shape, length, inputs and per-sequence lengths."""
    name = draw(st.sampled_from(sorted(CELLS)))
    batch = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=max_batch_dims)))
    T = draw(st.integers(0, 5))
    I = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    n = int(np.prod(batch)) if batch else 1
    lengths = np.array(draw(st.lists(st.integers(0, T), min_size=n, max_size=n)), np.int32).reshape(
        batch
    )
    cell = CELLS[name]
    params = cell.init(jax.random.key(seed), I)
    # NumPy draws the inputs: jax.random.normal would compile anew for every drawn shape.
    xs = np.random.default_rng(seed).standard_normal(batch + (T, I)).astype(np.float32)
    return cell, params, jnp.asarray(xs), jnp.asarray(lengths)


def loop_one_sequence(cell, params, xs_TI, length):
    """Reference: step one unbatched sequence through its valid prefix in a Python loop."""
    carry = cell.initial_carry(())
    ys = []
    for t in range(length):
        carry, y = cell(params, carry, xs_TI[t])
        ys.append(y)
    return carry, ys


@given(problems())
def test_scan_equals_python_loop_of_steps_per_sequence(problem):
    cell, params, xs, lengths = problem
    final, ys = scan(cell, params, xs, lengths=lengths)
    batch, T = xs.shape[:-2], xs.shape[-2]
    chex.assert_shape(ys, batch + (T, cell.output_size))
    # indexed in NumPy: an eager jax index compiles for every new shape
    xs, ys, final = jax.tree_util.tree_map(np.asarray, (xs, ys, final))
    for idx in np.ndindex(*batch):
        L = int(lengths[idx])
        carry, want = loop_one_sequence(cell, params, xs[idx], L)
        if L:
            np.testing.assert_allclose(ys[idx][:L], np.stack(want), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(ys[idx][L:], 0.0)
        chex.assert_trees_all_close(
            jax.tree_util.tree_map(lambda a, i=idx: a[i], final), carry, rtol=1e-5, atol=1e-5
        )


@given(problems())
def test_jit_equals_eager(problem):
    cell, params, xs, lengths = problem
    eager = seqjax.scan(cell, params, xs, lengths=lengths)
    jitted = jax.jit(seqjax.scan, static_argnums=0)(cell, params, xs, lengths=lengths)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-6, atol=1e-6)


@given(problems(max_batch_dims=1))
def test_batched_equals_vmapped(problem):
    cell, params, xs, lengths = problem
    if xs.ndim < 3:  # needs a batch axis to vmap over
        xs, lengths = xs[None], lengths[None]
    batched = scan(cell, params, xs, lengths=lengths)
    # seqjax.scan itself under vmap (batch tracers through its Python), compiled as one program
    vmapped = jax.jit(jax.vmap(lambda x, n: seqjax.scan(cell, params, x, lengths=n)))(xs, lengths)
    chex.assert_trees_all_close(batched, vmapped, rtol=1e-5, atol=1e-5)


@given(problems(), st.booleans())
def test_padding_never_changes_valid_outputs_or_final_carry(problem, reverse):
    cell, params, xs, lengths = problem
    T = xs.shape[-2]
    pad = np.arange(T) >= np.asarray(lengths)[..., None]  # [*B, T]
    garbage = jnp.asarray(np.where(pad[..., None], np.float32(1e3), xs))
    a = scan(cell, params, xs, lengths=lengths, reverse=reverse)
    b = scan(cell, params, garbage, lengths=lengths, reverse=reverse)
    chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-6)


def flip_within_length(x, lengths):
    """Reverses each sequence ``x [*B, T, ...]`` within its own length (padding stays put).

    In NumPy (returns a NumPy array): eager jax ops would compile for every drawn shape.
    """
    x, lengths = np.asarray(x), np.asarray(lengths)
    T = x.shape[-2]
    t = np.arange(T)
    idx = np.where(t < lengths[..., None], lengths[..., None] - 1 - t, t)
    return np.take_along_axis(x, idx[..., None], axis=-2)


@given(problems())
def test_reverse_with_lengths_equals_flip_within_length(problem):
    cell, params, xs, lengths = problem
    final_r, ys_r = scan(cell, params, xs, lengths=lengths, reverse=True)
    final_f, ys_f = scan(
        cell, params, jnp.asarray(flip_within_length(xs, lengths)), lengths=lengths
    )
    np.testing.assert_allclose(ys_r, flip_within_length(ys_f, lengths), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(final_r, final_f, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
def test_causality(name, reverse):
    """d y_t / d x_{t'} is zero for every t' after t (before t when reversed)."""
    cell, T = CELLS[name], 5
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (T, 2))
    jac = jax.jacrev(lambda x: seqjax.scan(cell, params, x, reverse=reverse)[1])(xs)
    # jac[t, :, s, :] = d y_t / d x_s
    norms = np.asarray(jnp.sqrt(jnp.sum(jac**2, axis=(1, 3))))  # [T, T]
    future = np.triu(np.ones((T, T), bool), 1)
    if reverse:
        future = future.T
    np.testing.assert_array_equal(norms[future], 0.0)
    assert (norms[~future] > 0).all()  # every allowed dependency is really there


def test_zero_length_time_axis_returns_initial_carry_and_empty_outputs():
    cell = seqjax.LSTM(4)
    params = cell.init(jax.random.key(0), 3)
    carry = cell.initial_carry((2,))._replace(h=jnp.ones((2, 4)))
    final, ys = seqjax.scan(cell, params, jnp.zeros((2, 0, 3)), carry=carry)
    chex.assert_shape(ys, (2, 0, 4))
    chex.assert_trees_all_equal(final, carry)
    run = jax.jit(seqjax.scan, static_argnums=0, static_argnames=("time_major", "reverse"))
    final, ys = run(cell, params, jnp.zeros((0, 2, 3)), time_major=True, reverse=True)
    chex.assert_shape(ys, (0, 2, 4))


def test_all_lengths_zero_leaves_carry_and_outputs_zero():
    cell = seqjax.GRU(3)
    params = cell.init(jax.random.key(0), 2)
    carry = seqjax.GRUCarry(h=jnp.full((2, 3), 0.5))
    final, ys = seqjax.scan(
        cell, params, jnp.ones((2, 4, 2)), carry=carry, lengths=jnp.zeros(2, jnp.int32)
    )
    np.testing.assert_array_equal(final.h, carry.h)
    np.testing.assert_array_equal(ys, 0.0)


@given(problems())
def test_time_major_equals_batch_major(problem):
    cell, params, xs, lengths = problem
    a_final, a_ys = scan(cell, params, xs, lengths=lengths)
    xs_t = jnp.asarray(np.moveaxis(np.asarray(xs), -2, 0))  # NumPy: no compile per shape
    b_final, b_ys = scan(cell, params, xs_t, lengths=lengths, time_major=True)
    chex.assert_trees_all_close(a_final, b_final, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a_ys, np.moveaxis(np.asarray(b_ys), 0, -2), rtol=1e-6, atol=1e-6)


def test_several_leading_batch_dims_equal_flattened_batch():
    cell = CELLS["lstm"]
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (2, 3, 4, 2))
    lengths = jnp.array([[4, 0, 2], [1, 3, 4]])
    f1, y1 = seqjax.scan(cell, params, xs, lengths=lengths)
    f2, y2 = seqjax.scan(cell, params, xs.reshape(6, 4, 2), lengths=lengths.reshape(6))
    np.testing.assert_allclose(y1.reshape(6, 4, -1), y2, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(
        jax.tree_util.tree_map(lambda a: a.reshape(6, -1), f1), f2, rtol=1e-6, atol=1e-6
    )


@given(problems(max_batch_dims=1), st.booleans())
def test_mask_with_holes_equals_running_on_valid_steps_only(problem, reverse):
    cell, params, xs, _ = problem
    if xs.ndim < 3:
        xs = xs[None]
    B, T = xs.shape[:2]
    mask = np.random.default_rng(T + B).random((B, T)) < 0.6
    final, ys = scan(cell, params, xs, mask=jnp.asarray(mask), reverse=reverse)
    xs, ys, final = jax.tree_util.tree_map(np.asarray, (xs, ys, final))  # NumPy indexing
    for b in range(B):
        valid = np.flatnonzero(mask[b])
        carry = cell.initial_carry(())
        f, y = scan(cell, params, xs[b, valid], carry=carry, reverse=reverse)
        np.testing.assert_allclose(ys[b, valid], y, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(ys[b, ~mask[b]], 0.0)
        chex.assert_trees_all_close(
            jax.tree_util.tree_map(lambda a, b=b: a[b], final), f, rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("unroll", [2, 3])
def test_unroll_equals_plain_loop(unroll):
    cell = CELLS["stack"]
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (3, 7, 2))
    lengths = jnp.array([7, 4, 0])
    chex.assert_trees_all_close(
        seqjax.scan(cell, params, xs, lengths=lengths),
        seqjax.scan(cell, params, xs, lengths=lengths, unroll=unroll),
        rtol=1e-6,
        atol=1e-6,
    )


def test_padded_inputs_get_zero_gradient_and_lengths_work_under_jit():
    cell = CELLS["lstm"]
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 2))
    lengths = jnp.array([5, 2])

    @jax.jit
    def loss(xs, lengths):
        final, ys = seqjax.scan(cell, params, xs, lengths=lengths)
        return jnp.sum(ys**2) + jnp.sum(final.c)

    g = jax.grad(loss)(xs, lengths)
    np.testing.assert_array_equal(g[1, 2:], 0.0)
    assert np.all(np.abs(g[1, :2]).sum(-1) > 0) and np.all(np.abs(g[0]).sum(-1) > 0)


def test_int32_lengths_with_float64_inputs(x64):
    cell = seqjax.GRU(2, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(0), 2)
    xs = jnp.ones((2, 3, 2), jnp.float64)
    _, ys = seqjax.scan(cell, params, xs, lengths=np.array([3, 1], np.int32))
    np.testing.assert_array_equal(ys[1, 1:], 0.0)
    assert ys.dtype == jnp.float64


@pytest.mark.parametrize("name", ["lstm", "gru", "stack"])
def test_forward_mode_autodiff_works_on_the_default_path(name):
    """The fast kernels have custom VJPs; jvp/jacfwd must still work (via the reference scan)
    and agree with reverse mode through the fast kernel."""
    cell = CELLS[name]
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (2, 4, 2))
    lengths = jnp.array([4, 2])

    def f(x):
        return seqjax.scan(cell, params, x, lengths=lengths)[1]

    np.testing.assert_allclose(jax.jacfwd(f)(xs), jax.jacrev(f)(xs), rtol=1e-5, atol=1e-6)
    _, tangent = jax.jvp(f, (xs,), (jnp.ones_like(xs),))
    assert tangent.shape == f(xs).shape
    with pytest.raises(TypeError, match="reverse-mode autodiff only"):
        jax.jvp(lambda x: seqjax.scan(cell, params, x, impl="fused")[1], (xs,), (xs,))
