"""sLSTM and mLSTM (xLSTM, Beck et al. 2024): the paper's equations in NumPy, every form against a
Python loop of steps (value and gradient), stability at T = 10,000, and the official ``xlstm``
package's vanilla PyTorch implementations after weight conversion.

Compiles dominate the time here: random values come from NumPy (no per-shape random kernels),
and every jitted step or scan is built once per (cell, options) by the cached helpers below.

(About 600 lines, over the usual 450: two cells, three mLSTM forms, the block and three
reference implementations share these helpers; split, each file would compile them again.)
"""

from __future__ import annotations

import functools

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import seqjax
from seqjax.cells.xlstm_block import GatedMLP, XLSTMBlock
from seqjax.kernels import mlstm as mlstm_kernels

try:  # the official implementation, a test-only dependency (pyproject's dev extra)
    import torch
    from xlstm.blocks.mlstm import backends as xlstm_mlstm
    from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig

    XLSTM_ERROR = None
except Exception as err:  # noqa: BLE001 - ImportError, or a backend that fails to load on CPU
    XLSTM_ERROR = f"{type(err).__name__}: {err}"

needs_xlstm = pytest.mark.skipif(
    XLSTM_ERROR is not None, reason=f"the xlstm package cannot be imported: {XLSTM_ERROR}"
)

I, H, NH = 3, 8, 2
D = H // NH
FORMS = ("reference", "parallel", "chunkwise")


def np_params(cell, input_size=I, seed=0, scale=1.0):
    """Parameters with init's structure, every leaf ``scale * N(0, 1)`` (float64 under x64)."""
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes
    )


def np_carry(cell, batch, seed=0):
    """A random carry (an sLSTM's normaliser >= 1, as every reachable one is)."""
    dtype = jnp.asarray(0.0).dtype  # float64 under x64, else float32
    carry = jax.eval_shape(lambda: cell.initial_carry(batch, dtype))
    rng = np.random.default_rng(seed)
    new = {k: 0.5 * rng.normal(size=v.shape) for k, v in carry._asdict().items() if v is not None}
    if isinstance(carry, seqjax.SLSTMCarry):
        new["n"] = 1.0 + np.abs(new["n"])
    return carry._replace(**{k: jnp.asarray(v, dtype) for k, v in new.items()})


@functools.cache
def step_fn(cell):
    return jax.jit(cell.__call__)


@functools.cache
def scan_fn(cell, impl, reverse, kind):
    """Jitted ``seqjax.scan(cell, params, xs, carry=, lengths= | mask=)``."""

    def run(params, xs, carry, valid):
        kwargs = {} if kind == "none" else {kind: valid}
        return seqjax.scan(cell, params, xs, carry=carry, reverse=reverse, impl=impl, **kwargs)

    return jax.jit(run)


def np_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


# -- the paper's equations, unstabilised, in float64 NumPy -----------------------------------------


def np_slstm_step(params, state, x, forget_gate="sigmoid"):
    """sLSTM of the paper without the stabiliser: i = exp(i~), c/n as written."""
    h, c, n = state
    w, r, b = (np.asarray(a) for a in (params.w, params.r, params.b))
    rec = np.einsum("bnd,ndge->bgne", h.reshape(-1, NH, D), r).reshape(-1, 4 * H)
    pre = x @ w + rec + b
    it, ft, zt, ot = np.split(pre, 4, axis=-1)
    i = np.exp(it)
    f = np_sigmoid(ft) if forget_gate == "sigmoid" else np.exp(ft)
    c = f * c + i * np.tanh(zt)
    n = f * n + i
    return np_sigmoid(ot) * c / n, c, n


