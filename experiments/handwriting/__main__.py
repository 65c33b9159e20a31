"""Command line of the digit-line recogniser: ``python -m experiments.handwriting {train,...}``.

Only parsing lives here (with :mod:`experiments.scaffold`); the work is in the package's
modules. ``train`` takes ``--field-name VALUE`` for every field of
:class:`~experiments.handwriting.config.LinesConfig`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from experiments.handwriting.config import ALIASES, CELLS, QUICK, LinesConfig, validate_config
from experiments.scaffold import (
    ArgumentParser,
    add_config_arguments,
    add_subcommands,
    at_least,
    run,
    train_config,
)

PROG = "python -m experiments.handwriting"
DESCRIPTION = """Lines of real MNIST digits (held-out digit images): bidirectional LSTM + CTC,
and MNIST read pixel by pixel or row by row.

  train      train (or resume) a line recogniser:  train --workdir runs/lines [--quick]
  recognize  digits in PNG line images:            recognize --workdir runs/lines a.png ...
  evaluate   CER / line accuracy on test lines:    evaluate --workdir runs/lines [--plot x.png]
  seqmnist   sequential / permuted MNIST:          seqmnist --order row --cell lstm [--grid]
"""

HELP = {
    "total_steps": "total training steps (default 5000)",
    "seed": "initialisation and data-order seed",
    "cell": "recurrent cell (default lstm)",
    "layers": "stacked layers (default 2)",
    "hidden": "hidden units per direction and layer (default 96)",
    "bidirectional": "bidirectional layers (default true)",
    "height": "rows of a line image (default 28)",
    "cols_per_frame": "columns stacked per time step (default 2)",
    "conv_layers": "3x3 convolution + ReLU + 2-row max-pool layers before the recurrent stack",
    "conv_channels": "channels of the first convolution, doubling per layer",
    "elastic_alpha": "elastic distortion of training digits: displacement scale in pixels (0: off)",
    "elastic_sigma": "smoothness of the elastic displacement field in pixels",
}


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="runs/lines", help="run directory (default: %(default)s)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 layer of 64 units, 1,000 steps (test CER 5.8 %%; 11.3 min at load 9-10)",
    )
    add_config_arguments(
        p,
        LinesConfig,
        aliases=ALIASES,
        help=HELP,
        choices={"cell": CELLS},
        title="configuration (every field of LinesConfig; --field_name also works)",
    )


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.handwriting.train import saved_config, train_and_evaluate

    config = train_config(
        args, saved_config(args.workdir), LinesConfig(), LinesConfig(**QUICK), validate_config
    )
    return train_and_evaluate(config, args.workdir)


def _recognize(args: argparse.Namespace) -> list[str]:
    from experiments.handwriting.train import recognize_files

    at_least("--beam", args.beam, 0)
    texts = recognize_files(args.workdir, args.files, beam=args.beam)
    print("\n".join(texts))
    return texts


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.handwriting.train import evaluate_run, plot_examples

    out = evaluate_run(args.workdir, args.lines)
    if args.plot:
        out["plot"] = plot_examples(args.workdir, args.plot)
    print(json.dumps(out, indent=2))
    return out


def _seqmnist(args: argparse.Namespace) -> Any:
    from experiments.handwriting import seqmnist

    return seqmnist.main(args)


def parser() -> ArgumentParser:
    """The command line's parser (``train``, ``recognize``, ``evaluate``, ``seqmnist``)."""
    from experiments.handwriting import seqmnist

    top = ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run a subcommand with --help for its options.",
    )
    subs = add_subcommands(top)

    p = subs.add_parser(
        "train",
        help="train (or resume) a line recogniser",
        description="Train (or resume) a recogniser of digit lines. Every field of LinesConfig "
        "can be set with --field-name VALUE; the common ones come first.",
        epilog="A run directory remembers its configuration: running train again on it resumes "
        "with that configuration, and flags given again override it.",
    )
    _train_arguments(p)
    p.set_defaults(handler=_train)

    p = subs.add_parser(
        "recognize",
        help="digits in PNG line images",
        description="Print the digits written in each PNG image (one line of digits, grey-scale "
        "or RGB, any size: the height is rescaled), one line per file.",
    )
    p.add_argument("--workdir", default="runs/lines")
    p.add_argument("--beam", type=int, default=0, help="beam width (default 0: greedy)")
    p.add_argument("files", nargs="+", metavar="IMAGE.png")
    p.set_defaults(handler=_recognize)

    p = subs.add_parser(
        "evaluate",
        help="CER and line accuracy on the held-out test lines",
        description="Character error rate and whole-line accuracy of greedy and prefix beam "
        "decoding on the test lines (held-out digit images), as JSON.",
    )
    p.add_argument("--workdir", default="runs/lines")
    p.add_argument(
        "--lines",
        choices=("test", "train"),
        default="test",
        help="test: the held-out digit images (default); train: new lines of training images",
    )
    p.add_argument(
        "--plot", default=None, help="also write a PNG of example lines, readings and alignment"
    )
    p.set_defaults(handler=_evaluate)

    p = subs.add_parser(
        "seqmnist",
        help="MNIST digits read pixel by pixel, row by row or in a fixed permutation",
        description=seqmnist.DESCRIPTION,
    )
    seqmnist.add_arguments(p)
    p.set_defaults(handler=_seqmnist)
    return top


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``python -m experiments.handwriting``; returns the subcommand's result."""
    return run(parser(), argv)


if __name__ == "__main__":
    main()
