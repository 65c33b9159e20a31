"""Regularisation that works on recurrent nets, as cell wrappers.

Naive dropout on the recurrent state of an LSTM (a fresh mask at every time step) destroys its
memory; the methods here are the ones that keep it. Each is a cell definition wrapping another
cell, so they compose with :func:`seqjax.stack` and run under :func:`seqjax.scan`:

.. code-block:: python

    layer = seqjax.LSTM(512)
    layer = seqjax.regularization.variational_dropout(layer, input_rate=0.2, recurrent_rate=0.2)
    deep = seqjax.stack([seqjax.regularization.zoneout(layer, h_rate=0.05, c_rate=0.5)] * 2,
                        dropout=0.2)
    final, ys = seqjax.scan(deep, params, xs, key=key)      # training: masks drawn from key
    final, ys = seqjax.scan(deep, params, xs)               # evaluation: deterministic

- :class:`VariationalDropout` (Gal & Ghahramani 2016): one dropout mask per sequence, the same
  at every time step, on the inputs, the outputs and the recurrent state ``h`` fed back into the
  cell.
- :class:`Zoneout` (Krueger et al. 2016): each unit of ``h`` and ``c`` keeps its previous value
  with some probability at every step.
- :class:`WeightDrop` (Merity et al. 2017, AWD-LSTM): DropConnect on the recurrent matrix, one
  mask for the whole batch and sequence.

Dropout between stacked layers is ``seqjax.stack(..., dropout=p)``.

Training and evaluation. The wrappers draw their masks only when :func:`seqjax.scan` (or a
combinator's ``scan_time_major``) is given a ``key``. Without a key (evaluation), and whenever a
wrapper is stepped one step at a time with ``cell(params, carry, x)``, they are deterministic and
use the expected value of the training-time operation: inverted dropout (kept units scaled by
``1 / (1 - p)``) has expectation the identity, so dropout wrappers become the inner cell, and
zoneout becomes ``h_t = p h_{t-1} + (1 - p) \\tilde h_t`` as in Krueger et al. Section 3.

The wrappers add no parameters: their parameters are the inner cell's, so a model trained with a
wrapper can be evaluated with or without it.

(Over 450 lines with reason: the three wrappers nest through one private per-step protocol,
``_parts``, which a split would have to make public; most of the file is docstrings.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp

from seqjax import _checks
from seqjax.cells.base import Cell, matmul, sigmoid
from seqjax.cells.gru import GRU
from seqjax.combinators import Bidirectional, Stack, dropout
from seqjax.scan_engine import ScanOptions, scan_steps, with_compute_dtype
from seqjax.typing import Array, DType, PRNGKey, PyTree, Shape

__all__ = [
    "VariationalDropout",
    "WeightDrop",
    "Zoneout",
    "variational_dropout",
    "weight_drop",
    "zoneout",
]


class _Parts(NamedTuple):
    """A training-mode sequence run split into per-step pieces (so wrappers nest).

    Attributes:
      params: the parameters the step actually uses (WeightDrop replaces a matrix).
      project: ``xs [T, *B, I] -> xps``, the input-only part for all steps.
      step: ``(carry, xp_t, noise_t) -> (carry, y_t)``.
      noise: pytree of per-step randomness with leading axis ``T`` (or None).
    """

    params: PyTree
    project: Callable[[Array], Array]
    step: Callable[[PyTree, Array, Any], tuple[PyTree, Array]]
    noise: Any


def _keep_mask(key: PRNGKey, rate: float, shape: Shape, dtype: DType) -> Array:
    """Inverted-dropout multiplier: 0 with probability ``rate``, else ``1 / (1 - rate)``."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.zeros((), dtype))


