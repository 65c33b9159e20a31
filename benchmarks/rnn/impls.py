"""The implementations compared: each builder returns ``(train_fn, infer_fn)`` closures.

A builder is called as ``build(B, T, I, H, xs)`` with inputs ``xs: [B, T, I]``; ``train_fn()``
computes the gradients of ``mean(ys**2)`` with respect to the parameters, ``infer_fn()`` the
forward pass ``ys: [B, T, H]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import seqjax
from benchmarks.rnn.optional import eqx, nn, torch
from seqjax import kernels


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
