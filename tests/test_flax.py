"""The Flax adapters (seqjax.flax.linen, seqjax.flax.nnx) against seqjax.scan.

The reference is :func:`seqjax.scan` with the same parameters (the cells themselves are checked
against NumPy and PyTorch elsewhere). Flax's own ``nn.RNN`` / ``nnx.RNN`` / ``nn.Bidirectional``
/ ``nnx.Bidirectional`` drive the cell modules, so these tests also pin down how Flax's
conventions (padding, final carry, [forward, backward] order) line up with seqjax's. Parameters
are random normal draws with ``cell.init``'s structure (not its initial values), so that
zero-initialised parts (peepholes, biases) matter. Each cell's paths share one jit.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import seqjax
from seqjax.cells.xlstm_block import XLSTMBlock
from seqjax.flax import linen as sl
from seqjax.flax import nnx as snnx
from seqjax.regularization import variational_dropout, weight_drop

B, T, F = 3, 6, 2
LENGTHS = np.array([6, 3, 1], np.int32)
TOL = dict(rtol=1e-5, atol=1e-5)

CELLS = {
    "lstm": seqjax.LSTM(4),
    "lstmp_peephole": seqjax.LSTM(4, proj_size=3, peephole=True),
    "gru": seqjax.GRU(4),
    "gru_reset_after": seqjax.GRU(4, reset_after=True),
    "simple_rnn": seqjax.SimpleRNN(4),
    "mingru": seqjax.MinGRU(4),
    "minlstm": seqjax.MinLSTM(4),
    "slstm": seqjax.SLSTM(4, num_heads=2),
    "slstm_conv": seqjax.SLSTM(F, conv_kernel_size=2),  # the convolution needs I == H
    "mlstm": seqjax.MLSTM(4, num_heads=2),
    "xlstm_block": XLSTMBlock(seqjax.MLSTM(F)),  # residual: I == H
}
DEEP_BI_LSTMP = seqjax.stack([seqjax.bidirectional(seqjax.LSTM(4, proj_size=2, peephole=True))] * 2)
WHOLE = {**CELLS, "deep_bi_lstmp": DEEP_BI_LSTMP}


def make_params(cell, seed=0):
    """Random parameters with the structure and shapes of ``cell.init`` (built in NumPy, so no
    compilation): every leaf is nonzero, so peepholes and biases take part."""
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), F))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes
    )


def valid_mask():
    return (np.arange(T)[None, :] < LENGTHS[:, None])[..., None]  # [B, T, 1]


def assert_valid_close(got, want):
    """Outputs agree at valid steps (nn.RNN/nnx.RNN leave padded steps unspecified)."""
    m = valid_mask()
    np.testing.assert_allclose(np.where(m, got, 0.0), np.where(m, want, 0.0), **TOL)


def assert_tree_close(got, want):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **TOL)


def shapes(tree):
    return jax.tree_util.tree_map(jnp.shape, tree)


@pytest.fixture(scope="module")
def xs():
    return jnp.asarray(np.random.default_rng(7).standard_normal((B, T, F)), jnp.float32)


def _all_paths(cell, fwd, bwd, xs, lengths):
    """Every way of running ``cell`` over ``xs``, plus the seqjax references (one jit)."""
    tree_f, tree_b = sl.params_to_flax(fwd), sl.params_to_flax(bwd)
    out = {"ref": seqjax.scan(cell, fwd, xs, lengths=lengths)}
    out["ref_bi"] = seqjax.scan(
        seqjax.bidirectional(cell), seqjax.BidirectionalParams(fwd, bwd), xs, lengths=lengths
    )
    out["nn_rnn"] = nn.RNN(sl.Cell(cell), return_carry=True).apply(
        {"params": {"cell": tree_f}}, xs, seq_lengths=lengths
    )
    out["nn_bidirectional"] = nn.Bidirectional(
        nn.RNN(sl.Cell(cell)), nn.RNN(sl.Cell(cell)), return_carry=True
    ).apply(
        {"params": {"forward_rnn": {"cell": tree_f}, "backward_rnn": {"cell": tree_b}}},
        xs,
        seq_lengths=lengths,
    )
    out["nnx_rnn"] = nnx.RNN(snnx.Cell(cell, params=fwd), return_carry=True)(
        xs, seq_lengths=lengths
    )
    out["nnx_bidirectional"] = nnx.Bidirectional(
        nnx.RNN(snnx.Cell(cell, params=fwd)),
        nnx.RNN(snnx.Cell(cell, params=bwd)),
        return_carry=True,
    )(xs, seq_lengths=lengths)
    out["linen_whole"] = sl.RNN(cell, return_carry=True).apply(
        {"params": tree_f}, xs, seq_lengths=lengths
    )
    out["nnx_whole"] = snnx.RNN(cell, params=fwd, return_carry=True)(xs, seq_lengths=lengths)
    return out


@pytest.fixture(scope="module", params=sorted(CELLS))
def cell_case(request, xs):
    cell = CELLS[request.param]
    fwd, bwd = make_params(cell, 0), make_params(cell, 1)
    out = jax.jit(lambda f, b, x, n: _all_paths(cell, f, b, x, n))(fwd, bwd, xs, LENGTHS)
    return cell, fwd, out


# -- linen: the cell inside Flax's own nn.RNN / nn.Bidirectional -------------------------------
def test_linen_cell_in_nn_rnn_matches_scan(cell_case, xs):
    cell, params, out = cell_case
    # Flax's own init creates exactly the parameters cell.init would (names and shapes).
    init_vars = jax.eval_shape(nn.RNN(sl.Cell(cell)).init, jax.random.key(0), xs)
    assert shapes(init_vars["params"]["cell"]) == shapes(sl.params_to_flax(params))

    carry, ys = out["nn_rnn"]
    ref_carry, ref_ys = out["ref"]
    assert ys.shape == ref_ys.shape == (B, T, cell.output_size)
    assert_valid_close(ys, ref_ys)
    assert type(carry) is type(ref_carry)
    assert_tree_close(carry, ref_carry)


def test_linen_cell_nn_rnn_time_major_and_manual_loop(xs):
    cell = CELLS["lstmp_peephole"]
    params = make_params(cell, seed=3)
    variables = sl.Cell(cell).to_variables(params)

    @jax.jit
    def run(variables, xs):
        ref = seqjax.scan(cell, params, xs)
        rnn = nn.RNN(sl.Cell(cell), time_major=True, return_carry=True)
        carry, ys_t = rnn.apply({"params": {"cell": variables["params"]}}, jnp.swapaxes(xs, 0, 1))
        # A hand-written loop over time with the bare module.
        module = sl.Cell(cell)
        c = module.initialize_carry(jax.random.key(0), xs[:, 0].shape)
        outs = []
        for t in range(T):
            c, y = module.apply(variables, c, xs[:, t])
            outs.append(y)
        return ref, (carry, jnp.swapaxes(ys_t, 0, 1)), (c, jnp.stack(outs, 1))

    (ref_carry, ref_ys), time_major, loop = run(variables, xs)
    for carry, ys in (time_major, loop):
        np.testing.assert_allclose(ys, ref_ys, **TOL)
        assert_tree_close(carry, ref_carry)


@pytest.mark.parametrize("path", ["nn_bidirectional", "nnx_bidirectional"])
def test_flax_bidirectional_matches_seqjax_bidirectional(cell_case, path):
    cell, _, out = cell_case
    (c_f, c_b), ys = out[path]
    ref_carry, ref_ys = out["ref_bi"]
    # Flax concatenates [forward, backward] like merge="concat", and its carry tuple is
    # (forward carry, backward carry after reaching step 0), like BidirectionalCarry.
    assert ys.shape == ref_ys.shape == (B, T, 2 * cell.output_size)
    assert_valid_close(ys, ref_ys)
    assert_tree_close(c_f, ref_carry.forward)
    assert_tree_close(c_b, ref_carry.backward)


def test_float64_paths_agree_tightly(x64):
    """In float64 (carry_dtype=float64) every path equals seqjax.scan to 1e-12."""
    cell = seqjax.LSTM(4, proj_size=3, peephole=True, param_dtype=jnp.float64)
    params = make_params(cell, 11)
    assert params.w_ih.dtype == jnp.float64
    xs = jnp.asarray(np.random.default_rng(8).standard_normal((B, T, F)))

    @jax.jit
    def run(params, xs, lengths):
        tree = sl.params_to_flax(params)
        return (
            seqjax.scan(cell, params, xs, lengths=lengths),
            nn.RNN(sl.Cell(cell, carry_dtype=jnp.float64), return_carry=True).apply(
                {"params": {"cell": tree}}, xs, seq_lengths=lengths
            ),
            nnx.RNN(snnx.Cell(cell, params=params, carry_dtype=jnp.float64), return_carry=True)(
                xs, seq_lengths=lengths
            ),
            sl.RNN(cell, return_carry=True).apply({"params": tree}, xs, seq_lengths=lengths),
            snnx.RNN(cell, params=params, return_carry=True)(xs, seq_lengths=lengths),
        )

    # int64 lengths: seqjax.scan compares them with an int64 arange under x64 (strict dtypes).
    (ref_carry, ref_ys), *paths = run(params, xs, LENGTHS.astype(np.int64))
    assert ref_ys.dtype == jnp.float64
    m = valid_mask()
    for carry, ys in paths:
        assert ys.dtype == carry.h.dtype == jnp.float64
        np.testing.assert_allclose(
            np.where(m, ys, 0.0), np.where(m, ref_ys, 0.0), rtol=1e-12, atol=1e-12
        )
        for g, w in zip(carry, ref_carry, strict=True):
            if w is not None:
                np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


# -- nnx: the cell inside nnx.RNN ----------------------------------------------------------------
def test_nnx_cell_in_nnx_rnn_matches_scan(cell_case):
    cell, params, out = cell_case
    fresh = nnx.eval_shape(lambda: snnx.Cell(cell, in_features=F, rngs=nnx.Rngs(0)))
    assert shapes(fresh.seqjax_params()) == shapes(params)
    carry, ys = out["nnx_rnn"]
    ref_carry, ref_ys = out["ref"]
    assert_valid_close(ys, ref_ys)
    assert_tree_close(carry, ref_carry)


# -- whole-sequence modules ----------------------------------------------------------------------
def test_whole_sequence_modules_match_scan(cell_case):
    cell, _, out = cell_case
    ref_carry, ref_ys = out["ref"]
    for name in ("linen_whole", "nnx_whole"):
        carry, ys = out[name]
        np.testing.assert_allclose(ys, ref_ys, **TOL)  # every step: padded steps are zero too
        assert_tree_close(carry, ref_carry)


def test_whole_sequence_deep_bidirectional_lstmp(xs):
    """A stack of bidirectional LSTMPs (not steppable) with lengths, then reverse + time-major +
    a mask with holes, through both whole-sequence modules."""
    cell = DEEP_BI_LSTMP
    params = make_params(cell, seed=5)
    init_vars = jax.eval_shape(sl.RNN(cell).init, jax.random.key(0), xs)
    assert shapes(init_vars["params"]) == shapes(sl.params_to_flax(params))
    mask = np.array([[1, 1, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], bool)

    @jax.jit
    def run(params, xs, lengths, mask):
        variables = sl.RNN(cell).to_variables(params)
        xs_t, mask_t = jnp.swapaxes(xs, 0, 1), mask.T
        return {
            "ref": seqjax.scan(cell, params, xs, lengths=lengths),
            "linen": sl.RNN(cell, return_carry=True).apply(variables, xs, seq_lengths=lengths),
            "nnx": snnx.RNN(cell, params=params, return_carry=True)(xs, seq_lengths=lengths),
            "ref_rev": seqjax.scan(cell, params, xs, mask=mask, reverse=True),
            "linen_rev": sl.RNN(cell, time_major=True, reverse=True, return_carry=True).apply(
                variables, xs_t, mask=mask_t
            ),
            "nnx_rev": snnx.RNN(
                cell, params=params, time_major=True, reverse=True, return_carry=True
            )(xs_t, mask=mask_t),
        }

    out = run(params, xs, LENGTHS, mask)
    assert out["ref"][1].shape == (B, T, 4)
    for name in ("linen", "nnx"):
        np.testing.assert_allclose(out[name][1], out["ref"][1], **TOL)
        assert_tree_close(out[name][0], out["ref"][0])
        np.testing.assert_allclose(
            jnp.swapaxes(out[name + "_rev"][1], 0, 1), out["ref_rev"][1], **TOL
        )
        assert_tree_close(out[name + "_rev"][0], out["ref_rev"][0])


def test_linen_rnn_plugs_into_nn_bidirectional_and_keeps_nn_rnn_order(xs):
    cell = CELLS["gru_reset_after"]
    fwd, bwd = make_params(cell, 0), make_params(cell, 1)

    @jax.jit
    def run(fwd, bwd, xs, lengths):
        layer = nn.Bidirectional(sl.RNN(cell), sl.RNN(cell), return_carry=True)
        variables = {
            "params": {
                "forward_rnn": sl.params_to_flax(fwd),
                "backward_rnn": sl.params_to_flax(bwd),
            }
        }
        ref = seqjax.scan(
            seqjax.bidirectional(cell), seqjax.BidirectionalParams(fwd, bwd), xs, lengths=lengths
        )
        # keep_order=False returns nn.RNN(reverse=True)'s processing order.
        ours = sl.RNN(cell, reverse=True, keep_order=False).apply(
            {"params": sl.params_to_flax(fwd)}, xs, seq_lengths=lengths
        )
        flax_ys = nn.RNN(sl.Cell(cell), reverse=True).apply(
            {"params": {"cell": sl.params_to_flax(fwd)}}, xs, seq_lengths=lengths
        )
        return layer.apply(variables, xs, seq_lengths=lengths), ref, ours, flax_ys

    ((c_f, c_b), ys), (ref_carry, ref_ys), ours, flax_ys = run(fwd, bwd, xs, LENGTHS)
    np.testing.assert_allclose(ys, ref_ys, **TOL)
    assert_tree_close((c_f, c_b), (ref_carry.forward, ref_carry.backward))
    assert_valid_close(ours, flax_ys)
    np.testing.assert_array_equal(np.where(valid_mask(), 0.0, ours), 0.0)
    with pytest.raises(ValueError, match="mask"):
        jax.eval_shape(
            lambda: sl.RNN(cell, reverse=True, keep_order=False).apply(
                {"params": sl.params_to_flax(fwd)}, xs, mask=jnp.ones((B, T), bool)
            )
        )


# -- gradients --------------------------------------------------------------------------------
def _masked_loss(ys):
    return jnp.sum(jnp.where(valid_mask(), ys, 0.0) ** 2)


def _assert_grads_match(got, want):
    """Every leaf gets a nonzero gradient, equal to the one through seqjax.scan."""
    for path, g in jax.tree_util.tree_leaves_with_path(got):
        assert float(jnp.max(jnp.abs(g))) > 0.0, f"zero gradient at {jax.tree_util.keystr(path)}"
    assert_tree_close(got, want)


@pytest.fixture(scope="module")
def scan_grads(xs):
    """Reference gradients through seqjax.scan for the LSTMP cell and the deep stack."""
    cases = {"lstmp_peephole": CELLS["lstmp_peephole"], "deep_bi_lstmp": DEEP_BI_LSTMP}
    params = {name: make_params(cell) for name, cell in cases.items()}

    @jax.jit
    def grads(params, xs):
        return {
            name: jax.grad(
                lambda p, c=cell: _masked_loss(seqjax.scan(c, p, xs, lengths=LENGTHS)[1])
            )(params[name])
            for name, cell in cases.items()
        }

    return params, grads(params, xs)


def test_gradients_linen_paths(xs, scan_grads):
    params, want = scan_grads
    cell, deep = CELLS["lstmp_peephole"], DEEP_BI_LSTMP
    rnn, model = nn.RNN(sl.Cell(cell)), sl.RNN(deep)

    @jax.jit
    def grads(tree, variables):
        g_cell = jax.grad(
            lambda t: _masked_loss(rnn.apply({"params": {"cell": t}}, xs, seq_lengths=LENGTHS))
        )(tree)
        g_deep = jax.grad(lambda v: _masked_loss(model.apply(v, xs, seq_lengths=LENGTHS)))(
            variables
        )
        return g_cell, g_deep

    got, dgot = grads(
        sl.params_to_flax(params["lstmp_peephole"]), model.to_variables(params["deep_bi_lstmp"])
    )
    assert set(got) == {"w_ih", "w_hh", "b", "w_peephole", "w_proj"}
    _assert_grads_match(got, sl.params_to_flax(want["lstmp_peephole"]))
    _assert_grads_match(dgot["params"], sl.params_to_flax(want["deep_bi_lstmp"]))


def _flat_params(tree):
    """{('params', 'layers', 0, 'forward', 'w_ih'): array} from a seqjax NamedTuple."""
    return {
        ("params",) + tuple(getattr(k, "name", getattr(k, "idx", None)) for k in path): w
        for path, w in jax.tree_util.tree_leaves_with_path(tree)
    }


def test_gradients_nnx_paths(xs, scan_grads):
    params, want = scan_grads

    @nnx.jit
    def grads(layer, model):
        def loss(layer, model):
            return _masked_loss(layer(xs, seq_lengths=LENGTHS)) + _masked_loss(
                model(xs, seq_lengths=LENGTHS)
            )

        return nnx.grad(loss, argnums=(0, 1))(layer, model)

    layer = nnx.RNN(snnx.Cell(CELLS["lstmp_peephole"], params=params["lstmp_peephole"]))
    model = snnx.RNN(DEEP_BI_LSTMP, params=params["deep_bi_lstmp"])
    g_layer, g_model = grads(layer, model)
    got = {
        path[1:]: v.get_value()  # drop the leading 'cell'
        for path, v in nnx.to_flat_state(nnx.state(g_layer, nnx.Param))
    }
    assert {p[-1] for p in got} == {"w_ih", "w_hh", "b", "w_peephole", "w_proj"}
    _assert_grads_match(got, _flat_params(want["lstmp_peephole"]))
    dgot = {path: v.get_value() for path, v in nnx.to_flat_state(nnx.state(g_model, nnx.Param))}
    assert len(dgot) == 20  # 5 arrays x 2 directions x 2 layers
    _assert_grads_match(dgot, _flat_params(want["deep_bi_lstmp"]))


# -- parameters in and out ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(WHOLE))
def test_params_round_trip(name):
    cell = WHOLE[name]
    params = make_params(cell)
    tree = sl.params_to_flax(params)
    back = sl.params_from_flax(cell, tree)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    for a, b in zip(
        jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params), strict=True
    ):
        assert a is b  # no copies
    # Also from a whole variables dict, and from a FrozenDict.
    assert sl.params_from_flax(cell, {"params": tree}) == back
    from flax.core import freeze

    assert sl.params_from_flax(cell, freeze(tree)) == back


def test_flax_init_runs_in_seqjax_and_nnx_state_round_trips(xs):
    # Initialise in linen and in nnx, run the same parameters with seqjax.scan.
    cell = CELLS["lstmp_peephole"]
    model = sl.RNN(cell)
    variables = model.init(jax.random.key(3), xs)
    params = model.from_variables(variables)
    assert isinstance(params, seqjax.LSTMParams)
    assert params.w_peephole is not None and params.w_gates is None
    ref_ys = seqjax.scan(cell, params, xs, lengths=LENGTHS)[1]
    np.testing.assert_allclose(model.apply(variables, xs, seq_lengths=LENGTHS), ref_ys, **TOL)
    layer = snnx.Cell(cell, in_features=F, rngs=nnx.Rngs(1))
    assert_valid_close(
        nnx.RNN(layer)(xs, seq_lengths=LENGTHS),
        seqjax.scan(cell, layer.seqjax_params(), xs, lengths=LENGTHS)[1],
    )

    # nnx: split/merge and state updates keep the NamedTuple structure and the numbers.
    deep = DEEP_BI_LSTMP
    nmodel = snnx.RNN(deep, params=make_params(deep, 1), rngs=nnx.Rngs(dropout=0))
    graphdef, state = nnx.split(nmodel)
    paths = {path for path, _ in nnx.to_flat_state(nnx.state(nmodel, nnx.Param))}
    assert ("params", "layers", 0, "forward", "w_peephole") in paths
    assert len(paths) == 20  # one nnx.Param per array; absent options hold none
    merged = nnx.merge(graphdef, state)
    assert isinstance(merged.params, seqjax.StackParams)
    assert isinstance(merged.params.layers[1].backward.w_proj, nnx.Param)
    assert_tree_close(merged.seqjax_params(), nmodel.seqjax_params())
    new_params = make_params(deep, 2)
    nnx.update(nmodel, nnx.state(snnx.RNN(deep, params=new_params)))
    assert_tree_close(nmodel.seqjax_params(), new_params)


# -- dropout and train / eval ---------------------------------------------------------------------
DROPOUT_STACK = seqjax.stack([seqjax.SimpleRNN(4), seqjax.SimpleRNN(4)], dropout=0.5)


def test_linen_dropout_randomness(xs):
    cell = DROPOUT_STACK
    params = make_params(cell)
    model = sl.RNN(cell)
    plain = sl.RNN(CELLS["gru"])
    plain_params = make_params(CELLS["gru"])
    k1, k2 = jax.random.key(1), jax.random.key(2)

    @jax.jit
    def linen(variables, plain_variables, xs, k1, k2):
        def drop(k):
            return model.apply(variables, xs, deterministic=False, rngs={"dropout": k})

        return (
            seqjax.scan(cell, params, xs)[1],
            model.apply(variables, xs),
            drop(k1),
            drop(k1),
            drop(k2),
            # A cell without dropout needs no 'dropout' rng when not deterministic.
            plain.apply(plain_variables, xs, deterministic=False),
            seqjax.scan(CELLS["gru"], plain_params, xs)[1],
        )

    clean, ys, a, a_again, b, plain_ys, plain_ref = linen(
        model.to_variables(params), plain.to_variables(plain_params), xs, k1, k2
    )
    np.testing.assert_allclose(ys, clean, **TOL)  # deterministic by default
    np.testing.assert_array_equal(a, a_again)
    assert not np.allclose(a, clean) and not np.allclose(a, b)
    np.testing.assert_allclose(plain_ys, plain_ref, **TOL)
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda: model.apply(model.to_variables(params), xs, deterministic=False))


class _Tagger(nnx.Module):
    """An nnx model with the adapter inside: RNN -> Dropout -> Linear."""

    def __init__(self, cell, params, rngs, **rnn_kwargs):
        self.rnn = snnx.RNN(cell, params=params, rngs=rngs, **rnn_kwargs)
        self.out = nnx.Linear(cell.output_size, 3, rngs=nnx.Rngs(params=0))

    def __call__(self, xs, **kwargs):
        return self.out(self.rnn(xs, **kwargs))


def test_nnx_train_eval_follow_nnx_convention(xs):
    """model.train() / model.eval() switch the adapter's dropout as they switch nnx.Dropout's."""
    cell, params = DROPOUT_STACK, make_params(DROPOUT_STACK)
    k3 = jax.random.key(3)
    clean, with_k3 = jax.jit(
        lambda p, x, k: (seqjax.scan(cell, p, x)[1], seqjax.scan(cell, p, x, key=k)[1])
    )(params, xs, k3)

    @nnx.jit
    def run(model, xs):  # the adapter's outputs, without the readout
        return model.rnn(xs)

    @nnx.jit
    def run_with(model, xs, key):
        return model.rnn(xs, rngs=key), model.rnn(xs, deterministic=True)

    model = _Tagger(cell, params, nnx.Rngs(0))
    assert model.rnn.deterministic is False  # training mode by default, as nnx.Dropout
    first, second = run(model, xs), run(model, xs)
    assert not np.allclose(first, clean)  # dropout is active
    assert not np.allclose(first, second)  # the stream advances: a fresh mask every call
    ys_k3, ys_det = run_with(model, xs, k3)
    np.testing.assert_allclose(ys_k3, with_k3, **TOL)  # a call's key wins over the stream
    np.testing.assert_allclose(ys_det, clean, **TOL)  # and so does a call's deterministic
    assert nnx.eval_shape(lambda m: m(xs), model).shape == (B, T, 3)

    model.eval()
    assert model.rnn.deterministic is True
    e1, e2 = run(model, xs), run(model, xs)
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_allclose(e1, clean, **TOL)  # == seqjax.scan without key

    model.train()
    assert model.rnn.deterministic is False
    assert not np.allclose(run(model, xs), clean)
    view = nnx.view(model, deterministic=True)
    assert view.rnn.deterministic is True and model.rnn.deterministic is False
    np.testing.assert_allclose(run(view, xs), clean, **TOL)


def test_nnx_dropout_needs_rngs_only_with_dropout(xs):
    cell, params = DROPOUT_STACK, make_params(DROPOUT_STACK)
    # Rngs(params=0) has no dropout stream (and no default one): fine until dropout is drawn.
    model = _Tagger(cell, params, nnx.Rngs(params=0))
    with pytest.raises(ValueError, match="no rngs"):
        nnx.eval_shape(lambda m: m(xs), model)
    model.eval()
    assert nnx.eval_shape(lambda m: m(xs), model).shape == (B, T, 3)
    # A named stream other than 'dropout'.
    named = snnx.RNN(cell, params=params, rngs=nnx.Rngs(noise=1), rng_collection="noise")
    assert named.rngs is not None
    # A cell without dropout runs in training mode without any rngs, equal to seqjax.scan.
    plain_cell = CELLS["gru"]
    plain_params = make_params(plain_cell)
    plain = snnx.RNN(plain_cell, params=plain_params)
    assert plain.deterministic is False and plain.rngs is None
    got, want = nnx.jit(lambda m, x: (m(x), seqjax.scan(plain_cell, plain_params, x)[1]))(plain, xs)
    np.testing.assert_allclose(got, want, **TOL)
    # deterministic=None (as nnx.Dropout allows) requires a value at the call.
    undecided = snnx.RNN(plain_cell, params=plain_params, deterministic=None)
    with pytest.raises(ValueError, match="deterministic"):
        nnx.eval_shape(lambda m: m(xs), undecided)
    with pytest.raises(TypeError, match="rngs"):
        nnx.eval_shape(lambda m: m(xs, rngs="seed"), snnx.RNN(cell, params=params))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (seqjax.LSTM(3), False),
        (seqjax.stack([seqjax.GRU(3), seqjax.GRU(3)]), False),  # splits the key, never uses it
        (seqjax.bidirectional(seqjax.SimpleRNN(3)), False),
        (DROPOUT_STACK, True),
        (variational_dropout(seqjax.LSTM(3), input_rate=0.1), True),
        (weight_drop(seqjax.LSTM(3), rate=0.2), True),
    ],
    ids=["lstm", "stack", "bidirectional", "stack_dropout", "variational", "weight_drop"],
)
def test_uses_key(cell, expected):
    from seqjax.flax import _common

    assert _common.uses_key(cell, make_params(cell), jnp.zeros((B, T, F))) is expected


def test_attention_decoder_with_bind_params(xs):
    """An attentional decoder's memory reaches the cell through bind_params, in both flavours."""
    from seqjax.attention_decoder import AttentionDecoder

    dec = AttentionDecoder(seqjax.LSTM(4), memory_size=3, attention="general")
    params = make_params(dec)
    memory = jnp.asarray(np.random.default_rng(9).standard_normal((B, 5, 3)), jnp.float32)
    mem_lengths = jnp.array([5, 2, 4])

    def bind(p):
        return dec.bind(p, memory, mem_lengths)

    @nnx.jit
    def run(layer, variables, xs):
        return (
            seqjax.scan(dec, bind(params), xs, lengths=LENGTHS),
            sl.RNN(dec, return_carry=True).apply(
                variables, xs, seq_lengths=LENGTHS, bind_params=bind
            ),
            layer(xs, seq_lengths=LENGTHS, bind_params=bind),  # training mode: no key needed
        )

    layer = snnx.RNN(dec, params=params, return_carry=True)
    (ref_carry, ref_ys), *paths = run(layer, sl.RNN(dec).to_variables(params), xs)
    assert ref_ys.shape == (B, T, dec.output_size)
    for carry, ys in paths:
        np.testing.assert_allclose(ys, ref_ys, **TOL)
        assert_tree_close(carry, ref_carry)


