"""seqjax experiments: one training script per application, thin over the library.

Run them as modules, e.g. ``python -m experiments.char_lm train --workdir runs/shakespeare``.
Results that the README quotes live in ``experiments/results/`` with the commands that produced
them (``experiments/README.md``).
"""