def _carry_field(cell: Cell, carry: PyTree, field: str, wrapper: str) -> Array:
    fields = getattr(carry, "_fields", ())
    if field not in fields:
        raise ValueError(
            f"{wrapper} needs a carry with a field {field!r}, but {type(cell).__name__}'s carry "
            f"is {type(carry).__name__} with fields {fields}. Wrap each layer of a stack "
            "separately, e.g. seqjax.stack([wrapper(seqjax.LSTM(n))] * k)"
        )
    return getattr(carry, field)


def _innermost(cell: Cell) -> Cell:
    while isinstance(cell, (VariationalDropout, Zoneout, WeightDrop)):
        cell = cell.cell
    return cell


def _parts(cell: Cell, params: PyTree, carry: PyTree, xs: Array, key: PRNGKey) -> _Parts:
    """Per-step decomposition of ``cell``'s training-mode run over ``xs [T, *B, I]``."""
    if isinstance(cell, (VariationalDropout, Zoneout, WeightDrop)):
        return cell._parts(params, carry, xs, key)
    if isinstance(cell, (Stack, Bidirectional)):
        raise TypeError(
            f"per-step regularisation (zoneout, recurrent dropout) cannot wrap a "
            f"{type(cell).__name__}; wrap each layer instead, e.g. "
            "seqjax.stack([seqjax.regularization.zoneout(seqjax.LSTM(n), ...)] * k)"
        )
    del key  # a plain cell is deterministic

    return _Parts(
        params=params,
        project=lambda x: cell.project_inputs(params, x),
        step=lambda c, xp, n: cell.step(params, c, xp),
        noise=None,
    )


_CellT = TypeVar("_CellT", bound=Cell)


def _computing_in(cell: _CellT, compute_dtype: DType | None) -> _CellT:
    """``cell`` with ``compute_dtype`` applied to the innermost cell of a wrapper chain."""
    if compute_dtype is None:
        return cell
    if isinstance(cell, (VariationalDropout, Zoneout, WeightDrop)):
        return dataclasses.replace(cell, cell=_computing_in(cell.cell, compute_dtype))
    return with_compute_dtype(cell, compute_dtype)


def _scan_parts(
    what: str,
    parts: _Parts,
    carry: PyTree,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool,
    unroll: int,
    options: ScanOptions,
) -> tuple[PyTree, Array]:
    xps = parts.project(xs)

    def step_fn(c, inp):
        xp, n = inp
        return parts.step(c, xp, n)

    return scan_steps(
        what,
        step_fn,
        carry,
        (xps, parts.noise),
        mask,
        reverse=reverse,
        unroll=unroll,
        options=options,
    )


class _Wrapper(Cell):
    """Shared delegation: a wrapper has its inner cell's parameters, carry and sizes."""

    cell: Cell

    def _check_inner(self, name: str) -> None:
        if not isinstance(self.cell, Cell):
            raise TypeError(f"{name}.cell must be a seqjax cell, got {type(self.cell).__name__}")

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    def init(self, key: PRNGKey, input_size: int) -> PyTree:
        """The inner cell's parameters (the wrapper adds none)."""
        return self.cell.init(key, input_size)

    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> PyTree:
        """The inner cell's zero carry."""
        return self.cell.initial_carry(batch_shape, dtype)

    def input_size_of(self, params: PyTree) -> int:
        return self.cell.input_size_of(params)

    def project_inputs(self, params: PyTree, xs: Array) -> Array:
        """The inner cell's input projection (deterministic)."""
        return self.cell.project_inputs(params, xs)

    def step(self, params: PyTree, carry: PyTree, xp: Array) -> tuple[PyTree, Array]:
        """The deterministic (evaluation) step: the inner cell's step."""
        return self.cell.step(params, carry, xp)

    def check_carry(self, carry: PyTree, batch_shape: Shape) -> None:
        self.cell.check_carry(carry, batch_shape)


