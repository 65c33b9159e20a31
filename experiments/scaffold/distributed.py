"""Distributed settings of every experiment's command line: one run over several processes.

:func:`~experiments.scaffold.cli.run` adds these options to every (sub)command and calls
:func:`initialize_from_args` before the handler, so each experiment trains data-parallel over
processes without code of its own (``seqjax.train.train_loop`` does the rest):

- ``--coordinator HOST:PORT``, ``--num-processes P``, ``--process-id I`` (defaults from the
  environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``);
- ``--distributed-auto``: let JAX detect the cluster (TPU pod slices, SLURM, Open MPI,
  Kubernetes);
- ``--heartbeat-timeout S``: seconds after which a silent process counts as dead and the
  others stop with an error.

Given none of them, nothing happens: a single-process run. In a multi-process run only process
0 prints to stdout (the others' stdout goes to ``os.devnull``; stderr stays, so every
process's errors are seen), and :func:`~experiments.scaffold.results.write_json`-style files
should be written by process 0 only (:func:`is_main_process`).
"""

from __future__ import annotations

import argparse
import os
import sys

from experiments.scaffold.cli import UsageError

__all__ = [
    "DISTRIBUTED_OPTIONS",
    "add_distributed_arguments",
    "initialize_from_args",
    "is_main_process",
]

#: The option strings this module adds.
DISTRIBUTED_OPTIONS = (
    "--coordinator",
    "--num-processes",
    "--process-id",
    "--distributed-auto",
    "--heartbeat-timeout",
)


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"environment variable {name}: expected an int, got {text!r}") from None


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the distributed options (an argument group) to ``parser``, unless present.

    Example:
      >>> from experiments.scaffold import ArgumentParser
      >>> p = ArgumentParser(prog="demo")
      >>> add_distributed_arguments(p)
      >>> a = p.parse_args(["--num-processes", "2", "--process-id", "1"])
      >>> a.num_processes, a.process_id, a.coordinator is None
      (2, 1, True)
    """
    if "--coordinator" in parser._option_string_actions:  # noqa: SLF001
        return
    g = parser.add_argument_group(
        "distributed run (every process gets the same command, with its own --process-id)"
    )
    g.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=None,
        help="address of process 0's coordination service (env JAX_COORDINATOR_ADDRESS)",
    )
    g.add_argument(
        "--num-processes",
        type=int,
        metavar="P",
        default=None,
        help="number of processes (env JAX_NUM_PROCESSES)",
    )
    g.add_argument(
        "--process-id",
        type=int,
        metavar="I",
        default=None,
        help="this process's index in [0, P) (env JAX_PROCESS_ID)",
    )
    g.add_argument(
        "--distributed-auto",
        action="store_true",
        help="let JAX detect the cluster (TPU pod slice, SLURM, Open MPI, Kubernetes)",
    )
    g.add_argument(
        "--heartbeat-timeout",
        type=int,
        metavar="S",
        default=100,
        help="seconds after which a silent process counts as dead (default: %(default)s)",
    )


def initialize_from_args(args: argparse.Namespace, *, quiet_workers: bool = True) -> bool:
    """Joins a multi-process run if the options or the environment ask for one.

    Must run before any other JAX call of the process.

    Args:
      args: parsed options (from :func:`add_distributed_arguments`; missing ones count as
        not given).
      quiet_workers: in processes other than 0, send stdout to ``os.devnull``.

    Returns:
      True if this process joined a multi-process run.

    Raises:
      UsageError: incomplete or invalid settings (e.g. a process id without a coordinator).
    """
    from seqjax import train

    coordinator = getattr(args, "coordinator", None) or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num = getattr(args, "num_processes", None)
    num = _env_int("JAX_NUM_PROCESSES") if num is None else num
    pid = getattr(args, "process_id", None)
    pid = _env_int("JAX_PROCESS_ID") if pid is None else pid
    auto = bool(getattr(args, "distributed_auto", False))
    heartbeat = getattr(args, "heartbeat_timeout", 100)
    if heartbeat is None or heartbeat < 1:
        raise UsageError(f"--heartbeat-timeout: expected seconds >= 1, got {heartbeat}")
    try:
        joined = train.initialize(coordinator, num, pid, auto=auto, heartbeat_timeout_s=heartbeat)
    except ValueError as e:
        raise UsageError(f"--coordinator/--num-processes/--process-id: {e}") from None
    if joined and quiet_workers and not is_main_process():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    return joined


def is_main_process() -> bool:
    """True in process 0 (and in a single-process run): the process that writes files."""
    import jax

    return jax.process_index() == 0
