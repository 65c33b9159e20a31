"""The captioner: a Flax (linen) convolutional encoder and a seqjax LSTM decoder.

**Encoder.** Four 3x3 convolutions with ReLU (the first with stride 2, the second and third
each followed by a max-pool of 2 and 3) turn an 84x84 canvas into a 7x7 grid of ``C``
features (receptive field 49 pixels: more than an object's 28x28 cell), layer-normalised, plus
a learned embedding of each grid position (so a feature knows where it is). Without the
normalisation the attentive model stays for hundreds of steps at the loss of a decoder that
knows the sentence forms but not the classes. It is a :class:`flax.linen.Module` whose
variables sit in the model's parameter pytree and are trained jointly with the decoder: no
pretrained vision weights exist on this machine (nothing is downloaded), unlike the ImageNet
CNNs of the papers.

**Decoders.** ``attention="none"``: Show and Tell (Vinyals et al. 2015): the grid is reduced
(a per-position projection to 8 features, flattened) to one image embedding that is the LSTM's
first input, before ``<bos>``; the decoder then sees the image only through its state.
``attention="soft"``: Show, Attend and Tell (Xu et al. 2015): the LSTM's initial ``h, c`` come
from the mean feature; at each word an :class:`~seqjax.attention_decoder.AttentionDecoder`
(Bahdanau style, additive score, Xu et al.'s gating scalar) attends over the 49 positions with
the previous ``h``, and the context joins the word embedding; the readout sees ``[h_t; z_t]``;
the loss adds ``lambda * sum_s (1 - sum_t a_ts)^2`` (the doubly stochastic regulariser,
:func:`seqjax.attention.doubly_stochastic_penalty`). The plain decoder's LSTM size is chosen so
both models have (nearly) the same number of parameters (:func:`hidden_for_budget`).
Decoding is :func:`seqjax.decode.beam_search` (greedy is beam size 1).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import seqjax
from experiments.caption.config import CaptionConfig
from experiments.caption.input_pipeline import BOS, CANVAS, EOS, PAD, vocabulary
from seqjax.attention import doubly_stochastic_penalty
from seqjax.attention_decoder import AttentionDecoder, scan_with_weights
from seqjax.decode import beam_search, make_step_fn, tile_beams
from seqjax.train import LossOutput
from seqjax.typing import Array, PRNGKey, PyTree

GRID = 7
REDUCE = 8  # Show and Tell: features per grid position before flattening


class ConvEncoder(nn.Module):
    """``[B, 84, 84, 1] -> [B, 49, channels]``: four convolutions, two max-pools, layer norm,
    position embeddings."""

    channels: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.channels
        x = nn.relu(nn.Conv(max(1, c // 4), (3, 3), strides=2)(x))  # 42x42
        x = nn.relu(nn.Conv(max(1, c // 2), (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))  # 21x21
        x = nn.relu(nn.Conv(c, (3, 3))(x))
        x = nn.max_pool(x, (3, 3), strides=(3, 3))  # 7x7
        x = nn.relu(nn.Conv(c, (3, 3))(x))
        x = nn.LayerNorm()(x.reshape(x.shape[0], GRID * GRID, c))
        pos = self.param("position", nn.initializers.normal(0.1), (GRID * GRID, c))
        return x + pos


class CaptionParams(NamedTuple):
    """Parameters: the encoder's linen variables, word embedding ``[V, E]``, the image head
    (initial state or image embedding), the decoder, readout ``w_out [D, V]``, ``b_out [V]``."""

    encoder: PyTree
    embed: Array
    head: PyTree
    decoder: PyTree
    w_out: Array
    b_out: Array


@dataclasses.dataclass(frozen=True)
class Captioner:
    """The model's definition (no arrays): hashable, so it can be a static jit argument."""

    encoder: ConvEncoder
    decoder: seqjax.Cell
    embed: int
    vocab: int
    penalty: float

    @property
    def attentional(self) -> bool:
        """Whether the decoder attends over the grid (Show, Attend and Tell)."""
        return isinstance(self.decoder, AttentionDecoder)


