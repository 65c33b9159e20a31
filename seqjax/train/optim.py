"""Optax recipes: AdamW / SGD / RMSProp with global-norm clipping, schedules, accumulation."""

from __future__ import annotations

from typing import Any

import jax
import optax

__all__ = ["make_optimizer", "make_schedule", "optimizer_from_config", "schedule_from_config"]

_OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
_SCHEDULES = ("constant", "cosine", "step")


def _check_nonneg(name: str, v: Any, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kind):
        raise TypeError(f"{name} must be a{'n int' if integer else ' number'}, got {v!r}")
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")


def make_schedule(
    learning_rate: float,
    schedule: str = "constant",
    *,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    end_lr_factor: float = 0.0,
    decay_factor: float = 0.1,
    decay_every: int = 1000,
) -> optax.Schedule:
    """Builds a learning-rate schedule: linear warmup, then constant, cosine or step decay.

    Args:
      learning_rate: peak rate reached at the end of warmup.
      schedule: ``"constant"``, ``"cosine"`` (from the peak at ``warmup_steps`` down to
        ``end_lr_factor * learning_rate`` at ``total_steps``) or ``"step"`` (times
        ``decay_factor`` every ``decay_every`` steps after warmup).
      warmup_steps: steps of linear warmup from 0 (0 disables warmup).
      total_steps: the schedule's length; required for ``"cosine"``.
      end_lr_factor: final fraction of the peak for ``"cosine"``.
      decay_factor: multiplier per period for ``"step"``.
      decay_every: period in steps for ``"step"``.

    Returns:
      ``step -> learning rate`` (an ``optax.Schedule``, usable under jit).

    Raises:
      ValueError: unknown ``schedule``, negative values, ``"cosine"`` without
        ``total_steps > warmup_steps``.

    Example:
      >>> sched = make_schedule(1.0, "cosine", warmup_steps=10, total_steps=110)
      >>> float(sched(5)), float(sched(10)), float(sched(110))
      (0.5, 1.0, 0.0)
    """
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
    _check_nonneg("learning_rate", learning_rate)
    _check_nonneg("warmup_steps", warmup_steps, integer=True)
    if schedule == "constant":
        main = optax.constant_schedule(learning_rate)
    elif schedule == "cosine":
        if total_steps is None or total_steps <= warmup_steps:
            raise ValueError(
                f"the cosine schedule needs total_steps > warmup_steps, got "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        _check_nonneg("end_lr_factor", end_lr_factor)
        main = optax.cosine_decay_schedule(
            learning_rate, total_steps - warmup_steps, alpha=end_lr_factor
        )
    else:
        _check_nonneg("decay_every", decay_every, integer=True)
        _check_nonneg("decay_factor", decay_factor)
        if decay_every == 0:
            raise ValueError("decay_every must be >= 1 for the step schedule")
        main = optax.exponential_decay(learning_rate, decay_every, decay_factor, staircase=True)
    if warmup_steps == 0:
        return main
    warm = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warm, main], [warmup_steps])


