"""Decoding: greedy and prefix beam search, a character LM of digit strings, error rates.

The character LM is a small GRU over the training transcripts (token 0 separates strings,
digit ``d`` is token ``d + 1``, the same numbering as the CTC classes), fused into the beam
search with :func:`seqjax.ctc.cell_language_model`. The transcripts are uniformly random
digits, so it can only learn the string lengths and the uniform digit distribution: it is
the plumbing for a real LM, and the results say how much (little) it changes here.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqjax
from experiments.speech.config import SpeechConfig
from experiments.speech.input_pipeline import (
    NUM_CLASSES,
    SpeechSet,
    length_bounds,
    max_frames,
    pad_batch,
)
from experiments.speech.model import SpeechParams, forward
from seqjax import ctc
from seqjax.train import make_optimizer
from seqjax.typing import Array, PyTree

LM_FILE = "lm.npz"
LM_EMBED = 16


class LMParams(NamedTuple):
    """Character LM: ``embed [11, E]``, GRU ``rnn``, readout ``w_out [H, 11]``, ``b_out``."""

    embed: Array
    rnn: PyTree
    w_out: Array
    b_out: Array


def lm_cell(config: SpeechConfig) -> seqjax.Cell:
    """The LM's GRU."""
    return seqjax.GRU(config.lm_hidden)


def init_lm(config: SpeechConfig, key) -> LMParams:
    """Random LM parameters."""
    cell = lm_cell(config)
    k1, k2, k3 = jax.random.split(key, 3)
    return LMParams(
        embed=jax.random.normal(k1, (NUM_CLASSES, LM_EMBED), jnp.float32),
        rnn=cell.init(k2, LM_EMBED),
        w_out=jax.random.normal(k3, (config.lm_hidden, NUM_CLASSES)) / np.sqrt(config.lm_hidden),
        b_out=jnp.zeros((NUM_CLASSES,), jnp.float32),
    )


def _lm_sequences(digits: list[str], max_digits: int) -> tuple[np.ndarray, np.ndarray]:
    seqs = np.zeros((len(digits), max_digits + 2), np.int32)
    for i, s in enumerate(digits):
        seqs[i, 1 : len(s) + 1] = [int(c) + 1 for c in s]
    lengths = np.array([len(s) + 1 for s in digits], np.int32)  # predicted tokens incl. the end
    return seqs, lengths


def train_lm(config: SpeechConfig, digits: list[str], seed: int = 0) -> tuple[LMParams, float]:
    """Trains the LM on transcripts with Adam; returns its parameters and final NLL/token."""
    cell = lm_cell(config)
    seqs, lengths = _lm_sequences(digits, config.max_digits)
    opt = make_optimizer("adam", 1e-2, clip_norm=1.0)

    def loss(p, x, n):
        _, ys = seqjax.scan(cell, p.rnn, p.embed[x[:, :-1]], lengths=n)
        logp = jax.nn.log_softmax(ys @ p.w_out + p.b_out)
        nll = -jnp.take_along_axis(logp, x[:, 1:, None], -1)[..., 0]
        mask = (jnp.arange(x.shape[1] - 1) < n[:, None]).astype(nll.dtype)
        return jnp.sum(nll * mask) / jnp.sum(mask)

    @jax.jit
    def step(p, s, x, n):
        value, g = jax.value_and_grad(loss)(p, x, n)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    params = init_lm(config, jax.random.key(seed))
    state = opt.init(params)
    rng = np.random.default_rng(seed)
    value = jnp.nan
    for _ in range(config.lm_steps):
        idx = rng.integers(0, len(digits), min(256, len(digits)))
        params, state, value = step(params, state, seqs[idx], lengths[idx])
    return params, float(value)


def save_lm(workdir: str, params: LMParams) -> None:
    """Writes the LM's leaves to ``workdir/lm.npz``."""
    leaves = jax.tree.leaves(params)
    tmp = os.path.join(workdir, f"{LM_FILE}.tmp.npz")
    np.savez(tmp, *[np.asarray(x) for x in leaves])
    os.replace(tmp, os.path.join(workdir, LM_FILE))


