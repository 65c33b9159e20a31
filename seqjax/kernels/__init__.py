"""Fast recurrent kernels that :func:`seqjax.scan` picks automatically, layer by layer.

Importing this package (``import seqjax`` does) registers each kernel with
:func:`seqjax.scan_engine.register_kernel` for the cell types it accelerates; the cells
themselves know nothing of kernels. Every plain cell runs over a sequence through
``Cell.scan_time_major``, which calls :func:`seqjax.scan_engine.scan_layer`; stacks and
bidirectional layers call it once per layer and direction, so the choice covers them too. The
user never has to pick a kernel: results equal the reference path in value and gradient (see
``tests/test_kernels.py``).

Dispatch for ``impl="auto"`` (the default), highest priority first:

1. **cuDNN** (:mod:`seqjax.kernels.cudnn`) for a plain float32 LSTM on a CUDA GPU, forward
   direction, no mask or a ``lengths`` mask, no remat;
2. **fused** (:mod:`seqjax.kernels.fused`) for LSTM (every option but ``layer_norm`` and
   ``full_gate_recurrence``), GRU (both forms) and SimpleRNN: one fused gate matmul per step,
   gate math in one pass, a hand-written backward from saved activations whose reverse scan
   carries only ``dh``/``dc``, optional chunked remat (per-chunk weight-gradient matmuls);
3. **parallel** (:mod:`seqjax.kernels.parallel`) for MinGRU and MinLSTM on GPU/TPU (on CPU only
   when forced with ``impl="parallel"``): a log-space ``jax.lax.associative_scan`` over time;
   on CPU **sequential** (same module): chunks of steps, one input-projection matmul and the
   gate math per chunk, the linear recurrence inside, a hand-written backward;
4. **chunkwise** (:mod:`seqjax.kernels.mlstm`) for MLSTM on every backend (measured faster than
   the step and the quadratic **parallel** form, which runs only when forced; see
   :data:`seqjax.kernels.mlstm.AUTO_RULE`);
5. **reference** (:func:`seqjax.scan_engine.reference_scan`): ``project_inputs`` once, then
   ``lax.scan`` of ``Cell.step`` differentiated by JAX (``remat`` checkpoints chunks of steps).

The options (``remat``, ``compute_dtype``, ``impl``) reach every layer as one
:class:`seqjax.ScanOptions` value passed down by :func:`seqjax.scan`.
"""

from __future__ import annotations

import functools

import jax

from seqjax.cells.gru import GRU
from seqjax.cells.lstm import LSTM
from seqjax.cells.min_rnn import MinGRU, MinLSTM
from seqjax.cells.mlstm import MLSTM
from seqjax.cells.rnn import SimpleRNN
from seqjax.kernels import cudnn, fused, mlstm, parallel
from seqjax.kernels.fused import fused_scan, unsupported_reason
from seqjax.scan_engine import (
    choose,
    chunk_length,
    reference_scan,
    register_kernel,
    scan_layer,
)

__all__ = [
    "XLA_CPU_EIGEN_DOTS",
    "choose",
    "chunk_length",
    "cudnn",
    "eigen_dots_supported",
    "fused",
    "fused_scan",
    "mlstm",
    "parallel",
    "reference_scan",
    "scan_layer",
    "unsupported_reason",
]

register_kernel(
    LSTM,
    name="cudnn",
    priority=20,
    run=cudnn.run_layer,
    unsupported_reason=cudnn.layer_unsupported_reason,
)
for _cell_type in (LSTM, GRU, SimpleRNN):
    register_kernel(
        _cell_type,
        name="fused",
        priority=10,
        run=fused.run_layer,
        unsupported_reason=fused.layer_unsupported_reason,
    )
for _cell_type in (MinGRU, MinLSTM):
    register_kernel(
        _cell_type,
        name="parallel",
        priority=5,
        run=parallel.run_layer,
        unsupported_reason=parallel.layer_unsupported_reason,
    )
    register_kernel(
        _cell_type,
        name="sequential",
        priority=4,
        run=parallel.run_sequential,
        unsupported_reason=parallel.sequential_unsupported_reason,
    )
register_kernel(
    MLSTM,
    name="chunkwise",
    priority=5,
    run=mlstm.run_chunkwise,
    unsupported_reason=mlstm.chunkwise_unsupported_reason,
)
register_kernel(
    MLSTM,
    name="parallel",
    priority=4,
    run=mlstm.run_parallel,
    unsupported_reason=mlstm.parallel_unsupported_reason,
)


# An experimental per-compile XLA:CPU option that sends float32 dots to Eigen instead of
# YNNPACK: a tuning knob for large hidden sizes, not a default (measurements and the crossover:
# docs/performance.md). Check :func:`eigen_dots_supported` before relying on it.
XLA_CPU_EIGEN_DOTS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def eigen_dots_supported() -> bool:
    """Whether the default backend is XLA:CPU and accepts :data:`XLA_CPU_EIGEN_DOTS`.

    Pass the dict as ``jax.jit(..., compiler_options=XLA_CPU_EIGEN_DOTS)`` (or the
    ``compiler_options`` of :func:`seqjax.train.make_train_step`) for large hidden sizes on CPU.

    Returns:
      True when a tiny matmul compiles with the option on this backend.
    """
    if jax.default_backend() != "cpu":
        return False
    try:
        jax.jit(lambda a: a @ a, compiler_options=XLA_CPU_EIGEN_DOTS).lower(
            jax.numpy.ones((2, 2), "float32")
        ).compile()
    except Exception:  # noqa: BLE001 - any rejection means "not available in this jaxlib"
        return False
    return True