@dataclasses.dataclass(frozen=True)
class VariationalDropout(_Wrapper):
    r"""Variational (time-locked) dropout, Gal & Ghahramani (2016).

    One Bernoulli mask per sequence and unit, drawn when the sequence starts and reused at every
    time step, on three places:

    .. math::

        \tilde x_t = m^x \odot x_t, \quad
        (\text{carry}_t, y_t) = \text{cell}(\text{carry}_{t-1}[h \to m^h \odot h_{t-1}],
        \tilde x_t), \quad \tilde y_t = m^y \odot y_t

    with inverted scaling (``m = keep / (1 - p)``). The recurrent mask ``m^h`` applies to the
    ``h`` the cell reads back, where it enters the recurrent matmul; the state that is carried
    on (and returned as the final carry) is unmasked, and the LSTM cell state ``c`` is never
    masked. For LSTMs (with or without projection) and SimpleRNNs ``h_{t-1}`` enters the step
    only through ``U h_{t-1}``, so this is exactly Gal & Ghahramani's recurrent dropout. A GRU
    also reads ``h_{t-1}`` in its interpolation ``(1 - z) h_{t-1} + z \tilde h``; there the
    wrapper keeps the unmasked ``h_{t-1}`` (as Keras' ``recurrent_dropout`` does), at the cost
    of one extra ``[H, H]`` matmul per training step.

    Masks differ between sequences in a batch (shape ``[*B, n]``). Under evaluation (no
    ``key``) and single steps the wrapper is the inner cell: the expectation of each masked
    quantity is the unmasked one (the "standard dropout approximation" of Gal & Ghahramani,
    exact for the output mask).

    Attributes:
      cell: the wrapped cell. With ``recurrent_rate > 0`` it must be a plain cell whose carry
        has a field ``h`` (LSTM, GRU, SimpleRNN), possibly inside a :class:`WeightDrop`.
      input_rate: drop probability of each input feature, in ``[0, 1)``.
      output_rate: drop probability of each output unit.
      recurrent_rate: drop probability of each unit of ``h`` as fed back.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.regularization import variational_dropout
      >>> cell = variational_dropout(seqjax.LSTM(8), input_rate=0.1, recurrent_rate=0.25)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> final, ys = seqjax.scan(cell, params, jnp.ones((2, 5, 3)), key=jax.random.key(1))
      >>> ys.shape
      (2, 5, 8)
    """

    cell: Cell
    input_rate: float = 0.0
    output_rate: float = 0.0
    recurrent_rate: float = 0.0

    def __post_init__(self):
        self._check_inner("VariationalDropout")
        for name in ("input_rate", "output_rate", "recurrent_rate"):
            _checks.non_negative_float(
                f"VariationalDropout.{name}", getattr(self, name), upper=1.0, upper_inclusive=False
            )
        if self.recurrent_rate > 0:
            inner = self.cell
            while isinstance(inner, WeightDrop):
                inner = inner.cell
            if isinstance(inner, (VariationalDropout, Zoneout, Stack, Bidirectional)):
                raise TypeError(
                    "VariationalDropout(recurrent_rate > 0) must wrap a plain cell (LSTM, GRU, "
                    f"SimpleRNN, optionally inside WeightDrop), got {type(inner).__name__}; put "
                    "zoneout outside it and wrap each layer of a stack separately"
                )

    def _masks(self, key: PRNGKey, carry: PyTree, xs: Array):
        batch_shape, dtype = xs.shape[1:-1], xs.dtype
        k_in, k_out, k_rec = jax.random.split(key, 3)
        m_in = m_out = m_rec = None
        if self.input_rate > 0:
            m_in = _keep_mask(k_in, self.input_rate, batch_shape + xs.shape[-1:], dtype)
        if self.output_rate > 0:
            m_out = _keep_mask(
                k_out, self.output_rate, batch_shape + (self.cell.output_size,), dtype
            )
        if self.recurrent_rate > 0:
            h = _carry_field(self.cell, carry, "h", "VariationalDropout(recurrent_rate > 0)")
            m_rec = _keep_mask(k_rec, self.recurrent_rate, h.shape, h.dtype)
        return m_in, m_out, m_rec

    def _parts(self, params, carry, xs, key):
        k_mask, k_inner = jax.random.split(key)
        m_in, m_out, m_rec = self._masks(k_mask, carry, xs)
        inner = _parts(self.cell, params, carry, xs, k_inner)
        base = _innermost(self.cell)

        def project(x):
            return inner.project(x if m_in is None else x * m_in)

        def step(c, xp, n):
            if m_rec is None:
                new, y = inner.step(c, xp, n)
            else:
                h_prev = c.h
                h_read = h_prev * m_rec
                new, y = inner.step(c._replace(h=h_read), xp, n)
                if isinstance(base, GRU):
                    new, y = _gru_unmask_interpolation(base, inner.params, new, xp, h_prev, h_read)
            if m_out is not None:
                y = y * m_out.astype(y.dtype)
            return new, y

        return _Parts(params=inner.params, project=project, step=step, noise=inner.noise)

    def scan_time_major(
        self, params, carry, xs, mask, *, reverse=False, unroll=1, key=None, options: ScanOptions
    ):
        """Runs the wrapped cell with time-locked masks drawn from ``key`` (none without).

        With ``recurrent_rate > 0`` and a key the mask enters every step, so the layer runs
        step by step on the reference scan (``remat`` and ``compute_dtype`` apply; a forced
        kernel ``impl`` raises); otherwise the inner cell runs with its own kernels.
        """
        if key is None:
            return self.cell.scan_time_major(
                params, carry, xs, mask, reverse=reverse, unroll=unroll, key=None, options=options
            )
        if self.recurrent_rate > 0:
            cell = _computing_in(self, options.compute_dtype)
            return _scan_parts(
                "VariationalDropout(recurrent_rate > 0)",
                cell._parts(params, carry, xs, key),
                carry,
                xs,
                mask,
                reverse=reverse,
                unroll=unroll,
                options=options,
            )
        # Input and output masks only: any inner cell (a stack, a bidirectional layer) runs its
        # own scan, with its own randomness.
        k_mask, k_inner = jax.random.split(key)
        m_in, m_out, _ = self._masks(k_mask, carry, xs)
        if m_in is not None:
            xs = xs * m_in[None]
        final, ys = self.cell.scan_time_major(
            params, carry, xs, mask, reverse=reverse, unroll=unroll, key=k_inner, options=options
        )
        if m_out is not None:
            ys = ys * m_out[None].astype(ys.dtype)
        return final, ys


