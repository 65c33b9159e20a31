"""Flax linen adapters: any seqjax cell as an ``nn.RNNCellBase``, and a whole-sequence module.

The modules are thin wrappers over the pure cells: the math of a step and of the time loop
stays in the seqjax cell and :func:`seqjax.scan`; a module only declares the cell's parameters
in Flax's ``'params'`` collection and calls the cell with them, so both give the same numbers.
Complete examples (a tagger with a bidirectional LSTM, lengths, dropout, an Optax step) are in
the project's ``docs/flax.md``. Two modules:

- :class:`Cell` is an ``nn.RNNCellBase`` around any steppable seqjax cell, so it runs inside
  Flax's own ``nn.RNN`` (with ``seq_lengths``), ``nn.Bidirectional`` and hand-written loops.
  Flax then drives the time loop one step at a time.
- :class:`RNN` runs a whole sequence through :func:`seqjax.scan` in one call. This is the fast
  path (the input projection of all time steps is one matmul before the loop) and the only way
  to run compositions that cannot be stepped, such as ``seqjax.bidirectional`` and stacks of
  them. Unlike ``nn.RNN``, it outputs zeros at padded steps.

Parameters live in the ``'params'`` collection as a nested dict of arrays whose keys are the
field names of the cell's parameter NamedTuple (``w_ih``, ``w_hh``, ``b``, ...; absent options
are left out, tuples become dicts keyed ``'0'``, ``'1'``, ...). :func:`params_to_flax` and
:func:`params_from_flax` convert in both directions, so parameters made by ``cell.init`` (or
imported from PyTorch) can be used by these modules, and trained Flax parameters can be run
with :func:`seqjax.scan`:

.. code-block:: python

    cell = seqjax.LSTM(8)
    params = cell.init(jax.random.key(0), input_size=3)             # seqjax NamedTuple
    rnn = nn.RNN(seqjax.flax.linen.Cell(cell))
    variables = {"params": {"cell": seqjax.flax.linen.params_to_flax(params)}}
    ys = rnn.apply(variables, xs)                                   # == seqjax.scan(...)[1]
    back = seqjax.flax.linen.params_from_flax(cell, variables["params"]["cell"])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.cells.base import Cell as SeqCell
from seqjax.flax import _common
from seqjax.typing import Array, DType, PRNGKey, PyTree

__all__ = ["RNN", "Cell", "params_from_flax", "params_to_flax"]


# -- parameter conversion ---------------------------------------------------------------------
def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def params_to_flax(params: PyTree) -> dict[str, Any]:
    """Converts seqjax parameters to the nested dict that the linen modules store.

    NamedTuples become dicts keyed by field name with ``None`` fields left out; tuples and
    lists become dicts keyed ``'0'``, ``'1'``, ...; arrays are kept as they are (no copy).

    Args:
      params: a cell's parameters, e.g. ``LSTMParams(w_ih [I, 4H], w_hh [H, 4H], b [4H])``.

    Returns:
      A dict of arrays, e.g. ``{'w_ih': [I, 4H], 'w_hh': [H, 4H], 'b': [4H]}``; for a stack
      ``{'layers': {'0': {...}, '1': {...}}}``. Put it under the module's path in the
      ``'params'`` collection (``{'params': {'cell': tree}}`` inside ``nn.RNN``).

    Raises:
      TypeError: if ``params`` is not a NamedTuple, tuple or mapping of arrays.

    Example:
      >>> import jax, seqjax
      >>> from seqjax.flax.linen import params_to_flax
      >>> params = seqjax.GRU(4).init(jax.random.key(0), input_size=3)
      >>> {k: v.shape for k, v in params_to_flax(params).items()}
      {'w_ih': (3, 12), 'w_hh': (4, 12), 'b': (12,)}
    """
    tree = _to_dict(params, "params")
    if not isinstance(tree, dict):
        raise TypeError(
            f"params must be a NamedTuple of arrays (a cell's parameters), got "
            f"{type(params).__name__}"
        )
    return tree


def _to_dict(tree: Any, path: str) -> Any:
    if _is_namedtuple(tree):
        return {
            f: _to_dict(v, f"{path}.{f}")
            for f, v in zip(tree._fields, tree, strict=True)
            if v is not None
        }
    if isinstance(tree, (tuple, list)):
        return {str(i): _to_dict(v, f"{path}[{i}]") for i, v in enumerate(tree)}
    if isinstance(tree, Mapping):
        return {str(k): _to_dict(v, f"{path}[{k!r}]") for k, v in tree.items() if v is not None}
    if not hasattr(tree, "shape"):
        raise TypeError(f"{path} must be an array, got {type(tree).__name__}")
    return tree


def params_from_flax(cell: SeqCell, tree: Mapping[str, Any]) -> PyTree:
    """Rebuilds a cell's parameter NamedTuple from the dict that the linen modules store.

    The inverse of :func:`params_to_flax`. The structure is taken from ``cell``; every array
    is checked against the shape ``cell.init`` would create for the stored input size.

    Args:
      cell: the seqjax cell the parameters belong to.
      tree: the module's part of the ``'params'`` collection, e.g.
        ``variables['params']['cell']`` for a :class:`Cell` inside ``nn.RNN``; a dict or
        ``FrozenDict``. A whole ``{'params': {...}}`` variables dict is accepted too.

    Returns:
      The parameter NamedTuple (``LSTMParams``, ``StackParams``, ...) holding the same arrays,
      ready for ``seqjax.scan(cell, params, xs)``.

    Raises:
      TypeError: ``cell`` is not a seqjax cell or ``tree`` is not a mapping.
      ValueError: a key is missing or unexpected, or an array has the wrong shape.

    Example:
      >>> import jax, seqjax
      >>> from seqjax.flax.linen import params_from_flax, params_to_flax
      >>> cell = seqjax.LSTM(4, proj_size=2)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> back = params_from_flax(cell, params_to_flax(params))
      >>> type(back).__name__, back.w_proj.shape
      ('LSTMParams', (4, 2))
    """
    _common.check_cell(cell, "params_from_flax")
    if not isinstance(tree, Mapping):
        raise TypeError(f"params_from_flax expects a mapping of arrays, got {type(tree).__name__}")
    template = _common.structure(cell)
    if set(tree) == {"params"} and "params" not in params_to_flax(template):
        tree = tree["params"]
    params = _from_dict(template, tree, "params")
    _common.check_params(cell, params, None)
    return params


def _from_dict(template: Any, tree: Any, path: str) -> Any:
    fields = _namedtuple_fields(template)
    if fields is None and not _is_sequence(template):
        if not hasattr(tree, "shape"):
            raise TypeError(f"{path} must be an array, got {type(tree).__name__}")
        return tree
    if fields is not None:
        keys = [f for f, v in zip(fields, template, strict=True) if v is not None]
    else:
        keys = [str(i) for i in range(len(template))]
    if not isinstance(tree, Mapping):
        raise TypeError(f"{path} must be a mapping with keys {keys}, got {type(tree).__name__}")
    missing = [k for k in keys if k not in tree]
    extra = sorted(str(k) for k in tree if k not in keys)
    if missing or extra:
        raise ValueError(f"{path} must have the keys {keys}; missing {missing}, unexpected {extra}")
    if fields is not None:
        return type(template)(
            *[
                None if v is None else _from_dict(v, tree[f], f"{path}.{f}")
                for f, v in zip(fields, template, strict=True)
            ]
        )
    return type(template)(
        _from_dict(v, tree[str(i)], f"{path}[{i}]") for i, v in enumerate(template)
    )


def _namedtuple_fields(x: Any) -> tuple[str, ...] | None:
    """The field names of a NamedTuple, None for anything else."""
    return getattr(x, "_fields", None) if isinstance(x, tuple) else None


def _is_sequence(x: Any) -> bool:
    return isinstance(x, (tuple, list))


def _declare_params(module: nn.Module, cell: SeqCell, input_size: int) -> PyTree:
    """Declares the cell's parameters in ``module``'s 'params' collection; returns the NamedTuple.

    On init, each top-level entry of :func:`params_to_flax`'s dict becomes one Flax parameter,
    drawn by ``cell.init`` with that parameter's own key (init functions must be pure: Flax
    re-traces them to check shapes). When the parameters exist, they are validated here so that
    a mismatch is a ValueError naming the array, not an error inside the time loop.
    """
    template = params_to_flax(jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size)))
    stored = module.variables.get("params", {})
    if module.is_initializing() and not all(name in stored for name in template):

        def init_entry(name):
            return lambda rng: params_to_flax(cell.init(rng, input_size))[name]

        tree = {name: module.param(name, init_entry(name)) for name in template}
        return params_from_flax(cell, tree)

    params = params_from_flax(cell, nn.meta.unbox(stored))
    n_in = cell.input_size_of(params)
    if n_in != input_size:
        raise ValueError(
            f"inputs have {input_size} features on their last axis, but the "
            f"parameters of {type(module).__name__} were made for {n_in}"
        )
    return params


# -- modules ----------------------------------------------------------------------------------
class Cell(nn.RNNCellBase):
    """A seqjax cell as a Flax linen ``RNNCellBase``, for ``nn.RNN``, ``nn.Bidirectional``, loops.

    One call is one time step, ``cell(params, carry, x)`` with the module's parameters; the
    numbers equal :func:`seqjax.scan` with the same parameters. The input size is taken from
    the first call's inputs. The carry is the seqjax carry NamedTuple (``LSTMCarry(h, c)``,
    not Flax's ``(c, h)``).

    Inside ``nn.RNN(..., seq_lengths=lens, return_carry=True)`` the final carry is each
    sequence's state after its last valid step, as in seqjax; the outputs at padded steps are
    whatever Flax computes there (``nn.RNN`` does not zero them, :class:`RNN` does). Flax picks
    the carry at step ``length - 1``, so a length of 0 does not return the initial carry there.

    Bidirectional compositions need the whole sequence and cannot be stepped: use :class:`RNN`.

    Attributes:
      cell: the seqjax cell definition (hashable, holds no arrays), e.g. ``seqjax.LSTM(8)``.
      carry_dtype: dtype of the carry :meth:`initialize_carry` makes (float32; keep it float32
        with bfloat16 compute, set float64 with float64 parameters).

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, seqjax
      >>> from seqjax.flax.linen import Cell
      >>> rnn = nn.RNN(Cell(seqjax.LSTM(8)))
      >>> xs = jnp.ones((2, 5, 3))                                   # [B, T, I]
      >>> variables = rnn.init(jax.random.key(0), xs)
      >>> ys = rnn.apply(variables, xs, seq_lengths=jnp.array([5, 2]))
      >>> ys.shape, variables["params"]["cell"]["w_ih"].shape
      ((2, 5, 8), (3, 32))
    """

    cell: SeqCell
    carry_dtype: DType = jnp.float32

    def __post_init__(self):
        _common.check_cell(self.cell, "seqjax.flax.linen.Cell")
        super().__post_init__()

    @nn.compact
    def __call__(self, carry: PyTree, inputs: Array) -> tuple[PyTree, Array]:
        """Runs one time step.

        Args:
          carry: the seqjax carry, leaves ``[*B, n]`` (see :meth:`initialize_carry`).
          inputs: the input at this step, ``[*B, I]``.

        Returns:
          ``(new_carry, y)`` with ``y`` of shape ``[*B, cell.output_size]``.

        Raises:
          TypeError: the cell cannot be stepped (a bidirectional layer) or ``inputs`` is not a
            floating-point array.
          ValueError: ``inputs`` has another feature size than the parameters or the carry's
            batch dimensions differ from the input's.
        """
        _common.check_steppable(self.cell, "seqjax.flax.linen.Cell")
        params = _declare_params(self, self.cell, _common.input_size(inputs, 1, "[*B, I]"))
        return self.cell(params, carry, inputs)

    @nn.nowrap
    def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> PyTree:
        """The zero carry for one step's input shape (the Flax ``RNNCellBase`` API).

        Args:
          rng: unused (the carry is all zeros); part of Flax's signature.
          input_shape: shape of one step's input, ``(*B, I)``.

        Returns:
          ``cell.initial_carry(B, carry_dtype)``, leaves ``[*B, n]``.
        """
        del rng
        if len(input_shape) < 1:
            raise ValueError(f"input_shape must be (*B, I), got {tuple(input_shape)}")
        return self.cell.initial_carry(tuple(input_shape[:-1]), self.carry_dtype)

    @property
    def num_feature_axes(self) -> int:
        """1, the number of feature axes of one step's input (inputs are ``[*B, I]``)."""
        return 1

    @nn.nowrap
    def to_variables(self, params: PyTree) -> dict[str, Any]:
        """Wraps seqjax parameters as this module's variables ``{'params': {...}}``.

        Args:
          params: parameters from ``self.cell.init`` (or :func:`seqjax.interop.from_torch`).

        Returns:
          A variables dict for ``Cell(...).apply``; nest ``variables['params']`` under the
          module's name for a parent (``{'params': {'cell': ...}}`` in ``nn.RNN``).
        """
        _common.check_params(self.cell, params, None)
        return {"params": params_to_flax(params)}

    @nn.nowrap
    def from_variables(self, variables: Mapping[str, Any]) -> PyTree:
        """This module's parameters as the seqjax NamedTuple (see :func:`params_from_flax`)."""
        return params_from_flax(self.cell, variables)


