"""Recognising spoken digit strings: deep bidirectional LSTM + CTC on synthesised speech.

::

    python -m experiments.speech voices --split test                  # held-out voices
    python -m experiments.speech train --workdir runs/speech          # default run
    python -m experiments.speech train --workdir runs/speech_quick --quick
    python -m experiments.speech transcribe --workdir runs/speech [--beam 8] a.wav b.wav
    python -m experiments.speech evaluate --workdir runs/speech [--plot posteriors.png]

Data (:mod:`~experiments.speech.input_pipeline`): 1-8 random digits read as words by
``espeak-ng`` (Debian package ``espeak-ng``) in many accent+variant voices with rate, pitch,
gap, silence and noise jitter; the test voices share neither accent nor variant with the
training voices. Features: 80 log-mel bins, 25 ms / 10 ms, per-utterance normalisation
(:mod:`seqjax.data.audio`), cached in the user cache directory.

Model (:mod:`~experiments.speech.model`): stacked frames (``--subsample``) -> a stack of
bidirectional LSTM (or LSTMP, GRU, tanh RNN) layers -> linear readout over blank + 10 digits,
trained with :func:`seqjax.ctc.ctc_loss`. Decoding (:mod:`~experiments.speech.decode`):
greedy and prefix beam search, optionally fused with a GRU character LM of digit strings.
Training, resuming and evaluation: :mod:`~experiments.speech.train`.
"""
