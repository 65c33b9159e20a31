"""Greff et al. (2017) variant study: the vanilla LSTM and its eight ablations.

Experiment 5 of issue 5, one command::

    python -m experiments.variants [--quick]

Trains V (vanilla: LSTM with peepholes), NIG, NFG, NOG, NIAF, NOAF, NP, CIFG and FGR with the
same hidden size (as Greff et al. and the third-party ablation did, so parameter counts differ
and are reported) on the adding problem and the copy task, several seeds each, and ranks them
by median test loss. A variant counts as significantly different from V when every one of its
seeds lies on the same side of every V seed: with 3 seeds each this is the exact one-sided
Mann-Whitney test at p = 1/20 = 0.05 (with n seeds, ``1 / C(2n, n)``).
Writes ``experiments/results/long_range/variants[_quick].{json,md,png}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments import long_range as lr
from experiments import scaffold
from experiments.scaffold import ArgumentParser, check_output_dir, pyplot, run_grid, write_outputs

RESULTS_DIR = lr.RESULTS_DIR

#: Median test MSE of a third-party adding-problem ablation (T = 50, hidden 12, Adam, 3 seeds).
THIRD_PARTY_ADDING = {
    "CIFG": 0.0010,
    "NIAF": 0.0021,
    "V": 0.0033,
    "NP": 0.0034,
    "NFG": 0.0036,
    "NOAF": 0.0050,
    "NOG": 0.0069,
    "NIG": 0.0115,
}


@dataclasses.dataclass(frozen=True)
class VariantsConfig:
    """Grid of the experiment.

    Attributes:
      variants: Greff variant names.
      seeds: seeds per variant and task.
      hidden: hidden size of every variant.
      adding_length: ``T`` of the adding problem.
      adding_steps: optimiser steps on the adding problem.
      copy_length: delay ``T`` of the copy task.
      copy_steps: optimiser steps on the copy task.
    """

    variants: tuple[str, ...] = lr.VARIANTS
    seeds: tuple[int, ...] = (0, 1, 2)
    hidden: int = 32
    adding_length: int = 100
    adding_steps: int = 3000
    copy_length: int = 100
    copy_steps: int = 3000


QUICK = VariantsConfig(adding_steps=1500, copy_length=50, copy_steps=1000)


def _metric(task: str) -> str:
    return "test_mse" if task == "adding" else "test_xent"


def run(
    cfg: VariantsConfig,
    quick: bool,
    out_dir: Path = RESULTS_DIR,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Trains every variant on both tasks with every seed; writes JSON, Markdown and PNG.

    Args:
      cfg: the grid.
      quick: only names the output files and the recorded command.
      out_dir: results folder.
      log: progress printer.

    Returns:
      The JSON payload that was written.
    """
    check_output_dir("--out", out_dir)
    tasks = {
        "adding": (cfg.adding_length, cfg.adding_steps),
        "copy": (cfg.copy_length, cfg.copy_steps),
    }

    def one(task, variant, seed):
        length, steps = tasks[task]
        r = lr.train_and_evaluate(
            lr.Config(
                task=task,
                cell=variant,
                length=length,
                steps=steps,
                seed=seed,
                hidden=cfg.hidden,
                eval_every=steps,
            )
        )
        keys = ("task", "cell", "length", "seed", "hidden", "params", "baseline")
        row = {k: r[k] for k in keys + ("nonfinite", "wall_s")}
        row[_metric(task)] = r[_metric(task)]
        if task == "copy":
            row["recall_accuracy"] = r["recall_accuracy"]
        return row

    runs, wall = run_grid(
        {"task": list(tasks), "variant": cfg.variants, "seed": cfg.seeds}, one, log=log
    )
    cmd = f"python -m experiments.variants{' --quick' if quick else ''}"
    payload = {
        "command": cmd,
        "wall_s": round(wall, 1),
        "config": dataclasses.asdict(cfg),
        "runs": runs,
        "ranking": rank(runs),
    }
    write_outputs(out_dir, _tag(quick), payload, _markdown, _figure)
    return payload


