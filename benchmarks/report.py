"""Markdown tables from a ``benchmarks.rnn`` JSON result (used for ``docs/performance.md``).

Usage: ``python -m benchmarks.report benchmarks/results/rnn.json``.
"""

from __future__ import annotations

import json
import sys


def markdown(result: dict) -> str:
    """Renders the layer table, generation, scaling, remat and targets as Markdown.

    Args:
      result: the dict ``benchmarks.rnn.main`` returns (or its JSON file, loaded).

    Returns:
      Markdown text.
    """
    out = []
    rows = result["layers"]
    fused = {(r["kind"], r["workload"], r["B"], r["T"], r["I"], r["H"]): r["ms"]
             for r in rows if r["impl"] == "seqjax fused"}
    out.append("| layer | workload | B, T, I, H | implementation | ms (median) | GFLOP/s | "
               "% of roofline | time / seqjax fused |")
    out.append("|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        f = fused.get((r["kind"], r["workload"], r["B"], r["T"], r["I"], r["H"]))
        name = f"**{r['impl']}**" if r["impl"] == "seqjax fused" else r["impl"]
        out.append(f"| {r['kind'].upper()} | {r['workload']} | {r['B']}, {r['T']}, {r['I']}, "
                   f"{r['H']} | {name} | {r['ms']:.1f} | {r['gflops']:.1f} | "
                   f"{100 * r['roofline_frac']:.0f} | {r['ms'] / f:.2f} |")
    gen = result["generation"]
    out.append("")
    line = (f"Generation, B=1, H={gen['H']}, vocabulary {gen['vocab']}, {gen['tokens']} tokens: "
            f"seqjax.decode.generate {gen['seqjax_ms_per_token']:.3f} ms/token")
    if "speedup" in gen:
        line += (f"; PyTorch per-token loop {gen['torch_loop_ms_per_token']:.3f} ms/token; "
                 f"**{gen['speedup']:.1f}x**.")
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
        out.append(f"| {T} | {sc['seqjax_fused_ms'][k]:.1f} | {t:.1f} | "
                   f"{sc['seqjax_fused_ms'][k] / T:.3f} |")
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
    out.append("| target | measured | goal | |")
    out.append("|---|---:|---|---|")
    for t in result.get("targets", []):
        out.append(f"| {t['name']} | {t['value']:.2f} | {t['goal']} | "
                   f"{'met' if t['met'] else '**missed**'} |")
    env = result["environment"]
    out.append("")
    out.append(f"Roofline (float32 matmul, this run): XLA {result['roofline']['xla_gflops']:.1f}, "
               f"PyTorch {result['roofline'].get('torch_gflops', float('nan')):.1f} GFLOP/s. "
               f"Load average at start {tuple(round(x, 2) for x in env['load_average'])}, "
               f"at end {tuple(round(x, 2) for x in env['load_average_end'])}; "
               f"wall time {result['wall_s']:.0f} s.")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/rnn.json") as f:
        print(markdown(json.load(f)))
