"""Cells against NumPy references of the published equations, closed forms, init and gradients."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref
from jax.test_util import check_jvp, check_vjp

import seqjax

B, I, H, P, T = 3, 4, 5, 3, 6

LSTM_CONFIGS = {
    "plain": dict(),
    "peephole": dict(peephole=True),
    "cifg": dict(coupled=True, peephole=True),
    "lstmp": dict(proj_size=P),
    "lstmp_peephole": dict(proj_size=P, peephole=True),
    "nig": dict(input_gate=False),
    "nfg": dict(forget_gate=False, peephole=True),
    "nog": dict(output_gate=False),
    "niaf": dict(input_activation=False),
    "noaf": dict(output_activation=False),
    "fgr": dict(full_gate_recurrence=True, peephole=True),
    "fgr_cifg": dict(full_gate_recurrence=True, coupled=True),
    "clip": dict(cell_clip=0.3),
    "layer_norm": dict(layer_norm=True, peephole=True),
    "no_bias": dict(use_bias=False),
    "everything": dict(
        proj_size=P,
        peephole=True,
        coupled=True,
        layer_norm=True,
        cell_clip=2.0,
        full_gate_recurrence=True,
    ),
}


def randomize(params, key, scale=0.5):
    """Replaces every parameter by a random normal draw of the same shape (nonzero peepholes,
    gains and biases, so every term of the equations matters)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [
        scale * jax.random.normal(k, leaf.shape, leaf.dtype)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, new)


def to_np(tree):
    return {k: (None if v is None else np.asarray(v)) for k, v in tree._asdict().items()}


def run_steps(cell, params, carry, xs_TBI):
    """Python loop of single steps (the reference for sequence-level code)."""
    ys = []
    for t in range(xs_TBI.shape[0]):
        carry, y = cell(params, carry, xs_TBI[t])
        ys.append(y)
    return carry, jnp.stack(ys)


@pytest.mark.parametrize("name", list(LSTM_CONFIGS))
def test_lstm_matches_numpy_equations(name, x64):
    cell = seqjax.LSTM(H, param_dtype=jnp.float64, **LSTM_CONFIGS[name])
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(1))
    xs = np.random.default_rng(0).normal(size=(T, B, I))
    carry = cell.initial_carry((B,), jnp.float64)
    carry = carry._replace(h=carry.h + 0.3, c=carry.c - 0.2)  # a nonzero start state

    got_carry, got_ys = run_steps(cell, params, carry, jnp.asarray(xs))

    p = to_np(params)
    h, c = np.asarray(carry.h), np.asarray(carry.c)
    gates = np.asarray(carry.gates) if cell.full_gate_recurrence else None
    want = []
    for t in range(T):
        h, c, gates = ref.lstm_step(cell, p, h, c, gates, xs[t])
        want.append(h)
    np.testing.assert_allclose(got_ys, np.stack(want), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_carry.c, c, rtol=1e-10, atol=1e-12)
    if gates is not None:
        np.testing.assert_allclose(got_carry.gates, gates, rtol=1e-10, atol=1e-12)
    # The sequence engine (hoisted input projection) agrees with stepping.
    seq_carry, seq_ys = seqjax.scan(cell, params, jnp.asarray(xs), carry=carry, time_major=True)
    np.testing.assert_allclose(seq_ys, np.stack(want), rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(seq_carry, got_carry, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_gru_matches_numpy_equations(reset_after, use_bias, x64):
    cell = seqjax.GRU(H, reset_after=reset_after, use_bias=use_bias, param_dtype=jnp.float64)
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(2))
    xs = np.random.default_rng(1).normal(size=(T, B, I))
    carry = seqjax.GRUCarry(h=jnp.full((B, H), 0.25, jnp.float64))
    _, got = run_steps(cell, params, carry, jnp.asarray(xs))
    p, h, want = to_np(params), np.asarray(carry.h), []
    for t in range(T):
        h = ref.gru_step(cell, p, h, xs[t])
        want.append(h)
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_rnn_matches_numpy_equations(activation, x64):
    cell = seqjax.SimpleRNN(H, activation=activation, param_dtype=jnp.float64)
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(3))
    xs = np.random.default_rng(2).normal(size=(T, B, I))
    carry = cell.initial_carry((B,), jnp.float64)
    _, got = run_steps(cell, params, carry, jnp.asarray(xs))
    p, h, want = to_np(params), np.zeros((B, H)), []
    for t in range(T):
        h = ref.rnn_step(cell, p, h, xs[t])
        want.append(h)
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-10, atol=1e-12)


