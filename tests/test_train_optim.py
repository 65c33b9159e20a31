"""seqjax.train.optim: optimizer recipes and schedules against NumPy and closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seqjax import train


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
