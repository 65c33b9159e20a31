"""Training, resuming and restoring a translation run directory.

Files in the run directory: ``config.json``, ``dataset.json`` (the numbers and texts of every
split and the vocabularies, written once so that a resumed run, ``translate`` and ``evaluate``
read exactly the data the model was trained on), ``checkpoints/``, ``metrics.jsonl``,
``tensorboard/``, ``learning_curves.png`` and ``results.json`` (validation loss, token
accuracy and greedy exact match, wall time).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

import jax

from experiments.scaffold import UsageError, check_output_dir, check_run_dir, write_json
from experiments.scaffold.configs import read_saved_config
from experiments.scaffold.restore import restore_params
from experiments.scaffold.timeline import Timeline
from experiments.translate.config import TranslateConfig, check_resume, validate_config
from experiments.translate.input_pipeline import (
    Dataset,
    dataset_from_json,
    dataset_to_json,
    make_dataset,
    split_arrays,
    train_batch,
    widths,
)
from experiments.translate.model import (
    Seq2Seq,
    Seq2SeqParams,
    build_model,
    count_params,
    init_params,
    make_loss_fn,
)
from seqjax.train import (
    evaluate,
    make_eval_step,
    make_mesh,
    train_loop,
)

TRAIN_COMMAND = "python -m experiments.translate train --workdir ..."


def saved_config(workdir: str) -> TranslateConfig | None:
    """The configuration a run directory was trained with, or None for a new directory.

    Raises:
      UsageError: ``config.json`` exists but is not a translate configuration.
    """
    return read_saved_config(workdir, TranslateConfig, "translate")


def load_dataset(workdir: str) -> Dataset:
    """The dataset saved in a run directory.

    Raises:
      UsageError: no readable ``dataset.json``.
    """
    check_run_dir("--workdir", workdir, ["dataset.json"], TRAIN_COMMAND)
    path = os.path.join(workdir, "dataset.json")
    try:
        with open(path, encoding="utf-8") as f:
            return dataset_from_json(json.load(f))
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(f"--workdir: expected a readable {path!r}, got {e}") from None


def _dataset_for(config: TranslateConfig, workdir: str) -> tuple[Dataset, bool]:
    """The run's saved dataset, or a new one (second value: whether it must be written)."""
    if os.path.exists(os.path.join(workdir, "dataset.json")):
        return load_dataset(workdir), False
    sizes = {"train": config.train_size, "val": config.val_size, "test": config.test_size}
    return make_dataset(config.pair, config.target_tokens, sizes, config.data_seed), True


def max_decode(config: TranslateConfig, ds: Dataset) -> int:
    """Most target tokens a translation may have (EOS included)."""
    return config.max_decode or widths(ds)[1] + 4


def train_and_evaluate(
    config: TranslateConfig, workdir: str, *, verbose: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) the model in ``workdir``, then measures it on the validation split.

    Args:
      config: the run configuration.
      workdir: the run directory (created if missing; resumed from if it holds checkpoints).
      verbose: print the configuration, a progress bar and the results.

    Returns:
      The ``results.json`` record: validation loss, token accuracy, greedy exact match,
      parameters, training wall time.

    Raises:
      UsageError: (a ValueError) an unusable configuration, an unwritable ``workdir``, or a run
        directory trained on other data or with another model.
    """
    validate_config(config)
    session_start = time.perf_counter()
    workdir = check_output_dir("--workdir", workdir)
    saved = saved_config(workdir)
    if saved is not None:
        check_resume(saved, config)
    ds, new_data = _dataset_for(config, workdir)
    # -- every check passed: from here on the run directory is written -----------------------
    os.makedirs(workdir, exist_ok=True)
    if new_data:
        write_json(os.path.join(workdir, "dataset.json"), dataset_to_json(ds), indent=None)
    W = widths(ds)
    train = split_arrays(ds, "train", config.reverse_source, W)
    val = split_arrays(ds, "val", config.reverse_source, W)
    model = build_model(config, ds.source_vocab.size, ds.target_vocab.size)
    loss_fn = make_loss_fn(model)
    mesh = make_mesh()
    timeline = Timeline(workdir, every=50, total_steps=config.total_steps)
    result = train_loop(
        config,
        workdir,
        init_params=jax.jit(lambda key: init_params(model, key)),
        loss_fn=loss_fn,
        train_batch=lambda step: train_batch(train, step, config.batch_size, config.seed),
        eval_batches=lambda: [val],
        mesh=mesh,
        hooks=(timeline,),
        verbose=verbose,
    )
    params = result.state.params
    metrics = result.eval_metrics
    if metrics is None:  # a finished run re-run: nothing was trained, evaluate here
        metrics = evaluate(make_eval_step(loss_fn), params, [val], mesh)
    from experiments.translate.translate import exact_match, translate_texts

    hyps = translate_texts(model, params, ds, config, ds.source["val"], beam=1)
    step = int(jax.device_get(result.state.step))
    results = {
        "step": step,
        "val_loss": metrics["loss"],
        "val_token_accuracy": metrics["accuracy"],
        "val_exact_match_greedy": exact_match(hyps, ds.target["val"]),
        "params": count_params(model),
        "train_elapsed_s": timeline.elapsed(),
        "session_s": time.perf_counter() - session_start,
        "resumed_from": result.resumed_from,
        "load_average": os.getloadavg()[0],
    }
    write_json(os.path.join(workdir, "results.json"), results, indent=2, sort_keys=True)
    if verbose:
        print(
            f"validation: loss {metrics['loss']:.4f}, token accuracy {metrics['accuracy']:.4f}, "
            f"exact match (greedy) {results['val_exact_match_greedy']:.4f} ({step} steps, "
            f"{results['train_elapsed_s'] / 60:.1f} min of training, {results['params']:,} "
            "parameters)",
            flush=True,
        )
    return results


# -- restoring ----------------------------------------------------------------------------------
class Model(NamedTuple):
    """A trained model restored from a run directory."""

    config: TranslateConfig
    dataset: Dataset
    model: Seq2Seq
    params: Seq2SeqParams
    step: int


def restore(workdir: str, step: int | None = None) -> Model:
    """Loads config, dataset and parameters (latest checkpoint, or ``step``) of a run.

    Raises:
      UsageError: not a run directory, no checkpoint, no checkpoint ``step``, or checkpoints
        that do not fit the model of the run's ``config.json``.
    """
    workdir = check_run_dir(
        "--workdir", workdir, ["config.json", "dataset.json", "checkpoints"], TRAIN_COMMAND
    )
    config = saved_config(workdir)
    assert config is not None  # check_run_dir saw config.json
    ds = load_dataset(workdir)
    model = build_model(config, ds.source_vocab.size, ds.target_vocab.size)
    params, got = restore_params(workdir, config, lambda key: init_params(model, key), step=step)
    return Model(config, ds, model, params, got)
