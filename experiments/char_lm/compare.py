"""Regularisation comparison: train vs validation loss with and without each method."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import seqjax
from experiments.char_lm.config import CharLMConfig, validate_config
from experiments.char_lm.train import train_and_evaluate
from experiments.scaffold import UsageError, check_output_dir, pyplot, write_json

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "char_lm"

#: The comparison's base: a 1-layer LSTM (314k parameters) on the first 60k characters (48k for
#: training), which it overfits within minutes on two CPU cores, so the methods have something
#: to fix. ``compare --max-chars 200000 ...`` runs it with more data.
COMPARE_BASE = dict(
    layers=1,
    hidden=256,
    embed=32,
    batch_size=32,
    seq_len=64,
    max_chars=60_000,
    val_fraction=0.1,
    test_fraction=0.1,
    total_steps=1000,
    warmup_steps=50,
    learning_rate=3e-3,
    end_lr_factor=0.1,
    eval_every=50,
    save_every=500,
    log_every=20,
    eval_train=True,
    progress=False,
)

#: The methods compared (hyperparameters from the papers' character-level settings where
#: they give one: zoneout c 0.5 / h 0.05, Krueger et al. 2016).
COMPARE_VARIANTS = {
    "none": {},
    "dropout": dict(dropout=0.3),
    "variational": dict(input_dropout=0.2, recurrent_dropout=0.3),
    "zoneout": dict(zoneout_h=0.05, zoneout_c=0.5),
    "weight_drop": dict(weight_drop=0.3),
}


def compare(
    root: str,
    base: CharLMConfig | None = None,
    *,
    variants: Sequence[str] | None = None,
    out_dir: str | os.PathLike = RESULTS_DIR,
    name: str = "regularization",
    command: str = "",
    verbose: bool = True,
) -> dict[str, Any]:
    """Trains one model per regularisation method and writes the train/validation comparison.

    Each variant trains in ``root/<variant>`` (so an interrupted comparison resumes) with
    ``base`` plus the variant's rates; at every evaluation the loss is measured without
    dropout on the validation split and on an equally large slice of the training text.

    Args:
      root: directory holding one run directory per variant.
      base: the shared configuration (default :data:`COMPARE_BASE`); ``eval_train`` is forced
        on.
      variants: names from :data:`COMPARE_VARIANTS` (default all).
      out_dir: where ``<name>.json``, ``<name>.md`` and ``<name>.png`` go.
      name: the output file stem.
      command: the command line recorded in the outputs.
      verbose: print progress.

    Returns:
      ``{variant: summary}`` with the best and final validation loss, the final train-slice
      loss, their gap and the test loss (nats/char).

    Raises:
      UsageError: (a ValueError) unknown variant names, an unusable base configuration or
        an unwritable ``root``/``out_dir``; checked before any training.
    """
    base = CharLMConfig(**COMPARE_BASE) if base is None else base
    base = dataclasses.replace(base, eval_train=True)
    names = list(COMPARE_VARIANTS) if variants is None else list(variants)
    unknown = sorted(set(names) - set(COMPARE_VARIANTS))
    if unknown or not names:
        raise UsageError(
            f"--variants: expected names from {','.join(COMPARE_VARIANTS)}, got unknown "
            f"variants {unknown}"
        )
    for variant in names:
        validate_config(dataclasses.replace(base, **COMPARE_VARIANTS[variant]))
    check_output_dir("--root", root)
    check_output_dir("--out", out_dir)
    summary: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for variant in names:
        config = dataclasses.replace(base, **COMPARE_VARIANTS[variant])
        workdir = os.path.join(root, variant)
        if verbose:
            print(
                f"== {variant}: {COMPARE_VARIANTS[variant] or 'no regularisation'} ==", flush=True
            )
        res = train_and_evaluate(config, workdir, verbose=verbose)
        with open(os.path.join(workdir, "timeline.jsonl"), encoding="utf-8") as f:
            tl = [json.loads(line) for line in f if line.strip()]
        evals = {
            r["step"]: r
            for r in seqjax.train.read_metrics(os.path.join(workdir, "metrics.jsonl"))
            if r["split"] == "eval"
        }
        pts = [
            (r["step"], r["train_eval_loss"], evals[r["step"]]["loss"])
            for r in tl
            if r["step"] in evals and "train_eval_loss" in r
        ]
        curves[variant] = pts
        best = min(pts, key=lambda p: p[2])
        summary[variant] = {
            "rates": COMPARE_VARIANTS[variant],
            "best_val_loss": best[2],
            "best_step": best[0],
            "final_val_loss": pts[-1][2],
            "final_train_loss": pts[-1][1],
            "final_gap": pts[-1][2] - pts[-1][1],
            "test_loss": res["test_loss_nats"],
            "train_minutes": res["train_elapsed_s"] / 60,
            "train_chars": res["train_chars"],
        }
    _write_comparison(summary, curves, base, Path(out_dir), name, command, names)
    return summary


def _write_comparison(summary, curves, base, out_dir: Path, name, command, names) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted(
        set(COMPARE_BASE) | {"data", "seed", "unroll", "optimizer", "schedule", "clip_norm"}
    )
    shown = {k: getattr(base, k) for k in keys if k not in ("progress", "eval_train")}
    write_json(
        out_dir / f"{name}.json",
        {
            "command": command,
            "base_config": shown,
            "results": summary,
            "curves_step_train_val": {k: [list(p) for p in v] for k, v in curves.items()},
        },
        indent=2,
        sort_keys=True,
    )
    train_chars = summary[names[0]]["train_chars"]
    lines = [
        f"# Regularisation comparison: {train_chars:,} training characters",
        "",
        f"Command: `{command}`",
        "",
        "Base: " + ", ".join(f"{k}={v}" for k, v in shown.items()) + ". Losses in nats/char, "
        "all measured without dropout; *train* is a slice of the training text as large as "
        "the validation split. Wall times were measured on a shared 2-core CPU.",
        "",
        "| method | rates | best val (step) | final val | final train | gap val - train | "
        "test | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in names:
        s = summary[variant]
        rates = ", ".join(f"{k}={v}" for k, v in s["rates"].items()) or "-"
        lines.append(
            f"| {variant} | {rates} | {s['best_val_loss']:.4f} ({s['best_step']}) | "
            f"{s['final_val_loss']:.4f} | {s['final_train_loss']:.4f} | "
            f"{s['final_gap']:+.4f} | {s['test_loss']:.4f} | "
            f"{s['train_minutes']:.1f} |"
        )
    (out_dir / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, variant in enumerate(names):
        pts = np.array(curves[variant])
        ax.plot(pts[:, 0], pts[:, 2], color=f"C{k}", label=variant)
        ax.plot(pts[:, 0], pts[:, 1], color=f"C{k}", linestyle="--", alpha=0.7)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(
        f"Validation (solid) vs training text (dashed), {train_chars:,} training chars", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=110)
    plt.close(fig)
