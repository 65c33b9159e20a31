"""Command line: ``python -m benchmarks.rnn [--quick] [--out DIR] [--repeats N] [--no-plot]``."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

from benchmarks.rnn import __doc__ as DOC
from benchmarks.rnn.summary import format_table, plot, targets
from benchmarks.rnn.timing import environment, roofline
from benchmarks.rnn.workloads import (
    make_config,
    ratios,
    run_generation,
    run_layers,
    run_recurrent_floor,
    run_scaling,
)
from experiments import scaffold
from experiments.scaffold import ArgumentParser, at_least, check_output_dir


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the benchmark; returns the result dict that is also written as JSON.

    Args:
      argv: command-line arguments (default ``sys.argv[1:]``): ``--quick``, ``--out DIR``,
        ``--repeats N``, ``--no-plot``.

    Returns:
      ``{"config", "environment", "roofline", "layers", "ratios", "recurrent_floor",
      "generation", "scaling", "targets", "wall_s"}``.
    """
    ap = ArgumentParser(prog="python -m benchmarks.rnn", description=DOC.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (tests)")
    ap.add_argument(
        "--out",
        default=os.path.join("benchmarks", "results"),
        help="directory for rnn.json and rnn.png",
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per entry")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    ap.set_defaults(handler=_run)
    return scaffold.run(ap, argv)


def _run(args) -> dict:
    at_least("--repeats", args.repeats, 1)
    check_output_dir("--out", args.out)
    if not args.no_plot and scaffold.pyplot() is None:
        raise scaffold.UsageError(
            "drawing rnn.png expects matplotlib, which is not installed; pass --no-plot"
        )
    cfg = make_config(args.quick, args.repeats)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    env = environment()
    log(f"seqjax RNN benchmark ({'quick' if cfg.quick else 'full'}): {env}")
    roof = roofline(cfg.roofline_n, max(cfg.repeats, 3))
    log(f"matmul roofline: {roof}")
    rows = run_layers(cfg, roof["gflops"], log)
    floor = run_recurrent_floor(cfg, log)
    gen = run_generation(cfg, 2 if cfg.quick else 7)
    log(f"generation: {gen}")
    scaling = run_scaling(cfg, log)
    result = dict(
        config=dataclasses.asdict(cfg),
        environment=env,
        roofline=roof,
        layers=rows,
        ratios=ratios(rows),
        recurrent_floor=floor,
        generation=gen,
        scaling=scaling,
    )
    result["environment"]["load_average_end"] = os.getloadavg()
    result["targets"] = targets(result)
    result["wall_s"] = time.perf_counter() - t_start
    log("")
    log(format_table(rows))
    log(
        f"\ngeneration (B=1, H={gen['H']}): seqjax {gen['seqjax_ms_per_token']:.3f} ms/token"
        + (
            f", torch loop {gen['torch_loop_ms_per_token']:.3f} ms/token, {gen['speedup']:.1f}x"
            if "speedup" in gen
            else ""
        )
    )
    rem = scaling["remat"]
    log(
        f"remat at {rem['shape']}: peak memory {rem['memory_ratio']:.2f}x, "
        f"time {rem['time_ratio']:.2f}x of no remat"
    )
    log("\ntargets (issue 3):")
    for t in result["targets"]:
        mark = "met " if t["met"] else "MISS"
        log(f"  [{mark}] {t['name']}: {t['value']:.2f} (goal {t['goal']})")
    json_path = os.path.join(args.out, "rnn.json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    log(f"wrote {json_path}")
    if not args.no_plot:
        png = os.path.join(args.out, "rnn.png")
        plot(result, png)
        log(f"wrote {png}")
    log(f"total {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
