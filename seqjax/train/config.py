"""Run configuration: a dataclass with defaults, command-line overrides, JSON round trip.

The pattern follows the Flax examples: an experiment declares one dataclass whose fields are
its hyperparameters (usually by subclassing :class:`TrainConfig`, which holds the fields the
training loop reads), a user overrides any field from the command line, and the resolved
config is printed at start and saved beside every checkpoint.

.. code-block:: python

    @dataclasses.dataclass(frozen=True)
    class CharLMConfig(seqjax.train.TrainConfig):
        hidden_size: int = 256
        seq_len: int = 128

    config = seqjax.train.parse_config(CharLMConfig, sys.argv[1:])
    # python charlm.py --hidden_size 512 --learning_rate=3e-3 --total_steps 20000

Nested dataclass fields are addressed with dots (``--model.hidden_size 64``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from typing import Any

__all__ = [
    "TrainConfig",
    "config_diff",
    "config_from_dict",
    "config_to_dict",
    "format_config",
    "parse_config",
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

    Args:
      config: a dataclass instance whose fields are JSON scalars, tuples/lists of them, or
        nested dataclasses.

    Returns:
      A dict of plain Python values; tuples become lists. Frozen dataclass values such as a
      seqjax cell are stored as ``{"__class__": "LSTM", ...fields}``.

    Raises:
      TypeError: ``config`` is not a dataclass instance.

    Example:
      >>> config_to_dict(TrainConfig(total_steps=5))["total_steps"]
      5
    """
    _check_dataclass_instance(config)

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            d = {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
            return d
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        return repr(v)

    return conv(config)


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
        if _dataclass_type(tp) is not None and isinstance(v, dict):
            kwargs[name] = config_from_dict(_dataclass_type(tp), v)
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
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce_value(name, a, v)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
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


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_text(name: str, tp: Any, text: str) -> Any:
    """Parses one command-line value for a field of type ``tp``."""
    args = _union_args(tp)
    if args is not None:
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _parse_text(name, a, text)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"--{name}: cannot parse {text!r} as {tp}")
    if tp is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"--{name} expects a bool (true/false/1/0/yes/no), got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
            raise ValueError(f"--{name} expects an int, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--{name} expects a float, got {text!r}") from None
    if tp is str or tp is Any:
        return text
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = [s for s in text.split(",") if s != ""]
            targs = typing.get_args(tp)
            elt = targs[0] if targs else str
            value = [_parse_text(name, elt, s.strip()) for s in value]
        if not isinstance(value, list):
            value = [value]
        try:
            return _coerce_value(name, tp, value)
        except TypeError as e:
            raise ValueError(f"--{name}: {e}") from None
    raise TypeError(f"--{name}: fields of type {tp!r} cannot be set from the command line")


def parse_config(config: Any, argv: Sequence[str] | None = None) -> Any:
    """Applies ``--key value`` / ``--key=value`` command-line overrides to a config dataclass.

    Types come from the dataclass field annotations: ``int``, ``float``, ``str``, ``bool``
    (``true/false/1/0/yes/no``; a bare ``--flag`` means true), ``Optional[...]`` (``none``),
    ``tuple[int, ...]``/``list[...]`` (``1,2,3`` or JSON ``[1, 2, 3]``). Nested dataclass fields
    are addressed with dots: ``--model.hidden_size 64``.

    Args:
      config: a dataclass type (its defaults are the base) or instance.
      argv: the arguments, e.g. ``sys.argv[1:]``; None reads ``sys.argv[1:]``.

    Returns:
      A new config instance (the input is not modified).

    Raises:
      ValueError: an unknown key (the message lists the valid keys), a value that does not
        parse as its field's type, a positional argument, or a key given without a value.
      TypeError: ``config`` is not a dataclass.

    Example:
      >>> parse_config(TrainConfig, ["--learning_rate=3e-3", "--total_steps", "20"]).total_steps
      20
    """
    import sys

    if isinstance(config, type):
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"expected a dataclass type or instance, got {config!r}")
        config = config()
    _check_dataclass_instance(config)
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ValueError(f"expected --key value or --key=value, got {arg!r}")
        body = arg[2:]
        if "=" in body:
            key, text = body.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, text = body, argv[i + 1]
            i += 2
        else:
            key, text = body, None  # a bare flag: only valid for bools
            i += 1
        overrides.append((key.replace("-", "_"), text))
    valid = sorted(_valid_keys(config))
    for key, text in overrides:
        config = _set_path(config, key.split("."), key, text, valid)
    return config


def _valid_keys(config: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            keys.extend(_valid_keys(v, f"{prefix}{f.name}."))
        else:
            keys.append(prefix + f.name)
    return keys


def _set_path(config: Any, path: list[str], full: str, text: str | None, valid: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(config) if f.init}
    name = path[0]
    if name not in fields:
        raise ValueError(f"unknown config key {full!r}; valid keys: {valid}")
    current = getattr(config, name)
    if len(path) > 1:
        if not (dataclasses.is_dataclass(current) and not isinstance(current, type)):
            raise ValueError(
                f"unknown config key {full!r}: {name!r} is not a nested config; valid keys: {valid}"
            )
        return dataclasses.replace(
            config, **{name: _set_path(current, path[1:], full, text, valid)}
        )
    tp = typing.get_type_hints(type(config)).get(name, Any)
    if text is None:
        if tp is bool or (_union_args(tp) and bool in _union_args(tp)):
            value: Any = True
        else:
            raise ValueError(f"--{full} needs a value (--{full} VALUE or --{full}=VALUE)")
    else:
        value = _parse_text(full, tp, text)
    return dataclasses.replace(config, **{name: value})


def load_config_json(path: str) -> dict[str, Any]:
    """Reads a config dict written by the training loop (``config.json``)."""
    with open(path) as f:
        return json.load(f)
