"""Long-lag tasks: the adding problem and the copy memory task, one model per command.

Train one model and print, as the last stdout line, one JSON object with the results::

    python -m experiments.long_range --task adding --cell lstm --length 100 --steps 2000 --seed 0

Cells: ``rnn`` (tanh Elman), ``lstm`` (no peepholes), ``gru``, ``peephole`` (Greff et al.'s
vanilla ``V``: LSTM with peepholes) and ``cifg`` (Greff et al.'s ``CIFG``: coupled input and
forget gates, with peepholes), or any Greff et al. (2017) variant by name: ``V``, ``NIG``,
``NFG``, ``NOG``, ``NIAF``, ``NOAF``, ``NP``, ``CIFG``, ``FGR`` (case-insensitive).

Every model gets the same parameter budget (``--budget``, counting the cell and the linear
readout): the hidden size of each cell is the largest whose parameter count fits the budget,
unless ``--hidden`` fixes it.

Sweeps over lengths and cells (experiments 1 and 2 of issue 5) build on the same function::

    python -m experiments.long_range sweep --task adding [--quick]

writes ``experiments/results/long_range/{adding,copy}[_quick].{json,md,png}``.

Model: inputs (adding: the two features; copy: one-hot tokens) -> cell scanned over time by
:func:`seqjax.scan` -> linear readout (adding: on the last output, one value; copy: at every
step, logits over the 9 target tokens). Loss: MSE (adding) or mean cross-entropy per step (copy).
Training: :mod:`seqjax.train` (``make_optimizer``: Adam with global-norm clipping;
``make_train_step``), a fresh batch per step drawn from the step key, evaluation on a
fixed held-out batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqjax
from seqjax.data import synthetic

TASKS = ("adding", "copy")
BASE_CELLS = ("rnn", "lstm", "gru", "peephole", "cifg")
VARIANTS = tuple(seqjax.GREFF_VARIANTS)  # V, NIG, NFG, NOG, NIAF, NOAF, NP, CIFG, FGR
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "long_range"

# Adding: values + markers. Copy: one-hot over blank, 8 symbols, delimiter; targets blank + 8.
_COPY_SYMBOLS = 8
_COPY_IN = _COPY_SYMBOLS + 2
_COPY_OUT = _COPY_SYMBOLS + 1
SOLVED_MSE = 0.01


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run.

    Attributes:
      task: ``"adding"`` or ``"copy"``.
      cell: a name from :data:`BASE_CELLS` or :data:`VARIANTS`.
      length: ``T`` (adding: sequence length; copy: the delay, sequences are ``T + 20``).
      steps: optimiser steps.
      seed: seeds the initialisation, the training batches and nothing else (the test set is
        fixed by ``test_seed``).
      hidden: hidden size, or None to fit ``budget``.
      budget: parameter budget (cell + readout) used when ``hidden`` is None.
      batch_size: training examples per step.
      learning_rate: the optimiser's learning rate.
      optimizer: ``"adam"`` or ``"sgd"`` (plain SGD, for the exploding-gradient demonstration,
        where Adam's per-coordinate normalisation would hide the gradient's scale).
      clip_norm: global-norm clipping threshold, or None for none.
      forget_bias: initial forget-gate bias of LSTM-family cells.
      init_scale: multiplies the default initial input and recurrent weights (Glorot-uniform
        and orthogonal); 1 keeps the library defaults.
      test_size: held-out examples.
      test_seed: key of the held-out set, shared by every run.
      eval_every: steps between evaluations of the held-out loss.
    """

    task: str = "adding"
    cell: str = "lstm"
    length: int = 100
    steps: int = 2000
    seed: int = 0
    hidden: int | None = None
    budget: int = 4700
    batch_size: int = 50
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    clip_norm: float | None = 1.0
    forget_bias: float = 1.0
    init_scale: float = 1.0
    test_size: int = 1000
    test_seed: int = 12345
    eval_every: int = 250

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        canonical_cell(self.cell)
        for name in ("length", "steps", "batch_size", "test_size", "eval_every", "budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.task == "adding" and self.length < 2:
            raise ValueError(f"the adding problem needs length >= 2, got {self.length}")
        if self.hidden is not None and (not isinstance(self.hidden, int) or self.hidden < 1):
            raise ValueError(f"hidden must be a positive int or None, got {self.hidden!r}")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {self.init_scale}")


def canonical_cell(name: str) -> str:
    """Normalises a cell name: base cells lower case, Greff variants upper case.

    Args:
      name: e.g. ``"lstm"``, ``"GRU"``, ``"nfg"``, ``"peephole"``.

    Returns:
      ``"rnn" | "lstm" | "gru"`` or a variant name (``"peephole"`` is ``"V"`` and ``"cifg"``
      is ``"CIFG"``).

    Raises:
      ValueError: an unknown name.
    """
    if not isinstance(name, str):
        raise TypeError(f"cell must be a str, got {type(name).__name__}")
    low = name.lower()
    if low in ("rnn", "lstm", "gru"):
        return low
    if low == "peephole":
        return "V"
    if name.upper() in VARIANTS:
        return name.upper()
    raise ValueError(
        f"unknown cell {name!r}; expected one of {BASE_CELLS} or a Greff variant {VARIANTS}"
    )


@dataclasses.dataclass(frozen=True)
class ScaledInit:
    """An initializer times a constant; hashable by value, so equal cells share compilations.

    Attributes:
      init: the base initializer ``(key, shape, dtype) -> array``.
      scale: the multiplier.
    """

    init: Callable[..., jax.Array]
    scale: float

    def __call__(self, key, shape, dtype=jnp.float32):
        return self.init(key, shape, dtype) * jnp.asarray(self.scale, dtype)


def make_cell(
    name: str, hidden: int, *, forget_bias: float = 1.0, init_scale: float = 1.0
) -> seqjax.Cell:
    """Builds the cell definition of an experiment.

    Args:
      name: a cell name (see :func:`canonical_cell`).
      hidden: hidden size ``H``.
      forget_bias: initial forget-gate bias (LSTM family only).
      init_scale: multiplies the default input and recurrent initial weights.

    Returns:
      A seqjax cell.

    Example:
      >>> make_cell("cifg", 8).coupled
      True
    """
    name = canonical_cell(name)
    kw: dict[str, Any] = {}
    if init_scale != 1.0:
        from seqjax.cells.base import glorot_uniform, orthogonal

        kw = dict(
            kernel_init=ScaledInit(glorot_uniform, init_scale),
            recurrent_init=ScaledInit(orthogonal, init_scale),
        )
    if name == "rnn":
        return seqjax.SimpleRNN(hidden_size=hidden, **kw)
    if name == "gru":
        return seqjax.GRU(hidden_size=hidden, **kw)
    if name == "lstm":
        return seqjax.LSTM(hidden_size=hidden, forget_bias=forget_bias, **kw)
    return seqjax.LSTM.variant(name, hidden, forget_bias=forget_bias, **kw)


def io_sizes(task: str) -> tuple[int, int]:
    """``(input_size, output_size)`` of the model for ``task``."""
    return (2, 1) if task == "adding" else (_COPY_IN, _COPY_OUT)


def param_count(cell: seqjax.Cell, input_size: int, output_size: int) -> int:
    """Parameters of the cell plus a linear readout ``[H, O] + [O]`` (shapes only, no FLOPs)."""
    shapes = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
    n = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
    return n + cell.output_size * output_size + output_size


def hidden_for_budget(name: str, task: str, budget: int) -> int:
    """Largest hidden size whose model (cell + readout) has at most ``budget`` parameters.

    Args:
      name: cell name.
      task: ``"adding"`` or ``"copy"`` (sets input and output sizes).
      budget: parameter budget.

    Returns:
      ``H >= 1``.

    Raises:
      ValueError: not even ``H = 1`` fits.

    Example:
      >>> hidden_for_budget("lstm", "adding", 4700)
      32
    """
    i, o = io_sizes(task)
    if param_count(make_cell(name, 1), i, o) > budget:
        raise ValueError(f"budget {budget} is too small for a {name} cell on {task}")
    lo, hi = 1, 2
    while param_count(make_cell(name, hi), i, o) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        if param_count(make_cell(name, mid), i, o) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


class Model(NamedTuple):
    """A cell with a linear readout: static definition, parameters built by :meth:`init`."""

    cell: seqjax.Cell
    task: str

    def init(self, key: jax.Array) -> dict[str, Any]:
        i, o = io_sizes(self.task)
        k_cell, k_out = jax.random.split(key)
        H = self.cell.output_size
        w = jax.random.normal(k_out, (H, o), jnp.float32) / jnp.sqrt(jnp.float32(H))
        return {
            "cell": self.cell.init(k_cell, i),
            "readout": {"w": w, "b": jnp.zeros((o,), jnp.float32)},
        }

    def features(self, inputs: jax.Array) -> jax.Array:
        if self.task == "adding":
            return inputs
        return jax.nn.one_hot(inputs, _COPY_IN, dtype=jnp.float32)

    def apply(self, params, inputs: jax.Array, carry_hook=None) -> jax.Array:
        """Predictions: adding ``[B]``, copy logits ``[B, L, 9]``."""
        xs = self.features(inputs)
        if carry_hook is None:
            _, ys = seqjax.scan(self.cell, params["cell"], xs)
        else:
            ys = carry_hook(self.cell, params["cell"], xs)
        r = params["readout"]
        if self.task == "adding":
            return (ys[:, -1] @ r["w"] + r["b"])[:, 0]
        return ys @ r["w"] + r["b"]

    def loss(self, params, inputs, targets, carry_hook=None) -> jax.Array:
        out = self.apply(params, inputs, carry_hook)
        if self.task == "adding":
            return jnp.mean(jnp.square(out - targets))
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, targets))

    def metrics(self, params, inputs, targets) -> dict[str, jax.Array]:
        out = self.apply(params, inputs)
        if self.task == "adding":
            return {"test_mse": jnp.mean(jnp.square(out - targets))}
        K = 10
        xent = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, targets))
        acc = jnp.mean(jnp.argmax(out[:, -K:], -1) == targets[:, -K:])
        return {"test_xent": xent, "recall_accuracy": acc.astype(jnp.float32)}


