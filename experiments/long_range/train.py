"""Training one long-lag model: chunks of jitted steps, evaluation on a fixed held-out set."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.long_range.config import SOLVED_MSE, Config, canonical_cell
from experiments.long_range.formal import FORMAL_TASKS, SOLVED_FORMAL
from experiments.long_range.input_pipeline import baseline, io_sizes, make_batch
from experiments.long_range.model import Model, hidden_for_budget, make_cell, param_count
from experiments.scaffold import check_output_dir, write_json
from seqjax import train


def make_optimizer(learning_rate: float, clip_norm: float | None, optimizer: str = "adam"):
    """``chain(clip_by_global_norm, adam | sgd)`` from :func:`seqjax.train.make_optimizer`."""
    return train.make_optimizer(optimizer, learning_rate, clip_norm=clip_norm)


@functools.lru_cache(maxsize=64)
def _compiled(model: Model, cfg_key: tuple):
    """Jitted chunk-of-steps and evaluation functions, shared by runs with equal shapes.

    The step is :func:`seqjax.train.make_train_step`'s (unjitted, so ``chunk`` of them run in
    one ``lax.scan`` without a host round trip per step). Each step draws its batch from the
    step key ``fold_in(state.rng, state.step)`` inside the loss, so the data stream is a pure
    function of the seed.
    """
    batch_size, length, lr, clip, optimizer, chunk = cfg_key
    opt = make_optimizer(lr, clip, optimizer)

    def loss_fn(params, batch, rng):
        del batch  # generated from the step key
        inputs, targets = make_batch(model.task, rng, batch_size, length)
        count = targets.size
        loss = model.loss(params, inputs, targets)
        return train.LossOutput(loss * count, jnp.asarray(count, jnp.float32))

    step_fn = train.make_train_step(loss_fn, opt, jit=False, donate=False)

    def one_step(state, _):
        state, metrics = step_fn(state, None)
        return state, (metrics["loss_sum"] / metrics["count"], metrics["grad_norm_sum"])

    @jax.jit
    def run_chunk(state):
        state, (losses, gnorms) = jax.lax.scan(one_step, state, None, length=chunk)
        return state, losses, gnorms

    @jax.jit
    def evaluate(params, inputs, targets):
        return model.metrics(params, inputs, targets)

    return opt, run_chunk, evaluate


class Fit(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      model: the :class:`Model` (cell definition and task).
      params: trained parameters.
      result: the JSON-serialisable summary (see :func:`train_and_evaluate`).
      losses: training loss of every step ``[steps]``.
      grad_norms: global gradient norm (before clipping) of every step ``[steps]``.
    """

    model: Model
    params: Any
    result: dict[str, Any]
    losses: np.ndarray
    grad_norms: np.ndarray


