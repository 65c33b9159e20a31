"""Training, resuming and restoring a captioning run directory.

Files in the run directory: ``config.json``, ``checkpoints/``, ``metrics.jsonl``,
``tensorboard/``, ``learning_curves.png``, ``timeline.jsonl`` and ``results.json`` (validation
loss, word accuracy and greedy exact match, parameters, wall time). The scenes are a function
of the configuration (seeds) and the installed object images, so no data file is stored.
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax

from experiments.caption.config import CaptionConfig, check_resume, validate_config
from experiments.caption.input_pipeline import (
    eval_scenes,
    object_banks,
    scenes_to_batch,
    train_batch,
)
from experiments.caption.model import (
    Captioner,
    CaptionParams,
    build_model,
    count_params,
    init_params,
    make_loss_fn,
)
from experiments.scaffold import check_output_dir, check_run_dir, write_json
from experiments.scaffold.configs import read_saved_config
from experiments.scaffold.restore import restore_params
from experiments.scaffold.timeline import Timeline
from seqjax.train import (
    evaluate,
    make_eval_step,
    make_mesh,
    train_loop,
)

TRAIN_COMMAND = "python -m experiments.caption train --workdir ..."


def saved_config(workdir: str) -> CaptionConfig | None:
    """The configuration a run directory was trained with, or None for a new directory.

    Raises:
      UsageError: ``config.json`` exists but is not a caption configuration.
    """
    return read_saved_config(workdir, CaptionConfig, "caption")


def train_and_evaluate(
    config: CaptionConfig, workdir: str, *, verbose: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) the captioner in ``workdir``, then measures it on validation scenes.

    Args:
      config: the run configuration.
      workdir: the run directory (created if missing; resumed from if it holds checkpoints).
      verbose: print the configuration, a progress bar and the results.

    Returns:
      The ``results.json`` record: validation loss, word accuracy, greedy exact match,
      parameters, training wall time.

    Raises:
      UsageError: (a ValueError) an unusable configuration, an unwritable ``workdir``, a run
        directory trained with another model or data, or object images not installed.
    """
    validate_config(config)
    session_start = time.perf_counter()
    workdir = check_output_dir("--workdir", workdir)
    saved = saved_config(workdir)
    if saved is not None:
        check_resume(saved, config)
    train_bank, test_bank = object_banks(config)
    val_scenes = eval_scenes(test_bank, config, "val")
    val = scenes_to_batch(val_scenes, None, config.max_decode)
    # -- every check passed: from here on the run directory is written -----------------------
    os.makedirs(workdir, exist_ok=True)
    model = build_model(config)
    loss_fn = make_loss_fn(model)
    mesh = make_mesh()
    timeline = Timeline(workdir, every=50, total_steps=config.total_steps)
    result = train_loop(
        config,
        workdir,
        init_params=jax.jit(lambda key: init_params(model, key)),
        loss_fn=loss_fn,
        train_batch=lambda step: train_batch(train_bank, config, step),
        eval_batches=lambda: [val],
        mesh=mesh,
        hooks=(timeline,),
        verbose=verbose,
    )
    params = result.state.params
    metrics = result.eval_metrics
    if metrics is None:  # a finished run re-run: nothing was trained, evaluate here
        metrics = evaluate(make_eval_step(loss_fn), params, [val], mesh)
    from experiments.caption.captioning import caption_images

    hyps = caption_images(model, params, config, [s.image for s in val_scenes], beam=1)
    exact = sum(h in s.captions for h, s in zip(hyps, val_scenes, strict=True)) / len(val_scenes)
    step = int(jax.device_get(result.state.step))
    results = {
        "step": step,
        "attention": config.attention,
        "val_loss": metrics["loss"],
        "val_word_accuracy": metrics["accuracy"],
        "val_exact_match_greedy": exact,
        "params": count_params(model),
        "decoder_hidden": _decoder_hidden(model),
        "train_elapsed_s": timeline.elapsed(),
        "session_s": time.perf_counter() - session_start,
        "resumed_from": result.resumed_from,
        "load_average": os.getloadavg()[0],
    }
    write_json(os.path.join(workdir, "results.json"), results, indent=2, sort_keys=True)
    if verbose:
        print(
            f"validation: loss {metrics['loss']:.4f}, word accuracy {metrics['accuracy']:.4f}, "
            f"exact match (greedy) {exact:.4f} ({step} steps, "
            f"{results['train_elapsed_s'] / 60:.1f} min of training, {results['params']:,} "
            "parameters)",
            flush=True,
        )
    return results


def _decoder_hidden(model: Captioner) -> int:
    cell = model.decoder.cell if model.attentional else model.decoder  # type: ignore[attr-defined]
    return int(cell.output_size)


# -- restoring ----------------------------------------------------------------------------------
class Model(NamedTuple):
    """A trained model restored from a run directory."""

    config: CaptionConfig
    model: Captioner
    params: CaptionParams
    step: int


def restore(workdir: str, step: int | None = None) -> Model:
    """Loads the config and parameters (latest checkpoint, or ``step``) of a run.

    Raises:
      UsageError: not a run directory, no checkpoint, no checkpoint ``step``, or checkpoints
        that do not fit the model of the run's ``config.json``.
    """
    workdir = check_run_dir("--workdir", workdir, ["config.json", "checkpoints"], TRAIN_COMMAND)
    config = saved_config(workdir)
    assert config is not None  # check_run_dir saw config.json
    model = build_model(config)
    params, got = restore_params(workdir, config, lambda key: init_params(model, key), step=step)
    return Model(config, model, params, got)
