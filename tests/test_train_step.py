"""seqjax.train.step: the jitted train/eval steps, their keys, donation, non-finite steps, TBPTT.

Training uses the tiny LSTM models of ``tests/_train_worker.py``; references are closed forms
and the same loss computed outside the step.
"""

from __future__ import annotations

import _train_worker as tw
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seqjax
from seqjax import train


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
    chex.assert_trees_all_close(s_new.params, s_ref.params, rtol=1e-4, atol=1e-6)


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
    chex.assert_trees_all_equal(tw.flat_params(state.params), good)
    chex.assert_trees_all_equal(jax.device_get(state.opt_state), good_opt)


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
    chex.assert_trees_all_close(state1.carry, want_c1, rtol=1e-6)
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