def build_model(config: CaptionConfig, hidden: int | None = None) -> Captioner:
    """The model of ``config`` (``hidden`` overrides the decoder's LSTM size)."""
    C = config.channels
    if config.attention == "soft":
        H = hidden or config.hidden
        decoder: seqjax.Cell = AttentionDecoder(
            seqjax.LSTM(H), memory_size=C, attention="additive", style="bahdanau", gate=True
        )
    else:
        H = hidden or config.hidden_none or _budget_hidden(config)
        decoder = seqjax.LSTM(H)
    return Captioner(
        ConvEncoder(C), decoder, config.embed, len(vocabulary()), config.attention_penalty
    )


def init_params(model: Captioner, key: PRNGKey) -> CaptionParams:
    """Initial parameters: the linen encoder's init, N(0, 1/E) embeddings, the cells' inits."""
    ks = jax.random.split(key, 5)
    E, V, C = model.embed, model.vocab, model.encoder.channels
    enc = model.encoder.init(ks[0], jnp.zeros((1, CANVAS, CANVAS, 1), jnp.float32))
    kh = jax.random.split(ks[2], 3)
    if model.attentional:
        H = model.decoder.cell.output_size
        head = {
            "w_h": jax.random.normal(kh[0], (C, H)) / math.sqrt(C),
            "w_c": jax.random.normal(kh[1], (C, H)) / math.sqrt(C),
            "b_h": jnp.zeros((H,)),
            "b_c": jnp.zeros((H,)),
        }
    else:
        n = GRID * GRID * REDUCE
        head = {
            "w_reduce": jax.random.normal(kh[0], (C, REDUCE)) / math.sqrt(C),
            "w_image": jax.random.normal(kh[1], (n, E)) / math.sqrt(n),
            "b_image": jnp.zeros((E,)),
        }
    D = model.decoder.output_size
    return CaptionParams(
        encoder=enc,
        embed=jax.random.normal(ks[1], (V, E)) / math.sqrt(E),
        head=head,
        decoder=model.decoder.init(ks[3], E),
        w_out=jax.random.normal(ks[4], (D, V)) / math.sqrt(D),
        b_out=jnp.zeros((V,)),
    )


def count_params(model: Captioner) -> int:
    """Number of parameters (computed from shapes only)."""
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@functools.lru_cache(maxsize=16)
def _budget_hidden(config: CaptionConfig) -> int:
    soft = count_params(build_model(dataclasses.replace(config, attention="soft")))
    return hidden_for_budget(config, soft)


def hidden_for_budget(config: CaptionConfig, budget: int) -> int:
    """The plain decoder's LSTM size whose model has the parameter count closest to ``budget``."""

    def size(h: int) -> int:
        return count_params(build_model(dataclasses.replace(config, attention="none"), h))

    lo, hi = 1, 2048
    while hi - lo > 1:  # the count grows with h: bisect
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) < budget else (lo, mid)
    return min((lo, hi), key=lambda h: abs(size(h) - budget))


def encode(model: Captioner, params: CaptionParams, image: Array) -> tuple[Array, PyTree]:
    """Grid features ``[B, 49, C]`` and the decoder's initial carry for ``image [B, 84, 84, 1]``.

    Show and Tell's carry is the LSTM's state after reading the image embedding.
    """
    feats = model.encoder.apply(params.encoder, image)
    B = feats.shape[0]
    if model.attentional:
        mean = feats.mean(axis=1)
        h = jnp.tanh(mean @ params.head["w_h"] + params.head["b_h"])
        c = jnp.tanh(mean @ params.head["w_c"] + params.head["b_c"])
        assert isinstance(model.decoder, AttentionDecoder)
        return feats, model.decoder.start(seqjax.LSTMCarry(h=h, c=c), output=h)
    reduced = (feats @ params.head["w_reduce"]).reshape(B, -1)
    x_image = reduced @ params.head["w_image"] + params.head["b_image"]
    carry, _ = model.decoder(params.decoder, model.decoder.initial_carry((B,)), x_image)
    return feats, carry


