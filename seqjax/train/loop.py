"""``train_loop``: steps, progress, logging, evaluation, checkpoints, exact resume.

Over 450 lines because ``train_loop`` is one long documented function whose steps (resume,
log, evaluate, save, several processes) read best in one place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from seqjax.train.checkpoint import Checkpointer
from seqjax.train.config import TrainConfig, config_diff, config_to_dict, format_config
from seqjax.train.distributed import process_batch_slice
from seqjax.train.optim import optimizer_from_config, schedule_from_config
from seqjax.train.sharding import (
    batch_sharding,
    make_mesh,
    place_state,
    replicated,
    shard_batch,
    state_shardings,
    to_host,
)
from seqjax.train.state import TrainState
from seqjax.train.step import (
    LossOutput,
    NonFiniteError,
    make_eval_step,
    make_train_step,
    summarize_metrics,
)
from seqjax.train.writers import (
    MetricWriter,
    OptionalOutputWarning,
    missing_optional_outputs,
    plot_curves,
    read_metrics,
)
from seqjax.typing import PyTree

__all__ = ["TrainResult", "check_workdir", "evaluate", "train_loop"]

_REQUIRED_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_loop` returns.

    A run that is started again after it finished (``resume="auto"``, no step left to run)
    returns the same metrics as the run that finished it: they are read back from the run's
    ``metrics.jsonl``.

    Attributes:
      state: the final :class:`~seqjax.train.TrainState` (on the mesh): ``params``,
        ``opt_state``, ``step`` (``config.total_steps`` after a complete run), ``rng``,
        ``carry`` (TBPTT) and ``nonfinite_step``.
      workdir: the absolute path of the run directory.
      resumed_from: the checkpoint step the run resumed from, or None for a fresh start.
      train_metrics: the last logged training metrics, means over the logging window:
        ``loss``, ``grad_norm``, ``count`` (items in the window), ``tokens_per_sec``,
        ``learning_rate`` and every extra metric of the loss function (divided by
        ``count``); None if nothing was logged.
      eval_metrics: the last evaluation, means over all of ``eval_batches()``: ``loss``,
        ``count`` and the extra metrics; None without ``eval_batches``.
      best_step: the kept checkpoint with the best ``config.best_metric`` on evaluation
        (see ``keep_best``), or None if no checkpoint was ranked.
      curves_png: path of ``learning_curves.png``, or None when it was not written
        (``matplotlib`` missing, or plotting failed: a warning says so).
    """

    state: TrainState
    workdir: str
    resumed_from: int | None
    train_metrics: dict[str, float] | None
    eval_metrics: dict[str, float] | None
    best_step: int | None
    curves_png: str | None


def _last_record(path: str, split: str, max_step: int) -> dict[str, float] | None:
    """The metrics of the last ``split`` record at or before ``max_step`` in ``path``."""
    if not os.path.exists(path):
        return None
    last = None
    for r in read_metrics(path):
        if r.get("split") == split and r.get("step", 0) <= max_step:
            last = r
    if last is None:
        return None
    # Non-finite values are stored as strings ("nan", "inf"); float() reads them back.
    return {k: float(v) for k, v in last.items() if k not in ("step", "split")}


def _announce_missing_outputs(missing: dict[str, str]) -> None:
    if missing:
        warnings.warn(
            "train_loop: "
            + "; ".join(
                f"{pkg} is not installed, so {what} is skipped" for pkg, what in missing.items()
            )
            + f" (pip install {' '.join(missing)}, or pip install 'seqjax[experiments]'). "
            "Checkpoints and metrics.jsonl are written as usual.",
            OptionalOutputWarning,
            stacklevel=3,
        )


