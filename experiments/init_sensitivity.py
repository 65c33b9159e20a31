"""Initialisation sensitivity of LSTM and GRU on the adding problem.

Experiment 4 of issue 5, one command::

    python -m experiments.init_sensitivity [--quick]

Trains every cell at every initialisation scale with every seed (default: LSTM and GRU, scales
0.5, 1 and 2 times the library's default initial weights, i.e. Glorot-uniform input weights
and orthogonal recurrent weights, 5 seeds) and reports the spread of the final test MSE.
Writes ``experiments/results/long_range/init_sensitivity[_quick].{json,md,png}``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments import long_range as lr
from experiments import scaffold
from experiments.scaffold import ArgumentParser, check_output_dir, pyplot, run_grid, write_outputs

RESULTS_DIR = lr.RESULTS_DIR


@dataclasses.dataclass(frozen=True)
class SensitivityConfig:
    """Grid of the experiment.

    Attributes:
      cells: cell names.
      scales: ``init_scale`` values (multipliers of the default initial weights).
      seeds: seeds per (cell, scale).
      length: ``T`` of the adding problem.
      steps: optimiser steps per run.
      budget: parameter budget (sets each cell's hidden size).
    """

    cells: tuple[str, ...] = ("lstm", "gru")
    scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    length: int = 100
    steps: int = 2500
    budget: int = lr.Config.budget


QUICK = SensitivityConfig(length=50, steps=1000)


def run(
    cfg: SensitivityConfig,
    quick: bool,
    out_dir: Path = RESULTS_DIR,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Trains the grid and writes JSON, Markdown and PNG.

    Args:
      cfg: the grid.
      quick: only names the output files and the recorded command.
      out_dir: results folder.
      log: progress printer.

    Returns:
      The JSON payload that was written.
    """
    check_output_dir("--out", out_dir)

    def one(cell, scale, seed):
        r = lr.train_and_evaluate(
            lr.Config(
                task="adding",
                cell=cell,
                length=cfg.length,
                steps=cfg.steps,
                seed=seed,
                init_scale=scale,
                budget=cfg.budget,
                eval_every=cfg.steps,
            )
        )
        keys = ("hidden", "test_mse", "solved", "nonfinite", "wall_s")
        return {"cell": r["cell"], "init_scale": scale, "seed": seed, **{k: r[k] for k in keys}}

    runs, wall = run_grid({"cell": cfg.cells, "scale": cfg.scales, "seed": cfg.seeds}, one, log=log)
    cmd = f"python -m experiments.init_sensitivity{' --quick' if quick else ''}"
    payload = {
        "command": cmd,
        "wall_s": round(wall, 1),
        "config": dataclasses.asdict(cfg),
        "runs": runs,
        "summary": summarise(runs),
    }
    write_outputs(
        out_dir, "init_sensitivity" + ("_quick" if quick else ""), payload, _markdown, _figure
    )
    return payload


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (cell, scale): median, min, max and log10 spread of the test MSE, solved count.

    Args:
      runs: rows with ``cell, init_scale, test_mse, solved``.

    Returns:
      One dict per (cell, scale) in first-seen order.

    Example:
      >>> summarise([{"cell": "gru", "init_scale": 1.0, "test_mse": m, "solved": m < 0.01}
      ...            for m in (0.001, 0.1)])[0]["solved"]
      1
    """
    out = []
    for cell, scale in dict.fromkeys((r["cell"], r["init_scale"]) for r in runs):
        m = np.array(
            [r["test_mse"] for r in runs if r["cell"] == cell and r["init_scale"] == scale],
            np.float64,
        )
        ok = m[np.isfinite(m)]
        out.append(
            {
                "cell": cell,
                "init_scale": scale,
                "n": int(m.size),
                "median": float(np.median(ok)) if ok.size else float("nan"),
                "min": float(ok.min()) if ok.size else float("nan"),
                "max": float(ok.max()) if ok.size else float("nan"),
                "log10_spread": float(np.log10(ok.max() / ok.min())) if ok.size else float("nan"),
                "solved": int(
                    sum(r["solved"] for r in runs if r["cell"] == cell and r["init_scale"] == scale)
                ),
                "nonfinite": int(m.size - ok.size),
            }
        )
    return out


def _markdown(p: dict[str, Any]) -> str:
    c = p["config"]
    lines = [
        f"`{p['command']}` ({p['wall_s']:.0f} s); adding problem T = {c['length']}, "
        f"{c['steps']} steps, seeds {c['seeds']}; scale multiplies the default initial "
        "input (Glorot-uniform) and recurrent (orthogonal) weights.",
        "",
        "| cell | init scale | median test MSE | min | max | max/min (decades) | solved |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in p["summary"]:
        lines.append(
            f"| {s['cell']} | {s['init_scale']:g} | {lr.fmt(s['median'])} | "
            f"{lr.fmt(s['min'])} | {lr.fmt(s['max'])} | {s['log10_spread']:.2f} | "
            f"{s['solved']}/{s['n']} |"
        )
    return "\n".join(lines) + "\n"


def _figure(p: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    cfg = p["config"]
    fig, ax = plt.subplots(figsize=(6, 4))
    n_cells = len(cfg["cells"])
    for ci, cell in enumerate(lr.canonical_cell(c) for c in cfg["cells"]):
        for si, scale in enumerate(cfg["scales"]):
            ys = [
                r["test_mse"] for r in p["runs"] if r["cell"] == cell and r["init_scale"] == scale
            ]
            x = si + (ci - (n_cells - 1) / 2) * 0.25
            jitter = np.linspace(-0.06, 0.06, len(ys))
            ax.scatter(x + jitter, ys, color=f"C{ci}", s=18, label=cell if si == 0 else None)
            ax.hlines(np.median(ys), x - 0.1, x + 0.1, color=f"C{ci}")
    ax.axhline(1 / 6, color="k", ls="--", lw=0.8, label="baseline 1/6")
    ax.axhline(lr.SOLVED_MSE, color="grey", ls=":", lw=0.8, label="solved (0.01)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(cfg["scales"])), [f"x{s:g}" for s in cfg["scales"]])
    ax.set_xlabel("initial weight scale")
    ax.set_ylabel("final test MSE (one point per seed)")
    ax.set_title(f"adding T={cfg['length']}, {cfg['steps']} steps, {len(cfg['seeds'])} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m experiments.init_sensitivity [--quick] [--out DIR]``.

    Prints the per-(cell, scale) summary as one JSON line, last on stdout.
    """
    p = ArgumentParser(prog="python -m experiments.init_sensitivity")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.set_defaults(handler=_main)
    return scaffold.run(p, argv)


def _main(a) -> dict[str, Any]:
    payload = run(QUICK if a.quick else SensitivityConfig(), a.quick, Path(a.out))
    print(json.dumps({"wall_s": payload["wall_s"], "summary": payload["summary"]}))
    return payload


if __name__ == "__main__":
    main()
