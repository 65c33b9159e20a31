"""Command lines of the experiments: subcommands, config overrides, one-line user errors.

Why argparse: it is in the standard library (no dependency for a user who only wants to run an
experiment), every Python user knows its ``--help`` and error conventions, and with the field
types read from a config dataclass it gives what ml_collections/absl flags or tyro would give
here (``--field-name VALUE`` for every field, typed, listed in ``--help``) without a second
flag registry or global state. The Flax examples' ``config.py`` + flags split maps onto it
directly: defaults live in a frozen dataclass, the command line only overrides fields.

Conventions (``DESIGN.md``): a mistake a user can make (a missing file, a bad value, an empty
run directory) is a :class:`UsageError`; :func:`run` turns it, like argparse's own errors, into
``<prog>: error: <what was expected, what arrived>`` on stderr and exit status 2, one line and
no traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

__all__ = [
    "ArgumentParser",
    "UsageError",
    "add_config_arguments",
    "add_subcommands",
    "apply_overrides",
    "config_from_argv",
    "run",
    "value_parser",
]


class UsageError(ValueError):
    """A mistake on the command line or in its inputs; the CLI prints it as one line, exit 2.

    It is a :class:`ValueError`, so code calling an experiment's functions directly can catch
    it as one.
    """


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that an error is one line: ``prog: error: message`` (no usage dump).

    Example:
      >>> p = ArgumentParser(prog="demo")
      >>> _ = p.add_argument("--n", type=int)
      >>> try:
      ...     p.parse_args(["--n", "x"])
      ... except SystemExit as e:
      ...     print(e.code)
      2
    """

    def error(self, message: str) -> NoReturn:
        message = " ".join(str(message).split())  # one line, whatever the message held
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_subcommands(parser: argparse.ArgumentParser) -> Any:
    """The subparsers action of ``parser`` (each subparser is an :class:`ArgumentParser`).

    A subcommand registers its handler with ``sub.set_defaults(handler=fn)``; :func:`run`
    calls ``fn(args)``.
    """
    return parser.add_subparsers(title="commands", dest="command")


# -- config dataclass fields as options ---------------------------------------------------------

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false/1/0/yes/no, got {text!r}")


def _scalar_parser(tp: Any) -> Callable[[str], Any]:
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):

        def parse(text: str) -> Any:
            try:
                return tp(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {'an' if tp is int else 'a'} {tp.__name__}, got {text!r}"
                ) from None

        return parse
    raise TypeError(f"fields of type {tp!r} cannot be set from the command line")


def value_parser(tp: Any) -> Callable[[str], Any]:
    """A function parsing one command-line string into a value of the field type ``tp``.

    Supports ``int``, ``float``, ``str``, ``bool`` (``true/false/1/0/yes/no``), ``X | None``
    (``none``) and ``tuple[X, ...]`` (comma-separated).

    Example:
      >>> value_parser(int | None)("none") is None, value_parser(tuple[int, ...])("1,2")
      (True, (1, 2))
    """
    args = _union_args(tp)
    if args is not None:
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"fields of type {tp!r} cannot be set from the command line")
        base = value_parser(inner[0])

        def optional(text: str) -> Any:
            if text.lower() in ("none", "null") and type(None) in args:
                return None
            return base(text)

        return optional
    if typing.get_origin(tp) is tuple:
        targs = typing.get_args(tp)
        elt = _scalar_parser(targs[0] if targs else str)
        return lambda text: tuple(elt(s.strip()) for s in text.split(",") if s.strip())
    return _scalar_parser(tp)


