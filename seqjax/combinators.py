"""Composition of cells: deep stacks (DLSTM, DLSTMP) and bidirectional layers.

Each combinator is itself a cell definition, so :func:`seqjax.scan` runs it and combinators
nest: a deep bidirectional LSTMP is

.. code-block:: python

    seqjax.stack([seqjax.bidirectional(seqjax.LSTM(512, proj_size=128))] * 3, dropout=0.2)

Over a sequence a stack runs layer by layer (each layer a full scan, its input projection one
large matmul), the way cuDNN runs deep RNNs; stepping a stack one time step at a time runs every
layer for that step, which gives the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax import _checks
from seqjax.cells.base import Cell
from seqjax.scan_engine import ScanOptions
from seqjax.typing import Array, DType, PRNGKey, PyTree, Shape


class StackParams(NamedTuple):
    """Parameters of :class:`Stack`: one entry per layer, bottom first."""

    layers: tuple


class StackCarry(NamedTuple):
    """Carry of :class:`Stack`: one entry per layer, bottom first."""

    layers: tuple


class BidirectionalParams(NamedTuple):
    """Parameters of :class:`Bidirectional`."""

    forward: PyTree
    backward: PyTree


class BidirectionalCarry(NamedTuple):
    """Carry of :class:`Bidirectional`.

    Attributes:
      forward: carry of the forward direction (after the last valid step).
      backward: carry of the backward direction (after it reached the first step).
    """

    forward: PyTree
    backward: PyTree


def dropout(key: PRNGKey, x: Array, rate: float) -> Array:
    """Inverted dropout: zeroes entries with probability ``rate``, scales the rest by 1/(1-rate).

    Args:
      key: a ``jax.random`` key.
      x: any array.
      rate: drop probability in ``[0, 1)``.

    Returns:
      An array like ``x``.
    """
    if rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class Stack(Cell):
    """Deep RNN: layers applied bottom to top, each feeding the next.

    Build it with :func:`stack`.

    Attributes:
      layers: the layer cells, bottom first.
      dropout: dropout rate on the outputs of every layer but the last (PyTorch's ``dropout``
        argument of ``nn.LSTM``), applied only when :func:`seqjax.scan` gets a ``key``.
      residual: add each layer's input to its output for every layer after the first (GNMT,
        Wu et al. 2016); those layers must keep the feature size.
    """

    layers: tuple[Cell, ...]
    dropout: float = 0.0
    residual: bool = False

    def __post_init__(self):
        if not isinstance(self.layers, tuple) or not self.layers:
            raise ValueError(
                f"Stack.layers must be a non-empty tuple of cells, got {self.layers!r}"
            )
        for k, layer in enumerate(self.layers):
            if not isinstance(layer, Cell):
                raise TypeError(
                    f"Stack.layers[{k}] must be a seqjax cell, got {type(layer).__name__}"
                )
        _checks.non_negative_float("Stack.dropout", self.dropout, upper=1.0, upper_inclusive=False)
        if not isinstance(self.residual, bool):
            raise TypeError(f"Stack.residual must be a bool, got {self.residual!r}")
        if self.residual:
            for k in range(1, len(self.layers)):
                n_in, n_out = self.layers[k - 1].output_size, self.layers[k].output_size
                if n_in != n_out:
                    raise ValueError(
                        f"Stack(residual=True): layer {k} maps {n_in} features to {n_out}; "
                        "residual connections need equal sizes on every layer after the first"
                    )

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    def init(self, key: PRNGKey, input_size: int) -> StackParams:
        """Creates :class:`StackParams`; layer ``k`` gets layer ``k-1``'s output size as input."""
        _checks.positive_int("input_size", input_size)
        keys = jax.random.split(key, len(self.layers))
        params, n_in = [], input_size
        for layer, k in zip(self.layers, keys, strict=True):
            params.append(layer.init(k, n_in))
            n_in = layer.output_size
        return StackParams(layers=tuple(params))

    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> StackCarry:
        """Each layer's zero carry, bottom first."""
        return StackCarry(
            layers=tuple(layer.initial_carry(batch_shape, dtype) for layer in self.layers)
        )

    def input_size_of(self, params: StackParams) -> int:
        return self.layers[0].input_size_of(params.layers[0])

    def step(self, params: StackParams, carry: StackCarry, xp: Array) -> tuple[StackCarry, Array]:
        """One time step through every layer (no dropout: stepping is deterministic)."""
        x, new = xp, []
        for k, (layer, p, c) in enumerate(
            zip(self.layers, params.layers, carry.layers, strict=True)
        ):
            c, y = layer.step(p, c, layer.project_inputs(p, x))
            if self.residual and k > 0:
                y = y + x
            new.append(c)
            x = y
        return StackCarry(layers=tuple(new)), x

    def scan_time_major(
        self, params, carry, xs, mask, *, reverse=False, unroll=1, key=None, options: ScanOptions
    ):
        """Runs the layers one after another, each over the whole sequence, with ``options``."""
        x, new = xs, []
        last = len(self.layers) - 1
        for k, (layer, p, c) in enumerate(
            zip(self.layers, params.layers, carry.layers, strict=True)
        ):
            k_layer = k_drop = None
            if key is not None:
                k_layer, k_drop = jax.random.split(jax.random.fold_in(key, k))
            c, y = layer.scan_time_major(
                p, c, x, mask, reverse=reverse, unroll=unroll, key=k_layer, options=options
            )
            if self.residual and k > 0:
                y = y + x
            if k < last and k_drop is not None and self.dropout > 0:
                y = dropout(k_drop, y, self.dropout)
            new.append(c)
            x = y
        return StackCarry(layers=tuple(new)), x


