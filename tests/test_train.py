"""seqjax.train: optimizer recipes, steps, TBPTT, checkpoints, the loop, config parsing.

References are closed forms and NumPy re-implementations written here; training runs use the
tiny LSTM models of ``tests/_train_worker.py``, which is also the script the subprocess tests
run (SIGKILL in the middle of a save and resume; 8 fake devices).
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
import warnings
from typing import Optional

import _train_worker as tw
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqjax
from seqjax import train

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 12-step run of the tiny LM task (saves at 3, 6, 9, 12)."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    result = tw.run(tw.TinyConfig(), workdir)
    return workdir, result, tw.flat_params(result.state.params)


def _params_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- optimizers


def test_sgd_clipping_and_l2_match_closed_form():
    p = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
    g = {"w": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}  # global norm 5
    opt = train.make_optimizer("sgd", 0.1, clip_norm=2.0, weight_decay=0.01)
    updates, _ = opt.update(g, opt.init(p), p)
    for k in p:
        clipped = np.asarray(g[k]) * 2.0 / 5.0
        expected = -0.1 * (clipped + 0.01 * np.asarray(p[k]))
        np.testing.assert_allclose(updates[k], expected, rtol=1e-6)
    # Below the threshold nothing is rescaled.
    opt = train.make_optimizer("sgd", 0.1, clip_norm=10.0)
    updates, _ = opt.update(g, opt.init(p), p)
    np.testing.assert_allclose(updates["w"], -0.1 * np.asarray(g["w"]), rtol=1e-6)


def test_adamw_and_rmsprop_first_two_steps_match_numpy():
    p0 = np.array([0.5, -1.0, 2.0], np.float32)
    grads = [np.array([0.3, -0.2, 0.1], np.float32), np.array([-0.1, 0.4, 0.2], np.float32)]
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    opt = train.make_optimizer("adamw", lr, weight_decay=wd, clip_norm=None)
    state, p = opt.init(jnp.asarray(p0)), jnp.asarray(p0)
    m = v = np.zeros(3)
    pn = p0.astype(np.float64)
    for t, g in enumerate(grads, start=1):
        upd, state = opt.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, upd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g.astype(np.float64) ** 2
        mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
        pn = pn - lr * (mhat / (np.sqrt(vhat) + eps) + wd * pn)
    np.testing.assert_allclose(p, pn, rtol=1e-5)

    decay, eps_r = 0.9, 1e-8
    opt = train.make_optimizer("rmsprop", lr, clip_norm=None)
    state, p = opt.init(jnp.asarray(p0)), jnp.asarray(p0)
    nu, pn = np.zeros(3), p0.astype(np.float64)
    for g in grads:
        upd, state = opt.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, upd)
        nu = decay * nu + (1 - decay) * g.astype(np.float64) ** 2
        pn = pn - lr * g / (np.sqrt(nu) + eps_r)
    np.testing.assert_allclose(p, pn, rtol=1e-5)


def test_schedules_match_closed_forms():
    lr, warm, total = 2.0, 10, 110
    sched = train.make_schedule(
        lr, "cosine", warmup_steps=warm, total_steps=total, end_lr_factor=0.1
    )
    for s in [0, 3, 10, 40, 75, 110, 150]:
        if s < warm:
            want = lr * s / warm
        else:
            frac = min(s - warm, total - warm) / (total - warm)
            want = lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        assert float(sched(s)) == pytest.approx(want, rel=1e-5, abs=1e-6), s
    sched = train.make_schedule(1.0, "step", warmup_steps=5, decay_every=10, decay_factor=0.5)
    for s, want in [(0, 0.0), (5, 1.0), (14, 1.0), (15, 0.5), (35, 0.125)]:
        assert float(sched(s)) == pytest.approx(want, rel=1e-6), s
    assert float(train.make_schedule(0.3)(1234)) == pytest.approx(0.3)


def test_optimizer_bad_arguments_are_named():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        train.make_optimizer("lbfgs")
    with pytest.raises(ValueError, match="schedule must be one of"):
        train.make_optimizer("sgd", 0.1, schedule="linear")
    with pytest.raises(ValueError, match="total_steps > warmup_steps"):
        train.make_schedule(0.1, "cosine", warmup_steps=10, total_steps=5)
    with pytest.raises(ValueError, match="accumulate_steps"):
        train.make_optimizer("sgd", 0.1, accumulate_steps=0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        train.make_optimizer("adamw", 0.1, weight_decay=-1.0)


def _quadratic_loss(params, batch, rng):
    err = batch["x"] @ params["w"] - batch["y"]
    return train.LossOutput(jnp.sum(err**2), jnp.asarray(err.shape[0], jnp.float32))


def test_gradient_accumulation_equals_one_large_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.normal(size=(8,)).astype(np.float32)
    p0 = {"w": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    big = train.make_optimizer("sgd", 0.1, clip_norm=None)
    acc = train.make_optimizer("sgd", 0.1, clip_norm=None, accumulate_steps=2)
    # Each state gets its own copy: the step donates (frees) its input state's buffers.
    s_big = train.TrainState.create(jax.tree.map(jnp.copy, p0), big)
    s_big, _ = train.make_train_step(_quadratic_loss, big)(s_big, {"x": x, "y": y})
    s_acc = train.TrainState.create(jax.tree.map(jnp.copy, p0), acc)
    step = train.make_train_step(_quadratic_loss, acc)
    s_acc, _ = step(s_acc, {"x": x[:4], "y": y[:4]})
    np.testing.assert_array_equal(s_acc.params["w"], p0["w"])  # no update after 1 of 2
    s_acc, _ = step(s_acc, {"x": x[4:], "y": y[4:]})
    np.testing.assert_allclose(s_acc.params["w"], s_big.params["w"], rtol=1e-5)
    # Closed form of the large-batch step: w - lr * 2/N X^T (Xw - y).
    w = np.asarray(p0["w"])
    np.testing.assert_allclose(s_big.params["w"], w - 0.1 * 2 / 8 * x.T @ (x @ w - y), rtol=1e-5)


# --------------------------------------------------------------------------- steps


def test_train_step_rng_is_fold_in_of_step_and_buffers_are_donated():
    key = jax.random.key(7)

    def loss_fn(params, batch, rng):
        u = jax.random.uniform(rng, ())
        return train.LossOutput(jnp.sum(params["w"]) * 0.0, jnp.float32(1.0), {"u": u})

    opt = optax.sgd(0.1)
    state = train.TrainState.create({"w": jnp.ones(2)}, opt, key)
    step = train.make_train_step(loss_fn, opt)
    for s in range(3):
        old = state
        state, metrics = step(state, {})
        want = jax.random.uniform(jax.random.fold_in(key, s), ())
        assert float(metrics["u"]) == float(want)
        assert old.params["w"].is_deleted()  # the input state's buffers were donated
    assert int(state.step) == 3


@pytest.fixture(scope="module")
def lm_step():
    config = tw.TinyConfig()
    opt = train.make_optimizer("adamw", 0.05)
    return config, opt, train.make_train_step(tw.loss_fn(config), opt)


def test_loss_goes_down_and_every_parameter_gets_gradient(lm_step):
    config, opt, step = lm_step
    params = tw.init_fn(config)(jax.random.key(0))
    loss = tw.loss_fn(config)
    batch = tw.lm_batch(0, 16)  # every token of the vocabulary occurs in it
    assert set(np.unique(batch["inputs"])) == set(range(tw.V))

    def mean_loss(p):
        out = loss(p, batch, None)
        return out.loss_sum / out.count

    grads = jax.jit(jax.grad(mean_loss))(params)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        # every leaf, and every parameter entry of every leaf, receives gradient
        assert np.all(np.asarray(g) != 0), jax.tree_util.keystr(path)
    state = train.TrainState.create(params, opt, 0)
    losses = []
    for s in range(40):
        state, m = step(state, tw.lm_batch(s, 4))
        losses.append(m["loss_sum"] / m["count"])
    losses = [float(x) for x in jax.device_get(losses)]
    assert np.log(tw.V) == pytest.approx(np.mean(losses[:3]), rel=0.1)  # starts near chance
    # chance is log V = 1.79; the first target of each window is unpredictable, so the floor
    # is log(V) / T = 0.3; 40 steps get well below chance
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5]), losses


def test_compiler_options_reach_the_compilation(lm_step):
    config, opt, step = lm_step
    params = tw.init_fn(config)(jax.random.key(2))
    batch = tw.lm_batch(0, 4)
    # an option XLA does not know is rejected when the step compiles: proof it is passed on
    bad = train.make_train_step(
        tw.loss_fn(config), opt, donate=False, compiler_options={"xla_no_such_option_seqjax": True}
    )
    with pytest.raises(Exception, match="xla_no_such_option_seqjax"):
        bad(train.TrainState.create(params, opt, 0), batch)
    bad_eval = train.make_eval_step(
        tw.loss_fn(config), compiler_options={"xla_no_such_option_seqjax": True}
    )
    with pytest.raises(Exception, match="xla_no_such_option_seqjax"):
        bad_eval(params, batch)
    if not seqjax.kernels.eigen_dots_supported():
        return  # the tuning option is XLA:CPU-only
    # the Eigen-dots option changes the matmul library, not the result
    tuned = train.make_train_step(
        tw.loss_fn(config), opt, compiler_options=seqjax.kernels.XLA_CPU_EIGEN_DOTS
    )
    fresh = lambda: train.TrainState.create(tw.init_fn(config)(jax.random.key(2)), opt, 0)  # noqa: E731 - donated
    s_ref, m_ref = step(fresh(), batch)
    s_new, m_new = tuned(fresh(), batch)
    np.testing.assert_allclose(float(m_new["loss_sum"]), float(m_ref["loss_sum"]), rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        s_new.params,
        s_ref.params,
    )


def test_nonfinite_step_is_a_noop_and_recorded(lm_step):
    config, opt, step = lm_step
    state = train.TrainState.create(tw.init_fn(config)(jax.random.key(1)), opt, 0)
    for s in range(2):
        state, _ = step(state, tw.lm_batch(s, 4, poison_step=2))
    good = tw.flat_params(state.params)
    good_opt = jax.device_get(state.opt_state)
    for s in range(2, 5):  # step 2 is NaN; the later ones are refused
        state, m = step(state, tw.lm_batch(s, 4, poison_step=2))
        if s == 2:
            assert np.isnan(float(m["loss_sum"]))
    assert int(state.nonfinite_step) == 2 and int(state.step) == 2
    assert _params_equal(tw.flat_params(state.params), good)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.opt_state), good_opt)


def test_summarize_metrics_and_bad_loss_outputs():
    out = train.summarize_metrics(
        {"loss_sum": 6.0, "count": 3.0, "grad_norm_sum": 4.0, "steps": 2.0, "correct": 1.5}
    )
    assert out == {"loss": 2.0, "count": 3.0, "grad_norm": 2.0, "correct": 0.5}
    opt = optax.sgd(0.1)
    state = train.TrainState.create({"w": jnp.ones(2)}, opt)
    bad = train.make_train_step(lambda p, b, r: jnp.sum(p["w"]), opt, donate=False)
    with pytest.raises(TypeError, match="LossOutput"):
        bad(state, {})
    bad = train.make_train_step(lambda p, b, r: (p["w"], jnp.float32(2)), opt, donate=False)
    with pytest.raises(ValueError, match="scalar loss_sum"):
        bad(state, {})
    bad = train.make_train_step(
        lambda p, b, r: (jnp.sum(p["w"]), jnp.float32(2), {"count": jnp.float32(1)}),
        opt,
        donate=False,
    )
    with pytest.raises(ValueError, match="reserved"):
        bad(state, {})


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


# --------------------------------------------------------------------------- TBPTT


def test_tbptt_carry_is_passed_reset_and_not_differentiated_through():
    config = tw.TinyConfig(task="stream")
    loss = tw.loss_fn(config)
    params = tw.init_fn(config)(jax.random.key(3))
    opt = optax.sgd(0.0)  # zero learning rate: parameters fixed, only the carry moves
    c0 = tw.cell(config).initial_carry((4,))
    b0, b1 = tw.stream_batch(0, 4), tw.stream_batch(1, 4)
    assert b0["reset"].all() and not b1["reset"].any()
    step = train.make_train_step(loss, opt, donate=False)
    loss_sum = jax.jit(lambda p, b, c: loss(p, b, None, c).loss_sum)
    state = train.TrainState.create(params, opt, 0, carry=c0)
    state1, m0 = step(state, b0)
    state2, m1 = step(state1, b1)

    # The carry after batch 0 is the final carry of a scan over window 0 from zeros, and
    # batch 1's loss is computed from it (not from zeros).
    _, want_c1 = jax.jit(tw.logits_and_carry, static_argnums=0)(
        config, params, jnp.asarray(b0["inputs"]), c0
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), state1.carry, want_c1)
    want_l1 = loss_sum(params, b1, want_c1)
    zero_l1 = loss_sum(params, b1, c0)
    assert float(m1["loss_sum"]) == pytest.approx(float(want_l1), rel=1e-6)
    assert abs(float(want_l1) - float(zero_l1)) > 1e-4  # the carry really matters

    # A reset row starts from zeros again.
    reset_b1 = dict(b1, reset=np.array([True, False, True, False]))
    _, m_reset = step(state1, reset_b1)
    mixed = train.reset_carry(want_c1, jnp.asarray(reset_b1["reset"]))
    assert float(m_reset["loss_sum"]) == pytest.approx(float(loss_sum(params, b1, mixed)), rel=1e-6)

    # Gradient through the step w.r.t. the previous batch's input embeddings is zero (the
    # carry is stop_gradient-ed at the boundary), while without the stop it is not.
    raw_step = train.make_train_step(loss, opt, jit=False)
    x0 = params["embed"][jnp.asarray(b0["inputs"])]

    def carry_from(x0_emb):
        final, _ = seqjax.scan(tw.cell(config), params["lstm"], x0_emb, carry=c0)
        return final

    def loss_after_step(x0_emb):
        st = train.TrainState.create(params, opt, 0, carry=carry_from(x0_emb))
        _, m = raw_step(st, b1)
        return m["loss_sum"]

    def loss_without_stop(x0_emb):
        return loss_sum(params, b1, carry_from(x0_emb))

    g_step = jax.jit(jax.grad(loss_after_step))(x0)
    g_free = jax.jit(jax.grad(loss_without_stop))(x0)
    assert float(jnp.max(jnp.abs(g_free))) > 1e-4
    np.testing.assert_array_equal(g_step, np.zeros_like(g_step))

    # Parameter gradients of batch 1 equal those computed with the carry as a constant.
    def mean_loss(p, carry):
        out = loss(p, b1, None, carry)
        return out.loss_sum / out.count

    g_const = jax.jit(jax.grad(mean_loss))(params, want_c1)
    assert float(m1["grad_norm_sum"]) == pytest.approx(float(optax.tree.norm(g_const)), rel=1e-5)
    del state2

    # eval_step passes the carry the same way.
    ev = train.make_eval_step(loss)
    em0, ec1 = ev(params, b0, c0)
    em1, _ = ev(params, b1, ec1)
    assert float(em1["loss_sum"]) == pytest.approx(float(want_l1), rel=1e-6)
    assert float(em0["loss_sum"]) == pytest.approx(float(m0["loss_sum"]), rel=1e-6)


def test_tbptt_carry_errors():
    opt = optax.sgd(0.1)
    state = train.TrainState.create({"w": jnp.ones(2)}, opt, carry={"h": jnp.zeros((2, 3))})
    bad = train.make_train_step(
        lambda p, b, r, c: (jnp.sum(p["w"]), jnp.float32(1)), opt, donate=False
    )
    with pytest.raises(ValueError, match="carry=None"):
        bad(state, {})
    bad = train.make_train_step(
        lambda p, b, r, c: (jnp.sum(p["w"]), jnp.float32(1), {}, {"h": jnp.zeros((2, 4))}),
        opt,
        donate=False,
    )
    with pytest.raises(ValueError, match=r"carry leaf \(2, 4\)"):
        bad(state, {})
    with pytest.raises(ValueError, match=r"reset must have shape \[B\]"):
        train.reset_carry({"h": jnp.zeros((2, 3))}, jnp.array([True, False, True]))
    with pytest.raises(TypeError, match="boolean"):
        train.reset_carry({"h": jnp.zeros((2, 3))}, jnp.array([1, 0]))


# --------------------------------------------------------------------------- data order


def test_batch_indices_are_epoch_permutations_and_pure():
    n, b = 10, 4
    idx = np.concatenate([train.batch_indices(s, n, b, seed=3) for s in range(5)])  # 2 epochs
    assert sorted(idx[:n].tolist()) == list(range(n))
    assert sorted(idx[n : 2 * n].tolist()) == list(range(n))
    assert not np.array_equal(idx[:n], idx[n : 2 * n])
    np.testing.assert_array_equal(train.batch_indices(3, n, b, seed=3), idx[12:16])
    with pytest.raises(ValueError, match="step >= 0"):
        train.batch_indices(-1, n, b)


def test_stream_window_is_contiguous_and_resets_on_wrap():
    s = np.arange(2 * 13).reshape(2, 13)
    ws = [train.stream_window(s, k, 4) for k in range(4)]  # 3 windows per pass
    np.testing.assert_array_equal(ws[1]["inputs"], s[:, 4:8])
    np.testing.assert_array_equal(ws[1]["targets"], s[:, 5:9])
    assert [bool(w["reset"][0]) for w in ws] == [True, False, False, True]
    np.testing.assert_array_equal(ws[3]["inputs"], ws[0]["inputs"])
    with pytest.raises(ValueError, match="seq_len"):
        train.stream_window(s, 0, 13)


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class _Model:
    hidden_size: int = 8
    layers: int = 1


@dataclasses.dataclass(frozen=True)
class _Cfg(train.TrainConfig):
    model: _Model = dataclasses.field(default_factory=_Model)
    sizes: tuple[int, ...] = (1, 2)
    dropout: Optional[float] = None  # noqa: UP045 - checks typing.Optional parsing too
    name: str = "run"


def test_config_overrides_types_and_round_trip():
    cfg = train.parse_config(
        _Cfg,
        [
            "--learning_rate=3e-3",
            "--total_steps",
            "20",
            "--progress",
            "false",
            "--async_checkpointing",
            "--model.hidden_size",
            "16",
            "--sizes",
            "4,5,6",
            "--dropout",
            "0.25",
            "--name=x=y",
            "--warmup-steps",
            "7",
        ],
    )
    assert cfg.learning_rate == 3e-3 and isinstance(cfg.learning_rate, float)
    assert cfg.total_steps == 20 and cfg.progress is False and cfg.async_checkpointing is True
    assert cfg.model == _Model(hidden_size=16) and cfg.sizes == (4, 5, 6)
    assert cfg.dropout == 0.25 and cfg.name == "x=y" and cfg.warmup_steps == 7
    assert train.parse_config(cfg, ["--dropout", "none"]).dropout is None
    assert train.parse_config(_Cfg, ["--sizes", "[3, 4]"]).sizes == (3, 4)
    d = train.config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d
    assert train.config_from_dict(_Cfg, d) == cfg
    lines = dict(line.split(": ", 1) for line in train.format_config(cfg).splitlines())
    assert lines["model.hidden_size".ljust(len(max(lines, key=len)))] == "16"
    assert train.config_diff(train.config_to_dict(_Cfg()), d)["model.hidden_size"] == (8, 16)


@given(
    total_steps=st.integers(0, 10**9),
    lr=st.floats(1e-9, 10.0),
    flag=st.booleans(),
    sizes=st.lists(st.integers(-50, 50), max_size=4),
    name=st.text(st.characters(categories=("L", "N")), min_size=1, max_size=8),
)
def test_config_override_round_trip_property(total_steps, lr, flag, sizes, name):
    argv = [
        f"--total_steps={total_steps}",
        "--learning_rate",
        repr(lr),
        "--progress",
        str(flag).lower(),
        f"--sizes={json.dumps(sizes)}",
        "--name",
        name,
    ]
    cfg = train.parse_config(_Cfg, argv)
    assert (cfg.total_steps, cfg.learning_rate, cfg.progress, cfg.sizes, cfg.name) == (
        total_steps,
        lr,
        flag,
        tuple(sizes),
        name,
    )
    assert train.config_from_dict(_Cfg, json.loads(json.dumps(train.config_to_dict(cfg)))) == cfg


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown config key 'lr'; valid keys: .*learning_rate"):
        train.parse_config(_Cfg, ["--lr", "0.1"])
    with pytest.raises(ValueError, match="unknown config key 'model.depth'.*model.hidden_size"):
        train.parse_config(_Cfg, ["--model.depth", "2"])
    with pytest.raises(ValueError, match="--total_steps expects an int, got 'ten'"):
        train.parse_config(_Cfg, ["--total_steps", "ten"])
    with pytest.raises(ValueError, match="--progress expects a bool"):
        train.parse_config(_Cfg, ["--progress=maybe"])
    with pytest.raises(ValueError, match="--total_steps needs a value"):
        train.parse_config(_Cfg, ["--total_steps"])
    with pytest.raises(ValueError, match="expected --key value"):
        train.parse_config(_Cfg, ["total_steps=3"])
    with pytest.raises(ValueError, match="unknown config key"):
        train.config_from_dict(_Cfg, {"nope": 1})
    with pytest.raises(TypeError, match="expects an int"):
        train.config_from_dict(_Cfg, {"total_steps": "3"})


# --------------------------------------------------------------------------- the loop


def _tensorboard_scalars(directory: str) -> dict[tuple[int, str], float]:
    """Reads scalar summaries from tensorboardX event files (TFRecord framing)."""
    import struct

    from tensorboardX.proto import event_pb2

    out = {}
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out[(event.step, v.tag)] = v.simple_value
    return out


def test_train_loop_writes_everything_and_resumes(reference_run, tmp_path):
    workdir, result, final = reference_run
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
    scalars = _tensorboard_scalars(f"{workdir}/tensorboard")
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
    assert s == 12 and _params_equal(tw.flat_params(restored.params), final)

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


def test_corrupt_latest_checkpoint_falls_back_and_resume_is_exact(reference_run, tmp_path):
    workdir, _, final = reference_run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    _corrupt(os.path.join(copy, "checkpoints", "12"))
    # A half-written later step (a save killed midway) is ignored, not mistaken for a step.
    os.makedirs(os.path.join(copy, "checkpoints", "15.orbax-checkpoint-tmp", "state"))
    with pytest.warns(train.CheckpointCorruptWarning, match="step 12 .* corrupt"):
        result = tw.run(tw.TinyConfig(), copy)
    assert result.resumed_from == 9
    assert os.listdir(os.path.join(copy, "corrupt_checkpoints"))[0].startswith("12-")
    assert _params_equal(tw.flat_params(result.state.params), final)


def test_checksum_catches_silent_damage(reference_run, tmp_path):
    """A checkpoint that decodes but whose values changed is rejected by its CRC32."""
    workdir, result, _ = reference_run
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


def test_incompatible_checkpoint_is_refused_and_nothing_overwritten(reference_run, tmp_path):
    workdir, _, _ = reference_run
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
            _Model(), str(tmp_path / "x"), init_params=None, loss_fn=None, train_batch=None
        )


def test_resume_never_refuses_existing_checkpoints(reference_run):
    workdir, _, _ = reference_run
    with pytest.raises(FileExistsError, match="refuses to overwrite"):
        tw.run(tw.TinyConfig(), workdir, resume="never")


def test_metric_writer_drops_records_past_the_resume_step(tmp_path):
    w = train.MetricWriter(tmp_path, tensorboard=False)
    for s in (3, 6, 9):
        w.write(s, "train", {"loss": float(s)})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 12, "split": "tr')  # torn line of a killed run
    assert [r["step"] for r in train.read_metrics(tmp_path)] == [3, 6, 9]
    w = train.MetricWriter(tmp_path, resume_step=6, tensorboard=False)
    w.write(9, "train", {"loss": 0.5, "bad": float("nan")})
    w.close()
    recs = train.read_metrics(tmp_path)
    assert [(r["step"], r["loss"]) for r in recs] == [(3, 3.0), (6, 6.0), (9, 0.5)]
    assert recs[-1]["bad"] == "nan"
    png = train.plot_curves(tmp_path)
    assert os.path.getsize(png) > 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.summarize_metrics({"loss_sum": 1.0, "count": 0.0})


# --------------------------------------------------------------------------- subprocesses
# SIGKILL in the middle of a save then resume, and 8 fake devices. Each subprocess pays the
# JAX import and compilation again, so there are few of them and each checks several things.

WORKER = os.path.join(os.path.dirname(__file__), "_train_worker.py")


def _env(devices: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    flags = [
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    if devices is not None:
        # Must be set before jax is imported, hence a subprocess.
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def _worker(*args: str, devices: int | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, WORKER, *args],
        env=_env(devices),
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _load(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_sigkill_mid_save_then_resume_is_bit_identical(tmp_path, reference_run):
    uninterrupted = reference_run[2]
    workdir = str(tmp_path / "run")
    # Saves every 3 steps; the process is SIGKILLed while the asynchronous save of step 6 is
    # committing (all files written, the final rename not yet done).
    killed = _worker("run", workdir, "--kill_at_step", "6")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    entries = os.listdir(os.path.join(workdir, "checkpoints"))
    assert "3" in entries and "6" not in entries, entries  # step 6 never completed...
    tmp = [e for e in entries if e.startswith("6.orbax-checkpoint-tmp")]
    # ...its data written, only the commit missing
    assert tmp and "state" in os.listdir(os.path.join(workdir, "checkpoints", tmp[0]))

    resumed = _worker("run", workdir)  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    info = _last_json(resumed.stdout)
    assert info == {"resumed_from": 3, "final_step": 12}
    assert "resuming from checkpoint step 3" in resumed.stdout
    assert "== TinyConfig ==" in resumed.stdout and "hidden_size" in resumed.stdout
    final = _load(os.path.join(workdir, "final_params.npz"))
    assert final.keys() == uninterrupted.keys()
    for k in final:
        np.testing.assert_array_equal(final[k], uninterrupted[k], err_msg=k)
    steps = sorted(int(e) for e in os.listdir(os.path.join(workdir, "checkpoints")) if e.isdigit())
    assert steps[-1] == 12
    # The metrics file holds each logged step once, despite the replayed stretch.
    train_steps = [r["step"] for r in train.read_metrics(workdir) if r["split"] == "train"]
    assert train_steps == [3, 6, 9, 12]


def test_eight_devices_equal_one_and_checkpoints_move_between_counts(tmp_path):
    out = _worker("devices", str(tmp_path), devices=8)
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


@pytest.mark.slow
def test_sigkill_at_random_times_then_resume_is_bit_identical(tmp_path):
    """Kills a longer run from outside at several random moments; the end result never moves."""
    args = ["--total_steps", "120", "--save_every", "2", "--log_every", "2", "--eval_every", "4"]
    ref = str(tmp_path / "ref")
    done = _worker("run", ref, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    want = _load(os.path.join(ref, "final_params.npz"))
    workdir = str(tmp_path / "run")
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, WORKER, "run", workdir, *args],
            env=_env(),
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
    final = _worker("run", workdir, *args)
    assert final.returncode == 0, final.stderr[-3000:]
    assert _last_json(final.stdout)["resumed_from"] is not None
    got = _load(os.path.join(workdir, "final_params.npz"))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