def _gru_unmask_interpolation(cell: GRU, params, new, xp, h_prev, h_read):
    """Replaces the masked ``h_{t-1}`` in a GRU's ``(1 - z) h_{t-1}`` by the unmasked one.

    The inner step computed ``h' = (1 - z) h_read + z n`` with ``z`` and ``n`` from the masked
    ``h_read`` (Gal & Ghahramani's recurrent dropout); the interpolation must use the true state:
    ``h = h' + (1 - z) (h_prev - h_read)``. ``z`` is the middle block of ``r, z, n``.
    """
    H = cell.hidden_size
    acc = xp.dtype
    rec_z = matmul(h_read, params.w_hh[:, H : 2 * H], cell.dtype, acc)
    z = sigmoid(xp[..., H : 2 * H] + rec_z)
    h = new.h.astype(acc) + (1.0 - z) * (h_prev.astype(acc) - h_read.astype(acc))
    h = h.astype(new.h.dtype)
    return new._replace(h=h), h


@dataclasses.dataclass(frozen=True)
class Zoneout(_Wrapper):
    r"""Zoneout, Krueger et al. (2016): units randomly keep their previous value.

    At every step and for every unit independently, with ``d ~ Bernoulli(p)``:

    .. math::

        h_t = d^h_t \odot h_{t-1} + (1 - d^h_t) \odot \tilde h_t, \qquad
        c_t = d^c_t \odot c_{t-1} + (1 - d^c_t) \odot \tilde c_t

    where ``\tilde h_t, \tilde c_t`` is the wrapped cell's update. At evaluation (no ``key``)
    and when stepping one step at a time the masks are replaced by their expectation,
    ``h_t = p_h h_{t-1} + (1 - p_h) \tilde h_t`` (Krueger et al., Section 3), and likewise for
    ``c``. The output at each step is the zoned-out ``h_t``. Padded steps (``lengths``/``mask``
    in :func:`seqjax.scan`) leave the carry unchanged as for any cell.

    Krueger et al.'s character-level settings are ``c_rate=0.5, h_rate=0.05``.

    Attributes:
      cell: the wrapped cell; its carry must have a field ``h`` (and ``c`` when
        ``c_rate > 0``), and its output must be ``h`` (true of every seqjax cell). It may itself
        be a :class:`VariationalDropout` (without output dropout) or a :class:`WeightDrop`.
      h_rate: probability that a unit of ``h`` keeps its previous value, in ``[0, 1]``.
      c_rate: the same for the cell state ``c`` (LSTMs only).

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.regularization.zoneout(seqjax.LSTM(8), h_rate=0.05, c_rate=0.5)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> final, ys = seqjax.scan(cell, params, jnp.ones((2, 5, 3)), key=jax.random.key(1))
      >>> ys.shape
      (2, 5, 8)
    """

    cell: Cell
    h_rate: float = 0.0
    c_rate: float = 0.0

    def __post_init__(self):
        self._check_inner("Zoneout")
        for name in ("h_rate", "c_rate"):
            _checks.non_negative_float(f"Zoneout.{name}", getattr(self, name), upper=1.0)
        if isinstance(self.cell, (Stack, Bidirectional)):
            raise TypeError(
                f"Zoneout cannot wrap a {type(self.cell).__name__}; wrap each layer "
                "instead, e.g. seqjax.stack([zoneout(seqjax.LSTM(n), ...)] * k)"
            )
        if isinstance(self.cell, VariationalDropout) and self.cell.output_rate > 0:
            raise ValueError(
                "Zoneout outputs its zoned-out h, which would skip the output mask of the "
                "VariationalDropout inside it; put the output dropout outside: "
                "variational_dropout(zoneout(cell, ...), output_rate=p)"
            )

    def _fields(self, carry: PyTree) -> dict[str, float]:
        rates = {"h": self.h_rate}
        if self.c_rate > 0:
            rates["c"] = self.c_rate
        for name in rates:
            _carry_field(
                self.cell, carry, name, f"Zoneout({name}_rate > 0)" if name == "c" else "Zoneout"
            )
        return rates

    def step(self, params: PyTree, carry: PyTree, xp: Array) -> tuple[PyTree, Array]:
        """Deterministic step: ``h = p h_prev + (1 - p) h_new`` (likewise ``c``)."""
        new, _ = self.cell.step(params, carry, xp)
        updates = {}
        for name, p in self._fields(carry).items():
            old, upd = getattr(carry, name), getattr(new, name)
            updates[name] = (p * old + (1.0 - p) * upd).astype(upd.dtype)
        new = new._replace(**updates)
        return new, new.h

    def _parts(self, params, carry, xs, key):
        rates = self._fields(carry)
        k_mask, k_inner = jax.random.split(key)
        inner = _parts(self.cell, params, carry, xs, k_inner)
        T = xs.shape[0]
        keys = jax.random.split(k_mask, len(rates))
        masks = {
            name: jax.random.bernoulli(k, p, (T,) + getattr(carry, name).shape)
            for k, (name, p) in zip(keys, rates.items(), strict=True)
        }

        def step(c, xp, n):
            own, n_inner = n
            new, _ = inner.step(c, xp, n_inner)
            new = new._replace(
                **{name: jnp.where(own[name], getattr(c, name), getattr(new, name)) for name in own}
            )
            return new, new.h

        return _Parts(
            params=inner.params, project=inner.project, step=step, noise=(masks, inner.noise)
        )

    def scan_time_major(
        self, params, carry, xs, mask, *, reverse=False, unroll=1, key=None, options: ScanOptions
    ):
        """Runs the cell with zoneout masks drawn from ``key``; without, the expectation.

        Zoneout acts on every step, so the layer runs step by step on the reference scan:
        ``remat`` and ``compute_dtype`` apply, a forced kernel ``impl`` raises.
        """
        cell = _computing_in(self, options.compute_dtype)
        if key is None:
            cell._fields(carry)
            return scan_steps(
                "Zoneout",
                lambda c, xp: cell.step(params, c, xp),
                carry,
                cell.project_inputs(params, xs),
                mask,
                reverse=reverse,
                unroll=unroll,
                options=options,
            )
        return _scan_parts(
            "Zoneout",
            cell._parts(params, carry, xs, key),
            carry,
            xs,
            mask,
            reverse=reverse,
            unroll=unroll,
            options=options,
        )


