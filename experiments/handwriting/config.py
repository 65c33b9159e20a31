"""Configuration of the digit-line recogniser: defaults, ``--quick``, validation."""

from __future__ import annotations

import dataclasses
from typing import Any

from experiments.scaffold.configs import FieldChecks, option_name
from experiments.scaffold.configs import check_resume as scaffold_check_resume
from seqjax.train import TrainConfig

CELLS = ("lstm", "gru", "rnn")

#: Short option names: field -> options.
ALIASES = {
    "total_steps": ["--steps"],
    "learning_rate": ["--lr"],
    "batch_size": ["--batch"],
}


@dataclasses.dataclass(frozen=True)
class LinesConfig(TrainConfig):
    """A digit-line run: generated lines, the recogniser, decoding, plus the training fields.

    Attributes:
      fresh_lines: every training batch is new lines of the training digit images (made
        from the step number, so a resumed run sees the same batches); otherwise batches are
        drawn from a fixed set of ``num_train`` lines.
      num_train: training lines of the fixed set (``fresh_lines false``).
      num_val: validation lines (training digit images, other lines; monitors training).
      num_test: test lines, made only from the held-out digit images (100 per class).
      max_digits: longest line (digit counts are uniform in ``[1, max_digits]``).
      data_seed: seed of the generated lines.
      height: rows of a line image (MNIST's 28-pixel digits come out about 15 rows high).
      cols_per_frame: adjacent columns stacked into one time step.
      elastic_alpha: elastic distortion of the digits of training lines (Simard et al. 2003):
        displacement scale in pixels at MNIST resolution; 0 turns it off. Validation and test
        lines are never distorted.
      elastic_sigma: smoothness (Gaussian standard deviation, pixels) of the displacements.
      conv_layers: 3x3 convolution + ReLU + 2-row max-pool layers before the recurrent stack
        (0: the frames go straight in).
      conv_channels: channels of the first convolution (doubling in each further layer).
      cell: ``lstm``, ``gru`` or ``rnn`` (tanh).
      bidirectional: bidirectional layers (outputs of both directions concatenated).
      layers: depth of the recurrent stack.
      hidden: hidden units per direction and layer.
      dropout: dropout rate between stacked layers during training.
      unroll: time steps per ``lax.scan`` iteration.
      beam: beam width of the prefix beam search in ``evaluate``.
    """

    fresh_lines: bool = True
    num_train: int = 20000
    num_val: int = 256
    num_test: int = 1000
    max_digits: int = 10
    data_seed: int = 0
    height: int = 28
    cols_per_frame: int = 2
    elastic_alpha: float = 34.0
    elastic_sigma: float = 4.0
    conv_layers: int = 2
    conv_channels: int = 16
    cell: str = "lstm"
    bidirectional: bool = True
    layers: int = 2
    hidden: int = 96
    dropout: float = 0.2
    unroll: int = 2
    beam: int = 8
    # training defaults for this job (fields of TrainConfig)
    total_steps: int = 5000
    batch_size: int = 32
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    end_lr_factor: float = 0.02
    clip_norm: float = 1.0
    log_every: int = 50
    eval_every: int = 500
    save_every: int = 250


#: ``--quick``: one bidirectional layer of 64 units (after the default convolutions), 1,000
#: steps: test CER 5.8 % after 11.3 minutes of training on the 2-core CPU at load 9-10, shared
#: with three other trainings (a smoke run, not a model).
QUICK: dict[str, Any] = dict(
    num_val=64,
    num_test=200,
    layers=1,
    hidden=64,
    total_steps=1000,
    warmup_steps=50,
    eval_every=500,
    save_every=500,
    log_every=20,
)

#: Fields that fix the parameter shapes or the data: a resumed run cannot change them.
ARCHITECTURE = ("cell", "bidirectional", "layers", "hidden", "height", "cols_per_frame")
ARCHITECTURE += ("conv_layers", "conv_channels", "elastic_alpha", "elastic_sigma")
ARCHITECTURE += ("fresh_lines", "num_train", "num_val", "num_test", "max_digits", "data_seed")


def flag(name: str) -> str:
    """The command-line option of a config field (``total_steps`` -> ``--steps``)."""
    return option_name(name, ALIASES)


def validate_config(config: LinesConfig) -> None:
    """Checks every field a user can set; nothing is read or written.

    Raises:
      UsageError: (a ValueError) naming the option, what it expects and what it got.
    """
    checks = FieldChecks(config, ALIASES)
    checks.one_of("cell", CELLS)
    ints = ("num_train", "num_val", "num_test", "max_digits", "cols_per_frame", "layers")
    ints += ("hidden", "unroll", "beam", "total_steps", "batch_size", "log_every", "keep")
    ints += ("accumulate_steps",)
    checks.ints(ints, 1)
    checks.ints(("eval_every", "save_every", "keep_best", "warmup_steps", "conv_layers"), 0)
    checks.ints(("conv_channels",), 1)
    checks.ints(("height",), 8)
    if config.max_digits > 20:
        raise checks.bad("max_digits", "an int <= 20")
    checks.non_negative(("clip_norm", "weight_decay", "elastic_alpha"))
    if not config.elastic_sigma > 0:
        raise checks.bad("elastic_sigma", "a number > 0")
    if not 0 <= config.dropout < 1:
        raise checks.bad("dropout", "a rate in [0, 1)")
    checks.optimizer()


def check_resume(saved: LinesConfig, config: LinesConfig) -> None:
    """Raises :class:`UsageError` if ``config`` changes a field a resumed run cannot change."""
    scaffold_check_resume(saved, config, ARCHITECTURE, ALIASES, other="model or data set")