# -- closed forms -------------------------------------------------------------------------------


def _seq(cell, params, xs, carry=None):
    return seqjax.scan(cell, params, xs, carry=carry)


def _set_block(params, cell, gate, value):
    """Sets the bias block of ``gate`` to ``value`` (a saturating constant)."""
    k = cell.gate_layout.index(gate)
    b = params.b.at[k * cell.hidden_size : (k + 1) * cell.hidden_size].set(value)
    return params._replace(b=b)


@pytest.fixture(scope="module")
def lstm_setup():
    cell = seqjax.LSTM(H, peephole=True)
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(4))
    xs = jax.random.normal(jax.random.key(5), (B, T, I))
    return cell, params, xs


def test_forget_gate_shut_forgets(lstm_setup):
    cell, params, xs = lstm_setup
    params = _set_block(params, cell, "f", -1e4)  # sigmoid(-1e4) == 0 exactly in float32
    # Peepholes would let the input gate see c_{t-1}; the closed form is for the gate alone.
    params = params._replace(w_peephole=jnp.zeros_like(params.w_peephole))
    c1 = cell.initial_carry((B,))._replace(c=jnp.full((B, H), 5.0))
    c2 = cell.initial_carry((B,))._replace(c=jnp.full((B, H), -3.0))
    n1, y1 = cell(params, c1, xs[:, 0])
    n2, y2 = cell(params, c2, xs[:, 0])
    np.testing.assert_array_equal(n1.c, n2.c)
    np.testing.assert_array_equal(y1, y2)


def test_forget_gate_open_input_gate_shut_remembers(lstm_setup):
    cell, params, xs = lstm_setup
    params = _set_block(_set_block(params, cell, "f", 1e4), cell, "i", -1e4)
    params = params._replace(w_peephole=jnp.zeros_like(params.w_peephole))
    c0 = cell.initial_carry((B,))._replace(c=jnp.linspace(-1, 1, B * H).reshape(B, H))
    final, _ = _seq(cell, params, xs, c0)
    np.testing.assert_allclose(final.c, c0.c, atol=1e-6)


def test_cifg_equals_lstm_with_input_gate_tied_to_forget_gate(x64):
    """CIFG (i = 1 - f) equals a full LSTM whose input gate has the negated forget-gate
    parameters, because 1 - sigmoid(a) = sigmoid(-a)."""
    cifg = seqjax.LSTM(H, coupled=True, peephole=True, param_dtype=jnp.float64)
    full = seqjax.LSTM(H, peephole=True, param_dtype=jnp.float64)
    pc = randomize(cifg.init(jax.random.key(0), I), jax.random.key(6))
    blocks = {n: k for k, n in enumerate(cifg.gate_layout)}  # f, g, o

    def fused(w):
        parts = [w[..., blocks[n] * H : (blocks[n] + 1) * H] for n in ("f", "g", "o")]
        f, g, o = parts
        return jnp.concatenate([-f, f, g, o], axis=-1)

    peep = pc.w_peephole  # rows f, o
    pf = seqjax.LSTMParams(
        w_ih=fused(pc.w_ih),
        w_hh=fused(pc.w_hh),
        b=fused(pc.b),
        w_peephole=jnp.stack([-peep[0], peep[0], peep[1]]),
    )
    xs = jax.random.normal(jax.random.key(7), (B, T, I), jnp.float64)
    c_cifg, y_cifg = _seq(cifg, pc, xs)
    c_full, y_full = _seq(full, pf, xs)
    np.testing.assert_allclose(y_cifg, y_full, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c_cifg.c, c_full.c, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "gate,flag", [("i", "input_gate"), ("f", "forget_gate"), ("o", "output_gate")]
)
def test_removed_gate_equals_gate_held_open(gate, flag):
    """NIG/NFG/NOG equal the full LSTM with that gate saturated open (bias +1e4)."""
    ablated = seqjax.LSTM(H, **{flag: False})
    full = seqjax.LSTM(H)
    pa = randomize(ablated.init(jax.random.key(0), I), jax.random.key(8))
    H_ = H
    blocks = {n: pa.w_ih[:, k * H_ : (k + 1) * H_] for k, n in enumerate(ablated.gate_layout)}
    rec = {n: pa.w_hh[:, k * H_ : (k + 1) * H_] for k, n in enumerate(ablated.gate_layout)}
    bias = {n: pa.b[k * H_ : (k + 1) * H_] for k, n in enumerate(ablated.gate_layout)}
    blocks[gate] = jnp.zeros((I, H_))
    rec[gate] = jnp.zeros((H_, H_))
    bias[gate] = jnp.full((H_,), 1e4)
    pf = seqjax.LSTMParams(
        w_ih=jnp.concatenate([blocks[n] for n in "ifgo"], -1),
        w_hh=jnp.concatenate([rec[n] for n in "ifgo"], -1),
        b=jnp.concatenate([bias[n] for n in "ifgo"], -1),
    )
    xs = jax.random.normal(jax.random.key(9), (B, T, I))
    np.testing.assert_allclose(_seq(ablated, pa, xs)[1], _seq(full, pf, xs)[1], atol=1e-6)


