"""Image captioning of generated scenes: a Flax conv encoder and a seqjax LSTM decoder.

::

    python -m experiments.caption train --workdir runs/caption_soft                 # attentive
    python -m experiments.caption train --workdir runs/caption_none --attention none
    python -m experiments.caption train --workdir runs/quick --quick                # small
    python -m experiments.caption make-scenes --out scenes --n 200 --seed 123
    python -m experiments.caption caption --workdir runs/caption_soft --beam 3 scenes/*.png
    python -m experiments.caption evaluate --workdir runs/caption_soft [--scenes scenes]

Scenes (:mod:`seqjax.data.scenes`) hold 1-4 real MNIST digits and Fashion-MNIST items on a
3x3 grid, with captions that count, name classes and state spatial relations. Show and Tell
(``--attention none``) and Show, Attend and Tell (``--attention soft``) have equal parameter
budgets. Re-running ``train`` on a run directory resumes exactly from its latest checkpoint.

Modules: :mod:`~experiments.caption.config`, :mod:`~experiments.caption.input_pipeline`,
:mod:`~experiments.caption.model`, :mod:`~experiments.caption.train`
(``train_and_evaluate(config, workdir)``, ``restore``), :mod:`~experiments.caption.captioning`
(decoding, metrics, attention maps, scene folders) and the command line in ``__main__.py``.
"""