def np_mlstm_step(params, state, x, output_gate=True):
    """mLSTM of the paper without the stabiliser: C = f C + i k v^T, h = C^T q / max(|n q|, 1)."""
    C, n = state
    a = x @ np.asarray(params.w) + np.asarray(params.b)
    q, k, v = (a[:, j * H : (j + 1) * H].reshape(-1, NH, D) for j in range(3))
    k = k / np.sqrt(D)
    i = np.exp(a[:, 3 * H : 3 * H + NH])[..., None]
    f = np_sigmoid(a[:, 3 * H + NH : 3 * H + 2 * NH])[..., None]
    C = f[..., None] * C + i[..., None] * np.einsum("bnd,bne->bnde", k, v)
    n = f * n + i * k
    den = np.maximum(np.abs(np.sum(n * q, -1)), 1.0)[..., None]
    h = (np.einsum("bnd,bnde->bne", q, C) / den).reshape(-1, H)
    if output_gate:
        h = np_sigmoid(a[:, 3 * H + 2 * NH :]) * h
    return h, C, n


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_slstm_steps_match_the_unstabilised_equations(forget_gate, x64):
    cell = seqjax.SLSTM(H, num_heads=NH, forget_gate=forget_gate, param_dtype=jnp.float64)
    params = np_params(cell, seed=0, scale=0.5)
    xs = np.random.default_rng(0).normal(size=(6, 2, I))
    carry = cell.initial_carry((2,), jnp.float64)
    state = (np.zeros((2, H)),) * 3
    for x in xs:
        carry, y = step_fn(cell)(params, carry, jnp.asarray(x))
        y_np, c_np, n_np = np_slstm_step(params, state, x, forget_gate)
        state = (y_np, c_np, n_np)
        np.testing.assert_allclose(np.asarray(y), y_np, rtol=1e-11, atol=1e-13)
        scale = np.exp(-np.asarray(carry.m))  # the carry holds c, n times exp(-m)
        np.testing.assert_allclose(np.asarray(carry.c), c_np * scale, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(np.asarray(carry.n), n_np * scale, rtol=1e-11)
        assert np.all(np.asarray(carry.n) >= 1.0 - 1e-12)  # the stabiliser's guarantee


@pytest.mark.parametrize("output_gate", [True, False])
def test_mlstm_steps_match_the_unstabilised_equations(output_gate, x64):
    cell = seqjax.MLSTM(H, num_heads=NH, output_gate=output_gate, eps=0.0, param_dtype=jnp.float64)
    params = np_params(cell, seed=1, scale=0.7)
    xs = np.random.default_rng(1).normal(size=(6, 2, I))
    carry = cell.initial_carry((2,), jnp.float64)
    state = (np.zeros((2, NH, D, D)), np.zeros((2, NH, D)))
    for x in xs:
        carry, y = step_fn(cell)(params, carry, jnp.asarray(x))
        y_np, *state = np_mlstm_step(params, state, x, output_gate)
        np.testing.assert_allclose(np.asarray(y), y_np, rtol=1e-11, atol=1e-13)
        C, n, m = cell.unflatten_carry(carry, jnp.float64)
        np.testing.assert_allclose(
            np.asarray(n) * np.exp(np.asarray(m))[..., None], state[1], rtol=1e-11, atol=1e-13
        )


def test_slstm_convolution_feeds_only_the_input_and_forget_gates(x64):
    """conv_kernel_size=K: i, f see swish(depthwise causal conv of x); z, o see x."""
    K = 3
    cell = seqjax.SLSTM(H, num_heads=NH, conv_kernel_size=K, param_dtype=jnp.float64)
    params = np_params(cell, input_size=H, seed=2, scale=0.5)
    xs = np.random.default_rng(2).normal(size=(5, 2, H))
    plain = seqjax.SLSTM(H, num_heads=NH, param_dtype=jnp.float64)
    carry, plain_carry = (
        cell.initial_carry((2,), jnp.float64),
        plain.initial_carry((2,), jnp.float64),
    )
    w_conv, b_conv = np.asarray(params.w_conv), np.asarray(params.b_conv)
    padded = np.concatenate([np.zeros((K - 1, 2, H)), xs])
    for t in range(len(xs)):
        carry, y = step_fn(cell)(params, carry, jnp.asarray(xs[t]))
        conv = np.einsum("kbh,kh->bh", padded[t : t + K], w_conv) + b_conv
        u = conv * np_sigmoid(conv)
        # the same step as a plain sLSTM whose i, f pre-activations come from u
        pre = np.concatenate(
            [u @ np.asarray(params.w[:, : 2 * H]), xs[t] @ np.asarray(params.w[:, 2 * H :])], -1
        )
        pre = pre + np.asarray(params.b)
        xp = jnp.asarray(pre)
        plain_carry, y_ref = jax.jit(plain.step)(
            params._replace(w_conv=None, b_conv=None), plain_carry, xp
        )
        np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            np.asarray(carry.conv), padded[t + 1 : t + K].transpose(1, 0, 2).reshape(2, -1)
        )
    with pytest.raises(ValueError, match="must have hidden_size=8 features, got input_size=3"):
        cell.init(jax.random.key(0), I)