@dataclasses.dataclass(frozen=True)
class WeightDrop(_Wrapper):
    r"""Weight drop (DropConnect on the recurrent matrix), Merity et al. (2017).

    During training one Bernoulli mask is drawn for the recurrent weight matrix (``w_hh`` by
    default) per call of :func:`seqjax.scan`, i.e. per batch of sequences, and used at every
    time step and by every sequence of the batch: ``U' = (M \odot U) / (1 - p)``. The cell's
    own fast recurrence is untouched, which is why AWD-LSTM uses it. Without a ``key`` the
    weights are used as they are, the expectation of ``U'``. Gradients reach the unmasked
    entries of the raw matrix.

    Attributes:
      cell: the wrapped cell; its parameters must have a field ``weight`` (every plain
        seqjax cell's parameters have ``w_hh``). It may be another wrapper around one cell; a
        stack or a bidirectional layer has no such field (wrap each layer instead).
      rate: drop probability of each weight, in ``[0, 1)``.
      weight: name of the parameter to drop.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.regularization.weight_drop(seqjax.LSTM(8), rate=0.5)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> final, ys = seqjax.scan(cell, params, jnp.ones((2, 5, 3)), key=jax.random.key(1))
      >>> ys.shape
      (2, 5, 8)
    """

    cell: Cell
    rate: float = 0.0
    weight: str = "w_hh"

    def __post_init__(self):
        self._check_inner("WeightDrop")
        _checks.non_negative_float("WeightDrop.rate", self.rate, upper=1.0, upper_inclusive=False)
        if not isinstance(self.weight, str):
            raise TypeError(f"WeightDrop.weight must be a parameter name, got {self.weight!r}")
        if isinstance(_innermost(self.cell), (Stack, Bidirectional)):
            raise TypeError(
                f"WeightDrop cannot wrap a {type(_innermost(self.cell)).__name__}, whose "
                "parameters have no single recurrent matrix; wrap each layer instead, e.g. "
                "seqjax.stack([weight_drop(seqjax.LSTM(n), rate=p)] * k)"
            )

    def drop_weights(self, params: PyTree, key: PRNGKey) -> PyTree:
        """Returns ``params`` with the dropped recurrent matrix (one mask, inverted scaling).

        Args:
          params: the inner cell's parameters.
          key: a ``jax.random`` key.

        Returns:
          The same NamedTuple with ``params.<weight>`` masked and scaled by ``1 / (1 - rate)``.

        Raises:
          ValueError: if the parameters have no field named ``weight``.
        """
        fields = getattr(params, "_fields", ())
        if self.weight not in fields or getattr(params, self.weight) is None:
            raise ValueError(
                f"WeightDrop(weight={self.weight!r}) needs parameters with that field; "
                f"{type(params).__name__} has fields {fields}. Wrap each layer of a stack "
                "separately"
            )
        w = getattr(params, self.weight)
        return params._replace(**{self.weight: dropout(key, w, self.rate)})

    def _parts(self, params, carry, xs, key):
        k_drop, k_inner = jax.random.split(key)
        return _parts(self.cell, self.drop_weights(params, k_drop), carry, xs, k_inner)

    def scan_time_major(
        self, params, carry, xs, mask, *, reverse=False, unroll=1, key=None, options: ScanOptions
    ):
        """Runs the cell with dropped recurrent weights when given a ``key``."""
        if key is not None:
            k_drop, key = jax.random.split(key)
            params = self.drop_weights(params, k_drop)
        return self.cell.scan_time_major(
            params, carry, xs, mask, reverse=reverse, unroll=unroll, key=key, options=options
        )


