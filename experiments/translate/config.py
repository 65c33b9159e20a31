"""Configuration of the number translation experiment: defaults, ``--quick``, validation."""

from __future__ import annotations

import dataclasses

from experiments.scaffold import UsageError
from experiments.scaffold.configs import FieldChecks, option_name
from experiments.scaffold.configs import check_resume as scaffold_check_resume
from seqjax.train import TrainConfig

PAIRS = ("en-fr", "en-de")
ATTENTIONS = ("additive", "dot", "general", "none")
CELLS = ("lstm", "gru")
TARGET_TOKENS = ("pieces", "chars")

#: Short option names: field -> options (``--steps`` as in the other experiments).
ALIASES = {
    "total_steps": ["--steps"],
    "learning_rate": ["--lr"],
    "batch_size": ["--batch"],
}


@dataclasses.dataclass(frozen=True)
class TranslateConfig(TrainConfig):
    """A translation run: data, model, plus the training fields of ``TrainConfig``.

    Attributes:
      pair: ``"en-fr"`` or ``"en-de"`` (English number words to French or German).
      target_tokens: ``"pieces"`` (number morphemes, see
        :mod:`experiments.translate.input_pipeline`) or ``"chars"``.
      train_size, val_size, test_size: examples per split (numbers are disjoint across splits).
      data_seed: seeds which numbers belong to which split and which are drawn (kept apart
        from ``seed`` so that models with different seeds share one test set).
      attention: ``"additive"`` (Bahdanau), ``"dot"``, ``"general"`` (Luong) or ``"none"`` (a
        plain encoder-decoder: the decoder sees the source only through its initial state).
      cell: ``"lstm"`` or ``"gru"``, in the encoder and the decoder.
      layers: depth of the encoder and of the decoder.
      hidden: decoder units per layer; the encoder's output per layer has this size too (a
        bidirectional encoder has ``hidden / 2`` per direction).
      embed: source and target embedding size.
      bidirectional: bidirectional encoder layers.
      reverse_source: feed the source words in reverse order (Sutskever et al. 2014).
      max_decode: most target tokens a translation may have (0: the longest training target
        plus 4).
    """

    pair: str = "en-fr"
    target_tokens: str = "pieces"
    train_size: int = 60_000
    val_size: int = 500
    test_size: int = 2_000
    data_seed: int = 0
    attention: str = "additive"
    cell: str = "lstm"
    layers: int = 1
    hidden: int = 128
    embed: int = 64
    bidirectional: bool = True
    reverse_source: bool = False
    max_decode: int = 0
    # training defaults for this job (fields of TrainConfig)
    total_steps: int = 6000
    batch_size: int = 64
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    end_lr_factor: float = 0.05
    clip_norm: float = 1.0
    log_every: int = 50
    eval_every: int = 1000
    save_every: int = 500


#: ``--quick``: a small model on 8,000 pairs that trains in about 20 s on an idle 2-core CPU
#: (22 s measured, ``python -m experiments.translate train --workdir W --quick``).
QUICK = dict(
    train_size=8_000,
    val_size=200,
    test_size=500,
    hidden=64,
    embed=32,
    total_steps=600,
    warmup_steps=30,
    learning_rate=5e-3,
    log_every=20,
    eval_every=200,
    save_every=200,
)

#: Fields that fix the parameter shapes or the data: a resumed run cannot change them.
ARCHITECTURE = (
    "pair",
    "target_tokens",
    "train_size",
    "val_size",
    "test_size",
    "data_seed",
    "attention",
    "cell",
    "layers",
    "hidden",
    "embed",
    "bidirectional",
    "reverse_source",
)


def flag(name: str) -> str:
    """The command-line option of a config field (``total_steps`` -> ``--steps``)."""
    return option_name(name, ALIASES)


def validate_config(config: TranslateConfig) -> None:
    """Checks every field a user can set; nothing is read or written.

    Raises:
      UsageError: (a ValueError) naming the option, what it expects and what it got.
    """

    checks = FieldChecks(config, ALIASES)

    for name, allowed in (
        ("pair", PAIRS),
        ("attention", ATTENTIONS),
        ("cell", CELLS),
        ("target_tokens", TARGET_TOKENS),
        ("optimizer", ("adamw", "adam", "sgd", "rmsprop")),
        ("schedule", ("constant", "cosine", "step")),
    ):
        checks.one_of(name, allowed)
    ints = ("layers", "hidden", "embed", "total_steps", "batch_size", "log_every", "keep")
    checks.ints(ints + ("train_size", "val_size", "test_size"), 1)
    checks.ints(("eval_every", "save_every", "warmup_steps", "max_decode", "data_seed", "seed"), 0)
    if config.bidirectional and config.hidden % 2:
        raise UsageError(
            f"--hidden: expected an even size with a bidirectional encoder (hidden / 2 per "
            f"direction), got {config.hidden}"
        )
    if config.train_size < config.batch_size:
        raise UsageError(
            f"--train-size: expected at least --batch {config.batch_size} examples, got "
            f"{config.train_size}"
        )
    if config.train_size + config.val_size + config.test_size > 400_000:
        raise UsageError(
            "--train-size/--val-size/--test-size: expected at most 400000 examples in all, got "
            f"{config.train_size + config.val_size + config.test_size}"
        )
    checks.optimizer()


def check_resume(saved: TranslateConfig, config: TranslateConfig) -> None:
    """Raises :class:`UsageError` if ``config`` changes a field a resumed run cannot change."""
    scaffold_check_resume(saved, config, ARCHITECTURE, ALIASES, other="model or data")