# -- every form equals a Python loop of steps ------------------------------------------------------

MLSTM_CELL = seqjax.MLSTM(H, num_heads=NH, chunk_size=3, param_dtype=jnp.float64)
SLSTM_CELLS = {
    "slstm": seqjax.SLSTM(H, num_heads=NH, param_dtype=jnp.float64),
    "slstm_exp_conv": seqjax.SLSTM(
        H, num_heads=NH, forget_gate="exp", conv_kernel_size=2, param_dtype=jnp.float64
    ),
}


def python_loop(cell, params, carry, xs, valid, reverse):
    """``cell(params, carry, x_t)`` over the valid steps of ``xs [*B, T, I]``; NumPy results."""
    xs, valid = np.asarray(xs), np.asarray(valid)
    carry = jax.tree_util.tree_map(np.asarray, carry)
    ys = np.zeros(xs.shape[:-1] + (cell.output_size,))
    T = xs.shape[-2]
    for t in reversed(range(T)) if reverse else range(T):
        new, y = step_fn(cell)(params, carry, xs[..., t, :])
        m = valid[..., t]

        def keep(a, b, m=m):
            return np.where(m.reshape(m.shape + (1,) * (b.ndim - m.ndim)), np.asarray(a), b)

        carry = jax.tree_util.tree_map(keep, new, carry)
        ys[..., t, :] = np.where(m[..., None], np.asarray(y), 0.0)
    return carry, ys


def validity(kind, batch, T, rng):
    """``(valid [*B, T], what scan is given)`` for no mask, lengths or a mask with holes."""
    if kind == "none":
        return np.ones(batch + (T,), bool), None
    if kind == "lengths":
        lengths = rng.integers(0, T + 1, size=batch)
        return np.arange(T) < lengths[..., None], jnp.asarray(lengths)
    valid = rng.random(batch + (T,)) < 0.6
    return valid, jnp.asarray(valid)


def check_forms_equal_loop(cell, forms, batch, T, kind, reverse, seed):
    rng = np.random.default_rng(seed)
    size = H if getattr(cell, "conv_kernel_size", 0) else I
    params = np_params(cell, size, seed, scale=0.6)
    xs = jnp.asarray(rng.normal(size=batch + (T, size)))
    carry = np_carry(cell, batch, seed)
    valid, given_ = validity(kind, batch, T, rng)
    final_ref, ys_ref = python_loop(cell, params, carry, xs, valid, reverse)
    for impl in forms:
        final, ys = scan_fn(cell, impl, reverse, kind)(params, xs, carry, given_)
        chex.assert_shape(ys, batch + (T, H))
        np.testing.assert_allclose(np.asarray(ys), ys_ref, rtol=1e-10, atol=1e-12, err_msg=impl)
        chex.assert_trees_all_close(final, final_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "batch,T,kind,reverse",
    [((), 5, "none", True), ((2, 2), 7, "mask", False)],
)
def test_mlstm_forms_equal_python_loop(batch, T, kind, reverse, x64):
    check_forms_equal_loop(MLSTM_CELL, FORMS, batch, T, kind, reverse, seed=3)


@pytest.mark.parametrize(
    "name,batch,T,kind,reverse",
    [("slstm", (3,), 7, "lengths", True), ("slstm_exp_conv", (2, 2), 5, "mask", False)],
)
def test_slstm_scan_equals_python_loop(name, batch, T, kind, reverse, x64):
    check_forms_equal_loop(SLSTM_CELLS[name], ("reference",), batch, T, kind, reverse, seed=4)


@settings(max_examples=2)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    T=st.integers(1, 8),
    kind=st.sampled_from(["lengths", "mask"]),
    reverse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_mlstm_forms_equal_loop_for_random_batch_shapes(batch, T, kind, reverse, seed):
    with jax.enable_x64(True):
        check_forms_equal_loop(MLSTM_CELL, FORMS, batch, T, kind, reverse, seed)


