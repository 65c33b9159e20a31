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
    """Parameters: the convolutional front end ``conv`` (a tuple of ``(w [3, 3, C_in, C_out],
    b [C_out])`` per layer, empty without one), the stack's ``rnn``, readout ``w_out [O, 11]``
    and ``b_out [11]``."""

    conv: tuple
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


def conv_shapes(config: LinesConfig) -> list[tuple[int, int]]:
    """``(C_in, C_out)`` of each convolution: ``conv_channels * 2**i`` channels in layer ``i``."""
    chans = [1] + [config.conv_channels * 2**i for i in range(config.conv_layers)]
    return list(zip(chans[:-1], chans[1:], strict=True))


def conv_rows(config: LinesConfig) -> int:
    """Rows left after the front end: each layer max-pools rows by 2 (rounding up)."""
    rows = config.height
    for _ in range(config.conv_layers):
        rows = -(-rows // 2)
    return rows


def input_size(config: LinesConfig) -> int:
    """Values per time step of the recurrent stack: ``height * cols_per_frame`` without a
    convolutional front end, else ``rows * channels`` of its last layer."""
    if config.conv_layers == 0:
        return config.height * config.cols_per_frame
    return conv_rows(config) * conv_shapes(config)[-1][1]


def init_params(cell: seqjax.Stack, config: LinesConfig, key: PRNGKey) -> LinesParams:
    """He-normal convolutions with zero biases, the stack's own init and a zero-mean readout
    scaled by ``1 / sqrt(O)``."""
    if config.conv_layers:
        k_r, k_o, k_c = jax.random.split(key, 3)
    else:  # the keys of the recogniser without a front end, so its earlier runs reproduce
        (k_r, k_o), k_c = jax.random.split(key), key
    conv = tuple(
        (
            jax.random.normal(k, (3, 3, c_in, c_out), jnp.float32) * math.sqrt(2.0 / (9 * c_in)),
            jnp.zeros((c_out,), jnp.float32),
        )
        for k, (c_in, c_out) in zip(
            jax.random.split(k_c, config.conv_layers), conv_shapes(config), strict=True
        )
    )
    out = cell.output_size
    return LinesParams(
        conv=conv,
        rnn=cell.init(k_r, input_size(config)),
        w_out=jax.random.normal(k_o, (out, NUM_CLASSES), jnp.float32) / math.sqrt(out),
        b_out=jnp.zeros((NUM_CLASSES,), jnp.float32),
    )


def _max_pool(x: Array, rows: int, cols: int) -> Array:
    """Max over ``rows x cols`` windows of ``x [B, H, W, C]`` (stride = window, edges padded)."""
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, rows, cols, 1), (1, rows, cols, 1), "SAME"
    )


def conv_front_end(config: LinesConfig, conv: tuple, inputs: Array) -> Array:
    """Frames ``[B, T, height * k]`` through the convolutional front end -> ``[B, T, D]``.

    The frames are put back into the line image ``[B, height, T * k]``; each layer is a 3x3
    convolution (zero padding), ReLU and a max-pool over 2 rows; the first layer also pools
    the ``k = cols_per_frame`` columns of a frame, so there are still ``T`` time steps, each
    the ``rows x channels`` column of feature maps (``D =`` :func:`input_size`).
    """
    b, t, _ = inputs.shape
    k, h = config.cols_per_frame, config.height
    # [B, T, k * H] (k columns of H rows per frame) -> [B, H, T * k, 1]
    x = inputs.reshape(b, t, k, h).transpose(0, 3, 1, 2).reshape(b, h, t * k, 1)
    for i, (w, bias) in enumerate(conv):
        x = jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = _max_pool(jax.nn.relu(x + bias), 2, k if i == 0 else 1)
    # [B, rows, T, C] -> [B, T, rows * C]
    return x.transpose(0, 2, 1, 3).reshape(b, t, -1)


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
    if params.conv:
        inputs = conv_front_end(config, params.conv, inputs)
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
