"""Long-lag tasks (the adding problem, the copy memory task) and formal languages (parity,
modular arithmetic), one model per command.

Train one model and print, as the last stdout line, one JSON object with the results::

    python -m experiments.long_range --task adding --cell lstm --length 100 --steps 2000 --seed 0

(``train`` is the default subcommand: ``python -m experiments.long_range train --task ...`` is
the same.) Cells: ``rnn`` (tanh Elman), ``lstm`` (no peepholes), ``gru``, ``peephole`` (Greff
et al.'s vanilla ``V``: LSTM with peepholes) and ``cifg`` (Greff et al.'s ``CIFG``: coupled
input and forget gates, with peepholes), or any Greff et al. (2017) variant by name: ``V``,
``NIG``, ``NFG``, ``NOG``, ``NIAF``, ``NOAF``, ``NP``, ``CIFG``, ``FGR`` (case-insensitive),
and the newer cells of :data:`EXTRA_CELLS`: ``mingru``, ``minlstm``, ``slstm``, ``mlstm``
(adding one is one entry there).

Every model gets the same parameter budget (``--budget``, counting the cell and the linear
readout): the hidden size of each cell is the largest whose parameter count fits the budget,
unless ``--hidden`` fixes it.

Sweeps over lengths and cells (experiments 1 and 2) build on the same function::

    python -m experiments.long_range sweep --task adding [--quick]

writes ``experiments/results/long_range/{adding,copy}[_quick].{json,md,png}``;
``sweep --task adding --grid new_cells`` runs the newer cells at the quick grid's settings.

Formal languages (:mod:`~experiments.long_range.formal`, after the xLSTM paper): parity and
modular arithmetic without brackets, trained on lengths 1-40 and tested on 41-256, every cell::

    python -m experiments.long_range formal   # experiments/results/long_range/formal.{json,md}
 Experiments 3-5
(:mod:`experiments.gradient_flow`, :mod:`experiments.init_sensitivity`,
:mod:`experiments.variants`) are sibling modules built on this package.

Model: inputs (adding: the two features; copy, parity, modarith: one-hot tokens) -> cell
scanned over time by :func:`seqjax.scan` (with each sequence's length for the formal tasks) ->
linear readout (adding: on the last output, one value; copy: at every step, logits over the 9
target tokens; parity, modarith: on the output at the last valid step, logits over 2 or 5
classes). Loss: MSE (adding) or mean cross-entropy (the others).
Training: :mod:`seqjax.train` (``make_optimizer``: Adam with global-norm clipping;
``make_train_step``), a fresh batch per step drawn from the step key, evaluation on a
fixed held-out batch.

Modules: :mod:`~experiments.long_range.config`, :mod:`~experiments.long_range.input_pipeline`,
:mod:`~experiments.long_range.model`, :mod:`~experiments.long_range.train`
(``train_and_evaluate(config, workdir)``), :mod:`~experiments.long_range.sweep` and the
command line in ``__main__.py``.
"""

from experiments.long_range.config import (
    BASE_CELLS,
    EXTRA_CELLS,
    RESULTS_DIR,
    SOLVED_MSE,
    TASKS,
    VARIANTS,
    Config,
    canonical_cell,
)
from experiments.long_range.input_pipeline import baseline, io_sizes, make_batch
from experiments.long_range.model import (
    Model,
    ScaledInit,
    hidden_for_budget,
    make_cell,
    param_count,
)
from experiments.long_range.sweep import (
    FORMAL_SWEEPS,
    SWEEPS,
    fmt,
    replot_sweep,
    run_formal_sweep,
    run_sweep,
)
from experiments.long_range.train import Fit, fit, make_optimizer, train_and_evaluate

__all__ = [
    "BASE_CELLS",
    "EXTRA_CELLS",
    "FORMAL_SWEEPS",
    "RESULTS_DIR",
    "SOLVED_MSE",
    "SWEEPS",
    "TASKS",
    "VARIANTS",
    "Config",
    "Fit",
    "Model",
    "ScaledInit",
    "baseline",
    "canonical_cell",
    "fit",
    "fmt",
    "hidden_for_budget",
    "io_sizes",
    "make_batch",
    "make_cell",
    "make_optimizer",
    "param_count",
    "replot_sweep",
    "run_formal_sweep",
    "run_sweep",
    "train_and_evaluate",
]