def make_batch(task: str, key: jax.Array, batch_size: int, length: int):
    """``(inputs, targets)`` of one batch of ``task``."""
    if task == "adding":
        b = synthetic.adding_problem(key, batch_size, length)
    else:
        b = synthetic.copy_memory(key, batch_size, length, num_symbols=_COPY_SYMBOLS)
    return b.inputs, b.targets


def baseline(task: str, length: int) -> float:
    """The memoryless baseline: 1/6 (adding MSE) or ``10 ln 8 / (T + 20)`` (copy xent)."""
    if task == "adding":
        return synthetic.ADDING_BASELINE_MSE
    return synthetic.copy_baseline_xent(length, num_symbols=_COPY_SYMBOLS)


def make_optimizer(learning_rate: float, clip_norm: float | None, optimizer: str = "adam"):
    """``chain(clip_by_global_norm, adam | sgd)`` from :func:`seqjax.train.make_optimizer`."""
    from seqjax import train

    return train.make_optimizer(optimizer, learning_rate, clip_norm=clip_norm)


@functools.lru_cache(maxsize=64)
def _compiled(model: Model, cfg_key: tuple):
    """Jitted chunk-of-steps and evaluation functions, shared by runs with equal shapes.

    The step is :func:`seqjax.train.make_train_step`'s (unjitted, so ``chunk`` of them run in
    one ``lax.scan`` without a host round trip per step). Each step draws its batch from the
    step key ``fold_in(state.rng, state.step)`` inside the loss, so the data stream is a pure
    function of the seed.
    """
    from seqjax import train

    batch_size, length, lr, clip, optimizer, chunk = cfg_key
    opt = make_optimizer(lr, clip, optimizer)

    def loss_fn(params, batch, rng):
        del batch  # generated from the step key
        inputs, targets = make_batch(model.task, rng, batch_size, length)
        count = targets.size
        loss = model.loss(params, inputs, targets)
        return train.LossOutput(loss * count, jnp.asarray(count, jnp.float32))

    step_fn = train.make_train_step(loss_fn, opt, jit=False, donate=False)

    def one_step(state, _):
        state, metrics = step_fn(state, None)
        return state, (metrics["loss_sum"] / metrics["count"], metrics["grad_norm_sum"])

    @jax.jit
    def run_chunk(state):
        state, (losses, gnorms) = jax.lax.scan(one_step, state, None, length=chunk)
        return state, losses, gnorms

    @jax.jit
    def evaluate(params, inputs, targets):
        return model.metrics(params, inputs, targets)

    return opt, run_chunk, evaluate


