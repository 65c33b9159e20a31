"""Configuration of one long-lag run (adding problem or copy task) and the cell names."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import seqjax
from experiments.long_range.formal import FORMAL_TASKS
from experiments.scaffold import UsageError

TASKS = ("adding", "copy") + FORMAL_TASKS
BASE_CELLS = ("rnn", "lstm", "gru", "peephole", "cifg")

#: The cells beyond the LSTM family, by name: hidden size ``H`` -> cell definition. Adding a
#: cell to every experiment (and to ``--cell``) is one entry here.
EXTRA_CELLS: dict[str, Callable[[int], seqjax.Cell]] = {
    "mingru": lambda H: seqjax.MinGRU(H),
    "minlstm": lambda H: seqjax.MinLSTM(H),
    "slstm": lambda H: seqjax.SLSTM(H),
    "mlstm": lambda H: seqjax.MLSTM(H),
}
VARIANTS = tuple(seqjax.GREFF_VARIANTS)  # V, NIG, NFG, NOG, NIAF, NOAF, NP, CIFG, FGR
RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "long_range"
SOLVED_MSE = 0.01


def canonical_cell(name: str) -> str:
    """Normalises a cell name: base cells lower case, Greff variants upper case.

    Args:
      name: e.g. ``"lstm"``, ``"GRU"``, ``"nfg"``, ``"peephole"``.

    Returns:
      ``"rnn" | "lstm" | "gru"``, a name of :data:`EXTRA_CELLS` (lower case) or a variant name
      (``"peephole"`` is ``"V"`` and ``"cifg"`` is ``"CIFG"``).

    Raises:
      UsageError: (a ValueError) an unknown name.

    Example:
      >>> canonical_cell("cifg"), canonical_cell("GRU")
      ('CIFG', 'gru')
    """
    if not isinstance(name, str):
        raise TypeError(f"cell must be a str, got {type(name).__name__}")
    low = name.lower()
    if low in ("rnn", "lstm", "gru") or low in EXTRA_CELLS:
        return low
    if low == "peephole":
        return "V"
    if name.upper() in VARIANTS:
        return name.upper()
    raise UsageError(
        f"--cell: expected one of {', '.join(BASE_CELLS + tuple(EXTRA_CELLS))} or a Greff variant "
        f"({', '.join(VARIANTS)}), got unknown cell {name!r}"
    )


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run.

    Attributes:
      task: ``"adding"``, ``"copy"``, ``"parity"`` or ``"modarith"``.
      cell: a name from :data:`BASE_CELLS`, :data:`EXTRA_CELLS` or :data:`VARIANTS`.
      length: ``T`` (adding: sequence length; copy: the delay, sequences are ``T + 20``;
        parity, modarith: the longest training length, lengths ``1 ... T``).
      test_length: parity, modarith: the longest held-out length; the length-generalisation
        set has lengths ``T + 1 ... test_length``.
      steps: optimiser steps.
      seed: seeds the initialisation, the training batches and nothing else (the test set is
        fixed by ``test_seed``).
      hidden: hidden size, or None to fit ``budget``.
      budget: parameter budget (cell + readout) used when ``hidden`` is None.
      batch_size: training examples per step.
      learning_rate: the optimiser's learning rate.
      optimizer: ``"adam"`` or ``"sgd"`` (plain SGD, for the exploding-gradient demonstration,
        where Adam's per-coordinate normalisation would hide the gradient's scale).
      clip_norm: global-norm clipping threshold, or None for none.
      forget_bias: initial forget-gate bias of LSTM-family cells.
      init_scale: multiplies the default initial input and recurrent weights (Glorot-uniform
        and orthogonal); 1 keeps the library defaults.
      test_size: held-out examples.
      test_seed: key of the held-out set, shared by every run.
      eval_every: steps between evaluations of the held-out loss.

    Raises:
      UsageError: (a ValueError) a value out of range, naming its command-line option.
    """

    task: str = "adding"
    cell: str = "lstm"
    length: int = 100
    test_length: int = 256
    steps: int = 2000
    seed: int = 0
    hidden: int | None = None
    budget: int = 4700
    batch_size: int = 50
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    clip_norm: float | None = 1.0
    forget_bias: float = 1.0
    init_scale: float = 1.0
    test_size: int = 1000
    test_seed: int = 12345
    eval_every: int = 250

    def __post_init__(self):
        def bad(name: str, expected: str) -> UsageError:
            flag = "--" + name.replace("_", "-")
            return UsageError(f"{flag}: expected {expected}, got {getattr(self, name)!r}")

        if self.task not in TASKS:
            raise bad("task", f"one of {', '.join(TASKS)}")
        canonical_cell(self.cell)
        for name in (
            "length",
            "test_length",
            "steps",
            "batch_size",
            "test_size",
            "eval_every",
            "budget",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a positive int")
        if self.task == "adding" and self.length < 2:
            raise bad("length", "a length >= 2 for the adding problem")
        if self.task in FORMAL_TASKS and self.test_length < self.length + 2:
            raise bad("test_length", f"a length >= --length + 2 for {self.task}")
        if self.hidden is not None and (not isinstance(self.hidden, int) or self.hidden < 1):
            raise bad("hidden", "a positive int or None")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise bad("clip_norm", "a threshold > 0 or None")
        if self.optimizer not in ("adam", "sgd"):
            raise bad("optimizer", "adam or sgd")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "a rate > 0")
        if not self.init_scale > 0:
            raise bad("init_scale", "a scale > 0")
