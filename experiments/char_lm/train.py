"""Training, resuming, restoring and evaluating a character LM run directory.

Files in the run directory: ``config.json``, ``vocab.json``, ``checkpoints/``,
``metrics.jsonl`` and ``tensorboard/`` (loss in nats/char and ``bits`` per char),
``timeline.jsonl`` (wall time at every evaluation), ``learning_curves.png`` and
``results.json`` (final validation and test bits/char).
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax
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
from experiments.scaffold.restore import restore_params
from experiments.scaffold.timeline import Timeline
from seqjax.data import text as textdata
from seqjax.train import (
    Checkpointer,
    TrainState,
    config_to_dict,
    evaluate,
    make_eval_step,
    make_mesh,
    stream_window,
    train_loop,
)

TRAIN_COMMAND = "python -m experiments.char_lm train --workdir ..."


class _BudgetReached(Exception):
    """Raised by :class:`_TimeBudget` to leave the training loop; carries the last state."""

    def __init__(self, step: int, state: TrainState):
        super().__init__(f"time budget reached at step {step}")
        self.step, self.state = step, state


class _TimeBudget:
    """Hook ``(step, state)``: after ``seconds`` of the timeline's training time, stop.

    It waits for the step's computation (so the clock measures finished steps, not dispatched
    ones), has the timeline record the step, and raises :class:`_BudgetReached`.
    """

    def __init__(self, seconds: float, timeline: Timeline):
        self.seconds, self.timeline = seconds, timeline

    def __call__(self, step: int, state: TrainState) -> None:
        jax.block_until_ready(state.step)
        if self.timeline.elapsed() < self.seconds:
            return
        self.timeline.total_steps = step  # the run's last step: the timeline records it
        self.timeline(step, state)
        raise _BudgetReached(step, state)


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
    train_eval_batches = None if train_slice is None else windows(train_slice, config.seq_len)

    def measure(step: int, state: TrainState) -> dict[str, float]:
        """The loss on a training slice without dropout, beside the validation loss."""
        if train_slice is None:
            return {}
        carry = cell.initial_carry((train_slice.shape[0],))
        m = evaluate(eval_step, state.params, train_eval_batches, mesh, carry)
        return {"train_eval_loss": m["loss"], "train_eval_bits": m["bits"]}

    timeline = Timeline(
        workdir, every=config.eval_every, total_steps=config.total_steps, measure=measure
    )
    hooks: tuple = (timeline,)
    if config.time_budget is not None:
        hooks += (_TimeBudget(config.time_budget, timeline),)

    prior = _latest_step(workdir) if config.time_budget is not None else None
    try:
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
            hooks=hooks,
            verbose=verbose,
        )
        state, val, train_metrics = result.state, result.eval_metrics, result.train_metrics
        resumed_from = result.resumed_from
    except _BudgetReached as stop:
        state, val = stop.state, None  # validation follows below, as for a finished run
        _save_stopped(config, workdir, stop)
        train_metrics = _last_train_record(workdir)
        resumed_from = prior
        if verbose:
            print(
                f"time budget {config.time_budget:g} s reached after step {stop.step}: "
                "checkpoint saved, evaluating",
                flush=True,
            )
    params = state.params
    # the loop evaluated the final step on the validation split unless it stopped early
    if val is None:  # nothing left to train (a finished run re-run) or budget reached
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
    final_step = int(jax.device_get(state.step))
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
        "resumed_from": resumed_from,
        "train_tokens_per_sec_last_window": (train_metrics or {}).get("tokens_per_sec"),
        "time_budget_s": config.time_budget,
        "load_average": _load_average(),
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


def _latest_step(workdir: str) -> int | None:
    """The run's latest checkpoint step (None: no checkpoint)."""
    probe = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        return probe.latest_step()
    finally:
        probe.close()


def _save_stopped(config: CharLMConfig, workdir: str, stop: _BudgetReached) -> None:
    """Checkpoints the state a time budget stopped at (unless the loop just saved it)."""
    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        keep=config.keep,
        keep_best=config.keep_best,
        best_metric=config.best_metric,
        best_mode=config.best_mode,
        async_save=False,
    )
    try:
        ckpt.save(stop.state, step=stop.step, config=config_to_dict(config))
    finally:
        ckpt.close()


def _last_train_record(workdir: str) -> dict[str, Any] | None:
    """The last ``train`` record of ``metrics.jsonl`` (None: none)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = [r for r in seqjax.train.read_metrics(path) if r.get("split") == "train"]
    return rows[-1] if rows else None


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages at the end of training (None where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


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
    params, got = restore_params(
        workdir,
        config,
        lambda key: init_params(cell, config, vocab.size, key),
        step=step,
        carry=cell.initial_carry((config.batch_size,)),
    )
    return Model(config, vocab, cell, params, got)


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
