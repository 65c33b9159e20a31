"""Parallel-in-time against sequential forms of the newer cells, beside the fused LSTM and GRU.

For every sequence length ``T`` of the section, each cell of :data:`CELLS` runs in each of its
forms (``impl=`` of :func:`seqjax.scan`), forward (``infer``) and forward + backward of
``mean(ys**2)`` w.r.t. the parameters (``train``), timed round-robin with the baselines
(:data:`BASELINES`: the LSTM and GRU of the same hidden size on the path ``impl="auto"`` takes,
the fused kernel on CPU). The crossover of a cell is the shortest measured ``T`` from which its
parallel form is faster than its sequential one at every longer measured ``T`` (None: never).

Adding a cell is one entry of :data:`CELLS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

import seqjax
from benchmarks.rnn.timing import time_interleaved


@dataclasses.dataclass(frozen=True)
class Forms:
    """The forms of one cell that the section times.

    Attributes:
      build: hidden size ``H`` -> the cell definition.
      impls: form label -> the ``impl=`` that forces it.
      parallel: the label of the parallel form (for the crossover).
      sequential: the label of the sequential form it is compared with.
      max_T: form label -> the longest ``T`` it runs at (the quadratic parallel form of the
        mLSTM and a step-by-step form that stores a matrix memory per step do not fit beyond).
    """

    build: Callable[[int], seqjax.Cell]
    impls: dict[str, str]
    parallel: str = "parallel"
    sequential: str = "sequential"
    max_T: dict[str, int] = dataclasses.field(default_factory=dict)


#: Cell name -> its forms. Adding a cell to the section is one entry here.
CELLS: dict[str, Forms] = {
    "mingru": Forms(
        lambda H: seqjax.MinGRU(H),
        {"parallel": "parallel", "sequential": "sequential", "reference": "reference"},
        max_T={"reference": 4096},
    ),
    "minlstm": Forms(
        lambda H: seqjax.MinLSTM(H), {"parallel": "parallel", "sequential": "sequential"}
    ),
    "mlstm": Forms(
        lambda H: seqjax.MLSTM(H, num_heads=4),
        {"parallel": "parallel", "chunkwise": "chunkwise", "sequential": "reference"},
        max_T={"parallel": 2048, "sequential": 1024},
    ),
}

#: The baselines at the same hidden size: name -> cell builder (run with ``impl="auto"``).
BASELINES: dict[str, Callable[[int], seqjax.Cell]] = {
    "lstm": lambda H: seqjax.LSTM(H),
    "gru": lambda H: seqjax.GRU(H, reset_after=True),
}


def _pair(cell: seqjax.Cell, impl: str, xs: jax.Array):
    """``(train_fn, infer_fn)``: jitted closures over fixed parameters and inputs."""
    params = cell.init(jax.random.key(0), xs.shape[-1])

    def forward(p, x):
        return seqjax.scan(cell, p, x, impl=impl)[1]

    def loss(p, x):
        return jnp.mean(jnp.square(forward(p, x)))

    train, infer = jax.jit(jax.grad(loss)), jax.jit(forward)
    return (lambda: train(params, xs)), (lambda: infer(params, xs))


def entries(T: int, H: int, xs: jax.Array) -> dict:
    """Name -> ``(train_fn, infer_fn)`` of every form that runs at ``T``, baselines first."""
    out = {f"{name} fused": _pair(build(H), "auto", xs) for name, build in BASELINES.items()}
    for name, forms in CELLS.items():
        for label, impl in forms.impls.items():
            if T <= forms.max_T.get(label, T):
                out[f"{name} {label}"] = _pair(forms.build(H), impl, xs)
    return out


def auto_form(forms: Forms, T: int, B: int, I: int, H: int) -> str | None:
    """The label of the form ``impl="auto"`` runs for this shape (None: not among the forms)."""
    kernel = seqjax.scan_engine.choose(forms.build(H), jnp.zeros((T, B, I)), None)
    for label, impl in forms.impls.items():
        if impl == kernel:
            return label
    return None


def run(Ts: list[int], shape: tuple, repeats: int, budget_s: float | None, log) -> dict:
    """Times every form at every ``T``; returns the section's result.

    Args:
      Ts: sequence lengths.
      shape: ``(B, I, H)``.
      repeats: round-robin rounds per ``(T, workload)``.
      budget_s: stop starting rounds after this many seconds per ``(T, workload)``.
      log: progress printer.

    Returns:
      ``{"shape", "rows", "crossover", "speed_vs_lstm"}``: ``rows`` one dict per
      (entry, workload, T) with ``ms`` (median), ``min_ms``, ``runs``; ``crossover`` cell ->
      workload -> T or None; ``speed_vs_lstm`` one dict per (cell, workload, T) with the
      ``form`` ``impl="auto"`` runs and ``speedup`` = fused LSTM time / that form's time.
    """
    B, I, H = shape
    rows = []
    for T in Ts:
        xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
        built = entries(T, H, xs)
        for w, workload in enumerate(("train", "infer")):
            timed = time_interleaved({k: v[w] for k, v in built.items()}, repeats, budget_s)
            for name, t in timed.items():
                rows.append(
                    dict(
                        entry=name,
                        workload=workload,
                        B=B,
                        T=T,
                        I=I,
                        H=H,
                        ms=1e3 * t["median_s"],
                        min_ms=1e3 * t["min_s"],
                        runs=t["runs"],
                    )
                )
                log(
                    f"  T={T:6d} {workload:5s} {name:20s} {rows[-1]['ms']:10.2f} ms "
                    f"({t['runs']} runs)"
                )
        del built
    auto = {(c, T): auto_form(f, T, B, I, H) for c, f in CELLS.items() for T in Ts}
    return dict(
        shape=dict(B=B, I=I, H=H),
        rows=rows,
        crossover=crossovers(rows),
        speed_vs_lstm=speed_vs_lstm(rows, auto),
    )


def _ms(rows: list[dict]) -> dict:
    return {(r["entry"], r["workload"], r["T"]): r["ms"] for r in rows}


def crossovers(rows: list[dict], cells: dict[str, Forms] | None = None) -> dict:
    """Cell -> workload -> the shortest ``T`` from which parallel beats sequential (or None).

    Example:
      >>> rows = [dict(entry=f"mingru {f}", workload="train", T=T, ms=ms)
      ...         for f, T, ms in [("parallel", 8, 2.0), ("sequential", 8, 1.0),
      ...                          ("parallel", 16, 1.0), ("sequential", 16, 2.0)]]
      >>> crossovers(rows, {"mingru": CELLS["mingru"]})["mingru"]
      {'train': 16, 'infer': None}
    """
    ms = _ms(rows)
    out: dict = {}
    for name, forms in (CELLS if cells is None else cells).items():
        out[name] = {}
        for workload in ("train", "infer"):
            both = sorted(
                T
                for (e, w, T) in ms
                if e == f"{name} {forms.parallel}"
                and w == workload
                and (f"{name} {forms.sequential}", w, T) in ms
            )
            cross = None
            for T in reversed(both):
                if (
                    ms[(f"{name} {forms.parallel}", workload, T)]
                    < ms[(f"{name} {forms.sequential}", workload, T)]
                ):
                    cross = T
                else:
                    break
            out[name][workload] = cross
    return out


def speed_vs_lstm(rows: list[dict], auto: dict) -> list[dict]:
    """(fused LSTM ms) / (ms of the form ``impl="auto"`` runs), per cell, workload and T.

    Args:
      rows: the timed rows.
      auto: ``(cell, T) -> form label`` (None: auto runs none of the timed forms).

    Returns:
      One dict ``{cell, workload, T, form, speedup}`` per measured combination.
    """
    ms = _ms(rows)
    out = []
    for (name, T), form in auto.items():
        for workload in ("train", "infer"):
            key = (f"{name} {form}", workload, T)
            if form is not None and key in ms and ("lstm fused", workload, T) in ms:
                speedup = ms[("lstm fused", workload, T)] / ms[key]
                out.append(dict(cell=name, workload=workload, T=T, form=form, speedup=speedup))
    return out


def format_table(section: dict) -> str:
    """The section as Markdown: one table per workload (ms per entry and T), then summaries."""
    rows = section["rows"]
    ms = _ms(rows)
    names = list(dict.fromkeys(r["entry"] for r in rows))
    Ts = sorted({r["T"] for r in rows})
    s = section["shape"]
    lines = [f"B={s['B']}, I={s['I']}, H={s['H']}, float32, median ms per call", ""]
    for workload, title in (("train", "forward + backward"), ("infer", "forward")):
        lines += [f"{title}:", "", "| entry | " + " | ".join(f"T={T}" for T in Ts) + " |"]
        lines.append("|---|" + "---:|" * len(Ts))
        for name in names:
            cells = [
                f"{ms[(name, workload, T)]:.1f}" if (name, workload, T) in ms else "-" for T in Ts
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    for name, by_w in section["crossover"].items():
        lines.append(
            f"- {name}: parallel faster than sequential from T = "
            + ", ".join(f"{by_w[w]} ({w})" if by_w[w] else f"never ({w})" for w in by_w)
        )
    for name in section["crossover"]:
        train = [
            s for s in section["speed_vs_lstm"] if s["cell"] == name and s["workload"] == "train"
        ]
        lines.append(
            f"- {name} impl='auto' vs fused LSTM, forward + backward: "
            + ", ".join(
                f"T={s['T']} {s['speedup']:.2f}x ({s['form']})"
                for s in sorted(train, key=lambda s: s["T"])
            )
        )
    return "\n".join(lines) + "\n"