def check_workdir(workdir: str | os.PathLike, *, must_exist: bool = False) -> str:
    """Validates (and unless ``must_exist`` creates) a run directory.

    Args:
      workdir: the run directory.
      must_exist: raise instead of creating a missing directory.

    Returns:
      The absolute path.

    Raises:
      FileNotFoundError: ``must_exist`` and the directory is missing.
      NotADirectoryError: the path exists and is not a directory.
      PermissionError: the directory cannot be read and written.
    """
    path = os.path.abspath(os.fspath(workdir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"run directory {path!r} exists but is not a directory")
    if not os.path.exists(path):
        if must_exist:
            raise FileNotFoundError(f"run directory {path!r} does not exist")
        try:
            # exist_ok: several processes of one run create the same directory at once
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"cannot create run directory {path!r}: {e}") from e
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise PermissionError(
            f"run directory {path!r} is not readable and writable by this process"
        )
    return path


def _check_config(config: Any) -> None:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(
            f"config must be a dataclass instance (e.g. a TrainConfig subclass), got "
            f"{type(config).__name__}"
        )
    missing = [f for f in _REQUIRED_FIELDS if not hasattr(config, f)]
    if missing:
        raise TypeError(
            f"config {type(config).__name__} lacks the training fields {missing}; "
            f"subclass seqjax.train.TrainConfig"
        )
    for name in ("total_steps", "batch_size", "log_every", "keep"):
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"config.{name} must be an int >= 1, got {v!r}")
    for name in ("eval_every", "save_every", "keep_best"):
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"config.{name} must be an int >= 0, got {v!r}")


def _add(acc: dict | None, m: dict) -> dict:
    return m if acc is None else jax.tree.map(lambda a, b: a + b, acc, m)


def evaluate(
    eval_step: Callable,
    params: PyTree,
    batches: Iterable[Any],
    mesh: Mesh,
    carry: PyTree = None,
    *,
    process_local: bool = False,
) -> dict[str, float]:
    """Runs ``eval_step`` over ``batches`` and returns mean metrics.

    Batches (and the carry) are split over the devices along their leading axis; one whose
    size does not divide evenly over them (say 15 validation streams on 4 devices) is
    replicated instead, every device evaluating all of it: the same sums, more work. In a
    multi-process run every process must call it (the step is one SPMD program).

    Args:
      eval_step: from :func:`~seqjax.train.make_eval_step`.
      params: the parameters.
      batches: host batches (each sharded onto ``mesh`` here).
      mesh: the mesh.
      carry: initial carry for stream evaluation (flows from batch to batch), or None; the
        whole carry ``[B, ...]``, the same on every process.
      process_local: in a multi-process run, whether each batch is this process's part of
        the global batch (True) or the whole batch, the same on every process (False, the
        default: evaluation sets are small); see :func:`~seqjax.train.shard_batch`.

    Returns:
      :func:`~seqjax.train.summarize_metrics` of the summed metrics.

    Raises:
      ValueError: ``batches`` is empty.
    """
    sums = None
    if carry is not None:
        carry = jax.device_put(
            carry,
            state_shardings_like_carry(carry, mesh) if _splits(carry, mesh) else replicated(mesh),
        )
    for batch in batches:
        if process_local or _splits(batch, mesh):
            batch = shard_batch(batch, mesh, process_local=process_local)
        else:  # e.g. 15 validation streams on 4 devices: every device evaluates all of them
            batch = jax.device_put(batch, replicated(mesh))
        metrics, carry = eval_step(params, batch, carry)
        sums = _add(sums, metrics)
    if sums is None:
        raise ValueError("eval_batches() yielded no batches")
    return summarize_metrics(to_host(sums))


def _splits(tree: PyTree, mesh: Mesh) -> bool:
    """Whether every batch axis of ``tree`` divides evenly over the mesh's devices."""
    n = int(mesh.shape["data"])
    return all(np.shape(x)[0] % n == 0 for x in jax.tree.leaves(tree) if np.ndim(x) >= 1)


def state_shardings_like_carry(carry: PyTree, mesh: Mesh) -> PyTree:
    return jax.tree.map(
        lambda x: batch_sharding(mesh) if np.ndim(x) >= 1 else replicated(mesh), carry
    )