def _tag(quick: bool) -> str:
    return "variants" + ("_quick" if quick else "")


def separated(a: Sequence[float], b: Sequence[float]) -> int:
    """+1 if every value of ``a`` exceeds every value of ``b``, -1 if every one is below, else 0.

    With ``n`` values each, complete separation is the exact one-sided Mann-Whitney test at
    ``p = 1 / C(2n, n)`` (0.05 for n = 3).

    Example:
      >>> separated([3, 4, 5], [0, 1, 2]), separated([0, 4], [1, 2])
      (1, 0)
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.isnan(a).any() or np.isnan(b).any():
        return 0
    if a.min() > b.max():
        return 1
    if a.max() < b.min():
        return -1
    return 0


def rank(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median loss per variant and task, ranks, and separation from V; sorted by mean rank.

    Args:
      runs: rows with ``task, cell`` and ``test_mse`` (adding) or ``test_xent`` (copy).

    Returns:
      One dict per variant: ``cell, params``, per task ``{task}_median``, ``{task}_rank``
      (1 = best) and ``{task}_vs_V`` (+1 worse than V, -1 better, 0 not separated), and
      ``mean_rank``.
    """
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    cells = list(dict.fromkeys(r["cell"] for r in runs))
    table = {c: {"cell": c} for c in cells}
    for task in tasks:
        m = _metric(task)
        vals = {c: [r[m] for r in runs if r["task"] == task and r["cell"] == c] for c in cells}
        med = {
            c: float(np.median(v)) if np.isfinite(v).all() else float("inf")
            for c, v in vals.items()
        }
        for i, c in enumerate(sorted(cells, key=lambda c: med[c])):
            table[c][f"{task}_median"] = med[c]
            table[c][f"{task}_rank"] = i + 1
            table[c][f"{task}_vs_V"] = separated(vals[c], vals["V"]) if "V" in vals else 0
            table[c][f"{task}_params"] = next(
                r["params"] for r in runs if r["task"] == task and r["cell"] == c
            )
            if task == "copy":
                table[c]["copy_recall_median"] = float(
                    np.median(
                        [r["recall_accuracy"] for r in runs if r["task"] == task and r["cell"] == c]
                    )
                )
    for row in table.values():
        row["mean_rank"] = float(np.mean([row[f"{t}_rank"] for t in tasks]))
    return sorted(table.values(), key=lambda r: (r["mean_rank"], r["cell"]))


