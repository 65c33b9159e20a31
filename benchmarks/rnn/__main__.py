"""Command line: ``python -m benchmarks.rnn [--quick] [--out DIR] [--repeats N] [--no-plot]
[--sections a,b]``."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

from benchmarks.rnn import __doc__ as DOC
from benchmarks.rnn import parallel_forms
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

#: The sections, in the order they run (``--sections`` picks a subset).
SECTIONS = ("layers", "floor", "generation", "scaling", "parallel")


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the benchmark; returns the result dict that is also written as JSON.

    Args:
      argv: command-line arguments (default ``sys.argv[1:]``): ``--quick``, ``--out DIR``,
        ``--repeats N``, ``--no-plot``, ``--sections`` (comma-separated subset of
        :data:`SECTIONS`; a subset writes ``rnn_<sections>.json`` and no PNG, so the full
        ``rnn.json`` stays).

    Returns:
      ``{"config", "environment", "roofline", "layers", "ratios", "recurrent_floor",
      "generation", "scaling", "parallel_forms", "targets", "wall_s"}`` (the keys of the sections
      that ran).
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
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all)",
    )
    ap.set_defaults(handler=_run)
    return scaffold.run(ap, argv)


def _run(args) -> dict:
    at_least("--repeats", args.repeats, 1)
    check_output_dir("--out", args.out)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise scaffold.UsageError(
            f"--sections: expected a comma-separated subset of {','.join(SECTIONS)}, "
            f"got {args.sections!r}"
        )
    everything = set(sections) == set(SECTIONS)
    args.no_plot = args.no_plot or not everything  # the PNG draws the layers and scaling
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
    result: dict = dict(config=dataclasses.asdict(cfg), environment=env)
    if "layers" in sections:
        roof = roofline(cfg.roofline_n, max(cfg.repeats, 3))
        log(f"matmul roofline: {roof}")
        rows = run_layers(cfg, roof["gflops"], log)
        result.update(roofline=roof, layers=rows, ratios=ratios(rows))
    if "floor" in sections:
        result["recurrent_floor"] = run_recurrent_floor(cfg, log)
    if "generation" in sections:
        result["generation"] = run_generation(cfg, 2 if cfg.quick else 7)
        log(f"generation: {result['generation']}")
    if "scaling" in sections:
        result["scaling"] = run_scaling(cfg, log)
    if "parallel" in sections:
        log(f"parallel vs sequential forms, (B, I, H) = {cfg.parallel_shape}:")
        budget = None if cfg.quick else 60.0
        result["parallel_forms"] = parallel_forms.run(
            cfg.parallel_T, cfg.parallel_shape, cfg.repeats, budget, log
        )
    result["environment"]["load_average_end"] = os.getloadavg()
    if "layers" in result:
        result["targets"] = targets(result)
    result["wall_s"] = time.perf_counter() - t_start
    _log_summary(result, log)
    name = "rnn.json" if everything else f"rnn_{'_'.join(sections)}.json"
    json_path = os.path.join(args.out, name)
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    log(f"wrote {json_path}")
    if not args.no_plot:
        png = os.path.join(args.out, "rnn.png")
        plot(result, png)
        log(f"wrote {png}")
    log(f"total {result['wall_s']:.0f} s")
    return result


def _log_summary(result: dict, log) -> None:
    """The tables and the issue's targets of the sections that ran."""
    log("")
    if "layers" in result:
        log(format_table(result["layers"]))
    gen = result.get("generation")
    if gen:
        log(
            f"\ngeneration (B=1, H={gen['H']}): seqjax {gen['seqjax_ms_per_token']:.3f} ms/token"
            + (
                f", torch loop {gen['torch_loop_ms_per_token']:.3f} ms/token, {gen['speedup']:.1f}x"
                if "speedup" in gen
                else ""
            )
        )
    if "scaling" in result:
        rem = result["scaling"]["remat"]
        log(
            f"remat at {rem['shape']}: peak memory {rem['memory_ratio']:.2f}x, "
            f"time {rem['time_ratio']:.2f}x of no remat"
        )
    if "parallel_forms" in result:
        log("\nparallel vs sequential forms:")
        log(parallel_forms.format_table(result["parallel_forms"]))
    if "targets" in result:
        log("\ntargets (issue 3):")
        for t in result["targets"]:
            mark = "met " if t["met"] else "MISS"
            log(f"  [{mark}] {t['name']}: {t['value']:.2f} (goal {t['goal']})")


if __name__ == "__main__":
    main()
