"""The jitted train and eval steps, truncated BPTT, metrics as sums plus counts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from seqjax.train.sharding import constrain_state
from seqjax.train.state import TrainState
from seqjax.typing import Array, PyTree

__all__ = [
    "LossOutput",
    "NonFiniteError",
    "make_eval_step",
    "make_train_step",
    "reset_carry",
    "summarize_metrics",
]

_RESERVED = ("loss_sum", "count", "grad_norm_sum", "steps")


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN/Inf; ``step`` is the first step where it happened.

    Attributes:
      step: the step number (the batch index) whose loss or gradient was not finite.
      last_good_step: the newest checkpoint left on disk, or None.
    """

    def __init__(self, step: int, last_good_step: int | None = None, detail: str = ""):
        self.step = int(step)
        self.last_good_step = last_good_step
        where = (
            "no checkpoint was written"
            if last_good_step is None
            else f"the last good checkpoint is step {last_good_step}"
        )
        super().__init__(
            f"non-finite loss or gradient at step {self.step}; training stopped and {where}{detail}"
        )


class LossOutput(NamedTuple):
    """What a loss function returns.

    Attributes:
      loss_sum: float ``[]``, the loss summed over the ``count`` items (tokens, examples) of
        the batch; the step differentiates ``loss_sum / count``.
      count: ``[]``, the number of items summed (e.g. non-padding tokens).
      metrics: optional extra sums, ``{name: []}`` (e.g. ``{"correct": n_correct}``); they are
        reported divided by ``count``.
      carry: for truncated BPTT, the carry after this batch (same structure as the one passed
        in); None otherwise.
    """

    loss_sum: Array
    count: Array
    metrics: Mapping[str, Array] | None = None
    carry: PyTree = None


def reset_carry(carry: PyTree, reset: Array, initial: PyTree | None = None) -> PyTree:
    """Replaces the carry of the sequences flagged in ``reset`` by the initial carry.

    Args:
      carry: pytree with leaves ``[B, ...]``.
      reset: bool ``[B]``; True where a new document starts with this batch.
      initial: the carry to reset to (leaves ``[B, ...]`` or broadcastable); None means zeros,
        which is the initial carry of every seqjax cell.

    Returns:
      The carry with flagged rows reset.

    Raises:
      ValueError: ``reset`` is not ``[B]`` for the carry's batch size.
      TypeError: ``reset`` is not boolean.

    Example:
      >>> import jax.numpy as jnp
      >>> reset_carry({"h": jnp.ones((2, 3))}, jnp.array([True, False]))["h"][:, 0]
      Array([0., 1.], dtype=float32)
    """
    reset = jnp.asarray(reset)
    if reset.dtype != jnp.bool_:
        raise TypeError(f"reset must be a boolean [B] array, got dtype {reset.dtype}")
    leaves = jax.tree.leaves(carry)
    if leaves and (reset.ndim != 1 or reset.shape[0] != leaves[0].shape[0]):
        raise ValueError(f"reset must have shape [B] = ({leaves[0].shape[0]},), got {reset.shape}")
    if initial is None:
        initial = jax.tree.map(jnp.zeros_like, carry)

    def sel(c, i):
        r = reset.reshape(reset.shape + (1,) * (c.ndim - 1))
        return jnp.where(r, jnp.asarray(i, c.dtype), c)

    return jax.tree.map(sel, carry, initial)


def _normalize(out: Any) -> LossOutput:
    if isinstance(out, LossOutput):
        res = out
    elif isinstance(out, tuple) and 2 <= len(out) <= 4:
        res = LossOutput(*out)
    else:
        raise TypeError(
            f"loss_fn must return a LossOutput(loss_sum, count, metrics, carry) or a "
            f"tuple (loss_sum, count[, metrics[, carry]]), got {type(out).__name__}"
        )
    if jnp.ndim(res.loss_sum) != 0 or jnp.ndim(res.count) != 0:
        raise ValueError(
            f"loss_fn must return scalar loss_sum and count, got shapes "
            f"{jnp.shape(res.loss_sum)} and {jnp.shape(res.count)}"
        )
    metrics = dict(res.metrics or {})
    clash = sorted(set(metrics) & set(_RESERVED))
    if clash:
        raise ValueError(f"loss_fn metrics use reserved names {clash}; reserved: {_RESERVED}")
    for k, v in metrics.items():
        if jnp.ndim(v) != 0:
            raise ValueError(f"metric {k!r} must be a scalar sum, got shape {jnp.shape(v)}")
    return res._replace(metrics=metrics)


def _check_same_carry(old: PyTree, new: PyTree) -> None:
    if new is None:
        raise ValueError(
            "the state holds a TBPTT carry but loss_fn returned carry=None; return "
            "LossOutput(..., carry=new_carry)"
        )
    so, sn = jax.tree.structure(old), jax.tree.structure(new)
    if so != sn:
        raise ValueError(f"loss_fn returned a carry of structure {sn}, expected {so}")
    for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(
                f"loss_fn returned a carry leaf {b.shape} {b.dtype}, expected {a.shape} {a.dtype}"
            )