def _process_part(batch: Any, rows: slice, batch_size: int) -> Any:
    """This process's rows of a train batch that may be global or already process-local."""
    local = rows.stop - rows.start
    if local == batch_size:  # one process: the batch is its own business (any size)
        return batch
    sizes = {int(np.shape(x)[0]) for x in jax.tree.leaves(batch) if np.ndim(x) >= 1}
    if sizes == {batch_size}:
        return jax.tree.map(lambda x: x[rows] if np.ndim(x) >= 1 else x, batch)
    if sizes and sizes != {local}:
        raise ValueError(
            f"train_batch(step) must return the global batch (leading size "
            f"config.batch_size = {batch_size}) or this process's part of it (leading size "
            f"{local} = {batch_size} / {batch_size // local} processes), got leading sizes "
            f"{sorted(sizes)}"
        )
    return batch


def train_loop(
    config: Any,
    workdir: str | os.PathLike,
    *,
    init_params: Callable[[jax.Array], PyTree],
    loss_fn: Callable[..., LossOutput],
    train_batch: Callable[[int], Any],
    eval_batches: Callable[[], Iterable[Any]] | None = None,
    init_carry: PyTree = None,
    eval_carry: PyTree = None,
    mesh: Mesh | None = None,
    resume: str = "auto",
    hooks: Sequence[Callable[[int, TrainState], None]] = (),
    verbose: bool = True,
) -> TrainResult:
    """Trains from scratch or resumes from the run directory's latest good checkpoint.

    Determinism: parameters come from ``init_params(key)`` with a key derived from
    ``config.seed``; batch ``s`` is ``train_batch(s)``; step ``s`` uses the key
    ``fold_in(key, s)``. A run restarted with the same command therefore resumes from the
    latest checkpoint and ends with parameters bit-identical to a run never interrupted (on
    the same device count and software), even after a SIGKILL in the middle of a save.

    Several processes (after :func:`~seqjax.train.initialize`): every process calls
    ``train_loop`` with the same arguments; the mesh spans the devices of all of them,
    parameters are replicated, each process feeds its rows of every batch, every process
    takes part in each checkpoint save (Orbax writes each array once), and only process 0
    prints, logs metrics and writes ``config.json`` and the plot. Hooks run on every process.

    Every ``log_every`` steps the loop logs the mean training metrics (loss, grad_norm,
    tokens/s, learning rate) to ``metrics.jsonl``, TensorBoard and the progress bar, and
    checks for non-finite values; every ``eval_every`` steps (and at the end) it evaluates on
    ``eval_batches()``; every ``save_every`` steps (and at the end) it checkpoints, with the
    config and the latest eval metrics. At the end, after the final checkpoint and metrics are
    on disk, it writes ``learning_curves.png``.

    Optional outputs: TensorBoard events need ``tensorboardX`` and the PNG needs
    ``matplotlib``, which are not core dependencies. When one is missing, the loop says so
    once at the start (an :class:`~seqjax.train.OptionalOutputWarning`) and runs without
    that output; a failure while plotting is a warning too, never an error after training.

    Files in ``workdir``: ``config.json`` (the current config), ``metrics.jsonl``,
    ``tensorboard/``, ``checkpoints/<step>/`` (state, config, integrity),
    ``learning_curves.png``, and ``corrupt_checkpoints/`` if a damaged checkpoint was found.

    Args:
      config: a dataclass with the :class:`~seqjax.train.TrainConfig` fields (subclass it).
      workdir: the run directory (created if missing unless ``resume="require"``).
      init_params: ``key -> params``.
      loss_fn: see :func:`~seqjax.train.make_train_step`.
      train_batch: ``step -> batch``, a pytree of host arrays ``[batch_size, ...]``. In a
        multi-process run it may return either the global batch (each process then keeps
        its rows) or, to read only what the process needs, its part ``[batch_size / P,
        ...]``: the rows :func:`~seqjax.train.process_batch_slice` (e.g. from
        :func:`~seqjax.train.process_batch_indices`).
      eval_batches: ``() -> iterable of batches`` for validation, or None; whole batches,
        the same on every process of a multi-process run.
      init_carry: initial TBPTT carry (leaves ``[batch_size, ...]``) or None.
      eval_carry: initial carry for evaluation streams; default zeros like ``init_carry``.
      mesh: device mesh; default all devices (:func:`~seqjax.train.make_mesh`).
      resume: ``"auto"`` (resume if a checkpoint exists), ``"never"`` (refuse to run when
        checkpoints exist, so nothing is overwritten) or ``"require"`` (fail without one).
      hooks: ``hook(step, state)`` called after every step (after logging and saving).
      verbose: print the config, resume information and a progress bar (with
        ``config.progress``).

    Returns:
      A :class:`TrainResult`.

    Raises:
      NonFiniteError: a loss or gradient became NaN/Inf; names the step, and the newest
        checkpoint (written before it) is left intact.
      IncompatibleCheckpointError: the run directory holds checkpoints of another model;
        names the differing leaves; nothing is written.
      FileNotFoundError: ``resume="require"`` and no run directory or no checkpoint.
      FileExistsError: ``resume="never"`` and checkpoints exist.
      NotADirectoryError, PermissionError: unusable ``workdir``.
      TypeError, ValueError: a config without the training fields or with bad values.

    Example:
      >>> # see docs/training.md and tests/test_train_loop.py for complete scripts
      >>> # result = train_loop(config, "runs/lm", init_params=init, loss_fn=loss,
      >>> #                     train_batch=lambda s: make_batch(s))
    """
    _check_config(config)
    if resume not in ("auto", "never", "require"):
        raise ValueError(f"resume must be 'auto', 'never' or 'require', got {resume!r}")
    workdir = check_workdir(workdir, must_exist=(resume == "require"))
    is_main = jax.process_index() == 0
    # Several processes run this loop in lockstep; only process 0 prints and writes files.
    say = print if verbose and is_main else (lambda *a, **k: None)
    missing = missing_optional_outputs() if is_main else {}
    _announce_missing_outputs(missing)

    mesh = make_mesh() if mesh is None else mesh
    rows = (
        process_batch_slice(config.batch_size, mesh)
        if jax.process_count() > 1
        else slice(0, config.batch_size)
    )
    optimizer = optimizer_from_config(config)
    schedule = schedule_from_config(config)
    config_dict = config_to_dict(config)
    say(f"== {type(config).__name__} ==\n{format_config(config)}", flush=True)

    params_key, state_key = jax.random.split(jax.random.key(config.seed))
    state = TrainState.create(init_params(params_key), optimizer, state_key, carry=init_carry)
    state = place_state(state, mesh)

    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        keep=config.keep,
        keep_best=config.keep_best,
        best_metric=config.best_metric,
        best_mode=config.best_mode,
        async_save=config.async_checkpointing,
    )
    resumed_from = None
    existing = ckpt.all_steps()
    if resume == "never" and existing:
        raise FileExistsError(
            f"{workdir} already holds checkpoints {existing}; resume='never' "
            f"refuses to overwrite them"
        )
    if resume == "require" and not existing:
        raise FileNotFoundError(f"no checkpoint to resume from in {workdir}/checkpoints")
    if existing:
        state, resumed_from = ckpt.restore(state, shardings=state_shardings(state, mesh))
        if resumed_from is not None:
            saved = ckpt.config(resumed_from) or {}
            diff = config_diff(saved, config_dict)
            say(f"resuming from checkpoint step {resumed_from} in {ckpt.directory}", flush=True)
            if diff:
                say(
                    "config differs from the checkpoint's: "
                    + ", ".join(
                        f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in diff.items())
                    ),
                    flush=True,
                )
    start = int(to_host(state.step))
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config_dict, f, indent=2, sort_keys=True)
    writer = MetricWriter(
        workdir,
        resume_step=start if resumed_from is not None else 0,
        tensorboard="tensorboardX" not in missing,
        active=is_main,
    )

    train_step = make_train_step(loss_fn, optimizer, mesh=mesh)
    eval_step = make_eval_step(loss_fn) if eval_batches is not None else None
    if eval_carry is None and init_carry is not None:
        eval_carry = jax.tree.map(np.zeros_like, init_carry)

    total = config.total_steps
    pbar = None
    if verbose and is_main and config.progress and start < total:
        from tqdm.auto import tqdm

        pbar = tqdm(total=total, initial=start, desc="train", file=sys.stderr, dynamic_ncols=True)

    acc = None
    train_metrics = eval_metrics = None
    if resumed_from is not None:
        # What the run logged up to the checkpoint: the answer when no step is left to run.
        train_metrics = _last_record(writer.path, "train", start)
        eval_metrics = _last_record(writer.path, "eval", start)
    window_start = time.perf_counter()
    best = None
    try:
        for step in range(start, total):
            batch = _process_part(train_batch(step), rows, config.batch_size)
            state, metrics = train_step(state, shard_batch(batch, mesh))
            acc = _add(acc, metrics)
            done = step + 1
            do_log = done % config.log_every == 0 or done == total
            do_eval = eval_step is not None and (
                (config.eval_every and done % config.eval_every == 0) or done == total
            )
            do_save = (config.save_every and done % config.save_every == 0) or done == total
            if do_log or do_eval or do_save:
                bad = int(to_host(state.nonfinite_step))
                if bad >= 0:
                    ckpt.wait()
                    writer.write(bad, "train", {"nonfinite": 1.0})
                    raise NonFiniteError(bad, ckpt.latest_step())
            if do_log:
                sums = to_host(acc)
                now = time.perf_counter()
                train_metrics = summarize_metrics(sums)
                train_metrics["tokens_per_sec"] = float(np.asarray(sums["count"])) / max(
                    now - window_start, 1e-9
                )
                with jax.numpy_dtype_promotion("standard"):
                    lr = schedule(done // max(1, config.accumulate_steps))
                    train_metrics["learning_rate"] = float(np.asarray(lr))
                writer.write(done, "train", train_metrics)
                if pbar is not None:
                    pbar.set_postfix(
                        loss=f"{train_metrics['loss']:.4f}",
                        tok_s=f"{train_metrics['tokens_per_sec']:.3g}",
                    )
                acc, window_start = None, now
            if do_eval and eval_step is not None and eval_batches is not None:
                eval_metrics = evaluate(eval_step, state.params, eval_batches(), mesh, eval_carry)
                writer.write(done, "eval", eval_metrics)
                if pbar is None:
                    say(
                        f"step {done}: eval "
                        + " ".join(f"{k}={v:.4g}" for k, v in eval_metrics.items()),
                        flush=True,
                    )
            if do_save:
                ckpt.save(
                    state, step=done, config=config_dict, metrics=eval_metrics if do_eval else None
                )
            for hook in hooks:
                hook(done, state)
            if pbar is not None:
                pbar.update(1)
        ckpt.wait()
        best = ckpt.best_step()
    finally:
        if pbar is not None:
            pbar.close()
        writer.close()
        ckpt.close()
    png = None
    if is_main and "matplotlib" not in missing and os.path.exists(writer.path):
        try:
            png = plot_curves(writer.path)
        except Exception as e:  # an optional output never fails a finished run
            warnings.warn(
                f"train_loop: the learning-curve plot failed ({type(e).__name__}: {e}); the "
                f"run is complete: checkpoints and {writer.path} are written",
                OptionalOutputWarning,
                stacklevel=2,
            )
    return TrainResult(
        state=state,
        workdir=workdir,
        resumed_from=resumed_from,
        train_metrics=train_metrics,
        eval_metrics=eval_metrics,
        best_step=best,
        curves_png=png,
    )
