"""An attentional decoder cell: any seqjax cell or stack with attention over a bound memory.

**Design: the memory is bound into the parameters.** ``decoder.bind(params, memory, lengths)``
returns the parameters with an :class:`~seqjax.attention.AttentionMemory` attached (keys
precomputed once, mask included), so the decoder stays a hashable, array-free definition and a
bound decoder is an ordinary ``(cell, params)`` pair: :func:`seqjax.scan` runs it for
teacher-forced training, ``decoder(params, carry, x)`` steps it one token at a time for decoding
(:func:`seqjax.decode.beam_search`), and gradients reach the memory (hence the encoder) through
the parameters. Keeping the memory out of the carry matters: a carry is saved at every step for
the backward pass, parameters only once. Bind inside the loss function, so that an optimizer
only sees the unbound parameters.

The attention weights come from :func:`scan_with_weights` (teacher forcing) or
:meth:`AttentionDecoder.step_with_weights` (one step), not from the cell's output, whose size
must not depend on the memory length. The scores themselves live in :mod:`seqjax.attention`.

From Flax, the whole-sequence adapters bind the memory at each call:
``seqjax.flax.linen.RNN(dec)(xs, bind_params=lambda p: dec.bind(p, memory, lengths))``, and
likewise ``seqjax.flax.nnx.RNN``. Or declare the parameters in the module (linen:
``p = self.param("decoder", lambda k: dec.init(k, I))``) and call
``seqjax.scan(dec, dec.bind(p, memory, lengths), xs)``. A decoder steps its wrapped cell, so
dropout configured inside it (``seqjax.stack(..., dropout=...)``) is not applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import _checks
from seqjax.attention import SCORES, Attention, AttentionMemory, AttentionParams
from seqjax.cells.base import Cell, glorot_uniform
from seqjax.combinators import Bidirectional
from seqjax.scan import scan
from seqjax.typing import Array, DType, PRNGKey, PyTree, Shape

__all__ = [
    "AttentionDecoder",
    "AttentionDecoderCarry",
    "AttentionDecoderParams",
    "scan_with_weights",
]

STYLES = ("luong", "bahdanau")


def _input_size_of(cell: Cell, params: PyTree) -> int:
    # The contract's accessor is input_size_of; cells written against its former name
    # (input_size) still work.
    method = getattr(cell, "input_size_of", None) or getattr(cell, "input_size")  # noqa: B009
    return method(params)


class AttentionDecoderParams(NamedTuple):
    """Parameters of :class:`AttentionDecoder`.

    Attributes:
      cell: the wrapped cell's parameters.
      attention: :class:`~seqjax.attention.AttentionParams`.
      w_out: Luong's attentional layer ``W_c [M + H, D]`` (``h~ = tanh(W_c [c; h])``); None
        in Bahdanau style.
      w_gate: gating scalar weights ``[Q]`` (Xu et al.'s ``f_beta``), or None.
      b_gate: gating scalar bias ``[]``, or None.
      memory: the bound :class:`~seqjax.attention.AttentionMemory` (None until
        :meth:`AttentionDecoder.bind`).
    """

    cell: PyTree
    attention: AttentionParams
    w_out: Array | None = None
    w_gate: Array | None = None
    b_gate: Array | None = None
    memory: AttentionMemory | None = None

    # Set by bind, not by init: the parameter check of seqjax.scan does not compare it.
    runtime_fields = ("memory",)


class AttentionDecoderCarry(NamedTuple):
    """Carry of :class:`AttentionDecoder`.

    Attributes:
      cell: the wrapped cell's carry.
      output: the previous step's output that feeds back: Luong's attentional vector
        ``h~_{t-1} [*B, D]`` (input feeding), or in Bahdanau style the cell's previous output
        ``h_{t-1} [*B, H]`` (the query). Zeros at the start unless set by
        :meth:`AttentionDecoder.start`.
    """

    cell: PyTree
    output: Array


def _has_bidirectional(cell: Cell) -> bool:
    if isinstance(cell, Bidirectional):
        return True
    if dataclasses.is_dataclass(cell):
        for f in dataclasses.fields(cell):
            value = getattr(cell, f.name)
            for sub in value if isinstance(value, tuple) else (value,):
                if isinstance(sub, Cell) and _has_bidirectional(sub):
                    return True
    return False


@dataclasses.dataclass(frozen=True)
class AttentionDecoder(Cell):
    """A cell with attention over a bound memory, wrapping any steppable seqjax cell or stack.

    With ``style="luong"`` (Luong et al. 2015, "global attention"), one step reads
    ``x_t`` (joined by the previous attentional vector when ``input_feeding``), runs the cell,
    attends with its output ``h_t`` and returns the attentional vector:

    .. math::

        h_t = \\text{cell}([x_t; \\tilde h_{t-1}]), \\quad (c_t, a_t) = \\text{attend}(h_t),
        \\quad \\tilde h_t = \\tanh(W_c [c_t; h_t]).

    With ``style="bahdanau"`` (Bahdanau et al. 2015; Xu et al. 2015's "Show, Attend and Tell"),
    the query is the cell's previous output, the context joins the input, and the output is
    ``[h_t; c_t]`` for a deep-output readout:

    .. math::

        (c_t, a_t) = \\text{attend}(h_{t-1}), \\quad h_t = \\text{cell}([x_t; c_t]),
        \\quad y_t = [h_t; c_t].

    ``gate=True`` scales the context by Xu et al.'s gating scalar
    ``beta = sigmoid(w_gate . q + b_gate)`` of the query ``q``. The memory is bound with
    :meth:`bind` (see the module docstring for why it lives in the parameters).

    Attributes:
      cell: the wrapped cell (any steppable seqjax cell or stack; not bidirectional).
      memory_size: ``M``, features per memory position.
      attention: score, ``"additive"``, ``"dot"`` or ``"general"`` (see
        :class:`~seqjax.attention.Attention`).
      attention_size: ``A`` of the additive score (default: the query size ``H``).
      style: ``"luong"`` or ``"bahdanau"``.
      input_feeding: Luong's input feeding (the previous attentional vector joins the input).
        Bahdanau style always feeds the context, so it requires True.
      attentional_size: ``D``, size of Luong's attentional vector (default ``H``).
      gate: Xu et al.'s gating scalar on the context.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.attention_decoder import AttentionDecoder
      >>> dec = AttentionDecoder(seqjax.LSTM(8), memory_size=6, attention="general")
      >>> params = dec.init(jax.random.key(0), input_size=4)
      >>> memory = jnp.ones((2, 5, 6))                               # [B, S, M]
      >>> bound = dec.bind(params, memory, lengths=jnp.array([5, 3]))
      >>> final, ys = seqjax.scan(dec, bound, jnp.ones((2, 7, 4)))   # teacher forcing
      >>> ys.shape, final.output.shape
      ((2, 7, 8), (2, 8))
    """

    cell: Cell
    memory_size: int
    attention: str = "additive"
    attention_size: int | None = None
    style: str = "luong"
    input_feeding: bool = True
    attentional_size: int | None = None
    gate: bool = False

    def __post_init__(self):
        if not isinstance(self.cell, Cell):
            raise TypeError(
                f"AttentionDecoder.cell must be a seqjax cell, got {type(self.cell).__name__}"
            )
        if _has_bidirectional(self.cell):
            raise TypeError(
                "AttentionDecoder steps one token at a time; a bidirectional cell needs the whole "
                "sequence (use it in the encoder)"
            )
        _checks.positive_int("AttentionDecoder.memory_size", self.memory_size)
        _checks.one_of("AttentionDecoder.attention", self.attention, SCORES)
        _checks.one_of("AttentionDecoder.style", self.style, STYLES)
        for name in ("attention_size", "attentional_size"):
            _checks.positive_int(f"AttentionDecoder.{name}", getattr(self, name), allow_none=True)
        for name in ("input_feeding", "gate"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"AttentionDecoder.{name} must be a bool")
        if self.attention != "additive" and self.attention_size is not None:
            raise ValueError(
                f"attention_size sets the additive score's size; {self.attention!r} has none"
            )
        if self.style == "bahdanau":
            if not self.input_feeding:
                raise ValueError(
                    "style='bahdanau' always feeds the context into the cell; input_feeding=False "
                    "is a Luong-style option"
                )
            if self.attentional_size is not None:
                raise ValueError("attentional_size is Luong's W_c size; style='bahdanau' has none")
        if self.attention == "dot" and self.cell.output_size != self.memory_size:
            raise ValueError(
                f"dot attention needs the cell's output size ({self.cell.output_size}) to equal "
                f"memory_size ({self.memory_size}); use 'general' or 'additive'"
            )

    @property
    def attention_layer(self) -> Attention:
        """The :class:`~seqjax.attention.Attention` score this decoder uses."""
        additive = self.attention == "additive"
        return Attention(
            self.attention, self.attention_size or self.cell.output_size if additive else None
        )

    @property
    def output_size(self) -> int:
        """``D`` (Luong) or ``H + M`` (Bahdanau)."""
        if self.style == "bahdanau":
            return self.cell.output_size + self.memory_size
        return self.attentional_size or self.cell.output_size

    @property
    def _fed_size(self) -> int:
        """Features joined to each input: ``D`` (input feeding), ``M`` (Bahdanau) or 0."""
        luong = self.output_size if self.input_feeding else 0
        return self.memory_size if self.style == "bahdanau" else luong

    def _carried_size(self) -> int:
        return self.cell.output_size if self.style == "bahdanau" else self.output_size

    def init(self, key: PRNGKey, input_size: int) -> AttentionDecoderParams:
        """Creates unbound :class:`AttentionDecoderParams` for inputs of ``input_size`` features.

        Args:
          key: a ``jax.random`` key.
          input_size: ``I``, features of each decoder input (e.g. a target embedding).

        Returns:
          :class:`AttentionDecoderParams` with ``memory=None``; :meth:`bind` a memory to run.
        """
        _checks.positive_int("input_size", input_size)
        k_cell, k_att, k_out, k_gate = jax.random.split(key, 4)
        H = self.cell.output_size
        cell_params = self.cell.init(k_cell, input_size + self._fed_size)
        att = self.attention_layer.init(k_att, H, self.memory_size)
        w_out = None
        if self.style == "luong":
            w_out = glorot_uniform(k_out, (self.memory_size + H, self.output_size), jnp.float32)
        w_gate = b_gate = None
        if self.gate:
            w_gate = glorot_uniform(k_gate, (H, 1), jnp.float32)[:, 0]
            b_gate = jnp.zeros((), jnp.float32)
        return AttentionDecoderParams(cell_params, att, w_out, w_gate, b_gate)

    def initial_carry(
        self, batch_shape: Shape = (), dtype: DType = jnp.float32
    ) -> AttentionDecoderCarry:
        """The cell's zero carry and a zero fed-back output ``[*B, D]`` (``[*B, H]`` Bahdanau)."""
        return AttentionDecoderCarry(
            cell=self.cell.initial_carry(batch_shape, dtype),
            output=jnp.zeros(tuple(batch_shape) + (self._carried_size(),), dtype),
        )

    def start(self, cell_carry: PyTree, output: Array | None = None) -> AttentionDecoderCarry:
        """A decoder carry from the wrapped cell's carry (e.g. a bridge from the encoder).

        Args:
          cell_carry: the wrapped cell's carry, leaves ``[*B, n]``.
          output: the fed-back output to start from (``[*B, D]``; in Bahdanau style the first
            query ``[*B, H]``, e.g. the bridged top hidden state); default zeros.

        Returns:
          :class:`AttentionDecoderCarry`.

        Raises:
          ValueError: ``output`` of another shape.
        """
        leaf = jax.tree_util.tree_leaves(cell_carry)[0]
        shape = tuple(leaf.shape[:-1]) + (self._carried_size(),)
        if output is None:
            output = jnp.zeros(shape, leaf.dtype)
        elif tuple(output.shape) != shape:
            raise ValueError(f"output must have shape {shape}, got {tuple(output.shape)}")
        return AttentionDecoderCarry(cell=cell_carry, output=output)

    def input_size_of(self, params: AttentionDecoderParams) -> int:
        """The ``I`` that ``params`` were created for."""
        return _input_size_of(self.cell, params.cell) - self._fed_size

    input_size = input_size_of  # the accessor's former name

    def bind(
        self,
        params: AttentionDecoderParams,
        memory: Array,
        lengths: Array | None = None,
        *,
        mask: Array | None = None,
    ) -> AttentionDecoderParams:
        """Attaches a memory to the parameters (keys precomputed once).

        Args:
          params: from :meth:`init` (bound or not: a new memory replaces the old one).
          memory: ``[*B, S, M]``, e.g. encoder outputs.
          lengths: integer ``[*B]`` valid lengths of the memory.
          mask: boolean ``[*B, S]``, instead of ``lengths``.

        Returns:
          The parameters with ``memory`` set; run them with :func:`seqjax.scan` or step them.

        Raises:
          TypeError, ValueError: bad parameters, memory, lengths or mask.
        """
        if not isinstance(params, AttentionDecoderParams):
            raise TypeError(
                f"bind expects AttentionDecoderParams (from AttentionDecoder.init), got "
                f"{type(params).__name__}"
            )
        memory = _checks.array_like("memory", memory)
        _checks.feature_size("memory", memory, self.memory_size)
        mem = self.attention_layer.precompute(params.attention, memory, lengths, mask=mask)
        return params._replace(memory=mem)

    def project_inputs(self, params: AttentionDecoderParams, xs: Array) -> Array:
        """Hoists the cell's input projection when nothing is fed back (else the identity)."""
        if self._fed_size == 0:
            return self.cell.project_inputs(params.cell, xs)
        return xs

    def step(
        self, params: AttentionDecoderParams, carry: AttentionDecoderCarry, xp: Array
    ) -> tuple[AttentionDecoderCarry, Array]:
        carry, y, _ = self._step(params, carry, xp)
        return carry, y

    def step_with_weights(
        self, params: AttentionDecoderParams, carry: AttentionDecoderCarry, x: Array
    ) -> tuple[AttentionDecoderCarry, Array, Array]:
        """One step that also returns the attention weights.

        Args:
          params: bound parameters (see :meth:`bind`), memory ``[*B, S, M]``.
          carry: :class:`AttentionDecoderCarry`, leaves ``[*B, n]``.
          x: the input ``[*B, I]``.

        Returns:
          ``(carry, y [*B, output_size], weights [*B, S])``.

        Raises:
          ValueError, TypeError: as ``__call__``; unbound parameters.
        """
        x = self.check_step_input(params, carry, x)
        return self._step(params, carry, self.project_inputs(params, x))

    def _beta(self, params: AttentionDecoderParams, query: Array) -> Array:
        if params.w_gate is None or params.b_gate is None:
            raise ValueError("gate=True needs w_gate and b_gate in the parameters (init them)")
        logit = query @ params.w_gate.astype(query.dtype) + params.b_gate.astype(query.dtype)
        return jax.nn.sigmoid(logit)[..., None]

    def _step(self, params, carry, xp):
        mem = params.memory
        if mem is None:
            raise ValueError(
                "the AttentionDecoder parameters have no memory; call "
                "decoder.bind(params, memory, lengths) first"
            )
        att = self.attention_layer
        if self.style == "bahdanau":
            query = carry.output
            context, weights = att(params.attention, mem, query)
            if self.gate:
                context = self._beta(params, query).astype(context.dtype) * context
            x_in = jnp.concatenate([xp, context.astype(xp.dtype)], axis=-1)
            xp = self.cell.project_inputs(params.cell, x_in)
            cell_carry, h = self.cell.step(params.cell, carry.cell, xp)
            y = jnp.concatenate([h, context.astype(h.dtype)], axis=-1)
            return AttentionDecoderCarry(cell_carry, h.astype(carry.output.dtype)), y, weights
        if self.input_feeding:
            x_in = jnp.concatenate([xp, carry.output.astype(xp.dtype)], axis=-1)
            xp = self.cell.project_inputs(params.cell, x_in)
        cell_carry, h = self.cell.step(params.cell, carry.cell, xp)
        context, weights = att(params.attention, mem, h)
        if self.gate:
            context = self._beta(params, h).astype(context.dtype) * context
        joined = jnp.concatenate([context.astype(h.dtype), h], axis=-1)
        out = jnp.tanh(joined @ params.w_out.astype(h.dtype))
        return AttentionDecoderCarry(cell_carry, out.astype(carry.output.dtype)), out, weights


@dataclasses.dataclass(frozen=True)
class _WithWeights(Cell):
    """A view of an AttentionDecoder whose output is ``[y; weights]`` (for scan_with_weights)."""

    decoder: AttentionDecoder
    memory_length: int

    @property
    def output_size(self) -> int:
        return self.decoder.output_size + self.memory_length

    def init(self, key, input_size):
        return self.decoder.init(key, input_size)

    def initial_carry(self, batch_shape=(), dtype=jnp.float32):
        return self.decoder.initial_carry(batch_shape, dtype)

    def input_size_of(self, params):
        return self.decoder.input_size_of(params)

    input_size = input_size_of

    def project_inputs(self, params, xs):
        return self.decoder.project_inputs(params, xs)

    def step(self, params, carry, xp):
        carry, y, w = self.decoder._step(params, carry, xp)
        return carry, jnp.concatenate([y, w.astype(y.dtype)], axis=-1)


def scan_with_weights(
    decoder: AttentionDecoder, params: AttentionDecoderParams, xs: Array, **scan_kwargs: Any
) -> tuple[AttentionDecoderCarry, Array, Array]:
    """:func:`seqjax.scan` of an attentional decoder that also returns the attention weights.

    Args:
      decoder: the :class:`AttentionDecoder`.
      params: bound parameters (memory ``[*B, S, M]``).
      xs: decoder inputs ``[*B, T, I]``.
      **scan_kwargs: passed to :func:`seqjax.scan` (``lengths``, ``mask``, ``carry``, ...).

    Returns:
      ``(final_carry, ys [*B, T, output_size], weights [*B, T, S])``; both are zero at padded
      target steps (so :func:`~seqjax.attention.doubly_stochastic_penalty` can sum the weights
      over time).

    Raises:
      ValueError: unbound parameters, and whatever :func:`seqjax.scan` raises.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.attention_decoder import AttentionDecoder, scan_with_weights
      >>> dec = AttentionDecoder(seqjax.GRU(4), memory_size=4, attention="dot")
      >>> bound = dec.bind(dec.init(jax.random.key(0), 3), jnp.ones((2, 5, 4)), jnp.array([5, 2]))
      >>> _, ys, w = scan_with_weights(dec, bound, jnp.ones((2, 6, 3)))
      >>> w.shape, float(w[1, 0, :2].sum()), float(w[1, 0, 2:].sum())
      ((2, 6, 5), 1.0, 0.0)
    """
    if not isinstance(decoder, AttentionDecoder):
        raise TypeError(f"scan_with_weights expects an AttentionDecoder, got {type(decoder)}")
    memory = getattr(params, "memory", None)
    if memory is None:
        raise ValueError("scan_with_weights needs bound parameters: decoder.bind(params, memory)")
    S = int(memory.values.shape[-2])
    final, out = scan(_WithWeights(decoder, S), params, xs, **scan_kwargs)
    D = decoder.output_size
    return final, out[..., :D], out[..., D:]
