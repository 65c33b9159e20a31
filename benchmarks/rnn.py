"""Recurrent layers side by side: seqjax (fused and reference paths), Flax, Equinox, PyTorch.

Run ``python -m benchmarks.rnn`` (about 3-4 minutes on an idle 2-core CPU) or ``--quick``
(tiny shapes, seconds; what the test suite runs). Everything is measured in one process on the
same shapes, dtype (float32) and inputs, as medians of repeated runs after a warm-up (JAX
functions are compiled before timing), and reported as ratios measured in the same run:

- **training step** (forward + backward of ``mean(ys**2)`` w.r.t. the parameters) and
  **inference** (forward) for one LSTM and one GRU layer at ``(B, T, I, H)`` =
  (32, 128, 128, 256), (64, 64, 256, 512), (16, 256, 512, 1024);
- **roofline**: float32 matmul GFLOP/s of the machine (the best of XLA and PyTorch on a large
  square matmul, measured in this run) and each entry's achieved GFLOP/s as a fraction of it.
  FLOPs count only the matmuls every implementation must do: forward ``2 T B G H (I + H)``;
  training adds the weight gradients ``2 T B G H (I + H)`` and the recurrent input gradients
  ``2 T B G H H`` (``G`` = 4 for LSTM, 3 for GRU);
- **recurrent matmul floor**: the per-step ``[B, H] x [H, G*H]`` matmul timed alone in XLA
  (inside a ``lax.scan``) and in PyTorch; a training step runs it ``2 T`` times in sequence, so
  ``2 T t_step`` bounds any implementation on that matmul library from below;
- **generation** latency per token at B = 1, H = 512 (embedding, LSTM, softmax readout,
  sampling): ``seqjax.decode.generate`` (one compiled ``lax.scan``) against a PyTorch
  per-token Python loop;
- **scaling**: LSTM training time versus T (128 ... 4096) at B = 32, I = H = 256, and compiled
  peak memory (XLA's buffer assignment) and time with and without ``remat`` at T = 4096,
  B = 32, I = H = 512.

Outputs: a table on stdout, ``rnn.json`` and ``rnn.png`` in ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import seqjax
from seqjax import kernels

try:  # optional competitors: the benchmark runs without them
    import torch
except ImportError:  # pragma: no cover - torch is a dev dependency
    torch = None
try:
    import flax.linen as nn
except ImportError:  # pragma: no cover
    nn = None
try:
    import equinox as eqx
except ImportError:  # pragma: no cover
    eqx = None

FULL_SHAPES = [(32, 128, 128, 256), (64, 64, 256, 512), (16, 256, 512, 1024)]
QUICK_SHAPES = [(4, 12, 8, 16)]
GATES = {"lstm": 4, "gru": 3}


@dataclasses.dataclass
class Config:
    """What one benchmark run measures (``--quick`` shrinks every size)."""

    shapes: list
    repeats: int
    scaling_T: list
    scaling_shape: tuple  # (B, I, H)
    remat_shape: tuple  # (B, T, I, H)
    gen_hidden: int
    gen_vocab: int
    gen_tokens: int
    roofline_n: int
    quick: bool


def make_config(quick: bool, repeats: int | None) -> Config:
    if quick:
        return Config(
            QUICK_SHAPES,
            repeats or 1,
            [8, 16, 32],
            (4, 8, 16),
            (4, 64, 8, 16),
            32,
            16,
            16,
            256,
            True,
        )
    return Config(
        FULL_SHAPES,
        repeats or 3,
        [128, 256, 512, 1024, 2048, 4096],
        (32, 256, 256),
        (32, 4096, 512, 512),
        512,
        256,
        256,
        2048,
        False,
    )


# -- timing -------------------------------------------------------------------------------------


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


# -- implementations: each returns (train_fn, infer_fn) closures over fixed inputs ---------------


def _jax_pair(forward: Callable, params: Any, xs: Any, compiler_options: dict | None = None):
    """Jitted training step (grads of mean(ys^2) w.r.t. params) and inference for JAX models."""

    def loss(p, x):
        return jnp.mean(jnp.square(forward(p, x)))

    train = jax.jit(jax.grad(loss), compiler_options=compiler_options)
    infer = jax.jit(forward, compiler_options=compiler_options)
    return (lambda: train(params, xs)), (lambda: infer(params, xs))


# XLA:CPU's Eigen dots instead of YNNPACK (a per-compile option; see seqjax.kernels).
EIGEN_DOTS = kernels.XLA_CPU_EIGEN_DOTS
eigen_dots_supported = kernels.eigen_dots_supported


def seqjax_impl(kind: str, impl: str, compiler_options: dict | None = None):
    def build(B, T, I, H, xs):
        cell = seqjax.LSTM(H) if kind == "lstm" else seqjax.GRU(H, reset_after=True)
        params = cell.init(jax.random.key(0), I)

        def forward(p, x):
            return seqjax.scan(cell, p, x, impl=impl)[1]

        return _jax_pair(forward, params, xs, compiler_options)

    return build


def flax_impl(cell_cls):
    def build(B, T, I, H, xs):
        model = nn.RNN(cell_cls(H))
        params = model.init(jax.random.key(0), xs)
        return _jax_pair(lambda p, x: model.apply(p, x), params, xs)

    return build


def equinox_impl(kind: str):
    def build(B, T, I, H, xs):
        cls = eqx.nn.LSTMCell if kind == "lstm" else eqx.nn.GRUCell
        cell = cls(I, H, key=jax.random.key(0))
        params, static = eqx.partition(cell, eqx.is_array)

        def forward(p, x):
            c = eqx.combine(p, static)
            step = jax.vmap(c)  # equinox cells are unbatched: vmap over the batch
            h0 = jnp.zeros((x.shape[0], H), x.dtype)
            carry0 = (h0, h0) if kind == "lstm" else h0

            def body(carry, x_t):
                carry = step(x_t, carry)
                return carry, carry[0] if kind == "lstm" else carry

            _, ys = jax.lax.scan(body, carry0, jnp.swapaxes(x, 0, 1))
            return jnp.swapaxes(ys, 0, 1)

        return _jax_pair(forward, params, xs)

    return build


def pinned(fn: Callable[[], Any], threads: int | None) -> Callable[[], Any]:
    """``fn`` run with ``torch.set_num_threads(threads)`` (restored after); None: unchanged."""
    if threads is None:
        return fn

    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return run


def torch_impl(kind: str, threads: int | None = None):
    """PyTorch ``nn.LSTM``/``nn.GRU``; ``threads`` pins ``torch.set_num_threads`` while it runs."""

    def build(B, T, I, H, xs):
        torch.manual_seed(0)
        cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
        model = cls(I, H, batch_first=True)
        x = torch.from_numpy(np.array(xs))  # a writable copy

        def train():
            model.zero_grad(set_to_none=True)
            y, _ = model(x)
            y.square().mean().backward()
            return y

        def infer():
            with torch.no_grad():
                return model(x)[0]

        return pinned(train, threads), pinned(infer, threads)

    return build


def entries(kind: str) -> dict[str, Callable]:
    """Name -> builder for the implementations available in this environment."""
    out = {
        "seqjax fused": seqjax_impl(kind, "fused"),
        "seqjax reference": seqjax_impl(kind, "reference"),
    }
    if eigen_dots_supported():
        out["seqjax fused, Eigen dots"] = seqjax_impl(kind, "fused", EIGEN_DOTS)
    if nn is not None:
        if kind == "lstm":
            out["flax LSTMCell"] = flax_impl(nn.LSTMCell)
            out["flax OptimizedLSTMCell"] = flax_impl(nn.OptimizedLSTMCell)
        else:
            out["flax GRUCell"] = flax_impl(nn.GRUCell)
    if eqx is not None:
        out[f"equinox {'LSTMCell' if kind == 'lstm' else 'GRUCell'}"] = equinox_impl(kind)
    if torch is not None:
        out[f"torch nn.{kind.upper()}"] = torch_impl(kind)
        # one thread: the fair comparison when the (shared) CPU is oversubscribed, where
        # PyTorch's OpenMP threads wait on each other
        out[f"torch nn.{kind.upper()} 1 thread"] = torch_impl(kind, threads=1)
    return out


# -- workloads ----------------------------------------------------------------------------------


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


def run_layers(cfg: Config, peak: float, log) -> list[dict]:
    rows = []
    for B, T, I, H in cfg.shapes:
        xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
        for kind in ("lstm", "gru"):
            built = {name: build(B, T, I, H, xs) for name, build in entries(kind).items()}
            for w, workload in enumerate(("train", "infer")):
                budget = None if cfg.quick else 40.0
                timed = time_interleaved({k: v[w] for k, v in built.items()}, cfg.repeats, budget)
                flops = matmul_flops(kind, B, T, I, H, workload == "train")
                for name, t in timed.items():
                    row = dict(
                        kind=kind,
                        impl=name,
                        workload=workload,
                        B=B,
                        T=T,
                        I=I,
                        H=H,
                        ms=1e3 * t["median_s"],
                        min_ms=1e3 * t["min_s"],
                        runs=t["runs"],
                        gflops=flops / t["median_s"] / 1e9,
                    )
                    row["roofline_frac"] = row["gflops"] / peak
                    rows.append(row)
                    log(
                        f"  {kind:4s} {workload:5s} B={B} T={T} I={I} H={H}  {name:24s} "
                        f"{row['ms']:9.2f} ms  {row['gflops']:6.1f} GFLOP/s "
                        f"({100 * row['roofline_frac']:.0f}% of roofline, {t['runs']} runs)"
                    )
    return rows


def run_recurrent_floor(cfg: Config, log) -> list[dict]:
    """Time of the per-step recurrent matmul ``[B, H] x [H, G*H]`` in XLA and in PyTorch.

    The recurrence is sequential: a training step must run this matmul ``T`` times forward
    (``h @ W_hh``) and ``T`` times backward (``dA @ W_hh^T``, same FLOPs), one after the other,
    so ``2 T t_step`` is a floor for any implementation built on that matmul library, whatever it
    does with the rest. XLA's ``t_step`` is measured inside a ``lax.scan`` of ``T`` chained steps
    (``h <- tanh((h @ W)[:, :H])``, as in the cells); PyTorch's as ``torch.mm(..., out=)`` in a
    Python loop with its default threads and with one thread.

    Returns:
      One dict per (kind, shape): ``xla_us`` / ``torch_us`` / ``torch_1thread_us`` per step, the
      GFLOP/s of each, and ``*_floor_ms = 2 T t_step`` for a training step.
    """
    out = []
    for B, T, I, H in cfg.shapes:
        for kind in ("lstm", "gru"):
            N = GATES[kind] * H
            flops = 2.0 * B * H * N
            w = jax.random.normal(jax.random.key(2), (H, N), jnp.float32) / np.sqrt(H)
            h0 = jax.random.normal(jax.random.key(3), (B, H), jnp.float32)

            @jax.jit
            def chain(w, h0, H=H, T=T):
                def body(h, _):
                    return jnp.tanh((h @ w)[:, :H]), None

                return lax.scan(body, h0, None, length=T)[0]

            t = time_fn(lambda w=w, h0=h0, chain=chain: chain(w, h0), max(cfg.repeats, 3))
            row = dict(kind=kind, B=B, T=T, I=I, H=H, xla_us=1e6 * t["median_s"] / T)
            if torch is not None:
                a, b, o = torch.randn(B, H), torch.randn(H, N), torch.empty(B, N)

                def loop(a=a, b=b, o=o, T=T):
                    for _ in range(T):
                        torch.mm(a, b, out=o)
                    return o

                row["torch_us"] = 1e6 * time_fn(loop, max(cfg.repeats, 3))["median_s"] / T
                row["torch_1thread_us"] = (
                    1e6 * time_fn(pinned(loop, 1), max(cfg.repeats, 3))["median_s"] / T
                )
            for lib in ("xla", "torch", "torch_1thread"):
                if f"{lib}_us" in row:
                    row[f"{lib}_gflops"] = flops / (row[f"{lib}_us"] * 1e-6) / 1e9
                    row[f"{lib}_floor_ms"] = 2 * T * row[f"{lib}_us"] / 1e3
            out.append(row)
            log(
                f"  recurrent matmul {kind:4s} [{B}, {H}] x [{H}, {N}]: XLA "
                f"{row['xla_us']:7.1f} us ({row['xla_gflops']:5.1f} GFLOP/s)"
                + (
                    f", torch {row['torch_us']:7.1f} us ({row['torch_gflops']:5.1f}), "
                    f"1 thread {row['torch_1thread_us']:7.1f} us "
                    f"({row['torch_1thread_gflops']:5.1f})"
                    if "torch_us" in row
                    else ""
                )
            )
    return out


def ratios(rows: list[dict]) -> list[dict]:
    """seqjax fused speed relative to every other entry of the same shape and workload."""
    out = []
    key = lambda r: (r["kind"], r["workload"], r["B"], r["T"], r["I"], r["H"])
    groups: dict = {}
    for r in rows:
        groups.setdefault(key(r), {})[r["impl"]] = r["ms"]
    for k, g in groups.items():
        if "seqjax fused" not in g:
            continue
        for impl, ms in g.items():
            if impl != "seqjax fused":
                out.append(
                    dict(
                        zip(("kind", "workload", "B", "T", "I", "H"), k, strict=True),
                        versus=impl,
                        speedup=ms / g["seqjax fused"],
                    )
                )
    return out


def run_generation(cfg: Config, repeats: int) -> dict:
    """Per-token latency of sampling at B=1: seqjax.decode.generate vs a PyTorch loop."""
    from seqjax import decode

    H, V, N = cfg.gen_hidden, cfg.gen_vocab, cfg.gen_tokens
    E = H
    cell = seqjax.LSTM(H)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = dict(
        emb=0.1 * jax.random.normal(k1, (V, E)),
        cell=cell.init(k2, E),
        out=0.05 * jax.random.normal(k3, (H, V)),
    )

    def step_fn(p, carry, tok):
        carry, h = cell(p["cell"], carry, p["emb"][tok])
        return carry, h @ p["out"]

    prompt = jnp.zeros((1, 1), jnp.int32)
    carry0 = cell.initial_carry((1,))

    def gen():
        return decode.generate(
            step_fn, params, carry0, prompt, jax.random.key(1), length=N, temperature=1.0
        )[0]

    res = {"B": 1, "H": H, "vocab": V, "tokens": N}
    fns = {"seqjax": gen}
    if torch is not None:
        torch.manual_seed(0)
        emb, lstm, out = torch.nn.Embedding(V, E), torch.nn.LSTM(E, H), torch.nn.Linear(H, V)
        gen_t = torch.Generator().manual_seed(1)

        def torch_gen():
            with torch.no_grad():
                tok = torch.zeros(1, dtype=torch.long)
                state, toks = None, []
                for _ in range(N):
                    y, state = lstm(emb(tok)[None], state)
                    probs = torch.softmax(out(y[0]), dim=-1)
                    tok = torch.multinomial(probs, 1, generator=gen_t)[:, 0]
                    toks.append(tok)
                return torch.stack(toks)

        fns.update(torch_default=torch_gen, torch_1thread=pinned(torch_gen, 1))
    # interleaved rounds: PyTorch's per-token Python overhead varies run to run
    timed = time_interleaved(fns, repeats)
    res["seqjax_ms_per_token"] = 1e3 * timed["seqjax"]["median_s"] / N
    if torch is not None:
        res["torch_loop_default_threads_ms_per_token"] = (
            1e3 * timed["torch_default"]["median_s"] / N
        )
        res["torch_loop_1_thread_ms_per_token"] = 1e3 * timed["torch_1thread"]["median_s"] / N
        # compare with the faster PyTorch setting (one thread wins on a loaded machine)
        res["torch_loop_ms_per_token"] = min(
            res["torch_loop_default_threads_ms_per_token"], res["torch_loop_1_thread_ms_per_token"]
        )
        res["speedup"] = res["torch_loop_ms_per_token"] / res["seqjax_ms_per_token"]
    return res


def _compiled_train(cell, params, xs, remat):
    def loss(p, x):
        return jnp.mean(jnp.square(seqjax.scan(cell, p, x, remat=remat)[1]))

    return jax.jit(jax.grad(loss)).lower(params, xs).compile()


def _peak_bytes(compiled) -> dict:
    m = compiled.memory_analysis()
    total = (
        m.temp_size_in_bytes
        + m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
    )
    return {"temp_mb": m.temp_size_in_bytes / 2**20, "peak_mb": total / 2**20}


def run_scaling(cfg: Config, log) -> dict:
    """LSTM training time versus T, and memory/time with and without remat at long T."""
    B, I, H = cfg.scaling_shape
    out: dict = {"shape": dict(B=B, I=I, H=H), "T": [], "seqjax_fused_ms": [], "torch_ms": []}
    cell = seqjax.LSTM(H)
    params = cell.init(jax.random.key(0), I)
    for T in cfg.scaling_T:
        xs = jax.random.normal(jax.random.key(1), (B, T, I))
        compiled = _compiled_train(cell, params, xs, False)
        reps = 1 if T >= 1024 and not cfg.quick else 3
        t = time_fn(lambda c=compiled, x=xs: c(params, x), reps, warmup=0 if reps == 1 else 1)
        out["T"].append(T)
        out["seqjax_fused_ms"].append(1e3 * t["median_s"])
        msg = f"  scaling T={T:5d}  seqjax fused {1e3 * t['median_s']:9.1f} ms"
        if torch is not None:
            train, _ = torch_impl("lstm")(B, T, I, H, xs)
            t = time_fn(train, reps, warmup=0 if reps == 1 else 1)
            out["torch_ms"].append(1e3 * t["median_s"])
            msg += f"   torch {1e3 * t['median_s']:9.1f} ms"
        log(msg)

    B, T, I, H = cfg.remat_shape
    cell = seqjax.LSTM(H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    rem: dict = {"shape": dict(B=B, T=T, I=I, H=H)}
    for label, remat in (("no_remat", False), ("remat", True)):
        compiled = _compiled_train(cell, params, xs, remat)
        mem = _peak_bytes(compiled)
        t = time_fn(lambda c=compiled: c(params, xs), 1 if not cfg.quick else 2, warmup=0)
        rem[label] = dict(ms=1e3 * t["median_s"], **mem)
        log(
            f"  remat={remat!s:5s} B={B} T={T} H={H}: {1e3 * t['median_s']:9.1f} ms, "
            f"peak {mem['peak_mb']:8.1f} MiB (temporaries {mem['temp_mb']:8.1f} MiB)"
        )
    rem["memory_ratio"] = rem["remat"]["peak_mb"] / rem["no_remat"]["peak_mb"]
    rem["time_ratio"] = rem["remat"]["ms"] / rem["no_remat"]["ms"]
    out["remat"] = rem
    return out


# -- report -------------------------------------------------------------------------------------


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark; returns the result dict that is also written as JSON.

    Args:
      argv: command-line arguments (default ``sys.argv[1:]``): ``--quick``, ``--out DIR``,
        ``--repeats N``, ``--no-plot``.

    Returns:
      ``{"config", "environment", "roofline", "layers", "ratios", "recurrent_floor",
      "generation", "scaling", "targets", "wall_s"}``.
    """
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.rnn", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (tests)")
    ap.add_argument(
        "--out",
        default=os.path.join("benchmarks", "results"),
        help="directory for rnn.json and rnn.png",
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per entry")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = ap.parse_args(argv)
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
    main(sys.argv[1:])
