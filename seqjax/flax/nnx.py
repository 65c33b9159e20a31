"""Flax nnx adapters: any seqjax cell as an ``nnx.RNNCellBase``, and a whole-sequence module.

- :class:`Cell` wraps a steppable seqjax cell for ``nnx.RNN`` (and ``nnx.Bidirectional``, hand
  written loops): Flax drives the time loop one step at a time.
- :class:`RNN` runs a whole sequence through :func:`seqjax.scan` (the fast path; also the only
  way to run bidirectional compositions and stacks of them).

Parameters are stored as the cell's own parameter NamedTuple whose array leaves are
``nnx.Param`` variables (``module.params.w_ih`` is an ``nnx.Param``). ``nnx.state`` therefore
shows paths named after the NamedTuple fields, e.g. ``('params', 'w_ih')`` or
``('params', 'layers', 0, 'forward', 'w_hh')`` for a stack; ``nnx.split``/``nnx.merge``,
``nnx.jit``, ``nnx.grad`` and ``nnx.Optimizer`` see one variable per array. Absent options
(fields that are ``None``) hold no variable.

Training and evaluation follow nnx's convention: :class:`RNN` has a ``deterministic``
attribute, False by default as in ``nnx.Dropout``, that ``model.train()`` and ``model.eval()``
switch for every module of a model. Complete examples (a tagger with a bidirectional LSTM,
lengths, dropout, an Optax step) are in the project's ``docs/flax.md``.

Conversion: pass ``params=`` (e.g. from ``cell.init`` or :func:`seqjax.interop.from_torch`) to
the constructor instead of ``rngs``, and read the current values back as plain seqjax
parameters with :meth:`Cell.seqjax_params`.

.. code-block:: python

    cell = seqjax.GRU(8)
    layer = nnx.RNN(seqjax.flax.nnx.Cell(cell, in_features=3, rngs=nnx.Rngs(0)))
    ys = layer(xs)                                                 # xs: [B, T, 3]
    final, ys2 = seqjax.scan(cell, layer.cell.seqjax_params(), xs) # same numbers
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from seqjax.cells.base import Cell as SeqCell
from seqjax.flax import _common
from seqjax.typing import Array, DType, PRNGKey, PyTree

__all__ = ["RNN", "Cell"]

Rngs = nnx.Rngs | nnx.RngStream


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _make_params(
    cell: SeqCell, in_features: int | None, rngs: Any, params: PyTree | None, where: str
) -> PyTree:
    """Returns the NamedTuple of ``nnx.Param`` leaves: ``params`` checked, or ``cell.init``."""
    _common.check_cell(cell, where)
    if params is not None:
        if _is_variable_tree(params):
            params = _values(params)
        _common.check_params(cell, params, in_features)
    else:
        if in_features is None or rngs is None:
            raise ValueError(
                f"{where} needs in_features and rngs to create parameters (or "
                "params= to use existing ones)"
            )
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"{where}: in_features must be a positive int, got {in_features!r}")
        params = cell.init(_key(rngs, "params", where), in_features)
    return jax.tree_util.tree_map(nnx.Param, params)


def _is_variable_tree(tree: PyTree) -> bool:
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=_is_variable)
    return bool(leaves) and all(_is_variable(v) for v in leaves)


def _values(tree: PyTree) -> PyTree:
    """Replaces every ``nnx.Variable`` leaf by its current array."""
    return jax.tree_util.tree_map(lambda v: v.get_value(), tree, is_leaf=_is_variable)


def _key(rngs: Any, stream: str, where: str) -> PRNGKey:
    """A fresh key from an ``nnx.Rngs`` (stream ``stream``), an ``RngStream`` or a key array."""
    if isinstance(rngs, nnx.Rngs):
        return rngs[stream]()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        return rngs
    raise TypeError(
        f"{where}: rngs must be an nnx.Rngs, an nnx.RngStream or a jax.random key, "
        f"got {type(rngs).__name__}"
    )


class Cell(nnx.RNNCellBase):
    """A seqjax cell as an ``nnx.RNNCellBase``, for ``nnx.RNN``, ``nnx.Bidirectional`` and loops.

    One call is one time step, ``cell(params, carry, x)``; the numbers equal
    :func:`seqjax.scan` with the same parameters. The carry is the seqjax carry NamedTuple
    (``LSTMCarry(h, c)``). Inside ``nnx.RNN(..., seq_lengths=lens, return_carry=True)`` the final
    carry is each sequence's state after its last valid step (for lengths >= 1); ``nnx.RNN``
    does not zero the outputs at padded steps (:class:`RNN` does).

    Args:
      cell: a steppable seqjax cell (not bidirectional), e.g. ``seqjax.LSTM(8)``.
      in_features: ``I``, input features per step (read from ``params`` when those are given).
      rngs: ``nnx.Rngs`` (its ``params`` stream initialises), an ``RngStream`` or a key.
      params: existing seqjax parameters for ``cell`` instead of a fresh ``cell.init``.
      carry_dtype: dtype of the carry :meth:`initialize_carry` makes (float32 by default).

    Attributes:
      cell: the seqjax cell definition.
      params: the parameter NamedTuple with ``nnx.Param`` leaves.

    Raises:
      TypeError: ``cell`` is not a seqjax cell or cannot be stepped; ``rngs`` of a wrong type.
      ValueError: neither ``params`` nor ``in_features`` and ``rngs``; ``params`` that do not
        fit ``cell`` or ``in_features``.

    Example:
      >>> import jax.numpy as jnp, seqjax
      >>> from flax import nnx
      >>> from seqjax.flax.nnx import Cell
      >>> layer = nnx.RNN(Cell(seqjax.LSTM(8, peephole=True), in_features=3, rngs=nnx.Rngs(0)))
      >>> ys = layer(jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 2]))
      >>> ys.shape, layer.cell.params.w_ih.shape
      ((2, 5, 8), (3, 32))
    """

    def __init__(
        self,
        cell: SeqCell,
        in_features: int | None = None,
        *,
        rngs: Rngs | PRNGKey | None = None,
        params: PyTree | None = None,
        carry_dtype: DType = jnp.float32,
    ):
        _common.check_cell(cell, "seqjax.flax.nnx.Cell")
        _common.check_steppable(cell, "seqjax.flax.nnx.Cell")
        self.cell = cell
        self.carry_dtype = carry_dtype
        self.params = nnx.data(
            _make_params(cell, in_features, rngs, params, "seqjax.flax.nnx.Cell")
        )

    @property
    def in_features(self) -> int:
        """``I``, the input size the parameters were made for."""
        return self.cell.input_size_of(self.seqjax_params())

    def seqjax_params(self) -> PyTree:
        """The current parameters as the plain seqjax NamedTuple of arrays.

        Returns:
          e.g. ``LSTMParams(w_ih [I, 4H], w_hh [H, 4H], b [4H], ...)``, for
          ``seqjax.scan(self.cell, params, xs)``.
        """
        return _values(self.params)

    def __call__(self, carry: PyTree, inputs: Array) -> tuple[PyTree, Array]:
        """Runs one time step.

        Args:
          carry: the seqjax carry, leaves ``[*B, n]``.
          inputs: the input at this step, ``[*B, I]``.

        Returns:
          ``(new_carry, y)`` with ``y`` of shape ``[*B, cell.output_size]``.

        Raises:
          ValueError, TypeError: wrong feature size, batch or dtype (see ``seqjax.Cell``).
        """
        _common.input_size(inputs, 1, "[*B, I]")
        return self.cell(self.seqjax_params(), carry, inputs)

    def initialize_carry(
        self, input_shape: tuple[int, ...], rngs: Rngs | None = None, carry_init: Any = None
    ) -> PyTree:
        """The initial carry for one step's input shape (the nnx ``RNNCellBase`` API).

        Args:
          input_shape: shape of one step's input, ``(*B, I)``.
          rngs: randomness for ``carry_init`` (its ``carry`` stream); unused for zeros.
          carry_init: an initializer ``(key, shape, dtype) -> array`` applied to every carry
            leaf; None gives zeros.

        Returns:
          The seqjax carry NamedTuple, leaves ``[*B, n]`` in ``carry_dtype``.
        """
        if len(input_shape) < 1:
            raise ValueError(f"input_shape must be (*B, I), got {tuple(input_shape)}")
        carry = self.cell.initial_carry(tuple(input_shape[:-1]), self.carry_dtype)
        if carry_init is None:
            return carry
        if rngs is None:
            raise ValueError("initialize_carry with carry_init needs rngs")
        return jax.tree_util.tree_map(
            lambda leaf: carry_init(
                _key(rngs, "carry", "initialize_carry"), leaf.shape, leaf.dtype
            ),
            carry,
        )

    @property
    def num_feature_axes(self) -> int:
        """1, the number of feature axes of one step's input (inputs are ``[*B, I]``)."""
        return 1


