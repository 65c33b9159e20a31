"""Cell comparison: each cell at the 2-layer LSTM's parameter count, for the same training time.

Every cell trains the same model (embedding, two recurrent layers, softmax readout) with the
hidden size that brings its parameter count nearest to the reference LSTM's (within
:data:`TOLERANCE`), for the same wall-clock budget (``time_budget``), then is evaluated on the
validation and test splits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.char_lm.config import CELLS, CharLMConfig, validate_config
from experiments.char_lm.input_pipeline import load_corpus
from experiments.char_lm.model import count_params
from experiments.char_lm.train import train_and_evaluate
from experiments.scaffold import UsageError, check_output_dir, write_json

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "char_lm"

#: The shared configuration: the default 2-layer LSTM's model and batch shape, a constant
#: learning rate after warmup (no schedule can know how many steps a time budget allows), a
#: 300 s training budget and no evaluation until the budget is spent.
CELLS_BASE = dict(
    layers=2,
    hidden=256,
    embed=64,
    num_heads=4,
    total_steps=1_000_000,
    time_budget=300.0,
    schedule="constant",
    warmup_steps=100,
    eval_every=0,
    save_every=0,
    log_every=20,
    progress=False,
)

#: The cells compared by default; ``lstm`` at the base's hidden size is the reference.
CELLS_COMPARED = ("lstm", "mingru", "minlstm", "slstm", "mlstm", "xlstm")

#: Largest relative difference from the reference parameter count accepted.
TOLERANCE = 0.05


def matched_hidden(
    config: CharLMConfig, target: int, vocab_size: int, *, multiple: int = 8
) -> tuple[int, int]:
    """The hidden size (a multiple of ``multiple``) whose model is nearest ``target`` params.

    Args:
      config: the model (its ``hidden`` is replaced, and its ``embed`` too for ``xlstm``,
        whose residual blocks need ``embed == hidden``).
      target: the parameter count to match.
      vocab_size: symbols of the vocabulary (embedding and readout sizes).
      multiple: step of the hidden sizes tried (a multiple of ``num_heads`` for sLSTM/mLSTM).

    Returns:
      ``(hidden, params)``.

    Example:
      >>> from experiments.char_lm.config import CharLMConfig
      >>> c = CharLMConfig(layers=1, embed=4)
      >>> matched_hidden(c, 3100, vocab_size=10)  # 10*4 + 4*24*(4+24) + 4*24 + 24*10 + 10
      (24, 3074)
    """
    best: tuple[int, int] | None = None
    hidden = multiple
    while True:
        n = count_params(_with_hidden(config, hidden), vocab_size)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (hidden, n)
        if n > target:  # counts grow with the hidden size: nothing further is nearer
            return best
        hidden += multiple


def _with_hidden(config: CharLMConfig, hidden: int) -> CharLMConfig:
    if config.cell == "xlstm":
        return dataclasses.replace(config, hidden=hidden, embed=hidden)
    return dataclasses.replace(config, hidden=hidden)


def compare_cells(
    root: str,
    base: CharLMConfig | None = None,
    *,
    cells: Sequence[str] = CELLS_COMPARED,
    out_dir: str | os.PathLike = RESULTS_DIR,
    name: str = "cells",
    command: str = "",
    verbose: bool = True,
) -> dict[str, Any]:
    """Trains each cell at the reference LSTM's parameter count for ``base.time_budget`` s.

    Each cell trains in ``root/<cell>`` (delete it to rerun: a finished budgeted run would
    train one more step). An existing ``<name>.json`` with the same base configuration keeps
    the rows of cells not run this time, so cells can be added one command at a time; each
    row records its command.

    Args:
      root: directory holding one run directory per cell.
      base: the shared configuration (default :data:`CELLS_BASE`); its ``hidden`` is the
        reference LSTM's, and each cell's is matched to that LSTM's parameter count.
      cells: names from :data:`~experiments.char_lm.config.CELLS`.
      out_dir: where ``<name>.json`` and ``<name>.md`` go.
      name: the output file stem.
      command: the command line recorded in the outputs.
      verbose: print progress.

    Returns:
      ``{cell: summary}``: hidden size, parameters, steps, training seconds, validation and
      test bits/char, load averages before and after.

    Raises:
      UsageError: (a ValueError) an unknown cell, a cell that cannot come within
        :data:`TOLERANCE` of the reference count, an unusable base configuration or an
        unwritable ``root``/``out_dir``; checked before any training.
    """
    base = CharLMConfig(**CELLS_BASE) if base is None else base
    unknown = sorted(set(cells) - set(CELLS))
    if unknown or not cells:
        raise UsageError(f"--cells: expected names from {','.join(CELLS)}, got {list(cells)}")
    validate_config(base)
    check_output_dir("--root", root)
    check_output_dir("--out", out_dir)
    vocab_size = load_corpus(base).vocab.size
    reference = dataclasses.replace(base, cell="lstm")
    target = count_params(reference, vocab_size)
    configs: dict[str, CharLMConfig] = {}
    for cell in cells:
        config = dataclasses.replace(base, cell=cell)
        if cell != "lstm":
            hidden, _ = matched_hidden(
                config, target, vocab_size, multiple=math.lcm(8, base.num_heads)
            )
            config = _with_hidden(config, hidden)
        validate_config(config)
        n = count_params(config, vocab_size)
        if abs(n - target) > TOLERANCE * target:
            raise UsageError(
                f"--cells: expected {cell} within {TOLERANCE:.0%} of the reference "
                f"{target:,} parameters, got {n:,} at its nearest hidden size {config.hidden}"
            )
        configs[cell] = config
        if verbose:
            print(
                f"{cell}: hidden {config.hidden}, {n:,} parameters "
                f"({(n - target) / target:+.1%} vs lstm {base.hidden}: {target:,})",
                flush=True,
            )
    summary = _previous(Path(out_dir) / f"{name}.json", base, target)
    for cell, config in configs.items():
        if verbose:
            print(f"== {cell} (hidden {config.hidden}) ==", flush=True)
        load_before = [round(x, 2) for x in os.getloadavg()]
        res = train_and_evaluate(config, os.path.join(root, cell), verbose=verbose)
        summary[cell] = {
            "hidden": config.hidden,
            "params": res["params"],
            "steps": res["step"],
            "train_s": res["train_elapsed_s"],
            "val_bits_per_char": res["val_bits_per_char"],
            "test_bits_per_char": res["test_bits_per_char"],
            "tokens_per_sec_last_window": res["train_tokens_per_sec_last_window"],
            "load_average_before": load_before,
            "load_average_after": res["load_average"],
            "embed": config.embed,
            "command": command,
        }
        _write(summary, base, target, Path(out_dir), name, command)
    return summary


def _shown(base: CharLMConfig) -> dict[str, Any]:
    keys = sorted(set(CELLS_BASE) | {"data", "max_chars", "seq_len", "batch_size"})
    keys += ["learning_rate", "optimizer", "seed", "unroll"]
    return {k: getattr(base, k) for k in keys if k not in ("progress", "hidden")}


def _previous(path: Path, base: CharLMConfig, target: int) -> dict[str, Any]:
    """The rows of an earlier ``<name>.json`` made with the same base and reference."""
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    same = old.get("base_config") == json.loads(json.dumps(_shown(base)))
    if not same or old.get("reference_params") != target:
        return {}
    rows = dict(old.get("results", {}))
    for row in rows.values():
        row.setdefault("command", old.get("command", ""))
    return rows


def _write(summary, base: CharLMConfig, target: int, out_dir: Path, name, command) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = _shown(base)
    commands = list(dict.fromkeys(s.get("command", command) for s in summary.values()))
    write_json(
        out_dir / f"{name}.json",
        {
            "command": command,
            "base_config": shown,
            "reference_params": target,
            "results": summary,
        },
        indent=2,
        sort_keys=True,
    )
    lines = [
        f"# Cells at equal parameters ({target:,}) and equal training time "
        f"({base.time_budget:g} s)",
        "",
        "Command"
        + ("s" if len(commands) > 1 else "")
        + ": "
        + "; ".join(f"`{c}`" for c in commands),
        "",
        "Base: " + ", ".join(f"{k}={v}" for k, v in shown.items()) + ". Validation and test "
        "in bits/char. Training time includes compilation; measured on a shared 2-core CPU "
        "whose load average (1, 5, 15 min) is given before and after each run.",
        "",
        "| cell | hidden | params | steps | train s | val bpc | test bpc | chars/s | "
        "load before | load after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, s in summary.items():
        tps = s["tokens_per_sec_last_window"]
        lines.append(
            f"| {cell} | {s['hidden']} | {s['params']:,} | {s['steps']} | {s['train_s']:.0f} | "
            f"{s['val_bits_per_char']:.3f} | {s['test_bits_per_char']:.3f} | "
            f"{'-' if tps is None else f'{tps:,.0f}'} | "
            f"{json.dumps(s['load_average_before'])} | {json.dumps(s['load_average_after'])} |"
        )
    (out_dir / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
