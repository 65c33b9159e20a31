"""Experiments 1 and 2: every cell at every length, on the adding problem or the copy task."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.long_range.config import (
    BASE_CELLS,
    EXTRA_CELLS,
    RESULTS_DIR,
    SOLVED_MSE,
    Config,
)
from experiments.long_range.formal import FORMAL_TASKS, SOLVED_FORMAL
from experiments.long_range.input_pipeline import COPY_SYMBOLS, baseline
from experiments.long_range.train import train_and_evaluate
from experiments.scaffold import check_output_dir, pyplot, replot, run_grid, write_outputs

#: The newer cells on the long-lag tasks (the ``new_cells`` grids: the quick grids' steps and
#: a length of theirs, so their LSTM and GRU rows are the comparison).
NEW_CELLS = tuple(EXTRA_CELLS)

SWEEPS: dict[str, dict[str, dict[str, Any]]] = {
    "adding": {
        "full": dict(cells=BASE_CELLS, lengths=(50, 100, 200, 400), steps=4000, seeds=(0,)),
        "quick": dict(cells=BASE_CELLS, lengths=(50, 100, 200, 400), steps=2000, seeds=(0,)),
        "new_cells": dict(cells=NEW_CELLS, lengths=(100,), steps=2000, seeds=(0,)),
    },
    "copy": {
        "full": dict(cells=BASE_CELLS, lengths=(50, 100, 200), steps=4000, seeds=(0,)),
        "quick": dict(cells=BASE_CELLS, lengths=(50, 100, 200), steps=1000, seeds=(0,)),
        "new_cells": dict(cells=NEW_CELLS, lengths=(50,), steps=1000, seeds=(0,)),
    },
}

#: The formal-language grid: every cell on parity and modarith, trained on lengths up to
#: ``length``, tested up to ``test_length`` (``python -m experiments.long_range formal``).
FORMAL_SWEEPS: dict[str, dict[str, Any]] = {
    "full": dict(
        cells=("rnn", "lstm", "gru") + tuple(EXTRA_CELLS),
        tasks=FORMAL_TASKS,
        length=40,
        test_length=256,
        steps=2000,
        seeds=(0,),
        eval_every=500,
    ),
}


def run_sweep(
    task: str,
    quick: bool,
    out_dir: Path = RESULTS_DIR,
    log: Callable[[str], None] = print,
    spec: dict[str, Any] | None = None,
    grid: str | None = None,
) -> list[dict[str, Any]]:
    """Experiments 1 and 2: every cell at every length; writes JSON, Markdown and a PNG.

    Args:
      task: ``"adding"`` or ``"copy"``.
      quick: use the quick config (fewer steps) and the ``_quick`` file names.
      out_dir: results folder.
      log: progress printer.
      spec: overrides the grid (``cells, lengths, steps, seeds`` and optionally ``hidden``);
        default :data:`SWEEPS`.
      grid: a named grid of :data:`SWEEPS` other than full/quick (``"new_cells"``); its files
        are ``<task>_<grid>.*``.

    Returns:
      The list of per-run results.
    """
    spec = spec or SWEEPS[task][grid or ("quick" if quick else "full")]
    check_output_dir("--out", out_dir)

    def one(length, cell, seed):
        cfg = Config(
            task=task,
            cell=cell,
            length=length,
            steps=spec["steps"],
            seed=seed,
            hidden=spec.get("hidden"),
        )
        return train_and_evaluate(cfg)

    rows, total = run_grid(
        {"length": spec["lengths"], "cell": spec["cells"], "seed": spec["seeds"]},
        one,
        log=log,
        summary=lambda r: {k: v for k, v in r.items() if k not in ("history", "config")},
    )
    cmd = f"python -m experiments.long_range sweep --task {task}{' --quick' if quick else ''}"
    cmd += f" --grid {grid}" if grid else ""
    payload = {
        "command": cmd,
        "wall_s": round(total, 1),
        "spec": spec,
        "config_defaults": dataclasses.asdict(Config(task=task)),
        "runs": rows,
    }
    write_outputs(out_dir, _tag(task, quick, grid), payload, _markdown, _figure)
    return rows


def _tag(task: str, quick: bool, grid: str | None = None) -> str:
    return f"{task}{'_quick' if quick else ''}{f'_{grid}' if grid else ''}"


def run_formal_sweep(
    out_dir: Path = RESULTS_DIR,
    log: Callable[[str], None] = print,
    spec: dict[str, Any] | None = None,
    tag: str = "formal",
) -> list[dict[str, Any]]:
    """Every cell on parity and modarith; writes ``<tag>.json`` and ``<tag>.md``.

    Args:
      out_dir: results folder.
      log: progress printer.
      spec: ``cells, tasks, length, test_length, steps, seeds`` (and optionally ``hidden``,
        ``test_size``); default ``FORMAL_SWEEPS["full"]``.
      tag: file name stem.

    Returns:
      The list of per-run results.
    """
    spec = spec or FORMAL_SWEEPS["full"]
    check_output_dir("--out", out_dir)

    def one(task, cell, seed):
        cfg = Config(
            task=task,
            cell=cell,
            length=spec["length"],
            test_length=spec["test_length"],
            steps=spec["steps"],
            seed=seed,
            hidden=spec.get("hidden"),
            test_size=spec.get("test_size", Config.test_size),
            eval_every=min(spec.get("eval_every", Config.eval_every), spec["steps"]),
        )
        return train_and_evaluate(cfg)

    rows, total = run_grid(
        {"task": spec["tasks"], "cell": spec["cells"], "seed": spec["seeds"]},
        one,
        log=log,
        summary=lambda r: {k: v for k, v in r.items() if k not in ("history", "config")},
    )
    cmd = "python -m experiments.long_range formal"
    if tag != "formal" and len(spec["tasks"]) == 1:
        cmd += f" --task {spec['tasks'][0]}"
    payload = {
        "command": cmd,
        "wall_s": round(total, 1),
        "spec": spec,
        "config_defaults": dataclasses.asdict(Config(task=spec["tasks"][0])),
        "runs": [{k: v for k, v in r.items() if k != "config"} for r in rows],
    }
    write_outputs(out_dir, tag, payload, _formal_markdown)
    return rows


def _formal_markdown(payload: dict[str, Any]) -> str:
    rows, spec = payload["runs"], payload["spec"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    L, TL = spec["length"], spec["test_length"]
    lines = [f"`{payload['command']}` ({payload['wall_s']:.0f} s)", ""]
    head = "| cell | H | params | " + " | ".join(f"{t} 1-{L} | {t} {L + 1}-{TL}" for t in tasks)
    lines += [head + " |", "|---|---:|---:|" + "---:|" * (2 * len(tasks))]
    for c in cells:
        by_task = {r["task"]: r for r in rows if r["cell"] == c and r["seed"] == rows[0]["seed"]}
        any_r = next(iter(by_task.values()))
        txt = []
        for t in tasks:
            r = by_task[t]
            long_txt = f"{r['normalised_long_accuracy']:.2f}"
            txt += [
                f"{r['normalised_accuracy']:.2f}",
                f"**{long_txt}**" if r["solved"] else long_txt,
            ]
        lines.append(f"| {c} | {any_r['hidden']} | {any_r['params']} | " + " | ".join(txt) + " |")
    lines += [
        "",
        f"Normalised accuracy (acc - chance) / (1 - chance) on {spec.get('test_size', 1000)} "
        f"held-out sequences per column (chance: parity 1/2, modarith 1/5; 1 = perfect, 0 = "
        f"chance), after {spec['steps']} steps on lengths 1-{L}; bold: >= {SOLVED_FORMAL} on the "
        f"longer lengths {L + 1}-{TL} (solved).",
    ]
    return "\n".join(lines) + "\n"


def replot_sweep(task: str, quick: bool, out_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Rebuilds a sweep's Markdown table and figure from its saved JSON (no training).

    Args:
      task: ``"adding"`` or ``"copy"``.
      quick: which result set (``_quick`` or full).
      out_dir: results folder.

    Returns:
      The saved runs.

    Raises:
      UsageError: the sweep has not been run.
    """
    return replot(out_dir, _tag(task, quick), _markdown, _figure)["runs"]