class Fit(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      model: the :class:`Model` (cell definition and task).
      params: trained parameters.
      result: the JSON-serialisable summary (see :func:`train_and_evaluate`).
      losses: training loss of every step ``[steps]``.
      grad_norms: global gradient norm (before clipping) of every step ``[steps]``.
    """

    model: Model
    params: Any
    result: dict[str, Any]
    losses: np.ndarray
    grad_norms: np.ndarray


def fit(config: Config, *, log: Callable[[str], None] | None = None) -> Fit:
    """Trains one model on one task; evaluates on the fixed held-out set every ``eval_every``.

    Args:
      config: the run's :class:`Config`.
      log: called with one progress line per evaluation (default: nothing).

    Returns:
      A :class:`Fit`.
    """
    cell_name = canonical_cell(config.cell)
    hidden = config.hidden or hidden_for_budget(cell_name, config.task, config.budget)
    cell = make_cell(
        cell_name, hidden, forget_bias=config.forget_bias, init_scale=config.init_scale
    )
    model = Model(cell, config.task)
    chunk = math.gcd(config.steps, config.eval_every)
    opt, run_chunk, evaluate = _compiled(
        model,
        (
            config.batch_size,
            config.length,
            config.learning_rate,
            config.clip_norm,
            config.optimizer,
            chunk,
        ),
    )
    key = jax.random.key(config.seed)
    k_init, k_data = jax.random.split(key)
    from seqjax import train

    state = train.TrainState.create(model.init(k_init), opt, rng=k_data)
    test_in, test_tg = make_batch(
        config.task, jax.random.key(config.test_seed), config.test_size, config.length
    )
    t0 = time.perf_counter()
    history, all_losses, all_gnorms = [], [], []
    step = 0
    while step < config.steps:
        state, losses, gnorms = run_chunk(state)
        step += chunk
        losses = np.asarray(losses)
        all_losses.append(losses)
        all_gnorms.append(np.asarray(gnorms))
        if step % config.eval_every == 0 or step == config.steps:
            m = {k: float(v) for k, v in evaluate(state.params, test_in, test_tg).items()}
            history.append({"step": step, "train_loss": float(np.mean(losses)), **m})
            if log is not None:
                log(
                    f"step {step}: "
                    + ", ".join(f"{k} {v:.4g}" for k, v in history[-1].items() if k != "step")
                )
    wall = time.perf_counter() - t0
    losses, gnorms = np.concatenate(all_losses), np.concatenate(all_gnorms)
    final = history[-1]
    result: dict[str, Any] = {
        "task": config.task,
        "cell": cell_name,
        "length": config.length,
        "steps": config.steps,
        "seed": config.seed,
        "hidden": hidden,
        "params": param_count(cell, *io_sizes(config.task)),
        "baseline": baseline(config.task, config.length),
    }
    if config.task == "adding":
        result["test_mse"] = final["test_mse"]
        result["solved"] = bool(final["test_mse"] < SOLVED_MSE)
    else:
        result["test_xent"] = final["test_xent"]
        result["recall_accuracy"] = final["recall_accuracy"]
    # A non-finite loss or gradient freezes the state (seqjax.train skips the update and every
    # later step); the run is reported with the step where it happened.
    bad = int(state.nonfinite_step)
    if bad >= 0:
        losses[bad:], gnorms[bad:] = np.nan, np.nan
    finite = np.isfinite(gnorms)
    result.update(
        final_train_loss=float(losses[-1]),
        nonfinite=bad >= 0,
        nonfinite_step=bad if bad >= 0 else None,
        max_grad_norm=float(np.max(gnorms[finite])) if finite.any() else None,
        wall_s=round(wall, 2),
        config=dataclasses.asdict(config),
        history=history,
    )
    return Fit(model, state.params, result, losses, gnorms)


def train_and_evaluate(
    config: Config, workdir: str | Path | None = None, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Trains one model on one task and evaluates it on the fixed held-out set.

    Args:
      config: the run's :class:`Config`.
      workdir: if given, ``config.json``, ``history.json`` and ``result.json`` are written there.
      log: called with one progress line per evaluation (default: nothing).

    Returns:
      A JSON-serialisable dict with ``task, cell, length, steps, seed, hidden, params,
      baseline, wall_s``, the metrics (``test_mse`` and ``solved`` for adding; ``test_xent``
      and ``recall_accuracy`` for copy), ``final_train_loss``, ``nonfinite`` (a NaN/inf
      loss or gradient appeared; training then stops updating, see
      :func:`seqjax.train.make_train_step`) with ``nonfinite_step``, ``max_grad_norm`` and the
      evaluation ``history``.

    Example:
      >>> r = train_and_evaluate(Config(task="adding", cell="gru", length=5, steps=4,
      ...                               hidden=4, eval_every=2, test_size=8))
      >>> sorted(k for k in r if k.startswith("test"))
      ['test_mse']
    """
    result = fit(config, log=log).result
    if workdir is not None:
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
        (wd / "history.json").write_text(json.dumps(result["history"], indent=1))
        (wd / "result.json").write_text(
            json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1)
        )
    return result


