"""Command line of the translation experiment: ``python -m experiments.translate {train,...}``.

Only parsing lives here (with :mod:`experiments.scaffold`); the work is in the package's
modules. ``train`` takes ``--field-name VALUE`` for every field of
:class:`~experiments.translate.config.TranslateConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

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
from experiments.translate.config import (
    ALIASES,
    ATTENTIONS,
    CELLS,
    PAIRS,
    QUICK,
    TARGET_TOKENS,
    TranslateConfig,
    validate_config,
)
from experiments.translate.input_pipeline import MAX_NUMBER

PROG = "python -m experiments.translate"
DESCRIPTION = """English number words to French or German with a recurrent encoder-decoder.

  train      train (or resume):   train --workdir runs/translate_fr [--quick] [--pair en-de]
  translate  translate text:      translate --workdir W [--beam 4] "forty-two" ...  (or stdin)
  evaluate   test-split metrics:  evaluate --workdir W   (JSON: exact match, BLEU, chrF)
  compare    attention vs none:   compare [--quick]  (writes experiments/results/translate)
  heatmaps   attention weights:   heatmaps --workdir W [--numbers 34 342571]  (PNG)
"""

HELP = {
    "pair": "language pair (default en-fr)",
    "attention": "attention score, or none for a plain encoder-decoder (default additive)",
    "cell": "recurrent cell (default lstm)",
    "layers": "encoder and decoder layers (default 1)",
    "hidden": "hidden units per layer (default 128)",
    "total_steps": "total training steps",
    "seed": "initialisation seed",
    "reverse_source": "read the source backwards (Sutskever et al. 2014)",
    "bidirectional": "bidirectional encoder (default true)",
}


def _config_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(
        p,
        TranslateConfig,
        aliases=ALIASES,
        help=HELP,
        choices={
            "pair": PAIRS,
            "attention": ATTENTIONS,
            "cell": CELLS,
            "target_tokens": TARGET_TOKENS,
        },
        title="configuration (every field of TranslateConfig; --field_name also works)",
    )


def _train_config(args: argparse.Namespace) -> TranslateConfig:
    from experiments.translate.train import saved_config

    config = train_config(
        args,
        saved_config(args.workdir),
        TranslateConfig(),
        TranslateConfig(**QUICK),
        validate_config,
    )
    return config


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.translate.train import train_and_evaluate

    return train_and_evaluate(_train_config(args), args.workdir)


def _read_inputs(args: argparse.Namespace) -> list[str]:
    if args.text:
        return list(args.text)
    return [line.rstrip("\n") for line in sys.stdin]


def _translate(args: argparse.Namespace) -> list[str]:
    at_least("--beam", args.beam, 1)
    at_least("--length-penalty", args.length_penalty, 0)
    from experiments.translate.train import restore
    from experiments.translate.translate import check_inputs, translate_texts

    texts = _read_inputs(args)
    run = restore(args.workdir)
    check_inputs(texts, run.dataset)  # every input checked before anything is printed
    out = translate_texts(
        run.model,
        run.params,
        run.dataset,
        run.config,
        texts,
        beam=args.beam,
        length_penalty=args.length_penalty,
    )
    for line in out:
        print(line)
    return out


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    at_least("--length-penalty", args.length_penalty, 0)
    beams = tuple(args.beams)
    for k in beams:
        at_least("--beams", k, 1)
    from experiments.scaffold import write_json
    from experiments.translate.train import restore
    from experiments.translate.translate import evaluate_model

    run = restore(args.workdir)
    out = evaluate_model(
        run.model,
        run.params,
        run.dataset,
        run.config,
        split=args.split,
        beams=beams,
        length_penalty=args.length_penalty,
    )
    out["step"] = run.step
    write_json(f"{args.workdir}/evaluation_{args.split}.json", out, indent=2)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return out


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.translate.compare import compare

    if args.variants:
        variants = args.variants.split(",")
    else:
        variants = None
    base = TranslateConfig(**QUICK) if args.quick else TranslateConfig()
    base = apply_overrides(base, args)
    validate_config(base)
    summary = compare(
        args.root,
        base,
        variants=variants,
        out_dir=args.out,
        name=args.name,
        command=args.command_line,
    )
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def _heatmaps(args: argparse.Namespace) -> dict[str, Any]:
    for n in args.numbers:
        in_range("--numbers", n, 0, MAX_NUMBER)
    from experiments.translate.compare import write_heatmaps
    from experiments.translate.train import restore

    run = restore(args.workdir)
    if not run.model.attentional:
        raise UsageError(
            f"--workdir: expected a model with attention, got {args.workdir} with --attention none"
        )
    out = write_heatmaps(run, args.workdir, args.numbers, args.out, args.name)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return out


def parser() -> ArgumentParser:
    """The command line's parser (``train``, ``translate``, ``evaluate``, ``compare``)."""
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
        description="Train (or resume) an encoder-decoder on number words. Every field of "
        "TranslateConfig can be set with --field-name VALUE; the common ones come first.",
        epilog="A run directory remembers its configuration and data: running train again on "
        "it resumes exactly, and flags given again override the training fields.",
    )
    p.add_argument("--workdir", required=True, help="run directory")
    p.add_argument("--quick", action="store_true", help="a small model on 8,000 pairs (about 20 s)")
    _config_arguments(p)
    p.set_defaults(handler=_train)

    p = subs.add_parser(
        "translate",
        help="translate English number words",
        description="Translate each TEXT argument, or each line of standard input when none is "
        "given; prints one translation per line, in input order.",
    )
    p.add_argument("--workdir", required=True, help="a trained run directory")
    p.add_argument("--beam", type=int, default=4, help="beam size, 1 = greedy (default 4)")
    p.add_argument("--length-penalty", type=float, default=0.6, help="GNMT alpha (default 0.6)")
    p.add_argument("text", nargs="*", help="English number words, e.g. 'forty-two'")
    p.set_defaults(handler=_translate)

    p = subs.add_parser(
        "evaluate",
        help="metrics of a run as JSON",
        description="Exact match, BLEU and chrF (sacrebleu) on the test split for greedy, "
        "beam 4 and beam 8, and exact match by source length; prints JSON and writes "
        "evaluation_<split>.json in the run directory.",
    )
    p.add_argument("--workdir", required=True, help="a trained run directory")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument(
        "--beams", type=int, nargs="+", default=[1, 4, 8], help="beam sizes (default 1 4 8)"
    )
    p.add_argument("--length-penalty", type=float, default=0.6, help="GNMT alpha (default 0.6)")
    p.set_defaults(handler=_evaluate)

    from experiments.translate.compare import HEATMAP_NUMBERS, RESULTS_DIR, VARIANTS

    p = subs.add_parser(
        "compare",
        help="attention vs plain encoder-decoder at equal parameter budgets",
        description="Trains additive, dot, no attention and no attention with a reversed "
        "source (hidden sizes matched to the additive model's parameter count), evaluates "
        "each and writes JSON, Markdown and PNGs. Configuration flags override the base.",
    )
    p.add_argument("--root", default="runs/translate_compare", help="run directories go here")
    p.add_argument("--quick", action="store_true", help="start from the --quick configuration")
    p.add_argument(
        "--variants", default=None, help=f"comma-separated subset of {','.join(VARIANTS)}"
    )
    p.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    p.add_argument("--name", default="attention", help="output file stem")
    _config_arguments(p)
    p.set_defaults(handler=_compare)

    p = subs.add_parser(
        "heatmaps",
        help="attention heat-maps of a run (PNG)",
        description="Draws the attention weights of the run's own beam-4 translations of a few "
        "numbers to <out>/<name>.png, with the tokens in <name>.json.",
    )
    p.add_argument("--workdir", required=True, help="a trained run directory with attention")
    p.add_argument(
        "--numbers", type=int, nargs="+", default=list(HEATMAP_NUMBERS), help="numbers to draw"
    )
    p.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    p.add_argument("--name", default=None, help="file stem (default heatmaps_<pair>_<run>)")
    p.set_defaults(handler=_heatmaps)
    return top


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``python -m experiments.translate``; returns the subcommand's result."""
    return run(parser(), argv)


if __name__ == "__main__":
    main()
