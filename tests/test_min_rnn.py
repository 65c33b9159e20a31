"""MinGRU and MinLSTM (Feng et al. 2024): NumPy equations, scan contract, parallel == reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from seqjax.kernels.parallel import linear_scan, sequential_scan

I, H = 3, 4
CELLS = {"mingru": seqjax.MinGRU, "minlstm": seqjax.MinLSTM}


def np_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_g(v):
    return np.where(v >= 0, v + 0.5, np_sigmoid(v))


def np_step(name, params, h, x):
    """The paper's equations (log-space version, g on the candidate), written independently."""
    a = x @ np.asarray(params.w) + (0.0 if params.b is None else np.asarray(params.b))
    if name == "mingru":
        z, cand = np_sigmoid(a[..., :H]), np_g(a[..., H:])
        return (1 - z) * h + z * cand
    f, i, cand = np_sigmoid(a[..., :H]), np_sigmoid(a[..., H : 2 * H]), np_g(a[..., 2 * H :])
    return f / (f + i) * h + i / (f + i) * cand


def random_params(cell, key, scale=1.5):
    params = cell.init(key, I)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [
        scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, new)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_step_matches_numpy_equations(name, use_bias, x64):
    cell = CELLS[name](H, use_bias=use_bias, param_dtype=jnp.float64)
    params = random_params(cell, jax.random.key(0))
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 5, H))  # negative entries too: the carry may have any sign
    x = 2.0 * rng.normal(size=(2, 5, I))
    carry, y = cell(params, type(cell.initial_carry())(h=jnp.asarray(h)), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), np_step(name, params, h, x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(carry.h), np.asarray(y))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_log_coefficients_are_the_logs_of_the_step_coefficients(name, x64):
    cell = CELLS[name](H)
    xp = 30.0 * jax.random.normal(jax.random.key(1), (50, cell._blocks * H), jnp.float64)
    a, b = cell.coefficients(xp)
    la, lb = cell.log_coefficients(xp)
    assert np.all(np.isfinite(np.asarray(la))) and np.all(np.isfinite(np.asarray(lb)))
    # relative accuracy of the log form against NumPy's exact-in-float64 expressions
    v = np.asarray(xp)
    if name == "mingru":
        a_np = 1.0 / (1.0 + np.exp(v[:, :H]))
        b_np = 1.0 / (1.0 + np.exp(-v[:, :H])) * np_g(v[:, H:])
    else:
        f, i = np_sigmoid(v[:, :H]), np_sigmoid(v[:, H : 2 * H])
        a_np, b_np = f / (f + i), i / (f + i) * np_g(v[:, 2 * H :])
    np.testing.assert_allclose(np.exp(np.asarray(la)), a_np, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(np.exp(np.asarray(lb)), b_np, rtol=1e-12, atol=1e-300)
    # the linear form (the step's) agrees to machine epsilon in absolute terms
    np.testing.assert_allclose(np.asarray(a), a_np, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(b), b_np, rtol=1e-12, atol=1e-12)


def python_loop(cell, params, carry, xs, valid, reverse):
    """``cell(params, carry, x_t)`` over the valid steps of one batch-flattened sequence set."""
    xs, valid = np.asarray(xs), np.asarray(valid)
    T = xs.shape[-2]
    h = np.array(carry.h)
    ys = np.zeros(xs.shape[:-1] + (H,))
    for t in reversed(range(T)) if reverse else range(T):
        c, y = cell(params, type(carry)(h=jnp.asarray(h)), jnp.asarray(xs[..., t, :]))
        m = valid[..., t, None]
        h = np.where(m, np.asarray(c.h), h)
        ys[..., t, :] = np.where(m, np.asarray(y), 0.0)
    return h, ys


CASES = [
    # (batch shape, T, kind of validity, reverse)
    ((), 5, "none", False),
    ((3,), 6, "lengths", False),
    ((3,), 6, "lengths", True),
    ((2, 2), 5, "holes", False),
    ((2, 2), 5, "holes", True),
]


@pytest.mark.parametrize("batch,T,kind,reverse", CASES)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_scan_equals_python_loop(name, batch, T, kind, reverse, x64):
    cell = CELLS[name](H, param_dtype=jnp.float64)
    k1, k2, k3, k4 = jax.random.split(jax.random.key(2), 4)
    params = random_params(cell, k1)
    xs = 2.0 * jax.random.normal(k2, batch + (T, I), jnp.float64)
    carry = type(cell.initial_carry())(h=jax.random.normal(k3, batch + (H,), jnp.float64))
    kwargs = {}
    if kind == "none":
        valid = np.ones(batch + (T,), bool)
    elif kind == "lengths":
        lengths = np.array([T, 0, 2])[: batch[0]]
        valid = np.arange(T) < lengths[..., None]
        kwargs["lengths"] = jnp.asarray(lengths)
    else:
        valid = np.asarray(jax.random.bernoulli(k4, 0.6, batch + (T,)))
        kwargs["mask"] = jnp.asarray(valid)
    h_ref, ys_ref = python_loop(cell, params, carry, xs, valid, reverse)
    for impl in ("reference", "parallel", "sequential"):
        final, ys = seqjax.scan(cell, params, xs, carry=carry, reverse=reverse, impl=impl, **kwargs)
        np.testing.assert_allclose(np.asarray(ys), ys_ref, rtol=1e-10, atol=1e-12, err_msg=impl)
        np.testing.assert_allclose(np.asarray(final.h), h_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_parallel_equals_reference_in_value_and_gradient(name, x64):
    cell = CELLS[name](H, param_dtype=jnp.float64)
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    params = random_params(cell, k1)
    xs = 2.0 * jax.random.normal(k2, (2, 9, I), jnp.float64)
    h0 = jax.random.normal(k3, (2, H), jnp.float64)
    mask = jnp.asarray(np.random.default_rng(1).random((2, 9)) < 0.7)

    def loss(impl, params, xs, h0):
        carry = type(cell.initial_carry())(h=h0)
        final, ys = seqjax.scan(cell, params, xs, carry=carry, mask=mask, reverse=True, impl=impl)
        return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(final.h**2)

    val_r, grad_r = jax.value_and_grad(lambda *a: loss("reference", *a), (0, 1, 2))(params, xs, h0)
    for impl in ("parallel", "sequential"):
        val, grad = jax.value_and_grad(lambda *a, impl=impl: loss(impl, *a), (0, 1, 2))(
            params, xs, h0
        )
        np.testing.assert_allclose(val, val_r, rtol=1e-12)
        for g, gr in zip(
            jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(grad_r), strict=True
        ):
            np.testing.assert_allclose(np.asarray(g), np.asarray(gr), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_sequential_chunks_equal_reference_in_value_and_gradient(name, reverse, x64):
    """Several chunks and a shorter last one (T=11, chunk 4), holes, reverse: float64 grads of
    the parameters, the inputs and the initial state equal the reference scan's."""
    cell = CELLS[name](H, param_dtype=jnp.float64)
    k1, k2, k3 = jax.random.split(jax.random.key(12), 3)
    params = random_params(cell, k1)
    xs = 2.0 * jax.random.normal(k2, (11, 2, 3, I), jnp.float64)  # time-major, batch (2, 3)
    h0 = jax.random.normal(k3, (2, 3, H), jnp.float64)
    mask = jnp.asarray(np.random.default_rng(2).random((11, 2, 3)) < 0.7)

    def loss(run, params, xs, h0):
        final, ys = run(params, xs, h0)
        return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(final**2)

    def sequential(params, xs, h0):
        return sequential_scan(cell, params, h0, xs, mask, reverse=reverse, chunk=4, unroll=3)

    def reference(params, xs, h0):
        carry = type(cell.initial_carry())(h=h0)
        final, ys = seqjax.scan(
            cell,
            params,
            xs,
            carry=carry,
            mask=mask,
            reverse=reverse,
            time_major=True,
            impl="reference",
        )
        return final.h, ys

    val, grad = jax.value_and_grad(lambda *a: loss(sequential, *a), (0, 1, 2))(params, xs, h0)
    val_r, grad_r = jax.value_and_grad(lambda *a: loss(reference, *a), (0, 1, 2))(params, xs, h0)
    np.testing.assert_allclose(val, val_r, rtol=1e-12)
    for g, gr in zip(
        jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(grad_r), strict=True
    ):
        np.testing.assert_allclose(np.asarray(g), np.asarray(gr), rtol=1e-9, atol=1e-12)


def test_sequential_scan_argument_errors():
    cell = seqjax.MinGRU(H)
    params = cell.init(jax.random.key(0), I)
    for kwargs in ({"chunk": 0}, {"unroll": 1.5}, {"chunk": True}):
        with pytest.raises(ValueError, match="must be a positive int"):
            sequential_scan(cell, params, jnp.zeros((2, H)), jnp.ones((3, 2, I)), **kwargs)


def test_mingru_parallel_equals_reference_at_T_4096(x64):
    cell = seqjax.MinGRU(H, param_dtype=jnp.float64)
    params = random_params(cell, jax.random.key(4), scale=1.0)
    xs = jax.random.normal(jax.random.key(5), (2, 4096, I), jnp.float64)
    lengths = jnp.array([4096, 3001])

    def loss(impl, params):
        final, ys = seqjax.scan(cell, params, xs, lengths=lengths, impl=impl)
        return jnp.mean(ys**2) + jnp.mean(final.h), ys

    (lr, ys_r), gr = jax.value_and_grad(lambda p: loss("reference", p), has_aux=True)(params)
    for impl in ("parallel", "sequential"):
        (lp, ys_p), gp = jax.value_and_grad(lambda p, i=impl: loss(i, p), has_aux=True)(params)
        np.testing.assert_allclose(np.asarray(ys_p), np.asarray(ys_r), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(lp, lr, rtol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(gr), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-12)


def test_parallel_is_stable_for_large_preactivations():
    """float32, gates saturated for thousands of steps: no inf/NaN, matches the reference."""
    cell = seqjax.MinLSTM(H)
    params = random_params(cell, jax.random.key(6), scale=20.0)
    xs = jax.random.normal(jax.random.key(7), (1, 2000, I))
    _, ys_r = seqjax.scan(cell, params, xs, impl="reference")
    for impl in ("parallel", "sequential"):
        _, ys = seqjax.scan(cell, params, xs, impl=impl)
        assert np.all(np.isfinite(np.asarray(ys)))
        np.testing.assert_allclose(np.asarray(ys), np.asarray(ys_r), rtol=1e-4, atol=1e-4)


def test_empty_sequence_passes_the_carry_through():
    cell = seqjax.MinGRU(H)
    params = cell.init(jax.random.key(0), I)
    carry = seqjax.MinGRUCarry(h=jnp.full((2, H), -0.5))
    for impl in ("reference", "parallel", "sequential"):
        final, ys = seqjax.scan(cell, params, jnp.ones((2, 0, I)), carry=carry, impl=impl)
        assert ys.shape == (2, 0, H)
        np.testing.assert_array_equal(np.asarray(final.h), -0.5)


def test_linear_scan_closed_form():
    """h_t = a h_{t-1} + b with constant a, b: h_t = a^t h0 + b (1 - a^t) / (1 - a)."""
    a, b, h0, T = 0.9, 0.3, -2.0, 40
    _, hs = linear_scan(jnp.full((T, 1), np.log(a)), jnp.full((T, 1), np.log(b)), jnp.array([h0]))
    t = np.arange(1, T + 1)
    np.testing.assert_allclose(hs[:, 0], a**t * h0 + b * (1 - a**t) / (1 - a), rtol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "parallel", "sequential"])
def test_in_stack_and_bidirectional(impl):
    deep = seqjax.stack([seqjax.MinGRU(H), seqjax.MinLSTM(H)])
    bi = seqjax.bidirectional(seqjax.MinLSTM(H))
    xs = jax.random.normal(jax.random.key(8), (2, 5, I))
    lengths = jnp.array([5, 3])
    for cell in (deep, bi):
        params = cell.init(jax.random.key(9), I)
        _, ys = seqjax.scan(cell, params, xs, lengths=lengths, impl=impl)
        _, ys_ref = seqjax.scan(cell, params, xs, lengths=lengths, impl="reference")
        np.testing.assert_allclose(np.asarray(ys), np.asarray(ys_ref), rtol=1e-5, atol=1e-6)
        assert ys.shape == (2, 5, cell.output_size)
        np.testing.assert_array_equal(np.asarray(ys[1, 3:]), 0.0)


def test_auto_rule_and_forced_errors():
    cell = seqjax.MinGRU(H)
    xs_T = jnp.ones((3, 2, I))
    expected = "sequential" if jax.default_backend() == "cpu" else "parallel"
    assert seqjax.scan_engine.choose(cell, xs_T, None) == expected
    for impl in ("parallel", "sequential", "reference"):
        forced = seqjax.ScanOptions(impl=impl)
        assert seqjax.scan_engine.choose(cell, xs_T, None, options=forced) == impl
    # remat: the parallel form refuses it, auto falls back to the sequential kernel
    with_remat = seqjax.ScanOptions(remat=True)
    assert seqjax.scan_engine.choose(cell, xs_T, None, options=with_remat) == "sequential"
    lstm = seqjax.LSTM(H)
    with pytest.raises(ValueError, match="impl='parallel' cannot run this layer: no parallel"):
        seqjax.scan(lstm, lstm.init(jax.random.key(0), I), jnp.ones((2, 3, I)), impl="parallel")
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="remat is not supported by the parallel form"):
        seqjax.scan(cell, params, jnp.ones((2, 3, I)), impl="parallel", remat=True)


def test_parameter_structure_errors_are_clean():
    cell = seqjax.MinGRU(H)
    params = cell.init(jax.random.key(0), I)
    xs = jnp.ones((2, 5, I))
    with pytest.raises(ValueError, match=r"w has shape \(3, 5\), expected \(3, 8\)"):
        seqjax.scan(cell, params._replace(w=jnp.ones((I, 5))), xs)
    with pytest.raises(ValueError, match="needs parameter b"):
        seqjax.scan(cell, params._replace(b=None), xs)
    with pytest.raises(TypeError, match="got MinLSTMParams; expected MinGRUParams"):
        seqjax.scan(cell, seqjax.MinLSTM(H).init(jax.random.key(0), I), xs)
    with pytest.raises(ValueError, match="hidden_size"):
        seqjax.MinLSTM(0)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_config_round_trip(name):
    cell = CELLS[name](8, use_bias=False, param_dtype=jnp.float64)
    assert seqjax.cell_from_config(seqjax.cell_to_config(cell)) == cell


def test_jit_with_traced_lengths_and_bfloat16_compute():
    cell = seqjax.MinLSTM(H)
    params = random_params(cell, jax.random.key(10), scale=1.0)
    xs = jax.random.normal(jax.random.key(11), (3, 6, I))

    @jax.jit
    def run(lengths):
        out = {}
        for impl in ("reference", "parallel", "sequential"):
            final, ys = seqjax.scan(
                cell, params, xs, lengths=lengths, impl=impl, compute_dtype=jnp.bfloat16
            )
            out[impl] = (final.h, ys)
        return out

    out = run(jnp.array([6, 2, 0]))
    for impl in ("parallel", "sequential"):
        assert out[impl][1].dtype == jnp.float32  # carries and outputs stay float32
        for a, b in zip(out[impl], out["reference"], strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(out[impl][1][1, 2:]), 0.0)


def test_private_base_class_is_not_a_config_type():
    # _MinRNN is the shared base of the two cells, not a cell a config may name
    with pytest.raises(ValueError, match="unknown cell type '_MinRNN'"):
        seqjax.cell_from_config({"type": "_MinRNN"})
