"""Restoring a run's trained parameters from its checkpoints, with one-line errors.

Every experiment's ``generate``/``translate``/``evaluate`` command loads a checkpoint of a run
directory into the parameter shapes its own model has; what can go wrong (no checkpoint, a step
that was never saved, checkpoints of another model) is a user's mistake, reported the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from experiments.scaffold.cli import UsageError
from seqjax.train import (
    Checkpointer,
    IncompatibleCheckpointError,
    TrainState,
    optimizer_from_config,
)
from seqjax.typing import PRNGKey, PyTree

__all__ = ["restore_params"]


def restore_params(
    workdir: str,
    config: Any,
    init_params: Callable[[PRNGKey], PyTree],
    *,
    step: int | str | None = None,
    carry: PyTree = None,
    best_metric: str = "loss",
    best_mode: str = "min",
) -> tuple[PyTree, int]:
    """The parameters of one checkpoint of the run in ``workdir``.

    Args:
      workdir: the run directory (checked beforehand, e.g. with ``check_run_dir``).
      config: the run's config (its optimizer fixes the shape of the saved optimizer state).
      init_params: ``key -> params`` of the run's model; only its shapes are used.
      step: the checkpoint: None for the latest, an int, or ``"best"`` for the best-``best_metric``
        one (the latest when none is recorded).
      carry: the train state's carry, for models trained with one (truncated BPTT).
      best_metric: the metric of the run's best-checkpoint retention (with ``step="best"``).
      best_mode: ``"min"`` or ``"max"`` for ``best_metric``.

    Returns:
      ``(params, step)``: the parameters and the step they were saved at.

    Raises:
      UsageError: no checkpoint, no checkpoint ``step``, or checkpoints of another model.
    """
    shapes = jax.eval_shape(lambda: init_params(jax.random.key(0)))
    params0 = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    template = TrainState.create(params0, optimizer_from_config(config), 0, carry=carry)
    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints"), best_metric=best_metric, best_mode=best_mode
    )
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise UsageError(
                f"--workdir: expected a run with a checkpoint, got none in {workdir}/checkpoints"
            )
        if step == "best":
            step = ckpt.best_step() or steps[-1]
        if step is not None and step not in steps:
            raise UsageError(f"--step: expected one of the saved steps {list(steps)}, got {step}")
        try:
            state, got = ckpt.restore(template, step)  # type: ignore[arg-type]
        except IncompatibleCheckpointError as e:
            raise UsageError(f"--workdir: expected checkpoints of the run's model; {e}") from None
    finally:
        ckpt.close()
    return state.params, int(got or 0)
