"""Command line of the captioning experiment: ``python -m experiments.caption {train,...}``.

Only parsing lives here (with :mod:`experiments.scaffold`); the work is in the package's
modules. ``train`` takes ``--field-name VALUE`` for every field of
:class:`~experiments.caption.config.CaptionConfig`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from experiments.caption.config import (
    ALIASES,
    ATTENTIONS,
    OBJECTS,
    QUICK,
    CaptionConfig,
    validate_config,
)
from experiments.scaffold import (
    ArgumentParser,
    UsageError,
    add_config_arguments,
    add_subcommands,
    at_least,
    check_output_dir,
    run,
    train_config,
)

PROG = "python -m experiments.caption"
DESCRIPTION = """Captions of generated scenes (MNIST digits, Fashion-MNIST items) with a Flax
convolutional encoder and a seqjax LSTM decoder, with or without soft attention.

  train        train (or resume):  train --workdir W [--quick] [--attention soft|none]
  caption      caption images:     caption --workdir W [--beam 3] [--attention-png OUT.png] IMG ...
  make-scenes  fresh test scenes:  make-scenes --out DIR --n 200 --seed 123
  evaluate     metrics as JSON:    evaluate --workdir W [--scenes DIR]
"""

HELP = {
    "attention": "soft (Show, Attend and Tell) or none (Show and Tell); default soft",
    "total_steps": "total training steps",
    "seed": "initialisation and training-scene seed",
    "objects": "both, digits or fashion (default both)",
}


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.caption.train import saved_config, train_and_evaluate

    check_output_dir("--workdir", args.workdir)
    config = train_config(
        args, saved_config(args.workdir), CaptionConfig(), CaptionConfig(**QUICK), validate_config
    )
    return train_and_evaluate(config, args.workdir)


def _caption(args: argparse.Namespace) -> list[str]:
    at_least("--beam", args.beam, 1)
    if args.attention_png is not None:
        check_output_dir("--attention-png", _parent(args.attention_png))
    from experiments.caption.captioning import caption_images, write_attention_png
    from experiments.caption.input_pipeline import load_image
    from experiments.caption.train import restore

    images = [load_image(p) for p in args.images]  # every file checked before any output
    run_ = restore(args.workdir)
    if args.attention_png is not None:
        if not run_.model.attentional:
            raise UsageError(
                f"--attention-png: expected a model trained with --attention soft, got "
                f"{args.workdir} trained with --attention none"
            )
        caps = write_attention_png(
            run_.model, run_.params, run_.config, images, args.attention_png, beam=args.beam
        )
    else:
        caps = caption_images(run_.model, run_.params, run_.config, images, beam=args.beam)
    for c in caps:
        print(c)
    return caps


def _parent(path: str) -> str:
    import os

    return os.path.dirname(os.path.abspath(path))


def _make_scenes(args: argparse.Namespace) -> str:
    at_least("--n", args.n, 1)
    at_least("--seed", args.seed, 0)
    check_output_dir("--out", args.out)
    from experiments.caption.captioning import make_scenes

    index = make_scenes(args.out, args.n, args.seed, args.objects)
    print(index)
    return index


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    beams = tuple(args.beams)
    for k in beams:
        at_least("--beams", k, 1)
    import os

    from experiments.caption.captioning import evaluate_model, read_scene_dir
    from experiments.caption.train import restore
    from experiments.scaffold import write_json

    if args.scenes is not None:
        read_scene_dir(args.scenes)  # checked before the model is loaded
    if args.attention_png is not None:
        check_output_dir("--attention-png", _parent(args.attention_png))
    run_ = restore(args.workdir)
    if args.attention_png is not None and not run_.model.attentional:
        raise UsageError(
            f"--attention-png: expected a model trained with --attention soft, got "
            f"{args.workdir} trained with --attention none"
        )
    out = evaluate_model(
        run_.model,
        run_.params,
        run_.config,
        beams=beams,
        scenes_dir=args.scenes,
        attention_png=args.attention_png,
    )
    out["step"] = run_.step
    out["attention"] = run_.config.attention
    name = "evaluation.json" if args.scenes is None else "evaluation_scenes.json"
    write_json(os.path.join(args.workdir, name), out, indent=2)
    print(json.dumps(out, indent=2))
    return out


def parser() -> ArgumentParser:
    """The command line's parser (``train``, ``caption``, ``make-scenes``, ``evaluate``)."""
    top = ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run a subcommand with --help for its options.",
    )
    subs = add_subcommands(top)

    p = subs.add_parser(
        "train",
        help="train (or resume) a captioner",
        description="Train (or resume) a captioner on fresh scenes. Every field of "
        "CaptionConfig can be set with --field-name VALUE; the common ones come first.",
        epilog="A run directory remembers its configuration: running train again on it "
        "resumes exactly, and flags given again override the training fields.",
    )
    p.add_argument("--workdir", required=True, help="run directory")
    p.add_argument("--quick", action="store_true", help="a small model, 400 steps")
    add_config_arguments(
        p,
        CaptionConfig,
        aliases=ALIASES,
        help=HELP,
        choices={"attention": ATTENTIONS, "objects": OBJECTS},
        title="configuration (every field of CaptionConfig; --field_name also works)",
    )
    p.set_defaults(handler=_train)

    p = subs.add_parser(
        "caption",
        help="caption images",
        description="Prints one caption per IMAGE (PNG, grey-scale or RGB, any size: converted "
        "to grey and resized to 84x84; objects white on black), in order.",
    )
    p.add_argument("--workdir", required=True, help="a trained run directory")
    p.add_argument("--beam", type=int, default=3, help="beam size, 1 = greedy (default 3)")
    p.add_argument(
        "--attention-png", default=None, help="also draw the attention of every word to this PNG"
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.set_defaults(handler=_caption)

    p = subs.add_parser(
        "make-scenes",
        help="write fresh scenes with reference captions",
        description="Writes N scenes of test objects (never used in training) as PNGs and "
        'DIR/captions.jsonl, one {"image": ..., "captions": [...]} per line.',
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, required=True, help="number of scenes")
    p.add_argument("--seed", type=int, required=True, help="scene seed")
    p.add_argument("--objects", choices=OBJECTS, default="both", help="default both")
    p.set_defaults(handler=_make_scenes)

    p = subs.add_parser(
        "evaluate",
        help="metrics of a run as JSON",
        description="BLEU-1..4 (sacrebleu), exact match, meaning and per-relation accuracy for "
        "greedy, beam 3 and beam 5 on the run's test scenes (or a make-scenes folder); prints "
        "JSON and writes evaluation.json (evaluation_scenes.json) in the run directory.",
    )
    p.add_argument("--workdir", required=True, help="a trained run directory")
    p.add_argument("--scenes", default=None, help="a make-scenes folder instead of the test set")
    p.add_argument(
        "--beams", type=int, nargs="+", default=[1, 3, 5], help="beam sizes (default 1 3 5)"
    )
    p.add_argument(
        "--attention-png",
        default=None,
        help="draw attention maps of a few scenes captioned right and wrong (last beam size)",
    )
    p.set_defaults(handler=_evaluate)
    return top


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``python -m experiments.caption``; returns the subcommand's result."""
    return run(parser(), argv)


if __name__ == "__main__":
    main()
