"""The line recogniser: stacked (bidirectional) recurrent layers over columns -> CTC readout."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

import seqjax
from experiments.handwriting.config import LinesConfig, validate_config
from experiments.handwriting.input_pipeline import NUM_CLASSES
from seqjax.ctc import ctc_loss
from seqjax.train import LossOutput
from seqjax.typing import Array, PRNGKey, PyTree


class LinesParams(NamedTuple):
    """Parameters: the stack's ``rnn``, readout ``w_out [O, 11]`` and ``b_out [11]``."""

    rnn: PyTree
    w_out: Array
    b_out: Array


def make_cell(name: str, hidden: int) -> seqjax.Cell:
    """One recurrent layer: ``lstm``, ``gru`` (reset after, as cuDNN/PyTorch) or ``rnn`` (tanh)."""
    if name == "lstm":
        return seqjax.LSTM(hidden)
    if name == "gru":
        return seqjax.GRU(hidden, reset_after=True)
    return seqjax.SimpleRNN(hidden)


def build_cell(config: LinesConfig) -> seqjax.Stack:
    """The recurrent stack: ``layers`` x (bidirectional) LSTM / GRU / tanh RNN."""
    validate_config(config)
    layer = make_cell(config.cell, config.hidden)
    if config.bidirectional:
        layer = seqjax.bidirectional(layer)
    return seqjax.stack([layer] * config.layers, dropout=config.dropout)


def input_size(config: LinesConfig) -> int:
    """Values per time step: ``height * cols_per_frame``."""
    return config.height * config.cols_per_frame


def init_params(cell: seqjax.Stack, config: LinesConfig, key: PRNGKey) -> LinesParams:
    """The stack's own init and a zero-mean readout scaled by ``1 / sqrt(O)``."""
    k_r, k_o = jax.random.split(key)
    out = cell.output_size
    return LinesParams(
        rnn=cell.init(k_r, input_size(config)),
        w_out=jax.random.normal(k_o, (out, NUM_CLASSES), jnp.float32) / math.sqrt(out),
        b_out=jnp.zeros((NUM_CLASSES,), jnp.float32),
    )


def forward(
    cell: seqjax.Stack,
    config: LinesConfig,
    params: LinesParams,
    inputs: Array,
    lengths: Array,
    key: PRNGKey | None = None,
) -> Array:
    """Logits ``[B, T, 11]`` (class 0 the blank) of frames ``inputs [B, T, height * k]``;
    a ``key`` turns on the stack's dropout (training)."""
    _, ys = seqjax.scan(cell, params.rnn, inputs, lengths=lengths, unroll=config.unroll, key=key)
    return ys @ params.w_out + params.b_out


def make_loss_fn(cell: seqjax.Stack, config: LinesConfig):
    """``loss_fn(params, batch, rng) -> LossOutput``: CTC NLL per line.

    Rows with weight 0 (padding rows of evaluation batches) count for nothing; the metric
    ``nll_per_digit`` is the CTC loss divided by the number of digits.
    """

    def loss_fn(params, batch, rng):
        key = rng if config.dropout > 0 else None
        logits = forward(cell, config, params, batch["inputs"], batch["lengths"], key)
        nll = ctc_loss(
            logits, batch["lengths"], batch["labels"], batch["label_lengths"], zero_infinity=True
        )
        w = batch["weights"]
        digits = jnp.maximum(batch["label_lengths"], 1).astype(jnp.float32)
        return LossOutput(
            loss_sum=jnp.sum(w * nll),
            count=jnp.sum(w),
            metrics={"nll_per_digit": jnp.sum(w * nll / digits)},
        )

    return loss_fn
