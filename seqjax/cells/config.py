"""Cell definitions to and from plain JSON-able dicts, for a run's saved config.

A cell definition holds only hyperparameters, so it round-trips through a dict:

.. code-block:: python

    cfg = seqjax.cell_to_config(seqjax.stack([seqjax.LSTM(256, proj_size=64)] * 2))
    json.dumps(cfg)                      # {"type": "Stack", "layers": [{"type": "LSTM", ...}]}
    cell = seqjax.cell_from_config(cfg)  # an equal definition
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from seqjax.cells.base import Cell

_DTYPE_FIELDS = ("dtype", "param_dtype")


def _cell_types() -> dict[str, type]:
    """Every public Cell subclass by class name (combinators and wrappers included; private
    bases such as ``_MinRNN`` are walked through but not listed)."""
    found, todo = {}, [Cell]
    while todo:
        for sub in todo.pop().__subclasses__():
            if not sub.__name__.startswith("_"):
                found.setdefault(sub.__name__, sub)
            todo.append(sub)
    return found


def cell_to_config(cell: Cell) -> dict[str, Any]:
    """Returns a JSON-able dict describing ``cell`` (nested cells included).

    Initializer fields left at their defaults are omitted; dtypes are written by name.

    Args:
      cell: any seqjax cell definition.

    Returns:
      ``{"type": class name, field: value, ...}``.

    Raises:
      TypeError: ``cell`` is not a seqjax cell.
      ValueError: a field holds a custom callable (an initializer), which has no JSON form.
    """
    if not isinstance(cell, Cell) or not dataclasses.is_dataclass(cell):
        raise TypeError(f"cell_to_config expects a seqjax cell, got {type(cell).__name__}")
    out: dict[str, Any] = {"type": type(cell).__name__}
    for f in dataclasses.fields(cell):
        value = getattr(cell, f.name)
        if isinstance(value, Cell):
            out[f.name] = cell_to_config(value)
        elif isinstance(value, tuple) and value and all(isinstance(v, Cell) for v in value):
            out[f.name] = [cell_to_config(v) for v in value]
        elif f.name in _DTYPE_FIELDS:
            out[f.name] = None if value is None else jnp.dtype(value).name
        elif callable(value):
            if value is not f.default:
                raise ValueError(
                    f"{type(cell).__name__}.{f.name} holds a custom callable "
                    f"({value!r}), which cannot be written into a config"
                )
        else:
            out[f.name] = value
    return out


def cell_from_config(config: dict[str, Any]) -> Cell:
    """Rebuilds a cell definition from :func:`cell_to_config`'s dict.

    Args:
      config: the dict (for example read back from a run's ``config.json``).

    Returns:
      The cell definition.

    Raises:
      ValueError: unknown cell type or fields.
    """
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"a cell config is a dict with a 'type' key, got {config!r}")
    types = _cell_types()
    name = config["type"]
    if name not in types:
        raise ValueError(f"unknown cell type {name!r}; known: {sorted(types)}")
    cls = types[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in config.items():
        if key == "type":
            continue
        if key not in fields:
            raise ValueError(f"{name} has no field {key!r}; fields: {sorted(fields)}")
        if key in _DTYPE_FIELDS and value is not None:
            value = jnp.dtype(value).type
        elif isinstance(value, dict) and "type" in value:
            value = cell_from_config(value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = tuple(cell_from_config(v) for v in value)
        kwargs[key] = value
    return cls(**kwargs)