class RNN(nn.Module):
    """Runs a seqjax cell over whole sequences with :func:`seqjax.scan` (the fast path).

    Any cell works, including compositions that cannot be stepped, such as
    ``seqjax.stack([seqjax.bidirectional(seqjax.LSTM(8, proj_size=4))] * 2)``. Argument names
    follow ``nn.RNN``; the semantics are seqjax's: padded steps (``seq_lengths`` or ``mask``)
    leave the carry unchanged and output zeros, ``reverse=True`` runs each sequence backwards
    within its own length and, by default, returns outputs in input order (``nn.RNN`` with
    ``keep_order=True``; set ``keep_order=False`` for ``nn.RNN``'s default order). The call
    signature accepts everything ``nn.Bidirectional`` passes, so two of these modules can be
    its ``forward_rnn`` and ``backward_rnn``.

    Randomness: when ``deterministic`` is False and the cell has dropout (e.g.
    ``seqjax.stack(..., dropout=0.2)`` or a wrapper of ``seqjax.regularization``), its key
    comes from ``self.make_rng('dropout')``, so pass ``rngs={'dropout': key}`` to ``apply``.
    A cell without randomness needs no key and gives the same numbers either way. The default
    is ``deterministic=True`` (evaluation); pass ``deterministic=False`` to the training call,
    as with ``nn.Dropout``.

    Attributes:
      cell: the seqjax cell or composition.
      time_major: inputs are ``[T, *B, I]`` instead of ``[*B, T, I]``.
      return_carry: return ``(final_carry, outputs)`` instead of the outputs.
      reverse: process each sequence backwards.
      keep_order: with ``reverse``, return outputs in input order (default True); False
        returns them in processing order, each sequence flipped within its length.
      unroll: time steps per loop iteration.
      deterministic: run without dropout (evaluation). Override per call.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.flax.linen import RNN
      >>> deep = seqjax.stack([seqjax.bidirectional(seqjax.LSTM(4, proj_size=2))] * 2)
      >>> model = RNN(deep)
      >>> xs = jnp.ones((3, 6, 5))                                   # [B, T, I]
      >>> variables = model.init(jax.random.key(0), xs)
      >>> carry, ys = model.apply(variables, xs, seq_lengths=jnp.array([6, 4, 1]),
      ...                         return_carry=True)
      >>> ys.shape                                                   # [B, T, 2 * P]
      (3, 6, 4)
    """

    cell: SeqCell
    time_major: bool = False
    return_carry: bool = False
    reverse: bool = False
    keep_order: bool = True
    unroll: int = 1
    deterministic: bool = True

    def __post_init__(self):
        _common.check_cell(self.cell, "seqjax.flax.linen.RNN")
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: Array,
        *,
        seq_lengths: Array | None = None,
        mask: Array | None = None,
        initial_carry: PyTree | None = None,
        init_key: PRNGKey | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        deterministic: bool | None = None,
        bind_params: Callable[[PyTree], PyTree] | None = None,
    ) -> Array | tuple[PyTree, Array]:
        """Runs the cell over ``inputs``.

        Args:
          inputs: ``[*B, T, I]`` (``[T, *B, I]`` when time-major).
          seq_lengths: integer lengths ``[*B]`` in ``[0, T]``; steps past a sequence's length
            are padding.
          mask: boolean validity ``[*B, T]`` (``[T, *B]`` when time-major), an alternative
            to ``seq_lengths`` that also allows holes.
          initial_carry: the carry to start from (default zeros, see ``cell.initial_carry``).
          init_key: unused (the default carry is zeros); accepted for ``nn.RNN`` compatibility.
          return_carry, time_major, reverse, keep_order, deterministic: override the
            attributes.
          bind_params: a function from the stored parameters (the seqjax NamedTuple) to the
            parameters to run with, e.g. ``lambda p: decoder.bind(p, memory, lengths)`` to
            attach an encoder's outputs to a :class:`seqjax.attention_decoder.AttentionDecoder`'s
            parameters; gradients flow through it to the stored parameters.

        Returns:
          ``outputs [*B, T, cell.output_size]`` (zero at padded steps), or
          ``(final_carry, outputs)`` with ``return_carry``; the final carry is each
          sequence's state after its last valid step.

        Raises:
          ValueError, TypeError: as :func:`seqjax.scan` for bad inputs, lengths, masks or
            carries; ``keep_order=False`` with ``reverse`` and a ``mask``.
        """
        del init_key
        return_carry = self.return_carry if return_carry is None else return_carry
        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order
        deterministic = self.deterministic if deterministic is None else deterministic
        layout = "[T, *B, I]" if time_major else "[*B, T, I]"
        n_in = _common.input_size(inputs, 2, layout)
        params = _declare_params(self, self.cell, n_in)
        if bind_params is not None:
            params = bind_params(params)
        key = None
        if not deterministic and _common.uses_key(self.cell, params, inputs, time_major):
            key = self.make_rng("dropout")
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

    @nn.nowrap
    def to_variables(self, params: PyTree) -> dict[str, Any]:
        """Wraps seqjax parameters as this module's variables ``{'params': {...}}``."""
        _common.check_params(self.cell, params, None)
        return {"params": params_to_flax(params)}

    @nn.nowrap
    def from_variables(self, variables: Mapping[str, Any]) -> PyTree:
        """This module's parameters as the seqjax NamedTuple (see :func:`params_from_flax`)."""
        return params_from_flax(self.cell, variables)