def test_mlstm_forms_equal_reference_in_gradient(x64):
    cell = MLSTM_CELL
    rng = np.random.default_rng(5)
    params = np_params(cell, seed=5, scale=0.6)
    xs = jnp.asarray(rng.normal(size=(2, 8, I)))
    carry0 = np_carry(cell, (2,), seed=5)
    mask = jnp.asarray(rng.random((2, 8)) < 0.7)

    def loss(impl, params, xs, carry):
        final, ys = seqjax.scan(cell, params, xs, carry=carry, mask=mask, reverse=True, impl=impl)
        return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(final.c**2) + jnp.sum(jnp.sin(final.n))

    grads = {
        impl: jax.jit(jax.value_and_grad(functools.partial(loss, impl), (0, 1, 2)))(
            params, xs, carry0
        )
        for impl in FORMS
    }
    for impl in ("parallel", "chunkwise"):
        np.testing.assert_allclose(grads[impl][0], grads["reference"][0], rtol=1e-11)
        chex.assert_trees_all_close(grads[impl][1], grads["reference"][1], rtol=1e-9, atol=1e-11)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))


def test_slstm_scan_gradient_equals_loop_gradient(x64):
    cell = SLSTM_CELLS["slstm_exp_conv"]
    params = np_params(cell, input_size=H, seed=6, scale=0.6)
    xs = jnp.asarray(np.random.default_rng(6).normal(size=(2, 3, H)))
    lengths = jnp.array([3, 1])

    def loss_scan(params):
        _, ys = seqjax.scan(cell, params, xs, lengths=lengths, reverse=True)
        return jnp.sum(ys**3)

    def loss_loop(params):
        carry, total = cell.initial_carry((2,), jnp.float64), jnp.zeros((), jnp.float64)
        for t in reversed(range(3)):
            new, y = cell(params, carry, xs[:, t])
            m = (t < lengths)[:, None]
            carry = jax.tree_util.tree_map(functools.partial(jnp.where, m), new, carry)
            total = total + jnp.sum(jnp.where(m, y, 0.0) ** 3)
        return total

    g_scan = jax.jit(jax.grad(loss_scan))(params)
    g_loop = jax.jit(jax.grad(loss_loop))(params)
    chex.assert_trees_all_close(g_scan, g_loop, rtol=1e-10, atol=1e-12)


# -- stability: T = 10,000, gate pre-activations far beyond exp's float32 range --------------------

T_LONG = 10_000


def np_slstm_stabilised(params, xs):
    """The stabilised sLSTM recurrence in float64 NumPy, one sequence ``xs [T, I]``."""
    w, r, b = (np.asarray(a, np.float64) for a in (params.w, params.r, params.b))
    nh, d = r.shape[0], r.shape[1]
    h4 = w.shape[1] // 4
    h, c, n, m = (np.zeros(h4) for _ in range(4))
    pre_x = xs @ w + b
    ys = np.empty((len(xs), h4))
    for t in range(len(xs)):
        pre = pre_x[t] + np.einsum("nd,ndge->gne", h.reshape(nh, d), r).reshape(-1)
        it, ft, zt, ot = np.split(pre, 4)
        log_f = -np.logaddexp(0.0, -ft)
        m_new = it if t == 0 else np.maximum(it, log_f + m)
        i_s, f_s = np.exp(it - m_new), np.exp(log_f + m - m_new)
        c, n, m = f_s * c + i_s * np.tanh(zt), f_s * n + i_s, m_new
        h = np_sigmoid(ot) * c / n
        ys[t] = h
    return ys


def test_slstm_is_stable_over_10000_steps_with_huge_gate_preactivations():
    cell = seqjax.SLSTM(4, num_heads=2)
    params = np_params(cell, seed=7, scale=30.0)
    params = params._replace(r=params.r / 60.0)  # large gates, mild recurrence
    xs = np.random.default_rng(7).normal(size=(1, T_LONG, I)).astype(np.float32)
    pre = xs[0] @ np.asarray(params.w) + np.asarray(params.b)
    assert np.abs(pre).max() > 100.0  # exp() of these overflows float32 without a stabiliser

    def loss(params):
        _, ys = seqjax.scan(cell, params, jnp.asarray(xs))
        return jnp.sum(ys), ys

    (_, ys), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.all(np.isfinite(np.asarray(ys)))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
    np.testing.assert_allclose(np.asarray(ys[0]), np_slstm_stabilised(params, xs[0]), atol=1e-3)


