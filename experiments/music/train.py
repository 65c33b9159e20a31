"""Training, resuming, restoring and evaluating a chorale-model run directory.

Files in the run directory: ``config.json``, ``data.json`` (the BWV identifiers of each
split), ``checkpoints/`` (the latest ones and the best on validation NLL), ``metrics.jsonl``
and ``tensorboard/`` (loss = NLL per frame in nats), ``timeline.jsonl`` (training wall time
and test NLL at every evaluation), ``learning_curves.png`` and ``results.json``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np

import seqjax
from experiments.music.config import MusicConfig, check_resume, resolve, validate_config
from experiments.music.input_pipeline import Dataset, eval_batches, load_dataset, train_batch
from experiments.music.model import MusicParams, build_cell, init_params, make_loss_fn
from experiments.scaffold import (
    UsageError,
    check_output_dir,
    check_run_dir,
    is_main_process,
    write_json,
)
from experiments.scaffold.configs import read_saved_config
from experiments.scaffold.restore import restore_params
from experiments.scaffold.timeline import Timeline
from seqjax.train import (
    evaluate,
    make_eval_step,
    make_mesh,
    train_loop,
)

TRAIN_COMMAND = "python -m experiments.music train --workdir ..."


def saved_config(workdir: str) -> MusicConfig | None:
    """The configuration a run directory was trained with, or None for a new directory.

    Raises:
      UsageError: ``config.json`` exists but is not a music configuration.
    """
    return read_saved_config(workdir, MusicConfig, "music")


def _check_manifest(workdir: str, data: Dataset) -> None:
    path = os.path.join(workdir, "data.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    if old != data.manifest():
        raise UsageError(
            f"--workdir: expected the chorales {workdir} was trained on, got another split "
            "(the music21 corpus or the cache changed); use a new --workdir"
        )


def _n_params(tree) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def train_and_evaluate(config: MusicConfig, workdir: str, *, verbose: bool = True) -> dict:
    """Trains (or resumes) the model in ``workdir``, then evaluates valid and test NLL.

    Test NLL is reported at the checkpoint with the best validation NLL (early stopping, as
    Chung et al. 2014) and at the last step. Everything a user can get wrong is checked
    before anything is written.

    Args:
      config: the run configuration (``hidden=None`` picks the 20K-parameter size).
      workdir: the run directory (created if missing; resumed from if it holds checkpoints).
      verbose: print the configuration, a progress bar and the results.

    Returns:
      The ``results.json`` record.

    Raises:
      UsageError: an unusable configuration or ``workdir``, or a run directory trained with
        another model or on other chorales.
    """
    config = resolve(config)
    validate_config(config)
    session_start = time.perf_counter()
    workdir = check_output_dir("--workdir", workdir)
    saved = saved_config(workdir)
    if saved is not None:
        check_resume(saved, config)
    data = load_dataset(config)
    _check_manifest(workdir, data)
    # -- every check passed: from here on the run directory is written -----------------------
    workdir = seqjax.train.check_workdir(workdir)
    if is_main_process():
        write_json(os.path.join(workdir, "data.json"), data.manifest())

    cell = build_cell(config)
    loss_fn = make_loss_fn(cell, config.weight_noise)
    eval_step = make_eval_step(loss_fn)
    length = -(-max(c.frames for c in data.valid + data.test) // 16) * 16
    valid_b, test_b = eval_batches(data.valid, length), eval_batches(data.test, length)
    mesh = make_mesh()
    timeline = Timeline(
        workdir,
        every=config.eval_every,
        total_steps=config.total_steps,
        # the test NLL at every evaluation step (the figure's curve), not counted as training
        measure=lambda step, state: {
            "test_nll": evaluate(eval_step, state.params, test_b, mesh)["loss"]
        },
        exclude_measure_time=True,
    )

    result = train_loop(
        config,
        workdir,
        init_params=jax.jit(lambda key: init_params(cell, config, key)),
        loss_fn=loss_fn,
        train_batch=lambda step: train_batch(data.train, config, step),
        eval_batches=lambda: valid_b,
        mesh=mesh,
        hooks=(timeline,),
        verbose=verbose,
    )
    final = result.state.params
    last_step = int(jax.device_get(result.state.step))
    best_step = result.best_step or last_step
    best = restore(workdir, best_step).params if best_step != last_step else final
    out: dict[str, Any] = {"step": last_step, "best_step": best_step}
    for tag, params in (("best", best), ("final", final)):
        for name, batches in (("valid", valid_b), ("test", test_b)):
            out[f"{name}_nll_{tag}"] = evaluate(eval_step, params, batches, mesh)["loss"]
    elapsed = timeline.records[-1]["elapsed_s"] if timeline.records else 0.0
    train_frames = sum(c.frames for c in data.train)
    out.update(
        test_nll=out["test_nll_best"],
        valid_nll=out["valid_nll_best"],
        cell=config.cell,
        hidden=config.hidden,
        output=config.output,
        params=_n_params(final),
        seed=config.seed,
        train_elapsed_s=elapsed,
        session_s=time.perf_counter() - session_start,
        resumed_from=result.resumed_from,
        chorales={k: len(v) for k, v in data.manifest().items()},
        train_frames=train_frames,
        jax=jax.__version__,
    )
    if is_main_process():
        write_json(os.path.join(workdir, "results.json"), out, indent=2, sort_keys=True)
    if verbose:
        print(
            f"test NLL per frame {out['test_nll']:.3f} nats at the best validation step "
            f"{best_step} (valid {out['valid_nll']:.3f}); final step {out['step']}: test "
            f"{out['test_nll_final']:.3f} ({out['params']:,} parameters, {elapsed:.0f} s)",
            flush=True,
        )
    return out


# -- restoring and evaluating -------------------------------------------------------------------
class Model(NamedTuple):
    """A trained model restored from a run directory."""

    config: MusicConfig
    cell: seqjax.Cell
    params: MusicParams
    step: int
    manifest: dict[str, list[str]]


def restore(workdir: str, step: int | str | None = "best") -> Model:
    """Loads config and parameters of a run: the best-validation checkpoint (``"best"``), the
    latest (None) or checkpoint ``step``.

    Raises:
      UsageError: not a run directory, no checkpoint, no checkpoint ``step``, or checkpoints
        that do not fit the run's model.
    """
    workdir = check_run_dir(
        "--workdir", workdir, ["config.json", "data.json", "checkpoints"], TRAIN_COMMAND
    )
    config = saved_config(workdir)
    assert config is not None  # check_run_dir saw config.json
    with open(os.path.join(workdir, "data.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    cell = build_cell(config)
    params, got = restore_params(
        workdir,
        config,
        lambda key: init_params(cell, config, key),
        step=step,
        best_metric=config.best_metric,
        best_mode=config.best_mode,
    )
    return Model(config, cell, params, got, manifest)


def evaluate_run(workdir: str, step: int | None = None) -> dict[str, Any]:
    """Validation and test NLL per frame (nats) of a run's best (or ``step``) checkpoint.

    Raises:
      UsageError: not a run directory, or the corpus no longer gives the run's split.
    """
    model = restore(workdir, "best" if step is None else step)
    data = load_dataset(model.config)
    if data.manifest() != model.manifest:
        raise UsageError(
            f"--workdir: expected the chorales {workdir} was trained on, got another split"
        )
    eval_step = make_eval_step(make_loss_fn(model.cell))
    length = -(-max(c.frames for c in data.valid + data.test) // 16) * 16
    out: dict[str, Any] = {"step": model.step, "cell": model.config.cell}
    out.update(hidden=model.config.hidden, output=model.config.output)
    for name, chorales in (("valid", data.valid), ("test", data.test)):
        m = evaluate(eval_step, model.params, eval_batches(chorales, length), make_mesh())
        out[f"{name}_nll_per_frame"] = m["loss"]
        out[f"{name}_frames"] = int(m["count"])
    return out
