"""Checks of an experiment's config dataclass, and reading back the config a run was trained with.

Every experiment validates its config before anything is written, names each field by its
command-line option, refuses to resume a run with another model, and reads ``config.json`` back
from a run directory. The wording of those errors is the same everywhere, so it lives here once.

Example:
  >>> import dataclasses
  >>> from experiments.scaffold.configs import FieldChecks
  >>> @dataclasses.dataclass
  ... class Config:
  ...     total_steps: int = 0
  >>> FieldChecks(Config(), {"total_steps": ("--steps",)}).ints(["total_steps"], 1)
  Traceback (most recent call last):
  ...
  experiments.scaffold.cli.UsageError: --steps: expected an int >= 1, got 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from experiments.scaffold.cli import UsageError, apply_overrides
from seqjax.train import config_from_dict, optimizer_from_config

__all__ = ["FieldChecks", "check_resume", "option_name", "read_saved_config", "train_config"]

_ConfigT = TypeVar("_ConfigT")


def option_name(name: str, aliases: Mapping[str, Sequence[str]]) -> str:
    """The command-line option of a config field: its first alias, else ``--field-name``.

    Example:
      >>> option_name("total_steps", {"total_steps": ("--steps",)}), option_name("seq_len", {})
      ('--steps', '--seq-len')
    """
    return aliases[name][0] if name in aliases else "--" + name.replace("_", "-")


class FieldChecks:
    """Range and choice checks of one config, raising :class:`UsageError` that names the option.

    Args:
      config: the config dataclass instance.
      aliases: field name -> its command-line options (the first one is named in errors).
    """

    def __init__(self, config: Any, aliases: Mapping[str, Sequence[str]]):
        self.config = config
        self.aliases = aliases

    def flag(self, name: str) -> str:
        """The option of field ``name`` (see :func:`option_name`)."""
        return option_name(name, self.aliases)

    def bad(self, name: str, expected: str) -> UsageError:
        """The error for field ``name``: ``--option: expected <expected>, got <value>``."""
        return UsageError(
            f"{self.flag(name)}: expected {expected}, got {getattr(self.config, name)!r}"
        )

    def one_of(self, name: str, allowed: Sequence[str]) -> None:
        """Field ``name`` must be one of ``allowed``."""
        if getattr(self.config, name) not in allowed:
            raise self.bad(name, f"one of {', '.join(allowed)}")

    def ints(self, names: Iterable[str], minimum: int) -> None:
        """Each field in ``names`` must be an int (not a bool) ``>= minimum``."""
        for name in names:
            v = getattr(self.config, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise self.bad(name, f"an int >= {minimum}")

    def non_negative(self, names: Iterable[str]) -> None:
        """Each field in ``names`` must be a number ``>= 0``."""
        for name in names:
            if not getattr(self.config, name) >= 0:
                raise self.bad(name, "a number >= 0")

    def optimizer(self) -> None:
        """A positive learning rate, a warmup shorter than the run for the cosine schedule, and
        whatever else :func:`seqjax.train.optimizer_from_config` refuses."""
        config = self.config
        if not (config.learning_rate or 0) > 0:
            raise self.bad("learning_rate", "a number > 0")
        if config.schedule == "cosine" and config.warmup_steps >= config.total_steps:
            raise UsageError(
                f"--warmup-steps: expected fewer than --steps {config.total_steps} for the cosine "
                f"schedule, got {config.warmup_steps}"
            )
        try:
            optimizer_from_config(config)
        except ValueError as e:
            raise UsageError(f"expected a usable optimizer configuration: {e}") from None


def check_resume(
    saved: Any,
    config: Any,
    architecture: Iterable[str],
    aliases: Mapping[str, Sequence[str]],
    *,
    other: str = "model or data",
) -> None:
    """Raises :class:`UsageError` if ``config`` changes a field a resumed run cannot change.

    Args:
      saved: the config the run directory was trained with.
      config: the config asked for now.
      architecture: the fields that fix parameter shapes or data.
      aliases: field name -> command-line options.
      other: what a new ``--workdir`` is for, in the message (``"model or text"``, ...).
    """
    for name in architecture:
        old, new = getattr(saved, name), getattr(config, name)
        if old != new:
            raise UsageError(
                f"{option_name(name, aliases)}: expected the run's own value {old!r} to resume "
                f"it, got {new!r} (use a new --workdir for another {other})"
            )


def read_saved_config(workdir: str, config_type: type[_ConfigT], what: str) -> _ConfigT | None:
    """The config a run directory was trained with (its ``config.json``), or None if it has none.

    Args:
      workdir: the run directory.
      config_type: the experiment's config dataclass.
      what: the experiment's name, for the error (``"char_lm"``, ``"translate"``, ...).

    Raises:
      UsageError: ``config.json`` exists but does not hold a ``config_type``.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return config_from_dict(config_type, json.load(f))
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(
            f"--workdir: expected a {what} run directory, got {path!r} that does not hold a "
            f"{what} configuration ({e})"
        ) from None


def train_config(
    args: argparse.Namespace,
    saved: _ConfigT | None,
    default: _ConfigT,
    quick: _ConfigT,
    validate: Callable[[_ConfigT], None],
) -> _ConfigT:
    """The config of a ``train`` command, validated.

    A rerun resumes: the base is the run directory's ``saved`` config (``--quick`` is then ignored,
    with a note on stderr); a new run starts from ``quick`` with ``--quick``, else ``default``.
    The command line's ``--field`` options override the base.

    Args:
      args: the parsed ``train`` arguments (``workdir``, ``quick`` and the config options).
      saved: :func:`read_saved_config` of ``args.workdir``.
      default: the experiment's default config.
      quick: its ``--quick`` config.
      validate: the experiment's ``validate_config``.
    """
    base = saved
    if base is None:
        base = quick if args.quick else default
    elif args.quick:
        print(
            f"note: {args.workdir} already holds a run; --quick is ignored and its saved "
            "configuration is used",
            file=sys.stderr,
        )
    config = apply_overrides(base, args)
    validate(config)
    return config
