"""seqjax.interop against PyTorch: imported modules reproduce nn.RNN / nn.LSTM / nn.GRU.

PyTorch is the independent reference here: every configuration is run by torch itself (packed
sequences padded back with zeros) and by ``seqjax.scan`` on the imported parameters, and outputs
and final states must agree to 1e-6 in float64.
"""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqjax
from seqjax.interop import carry_from_torch, carry_to_torch, from_torch, to_torch

TOL = 1e-6
KINDS = ("rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru")


# -- helpers --------------------------------------------------------------------------------------
def make_module(
    kind,
    *,
    input_size,
    hidden,
    layers=1,
    bidirectional=False,
    bias=True,
    proj=0,
    batch_first=True,
    dropout=0.0,
    seed=0,
):
    """A float64 PyTorch module with random weights (biases included) from ``seed``."""
    torch.manual_seed(seed)
    common = dict(
        num_layers=layers,
        bias=bias,
        batch_first=batch_first,
        dropout=dropout,
        bidirectional=bidirectional,
        dtype=torch.float64,
    )
    if kind.startswith("rnn"):
        return torch.nn.RNN(input_size, hidden, nonlinearity=kind[4:], **common).eval()
    if kind.startswith("lstm"):
        return torch.nn.LSTM(input_size, hidden, proj_size=proj, **common).eval()
    return torch.nn.GRU(input_size, hidden, **common).eval()


def torch_run(module, xs_BTI, lengths=None, state=None):
    """Runs ``module`` on batch-major NumPy inputs; returns ``(ys [B, T, O], states)``.

    With ``lengths`` the input is packed (enforce_sorted=False) and padded back with zeros to T.
    ``states`` is a tuple of NumPy arrays: ``(h_n,)`` or ``(h_n, c_n)``.
    """
    x = torch.from_numpy(np.asarray(xs_BTI))
    T = x.shape[1]
    if not module.batch_first:
        x = x.transpose(0, 1)
    if state is not None:
        state = tuple(torch.from_numpy(np.asarray(s)) for s in state)
        state = state if len(state) == 2 else state[0]
    with torch.no_grad():
        if lengths is None:
            out, hn = module(x, state)
        else:
            packed = pack_padded_sequence(
                x,
                torch.as_tensor(np.asarray(lengths)),
                batch_first=module.batch_first,
                enforce_sorted=False,
            )
            out, hn = module(packed, state)
            out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
    if not module.batch_first:
        out = out.transpose(0, 1)
    hn = hn if isinstance(hn, tuple) else (hn,)
    return out.numpy(), tuple(h.numpy() for h in hn)


def as_numpy_states(states):
    states = states if isinstance(states, tuple) else (states,)
    return tuple(s.numpy() for s in states)


def _three_scans(cell, params, xs, lengths, carry0):
    """Full sequences; with lengths; with lengths and an explicit initial carry."""
    return (
        seqjax.scan(cell, params, xs),
        seqjax.scan(cell, params, xs, lengths=lengths),
        seqjax.scan(cell, params, xs, lengths=lengths, carry=carry0),
    )


# Jitted once for every configuration (the cell is hashable, hence static).
three_scans = jax.jit(_three_scans, static_argnums=0)
jit_scan = jax.jit(seqjax.scan, static_argnums=0, static_argnames=("time_major",))


def check_config(kind, layers, bidirectional, bias, *, input_size, hidden, batch, T, seed):
    """Imports a random module and compares all three runs with PyTorch at 1e-6."""
    rng = np.random.default_rng(seed)
    proj = int(rng.integers(1, hidden)) if kind == "lstm_proj" else 0
    module = make_module(
        kind,
        input_size=input_size,
        hidden=hidden,
        layers=layers,
        bidirectional=bidirectional,
        bias=bias,
        proj=proj,
        batch_first=bool(rng.integers(2)),
        seed=seed,
    )
    cell, params = from_torch(module)

    xs = rng.standard_normal((batch, T, input_size))
    lengths = rng.integers(1, T + 1, size=batch)  # pack_padded_sequence rejects length 0
    D = 2 if bidirectional else 1
    out = proj or hidden
    state0 = (rng.standard_normal((layers * D, batch, out)),)
    if kind.startswith("lstm"):
        state0 += (rng.standard_normal((layers * D, batch, hidden)),)
    carry0 = carry_from_torch(cell, *state0)

    runs = three_scans(cell, params, jnp.asarray(xs), jnp.asarray(lengths), carry0)
    refs = (
        torch_run(module, xs),
        torch_run(module, xs, lengths),
        torch_run(module, xs, lengths, state0),
    )
    for name, (final, ys), (ys_ref, states_ref) in zip(
        ("full", "lengths", "lengths+h0"), runs, refs, strict=True
    ):
        assert ys.dtype == jnp.float64
        assert ys.shape == ys_ref.shape == (batch, T, D * out), name
        np.testing.assert_allclose(np.asarray(ys), ys_ref, atol=TOL, rtol=0, err_msg=name)
        states = as_numpy_states(carry_to_torch(cell, final))
        assert len(states) == len(states_ref), name
        for s, s_ref in zip(states, states_ref, strict=True):
            assert s.shape == s_ref.shape, name
            np.testing.assert_allclose(s, s_ref, atol=TOL, rtol=0, err_msg=name)


