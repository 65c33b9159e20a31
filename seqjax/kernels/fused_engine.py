"""The generic fused-kernel engine: forward scan, hand-written backward scan, chunked remat.

It runs any :class:`~seqjax.kernels.fused_specs.KernelSpec` over a flattened, time-major,
forward-direction sequence (``fused.py`` handles batch shapes, direction and padding). The
custom VJP (``fused_core``) keeps, per step, only what the spec's forward step saves; its
reverse scan carries only the recurrent gradients (``dh``, ``dc``).

Two layouts of the work, with equal results (tested):

- *per step* (small weights): each step projects its own input right before the recurrent
  matmul, and the reverse loop accumulates the weight gradients step by step while the
  ``[B, G*H]`` blocks are still in cache;
- *hoisted* (large weights): one ``[T*B, I] x [I, G*H]`` input projection before the loop and
  one ``[H, T*B] x [T*B, G*H]`` matmul per weight gradient after it.

:func:`per_step_weights` picks by the parameters' size (``_PER_STEP_MAX_BYTES``; the crossover
was measured, see docs/performance.md); ``_PROJECT_IN_LOOP`` forces the forward layout (tests).
The remat path keeps the carries at chunk boundaries only and uses per-chunk matmuls.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.kernels.fused_specs import KernelSpec, Weights
from seqjax.typing import Array, PyTree

# None: choose by weight size (per_step_weights); True/False force the forward layout (tests).
_PROJECT_IN_LOOP: bool | None = None

# Parameter bytes up to which the per-step layout runs (between the measured points, see
# docs/performance.md).
_PER_STEP_MAX_BYTES = 12 * 2**20


def per_step_weights(params: PyTree) -> bool:
    """Whether the input projection and weight gradients run per step (small weights)."""
    nbytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(params))
    return nbytes <= _PER_STEP_MAX_BYTES


def _project_in_loop(params: PyTree) -> bool:
    return per_step_weights(params) if _PROJECT_IN_LOOP is None else _PROJECT_IN_LOOP


def _bcast(m: Array, x: Array) -> Array:
    return jnp.reshape(m, m.shape + (1,) * (x.ndim - m.ndim))


def _transposes(weights: Weights) -> Weights:
    """``{name: w.T}`` for the matrices among ``weights``, computed once before a loop."""
    return {
        name: jnp.swapaxes(w, -1, -2)
        for name, w in weights.items()
        if w is not None and w.ndim == 2
    }


def _add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: x + y.astype(x.dtype), a, b)


def _states_before(state0: tuple, states: tuple) -> tuple:
    """States before each step: ``[s0, s_0, ..., s_{T-2}]``."""
    return tuple(
        jnp.concatenate([s0[None], s[:-1]], axis=0) for s0, s in zip(state0, states, strict=True)
    )


def _run_forward(spec: KernelSpec, weights, state0, inputs, mask, unroll, params=None):
    """Forward recurrence: ``(final_state, states_all, saved_all)``, each ``[T, B, ...]``.

    With ``params`` given, ``inputs`` are the raw inputs and each step projects its own input
    (``project_inputs`` on ``[B, I]``) right before the recurrent matmul; otherwise they are the
    projected inputs.
    """

    def body(state, inp):
        xp, m = inp
        if params is not None:
            xp = spec.cell.project_inputs(params, xp)
        new, saved = spec.forward_step(weights, state, xp)
        if m is not None:
            new = tuple(jnp.where(_bcast(m, n), n, s) for n, s in zip(new, state, strict=True))
        return new, (new, saved)

    final, (states, saved) = lax.scan(body, state0, (inputs, mask), unroll=unroll)
    return final, states, saved


def _backward_body(spec: KernelSpec, weights, weights_t, dstate, saved, state_prev, state, dy, m):
    """One reverse step: adds the output gradient, masks, and calls the spec's backward step."""
    dstate = (dstate[0] + dy.astype(dstate[0].dtype),) + tuple(dstate[1:])
    d_in = dstate
    if m is not None:
        d_in = tuple(jnp.where(_bcast(m, d), d, jnp.zeros((), d.dtype)) for d in dstate)
    dprev, step_grads, summed_grads = spec.backward_step(
        weights, weights_t, saved, state_prev, state, d_in
    )
    if m is not None:
        # a skipped step passes its carry gradient through; its own gradients are zero
        dprev = tuple(jnp.where(_bcast(m, p), p, d) for p, d in zip(dprev, dstate, strict=True))
    return dprev, step_grads, summed_grads


