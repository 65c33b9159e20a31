"""Data parallelism on JAX's SPMD machinery: one ``"data"`` mesh axis, batch sharded.

Parameters and optimizer state are replicated (or, on a ``make_mesh(model=k)`` mesh, split
along their last dimension over a ``"model"`` axis); every array with a batch dimension (the batch
itself and a TBPTT carry) is sharded along its leading axis. ``jit`` then inserts the gradient
all-reduce itself, so the same step runs on 1 CPU, 8 GPUs or a TPU slice. On several hosts,
call ``jax.distributed.initialize()`` first; each process then passes its own slice of the
global batch to :func:`shard_batch` (see ``docs/training.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seqjax.typing import PyTree

__all__ = [
    "to_host",
    "batch_sharding",
    "make_mesh",
    "param_sharding",
    "place_state",
    "replicated",
    "shard_batch",
    "state_shardings",
]

# The name of the mesh axis that make_mesh creates and batches are split along.
DATA_AXIS = "data"
# The mesh axis that parameters are split along (make_mesh(model=k) with k > 1).
MODEL_AXIS = "model"


def make_mesh(devices: Sequence[Any] | None = None, *, model: int = 1) -> Mesh:
    """A mesh over ``devices`` (default: all devices of all processes).

    With ``model=1`` (the default) a 1-D mesh, axis ``"data"``: batches split, parameters
    replicated. With ``model=k > 1`` a 2-D mesh ``("data", "model")`` of shape
    ``(N / k, k)``: batches split along ``"data"``, and every parameter and optimizer-state
    array with at least 2 dimensions whose last dimension divides by ``k`` is split along
    that last dimension over ``"model"`` (for seqjax cells: the gate columns of the input
    and recurrent matrices); other arrays are replicated. See :func:`state_shardings`.

    Args:
      devices: the devices to use; None takes ``jax.devices()``. With several processes,
        keep them ordered process by process (``jax.devices()`` is).
      model: devices per parameter shard (the ``"model"`` axis size); must divide the
        device count.

    Returns:
      ``Mesh(devices, ("data",))`` or ``Mesh(devices reshaped (N / k, k), ("data", "model"))``.

    Raises:
      ValueError: an empty device list, or ``model`` not a divisor of the device count.

    Example:
      >>> mesh = make_mesh()
      >>> mesh.axis_names
      ('data',)
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    if isinstance(model, bool) or not isinstance(model, int) or model < 1:
        raise ValueError(f"model must be an int >= 1, got {model!r}")
    if model == 1:
        return Mesh(np.array(devices), (DATA_AXIS,))
    if len(devices) % model:
        raise ValueError(
            f"model={model} must divide the number of devices, got {len(devices)} devices"
        )
    return Mesh(np.array(devices).reshape(len(devices) // model, model), (DATA_AXIS, MODEL_AXIS))


def _model_size(mesh: Mesh) -> int:
    return int(mesh.shape[MODEL_AXIS]) if MODEL_AXIS in mesh.axis_names else 1


def param_sharding(x: Any, mesh: Mesh) -> NamedSharding:
    """The sharding of one parameter (or optimizer-state) array on ``mesh``.

    Split along its last dimension over ``"model"`` when the mesh has that axis, the array
    has at least 2 dimensions and the last one divides by the axis size; else replicated.

    Args:
      x: an array or ``jax.ShapeDtypeStruct``.
      mesh: the mesh.

    Returns:
      A ``NamedSharding``.

    Example:
      >>> import numpy as np
      >>> param_sharding(np.zeros((4, 8)), make_mesh()).is_fully_replicated  # no "model"
      True
    """
    k = _model_size(mesh)
    shape = np.shape(x)
    if k > 1 and len(shape) >= 2 and shape[-1] % k == 0:
        return NamedSharding(mesh, PartitionSpec(*([None] * (len(shape) - 1)), MODEL_AXIS))
    return replicated(mesh)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that puts a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding that splits the leading (batch) axis over the ``"data"`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def _num_shards(mesh: Mesh) -> int:
    return int(mesh.shape[DATA_AXIS])


def _leaf_sharding(x: Any, mesh: Mesh, batched: bool) -> NamedSharding:
    if batched and np.ndim(x) >= 1:
        return batch_sharding(mesh)
    return replicated(mesh)


def shard_batch(batch: PyTree, mesh: Mesh, *, process_local: bool = True) -> PyTree:
    """Places a host batch on the mesh, split along the leading axis of every array.

    Scalars (0-d leaves) are replicated. In a multi-process run, with ``process_local=True``
    each process passes its own part of the global batch (leading size = global batch /
    process count; see :func:`~seqjax.train.process_batch_slice`) and gets global arrays
    back (``jax.make_array_from_process_local_data``); with ``process_local=False`` every
    process passes the same whole global batch and keeps only its rows on its devices.

    Args:
      batch: a pytree of NumPy or JAX arrays ``[B, ...]``.
      mesh: the mesh from :func:`make_mesh`.
      process_local: in a multi-process run, whether ``batch`` is this process's part
        (True) or the whole global batch, identical on every process (False).

    Returns:
      The same pytree of global ``jax.Array``s sharded over ``"data"``.

    Raises:
      ValueError: leaves whose leading sizes differ, or a batch size not divisible by the
        number of devices (per process).

    Example:
      >>> import numpy as np
      >>> b = shard_batch({"x": np.zeros((8, 3), np.float32)}, make_mesh())
      >>> b["x"].shape
      (8, 3)
    """
    leaves = [x for x in jax.tree.leaves(batch) if np.ndim(x) >= 1]
    sizes = {int(np.shape(x)[0]) for x in leaves}
    if len(sizes) > 1:
        raise ValueError(
            f"all batch arrays must share the leading (batch) size, got sizes {sorted(sizes)}"
        )
    local = process_local and jax.process_count() > 1
    n_div = _num_shards(mesh) // jax.process_count() if local else _num_shards(mesh)
    if sizes and next(iter(sizes)) % max(1, n_div) != 0:
        raise ValueError(
            f"batch size {next(iter(sizes))} is not divisible by the "
            f"{n_div} devices of {'this process' if local else 'the mesh'}; "
            f"choose a multiple of {n_div}"
        )
    if not local:
        return jax.tree.map(lambda x: jax.device_put(x, _leaf_sharding(x, mesh, True)), batch)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(
            _leaf_sharding(x, mesh, True), np.asarray(x)
        ),
        batch,
    )


def state_shardings(state: PyTree, mesh: Mesh) -> PyTree:
    """Shardings for a :class:`~seqjax.train.TrainState`: replicated but the carry (and
    the parameters on a mesh with a ``"model"`` axis).

    Args:
      state: the train state (arrays or ``jax.ShapeDtypeStruct`` values).
      mesh: the mesh.

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``state``: the TBPTT carry's
      leaves are split along their batch axis; on a mesh from ``make_mesh(model=k)``,
      parameter and optimizer-state leaves follow :func:`param_sharding`; everything else
      is replicated.
    """
    out = jax.tree.map(lambda x: param_sharding(x, mesh), state)
    if getattr(state, "carry", None) is not None:
        out = out.replace(carry=jax.tree.map(lambda x: _leaf_sharding(x, mesh, True), state.carry))
    return out


def place_state(state: PyTree, mesh: Mesh) -> PyTree:
    """Puts a train state on ``mesh`` with :func:`state_shardings`.

    Args:
      state: the train state.
      mesh: the mesh.

    Returns:
      The state with every leaf a global array of the right sharding.

    Raises:
      ValueError: a carry whose batch size is not divisible by the device count.
    """
    carry = getattr(state, "carry", None)
    if carry is not None:
        n = _num_shards(mesh)
        for leaf in jax.tree.leaves(carry):
            if np.ndim(leaf) >= 1 and np.shape(leaf)[0] % n:
                raise ValueError(
                    f"the carry's batch size {np.shape(leaf)[0]} is not divisible "
                    f"by the {n} devices of the mesh"
                )
    return jax.device_put(state, state_shardings(state, mesh))


def constrain_state(state: PyTree, mesh: Mesh | None) -> PyTree:
    """``with_sharding_constraint`` to :func:`state_shardings` inside a jitted step."""
    if mesh is None:
        return state
    return jax.lax.with_sharding_constraint(state, state_shardings(state, mesh))


def to_host(tree: PyTree) -> PyTree:
    """Fetches replicated or fully addressable arrays to NumPy, on one or many hosts.

    ``jax.device_get`` refuses arrays that span other processes; a replicated one (a
    parameter, a metric sum) is read from this process's first local copy instead.

    Args:
      tree: a pytree of arrays.

    Returns:
      The same pytree of NumPy arrays.

    Raises:
      ValueError: an array that is sharded across processes (it has no complete local copy).
    """

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError(
                    f"cannot fetch an array of shape {x.shape} sharded across processes to one host"
                )
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(fetch, tree)
