"""Checks and helpers shared by the linen and nnx adapters (private).

Both flavours wrap a seqjax cell without re-implementing it, so what they share is about the
cell and its parameters, not about Flax: is it a seqjax cell, can it be stepped, do parameters
fit it, does it draw randomness from the ``key`` of :func:`seqjax.scan`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax.linen.recurrent import flip_sequences
from jax.extend import core as jex_core

from seqjax import _checks
from seqjax.cells.base import Cell as SeqCell
from seqjax.combinators import Bidirectional as SeqBidirectional
from seqjax.scan import scan as seqjax_scan
from seqjax.typing import Array, PyTree


def check_cell(cell: Any, where: str) -> None:
    """Raises TypeError unless ``cell`` is a seqjax cell definition."""
    if not isinstance(cell, SeqCell):
        raise TypeError(
            f"{where} expects a seqjax cell (e.g. seqjax.LSTM(8)), got {type(cell).__name__}"
        )


def _unsteppable_part(cell: SeqCell) -> SeqCell | None:
    """The first part of ``cell`` that needs the whole sequence (a bidirectional layer)."""
    if isinstance(cell, SeqBidirectional):
        return cell
    if dataclasses.is_dataclass(cell):
        for f in dataclasses.fields(cell):
            value = getattr(cell, f.name)
            for sub in value if isinstance(value, tuple) else (value,):
                if isinstance(sub, SeqCell):
                    found = _unsteppable_part(sub)
                    if found is not None:
                        return found
    return None


def check_steppable(cell: SeqCell, where: str) -> None:
    """Raises TypeError if some part of ``cell`` needs the whole sequence (cannot be stepped)."""
    part = _unsteppable_part(cell)
    if part is not None:
        raise TypeError(
            f"{where} steps one time step at a time, but {type(part).__name__} needs the whole "
            "sequence; run it with seqjax.flax.linen.RNN (or seqjax.flax.nnx.RNN) instead"
        )


def structure(cell: SeqCell) -> PyTree:
    """The cell's parameter NamedTuple with ShapeDtypeStruct leaves.

    The shapes are those for input size 1, or for input size ``cell.output_size`` when the cell
    only accepts inputs as wide as its output (a convolutional sLSTM, a residual xLSTM block).
    """
    try:
        return jax.eval_shape(lambda: cell.init(jax.random.key(0), 1))
    except ValueError:
        return jax.eval_shape(lambda: cell.init(jax.random.key(0), cell.output_size))


def check_params(cell: SeqCell, params: PyTree, in_features: int | None) -> None:
    """Raises ValueError unless ``params`` has the structure and shapes ``cell.init`` gives.

    The input size is ``in_features`` when given, otherwise read from ``params``.
    """
    template = structure(cell)
    got_def = jax.tree_util.tree_structure(params)
    exp_def = jax.tree_util.tree_structure(template)
    if got_def != exp_def:
        raise ValueError(
            f"params do not fit {type(cell).__name__}: structure {got_def}, expected {exp_def}"
        )
    n_in = cell.input_size_of(params)
    if in_features is not None and n_in != in_features:
        raise ValueError(
            f"params were made for {n_in} input features, but in_features is {in_features}"
        )
    expected = jax.eval_shape(lambda: cell.init(jax.random.key(0), int(n_in)))
    for (path, e), g in zip(
        jax.tree_util.tree_leaves_with_path(expected),
        jax.tree_util.tree_leaves(params),
        strict=True,
    ):
        if tuple(g.shape) != tuple(e.shape):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)} has shape {tuple(g.shape)}, "
                f"but {type(cell).__name__} with {n_in} input features expects "
                f"{tuple(e.shape)}"
            )


def input_size(inputs: Any, min_ndim: int, what: str) -> int:
    """The feature size (last axis) of ``inputs``, after checking it has ``min_ndim`` axes."""
    x = _checks.array_like("inputs", inputs)
    if x.ndim < min_ndim:
        raise ValueError(
            f"inputs must have at least {min_ndim} dimensions {what}, got shape {tuple(x.shape)}"
        )
    return int(x.shape[-1])


def processing_order(
    ys: Array, seq_lengths: Array | None, mask: Array | None, time_major: bool
) -> Array:
    """Flips reverse-scan outputs within each length (``nn.RNN(reverse=True)``'s order)."""
    if mask is not None:
        raise ValueError(
            "keep_order=False with reverse=True is defined for seq_lengths, not for "
            "a mask (with holes there is no processing order to flip to)"
        )
    n_batch = ys.ndim - 2
    return flip_sequences(ys, seq_lengths, num_batch_dims=n_batch, time_major=time_major)


def run_scan(
    cell: SeqCell,
    params: PyTree,
    inputs: Array,
    *,
    initial_carry: PyTree,
    seq_lengths: Array | None,
    mask: Array | None,
    reverse: bool,
    keep_order: bool,
    time_major: bool,
    unroll: int,
    key: Array | None,
) -> tuple[PyTree, Array]:
    """:func:`seqjax.scan` with ``nn.RNN``'s options; ``keep_order=False`` flips reverse outputs
    into processing order. Returns ``(carry, ys)``, ``ys`` as ``inputs`` laid out."""
    carry, ys = seqjax_scan(
        cell,
        params,
        inputs,
        carry=initial_carry,
        lengths=seq_lengths,
        mask=mask,
        reverse=reverse,
        time_major=time_major,
        unroll=unroll,
        key=key,
    )
    if reverse and not keep_order:
        ys = processing_order(ys, seq_lengths, mask, time_major)
    return carry, ys


def uses_key(cell: SeqCell, params: PyTree, inputs: Array, time_major: bool = False) -> bool:
    """Whether ``seqjax.scan(cell, params, inputs, key=k)``'s results depend on ``k``.

    A cell with dropout (``seqjax.stack(..., dropout=0.2)``, the wrappers of
    ``seqjax.regularization``) needs a key to train; a plain cell or a stack without dropout
    ignores it. Cells do not declare this, so it is read off the traced computation: a value
    depends on the key when it is computed from it, and an operation with a nested computation
    (a ``lax.scan``, a ``jit``) counts as depending on the key when any of its inputs does. A
    ``stack`` without dropout splits the key but never uses it, so it is not counted; a
    zoneout wrapper with rate 0 is (the key enters its scan), which errs on the safe side.
    Tracing costs no computation and runs once per cell and shapes (cached).

    Args:
      cell: the seqjax cell (hashable).
      params: the parameters the scan gets (arrays or tracers; only shapes and dtypes are used).
      inputs: the inputs ``[*B, T, I]`` (``[T, *B, I]`` when ``time_major``), likewise.
      time_major: the layout of ``inputs``.

    Returns:
      True when the outputs or the final carry depend on the key.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    structs = tuple(jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v)) for v in leaves)
    x = jax.ShapeDtypeStruct(jnp.shape(inputs), jnp.result_type(inputs))
    return _uses_key(cell, treedef, structs, x, bool(time_major))


@functools.lru_cache(maxsize=256)
def _uses_key(cell: SeqCell, treedef: Any, structs: tuple, x: Any, time_major: bool) -> bool:
    params = jax.tree_util.tree_unflatten(treedef, structs)
    key = jax.eval_shape(lambda: jax.random.key(0))
    closed = jax.make_jaxpr(
        lambda p, xs, k: seqjax_scan(cell, p, xs, time_major=time_major, key=k)
    )(params, x, key)
    jaxpr = closed.jaxpr
    depends = {jaxpr.invars[-1]}
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jex_core.Literal) and v in depends for v in eqn.invars):
            depends.update(eqn.outvars)
    return any(not isinstance(v, jex_core.Literal) and v in depends for v in jaxpr.outvars)