@dataclasses.dataclass(frozen=True)
class Bidirectional(Cell):
    """A layer reading the sequence in both directions.

    The backward direction processes each sequence from its own last valid step back to the
    first (padding is never read). Per-step outputs of the two directions are aligned in time
    and merged. Build it with :func:`bidirectional`.

    A bidirectional layer needs the whole sequence, so it runs under :func:`seqjax.scan` (alone
    or inside a :class:`Stack`) and cannot be stepped one time step at a time.

    Attributes:
      forward: cell of the forward direction.
      backward: cell of the backward direction.
      merge: ``"concat"`` (outputs ``[fwd, bwd]``) or ``"sum"``.
    """

    forward: Cell
    backward: Cell
    merge: str = "concat"

    def __post_init__(self):
        for name in ("forward", "backward"):
            if not isinstance(getattr(self, name), Cell):
                raise TypeError(
                    f"Bidirectional.{name} must be a seqjax cell, got "
                    f"{type(getattr(self, name)).__name__}"
                )
        _checks.one_of("Bidirectional.merge", self.merge, ("concat", "sum"))
        if self.merge == "sum" and self.forward.output_size != self.backward.output_size:
            raise ValueError(
                f"Bidirectional(merge='sum') needs equal output sizes, got forward "
                f"{self.forward.output_size} and backward {self.backward.output_size}"
            )

    @property
    def output_size(self) -> int:
        if self.merge == "sum":
            return self.forward.output_size
        return self.forward.output_size + self.backward.output_size

    def init(self, key: PRNGKey, input_size: int) -> BidirectionalParams:
        """Creates :class:`BidirectionalParams` (independent keys for the two directions)."""
        k_f, k_b = jax.random.split(key)
        return BidirectionalParams(
            forward=self.forward.init(k_f, input_size), backward=self.backward.init(k_b, input_size)
        )

    def initial_carry(
        self, batch_shape: Shape = (), dtype: DType = jnp.float32
    ) -> BidirectionalCarry:
        """Zero carries for both directions."""
        return BidirectionalCarry(
            forward=self.forward.initial_carry(batch_shape, dtype),
            backward=self.backward.initial_carry(batch_shape, dtype),
        )

    def input_size_of(self, params: BidirectionalParams) -> int:
        return self.forward.input_size_of(params.forward)

    def step(self, params, carry, xp):
        raise TypeError(
            "a bidirectional layer needs the whole sequence and cannot take a single time step; "
            "run it with seqjax.scan(cell, params, xs)"
        )

    def __call__(self, params, carry, x):
        return self.step(params, carry, x)

    def scan_time_major(
        self, params, carry, xs, mask, *, reverse=False, unroll=1, key=None, options: ScanOptions
    ):
        """Runs both directions over ``xs [T, *B, I]`` and merges the outputs."""
        k_f = k_b = None
        if key is not None:
            k_f, k_b = jax.random.split(key)
        c_f, y_f = self.forward.scan_time_major(
            params.forward,
            carry.forward,
            xs,
            mask,
            reverse=reverse,
            unroll=unroll,
            key=k_f,
            options=options,
        )
        c_b, y_b = self.backward.scan_time_major(
            params.backward,
            carry.backward,
            xs,
            mask,
            reverse=not reverse,
            unroll=unroll,
            key=k_b,
            options=options,
        )
        ys = y_f + y_b if self.merge == "sum" else jnp.concatenate([y_f, y_b], axis=-1)
        return BidirectionalCarry(forward=c_f, backward=c_b), ys


def stack(cells: Sequence[Cell], *, dropout: float = 0.0, residual: bool = False) -> Stack:
    """Stacks cells into a deep RNN (DLSTM; DLSTMP when the layers have ``proj_size``).

    Args:
      cells: layer cells, bottom first (``[seqjax.LSTM(256)] * 3`` repeats one definition;
        each layer still gets its own parameters).
      dropout: dropout rate between layers, active when ``seqjax.scan`` gets a ``key``.
      residual: residual connections around every layer after the first.

    Returns:
      A :class:`Stack` cell.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> deep = seqjax.stack([seqjax.LSTM(16, proj_size=8)] * 2)
      >>> params = deep.init(jax.random.key(0), input_size=4)
      >>> final, ys = seqjax.scan(deep, params, jnp.ones((3, 5, 4)))
      >>> ys.shape
      (3, 5, 8)
    """
    if isinstance(cells, Cell):
        raise TypeError("stack() takes a sequence of cells, e.g. stack([cell, cell]); got one cell")
    return Stack(layers=tuple(cells), dropout=dropout, residual=residual)


def bidirectional(
    cell: Cell, *, merge: str = "concat", backward: Cell | None = None
) -> Bidirectional:
    """Wraps a cell into a bidirectional layer.

    Args:
      cell: the forward-direction cell (also the backward one unless ``backward`` is given;
        the two directions always get separate parameters).
      merge: ``"concat"`` or ``"sum"`` of the two directions' outputs.
      backward: a different cell for the backward direction.

    Returns:
      A :class:`Bidirectional` cell; output size ``2 * H`` with ``"concat"``.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> bi = seqjax.bidirectional(seqjax.GRU(4))
      >>> params = bi.init(jax.random.key(0), input_size=3)
      >>> final, ys = seqjax.scan(bi, params, jnp.ones((2, 6, 3)), lengths=jnp.array([6, 2]))
      >>> ys.shape
      (2, 6, 8)
    """
    return Bidirectional(forward=cell, backward=cell if backward is None else backward, merge=merge)
