"""Training wall time of a run, summed over resumed sessions, as a ``seqjax.train`` hook.

Every experiment reports how long its model trained. A run may be interrupted and resumed, so the
time is recorded in ``<workdir>/timeline.jsonl``, one record per evaluation step (and the last
step); a new session drops the records past the checkpoint it resumes from and goes on from the
time of the last one it keeps. Only process 0 writes the file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from experiments.scaffold.distributed import is_main_process
from seqjax.train import Checkpointer, TrainState

__all__ = ["Timeline"]


class Timeline:
    """Hook ``(step, state)`` recording training wall time at evaluation steps.

    Constructed once the run directory may be written: it reads the run's records and resumes
    from its latest checkpoint (rewriting ``timeline.jsonl`` without later records).

    Args:
      workdir: the run directory.
      every: record every ``every`` steps (0: only the last step).
      total_steps: the run's last step, always recorded.
      measure: optional ``(step, state) -> dict`` of extra fields for a record (e.g. a loss on a
        held-out split).
      exclude_measure_time: do not count the time ``measure`` takes as training time.
    """

    def __init__(
        self,
        workdir: str,
        *,
        every: int,
        total_steps: int,
        measure: Callable[[int, TrainState], dict[str, Any]] | None = None,
        exclude_measure_time: bool = False,
    ):
        self.path = os.path.join(workdir, "timeline.jsonl")
        self.every, self.total_steps = every, total_steps
        self.measure, self.exclude_measure_time = measure, exclude_measure_time
        self.records: list[dict[str, Any]] = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.records = [json.loads(line) for line in f if line.strip()]
        self._resume_at(_latest_checkpoint(workdir))

    def _resume_at(self, step: int) -> None:
        self.records = [r for r in self.records if r["step"] <= step]
        self.offset = self.records[-1]["elapsed_s"] if self.records else 0.0
        if is_main_process():
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.records)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Training wall time up to now, over every session of the run."""
        return self.offset + time.perf_counter() - self.start

    def elapsed_at(self, step: int) -> float:
        """Training wall time up to ``step`` (from its record; else up to now)."""
        for r in self.records:
            if r["step"] == step:
                return float(r["elapsed_s"])
        return self.elapsed()

    def __call__(self, step: int, state: TrainState) -> None:
        if not ((self.every and step % self.every == 0) or step == self.total_steps):
            return
        if self.records and self.records[-1]["step"] == step:
            return
        rec: dict[str, Any] = {"step": step, "elapsed_s": self.elapsed()}
        if self.measure is not None:
            t0 = time.perf_counter()
            rec.update(self.measure(step, state))
            if self.exclude_measure_time:
                self.start += time.perf_counter() - t0
        self.records.append(rec)
        if is_main_process():
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")


def _latest_checkpoint(workdir: str) -> int:
    """The step of the run's latest checkpoint, 0 for a new run."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        return 0
    probe = Checkpointer(ckpt_dir)
    try:
        return probe.latest_step() or 0
    finally:
        probe.close()