# Every kind x bidirectional x bias; layers cycle through 1..3 and sizes vary with the seed, so
# every (kind, direction) pair also meets more than one depth.
GRID = [
    (kind, 1 + n % 3, bidir, bias)
    for n, (kind, bidir, bias) in enumerate(itertools.product(KINDS, (False, True), (True, False)))
]


@pytest.mark.parametrize(("kind", "layers", "bidirectional", "bias"), GRID)
def test_matches_pytorch_grid(x64, kind, layers, bidirectional, bias):
    seed = GRID.index((kind, layers, bidirectional, bias))
    rng = np.random.default_rng(1000 + seed)
    check_config(
        kind,
        layers,
        bidirectional,
        bias,
        input_size=int(rng.integers(2, 7)),
        hidden=int(rng.integers(2, 7)),
        batch=int(rng.integers(1, 5)),
        T=int(rng.integers(1, 8)),
        seed=seed,
    )


@settings(max_examples=6)
@given(
    kind=st.sampled_from(KINDS),
    layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    input_size=st.integers(2, 6),
    hidden=st.integers(2, 6),
    batch=st.integers(1, 4),
    T=st.integers(1, 7),
    seed=st.integers(0, 2**16),
)
def test_matches_pytorch_random(
    kind, layers, bidirectional, bias, input_size, hidden, batch, T, seed
):
    with jax.enable_x64(True):
        check_config(
            kind,
            layers,
            bidirectional,
            bias,
            input_size=input_size,
            hidden=hidden,
            batch=batch,
            T=T,
            seed=seed,
        )


