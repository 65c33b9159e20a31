"""Parameters of another cell are refused at trace time, with what differs (seqjax/_params.py).

Before this check, an LSTM without peepholes ran on peephole parameters and ignored them, a
``reset_after`` GRU ran on classic-GRU parameters, and other mismatches failed deep inside JAX
(``AttributeError: 'GRUParams' object has no attribute 'w_proj'``, a ``dot_general`` shape
error, ``AttributeError ... 'layers'``). Most cases are checked through ``seqjax.scan`` and a
one-step call, the two entry points; the rest call the checker directly, which is cheaper than
compiling a scan.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

import seqjax
from seqjax import _params
from seqjax.regularization import variational_dropout, weight_drop, zoneout

KEY = jax.random.key(0)
I = 3


def init(cell, n=I):
    return cell.init(KEY, n)


def scan_and_step(cell, params, exc, match):
    """Both entry points raise ``exc`` matching ``match``, under jit (trace time)."""
    xs = jnp.ones((2, 4, I))
    with pytest.raises(exc, match=match):
        jax.jit(lambda p: seqjax.scan(cell, p, xs))(params)
    if not isinstance(cell, seqjax.Bidirectional):
        with pytest.raises(exc, match=match):
            jax.jit(lambda p: cell(p, cell.initial_carry((2,)), xs[:, 0]))(params)


# -- the cases of the report ------------------------------------------------------------------
def test_lstm_given_peephole_params():
    scan_and_step(
        seqjax.LSTM(8),
        init(seqjax.LSTM(8, peephole=True)),
        ValueError,
        r"LSTM\(hidden_size=8\) got parameters with w_peephole, which this cell does not use: "
        r"was it created with peephole=True\?",
    )


def test_peephole_lstm_given_plain_params():
    scan_and_step(
        seqjax.LSTM(8, peephole=True),
        init(seqjax.LSTM(8)),
        ValueError,
        r"needs parameter w_peephole, which the given parameters lack: were they created by a "
        r"cell with peephole=False\?",
    )


def test_gru_forms_do_not_take_each_others_params():
    scan_and_step(
        seqjax.GRU(8, reset_after=True),
        init(seqjax.GRU(8)),
        ValueError,
        r"GRU\(hidden_size=8, reset_after=True\) needs parameter b_hn.*reset_after=False",
    )
    scan_and_step(
        seqjax.GRU(8),
        init(seqjax.GRU(8, reset_after=True)),
        ValueError,
        r"got parameters with b_hn, which this cell does not use: .*reset_after=True\?",
    )


def test_plain_lstm_given_layer_norm_params():
    scan_and_step(
        seqjax.LSTM(8),
        init(seqjax.LSTM(8, layer_norm=True)),
        ValueError,
        r"got parameters with ln_ih_scale, .*layer_norm=True\?",
    )


def test_lstm_given_gru_params():
    # Was: AttributeError: 'GRUParams' object has no attribute 'w_proj'.
    scan_and_step(
        seqjax.LSTM(8),
        init(seqjax.GRU(8)),
        TypeError,
        r"LSTM\(hidden_size=8\) got GRUParams; expected LSTMParams from LSTM.init",
    )
    scan_and_step(
        seqjax.GRU(8), init(seqjax.LSTM(8)), TypeError, "got LSTMParams; expected GRUParams"
    )


def test_lstm_given_params_of_another_hidden_size():
    # Was: a shape error inside dot_general.
    scan_and_step(
        seqjax.LSTM(16),
        init(seqjax.LSTM(8)),
        ValueError,
        r"w_ih has shape \(3, 32\), expected \(3, 64\) for LSTM\(hidden_size=16\), as "
        r"LSTM.init\(key, input_size=3\) creates them: were they created by "
        r"LSTM\(hidden_size=8\)\?",
    )


def test_stack_given_one_layers_params():
    # Was: AttributeError: 'LSTMParams' object has no attribute 'layers'.
    deep = seqjax.stack([seqjax.LSTM(8)] * 2)
    scan_and_step(
        deep,
        init(seqjax.LSTM(8)),
        TypeError,
        r"Stack\(layers=\(LSTM\(hidden_size=8\), LSTM\(hidden_size=8\)\)\) got LSTMParams; "
        r"expected StackParams from Stack.init \(these look like the parameters of one "
        r"LSTM\(hidden_size=8\)",
    )


def test_stack_names_the_layer_that_differs():
    deep = seqjax.stack([seqjax.LSTM(8), seqjax.LSTM(8)])
    other = seqjax.stack([seqjax.LSTM(8), seqjax.LSTM(4)])
    scan_and_step(
        deep,
        init(other),
        ValueError,
        r"layer 1 of Stack: w_ih has shape \(8, 16\), expected \(8, 32\) for "
        r"LSTM\(hidden_size=8\).*were they created by LSTM\(hidden_size=4\)\?",
    )
    with pytest.raises(ValueError, match=r"layer 1 of Stack: LSTM\(hidden_size=8\) got .*peep"):
        _params.check_params(
            deep, init(seqjax.stack([seqjax.LSTM(8), seqjax.LSTM(8, peephole=True)]))
        )
    with pytest.raises(ValueError, match="layers has 3 entries, expected 2"):
        _params.check_params(deep, init(seqjax.stack([seqjax.LSTM(8)] * 3)))


def test_bidirectional_names_the_direction():
    bi = seqjax.stack([seqjax.bidirectional(seqjax.GRU(4))] * 2)
    other = seqjax.stack([seqjax.bidirectional(seqjax.GRU(4), backward=seqjax.GRU(2))] * 2)
    scan_and_step(
        bi,
        init(other),
        ValueError,
        r"backward of Bidirectional in layer 0 of Stack: w_ih has shape \(3, 6\), expected "
        r"\(3, 12\) for GRU\(hidden_size=4\)",
    )
    scan_and_step(
        seqjax.bidirectional(seqjax.LSTM(4)),
        init(seqjax.LSTM(4)),
        TypeError,
        "got LSTMParams; expected BidirectionalParams",
    )


@pytest.mark.parametrize(
    "wrap",
    [
        lambda c: zoneout(c, h_rate=0.1),
        lambda c: variational_dropout(c, recurrent_rate=0.2),
        lambda c: weight_drop(c, rate=0.5),
    ],
    ids=["zoneout", "variational_dropout", "weight_drop"],
)
def test_wrappers_check_their_inner_cells_params(wrap):
    cell = wrap(seqjax.LSTM(4))
    with pytest.raises(ValueError, match=r"the cell wrapped by \w+: LSTM\(hidden_size=4\) got "):
        _params.check_params(cell, init(seqjax.LSTM(4, peephole=True)))
    with pytest.raises(TypeError, match="got GRUParams; expected LSTMParams"):
        _params.check_params(cell, init(seqjax.GRU(4)))
    _params.check_params(cell, init(seqjax.LSTM(4)))


def test_wrapper_given_mismatched_params_raises_in_scan():
    scan_and_step(
        zoneout(seqjax.LSTM(4), h_rate=0.1),
        init(seqjax.LSTM(4, proj_size=2)),
        ValueError,
        r"got parameters with w_proj, which this cell does not use: was it created with "
        r"proj_size=2\?",
    )


def test_simple_rnn_and_option_hints():
    scan_and_step(
        seqjax.SimpleRNN(4),
        init(seqjax.SimpleRNN(4, use_bias=False)),
        ValueError,
        r"SimpleRNN\(hidden_size=4\) needs parameter b.*use_bias=False\?",
    )
    cases = [
        (seqjax.LSTM(4, proj_size=2), seqjax.LSTM(4), r"lack: .* proj_size=None\?"),
        (seqjax.LSTM(4, coupled=True), seqjax.LSTM(4), r"created by LSTM\(hidden_size=4\)\?"),
        (seqjax.LSTM(4), seqjax.LSTM(4, full_gate_recurrence=True), "full_gate_recurrence=True"),
        (seqjax.LSTM(4, use_bias=False), seqjax.LSTM(4), r"with b, .* use_bias=True\?"),
        (seqjax.SimpleRNN(4), seqjax.SimpleRNN(6), r"created by SimpleRNN\(hidden_size=6\)\?"),
    ]
    for cell, other, match in cases:
        with pytest.raises(ValueError, match=match):
            _params.check_params(cell, init(other))


def test_not_a_parameter_tuple():
    with pytest.raises(TypeError, match=r"LSTM\(hidden_size=4\) got dict; expected LSTMParams"):
        _params.check_params(seqjax.LSTM(4), {"w_ih": jnp.ones((3, 16))})
    with pytest.raises(TypeError, match=r"w_hh is a tuple, expected an array of shape \(4, 16\)"):
        _params.check_params(seqjax.LSTM(4), init(seqjax.LSTM(4))._replace(w_hh=(1, 2)))


# -- what must keep working ---------------------------------------------------------------------
ALL_CELLS = [
    seqjax.SimpleRNN(4),
    seqjax.SimpleRNN(4, activation="relu", use_bias=False),
    seqjax.GRU(4),
    seqjax.GRU(4, reset_after=True),
    seqjax.GRU(4, reset_after=True, use_bias=False),
    *(seqjax.LSTM.variant(name, 4) for name in seqjax.GREFF_VARIANTS),
    seqjax.LSTM(4, proj_size=2, cell_clip=3.0, layer_norm=True, use_bias=False),
    seqjax.stack([seqjax.LSTM(4, proj_size=2), seqjax.GRU(3)], dropout=0.1),
    seqjax.stack([seqjax.bidirectional(seqjax.LSTM(4), merge="sum")] * 2, residual=True),
    seqjax.bidirectional(seqjax.GRU(4), backward=seqjax.SimpleRNN(2)),
    zoneout(variational_dropout(weight_drop(seqjax.LSTM(4), rate=0.1), input_rate=0.1), h_rate=0.1),
]


@pytest.mark.parametrize("cell", ALL_CELLS, ids=lambda c: _params.describe(c)[:60])
def test_own_params_pass_in_any_dtype(cell):
    params = init(cell)
    _params.check_params(cell, params)
    _params.check_params(cell, jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))
    _params.check_params(cell, init(cell, 7))  # any input size
    _params.check_params(
        cell, jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    )


def test_check_adds_nothing_to_the_computation():
    cell = seqjax.stack([seqjax.LSTM(4, peephole=True)] * 2)
    params = init(cell)
    jaxpr = jax.make_jaxpr(lambda p: (_params.check_params(cell, p), p)[1])(params)
    assert not jaxpr.eqns
    other = init(seqjax.stack([seqjax.LSTM(4)] * 2))
    with pytest.raises(ValueError, match="layer 0 of Stack"):  # raised while tracing
        jax.make_jaxpr(lambda p: _params.check_params(cell, p))(other)


def test_results_are_cached(monkeypatch):
    cell = seqjax.LSTM(5, forget_bias=0.5)  # used by no other test: not cached yet
    params = init(cell)
    calls = []
    real = _params._verify
    monkeypatch.setattr(_params, "_verify", lambda c, p: (calls.append(c), real(c, p)))
    for _ in range(3):
        _params.check_params(cell, params)
        _params.check_params(seqjax.LSTM(5, forget_bias=0.5), params)  # equal, another object
    assert len(calls) == 1


def test_a_new_cell_is_checked_without_code_of_its_own():
    """The reference is the cell's own init, so any cell that follows the contract is checked."""

    @dataclasses.dataclass(frozen=True)
    class Leaky(seqjax.Cell):
        hidden_size: int
        gated: bool = False

        @property
        def output_size(self):
            return self.hidden_size

        def init(self, key, input_size):
            w = jnp.zeros((input_size, self.hidden_size))
            return {"w": w, "gate": jnp.zeros((self.hidden_size,))} if self.gated else {"w": w}

        def initial_carry(self, batch_shape=(), dtype=jnp.float32):
            return jnp.zeros(tuple(batch_shape) + (self.hidden_size,), dtype)

        def input_size_of(self, params):
            return params["w"].shape[0]

        def project_inputs(self, params, xs):
            return xs @ params["w"]

        def step(self, params, carry, xp):
            h = 0.5 * carry + xp
            return h, h

    cell = Leaky(4)
    _params.check_params(cell, init(cell))
    with pytest.raises(TypeError, match=r"params has keys \['gate', 'w'\], expected \['w'\]"):
        _params.check_params(cell, init(Leaky(4, gated=True)))
    with pytest.raises(
        ValueError, match=r"w has shape \(3, 5\), expected \(3, 4\) for Leaky\(hidden_size=4\)"
    ):
        cell(init(Leaky(5)), cell.initial_carry((2,)), jnp.ones((2, 3)))


def test_fields_filled_after_init_are_not_compared():
    """An attention decoder's memory is bound into its parameters after init (runtime_fields)."""
    from seqjax.attention_decoder import AttentionDecoder

    dec = AttentionDecoder(seqjax.LSTM(4), memory_size=6)
    params = init(dec)
    bound = dec.bind(params, jnp.ones((2, 5, 6)), lengths=jnp.array([5, 3]))
    _params.check_params(dec, params)
    _params.check_params(dec, bound)
    # Its wrapped cell's parameters are checked like any others, and named as such.
    other = init(AttentionDecoder(seqjax.LSTM(4, peephole=True), memory_size=6))
    with pytest.raises(ValueError, match=r"^cell of AttentionDecoder: LSTM\(hidden_size=4\) got "):
        _params.check_params(dec, other)
