"""Checks of command-line inputs, made before anything is written.

Each raises :class:`~experiments.scaffold.cli.UsageError` naming what was expected and what
arrived. An experiment calls them before it creates or writes anything, so a user's mistake
never touches an existing run directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from experiments.scaffold.cli import UsageError

__all__ = [
    "at_least",
    "check_output_dir",
    "check_run_dir",
    "in_range",
]


def at_least(flag: str, value: int | float | None, minimum: int | float) -> None:
    """Raises :class:`UsageError` unless ``value >= minimum`` (``None`` passes).

    Example:
      >>> at_least("--steps", 0, 1)
      Traceback (most recent call last):
      ...
      experiments.scaffold.cli.UsageError: --steps: expected a number >= 1, got 0
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise UsageError(f"{flag}: expected a number >= {minimum}, got {value!r}")


def in_range(flag: str, value: float, low: float, high: float, *, closed_high: bool = True) -> None:
    """Raises :class:`UsageError` unless ``low <= value <= high`` (``< high`` if not closed)."""
    ok = low <= value <= high if closed_high else low <= value < high
    if not ok:
        bracket = "]" if closed_high else ")"
        raise UsageError(f"{flag}: expected a value in [{low}, {high}{bracket}, got {value!r}")


def check_output_dir(flag: str, path: str | os.PathLike) -> str:
    """Checks that ``path`` is, or can be created as, a writable directory; creates nothing.

    Args:
      flag: the option named in the message (e.g. ``--workdir``).
      path: the directory.

    Returns:
      The absolute path.

    Raises:
      UsageError: ``path`` is an existing non-directory, is not writable, or its nearest
        existing ancestor is not a writable directory.
    """
    full = os.path.abspath(os.fspath(path))
    if os.path.exists(full):
        if not os.path.isdir(full):
            raise UsageError(f"{flag}: expected a directory, got the file {full!r}")
        if not os.access(full, os.W_OK | os.X_OK):
            raise UsageError(f"{flag}: expected a writable directory, got {full!r} (read-only)")
        return full
    parent = os.path.dirname(full)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(
            f"{flag}: expected a directory path, got {full!r} (its ancestor {parent!r} is a file)"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag}: expected a writable location, got {full!r} ({parent!r} is read-only)"
        )
    return full


def check_run_dir(flag: str, path: str | os.PathLike, needs: Iterable[str], how: str) -> str:
    """Checks that ``path`` is a run directory holding every entry of ``needs``.

    Args:
      flag: the option named in the message.
      path: the run directory.
      needs: file or folder names that must exist in it.
      how: the command that makes such a directory (shown in the message).

    Returns:
      The absolute path.

    Raises:
      UsageError: ``path`` is missing, not a directory, or lacks an entry.
    """
    full = os.path.abspath(os.fspath(path))
    if not os.path.isdir(full):
        what = "nothing" if not os.path.exists(full) else "a file"
        raise UsageError(
            f"{flag}: expected a run directory made by `{how}`, got {what} at {full!r}"
        )
    missing = [n for n in needs if not os.path.exists(os.path.join(full, n))]
    if missing:
        raise UsageError(
            f"{flag}: expected a run directory made by `{how}`, got {full!r} without "
            f"{', '.join(missing)}"
        )
    return full
