"""The encoder-decoder: embeddings, a recurrent encoder, a bridge, an (attentional) decoder.

Built from the library's pieces: the encoder is a :func:`seqjax.stack` of (bidirectional)
cells run by :func:`seqjax.scan` with the source lengths; :class:`seqjax.seq2seq.Bridge` gives
the decoder its initial state from the encoder's final one; the decoder is an
:class:`~seqjax.attention_decoder.AttentionDecoder` (Luong style with input feeding) over the
encoder outputs, or with ``attention="none"`` a plain stack that sees the source only through
that initial state (Sutskever et al. 2014, Cho et al. 2014). Decoding is
:func:`seqjax.decode.beam_search` (greedy is beam size 1).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import seqjax
from experiments.translate.config import TranslateConfig
from experiments.translate.input_pipeline import BOS, EOS, PAD
from seqjax.attention_decoder import AttentionDecoder, scan_with_weights
from seqjax.decode import beam_search, make_step_fn, tile_beams
from seqjax.seq2seq import Bridge
from seqjax.train import LossOutput
from seqjax.typing import Array, PRNGKey, PyTree


class Seq2SeqParams(NamedTuple):
    """Parameters: embeddings ``[V_src, E]``/``[V_tgt, E]``, encoder, bridge, decoder,
    readout ``w_out [D, V_tgt]``, ``b_out [V_tgt]``."""

    src_embed: Array
    tgt_embed: Array
    encoder: PyTree
    bridge: PyTree
    decoder: PyTree
    w_out: Array
    b_out: Array


@dataclasses.dataclass(frozen=True)
class Seq2Seq:
    """The model's definition (no arrays): hashable, so it can be a static jit argument."""

    encoder: seqjax.Cell
    decoder: seqjax.Cell
    bridge: Bridge
    embed: int
    src_vocab: int
    tgt_vocab: int

    @property
    def attentional(self) -> bool:
        """Whether the decoder attends over the encoder outputs."""
        return isinstance(self.decoder, AttentionDecoder)


def _cell(kind: str, size: int) -> seqjax.Cell:
    return seqjax.LSTM(size) if kind == "lstm" else seqjax.GRU(size, reset_after=True)


