"""Orbax checkpoints: keep last k + best, async, config beside, integrity, safe fallback.

Each checkpoint step directory holds three Orbax items (``args=`` API):

- ``state``: the :class:`~seqjax.train.TrainState` (``ocp.args.StandardSave``);
- ``config``: the run's config as JSON (``ocp.args.JsonSave``);
- ``integrity``: a CRC32 of every state leaf, the leaf shapes and dtypes (JSON).

Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it when complete, so a
process killed in the middle of a save leaves no step that :meth:`Checkpointer.latest_step`
would report. A step that is listed but cannot be read, or whose restored arrays do not match
their CRC32 (a damaged file), is moved aside into ``<directory>/../corrupt_checkpoints`` with a
warning, and the previous step is used.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from seqjax.train.config import config_to_dict
from seqjax.train.sharding import to_host
from seqjax.typing import PyTree

__all__ = ["CheckpointCorruptWarning", "Checkpointer", "IncompatibleCheckpointError"]


class IncompatibleCheckpointError(ValueError):
    """A checkpoint does not fit the model: a leaf is missing, extra, or of another shape."""


class CheckpointCorruptWarning(UserWarning):
    """A listed checkpoint could not be restored and an older one is used instead."""


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path_name(path: tuple[Any, ...]) -> str:
    return ".".join(_key_name(k) for k in path)


def leaf_signature(tree: PyTree) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{dotted leaf path: (shape, dtype name)}`` for every array leaf of ``tree``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path_name(p): (tuple(np.shape(x)), str(np.dtype(x.dtype))) for p, x in flat}


def _crc(x: Any) -> int:
    return zlib.crc32(np.ascontiguousarray(np.asarray(jax.device_get(x))).tobytes())


def _checksums(tree: PyTree) -> dict[str, int] | None:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if any(isinstance(x, jax.Array) and not x.is_fully_addressable for _, x in leaves):
        return None  # multi-host: no process sees every shard; Orbax's own checks apply
    return {_path_name(p): _crc(x) for p, x in leaves}


def _describe_differences(
    saved: Mapping[str, tuple], expected: Mapping[str, tuple], limit: int = 10
) -> list[str]:
    lines = []
    for name in sorted(set(saved) | set(expected)):
        if name not in saved:
            b = expected[name]
            lines.append(
                f"  {name}: missing from the checkpoint (model expects shape {b[0]} {b[1]})"
            )
            continue
        a = saved[name]
        if name not in expected:
            lines.append(f"  {name}: in the checkpoint (shape {a[0]} {a[1]}) but not in the model")
            continue
        b = expected[name]
        if tuple(a[0]) != tuple(b[0]) or a[1] != b[1]:
            lines.append(
                f"  {name}: checkpoint has shape {tuple(a[0])} {a[1]}, model expects "
                f"{tuple(b[0])} {b[1]}"
            )
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more"]
    return lines


class Checkpointer:
    """An Orbax ``CheckpointManager`` for train states, with the run's safety rules.

    Retention: the ``keep`` most recent steps, plus the ``keep_best`` steps with the best
    validation metric (``best_metric`` in the ``metrics`` passed to :meth:`save`; steps saved
    without metrics are kept only while recent). Saves are asynchronous by default: the call
    returns once the arrays are copied to host memory, and the files are written in the
    background (:meth:`wait` blocks until done).

    Args:
      directory: where step directories go (created if missing).
      keep: most recent checkpoints kept (>= 1).
      keep_best: checkpoints kept by best metric (0 disables).
      best_metric: key of the validation metric in ``metrics``.
      best_mode: ``"min"`` or ``"max"``.
      async_save: write in a background thread.

    Raises:
      ValueError: ``directory`` exists but is not a directory, ``keep < 1``, bad ``best_mode``.
      PermissionError: ``directory`` is not readable and writable.

    Example:
      >>> import jax.numpy as jnp, optax, tempfile
      >>> from seqjax.train import TrainState
      >>> state = TrainState.create({"w": jnp.zeros(3)}, optax.sgd(0.1))
      >>> ckpt = Checkpointer(tempfile.mkdtemp() + "/ckpt", async_save=False)
      >>> ckpt.save(state, step=0, config={"lr": 0.1})
      True
      >>> restored, step = ckpt.restore(state)
      >>> step
      0
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        keep_best: int = 1,
        best_metric: str = "loss",
        best_mode: str = "min",
        async_save: bool = True,
    ):
        directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"checkpoint directory {directory!r} exists and is not a directory")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        if isinstance(keep_best, bool) or not isinstance(keep_best, int) or keep_best < 0:
            raise ValueError(f"keep_best must be an int >= 0, got {keep_best!r}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
            raise PermissionError(
                f"checkpoint directory {directory!r} is not readable and writable by this process"
            )
        self.directory = directory
        self.best_metric = best_metric
        self.best_mode = best_mode
        policies: list[Any] = [pp.LatestN(keep)]
        if keep_best:
            policies.append(
                pp.BestN(
                    get_metric_fn=self._metric_value,
                    reverse=(best_mode == "min"),
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        self._options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies),
            # best_fn makes Orbax write the metrics to disk, so the best checkpoint is still
            # known (and kept) after a restart; retention itself is the policy above.
            best_fn=self._metric_value if keep_best else None,
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._open()

    def _open(self) -> None:
        self._manager = ocp.CheckpointManager(
            self.directory, options=self._options, item_names=("state", "config", "integrity")
        )

    def _metric_value(self, metrics: Mapping[str, Any]) -> float:
        value = metrics.get(self.best_metric)
        if value is None:
            return float("inf") if self.best_mode == "min" else float("-inf")
        return float(value)

    # --- queries -----------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Completed checkpoint steps, ascending (half-written ones excluded)."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest completed step, or None."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best ``best_metric``, or None if none has metrics."""
        best, best_value = None, None
        for step in self.all_steps():
            try:
                metrics = self._manager.metrics(step)
            except Exception:  # noqa: BLE001 - a step without readable metrics is not ranked
                metrics = None
            if not metrics or self.best_metric not in metrics:
                continue
            v = float(metrics[self.best_metric])
            if best_value is None or (
                v < best_value if self.best_mode == "min" else v > best_value
            ):
                best, best_value = step, v
        return best

    def config(self, step: int | None = None) -> dict[str, Any] | None:
        """The config dict saved with ``step`` (default latest), or None."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
            "config"
        ]

    # --- save --------------------------------------------------------------------------
    def save(
        self,
        state: PyTree,
        *,
        step: int | None = None,
        config: Any = None,
        metrics: Mapping[str, float] | None = None,
        force: bool = True,
    ) -> bool:
        """Saves ``state`` (asynchronously unless ``async_save=False``).

        Args:
          state: the train state.
          step: the step number naming the checkpoint; default ``int(state.step)``.
          config: a JSON-serialisable dict (or dataclass) saved beside the state.
          metrics: validation metrics for best-checkpoint retention.
          force: save even if Orbax's own interval policy would skip this step.

        Returns:
          True if a save was started; False if ``step`` already exists (nothing is
          overwritten).
        """
        step = int(to_host(state.step)) if step is None else int(step)
        if step in self._manager.all_steps():
            return False
        if config is not None and not isinstance(config, dict):
            config = config_to_dict(config)
        integrity = {
            "signature": {k: [list(s), d] for k, (s, d) in leaf_signature(state).items()},
            "crc32": _checksums(state),
            "saved_at": time.time(),
        }
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config or {}),
            integrity=ocp.args.JsonSave(integrity),
        )
        # Steps without validation metrics get {}: ranked last by best-retention (Orbax
        # would log a warning for None when best_fn is set).
        clean_metrics = {k: float(v) for k, v in (metrics or {}).items() if np.isfinite(float(v))}
        return bool(self._manager.save(step, args=args, metrics=clean_metrics, force=force))

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    # --- restore -----------------------------------------------------------------------
    def check_compatible(self, target: PyTree, step: int) -> None:
        """Raises :class:`IncompatibleCheckpointError` if ``step`` does not fit ``target``.

        Args:
          target: a state (arrays or ``jax.ShapeDtypeStruct``) of the current model.
          step: the checkpoint step to compare.

        Raises:
          IncompatibleCheckpointError: a leaf missing, extra or of another shape/dtype; the
            message names each differing leaf.
          Exception: whatever Orbax raises if the step's metadata is unreadable.
        """
        saved = self._saved_signature(step)
        expected = leaf_signature(target)
        diff = _describe_differences(saved, expected)
        if diff:
            raise IncompatibleCheckpointError(
                f"checkpoint step {step} in {self.directory} does not match the model "
                f"(was it written by a different configuration?):\n"
                + "\n".join(diff)
                + "\nNothing was restored or overwritten; use a new run directory or restore "
                "the original configuration."
            )

    def _saved_signature(self, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
        path = os.path.join(self.directory, str(step), "integrity")
        info = self._manager.restore(
            step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore())
        )["integrity"]
        if not isinstance(info, dict) or "signature" not in info:
            raise ValueError(f"integrity record of step {step} unreadable ({path})")
        return {k: (tuple(v[0]), v[1]) for k, v in info["signature"].items()}

    def _restore_step(self, target: PyTree, step: int, shardings: PyTree | None) -> PyTree:
        def abstract(x, s=None):
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s)

        if shardings is None:
            abs_target = jax.tree.map(lambda x: abstract(x, getattr(x, "sharding", None)), target)
        else:
            abs_target = jax.tree.map(abstract, target, shardings)
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abs_target), integrity=ocp.args.JsonRestore()
            ),
        )
        state, info = out["state"], out["integrity"]
        expected = info.get("crc32") if isinstance(info, dict) else None
        if expected:
            actual = _checksums(state)
            if actual is not None:
                bad = sorted(k for k in expected if actual.get(k) != expected[k])
                if bad:
                    raise ValueError(f"checksum mismatch in leaves {bad[:5]}")
        return state

    def _quarantine(self, step: int) -> str:
        src = os.path.join(self.directory, str(step))
        dst_root = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
        if jax.process_index() == 0:
            os.makedirs(dst_root, exist_ok=True)
        dst = os.path.join(dst_root, f"{step}-{int(time.time())}")
        if jax.process_index() != 0:
            return dst  # process 0 moves it; the others just skip the step
        shutil.move(src, dst)
        self._manager.close()
        self._open()
        return dst

    def restore(
        self, target: PyTree, step: int | None = None, *, shardings: PyTree | None = None
    ) -> tuple[PyTree, int | None]:
        """Restores the newest readable checkpoint (or ``step``) into ``target``'s structure.

        Every candidate is first checked for compatibility (leaf names, shapes, dtypes), then
        restored and verified against its saved CRC32s. A step that fails to read or verify
        is moved aside to ``corrupt_checkpoints/`` with a :class:`CheckpointCorruptWarning`
        and the next older step is tried (only when ``step`` is None).

        Args:
          target: a state of the current model (arrays or ``jax.ShapeDtypeStruct``); defines
            the structure, dtypes and, unless ``shardings`` is given, the shardings restored
            onto (so a checkpoint written on 8 devices restores onto 1 and vice versa).
          step: a specific step; None restores the latest good one.
          shardings: a pytree of ``jax.sharding.Sharding`` matching ``target``.

        Returns:
          ``(state, step)``; ``(target, None)`` when there is no checkpoint.

        Raises:
          IncompatibleCheckpointError: the checkpoint's leaves differ from ``target``'s
            (nothing is modified on disk).
          FileNotFoundError: a requested ``step`` does not exist.
          RuntimeError: checkpoints exist but none could be restored.
        """
        steps = self.all_steps()
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(
                    f"no checkpoint step {step} in {self.directory}; available: {steps}"
                )
            self.check_compatible(target, step)
            return self._restore_step(target, step, shardings), step
        failures = []
        for s in reversed(steps):
            try:
                self.check_compatible(target, s)
            except IncompatibleCheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 - any read failure means a damaged step
                failures.append((s, e))
                self._warn_and_quarantine(s, e)
                continue
            try:
                return self._restore_step(target, s, shardings), s
            except Exception as e:  # noqa: BLE001
                failures.append((s, e))
                self._warn_and_quarantine(s, e)
        if failures:
            raise RuntimeError(
                f"no checkpoint in {self.directory} could be restored: "
                + "; ".join(f"step {s}: {e}" for s, e in failures)
            )
        return target, None

    def _warn_and_quarantine(self, step: int, error: Exception) -> None:
        dst = self._quarantine(step)
        warnings.warn(
            f"checkpoint step {step} in {self.directory} is corrupt or half-written "
            f"({type(error).__name__}: {str(error)[:300]}); moved it to {dst} and "
            f"falling back to the previous checkpoint",
            CheckpointCorruptWarning,
            stacklevel=3,
        )


def read_saved_config(directory: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """Reads the config saved with a checkpoint without building a model.

    Args:
      directory: the checkpoint directory (``<workdir>/checkpoints``).
      step: the step; None for the latest.

    Returns:
      The config dict.

    Raises:
      FileNotFoundError: the directory or the step does not exist.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory!r} does not exist")
    steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
    if not steps:
        raise FileNotFoundError(f"no checkpoints in {directory!r}")
    step = steps[-1] if step is None else step
    path = os.path.join(directory, str(step), "config", "metadata")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config saved with step {step} in {directory!r}")
    with open(path) as f:
        return json.load(f)
