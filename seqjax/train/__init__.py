"""Training that survives: train state, Optax recipes, jitted steps, TBPTT, Orbax checkpoints.

Public API (see ``docs/training.md``):

- :class:`TrainState`, :func:`make_train_step`, :func:`make_eval_step`, :class:`LossOutput`,
  :func:`summarize_metrics`, :func:`reset_carry`, :class:`NonFiniteError`;
- :func:`make_optimizer`, :func:`make_schedule`, :func:`optimizer_from_config`;
- :class:`Checkpointer`, :class:`IncompatibleCheckpointError`,
  :class:`CheckpointCorruptWarning`;
- :func:`make_mesh`, :func:`param_sharding`, :func:`shard_batch`, :func:`place_state`,
  :func:`state_shardings`, :func:`to_host`;
- :class:`TrainConfig`, :func:`config_to_dict`, :func:`config_diff`, :func:`format_config`;
- :func:`train_loop`, :class:`TrainResult`, :class:`MetricWriter`, :func:`plot_curves`,
  :func:`read_metrics`, :func:`missing_optional_outputs`, :class:`OptionalOutputWarning`;
- :func:`batch_indices`, :func:`stream_window` (data order as a function of the step);
- :func:`initialize`, :func:`process_batch_slice`, :func:`process_batch_indices`,
  :func:`is_main_process` (several processes).
"""

from __future__ import annotations

from seqjax.train.checkpoint import (
    CheckpointCorruptWarning,
    Checkpointer,
    IncompatibleCheckpointError,
    read_saved_config,
)
from seqjax.train.config import (
    TrainConfig,
    config_diff,
    config_from_dict,
    config_to_dict,
    format_config,
)
from seqjax.train.data_order import batch_indices, stream_window
from seqjax.train.distributed import (
    initialize,
    is_main_process,
    process_batch_indices,
    process_batch_slice,
)
from seqjax.train.loop import TrainResult, check_workdir, evaluate, train_loop
from seqjax.train.optim import (
    make_optimizer,
    make_schedule,
    optimizer_from_config,
    schedule_from_config,
)
from seqjax.train.sharding import (
    batch_sharding,
    make_mesh,
    param_sharding,
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
    reset_carry,
    summarize_metrics,
)
from seqjax.train.writers import (
    MetricWriter,
    OptionalOutputWarning,
    missing_optional_outputs,
    plot_curves,
    read_metrics,
)

__all__ = [
    "CheckpointCorruptWarning",
    "Checkpointer",
    "IncompatibleCheckpointError",
    "LossOutput",
    "MetricWriter",
    "NonFiniteError",
    "OptionalOutputWarning",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "batch_indices",
    "batch_sharding",
    "check_workdir",
    "config_diff",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "format_config",
    "initialize",
    "is_main_process",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "missing_optional_outputs",
    "optimizer_from_config",
    "param_sharding",
    "place_state",
    "plot_curves",
    "process_batch_indices",
    "process_batch_slice",
    "read_metrics",
    "read_saved_config",
    "replicated",
    "reset_carry",
    "schedule_from_config",
    "shard_batch",
    "state_shardings",
    "stream_window",
    "summarize_metrics",
    "to_host",
    "train_loop",
]