def np_mlstm_stabilised(cell, params, xs):
    """The stabilised mLSTM recurrence (the xlstm package's step) in float64 NumPy."""
    xp = xs @ np.asarray(params.w, np.float64) + np.asarray(params.b, np.float64)
    nh, hd = cell.num_heads, cell.head_size
    hs = cell.hidden_size
    C, n, m = np.zeros((nh, hd, hd)), np.zeros((nh, hd)), np.zeros(nh)
    ys = np.empty((len(xs), hs))
    for t, a in enumerate(xp):
        q, k, v = (a[j * hs : (j + 1) * hs].reshape(nh, hd) for j in range(3))
        k = k / np.sqrt(hd)
        it, ft = a[3 * hs : 3 * hs + nh], a[3 * hs + nh : 3 * hs + 2 * nh]
        log_f = -np.logaddexp(0.0, -ft)
        m_new = np.maximum(log_f + m, it)
        f_s, i_s = np.exp(log_f + m - m_new), np.exp(it - m_new)
        C = f_s[:, None, None] * C + i_s[:, None, None] * k[:, :, None] * v[:, None, :]
        n, m = f_s[:, None] * n + i_s[:, None] * k, m_new
        den = np.maximum(np.abs(np.sum(q * n, -1)), np.exp(-m)) + cell.eps
        ys[t] = np_sigmoid(a[3 * hs + 2 * nh :]) * (
            np.einsum("nd,nde->ne", q, C) / den[:, None]
        ).reshape(-1)
    return ys


def test_mlstm_is_stable_over_10000_steps_with_huge_gate_preactivations():
    """Step and chunk-wise forms in float32 (the parallel form's [T, T] matrix is too large for
    a test at this T; it equals the others above)."""
    cell = seqjax.MLSTM(4, num_heads=2, chunk_size=64)
    params = np_params(cell, seed=8)
    gates = slice(3 * 4, 3 * 4 + 4)  # the i and f blocks: scaled up, q, k, v, o left at N(0, 1)
    params = params._replace(w=params.w.at[:, gates].mul(30.0), b=params.b.at[gates].mul(30.0))
    xs = np.random.default_rng(8).normal(size=(1, T_LONG, I)).astype(np.float32)
    pre = xs[0] @ np.asarray(params.w) + np.asarray(params.b)
    assert np.abs(pre[:, gates]).max() > 100.0  # exp() of these overflows float32 unstabilised

    def run(impl, params):
        _, ys = seqjax.scan(cell, params, jnp.asarray(xs), impl=impl)
        return jnp.sum(jnp.tanh(ys)), ys

    ref = np_mlstm_stabilised(cell, params, xs[0].astype(np.float64))
    for impl in ("reference", "chunkwise"):
        (_, ys), grads = jax.jit(jax.value_and_grad(functools.partial(run, impl), has_aux=True))(
            params
        )
        out = np.asarray(ys[0])
        assert np.all(np.isfinite(out)), impl
        assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
        # float32 against float64: where |n^T q| nearly cancels, the denominator amplifies
        # rounding (a few dozen of the 40,000 outputs); elsewhere they agree to 1e-4
        err = np.abs(out - ref) / np.maximum(1.0, np.abs(ref))
        assert np.mean(err < 1e-4) > 0.995 and err.max() < 0.05, (impl, err.max())


# -- the official xlstm package (vanilla PyTorch) ------------------------------------------------


