"""Attention (additive, dot) against a plain encoder-decoder, with and without source reversal.

Every variant has a unidirectional encoder (so that reading the source backwards, Sutskever et
al.'s trick, means something) and the same parameter budget: the additive model's count at the
base ``--hidden``, the others' hidden sizes chosen to come closest to it
(:func:`~experiments.translate.model.hidden_for_budget`). Each is trained with the same steps,
data and seed, then evaluated on the test split (greedy, beam 4, beam 8). Outputs in
``experiments/results/translate/``: ``<name>.json``, ``<name>.md``, ``<name>.png`` (exact match
against source length) and ``<name>_heatmaps_<run>.png`` (attention weights).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from experiments.scaffold import UsageError, markdown_table, run_grid, write_outputs
from experiments.translate.config import TranslateConfig
from experiments.translate.model import count_params, hidden_for_budget

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results" / "translate"
VARIANTS = ("additive", "dot", "none", "none_reversed")
#: Numbers drawn in the heat-maps (34: German "vierunddreißig", four-and-thirty).
HEATMAP_NUMBERS = (34, 71, 1997, 342_571)


def variant_config(base: TranslateConfig, variant: str, budget: int | None) -> TranslateConfig:
    """The configuration of one variant, its hidden size matched to ``budget`` parameters."""
    from experiments.translate.input_pipeline import make_dataset

    attention = "none" if variant.startswith("none") else variant
    config = dataclasses.replace(
        base,
        attention=attention,
        reverse_source=variant == "none_reversed",
        bidirectional=False,
    )
    if budget is not None:
        ds = make_dataset(config.pair, config.target_tokens, dict(train=1, val=1, test=1), 0)
        sv, tv = ds.source_vocab.size, ds.target_vocab.size
        config = dataclasses.replace(config, hidden=hidden_for_budget(config, budget, sv, tv))
    return config


def _budget(base: TranslateConfig) -> int:
    from experiments.translate.input_pipeline import make_dataset
    from experiments.translate.model import build_model

    ds = make_dataset(base.pair, base.target_tokens, dict(train=1, val=1, test=1), 0)
    ref = dataclasses.replace(base, attention="additive", bidirectional=False)
    return count_params(build_model(ref, ds.source_vocab.size, ds.target_vocab.size))


def compare(
    root: str,
    base: TranslateConfig,
    *,
    variants: list[str] | None = None,
    out_dir: str | os.PathLike = RESULTS_DIR,
    name: str = "attention",
    command: str = "",
) -> dict[str, Any]:
    """Trains (or resumes) every variant under ``root`` and writes the comparison files.

    Raises:
      UsageError: an unknown variant.
    """
    from experiments.translate.train import restore, train_and_evaluate
    from experiments.translate.translate import evaluate_model

    variants = list(variants or VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UsageError(f"--variants: expected names from {', '.join(VARIANTS)}, got {unknown}")
    budget = _budget(base)

    def run_one(variant: str) -> dict[str, Any]:
        config = variant_config(base, variant, budget)
        workdir = os.path.join(root, variant)
        res = train_and_evaluate(config, workdir, verbose=False)
        run = restore(workdir)
        ev = evaluate_model(run.model, run.params, run.dataset, run.config)
        return {
            "variant": variant,
            "attention": config.attention,
            "reverse_source": config.reverse_source,
            "hidden": config.hidden,
            "params": count_params(run.model),
            "steps": res["step"],
            "train_elapsed_s": res["train_elapsed_s"],
            "val_loss": res["val_loss"],
            "evaluation": ev,
        }

    rows, wall = run_grid(
        {"variant": variants},
        run_one,
        summary=lambda r: {
            "variant": r["variant"],
            "hidden": r["hidden"],
            "params": r["params"],
            "beam4_exact": r["evaluation"]["beam_4"]["exact_match"],
        },
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    maps = []
    if "additive" in variants:
        run = restore(os.path.join(root, "additive"))
        maps.append(write_heatmaps(run, "additive", HEATMAP_NUMBERS, out, f"{name}_heatmaps"))
    payload = {
        "command": command,
        "base_config": dataclasses.asdict(base),
        "param_budget": budget,
        "rows": rows,
        "heatmaps": maps,
        "wall_s": wall,
        "load_average": os.getloadavg()[0],
    }
    write_outputs(out, name, payload, _markdown, _figure)
    return {
        r["variant"]: {k: r["evaluation"][f"beam_{k}"]["exact_match"] for k in (1, 4, 8)}
        for r in rows
    }


def write_heatmaps(
    run: Any, label: str, numbers: Any, out_dir: str | os.PathLike, name: str | None = None
) -> dict[str, Any]:
    """Draws a run's attention heat-maps to ``<out_dir>/<name>.png`` and their tokens to
    ``<name>.json``; returns that record."""
    from experiments.scaffold import write_json
    from experiments.translate.translate import heatmaps

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or f"heatmaps_{run.config.pair}_{Path(label).name}"
    info = heatmaps(
        run.model, run.params, run.dataset, run.config, list(numbers), str(out / f"{name}.png")
    )
    record = {"run": str(label), "step": run.step, "png": f"{name}.png", "examples": info}
    write_json(out / f"{name}.json", record)
    return record


def _markdown(p: dict[str, Any]) -> str:
    header = ["model", "hidden", "params", "steps", "train min", "exact greedy", "exact beam 4"]
    header += ["exact beam 8", "BLEU beam 4", "chrF beam 4"]
    rows = []
    for r in p["rows"]:
        e = r["evaluation"]
        rows.append(
            [
                r["variant"],
                r["hidden"],
                f"{r['params']:,}",
                r["steps"],
                f"{r['train_elapsed_s'] / 60:.1f}",
                f"{100 * e['beam_1']['exact_match']:.2f} %",
                f"{100 * e['beam_4']['exact_match']:.2f} %",
                f"{100 * e['beam_8']['exact_match']:.2f} %",
                f"{e['beam_4']['bleu']:.1f}",
                f"{e['beam_4']['chrf']:.1f}",
            ]
        )
    lines = [f"Command: `{p['command']}` (load average {p['load_average']:.1f})", ""]
    lines += markdown_table(header, rows)
    lengths = sorted({int(k) for r in p["rows"] for k in r["evaluation"]["beam_4"]["by_length"]})
    lines += ["", "Exact match (beam 4, %) by source length in words (test examples):", ""]

    def cell(r: dict[str, Any], n: int) -> str:
        acc = r["evaluation"]["beam_4"]["by_length"].get(str(n))
        return "-" if acc is None else f"{100 * acc[0]:.1f}"

    counts = {
        n: r0["evaluation"]["beam_4"]["by_length"].get(str(n), [0, 0])[1]
        for r0 in p["rows"][:1]
        for n in lengths
    }
    lines += markdown_table(
        ["model", *(f"{n} ({counts.get(n, 0)})" for n in lengths)],
        [[r["variant"], *(cell(r, n) for n in lengths)] for r in p["rows"]],
    )
    return "\n".join(lines) + "\n"


def _figure(p: dict[str, Any], path: Path) -> None:
    from experiments.scaffold import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in p["rows"]:
        bl = r["evaluation"]["beam_4"]["by_length"]
        xs = sorted(int(k) for k in bl)
        ax.plot(xs, [100 * bl[str(x)][0] for x in xs], marker="o", label=r["variant"])
    ax.set_xlabel("source length (English words)")
    ax.set_ylabel("exact match, beam 4 (%)")
    ax.set_title(f"{p['base_config']['pair']}: test exact match by source length")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
