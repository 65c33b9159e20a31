"""Polyphonic music on Bach chorales: frame models (tanh RNN, LSTM, GRU), RNN-NADE, MIDI.

The comparison where gated units were first measured head to head (Chung et al. 2014), on the
four-part chorales of ``music21``'s corpus (:mod:`seqjax.data.music`)::

    python -m experiments.music train --workdir runs/chorales --cell gru       # a few minutes
    python -m experiments.music train --workdir runs/quick --quick             # ~10 s
    python -m experiments.music generate --workdir runs/chorales --out chorale.mid --primer 269
    python -m experiments.music evaluate --workdir runs/chorales               # NLL per frame
    python -m experiments.music compare                                        # the results grid

Re-running ``train`` on the same ``--workdir`` resumes from the latest checkpoint with the
run's saved configuration (flags given again override it, e.g. a larger ``--steps``).

Model: the previous frame (88 keys, 0/1) -> a recurrent cell -> an output layer giving the
NLL of the next frame: ``--output bernoulli`` (a sigmoid per key, the JSB metric's model) or
``--output nade`` (RNN-NADE, Boulanger-Lewandowski et al. 2012: the keys of a frame modelled
jointly). Loss and metric: NLL per frame in nats, summed over keys.

Modules: :mod:`~experiments.music.config`, :mod:`~experiments.music.input_pipeline`,
:mod:`~experiments.music.model`, :mod:`~experiments.music.train`
(``train_and_evaluate(config, workdir)``, ``restore``, ``evaluate_run``),
:mod:`~experiments.music.generate`, :mod:`~experiments.music.compare` and the command line in
``__main__.py``.
"""

from experiments.music.config import HIDDEN_20K, HIDDEN_100K, QUICK, MusicConfig, validate_config
from experiments.music.generate import generate
from experiments.music.train import evaluate_run, restore, saved_config, train_and_evaluate

__all__ = [
    "HIDDEN_100K",
    "HIDDEN_20K",
    "QUICK",
    "MusicConfig",
    "evaluate_run",
    "generate",
    "restore",
    "saved_config",
    "train_and_evaluate",
    "validate_config",
]