@needs_xlstm
def test_slstm_equals_the_official_vanilla_cell(x64):
    """Weights: ``r`` is the package's ``recurrent_kernel`` ``[NH, D, 4, D]``, ``b`` its internal
    gate-major bias ``[4H]``; its cell takes the input projection ``x @ w`` (gates i, f, z, o)."""
    cell = seqjax.SLSTM(H, num_heads=NH, param_dtype=jnp.float64)
    params = np_params(cell, seed=9, scale=0.7)
    xs = np.random.default_rng(9).normal(size=(2, 6, I))
    config = sLSTMCellConfig(hidden_size=H, num_heads=NH, backend="vanilla", dtype="float32")
    ref = sLSTMCell(config).double()
    with torch.no_grad():
        r = torch.from_numpy(np.array(params.r))
        ref._recurrent_kernel_.copy_(ref._recurrent_kernel_ext2int(r))
        ref._bias_.copy_(torch.from_numpy(np.array(params.b)))
        out, state = ref(torch.from_numpy(xs @ np.asarray(params.w)))  # [B, NH, T, D], [4, B, H]
    ys_ref = out.permute(0, 2, 1, 3).reshape(2, 6, H).numpy()
    final, ys = scan_fn(cell, "reference", False, "none")(
        params, jnp.asarray(xs), cell.initial_carry((2,), jnp.float64), None
    )
    np.testing.assert_allclose(np.asarray(ys), ys_ref, rtol=1e-12, atol=1e-14)
    for got, want in zip(final[:4], state.numpy(), strict=True):  # h, c, n, m
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-14)


def official_mlstm_inputs(cell, params, xs):
    """q, k, v ``[B, NH, T, D]`` and gate pre-activations ``[B, NH, T]`` as torch tensors."""
    xp = xs @ np.asarray(params.w) + np.asarray(params.b)
    B, T = xs.shape[:2]

    def heads(a):
        return torch.from_numpy(a.reshape(B, T, NH, D).transpose(0, 2, 1, 3).copy())

    q, k, v = (heads(xp[..., j * H : (j + 1) * H]) for j in range(3))
    ig = torch.from_numpy(xp[..., 3 * H : 3 * H + NH].transpose(0, 2, 1).copy())
    fg = torch.from_numpy(xp[..., 3 * H + NH : 3 * H + 2 * NH].transpose(0, 2, 1).copy())
    return q, k, v, ig, fg


def official_to_seqjax(h):
    return h.permute(0, 2, 1, 3).reshape(h.shape[0], h.shape[2], H).numpy()


