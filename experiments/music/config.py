"""Configuration of the chorale models: defaults, ``--quick``, validation."""

from __future__ import annotations

import dataclasses

from experiments.scaffold.configs import FieldChecks, option_name
from experiments.scaffold.configs import check_resume as scaffold_check_resume
from seqjax.train import TrainConfig

CELLS = ("rnn", "lstm", "gru")
OUTPUTS = ("bernoulli", "nade")

#: Hidden units giving about 20K parameters (Chung et al. 2014's budget) with the 88-key
#: input and the sigmoid readout: tanh 80 (20.6K), LSTM 35 (20.5K), GRU 42 (20.3K).
HIDDEN_20K = {"rnn": 80, "lstm": 35, "gru": 42}
#: Peak learning rate of each cell when ``learning_rate`` is None (from pilot runs at 20K
#: parameters, 2000 steps, judged on validation NLL: the LSTM learns slowly at 3e-3, the GRU
#: overfits within 500 steps at 1e-2).
LEARNING_RATE = {"rnn": 3e-3, "lstm": 1e-2, "gru": 3e-3}
#: About 100K parameters: tanh 238 (99.0K), LSTM 112 (100K), GRU 132 (99.2K).
HIDDEN_100K = {"rnn": 238, "lstm": 112, "gru": 132}

ALIASES = {
    "total_steps": ["--steps"],
    "learning_rate": ["--lr"],
    "batch_size": ["--batch"],
}


@dataclasses.dataclass(frozen=True)
class MusicConfig(TrainConfig):
    """A chorale-model run: data, model, plus the training fields.

    Attributes:
      step: frame length in quarter notes (1.0 as JSB Chorales; 0.5 for eighth notes).
      transpose: transpose every chorale to C major / C minor (JSB keeps the original keys).
      split_seed: seed of the train/valid/test split by chorale.
      max_chorales: use only the first N chorales of the corpus (tests); None: all.
      cell: ``rnn`` (tanh), ``lstm`` or ``gru`` (seqjax's default form of each).
      hidden: hidden units; None picks :data:`HIDDEN_20K` for the cell.
      learning_rate: peak Adam(W) rate; None picks :data:`LEARNING_RATE` for the cell.
      output: ``bernoulli`` (independent sigmoid per key) or ``nade`` (RNN-NADE: the keys of
        a frame modelled jointly, one after another).
      nade_hidden: hidden units of the NADE output layer.
      window: training crop length in frames (longer chorales are cut at a random start).
      weight_noise: std of the Gaussian noise added to every parameter at each training step
        (Chung et al. 2014 used 0.075); 0 disables it.
    """

    step: float = 1.0
    transpose: bool = False
    split_seed: int = 0
    max_chorales: int | None = None
    cell: str = "lstm"
    hidden: int | None = None
    output: str = "bernoulli"
    nade_hidden: int = 32
    window: int = 64
    weight_noise: float = 0.075
    # training defaults for this job (fields of TrainConfig)
    total_steps: int = 1500
    batch_size: int = 16
    learning_rate: float | None = None  # type: ignore[assignment]
    schedule: str = "cosine"
    warmup_steps: int = 50
    end_lr_factor: float = 0.05
    clip_norm: float = 1.0
    log_every: int = 50
    eval_every: int = 100
    save_every: int = 100
    keep: int = 2
    keep_best: int = 1


#: ``--quick``: a few chorales' worth of training, about 10 s on an idle 2-core CPU
#: (10 s measured, after the chorales are cached).
QUICK = dict(
    total_steps=200,
    batch_size=8,
    window=32,
    warmup_steps=10,
    log_every=20,
    eval_every=50,
    save_every=50,
)

#: Fields that fix the parameter shapes or the data: a resumed run cannot change them.
ARCHITECTURE = ("cell", "hidden", "output", "nade_hidden", "step", "transpose", "split_seed")
ARCHITECTURE += ("max_chorales",)


def flag(name: str) -> str:
    """The command-line option of a config field (``total_steps`` -> ``--steps``)."""
    return option_name(name, ALIASES)


def resolve(config: MusicConfig) -> MusicConfig:
    """``config`` with ``hidden`` and ``learning_rate`` filled in for its cell when None
    (:data:`HIDDEN_20K`, :data:`LEARNING_RATE`)."""
    if config.hidden is None and config.cell in HIDDEN_20K:
        config = dataclasses.replace(config, hidden=HIDDEN_20K[config.cell])
    if config.learning_rate is None and config.cell in LEARNING_RATE:
        config = dataclasses.replace(config, learning_rate=LEARNING_RATE[config.cell])
    return config


def validate_config(config: MusicConfig) -> None:
    """Checks every field a user can set; nothing is read or written.

    Raises:
      UsageError: (a ValueError) naming the option, what it expects and what it got.
    """

    checks = FieldChecks(config, ALIASES)
    checks.one_of("cell", CELLS)
    config = resolve(config)
    checks = FieldChecks(config, ALIASES)  # the resolved hidden size and learning rate
    bad = checks.bad
    checks.one_of("output", OUTPUTS)
    checks.ints(("nade_hidden", "window", "total_steps", "batch_size", "log_every", "keep"), 1)
    if config.hidden is not None:
        checks.ints(("hidden",), 1)
    if config.window < 2:
        raise bad("window", "an int >= 2")
    checks.ints(("eval_every", "save_every", "keep_best", "warmup_steps"), 0)
    if config.max_chorales is not None and config.max_chorales < 3:
        raise bad("max_chorales", "an int >= 3 (train, valid and test need one each)")
    if config.step not in (0.25, 0.5, 1.0, 2.0):
        raise bad("step", "a frame length of 0.25, 0.5, 1 or 2 quarter notes")
    checks.non_negative(("clip_norm", "weight_decay", "end_lr_factor", "weight_noise"))
    checks.optimizer()


def check_resume(saved: MusicConfig, config: MusicConfig) -> None:
    """Raises :class:`UsageError` if ``config`` changes a field a resumed run cannot change."""
    scaffold_check_resume(saved, config, ARCHITECTURE, ALIASES, other="model or data")
