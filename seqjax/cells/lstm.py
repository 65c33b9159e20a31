"""The LSTM cell and its family: peepholes, CIFG, LSTMP, the Greff et al. ablations, LN-LSTM.

(A little over 450 lines: every option is a flag of one cell, and ``lstm_pointwise``, the gate
math the fused kernel shares, lives beside the step that defines it.)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import _checks
from seqjax.cells.base import (
    Cell,
    affine,
    concat_init,
    glorot_uniform,
    matmul,
    orthogonal,
    sigmoid,
)
from seqjax.typing import Array, DType, PRNGKey, Shape

Initializer = Callable[..., Array]

_LN_EPS = 1e-5


class LSTMParams(NamedTuple):
    """Parameters of :class:`LSTM`. Absent options leave their field ``None``.

    Gate blocks are fused along the last axis in PyTorch's order ``i, f, g, o`` with the absent
    gates left out (see :attr:`LSTM.gate_layout`); ``G`` is the number of blocks.

    Attributes:
      w_ih: input weights ``[I, G*H]``.
      w_hh: recurrent weights ``[R, G*H]``; ``R = P`` with a projection, else ``H``.
      b: bias ``[G*H]`` (PyTorch's ``b_ih + b_hh``), or None with ``use_bias=False``.
      w_peephole: diagonal peephole weights ``[S, H]``, one row per sigmoid gate in order
        ``i, f, o`` (those present).
      w_proj: recurrent projection ``[H, P]`` (LSTMP).
      w_gates: full gate recurrence ``[S*H, S*H]`` from the previous sigmoid gate activations
        to the current sigmoid gate pre-activations (Greff et al.'s FGR).
      ln_ih_scale: layer-norm gains ``[G, H]`` on the input pre-activations.
      ln_hh_scale: layer-norm gains ``[G, H]`` on the recurrent pre-activations.
      ln_c_scale: layer-norm gain ``[H]`` on the cell state before the output activation.
      ln_c_bias: layer-norm bias ``[H]`` on the cell state.
    """

    w_ih: Array
    w_hh: Array
    b: Array | None = None
    w_peephole: Array | None = None
    w_proj: Array | None = None
    w_gates: Array | None = None
    ln_ih_scale: Array | None = None
    ln_hh_scale: Array | None = None
    ln_c_scale: Array | None = None
    ln_c_bias: Array | None = None


class LSTMCarry(NamedTuple):
    """Carry of :class:`LSTM`: unpacks as ``h, c = carry``.

    Attributes:
      h: the output/recurrent state ``[*B, R]`` (the projection ``r_t`` for an LSTMP, like
        PyTorch's ``h_n`` with ``proj_size``).
      c: the cell state ``[*B, H]``.
    """

    h: Array
    c: Array


class LSTMGatesCarry(NamedTuple):
    """Carry of an :class:`LSTM` with ``full_gate_recurrence=True`` (FGR), which also needs
    the previous step's gate activations.

    Attributes:
      h: the output/recurrent state ``[*B, R]``.
      c: the cell state ``[*B, H]``.
      gates: previous sigmoid gate activations ``[*B, S*H]``, blocks in the order of
        :attr:`LSTM.sigmoid_gates`.
    """

    h: Array
    c: Array
    gates: Array


class LSTMPointwise(NamedTuple):
    """Result of ``lstm_pointwise``: the new cell state, the output before the projection,
    and the sigmoid gate activations (None for an absent gate; ``i`` is ``1 - f`` when coupled).
    """

    c: Array
    h: Array
    i: Array | None
    f: Array | None
    o: Array | None


# Greff et al. (2017), "LSTM: A Search Space Odyssey", Table 1: the vanilla LSTM has peepholes.
GREFF_VARIANTS: dict[str, dict[str, Any]] = {
    "V": dict(peephole=True),
    "NIG": dict(peephole=True, input_gate=False),
    "NFG": dict(peephole=True, forget_gate=False),
    "NOG": dict(peephole=True, output_gate=False),
    "NIAF": dict(peephole=True, input_activation=False),
    "NOAF": dict(peephole=True, output_activation=False),
    "NP": dict(peephole=False),
    "CIFG": dict(peephole=True, coupled=True),
    "FGR": dict(peephole=True, full_gate_recurrence=True),
}


@dataclasses.dataclass(frozen=True)
class LSTM(Cell):
    r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997; Gers et al. 2000).

    .. math::

        a_t &= W x_t + U h_{t-1} + b
            \quad\text{(fused blocks } a^i, a^f, a^g, a^o\text{)} \\
        f_t &= \sigma(a^f_t + p_f \odot c_{t-1}) \\
        i_t &= \sigma(a^i_t + p_i \odot c_{t-1})
            \quad\text{or } 1 - f_t \text{ (coupled, CIFG)} \\
        g_t &= \tanh(a^g_t) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        o_t &= \sigma(a^o_t + p_o \odot c_t) \\
        h_t &= o_t \odot \tanh(c_t) \\
        r_t &= W_r h_t \quad\text{(LSTMP: } r_t \text{ is the output and the recurrent input)}

    Peephole terms ``p`` (Gers & Schmidhuber 2000, diagonal) appear only with
    ``peephole=True``: the input and forget gates see ``c_{t-1}``, the output gate sees ``c_t``.

    Options (each of Greff et al.'s variants is one flag, see :meth:`variant`):

    - ``hidden_size=H``: units of the cell state ``c``.
    - ``proj_size=P``: LSTMP (Sak et al. 2014); the output and recurrent state is ``r_t``.
    - ``peephole=True``: the peephole terms above.
    - ``coupled=True`` (CIFG): ``i = 1 - f``, no input-gate parameters.
    - ``input_gate=False`` (NIG): ``i = 1``. ``forget_gate=False`` (NFG): ``f = 1``.
      ``output_gate=False`` (NOG): ``o = 1``.
    - ``input_activation=False`` (NIAF): ``g = a^g``. ``output_activation=False`` (NOAF):
      ``h = o * c``.
    - ``full_gate_recurrence=True`` (FGR): the sigmoid gates also receive the previous step's
      gate activations through ``w_gates``; the carry is then an :class:`LSTMGatesCarry`
      ``(h, c, gates)`` instead of :class:`LSTMCarry` ``(h, c)``.
    - ``cell_clip=v``: ``c_t`` clipped to ``[-v, v]`` after the update (as in Sak et al.).
    - ``layer_norm=True``: per-gate layer normalisation of the input and recurrent
      pre-activations, and of ``c_t`` before the output activation (Ba et al. 2016).
    - ``forget_bias`` (initial forget-gate bias, default 1.0, Jozefowicz et al. 2015),
      ``use_bias``; ``dtype``: matmul dtype (None: the parameters'), with pre-activations
      accumulated in float32 and the carry keeping its dtype; ``param_dtype``;
      ``kernel_init``, ``recurrent_init``: initializers of each gate block (default
      Glorot-uniform and orthogonal).

    Shapes (``R = P`` with a projection, else ``H``; ``G`` gate blocks, 4 for a full LSTM):
    ``x [*B, I]`` gives ``y [*B, R]``; the carry is ``h [*B, R]``, ``c [*B, H]``; the
    parameters are :class:`LSTMParams` ``w_ih [I, G*H]``, ``w_hh [R, G*H]``, ``b [G*H]`` plus
    the fields of the options in use. ``docs/cells.md`` lists every shape, the gate layout and
    the PyTorch, Keras and Flax parameter mappings (:func:`seqjax.interop.from_torch` converts
    PyTorch modules).

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.LSTM(hidden_size=8, peephole=True)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> carry, y = cell(params, cell.initial_carry((2,)), jnp.ones((2, 3)))
      >>> y.shape, carry.c.shape
      ((2, 8), (2, 8))
    """

    hidden_size: int
    proj_size: int | None = None
    peephole: bool = False
    coupled: bool = False
    input_gate: bool = True
    forget_gate: bool = True
    output_gate: bool = True
    input_activation: bool = True
    output_activation: bool = True
    full_gate_recurrence: bool = False
    cell_clip: float | None = None
    layer_norm: bool = False
    forget_bias: float = 1.0
    use_bias: bool = True
    dtype: DType | None = None
    param_dtype: DType = jnp.float32
    kernel_init: Initializer = dataclasses.field(default=glorot_uniform, repr=False)
    recurrent_init: Initializer = dataclasses.field(default=orthogonal, repr=False)

    def __post_init__(self):
        _checks.positive_int("LSTM.hidden_size", self.hidden_size)
        _checks.positive_int("LSTM.proj_size", self.proj_size, allow_none=True)
        _checks.non_negative_float("LSTM.cell_clip", self.cell_clip, allow_none=True)
        if self.cell_clip is not None and self.cell_clip == 0:
            raise ValueError("LSTM.cell_clip must be > 0 (or None for no clipping), got 0")
        if self.coupled and not self.forget_gate:
            raise ValueError(
                "LSTM: coupled=True (i = 1 - f) needs the forget gate; got forget_gate=False"
            )
        if self.coupled and not self.input_gate:
            raise ValueError(
                "LSTM: coupled=True already replaces the input gate by 1 - f; "
                "input_gate=False contradicts it"
            )
        for flag in (
            "peephole",
            "coupled",
            "input_gate",
            "forget_gate",
            "output_gate",
            "input_activation",
            "output_activation",
            "full_gate_recurrence",
            "layer_norm",
            "use_bias",
        ):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"LSTM.{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.full_gate_recurrence and not self.sigmoid_gates:
            raise ValueError("LSTM: full_gate_recurrence needs at least one sigmoid gate")

    @classmethod
    def variant(cls, name: str, hidden_size: int, **kwargs: Any) -> LSTM:
        """Greff et al. (2017) variant by name: V, NIG, NFG, NOG, NIAF, NOAF, NP, CIFG, FGR.

        Args:
          name: the variant's abbreviation from the paper (V is the vanilla, peephole LSTM).
          hidden_size: ``H``.
          **kwargs: other hyperparameters (e.g. ``forget_bias``).

        Returns:
          The cell definition.
        """
        key = name.upper()
        if key not in GREFF_VARIANTS:
            raise ValueError(
                f"unknown LSTM variant {name!r}; expected one of {sorted(GREFF_VARIANTS)}"
            )
        return cls(hidden_size=hidden_size, **{**GREFF_VARIANTS[key], **kwargs})

    # -- layout -----------------------------------------------------------------------------
    @property
    def sigmoid_gates(self) -> tuple[str, ...]:
        """Sigmoid gates that have parameters, in order ``i, f, o``."""
        gates = []
        if self.input_gate and not self.coupled:
            gates.append("i")
        if self.forget_gate:
            gates.append("f")
        if self.output_gate:
            gates.append("o")
        return tuple(gates)

    @property
    def gate_layout(self) -> tuple[str, ...]:
        """Blocks of the fused gate matrices, in PyTorch's order ``i, f, g, o``."""
        return tuple(g for g in "ifgo" if g == "g" or g in self.sigmoid_gates)

    @property
    def recurrent_size(self) -> int:
        """``R``: size of the recurrent state ``h`` (``P`` for an LSTMP, else ``H``)."""
        return self.proj_size if self.proj_size is not None else self.hidden_size

    @property
    def output_size(self) -> int:
        return self.recurrent_size

    # -- contract ---------------------------------------------------------------------------
    def init(self, key: PRNGKey, input_size: int) -> LSTMParams:
        """Creates :class:`LSTMParams` for ``input_size`` input features (see the class doc)."""
        _checks.positive_int("input_size", input_size)
        H, R, G, S = (
            self.hidden_size,
            self.recurrent_size,
            len(self.gate_layout),
            len(self.sigmoid_gates),
        )
        pdt = self.param_dtype
        k_ih, k_hh, k_proj, k_gates = jax.random.split(key, 4)
        fields: dict[str, Array] = dict(
            w_ih=concat_init(self.kernel_init, k_ih, (input_size, H), G, pdt),
            w_hh=concat_init(self.recurrent_init, k_hh, (R, H), G, pdt),
        )
        if self.use_bias:
            b = jnp.zeros((G, H), pdt)
            if "f" in self.gate_layout:
                b = b.at[self.gate_layout.index("f")].set(self.forget_bias)
            fields["b"] = b.reshape(G * H)
        if self.peephole and S:
            fields["w_peephole"] = jnp.zeros((S, H), pdt)
        if self.proj_size is not None:
            fields["w_proj"] = self.kernel_init(k_proj, (H, self.proj_size), pdt)
        if self.full_gate_recurrence:
            fields["w_gates"] = concat_init(self.recurrent_init, k_gates, (S * H, H), S, pdt)
        if self.layer_norm:
            fields["ln_ih_scale"] = jnp.ones((G, H), pdt)
            fields["ln_hh_scale"] = jnp.ones((G, H), pdt)
            fields["ln_c_scale"] = jnp.ones((H,), pdt)
            fields["ln_c_bias"] = jnp.zeros((H,), pdt)
        return LSTMParams(**fields)

    def initial_carry(
        self, batch_shape: Shape = (), dtype: DType = jnp.float32
    ) -> LSTMCarry | LSTMGatesCarry:
        """Zeros: ``LSTMCarry(h [*B, R], c [*B, H])``; with ``full_gate_recurrence``
        ``LSTMGatesCarry(h, c, gates [*B, S*H])``."""
        batch_shape = tuple(batch_shape)
        h = jnp.zeros(batch_shape + (self.recurrent_size,), dtype)
        c = jnp.zeros(batch_shape + (self.hidden_size,), dtype)
        if self.full_gate_recurrence:
            S = len(self.sigmoid_gates)
            return LSTMGatesCarry(
                h=h, c=c, gates=jnp.zeros(batch_shape + (S * self.hidden_size,), dtype)
            )
        return LSTMCarry(h=h, c=c)

    def input_size_of(self, params: LSTMParams) -> int:
        return params.w_ih.shape[0]

    def project_inputs(self, params: LSTMParams, xs: Array) -> Array:
        """``W x (+ b)`` for all leading dims at once: ``[..., I] -> [..., G*H]``."""
        if not self.layer_norm:
            return affine(xs, params.w_ih, params.b, self.dtype)
        a = _block_layer_norm(
            affine(xs, params.w_ih, None, self.dtype),
            _needed(params.ln_ih_scale, "ln_ih_scale", "layer_norm=True"),
        )
        return a if params.b is None else a + params.b.astype(a.dtype)

    def step(
        self, params: LSTMParams, carry: LSTMCarry | LSTMGatesCarry, xp: Array
    ) -> tuple[LSTMCarry | LSTMGatesCarry, Array]:
        """One LSTM step from the projected input ``xp [*B, G*H]``; returns ``(carry, h)``."""
        H = self.hidden_size
        acc = xp.dtype
        # the previous gate activations, present exactly with full_gate_recurrence
        prev_gates = _previous_gates(carry) if self.full_gate_recurrence else None
        rec = matmul(carry.h, params.w_hh, self.dtype, acc)
        if self.layer_norm:
            rec = _block_layer_norm(
                rec, _needed(params.ln_hh_scale, "ln_hh_scale", "layer_norm=True")
            )
        a = xp + rec
        if prev_gates is not None:
            w_gates = _needed(params.w_gates, "w_gates", "full_gate_recurrence=True")
            extra = matmul(prev_gates, w_gates, self.dtype, acc)
            for k, name in enumerate(self.sigmoid_gates):
                col = self.gate_layout.index(name) * H
                a = a.at[..., col : col + H].add(extra[..., k * H : (k + 1) * H])
        c_norm = None
        if self.layer_norm:
            c_norm = functools.partial(
                _layer_norm,
                scale=_needed(params.ln_c_scale, "ln_c_scale", "layer_norm=True"),
                bias=params.ln_c_bias,
            )
        out = lstm_pointwise(self, a, carry.c.astype(acc), params.w_peephole, c_norm=c_norm)
        h = out.h
        if params.w_proj is not None:
            h = matmul(h, params.w_proj, self.dtype, acc)
        h, c = h.astype(carry.h.dtype), out.c.astype(carry.c.dtype)
        if prev_gates is not None:
            # every gate in sigmoid_gates has an activation (absent gates are None)
            acts = {
                n: v for n, v in zip("ifo", (out.i, out.f, out.o), strict=True) if v is not None
            }
            gates = jnp.concatenate([acts[n] for n in self.sigmoid_gates], axis=-1)
            return LSTMGatesCarry(h=h, c=c, gates=gates.astype(prev_gates.dtype)), h
        return LSTMCarry(h=h, c=c), h


def lstm_pointwise(
    cell: LSTM,
    a: Array,
    c_prev: Array,
    w_peephole: Array | None = None,
    *,
    activated: bool = False,
    c_norm: Callable[[Array], Array] | None = None,
) -> LSTMPointwise:
    """The elementwise part of an LSTM step (everything after the gate matmuls).

    The one implementation of the gate equations in the class docstring: :meth:`LSTM.step` and
    the fused kernel (``seqjax/kernels/fused_specs.py``) both call it.

    Args:
      cell: the LSTM definition (gate layout and options).
      a: gate pre-activations ``[..., G*H]``, blocks in :attr:`LSTM.gate_layout` order; with
        ``activated=True`` the gate activations instead (sigmoid gates and candidate already
        applied, which is only possible without peepholes).
      c_prev: previous cell state ``[..., H]``, in ``a``'s dtype.
      w_peephole: peephole weights ``[S, H]`` or None.
      activated: ``a`` holds activations (see above).
      c_norm: a normalisation of ``c_t`` before the output activation (layer norm), or None.

    Returns:
      ``LSTMPointwise(c, h, i, f, o)`` with ``h`` before the LSTMP projection.
    """
    H = cell.hidden_size
    blocks = {name: a[..., k * H : (k + 1) * H] for k, name in enumerate(cell.gate_layout)}
    if activated and w_peephole is not None:
        raise ValueError("activated gates cannot take peepholes (they depend on c)")
    peep = {}
    if w_peephole is not None:
        peep = {n: w_peephole[k].astype(a.dtype) for k, n in enumerate(cell.sigmoid_gates)}

    def gate(name, c_seen):
        if activated:
            return blocks[name]
        pre = blocks[name]
        if name in peep:
            pre = pre + peep[name] * c_seen
        return sigmoid(pre)

    f = gate("f", c_prev) if cell.forget_gate else None
    if cell.coupled:
        assert f is not None  # LSTM.__post_init__: coupled=True needs the forget gate
        i = 1.0 - f
    elif cell.input_gate:
        i = gate("i", c_prev)
    else:
        i = None
    g = blocks["g"]
    if cell.input_activation and not activated:
        g = jnp.tanh(g)
    c = (c_prev if f is None else f * c_prev) + (g if i is None else i * g)
    if cell.cell_clip is not None:
        c = jnp.clip(c, -cell.cell_clip, cell.cell_clip)
    o = gate("o", c) if cell.output_gate else None
    c_out = c if c_norm is None else c_norm(c)
    h = jnp.tanh(c_out) if cell.output_activation else c_out
    if o is not None:
        h = o * h
    return LSTMPointwise(c=c, h=h, i=i, f=f, o=o)


def _needed(value: Array | None, field: str, option: str) -> Array:
    """``value``, a parameter field that the cell's ``option`` needs; ValueError when absent."""
    if value is None:
        raise ValueError(
            f"LSTM with {option} needs params.{field}, got None (parameters made by "
            "another LSTM definition?)"
        )
    return value


def _previous_gates(carry: LSTMCarry | LSTMGatesCarry) -> Array:
    """The ``gates`` of the carry of an LSTM with ``full_gate_recurrence=True``."""
    if not isinstance(carry, LSTMGatesCarry):
        raise TypeError(
            "LSTM with full_gate_recurrence=True needs an LSTMGatesCarry (h, c, gates) "
            f"from its initial_carry, got {type(carry).__name__}"
        )
    return carry.gates


def _layer_norm(x: Array, scale: Array, bias: Array | None = None) -> Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + _LN_EPS) * scale.astype(x.dtype)
    return y if bias is None else y + bias.astype(x.dtype)


def _block_layer_norm(a: Array, scale_GH: Array) -> Array:
    """Layer norm of each ``H``-block of ``a [..., G*H]`` separately, gains ``[G, H]``."""
    G, H = scale_GH.shape
    blocks = a.reshape(a.shape[:-1] + (G, H))
    return _layer_norm(blocks, scale_GH).reshape(a.shape)
