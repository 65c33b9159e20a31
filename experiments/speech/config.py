"""Configuration of the spoken-digit recogniser: defaults, ``--quick``, validation."""

from __future__ import annotations

import dataclasses

from experiments.scaffold import UsageError
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
class SpeechConfig(TrainConfig):
    """A speech run: synthetic data, acoustic model, decoding, plus the training fields.

    Attributes:
      num_train: synthesised training utterances (training voices).
      num_val: validation utterances (training voices, other utterances; monitors training).
      num_test: test utterances, spoken only by the held-out test voices.
      max_digits: longest digit string (lengths are uniform in ``[1, max_digits]``).
      data_seed: seed of the synthesised sets (digits, voices, jitter, noise).
      snr_db_min, snr_db_max: additive white-noise signal-to-noise ratio range (dB).
      n_mels: log-mel bins (25 ms windows, 10 ms hop, 16 kHz).
      subsample: consecutive frames stacked into one time step (frame subsampling).
      cell: ``lstm``, ``gru`` or ``rnn`` (tanh).
      bidirectional: bidirectional layers (outputs of both directions concatenated).
      layers: depth of the recurrent stack.
      hidden: hidden units per direction and layer.
      proj: LSTMP projection size (``lstm`` only), or None.
      unroll: time steps per ``lax.scan`` iteration.
      length_buckets: distinct padded lengths of batches (each compiles the step once).
      lm_hidden: hidden units of the character LM (a GRU over digit strings).
      lm_steps: training steps of the character LM (on the training transcripts).
      beam: beam width of the beam-search decoder in ``evaluate``.
      lm_weight: shallow-fusion weight of the LM in beam search.
      length_bonus: score added per emitted digit when the LM is fused.
    """

    num_train: int = 6000
    num_val: int = 200
    num_test: int = 400
    max_digits: int = 8
    data_seed: int = 0
    snr_db_min: float = 10.0
    snr_db_max: float = 40.0
    n_mels: int = 80
    subsample: int = 4
    cell: str = "lstm"
    bidirectional: bool = True
    layers: int = 2
    hidden: int = 128
    proj: int | None = None
    unroll: int = 2
    length_buckets: int = 3
    lm_hidden: int = 64
    lm_steps: int = 300
    beam: int = 8
    lm_weight: float = 0.3
    length_bonus: float = 0.7
    # training defaults for this job (fields of TrainConfig)
    total_steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    end_lr_factor: float = 0.05
    clip_norm: float = 1.0
    log_every: int = 20
    eval_every: int = 500
    save_every: int = 250


#: ``--quick``: a small model on a small set, about 35 s on an idle 2-core CPU once
#: the utterances are synthesised and cached (34 s measured).
QUICK = dict(
    num_train=800,
    num_val=64,
    num_test=100,
    layers=1,
    hidden=64,
    total_steps=300,
    warmup_steps=20,
    learning_rate=3e-3,
    lm_steps=100,
    eval_every=100,
    save_every=100,
    log_every=10,
)

#: Fields that fix the parameter shapes or the data: a resumed run cannot change them.
ARCHITECTURE = ("cell", "bidirectional", "layers", "hidden", "proj", "n_mels", "subsample")
ARCHITECTURE += ("num_train", "num_val", "num_test", "max_digits", "data_seed")
ARCHITECTURE += ("snr_db_min", "snr_db_max", "lm_hidden", "lm_steps")


def flag(name: str) -> str:
    """The command-line option of a config field (``total_steps`` -> ``--steps``)."""
    return option_name(name, ALIASES)


def validate_config(config: SpeechConfig) -> None:
    """Checks every field a user can set; nothing is read or written.

    Raises:
      UsageError: (a ValueError) naming the option, what it expects and what it got.
    """

    checks = FieldChecks(config, ALIASES)
    bad = checks.bad

    checks.one_of("cell", CELLS)
    ints = ("num_train", "num_val", "num_test", "max_digits", "n_mels", "subsample", "layers")
    ints += ("hidden", "unroll", "lm_hidden", "beam", "total_steps", "batch_size", "log_every")
    ints += ("keep", "accumulate_steps", "length_buckets")
    checks.ints(ints, 1)
    checks.ints(("lm_steps", "eval_every", "save_every", "keep_best", "warmup_steps"), 0)
    if config.max_digits > 20:
        raise bad("max_digits", "an int <= 20")
    if config.proj is not None:
        if config.cell != "lstm":
            raise UsageError(f"--proj: expected --cell lstm for a projection, got {config.cell}")
        if config.proj < 1:
            raise bad("proj", "an int >= 1")
    if not config.snr_db_min <= config.snr_db_max:
        raise UsageError(
            f"--snr-db-min: expected at most --snr-db-max {config.snr_db_max}, "
            f"got {config.snr_db_min}"
        )
    checks.non_negative(("lm_weight", "clip_norm", "weight_decay"))
    checks.optimizer()


def check_resume(saved: SpeechConfig, config: SpeechConfig) -> None:
    """Raises :class:`UsageError` if ``config`` changes a field a resumed run cannot change."""
    scaffold_check_resume(saved, config, ARCHITECTURE, ALIASES, other="model or data set")
