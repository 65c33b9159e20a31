"""The long-range experiments: model, parameter budgets, CLI, gradient-flow measurement."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from experiments import gradient_flow as gf
from experiments import long_range as lr


def _closed_form_count(name: str, H: int, I: int, O: int) -> int:
    readout = H * O + O
    if name == "rnn":
        return I * H + H * H + H + readout
    if name == "gru":
        return 3 * (I * H + H * H + H) + readout
    if name == "lstm":
        return 4 * (I * H + H * H + H) + readout
    if name == "V":  # peepholes on three gates
        return 4 * (I * H + H * H + H) + 3 * H + readout
    if name == "CIFG":  # three blocks, peepholes on f and o
        return 3 * (I * H + H * H + H) + 2 * H + readout
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm", "V", "CIFG"])
@pytest.mark.parametrize("task", ["adding", "copy"])
def test_param_count_and_budget(name, task):
    I, O = lr.io_sizes(task)
    for H in (1, 5):
        assert lr.param_count(lr.make_cell(name, H), I, O) == _closed_form_count(name, H, I, O)
    budget = 1500
    H = lr.hidden_for_budget(name, task, budget)
    assert _closed_form_count(name, H, I, O) <= budget < _closed_form_count(name, H + 1, I, O)


def test_cell_names():
    assert lr.canonical_cell("LSTM") == "lstm"
    assert lr.canonical_cell("peephole") == "V"
    assert lr.canonical_cell("cifg") == "CIFG"
    assert lr.canonical_cell("nfg") == "NFG"
    assert lr.make_cell("NFG", 3) == seqjax.LSTM.variant("NFG", 3)
    assert lr.make_cell("rnn", 3) == seqjax.SimpleRNN(3)
    with pytest.raises(ValueError, match="unknown cell 'lstn'"):
        lr.canonical_cell("lstn")
    with pytest.raises(ValueError, match="budget 10 is too small"):
        lr.hidden_for_budget("lstm", "adding", 10)
    with pytest.raises(ValueError, match="task must be one of"):
        lr.Config(task="sorting")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        lr.Config(steps=0)
    with pytest.raises(ValueError, match="optimizer"):
        lr.Config(optimizer="rmsprop")


def test_init_scale_scales_weights():
    base = lr.make_cell("gru", 4).init(jax.random.key(0), 2)
    scaled = lr.make_cell("gru", 4, init_scale=3.0).init(jax.random.key(0), 2)
    np.testing.assert_allclose(scaled.w_ih, 3 * base.w_ih, rtol=1e-6)
    np.testing.assert_allclose(scaled.w_hh, 3 * base.w_hh, rtol=1e-6)


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_cli_adding_prints_json(capsys, tmp_path):
    lr.main(["--task", "adding", "--cell", "gru", "--length", "5", "--steps", "4",
             "--hidden", "3", "--eval-every", "2", "--test-size", "8",
             "--workdir", str(tmp_path)])
    r = _last_json(capsys.readouterr().out)
    for key in ("task", "cell", "length", "steps", "test_mse", "baseline", "solved", "params",
                "wall_s"):
        assert key in r
    assert (r["task"], r["cell"], r["length"], r["steps"]) == ("adding", "gru", 5, 4)
    assert r["baseline"] == pytest.approx(1 / 6)
    assert r["params"] == _closed_form_count("gru", 3, 2, 1)
    assert np.isfinite(r["test_mse"])
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["test_mse"] == r["test_mse"]
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2


def test_cli_copy_prints_json(capsys):
    lr.main(["--task", "copy", "--cell", "cifg", "--length", "3", "--steps", "2",
             "--hidden", "4", "--test-size", "8", "--clip-norm", "0"])
    r = _last_json(capsys.readouterr().out)
    for key in ("task", "cell", "length", "steps", "test_xent", "recall_accuracy", "baseline"):
        assert key in r
    assert r["cell"] == "CIFG" and r["config"]["clip_norm"] is None
    assert r["baseline"] == pytest.approx(10 * np.log(8) / 23)
    assert 0.0 <= r["recall_accuracy"] <= 1.0
    # An untrained model is near the uniform over 9 outputs, far above the baseline.
    assert r["test_xent"] > r["baseline"]


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        lr.main(["--cell", "transformer", "--steps", "1"])
    assert "unknown cell" in capsys.readouterr().err


def test_training_learns_short_adding_problem():
    # T = 4: an LSTM reaches far below the 1/6 baseline within a few hundred steps.
    r = lr.train_and_evaluate(lr.Config(task="adding", cell="lstm", length=4, steps=300,
                                        hidden=8, learning_rate=1e-2, eval_every=300,
                                        test_size=256, batch_size=32))
    assert r["test_mse"] < 0.02 < r["baseline"]
    assert not r["nonfinite"]


@pytest.fixture(scope="module")
def relu_linear_rnn():
    """A ReLU RNN with ``W_hh = a I`` and positive weights: linear on positive inputs."""

    def build(a: float, H: int = 3):
        cell = seqjax.SimpleRNN(H, activation="relu")
        model = lr.Model(cell, "adding")
        params = model.init(jax.random.key(0))
        params["cell"] = params["cell"]._replace(
            w_ih=jnp.abs(params["cell"].w_ih) + 0.1, w_hh=a * jnp.eye(H))
        return model, params

    return build


@pytest.mark.parametrize("a", [0.5, 1.3])
def test_gradient_norms_decay_like_a_to_the_k(relu_linear_rnn, a):
    # h_t = W x_t + a h_{t-1} stays positive, so dL/dh_t = a^(T-1-t) dL/dh_{T-1} exactly.
    T = 8
    model, params = relu_linear_rnn(a)
    inputs, targets = lr.make_batch("adding", jax.random.key(1), 3, T)
    norms = gf.state_gradient_norms(model, params, inputs, targets)
    assert set(norms) == {"h"} and norms["h"].shape == (T,)
    k = np.arange(T)[::-1]
    np.testing.assert_allclose(norms["h"] / norms["h"][-1], a ** k, rtol=1e-5)
    assert gf.log_slope(norms["h"][::-1]) == pytest.approx(np.log10(a), rel=1e-5)


def test_gradient_norms_match_restarted_scan():
    # Independent check for a gated cell: differentiate the loss of the suffix of the
    # sequence, restarted from the state at step t, with respect to that state.
    T, t = 6, 2
    model = lr.Model(seqjax.LSTM(4, peephole=True), "adding")
    params = model.init(jax.random.key(2))
    inputs, targets = lr.make_batch("adding", jax.random.key(3), 2, T)
    norms = gf.state_gradient_norms(model, params, inputs, targets)
    cell, cp = model.cell, params["cell"]
    carry_t, _ = seqjax.scan(cell, cp, inputs[:, :t + 1])

    def suffix_loss(carry):
        _, ys = seqjax.scan(cell, cp, inputs[:, t + 1:], carry=carry)
        pred = (ys[:, -1] @ params["readout"]["w"] + params["readout"]["b"])[:, 0]
        return jnp.sum(jnp.square(pred - targets))  # sum of per-example losses

    g = jax.grad(suffix_loss)(carry_t)
    np.testing.assert_allclose(norms["h"][t], np.mean(np.linalg.norm(g.h, axis=-1)),
                               rtol=1e-4)
    np.testing.assert_allclose(norms["c"][t], np.mean(np.linalg.norm(g.c, axis=-1)),
                               rtol=1e-4)


def test_log_slope():
    assert gf.log_slope(10.0 ** (-0.02 * np.arange(50))) == pytest.approx(-0.02)
    assert gf.log_slope(np.array([1.0, 0.0, 0.01])) == pytest.approx(-1.0)  # zero dropped
    assert np.isnan(gf.log_slope(np.array([1.0])))
