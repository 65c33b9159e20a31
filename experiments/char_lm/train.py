"""Training, resuming, restoring and evaluating a character LM run directory.

Files in the run directory: ``config.json``, ``vocab.json``, ``checkpoints/``,
``metrics.jsonl`` and ``tensorboard/`` (loss in nats/char and ``bits`` per char),
``timeline.jsonl`` (wall time at every evaluation), ``learning_curves.png`` and
``results.json`` (final validation and test bits/char).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import seqjax
from experiments.char_lm.config import CharLMConfig, check_resume, validate_config
from experiments.char_lm.input_pipeline import (
    eval_streams,
    load_corpus,
    train_streams,
    windows,
)
from experiments.char_lm.model import CharLMParams, build_cell, init_params, make_loss_fn
from experiments.scaffold import UsageError, check_output_dir, check_run_dir, write_json
from experiments.scaffold.configs import read_saved_config
from seqjax.data import text as textdata
from seqjax.train import (
    Checkpointer,
    IncompatibleCheckpointError,
    TrainState,
    evaluate,
    make_eval_step,
    make_mesh,
    optimizer_from_config,
    stream_window,
    train_loop,
)

TRAIN_COMMAND = "python -m experiments.char_lm train --workdir ..."


def saved_config(workdir: str) -> CharLMConfig | None:
    """The configuration a run directory was trained with, or None for a new directory.

    Raises:
      UsageError: ``config.json`` exists but is not a char_lm configuration.
    """
    return read_saved_config(workdir, CharLMConfig, "char_lm")


def load_vocab(workdir: str) -> textdata.Vocab:
    """The vocabulary saved in a run directory.

    Raises:
      UsageError: no ``vocab.json``.
    """
    check_run_dir("--workdir", workdir, ["vocab.json"], TRAIN_COMMAND)
    with open(os.path.join(workdir, "vocab.json"), encoding="utf-8") as f:
        return textdata.Vocab.from_json(f.read())


class _Timeline:
    """Hook writing wall time (summed over resumed sessions) and train-slice loss at evals."""

    def __init__(self, workdir, config, eval_step, batches, eval_carry, mesh):
        self.path = os.path.join(workdir, "timeline.jsonl")
        self.config = config
        self.offset = 0.0
        self.records = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.records = [json.loads(line) for line in f if line.strip()]
        self.start = time.perf_counter()
        self.eval_step, self.batches = eval_step, batches
        self.eval_carry, self.mesh = eval_carry, mesh

    def resume_at(self, step: int) -> None:
        """Drops records after ``step`` (from an interrupted session) and keeps its time."""
        kept = [r for r in self.records if r["step"] <= step]
        self.offset = kept[-1]["elapsed_s"] if kept else 0.0
        if jax.process_index() != 0:  # several processes: process 0 writes the file
            return
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
        if jax.process_index() != 0:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def train_and_evaluate(
    config: CharLMConfig, workdir: str, *, verbose: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) the model in ``workdir``, then evaluates on validation and test.

    Everything a user can get wrong (the configuration, the text, the batch shape against the
    text, a run directory trained on other text or with another model) is checked before
    anything is created or written.

    Args:
      config: the run configuration.
      workdir: the run directory (created if missing; resumed from if it holds checkpoints).
      verbose: print the configuration, a progress bar and the results.

    Returns:
      The ``results.json`` record: validation and test loss (nats/char) and bits/char,
      steps, parameters, wall times.

    Raises:
      UsageError: (a ValueError) an unusable configuration, text too short for the batch
        shape, an unwritable ``workdir``, or a run directory trained on different data or
        with another model.
    """
    validate_config(config)
    session_start = time.perf_counter()
    workdir = check_output_dir("--workdir", workdir)
    saved = saved_config(workdir)
    if saved is not None:
        check_resume(saved, config)
    corpus = load_corpus(config)
    vocab_path = os.path.join(workdir, "vocab.json")
    if os.path.exists(vocab_path):
        old = load_vocab(workdir)
        if old != corpus.vocab:
            raise UsageError(
                f"--data: expected the text {workdir} was trained on ({old.size} symbols), "
                f"got text with another vocabulary ({corpus.vocab.size} symbols); use a new "
                "--workdir or the original --data"
            )
    streams = train_streams(corpus, config)
    val_streams = eval_streams(corpus.val, config, "val")
    test_streams = eval_streams(corpus.test, config, "test")
    train_slice = None
    if config.eval_train:
        train_slice = eval_streams(
            corpus.train[: max(len(corpus.val), config.seq_len + 2)], config, "train"
        )
    # -- every check passed: from here on the run directory is written -----------------------
    workdir = seqjax.train.check_workdir(workdir)
    if not os.path.exists(vocab_path) and jax.process_index() == 0:
        with open(vocab_path, "w", encoding="utf-8") as f:
            f.write(corpus.vocab.to_json())

    cell = build_cell(config)
    loss_fn = make_loss_fn(cell, config)
    val_batches = windows(val_streams, config.seq_len)
    V = corpus.vocab.size
    mesh = make_mesh()
    eval_step = make_eval_step(loss_fn)
    timeline = _Timeline(
        workdir,
        config,
        eval_step,
        None if train_slice is None else windows(train_slice, config.seq_len),
        None if train_slice is None else cell.initial_carry((train_slice.shape[0],)),
        mesh,
    )
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
    write_json(os.path.join(workdir, "results.json"), results, indent=2, sort_keys=True)
    if verbose:
        print(
            f"validation: {val['loss']:.4f} nats/char = {val['bits']:.4f} bits/char; "
            f"test: {test['loss']:.4f} nats/char = {test['bits']:.4f} bits/char "
            f"({results['step']} steps, {elapsed / 60:.1f} min of training, "
            f"{n_params:,} parameters)",
            flush=True,
        )
    return results


