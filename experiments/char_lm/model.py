"""The character LM: embedding -> stack of recurrent layers -> softmax readout, and its loss."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

import seqjax
from experiments.char_lm.config import CharLMConfig, validate_config
from seqjax import regularization
from seqjax.train import LossOutput
from seqjax.typing import Array, PRNGKey, PyTree

LN2 = math.log(2.0)


class CharLMParams(NamedTuple):
    """Parameters: ``embed [V, E]``, the stack's ``rnn``, readout ``w_out [O, V]``, ``b_out``."""

    embed: Array
    rnn: PyTree
    w_out: Array
    b_out: Array


def base_cell(config: CharLMConfig, index: int = 0) -> seqjax.Cell:
    """Layer ``index`` of the stack named by ``config.cell`` (without regularisation).

    ``xlstm`` alternates xLSTM residual blocks (:class:`seqjax.XLSTMBlock`, the post
    up-projection form, with its gated MLP): an sLSTM block (causal convolution of width 4 on
    its input and forget gates) at even indices, an mLSTM block at odd ones, as the xLSTM[1:1]
    models of Beck et al. 2024 (which put the mLSTM in a pre up-projection block instead).
    """
    h, p = config.hidden, config.proj
    if config.cell == "xlstm":
        if index % 2 == 0:
            return seqjax.XLSTMBlock(
                seqjax.SLSTM(h, num_heads=config.num_heads, conv_kernel_size=4)
            )
        return seqjax.XLSTMBlock(seqjax.MLSTM(h, num_heads=config.num_heads))
    if config.cell == "lstm":
        return seqjax.LSTM(h, proj_size=p)
    if config.cell == "peephole":
        return seqjax.LSTM(h, proj_size=p, peephole=True)
    if config.cell == "cifg":
        return seqjax.LSTM(h, proj_size=p, peephole=True, coupled=True)
    if config.cell == "gru":
        return seqjax.GRU(h, reset_after=True)  # one recurrent matmul per step (cuDNN form)
    if config.cell == "mingru":
        return seqjax.MinGRU(h)
    if config.cell == "minlstm":
        return seqjax.MinLSTM(h)
    if config.cell == "slstm":
        return seqjax.SLSTM(h, num_heads=config.num_heads)
    if config.cell == "mlstm":
        return seqjax.MLSTM(h, num_heads=config.num_heads)
    return seqjax.SimpleRNN(h)


def count_params(config: CharLMConfig, vocab_size: int) -> int:
    """Parameters of the model of ``config`` for a ``vocab_size``-symbol vocabulary.

    Computed from the shapes alone (nothing is initialised).

    Example:
      >>> from experiments.char_lm.config import CharLMConfig
      >>> c = CharLMConfig(layers=1, hidden=8, embed=4)
      >>> count_params(c, 10) == 10 * 4 + 4 * 8 * (4 + 8) + 4 * 8 + 8 * 10 + 10
      True
    """
    cell = build_cell(config)
    shapes = jax.eval_shape(lambda k: init_params(cell, config, vocab_size, k), jax.random.key(0))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def build_cell(config: CharLMConfig) -> seqjax.Stack:
    """The recurrent stack with the configured regularisation wrappers on every layer."""
    validate_config(config)
    layers = []
    for index in range(config.layers):
        layer = base_cell(config, index)
        if config.weight_drop > 0:
            layer = regularization.weight_drop(layer, rate=config.weight_drop)
        if config.input_dropout > 0 or config.recurrent_dropout > 0:
            layer = regularization.variational_dropout(
                layer, input_rate=config.input_dropout, recurrent_rate=config.recurrent_dropout
            )
        if config.zoneout_h > 0 or config.zoneout_c > 0:
            layer = regularization.zoneout(layer, h_rate=config.zoneout_h, c_rate=config.zoneout_c)
        layers.append(layer)
    return seqjax.stack(layers, dropout=config.dropout)


def init_params(
    cell: seqjax.Stack, config: CharLMConfig, vocab_size: int, key: PRNGKey
) -> CharLMParams:
    """Initial parameters: N(0, 1) embedding, the stack's own init, zero-mean readout."""
    k_e, k_r, k_o = jax.random.split(key, 3)
    out = cell.output_size
    return CharLMParams(
        embed=jax.random.normal(k_e, (vocab_size, config.embed), jnp.float32),
        rnn=cell.init(k_r, config.embed),
        w_out=jax.random.normal(k_o, (out, vocab_size), jnp.float32) / math.sqrt(out),
        b_out=jnp.zeros((vocab_size,), jnp.float32),
    )


def _dropout(key: PRNGKey | None, x: Array, rate: float) -> Array:
    if key is None or rate == 0:
        return x
    return seqjax.combinators.dropout(key, x, rate)


def forward(
    cell: seqjax.Stack,
    config: CharLMConfig,
    params: CharLMParams,
    carry: PyTree,
    tokens: Array,
    key: PRNGKey | None,
) -> tuple[PyTree, Array]:
    """Logits ``[B, T, V]`` for ``tokens [B, T]`` from ``carry``; dropout only with a key."""
    k_in = k_rnn = k_out = None
    if key is not None:
        k_in, k_rnn, k_out = jax.random.split(key, 3)
    x = _dropout(k_in, params.embed[tokens], config.dropout)
    carry, ys = seqjax.scan(cell, params.rnn, x, carry=carry, unroll=config.unroll, key=k_rnn)
    ys = _dropout(k_out, ys, config.dropout)
    return carry, ys @ params.w_out + params.b_out


def make_loss_fn(cell: seqjax.Stack, config: CharLMConfig):
    """``loss_fn(params, batch, rng, carry) -> LossOutput`` for :func:`seqjax.train.train_loop`.

    The loss is the summed cross-entropy in nats; metrics add ``bits`` (the same in bits) and
    ``accuracy`` (next character predicted by the argmax), both per character once summarised.
    """

    def loss_fn(params, batch, rng, carry):
        carry, logits = forward(cell, config, params, carry, batch["inputs"], rng)
        logp = jax.nn.log_softmax(logits, axis=-1)
        targets = batch["targets"]
        nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        loss_sum = jnp.sum(nll)
        correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32))
        return LossOutput(
            loss_sum=loss_sum,
            count=jnp.asarray(nll.size, jnp.float32),
            metrics={"bits": loss_sum / LN2, "accuracy": correct},
            carry=carry,
        )

    return loss_fn
