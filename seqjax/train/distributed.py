"""Several processes, one run: starting ``jax.distributed`` and which rows each process reads.

JAX is the distributed engine: after :func:`initialize` every process sees the devices of all
processes in ``jax.devices()``, :func:`~seqjax.train.make_mesh` builds one global mesh over
them, and a jitted step runs as one SPMD program whose gradient all-reduce crosses processes
(NCCL on GPUs, ICI/DCN on TPUs, gloo on CPUs). What is left to the library is the data: in a
run of ``P`` processes, process ``p`` reads only its rows of each global batch
(:func:`process_batch_slice`, :func:`process_batch_indices`), and the rows are a function of
the step and the process index only, so a resumed run reads exactly what an uninterrupted one
would have read.
"""

from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh

from seqjax.train.data_order import batch_indices
from seqjax.train.sharding import batch_sharding, make_mesh

__all__ = [
    "initialize",
    "is_main_process",
    "process_batch_indices",
    "process_batch_slice",
]

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    heartbeat_timeout_s: int = 100,
    initialization_timeout_s: int = 300,
) -> bool:
    """Joins this process to a multi-process run (``jax.distributed.initialize``), if asked.

    Call it first, before any other JAX call. With no coordinator, no process count above 1
    and ``auto=False`` it does nothing and the run is a single process, so a script can call
    it unconditionally. ``auto=True`` lets JAX detect the cluster itself (TPU pod slices,
    SLURM, Open MPI, Kubernetes; the ``JAX_COORDINATOR_ADDRESS`` environment variable).

    A process that dies is noticed by the others within about ``heartbeat_timeout_s``
    seconds (they then stop with an error instead of waiting forever in a collective).

    Args:
      coordinator: ``host:port`` of process 0's coordination service (every process passes
        the same address).
      num_processes: the number of processes ``P``.
      process_id: this process's index in ``[0, P)``.
      auto: call ``jax.distributed.initialize`` even without the three values above, for
        JAX's cluster auto-detection.
      heartbeat_timeout_s: seconds without a heartbeat after which a process counts as dead.
      initialization_timeout_s: seconds to wait for every process to join.

    Returns:
      True if this call joined a multi-process run; False if it did nothing (single process,
      or already initialized).

    Raises:
      ValueError: a malformed ``coordinator``, ``num_processes < 1``, a ``process_id``
        outside ``[0, num_processes)``, or only some of the three values given.

    Example:
      >>> initialize()  # no coordinator: a single-process run, nothing to do
      False
    """
    if jax.distributed.is_initialized():
        return False
    given = {
        "coordinator": coordinator,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    if not auto:
        if coordinator is None and (num_processes is None or num_processes == 1):
            if process_id not in (None, 0):
                raise ValueError(f"process_id must be 0 in a single-process run, got {process_id}")
            return False
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(
                f"a multi-process run needs coordinator, num_processes and process_id; "
                f"missing {missing} (or pass auto=True for JAX's cluster auto-detection)"
            )
    if coordinator is not None and not _ADDRESS.match(coordinator):
        raise ValueError(
            f"coordinator must be 'host:port' (e.g. 10.0.0.1:1234), got {coordinator!r}"
        )
    if num_processes is not None and (
        isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1
    ):
        raise ValueError(f"num_processes must be an int >= 1, got {num_processes!r}")
    if process_id is not None:
        if isinstance(process_id, bool) or not isinstance(process_id, int) or process_id < 0:
            raise ValueError(f"process_id must be an int >= 0, got {process_id!r}")
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(
                f"process_id must be in [0, num_processes) = [0, {num_processes}), got {process_id}"
            )
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        heartbeat_timeout_seconds=int(heartbeat_timeout_s),
        initialization_timeout=int(initialization_timeout_s),
    )
    return True


def is_main_process() -> bool:
    """True in process 0, the one that logs, prints and writes the run's own files."""
    return jax.process_index() == 0


def process_batch_slice(batch_size: int, mesh: Mesh | None = None) -> slice:
    """The rows of a global batch that this process feeds (and must read).

    Derived from the sharding itself (the rows the process's devices hold under
    :func:`~seqjax.train.batch_sharding`), so it is right for any mesh whose ``"data"`` axis
    gives each process one contiguous block. For :func:`~seqjax.train.make_mesh`'s mesh,
    process ``p`` of ``P`` gets rows ``[p * B / P, (p + 1) * B / P)``.

    Args:
      batch_size: the global batch size ``B``.
      mesh: the mesh; default :func:`~seqjax.train.make_mesh`.

    Returns:
      ``slice(start, stop)``; ``slice(0, B)`` in a single-process run.

    Raises:
      ValueError: ``B`` not divisible by the mesh's ``"data"`` size, or a mesh that gives
        this process non-contiguous rows.

    Example:
      >>> process_batch_slice(8)  # one process: every row
      slice(0, 8, None)
    """
    mesh = make_mesh() if mesh is None else mesh
    n = int(mesh.shape["data"])
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if batch_size % n:
        raise ValueError(
            f"the global batch size {batch_size} is not divisible by the {n} devices of the "
            f"mesh's 'data' axis; choose a multiple of {n}"
        )
    index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    rows = sorted(
        {(idx[0].start or 0, idx[0].stop or batch_size) for idx in index_map.values() if idx}
    )
    for (_, stop), (start, _) in zip(rows, rows[1:], strict=False):
        if stop != start:
            raise ValueError(
                f"this process holds non-contiguous batch rows {rows}; order the mesh's "
                f"devices process by process (make_mesh does)"
            )
    return slice(rows[0][0], rows[-1][1])


def process_batch_indices(
    step: int, num_examples: int, batch_size: int, seed: int = 0, mesh: Mesh | None = None
) -> np.ndarray:
    """This process's example indices of global batch ``step`` (shuffled, epoch by epoch).

    The global batch is :func:`~seqjax.train.batch_indices` ``(step, num_examples,
    batch_size, seed)``; this process reads rows :func:`process_batch_slice` of it. The
    indices depend only on the step, the seed and the process's place in the mesh: a run
    resumed at step ``s`` reads what an uninterrupted run reads from ``s`` on, and ``P``
    processes together read exactly the examples one process would.

    Args:
      step: the step number (>= 0).
      num_examples: dataset size.
      batch_size: the global batch size.
      seed: shuffling seed.
      mesh: the mesh; default :func:`~seqjax.train.make_mesh`.

    Returns:
      int64 ``[batch_size / P]`` indices into the dataset.

    Raises:
      ValueError: see :func:`~seqjax.train.batch_indices` and :func:`process_batch_slice`.

    Example:
      >>> process_batch_indices(0, 10, 4, seed=1).shape  # one process: the whole batch
      (4,)
    """
    rows = process_batch_slice(batch_size, mesh)
    return batch_indices(step, num_examples, batch_size, seed)[rows]