def build_model(config: TranslateConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """The model of ``config`` for the given vocabulary sizes."""
    H, L = config.hidden, config.layers
    if config.bidirectional:
        enc_layer = seqjax.bidirectional(_cell(config.cell, H // 2))
    else:
        enc_layer = _cell(config.cell, H)
    encoder = seqjax.stack([enc_layer] * L)
    dec_cell = seqjax.stack([_cell(config.cell, H)] * L)
    decoder: seqjax.Cell = dec_cell
    if config.attention != "none":
        decoder = AttentionDecoder(dec_cell, memory_size=H, attention=config.attention)
    bridge = Bridge(encoder, decoder)
    return Seq2Seq(encoder, decoder, bridge, config.embed, src_vocab, tgt_vocab)


def init_params(model: Seq2Seq, key: PRNGKey) -> Seq2SeqParams:
    """Initial parameters: N(0, 1/E) embeddings, the cells' own inits, zero-mean readout."""
    ks = jax.random.split(key, 6)
    E = model.embed
    D = model.decoder.output_size
    return Seq2SeqParams(
        src_embed=jax.random.normal(ks[0], (model.src_vocab, E), jnp.float32) / math.sqrt(E),
        tgt_embed=jax.random.normal(ks[1], (model.tgt_vocab, E), jnp.float32) / math.sqrt(E),
        encoder=model.encoder.init(ks[2], E),
        bridge=model.bridge.init(ks[3]),
        decoder=model.decoder.init(ks[4], E),
        w_out=jax.random.normal(ks[5], (D, model.tgt_vocab), jnp.float32) / math.sqrt(D),
        b_out=jnp.zeros((model.tgt_vocab,), jnp.float32),
    )


def count_params(model: Seq2Seq) -> int:
    """Number of parameters (computed from shapes only)."""
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def hidden_for_budget(config: TranslateConfig, budget: int, src_vocab: int, tgt_vocab: int) -> int:
    """The (even) hidden size whose model has the parameter count closest to ``budget``."""

    def size(h: int) -> int:
        return count_params(
            build_model(dataclasses.replace(config, hidden=h), src_vocab, tgt_vocab)
        )

    lo, hi = 2, 4096
    while hi - lo > 2:  # the count grows with h: bisect over even sizes
        mid = (lo + hi) // 4 * 2
        lo, hi = (mid, hi) if size(mid) < budget else (lo, mid)
    return min((lo, hi), key=lambda h: abs(size(h) - budget))


def encode(
    model: Seq2Seq, params: Seq2SeqParams, src: Array, src_len: Array
) -> tuple[Array, PyTree]:
    """Encoder outputs ``memory [B, S, H]`` and the decoder's initial carry (bridged)."""
    x = params.src_embed[src]
    final, memory = seqjax.scan(model.encoder, params.encoder, x, lengths=src_len)
    return memory, model.bridge(params.bridge, final)


def _bound(model: Seq2Seq, params: Seq2SeqParams, memory: Array, src_len: Array) -> PyTree:
    if model.attentional:
        assert isinstance(model.decoder, AttentionDecoder)
        return model.decoder.bind(params.decoder, memory, src_len)
    return params.decoder


def forward(model: Seq2Seq, params: Seq2SeqParams, batch: dict) -> Array:
    """Teacher-forced logits ``[B, T, V_tgt]`` for ``batch`` (``src``, ``tgt_in``, lengths)."""
    memory, carry = encode(model, params, batch["src"], batch["src_len"])
    dec_params = _bound(model, params, memory, batch["src_len"])
    y = params.tgt_embed[batch["tgt_in"]]
    _, ys = seqjax.scan(model.decoder, dec_params, y, carry=carry, lengths=batch["tgt_len"])
    return ys @ params.w_out + params.b_out


def make_loss_fn(model: Seq2Seq):
    """``loss_fn(params, batch, rng) -> LossOutput``: summed cross-entropy over target tokens.

    Metrics (per token once summarised): ``accuracy`` (argmax equals the reference token).
    """

    def loss_fn(params, batch, rng):
        del rng  # no dropout: the data are unlimited
        logits = forward(model, params, batch)
        logp = jax.nn.log_softmax(logits, axis=-1)
        targets = batch["tgt_out"]
        mask = (jnp.arange(targets.shape[1]) < batch["tgt_len"][:, None]).astype(jnp.float32)
        nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
        return LossOutput(
            loss_sum=jnp.sum(nll * mask),
            count=jnp.sum(mask),
            metrics={"accuracy": jnp.sum(correct * mask)},
        )

    return loss_fn


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "max_length", "length_penalty"))
def translate_ids(
    model: Seq2Seq,
    params: Seq2SeqParams,
    src: Array,
    src_len: Array,
    *,
    beam_size: int,
    max_length: int,
    length_penalty: float = 0.0,
) -> tuple[Array, Array]:
    """Best hypothesis per source by beam search (greedy with ``beam_size=1``).

    Args:
      model, params: the model.
      src: int ``[B, S]`` source ids; src_len: ``[B]``.
      beam_size: ``k``; max_length: most target tokens (EOS included).
      length_penalty: GNMT's ``alpha``.

    Returns:
      ``(tokens [B, max_length], log_prob [B])``, tokens ending with EOS then PAD.
    """
    memory, carry = encode(model, params, src, src_len)
    dec_params = _bound(
        model, params, tile_beams(memory, beam_size), tile_beams(src_len, beam_size)
    )
    step = make_step_fn(model.decoder, dec_params, params.tgt_embed, params.w_out, params.b_out)
    out = _beam(step, carry, src.shape[0], beam_size, max_length, length_penalty)
    return out.tokens[:, 0], out.log_probs[:, 0]


def _beam(step, carry, B, K, L, alpha):
    start = jnp.full((B,), BOS, jnp.int32)
    return beam_search(
        step, carry, start, beam_size=K, max_length=L, eos_id=EOS, length_penalty=alpha, pad_id=PAD
    )


@functools.partial(jax.jit, static_argnames=("model",))
def attention_weights(
    model: Seq2Seq, params: Seq2SeqParams, src: Array, src_len: Array, tgt_in: Array, tgt_len: Array
) -> Array:
    """Attention weights ``[B, T, S]`` while reading ``tgt_in`` (teacher forcing)."""
    if not model.attentional:
        raise ValueError("a model without attention has no attention weights")
    memory, carry = encode(model, params, src, src_len)
    bound = _bound(model, params, memory, src_len)
    assert isinstance(model.decoder, AttentionDecoder)
    _, _, w = scan_with_weights(
        model.decoder, bound, params.tgt_embed[tgt_in], carry=carry, lengths=tgt_len
    )
    return w
