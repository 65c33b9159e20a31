"""A/B of one training step: MinGRU against the LSTM, both ``impl="auto"``, in one process.

``python -m benchmarks.rnn.mingru_vs_lstm [--reps N] [--out DIR]`` compiles the two training
steps (forward + backward of ``mean(ys**2)`` w.r.t. the parameters, B=8, T=4096, I=H=256,
float32), then alternates them ``N`` times (LSTM, MinGRU, LSTM, MinGRU, ...). Each round's
ratio ``t_LSTM / t_MinGRU`` compares two runs made back to back, so on a shared machine the
median of the ratios is fairer than a ratio of absolute times. Prints the rounds, the median
ratio and the load averages, and writes ``mingru_vs_lstm.json`` in ``--out`` (default
``benchmarks/results``). ``--quick`` shrinks the shape (tests).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

import seqjax

SHAPE = dict(B=8, T=4096, I=256, H=256)
QUICK_SHAPE = dict(B=2, T=16, I=4, H=8)


def train_step(cell: seqjax.Cell, xs: jax.Array):
    """A zero-argument closure running one jitted forward + backward step of ``cell``."""
    params = cell.init(jax.random.key(0), xs.shape[-1])

    def loss(p, x):
        return jnp.mean(jnp.square(seqjax.scan(cell, p, x)[1]))

    step = jax.jit(jax.grad(loss))
    return lambda: jax.block_until_ready(step(params, xs))


def run(reps: int, shape: dict) -> dict:
    """Alternates the two steps ``reps`` times; returns the times, ratios and loads."""
    B, T, I, H = shape["B"], shape["T"], shape["I"], shape["H"]
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
    steps = {"lstm": train_step(seqjax.LSTM(H), xs), "mingru": train_step(seqjax.MinGRU(H), xs)}
    kernels = {
        name: seqjax.scan_engine.choose(cell, jnp.zeros((T, B, I)), None)
        for name, cell in (("lstm", seqjax.LSTM(H)), ("mingru", seqjax.MinGRU(H)))
    }
    for fn in steps.values():
        fn()  # compile and warm up
    times: dict[str, list[float]] = {k: [] for k in steps}
    loads = []
    for _ in range(reps):
        for name, fn in steps.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        loads.append(os.getloadavg())
    ratios = [a / b for a, b in zip(times["lstm"], times["mingru"], strict=True)]
    return dict(
        shape=shape,
        kernels=kernels,
        seconds=times,
        ratios=ratios,
        median_ratio=statistics.median(ratios),
        median_s={k: statistics.median(v) for k, v in times.items()},
        load_averages=loads,
        backend=jax.default_backend(),
        cpu_count=os.cpu_count(),
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line (see the module docstring); returns the result dict.

    Args:
      argv: ``--reps N``, ``--out DIR``, ``--quick`` (default ``sys.argv[1:]``).

    Returns:
      ``{"shape", "kernels", "seconds", "ratios", "median_ratio", "median_s",
      "load_averages", ...}``.
    """
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rnn.mingru_vs_lstm")
    ap.add_argument("--reps", type=int, default=9, help="alternating rounds (default 9)")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results"))
    ap.add_argument("--quick", action="store_true", help="tiny shape (tests)")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error(f"--reps: expected a positive int, got {args.reps}")
    result = run(args.reps, QUICK_SHAPE if args.quick else SHAPE)
    rounds = zip(result["seconds"]["lstm"], result["seconds"]["mingru"], strict=True)
    for k, (a, b) in enumerate(rounds):
        load = result["load_averages"][k][0]
        print(f"round {k}: LSTM {a:.3f} s, MinGRU {b:.3f} s, ratio {a / b:.2f} (load {load:.1f})")
    print(
        f"median ratio LSTM/MinGRU {result['median_ratio']:.2f} over {args.reps} rounds "
        f"(kernels {result['kernels']}, shape {result['shape']})"
    )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "mingru_vs_lstm.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
