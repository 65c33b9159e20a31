"""Command line: ``python -m experiments.long_range [train] --task ...`` and ``sweep``.

Only parsing lives here (with :mod:`experiments.scaffold`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.long_range.config import RESULTS_DIR, TASKS, Config
from experiments.long_range.formal import FORMAL_TASKS
from experiments.long_range.sweep import (
    FORMAL_SWEEPS,
    SWEEPS,
    replot_sweep,
    run_formal_sweep,
    run_sweep,
)
from experiments.long_range.train import train_and_evaluate
from experiments.scaffold import (
    ArgumentParser,
    add_config_arguments,
    add_subcommands,
    apply_overrides,
    run,
)

PROG = "python -m experiments.long_range"


def _train(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "clip_norm", None) == 0:
        args.clip_norm = None  # --clip-norm 0 disables clipping
    cfg = apply_overrides(Config(), args)
    cfg = dataclasses.replace(cfg, eval_every=min(cfg.eval_every, cfg.steps))
    result = train_and_evaluate(cfg, args.workdir, log=lambda s: print(s, file=sys.stderr))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return result


def _sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.replot:
        return replot_sweep(args.task, args.quick, Path(args.out))
    return run_sweep(args.task, args.quick, Path(args.out), grid=args.grid)


def _formal(args: argparse.Namespace) -> list[dict[str, Any]]:
    spec = dict(FORMAL_SWEEPS["full"])
    tag = "formal"
    if args.task is not None:
        spec["tasks"], tag = (args.task,), f"formal_{args.task}"
    return run_formal_sweep(Path(args.out), spec=spec, tag=tag)


def parser() -> ArgumentParser:
    """The command line's parser: ``train`` (the default) and ``sweep``."""
    top = ArgumentParser(
        prog=PROG,
        description="Long-lag tasks: the adding problem and the copy memory task. Without a "
        f"command, the train options apply: {PROG} --task adding --cell lstm ...",
    )
    subs = add_subcommands(top)
    p = subs.add_parser(
        "train",
        help="train one model, print its results as one JSON line (the default command)",
        description="Train one model on one task; the last stdout line is the result JSON.",
    )
    add_config_arguments(
        p,
        Config,
        choices={"task": TASKS, "optimizer": ("adam", "sgd")},
        help={"clip_norm": "global-norm clipping threshold; 0 disables clipping"},
        exclude=(),
    )
    p.add_argument("--workdir", default=None, help="write config/history/result JSON here")
    p.set_defaults(handler=_train)

    p = subs.add_parser("sweep", help="every cell at every length (experiments 1 and 2)")
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--grid",
        choices=sorted({g for t in SWEEPS.values() for g in t} - {"full", "quick"}),
        default=None,
        help="a named grid instead of the full/quick one (new_cells: the newer cells beside "
        "LSTM and GRU; files <task>_<grid>.*)",
    )
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument(
        "--replot",
        action="store_true",
        help="rebuild the Markdown table and the figure from the saved JSON",
    )
    p.set_defaults(handler=_sweep)

    p = subs.add_parser(
        "formal",
        help="parity and modular arithmetic, trained short, tested long (every cell)",
        description="Every cell on parity and modular arithmetic without brackets, trained on "
        "lengths 1-40 and tested on 41-256; writes formal.{json,md}.",
    )
    p.add_argument(
        "--task",
        choices=FORMAL_TASKS,
        default=None,
        help="one task only (files formal_<task>.*); default both (formal.*)",
    )
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.set_defaults(handler=_formal)
    return top


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    """Command-line entry point (see the package docstring).

    Args:
      argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
      The run's result dict (also printed as the last stdout line), or the sweep's rows.
    """
    return run(parser(), argv, default_command="train")


if __name__ == "__main__":
    main()
