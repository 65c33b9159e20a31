"""Run configuration: a dataclass with defaults, its JSON form, and the diff shown on resume.

The pattern follows the Flax examples: an experiment declares one frozen dataclass whose fields
are its hyperparameters (usually by subclassing :class:`TrainConfig`, which holds the fields the
training loop reads); the resolved config is printed at start and saved beside every
checkpoint, and a resumed run prints what changed since (:func:`config_diff`). Setting fields
from a command line is the application's business (the experiments use argparse through
``experiments/scaffold``).

.. code-block:: python

    @dataclasses.dataclass(frozen=True)
    class CharLMConfig(seqjax.train.TrainConfig):
        hidden_size: int = 256
        seq_len: int = 128

    config = CharLMConfig(hidden_size=512, total_steps=20000)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
import types
import typing
from typing import Any

import numpy as np

__all__ = [
    "TrainConfig",
    "config_diff",
    "config_from_dict",
    "config_to_dict",
    "format_config",
]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Fields the training loop reads; subclass it to add an experiment's own fields.

    Attributes:
      seed: seeds parameter init, the step RNG (``fold_in(key, step)``) and data order.
      total_steps: optimizer steps (micro-steps when ``accumulate_steps > 1``) to run.
      batch_size: global batch size (summed over devices; divisible by the device count).
      optimizer: ``"adamw"``, ``"adam"``, ``"sgd"`` or ``"rmsprop"``.
      learning_rate: peak learning rate.
      schedule: ``"constant"``, ``"cosine"`` (decays to ``end_lr_factor * lr``) or ``"step"``
        (multiplied by ``decay_factor`` every ``decay_every`` steps after warmup).
      warmup_steps: linear warmup from 0 to ``learning_rate``.
      end_lr_factor: final fraction of the peak rate for the cosine schedule.
      decay_factor, decay_every: the step schedule's factor and period.
      clip_norm: clip gradients by global norm to this value; 0 disables clipping.
      weight_decay: decoupled weight decay (AdamW) or L2 added to gradients (SGD/RMSProp).
      momentum: SGD momentum / RMSProp momentum (0 disables).
      accumulate_steps: average gradients over this many micro-batches per update.
      log_every: steps between metric logs and non-finite checks.
      eval_every: steps between evaluations (0: only at the end).
      save_every: steps between checkpoints (a checkpoint is always written at the end).
      keep: number of most recent checkpoints kept.
      keep_best: number of checkpoints kept by best validation metric (``best_metric``).
      best_metric: validation metric ranking checkpoints, e.g. ``"loss"`` (lower is better
        unless ``best_mode="max"``).
      best_mode: ``"min"`` or ``"max"``.
      async_checkpointing: write checkpoints in a background thread.
      progress: show a tqdm progress bar.
    """

    seed: int = 0
    total_steps: int = 1000
    batch_size: int = 32
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_steps: int = 0
    end_lr_factor: float = 0.0
    decay_factor: float = 0.1
    decay_every: int = 1000
    clip_norm: float = 1.0
    weight_decay: float = 0.0
    momentum: float = 0.0
    accumulate_steps: int = 1
    log_every: int = 50
    eval_every: int = 500
    save_every: int = 500
    keep: int = 3
    keep_best: int = 1
    best_metric: str = "loss"
    best_mode: str = "min"
    async_checkpointing: bool = True
    progress: bool = True


def _check_dataclass_instance(config: Any) -> None:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance as config, got {type(config).__name__}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Converts a (nested) dataclass config to a JSON-serialisable dict.

    Equal configs give equal dicts in every process, so a resumed run's :func:`config_diff`
    against the dict saved with its checkpoint is empty unless a value really changed: dtypes
    are written as their names (``"float32"``), functions and classes as their qualified names,
    initializers made by a factory (``orthogonal()``) with the factory's arguments, and no
    value as a ``repr`` holding a memory address.

    Args:
      config: a dataclass instance whose fields are JSON scalars, tuples/lists/dicts of them,
        nested dataclasses (a seqjax cell, say), dtypes or functions.

    Returns:
      A dict of plain Python values; tuples become lists.

    Raises:
      TypeError: ``config`` is not a dataclass instance.

    Example:
      >>> import seqjax
      >>> config_to_dict(TrainConfig(total_steps=5))["total_steps"]
      5
      >>> cell = config_to_dict(seqjax.LSTM(4))
      >>> cell["param_dtype"], cell["recurrent_init"]["function"].rsplit(".", 2)[-2:]
      ('float32', ['<locals>', 'init'])
    """
    _check_dataclass_instance(config)
    return _describe(config)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _describe(v: Any) -> Any:
    """A JSON value standing for ``v``, equal for equal values across processes."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _describe(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [_describe(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _describe(x) for k, x in v.items()}
    if isinstance(v, np.dtype) or (isinstance(v, type) and hasattr(v, "dtype")):
        try:  # np.float32, jnp.bfloat16, np.dtype("int8"): the dtype's name
            return np.dtype(v).name
        except TypeError:
            pass
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, functools.partial):
        args = [_describe(a) for a in v.args]
        kwargs = {k: _describe(x) for k, x in sorted(v.keywords.items())}
        return {"partial": _describe(v.func), "args": args, "kwargs": kwargs}
    if isinstance(v, type):
        return f"{v.__module__}.{v.__qualname__}"
    if inspect.isfunction(v) or inspect.isbuiltin(v):
        name = f"{getattr(v, '__module__', None) or ''}.{v.__qualname__}".lstrip(".")
        if inspect.isfunction(v) and v.__closure__:
            # a closure made by a factory (jax.nn.initializers.orthogonal(scale=2)): its
            # captured arguments tell one initializer from another
            captured = inspect.getclosurevars(v).nonlocals
            described = {k: _describe(x) for k, x in sorted(captured.items()) if x is not v}
            return {"function": name, "closure": described}
        return name
    return _ADDRESS.sub("", repr(v))


