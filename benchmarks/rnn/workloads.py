"""What is measured: layer training/inference, the recurrent matmul floor, generation, scaling."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import seqjax
from benchmarks.rnn.impls import entries, pinned, torch_impl
from benchmarks.rnn.optional import torch
from benchmarks.rnn.timing import GATES, matmul_flops, time_fn, time_interleaved

FULL_SHAPES = [(32, 128, 128, 256), (64, 64, 256, 512), (16, 256, 512, 1024)]
QUICK_SHAPES = [(4, 12, 8, 16)]


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
    parallel_T: list = dataclasses.field(default_factory=list)  # parallel-forms section
    parallel_shape: tuple = ()  # (B, I, H)


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
            [8],
            (2, 4, 8),
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
        [64, 256, 1024, 4096, 16384],
        (8, 256, 256),
    )


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