def test_zero_peepholes_equal_plain_lstm(lstm_setup):
    cell, params, xs = lstm_setup
    plain = seqjax.LSTM(H)
    p0 = params._replace(w_peephole=jnp.zeros_like(params.w_peephole))
    pp = params._replace(w_peephole=None)
    np.testing.assert_array_equal(_seq(cell, p0, xs)[1], _seq(plain, pp, xs)[1])
    # ... and nonzero peepholes do change the result.
    assert not np.allclose(_seq(cell, params, xs)[1], _seq(plain, pp, xs)[1])


def test_identity_projection_equals_plain_lstm():
    lstmp = seqjax.LSTM(H, proj_size=H)
    plain = seqjax.LSTM(H)
    p = lstmp.init(jax.random.key(0), I)._replace(w_proj=jnp.eye(H))
    xs = jax.random.normal(jax.random.key(10), (B, T, I))
    cp, yp = _seq(lstmp, p, xs)
    cq, yq = _seq(plain, p._replace(w_proj=None), xs)
    np.testing.assert_allclose(yp, yq, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cp.c, cq.c, rtol=1e-6, atol=1e-6)


def test_projection_shapes_follow_pytorch_convention():
    cell = seqjax.LSTM(H, proj_size=P)
    params = cell.init(jax.random.key(0), I)
    chex.assert_shape([params.w_ih, params.w_hh, params.w_proj], [(I, 4 * H), (P, 4 * H), (H, P)])
    carry = cell.initial_carry((B,))
    chex.assert_shape([carry.h, carry.c], [(B, P), (B, H)])
    assert cell.output_size == P


def test_gru_update_gate_closed_forms():
    cell = seqjax.GRU(H)
    p = randomize(cell.init(jax.random.key(0), I), jax.random.key(11))
    h0 = seqjax.GRUCarry(h=jax.random.normal(jax.random.key(12), (B, H)))
    x = jax.random.normal(jax.random.key(13), (B, I))
    # z = 0: the state is copied unchanged.
    shut = p._replace(b=p.b.at[H : 2 * H].set(-1e4))
    np.testing.assert_allclose(cell(shut, h0, x)[0].h, h0.h, atol=1e-6)
    # z = 1 and r = 1: a plain tanh RNN on the candidate weights.
    opened = p._replace(b=p.b.at[: 2 * H].set(1e4))
    want = jnp.tanh(x @ p.w_ih[:, 2 * H :] + p.b[2 * H :] + h0.h @ p.w_hh[:, 2 * H :])
    np.testing.assert_allclose(cell(opened, h0, x)[0].h, want, atol=1e-5)
    # With r = 1 and no recurrent candidate bias, both GRU forms agree.
    after = seqjax.GRU(H, reset_after=True)
    pa = after.init(jax.random.key(0), I)._replace(w_ih=opened.w_ih, w_hh=opened.w_hh, b=opened.b)
    np.testing.assert_allclose(after(pa, h0, x)[0].h, cell(opened, h0, x)[0].h, atol=1e-5)


def test_simple_rnn_without_recurrence_is_a_dense_layer():
    cell = seqjax.SimpleRNN(H)
    p = randomize(cell.init(jax.random.key(0), I), jax.random.key(14))
    p = p._replace(w_hh=jnp.zeros_like(p.w_hh))
    xs = jax.random.normal(jax.random.key(15), (B, T, I))
    np.testing.assert_allclose(_seq(cell, p, xs)[1], jnp.tanh(xs @ p.w_ih + p.b), atol=1e-6)


