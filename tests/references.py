"""NumPy re-implementations of the published cell equations, independent of seqjax's code.

Each reference works on one sequence or batch with per-gate named matrices, so it shares no
code path with the fused JAX implementation: the test splits seqjax's fused parameters into
named gate blocks using the documented layout and runs the equations below.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def split_blocks(w, names, H):
    """Fused ``[..., G*H]`` -> dict gate name -> ``[..., H]``."""
    return {n: w[..., k * H : (k + 1) * H] for k, n in enumerate(names)}


def layer_norm(x, scale, bias=None, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * scale
    return y if bias is None else y + bias


def lstm_step(cell, p, h, c, gates_prev, x):
    """One LSTM step from the equations in Gers et al. / Greff et al. / Sak et al. / Ba et al.

    Args:
      cell: the seqjax.LSTM definition (read for its flags only).
      p: dict of NumPy parameter arrays (LSTMParams._asdict()).
      h, c: previous state ``[B, R]``, ``[B, H]``; gates_prev ``[B, S*H]`` or None.
      x: input ``[B, I]``.
    Returns:
      (h, c, gates) after the step.
    """
    H = cell.hidden_size
    layout, sig = cell.gate_layout, cell.sigmoid_gates
    W = split_blocks(p["w_ih"], layout, H)
    U = split_blocks(p["w_hh"], layout, H)
    b = split_blocks(p["b"], layout, H) if p.get("b") is not None else {n: 0.0 for n in layout}
    pre = {}
    for k, n in enumerate(layout):
        xin, rec = x @ W[n], h @ U[n]
        if cell.layer_norm:
            xin = layer_norm(xin, p["ln_ih_scale"][k])
            rec = layer_norm(rec, p["ln_hh_scale"][k])
        pre[n] = xin + rec + b[n]
    if cell.full_gate_recurrence:
        R = split_blocks(p["w_gates"], sig, H)
        for n in sig:
            pre[n] = pre[n] + gates_prev @ R[n]
    peep = {}
    if p.get("w_peephole") is not None:
        peep = {n: p["w_peephole"][k] for k, n in enumerate(sig)}

    def gate(n, cs):
        return sigmoid(pre[n] + (peep[n] * cs if n in peep else 0.0))

    act = {}
    if "f" in sig:
        act["f"] = gate("f", c)
    if cell.coupled:
        act["i"] = 1.0 - act["f"]
    elif "i" in sig:
        act["i"] = gate("i", c)
    i = act.get("i", 1.0)
    f = act.get("f", 1.0)
    g = np.tanh(pre["g"]) if cell.input_activation else pre["g"]
    c_new = f * c + i * g
    if cell.cell_clip is not None:
        c_new = np.clip(c_new, -cell.cell_clip, cell.cell_clip)
    if "o" in sig:
        act["o"] = gate("o", c_new)
    o = act.get("o", 1.0)
    c_out = layer_norm(c_new, p["ln_c_scale"], p["ln_c_bias"]) if cell.layer_norm else c_new
    h_new = o * (np.tanh(c_out) if cell.output_activation else c_out)
    if p.get("w_proj") is not None:
        h_new = h_new @ p["w_proj"]
    gates = np.concatenate([act[n] for n in sig], -1) if cell.full_gate_recurrence else None
    return h_new, c_new, gates


def gru_step(cell, p, h, x):
    """One GRU step (Cho et al. 2014; reset-after form of cuDNN), z weighting the candidate."""
    H = cell.hidden_size
    W = split_blocks(p["w_ih"], "rzn", H)
    U = split_blocks(p["w_hh"], "rzn", H)
    b = split_blocks(p["b"], "rzn", H) if p.get("b") is not None else dict(r=0.0, z=0.0, n=0.0)
    r = sigmoid(x @ W["r"] + h @ U["r"] + b["r"])
    z = sigmoid(x @ W["z"] + h @ U["z"] + b["z"])
    if cell.reset_after:
        b_hn = p["b_hn"] if p.get("b_hn") is not None else 0.0
        n = np.tanh(x @ W["n"] + b["n"] + r * (h @ U["n"] + b_hn))
    else:
        n = np.tanh(x @ W["n"] + b["n"] + (r * h) @ U["n"])
    return (1.0 - z) * h + z * n


def rnn_step(cell, p, h, x):
    """Elman step."""
    a = x @ p["w_ih"] + h @ p["w_hh"] + (p["b"] if p.get("b") is not None else 0.0)
    return np.tanh(a) if cell.activation == "tanh" else np.maximum(a, 0.0)
