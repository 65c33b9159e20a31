"""Fused recurrent kernels: one layer over a sequence with a hand-written backward pass.

The reference path (``Cell.step`` under ``lax.scan``, differentiated by JAX) is correct but
generic: its backward pass recomputes or re-reads every intermediate the tracer saved, slices
gates one by one and transposes weights inside the loop. The kernels here are written for the
recurrence:

- **forward**: per step, the input projection and ONE fused gate matmul ``h_{t-1} @ W_hh``
  (``[B, H] x [H, G*H]``), then the gate activations in one elementwise pass over the
  contiguous ``[B, G*H]`` pre-activations (a single ``tanh``: ``sigmoid(x) = (1 + tanh(x/2))/2``);
  the step saves its gate *activations*, not the pre-activations, so the backward pass needs no
  transcendental recomputation;
- **backward** (a ``jax.custom_vjp``): a reverse scan whose recurrent carry is only the
  recurrent gradients (``dh``, ``dc``), with the gate derivatives written by hand from the saved
  activations (LSTM without peepholes/clip/NIAF, GRU both forms, SimpleRNN; other LSTM options
  differentiate the same gate function with ``jax.vjp``); weight transposes are hoisted out of
  the loop;
- **remat**: only the carries at chunk boundaries (every ``K ~ sqrt(T)`` steps) are kept; the
  backward recomputes each chunk's forward pass before reversing it, and the chunk's weight
  gradients are single ``[H, K*B] x [K*B, G*H]`` matmuls (``dW_hh = h_prev^T @ da``), as are
  its input-projection gradients.

Where the weight gradients and the input projection go was measured, not assumed (see
``docs/performance.md``). On the 2-core CPU this was developed on, with small weights (1.5 MB
at H=256, 6.3 MB at H=512) doing the input projection per step and accumulating ``dW`` inside
the reverse loop, where the ``[B, G*H]`` blocks are still in cache, was 25-30 % cheaper than one
``[T*B, I] x [I, G*H]`` projection before the loop and ``dW = H^T @ dA`` as one
``[H, T*B] x [T*B, G*H]`` matmul after it (which also pay layout copies of ``[T, B, G*H]``
arrays); with 25 MB of weights (H=1024, I=512) the per-step accumulators stream through memory
every step and the large matmuls were 25 % cheaper. :func:`_per_step_weights` picks by weight
size (``_PER_STEP_MAX_BYTES``); ``_PROJECT_IN_LOOP`` / ``_WGRAD_IN_LOOP`` force a variant. All
variants give the same results (tested). The remat path always uses per-chunk matmuls.

Masks (``lengths``) follow the reference semantics: a masked step keeps the carry and outputs
zero; in the backward pass it passes the carry gradient through untouched. ``reverse`` runs the
forward kernel on the time-flipped sequence.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.cells.base import Cell, accum_dtype, matmul
from seqjax.cells.gru import GRU
from seqjax.cells.lstm import LSTM
from seqjax.cells.rnn import _ACTIVATIONS, SimpleRNN
from seqjax.typing import Array, PyTree

# -- which cells have a fused kernel ------------------------------------------------------------


def unsupported_reason(cell: Cell) -> str | None:
    """Why ``cell`` has no fused kernel, or None when it has one.

    Args:
      cell: any seqjax cell definition.

    Returns:
      None for LSTM (every option except ``layer_norm`` and ``full_gate_recurrence``), GRU (both
      forms) and SimpleRNN; otherwise a short reason.
    """
    kind = type(cell)
    if kind is LSTM:
        if cell.layer_norm:
            return "LSTM(layer_norm=True) normalises inside the step"
        if cell.full_gate_recurrence:
            return "LSTM(full_gate_recurrence=True) carries gate activations"
        return None
    if kind in (GRU, SimpleRNN):
        return None
    return f"no fused kernel for {kind.__name__}"


# -- elementwise step math (mirrors the cells' step methods) ------------------------------------


def _sigmoid(x: Array) -> Array:
    # sigma(x) = (1 + tanh(x / 2)) / 2: XLA:CPU's tanh is a vectorised rational approximation,
    # measurably faster inside the loop than the exp-and-divide expansion of lax.logistic.
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def _lstm_point(cell: LSTM, a: Array, c_prev: Array, peep: Array | None) -> tuple[Array, Array]:
    """LSTM gate math from pre-activations ``a [B, G*H]``: returns ``(c, h)`` before projection."""
    H = cell.hidden_size
    blocks = {name: a[..., k * H : (k + 1) * H] for k, name in enumerate(cell.gate_layout)}
    pw = {}
    if peep is not None:
        pw = {name: peep[k].astype(a.dtype) for k, name in enumerate(cell.sigmoid_gates)}

    def gate(name, c_seen):
        pre = blocks[name]
        if name in pw:
            pre = pre + pw[name] * c_seen
        return _sigmoid(pre)

    f = gate("f", c_prev) if cell.forget_gate else None
    if cell.coupled:
        i = 1.0 - f
    elif cell.input_gate:
        i = gate("i", c_prev)
    else:
        i = None
    g = jnp.tanh(blocks["g"]) if cell.input_activation else blocks["g"]
    c = (c_prev if f is None else f * c_prev) + (g if i is None else i * g)
    if cell.cell_clip is not None:
        c = jnp.clip(c, -cell.cell_clip, cell.cell_clip)
    o = gate("o", c) if cell.output_gate else None
    h = jnp.tanh(c) if cell.output_activation else c
    if o is not None:
        h = o * h
    return c, h


def _lstm_consts(cell: LSTM, dtype) -> tuple[Array, Array]:
    """Per-column ``alpha, gamma`` with ``act = alpha * tanh(alpha * a) + gamma`` (see below)."""
    H, layout = cell.hidden_size, cell.gate_layout
    alpha = jnp.repeat(jnp.asarray([0.5 if n != "g" else 1.0 for n in layout], dtype), H)
    gamma = jnp.repeat(jnp.asarray([0.5 if n != "g" else 0.0 for n in layout], dtype), H)
    return alpha, gamma


def _lstm_act_all(cell: LSTM, a: Array) -> Array:
    """Gate activations of ``a [B, G*H]`` with one tanh over the contiguous array."""
    alpha, gamma = _lstm_consts(cell, a.dtype)
    return alpha * jnp.tanh(alpha * a) + gamma


def _lstm_fast_point(cell: LSTM, act_all: Array, c_prev: Array) -> tuple[Array, Array]:
    """``(c, h)`` from saved activations (no peephole, no clip, tanh candidate)."""
    H = cell.hidden_size
    act = {n: act_all[..., k * H : (k + 1) * H] for k, n in enumerate(cell.gate_layout)}
    f = act.get("f")
    i = (1.0 - f) if cell.coupled else act.get("i")
    g = act["g"]
    c = (c_prev if f is None else f * c_prev) + (g if i is None else i * g)
    h = jnp.tanh(c) if cell.output_activation else c
    o = act.get("o")
    return c, (h if o is None else o * h)


def _lstm_fast_bwd(
    cell: LSTM, act_all: Array, c_prev: Array, c: Array, dh: Array, dc: Array
) -> tuple[Array, Array]:
    """Hand-written VJP of :func:`_lstm_fast_point` o :func:`_lstm_act_all`.

    Returns ``(da [B, G*H], dc_prev [B, H])`` given the gradients of ``h`` and ``c``; works on
    contiguous ``[B, G*H]`` arrays so XLA emits few, vectorised loops per step.
    """
    H, layout = cell.hidden_size, cell.gate_layout
    act = {n: act_all[..., k * H : (k + 1) * H] for k, n in enumerate(layout)}
    f, o, g = act.get("f"), act.get("o"), act["g"]
    i = (1.0 - f) if cell.coupled else act.get("i")
    tc = jnp.tanh(c) if cell.output_activation else c
    d = {}
    if o is not None:
        d["o"] = dh * tc
        dtc = dh * o
    else:
        dtc = dh
    dc_tot = dc + (dtc * (1.0 - tc * tc) if cell.output_activation else dtc)
    d["g"] = dc_tot if i is None else dc_tot * i
    if "i" in layout:
        d["i"] = dc_tot * g
    if f is not None:
        d["f"] = dc_tot * (c_prev - g) if cell.coupled else dc_tot * c_prev
    dc_prev = dc_tot if f is None else dc_tot * f
    dact = jnp.concatenate([d[n] for n in layout], axis=-1)
    alpha, gamma = _lstm_consts(cell, act_all.dtype)
    t = (act_all - gamma) / alpha  # tanh(alpha * a)
    return dact * (alpha * alpha) * (1.0 - t * t), dc_prev


def _t(w: Array) -> Array:
    return jnp.swapaxes(w, -1, -2)


def _with_transposes(P: dict) -> dict:
    """Adds ``P["T:" + name] = P[name].T`` for the matrices, computed once before the loop."""
    out = dict(P)
    for name, w in P.items():
        if w is not None and w.ndim == 2:
            out["T:" + name] = _t(w)
    return out


def _wt(P: dict, name: str) -> Array:
    return P["T:" + name] if "T:" + name in P else _t(P[name])


def _outer_sum(x_TBm: Array, d_TBn: Array, cdt, out_dtype) -> Array:
    """``sum_{t,b} x[t,b]^T d[t,b]``: one ``[m, T*B] x [T*B, n]`` matmul -> ``[m, n]``."""
    if cdt is not None:
        x_TBm, d_TBn = x_TBm.astype(cdt), d_TBn.astype(cdt)
    else:
        d_TBn = d_TBn.astype(x_TBm.dtype)
    nb = x_TBm.ndim - 1
    dims = (tuple(range(nb)), tuple(range(nb)))
    out = lax.dot_general(
        x_TBm, d_TBn, (dims, ((), ())), preferred_element_type=accum_dtype(out_dtype)
    )
    return out.astype(out_dtype)


# -- per-family kernels -------------------------------------------------------------------------
#
# A kernel spec gives, for one cell definition:
#   prepare(params) -> P            arrays the recurrence uses (pytree; its VJP maps dP back)
#   state(carry) -> tuple           carry leaves, h first; carry(state, like) -> carry
#   fwd_step(P, state, xp) -> (state, res)
#   bwd_step(P, res, state_prev, state, xp, dstate) -> (dstate_prev, factors, dsmall)
#   wgrad(P, states_prev, res, factors, dsmall, xps) -> (dP, dxps)
# with ``needs_xp`` telling whether bwd_step/wgrad read the projected inputs (kept as residual).


@dataclasses.dataclass(frozen=True)
class _LSTMSpec:
    cell: LSTM
    needs_xp = False

    def prepare(self, params):
        return dict(w_hh=params.w_hh, w_proj=params.w_proj, peep=params.w_peephole)

    def state(self, carry):
        return (carry.h, carry.c)

    def carry(self, state, like):
        return like._replace(h=state[0], c=state[1])

    @property
    def fast(self) -> bool:
        """Hand-written gate backward from saved activations (no peephole, clip or NIAF)."""
        c = self.cell
        return not c.peephole and c.input_activation and c.cell_clip is None

    def fwd_step(self, P, state, xp):
        cell, (h, c) = self.cell, state
        acc = xp.dtype
        a = xp + matmul(h, P["w_hh"], cell.dtype, acc)
        if self.fast:
            act_all = _lstm_act_all(cell, a)
            c_new, hh = _lstm_fast_point(cell, act_all, c.astype(acc))
            saved = act_all
        else:
            c_new, hh = _lstm_point(cell, a, c.astype(acc), P["peep"])
            saved = a
        if P["w_proj"] is not None:
            h_new = matmul(hh, P["w_proj"], cell.dtype, acc)
            res = (saved, hh)
        else:
            h_new, res = hh, (saved,)
        return (h_new.astype(h.dtype), c_new.astype(c.dtype)), res

    def bwd_step(self, P, res, state_prev, state, xp, dstate):
        cell = self.cell
        acc = res[0].dtype
        h_prev, c_prev = state_prev
        dh, dc = dstate
        if P["w_proj"] is not None:
            dhh = matmul(dh.astype(acc), _wt(P, "w_proj"), cell.dtype, acc)
        else:
            dhh = dh.astype(acc)
        if self.fast:
            da, dc_prev = _lstm_fast_bwd(
                cell, res[0], c_prev.astype(acc), state[1].astype(acc), dhh, dc.astype(acc)
            )
            dpeep = None
        else:
            _, pull = jax.vjp(
                lambda a_, c_, p_: _lstm_point(cell, a_, c_, p_),
                res[0],
                c_prev.astype(acc),
                P["peep"],
            )
            da, dc_prev, dpeep = pull((dc.astype(acc), dhh))
        dh_prev = matmul(da, _wt(P, "w_hh"), cell.dtype, acc)
        factors = (da, dh) if P["w_proj"] is not None else (da,)
        return (dh_prev.astype(h_prev.dtype), dc_prev.astype(c_prev.dtype)), factors, dpeep

    def wgrad(self, P, states_prev, res, factors, dsmall, xps):
        cdt, da = self.cell.dtype, factors[0]
        dP = dict(
            w_hh=_outer_sum(states_prev[0], da, cdt, P["w_hh"].dtype),
            w_proj=None,
            peep=None if P["peep"] is None else dsmall.astype(P["peep"].dtype),
        )
        if P["w_proj"] is not None:
            dP["w_proj"] = _outer_sum(res[1], factors[1], cdt, P["w_proj"].dtype)
        return dP, da


@dataclasses.dataclass(frozen=True)
class _GRUAfterSpec:
    """GRU, reset after (cuDNN form). Saves ``r, z`` ``[B, 2H]``, ``n`` and ``U_n h + b_hn``."""

    cell: GRU
    needs_xp = False

    def prepare(self, params):
        return dict(w_hh=params.w_hh, b_hn=params.b_hn)

    def state(self, carry):
        return (carry.h,)

    def carry(self, state, like):
        return like._replace(h=state[0])

    def fwd_step(self, P, state, xp):
        H, h = self.cell.hidden_size, state[0]
        acc = xp.dtype
        h_prev = h.astype(acc)
        rec = matmul(h, P["w_hh"], self.cell.dtype, acc)
        rz = _sigmoid(xp[..., : 2 * H] + rec[..., : 2 * H])
        q = rec[..., 2 * H :]
        if P["b_hn"] is not None:
            q = q + P["b_hn"].astype(acc)
        r, z = rz[..., :H], rz[..., H:]
        n = jnp.tanh(xp[..., 2 * H :] + r * q)
        h_new = (1.0 - z) * h_prev + z * n
        return (h_new.astype(h.dtype),), (rz, n, q)

    def bwd_step(self, P, res, state_prev, state, xp, dstate):
        H = self.cell.hidden_size
        rz, n, q = res
        acc = rz.dtype
        h_prev, dh = state_prev[0].astype(acc), dstate[0].astype(acc)
        r, z = rz[..., :H], rz[..., H:]
        dpre_n = dh * z * (1.0 - n * n)
        dz = dh * (n - h_prev)
        dr = dpre_n * q
        da_rz = jnp.concatenate([dr, dz], axis=-1) * rz * (1.0 - rz)
        drec = jnp.concatenate([da_rz, dpre_n * r], axis=-1)
        dh_prev = dh * (1.0 - z) + matmul(drec, _wt(P, "w_hh"), self.cell.dtype, acc)
        dxp = jnp.concatenate([da_rz, dpre_n], axis=-1)
        db_hn = None if P["b_hn"] is None else jnp.sum(dpre_n * r, axis=0)
        return (dh_prev.astype(state_prev[0].dtype),), (dxp, drec), db_hn

    def wgrad(self, P, states_prev, res, factors, dsmall, xps):
        dxp, drec = factors
        dP = dict(
            w_hh=_outer_sum(states_prev[0], drec, self.cell.dtype, P["w_hh"].dtype),
            b_hn=None if P["b_hn"] is None else dsmall.astype(P["b_hn"].dtype),
        )
        return dP, dxp


@dataclasses.dataclass(frozen=True)
class _GRUClassicSpec:
    """GRU, reset before (two recurrent matmuls per step). Saves ``r, z`` and ``n``."""

    cell: GRU
    needs_xp = False

    def prepare(self, params):
        H = self.cell.hidden_size
        return dict(w_rz=params.w_hh[:, : 2 * H], w_n=params.w_hh[:, 2 * H :])

    state = _GRUAfterSpec.state
    carry = _GRUAfterSpec.carry

    def fwd_step(self, P, state, xp):
        cdt, H, h = self.cell.dtype, self.cell.hidden_size, state[0]
        acc = xp.dtype
        h_prev = h.astype(acc)
        rz = _sigmoid(xp[..., : 2 * H] + matmul(h, P["w_rz"], cdt, acc))
        r, z = rz[..., :H], rz[..., H:]
        n = jnp.tanh(xp[..., 2 * H :] + matmul(r * h_prev, P["w_n"], cdt, acc))
        h_new = (1.0 - z) * h_prev + z * n
        return (h_new.astype(h.dtype),), (rz, n)

    def bwd_step(self, P, res, state_prev, state, xp, dstate):
        cdt, H = self.cell.dtype, self.cell.hidden_size
        rz, n = res
        acc = rz.dtype
        h_prev, dh = state_prev[0].astype(acc), dstate[0].astype(acc)
        r, z = rz[..., :H], rz[..., H:]
        dpre_n = dh * z * (1.0 - n * n)
        dz = dh * (n - h_prev)
        du = matmul(dpre_n, _wt(P, "w_n"), cdt, acc)
        da_rz = jnp.concatenate([du * h_prev, dz], axis=-1) * rz * (1.0 - rz)
        dh_prev = dh * (1.0 - z) + du * r + matmul(da_rz, _wt(P, "w_rz"), cdt, acc)
        return (dh_prev.astype(state_prev[0].dtype),), (da_rz, dpre_n), None

    def wgrad(self, P, states_prev, res, factors, dsmall, xps):
        cdt, H = self.cell.dtype, self.cell.hidden_size
        da_rz, dpre_n = factors
        u = res[0][..., :H] * states_prev[0].astype(da_rz.dtype)  # r * h_prev, all steps
        dP = dict(
            w_rz=_outer_sum(states_prev[0], da_rz, cdt, P["w_rz"].dtype),
            w_n=_outer_sum(u, dpre_n, cdt, P["w_n"].dtype),
        )
        return dP, jnp.concatenate([da_rz, dpre_n], axis=-1)


@dataclasses.dataclass(frozen=True)
class _RNNSpec:
    cell: SimpleRNN
    needs_xp = False

    def prepare(self, params):
        return dict(w_hh=params.w_hh)

    state = _GRUAfterSpec.state
    carry = _GRUAfterSpec.carry

    def fwd_step(self, P, state, xp):
        h = state[0]
        a = xp + matmul(h, P["w_hh"], self.cell.dtype, xp.dtype)
        return (_ACTIVATIONS[self.cell.activation](a).astype(h.dtype),), (a,)

    def bwd_step(self, P, res, state_prev, state, xp, dstate):
        a = res[0]
        _, pull = jax.vjp(_ACTIVATIONS[self.cell.activation], a)
        (da,) = pull(dstate[0].astype(a.dtype))
        dh_prev = matmul(da, _wt(P, "w_hh"), self.cell.dtype, a.dtype)
        return (dh_prev.astype(state_prev[0].dtype),), (da,), None

    def wgrad(self, P, states_prev, res, factors, dsmall, xps):
        da = factors[0]
        return dict(w_hh=_outer_sum(states_prev[0], da, self.cell.dtype, P["w_hh"].dtype)), da


def _spec_for(cell: Cell):
    reason = unsupported_reason(cell)
    if reason is not None:
        raise ValueError(f"fused kernel unavailable: {reason}")
    if isinstance(cell, LSTM):
        return _LSTMSpec(cell)
    if isinstance(cell, GRU):
        return _GRUAfterSpec(cell) if cell.reset_after else _GRUClassicSpec(cell)
    return _RNNSpec(cell)


# -- the engine ---------------------------------------------------------------------------------


def _bcast(m: Array, x: Array) -> Array:
    return jnp.reshape(m, m.shape + (1,) * (x.ndim - m.ndim))


# None: choose by weight size (_per_step_weights); True/False force a variant (tests).
_PROJECT_IN_LOOP: bool | None = None

# Crossover measured on the 2-core Xeon this was developed on (docs/performance.md): with
# 1.5 MB and 6.3 MB of weights (H=256, H=512) per-step work was 25-30 % cheaper; with 25 MB
# (H=1024, I=512) the weight-gradient accumulators stream through memory every step and the
# hoisted/after-the-loop matmuls were 25 % cheaper.
_PER_STEP_MAX_BYTES = 12 * 2**20


def _per_step_weights(params) -> bool:
    """Whether the input projection and weight gradients run per step (small weights)."""
    nbytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(params))
    return nbytes <= _PER_STEP_MAX_BYTES


def _project_in_loop(params) -> bool:
    return _per_step_weights(params) if _PROJECT_IN_LOOP is None else _PROJECT_IN_LOOP


def _wgrad_in_loop(params) -> bool:
    return _per_step_weights(params) if _WGRAD_IN_LOOP is None else _WGRAD_IN_LOOP


def _run_fwd(spec, P, state0, xps, mask, unroll, params=None):
    """Forward recurrence: ``(final_state, states_all, res_all)``, each ``[T, B, ...]``.

    With ``params`` given, ``xps`` are the raw inputs and each step projects its own input
    (``project_inputs`` on ``[B, I]``) right before the recurrent matmul.
    """

    def body(state, inp):
        xp, m = inp
        if params is not None:
            xp = spec.cell.project_inputs(params, xp)
        new, res = spec.fwd_step(P, state, xp)
        if m is not None:
            new = tuple(jnp.where(_bcast(m, n), n, s) for n, s in zip(new, state, strict=True))
        return new, (new, res)

    final, (states, res) = lax.scan(body, state0, (xps, mask), unroll=unroll)
    return final, states, res


def _shift(state0, states):
    """States before each step: ``[s0, s_0, ..., s_{T-2}]``."""
    return tuple(
        jnp.concatenate([s0[None], s[:-1]], axis=0) for s0, s in zip(state0, states, strict=True)
    )


def _run_bwd(spec, P, state0, states, res, xps, mask, dfinal, dhs, unroll):
    """Reverse recurrence and weight gradients: ``(dstate0, dP, dxps)``."""
    states_prev = _shift(state0, states)
    xp_in = xps if spec.needs_xp else None
    PT = _with_transposes(P)

    def body(dstate, inp):
        r, sp, st, xp, dy, m = inp
        dstate = (dstate[0] + dy.astype(dstate[0].dtype),) + tuple(dstate[1:])
        d_in = dstate
        if m is not None:
            d_in = tuple(jnp.where(_bcast(m, d), d, jnp.zeros((), d.dtype)) for d in dstate)
        dprev, factors, dsmall = spec.bwd_step(PT, r, sp, st, xp, d_in)
        if m is not None:
            # a skipped step passes its carry gradient through; its own grads are zero
            dprev = tuple(jnp.where(_bcast(m, p), p, d) for p, d in zip(dprev, dstate, strict=True))
        return dprev, (factors, dsmall)

    dstate0, (factors, dsmall) = lax.scan(
        body, dfinal, (res, states_prev, states, xp_in, dhs, mask), reverse=True, unroll=unroll
    )
    dsmall = jax.tree_util.tree_map(lambda d: jnp.sum(d, axis=0), dsmall)
    dP, dxps = spec.wgrad(P, states_prev, res, factors, dsmall, xps)
    return dstate0, dP, dxps


# Like _PROJECT_IN_LOOP, for accumulating the weight gradients inside the reverse loop.
_WGRAD_IN_LOOP: bool | None = None


_X_TRANSPOSED = True


def _run_bwd_in_loop(spec, P, params, state0, states, res, xs, mask, dfinal, dhs, unroll):
    """Like :func:`_run_bwd`, but accumulating the weight gradients inside the reverse loop.

    Returns ``(dstate0, dP, dparams_projection, dxs)``.
    """
    states_prev = _shift(state0, states)
    PT = _with_transposes(P)
    zero_dP = jax.tree_util.tree_map(jnp.zeros_like, P)
    zero_dparams = jax.tree_util.tree_map(jnp.zeros_like, params)

    def body(carry, inp):
        dstate, dP_acc, dpar_acc = carry
        r, sp, st, x, dy, m = inp
        dstate = (dstate[0] + dy.astype(dstate[0].dtype),) + tuple(dstate[1:])
        d_in = dstate
        if m is not None:
            d_in = tuple(jnp.where(_bcast(m, d), d, jnp.zeros((), d.dtype)) for d in dstate)
        dprev, factors, dsmall = spec.bwd_step(PT, r, sp, st, None, d_in)
        if m is not None:
            dprev = tuple(jnp.where(_bcast(m, p), p, d) for p, d in zip(dprev, dstate, strict=True))
        one = lambda a: a[None]  # noqa: E731
        dP, dxp = spec.wgrad(
            P,
            jax.tree_util.tree_map(one, sp),
            jax.tree_util.tree_map(one, r),
            jax.tree_util.tree_map(one, factors),
            dsmall,
            None,
        )
        if _X_TRANSPOSED:
            x = jnp.swapaxes(x, 0, 1)
        xp, pull = jax.vjp(spec.cell.project_inputs, params, x)
        dpar, dx = pull(dxp[0].astype(xp.dtype))
        return (dprev, _add(dP_acc, dP), _add(dpar_acc, dpar)), dx

    # Handing the loop x_t^T ([I, B], transposed once outside) lets XLA:CPU run the per-step
    # dW_ih += x_t^T @ da as a canonical matmul instead of a transposed-operand dot.
    xs_in = jnp.swapaxes(xs, 1, 2) if _X_TRANSPOSED else xs
    (dstate0, dP, dpar), dxs = lax.scan(
        body,
        (dfinal, zero_dP, zero_dparams),
        (res, states_prev, states, xs_in, dhs, mask),
        reverse=True,
        unroll=unroll,
    )
    return dstate0, dP, dpar, dxs


def _add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: x + y.astype(x.dtype), a, b)


class _Static(NamedTuple):
    spec: Any
    unroll: int
    chunk: int  # 0: keep all activations; K: remat in chunks of K steps


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(static, params, state0, xs, mask):
    return _core_fwd(static, params, state0, xs, mask)[0]


def _core_fwd(static, params, state0, xs, mask):
    spec = static.spec
    P = spec.prepare(params)
    if static.chunk:
        T, K = xs.shape[0], static.chunk
        xs_c = xs.reshape((T // K, K) + xs.shape[1:])
        mask_c = None if mask is None else mask.reshape((T // K, K) + mask.shape[1:])

        def chunk_body(state, inp):
            x, m = inp
            if _project_in_loop(params):
                final, states, _ = _run_fwd(spec, P, state, x, m, static.unroll, params)
            else:
                final, states, _ = _run_fwd(
                    spec, P, state, spec.cell.project_inputs(params, x), m, static.unroll
                )
            return final, (state, states[0])

        final, (starts, hs) = lax.scan(chunk_body, state0, (xs_c, mask_c))
        hs = hs.reshape((T,) + hs.shape[2:])
        return (final, hs), (params, starts, xs, mask)
    if _project_in_loop(params):
        xps = None
        final, states, res = _run_fwd(spec, P, state0, xs, mask, static.unroll, params)
    else:
        xps = spec.cell.project_inputs(params, xs)
        final, states, res = _run_fwd(spec, P, state0, xps, mask, static.unroll)
    kept_xps = xps if spec.needs_xp else None
    return (final, states[0]), (params, state0, states, res, kept_xps, xs, mask)


def _core_bwd(static, residuals, cts):
    spec = static.spec
    dfinal, dhs = cts
    if static.chunk:
        params, starts, xs, mask = residuals
        P, pull_prep = jax.vjp(spec.prepare, params)
        T, K = xs.shape[0], static.chunk
        xs_c = xs.reshape((T // K, K) + xs.shape[1:])
        dhs_c = dhs.reshape((T // K, K) + dhs.shape[1:])
        mask_c = None if mask is None else mask.reshape((T // K, K) + mask.shape[1:])
        zero_dP = jax.tree_util.tree_map(jnp.zeros_like, P)
        zero_dparams = jax.tree_util.tree_map(jnp.zeros_like, params)

        def chunk_body(carry, inp):
            dstate, dP_acc, dparams_acc = carry
            start, x, m, dy = inp
            xps, pull_proj = jax.vjp(spec.cell.project_inputs, params, x)
            if _project_in_loop(params):
                _, states, res = _run_fwd(spec, P, start, x, m, static.unroll, params)
            else:
                _, states, res = _run_fwd(spec, P, start, xps, m, static.unroll)
            dstart, dP, dxps = _run_bwd(
                spec, P, start, states, res, xps, m, dstate, dy, static.unroll
            )
            dparams_proj, dx = pull_proj(dxps.astype(xps.dtype))
            return (dstart, _add(dP_acc, dP), _add(dparams_acc, dparams_proj)), dx

        (dstate0, dP, dparams), dxs = lax.scan(
            chunk_body, (dfinal, zero_dP, zero_dparams), (starts, xs_c, mask_c, dhs_c), reverse=True
        )
        dxs = dxs.reshape(xs.shape)
        dparams = _add(dparams, pull_prep(dP)[0])
        return dparams, dstate0, dxs, None
    params, state0, states, res, xps, xs, mask = residuals
    P, pull_prep = jax.vjp(spec.prepare, params)
    if _wgrad_in_loop(params):
        dstate0, dP, dparams_proj, dxs = _run_bwd_in_loop(
            spec, P, params, state0, states, res, xs, mask, dfinal, dhs, static.unroll
        )
        return _add(dparams_proj, pull_prep(dP)[0]), dstate0, dxs, None
    dstate0, dP, dxps = _run_bwd(
        spec, P, state0, states, res, xps, mask, dfinal, dhs, static.unroll
    )
    # The projection's VJP: dW_ih = xs^T @ dxps and dxs = dxps @ W_ih^T, two large matmuls
    # (its primal output is unused here, so XLA drops the recomputation).
    xps_like, pull_proj = jax.vjp(spec.cell.project_inputs, params, xs)
    dparams_proj, dxs = pull_proj(dxps.astype(xps_like.dtype))
    dparams = _add(dparams_proj, pull_prep(dP)[0])
    return dparams, dstate0, dxs, None


_core.defvjp(_core_fwd, _core_bwd)


def chunk_length(T: int, remat: bool | int) -> int:
    """Chunk length ``K`` for ``remat`` over ``T`` steps (0: no remat).

    Args:
      T: sequence length.
      remat: False, True (``K = ceil(sqrt(T))``) or an explicit positive chunk length.

    Returns:
      ``K`` clipped to ``[1, T]``, or 0 when ``remat`` is False.
    """
    if remat is False or T == 0:
        return 0
    K = math.isqrt(T - 1) + 1 if remat is True else int(remat)
    return max(1, min(K, T))


def fused_scan(
    cell: Cell,
    params: PyTree,
    carry: PyTree,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool | int = False,
) -> tuple[PyTree, Array]:
    """Runs one LSTM, GRU or SimpleRNN layer over ``xs`` with the fused kernel.

    Same contract and results (values and gradients) as ``Cell.scan_time_major`` on the
    reference path; :func:`seqjax.scan` calls it automatically.

    Args:
      cell: an :class:`~seqjax.LSTM` (not ``layer_norm`` / ``full_gate_recurrence``),
        :class:`~seqjax.GRU` or :class:`~seqjax.SimpleRNN` definition.
      params: its parameters.
      carry: initial carry, leaves ``[*B, n]``.
      xs: inputs ``[T, *B, I]``.
      mask: ``[T, *B]`` booleans or None.
      reverse: process time backwards (outputs stay in input order).
      unroll: steps per loop iteration of the inner scans.
      remat: recompute activations in the backward pass in chunks (see :func:`chunk_length`).

    Returns:
      ``(final_carry, ys)`` with ``ys [T, *B, output_size]``, zero at masked steps.

    Raises:
      ValueError: the cell has no fused kernel.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.kernels import fused_scan
      >>> cell = seqjax.LSTM(4)
      >>> p = cell.init(jax.random.key(0), 3)
      >>> final, ys = fused_scan(cell, p, cell.initial_carry((2,)), jnp.ones((5, 2, 3)), None)
      >>> ys.shape
      (5, 2, 4)
    """
    spec = _spec_for(cell)
    T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    Bf = math.prod(batch_shape)
    state0 = tuple(leaf.reshape((Bf, leaf.shape[-1])) for leaf in spec.state(carry))
    xs_f = xs.reshape((T, Bf, xs.shape[-1]))
    mask_f = None if mask is None else mask.reshape((T, Bf))
    if reverse:
        xs_f = jnp.flip(xs_f, axis=0)
        mask_f = None if mask_f is None else jnp.flip(mask_f, axis=0)
    K = chunk_length(T, remat)
    T_run = T
    if K and T % K:
        # pad to whole chunks with skipped steps (they keep the carry and output zeros)
        T_run = -(-T // K) * K
        pad = T_run - T
        xs_f = jnp.concatenate([xs_f, jnp.zeros((pad,) + xs_f.shape[1:], xs_f.dtype)])
        valid = jnp.ones((T, Bf), bool) if mask_f is None else mask_f
        mask_f = jnp.concatenate([valid, jnp.zeros((pad, Bf), bool)])
    if T == 0:
        final_state, hs = state0, jnp.zeros((0, Bf, cell.output_size), state0[0].dtype)
    else:
        final_state, hs = _core(_Static(spec, int(unroll), K), params, state0, xs_f, mask_f)
    if mask_f is not None:
        hs = jnp.where(mask_f[..., None], hs, jnp.zeros((), hs.dtype))
    hs = hs[:T]
    if reverse:
        hs = jnp.flip(hs, axis=0)
    ys = hs.reshape((T,) + batch_shape + (hs.shape[-1],))
    final_state = tuple(s.reshape(batch_shape + (s.shape[-1],)) for s in final_state)
    return spec.carry(final_state, carry), ys