def test_time_major_and_unbatched(x64):
    """batch_first=False module, time-major scan, and an unbatched ``[T, I]`` sequence."""
    module = make_module(
        "lstm_proj",
        input_size=3,
        hidden=5,
        layers=2,
        bidirectional=True,
        proj=2,
        batch_first=False,
        seed=7,
    )
    cell, params = from_torch(module)
    rng = np.random.default_rng(7)
    xs_TBI = rng.standard_normal((6, 3, 3))
    ys_ref, states_ref = torch_run(module, np.swapaxes(xs_TBI, 0, 1))
    final, ys = jit_scan(cell, params, jnp.asarray(xs_TBI), time_major=True)
    np.testing.assert_allclose(np.asarray(ys), np.swapaxes(ys_ref, 0, 1), atol=TOL, rtol=0)
    for s, s_ref in zip(as_numpy_states(carry_to_torch(cell, final)), states_ref, strict=True):
        np.testing.assert_allclose(s, s_ref, atol=TOL, rtol=0)

    # Unbatched: PyTorch takes [T, I] with states [L*D, H]; seqjax takes [T, I] and carries [H].
    x = torch.from_numpy(xs_TBI[:, 0])
    with torch.no_grad():
        y_ref, (h_ref, c_ref) = module(x)
    final, ys = jit_scan(cell, params, jnp.asarray(xs_TBI[:, 0]))
    np.testing.assert_allclose(np.asarray(ys), y_ref.numpy(), atol=TOL, rtol=0)
    h_n, c_n = carry_to_torch(cell, final)
    assert tuple(h_n.shape) == (4, 2) and tuple(c_n.shape) == (4, 5)
    np.testing.assert_allclose(h_n.numpy(), h_ref.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(c_n.numpy(), c_ref.numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["rnn_relu", "lstm", "gru"])
def test_single_step_cells(x64, kind):
    """nn.RNNCell / nn.LSTMCell / nn.GRUCell import as plain cells and match one step."""
    torch.manual_seed(3)
    n_in, H, B = 3, 4, 2
    if kind == "lstm":
        module = torch.nn.LSTMCell(n_in, H, dtype=torch.float64)
    elif kind == "gru":
        module = torch.nn.GRUCell(n_in, H, dtype=torch.float64)
    else:
        module = torch.nn.RNNCell(n_in, H, nonlinearity="relu", dtype=torch.float64)
    cell, params = from_torch(module)
    assert isinstance(
        cell, {"lstm": seqjax.LSTM, "gru": seqjax.GRU, "rnn_relu": seqjax.SimpleRNN}[kind]
    )
    rng = np.random.default_rng(3)
    x, h = rng.standard_normal((B, n_in)), rng.standard_normal((B, H))
    with torch.no_grad():
        if kind == "lstm":
            c = rng.standard_normal((B, H))
            h_ref, c_ref = module(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
            carry = seqjax.LSTMCarry(h=jnp.asarray(h), c=jnp.asarray(c))
        else:
            h_ref = module(torch.from_numpy(x), torch.from_numpy(h))
            carry = type(cell.initial_carry())(h=jnp.asarray(h))
    new, y = cell(params, carry, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), h_ref.numpy(), atol=TOL, rtol=0)
    if kind == "lstm":
        np.testing.assert_allclose(np.asarray(new.c), c_ref.numpy(), atol=TOL, rtol=0)


# -- the documented mapping, field by field -------------------------------------------------------
def test_gru_mapping_negates_update_gate(x64):
    module = make_module("gru", input_size=3, hidden=2, seed=11)
    cell, p = from_torch(module)
    assert cell == seqjax.GRU(2, reset_after=True, param_dtype=jnp.float64)
    H = 2
    w_ih, w_hh = module.weight_ih_l0.detach().numpy(), module.weight_hh_l0.detach().numpy()
    b_ih, b_hh = module.bias_ih_l0.detach().numpy(), module.bias_hh_l0.detach().numpy()
    sign = np.repeat([1.0, -1.0, 1.0], H)
    np.testing.assert_array_equal(np.asarray(p.w_ih), w_ih.T * sign)
    np.testing.assert_array_equal(np.asarray(p.w_hh), w_hh.T * sign)
    np.testing.assert_allclose(np.asarray(p.b[:H]), b_ih[:H] + b_hh[:H], rtol=1e-15)
    np.testing.assert_allclose(
        np.asarray(p.b[H : 2 * H]), -(b_ih[H : 2 * H] + b_hh[H : 2 * H]), rtol=1e-15
    )
    np.testing.assert_array_equal(np.asarray(p.b[2 * H :]), b_ih[2 * H :])
    np.testing.assert_array_equal(np.asarray(p.b_hn), b_hh[2 * H :])


def test_lstm_mapping_and_structure(x64):
    module = make_module(
        "lstm_proj",
        input_size=3,
        hidden=4,
        layers=2,
        bidirectional=True,
        proj=2,
        dropout=0.25,
        seed=5,
    )
    cell, params = from_torch(module)
    layer = seqjax.LSTM(4, proj_size=2, param_dtype=jnp.float64)
    assert cell == seqjax.stack([seqjax.bidirectional(layer)] * 2, dropout=0.25)
    back1 = params.layers[1].backward
    np.testing.assert_array_equal(
        np.asarray(back1.w_ih), module.weight_ih_l1_reverse.detach().numpy().T
    )
    np.testing.assert_array_equal(
        np.asarray(back1.w_proj), module.weight_hr_l1_reverse.detach().numpy().T
    )
    np.testing.assert_allclose(
        np.asarray(back1.b),
        (module.bias_ih_l1_reverse + module.bias_hh_l1_reverse).detach().numpy(),
        rtol=1e-15,
    )
    assert back1.w_ih.shape == (4, 16)  # layer 1 reads [fwd, bwd] of layer 0: 2 * P features
    for leaf in jax.tree_util.tree_leaves(params):
        assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float64


def test_dropout_is_training_only(x64):
    """The module's dropout lands in the Stack: inert without a key (eval), active with one."""
    module = make_module("gru", input_size=3, hidden=4, layers=2, dropout=0.5, seed=2)
    cell, params = from_torch(module)
    assert cell.dropout == 0.5
    xs = np.random.default_rng(2).standard_normal((2, 5, 3))
    ys_ref, _ = torch_run(module, xs)  # module.eval(): no dropout
    _, ys = jit_scan(cell, params, jnp.asarray(xs))
    np.testing.assert_allclose(np.asarray(ys), ys_ref, atol=TOL, rtol=0)
    _, ys_drop = jit_scan(cell, params, jnp.asarray(xs), key=jax.random.key(0))
    assert np.abs(np.asarray(ys_drop) - ys_ref).max() > 1e-3
    # One layer: PyTorch ignores dropout, and so does the import (a plain cell).
    with pytest.warns(UserWarning):
        single = make_module("gru", input_size=3, hidden=4, layers=1, dropout=0.5)
    assert isinstance(from_torch(single)[0], seqjax.GRU)


# -- dtypes ---------------------------------------------------------------------------------------
def test_float32_module_gives_float32_params():
    module = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True).eval()  # float32
    cell, params = from_torch(module)
    assert cell.layers[0].param_dtype == jnp.float32
    leaves = jax.tree_util.tree_leaves(params)
    assert all(isinstance(x, jax.Array) and x.dtype == jnp.float32 for x in leaves)
    xs = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    ys_ref, _ = torch_run(module, xs)
    _, ys = jit_scan(cell, params, jnp.asarray(xs))
    assert ys.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ys), ys_ref, atol=1e-5, rtol=0)