# -- bad input ------------------------------------------------------------------------------------
def test_errors(xs):
    cell = CELLS["lstmp_peephole"]
    params = make_params(cell)
    tree = sl.params_to_flax(params)

    with pytest.raises(ValueError, match="w_proj"):
        sl.params_from_flax(cell, {k: v for k, v in tree.items() if k != "w_proj"})
    with pytest.raises(ValueError, match="unexpected"):
        sl.params_from_flax(cell, {**tree, "extra": tree["b"]})
    with pytest.raises(ValueError, match=r"w_hh.*\(4, 16\).*\(3, 16\)"):
        sl.params_from_flax(cell, {**tree, "w_hh": jnp.zeros((4, 16))})
    with pytest.raises(TypeError, match="seqjax cell"):
        sl.Cell(nn.LSTMCell(4))
    with pytest.raises(TypeError, match="whole sequence"):
        jax.eval_shape(nn.RNN(sl.Cell(seqjax.bidirectional(cell))).init, jax.random.key(0), xs)
    with pytest.raises(ValueError, match="features"):
        jax.eval_shape(
            lambda: nn.RNN(sl.Cell(cell)).apply({"params": {"cell": tree}}, jnp.ones((B, T, F + 1)))
        )
    with pytest.raises(ValueError, match="dimensions"):
        jax.eval_shape(sl.RNN(cell).init, jax.random.key(0), jnp.ones((T,)))

    with pytest.raises(ValueError, match="in_features and rngs"):
        snnx.Cell(cell, in_features=F)
    with pytest.raises(ValueError, match="in_features is 5"):
        snnx.Cell(cell, in_features=5, params=params)
    with pytest.raises(TypeError, match="whole sequence"):
        snnx.Cell(DEEP_BI_LSTMP, params=make_params(DEEP_BI_LSTMP))
    with pytest.raises(ValueError, match="structure"):
        snnx.RNN(seqjax.GRU(4), params=params)