def add_config_arguments(
    parser: argparse.ArgumentParser,
    config_cls: type,
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
    help: Mapping[str, str] | None = None,
    choices: Mapping[str, Sequence[Any]] | None = None,
    exclude: Sequence[str] = (),
    title: str | None = None,
) -> None:
    """Adds ``--field-name VALUE`` for every field of the config dataclass ``config_cls``.

    Options default to ``argparse.SUPPRESS``: only fields given on the command line appear in
    the namespace, so :func:`apply_overrides` changes nothing else (a resumed run keeps its
    saved values). Options listed in ``help`` come first, in that order.

    Args:
      parser: the (sub)parser.
      config_cls: a dataclass type.
      aliases: field name -> extra option strings (e.g. ``{"total_steps": ["--steps"]}``).
      help: field name -> help text; other fields show their default.
      choices: field name -> allowed values.
      exclude: fields without an option.
      title: put the options in an argument group of this title.
    """
    aliases, help, choices = aliases or {}, help or {}, choices or {}
    hints = typing.get_type_hints(config_cls)
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    order = [n for n in help if n in fields] + [n for n in fields if n not in help]
    target = parser.add_argument_group(title) if title else parser
    for name in order:
        if name in exclude:
            continue
        f, tp = fields[name], hints[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        flags = list(aliases.get(name, ())) + [f"--{name.replace('_', '-')}"]
        kw: dict[str, Any] = dict(
            dest=name,
            metavar=flags[0].lstrip("-").replace("-", "_").upper(),
            default=argparse.SUPPRESS,
            type=value_parser(tp),
            help=help.get(name, f"default: {default}"),
        )
        if tp is bool:
            kw.update(nargs="?", const=True, metavar="BOOL")  # a bare --flag means true
        if name in choices:
            kw["choices"] = list(choices[name])
        target.add_argument(*flags, **kw)


def apply_overrides(config: Any, args: argparse.Namespace) -> Any:
    """``config`` with every field present in ``args`` replaced by its value."""
    names = {f.name for f in dataclasses.fields(config) if f.init}
    values = {k: v for k, v in vars(args).items() if k in names}
    return dataclasses.replace(config, **values)


def config_from_argv(config: Any, argv: Sequence[str], *, prog: str | None = None) -> Any:
    """``config`` (a dataclass instance) with ``--field-name VALUE`` overrides from ``argv``.

    The one-call form of :func:`add_config_arguments` + :func:`apply_overrides` for a script
    whose whole command line is config fields (``--field_name`` spellings work too).

    Raises:
      SystemExit: status 2 with a one-line ``prog: error: ...`` for an unknown option or a
        value that does not parse as its field's type.

    Example:
      >>> import seqjax
      >>> config_from_argv(seqjax.train.TrainConfig(), ["--total_steps=7"]).total_steps
      7
    """
    parser = ArgumentParser(prog=prog)
    add_config_arguments(parser, type(config))
    return apply_overrides(config, parser.parse_args(_normalise(argv)))


# -- running ------------------------------------------------------------------------------------


def _normalise(argv: Sequence[str]) -> list[str]:
    """``--learning_rate=1`` -> ``--learning-rate=1``: option names take either spelling."""
    out = []
    for a in argv:
        if a.startswith("--") and len(a) > 2:
            key, eq, val = a[2:].partition("=")
            a = f"--{key.replace('_', '-')}{eq}{val}"
        out.append(a)
    return out


def run(
    parser: ArgumentParser,
    argv: Sequence[str] | None = None,
    *,
    default_command: str | None = None,
) -> Any:
    """Parses ``argv`` and calls the chosen subcommand's handler; user errors exit 2.

    Args:
      parser: the top-level parser; every subcommand set ``handler`` (and the scaffold sets
        ``parser``, so an error names the subcommand's ``prog``). A parser without
        subcommands sets ``handler`` itself. The handler also finds ``args.command_line``,
        the command as typed (for results files). Every (sub)command also gets the
        distributed options of :mod:`experiments.scaffold.distributed` (``--coordinator``,
        ``--num-processes``, ``--process-id``, ``--distributed-auto``,
        ``--heartbeat-timeout``, defaults from the environment); the process joins a
        multi-process run before the handler is called when they ask for one.
      argv: the arguments (default ``sys.argv[1:]``).
      default_command: the subcommand used when the first argument names none (so
        ``prog --flag`` means ``prog default_command --flag``).

    Returns:
      What the handler returns.

    Raises:
      SystemExit: status 2 after printing ``prog: error: ...`` for a :class:`UsageError` or
        an argparse error; status 0 after ``--help`` or, with subcommands, no arguments.
    """
    argv = _normalise(sys.argv[1:] if argv is None else argv)
    subs = next(
        (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),  # noqa: SLF001
        None,
    )
    if subs is not None:
        if not argv and default_command is None:
            parser.print_help()
            raise SystemExit(0)
        if default_command and (not argv or argv[0] not in [*subs.choices, "-h", "--help"]):
            argv = [default_command, *argv]
        for name, sub in subs.choices.items():
            sub.set_defaults(parser=sub, command=name)
    # Every command takes the distributed settings (--coordinator, ...; see distributed.py).
    from experiments.scaffold.distributed import add_distributed_arguments, initialize_from_args

    for p in subs.choices.values() if subs is not None else (parser,):
        add_distributed_arguments(p)
    args, extra = parser.parse_known_args(argv)
    active = getattr(args, "parser", parser)
    if extra:  # named by the subcommand's parser, not the top-level one
        active.error(f"unrecognized arguments: {' '.join(extra)}")
    args.command_line = " ".join([parser.prog, *argv])
    if getattr(args, "handler", None) is None:
        active.error("expected a command, got none")
    try:
        initialize_from_args(args)
        return args.handler(args)
    except UsageError as e:
        active.error(str(e))
