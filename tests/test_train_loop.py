"""seqjax.train.loop: the run's files, retention, resume (also after SIGKILL), NaN, bad input.

Runs use the tiny LSTM models of ``tests/_train_worker.py``, in this process or in a
subprocess (SIGKILL in the middle of a save, then resume). ``train_reference_run``
(``tests/conftest.py``) is the uninterrupted run every resume is compared with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import _train_worker as tw
import chex
import jax
import numpy as np
import pytest
from _train_helpers import WORKER, last_json, load_npz, tensorboard_scalars, worker, worker_env

from seqjax import train


def test_train_loop_writes_everything_and_resumes(train_reference_run, tmp_path):
    workdir, result, final = train_reference_run
    files = set(os.listdir(workdir))
    assert {
        "config.json",
        "metrics.jsonl",
        "tensorboard",
        "checkpoints",
        "learning_curves.png",
    } <= files
    with open(f"{workdir}/learning_curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(f"{workdir}/config.json") as f:
        assert json.load(f) == train.config_to_dict(tw.TinyConfig())
    records = train.read_metrics(workdir)
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    evals = {r["step"]: r["loss"] for r in records if r["split"] == "eval"}
    assert train_steps == [3, 6, 9, 12] and sorted(evals) == [6, 12]
    assert all(
        r["tokens_per_sec"] > 0 and r["learning_rate"] == 0.05
        for r in records
        if r["split"] == "train"
    )
    scalars = tensorboard_scalars(f"{workdir}/tensorboard")
    for r in records:
        assert scalars[(r["step"], f"{r['split']}/loss")] == pytest.approx(r["loss"], rel=1e-6)
    first, last = records[0]["loss"], [r for r in records if r["split"] == "train"][-1]["loss"]
    assert last < first
    assert result.eval_metrics["loss"] == pytest.approx(evals[12])

    # Retention: the last 3 steps, plus the best by eval loss among evaluated ones.
    ckpt = train.Checkpointer(f"{workdir}/checkpoints")
    steps = ckpt.all_steps()
    best = min(evals, key=evals.get)
    assert set(steps) == {6, 9, 12} | {best}
    assert ckpt.best_step() == best == result.best_step  # metrics survive a reopen
    assert ckpt.config(12) == train.config_to_dict(tw.TinyConfig())
    restored, s = ckpt.restore(result.state)
    ckpt.close()
    assert s == 12
    chex.assert_trees_all_equal(tw.flat_params(restored.params), final)

    # Same command with more steps continues from the latest checkpoint.
    copy = str(tmp_path / "more")
    shutil.copytree(workdir, copy)
    longer = tw.run(tw.TinyConfig(total_steps=15), copy)
    assert longer.resumed_from == 12 and int(longer.state.step) == 15
    assert [r["step"] for r in train.read_metrics(copy) if r["split"] == "train"] == [
        3,
        6,
        9,
        12,
        15,
    ]


def test_nan_stops_with_the_step_and_last_checkpoint_intact(tmp_path):
    workdir = str(tmp_path / "nan")
    config = tw.TinyConfig(poison_step=7, total_steps=12)
    with pytest.raises(
        train.NonFiniteError, match=r"at step 7;.*last good checkpoint is step 6"
    ) as info:
        tw.run(config, workdir)
    assert info.value.step == 7 and info.value.last_good_step == 6
    ckpt = train.Checkpointer(f"{workdir}/checkpoints")
    assert ckpt.all_steps() == [3, 6]
    target = train.TrainState.create(
        tw.init_fn(config)(jax.random.key(0)), train.optimizer_from_config(config), 0
    )
    restored, step = ckpt.restore(target)
    ckpt.close()
    assert step == 6 and int(restored.step) == 6 and int(restored.nonfinite_step) == -1
    assert all(np.isfinite(v).all() for v in tw.flat_params(restored.params).values())


@dataclasses.dataclass(frozen=True)
class _NotATrainConfig:
    hidden_size: int = 8


def test_bad_run_directories(tmp_path, monkeypatch):
    config = tw.TinyConfig()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        tw.run(config, str(a_file))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tw.run(config, str(tmp_path / "missing"), resume="require")
    with pytest.raises(PermissionError, match="cannot create"):
        tw.run(config, str(a_file / "sub"))
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    (tmp_path / "locked").mkdir()
    with pytest.raises(PermissionError, match="not readable and writable"):
        tw.run(config, str(tmp_path / "locked"))
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train.read_saved_config(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="TrainConfig"):
        train.train_loop(
            _NotATrainConfig(),
            str(tmp_path / "x"),
            init_params=None,
            loss_fn=None,
            train_batch=None,
        )


def test_resume_never_refuses_existing_checkpoints(train_reference_run):
    workdir, _, _ = train_reference_run
    with pytest.raises(FileExistsError, match="refuses to overwrite"):
        tw.run(tw.TinyConfig(), workdir, resume="never")


def test_sigkill_mid_save_then_resume_is_bit_identical(tmp_path, train_reference_run):
    uninterrupted = train_reference_run[2]
    workdir = str(tmp_path / "run")
    # Saves every 3 steps; the process is SIGKILLed while the asynchronous save of step 6 is
    # committing (all files written, the final rename not yet done).
    killed = worker("run", workdir, "--kill_at_step", "6")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    entries = os.listdir(os.path.join(workdir, "checkpoints"))
    assert "3" in entries and "6" not in entries, entries  # step 6 never completed...
    tmp = [e for e in entries if e.startswith("6.orbax-checkpoint-tmp")]
    # ...its data written, only the commit missing
    assert tmp and "state" in os.listdir(os.path.join(workdir, "checkpoints", tmp[0]))

    resumed = worker("run", workdir)  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    info = last_json(resumed.stdout)
    assert info == {"resumed_from": 3, "final_step": 12}
    assert "resuming from checkpoint step 3" in resumed.stdout
    assert "== TinyConfig ==" in resumed.stdout and "hidden_size" in resumed.stdout
    final = load_npz(os.path.join(workdir, "final_params.npz"))
    assert final.keys() == uninterrupted.keys()
    for k in final:
        np.testing.assert_array_equal(final[k], uninterrupted[k], err_msg=k)
    steps = sorted(int(e) for e in os.listdir(os.path.join(workdir, "checkpoints")) if e.isdigit())
    assert steps[-1] == 12
    # The metrics file holds each logged step once, despite the replayed stretch.
    train_steps = [r["step"] for r in train.read_metrics(workdir) if r["split"] == "train"]
    assert train_steps == [3, 6, 9, 12]


@pytest.mark.slow
def test_sigkill_at_random_times_then_resume_is_bit_identical(tmp_path):
    """Kills a longer run from outside at several random moments; the end result never moves."""
    args = ["--total_steps", "120", "--save_every", "2", "--log_every", "2", "--eval_every", "4"]
    ref = str(tmp_path / "ref")
    done = worker("run", ref, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    want = load_npz(os.path.join(ref, "final_params.npz"))
    workdir = str(tmp_path / "run")
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, WORKER, "run", workdir, *args],
            env=worker_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ckpt_dir = os.path.join(workdir, "checkpoints")
        deadline = time.time() + 120
        while (
            time.time() < deadline
            and proc.poll() is None
            and not (os.path.isdir(ckpt_dir) and any(e.isdigit() for e in os.listdir(ckpt_dir)))
        ):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += proc.wait() == -signal.SIGKILL
        proc.wait()
    assert kills >= 2  # the kills landed while training ran
    final = worker("run", workdir, *args)
    assert final.returncode == 0, final.stderr[-3000:]
    assert last_json(final.stdout)["resumed_from"] is not None
    got = load_npz(os.path.join(workdir, "final_params.npz"))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_core_dependencies_suffice_and_missing_outputs_are_announced_once(tmp_path, monkeypatch):
    """Without tensorboardX and matplotlib a run trains to the end and says so at the start."""
    for name in ("tensorboardX", "matplotlib"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError
    workdir = str(tmp_path / "run")
    config = tw.TinyConfig(total_steps=6)
    with pytest.warns(train.OptionalOutputWarning) as caught:
        result = tw.run(config, workdir)
    announced = [w for w in caught if issubclass(w.category, train.OptionalOutputWarning)]
    assert len(announced) == 1, [str(w.message) for w in announced]
    message = str(announced[0].message)
    assert "tensorboardX is not installed" in message and "matplotlib is not installed" in message
    assert int(result.state.step) == 6 and result.curves_png is None
    assert set(os.listdir(workdir)) == {"config.json", "metrics.jsonl", "checkpoints"}
    ckpt = train.Checkpointer(f"{workdir}/checkpoints")
    assert ckpt.latest_step() == 6  # the final checkpoint is there
    ckpt.close()
    evals = [r for r in train.read_metrics(workdir) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [6]
    assert result.eval_metrics["loss"] == evals[-1]["loss"]
    # Running the finished command again neither crashes nor forgets the evaluation.
    with pytest.warns(train.OptionalOutputWarning):
        again = tw.run(config, workdir)
    assert again.resumed_from == 6 and again.eval_metrics == result.eval_metrics


def test_rerun_of_a_finished_run_returns_its_last_metrics(train_reference_run, tmp_path):
    workdir, result, _ = train_reference_run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    again = tw.run(tw.TinyConfig(), copy)  # no step left to run
    assert again.resumed_from == 12 and int(again.state.step) == 12
    # Read back from metrics.jsonl: exactly what the finishing run returned.
    assert again.eval_metrics == result.eval_metrics
    assert again.train_metrics == result.train_metrics
    assert again.best_step == result.best_step


def test_a_failing_plot_is_a_warning_after_the_run_is_saved(
    train_reference_run, tmp_path, monkeypatch
):
    workdir, result, _ = train_reference_run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    os.remove(os.path.join(copy, "learning_curves.png"))

    def broken_plot(path):
        raise RuntimeError("no display")

    monkeypatch.setattr(train.loop, "plot_curves", broken_plot)
    with pytest.warns(train.OptionalOutputWarning, match="plot failed .*no display"):
        again = tw.run(tw.TinyConfig(total_steps=15), copy)
    assert int(again.state.step) == 15 and again.curves_png is None
    ckpt = train.Checkpointer(f"{copy}/checkpoints")
    assert ckpt.latest_step() == 15
    ckpt.close()
    assert train.read_metrics(copy)[-1] == {"step": 15, "split": "eval", **again.eval_metrics}


def test_check_workdir_tolerates_another_process_creating_it_first(tmp_path, monkeypatch):
    # Several processes of one run create the run directory at once: the one that loses the race
    # must not fail (this crashed process 0 of a two-process run with "File exists").
    from seqjax.train import loop

    path = tmp_path / "run"
    path.mkdir()  # the other process got there first ...
    real_exists = loop.os.path.exists
    # ... after this process looked
    monkeypatch.setattr(
        loop.os.path, "exists", lambda p: False if p == str(path) else real_exists(p)
    )
    assert loop.check_workdir(path) == str(path)