# -- initialisation ------------------------------------------------------------------------------


def test_lstm_init_forget_bias_orthogonal_recurrence_glorot_inputs():
    cell = seqjax.LSTM(16, forget_bias=1.0)
    p = cell.init(jax.random.key(0), 8)
    b = np.asarray(p.b).reshape(4, 16)
    np.testing.assert_array_equal(b[1], np.ones(16))
    np.testing.assert_array_equal(b[[0, 2, 3]], np.zeros((3, 16)))
    for k in range(4):
        blk = p.w_hh[:, k * 16 : (k + 1) * 16]
        np.testing.assert_allclose(blk.T @ blk, np.eye(16), atol=1e-5)
    limit = np.sqrt(6.0 / (8 + 16))  # Glorot-uniform per [I, H] block
    assert np.abs(p.w_ih).max() <= limit
    assert np.abs(p.w_ih).max() > 0.8 * limit
    assert seqjax.LSTM(16, forget_bias=0.0).init(jax.random.key(0), 8).b.sum() == 0.0


def test_greff_variants_are_one_flag_each():
    v = seqjax.LSTM.variant("V", 4)
    assert v.peephole
    expected = dict(
        NIG="input_gate",
        NFG="forget_gate",
        NOG="output_gate",
        NIAF="input_activation",
        NOAF="output_activation",
        NP="peephole",
        CIFG="coupled",
        FGR="full_gate_recurrence",
    )
    for name, flag in expected.items():
        cell = seqjax.LSTM.variant(name, 4)
        diff = {
            f
            for f in (
                "input_gate",
                "forget_gate",
                "output_gate",
                "input_activation",
                "output_activation",
                "peephole",
                "coupled",
                "full_gate_recurrence",
            )
            if getattr(cell, f) != getattr(v, f)
        }
        assert diff == {flag}, (name, diff)
    with pytest.raises(ValueError, match="unknown LSTM variant"):
        seqjax.LSTM.variant("XYZ", 4)


def test_cells_are_hashable_immutable_static_args():
    a, b = seqjax.LSTM(8, peephole=True), seqjax.LSTM(8, peephole=True)
    assert a == b and hash(a) == hash(b)
    assert a != seqjax.LSTM(8)
    with pytest.raises(AttributeError):
        a.hidden_size = 3
    deep = seqjax.stack([seqjax.bidirectional(a), seqjax.GRU(4)])
    assert hash(deep) == hash(seqjax.stack([seqjax.bidirectional(b), seqjax.GRU(4)]))
    assert a.replace(hidden_size=3).hidden_size == 3


# -- numerics and gradients ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    [
        seqjax.LSTM(3, param_dtype=jnp.float64, peephole=True, proj_size=2, layer_norm=True),
        seqjax.LSTM(
            3,
            param_dtype=jnp.float64,
            coupled=True,
            full_gate_recurrence=True,
            peephole=True,
            output_activation=False,
        ),
        seqjax.GRU(3, param_dtype=jnp.float64),
        seqjax.GRU(3, param_dtype=jnp.float64, reset_after=True),
        seqjax.SimpleRNN(3, param_dtype=jnp.float64),
    ],
    ids=["lstmp_ln_peep", "cifg_fgr_noaf", "gru", "gru_reset_after", "rnn"],
)
def test_check_grads_every_cell(cell, x64):
    params = randomize(cell.init(jax.random.key(0), 2), jax.random.key(16))
    xs = jax.random.normal(jax.random.key(17), (2, 4, 2), jnp.float64)
    carry = jax.tree_util.tree_map(lambda a: a + 0.1, cell.initial_carry((2,), jnp.float64))

    def f(params, carry, xs):
        final, ys = seqjax.scan(cell, params, xs, carry=carry, lengths=jnp.array([4, 2]))
        return ys, final

    # check_grads(f, args, order=1, modes=("fwd", "rev")), with the finite differences taken
    # through a jitted f (an eager scan compiles anew at every call); the derivatives checked
    # are still jax.jvp and jax.vjp of the eager f
    args = (params, carry, xs)
    check_jvp(jax.jit(f), functools.partial(jax.jvp, f), args, atol=1e-5, rtol=1e-5)
    check_vjp(jax.jit(f), functools.partial(jax.vjp, f), args, atol=1e-5, rtol=1e-5)