def test_float64_module_without_x64_is_a_clear_error():
    assert not jax.config.read("jax_enable_x64")
    module = torch.nn.GRU(3, 4).double()
    with pytest.raises(ValueError, match="64-bit mode is off"):
        from_torch(module)
    cell, params = from_torch(module, param_dtype=jnp.float32)  # explicit downcast is allowed
    assert cell.param_dtype == jnp.float32 and params.w_ih.dtype == jnp.float32


def test_param_dtype_override_and_half_precision():
    module = torch.nn.RNN(3, 4).to(torch.bfloat16)
    cell, params = from_torch(module)
    assert cell.param_dtype == jnp.bfloat16 and params.w_hh.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(params.w_hh, np.float32), module.weight_hh_l0.detach().float().numpy().T
    )
    with pytest.raises(TypeError, match="floating dtype"):
        from_torch(module, param_dtype=jnp.int32)


# -- to_torch: the inverse ------------------------------------------------------------------------
def random_params(cell, input_size, seed):
    """Parameters of ``cell`` filled with random values (no zero biases hiding bias mistakes).

    Only the structure comes from ``cell.init`` (through ``jax.eval_shape``, which is free).
    """
    shapes = jax.eval_shape(functools.partial(cell.init, input_size=input_size), jax.random.key(0))
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        tree, [jnp.asarray(rng.uniform(-0.8, 0.8, x.shape), x.dtype) for x in leaves]
    )


@pytest.mark.parametrize(
    "cell",
    [
        seqjax.SimpleRNN(4, activation="relu", param_dtype=jnp.float64),
        seqjax.stack([seqjax.LSTM(4, proj_size=3, param_dtype=jnp.float64)] * 2, dropout=0.1),
        seqjax.bidirectional(seqjax.GRU(3, reset_after=True, param_dtype=jnp.float64)),
        seqjax.stack(
            [
                seqjax.bidirectional(
                    seqjax.GRU(3, reset_after=True, use_bias=False, param_dtype=jnp.float64)
                )
            ]
            * 2
        ),
    ],
    ids=["rnn", "lstmp-stack", "bigru", "bigru-stack-nobias"],
)
def test_to_torch_round_trip(x64, cell):
    params = random_params(cell, 3, seed=1)
    module = to_torch(cell, params)
    assert not module.training and module.batch_first
    assert all(p.dtype == torch.float64 for p in module.parameters())
    rng = np.random.default_rng(4)
    xs, lengths = rng.standard_normal((3, 6, 3)), np.array([6, 1, 4])
    ys_ref, states_ref = torch_run(module, xs, lengths)
    final, ys = jit_scan(cell, params, jnp.asarray(xs), lengths=jnp.asarray(lengths))
    np.testing.assert_allclose(np.asarray(ys), ys_ref, atol=TOL, rtol=0)
    for s, s_ref in zip(as_numpy_states(carry_to_torch(cell, final)), states_ref, strict=True):
        np.testing.assert_allclose(s, s_ref, atol=TOL, rtol=0)
    cell2, params2 = from_torch(module)
    assert cell2 == cell
    chex_close = jax.tree_util.tree_map(
        lambda a, b: np.allclose(a, b, rtol=0, atol=1e-15), params2, params
    )
    assert all(jax.tree_util.tree_leaves(chex_close))