def variational_dropout(
    cell: Cell, *, input_rate: float = 0.0, output_rate: float = 0.0, recurrent_rate: float = 0.0
) -> VariationalDropout:
    """Wraps ``cell`` with time-locked (variational) dropout, Gal & Ghahramani (2016).

    Args:
      cell: the cell to regularise (a plain cell for ``recurrent_rate > 0``).
      input_rate: drop probability of input features, one mask ``[*B, I]`` per sequence.
      output_rate: drop probability of output units, one mask ``[*B, O]`` per sequence.
      recurrent_rate: drop probability of the fed-back ``h``, one mask ``[*B, R]``.

    Returns:
      A :class:`VariationalDropout` cell with the parameters and carry of ``cell``.

    Raises:
      ValueError: a rate outside ``[0, 1)``.
      TypeError: ``recurrent_rate > 0`` around a stack, a bidirectional layer or zoneout.

    Example:
      >>> import seqjax
      >>> cell = variational_dropout(seqjax.GRU(16), recurrent_rate=0.25)
      >>> cell.output_size
      16
    """
    return VariationalDropout(
        cell=cell, input_rate=input_rate, output_rate=output_rate, recurrent_rate=recurrent_rate
    )


def zoneout(cell: Cell, *, h_rate: float = 0.0, c_rate: float = 0.0) -> Zoneout:
    """Wraps ``cell`` with zoneout on ``h`` and ``c``, Krueger et al. (2016).

    Args:
      cell: the cell (its carry has ``h``, and ``c`` for ``c_rate > 0``).
      h_rate: probability per unit and step that ``h`` keeps its previous value.
      c_rate: the same for ``c``.

    Returns:
      A :class:`Zoneout` cell with the parameters and carry of ``cell``.

    Raises:
      ValueError: a rate outside ``[0, 1]``.

    Example:
      >>> import seqjax
      >>> cell = zoneout(seqjax.LSTM(16), h_rate=0.05, c_rate=0.5)
      >>> cell.output_size
      16
    """
    return Zoneout(cell=cell, h_rate=h_rate, c_rate=c_rate)


def weight_drop(cell: Cell, *, rate: float, weight: str = "w_hh") -> WeightDrop:
    """Wraps ``cell`` with DropConnect on its recurrent matrix, Merity et al. (2017).

    Args:
      cell: the cell whose parameters have the field ``weight``.
      rate: drop probability of each weight, one mask per :func:`seqjax.scan` call.
      weight: the parameter to drop (default ``"w_hh"``).

    Returns:
      A :class:`WeightDrop` cell with the parameters and carry of ``cell``.

    Raises:
      ValueError: a rate outside ``[0, 1)``.

    Example:
      >>> import seqjax
      >>> cell = weight_drop(seqjax.LSTM(16), rate=0.5)
      >>> cell.output_size
      16
    """
    return WeightDrop(cell=cell, rate=rate, weight=weight)