def _run_backward(spec: KernelSpec, weights, state0, states, saved, mask, dfinal, dys, unroll):
    """Reverse recurrence, then the weight gradients of all steps at once.

    Returns:
      ``(dstate0, dweights, dxps)``.
    """
    states_prev = _states_before(state0, states)
    weights_t = _transposes(weights)

    def body(dstate, inp):
        saved_t, prev_t, state_t, dy, m = inp
        dprev, step_grads, summed_grads = _backward_body(
            spec, weights, weights_t, dstate, saved_t, prev_t, state_t, dy, m
        )
        return dprev, (step_grads, summed_grads)

    dstate0, (step_grads, summed_grads) = lax.scan(
        body, dfinal, (saved, states_prev, states, dys, mask), reverse=True, unroll=unroll
    )
    summed_grads = jax.tree_util.tree_map(lambda d: jnp.sum(d, axis=0), summed_grads)
    dweights, dxps = spec.weight_grads(weights, states_prev, saved, step_grads, summed_grads)
    return dstate0, dweights, dxps


def _run_backward_per_step(
    spec: KernelSpec, weights, params, state0, states, saved, xs, mask, dfinal, dys, unroll
):
    """Like ``_run_backward``, but accumulating the weight gradients inside the loop.

    Returns:
      ``(dstate0, dweights, dparams_projection, dxs)``.
    """
    states_prev = _states_before(state0, states)
    weights_t = _transposes(weights)
    zero_dweights = jax.tree_util.tree_map(jnp.zeros_like, weights)
    zero_dparams = jax.tree_util.tree_map(jnp.zeros_like, params)

    def one_step(tree):
        return jax.tree_util.tree_map(lambda a: a[None], tree)

    def body(carry, inp):
        dstate, dweights_sum, dparams_sum = carry
        saved_t, prev_t, state_t, x_IB, dy, m = inp
        dprev, step_grads, summed_grads = _backward_body(
            spec, weights, weights_t, dstate, saved_t, prev_t, state_t, dy, m
        )
        dweights, dxp = spec.weight_grads(
            weights, one_step(prev_t), one_step(saved_t), one_step(step_grads), summed_grads
        )
        xp, pull = jax.vjp(spec.cell.project_inputs, params, jnp.swapaxes(x_IB, 0, 1))
        dparams, dx = pull(dxp[0].astype(xp.dtype))
        return (dprev, _add(dweights_sum, dweights), _add(dparams_sum, dparams)), dx

    # Handing the loop x_t^T ([I, B], transposed once outside) lets XLA:CPU run the per-step
    # dW_ih += x_t^T @ da as a canonical matmul instead of a transposed-operand dot.
    xs_TIB = jnp.swapaxes(xs, 1, 2)
    (dstate0, dweights, dparams), dxs = lax.scan(
        body,
        (dfinal, zero_dweights, zero_dparams),
        (saved, states_prev, states, xs_TIB, dys, mask),
        reverse=True,
        unroll=unroll,
    )
    return dstate0, dweights, dparams, dxs


class FusedConfig(NamedTuple):
    """Static configuration of one ``fused_core`` call (hashable)."""

    spec: Any
    unroll: int
    chunk: int  # 0: keep all activations; K: remat in chunks of K steps


def _fused_core(config: FusedConfig, params, state0, xs, mask) -> tuple[tuple[Array, ...], Array]:
    """``(final_state, hs)`` of the recurrence over ``xs [T, B, I]`` (``T`` a multiple of the
    chunk length with remat), with the hand-written VJP below."""
    return _fused_core_fwd(config, params, state0, xs, mask)[0]


# jax.custom_vjp applied directly (not through functools.partial) keeps the return type visible
# to type checkers.
fused_core = jax.custom_vjp(_fused_core, nondiff_argnums=(0,))


