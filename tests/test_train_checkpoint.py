"""seqjax.train.checkpoint: retention, corrupt and damaged checkpoints, incompatible models.

Runs use the tiny LSTM model of ``tests/_train_worker.py`` and the shared
``train_reference_run`` fixture (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import shutil

import _train_worker as tw
import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seqjax import train


def test_checkpointer_keeps_last_k_plus_best_across_reopen(tmp_path):
    opt = optax.sgd(0.1)
    state = train.TrainState.create({"w": jnp.zeros(3)}, opt)
    losses = {1: 3.0, 2: 0.5, 3: 2.0, 4: 1.0, 5: 4.0, 6: None}
    ckpt = train.Checkpointer(tmp_path / "min", keep=2, keep_best=1, async_save=False)
    for step, loss in losses.items():
        ckpt.save(
            state.replace(params={"w": jnp.full(3, float(step))}),
            step=step,
            metrics=None if loss is None else {"loss": loss},
        )
    assert ckpt.all_steps() == [2, 5, 6]  # last 2, plus the lowest loss
    assert not ckpt.save(state, step=6)  # an existing step is never overwritten
    ckpt.close()
    ckpt = train.Checkpointer(tmp_path / "min", keep=2, keep_best=1, async_save=False)
    assert ckpt.best_step() == 2
    restored, step = ckpt.restore(state, step=2)
    np.testing.assert_array_equal(restored.params["w"], np.full(3, 2.0))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint step 3 .*available: \[2, 5, 6\]"):
        ckpt.restore(state, step=3)
    ckpt.save(state, step=7, metrics={"loss": 5.0})  # saving again keeps the best
    assert ckpt.all_steps() == [2, 6, 7]
    ckpt.close()
    ckpt = train.Checkpointer(
        tmp_path / "max",
        keep=1,
        keep_best=2,
        best_mode="max",
        best_metric="accuracy",
        async_save=False,
    )
    for step, acc in {1: 0.9, 2: 0.1, 3: 0.95, 4: 0.2}.items():
        ckpt.save(state, step=step, metrics={"accuracy": acc})
    assert ckpt.all_steps() == [1, 3, 4] and ckpt.best_step() == 3
    ckpt.close()
    with pytest.raises(ValueError, match="best_mode must be"):
        train.Checkpointer(tmp_path / "bad", best_mode="lowest")


def _corrupt(step_dir: str) -> None:
    data = os.path.join(step_dir, "state", "d")
    for name in os.listdir(data):
        path = os.path.join(data, name)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(np.random.default_rng(0).bytes(size))


def test_corrupt_latest_checkpoint_falls_back_and_resume_is_exact(train_reference_run, tmp_path):
    workdir, _, final = train_reference_run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    _corrupt(os.path.join(copy, "checkpoints", "12"))
    # A half-written later step (a save killed midway) is ignored, not mistaken for a step.
    os.makedirs(os.path.join(copy, "checkpoints", "15.orbax-checkpoint-tmp", "state"))
    with pytest.warns(train.CheckpointCorruptWarning, match="step 12 .* corrupt"):
        result = tw.run(tw.TinyConfig(), copy)
    assert result.resumed_from == 9
    assert os.listdir(os.path.join(copy, "corrupt_checkpoints"))[0].startswith("12-")
    chex.assert_trees_all_equal(tw.flat_params(result.state.params), final)


def test_checksum_catches_silent_damage(train_reference_run, tmp_path):
    """A checkpoint that decodes but whose values changed is rejected by its CRC32."""
    workdir, result, _ = train_reference_run
    copy = str(tmp_path / "ckpt")
    shutil.copytree(os.path.join(workdir, "checkpoints"), copy)
    path = os.path.join(copy, "12", "integrity", "metadata")
    with open(path) as f:
        info = json.load(f)
    key = next(k for k in info["crc32"] if k.startswith("params"))
    info["crc32"][key] ^= 1  # as if the stored array no longer matched what was saved
    with open(path, "w") as f:
        json.dump(info, f)
    ckpt = train.Checkpointer(copy)
    with pytest.warns(train.CheckpointCorruptWarning, match="checksum mismatch"):
        _, step = ckpt.restore(result.state)
    ckpt.close()
    assert step == 9


def test_incompatible_checkpoint_is_refused_and_nothing_overwritten(train_reference_run, tmp_path):
    workdir, _, _ = train_reference_run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)

    def snapshot():
        out = {}
        for root, _, names in os.walk(copy):
            for n in names:
                p = os.path.join(root, n)
                with open(p, "rb") as f:
                    out[p] = f.read()
        return out

    before = snapshot()
    with pytest.raises(
        train.IncompatibleCheckpointError,
        match=r"params\.lstm\.w_hh: checkpoint has shape \(8, 32\) float32, model "
        r"expects \(6, 24\)",
    ):
        tw.run(tw.TinyConfig(hidden_size=6), copy)
    assert snapshot() == before