def _task(payload: dict[str, Any]) -> str:
    return payload["runs"][0]["task"]


def _markdown(payload: dict[str, Any]) -> str:
    return _sweep_markdown(_task(payload), payload["runs"], payload["command"], payload["wall_s"])


def _figure(payload: dict[str, Any], path: Path) -> None:
    _sweep_figure(_task(payload), payload["runs"], path)


def fmt(x: float) -> str:
    """A loss in 4 decimals, or in scientific notation when tiny or huge."""
    return f"{x:.2e}" if abs(x) < 1e-3 or abs(x) >= 1e3 else f"{x:.4f}"


def _sweep_markdown(task: str, rows: list[dict], cmd: str, wall: float) -> str:
    lengths = sorted({r["length"] for r in rows})
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    metric = "test_mse" if task == "adding" else "test_xent"
    lines = [f"`{cmd}` ({wall:.0f} s)", ""]
    head = "| cell | H | params | " + " | ".join(f"T={t}" for t in lengths) + " |"
    lines += [head, "|" + "---|" * (3 + len(lengths))]
    for c in cells:
        rs = {r["length"]: r for r in rows if r["cell"] == c and r["seed"] == rows[0]["seed"]}
        any_r = next(iter(rs.values()))
        cells_txt = []
        for t in lengths:
            r = rs[t]
            if task == "adding":
                cells_txt.append(fmt(r[metric]) + (" **solved**" if r["solved"] else ""))
            else:
                cells_txt.append(f"{fmt(r[metric])} / {r['recall_accuracy']:.2f}")
        lines.append(
            f"| {c} | {any_r['hidden']} | {any_r['params']} | " + " | ".join(cells_txt) + " |"
        )
    base = " | ".join(fmt(baseline(task, t)) for t in lengths)
    lines.append(f"| baseline | | | {base} |")
    lines.append("")
    if task == "adding":
        lines.append("Test MSE on 1,000 held-out sequences; solved = MSE < 0.01; baseline 1/6.")
    else:
        lines.append(
            "Test cross-entropy per step (nats) / accuracy on the 10 recalled "
            "symbols (chance 0.125); baseline 10 ln 8 / (T + 20)."
        )
    return "\n".join(lines) + "\n"


