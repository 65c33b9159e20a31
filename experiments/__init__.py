"""seqjax experiments: one small package per application, thin over the library.

Run them as modules, e.g. ``python -m experiments.char_lm train --workdir runs/shakespeare``.
What every experiment shares (the command line, input checks, results writers, grids) lives in
:mod:`experiments.scaffold`. Results that the README quotes live in ``experiments/results/``
with the commands that produced them (``experiments/README.md``).
"""
