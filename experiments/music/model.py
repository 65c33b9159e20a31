"""Frame models of piano rolls: a recurrent cell over frames, and two output layers.

The recurrent state after frames ``< t`` predicts frame ``t`` (``K`` = 88 keys):

- ``bernoulli``: an independent sigmoid per key, ``p(v_t) = prod_k sigma(l_k)^v (1 -
  sigma(l_k))^(1-v)`` with ``l = W h_t + b`` (the JSB metric's model, Chung et al. 2014);
- ``nade``: RNN-NADE (Boulanger-Lewandowski et al. 2012), the keys of a frame modelled
  jointly and in order, ``p(v_t) = prod_k p(v_k | v_<k, h_t)`` with ``p(v_k = 1 | ...) =
  sigma(b_k(t) + V_k . sigma(c(t) + sum_{j<k} v_j W_j))``, where the biases ``b(t)`` and
  ``c(t)`` are affine in the recurrent state. In training every conditional is computed at
  once (a masked sum over the earlier keys); sampling goes key by key.

Both losses are negative log-likelihoods in nats summed over keys; the training loop divides
by the number of frames (the JSB "NLL per frame").
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

import seqjax
from experiments.music.config import MusicConfig
from seqjax.train import LossOutput
from seqjax.typing import Array, PRNGKey, PyTree


class BernoulliParams(NamedTuple):
    """Independent sigmoid readout: ``w [H, K]``, ``b [K]``."""

    w: Array
    b: Array


class NADEParams(NamedTuple):
    """RNN-NADE readout with ``N`` hidden units.

    ``w_hb [H, K]``, ``b [K]``: the visible biases ``b(t)``; ``w_hc [H, N]``, ``c [N]``: the
    hidden biases ``c(t)``; ``W [K, N]``: key ``j`` into the hidden units of later keys;
    ``V [K, N]``: hidden units to key ``k``'s logit.
    """

    w_hb: Array
    b: Array
    w_hc: Array
    c: Array
    W: Array
    V: Array


class MusicParams(NamedTuple):
    """The recurrent cell's parameters and the readout's."""

    rnn: PyTree
    out: BernoulliParams | NADEParams


def build_cell(config: MusicConfig) -> seqjax.Cell:
    """The recurrent cell of ``config`` in seqjax's default form (``hidden`` resolved)."""
    h = config.hidden
    if h is None:
        raise ValueError("config.hidden is None: resolve the config first (config.resolve)")
    if config.cell == "lstm":
        return seqjax.LSTM(h)
    if config.cell == "gru":
        return seqjax.GRU(h)
    return seqjax.SimpleRNN(h)


def _dense(key: PRNGKey, fan_in: int, fan_out: int) -> Array:
    return jax.random.normal(key, (fan_in, fan_out), jnp.float32) / math.sqrt(fan_in)


def init_params(
    cell: seqjax.Cell, config: MusicConfig, key: PRNGKey, keys: int = 88, base_rate: float = 0.05
) -> MusicParams:
    """Initial parameters; output biases start at the logit of ``base_rate`` (about 4 of 88
    keys sound in a chorale frame), so training does not begin by unlearning a 50% rate."""
    k_rnn, k1, k2, k3, k4 = jax.random.split(key, 5)
    H = cell.output_size
    bias = jnp.full((keys,), math.log(base_rate / (1 - base_rate)), jnp.float32)
    rnn = cell.init(k_rnn, keys)
    if config.output == "bernoulli":
        return MusicParams(rnn, BernoulliParams(_dense(k1, H, keys) * 0.1, bias))
    N = config.nade_hidden
    out = NADEParams(
        w_hb=_dense(k1, H, keys) * 0.1,
        b=bias,
        w_hc=_dense(k2, H, N),
        c=jnp.zeros((N,), jnp.float32),
        W=jax.random.normal(k3, (keys, N), jnp.float32) * 0.1,
        V=jax.random.normal(k4, (keys, N), jnp.float32) * 0.1,
    )
    return MusicParams(rnn, out)


def frame_logits(out: BernoulliParams | NADEParams, h: Array, v: Array) -> Array:
    """Logits ``[..., K]`` of ``p(v_k = 1 | v_<k, h)`` for the frames ``v [..., K]``.

    For the Bernoulli readout they do not depend on ``v``.
    """
    if isinstance(out, BernoulliParams):
        return h @ out.w + out.b
    b = h @ out.w_hb + out.b  # [..., K]
    c = h @ out.w_hc + out.c  # [..., N]
    K = v.shape[-1]
    # sum over keys j < k of v_j W_j, as one matmul with a strictly lower-triangular mask
    # (several times faster on CPU than a cumulative sum over the key axis, forward and back)
    below = jnp.tril(jnp.ones((K, K), v.dtype), -1)
    before = jnp.einsum("kj,...jn->...kn", below, v[..., :, None] * out.W)  # [..., K, N]
    hid = jax.nn.sigmoid(c[..., None, :] + before)
    return b + jnp.sum(hid * out.V, axis=-1)


