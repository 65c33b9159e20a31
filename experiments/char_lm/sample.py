"""Text generation from a trained character LM, in one compiled decode loop."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import seqjax
from experiments.char_lm.train import Model


@functools.cache
def decode_fns(cell: seqjax.Stack):
    """``(step_fn, prime_fn)`` for :func:`seqjax.decode.generate`, cached per cell so the
    compiled decode loop is reused."""

    def step_fn(params, carry, tok):
        carry, y = cell(params.rnn, carry, params.embed[tok])
        return carry, y @ params.w_out + params.b_out

    def prime_fn(params, carry, tokens):
        carry, ys = seqjax.scan(cell, params.rnn, params.embed[tokens], carry=carry)
        return carry, ys @ params.w_out + params.b_out

    return step_fn, prime_fn


def sample(
    model: Model,
    prompt: str,
    length: int,
    *,
    samples: int = 1,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> tuple[list[str], dict[str, float]]:
    """Generates ``samples`` continuations of ``prompt`` in one compiled call.

    Args:
      model: a restored run (:func:`experiments.char_lm.train.restore`).
      prompt: text to continue; empty means a newline.
      length: characters to generate.
      samples: independent samples (one batch).
      temperature: softmax temperature; 0 is greedy.
      top_k, top_p: optional top-k / nucleus truncation.
      seed: sampling seed.

    Returns:
      ``(texts, timing)``: the generated strings (prompt excluded) and
      ``{"first_call_s", "steady_s", "tokens_per_sec"}``; the steady-state speed is measured
      on a second call with a new key (the first includes compilation).
    """
    if not prompt:
        prompt = "\n"
    ids = model.vocab.encode(prompt)
    prompt_ids = jnp.asarray(np.broadcast_to(ids, (samples, len(ids))))
    step_fn, prime_fn = decode_fns(model.cell)
    carry = model.cell.initial_carry((samples,))
    kw = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p, prime_fn=prime_fn)
    t0 = time.perf_counter()
    tokens, _ = seqjax.decode.generate(
        step_fn, model.params, carry, prompt_ids, jax.random.key(seed), **kw
    )
    tokens = np.asarray(jax.device_get(tokens))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again, _ = seqjax.decode.generate(
        step_fn, model.params, carry, prompt_ids, jax.random.key(seed + 1), **kw
    )
    jax.block_until_ready(again)
    steady = time.perf_counter() - t0
    texts = [model.vocab.decode(row) for row in tokens]
    return texts, {
        "first_call_s": first,
        "steady_s": steady,
        "tokens_per_sec": samples * length / max(steady, 1e-9),
    }
