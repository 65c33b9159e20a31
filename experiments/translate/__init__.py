"""English number words to French or German with a recurrent encoder-decoder and attention.

::

    python -m experiments.translate train --workdir runs/translate_fr          # default run
    python -m experiments.translate train --workdir runs/quick --quick         # ~20 s
    python -m experiments.translate translate --workdir runs/translate_fr "forty-two"
    echo "three hundred and forty-two" | python -m experiments.translate translate --workdir W
    python -m experiments.translate evaluate --workdir runs/translate_fr       # JSON metrics
    python -m experiments.translate compare [--quick]    # attention vs none, equal budgets

Data are generated with ``num2words`` (numbers 0 to 999,999, split by number); tokens are
English words and target number morphemes (see :mod:`~experiments.translate.input_pipeline`
for why). Re-running ``train`` on a run directory resumes exactly from its latest checkpoint.

Modules: :mod:`~experiments.translate.config` (defaults, ``--quick``, validation),
:mod:`~experiments.translate.input_pipeline`, :mod:`~experiments.translate.model`,
:mod:`~experiments.translate.train` (``train_and_evaluate(config, workdir)``, ``restore``),
:mod:`~experiments.translate.translate` (decoding and metrics),
:mod:`~experiments.translate.compare` and the command line in ``__main__.py``.
"""