def fit(config: Config, *, log: Callable[[str], None] | None = None) -> Fit:
    """Trains one model on one task; evaluates on the fixed held-out set every ``eval_every``.

    Args:
      config: the run's :class:`Config`.
      log: called with one progress line per evaluation (default: nothing).

    Returns:
      A :class:`Fit`.
    """
    cell_name = canonical_cell(config.cell)
    hidden = config.hidden or hidden_for_budget(cell_name, config.task, config.budget)
    cell = make_cell(
        cell_name, hidden, forget_bias=config.forget_bias, init_scale=config.init_scale
    )
    model = Model(cell, config.task)
    chunk = math.gcd(config.steps, config.eval_every)
    opt, run_chunk, evaluate = _compiled(
        model,
        (
            config.batch_size,
            config.length,
            config.learning_rate,
            config.clip_norm,
            config.optimizer,
            chunk,
        ),
    )
    key = jax.random.key(config.seed)
    k_init, k_data = jax.random.split(key)
    state = train.TrainState.create(model.init(k_init), opt, rng=k_data)
    test_in, test_tg = make_batch(
        config.task, jax.random.key(config.test_seed), config.test_size, config.length
    )
    formal = config.task in FORMAL_TASKS
    if formal:  # the length-generalisation set: lengths length + 1 ... test_length
        long_in, long_tg = make_batch(
            config.task,
            jax.random.fold_in(jax.random.key(config.test_seed), 1),
            config.test_size,
            config.test_length,
            min_length=config.length + 1,
        )
    t0 = time.perf_counter()
    history, all_losses, all_gnorms = [], [], []
    step = 0
    while step < config.steps:
        state, losses, gnorms = run_chunk(state)
        step += chunk
        losses = np.asarray(losses)
        all_losses.append(losses)
        all_gnorms.append(np.asarray(gnorms))
        if step % config.eval_every == 0 or step == config.steps:
            m = {k: float(v) for k, v in evaluate(state.params, test_in, test_tg).items()}
            if formal:
                long_m = evaluate(state.params, long_in, long_tg)
                m.update({f"long_{k}": float(v) for k, v in long_m.items()})
            history.append({"step": step, "train_loss": float(np.mean(losses)), **m})
            if log is not None:
                log(
                    f"step {step}: "
                    + ", ".join(f"{k} {v:.4g}" for k, v in history[-1].items() if k != "step")
                )
    wall = time.perf_counter() - t0
    losses, gnorms = np.concatenate(all_losses), np.concatenate(all_gnorms)
    final = history[-1]
    result: dict[str, Any] = {
        "task": config.task,
        "cell": cell_name,
        "length": config.length,
        "steps": config.steps,
        "seed": config.seed,
        "hidden": hidden,
        "params": param_count(cell, *io_sizes(config.task)),
        "baseline": baseline(config.task, config.length),
    }
    if config.task == "adding":
        result["test_mse"] = final["test_mse"]
        result["solved"] = bool(final["test_mse"] < SOLVED_MSE)
    elif formal:
        chance = result["baseline"]
        result["test_length"] = config.test_length
        for key in ("accuracy", "long_accuracy"):
            result[key] = final[key]
            result[f"normalised_{key}"] = (final[key] - chance) / (1 - chance)
        result["solved"] = bool(result["normalised_long_accuracy"] >= SOLVED_FORMAL)
    else:
        result["test_xent"] = final["test_xent"]
        result["recall_accuracy"] = final["recall_accuracy"]
    # A non-finite loss or gradient freezes the state (seqjax.train skips the update and every
    # later step); the run is reported with the step where it happened.
    bad = int(state.nonfinite_step)
    if bad >= 0:
        losses[bad:], gnorms[bad:] = np.nan, np.nan
    finite = np.isfinite(gnorms)
    result.update(
        final_train_loss=float(losses[-1]),
        nonfinite=bad >= 0,
        nonfinite_step=bad if bad >= 0 else None,
        max_grad_norm=float(np.max(gnorms[finite])) if finite.any() else None,
        wall_s=round(wall, 2),
        config=dataclasses.asdict(config),
        history=history,
    )
    return Fit(model, state.params, result, losses, gnorms)


def train_and_evaluate(
    config: Config, workdir: str | Path | None = None, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Trains one model on one task and evaluates it on the fixed held-out set.

    Args:
      config: the run's :class:`Config`.
      workdir: if given, ``config.json``, ``history.json`` and ``result.json`` are written there
        (checked for writability before training).
      log: called with one progress line per evaluation (default: nothing).

    Returns:
      A JSON-serialisable dict with ``task, cell, length, steps, seed, hidden, params,
      baseline, wall_s``, the metrics (``test_mse`` and ``solved`` for adding; ``test_xent``
      and ``recall_accuracy`` for copy; for parity and modarith ``accuracy`` on lengths
      ``1 ... length``, ``long_accuracy`` on ``length + 1 ... test_length``, both also
      ``normalised_*`` as ``(acc - chance) / (1 - chance)``, and ``solved``: normalised long
      accuracy >= 0.9), ``final_train_loss``, ``nonfinite`` (a NaN/inf
      loss or gradient appeared; training then stops updating, see
      :func:`seqjax.train.make_train_step`) with ``nonfinite_step``, ``max_grad_norm`` and the
      evaluation ``history``.

    Example:
      >>> r = train_and_evaluate(Config(task="adding", cell="gru", length=5, steps=4,
      ...                               hidden=4, eval_every=2, test_size=8))
      >>> sorted(k for k in r if k.startswith("test"))
      ['test_mse']

    Raises:
      UsageError: (a ValueError) ``workdir`` cannot be written, or the budget is too small.
    """
    if workdir is not None:
        check_output_dir("--workdir", workdir)
    result = fit(config, log=log).result
    if workdir is not None:
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
        write_json(wd / "config.json", dataclasses.asdict(config))
        write_json(wd / "history.json", result["history"])
        write_json(wd / "result.json", {k: v for k, v in result.items() if k != "history"})
    return result
