"""Character-level language model on Shakespeare (or any UTF-8 text), and text generation.

The main job of seqjax::

    python -m experiments.char_lm train --workdir runs/shakespeare            # ~30 min, 2 CPU cores
    python -m experiments.char_lm train --workdir runs/quick --quick          # ~25 s
    python -m experiments.char_lm generate --workdir runs/shakespeare --prompt "ROMEO:" --length 500
    python -m experiments.char_lm evaluate --workdir runs/shakespeare         # val/test bits/char

Re-running ``train`` with the same ``--workdir`` resumes from the latest checkpoint with the
run's saved configuration (flags given again override it, e.g. a larger ``--steps``).

Model: character embedding -> a deep stack of recurrent layers (``--cell lstm|gru|peephole|
cifg|rnn|mingru|minlstm|slstm|mlstm|xlstm``, ``--layers``, ``--hidden``, ``--proj`` for an
LSTMP, ``--num-heads`` for sLSTM, mLSTM and xLSTM blocks) -> softmax readout.
``--time-budget S`` stops training after ``S`` seconds and evaluates. Training:
contiguous-stream batches with truncated BPTT (the carry flows from one batch to the next),
AdamW with global-norm clipping and a cosine schedule, Orbax checkpoints with exact resume,
JSONL/TensorBoard logs, a tqdm bar and a learning-curve PNG, all from :mod:`seqjax.train`.

Regularisation (all off by default; see :mod:`seqjax.regularization`): ``--dropout`` on the
non-recurrent connections (embedding output, between layers, before the readout; Zaremba et
al. 2014), ``--input-dropout``/``--recurrent-dropout`` (variational, Gal & Ghahramani 2016),
``--zoneout-h``/``--zoneout-c`` (Krueger et al. 2016), ``--weight-drop`` (Merity et al. 2017).
``python -m experiments.char_lm compare`` trains one model per method and writes the train vs
validation comparison to ``experiments/results/char_lm/``; ``compare-cells`` trains each cell
at the 2-layer LSTM's parameter count for the same training time
(:mod:`~experiments.char_lm.cells_compare`).

Modules: :mod:`~experiments.char_lm.config` (defaults, ``--quick``, validation),
:mod:`~experiments.char_lm.input_pipeline`, :mod:`~experiments.char_lm.model`,
:mod:`~experiments.char_lm.train` (``train_and_evaluate(config, workdir)``, ``restore``,
``evaluate_run``), :mod:`~experiments.char_lm.sample`, :mod:`~experiments.char_lm.compare`
and the command line in ``__main__.py``.
"""

from experiments.char_lm.cells_compare import CELLS_BASE, compare_cells, matched_hidden
from experiments.char_lm.compare import COMPARE_BASE, COMPARE_VARIANTS, compare
from experiments.char_lm.config import QUICK, CharLMConfig, validate_config
from experiments.char_lm.model import count_params
from experiments.char_lm.sample import sample
from experiments.char_lm.train import (
    Model,
    evaluate_run,
    load_vocab,
    restore,
    saved_config,
    train_and_evaluate,
)

__all__ = [
    "CELLS_BASE",
    "COMPARE_BASE",
    "COMPARE_VARIANTS",
    "QUICK",
    "CharLMConfig",
    "Model",
    "compare",
    "compare_cells",
    "count_params",
    "evaluate_run",
    "load_vocab",
    "matched_hidden",
    "restore",
    "sample",
    "saved_config",
    "train_and_evaluate",
    "validate_config",
]
