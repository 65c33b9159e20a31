"""Gradient flow through time: vanishing and exploding gradients, and what clipping does.

Experiment 3 of issue 5, one command::

    python -m experiments.gradient_flow [--quick]

Part A measures ``||dLoss/dh_t||`` as a function of the distance ``k = T - 1 - t`` between
step ``t`` and the loss (the adding problem's loss sits on the last step) for a tanh RNN, an
LSTM with forget-gate bias 1 and 0, and a GRU, at initialisation and after training, and fits
the slope of ``log10 ||dL/dh||`` against ``k`` (the per-step decay is ``10**slope``).

Part B shows exploding gradients: a tanh RNN whose initial weights are scaled up (a chaotic
regime) has gradients that grow with ``k``; it is then trained with and without
``optax.clip_by_global_norm`` and the loss and gradient-norm curves are compared.

Writes ``experiments/results/long_range/gradient_flow[_quick].{json,md,png}``.

``dLoss/dh_t`` is measured by adding a zero perturbation ``e_t`` to the carry's ``h`` after
every step and differentiating with respect to ``e``: the gradient at ``e = 0`` is the total
derivative of the loss with respect to the state ``h_t`` (through all later steps).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import long_range as lr
from experiments import scaffold
from experiments.scaffold import ArgumentParser, check_output_dir, pyplot, write_outputs

RESULTS_DIR = lr.RESULTS_DIR


def state_gradient_norms(
    model: lr.Model, params: Any, inputs: jax.Array, targets: jax.Array
) -> dict[str, np.ndarray]:
    """Norms of the loss gradient with respect to every intermediate state.

        The per-example loss is differentiated (so the numbers do not shrink with the batch size);
        the norm over the hidden units is averaged over the batch.

        Args:
          model: a :class:`experiments.long_range.Model` (cell without a projection, so the
            cell's output equals ``carry.h``).
          params: its parameters.
          inputs: a batch ``[B, T, ...]`` of the model's task.
          targets: its targets.

        Returns:
          ``{"h": [T], "c": [T]}`` (``"c"`` only for cells whose carry has a cell state): entry
          ``t`` is the batch mean of ``||d loss_b / d h_t||_2``.

        Raises:
          TypeError: the cell's carry has no ``h`` field.

        Example:
          >>> import jax, seqjax
          >>> from experiments import long_range as lr
    from experiments import scaffold
    from experiments.scaffold import ArgumentParser, check_output_dir, pyplot, write_outputs
          >>> m = lr.Model(seqjax.GRU(4), "adding")
          >>> b = lr.make_batch("adding", jax.random.key(1), 2, 6)
          >>> state_gradient_norms(m, m.init(jax.random.key(0)), *b)["h"].shape
          (6,)
    """
    cell = model.cell
    carry0 = cell.initial_carry((inputs.shape[0],))
    if not hasattr(carry0, "h"):
        raise TypeError(
            f"state_gradient_norms needs a carry with an 'h' field, got {type(carry0).__name__}"
        )
    fields = [f for f in ("h", "c") if getattr(carry0, f, None) is not None]
    T = inputs.shape[1]

    def per_example_loss_sum(eps, params):
        def hook(cell, cparams, xs):
            xp = cell.project_inputs(cparams, jnp.moveaxis(xs, 1, 0))  # [T, B, G*H]

            def body(carry, inp):
                xp_t, eps_t = inp
                carry, _ = cell.step(cparams, carry, xp_t)
                carry = carry._replace(**{f: getattr(carry, f) + eps_t[f] for f in fields})
                return carry, carry.h

            _, ys = jax.lax.scan(body, carry0, (xp, eps))
            return jnp.moveaxis(ys, 0, 1)

        # Sum of per-example losses: the gradient for example b is d loss_b / d state_b.
        return model.loss(params, inputs, targets, carry_hook=hook) * inputs.shape[0]

    eps = {f: jnp.zeros((T,) + getattr(carry0, f).shape, jnp.float32) for f in fields}
    grads = jax.jit(jax.grad(per_example_loss_sum))(eps, params)
    return {f: np.asarray(jnp.mean(jnp.linalg.norm(g, axis=-1), axis=1)) for f, g in grads.items()}


def log_slope(norms_by_distance: np.ndarray) -> float:
    """Least-squares slope of ``log10(norm)`` against the distance ``k = 0, 1, ...``.

    Args:
      norms_by_distance: ``[K]`` positive norms, entry ``k`` at distance ``k`` from the loss.

    Returns:
      The slope in decades per step (``-0.01``: the norm shrinks 10x every 100 steps);
      zero norms (underflow) are left out of the fit.

    Example:
      >>> round(log_slope(0.5 ** np.arange(10)), 4)
      -0.301
    """
    y = np.asarray(norms_by_distance, dtype=np.float64)
    k = np.arange(y.size)
    ok = (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(k[ok], np.log10(y[ok]), 1)[0])


# (label, cell, forget bias)
MODELS = (
    ("rnn", "rnn", 1.0),
    ("lstm (forget bias 1)", "lstm", 1.0),
    ("lstm (forget bias 0)", "lstm", 0.0),
    ("gru", "gru", 1.0),
)


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Configuration of the gradient-flow experiment.

    Attributes:
      length: ``T`` of the adding problem used for the measurement and training.
      train_steps: optimiser steps before the "trained" measurement.
      probe_size: sequences averaged in each measurement.
      explode_scale: ``init_scale`` of the tanh RNN in part B.
      explode_steps: steps of each part-B training run.
      explode_lr: learning rate of part B (plain SGD: Adam's per-coordinate normalisation
        would hide the gradient's scale).
      explode_clip: clipping threshold of the clipped part-B run.
      budget: parameter budget of every model.
      models: ``(label, cell, forget_bias)`` of the models of part A.
    """

    length: int = 100
    train_steps: int = 3000
    probe_size: int = 200
    explode_scale: float = 2.0
    explode_steps: int = 1000
    explode_lr: float = 0.05
    explode_clip: float = 1.0
    budget: int = lr.Config.budget
    models: tuple[tuple[str, str, float], ...] = MODELS


QUICK = FlowConfig(length=100, train_steps=1500, probe_size=100, explode_steps=500)


def _profile(fitted: lr.Fit | None, config: lr.Config, probe) -> dict[str, list[float]]:
    if fitted is None:
        cell_name = lr.canonical_cell(config.cell)
        h = config.hidden or lr.hidden_for_budget(cell_name, config.task, config.budget)
        model = lr.Model(
            lr.make_cell(
                cell_name, h, forget_bias=config.forget_bias, init_scale=config.init_scale
            ),
            config.task,
        )
        params = model.init(jax.random.split(jax.random.key(config.seed))[0])
    else:
        model, params = fitted.model, fitted.params
    norms = state_gradient_norms(model, params, *probe)
    # Entry t -> distance k = T - 1 - t from the loss on the last step.
    return {f: [float(v) for v in n[::-1]] for f, n in norms.items()}


def run(
    cfg: FlowConfig, quick: bool, out_dir: Path = RESULTS_DIR, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Runs parts A and B and writes the JSON, Markdown and PNG results.

    Args:
      cfg: the experiment's :class:`FlowConfig`.
      quick: only names the output files (``_quick``) and the recorded command.
      out_dir: results folder.
      log: progress printer.

    Returns:
      The JSON payload that was written.
    """
    check_output_dir("--out", out_dir)
    t0 = time.perf_counter()
    probe = lr.make_batch("adding", jax.random.key(777), cfg.probe_size, cfg.length)
    part_a = []
    for label, cell, fb in cfg.models:
        conf = lr.Config(
            task="adding",
            cell=cell,
            length=cfg.length,
            steps=cfg.train_steps,
            forget_bias=fb,
            budget=cfg.budget,
            eval_every=cfg.train_steps,
        )
        at_init = _profile(None, conf, probe)
        fitted = lr.fit(conf)
        trained = _profile(fitted, conf, probe)
        row = {
            "label": label,
            "cell": lr.canonical_cell(cell),
            "forget_bias": fb,
            "hidden": fitted.result["hidden"],
            "test_mse": fitted.result["test_mse"],
            "init": at_init,
            "trained": trained,
            "slope_init": log_slope(np.asarray(at_init["h"])),
            "slope_trained": log_slope(np.asarray(trained["h"])),
        }
        if "c" in at_init:
            row["slope_init_c"] = log_slope(np.asarray(at_init["c"]))
            row["slope_trained_c"] = log_slope(np.asarray(trained["c"]))
        log(json.dumps({k: v for k, v in row.items() if k not in ("init", "trained")}))
        part_a.append(row)

    # Part B: exploding gradients in a tanh RNN with scaled-up weights, clipped or not.
    part_b = {"init_scale": cfg.explode_scale, "runs": []}
    for clip in (None, cfg.explode_clip):
        conf = lr.Config(
            task="adding",
            cell="rnn",
            length=cfg.length,
            steps=cfg.explode_steps,
            init_scale=cfg.explode_scale,
            learning_rate=cfg.explode_lr,
            optimizer="sgd",
            clip_norm=clip,
            budget=cfg.budget,
            eval_every=cfg.explode_steps,
        )
        if clip is None:
            part_b["init_profile"] = _profile(None, conf, probe)
            part_b["slope_init"] = log_slope(np.asarray(part_b["init_profile"]["h"]))
        f = lr.fit(conf)
        run_ = {
            "clip_norm": clip,
            "test_mse": f.result["test_mse"],
            "nonfinite": f.result["nonfinite"],
            "nonfinite_step": f.result["nonfinite_step"],
            "max_grad_norm": f.result["max_grad_norm"],
            "median_grad_norm": float(np.nanmedian(f.grad_norms)),
            "losses": [float(x) for x in f.losses],
            "grad_norms": [float(x) for x in f.grad_norms],
        }
        log(json.dumps({k: v for k, v in run_.items() if k not in ("losses", "grad_norms")}))
        part_b["runs"].append(run_)
    wall = time.perf_counter() - t0
    cmd = f"python -m experiments.gradient_flow{' --quick' if quick else ''}"
    payload = {
        "command": cmd,
        "wall_s": round(wall, 1),
        "config": dataclasses.asdict(cfg),
        "part_a": part_a,
        "part_b": part_b,
    }
    tag = "gradient_flow" + ("_quick" if quick else "")
    write_outputs(out_dir, tag, payload, _markdown, _figure, indent=None)
    return payload


def _markdown(p: dict[str, Any]) -> str:
    cfg = p["config"]
    lines = [
        f"`{p['command']}` ({p['wall_s']:.0f} s); adding problem, T = {cfg['length']}, "
        f"{cfg['train_steps']} training steps.",
        "",
        "Slope of log10 ||dL/dh_t|| against the distance k from the loss (decades per "
        "step; the per-step factor is 10^slope; ||dL/dh_{T-1-k}|| / ||dL/dh_{T-1}|| at "
        f"k = {cfg['length'] - 1} in brackets).",
        "",
        "| model | H | slope at init | slope trained | LSTM cell state c: init / trained "
        "| test MSE after training |",
        "|---|---|---|---|---|---|",
    ]
    for r in p["part_a"]:

        def ratio(prof):
            h = prof["h"]
            return h[-1] / h[0] if h[0] > 0 else float("nan")

        c = f"{r['slope_init_c']:+.4f} / {r['slope_trained_c']:+.4f}" if "slope_init_c" in r else ""
        lines.append(
            f"| {r['label']} | {r['hidden']} | {r['slope_init']:+.4f} "
            f"({ratio(r['init']):.1e}) | {r['slope_trained']:+.4f} "
            f"({ratio(r['trained']):.1e}) | {c} | {lr.fmt(r['test_mse'])} |"
        )
    b = p["part_b"]
    lines += [
        "",
        f"Exploding gradients: tanh RNN with initial weights scaled by "
        f"{b['init_scale']}; slope at init {b['slope_init']:+.4f} decades/step; trained "
        f"{cfg['explode_steps']} steps with plain SGD, learning rate {cfg['explode_lr']}.",
        "",
        "| clipping | max grad norm | median grad norm | first non-finite step | "
        "test MSE (last finite parameters) |",
        "|---|---|---|---|---|",
    ]
    for r in b["runs"]:
        clip = "none" if r["clip_norm"] is None else f"global norm {r['clip_norm']}"
        bad = "never" if r.get("nonfinite_step") is None else str(r["nonfinite_step"])
        lines.append(
            f"| {clip} | {r['max_grad_norm']:.3g} | {r['median_grad_norm']:.3g} | "
            f"{bad} | {lr.fmt(r['test_mse'])} |"
        )
    lines += [
        "",
        "seqjax.train skips a step whose loss or gradient is not finite and freezes "
        "the run there; the median gradient norm is over the finite steps.",
    ]
    return "\n".join(lines) + "\n"


def _figure(p: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, when in zip(axes[:2], ("init", "trained"), strict=True):
        for r in p["part_a"]:
            h = np.asarray(r[when]["h"])
            ax.semilogy(np.arange(h.size), h, label=f"{r['label']} ({r['slope_' + when]:+.3f})")
        b = p["part_b"]
        if when == "init":
            h = np.asarray(b["init_profile"]["h"])
            ax.semilogy(
                np.arange(h.size),
                h,
                "k:",
                label=f"rnn, weights x{b['init_scale']} ({b['slope_init']:+.3f})",
            )
        ax.set_xlabel("distance from the loss k (steps)")
        ax.set_ylabel("mean ||dL/dh_t||")
        ax.set_title(
            f"adding T={p['config']['length']}: at {when}ialisation"
            if when == "init"
            else f"adding T={p['config']['length']}: after training"
        )
        ax.legend(fontsize=7)
    ax = axes[2]
    for r in p["part_b"]["runs"]:
        g = np.asarray(r["grad_norms"])
        lab = "no clipping" if r["clip_norm"] is None else f"clip {r['clip_norm']}"
        ax.semilogy(np.arange(g.size), g, lw=0.6, alpha=0.8, label=f"grad norm, {lab}")
    ax2 = ax.twinx()
    for r in p["part_b"]["runs"]:
        lo = np.asarray(r["losses"])
        w = max(1, lo.size // 50)
        sm = np.convolve(np.nan_to_num(lo, nan=np.nan), np.ones(w) / w, mode="valid")
        lab = "no clipping" if r["clip_norm"] is None else f"clip {r['clip_norm']}"
        ax2.plot(np.arange(sm.size) + w - 1, sm, lw=1.5, ls="--", label=f"loss, {lab}")
        if r.get("nonfinite_step") is not None:
            ax.axvline(
                r["nonfinite_step"],
                color="k",
                lw=0.8,
                ls=":",
                label=f"non-finite ({lab}) at step {r['nonfinite_step']}",
            )
    ax2.set_yscale("log")
    ax2.set_ylabel("training loss (moving average)")
    ax.set_xlabel("step")
    ax.set_ylabel("global gradient norm (before clipping)")
    ax.set_title(f"tanh RNN, weights x{p['part_b']['init_scale']}")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m experiments.gradient_flow [--quick] [--out DIR]``.

    Prints a one-line JSON summary (slopes) as the last stdout line.
    """
    p = ArgumentParser(prog="python -m experiments.gradient_flow")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.set_defaults(handler=_main)
    return scaffold.run(p, argv)


def _main(a) -> dict[str, Any]:
    payload = run(QUICK if a.quick else FlowConfig(), a.quick, Path(a.out))
    summary = {
        r["label"]: {"slope_init": r["slope_init"], "slope_trained": r["slope_trained"]}
        for r in payload["part_a"]
    }
    print(
        json.dumps(
            {
                "wall_s": payload["wall_s"],
                "slopes": summary,
                "explode_slope_init": payload["part_b"]["slope_init"],
            }
        )
    )
    return payload


if __name__ == "__main__":
    main()
