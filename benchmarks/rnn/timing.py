"""Timing harness: medians of repeated runs, round-robin interleaving, FLOPs and the roofline."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.rnn.optional import torch

GATES = {"lstm": 4, "gru": 3}


def _block(out):
    if torch is not None and isinstance(out, torch.Tensor):
        return out
    return jax.block_until_ready(out)


def time_fn(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, budget_s: float | None = None
) -> dict:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs.

    Args:
      fn: a zero-argument callable; JAX results are blocked on.
      repeats: maximum number of timed runs.
      warmup: untimed runs first (compilation, caches).
      budget_s: stop repeating once this many seconds were spent timing (at least one run).

    Returns:
      ``{"median_s", "min_s", "runs"}``.
    """
    for _ in range(warmup):
        _block(fn())
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - t)
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times)}


def matmul_flops(kind: str, B: int, T: int, I: int, H: int, train: bool) -> float:
    """Matmul FLOPs of one layer over the sequence (see the module docstring)."""
    G = GATES[kind]
    fwd = 2.0 * T * B * G * H * (I + H)
    if not train:
        return fwd
    return fwd + fwd + 2.0 * T * B * G * H * H


def roofline(n: int, repeats: int) -> dict:
    """float32 GFLOP/s of an ``n x n`` matmul in XLA and in PyTorch."""
    out = {}
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    out["xla_gflops"] = 2 * n**3 / time_fn(lambda: mm(a), repeats)["median_s"] / 1e9
    if torch is not None:
        t = torch.randn(n, n)
        out["torch_gflops"] = 2 * n**3 / time_fn(lambda: t @ t, repeats)["median_s"] / 1e9
    out["gflops"] = max(v for k, v in out.items() if k.endswith("_gflops"))
    return out


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, budget_s: float | None = None
) -> dict[str, dict]:
    """Times several callables round-robin: one warm-up each, then ``repeats`` rounds.

    Interleaving makes the ratios between entries robust to load that changes during the run
    (the CPU here is shared): every entry sees the same conditions in every round.

    Args:
      fns: name -> zero-argument callable.
      repeats: maximum number of timed rounds.
      budget_s: stop starting new rounds once this many seconds were spent (at least one).

    Returns:
      name -> ``{"median_s", "min_s", "runs"}``.
    """
    for fn in fns.values():
        _block(fn())
    times: dict[str, list] = {k: [] for k in fns}
    start = time.perf_counter()
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            _block(fn())
            times[name].append(time.perf_counter() - t)
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return {
        k: {"median_s": statistics.median(v), "min_s": min(v), "runs": len(v)}
        for k, v in times.items()
    }


def environment() -> dict:
    env = dict(
        python=platform.python_version(),
        jax=jax.__version__,
        backend=jax.default_backend(),
        devices=str(jax.devices()),
        cpu_count=os.cpu_count(),
        platform=platform.platform(),
    )
    try:
        env["load_average"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    return env
