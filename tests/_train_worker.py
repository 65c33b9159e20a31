"""Tiny seqjax models for the training tests, and a worker script run in subprocesses.

Two tasks, both learnable in a few dozen steps by an LSTM with 8 units:

- ``lm``: independent windows of random tokens; the target at time t is the token at t - 1
  (a one-step memory task). Batch ``s`` is a pure function of ``s``.
- ``stream``: TBPTT over ``B`` fixed random token streams with the same target rule; the
  carry flows from window to window (``seqjax.train.stream_window``).

Worker usage (the subprocess tests in tests/test_train_loop.py and test_train_sharding.py)::

    python tests/_train_worker.py run WORKDIR [--kill_at_step K] [--task lm|stream] [overrides]
    python tests/_train_worker.py devices OUTDIR      # needs 8 host devices via XLA_FLAGS
    python tests/_train_worker.py mp WORKDIR --coordinator H:P --num-processes P \
        --process-id I [--kill_at_step K --kill_process I] [overrides]   # one of P processes
    python tests/_train_worker.py mp-restore WORKDIR --coordinator ...  # restore on P procs

``--kill_at_step K`` SIGKILLs the process while the save of step K is committing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqjax
from seqjax import train

V, E, H, T = 6, 4, 8, 6  # vocabulary, embedding, hidden units, window length


@dataclasses.dataclass(frozen=True)
class TinyConfig(train.TrainConfig):
    """The test runs' config: the training fields plus the model's and the task's."""

    hidden_size: int = H
    batch_size: int = 4
    task: str = "lm"
    total_steps: int = 12
    learning_rate: float = 0.05
    log_every: int = 3
    eval_every: int = 6
    save_every: int = 3
    keep: int = 3
    keep_best: int = 1
    progress: bool = False
    poison_step: int = -1  # the loss becomes NaN at this step (NaN test); -1: never


def cell(config: TinyConfig) -> seqjax.LSTM:
    return seqjax.LSTM(hidden_size=config.hidden_size)


def init_fn(config: TinyConfig):
    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {
            "embed": 0.5 * jax.random.normal(k1, (V, E), jnp.float32),
            "lstm": cell(config).init(k2, E),
            "readout": {
                "w": 0.3 * jax.random.normal(k3, (config.hidden_size, V), jnp.float32),
                "b": jnp.zeros((V,), jnp.float32),
            },
        }

    return init


def logits_and_carry(config: TinyConfig, params, inputs, carry=None):
    """inputs int [B, T] -> (logits [B, T, V], final carry)."""
    xs = params["embed"][inputs]
    final, ys = seqjax.scan(cell(config), params["lstm"], xs, carry=carry)
    return ys @ params["readout"]["w"] + params["readout"]["b"], final


