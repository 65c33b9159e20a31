"""Training, resuming, restoring, evaluating and reading PNG files with a digit-line run.

Files in the run directory: ``config.json``, ``checkpoints/``, ``metrics.jsonl`` and
``tensorboard/`` (CTC loss per line, ``nll_per_digit``), ``timeline.jsonl`` (training wall
time, summed over resumed sessions), ``learning_curves.png`` and ``results.json`` (CER and
line accuracy on the held-out test lines).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np

import seqjax
from experiments.handwriting import decode
from experiments.handwriting.config import LinesConfig, check_resume, validate_config
from experiments.handwriting.input_pipeline import (
    LineSet,
    digit_banks,
    encode,
    eval_batches,
    length_bounds,
    line_image,
    make_batch,
    make_set,
    pad_frames,
    prepare_line,
    read_png,
)
from experiments.handwriting.model import LinesParams, build_cell, init_params, make_loss_fn
from experiments.scaffold import UsageError, check_output_dir, check_run_dir, write_json
from experiments.scaffold.configs import read_saved_config
from experiments.scaffold.restore import restore_params
from experiments.scaffold.timeline import Timeline
from seqjax.data.digit_lines import line_texts, make_digit_lines
from seqjax.train import batch_indices, make_mesh, train_loop

TRAIN_COMMAND = "python -m experiments.handwriting train --workdir ..."


def saved_config(workdir: str) -> LinesConfig | None:
    """The configuration a run directory was trained with, or None for a new directory.

    Raises:
      UsageError: ``config.json`` exists but is not a handwriting configuration.
    """
    return read_saved_config(workdir, LinesConfig, "handwriting")


@functools.lru_cache(maxsize=8)  # generating 20,000 lines takes about half a minute
def _cached_set(
    split: str, n: int, seed: int, max_digits: int, height: int, elastic=(0.0, 4.0)
) -> LineSet:
    return make_set(split, n, seed=seed, max_digits=max_digits, height=height, elastic=elastic)


def load_data(config: LinesConfig, names=None) -> dict[str, LineSet]:
    """The run's line sets (train and val from training digits, test from held-out ones);
    by default val and test, and train too when the run draws from a fixed set."""
    if names is None:
        names = ("val", "test") if config.fresh_lines else ("train", "val", "test")
    sizes = {"train": config.num_train, "val": config.num_val, "test": config.num_test}
    distort = (config.elastic_alpha, config.elastic_sigma)
    return {
        name: _cached_set(
            name,
            sizes[name],
            config.data_seed,
            config.max_digits,
            config.height,
            distort if name == "train" else (0.0, 4.0),
        )
        for name in names
    }


def train_and_evaluate(config: LinesConfig, workdir: str, *, verbose: bool = True) -> dict:
    """Trains (or resumes) the recogniser in ``workdir``, then evaluates on the test lines.

    Args:
      config: the run configuration.
      workdir: the run directory (created if missing; resumed from if it holds checkpoints).
      verbose: print progress and results.

    Returns:
      The ``results.json`` record: CER and line accuracy per decoder on the test lines,
      steps, parameters, wall times, load average.

    Raises:
      UsageError: an unusable configuration or run directory.
    """
    validate_config(config)
    session_start = time.perf_counter()
    workdir = check_output_dir("--workdir", workdir)
    saved = saved_config(workdir)
    if saved is not None:
        check_resume(saved, config)
    data = load_data(config)
    val = data["val"]
    workdir = seqjax.train.check_workdir(workdir)

    cell = build_cell(config)
    widest = max(int(d.widths.max()) for d in data.values())
    bounds = length_bounds(widest, config.cols_per_frame)
    k, digits = config.cols_per_frame, config.max_digits
    val_batches = eval_batches(val, config.batch_size, k, digits, bounds)
    timeline = Timeline(workdir, every=config.eval_every, total_steps=config.total_steps)

    def train_batch(step: int) -> dict[str, np.ndarray]:
        if config.fresh_lines:
            return fresh_batch(config, step, bounds)
        idx = batch_indices(step, config.num_train, config.batch_size, config.seed)
        return make_batch(data["train"], idx, k, digits, bounds)

    result = train_loop(
        config,
        workdir,
        init_params=jax.jit(lambda key: init_params(cell, config, key)),
        loss_fn=make_loss_fn(cell, config),
        train_batch=train_batch,
        eval_batches=lambda: val_batches,
        mesh=make_mesh(),
        hooks=(timeline,),
        verbose=verbose,
    )
    train_s = timeline.elapsed()
    params = result.state.params
    rates = decode.evaluate_decoders(cell, config, params, data["test"])
    n_params = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    results = {
        "step": int(jax.device_get(result.state.step)),
        "test": rates,
        "val_loss": (result.eval_metrics or {}).get("loss"),
        "params": n_params,
        "train_lines": (
            config.total_steps * config.batch_size if config.fresh_lines else config.num_train
        ),
        "test_lines": len(data["test"]),
        "train_elapsed_s": train_s,
        "session_s": time.perf_counter() - session_start,
        "resumed_from": result.resumed_from,
        "load_average": list(os.getloadavg()),
        "jax": jax.__version__,
    }
    write_json(os.path.join(workdir, "results.json"), results, indent=2, sort_keys=True)
    if verbose:
        summary = ", ".join(
            f"{name} CER {v['cer']:.2%} line accuracy {v['line_accuracy']:.1%}"
            for name, v in rates.items()
        )
        print(
            f"test lines: {summary} ({results['step']} steps, {train_s / 60:.1f} min of "
            f"training, {n_params:,} parameters)",
            flush=True,
        )
    return results


def fresh_batch(config: LinesConfig, step: int, bounds: list[int]) -> dict[str, np.ndarray]:
    """Batch ``step`` of new lines of the training digit images (a function of the step)."""
    seed = np.random.SeedSequence([config.data_seed, config.seed, step, 7]).generate_state(1)[0]
    lines = make_digit_lines(
        config.batch_size,
        digit_banks()[0],
        seed=int(seed),
        max_digits=config.max_digits,
        height=config.height,
        elastic=(config.elastic_alpha, config.elastic_sigma),
    )
    texts = line_texts(lines)
    images = [lines.images[i, :, : lines.widths[i]] for i in range(len(texts))]
    x, lengths = pad_frames(images, config.cols_per_frame, bounds)
    labels, label_lengths = encode(texts, config.max_digits)
    return {
        "inputs": x,
        "lengths": lengths,
        "labels": labels,
        "label_lengths": label_lengths,
        "weights": np.ones(len(texts), np.float32),
    }


class Model(NamedTuple):
    """A trained recogniser restored from a run directory."""

    config: LinesConfig
    cell: seqjax.Stack
    params: LinesParams
    step: int


def restore(workdir: str) -> Model:
    """Loads the config and parameters (latest checkpoint) of a run.

    Raises:
      UsageError: not a run directory, no checkpoint, or checkpoints of another model.
    """
    workdir = check_run_dir("--workdir", workdir, ["config.json", "checkpoints"], TRAIN_COMMAND)
    config = saved_config(workdir)
    assert config is not None  # check_run_dir saw config.json
    cell = build_cell(config)
    params, got = restore_params(workdir, config, lambda key: init_params(cell, config, key))
    return Model(config, cell, params, got)


def evaluate_run(workdir: str, lines: str = "test") -> dict[str, Any]:
    """CER and line accuracy of greedy and beam decoding.

    Args:
      workdir: the run directory.
      lines: ``"test"``: the run's test lines (held-out digit images); ``"train"``: as many new
        lines of the training digit images (the validation seed, never trained on as lines).

    Raises:
      UsageError: not a run directory.
    """
    model = restore(workdir)
    cfg = model.config
    if lines == "test":
        ds = load_data(cfg, ("test",))["test"]
    else:
        ds = _cached_set("val", cfg.num_test, cfg.data_seed, cfg.max_digits, cfg.height)
    rates = decode.evaluate_decoders(model.cell, cfg, model.params, ds)
    return {"step": model.step, "lines": lines, "num_lines": len(ds), **rates}


def recognize_files(workdir: str, paths: list[str], beam: int = 0) -> list[str]:
    """The digits of each PNG line image (grey or RGB(A), any size), greedy or beam search.

    Each image is brought to the form of the training lines (:func:`prepare_line`).

    Raises:
      UsageError: a missing or non-PNG file (checked before the model is loaded), or not a
        run directory.
    """
    images = [read_png(p) for p in paths]
    model = restore(workdir)
    lines = [prepare_line(x, model.config.height) for x in images]
    return decode.recognize(model.cell, model.config, model.params, lines, beam=beam)


def plot_examples(workdir: str, out: str, count: int = 6) -> str:
    """PNG of test lines with their greedy and beam readings, the forced CTC alignment (each
    aligned digit drawn at its frame) and the frame posteriors of the first line.

    Raises:
      UsageError: not a run directory.
    """
    from experiments.scaffold import pyplot

    plt = pyplot()
    if plt is None:
        raise UsageError("--plot: expected matplotlib to draw the figure, got none installed")
    model = restore(workdir)
    cfg = model.config
    test = load_data(cfg, ("test",))["test"]
    idx = list(range(min(count, len(test))))
    lines = [line_image(test, i) for i in idx]
    beams = decode.recognize(model.cell, cfg, model.params, lines, beam=cfg.beam)
    fig, axes = plt.subplots(len(idx) + 1, 1, figsize=(9, 1.3 * (len(idx) + 1) + 1.2))
    for ax, i, image, beam in zip(axes, idx, lines, beams, strict=False):
        post, ali, greedy = decode.posteriors_and_alignment(
            model.cell, cfg, model.params, image, test.texts[i]
        )
        ax.imshow(image, cmap="gray", aspect="equal", extent=(0, image.shape[1], image.shape[0], 0))
        for t in np.flatnonzero(ali):
            x = (t + 0.5) * cfg.cols_per_frame
            ax.axvline(x, color="tab:orange", lw=0.6)
            ax.text(x, -1, str(int(ali[t]) - 1), color="tab:orange", ha="center", fontsize=7)
        mark = "ok" if greedy == test.texts[i] else "WRONG"
        ax.set_title(
            f"truth {test.texts[i]}   greedy {greedy}   beam{cfg.beam} {beam}   ({mark})",
            fontsize=8,
            loc="left",
        )
        ax.set_xlim(0, lines[0].shape[1] if i == 0 else image.shape[1])
        ax.set_yticks([])
        if i == 0:
            first = post
    ax = axes[-1]
    steps = np.arange(first.shape[0]) * cfg.cols_per_frame
    ax.plot(steps, first[:, 0], color="k", linestyle=":", label="blank")
    for d in range(10):
        ax.plot(steps, first[:, d + 1], label=str(d))
    ax.set_xlim(0, lines[0].shape[1])
    ax.set_xlabel("column (first line)")
    ax.set_ylabel("posterior")
    ax.legend(ncol=11, fontsize=6, loc="upper right")
    fig.suptitle(
        f"held-out test lines, step {model.step}: orange marks = forced CTC alignment", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
