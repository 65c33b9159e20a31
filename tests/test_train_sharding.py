"""seqjax.train.sharding and evaluation: batch sharding, count-weighted means, 8 fake devices."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import worker

from seqjax import train


def _quadratic_loss(params, batch, rng):
    err = batch["x"] @ params["w"] - batch["y"]
    return train.LossOutput(jnp.sum(err**2), jnp.asarray(err.shape[0], jnp.float32))


def test_evaluate_weights_batches_by_count_and_shard_batch_checks_sizes():
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(3,)), jnp.float32)
    batches = [
        {
            "x": rng.normal(size=(n, 3)).astype(np.float32),
            "y": rng.normal(size=(n,)).astype(np.float32),
        }
        for n in (3, 5)
    ]
    mesh = train.make_mesh()
    got = train.evaluate(train.make_eval_step(_quadratic_loss), {"w": w}, batches, mesh)
    x = np.concatenate([b["x"] for b in batches])
    y = np.concatenate([b["y"] for b in batches])
    want = np.mean((x @ np.asarray(w) - y) ** 2)  # the mean over all 8 examples, not of means
    assert got["loss"] == pytest.approx(want, rel=1e-5) and got["count"] == 8.0
    with pytest.raises(ValueError, match="yielded no batches"):
        train.evaluate(train.make_eval_step(_quadratic_loss), {"w": w}, [], mesh)
    with pytest.raises(ValueError, match=r"share the leading \(batch\) size, got sizes \[2, 3\]"):
        train.shard_batch({"a": np.zeros((2, 1)), "b": np.zeros((3,))}, mesh)


def test_eight_devices_equal_one_and_checkpoints_move_between_counts(tmp_path):
    out = worker("devices", str(tmp_path), devices=8)
    assert out.returncode == 0, out.stderr[-5000:]
    with open(tmp_path / "devices.json") as f:
        r = json.load(f)
    for task in ("stream",):
        # Same training on 8 devices and on 1, up to float reduction order.
        assert r[f"{task}_max_abs_diff"] <= 1e-5 * max(1.0, r[f"{task}_max_abs_param"]), r
        assert r[f"{task}_8_eval_loss"] == pytest.approx(r[f"{task}_1_eval_loss"], rel=1e-5)
        assert r[f"{task}_8_param_devices"] == 8 and r[f"{task}_1_param_devices"] == 1
        for src, dst in ((8, 1), (1, 8)):
            assert r[f"{task}_restore_{src}_to_{dst}_step"] == 6
            assert r[f"{task}_restore_{src}_to_{dst}_exact"] is True
            assert r[f"{task}_restore_{src}_to_{dst}_devices"] == dst
    # The TBPTT carry [8, H] is split over the batch axis: one row per device.
    assert r["stream_8_carry_shard_rows"] == 1 and r["stream_1_carry_shard_rows"] == 8
    assert "batch size 6 is not divisible by the 8 devices" in r["indivisible_error"]
    # make_mesh(model=4): (data 2, model 4). Same training as 1 device; every parameter and
    # Adam moment of >= 2 dims whose last dim divides by 4 is split along it, the rest is
    # replicated; the carry is split over "data" only; checkpoints move to and from 1 device.
    assert r["model4_max_abs_diff"] <= 1e-5 * max(1.0, r["stream_max_abs_param"]), r
    assert r["model4_eval_loss"] == pytest.approx(r["stream_1_eval_loss"], rel=1e-5)
    assert r["model4_carry_shard_rows"] == 4
    split = 0
    for kind in ("param", "opt"):
        for name, (full, shard) in r[f"model4_{kind}_shards"].items():
            if len(full) >= 2 and full[-1] % 4 == 0:
                assert shard == full[:-1] + [full[-1] // 4], (kind, name, full, shard)
                split += 1
            else:
                assert shard == full, (kind, name, full, shard)
    assert split == 3 * 3  # embed [6, 4], LSTM w_ih [4, 32] and w_hh [8, 32]; params, mu, nu
    for src, dst in (("model4", 1), (1, "model4")):
        assert r[f"restore_{src}_to_{dst}_step"] == 6
        assert r[f"restore_{src}_to_{dst}_exact"] is True
    shards = r["restore_1_to_model4_shards"]
    assert shards == r["model4_param_shards"]
    assert all(full == shard for full, shard in r["restore_model4_to_1_shards"].values())
    # evaluate() replicates a batch (and carry) of 6 over 8 devices instead: same metrics.
    e8, e1 = r["eval_6_rows_on_8"], r["eval_6_rows_on_1"]
    assert e8["count"] == e1["count"] == 2 * 6 * 6
    assert e8["loss"] == pytest.approx(e1["loss"], rel=1e-6)
    assert e8["accuracy"] == pytest.approx(e1["accuracy"], rel=1e-6)