class RNN(nnx.Module):
    """Runs a seqjax cell over whole sequences with :func:`seqjax.scan` (the fast path).

    The nnx counterpart of :class:`seqjax.flax.linen.RNN`: any cell or composition, including
    bidirectional layers and stacks of them. Padded steps (``seq_lengths`` or ``mask``) leave
    the carry unchanged and output zeros; ``reverse=True`` runs each sequence backwards within
    its own length and keeps outputs in input order (unless ``keep_order=False``).

    Training and evaluation follow ``nnx.Dropout``: the ``deterministic`` attribute is False
    by default (the cell's dropout is active), ``model.eval()`` sets it to True on every
    module of a model that has the attribute and ``model.train()`` back to False;
    ``nnx.view(model, deterministic=...)`` makes a switched view, and the ``deterministic``
    argument of a call overrides the attribute. When not deterministic, the key for the cell's
    dropout (``seqjax.stack(..., dropout=0.2)``, the wrappers of ``seqjax.regularization``)
    comes from the call's ``rngs``, else from the stream kept from the constructor's ``rngs``
    (its ``rng_collection`` stream, ``'dropout'`` by default, falling back to ``default``),
    which advances at every call. A cell without randomness needs no ``rngs`` and gives the
    same numbers in both modes. Deterministic, the output equals ``seqjax.scan`` without key.

    Args:
      cell: the seqjax cell or composition.
      in_features: ``I`` (read from ``params`` when given).
      rngs: ``nnx.Rngs``: its ``params`` stream initialises, its ``rng_collection`` stream
        (if it has one) is forked for dropout; or an ``nnx.RngStream`` used for both; or a
        key, which only initialises the parameters.
      params: existing seqjax parameters instead of a fresh ``cell.init``.
      time_major: inputs are ``[T, *B, I]`` instead of ``[*B, T, I]``.
      return_carry: return ``(final_carry, outputs)``.
      reverse: process each sequence backwards.
      keep_order: with ``reverse``, return outputs in input order (default True); False
        returns them in processing order, each sequence flipped within its length.
      unroll: time steps per loop iteration.
      deterministic: run without dropout (evaluation). False by default, as ``nnx.Dropout``;
        None requires the ``deterministic`` argument at every call.
      rng_collection: the name of the ``nnx.Rngs`` stream that dropout keys are drawn from.

    Raises:
      TypeError, ValueError: as :class:`Cell`'s constructor.

    Example:
      >>> import jax.numpy as jnp, seqjax
      >>> from flax import nnx
      >>> from seqjax.flax.nnx import RNN
      >>> deep = seqjax.stack([seqjax.bidirectional(seqjax.LSTM(4, proj_size=2))] * 2,
      ...                     dropout=0.5)
      >>> model = RNN(deep, in_features=5, rngs=nnx.Rngs(0))
      >>> xs, lengths = jnp.ones((3, 6, 5)), jnp.array([6, 4, 1])
      >>> model(xs, seq_lengths=lengths).shape                      # [B, T, 2 * P]
      (3, 6, 4)
      >>> bool((model(xs) == model(xs)).all())                      # training: fresh masks
      False
      >>> model.eval()
      >>> bool((model(xs) == seqjax.scan(deep, model.seqjax_params(), xs)[1]).all())
      True
    """

    def __init__(
        self,
        cell: SeqCell,
        in_features: int | None = None,
        *,
        rngs: Rngs | PRNGKey | None = None,
        params: PyTree | None = None,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = True,
        unroll: int = 1,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
    ):
        self.cell = cell
        self.params = nnx.data(_make_params(cell, in_features, rngs, params, "seqjax.flax.nnx.RNN"))
        self.time_major = time_major
        self.return_carry = return_carry
        self.reverse = reverse
        self.keep_order = keep_order
        self.unroll = unroll
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        if isinstance(rngs, nnx.Rngs):
            try:
                self.rngs = rngs[rng_collection].fork()
            except KeyError:
                # Unlike nnx.Dropout, Rngs(params=0) alone is accepted: a cell without dropout
                # never needs the stream, and one with dropout says so at the call.
                self.rngs = nnx.data(None)
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        else:
            self.rngs = nnx.data(None)

    @property
    def in_features(self) -> int:
        """``I``, the input size the parameters were made for."""
        return self.cell.input_size_of(self.seqjax_params())

    def seqjax_params(self) -> PyTree:
        """The current parameters as the plain seqjax NamedTuple of arrays."""
        return _values(self.params)

    def set_view(self, deterministic: bool | None = None):
        """Class method used by ``nnx.view``.

        Args:
          deterministic: if True, disables the cell's dropout.
        """
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(
        self,
        inputs: Array,
        *,
        seq_lengths: Array | None = None,
        mask: Array | None = None,
        initial_carry: PyTree | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        deterministic: bool | None = None,
        rngs: Rngs | PRNGKey | None = None,
        bind_params: Callable[[PyTree], PyTree] | None = None,
    ) -> Array | tuple[PyTree, Array]:
        """Runs the cell over ``inputs``.

        Args:
          inputs: ``[*B, T, I]`` (``[T, *B, I]`` when time-major).
          seq_lengths: integer lengths ``[*B]`` in ``[0, T]``.
          mask: boolean validity ``[*B, T]`` (``[T, *B]`` when time-major).
          initial_carry: the carry to start from (default zeros).
          return_carry, time_major, reverse, keep_order, deterministic: override the
            attributes for this call.
          rngs: dropout randomness for this call (``nnx.Rngs``, ``RngStream`` or key); takes
            precedence over the stream from the constructor.
          bind_params: a function from the stored parameters (the seqjax NamedTuple) to the
            parameters to run with, e.g. ``lambda p: decoder.bind(p, memory, lengths)`` to
            attach an encoder's outputs to a :class:`seqjax.attention_decoder.AttentionDecoder`'s
            parameters; gradients flow through it to the stored parameters.

        Returns:
          ``outputs [*B, T, cell.output_size]`` (zero at padded steps), or
          ``(final_carry, outputs)`` with ``return_carry``.

        Raises:
          ValueError: ``deterministic`` is None both here and in the attribute; not
            deterministic with a cell that has dropout and no rngs anywhere;
            ``keep_order=False`` with ``reverse`` and a ``mask``; bad inputs as
            :func:`seqjax.scan`.
          TypeError: ``rngs`` of a wrong type.
        """
        return_carry = self.return_carry if return_carry is None else return_carry
        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic is None:
            raise ValueError(
                "seqjax.flax.nnx.RNN got no deterministic value: pass deterministic=True/False "
                "to the constructor or to the call, or use model.train() / model.eval()"
            )
        _common.input_size(inputs, 2, "[T, *B, I]" if time_major else "[*B, T, I]")
        params = self.seqjax_params()
        if bind_params is not None:
            params = bind_params(params)
        key = None
        if not deterministic and _common.uses_key(self.cell, params, inputs, time_major):
            source = rngs if rngs is not None else self.rngs
            if source is None:
                raise ValueError(
                    f"seqjax.flax.nnx.RNN: deterministic is False and {type(self.cell).__name__} "
                    "has dropout, but no rngs were given, neither to the constructor (an "
                    f"nnx.Rngs with a {self.rng_collection!r} or default stream) nor to the "
                    "call; for evaluation call model.eval() or pass deterministic=True"
                )
            key = _key(source, self.rng_collection, "seqjax.flax.nnx.RNN")
        carry, ys = _common.run_scan(
            self.cell,
            params,
            inputs,
            initial_carry=initial_carry,
            seq_lengths=seq_lengths,
            mask=mask,
            reverse=reverse,
            keep_order=keep_order,
            time_major=time_major,
            unroll=self.unroll,
            key=key,
        )
        return (carry, ys) if return_carry else ys
