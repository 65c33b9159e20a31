"""The results grid: tanh RNN, LSTM and GRU at two parameter budgets over several seeds, plus
the joint (RNN-NADE) output, with the table, the figure and a generated MIDI sample.

Writes ``<out>/compare.json``, ``compare.md``, ``compare.png`` (test NLL against training time
for the three cells; a generated chorale's piano roll next to the real one it was primed
with) and ``sample_generated.mid`` / ``sample_real.mid``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics as stats
from pathlib import Path
from typing import Any

import numpy as np

from experiments.music.config import HIDDEN_20K, HIDDEN_100K, MusicConfig, resolve
from experiments.music.generate import PRIMER_FRAMES, generate_roll, plot_roll
from experiments.music.input_pipeline import load_dataset
from experiments.music.train import restore, saved_config, train_and_evaluate
from experiments.scaffold import markdown_table, run_grid, write_outputs
from seqjax.data import music

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results" / "music"
BUDGETS = {"20K": HIDDEN_20K, "100K": HIDDEN_100K}
#: Published JSB Chorales test NLL per frame: (Chung et al. 2014 at ~20K, Bai et al. 2018).
PUBLISHED = {"rnn": (9.10, 8.91), "lstm": (8.67, 8.45), "gru": (8.54, 8.43)}
#: The joint output's configuration: the cell and budget it is compared at.
#: GRU 36 + NADE 16 is 20.2K parameters. It trains 1,000 steps, a budget set while its
#: steps were still slow (a cumulative sum over keys); with the masked matmul a step costs
#: about what a Bernoulli step does.
JOINT = {"cell": "gru", "budget": "20K", "hidden": 36, "nade_hidden": 16, "total_steps": 1000}


def _run_name(budget: str, cell: str, output: str, seed: int) -> str:
    return f"{budget}_{cell}_{output}_s{seed}"


def _timeline(workdir: str) -> list[dict[str, Any]]:
    import json

    path = os.path.join(workdir, "timeline.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def compare(
    root: str,
    base: MusicConfig,
    *,
    cells: tuple[str, ...] = ("rnn", "lstm", "gru"),
    budgets: tuple[str, ...] = ("20K", "100K"),
    seeds: tuple[int, ...] = (0, 1, 2),
    joint: bool = True,
    bernoulli: bool = True,
    out_dir: str | os.PathLike = RESULTS_DIR,
    command: str = "",
    log=print,
) -> dict[str, Any]:
    """Trains every point of the grid (resuming finished runs instantly) and writes results.

    Args:
      root: folder of the run directories.
      base: configuration shared by every run (steps, batch, learning rate...).
      cells, budgets, seeds: the grid; budgets are keys of :data:`BUDGETS`.
      joint: also train the RNN-NADE output (:data:`JOINT`) over ``seeds``.
      bernoulli: train the independent-output grid (False: only the joint output).
      out_dir: results folder.
      command: the command line, saved with the results.
      log: progress lines.

    Returns:
      The payload written to ``compare.json``.
    """

    def run_one(budget: str, cell: str, output: str, seed: int) -> dict[str, Any]:
        hidden = BUDGETS[budget][cell]
        extra = {}
        if output == "nade":
            hidden = JOINT["hidden"]
            extra = {"nade_hidden": JOINT["nade_hidden"], "total_steps": JOINT["total_steps"]}
        config = dataclasses.replace(
            base, cell=cell, hidden=hidden, output=output, seed=seed, progress=False, **extra
        )
        workdir = os.path.join(root, _run_name(budget, cell, output, seed))
        res = _finished(workdir, resolve(config))
        if res is None:
            res = train_and_evaluate(config, workdir, verbose=False)
        res.update(budget=budget, workdir=workdir, timeline=_timeline(workdir))
        return res

    summary = lambda r: {  # noqa: E731
        k: r[k]
        for k in ("budget", "cell", "output", "seed", "params", "test_nll", "train_elapsed_s")
    }
    _compilation_cache()
    rows, wall = [], 0.0
    if bernoulli:
        rows, wall = run_grid(
            {"budget": budgets, "cell": cells, "output": ["bernoulli"], "seed": seeds},
            run_one,
            log=lambda s: log(s),
            summary=summary,
        )
    if joint:
        more, wall2 = run_grid(
            {
                "budget": [JOINT["budget"]],
                "cell": [JOINT["cell"]],
                "output": ["nade"],
                "seed": seeds,
            },
            run_one,
            log=lambda s: log(s),
            summary=summary,
        )
        rows, wall = rows + more, wall + wall2
    payload: dict[str, Any] = {
        "command": command,
        "base_config": dataclasses.asdict(base),
        "wall_s": wall,
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "runs": rows,
        "table": _table(rows),
    }
    payload.update(_sample(rows, base, Path(out_dir)))
    write_outputs(out_dir, "compare", payload, markdown, figure)
    return payload


def _finished(workdir: str, config: MusicConfig) -> dict[str, Any] | None:
    """The saved results of a finished run of exactly ``config`` (None otherwise)."""
    import json

    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path) or saved_config(workdir) != config:
        return None
    with open(path, encoding="utf-8") as f:
        res = json.load(f)
    return res if res.get("step") == config.total_steps else None


def _compilation_cache() -> None:
    """JAX's persistent compilation cache beside the chorale cache: the seeds of one
    configuration compile the same programs, and so do the parallel parts of a grid."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(music.cache_dir().parent / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["budget"], r["cell"], r["output"]), []).append(r)
    table = []
    for (budget, cell, output), rs in groups.items():
        nll = [r["test_nll"] for r in rs]
        table.append(
            {
                "budget": budget,
                "cell": cell,
                "output": output,
                "hidden": rs[0]["hidden"],
                "params": rs[0]["params"],
                "seeds": len(rs),
                "test_nll_mean": stats.mean(nll),
                "test_nll_sd": stats.stdev(nll) if len(nll) > 1 else 0.0,
                "test_nll_final_mean": stats.mean(r["test_nll_final"] for r in rs),
                "valid_nll_mean": stats.mean(r["valid_nll"] for r in rs),
                "train_s_mean": stats.mean(r["train_elapsed_s"] for r in rs),
            }
        )
    return table