def third_party_agreement(ranking: list[dict[str, Any]]) -> tuple[float, int]:
    """Spearman correlation between our adding medians and :data:`THIRD_PARTY_ADDING`.

    Args:
      ranking: rows of :func:`rank` (with ``cell`` and ``adding_median``).

    Returns:
      ``(rho, n)`` over the ``n`` variants present in both (ties get average ranks).

    Example:
      >>> third_party_agreement([{"cell": c, "adding_median": m} for c, m in
      ...                        [("CIFG", 0.1), ("V", 0.2), ("NIG", 0.3)]])
      (1.0, 3)
    """
    ours = {r["cell"]: r["adding_median"] for r in ranking if r["cell"] in THIRD_PARTY_ADDING}
    names = sorted(ours)
    if len(names) < 2:
        return float("nan"), len(names)

    def ranks(values):
        v = np.asarray(values, np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(1, v.size + 1)
        for x in np.unique(v):  # average ranks of ties
            r[v == x] = r[v == x].mean()
        return r

    a = ranks([ours[n] for n in names])
    b = ranks([THIRD_PARTY_ADDING[n] for n in names])
    return float(np.corrcoef(a, b)[0, 1]), len(names)


def replot(quick: bool, out_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    """Rebuilds the Markdown table and the figure from the saved JSON (no training).

    Args:
      quick: which result set.
      out_dir: results folder.

    Returns:
      The saved payload.

    Raises:
      UsageError: the results have not been written yet.
    """
    return scaffold.replot(out_dir, _tag(quick), _markdown, _figure)


def _markdown(p: dict[str, Any]) -> str:
    c = p["config"]
    n = len(c["seeds"])
    p_val = 1 / math.comb(2 * n, n)
    mark = {1: " (worse)", -1: " (better)", 0: ""}
    lines = [
        f"`{p['command']}` ({p['wall_s']:.0f} s); hidden {c['hidden']} for every variant; "
        f"adding T = {c['adding_length']} ({c['adding_steps']} steps), copy T = "
        f"{c['copy_length']} ({c['copy_steps']} steps), seeds {c['seeds']}.",
        "",
        f'Median over seeds; rank 1 = best. "worse"/"better": every seed on the same '
        f"side of every V seed (exact one-sided Mann-Whitney, p = {p_val:.3f}). "
        "Third-party column: median test MSE of an adding-problem ablation at T = 50, "
        "hidden 12 (its own rank in brackets).",
        "",
        "| variant | params (adding) | adding test MSE | rank | copy test xent | recall acc "
        "| rank | mean rank | third-party adding MSE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    tp_rank = {
        v: i + 1 for i, v in enumerate(sorted(THIRD_PARTY_ADDING, key=THIRD_PARTY_ADDING.get))
    }
    for r in p["ranking"]:
        tp = (
            f"{THIRD_PARTY_ADDING[r['cell']]:.4f} ({tp_rank[r['cell']]})"
            if r["cell"] in THIRD_PARTY_ADDING
            else "n/a"
        )
        lines.append(
            f"| {r['cell']} | {r['adding_params']} | {lr.fmt(r['adding_median'])}"
            f"{mark[r['adding_vs_V']]} | {r['adding_rank']} | {lr.fmt(r['copy_median'])}"
            f"{mark[r['copy_vs_V']]} | {r['copy_recall_median']:.2f} | {r['copy_rank']} | "
            f"{r['mean_rank']:.1f} | {tp} |"
        )
    base = lr.baseline("copy", c["copy_length"])
    lines += ["", f"Baselines: adding 1/6 = 0.1667; copy 10 ln 8 / (T + 20) = {base:.4f}."]
    rho, shared = third_party_agreement(p["ranking"])
    if shared >= 3:
        lines += [
            "",
            f"Spearman rank correlation of our adding-problem medians with the "
            f"third-party medians over the {shared} shared variants: {rho:.3f}.",
        ]
    return "\n".join(lines) + "\n"


def _figure(p: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    order = [r["cell"] for r in p["ranking"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, task in zip(axes, ("adding", "copy"), strict=True):
        m = _metric(task)
        for i, cell in enumerate(order):
            ys = [r[m] for r in p["runs"] if r["task"] == task and r["cell"] == cell]
            ax.scatter(
                np.full(len(ys), i) + np.linspace(-0.1, 0.1, len(ys)),
                ys,
                s=16,
                color="C3" if cell == "V" else "C0",
            )
            ax.hlines(np.median(ys), i - 0.25, i + 0.25, color="k")
        length = p["config"][f"{task}_length"]
        ax.axhline(lr.baseline(task, length), color="k", ls="--", lw=0.8, label="baseline")
        ax.set_yscale("log")
        ax.set_xticks(range(len(order)), order)
        ax.set_ylabel("test MSE" if task == "adding" else "test cross-entropy (nats/step)")
        ax.set_title(f"{task} T={length}: one point per seed, bar = median")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m experiments.variants [--quick] [--replot] [--out DIR]``.

    Prints the ranking as one JSON line, last on stdout.
    """
    p = ArgumentParser(prog="python -m experiments.variants")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument(
        "--replot",
        action="store_true",
        help="rebuild the Markdown table and the figure from the saved JSON",
    )
    p.set_defaults(handler=_main)
    return scaffold.run(p, argv)


def _main(a) -> dict[str, Any]:
    if a.replot:
        payload = replot(a.quick, Path(a.out))
    else:
        payload = run(QUICK if a.quick else VariantsConfig(), a.quick, Path(a.out))
    print(json.dumps({"wall_s": payload["wall_s"], "ranking": payload["ranking"]}))
    return payload


if __name__ == "__main__":
    main()