def make_optimizer(
    name: str = "adamw",
    learning_rate: float | optax.Schedule = 1e-3,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    end_lr_factor: float = 0.0,
    decay_factor: float = 0.1,
    decay_every: int = 1000,
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    accumulate_steps: int = 1,
) -> optax.GradientTransformation:
    """Builds ``optax.chain(clip_by_global_norm, <optimizer with schedule>)``.

    Clipping by global norm comes first, so the rescaling applies to the raw gradient (the
    standard remedy for exploding gradients in recurrent networks, Pascanu et al. 2013). With
    ``accumulate_steps = k > 1`` the chain is wrapped in ``optax.MultiSteps``: parameters change
    on every k-th call with the mean of the k gradients, and the schedule counts updates.

    Args:
      name: ``"adamw"`` (decoupled weight decay), ``"adam"``, ``"sgd"`` or ``"rmsprop"``.
      learning_rate: peak rate, or an ``optax.Schedule`` (then the schedule arguments are
        ignored).
      schedule, warmup_steps, total_steps, end_lr_factor, decay_factor, decay_every: see
        :func:`make_schedule`.
      clip_norm: maximum global gradient norm; None or 0 disables clipping.
      weight_decay: AdamW's decoupled decay; for SGD/RMSProp/Adam an L2 term
        (``optax.add_decayed_weights`` before the update).
      momentum: SGD (heavy-ball) or RMSProp momentum; 0 disables.
      accumulate_steps: micro-batches averaged per update (``optax.MultiSteps``).

    Returns:
      An ``optax.GradientTransformation`` (``MultiSteps`` exposes the same init/update). It
      runs under standard dtype promotion even when the caller enables strict promotion
      (Optax's internals rely on it).

    Raises:
      ValueError: unknown optimizer or schedule, negative hyperparameters,
        ``accumulate_steps < 1``.

    Example:
      >>> import jax.numpy as jnp
      >>> opt = make_optimizer("sgd", 0.1, clip_norm=1.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, _ = opt.update({"w": jnp.array([30.0, 40.0])}, opt.init(params), params)
      >>> [round(float(u), 4) for u in updates["w"]]   # clipped to norm 1, times -lr
      [-0.06, -0.08]
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {name!r}")
    _check_nonneg("weight_decay", weight_decay)
    _check_nonneg("momentum", momentum)
    if clip_norm is not None:
        _check_nonneg("clip_norm", clip_norm)
    if (
        isinstance(accumulate_steps, bool)
        or not isinstance(accumulate_steps, int)
        or accumulate_steps < 1
    ):
        raise ValueError(f"accumulate_steps must be an int >= 1, got {accumulate_steps!r}")
    if callable(learning_rate):
        lr = learning_rate
    else:
        lr = make_schedule(
            learning_rate,
            schedule,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            end_lr_factor=end_lr_factor,
            decay_factor=decay_factor,
            decay_every=decay_every,
        )
    parts: list[optax.GradientTransformation] = []
    if clip_norm:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if name == "adamw":
        parts.append(optax.adamw(lr, weight_decay=weight_decay))
    else:
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay))
        if name == "adam":
            parts.append(optax.adam(lr))
        elif name == "sgd":
            parts.append(optax.sgd(lr, momentum=momentum or None))
        else:
            parts.append(optax.rmsprop(lr, momentum=momentum))
    opt = optax.chain(*parts)
    if accumulate_steps > 1:
        opt = optax.MultiSteps(opt, every_k_schedule=accumulate_steps).gradient_transformation()
    return _standard_promotion(opt)


def _standard_promotion(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Runs ``tx`` under standard dtype promotion, whatever the caller's setting.

    Optax mixes Python floats with int32 step counters (``b1 ** count``), which
    ``jax_numpy_dtype_promotion="strict"`` rejects; the recipes stay usable in strict code.
    """

    def init(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update(updates, state, params=None, **extra_args):
        with jax.numpy_dtype_promotion("standard"):
            if isinstance(tx, optax.GradientTransformationExtraArgs):
                return tx.update(updates, state, params, **extra_args)
            return tx.update(updates, state, params)

    return optax.GradientTransformationExtraArgs(init, update)


def schedule_from_config(config: Any) -> optax.Schedule:
    """:func:`make_schedule` with the fields of a :class:`~seqjax.train.TrainConfig`.

    The schedule counts optimizer updates (micro-steps divided by ``accumulate_steps``).

    Args:
      config: an object with the ``TrainConfig`` learning-rate fields.

    Returns:
      The learning-rate schedule.
    """
    updates = max(1, config.total_steps // max(1, config.accumulate_steps))
    return make_schedule(
        config.learning_rate,
        config.schedule,
        warmup_steps=config.warmup_steps,
        total_steps=updates,
        end_lr_factor=config.end_lr_factor,
        decay_factor=config.decay_factor,
        decay_every=config.decay_every,
    )


def optimizer_from_config(config: Any) -> optax.GradientTransformation:
    """:func:`make_optimizer` with the fields of a :class:`~seqjax.train.TrainConfig`.

    Args:
      config: an object with the ``TrainConfig`` optimizer fields.

    Returns:
      The optimizer (``clip_norm = 0`` disables clipping).

    Example:
      >>> from seqjax.train import TrainConfig
      >>> opt = optimizer_from_config(TrainConfig(optimizer="sgd", learning_rate=0.1))
    """
    return make_optimizer(
        config.optimizer,
        schedule_from_config(config),
        clip_norm=config.clip_norm or None,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        accumulate_steps=config.accumulate_steps,
    )
