"""The benchmark's summary: the issue's targets, the stdout table and the PNG."""

from __future__ import annotations

import numpy as np

from experiments.scaffold import pyplot


def targets(result: dict) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met.

    Args:
      result: the benchmark result (``layers``, ``generation``, ``scaling``).

    Returns:
      One dict per check: ``name``, ``value``, ``goal`` (a string), ``met``.
    """
    out = []
    rows = result["layers"]

    def ms(kind, impl, shape, workload="train"):
        for r in rows:
            if (r["kind"], r["impl"], r["workload"], (r["B"], r["T"], r["I"], r["H"])) == (
                kind,
                impl,
                workload,
                shape,
            ):
                return r["ms"], r
        return None, None

    shapes = sorted({(r["B"], r["T"], r["I"], r["H"]) for r in rows}, key=lambda s: s[-1])
    for kind in ("lstm", "gru"):
        for shape in shapes:
            fused, row = ms(kind, "seqjax fused", shape)
            if fused is None:
                continue
            label = f"{kind} train {shape}"
            for impl, goal in (
                (f"torch nn.{kind.upper()}", 1.0),
                (f"torch nn.{kind.upper()} 1 thread", 1.0),
                ("flax OptimizedLSTMCell", 1.3),
            ):
                other, _ = ms(kind, impl, shape)
                if other is not None:
                    out.append(
                        dict(
                            name=f"{label}: speed vs {impl}",
                            value=other / fused,
                            goal=f">= {goal}x",
                            met=other / fused >= goal,
                        )
                    )
            if kind == "lstm" and shape[-1] >= 512:
                out.append(
                    dict(
                        name=f"{label}: fraction of matmul roofline",
                        value=row["roofline_frac"],
                        goal=">= 0.75",
                        met=row["roofline_frac"] >= 0.75,
                    )
                )
    gen = result.get("generation", {})
    if "speedup" in gen:
        out.append(
            dict(
                name="generation vs PyTorch per-token loop",
                value=gen["speedup"],
                goal=">= 3x",
                met=gen["speedup"] >= 3,
            )
        )
    rem = result.get("scaling", {}).get("remat")
    if rem:
        out.append(
            dict(
                name=f"remat peak memory ratio {rem['shape']}",
                value=rem["memory_ratio"],
                goal="<= 0.333",
                met=rem["memory_ratio"] <= 1 / 3,
            )
        )
        out.append(
            dict(
                name=f"remat time ratio {rem['shape']}",
                value=rem["time_ratio"],
                goal="<= 1.4",
                met=rem["time_ratio"] <= 1.4,
            )
        )
    return out


def format_table(rows: list[dict]) -> str:
    """The layer rows as a fixed-width table (ms, GFLOP/s, roofline, time / seqjax fused)."""
    lines = []
    header = (
        f"{'layer':5s} {'work':5s} {'B,T,I,H':>18s}  {'implementation':24s} "
        f"{'ms':>10s} {'GFLOP/s':>8s} {'roofline':>8s} {'fused x':>8s}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    fused = {
        (r["kind"], r["workload"], r["B"], r["T"], r["I"], r["H"]): r["ms"]
        for r in rows
        if r["impl"] == "seqjax fused"
    }
    for r in rows:
        shape = f"{r['B']},{r['T']},{r['I']},{r['H']}"
        f = fused.get((r["kind"], r["workload"], r["B"], r["T"], r["I"], r["H"]))
        speed = f"{r['ms'] / f:7.2f}x" if f else ""
        lines.append(
            f"{r['kind']:5s} {r['workload']:5s} {shape:>18s}  {r['impl']:24s} "
            f"{r['ms']:10.2f} {r['gflops']:8.1f} {100 * r['roofline_frac']:7.0f}% "
            f"{speed:>8s}"
        )
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    """Draws the roofline fractions of every training entry and the scaling with T (PNG)."""
    plt = pyplot()
    rows = [r for r in result["layers"] if r["workload"] == "train"]
    shapes = sorted({(r["B"], r["T"], r["I"], r["H"]) for r in rows}, key=lambda s: s[-1])
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    for ax, kind in zip(axes[:2], ("lstm", "gru"), strict=True):
        impls = list(dict.fromkeys(r["impl"] for r in rows if r["kind"] == kind))
        width = 0.8 / max(len(impls), 1)
        for k, impl in enumerate(impls):
            vals = []
            for s in shapes:
                match = [
                    r
                    for r in rows
                    if r["kind"] == kind
                    and r["impl"] == impl
                    and (r["B"], r["T"], r["I"], r["H"]) == s
                ]
                vals.append(100 * match[0]["roofline_frac"] if match else 0.0)
            ax.bar(np.arange(len(shapes)) + k * width, vals, width, label=impl)
        ax.set_xticks(np.arange(len(shapes)) + 0.4 - width / 2)
        ax.set_xticklabels([f"B{b} T{t}\nI{i} H{h}" for b, t, i, h in shapes])
        ax.set_ylabel("training step, % of matmul roofline")
        ax.set_title(f"{kind.upper()} training (fwd+bwd), higher is better")
        ax.legend(fontsize=7)
    sc = result["scaling"]
    ax = axes[2]
    ax.loglog(sc["T"], sc["seqjax_fused_ms"], "o-", label="seqjax fused")
    if sc["torch_ms"]:
        ax.loglog(sc["T"], sc["torch_ms"], "s-", label="torch nn.LSTM")
    ax.set_xlabel("T")
    ax.set_ylabel("LSTM training step (ms)")
    sh = sc["shape"]
    ax.set_title(f"scaling with T (B={sh['B']}, I={sh['I']}, H={sh['H']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
