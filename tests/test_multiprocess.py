"""Real multi-process training: ``jax.distributed`` on 127.0.0.1, CPU collectives (gloo).

Every run here starts P worker processes of ``tests/_train_worker.py`` (``mp`` mode: the
``indexed`` task, where each process reads only its examples of every global batch) that meet
at a coordinator on a free loopback port. What is checked, against a one-process run in this
process and against each other:

- 2 processes x 2 devices train to the parameters of 1 process x 1 device on the same global
  batches (float tolerance: the gradient sum is reduced in another order), and each process
  read exactly its rows of each batch, the two together the whole batch;
- their checkpoint restores exactly in this process (1 device), and (slow) on 4 processes;
- SIGKILL one process mid-run: the other stops with an error naming the dead task within the
  heartbeat timeout (no hang); rerunning both resumes from the last checkpoint and ends
  bit-identical to the uninterrupted run;
- (slow) 4 processes x 1 device train like 1 process.

The default suite pays for three 2-process runs; the 4-process runs are ``slow``.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import numpy as np
import pytest
from _train_helpers import last_json, launch, load_npz

from seqjax import train

HEARTBEAT_S = 10  # the workers' --heartbeat-timeout
DATA_STEPS = 12  # TinyConfig().total_steps


def _check_ok(results):
    for i, (rc, _, err, _) in enumerate(results):
        assert rc == 0, f"process {i} exited {rc}:\n{err[-4000:]}"


def _max_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """The ``indexed`` task trained in this process (1 device): the reference."""
    import _train_worker as tw

    record: dict = {}
    res = tw.run(
        tw.TinyConfig(task="indexed"), str(tmp_path_factory.mktemp("mp1") / "r"), record=record
    )
    return tw.flat_params(res.state.params), record


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """An uninterrupted run of 2 processes x 2 CPU devices; returns (workdir, results)."""
    workdir = str(tmp_path_factory.mktemp("mp2") / "run")
    results = launch("mp", workdir, processes=2, devices=2)
    _check_ok(results)
    return workdir, results


def _check_rows(workdir: str, processes: int, reference: dict) -> None:
    """Each process read its block of rows of each global batch; together, the batch."""
    got = []
    for p in range(processes):
        with open(os.path.join(workdir, f"indices_p{p}.json")) as f:
            got.append({int(k): v for k, v in json.load(f).items()})
    for step in range(DATA_STEPS):
        full = reference[step]
        per = len(full) // processes
        for p in range(processes):
            assert got[p][step] == full[p * per : (p + 1) * per], (step, p, got[p][step], full)
    assert sorted(got[0]) == list(range(DATA_STEPS))


def test_two_processes_train_like_one_and_read_only_their_rows(two_process_run, one_process_run):
    workdir, results = two_process_run
    ref_params, ref_rows = one_process_run
    infos = [last_json(out) for _, out, _, _ in results]
    assert [i["process_index"] for i in infos] == [0, 1]
    assert all(i["process_count"] == 2 and i["device_count"] == 4 for i in infos)
    assert all(i["local_device_count"] == 2 and i["final_step"] == DATA_STEPS for i in infos)
    got = load_npz(os.path.join(workdir, "final_params.npz"))
    scale = max(float(np.max(np.abs(v))) for v in ref_params.values())
    assert _max_diff(got, ref_params) <= 1e-5 * max(1.0, scale)
    _check_rows(workdir, 2, ref_rows)
    # Process 0 alone logs and prints: one record per log step, the eval lines once.
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if '"train"' in line]
    assert steps == [3, 6, 9, 12]
    assert "step 12: eval" in results[0][1] and "step 12: eval" not in results[1][1]


def test_checkpoint_of_two_processes_restores_in_one_process(two_process_run):
    import _train_worker as tw

    workdir, _ = two_process_run
    config = tw.TinyConfig(task="indexed")
    # A template with other values: everything must come from the checkpoint.
    target = train.TrainState.create(
        tw.init_fn(config)(jax.random.key(7)), train.optimizer_from_config(config), 0
    )
    ckpt = train.Checkpointer(os.path.join(workdir, "checkpoints"))
    restored, step = ckpt.restore(target)
    ckpt.close()
    assert step == DATA_STEPS
    saved = load_npz(os.path.join(workdir, "final_params.npz"))
    flat = tw.flat_params(restored.params)
    assert all(np.array_equal(flat[k], saved[k]) for k in saved)
    assert int(restored.step) == DATA_STEPS


def test_killed_process_stops_the_other_and_rerun_resumes_bit_identical(two_process_run, tmp_path):
    ref_dir, _ = two_process_run
    workdir = str(tmp_path / "run")
    killed = launch("mp", workdir, "--kill_at_step", "7", processes=2, devices=2)
    (rc0, _, err0, t0), (rc1, _, _, t1) = killed
    assert rc1 == -9  # SIGKILLed after step 7
    # The survivor does not hang: JAX's coordination service ends it with a clear message
    # naming the dead task once its heartbeats stop.
    assert rc0 != 0
    assert "detected fatal errors" in err0 and "stopped sending heartbeats" in err0, err0[-3000:]
    assert t0 - t1 < HEARTBEAT_S + 45
    done = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert done and done[-1] in (3, 6)  # 6 only if its async save committed before the kill
    resumed = launch("mp", workdir, processes=2, devices=2)
    _check_ok(resumed)
    infos = [last_json(out) for _, out, _, _ in resumed]
    assert all(i["resumed_from"] == done[-1] and i["final_step"] == DATA_STEPS for i in infos)
    a = load_npz(os.path.join(ref_dir, "final_params.npz"))
    b = load_npz(os.path.join(workdir, "final_params.npz"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_four_processes_train_like_one(tmp_path, one_process_run):
    ref_params, ref_rows = one_process_run
    workdir = str(tmp_path / "run")
    results = launch("mp", workdir, processes=4, devices=1, timeout=480)
    _check_ok(results)
    infos = [last_json(out) for _, out, _, _ in results]
    assert sorted(i["process_index"] for i in infos) == [0, 1, 2, 3]
    assert all(i["device_count"] == 4 and i["local_device_count"] == 1 for i in infos)
    got = load_npz(os.path.join(workdir, "final_params.npz"))
    scale = max(float(np.max(np.abs(v))) for v in ref_params.values())
    assert _max_diff(got, ref_params) <= 1e-5 * max(1.0, scale)
    _check_rows(workdir, 4, ref_rows)


@pytest.mark.slow
def test_checkpoint_of_two_processes_restores_on_four(two_process_run):
    workdir, _ = two_process_run
    results = launch("mp-restore", workdir, processes=4, devices=1, timeout=480)
    _check_ok(results)
    infos = [last_json(out) for _, out, _, _ in results]
    assert all(i["restored_step"] == DATA_STEPS and i["param_devices"] == 4 for i in infos)
    saved = load_npz(os.path.join(workdir, "final_params.npz"))
    restored = load_npz(os.path.join(workdir, "restored_P4.npz"))
    assert sorted(saved) == sorted(restored)
    assert all(np.array_equal(saved[k], restored[k]) for k in saved)


# -- settings and data order, in this (single) process -------------------------------------------


def test_initialize_is_a_no_op_for_one_process_and_rejects_bad_settings():
    assert train.initialize() is False
    assert train.initialize(num_processes=1) is False
    with pytest.raises(ValueError, match=r"missing \['coordinator'\]"):
        train.initialize(None, 2, 0)
    with pytest.raises(ValueError, match="'host:port'.*got 'localhost'"):
        train.initialize("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"process_id must be in \[0, num_processes\) = \[0, 2\)"):
        train.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes must be an int >= 1, got 0"):
        train.initialize("127.0.0.1:1234", 0, 0)
    assert not jax.distributed.is_initialized()


def test_scaffold_reads_flags_then_environment_and_reports_usage_errors(monkeypatch):
    from experiments.scaffold import (
        ArgumentParser,
        UsageError,
        add_distributed_arguments,
        initialize_from_args,
    )

    p = ArgumentParser(prog="demo")
    add_distributed_arguments(p)
    add_distributed_arguments(p)  # idempotent
    assert initialize_from_args(p.parse_args([])) is False
    with pytest.raises(UsageError, match=r"--process-id: .*missing \['coordinator'\]"):
        initialize_from_args(p.parse_args(["--num-processes", "2", "--process-id", "0"]))
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "5")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    with pytest.raises(UsageError, match=r"\[0, 2\), got 5"):  # from the environment
        initialize_from_args(argparse.Namespace())
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(UsageError, match="JAX_NUM_PROCESSES: expected an int, got 'two'"):
        initialize_from_args(argparse.Namespace())
    assert not jax.distributed.is_initialized()


def test_experiment_commands_take_the_distributed_options(capsys):
    from experiments.char_lm.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--process-id", "1", "--num-processes", "2", "--steps", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m experiments.char_lm train: error: --coordinator")
    assert "missing ['coordinator']" in err


def test_process_rows_and_the_train_batch_contract():
    assert train.process_batch_slice(4) == slice(0, 4)
    np.testing.assert_array_equal(
        train.process_batch_indices(3, 10, 4, seed=2), train.batch_indices(3, 10, 4, seed=2)
    )
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        train.process_batch_slice(0)
    # In a run of 2 processes, train_batch may return the global batch (this process keeps
    # its rows) or its own part; anything else is refused.
    from seqjax.train.loop import _process_part

    batch = {"x": np.arange(8).reshape(4, 2), "n": np.int32(3)}
    part = _process_part(batch, slice(2, 4), 4)
    np.testing.assert_array_equal(part["x"], [[4, 5], [6, 7]])
    assert part["n"] == 3
    own = {"x": np.zeros((2, 2))}
    assert _process_part(own, slice(2, 4), 4) is own
    with pytest.raises(ValueError, match=r"global batch \(leading size config.batch_size = 4\)"):
        _process_part({"x": np.zeros((3, 2))}, slice(2, 4), 4)
