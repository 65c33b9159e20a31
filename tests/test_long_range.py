"""The long-range experiments: model, parameter budgets, CLI, gradient-flow measurement."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from experiments import gradient_flow as gf
from experiments import init_sensitivity as ins
from experiments import long_range as lr
from experiments import variants as va
from experiments.long_range.__main__ import main, parser


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
    with pytest.raises(ValueError, match="--budget: expected at least"):
        lr.hidden_for_budget("lstm", "adding", 10)
    with pytest.raises(ValueError, match="--task: expected one of"):
        lr.Config(task="sorting")
    with pytest.raises(ValueError, match="--steps: expected a positive int"):
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


# The CLI tests use the shapes of test_variants_tiny_run, so the compilations are shared.
def test_cli_adding_prints_json(capsys, tmp_path):
    main(
        [
            "--task",
            "adding",
            "--cell",
            "peephole",
            "--length",
            "4",
            "--steps",
            "2",
            "--hidden",
            "3",
            "--workdir",
            str(tmp_path),
        ]
    )
    r = _last_json(capsys.readouterr().out)
    for key in (
        "task",
        "cell",
        "length",
        "steps",
        "test_mse",
        "baseline",
        "solved",
        "params",
        "wall_s",
    ):
        assert key in r
    assert (r["task"], r["cell"], r["length"], r["steps"]) == ("adding", "V", 4, 2)
    assert r["baseline"] == pytest.approx(1 / 6)
    assert r["params"] == _closed_form_count("V", 3, 2, 1)
    assert np.isfinite(r["test_mse"])
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["test_mse"] == r["test_mse"]
    assert json.loads((tmp_path / "history.json").read_text())[-1]["step"] == 2


def test_cli_copy_prints_json(capsys):
    main(["--task", "copy", "--cell", "nfg", "--length", "2", "--steps", "2", "--hidden", "3"])
    r = _last_json(capsys.readouterr().out)
    for key in ("task", "cell", "length", "steps", "test_xent", "recall_accuracy", "baseline"):
        assert key in r
    assert r["cell"] == "NFG" and r["hidden"] == 3
    assert r["baseline"] == pytest.approx(10 * np.log(8) / 22)
    assert 0.0 <= r["recall_accuracy"] <= 1.0
    # An untrained model is near the uniform over 9 outputs, far above the baseline.
    assert r["test_xent"] > r["baseline"]


def test_cli_clip_zero_means_no_clipping():
    ns = parser().parse_args(["train", "--clip-norm", "0"])
    assert ns.clip_norm == 0.0  # main() maps 0 to None (no clipping)
    with pytest.raises(ValueError, match="clip-norm"):
        lr.Config(clip_norm=-1.0)


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["--cell", "transformer", "--steps", "1"])
    assert "unknown cell" in capsys.readouterr().err


def test_training_learns_short_adding_problem():
    # T = 4: an LSTM reaches far below the 1/6 baseline within a few hundred steps.
    r = lr.train_and_evaluate(
        lr.Config(
            task="adding",
            cell="lstm",
            length=4,
            steps=300,
            hidden=8,
            learning_rate=1e-2,
            eval_every=300,
            test_size=256,
            batch_size=32,
        )
    )
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
            w_ih=jnp.abs(params["cell"].w_ih) + 0.1, w_hh=a * jnp.eye(H)
        )
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
    np.testing.assert_allclose(norms["h"] / norms["h"][-1], a**k, rtol=1e-5)
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
    carry_t, _ = seqjax.scan(cell, cp, inputs[:, : t + 1])

    def suffix_loss(carry):
        _, ys = seqjax.scan(cell, cp, inputs[:, t + 1 :], carry=carry)
        pred = (ys[:, -1] @ params["readout"]["w"] + params["readout"]["b"])[:, 0]
        return jnp.sum(jnp.square(pred - targets))  # sum of per-example losses

    g = jax.grad(suffix_loss)(carry_t)
    np.testing.assert_allclose(norms["h"][t], np.mean(np.linalg.norm(g.h, axis=-1)), rtol=1e-4)
    np.testing.assert_allclose(norms["c"][t], np.mean(np.linalg.norm(g.c, axis=-1)), rtol=1e-4)


def test_log_slope():
    assert gf.log_slope(10.0 ** (-0.02 * np.arange(50))) == pytest.approx(-0.02)
    assert gf.log_slope(np.array([1.0, 0.0, 0.01])) == pytest.approx(-1.0)  # zero dropped
    assert np.isnan(gf.log_slope(np.array([1.0])))


# -- the sweep commands on tiny configs -------------------------------------------------------


def test_gradient_flow_tiny_run(tmp_path):
    cfg = gf.FlowConfig(
        length=5,
        train_steps=4,
        probe_size=3,
        explode_steps=4,
        budget=200,
        models=(("lstm fb 0", "lstm", 0.0),),
    )
    p = gf.run(cfg, quick=True, out_dir=tmp_path, log=lambda s: None)
    assert [r["label"] for r in p["part_a"]] == ["lstm fb 0"]
    for r in p["part_a"]:
        assert len(r["init"]["h"]) == len(r["trained"]["h"]) == 5
        assert r["slope_init"] == pytest.approx(gf.log_slope(np.asarray(r["init"]["h"])))
    assert "slope_init_c" in p["part_a"][0] and "init_profile" in p["part_b"]
    assert [r["clip_norm"] for r in p["part_b"]["runs"]] == [None, 1.0]
    assert len(p["part_b"]["runs"][0]["grad_norms"]) == 4
    for ext in ("json", "md", "png"):
        assert (tmp_path / f"gradient_flow_quick.{ext}").stat().st_size > 0
    assert "--quick" in (tmp_path / "gradient_flow_quick.md").read_text()


def test_init_sensitivity_tiny_run(tmp_path):
    cfg = ins.SensitivityConfig(
        cells=("gru",), scales=(0.5, 2.0), seeds=(0, 1), length=4, steps=3, budget=150
    )
    p = ins.run(cfg, quick=False, out_dir=tmp_path, log=lambda s: None)
    assert len(p["runs"]) == 4
    assert [(s["cell"], s["init_scale"], s["n"]) for s in p["summary"]] == [
        ("gru", 0.5, 2),
        ("gru", 2.0, 2),
    ]
    mses = [r["test_mse"] for r in p["runs"][:2]]
    assert p["summary"][0]["median"] == pytest.approx(np.median(mses))
    assert (tmp_path / "init_sensitivity.png").exists()
    assert json.loads((tmp_path / "init_sensitivity.json").read_text())["runs"] == p["runs"]


def test_variants_tiny_run(tmp_path):
    cfg = va.VariantsConfig(
        variants=("V", "NFG"),
        seeds=(0,),
        hidden=3,
        adding_length=4,
        adding_steps=2,
        copy_length=2,
        copy_steps=2,
    )
    p = va.run(cfg, quick=True, out_dir=tmp_path, log=lambda s: None)
    assert {r["cell"] for r in p["ranking"]} == {"V", "NFG"}
    assert sorted(r["adding_rank"] for r in p["ranking"]) == [1, 2]
    md = (tmp_path / "variants_quick.md").read_text()
    assert "| NFG |" in md and "0.0036 (5)" in md
    assert (tmp_path / "variants_quick.png").exists()


def test_variant_ranking_and_separation():
    runs = []
    for cell, vals in {
        "V": [0.3, 0.2, 0.4],
        "NIG": [0.5, 0.6, 0.7],
        "CIFG": [0.01, 0.02, 0.3],
    }.items():
        for v in vals:
            runs.append({"task": "adding", "cell": cell, "test_mse": v, "params": 1})
    table = va.rank(runs)
    assert [r["cell"] for r in table] == ["CIFG", "V", "NIG"]
    by = {r["cell"]: r for r in table}
    assert by["NIG"]["adding_vs_V"] == 1 and by["CIFG"]["adding_vs_V"] == 0
    assert by["CIFG"]["adding_median"] == pytest.approx(0.02)
    assert va.separated([0.0, 0.1], [0.2, 0.3]) == -1
    assert va.separated([np.nan, 0.1], [0.2, 0.3]) == 0


def test_nonfinite_run_is_reported_with_its_step():
    # A huge SGD step makes the second loss overflow; seqjax.train freezes the state there.
    f = lr.fit(
        lr.Config(
            task="adding",
            cell="rnn",
            length=4,
            steps=4,
            hidden=3,
            eval_every=4,
            optimizer="sgd",
            learning_rate=1e30,
            clip_norm=None,
            test_size=8,
        )
    )
    assert f.result["nonfinite"] and f.result["nonfinite_step"] == 1
    assert np.isfinite(f.losses[0]) and np.isnan(f.losses[1:]).all()
    assert np.isfinite(f.result["max_grad_norm"])


def test_sweep_tiny_run_and_replot(tmp_path):
    # Same shapes as test_variants_tiny_run (shared compilations).
    spec = dict(cells=("peephole", "nfg"), lengths=(4,), steps=2, seeds=(0,), hidden=3)
    rows = lr.run_sweep("adding", True, tmp_path, log=lambda s: None, spec=spec)
    assert [(r["cell"], r["length"]) for r in rows] == [("V", 4), ("NFG", 4)]
    md = (tmp_path / "adding_quick.md").read_text()
    assert "sweep --task adding --quick" in md and "| NFG | 3 |" in md
    (tmp_path / "adding_quick.md").unlink()
    main(["sweep", "--task", "adding", "--quick", "--replot", "--out", str(tmp_path)])
    assert (tmp_path / "adding_quick.md").read_text() == md
    assert (tmp_path / "adding_quick.png").stat().st_size > 0


def test_third_party_agreement_is_spearman():
    names = list(va.THIRD_PARTY_ADDING)
    same = [{"cell": n, "adding_median": va.THIRD_PARTY_ADDING[n]} for n in names]
    assert va.third_party_agreement(same) == (pytest.approx(1.0), 8)
    rev = [{"cell": n, "adding_median": -va.THIRD_PARTY_ADDING[n]} for n in names]
    assert va.third_party_agreement(rev)[0] == pytest.approx(-1.0)
    # Swapping two neighbours in rank: rho = 1 - 6 * 2 / (n (n^2 - 1)) = 1 - 12 / 504.
    order = sorted(names, key=va.THIRD_PARTY_ADDING.get)
    swapped = [{"cell": n, "adding_median": float(i)} for i, n in enumerate(order)]
    swapped[0]["adding_median"], swapped[1]["adding_median"] = 1.0, 0.0
    assert va.third_party_agreement(swapped)[0] == pytest.approx(1 - 12 / 504)
    extra = same + [{"cell": "FGR", "adding_median": 9.0}]  # not in the third-party set
    assert va.third_party_agreement(extra)[1] == 8


# -- formal languages (parity, modular arithmetic) and the newer cells -------------------------

FORMAL_SYMBOLS = "01234+-*"  # token ids of modarith: digits 0-4, then + - *


@pytest.mark.parametrize("task", ["parity", "modarith"])
def test_formal_labels_match_numpy_and_python_references(task):
    (tokens, lengths), labels = lr.make_batch(task, jax.random.key(3), 300, 23)
    tokens, lengths, labels = map(np.asarray, (tokens, lengths, labels))
    assert tokens.shape == (300, 23) and lengths.min() >= 1 and lengths.max() <= 23
    for toks, n, y in zip(tokens, lengths, labels, strict=True):
        assert not toks[n:].any()  # padding is zero
        if task == "parity":
            assert y == np.sum(toks[:n]) % 2
        else:
            # Python evaluates with the usual precedence; % 5 is the non-negative residue
            assert n % 2 == 1
            assert y == eval("".join(FORMAL_SYMBOLS[k] for k in toks[:n])) % 5  # noqa: S307
    if task == "parity":  # lengths and labels both vary
        assert len(set(lengths.tolist())) > 15 and 0.3 < labels.mean() < 0.7


@pytest.mark.parametrize("task", ["parity", "modarith"])
def test_length_generalisation_split(task):
    # the long set draws lengths length + 1 ... test_length only, padded to test_length
    (tokens, lengths), _ = lr.make_batch(task, jax.random.key(4), 400, 30, min_length=11)
    lengths = np.asarray(lengths)
    assert tokens.shape == (400, 30)
    assert lengths.min() >= 11 and lengths.max() <= 30
    assert lengths.max() >= 28  # the longest lengths are drawn too
    with pytest.raises(ValueError, match="min_length <= max_length"):
        lr.make_batch(task, jax.random.key(0), 2, 10, min_length=11)
    with pytest.raises(ValueError, match="--test-length: expected a length >= --length"):
        lr.Config(task=task, length=40, test_length=41)


def test_newer_cells_by_name():
    for name, cls in (
        ("mingru", seqjax.MinGRU),
        ("MinLSTM", seqjax.MinLSTM),
        ("slstm", seqjax.SLSTM),
        ("mlstm", seqjax.MLSTM),
    ):
        assert isinstance(lr.make_cell(name, 4), cls)
    I, O = lr.io_sizes("parity")
    assert (I, O) == (2, 2)
    # MinGRU: one input projection [I, 2H] + bias, no recurrent weights; then the readout
    for H in (1, 7):
        want = 2 * (I * H + H) + H * O + O
        assert lr.param_count(lr.make_cell("mingru", H), I, O) == want
    H = lr.hidden_for_budget("minlstm", "modarith", 1000)
    I, O = lr.io_sizes("modarith")
    assert 3 * (I * H + H) + H * O + O <= 1000 < 3 * (I * (H + 1) + H + 1) + (H + 1) * O + O


def test_formal_grid_row_runs(tmp_path):
    spec = dict(
        cells=("mingru",),
        tasks=("parity",),
        length=6,
        test_length=12,
        steps=2,
        seeds=(0,),
        hidden=4,
        test_size=8,
    )
    (row,) = lr.run_formal_sweep(tmp_path, log=lambda s: None, spec=spec)
    assert (row["task"], row["cell"], row["hidden"], row["test_length"]) == (
        "parity",
        "mingru",
        4,
        12,
    )
    for key in ("accuracy", "long_accuracy"):
        assert 0 <= row[key] <= 1
        assert row[f"normalised_{key}"] == pytest.approx((row[key] - 0.5) / 0.5)
    assert row["solved"] == (row["normalised_long_accuracy"] >= 0.9)
    md = (tmp_path / "formal.md").read_text()
    assert "| mingru | 4 |" in md and "parity 7-12" in md
    saved = json.loads((tmp_path / "formal.json").read_text())
    assert saved["runs"][0]["long_accuracy"] == pytest.approx(row["long_accuracy"])


def test_formal_and_new_cells_command_lines():
    args = parser().parse_args(["formal", "--task", "modarith", "--out", "x"])
    assert (args.task, args.out) == ("modarith", "x")
    assert parser().parse_args(["formal"]).task is None
    args = parser().parse_args(["sweep", "--task", "copy", "--grid", "new_cells"])
    assert args.grid == "new_cells"
    assert lr.SWEEPS["copy"]["new_cells"]["cells"] == tuple(lr.EXTRA_CELLS)