def _bound(model: Captioner, params: CaptionParams, feats: Array) -> PyTree:
    if model.attentional:
        assert isinstance(model.decoder, AttentionDecoder)
        return model.decoder.bind(params.decoder, feats)
    return params.decoder


def forward(model: Captioner, params: CaptionParams, batch: dict) -> tuple[Array, Array | None]:
    """Teacher-forced logits ``[B, T, V]`` and attention weights ``[B, T, 49]`` (or None)."""
    feats, carry = encode(model, params, batch["image"])
    dec = _bound(model, params, feats)
    x = params.embed[batch["tgt_in"]]
    if model.attentional:
        assert isinstance(model.decoder, AttentionDecoder)
        _, ys, w = scan_with_weights(model.decoder, dec, x, carry=carry, lengths=batch["tgt_len"])
    else:
        _, ys = seqjax.scan(model.decoder, dec, x, carry=carry, lengths=batch["tgt_len"])
        w = None
    return ys @ params.w_out + params.b_out, w


def make_loss_fn(model: Captioner):
    """``loss_fn(params, batch, rng) -> LossOutput``: summed cross-entropy over caption words,
    plus ``penalty`` times the doubly stochastic regulariser for the attentive model.

    Metrics (per word once summarised): ``accuracy`` (argmax equals the reference word) and
    ``attention_penalty`` (the regulariser before ``lambda``).
    """

    def loss_fn(params, batch, rng):
        del rng  # no dropout: scenes are drawn fresh every step
        logits, w = forward(model, params, batch)
        logp = jax.nn.log_softmax(logits, axis=-1)
        targets = batch["tgt_out"]
        mask = (jnp.arange(targets.shape[1]) < batch["tgt_len"][:, None]).astype(jnp.float32)
        nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
        loss_sum = jnp.sum(nll * mask)
        metrics = {"accuracy": jnp.sum(correct * mask)}
        if w is not None:
            pen = jnp.sum(doubly_stochastic_penalty(w))
            loss_sum = loss_sum + model.penalty * pen
            metrics["attention_penalty"] = pen
        return LossOutput(loss_sum=loss_sum, count=jnp.sum(mask), metrics=metrics)

    return loss_fn


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "max_length"))
def caption_ids(
    model: Captioner, params: CaptionParams, image: Array, *, beam_size: int, max_length: int
) -> Array:
    """Best caption per image by beam search (greedy with ``beam_size=1``).

    Args:
      model, params: the model.
      image: float ``[B, 84, 84, 1]`` in [0, 1].
      beam_size: ``k``; max_length: most words (EOS included).

    Returns:
      int32 ``[B, max_length]`` word ids, ending with EOS then PAD.
    """
    feats, carry = encode(model, params, image)
    dec = _bound(model, params, tile_beams(feats, beam_size))
    step = make_step_fn(model.decoder, dec, params.embed, params.w_out, params.b_out)
    start = jnp.full((image.shape[0],), BOS, jnp.int32)
    out = beam_search(
        step, carry, start, beam_size=beam_size, max_length=max_length, eos_id=EOS, pad_id=PAD
    )
    return out.tokens[:, 0]


@functools.partial(jax.jit, static_argnames=("model",))
def attention_weights(model: Captioner, params: CaptionParams, image: Array, ids: Array) -> Array:
    """Attention weights ``[B, T, 49]`` while reading the captions ``ids [B, T]`` (EOS-ended)."""
    if not model.attentional:
        raise ValueError("a model without attention has no attention weights")
    lengths = jnp.minimum(jnp.argmax(ids == EOS, axis=1) + 1, ids.shape[1])
    lengths = jnp.where(jnp.any(ids == EOS, axis=1), lengths, ids.shape[1]).astype(jnp.int32)
    tgt_in = jnp.concatenate([jnp.full((ids.shape[0], 1), BOS, ids.dtype), ids[:, :-1]], axis=1)
    batch = {"image": image, "tgt_in": tgt_in, "tgt_len": lengths}
    return forward(model, params, batch)[1]