def test_bfloat16_compute_keeps_float32_carry():
    cell32 = seqjax.LSTM(8, peephole=True)
    cell16 = cell32.replace(dtype=jnp.bfloat16)
    params = cell32.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (2, 12, 4))
    f16, y16 = seqjax.scan(cell16, params, xs)
    f32, y32 = seqjax.scan(cell32, params, xs)
    assert f16.c.dtype == jnp.float32 and y16.dtype == jnp.float32
    np.testing.assert_allclose(y16, y32, atol=3e-2)
    assert not np.array_equal(y16, y32)  # bfloat16 matmuls really ran


def test_cell_definitions_round_trip_through_json_configs():
    import json

    cells = [
        seqjax.LSTM(8, proj_size=4, peephole=True, cell_clip=3.0, dtype=jnp.bfloat16),
        seqjax.GRU(5, reset_after=True, param_dtype=jnp.float64),
        seqjax.stack(
            [
                seqjax.bidirectional(seqjax.LSTM.variant("CIFG", 4)),
                seqjax.SimpleRNN(3, activation="relu"),
            ],
            dropout=0.25,
        ),
    ]
    for cell in cells:
        cfg = json.loads(json.dumps(seqjax.cell_to_config(cell)))
        back = seqjax.cell_from_config(cfg)
        assert back == cell and hash(back) == hash(cell)
    with pytest.raises(ValueError, match="custom callable"):
        seqjax.cell_to_config(seqjax.LSTM(4, kernel_init=jax.nn.initializers.zeros))
    with pytest.raises(ValueError, match="unknown cell type 'Transformer'"):
        seqjax.cell_from_config({"type": "Transformer"})
    with pytest.raises(ValueError, match="has no field 'size'"):
        seqjax.cell_from_config({"type": "GRU", "size": 3})


def test_plain_lstm_carry_unpacks_as_h_c_and_fgr_carries_gates():
    """Issue: ``h, c = final`` raised "too many values to unpack" (LSTMCarry had ``gates``)."""
    cell = seqjax.LSTM(4)
    params = cell.init(jax.random.key(0), 3)
    final, ys = seqjax.scan(cell, params, jnp.ones((2, 5, 3)))
    h, c = final
    assert type(final) is seqjax.LSTMCarry and final._fields == ("h", "c")
    np.testing.assert_array_equal(h, ys[:, -1])
    assert c.shape == (2, 4)
    fgr = seqjax.LSTM.variant("FGR", 4)
    final, _ = seqjax.scan(fgr, fgr.init(jax.random.key(0), 3), jnp.ones((2, 5, 3)))
    assert type(final) is seqjax.LSTMGatesCarry and final._fields == ("h", "c", "gates")
    assert final.gates.shape == (2, 3 * 4)  # i, f, o activations of the last step
    assert float(jnp.min(final.gates)) > 0 and float(jnp.max(final.gates)) < 1
    with pytest.raises(ValueError, match="LSTMGatesCarry"):
        # a plain carry is refused by the FGR cell (it needs the previous gates)
        seqjax.scan(fgr, fgr.init(jax.random.key(0), 3), jnp.ones((2, 5, 3)), carry=(h, c))


def test_cell_is_an_abstract_base_class():
    """A cell missing a method of the contract fails when instantiated, not when called."""
    import dataclasses

    from seqjax.cells.base import Cell

    @dataclasses.dataclass(frozen=True)
    class NoStep(Cell):
        n: int = 2

        @property
        def output_size(self):
            return self.n

        def init(self, key, input_size):
            return jnp.zeros((input_size, self.n))

        def initial_carry(self, batch_shape=(), dtype=jnp.float32):
            return jnp.zeros(tuple(batch_shape) + (self.n,), dtype)

        def input_size_of(self, params):
            return params.shape[0]

    with pytest.raises(TypeError, match="abstract method.*step"):
        NoStep()

    @dataclasses.dataclass(frozen=True)
    class Complete(NoStep):
        def step(self, params, carry, xp):
            h = jnp.tanh(xp @ params + carry)
            return h, h

    cell = Complete()
    params = cell.init(jax.random.key(0), 3)
    assert cell.input_size_of(params) == 3
    final, ys = seqjax.scan(cell, params, jnp.ones((4, 3)))
    assert ys.shape == (4, 2)
    np.testing.assert_allclose(final, ys[-1])
    for name in ("output_size", "init", "initial_carry", "input_size_of", "step"):
        assert name in Cell.__abstractmethods__