def _sample(rows, base: MusicConfig, out: Path) -> dict[str, Any]:
    """Generates from the best run (lowest test NLL) primed with the first test chorale."""
    best = min(rows, key=lambda r: r["test_nll"])
    model = restore(best["workdir"], "best")
    data = load_dataset(model.config)
    real = data.test[0]
    prime = real.roll[:PRIMER_FRAMES].astype(np.float32)
    roll = generate_roll(model, real.frames - PRIMER_FRAMES, temperature=1.0, seed=0, primer=prime)
    out.mkdir(parents=True, exist_ok=True)
    music.write_midi(roll, out / "sample_generated.mid", step=base.step)
    music.write_midi(real.roll, out / "sample_real.mid", step=base.step)
    as_lists = lambda r: [np.nonzero(f)[0].tolist() for f in r]  # noqa: E731
    return {
        "sample": {
            "run": best["workdir"],
            "primer_bwv": real.bwv,
            "primer_frames": PRIMER_FRAMES,
            "generated": as_lists(roll),
            "real": as_lists(real.roll),
        }
    }


def markdown(payload: dict[str, Any]) -> str:
    """The README table of ``compare.json``."""
    rows = []
    for t in payload["table"]:
        pub = PUBLISHED.get(t["cell"]) if t["output"] == "bernoulli" else None
        rows.append(
            [
                t["cell"],
                t["output"],
                t["budget"],
                t["hidden"],
                f"{t['params']:,}",
                f"**{t['test_nll_mean']:.2f}** ± {t['test_nll_sd']:.2f} ({t['seeds']})",
                f"{t['test_nll_final_mean']:.2f}",
                f"{t['valid_nll_mean']:.2f}",
                f"{t['train_s_mean']:.0f}",
                f"{pub[0]:.2f} / {pub[1]:.2f}" if pub else "-",
            ]
        )
    header = [
        "cell",
        "output",
        "budget",
        "hidden",
        "params",
        "test NLL/frame (mean ± sd, seeds)",
        "test NLL, last step",
        "valid NLL",
        "train s",
        "JSB: Chung 2014 / Bai 2018",
    ]
    la = payload.get("load_average", [float("nan")] * 3)
    trained = sum(r["train_elapsed_s"] for r in payload["runs"]) / 60
    lines = [
        "Test NLL per frame (nats, summed over 88 keys) at the best-validation checkpoint; "
        f"training time summed over the {len(payload['runs'])} runs {trained:.1f} min, this "
        f"command's wall time {payload['wall_s'] / 60:.1f} min (finished runs are read back, "
        f"not retrained), on {payload.get('cpus')} CPU cores shared with other work (load "
        f"average {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} at the end).",
        "",
        *markdown_table(header, rows),
        "",
        f"Command: `{payload['command']}`",
        "",
    ]
    return "\n".join(lines)


def figure(payload: dict[str, Any], png: Path) -> None:
    """Test NLL against training time per cell; a generated piano roll beside the real one."""
    from experiments.scaffold import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = {"rnn": "tab:blue", "lstm": "tab:orange", "gru": "tab:green"}
    seen = set()
    for r in payload["runs"]:
        style = "-" if r["budget"] == "20K" else "--"
        color = colors[r["cell"]] if r["output"] == "bernoulli" else "tab:purple"
        label = f"{r['cell']} {r['output']} {r['budget']}"
        tl = r["timeline"]
        axes[0].plot(
            [p["elapsed_s"] for p in tl],
            [p["test_nll"] for p in tl],
            style,
            color=color,
            lw=1,
            label=None if label in seen else label,
        )
        seen.add(label)
    axes[0].set_xlabel("training time (s, shared CPU)")
    axes[0].set_ylabel("test NLL per frame (nats)")
    axes[0].set_ylim(top=min(14.0, axes[0].get_ylim()[1]))
    axes[0].legend(fontsize=7)
    axes[0].set_title("test NLL against training time", fontsize=9)
    s = payload["sample"]

    def roll(lists):
        r = np.zeros((len(lists), music.KEYS), bool)
        for t, keys in enumerate(lists):
            r[t, keys] = True
        return r

    plot_roll(axes[1], roll(s["real"]), f"real: BWV {s['primer_bwv']} (test split)")
    plot_roll(
        axes[2],
        roll(s["generated"]),
        f"generated after its first {s['primer_frames']} frames ({Path(s['run']).name})",
        primer=s["primer_frames"],
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