def format_config(config: Any) -> str:
    """Renders a config as sorted ``key: value`` lines (nested keys dotted), for printing.

    Args:
      config: a dataclass instance.

    Returns:
      A multi-line string, one field per line.

    Example:
      >>> print(format_config(TrainConfig()).splitlines()[0])
      accumulate_steps   : 1
    """
    flat = _flatten(config_to_dict(config))
    width = max((len(k) for k in flat), default=0)
    return "\n".join(f"{k.ljust(width)}: {json.dumps(v)}" for k, v in sorted(flat.items()))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two config dicts (dotted keys, ``(old, new)`` pairs).

    Args:
      old: a dict from :func:`config_to_dict` (e.g. the one saved with a checkpoint).
      new: another such dict.

    Returns:
      ``{key: (old_value, new_value)}`` for every differing or one-sided key (missing values
      shown as ``"<absent>"``).

    Example:
      >>> config_diff({"a": 1, "b": 2}, {"a": 1, "b": 3})
      {'b': (2, 3)}
    """
    fo, fn = _flatten(old), _flatten(new)
    out = {}
    for k in sorted(set(fo) | set(fn)):
        a, b = fo.get(k, "<absent>"), fn.get(k, "<absent>")
        if a != b:
            out[k] = (a, b)
    return out


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Builds a config dataclass from a dict such as one saved by :func:`config_to_dict`.

    Args:
      cls: the dataclass type.
      values: field values; nested dataclass fields given as dicts.

    Returns:
      ``cls(**converted values)``; fields absent from ``values`` keep their defaults.

    Raises:
      TypeError: ``cls`` is not a dataclass type, or a value does not fit its field's type.
      ValueError: ``values`` holds a key that is not a field of ``cls``.

    Example:
      >>> config_from_dict(TrainConfig, {"total_steps": 7}).total_steps
      7
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, v in values.items():
        tp = hints.get(name, Any)
        nested = _dataclass_type(tp)
        if nested is not None and isinstance(v, dict):
            kwargs[name] = config_from_dict(nested, v)
        else:
            kwargs[name] = _coerce_value(name, tp, v)
    return cls(**kwargs)


def _dataclass_type(tp: Any) -> type | None:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    for a in _union_args(tp) or ():
        if isinstance(a, type) and dataclasses.is_dataclass(a):
            return a
    return None


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return typing.get_args(tp)
    return None


def _coerce_value(name: str, tp: Any, v: Any) -> Any:
    """Checks/converts an already-parsed (JSON) value against a field type."""
    if tp is Any:
        return v
    args = _union_args(tp)
    if args is not None:
        if v is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce_value(name, a, v)
            except (TypeError, ValueError):
                continue
        raise TypeError(f"config key {name!r} expects {tp}, got {v!r}")
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"config key {name!r} expects a {origin.__name__}, got {v!r}")
        targs = typing.get_args(tp)
        if origin is tuple and targs and targs[-1] is not Ellipsis:
            if len(targs) != len(v):
                raise TypeError(f"config key {name!r} expects {len(targs)} values, got {v!r}")
            return tuple(_coerce_value(name, a, x) for a, x in zip(targs, v, strict=True))
        elt = targs[0] if targs else Any
        return origin(_coerce_value(name, elt, x) for x in v)
    if tp is bool:
        if isinstance(v, bool):
            return v
        raise TypeError(f"config key {name!r} expects a bool, got {v!r}")
    if tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise TypeError(f"config key {name!r} expects an int, got {v!r}")
    if tp is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        raise TypeError(f"config key {name!r} expects a float, got {v!r}")
    if tp is str:
        if isinstance(v, str):
            return v
        raise TypeError(f"config key {name!r} expects a str, got {v!r}")
    if isinstance(tp, type) and not isinstance(v, tp):
        raise TypeError(f"config key {name!r} expects {tp.__name__}, got {v!r}")
    return v
