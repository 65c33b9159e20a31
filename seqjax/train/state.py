"""The train state: parameters, optimizer state, step, RNG key, optional TBPTT carry."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from seqjax.typing import Array, PyTree

__all__ = ["TrainState"]


def as_key_data(rng: Any) -> Array:
    """Returns raw ``uint32`` key data for an int seed, a typed key or legacy key data.

    Raw key data (not a typed key) is what the state stores, so checkpoints hold plain arrays.

    Args:
      rng: an int seed, a typed key (``jax.random.key``) or a ``uint32`` array from
        ``jax.random.PRNGKey``.

    Returns:
      ``uint32`` key data of the default PRNG implementation.

    Raises:
      TypeError: anything else.
    """
    # Always a fresh buffer: the train step donates the state, which must not free the
    # caller's key.
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return jax.random.key_data(jax.random.key(int(rng)))
    if isinstance(rng, jax.Array) and jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jnp.array(jax.random.key_data(rng), copy=True)
    if isinstance(rng, (jax.Array, np.ndarray)) and rng.dtype == jnp.uint32:
        return jnp.array(rng, copy=True)
    raise TypeError(
        f"rng must be an int seed, a jax.random.key or uint32 key data, got {type(rng).__name__}"
    )


@flax.struct.dataclass
class TrainState:
    """Everything a training run carries from one step to the next (a pytree).

    Attributes:
      step: int32 ``[]``, the number of steps taken; step ``s`` consumes batch ``s`` and the
        key ``fold_in(rng, s)``.
      params: model parameters (any pytree of arrays).
      opt_state: the Optax state for ``params``.
      rng: ``uint32`` key data (``jax.random.key_data``); per-step keys are derived from it,
        never split and stored, so step ``s`` always sees the same key.
      nonfinite_step: int32 ``[]``, -1 while every loss and gradient has been finite;
        otherwise the first step whose loss or gradient was NaN/Inf. From then on steps are
        no-ops, so the state keeps the last good parameters until the host notices.
      carry: the recurrent carry flowing between batches in truncated BPTT (leaves
        ``[B, ...]``), or None for models without one.
    """

    step: Array
    params: PyTree
    opt_state: PyTree
    rng: Array
    nonfinite_step: Array
    carry: PyTree = None

    @classmethod
    def create(
        cls,
        params: PyTree,
        optimizer: optax.GradientTransformation,
        rng: Any = 0,
        carry: PyTree = None,
    ) -> TrainState:
        """Starts a run at step 0.

        The state holds ``params`` itself (no copy): a donating train step frees these
        buffers on its first call, so keep a copy if the initial values are needed later.

        Args:
          params: initial parameters.
          optimizer: the Optax transformation (its ``init`` builds ``opt_state``).
          rng: an int seed, a typed key or raw key data.
          carry: the initial TBPTT carry with leaves ``[B, ...]`` (e.g.
            ``cell.initial_carry((B,))``), or None.

        Returns:
          The initial :class:`TrainState`.

        Raises:
          TypeError: ``optimizer`` lacks ``init``/``update``, or a bad ``rng``.

        Example:
          >>> import jax.numpy as jnp, optax
          >>> state = TrainState.create({"w": jnp.zeros(3)}, optax.sgd(0.1), rng=0)
          >>> int(state.step), state.rng.dtype
          (0, dtype('uint32'))
        """
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError(
                f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}"
            )
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            rng=as_key_data(rng),
            nonfinite_step=jnp.full((), -1, jnp.int32),
            carry=carry,
        )

    def step_key(self) -> Array:
        """The typed key of the current step: ``fold_in(key(rng), step)``."""
        return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)
