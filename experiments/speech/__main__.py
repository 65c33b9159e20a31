"""Command line of the spoken-digit recogniser: ``python -m experiments.speech {voices,...}``.

Only parsing lives here (with :mod:`experiments.scaffold`); the work is in the package's
modules. ``train`` takes ``--field-name VALUE`` for every field of
:class:`~experiments.speech.config.SpeechConfig`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from experiments.scaffold import (
    ArgumentParser,
    add_config_arguments,
    add_subcommands,
    at_least,
    run,
    train_config,
)
from experiments.speech.config import ALIASES, CELLS, QUICK, SpeechConfig, validate_config
from experiments.speech.input_pipeline import SPLITS, voices

PROG = "python -m experiments.speech"
DESCRIPTION = """Spoken digit strings (espeak-ng, held-out voices): bidirectional LSTM + CTC.

  voices      a split's espeak-ng voices:  voices --split test
  train       train (or resume) a model:    train --workdir runs/speech [--quick] [--steps N]
  transcribe  digits spoken in WAV files:   transcribe --workdir runs/speech [--beam K] a.wav ...
  evaluate    CER/WER on the test voices:   evaluate --workdir runs/speech
"""

HELP = {
    "total_steps": "total training steps (default 2000)",
    "seed": "initialisation and data-order seed",
    "cell": "recurrent cell (default lstm)",
    "layers": "stacked layers (default 2)",
    "hidden": "hidden units per direction and layer (default 128)",
    "bidirectional": "bidirectional layers (default true)",
    "proj": "LSTMP projection size",
    "subsample": "frames stacked per time step (default 4)",
}


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="runs/speech", help="run directory (default: %(default)s)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small model on 800 utterances (~35 s once synthesised)",
    )
    add_config_arguments(
        p,
        SpeechConfig,
        aliases=ALIASES,
        help=HELP,
        choices={"cell": CELLS},
        title="configuration (every field of SpeechConfig; --field_name also works)",
    )


def _train_config(args: argparse.Namespace) -> tuple[SpeechConfig, str]:
    from experiments.speech.train import saved_config

    config = train_config(
        args, saved_config(args.workdir), SpeechConfig(), SpeechConfig(**QUICK), validate_config
    )
    return config, args.workdir


def _voices(args: argparse.Namespace) -> list[str]:
    names = voices(args.split)
    print("\n".join(names))
    return names


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.speech.train import train_and_evaluate

    config, workdir = _train_config(args)
    return train_and_evaluate(config, workdir)


def _transcribe(args: argparse.Namespace) -> list[str]:
    from experiments.speech.train import transcribe_files

    at_least("--beam", args.beam, 0)
    texts = transcribe_files(args.workdir, args.files, beam=args.beam)
    print("\n".join(texts))
    return texts


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.speech.train import evaluate_run, plot_posteriors

    out = evaluate_run(args.workdir)
    if args.plot:
        out["plot"] = plot_posteriors(args.workdir, args.plot)
    print(json.dumps(out, indent=2))
    return out


def parser() -> ArgumentParser:
    """The command line's parser (``voices``, ``train``, ``transcribe``, ``evaluate``)."""
    top = ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run a subcommand with --help for its options.",
    )
    subs = add_subcommands(top)

    p = subs.add_parser("voices", help="a split's voices, one espeak-ng -v argument per line")
    p.add_argument("--split", required=True, choices=SPLITS)
    p.set_defaults(handler=_voices)

    p = subs.add_parser(
        "train",
        help="train (or resume) a model",
        description="Train (or resume) a recogniser. Every field of SpeechConfig can be set "
        "with --field-name VALUE; the common ones come first.",
        epilog="A run directory remembers its configuration: running train again on it resumes "
        "with that configuration, and flags given again override it.",
    )
    _train_arguments(p)
    p.set_defaults(handler=_train)

    p = subs.add_parser(
        "transcribe",
        help="digits spoken in WAV files",
        description="Print the digits spoken in each WAV file (mono or stereo, any sample "
        "rate), one line per file.",
    )
    p.add_argument("--workdir", default="runs/speech")
    p.add_argument("--beam", type=int, default=0, help="beam width (default 0: greedy)")
    p.add_argument("files", nargs="+", metavar="FILE.wav")
    p.set_defaults(handler=_transcribe)

    p = subs.add_parser(
        "evaluate",
        help="CER/WER on the held-out test voices",
        description="Character and word error rates of greedy, beam and beam + LM decoding "
        "on the test voices, as JSON.",
    )
    p.add_argument("--workdir", default="runs/speech")
    p.add_argument("--plot", default=None, help="also write a PNG of CTC's frame posteriors")
    p.set_defaults(handler=_evaluate)
    return top


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``python -m experiments.speech``; returns the subcommand's result."""
    return run(parser(), argv)


if __name__ == "__main__":
    main()
