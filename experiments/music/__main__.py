"""Command line of the chorale models: ``python -m experiments.music {train,generate,...}``.

Only parsing lives here (with :mod:`experiments.scaffold`); the work is in the package's
modules. ``train`` takes ``--field-name VALUE`` for every field of
:class:`~experiments.music.config.MusicConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from experiments.music.compare import BUDGETS, RESULTS_DIR, compare
from experiments.music.config import ALIASES, CELLS, OUTPUTS, QUICK, MusicConfig, validate_config
from experiments.music.generate import check_out_path, generate
from experiments.music.train import (
    TRAIN_COMMAND,
    evaluate_run,
    restore,
    saved_config,
    train_and_evaluate,
)
from experiments.scaffold import (
    ArgumentParser,
    UsageError,
    add_config_arguments,
    add_subcommands,
    apply_overrides,
    at_least,
    check_run_dir,
    run,
    train_config,
)

PROG = "python -m experiments.music"
DESCRIPTION = """Polyphonic music on Bach chorales (music21's corpus), NLL per frame, MIDI.

  train     train (or resume):     train --workdir runs/chorales [--quick] [--cell rnn|lstm|gru]
                                   [--hidden N] [--output bernoulli|nade] [--steps N] [--seed S]
  generate  sample a chorale:      generate --workdir runs/chorales --out FILE.mid [--frames N]
                                   [--temperature T] [--seed S] [--primer BWV]
  evaluate  NLL per frame (JSON):  evaluate --workdir runs/chorales
  compare   the results grid:      compare (writes experiments/results/music)
"""

HELP = {
    "cell": "recurrent cell (default lstm)",
    "hidden": "hidden units (default: about 20K parameters: rnn 80, lstm 35, gru 42)",
    "output": "bernoulli (independent keys) or nade (keys of a frame jointly)",
    "total_steps": "total training steps (default 1500)",
    "seed": "initialisation and data-order seed",
}


def _config_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(
        p,
        MusicConfig,
        aliases=ALIASES,
        help=HELP,
        choices={"cell": CELLS, "output": OUTPUTS},
        title="configuration (every field of MusicConfig; --field_name also works)",
    )


def _train(args: argparse.Namespace) -> dict[str, Any]:
    config = train_config(
        args, saved_config(args.workdir), MusicConfig(), MusicConfig(**QUICK), validate_config
    )
    return train_and_evaluate(config, args.workdir)


def _generate(args: argparse.Namespace) -> dict[str, Any]:
    at_least("--frames", args.frames, 1)
    at_least("--temperature", args.temperature, 0)
    check_run_dir("--workdir", args.workdir, ["config.json", "checkpoints"], TRAIN_COMMAND)
    check_out_path(args.out)
    out = generate(
        restore(args.workdir, "best"),
        args.out,
        frames=args.frames,
        temperature=args.temperature,
        seed=args.seed,
        primer=args.primer,
    )
    print(json.dumps(out, indent=2))
    if out["wav"] is None:
        print(
            "note: no WAV rendered (needs fluidsynth and a General MIDI soundfont: "
            "apt-get install fluidsynth fluid-soundfont-gm)",
            file=sys.stderr,
        )
    return out


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    out = evaluate_run(args.workdir, args.step)
    print(json.dumps(out, indent=2))
    return out


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    base = apply_overrides(MusicConfig(), args)
    validate_config(base)
    at_least("--seeds", args.seeds, 1)
    seeds = tuple(range(args.seeds))
    cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
    if not cells or any(c not in CELLS for c in cells):
        raise UsageError(f"--cells: expected a subset of {','.join(CELLS)}, got {args.cells!r}")
    budgets = tuple(b.strip() for b in args.budgets.split(",") if b.strip())
    unknown = [b for b in budgets if b not in BUDGETS]
    if unknown or not budgets:
        raise UsageError(
            f"--budgets: expected a subset of {','.join(BUDGETS)}, got {args.budgets!r}"
        )
    payload = compare(
        args.root,
        base,
        cells=cells,
        budgets=budgets,
        seeds=seeds,
        joint=not args.no_joint,
        bernoulli=not args.only_joint,
        out_dir=args.out,
        command=args.command_line,
    )
    print(json.dumps(payload["table"], indent=2))
    return payload


def parser() -> ArgumentParser:
    """The command line's parser (``train``, ``generate``, ``evaluate``, ``compare``)."""
    top = ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run a subcommand with --help for its options.",
    )
    subs = add_subcommands(top)

    p = subs.add_parser(
        "train",
        help="train (or resume) a model",
        description="Train (or resume) a chorale model. Every field of MusicConfig can be set "
        "with --field-name VALUE; the common ones come first.",
        epilog="A run directory remembers its configuration: running train again on it resumes.",
    )
    p.add_argument("--workdir", required=True, help="run directory")
    p.add_argument("--quick", action="store_true", help="a short run (about 10 s)")
    _config_arguments(p)
    p.set_defaults(handler=_train)

    p = subs.add_parser("generate", help="sample a chorale as MIDI (and PNG, WAV)")
    p.add_argument("--workdir", required=True, help="a trained run directory")
    p.add_argument("--out", required=True, help="the .mid file to write (PNG/WAV beside it)")
    p.add_argument("--frames", type=int, default=64, help="new frames (quarter notes)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = most likely keys")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--primer", default=None, help="BWV number of a test chorale to start from")
    p.set_defaults(handler=_generate)

    p = subs.add_parser("evaluate", help="valid/test NLL per frame as JSON")
    p.add_argument("--workdir", required=True, help="a trained run directory")
    p.add_argument("--step", type=int, default=None, help="checkpoint (default: best valid)")
    p.set_defaults(handler=_evaluate)

    p = subs.add_parser(
        "compare",
        help="the results grid",
        description="tanh RNN, LSTM and GRU at two budgets over seeds, and the RNN-NADE output; "
        "configuration flags override the shared base configuration.",
    )
    p.add_argument("--root", default="runs/music_compare", help="run directories go here")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration")
    p.add_argument("--budgets", default="20K,100K", help="comma-separated parameter budgets")
    p.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated cells")
    p.add_argument("--no-joint", action="store_true", help="skip the RNN-NADE output")
    p.add_argument("--only-joint", action="store_true", help="only the RNN-NADE output")
    p.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    _config_arguments(p)
    p.set_defaults(handler=_compare)
    return top


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``python -m experiments.music``; returns the subcommand's result."""
    return run(parser(), argv)


if __name__ == "__main__":
    main()