def _chunks(x: Array | None, K: int) -> Array | None:
    return None if x is None else x.reshape((x.shape[0] // K, K) + x.shape[1:])


def _fused_core_fwd(config: FusedConfig, params, state0, xs, mask):
    spec = config.spec
    weights = spec.prepare(params)
    if config.chunk:

        def chunk_body(state, inp):
            x, m = inp
            if _project_in_loop(params):
                final, states, _ = _run_forward(spec, weights, state, x, m, config.unroll, params)
            else:
                xps = spec.cell.project_inputs(params, x)
                final, states, _ = _run_forward(spec, weights, state, xps, m, config.unroll)
            return final, (state, states[0])

        final, (starts, hs) = lax.scan(
            chunk_body, state0, (_chunks(xs, config.chunk), _chunks(mask, config.chunk))
        )
        hs = hs.reshape((xs.shape[0],) + hs.shape[2:])
        return (final, hs), (params, starts, xs, mask)
    if _project_in_loop(params):
        final, states, saved = _run_forward(spec, weights, state0, xs, mask, config.unroll, params)
    else:
        xps = spec.cell.project_inputs(params, xs)
        final, states, saved = _run_forward(spec, weights, state0, xps, mask, config.unroll)
    return (final, states[0]), (params, state0, states, saved, xs, mask)


def _fused_core_bwd(config: FusedConfig, residuals, cotangents):
    spec = config.spec
    dfinal, dhs = cotangents
    if config.chunk:
        return _chunked_bwd(config, residuals, dfinal, dhs)
    params, state0, states, saved, xs, mask = residuals
    weights, pull_prepare = jax.vjp(spec.prepare, params)
    if per_step_weights(params):
        dstate0, dweights, dparams_projection, dxs = _run_backward_per_step(
            spec, weights, params, state0, states, saved, xs, mask, dfinal, dhs, config.unroll
        )
        return _add(dparams_projection, pull_prepare(dweights)[0]), dstate0, dxs, None
    dstate0, dweights, dxps = _run_backward(
        spec, weights, state0, states, saved, mask, dfinal, dhs, config.unroll
    )
    # The projection's VJP: dW_ih = xs^T @ dxps and dxs = dxps @ W_ih^T, two large matmuls
    # (its primal output is unused here, so XLA drops the recomputation).
    xps_like, pull_projection = jax.vjp(spec.cell.project_inputs, params, xs)
    dparams_projection, dxs = pull_projection(dxps.astype(xps_like.dtype))
    dparams = _add(dparams_projection, pull_prepare(dweights)[0])
    return dparams, dstate0, dxs, None


def _chunked_bwd(config: FusedConfig, residuals, dfinal, dhs):
    """Backward of the remat path: recompute each chunk's forward, then reverse it."""
    spec, K = config.spec, config.chunk
    params, starts, xs, mask = residuals
    weights, pull_prepare = jax.vjp(spec.prepare, params)
    zero_dweights = jax.tree_util.tree_map(jnp.zeros_like, weights)
    zero_dparams = jax.tree_util.tree_map(jnp.zeros_like, params)

    def chunk_body(carry, inp):
        dstate, dweights_sum, dparams_sum = carry
        start, x, m, dy = inp
        xps, pull_projection = jax.vjp(spec.cell.project_inputs, params, x)
        if _project_in_loop(params):
            _, states, saved = _run_forward(spec, weights, start, x, m, config.unroll, params)
        else:
            _, states, saved = _run_forward(spec, weights, start, xps, m, config.unroll)
        dstart, dweights, dxps = _run_backward(
            spec, weights, start, states, saved, m, dstate, dy, config.unroll
        )
        dparams_projection, dx = pull_projection(dxps.astype(xps.dtype))
        return (dstart, _add(dweights_sum, dweights), _add(dparams_sum, dparams_projection)), dx

    (dstate0, dweights, dparams), dxs = lax.scan(
        chunk_body,
        (dfinal, zero_dweights, zero_dparams),
        (starts, _chunks(xs, K), _chunks(mask, K), _chunks(dhs, K)),
        reverse=True,
    )
    dparams = _add(dparams, pull_prepare(dweights)[0])
    return dparams, dstate0, dxs.reshape(xs.shape), None


fused_core.defvjp(_fused_core_fwd, _fused_core_bwd)