# -- restoring and evaluating -------------------------------------------------------------------
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
      UsageError: not a run directory, no checkpoint, no checkpoint ``step``, or checkpoints
        that do not fit the model of the run's ``config.json``.
    """
    workdir = check_run_dir(
        "--workdir", workdir, ["config.json", "vocab.json", "checkpoints"], TRAIN_COMMAND
    )
    config = saved_config(workdir)
    assert config is not None  # check_run_dir saw config.json
    vocab = load_vocab(workdir)
    cell = build_cell(config)
    shapes = jax.eval_shape(lambda: init_params(cell, config, vocab.size, jax.random.key(0)))
    params0 = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    template = TrainState.create(
        params0, optimizer_from_config(config), 0, carry=cell.initial_carry((config.batch_size,))
    )
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise UsageError(
                f"--workdir: expected a run with a checkpoint, got none in {workdir}/checkpoints"
            )
        if step is not None and step not in steps:
            raise UsageError(f"--step: expected one of the saved steps {list(steps)}, got {step}")
        try:
            state, got = ckpt.restore(template, step)
        except IncompatibleCheckpointError as e:
            raise UsageError(f"--workdir: expected checkpoints of the run's model; {e}") from None
    finally:
        ckpt.close()
    return Model(config, vocab, cell, state.params, int(got))


def evaluate_run(workdir: str, step: int | None = None) -> dict[str, Any]:
    """Validation and test loss (nats/char) and bits/char of a run's checkpoint.

    Raises:
      UsageError: not a run directory, or its text no longer gives its vocabulary.
    """
    model = restore(workdir, step)
    corpus = load_corpus(model.config)
    if corpus.vocab != model.vocab:
        raise UsageError(
            f"--workdir: expected the run's text {model.config.data!r} to give the vocabulary "
            f"it was trained with ({model.vocab.size} symbols), got {corpus.vocab.size}"
        )
    eval_step = make_eval_step(make_loss_fn(model.cell, model.config))
    out: dict[str, Any] = {"step": model.step}
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
    return out