def _input_carry(
    state_carry: PyTree, batch: Any, reset_key: str | None, initial_carry: PyTree | None
) -> PyTree:
    # The carry is data, not a function of the parameters: gradients stop at the batch
    # boundary (truncated BPTT), so memory does not grow with the stream length.
    carry = jax.lax.stop_gradient(state_carry)
    if reset_key is not None and isinstance(batch, Mapping) and reset_key in batch:
        carry = reset_carry(carry, batch[reset_key], initial_carry)
    return carry


def _call_loss(
    loss_fn: Callable, params: PyTree, batch: Any, rng: Any, carry: PyTree
) -> LossOutput:
    if carry is None:
        return _normalize(loss_fn(params, batch, rng))
    out = _normalize(loss_fn(params, batch, rng, carry))
    _check_same_carry(carry, out.carry)
    return out


def make_train_step(
    loss_fn: Callable[..., LossOutput],
    optimizer: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    reset_key: str | None = "reset",
    initial_carry: PyTree | None = None,
    donate: bool = True,
    jit: bool = True,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, Array]]]:
    """Turns a loss function into one jitted ``train_step(state, batch) -> (state, metrics)``.

    The step computes ``grad(loss_sum / count)``, applies ``optimizer``, advances ``step``,
    and returns metrics as sums (so they add up across steps and devices):
    ``{"loss_sum", "count", "grad_norm_sum", "steps", **loss metrics}``; see
    :func:`summarize_metrics`. The step's RNG key is ``fold_in(state.rng, state.step)``, so a
    resumed run sees the same keys as an uninterrupted one.

    Non-finite loss or gradient: the update is skipped (parameters, optimizer state, carry and
    step stay as they were) and ``state.nonfinite_step`` records the step; every later step is a
    no-op. The host checks it when it logs or saves and raises :class:`NonFiniteError` naming
    the step, so no bad state reaches a checkpoint.

    Truncated BPTT: when ``state.carry`` is not None the loss is called as
    ``loss_fn(params, batch, rng, carry)`` with ``carry = stop_gradient(state.carry)``, rows
    where ``batch[reset_key]`` is True reset to ``initial_carry`` (zeros by default), and the
    returned ``LossOutput.carry`` becomes the next state's carry.

    Args:
      loss_fn: ``loss_fn(params, batch, rng) -> LossOutput`` (or ``(loss_sum, count[,
        metrics])``); with a carry ``loss_fn(params, batch, rng, carry)`` returning the new
        carry in ``LossOutput.carry``. ``rng`` is a typed key.
      optimizer: e.g. from :func:`~seqjax.train.make_optimizer`.
      mesh: a mesh from :func:`~seqjax.train.make_mesh`; the step then keeps parameters
        replicated and the carry batch-sharded (pass batches through
        :func:`~seqjax.train.shard_batch` and the state through
        :func:`~seqjax.train.place_state`). None for plain single-device use.
      reset_key: the batch key of the bool ``[B]`` reset mask (batches must be mappings to use
        it); None disables resets.
      initial_carry: what reset rows become; None means zeros.
      donate: donate the input state's buffers (the caller must not reuse ``state``).
      jit: compile the step (False returns the plain function, for debugging).
      compiler_options: XLA options for this compilation (``jax.jit(compiler_options=)``), e.g.
        ``seqjax.kernels.XLA_CPU_EIGEN_DOTS`` for large hidden sizes on CPU.

    Returns:
      ``train_step(state, batch) -> (new_state, metrics)``.

    Raises:
      TypeError: ``loss_fn`` not callable, ``optimizer`` without ``update``.
      ValueError: (at trace time) non-scalar loss/count, reserved metric names, a returned
        carry that differs in structure, shape or dtype from the one passed in.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> def loss_fn(params, batch, rng):
      ...     err = batch["x"] @ params["w"] - batch["y"]
      ...     return LossOutput(jnp.sum(err ** 2), jnp.asarray(err.shape[0], jnp.float32))
      >>> opt = optax.sgd(0.1)
      >>> state = TrainState.create({"w": jnp.zeros(2)}, opt)
      >>> step = make_train_step(loss_fn, opt)
      >>> batch = {"x": jnp.eye(2), "y": jnp.ones(2)}
      >>> state, metrics = step(state, batch)
      >>> int(state.step), float(metrics["loss_sum"])
      (1, 2.0)
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if not hasattr(optimizer, "update"):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}"
        )

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, Array]]:
        rng = state.step_key()
        carry = None
        if state.carry is not None:
            carry = _input_carry(state.carry, batch, reset_key, initial_carry)

        def objective(params):
            out = _call_loss(loss_fn, params, batch, rng, carry)
            count = jnp.asarray(out.count, jnp.float32)
            mean = jnp.asarray(out.loss_sum, jnp.float32) / jnp.maximum(count, 1.0)
            return mean, out

        (_, out), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(out.loss_sum) & jnp.isfinite(grad_norm) & (state.nonfinite_step < 0)
        # Optax mixes Python floats with int32 counters (``b1 ** count``); it is written for
        # standard promotion, so its update runs under it even when the caller is strict.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)

        def keep(new, old):
            return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

        new_carry = None
        if state.carry is not None:
            new_carry = keep(jax.lax.stop_gradient(out.carry), state.carry)
        first_bad = jnp.where(
            state.nonfinite_step >= 0, state.nonfinite_step, jnp.where(finite, -1, state.step)
        ).astype(jnp.int32)
        new_state = dataclasses.replace(
            state,
            step=jnp.where(finite, state.step + 1, state.step).astype(jnp.int32),
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            nonfinite_step=first_bad,
            carry=new_carry,
        )
        new_state = constrain_state(new_state, mesh)
        metrics = {
            "loss_sum": jnp.asarray(out.loss_sum, jnp.float32),
            "count": jnp.asarray(out.count, jnp.float32),
            "grad_norm_sum": grad_norm.astype(jnp.float32),
            "steps": jnp.ones((), jnp.float32),
            **{k: jnp.asarray(v, jnp.float32) for k, v in out.metrics.items()},
        }
        return new_state, metrics

    if not jit:
        return train_step
    return jax.jit(
        train_step, donate_argnums=(0,) if donate else (), compiler_options=compiler_options
    )


def make_eval_step(
    loss_fn: Callable[..., LossOutput],
    *,
    reset_key: str | None = "reset",
    initial_carry: PyTree | None = None,
    jit: bool = True,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[..., tuple[dict[str, Array], PyTree]]:
    """A jitted ``eval_step(params, batch, carry=None) -> (metrics, new_carry)``.

    ``loss_fn`` is called with ``rng=None`` (evaluation mode: no dropout). Metrics are sums
    ``{"loss_sum", "count", **loss metrics}``; add them over batches and summarize with
    :func:`summarize_metrics`. With a carry (streams evaluated by TBPTT) the carry is reset
    where ``batch[reset_key]`` is True and the new carry is returned for the next batch.

    Args:
      loss_fn: the same function as for :func:`make_train_step`.
      reset_key: the batch key of the bool ``[B]`` reset mask, or None.
      initial_carry: what reset rows become; None means zeros.
      jit: compile the step.
      compiler_options: XLA options for this compilation, as in :func:`make_train_step`.

    Returns:
      ``eval_step(params, batch, carry=None) -> (metrics, new_carry or None)``.

    Raises:
      TypeError: ``loss_fn`` not callable.

    Example:
      >>> import jax.numpy as jnp
      >>> ev = make_eval_step(lambda p, b, rng: (jnp.sum(b * p), jnp.asarray(b.size, jnp.float32)))
      >>> metrics, _ = ev(jnp.float32(2.0), jnp.ones(3))
      >>> float(metrics["loss_sum"]), float(metrics["count"])
      (6.0, 3.0)
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")

    def eval_step(params: PyTree, batch: Any, carry: PyTree = None):
        if carry is not None:
            carry = _input_carry(carry, batch, reset_key, initial_carry)
        out = _call_loss(loss_fn, params, batch, None, carry)
        metrics = {
            "loss_sum": jnp.asarray(out.loss_sum, jnp.float32),
            "count": jnp.asarray(out.count, jnp.float32),
            **{k: jnp.asarray(v, jnp.float32) for k, v in (out.metrics or {}).items()},
        }
        return metrics, (out.carry if carry is not None else None)

    return jax.jit(eval_step, compiler_options=compiler_options) if jit else eval_step


def summarize_metrics(sums: Mapping[str, Any]) -> dict[str, float]:
    """Turns summed step metrics into means.

    Args:
      sums: metrics added over steps/batches (host or device scalars), as returned by the
        train or eval step.

    Returns:
      ``{"loss": loss_sum / count, "count": count}``, plus ``grad_norm`` (mean over steps)
      for train metrics and every extra metric divided by ``count``.

    Raises:
      KeyError: ``loss_sum`` or ``count`` missing.

    Example:
      >>> summarize_metrics({"loss_sum": 6.0, "count": 3.0, "correct": 1.5})
      {'loss': 2.0, 'count': 3.0, 'correct': 0.5}
    """
    if "loss_sum" not in sums or "count" not in sums:
        raise KeyError(f"metrics must contain loss_sum and count, got {sorted(sums)}")
    count = float(sums["count"])
    denom = count if count > 0 else float("nan")
    out = {"loss": float(sums["loss_sum"]) / denom, "count": count}
    if "grad_norm_sum" in sums:
        out["grad_norm"] = float(sums["grad_norm_sum"]) / max(float(sums.get("steps", 1)), 1.0)
    for k, v in sums.items():
        if k not in _RESERVED:
            out[k] = float(v) / denom
    return out
