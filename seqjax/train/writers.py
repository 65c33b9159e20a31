"""Metric logging: a JSONL file and TensorBoard event files in the run directory, PNG curves.

The JSONL file needs nothing beyond the standard library. TensorBoard events need
``tensorboardX`` and the PNG needs ``matplotlib``; neither is a core dependency of seqjax
(``pip install "seqjax[experiments]"`` installs both), so :class:`MetricWriter` and
:func:`~seqjax.train.train_loop` use them when installed and skip them otherwise
(:func:`missing_optional_outputs` says which are missing).
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MetricWriter",
    "OptionalOutputWarning",
    "missing_optional_outputs",
    "plot_curves",
    "read_metrics",
]

# The optional outputs of a run: package -> what it writes.
_OPTIONAL_OUTPUTS = {
    "tensorboardX": "TensorBoard event files (tensorboard/)",
    "matplotlib": "the learning-curve PNG (learning_curves.png)",
}


class OptionalOutputWarning(UserWarning):
    """An optional output of a run (TensorBoard events, the PNG) is skipped.

    Raised as a warning, never an error: the run's checkpoints and ``metrics.jsonl`` do not
    depend on it.
    """


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def missing_optional_outputs() -> dict[str, str]:
    """The optional output packages that cannot be imported, with what each would write.

    Returns:
      A dict ``package -> description`` of what it would write, for ``tensorboardX``
      (TensorBoard events) and ``matplotlib`` (the PNG); empty when both are installed.

    Example:
      >>> set(missing_optional_outputs()) <= {"tensorboardX", "matplotlib"}
      True
    """
    return {k: v for k, v in _OPTIONAL_OUTPUTS.items() if not _importable(k)}


class MetricWriter:
    """Appends ``{"step", "split", **metrics}`` records to ``metrics.jsonl`` and TensorBoard.

    TensorBoard events (tensorboardX) go to ``<workdir>/tensorboard`` with tags
    ``<split>/<metric>``; each record reaches the JSONL file before TensorBoard. When a run
    resumes from step ``s``, records after ``s`` (written by the interrupted run past its last
    checkpoint) are dropped from the JSONL file so the curve has no duplicated stretch.

    Args:
      workdir: the run directory (must exist).
      resume_step: drop JSONL records with ``step > resume_step``; None keeps everything.
      tensorboard: also write TensorBoard events: None (default) when ``tensorboardX`` is
        installed, True to require it, False never.
      active: False makes every call a no-op (the other processes of a multi-host run).

    Attributes:
      path: the ``metrics.jsonl`` path.
      tensorboard: whether TensorBoard events are written.

    Raises:
      FileNotFoundError: ``workdir`` does not exist.
      ImportError: ``tensorboard=True`` and ``tensorboardX`` is not installed.

    Example:
      >>> import tempfile
      >>> w = MetricWriter(tempfile.mkdtemp(), tensorboard=False)
      >>> w.write(10, "train", {"loss": 1.5})
      >>> read_metrics(w.path)[0]["loss"]
      1.5
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        resume_step: int | None = None,
        tensorboard: bool | None = None,
        active: bool = True,
    ):
        workdir = os.fspath(workdir)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = self._tb = None
        self.tensorboard = False
        if not active:
            return
        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"run directory {workdir!r} does not exist")
        if resume_step is not None and os.path.exists(self.path):
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                for r in kept:
                    f.write(json.dumps(r) + "\n")
            os.replace(tmp, self.path)
        if tensorboard is None:
            tensorboard = _importable("tensorboardX")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as e:
                raise ImportError(
                    "MetricWriter(tensorboard=True) needs the tensorboardX package, which is "
                    "not installed (pip install tensorboardX, or tensorboard=None to skip it)"
                ) from e
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            self.tensorboard = True
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()

    def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        """Records scalar ``metrics`` of ``split`` (e.g. ``"train"``, ``"eval"``) at ``step``."""
        if self._file is None:
            return
        record = {"step": int(step), "split": split}
        values = {k: float(v) for k, v in metrics.items()}
        for k, v in values.items():
            record[k] = v if math.isfinite(v) else str(v)
        # The JSONL record first: it is what a resumed run and TrainResult read back.
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{split}/{k}", v, int(step))

    def flush(self) -> None:
        """Flushes both outputs."""
        if self._file is not None:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flushes and closes both outputs."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a ``metrics.jsonl`` file, skipping a torn last line.

    Args:
      path: the file, or a run directory containing ``metrics.jsonl``.

    Returns:
      The records, in file order.

    Raises:
      FileNotFoundError: no such file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut off by a kill
    return out


def plot_curves(
    path: str | os.PathLike,
    png: str | os.PathLike | None = None,
    metrics: tuple[str, ...] = ("loss",),
) -> str:
    """Plots learning curves (train and eval, one panel per metric) into a PNG.

    Args:
      path: a ``metrics.jsonl`` file or a run directory holding one.
      png: output path; default ``<dir>/learning_curves.png``.
      metrics: metric names to plot, one panel each.

    Returns:
      The PNG path.

    Raises:
      FileNotFoundError: no metrics file.
      ImportError: ``matplotlib`` is not installed.
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(
            "plot_curves needs the matplotlib package, which is not installed "
            "(pip install matplotlib); the metrics themselves are in metrics.jsonl"
        ) from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.fspath(path)
    records = read_metrics(path)
    base = path if os.path.isdir(path) else os.path.dirname(path)
    png = os.fspath(png) if png is not None else os.path.join(base, "learning_curves.png")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, name in zip(axes[0], metrics, strict=True):
        for split in sorted({r["split"] for r in records}):
            pts = [
                (r["step"], r[name])
                for r in records
                if r["split"] == split and isinstance(r.get(name), (int, float))
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
