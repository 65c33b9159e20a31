"""Per-cell specifications for the fused kernel engine (``fused_engine.py``).

A spec tells the generic engine, for one cell definition, what the recurrence reads and saves and
how its step is differentiated by hand. The gate equations themselves are the cells' own
(``seqjax.cells.lstm.lstm_pointwise``, ``seqjax.cells.gru.gru_update``, the SimpleRNN
activation): a spec only arranges the matmuls around them and writes their derivatives.

The interface (:class:`KernelSpec`), with ``weights`` the dict of arrays the recurrence uses and
``weights_t`` their transposes, computed once before the reverse loop:

- ``prepare(params) -> weights``: the arrays read inside the loop (a pytree whose VJP maps the
  weight gradients back onto ``params``);
- ``state(carry) -> tuple`` and ``carry(state, like) -> carry``: the carry's leaves, ``h`` first;
- ``forward_step(weights, state, xp) -> (state, saved)``: one step from the projected input,
  returning what the backward step needs;
- ``backward_step(weights, weights_t, saved, state_prev, state, dstate)
  -> (dstate_prev, step_grads, summed_grads)``: the carry gradient before the step, the per-step
  gradients the weight gradients are built from, and gradients of small parameters (peepholes,
  ``b_hn``) that are summed over time by the engine;
- ``weight_grads(weights, states_prev, saved, step_grads, summed_grads) -> (dweights, dxps)``:
  the weight gradients of all steps at once (one ``[m, T*B] x [T*B, n]`` matmul per matrix) and
  the gradient of the projected inputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.cells.base import Cell, accum_dtype, matmul
from seqjax.cells.gru import GRU, gru_update
from seqjax.cells.lstm import LSTM, lstm_pointwise
from seqjax.cells.rnn import ACTIVATIONS, SimpleRNN
from seqjax.typing import Array, DType

Weights = dict[str, Any]


class KernelSpec(Protocol):
    """What the fused engine needs from one cell type (see the module docstring)."""

    @property
    def cell(self) -> Any:
        """The cell definition, read-only (specs are frozen dataclasses)."""
        ...

    def prepare(self, params: Any) -> Weights: ...

    def state(self, carry: Any) -> tuple[Array, ...]: ...

    def carry(self, state: tuple[Array, ...], like: Any) -> Any: ...

    def forward_step(
        self, weights: Weights, state: tuple[Array, ...], xp: Array
    ) -> tuple[tuple[Array, ...], tuple[Array, ...]]: ...

    def backward_step(
        self,
        weights: Weights,
        weights_t: Weights,
        saved: tuple[Array, ...],
        state_prev: tuple[Array, ...],
        state: tuple[Array, ...],
        dstate: tuple[Array, ...],
    ) -> tuple[tuple[Array, ...], tuple[Array, ...], Any]: ...

    def weight_grads(
        self,
        weights: Weights,
        states_prev: tuple[Array, ...],
        saved: tuple[Array, ...],
        step_grads: tuple[Array, ...],
        summed_grads: Any,
    ) -> tuple[Weights, Array]: ...


def unsupported_reason(cell: Cell) -> str | None:
    """Why ``cell`` has no fused kernel, or None when it has one.

    Args:
      cell: any seqjax cell definition.

    Returns:
      None for LSTM (every option except ``layer_norm`` and ``full_gate_recurrence``), GRU (both
      forms) and SimpleRNN; otherwise a short reason.
    """
    if type(cell) is LSTM:
        if cell.layer_norm:
            return "LSTM(layer_norm=True) normalises inside the step"
        if cell.full_gate_recurrence:
            return "LSTM(full_gate_recurrence=True) carries gate activations"
        return None
    if type(cell) in (GRU, SimpleRNN):
        return None
    return f"no fused kernel for {type(cell).__name__}"


def spec_for(cell: Cell) -> KernelSpec:
    """The spec of ``cell``; raises ValueError when it has no fused kernel."""
    reason = unsupported_reason(cell)
    if reason is not None:
        raise ValueError(f"fused kernel unavailable: {reason}")
    if isinstance(cell, LSTM):
        return LSTMSpec(cell)
    if isinstance(cell, GRU):
        return GRUResetAfterSpec(cell) if cell.reset_after else GRUClassicSpec(cell)
    assert isinstance(cell, SimpleRNN)  # unsupported_reason accepts LSTM, GRU and SimpleRNN only
    return SimpleRNNSpec(cell)


def outer_sum(x_TBm: Array, d_TBn: Array, compute_dtype: DType | None, out_dtype: DType) -> Array:
    """``sum_{t,b} x[t,b]^T d[t,b]``: one ``[m, T*B] x [T*B, n]`` matmul -> ``[m, n]``."""
    if compute_dtype is not None:
        x_TBm, d_TBn = x_TBm.astype(compute_dtype), d_TBn.astype(compute_dtype)
    else:
        d_TBn = d_TBn.astype(x_TBm.dtype)
    batch_axes = tuple(range(x_TBm.ndim - 1))
    out = lax.dot_general(
        x_TBm,
        d_TBn,
        ((batch_axes, batch_axes), ((), ())),
        preferred_element_type=accum_dtype(out_dtype),
    )
    return out.astype(out_dtype)


# -- LSTM ---------------------------------------------------------------------------------------


def _gate_scales(cell: LSTM, dtype) -> tuple[Array, Array]:
    """Per-column ``alpha, gamma`` with ``activation = alpha * tanh(alpha * a) + gamma``.

    ``sigmoid(a) = 0.5 tanh(0.5 a) + 0.5`` (``seqjax.cells.base.sigmoid``) and
    ``tanh(a) = 1 tanh(1 a) + 0``: every gate of the contiguous ``[B, G*H]`` pre-activations is
    activated by one ``tanh``.
    """
    H, layout = cell.hidden_size, cell.gate_layout
    alpha = jnp.repeat(jnp.asarray([0.5 if n != "g" else 1.0 for n in layout], dtype), H)
    gamma = jnp.repeat(jnp.asarray([0.5 if n != "g" else 0.0 for n in layout], dtype), H)
    return alpha, gamma


def _activate_all(cell: LSTM, a: Array) -> Array:
    """Gate activations of ``a [B, G*H]`` (no peepholes, tanh candidate) with one tanh."""
    alpha, gamma = _gate_scales(cell, a.dtype)
    return alpha * jnp.tanh(alpha * a) + gamma


def _lstm_fast_backward(
    cell: LSTM, acts: Array, c_prev: Array, c: Array, dh: Array, dc: Array
) -> tuple[Array, Array]:
    """Hand-written VJP of ``lstm_pointwise(activated=True)`` after ``_activate_all``.

    Returns ``(da [B, G*H], dc_prev [B, H])`` given the gradients of ``h`` and ``c``; works on
    contiguous ``[B, G*H]`` arrays so XLA emits few, vectorised loops per step.
    """
    H, layout = cell.hidden_size, cell.gate_layout
    act = {n: acts[..., k * H : (k + 1) * H] for k, n in enumerate(layout)}
    f, o, g = act.get("f"), act.get("o"), act["g"]
    if cell.coupled:
        assert f is not None  # LSTM.__post_init__: coupled=True needs the forget gate
        i = 1.0 - f
    else:
        i = act.get("i")
    tc = jnp.tanh(c) if cell.output_activation else c
    dact = {}
    if o is not None:
        dact["o"] = dh * tc
        dtc = dh * o
    else:
        dtc = dh
    dc_total = dc + (dtc * (1.0 - tc * tc) if cell.output_activation else dtc)
    dact["g"] = dc_total if i is None else dc_total * i
    if "i" in layout:
        dact["i"] = dc_total * g
    if f is not None:
        dact["f"] = dc_total * (c_prev - g) if cell.coupled else dc_total * c_prev
    dc_prev = dc_total if f is None else dc_total * f
    dacts = jnp.concatenate([dact[n] for n in layout], axis=-1)
    alpha, gamma = _gate_scales(cell, acts.dtype)
    t = (acts - gamma) / alpha  # tanh(alpha * a)
    return dacts * (alpha * alpha) * (1.0 - t * t), dc_prev


@dataclasses.dataclass(frozen=True)
class LSTMSpec:
    """LSTM (optionally with peepholes, CIFG, projection, clip, Greff et al.'s variants).

    Saves the gate activations on the fast path (no peephole, clip or NIAF: hand-written gate
    backward), else the pre-activations (backward through ``jax.vjp`` of the shared gate
    function); plus the unprojected output with a projection.
    """

    cell: LSTM

    def prepare(self, params):
        return dict(w_hh=params.w_hh, w_proj=params.w_proj, w_peephole=params.w_peephole)

    def state(self, carry):
        return (carry.h, carry.c)

    def carry(self, state, like):
        return like._replace(h=state[0], c=state[1])

    @property
    def fast(self) -> bool:
        """Hand-written gate backward from saved activations (no peephole, clip or NIAF)."""
        c = self.cell
        return not c.peephole and c.input_activation and c.cell_clip is None

    def forward_step(self, weights, state, xp):
        cell, (h, c) = self.cell, state
        acc = xp.dtype
        a = xp + matmul(h, weights["w_hh"], cell.dtype, acc)
        if self.fast:
            kept = _activate_all(cell, a)
            out = lstm_pointwise(cell, kept, c.astype(acc), activated=True)
        else:
            kept = a
            out = lstm_pointwise(cell, a, c.astype(acc), weights["w_peephole"])
        if weights["w_proj"] is not None:
            h_new = matmul(out.h, weights["w_proj"], cell.dtype, acc)
            saved = (kept, out.h)
        else:
            h_new, saved = out.h, (kept,)
        return (h_new.astype(h.dtype), out.c.astype(c.dtype)), saved

    def backward_step(self, weights, weights_t, saved, state_prev, state, dstate):
        cell = self.cell
        acc = saved[0].dtype
        h_prev, c_prev = state_prev
        dh, dc = dstate
        if weights["w_proj"] is not None:
            dh_unprojected = matmul(dh.astype(acc), weights_t["w_proj"], cell.dtype, acc)
        else:
            dh_unprojected = dh.astype(acc)
        if self.fast:
            da, dc_prev = _lstm_fast_backward(
                cell,
                saved[0],
                c_prev.astype(acc),
                state[1].astype(acc),
                dh_unprojected,
                dc.astype(acc),
            )
            dpeephole = None
        else:

            def pointwise(a, c, w_peephole):
                out = lstm_pointwise(cell, a, c, w_peephole)
                return out.c, out.h

            _, pull = jax.vjp(pointwise, saved[0], c_prev.astype(acc), weights["w_peephole"])
            da, dc_prev, dpeephole = pull((dc.astype(acc), dh_unprojected))
        dh_prev = matmul(da, weights_t["w_hh"], cell.dtype, acc)
        step_grads = (da, dh) if weights["w_proj"] is not None else (da,)
        dstate_prev = (dh_prev.astype(h_prev.dtype), dc_prev.astype(c_prev.dtype))
        return dstate_prev, step_grads, dpeephole

    def weight_grads(self, weights, states_prev, saved, step_grads, summed_grads):
        compute_dtype, da = self.cell.dtype, step_grads[0]
        w_peephole = weights["w_peephole"]
        dweights = dict(
            w_hh=outer_sum(states_prev[0], da, compute_dtype, weights["w_hh"].dtype),
            w_proj=None,
            w_peephole=None if w_peephole is None else summed_grads.astype(w_peephole.dtype),
        )
        if weights["w_proj"] is not None:
            dweights["w_proj"] = outer_sum(
                saved[1], step_grads[1], compute_dtype, weights["w_proj"].dtype
            )
        return dweights, da


# -- GRU ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GRUResetAfterSpec:
    """GRU, reset after (cuDNN form). Saves ``r, z`` ``[B, 2H]``, ``n`` and ``U_n h + b_hn``."""

    cell: GRU

    def prepare(self, params):
        return dict(w_hh=params.w_hh, b_hn=params.b_hn)

    def state(self, carry):
        return (carry.h,)

    def carry(self, state, like):
        return like._replace(h=state[0])

    def forward_step(self, weights, state, xp):
        H, h = self.cell.hidden_size, state[0]
        acc = xp.dtype
        rec = matmul(h, weights["w_hh"], self.cell.dtype, acc)
        rec_n = rec[..., 2 * H :]
        if weights["b_hn"] is not None:
            rec_n = rec_n + weights["b_hn"].astype(acc)
        h_new, rz, n = gru_update(xp, rec[..., : 2 * H], h.astype(acc), lambda r: r * rec_n)
        return (h_new.astype(h.dtype),), (rz, n, rec_n)

    def backward_step(self, weights, weights_t, saved, state_prev, state, dstate):
        H = self.cell.hidden_size
        rz, n, rec_n = saved
        acc = rz.dtype
        h_prev, dh = state_prev[0].astype(acc), dstate[0].astype(acc)
        r, z = rz[..., :H], rz[..., H:]
        dpre_n = dh * z * (1.0 - n * n)
        dz = dh * (n - h_prev)
        dr = dpre_n * rec_n
        da_rz = jnp.concatenate([dr, dz], axis=-1) * rz * (1.0 - rz)
        drec = jnp.concatenate([da_rz, dpre_n * r], axis=-1)
        dh_prev = dh * (1.0 - z) + matmul(drec, weights_t["w_hh"], self.cell.dtype, acc)
        dxp = jnp.concatenate([da_rz, dpre_n], axis=-1)
        db_hn = None if weights["b_hn"] is None else jnp.sum(dpre_n * r, axis=0)
        return (dh_prev.astype(state_prev[0].dtype),), (dxp, drec), db_hn

    def weight_grads(self, weights, states_prev, saved, step_grads, summed_grads):
        dxp, drec = step_grads
        b_hn = weights["b_hn"]
        dweights = dict(
            w_hh=outer_sum(states_prev[0], drec, self.cell.dtype, weights["w_hh"].dtype),
            b_hn=None if b_hn is None else summed_grads.astype(b_hn.dtype),
        )
        return dweights, dxp


@dataclasses.dataclass(frozen=True)
class GRUClassicSpec:
    """GRU, reset before (two recurrent matmuls per step). Saves ``r, z`` and ``n``."""

    cell: GRU

    def prepare(self, params):
        H = self.cell.hidden_size
        return dict(w_rz=params.w_hh[:, : 2 * H], w_n=params.w_hh[:, 2 * H :])

    state = GRUResetAfterSpec.state
    carry = GRUResetAfterSpec.carry

    def forward_step(self, weights, state, xp):
        compute_dtype, h = self.cell.dtype, state[0]
        acc = xp.dtype
        h_prev = h.astype(acc)
        h_new, rz, n = gru_update(
            xp,
            matmul(h, weights["w_rz"], compute_dtype, acc),
            h_prev,
            lambda r: matmul(r * h_prev, weights["w_n"], compute_dtype, acc),
        )
        return (h_new.astype(h.dtype),), (rz, n)

    def backward_step(self, weights, weights_t, saved, state_prev, state, dstate):
        compute_dtype, H = self.cell.dtype, self.cell.hidden_size
        rz, n = saved
        acc = rz.dtype
        h_prev, dh = state_prev[0].astype(acc), dstate[0].astype(acc)
        r, z = rz[..., :H], rz[..., H:]
        dpre_n = dh * z * (1.0 - n * n)
        dz = dh * (n - h_prev)
        du = matmul(dpre_n, weights_t["w_n"], compute_dtype, acc)
        da_rz = jnp.concatenate([du * h_prev, dz], axis=-1) * rz * (1.0 - rz)
        dh_prev = dh * (1.0 - z) + du * r + matmul(da_rz, weights_t["w_rz"], compute_dtype, acc)
        return (dh_prev.astype(state_prev[0].dtype),), (da_rz, dpre_n), None

    def weight_grads(self, weights, states_prev, saved, step_grads, summed_grads):
        compute_dtype, H = self.cell.dtype, self.cell.hidden_size
        da_rz, dpre_n = step_grads
        reset_h = saved[0][..., :H] * states_prev[0].astype(da_rz.dtype)  # r * h_prev, all steps
        dweights = dict(
            w_rz=outer_sum(states_prev[0], da_rz, compute_dtype, weights["w_rz"].dtype),
            w_n=outer_sum(reset_h, dpre_n, compute_dtype, weights["w_n"].dtype),
        )
        return dweights, jnp.concatenate([da_rz, dpre_n], axis=-1)


# -- SimpleRNN ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SimpleRNNSpec:
    """Elman RNN. Saves the pre-activation."""

    cell: SimpleRNN

    def prepare(self, params):
        return dict(w_hh=params.w_hh)

    state = GRUResetAfterSpec.state
    carry = GRUResetAfterSpec.carry

    def forward_step(self, weights, state, xp):
        h = state[0]
        a = xp + matmul(h, weights["w_hh"], self.cell.dtype, xp.dtype)
        return (ACTIVATIONS[self.cell.activation](a).astype(h.dtype),), (a,)

    def backward_step(self, weights, weights_t, saved, state_prev, state, dstate):
        a = saved[0]
        _, pull = jax.vjp(ACTIVATIONS[self.cell.activation], a)
        (da,) = pull(dstate[0].astype(a.dtype))
        dh_prev = matmul(da, weights_t["w_hh"], self.cell.dtype, a.dtype)
        return (dh_prev.astype(state_prev[0].dtype),), (da,), None

    def weight_grads(self, weights, states_prev, saved, step_grads, summed_grads):
        da = step_grads[0]
        dw_hh = outer_sum(states_prev[0], da, self.cell.dtype, weights["w_hh"].dtype)
        return dict(w_hh=dw_hh), da


__all__ = [
    "GRUClassicSpec",
    "GRUResetAfterSpec",
    "KernelSpec",
    "LSTMSpec",
    "SimpleRNNSpec",
    "outer_sum",
    "spec_for",
    "unsupported_reason",
]