def load_lm(config: SpeechConfig, workdir: str) -> LMParams | None:
    """The LM saved in ``workdir``, or None."""
    path = os.path.join(workdir, LM_FILE)
    if not os.path.exists(path):
        return None
    template = jax.eval_shape(lambda: init_lm(config, jax.random.key(0)))
    with np.load(path) as z:
        leaves = [jnp.asarray(z[f"arr_{i}"]) for i in range(len(z.files))]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def language_model(config: SpeechConfig, params: LMParams) -> ctc.LanguageModel:
    """The LM as a :class:`seqjax.ctc.LanguageModel` over the CTC classes."""
    return ctc.cell_language_model(
        lm_cell(config), params.rnn, params.embed, params.w_out, params.b_out, bos=0
    )


@functools.lru_cache(maxsize=8)
def forward_fn(cell, config: SpeechConfig):
    """The jitted ``(params, inputs, lengths) -> logits`` of a model."""
    return jax.jit(functools.partial(forward, cell, config))


#: The string of each CTC class: 0 is the blank, digit d is class d + 1.
CLASSES = "_0123456789"


def to_text(labels: np.ndarray, lengths: np.ndarray) -> list[str]:
    """CTC classes (digit + 1) to digit strings."""
    return ctc.labels_to_text(labels, lengths, CLASSES)


def recognize(
    cell,
    config: SpeechConfig,
    params: SpeechParams,
    feats: list[np.ndarray],
    *,
    beam: int = 0,
    lm: ctc.LanguageModel | None = None,
    batch_size: int = 32,
    bounds: list[int] | None = None,
) -> list[str]:
    """Digit strings of feature matrices ``[T, n_mels]``: greedy (``beam=0``) or beam search.

    The LM (optional) is fused with ``config.lm_weight`` and ``config.length_bonus``;
    ``bounds`` are the padded lengths allowed (see ``input_pipeline.pad_batch``).
    """
    out: list[str] = []
    fwd = forward_fn(cell, config)
    for s in range(0, len(feats), batch_size):
        chunk = feats[s : s + batch_size]
        x, lengths = pad_batch(chunk, config.subsample, bounds=bounds, multiple=32, rows=batch_size)
        logits = fwd(params, jnp.asarray(x), jnp.asarray(lengths))
        if beam <= 0:
            labels, n = ctc.greedy_decode(logits, jnp.asarray(lengths))
        else:
            res = ctc.beam_search(
                logits,
                jnp.asarray(lengths),
                beam_width=beam,
                lm=lm,
                lm_weight=config.lm_weight if lm is not None else 0.0,
                length_bonus=config.length_bonus if lm is not None else 0.0,
                max_length=max(16, 2 * config.max_digits),
            )
            labels, n = res.labels[:, 0], res.lengths[:, 0]
        out += to_text(np.asarray(labels), np.asarray(n))[: len(chunk)]
    return out


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """CER over digits, WER over digit words, and the utterance (string) error rate."""
    words = lambda s: " ".join(s)  # noqa: E731 - each digit is one spoken word
    return {
        "cer": ctc.cer(refs, hyps),
        "wer": ctc.wer([words(r) for r in refs], [words(h) for h in hyps]),
        "utterance_error": float(np.mean([r != h for r, h in zip(refs, hyps, strict=True)])),
    }


def evaluate_decoders(
    cell, config: SpeechConfig, params: SpeechParams, ds: SpeechSet, lm: LMParams | None
) -> dict[str, dict[str, float]]:
    """Error rates of greedy, beam and (with an LM) beam + LM decoding on a set."""
    feats = [ds.utterance(i) for i in range(len(ds))]
    bounds = length_bounds(max_frames(ds), config.subsample, config.length_buckets)
    run = functools.partial(recognize, cell, config, params, feats, bounds=bounds)
    out = {"greedy": error_rates(ds.digits, run())}
    out[f"beam{config.beam}"] = error_rates(ds.digits, run(beam=config.beam))
    if lm is not None:
        fused = run(beam=config.beam, lm=language_model(config, lm))
        out[f"beam{config.beam}_lm"] = error_rates(ds.digits, fused)
    return out