def _sweep_figure(task: str, rows: list[dict], path: Path) -> None:
    plt = pyplot()
    lengths = sorted({r["length"] for r in rows})
    cells = list(dict.fromkeys(r["cell"] for r in rows))

    def by_length(c):
        return sorted((r for r in rows if r["cell"] == c), key=lambda r: r["length"])

    if task == "adding":
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in cells:
            rs = by_length(c)
            ax.plot([r["length"] for r in rs], [r["test_mse"] for r in rs], "o-", label=c)
        ax.plot(lengths, [baseline(task, t) for t in lengths], "k--", label="baseline")
        ax.axhline(SOLVED_MSE, color="grey", lw=0.8, ls=":", label="solved (0.01)")
        ax.set_yscale("log")
        ax.set_ylabel("test MSE")
        axes = [ax]
    else:
        # The baseline falls as 1/(T + 20): plot the ratio to it, and the recall accuracy.
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for c in cells:
            rs = by_length(c)
            ts = [r["length"] for r in rs]
            axes[0].plot(ts, [r["test_xent"] / r["baseline"] for r in rs], "o-", label=c)
            axes[1].plot(ts, [r["recall_accuracy"] for r in rs], "o-", label=c)
        axes[0].axhline(1.0, color="k", ls="--", label="memoryless baseline")
        axes[0].set_ylabel("test cross-entropy / baseline")
        axes[1].axhline(1 / COPY_SYMBOLS, color="k", ls="--", label="chance (1/8)")
        axes[1].set_ylabel("recall accuracy (10 recalled symbols)")
    for ax in axes:
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.set_xlabel("T")
        ax.set_title(f"{task}: equal parameter budget")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
