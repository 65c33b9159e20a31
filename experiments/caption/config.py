"""Configuration of the captioning experiment: defaults, ``--quick``, validation."""

from __future__ import annotations

import dataclasses

from experiments.scaffold.configs import FieldChecks, option_name
from experiments.scaffold.configs import check_resume as scaffold_check_resume
from seqjax.train import TrainConfig

ATTENTIONS = ("soft", "none")
OBJECTS = ("both", "digits", "fashion")

#: Short option names: field -> options.
ALIASES = {
    "total_steps": ["--steps"],
    "learning_rate": ["--lr"],
    "batch_size": ["--batch"],
}


@dataclasses.dataclass(frozen=True)
class CaptionConfig(TrainConfig):
    """A captioning run: data, model, plus the training fields of ``TrainConfig``.

    Attributes:
      objects: ``"both"`` (MNIST digits and Fashion-MNIST items), ``"digits"`` or
        ``"fashion"`` (see :func:`seqjax.data.scenes.load_objects`).
      max_objects: most objects per scene (1 to 4).
      val_size, test_size: scenes of the validation and test sets, drawn from the test
        objects (images never used in training); training scenes are drawn fresh each step.
      data_seed: seeds the validation and test scenes (training batches use ``seed``).
      attention: ``"soft"`` (Show, Attend and Tell: soft attention over the encoder's grid,
        gating scalar, doubly stochastic regulariser) or ``"none"`` (Show and Tell: the
        image embedding is the decoder's first input).
      channels: features per grid position: the encoder's four convolutions have
        ``channels // 4``, ``channels // 2``, ``channels`` and ``channels`` channels.
      hidden: LSTM units of the attentive decoder; the plain decoder's size is chosen to
        match its parameter count (``0`` for ``hidden_none``).
      hidden_none: LSTM units of the plain decoder (0: match the attentive model's budget).
      embed: word embedding size.
      attention_penalty: ``lambda`` of the doubly stochastic regulariser (per caption).
      max_decode: most words a caption may have (EOS included).
    """

    objects: str = "both"
    max_objects: int = 4
    val_size: int = 200
    test_size: int = 500
    data_seed: int = 0
    attention: str = "soft"
    channels: int = 64
    hidden: int = 128
    hidden_none: int = 0
    embed: int = 64
    attention_penalty: float = 0.01
    max_decode: int = 20
    # training defaults for this job (fields of TrainConfig)
    total_steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    end_lr_factor: float = 0.05
    clip_norm: float = 1.0
    log_every: int = 50
    eval_every: int = 1000
    save_every: int = 250


#: ``--quick``: a small model trained for a few hundred steps.
QUICK = dict(
    val_size=100,
    test_size=200,
    channels=32,
    hidden=64,
    embed=32,
    total_steps=400,
    warmup_steps=20,
    log_every=20,
    eval_every=200,
    save_every=100,
)

#: Fields that fix the parameter shapes or the data: a resumed run cannot change them.
ARCHITECTURE = (
    "objects",
    "max_objects",
    "val_size",
    "test_size",
    "data_seed",
    "attention",
    "channels",
    "hidden",
    "hidden_none",
    "embed",
    "max_decode",
)


def flag(name: str) -> str:
    """The command-line option of a config field (``total_steps`` -> ``--steps``)."""
    return option_name(name, ALIASES)


def validate_config(config: CaptionConfig) -> None:
    """Checks every field a user can set; nothing is read or written.

    Raises:
      UsageError: (a ValueError) naming the option, what it expects and what it got.
    """

    checks = FieldChecks(config, ALIASES)
    bad = checks.bad

    for name, allowed in (
        ("objects", OBJECTS),
        ("attention", ATTENTIONS),
        ("optimizer", ("adamw", "adam", "sgd", "rmsprop")),
        ("schedule", ("constant", "cosine", "step")),
    ):
        checks.one_of(name, allowed)
    ints = ("hidden", "embed", "total_steps", "batch_size", "log_every", "keep", "max_objects")
    checks.ints(ints + ("val_size", "test_size", "max_decode"), 1)
    checks.ints(("eval_every", "save_every", "warmup_steps", "data_seed", "seed", "hidden_none"), 0)
    if config.max_objects > 4:
        raise bad("max_objects", "at most 4")
    if isinstance(config.channels, bool) or not isinstance(config.channels, int):
        raise bad("channels", "an int >= 4")
    if config.channels < 4:
        raise bad("channels", "an int >= 4")
    if config.max_decode < 16:
        raise bad("max_decode", "at least 16 (the longest caption has 15 words with EOS)")
    if not config.attention_penalty >= 0:
        raise bad("attention_penalty", "a number >= 0")
    checks.optimizer()


def check_resume(saved: CaptionConfig, config: CaptionConfig) -> None:
    """Raises :class:`UsageError` if ``config`` changes a field a resumed run cannot change."""
    scaffold_check_resume(saved, config, ARCHITECTURE, ALIASES, other="model or data")