def frame_nll(out: BernoulliParams | NADEParams, h: Array, v: Array) -> Array:
    """``-log p(v | h)`` in nats ``[...]`` for frames ``v [..., K]`` (0/1) and states ``h``.

    Example:
      >>> import numpy as np
      >>> out = BernoulliParams(jnp.zeros((3, 4)), jnp.zeros(4))
      >>> float(frame_nll(out, jnp.ones(3), jnp.array([1.0, 0, 0, 1]))) == 4 * np.log(2)
      True
    """
    logits = frame_logits(out, h, v)
    # -log sigma(l) = softplus(-l); -log(1 - sigma(l)) = softplus(l)
    return jnp.sum(jax.nn.softplus(logits) - v * logits, axis=-1)


def hidden_states(cell: seqjax.Cell, params: MusicParams, inputs: Array) -> Array:
    """Recurrent outputs ``[B, T, H]`` for ``inputs [B, T, K]`` (frame ``t - 1`` at ``t``)."""
    _, hs = seqjax.scan(cell, params.rnn, inputs)
    return hs


def add_weight_noise(params: PyTree, key: PRNGKey, std: float) -> PyTree:
    """``params`` plus N(0, std^2) noise on every leaf (Graves 2011; Chung et al. 2014 used
    std 0.075 on these chorales)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [
        x + std * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, noisy)


def make_loss_fn(cell: seqjax.Cell, weight_noise: float = 0.0):
    """``loss_fn(params, batch, rng) -> LossOutput``: summed NLL over the masked frames.

    ``batch``: ``inputs [B, T, K]`` (the previous frames), ``targets [B, T, K]``, ``mask
    [B, T]`` (1 on real frames). Metrics: ``notes`` (mean keys on per target frame). In
    training (``rng`` given) the parameters get Gaussian weight noise of std
    ``weight_noise``; evaluation (``rng=None``) uses them as they are.
    """

    def loss_fn(params, batch, rng):
        if rng is not None and weight_noise > 0:
            params = add_weight_noise(params, rng, weight_noise)
        hs = hidden_states(cell, params, batch["inputs"])
        nll = frame_nll(params.out, hs, batch["targets"])
        mask = batch["mask"]
        return LossOutput(
            loss_sum=jnp.sum(nll * mask),
            count=jnp.sum(mask),
            metrics={"notes": jnp.sum(jnp.sum(batch["targets"], -1) * mask)},
        )

    return loss_fn


def _sample_frame(out, h: Array, key: PRNGKey, temperature: float) -> Array:
    """One frame ``[B, K]`` (float 0/1) from ``p(v | h)``; temperature 0 takes each key's
    most likely value."""

    def draw(logits, k):
        if temperature == 0:
            return (logits > 0).astype(jnp.float32)
        return jax.random.bernoulli(k, jax.nn.sigmoid(logits / temperature)).astype(jnp.float32)

    if isinstance(out, BernoulliParams):
        return draw(h @ out.w + out.b, key)
    b = h @ out.w_hb + out.b
    c = h @ out.w_hc + out.c
    keys = jax.random.split(key, out.W.shape[0])

    def one_key(a, xs):
        b_k, W_k, V_k, kk = xs
        logit = b_k + jnp.sum(jax.nn.sigmoid(a) * V_k, axis=-1)
        v = draw(logit, kk)
        return a + v[..., None] * W_k, v

    _, vs = jax.lax.scan(one_key, c, (jnp.moveaxis(b, -1, 0), out.W, out.V, keys))
    return jnp.moveaxis(vs, 0, -1)


def sample(
    cell: seqjax.Cell,
    params: MusicParams,
    primer: Array,
    frames: int,
    key: PRNGKey,
    temperature: float = 1.0,
) -> Array:
    """Continues ``primer [B, P, K]`` (``P >= 0`` frames) by ``frames`` sampled frames.

    Returns:
      float 0/1 ``[B, frames, K]`` (the new frames only).
    """
    B, P, K = primer.shape
    prev = jnp.zeros((B, K), jnp.float32)
    carry = cell.initial_carry((B,))
    if P:
        inputs = jnp.concatenate([prev[:, None], primer[:, :-1]], axis=1)
        carry, _ = seqjax.scan(cell, params.rnn, inputs, carry=carry)
        prev = primer[:, -1]

    def step(state, k):
        carry, prev = state
        carry, h = cell(params.rnn, carry, prev)
        v = _sample_frame(params.out, h, k, temperature)
        return (carry, v), v

    _, vs = jax.lax.scan(step, (carry, prev), jax.random.split(key, frames))
    return jnp.moveaxis(vs, 0, 1)
