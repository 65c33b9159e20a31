"""Markdown tables from a ``benchmarks.rnn`` JSON result (used for ``docs/performance.md``).

Usage: ``python -m benchmarks.report benchmarks/results/rnn.json``.
"""

from __future__ import annotations

import json
import sys

from benchmarks.rnn import parallel_forms


def markdown(result: dict) -> str:
    """Renders the layer table, generation, scaling, remat and targets as Markdown.

    Args:
      result: the dict ``benchmarks.rnn.main`` returns (or its JSON file, loaded).

    Returns:
      Markdown text.
    """
    if "layers" not in result:  # a --sections run: the parallel-forms section alone
        return _parallel_forms(result) + "\n\n" + _load_line(result)
    out = []
    rows = result["layers"]
    fused = {
        (r["kind"], r["workload"], r["B"], r["T"], r["I"], r["H"]): r["ms"]
        for r in rows
        if r["impl"] == "seqjax fused"
    }
    out.append(
        "| layer | workload | B, T, I, H | implementation | ms (median) | GFLOP/s | "
        "% of roofline | time / seqjax fused |"
    )
    out.append("|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        f = fused.get((r["kind"], r["workload"], r["B"], r["T"], r["I"], r["H"]))
        name = f"**{r['impl']}**" if r["impl"] == "seqjax fused" else r["impl"]
        out.append(
            f"| {r['kind'].upper()} | {r['workload']} | {r['B']}, {r['T']}, {r['I']}, "
            f"{r['H']} | {name} | {r['ms']:.1f} | {r['gflops']:.1f} | "
            f"{100 * r['roofline_frac']:.0f} | {r['ms'] / f:.2f} |"
        )
    floor = result.get("recurrent_floor", [])
    if floor:
        out.append("")
        out.append(
            "Recurrent matmul floor: the per-step `[B, H] x [H, G*H]` matmul alone (XLA "
            "inside a `lax.scan`; PyTorch `torch.mm` in a loop). A training step runs it "
            "2T times in sequence; *train / floor* is the measured training step divided "
            "by that `2 T t_step` (seqjax fused over the XLA floor, `nn.LSTM`/`nn.GRU` "
            "over the PyTorch floor with the same threads)."
        )
        out.append("")
        out.append(
            "| layer | B, T, I, H | XLA us/step (GFLOP/s) | PyTorch us/step (GFLOP/s) | "
            "PyTorch 1 thread | seqjax fused train / XLA floor | "
            "PyTorch train / PyTorch floor |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|")
        train = {
            (r["kind"], r["impl"], r["B"], r["T"], r["I"], r["H"]): r["ms"]
            for r in rows
            if r["workload"] == "train"
        }
        for f in floor:
            shape = (f["B"], f["T"], f["I"], f["H"])
            fused_ms = train.get((f["kind"], "seqjax fused") + shape)
            torch_ms = train.get((f["kind"], f"torch nn.{f['kind'].upper()}") + shape)
            cells = [
                f"{f['kind'].upper()}",
                ", ".join(map(str, shape)),
                f"{f['xla_us']:.0f} ({f['xla_gflops']:.0f})",
            ]
            if "torch_us" in f:
                cells += [
                    f"{f['torch_us']:.0f} ({f['torch_gflops']:.0f})",
                    f"{f['torch_1thread_us']:.0f} ({f['torch_1thread_gflops']:.0f})",
                ]
            else:
                cells += ["", ""]
            cells.append(f"{fused_ms / f['xla_floor_ms']:.2f}" if fused_ms else "")
            cells.append(
                f"{torch_ms / f['torch_floor_ms']:.2f}"
                if torch_ms and "torch_floor_ms" in f
                else ""
            )
            out.append("| " + " | ".join(cells) + " |")
    gen = result["generation"]
    out.append("")
    line = (
        f"Generation, B=1, H={gen['H']}, vocabulary {gen['vocab']}, {gen['tokens']} tokens: "
        f"seqjax.decode.generate {gen['seqjax_ms_per_token']:.3f} ms/token"
    )
    if "speedup" in gen:
        line += (
            f"; PyTorch per-token loop {gen['torch_loop_ms_per_token']:.3f} ms/token; "
            f"**{gen['speedup']:.1f}x**."
        )
    out.append(line)
    sc = result["scaling"]
    out.append("")
    sh = sc["shape"]
    out.append(f"Scaling, LSTM training step, B={sh['B']}, I={sh['I']}, H={sh['H']}:")
    out.append("")
    out.append("| T | seqjax fused ms | torch nn.LSTM ms | ms per step (fused) |")
    out.append("|---:|---:|---:|---:|")
    for k, T in enumerate(sc["T"]):
        t = sc["torch_ms"][k] if sc["torch_ms"] else float("nan")
        out.append(
            f"| {T} | {sc['seqjax_fused_ms'][k]:.1f} | {t:.1f} | "
            f"{sc['seqjax_fused_ms'][k] / T:.3f} |"
        )
    rem = sc["remat"]
    out.append("")
    s = rem["shape"]
    out.append(f"Remat, LSTM training step at B={s['B']}, T={s['T']}, I={s['I']}, H={s['H']}:")
    out.append("")
    out.append("| | time ms | peak MiB (XLA buffer assignment) | temporaries MiB |")
    out.append("|---|---:|---:|---:|")
    for label in ("no_remat", "remat"):
        v = rem[label]
        out.append(f"| {label} | {v['ms']:.0f} | {v['peak_mb']:.0f} | {v['temp_mb']:.0f} |")
    out.append(f"| ratio | {rem['time_ratio']:.2f} | {rem['memory_ratio']:.2f} | |")
    out.append("")
    if "parallel_forms" in result:
        out += [_parallel_forms(result), ""]
    out.append("| target | measured | goal | |")
    out.append("|---|---:|---|---|")
    for t in result.get("targets", []):
        out.append(
            f"| {t['name']} | {t['value']:.2f} | {t['goal']} | "
            f"{'met' if t['met'] else '**missed**'} |"
        )
    out.append("")
    out.append(
        f"Roofline (float32 matmul, this run): XLA {result['roofline']['xla_gflops']:.1f}, "
        f"PyTorch {result['roofline'].get('torch_gflops', float('nan')):.1f} GFLOP/s. "
        + _load_line(result)
    )
    return "\n".join(out)


def _parallel_forms(result: dict) -> str:
    return "Parallel vs sequential forms, " + parallel_forms.format_table(result["parallel_forms"])


def _load_line(result: dict) -> str:
    env = result["environment"]
    return (
        f"Load average at start {tuple(round(x, 2) for x in env['load_average'])}, "
        f"at end {tuple(round(x, 2) for x in env['load_average_end'])}; "
        f"wall time {result['wall_s']:.0f} s."
    )


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/rnn.json") as f:
        print(markdown(json.load(f)))