@pytest.mark.parametrize(
    ("cell", "match"),
    [
        (seqjax.LSTM(4, peephole=True), "no equivalent"),
        (seqjax.LSTM(4, layer_norm=True), "no equivalent"),
        (seqjax.GRU(4), "reset-after"),
        (seqjax.stack([seqjax.LSTM(4)] * 2, residual=True), "residual"),
        (seqjax.bidirectional(seqjax.LSTM(4), merge="sum"), "merge='sum'"),
        (
            seqjax.stack(
                [
                    seqjax.bidirectional(seqjax.GRU(4, reset_after=True)),
                    seqjax.GRU(4, reset_after=True),
                ]
            ),
            "bidirectional in every layer",
        ),
        (seqjax.stack([seqjax.LSTM(4), seqjax.LSTM(5)]), "same type and sizes"),
        (
            seqjax.bidirectional(seqjax.LSTM(4), backward=seqjax.LSTM(4, use_bias=False)),
            "same type and sizes",
        ),
    ],
)
def test_to_torch_rejects_what_pytorch_cannot_represent(cell, match):
    params = random_params(cell, 3, seed=0)
    with pytest.raises(ValueError, match=match):
        to_torch(cell, params)


def test_to_torch_type_errors():
    cell = seqjax.LSTM(4)
    with pytest.raises(TypeError, match="expected a seqjax cell"):
        to_torch(torch.nn.LSTM(3, 4), None)
    with pytest.raises(TypeError, match="params do not match"):
        to_torch(cell, random_params(seqjax.GRU(4), 3, seed=0))
    wrong = random_params(seqjax.LSTM(5), 3, seed=0)
    with pytest.raises(TypeError, match="shape"):
        to_torch(cell, wrong)


# -- states ---------------------------------------------------------------------------------------
def test_carry_conversion_round_trip_and_errors():
    cell = seqjax.stack([seqjax.bidirectional(seqjax.LSTM(4, proj_size=2))] * 3)
    h0, c0 = torch.randn(6, 5, 2), torch.randn(6, 5, 4)
    carry = carry_from_torch(cell, h0, c0)
    # Layer 1's backward direction is PyTorch's entry 1 * 2 + 1.
    np.testing.assert_array_equal(np.asarray(carry.layers[1].backward.h), h0[3].numpy())
    h1, c1 = carry_to_torch(cell, carry)
    assert torch.equal(h1, h0) and torch.equal(c1, c0)
    with pytest.raises(ValueError, match="needs both h_0 and c_0"):
        carry_from_torch(cell, h0)
    with pytest.raises(ValueError, match=r"shape \[num_layers \* num_directions = 6"):
        carry_from_torch(cell, h0[:4], c0[:4])
    with pytest.raises(ValueError, match="c_0 is only for LSTMs"):
        carry_from_torch(seqjax.GRU(4, reset_after=True), torch.zeros(1, 4), torch.zeros(1, 4))
    with pytest.raises(TypeError, match="carry does not match"):
        carry_to_torch(seqjax.LSTM(4), seqjax.GRUCarry(h=jnp.zeros(4)))


# -- errors on import -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "module",
    [torch.nn.Linear(3, 4), torch.nn.MultiheadAttention(4, 2), "lstm", np.zeros(3)],
    ids=["linear", "attention", "str", "ndarray"],
)
def test_unsupported_module_is_a_type_error(module):
    with pytest.raises(TypeError, match=r"from_torch supports torch\.nn\.RNN, nn\.LSTM, nn\.GRU"):
        from_torch(module)


def test_mixed_dtype_module_is_a_type_error():
    module = torch.nn.LSTM(3, 4)
    module.weight_hh_l0.data = module.weight_hh_l0.data.double()
    with pytest.raises(TypeError, match="several dtypes"):
        from_torch(module)


def test_importing_interop_does_not_import_torch():
    code = (
        "import sys, seqjax, seqjax.interop; "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "assert callable(seqjax.interop.from_torch)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