@needs_xlstm
@pytest.mark.parametrize("form", FORMS)
def test_mlstm_equals_the_official_functions(form, x64):
    """recurrent_step_stabilized_simple, parallel_stabilized_simple and chunkwise_simple (the
    package's cell output is h~: no output gate). The package's parallel form omits the initial
    state from its stabiliser, which moves only where ``eps`` enters: compared with ``eps=0``."""
    T, B, L = 8, 2, 4
    eps = 0.0 if form == "parallel" else 1e-6
    cell = seqjax.MLSTM(
        H, num_heads=NH, output_gate=False, eps=eps, chunk_size=L, param_dtype=jnp.float64
    )
    params = np_params(cell, seed=10, scale=0.8)
    xs = np.random.default_rng(10).normal(size=(B, T, I))
    q, k, v, ig, fg = official_mlstm_inputs(cell, params, xs)
    carry0 = cell.initial_carry((B,), jnp.float64)
    final, ys = scan_fn(cell, form, False, "none")(params, jnp.asarray(xs), carry0, None)
    C, n, m = (np.asarray(a) for a in cell.unflatten_carry(final, jnp.float64))
    if form == "parallel":
        h = xlstm_mlstm.parallel_stabilized_simple(q, k, v, ig[..., None], fg[..., None], eps=eps)
    elif form == "reference":
        c_s, n_s, m_s = torch.zeros(B, NH, D, D), torch.zeros(B, NH, D, 1), torch.zeros(B, NH, 1, 1)
        c_s, n_s, m_s = c_s.double(), n_s.double(), m_s.double()
        hs = []
        for t in range(T):
            h_t, (c_s, n_s, m_s) = xlstm_mlstm.recurrent_step_stabilized_simple(
                c_s,
                n_s,
                m_s,
                q[:, :, t : t + 1].clone(),
                k[:, :, t : t + 1].clone(),
                v[:, :, t : t + 1].clone(),
                ig[:, :, t, None, None],
                fg[:, :, t, None, None],
                eps=eps,
            )
            hs.append(h_t)
        h = torch.cat(hs, dim=2)
        np.testing.assert_allclose(C, c_s.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(n, n_s[..., 0].numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(m, m_s[..., 0, 0].numpy(), rtol=1e-12)
    else:
        h, (c_s, n_s, m_s) = xlstm_mlstm.chunkwise_simple(
            q, k, v, ig, fg, chunk_size=L, return_last_state=True, eps=eps
        )
        # the package scales q instead of k by 1/sqrt(D): its C and n are sqrt(D) times ours
        np.testing.assert_allclose(C * np.sqrt(D), c_s.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(n * np.sqrt(D), n_s.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(m, m_s[..., 0, 0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ys), official_to_seqjax(h), rtol=1e-11, atol=1e-13)


@needs_xlstm
def test_gated_mlp_equals_the_official_gated_feedforward(x64):
    from xlstm.components.feedforward import FeedForwardConfig, GatedFeedForward

    mlp = GatedMLP(proj_factor=1.3, multiple_of=8, param_dtype=jnp.float64)
    params = mlp.init(jax.random.key(0), features=H)
    ref = GatedFeedForward(
        FeedForwardConfig(proj_factor=1.3, embedding_dim=H, round_proj_up_to_multiple_of=8)
    ).double()
    assert ref.config._proj_up_dim == mlp.up_size(H) == 16
    with torch.no_grad():
        ref.proj_up.weight.copy_(torch.from_numpy(np.asarray(params.w_up).T.copy()))
        ref.proj_down.weight.copy_(torch.from_numpy(np.asarray(params.w_down).T.copy()))
        x = np.random.default_rng(12).normal(size=(2, 5, H))
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        np.asarray(mlp(params, jnp.asarray(x))), want, rtol=1e-12, atol=1e-14
    )


# -- the contract: composition, adapters, configs, dispatch, errors --------------------------------


def test_in_bidirectional_and_flax_linen():
    """A kernel inside a combinator (the chunk-wise mLSTM in a bidirectional layer) through the
    linen adapter, against the step-by-step reference on the same parameters (stacks of both
    cells: the XLSTMBlock test and its docstring example)."""
    from seqjax.flax import linen as sl

    deep = seqjax.bidirectional(seqjax.MLSTM(H, NH, chunk_size=2))
    xs = jnp.asarray(np.random.default_rng(11).normal(size=(2, 5, I)), jnp.float32)
    lengths = jnp.array([5, 3])
    model = sl.RNN(deep)
    variables = jax.jit(model.init)(jax.random.key(1), xs)
    ys_flax = jax.jit(lambda v: model.apply(v, xs, seq_lengths=lengths))(variables)
    params = sl.params_from_flax(deep, variables["params"])
    ys_ref = jax.jit(lambda p: seqjax.scan(deep, p, xs, lengths=lengths, impl="reference")[1])(
        params
    )
    chex.assert_shape(ys_flax, (2, 5, 2 * H))
    np.testing.assert_allclose(np.asarray(ys_flax), np.asarray(ys_ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ys_flax[1, 3:]), 0.0)


def test_xlstm_block_scan_equals_python_loop(x64):
    """The block around an mLSTM (its chunk-wise kernel inside) and around a convolutional sLSTM."""
    for seed, inner in enumerate(
        [
            seqjax.MLSTM(H, NH, chunk_size=2, param_dtype=jnp.float64),
            seqjax.SLSTM(H, NH, conv_kernel_size=3, param_dtype=jnp.float64),
        ]
    ):
        block = XLSTMBlock(inner, mlp_use_bias=True)
        rng = np.random.default_rng(13 + seed)
        params = np_params(block, input_size=H, seed=13 + seed, scale=0.5)
        xs = jnp.asarray(rng.normal(size=(3, 5, H)))
        valid, lengths = validity("lengths", (3,), 5, rng)
        carry = np_carry(inner, (3,), seed)
        final_ref, ys_ref = python_loop(block, params, carry, xs, valid, reverse=True)
        final, ys = scan_fn(block, "auto", True, "lengths")(params, xs, carry, lengths)
        np.testing.assert_allclose(np.asarray(ys), ys_ref, rtol=1e-10, atol=1e-12)
        chex.assert_trees_all_close(final, final_ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="input_size must be the cell's output size 8, got 3"):
        block.init(jax.random.key(0), I)


def test_config_round_trip():
    for cell in (
        seqjax.SLSTM(8, num_heads=4, forget_gate="exp", conv_kernel_size=4, use_bias=False),
        seqjax.MLSTM(8, num_heads=2, output_gate=False, eps=0.0, chunk_size=16),
        XLSTMBlock(seqjax.SLSTM(8, num_heads=2), mlp_proj_factor=None),
        XLSTMBlock(seqjax.MLSTM(8), mlp_activation="swish", mlp_multiple_of=4),
    ):
        assert seqjax.cell_from_config(seqjax.cell_to_config(cell)) == cell


def test_initial_carry_can_be_donated():
    """Each carry leaf is its own buffer, so a donating train step can take the carry."""
    for cell in (
        seqjax.SLSTM(8, num_heads=2),
        seqjax.SLSTM(8, conv_kernel_size=4),
        seqjax.MLSTM(8, num_heads=2),
        XLSTMBlock(seqjax.SLSTM(8, num_heads=2)),
    ):
        carry = cell.initial_carry((2,))
        leaves = jax.tree.leaves(carry)
        assert len({id(leaf) for leaf in leaves}) == len(leaves), type(cell).__name__
        bumped = jax.jit(lambda c: jax.tree.map(lambda a: a + 1, c), donate_argnums=0)(carry)
        for leaf in jax.tree.leaves(bumped):
            np.testing.assert_array_equal(leaf, np.ones(leaf.shape))


def test_auto_rule_and_forced_forms():
    cell = seqjax.MLSTM(H, NH, chunk_size=4)
    choose = seqjax.scan_engine.choose
    assert choose(cell, jnp.ones((1, 2, I)), None) == "chunkwise"  # on every backend, any T
    assert choose(cell, jnp.ones((500, 2, I)), None) == "chunkwise"
    for impl in FORMS:
        assert (
            choose(cell, jnp.ones((3, 2, I)), None, options=seqjax.ScanOptions(impl=impl)) == impl
        )
    with_remat = seqjax.ScanOptions(remat=True)
    assert choose(cell, jnp.ones((9, 2, I)), None, options=with_remat) == "reference"
    params = np_params(cell)
    with pytest.raises(ValueError, match="remat is not supported by the parallel form"):
        seqjax.scan(cell, params, jnp.ones((2, 3, I)), impl="parallel", remat=True)
    slstm = seqjax.SLSTM(H)
    with pytest.raises(ValueError, match="no chunkwise kernel for SLSTM"):
        seqjax.scan(slstm, np_params(slstm), jnp.ones((2, 3, I)), impl="chunkwise")
    assert "every backend" in mlstm_kernels.AUTO_RULE


def test_empty_sequences_pass_the_carry_through():
    cell = seqjax.MLSTM(H, NH)
    params = cell.init(jax.random.key(0), I)
    carry = np_carry(cell, (2,))
    for impl in FORMS:
        final, ys = seqjax.scan(cell, params, jnp.ones((2, 0, I)), carry=carry, impl=impl)
        assert ys.shape == (2, 0, H)
        chex.assert_trees_all_equal(final, carry)


def test_hyperparameter_errors_are_clean():
    with pytest.raises(ValueError, match="num_heads must divide hidden_size, got hidden_size=6"):
        seqjax.SLSTM(6, num_heads=4)
    with pytest.raises(ValueError, match="num_heads must divide hidden_size"):
        seqjax.MLSTM(6, num_heads=4)
    with pytest.raises(ValueError, match="forget_gate"):
        seqjax.SLSTM(4, forget_gate="tanh")
    with pytest.raises(ValueError, match="conv_kernel_size must be an int >= 0, got -1"):
        seqjax.SLSTM(4, conv_kernel_size=-1)
    cell = seqjax.MLSTM(H, NH)
    with pytest.raises(TypeError, match="got SLSTMParams; expected MLSTMParams"):
        seqjax.scan(cell, seqjax.SLSTM(H, NH).init(jax.random.key(0), I), jnp.ones((2, 3, I)))
