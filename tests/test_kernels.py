"""Fused kernels (seqjax.kernels) against the reference scan path, PyTorch and NumPy.

Every comparison runs the same loss through ``seqjax.scan(..., impl="fused")`` and
``impl="reference"`` (the plain ``lax.scan`` of ``Cell.step`` differentiated by JAX) and
compares outputs, final carries and gradients with respect to parameters, inputs and the initial
carry. Shapes are tiny (H <= 6, T <= 9, B <= 3) so compiles stay fast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqjax
from seqjax import kernels
from seqjax.kernels import cudnn, fused, fused_engine

B, T, I = 3, 7, 5
LENGTHS = np.array([7, 4, 0], np.int32)


def _tree_allclose(a, b, rtol=2e-5, atol=2e-5):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol
        )


def _inputs(cell, batch=(B,), t=T, seed=0, dtype=jnp.float32):
    k_p, k_x, k_c = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_p, I)
    xs = jax.random.normal(k_x, batch + (t, I), dtype)
    carry0 = cell.initial_carry(batch, dtype)
    leaves, tree = jax.tree_util.tree_flatten(carry0)
    keys = jax.random.split(k_c, len(leaves))
    carry0 = jax.tree_util.tree_unflatten(
        tree,
        [0.5 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)],
    )
    return params, xs, carry0


def _loss_fn(cell, impl, both_directions=False, reverse=False, **scan_kwargs):
    """A loss reading every output and the final carry (non-linearly), plus its gradients.

    With ``both_directions`` the loss adds a reversed scan of the same inputs (one compile
    checks both directions); the auxiliary outputs are the forward scan's.
    """

    def one(params, xs, carry0, lengths, reverse):
        final, ys = seqjax.scan(
            cell,
            params,
            xs,
            carry=carry0,
            lengths=lengths,
            impl=impl,
            reverse=reverse,
            **scan_kwargs,
        )
        w = jnp.cos(jnp.arange(ys.shape[-1], dtype=ys.dtype))
        out = jnp.sum(jnp.sin(ys) * w) + sum(
            jnp.sum(jnp.tanh(leaf) * leaf) for leaf in jax.tree_util.tree_leaves(final)
        )
        return out, (final, ys)

    def loss(params, xs, carry0, lengths):
        out, aux = one(params, xs, carry0, lengths, reverse)
        if both_directions:
            out = out + 0.5 * one(params, xs, carry0, lengths, True)[0]
        return out, aux

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def _compare(cell, lengths=LENGTHS, rtol=2e-5, atol=2e-5, **scan_kwargs):
    params, xs, carry0 = _inputs(cell)
    lengths = None if lengths is None else jnp.asarray(lengths)
    got = _loss_fn(cell, "fused", **scan_kwargs)(params, xs, carry0, lengths)
    want = _loss_fn(cell, "reference", **scan_kwargs)(params, xs, carry0, lengths)
    _tree_allclose(got, want, rtol, atol)
    return got


CELLS = {
    "lstm": seqjax.LSTM(6),
    "lstm_peep_proj_clip": seqjax.LSTM(6, peephole=True, proj_size=4, cell_clip=0.8),
    "lstm_cifg": seqjax.LSTM.variant("CIFG", 6),
    "lstm_nig_noaf_nobias": seqjax.LSTM(
        6, input_gate=False, output_activation=False, use_bias=False, peephole=True
    ),
    "lstm_nfg_nog_niaf": seqjax.LSTM(
        6, forget_gate=False, output_gate=False, input_activation=False
    ),
    "gru": seqjax.GRU(6),
    "gru_reset_after": seqjax.GRU(6, reset_after=True),
    "gru_nobias": seqjax.GRU(6, reset_after=True, use_bias=False),
    "rnn_relu": seqjax.SimpleRNN(6, activation="relu"),
}


@pytest.mark.parametrize("name", list(CELLS))
def test_fused_equals_reference_with_lengths_both_directions(name):
    cell = CELLS[name]
    assert kernels.choose(cell, jnp.zeros((T, B, I)), None) == "fused"
    (_, (final, ys)), grads = _compare(cell, both_directions=True)
    # padding semantics hold on the fused path: zero outputs, untouched carry for length 0
    assert np.all(np.asarray(ys[2]) == 0) and np.all(np.asarray(ys[1, 4:]) == 0)
    _, _, carry0 = _inputs(cell)
    _tree_allclose(
        jax.tree_util.tree_map(lambda x: x[2], final),
        jax.tree_util.tree_map(lambda x: x[2], carry0),
        0,
        0,
    )
    # ... and a zero-length sequence gets no gradient through its inputs
    assert np.all(np.asarray(grads[1][2]) == 0)


def test_fused_without_mask_and_multiple_batch_dims():
    cell = seqjax.LSTM(5, peephole=True)
    params, _, _ = _inputs(cell)
    xs = jax.random.normal(jax.random.key(3), (2, 2, T, I))
    carry0 = cell.initial_carry((2, 2))

    def run(impl):
        def loss(p, x, c):
            final, ys = seqjax.scan(cell, p, x, carry=c, impl=impl)
            return jnp.sum(ys**3) + jnp.sum(final.c), ys

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
            params, xs, carry0
        )

    _tree_allclose(run("fused"), run("reference"))
    # a single unbatched sequence [T, I]
    f = seqjax.scan(cell, params, xs[0, 0], impl="fused")
    r = seqjax.scan(cell, params, xs[0, 0], impl="reference")
    _tree_allclose(f, r)


def test_fused_stack_and_bidirectional_with_mask_holes(monkeypatch):
    deep = seqjax.stack(
        [
            seqjax.bidirectional(seqjax.LSTM(4, proj_size=3)),
            seqjax.GRU(5, reset_after=True),
            seqjax.SimpleRNN(4),
        ]
    )
    calls = []
    real = fused.fused_scan

    def spy(cell, *args, **kwargs):
        calls.append((type(cell).__name__, kwargs["reverse"]))
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(fused, "fused_scan", spy)  # what the registered kernel calls
    params, xs, carry0 = _inputs(deep)
    mask = jnp.asarray(np.random.default_rng(0).random((B, T)) < 0.7)

    def run(impl):
        def loss(p, x, c):
            final, ys = seqjax.scan(deep, p, x, carry=c, mask=mask, impl=impl)
            return jnp.sum(jnp.sin(ys)) + sum(
                jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(final)
            ), ys

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
            params, xs, carry0
        )

    got = run("fused")
    assert sorted(calls) == sorted(
        [("LSTM", False), ("LSTM", True), ("GRU", False), ("SimpleRNN", False)]
    )
    _tree_allclose(got, run("reference"))


@pytest.mark.parametrize(
    "name, remat",
    [("lstm", True), ("lstm_peep_proj_clip", 4), ("gru", True), ("gru_reset_after", 4)],
)
def test_remat_equals_no_remat(name, remat):
    # T=7: remat=True uses chunks of 3 (padded to 9 steps), remat=4 chunks of 4 (padded to 8)
    cell = CELLS[name]
    params, xs, carry0 = _inputs(cell)
    lengths = jnp.asarray(LENGTHS)
    got = _loss_fn(cell, "fused", remat=remat)(params, xs, carry0, lengths)
    want = _loss_fn(cell, "fused")(params, xs, carry0, lengths)
    _tree_allclose(got, want)


def test_remat_reduces_compiled_memory():
    cell = seqjax.LSTM(8)
    params = cell.init(jax.random.key(0), 8)
    xs = jnp.ones((2, 400, 8))

    def temp_bytes(remat):
        def loss(p, x):
            return jnp.sum(seqjax.scan(cell, p, x, remat=remat)[1])

        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    full, chunked = temp_bytes(False), temp_bytes(True)
    # activations are [T, B, 4H] floats; with chunks of 20 steps only [20, B, 4H] stay live
    assert chunked < full / 3, (chunked, full)


def test_reference_remat_equals_plain():
    cell = seqjax.LSTM(4, layer_norm=True)  # no fused kernel: the reference scan checkpoints
    params, xs, carry0 = _inputs(cell)
    want = _loss_fn(cell, "reference")(params, xs, carry0, jnp.asarray(LENGTHS))
    for remat in (True, 3):  # T=7: chunks of 3 steps, padded to 9
        got = _loss_fn(cell, "auto", remat=remat)(params, xs, carry0, jnp.asarray(LENGTHS))
        _tree_allclose(got, want)


def _residual_count(cell, params, xs, **scan_kwargs):
    """Number of floats the backward pass keeps (the leaves of the VJP closure).

    Traced abstractly (``eval_shape``): the residuals' shapes are those of an eager ``vjp``,
    without running the forward pass.
    """

    def pullback(p, x):
        return jax.vjp(lambda p, x: seqjax.scan(cell, p, x, **scan_kwargs)[1], p, x)[1]

    return sum(
        leaf.size for leaf in jax.tree_util.tree_leaves(jax.eval_shape(pullback, params, xs))
    )


def test_reference_remat_int_sets_the_chunk_length():
    """Issue: an int ``remat`` was ignored on the reference path (every step checkpointed)."""
    cell = seqjax.LSTM(4, layer_norm=True)
    params = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (2, 16, 3))
    counts = {r: _residual_count(cell, params, xs, remat=r) for r in (False, True, 2, 4, 8)}
    # chunks keep far less than all steps, and the chunk length changes what is kept
    assert counts[4] < counts[False] / 2, counts
    assert len({counts[2], counts[4], counts[8]}) == 3, counts
    assert counts[True] == counts[4]  # ceil(sqrt(16)) = 4
    # the jaxpr has the outer scan over chunks around a checkpointed inner scan
    jaxpr = str(jax.make_jaxpr(lambda x: seqjax.scan(cell, params, x, remat=4)[1])(xs))
    assert jaxpr.count("scan[") == 2 and "remat" in jaxpr
    # same values and gradients, with and without lengths
    lengths = jnp.asarray([16, 5])

    def loss(p, x, remat):
        final, ys = seqjax.scan(cell, p, x, lengths=lengths, remat=remat, impl="reference")
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.c**2)

    want = jax.value_and_grad(loss, argnums=(0, 1))(params, xs, False)
    for remat in (3, 4, 16):
        _tree_allclose(jax.value_and_grad(loss, argnums=(0, 1))(params, xs, remat), want)


def test_bfloat16_compute_keeps_float32_carry():
    cell = CELLS["lstm_peep_proj_clip"]
    params, xs, carry0 = _inputs(cell)
    lengths = jnp.asarray(LENGTHS)
    (v16, (final16, ys16)), g16 = _loss_fn(cell, "fused", compute_dtype=jnp.bfloat16)(
        params, xs, carry0, lengths
    )
    (v32, (final32, ys32)), g32 = _loss_fn(cell, "fused")(params, xs, carry0, lengths)
    assert ys16.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(final16))
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(g16))
    # close to float32 at bfloat16's resolution (8 bits of mantissa), but not identical
    np.testing.assert_allclose(ys16, ys32, atol=5e-2)
    assert float(jnp.max(jnp.abs(ys16 - ys32))) > 0
    for a, b in zip(jax.tree_util.tree_leaves(g16), jax.tree_util.tree_leaves(g32), strict=True):
        scale = float(jnp.max(jnp.abs(b))) + 1e-3
        assert float(jnp.max(jnp.abs(a - b))) < 0.1 * scale
    # the reference path with the same compute dtype gives the same numbers up to rounding
    (_, (_, ys_ref)), _ = _loss_fn(cell, "reference", compute_dtype=jnp.bfloat16)(
        params, xs, carry0, lengths
    )
    np.testing.assert_allclose(ys16, ys_ref, atol=2e-2)


def test_float64_matches_reference_tightly(x64):
    cell = seqjax.LSTM(4, peephole=True, proj_size=3, param_dtype=jnp.float64)
    params, xs, carry0 = _inputs(cell, dtype=jnp.float64)
    lengths = jnp.asarray(LENGTHS.astype(np.int64))
    got = _loss_fn(cell, "fused", both_directions=True)(params, xs, carry0, lengths)
    want = _loss_fn(cell, "reference", both_directions=True)(params, xs, carry0, lengths)
    assert got[0][1][1].dtype == jnp.float64
    _tree_allclose(got, want, rtol=1e-12, atol=1e-12)


@settings(max_examples=6)
@given(st.lists(st.integers(0, T), min_size=B, max_size=B), st.booleans())
def test_property_padding_never_changes_valid_results(lengths, reverse):
    """Fused: appending padding after each sequence changes neither its outputs nor its grads."""
    cell = CELLS["lstm_cifg"]
    params, xs, carry0 = _inputs(cell)
    lengths = jnp.asarray(lengths, jnp.int32)
    f = _PROPERTY_FNS[reverse]
    (_, (final, ys)), (gp, gx, gc) = f(params, xs, carry0, lengths)
    noise = jnp.where(jnp.arange(T)[None, :, None] >= lengths[:, None, None], 100.0, 0.0)
    (_, (final2, ys2)), (gp2, gx2, gc2) = f(params, xs + noise, carry0, lengths)
    _tree_allclose((final, ys, gp, gx, gc), (final2, ys2, gp2, gx2, gc2), 1e-6, 1e-6)
    valid = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    assert np.all(np.asarray(ys)[~valid] == 0) and np.all(np.asarray(gx)[~valid] == 0)


_PROPERTY_FNS = {r: _loss_fn(CELLS["lstm_cifg"], "fused", reverse=r) for r in (False, True)}


# -- independent references ---------------------------------------------------------------------


def _np_lstm(params, xs, h, c):
    """Peephole LSTM from the equations in NumPy, float64: xs [T, B, I]."""
    w_ih, w_hh, b, pw = (
        np.asarray(a, np.float64) for a in (params.w_ih, params.w_hh, params.b, params.w_peephole)
    )
    H = w_hh.shape[0]
    sig = lambda v: 1 / (1 + np.exp(-v))
    ys = []
    for x in np.asarray(xs, np.float64):
        a = x @ w_ih + h @ w_hh + b
        i = sig(a[:, :H] + pw[0] * c)
        f = sig(a[:, H : 2 * H] + pw[1] * c)
        g = np.tanh(a[:, 2 * H : 3 * H])
        c = f * c + i * g
        o = sig(a[:, 3 * H :] + pw[2] * c)
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys), h, c


def test_fused_lstm_matches_numpy_equations():
    cell = seqjax.LSTM(4, peephole=True)
    params, xs, carry0 = _inputs(cell)
    params = params._replace(w_peephole=0.3 * jnp.ones_like(params.w_peephole))
    final, ys = seqjax.scan(cell, params, xs, carry=carry0, time_major=False, impl="fused")
    ys_np, h_np, c_np = _np_lstm(
        params, np.swapaxes(xs, 0, 1), np.asarray(carry0.h), np.asarray(carry0.c)
    )
    np.testing.assert_allclose(np.swapaxes(ys, 0, 1), ys_np, atol=1e-5)
    np.testing.assert_allclose(final.h, h_np, atol=1e-5)
    np.testing.assert_allclose(final.c, c_np, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_fused_gradients_match_pytorch(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    H = 5
    mod = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(I, H, batch_first=True).double()
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    out, _ = mod(x)
    (out.sin().sum()).backward()
    sd = {k: v.detach().numpy() for k, v in mod.named_parameters()}
    w_ih, w_hh = sd["weight_ih_l0"].T.copy(), sd["weight_hh_l0"].T.copy()
    b = sd["bias_ih_l0"] + sd["bias_hh_l0"]
    if kind == "lstm":
        cell = seqjax.LSTM(H)
        params = seqjax.LSTMParams(w_ih=w_ih, w_hh=w_hh, b=b)
        grad_w_hh = mod.weight_hh_l0.grad.numpy().T
    else:
        # PyTorch's update gate z' = 1 - z: negate the z block (see the GRU docstring)
        flip = np.concatenate([np.ones(H), -np.ones(H), np.ones(H)])
        cell = seqjax.GRU(H, reset_after=True)
        b_gru = np.concatenate([b[: 2 * H], sd["bias_ih_l0"][2 * H :]])
        params = seqjax.GRUParams(
            w_ih=w_ih * flip, w_hh=w_hh * flip, b=b_gru * flip, b_hn=sd["bias_hh_l0"][2 * H :]
        )
        grad_w_hh = mod.weight_hh_l0.grad.numpy().T * flip
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)

    def loss(p, xs):
        return jnp.sum(jnp.sin(seqjax.scan(cell, p, xs, impl="fused")[1]))

    gp, gx = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x.detach().numpy(), jnp.float32))
    np.testing.assert_allclose(gx, x.grad.numpy(), atol=2e-5)
    np.testing.assert_allclose(gp.w_hh, grad_w_hh, atol=5e-5)


# -- dispatch -----------------------------------------------------------------------------------


def test_dispatch_choices_and_fallbacks():
    xs = jnp.zeros((T, B, I))
    for cell in CELLS.values():
        assert kernels.choose(cell, xs, None) == "fused"
    for cell in (seqjax.LSTM(4, layer_norm=True), seqjax.LSTM.variant("FGR", 4)):
        assert kernels.unsupported_reason(cell) is not None
        assert kernels.choose(cell, xs, None) == "reference"
        with pytest.raises(ValueError, match="fused"):
            kernels.choose(cell, xs, None, options=seqjax.ScanOptions(impl="fused"))
        # the fallback still runs through seqjax.scan
        params, xs_b, _ = _inputs(cell)
        _tree_allclose(
            seqjax.scan(cell, params, xs_b), seqjax.scan(cell, params, xs_b, impl="reference")
        )
    assert (
        kernels.choose(seqjax.LSTM(4), xs, None, options=seqjax.ScanOptions(impl="reference"))
        == "reference"
    )
    with pytest.raises(ValueError, match="impl"):
        seqjax.scan(seqjax.GRU(3), seqjax.GRU(3).init(jax.random.key(0), I), xs, impl="fast")
    with pytest.raises(ValueError, match="remat"):
        seqjax.scan(seqjax.GRU(3), seqjax.GRU(3).init(jax.random.key(0), I), xs, remat=0)
    with pytest.raises(TypeError, match="compute_dtype"):
        seqjax.scan(
            seqjax.GRU(3), seqjax.GRU(3).init(jax.random.key(0), I), xs, compute_dtype=jnp.int32
        )
    assert kernels.chunk_length(4096, True) == 64 and kernels.chunk_length(10, 4) == 4
    assert kernels.chunk_length(7, False) == 0 and kernels.chunk_length(3, 50) == 3


def test_scan_options_are_an_explicit_validated_value():
    opts = seqjax.ScanOptions(impl="fused", remat=np.int64(4), compute_dtype="bfloat16")
    assert opts.remat == 4 and type(opts.remat) is int
    assert opts.compute_dtype == jnp.dtype(jnp.bfloat16)
    assert opts == seqjax.ScanOptions(impl="fused", remat=4, compute_dtype=jnp.bfloat16)
    assert hash(opts) == hash(seqjax.ScanOptions(impl="fused", remat=4, compute_dtype="bfloat16"))
    assert opts.replace(impl="auto").impl == "auto" and opts.impl == "fused"
    with pytest.raises(ValueError, match="impl must be one of"):
        seqjax.ScanOptions(impl="fast")
    with pytest.raises(ValueError, match="remat"):
        seqjax.ScanOptions(remat=-2)
    with pytest.raises(ValueError, match="remat"):
        seqjax.ScanOptions(remat=1.5)
    with pytest.raises(TypeError, match="compute_dtype"):
        seqjax.ScanOptions(compute_dtype="int8")
    with pytest.raises(TypeError, match="compute_dtype"):
        seqjax.ScanOptions(compute_dtype="not a dtype")
    # scan takes either the keywords or one options value, not both
    cell = seqjax.GRU(3)
    params, xs = cell.init(jax.random.key(0), I), jnp.ones((B, T, I))
    _tree_allclose(
        seqjax.scan(cell, params, xs, options=seqjax.ScanOptions(impl="reference", remat=2)),
        seqjax.scan(cell, params, xs, impl="reference", remat=2),
    )
    with pytest.raises(ValueError, match="not both"):
        seqjax.scan(cell, params, xs, options=seqjax.ScanOptions(), impl="fused")
    with pytest.raises(TypeError, match="ScanOptions"):
        seqjax.scan(cell, params, xs, options={"impl": "fused"})


def test_kernels_register_their_cells_and_forced_kernels_raise_elsewhere():
    from seqjax import scan_engine

    names = {k.name for k in scan_engine.registered_kernels(seqjax.LSTM)}
    assert names == {"cudnn", "fused"}
    assert [k.name for k in scan_engine.registered_kernels(seqjax.GRU)] == ["fused"]
    assert scan_engine.registered_kernels(seqjax.Stack) == ()
    with pytest.raises(ValueError, match="already registered"):
        scan_engine.register_kernel(
            seqjax.GRU, name="fused", run=kernels.fused.run_layer, unsupported_reason=print
        )
    with pytest.raises(ValueError, match="no cudnn kernel for GRU"):
        kernels.choose(
            seqjax.GRU(3), jnp.ones((T, B, I)), None, options=seqjax.ScanOptions("cudnn")
        )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the fallback on a CPU backend")
def test_cudnn_dispatch_falls_back_on_cpu():
    assert not cudnn.available()
    cell = seqjax.LSTM(4)
    xs = jnp.zeros((T, B, I))
    assert (
        cudnn.unsupported_reason(
            cell, dtype=jnp.float32, reverse=False, mask_is_lengths=True, has_mask=True, remat=False
        )
        is None
    )
    assert kernels.choose(cell, xs, None) == "fused"  # supported config, but no GPU here
    with pytest.raises(ValueError, match="no CUDA GPU"):
        kernels.choose(cell, xs, None, options=seqjax.ScanOptions(impl="cudnn"))


def test_cudnn_refuses_what_it_cannot_run():
    """Backend-independent part of the cuDNN dispatch (runs on GPU machines too)."""
    cell = seqjax.LSTM(4)
    reasons = dict(
        peephole=cudnn.unsupported_reason(
            seqjax.LSTM(4, peephole=True),
            dtype=jnp.float32,
            reverse=False,
            mask_is_lengths=False,
            has_mask=False,
            remat=False,
        ),
        gru=cudnn.unsupported_reason(
            seqjax.GRU(4),
            dtype=jnp.float32,
            reverse=False,
            mask_is_lengths=False,
            has_mask=False,
            remat=False,
        ),
        reverse=cudnn.unsupported_reason(
            cell,
            dtype=jnp.float32,
            reverse=True,
            mask_is_lengths=False,
            has_mask=False,
            remat=False,
        ),
        holes=cudnn.unsupported_reason(
            cell,
            dtype=jnp.float32,
            reverse=False,
            mask_is_lengths=False,
            has_mask=True,
            remat=False,
        ),
        bf16=cudnn.unsupported_reason(
            seqjax.LSTM(4, dtype=jnp.bfloat16),
            dtype=jnp.float32,
            reverse=False,
            mask_is_lengths=False,
            has_mask=False,
            remat=False,
        ),
        f64=cudnn.unsupported_reason(
            cell,
            dtype=jnp.float64,
            reverse=False,
            mask_is_lengths=False,
            has_mask=False,
            remat=False,
        ),
        remat=cudnn.unsupported_reason(
            cell,
            dtype=jnp.float32,
            reverse=False,
            mask_is_lengths=False,
            has_mask=False,
            remat=True,
        ),
    )
    assert all(r is not None for r in reasons.values()), reasons


def test_cudnn_weight_packing_matches_reference_layout():
    """pack_weights, unpacked by jax.experimental.rnn and run by its CPU reference LSTM."""
    rnn = pytest.importorskip("jax.experimental.rnn")
    H = 4
    cell = seqjax.LSTM(H)
    params, xs, carry0 = _inputs(cell)
    flat = cudnn.pack_weights(params)
    assert flat.shape == (rnn.get_num_params_in_lstm(I, H, 1, False),)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, I, H, 1, False)
    lengths = jnp.asarray([7, 4, 1], jnp.int32)  # lstm_ref reads h at index length - 1
    y, h_n, c_n = rnn.lstm_ref(
        xs, carry0.h[None], carry0.c[None], w_ih, w_hh, b_ih, b_hh, lengths, I, H, 1, 0.0, False
    )
    final, ys = seqjax.scan(cell, params, xs, carry=carry0, lengths=lengths)
    valid = (np.arange(T)[None, :] < np.asarray(lengths)[:, None])[..., None]
    np.testing.assert_allclose(np.where(valid, y, 0), ys, atol=1e-5)
    # lstm_ref returns the carry after each sequence's last valid step (length 0: h_0)
    np.testing.assert_allclose(h_n[0], final.h, atol=1e-5)
    np.testing.assert_allclose(c_n[0], final.c, atol=1e-5)


def test_measured_alternatives_still_equal_reference(monkeypatch):
    """Large-weight variant (projection before / dW after the loop) and forced mixes."""
    monkeypatch.setattr(fused_engine, "_PER_STEP_MAX_BYTES", 0)  # as if the weights were large
    _compare(CELLS["lstm_peep_proj_clip"], both_directions=True)
    _compare(CELLS["gru_reset_after"])
    monkeypatch.setattr(fused_engine, "_PROJECT_IN_LOOP", True)  # per-step projection, dW after
    _compare(CELLS["gru"])