# -- sweeps over lengths and cells (experiments 1 and 2) --------------------------------------

SWEEPS: dict[str, dict[str, dict[str, Any]]] = {
    "adding": {
        "full": dict(cells=BASE_CELLS, lengths=(50, 100, 200, 400), steps=4000, seeds=(0,)),
        "quick": dict(cells=BASE_CELLS, lengths=(50, 100, 200, 400), steps=2000, seeds=(0,)),
    },
    "copy": {
        "full": dict(cells=BASE_CELLS, lengths=(50, 100, 200), steps=4000, seeds=(0,)),
        "quick": dict(cells=BASE_CELLS, lengths=(50, 100, 200), steps=1000, seeds=(0,)),
    },
}


def run_sweep(
    task: str,
    quick: bool,
    out_dir: Path = RESULTS_DIR,
    log: Callable[[str], None] = print,
    spec: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Experiments 1 and 2: every cell at every length; writes JSON, Markdown and a PNG.

    Args:
      task: ``"adding"`` or ``"copy"``.
      quick: use the quick config (fewer steps) and the ``_quick`` file names.
      out_dir: results folder.
      log: progress printer.
      spec: overrides the grid (``cells, lengths, steps, seeds`` and optionally ``hidden``);
        default :data:`SWEEPS`.

    Returns:
      The list of per-run results.
    """
    spec = spec or SWEEPS[task]["quick" if quick else "full"]
    tag = f"{task}{'_quick' if quick else ''}"
    rows, t0 = [], time.perf_counter()
    for length in spec["lengths"]:
        for cell in spec["cells"]:
            for seed in spec["seeds"]:
                cfg = Config(
                    task=task,
                    cell=cell,
                    length=length,
                    steps=spec["steps"],
                    seed=seed,
                    hidden=spec.get("hidden"),
                )
                r = train_and_evaluate(cfg)
                log(json.dumps({k: v for k, v in r.items() if k not in ("history", "config")}))
                rows.append(r)
    total = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = f"python -m experiments.long_range sweep --task {task}{' --quick' if quick else ''}"
    payload = {
        "command": cmd,
        "wall_s": round(total, 1),
        "spec": spec,
        "config_defaults": dataclasses.asdict(Config(task=task)),
        "runs": rows,
    }
    (out_dir / f"{tag}.json").write_text(json.dumps(payload, indent=1))
    (out_dir / f"{tag}.md").write_text(_sweep_markdown(task, rows, cmd, total))
    _sweep_figure(task, rows, out_dir / f"{tag}.png")
    return rows


def replot_sweep(task: str, quick: bool, out_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Rebuilds a sweep's Markdown table and figure from its saved JSON (no training).

    Args:
      task: ``"adding"`` or ``"copy"``.
      quick: which result set (``_quick`` or full).
      out_dir: results folder.

    Returns:
      The saved runs.

    Raises:
      FileNotFoundError: the sweep has not been run.
    """
    tag = f"{task}{'_quick' if quick else ''}"
    payload = json.loads((out_dir / f"{tag}.json").read_text())
    rows = payload["runs"]
    (out_dir / f"{tag}.md").write_text(
        _sweep_markdown(task, rows, payload["command"], payload["wall_s"])
    )
    _sweep_figure(task, rows, out_dir / f"{tag}.png")
    return rows


def _fmt(x: float) -> str:
    return f"{x:.2e}" if abs(x) < 1e-3 or abs(x) >= 1e3 else f"{x:.4f}"


def _sweep_markdown(task: str, rows: list[dict], cmd: str, wall: float) -> str:
    lengths = sorted({r["length"] for r in rows})
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    metric = "test_mse" if task == "adding" else "test_xent"
    lines = [f"`{cmd}` ({wall:.0f} s)", ""]
    head = "| cell | H | params | " + " | ".join(f"T={t}" for t in lengths) + " |"
    lines += [head, "|" + "---|" * (3 + len(lengths))]
    for c in cells:
        rs = {r["length"]: r for r in rows if r["cell"] == c and r["seed"] == rows[0]["seed"]}
        any_r = next(iter(rs.values()))
        cells_txt = []
        for t in lengths:
            r = rs[t]
            if task == "adding":
                cells_txt.append(_fmt(r[metric]) + (" **solved**" if r["solved"] else ""))
            else:
                cells_txt.append(f"{_fmt(r[metric])} / {r['recall_accuracy']:.2f}")
        lines.append(
            f"| {c} | {any_r['hidden']} | {any_r['params']} | " + " | ".join(cells_txt) + " |"
        )
    base = " | ".join(_fmt(baseline(task, t)) for t in lengths)
    lines.append(f"| baseline | | | {base} |")
    lines.append("")
    if task == "adding":
        lines.append("Test MSE on 1,000 held-out sequences; solved = MSE < 0.01; baseline 1/6.")
    else:
        lines.append(
            "Test cross-entropy per step (nats) / accuracy on the 10 recalled "
            "symbols (chance 0.125); baseline 10 ln 8 / (T + 20)."
        )
    return "\n".join(lines) + "\n"


def _sweep_figure(task: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in rows})
    cells = list(dict.fromkeys(r["cell"] for r in rows))

    def by_length(c):
        return sorted((r for r in rows if r["cell"] == c), key=lambda r: r["length"])

    if task == "adding":
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in cells:
            rs = by_length(c)
            ax.plot([r["length"] for r in rs], [r["test_mse"] for r in rs], "o-", label=c)
        ax.plot(lengths, [baseline(task, t) for t in lengths], "k--", label="baseline")
        ax.axhline(SOLVED_MSE, color="grey", lw=0.8, ls=":", label="solved (0.01)")
        ax.set_yscale("log")
        ax.set_ylabel("test MSE")
        axes = [ax]
    else:
        # The baseline falls as 1/(T + 20): plot the ratio to it, and the recall accuracy.
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for c in cells:
            rs = by_length(c)
            ts = [r["length"] for r in rs]
            axes[0].plot(ts, [r["test_xent"] / r["baseline"] for r in rs], "o-", label=c)
            axes[1].plot(ts, [r["recall_accuracy"] for r in rs], "o-", label=c)
        axes[0].axhline(1.0, color="k", ls="--", label="memoryless baseline")
        axes[0].set_ylabel("test cross-entropy / baseline")
        axes[1].axhline(1 / _COPY_SYMBOLS, color="k", ls="--", label="chance (1/8)")
        axes[1].set_ylabel("recall accuracy (10 recalled symbols)")
    for ax in axes:
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.set_xlabel("T")
        ax.set_title(f"{task}: equal parameter budget")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.long_range", description=__doc__.split("\n\n")[0]
    )
    d = Config()
    p.add_argument("--task", choices=TASKS, default=d.task)
    p.add_argument("--cell", default=d.cell)
    p.add_argument("--length", type=int, default=d.length)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--budget", type=int, default=d.budget)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer)
    p.add_argument(
        "--clip-norm",
        type=float,
        default=d.clip_norm,
        help="global-norm clipping threshold; 0 disables clipping",
    )
    p.add_argument("--forget-bias", type=float, default=d.forget_bias)
    p.add_argument("--init-scale", type=float, default=d.init_scale)
    p.add_argument("--test-size", type=int, default=d.test_size)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--workdir", default=None)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    """Command-line entry point (see the module docstring).

    Args:
      argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
      The run's result dict (also printed as the last stdout line), or the sweep's rows.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sweep":
        p = argparse.ArgumentParser(prog="python -m experiments.long_range sweep")
        p.add_argument("--task", choices=TASKS, required=True)
        p.add_argument("--quick", action="store_true")
        p.add_argument("--out", default=str(RESULTS_DIR))
        p.add_argument(
            "--replot",
            action="store_true",
            help="rebuild the Markdown table and the figure from the saved JSON",
        )
        a = p.parse_args(argv[1:])
        if a.replot:
            return replot_sweep(a.task, a.quick, Path(a.out))
        return run_sweep(a.task, a.quick, Path(a.out))
    a = _parser().parse_args(argv)
    try:
        cfg = Config(
            task=a.task,
            cell=a.cell,
            length=a.length,
            steps=a.steps,
            seed=a.seed,
            hidden=a.hidden,
            budget=a.budget,
            batch_size=a.batch_size,
            learning_rate=a.learning_rate,
            optimizer=a.optimizer,
            clip_norm=a.clip_norm or None,
            forget_bias=a.forget_bias,
            init_scale=a.init_scale,
            test_size=a.test_size,
            eval_every=min(a.eval_every, a.steps),
        )
    except (ValueError, TypeError) as e:
        _parser().error(str(e))
    result = train_and_evaluate(cfg, a.workdir, log=lambda s: print(s, file=sys.stderr))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return result


if __name__ == "__main__":
    main()