def _loss(config, params, batch, carry):
    logits, final = logits_and_carry(config, params, batch["inputs"], carry)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    loss_sum = jnp.sum(ce)
    if "poison" in batch:  # NaN injection for the non-finite test
        loss_sum = jnp.where(batch["poison"][0], jnp.float32(jnp.nan), loss_sum)
    correct = jnp.sum(jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
    return train.LossOutput(
        loss_sum,
        jnp.asarray(ce.size, jnp.float32),
        {"accuracy": correct},
        final if carry is not None else None,
    )


def loss_fn(config: TinyConfig):
    if config.task == "stream":
        return lambda params, batch, rng, carry: _loss(config, params, batch, carry)
    return lambda params, batch, rng: _loss(config, params, batch, None)


def lm_batch(step: int, batch_size: int, seed: int = 0, poison_step: int = -1) -> dict:
    rng = np.random.default_rng([seed, 1000, step])
    tokens = rng.integers(0, V, (batch_size, T + 1)).astype(np.int32)
    batch = {"inputs": tokens[:, 1:], "targets": tokens[:, :-1]}
    if poison_step >= 0:
        batch["poison"] = np.full((batch_size,), step == poison_step)
    return batch


def streams(batch_size: int, seed: int = 0) -> np.ndarray:
    """[B, 4T + 1] random token streams; the stream task's target is the previous token."""
    return (
        np.random.default_rng([seed, 2000]).integers(0, V, (batch_size, 4 * T + 1)).astype(np.int32)
    )


def stream_batch(step: int, batch_size: int, seed: int = 0) -> dict:
    w = train.stream_window(streams(batch_size, seed), step, T)
    # Inputs are positions [lo+1, lo+L], targets the previous token of the same stream
    # (positions [lo, lo+L-1]): at t = 0 that is the last input of the previous window, which
    # only the carry passed across the batch boundary can remember.
    return {"inputs": w["targets"], "targets": w["inputs"], "reset": w["reset"]}


N_INDEXED = 24  # examples of the "indexed" task's dataset


def indexed_dataset(seed: int = 0) -> np.ndarray:
    """[N_INDEXED, T + 1] random token sequences: the "indexed" task's whole dataset."""
    rng = np.random.default_rng([seed, 3000])
    return rng.integers(0, V, (N_INDEXED, T + 1)).astype(np.int32)


def indexed_batch(step: int, config: TinyConfig, mesh, record: dict | None = None) -> dict:
    """This process's rows of global batch ``step``: only they are read from the dataset."""
    idx = train.process_batch_indices(step, N_INDEXED, config.batch_size, config.seed, mesh)
    if record is not None:
        record[step] = idx.tolist()
    rows = indexed_dataset(config.seed)[idx]
    return {"inputs": rows[:, 1:], "targets": rows[:, :-1]}


def run(
    config: TinyConfig,
    workdir: str,
    *,
    mesh=None,
    hooks=(),
    verbose=False,
    resume="auto",
    record: dict | None = None,
) -> train.TrainResult:
    """Trains the tiny model of ``config.task`` in ``workdir`` with ``train_loop``.

    Tasks ``lm`` and ``stream`` compute the global batch (a multi-process run keeps its rows);
    ``indexed`` reads only this process's examples and, given ``record``, stores
    ``record[step] = example indices read``.
    """
    if config.task == "indexed":
        mesh = train.make_mesh() if mesh is None else mesh
        return train.train_loop(
            config,
            workdir,
            init_params=init_fn(config),
            loss_fn=loss_fn(config),
            train_batch=lambda s: indexed_batch(s, config, mesh, record),
            eval_batches=lambda: [
                lm_batch(10_000 + i, config.batch_size, config.seed) for i in range(2)
            ],
            mesh=mesh,
            hooks=hooks,
            verbose=verbose,
            resume=resume,
        )
    if config.task == "stream":
        init_carry = cell(config).initial_carry((config.batch_size,))
        return train.train_loop(
            config,
            workdir,
            init_params=init_fn(config),
            loss_fn=loss_fn(config),
            train_batch=lambda s: stream_batch(s, config.batch_size, config.seed),
            eval_batches=lambda: [
                stream_batch(s, config.batch_size, config.seed + 1) for s in range(2)
            ],
            init_carry=init_carry,
            mesh=mesh,
            hooks=hooks,
            verbose=verbose,
            resume=resume,
        )
    return train.train_loop(
        config,
        workdir,
        init_params=init_fn(config),
        loss_fn=loss_fn(config),
        train_batch=lambda s: lm_batch(s, config.batch_size, config.seed, config.poison_step),
        eval_batches=lambda: [
            lm_batch(10_000 + i, config.batch_size, config.seed) for i in range(2)
        ],
        mesh=mesh,
        hooks=hooks,
        verbose=verbose,
        resume=resume,
    )


def flat_params(tree) -> dict[str, np.ndarray]:
    flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def _die_while_committing(step_to_kill: int) -> None:
    """SIGKILLs this process inside Orbax's commit of checkpoint ``step_to_kill``.

    The background save has written every array and metadata file into
    ``<step>.orbax-checkpoint-tmp`` but not yet renamed it: the worst moment to die, as the
    directory looks complete. Patching Orbax's finalize (test-only) makes the moment
    deterministic instead of a race with the background thread.
    """
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        if self._final_path.name == str(step_to_kill):
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


def main(argv: list[str]) -> None:
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    mode, target, rest = argv[0], argv[1], argv[2:]
    if mode == "run":
        kill_at = None
        if "--kill_at_step" in rest:
            i = rest.index("--kill_at_step")
            kill_at = int(rest[i + 1])
            rest = rest[:i] + rest[i + 2 :]
        # --field value overrides, parsed as the experiments parse theirs (argparse)
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from experiments.scaffold import config_from_argv

        config = config_from_argv(TinyConfig(), rest, prog="_train_worker.py run")
        if kill_at is not None:
            _die_while_committing(kill_at)
        result = run(config, target, verbose=True)
        np.savez(os.path.join(target, "final_params.npz"), **flat_params(result.state.params))
        print(
            json.dumps({"resumed_from": result.resumed_from, "final_step": int(result.state.step)})
        )
    elif mode in ("mp", "mp-restore"):
        multiprocess(mode, target, rest)
    elif mode == "devices":
        devices_check(target)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def multiprocess(mode: str, workdir: str, argv: list[str]) -> None:
    """One process of a multi-process run (tests/test_multiprocess.py).

    ``mp``: trains the ``indexed`` task (``--kill_at_step K --kill_process I`` SIGKILLs
    process I once step K is done); every process writes ``indices_p<I>.json`` (the example
    indices it read, by step), process 0 ``final_params.npz``. ``mp-restore``: restores the
    latest checkpoint of ``workdir`` onto this run's processes and devices; process 0 writes
    ``restored_P<P>.npz``. Both print a JSON line with the process layout.
    """
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from experiments.scaffold import (
        ArgumentParser,
        add_config_arguments,
        add_distributed_arguments,
        apply_overrides,
        initialize_from_args,
    )
    from experiments.scaffold.cli import _normalise

    parser = ArgumentParser(prog=f"_train_worker.py {mode}")
    add_distributed_arguments(parser)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--kill-process", type=int, default=1)
    add_config_arguments(parser, TinyConfig)
    args = parser.parse_args(_normalise(argv))
    initialize_from_args(args, quiet_workers=False)
    config = apply_overrides(TinyConfig(task="indexed"), args)
    pid = jax.process_index()
    info = {
        "process_index": pid,
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
    }
    if mode == "mp-restore":
        mesh = train.make_mesh()
        opt = train.optimizer_from_config(config)
        target = train.TrainState.create(init_fn(config)(jax.random.key(1)), opt, 0)
        target = train.place_state(target, mesh)
        ckpt = train.Checkpointer(os.path.join(workdir, "checkpoints"))
        restored, step = ckpt.restore(target, shardings=train.state_shardings(target, mesh))
        ckpt.close()
        info["restored_step"] = step
        info["param_devices"] = len(jax.tree.leaves(restored.params)[0].sharding.device_set)
        if pid == 0:
            flat = flat_params(train.to_host(restored.params))
            np.savez(os.path.join(workdir, f"restored_P{jax.process_count()}.npz"), **flat)
        print(json.dumps(info), flush=True)
        return
    hooks = []
    if args.kill_at_step is not None and pid == args.kill_process:
        hooks.append(
            lambda done, state: (
                os.kill(os.getpid(), signal.SIGKILL) if done == args.kill_at_step else None
            )
        )
    record: dict[int, list[int]] = {}
    result = run(config, workdir, hooks=hooks, verbose=True, record=record)
    with open(os.path.join(workdir, f"indices_p{pid}.json"), "w") as f:
        json.dump({str(k): v for k, v in record.items()}, f)
    if pid == 0:
        np.savez(
            os.path.join(workdir, "final_params.npz"),
            **flat_params(train.to_host(result.state.params)),
        )
    info.update(resumed_from=result.resumed_from, final_step=int(train.to_host(result.state.step)))
    print(json.dumps(info), flush=True)


def devices_check(outdir: str) -> None:
    """8-device training equals 1-device training; checkpoints move between device counts."""
    assert jax.device_count() == 8, jax.devices()
    results = {}
    # The stream (TBPTT) task shards both the batch and the carry; parameters replicated.
    for task in ("stream",):
        config = TinyConfig(
            task=task, batch_size=8, total_steps=6, eval_every=3, save_every=3, log_every=3
        )
        finals, states = {}, {}
        for n in (8, 1):
            mesh = train.make_mesh(jax.devices()[:n])
            res = run(config, os.path.join(outdir, f"{task}_{n}"), mesh=mesh)
            finals[n] = flat_params(res.state.params)
            states[n] = res.state
            leaf = jax.tree.leaves(res.state.params)[0]
            results[f"{task}_{n}_param_devices"] = len(leaf.sharding.device_set)
            if res.state.carry is not None:
                c = jax.tree.leaves(res.state.carry)[0]
                results[f"{task}_{n}_carry_shard_rows"] = int(c.addressable_shards[0].data.shape[0])
            results[f"{task}_{n}_eval_loss"] = res.eval_metrics["loss"]
        results[f"{task}_max_abs_diff"] = max(
            float(np.max(np.abs(finals[8][k] - finals[1][k]))) for k in finals[8]
        )
        results[f"{task}_max_abs_param"] = max(float(np.max(np.abs(v))) for v in finals[8].values())
        # A checkpoint written on 8 devices restores onto 1 and vice versa, bit for bit.
        for src, dst in ((8, 1), (1, 8)):
            mesh = train.make_mesh(jax.devices()[:dst])
            target = train.place_state(states[dst], mesh)
            ckpt = train.Checkpointer(os.path.join(outdir, f"{task}_{src}", "checkpoints"))
            restored, step = ckpt.restore(target, shardings=train.state_shardings(target, mesh))
            ckpt.close()
            flat = flat_params(restored.params)
            results[f"{task}_restore_{src}_to_{dst}_step"] = step
            results[f"{task}_restore_{src}_to_{dst}_exact"] = all(
                np.array_equal(flat[k], finals[src][k]) for k in flat
            )
            results[f"{task}_restore_{src}_to_{dst}_devices"] = len(
                jax.tree.leaves(restored.params)[0].sharding.device_set
            )
    # Parameters split over a "model" axis: mesh (data 2, model 4) trains like 1 device, and
    # checkpoints move between it and 1 device exactly.
    mesh = train.make_mesh(model=4)
    res = run(config, os.path.join(outdir, "model4"), mesh=mesh)
    finals["model4"] = flat_params(res.state.params)
    results["model4_max_abs_diff"] = max(
        float(np.max(np.abs(finals["model4"][k] - finals[1][k]))) for k in finals[1]
    )
    results["model4_eval_loss"] = res.eval_metrics["loss"]
    results["model4_carry_shard_rows"] = int(
        jax.tree.leaves(res.state.carry)[0].addressable_shards[0].data.shape[0]
    )

    def shard_shapes(tree):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {
            jax.tree_util.keystr(p): [list(x.shape), list(x.addressable_shards[0].data.shape)]
            for p, x in flat
        }

    results["model4_param_shards"] = shard_shapes(res.state.params)
    results["model4_opt_shards"] = shard_shapes(res.state.opt_state)
    for src, dst, m in (("model4", 1, train.make_mesh(jax.devices()[:1])), (1, "model4", mesh)):
        target = train.place_state(res.state, m)
        run_dir = "model4" if src == "model4" else f"stream_{src}"
        ckpt = train.Checkpointer(os.path.join(outdir, run_dir, "checkpoints"))
        restored, step = ckpt.restore(target, shardings=train.state_shardings(target, m))
        ckpt.close()
        got = flat_params(restored.params)
        results[f"restore_{src}_to_{dst}_step"] = step
        results[f"restore_{src}_to_{dst}_exact"] = all(
            np.array_equal(got[k], finals[src][k]) for k in got
        )
        results[f"restore_{src}_to_{dst}_shards"] = shard_shapes(restored.params)
    # Evaluation of 6 streams (and their carry) on 8 devices: replicated, same sums as on 1.
    config = TinyConfig(task="stream")
    params = init_fn(config)(jax.random.key(3))
    ev = train.make_eval_step(loss_fn(config))
    for n in (8, 1):
        results[f"eval_6_rows_on_{n}"] = train.evaluate(
            ev,
            params,
            [stream_batch(s, 6) for s in range(2)],
            train.make_mesh(jax.devices()[:n]),
            cell(config).initial_carry((6,)),
        )
    # A batch that does not split over 8 devices is refused with a clear message.
    try:
        train.shard_batch({"x": np.zeros((6, 2), np.float32)}, train.make_mesh())
        results["indivisible_error"] = None
    except ValueError as e:
        results["indivisible_error"] = str(e)
    with open(os.path.join(outdir, "devices.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
