"""Smoke runs of experiments/char_lm: train, checkpoint, exact resume, generate, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest

from experiments import char_lm
from experiments.char_lm.__main__ import config_from_args, main
from experiments.scaffold import UsageError

TINY = dict(
    layers=1,
    hidden=8,
    embed=4,
    seq_len=8,
    batch_size=4,
    total_steps=12,
    warmup_steps=0,
    learning_rate=3e-2,
    schedule="constant",
    log_every=1,
    eval_every=6,
    save_every=6,
    progress=False,
    async_checkpointing=False,
)
# every regulariser on, so the resume check also covers their per-step randomness
REGULARISED = dict(
    dropout=0.1,
    input_dropout=0.1,
    recurrent_dropout=0.1,
    zoneout_h=0.1,
    zoneout_c=0.2,
    weight_drop=0.1,
)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis"]
    lines = [" ".join(rng.choice(words, size=6)) for _ in range(150)]
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_file):
    """A 12-step run through the command line, every regulariser on: checkpoints at 6, 12."""
    workdir = str(tmp_path_factory.mktemp("runs") / "lm")
    argv = [
        "train",
        "--workdir",
        workdir,
        "--data",
        text_file,
        "--steps",
        "12",
        "--checkpoint-every",
        "6",
        "--seed",
        "1",
        "--layers",
        "1",
        "--hidden",
        "8",
    ]
    for k, v in {**TINY, **REGULARISED}.items():
        if k not in ("layers", "hidden", "total_steps", "save_every"):
            argv += [f"--{k.replace('_', '-')}", str(v)]
    main(argv)
    return workdir


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_train_writes_run_directory_and_loss_goes_down(trained):
    files = set(os.listdir(trained))
    assert {
        "config.json",
        "vocab.json",
        "results.json",
        "metrics.jsonl",
        "timeline.jsonl",
        "learning_curves.png",
        "checkpoints",
        "tensorboard",
    } <= files
    assert sorted(
        int(s) for s in os.listdir(os.path.join(trained, "checkpoints")) if s.isdigit()
    ) == [6, 12]
    train = [r for r in read_jsonl(os.path.join(trained, "metrics.jsonl")) if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"] - 0.15
    evals = [r for r in read_jsonl(os.path.join(trained, "metrics.jsonl")) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [6, 12] and evals[1]["loss"] < evals[0]["loss"]
    res = json.load(open(os.path.join(trained, "results.json")))
    vocab = char_lm.load_vocab(trained)
    assert res["step"] == 12 and res["vocab_size"] == vocab.size
    # bits are nats / ln 2, and the model beats the uniform distribution over the vocabulary
    assert res["val_bits_per_char"] == pytest.approx(res["val_loss_nats"] / np.log(2), rel=1e-5)
    assert res["val_loss_nats"] < np.log(vocab.size)
    config = char_lm.saved_config(trained)
    assert (config.total_steps, config.save_every, config.seed, config.hidden) == (12, 6, 1, 8)


def test_generate_from_the_run(trained, capsys):
    model = char_lm.restore(trained)
    assert model.step == 12
    texts, timing = char_lm.sample(model, "to be", 25, samples=3, temperature=1.0, top_k=5, seed=0)
    assert len(texts) == 3 and all(len(t) == 25 for t in texts)
    assert all(set(t) <= set(model.vocab.symbols) for t in texts)
    assert timing["tokens_per_sec"] > 0
    again, _ = char_lm.sample(model, "to be", 25, samples=3, temperature=1.0, top_k=5, seed=0)
    assert again == texts  # seeded
    main(
        [
            "generate",
            "--workdir",
            trained,
            "--prompt",
            "or not",
            "--length",
            "30",
            "--temperature",
            "0",
        ]
    )
    out, err = capsys.readouterr()
    assert out.startswith("or not") and len(out.rstrip("\n")) >= len("or not") + 30 - 5
    assert "characters/s" in err


def test_resume_is_exact_with_regularisation(tmp_path, trained):
    """Resuming a copy of the run from its step-6 checkpoint reproduces its step-12 parameters
    bit for bit (dropout, zoneout and weight-drop masks come from fold_in(step), batches from
    the step number)."""
    config = char_lm.saved_config(trained)
    assert config.zoneout_c == REGULARISED["zoneout_c"] and config.weight_drop > 0
    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed)
    shutil.rmtree(resumed / "checkpoints" / "12")  # as if killed between steps 6 and 12
    res = char_lm.train_and_evaluate(config, str(resumed), verbose=False)
    assert res["resumed_from"] == 6 and res["step"] == 12
    a, b = char_lm.restore(trained), char_lm.restore(str(resumed))
    assert b.step == 12
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the timeline keeps one record per evaluation across the two sessions
    steps = [r["step"] for r in read_jsonl(str(resumed / "timeline.jsonl"))]
    assert steps == [6, 12]


def test_config_from_args_resumes_saved_config(trained):
    config, workdir = config_from_args(["--workdir", trained, "--steps", "20"])
    assert workdir == trained and config.total_steps == 20 and config.hidden == 8
    config, _ = config_from_args(
        ["--workdir", trained + "_new", "--quick", "--learning-rate", "1e-3", "--zoneout-c", "0.5"]
    )
    assert (config.hidden, config.learning_rate, config.zoneout_c) == (
        char_lm.QUICK["hidden"],
        1e-3,
        0.5,
    )


def test_bad_arguments(tmp_path, text_file, capsys):
    # the command line's one-line errors are in tests/test_cli_errors.py; here the API
    missing = char_lm.CharLMConfig(data=str(tmp_path / "missing.txt"), **TINY)
    with pytest.raises(UsageError, match="--data: expected a non-empty UTF-8 text file"):
        char_lm.train_and_evaluate(missing, str(tmp_path / "a"), verbose=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(UsageError, match="--proj: expected an LSTM-family --cell"):
        config_from_args(["--workdir", str(tmp_path / "b"), "--cell", "gru", "--proj", "4"])
    with pytest.raises(UsageError, match="--zoneout-c"):
        config_from_args(["--workdir", str(tmp_path / "b"), "--cell", "rnn", "--zoneout-c", "0.5"])
    for bad in (["--hiden", "4"], ["--cell", "transformer"], ["--hidden", "x"]):
        with pytest.raises(SystemExit) as e:
            config_from_args(["--workdir", str(tmp_path / "b"), *bad])
        assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(
        line.startswith("python -m experiments.char_lm train: error:") for line in err
    )
    assert "--hiden" in err[0] and "transformer" in err[1] and "'x'" in err[2]
    small = char_lm.CharLMConfig(data=text_file, **{**TINY, "batch_size": 64, "seq_len": 200})
    with pytest.raises(UsageError, match="needs at least"):
        char_lm.train_and_evaluate(small, str(tmp_path / "c"), verbose=False)
    assert not (tmp_path / "c").exists()  # checked before anything is written
    with pytest.raises(UsageError, match="expected a run directory made by"):
        char_lm.restore(str(tmp_path / "nothing"))


def test_compare_writes_table_and_plot(tmp_path, text_file):
    base = char_lm.CharLMConfig(
        data=text_file, **{**TINY, "total_steps": 4, "eval_every": 2, "save_every": 4}
    )
    out = tmp_path / "results"
    summary = char_lm.compare(
        str(tmp_path / "runs"),
        base,
        variants=["none", "weight_drop"],
        out_dir=out,
        name="reg",
        command="cmd",
        verbose=False,
    )
    assert set(summary) == {"none", "weight_drop"}
    for s in summary.values():
        assert s["best_step"] in (2, 4) and np.isfinite(s["final_gap"])
        assert s["final_gap"] == pytest.approx(s["final_val_loss"] - s["final_train_loss"])
    saved = json.load(open(out / "reg.json"))
    assert [p[0] for p in saved["curves_step_train_val"]["none"]] == [2, 4]
    table = (out / "reg.md").read_text()
    assert "`cmd`" in table and "| weight_drop | weight_drop=0.3 |" in table
    assert (out / "reg.png").stat().st_size > 0
    with pytest.raises(ValueError, match="unknown variants"):
        char_lm.compare(str(tmp_path / "runs"), base, variants=["magic"], out_dir=out)


# -- the cells after the survey (issue 14): minGRU, minLSTM, sLSTM, mLSTM --------------------
NEW_CELLS = ("mingru", "minlstm", "slstm", "mlstm", "xlstm")


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_new_cell_trains_and_count_params_matches(cell):
    """A few Adam steps on one batch lower the loss; ``count_params`` counts the real init."""
    import optax

    from experiments.char_lm.model import build_cell, init_params, make_loss_fn

    # xlstm: one sLSTM block (the mLSTM block of layer 2 is checked without compiling below)
    embed = 8 if cell == "xlstm" else 4
    config = char_lm.CharLMConfig(cell=cell, layers=1, hidden=8, embed=embed, num_heads=2)
    V = 11
    model = build_cell(config)
    params = init_params(model, config, V, jax.random.key(0))
    assert sum(np.size(x) for x in jax.tree.leaves(params)) == char_lm.count_params(config, V)
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, V)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    carry = model.initial_carry((2,))
    loss_fn = make_loss_fn(model, config)
    opt = optax.adam(3e-2)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(
            lambda p: loss_fn(p, batch, None, carry).loss_sum / tokens[:, 1:].size
        )(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = opt.init(params), []
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes dtypes
        for _ in range(6):
            params, opt_state, loss = step(params, opt_state)
            losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.1, losses


def test_new_cells_on_the_command_line_and_their_errors(tmp_path):
    w = ["--workdir", str(tmp_path / "x")]
    config, _ = config_from_args([*w, "--cell", "mlstm", "--num-heads", "2", "--hidden", "6"])
    assert (config.cell, config.num_heads, config.hidden) == ("mlstm", 2, 6)
    with pytest.raises(UsageError, match="--num-heads: expected a divisor of --hidden 6"):
        config_from_args([*w, "--cell", "slstm", "--num-heads", "4", "--hidden", "6"])
    with pytest.raises(UsageError, match="--weight-drop: expected 0 for --cell mingru"):
        config_from_args([*w, "--cell", "mingru", "--weight-drop", "0.1"])
    with pytest.raises(UsageError, match="--proj: expected an LSTM-family"):
        config_from_args([*w, "--cell", "minlstm", "--proj", "4"])
    with pytest.raises(UsageError, match="--time-budget"):
        config_from_args([*w, "--time-budget", "0"])
    with pytest.raises(UsageError, match="--embed: expected --hidden 8 for --cell xlstm"):
        config_from_args([*w, "--cell", "xlstm", "--hidden", "8", "--embed", "4"])
    from experiments.char_lm.model import build_cell

    config, _ = config_from_args([*w, "--cell", "xlstm", "--hidden", "8", "--embed", "8"])
    blocks = [(type(b).__name__, type(b.cell).__name__) for b in build_cell(config).layers]
    assert blocks == [("XLSTMBlock", "SLSTM"), ("XLSTMBlock", "MLSTM")]
    assert build_cell(config).layers[0].cell.conv_kernel_size == 4


def test_matched_hidden_is_the_nearest_count():
    config = char_lm.CharLMConfig(cell="mingru", layers=2, hidden=8, embed=8)
    target = char_lm.count_params(char_lm.CharLMConfig(layers=2, hidden=32, embed=8), 20)
    hidden, n = char_lm.matched_hidden(config, target, 20, multiple=4)
    assert hidden % 4 == 0 and n == char_lm.count_params(
        char_lm.CharLMConfig(cell="mingru", layers=2, hidden=hidden, embed=8), 20
    )
    for other in range(4, 4 * 40, 4):
        c = char_lm.CharLMConfig(cell="mingru", layers=2, hidden=other, embed=8)
        assert abs(n - target) <= abs(char_lm.count_params(c, 20) - target)


def test_time_budget_and_compare_cells(tmp_path, text_file):
    """``compare_cells`` with a budget spent after the first (compiling) step: the cell stops
    there with a checkpoint, a timeline record and validation/test results, long before
    ``total_steps``, and joins the rows of an earlier table with the same base. sLSTM, whose
    initial carry shares one zeros buffer between its leaves, trains despite the donated
    carry."""
    from experiments.char_lm.cells_compare import _shown

    base = char_lm.CharLMConfig(
        data=text_file,
        **{**TINY, "hidden": 64, "embed": 16, "layers": 2, "total_steps": 10_000},
        time_budget=1e-3,
    )
    out, root = tmp_path / "results", tmp_path / "runs"
    out.mkdir()
    earlier = {"hidden": 64, "params": 1, "steps": 9, "train_s": 1.0, "val_bits_per_char": 2.0}
    earlier.update(test_bits_per_char=2.0, tokens_per_sec_last_window=None)
    earlier.update(load_average_before=[1, 1, 1], load_average_after=[1, 1, 1])
    from experiments.char_lm.input_pipeline import load_corpus

    vocab = load_corpus(base).vocab.size
    target = char_lm.count_params(base, vocab)
    old = {"command": "a", "base_config": _shown(base), "reference_params": target}
    (out / "t.json").write_text(json.dumps({**old, "results": {"lstm": earlier}}))
    both = char_lm.compare_cells(
        str(root), base, cells=["slstm"], out_dir=out, name="t", command="b", verbose=False
    )
    assert list(both) == ["lstm", "slstm"] and both["lstm"]["steps"] == 9
    assert len(char_lm.load_vocab(str(root / "slstm")).symbols) == vocab
    row, workdir = both["slstm"], root / "slstm"
    assert row["steps"] == 1 and row["train_s"] >= 1e-3
    assert abs(row["params"] - target) <= 0.05 * target and row["hidden"] != 64
    assert np.isfinite(row["val_bits_per_char"]) and np.isfinite(row["test_bits_per_char"])
    assert len(row["load_average_before"]) == 3 == len(row["load_average_after"])
    assert os.listdir(workdir / "checkpoints") == ["1"]
    assert [r["step"] for r in read_jsonl(str(workdir / "timeline.jsonl"))] == [1]
    assert char_lm.restore(str(workdir)).step == 1
    res = json.load(open(workdir / "results.json"))
    assert res["time_budget_s"] == 1e-3 and res["params"] == row["params"]
    saved = json.load(open(out / "t.json"))
    assert saved["reference_params"] == target
    assert [saved["results"][c]["command"] for c in ("lstm", "slstm")] == ["a", "b"]
    table = (out / "t.md").read_text()
    assert (
        "Commands: `a`; `b`" in table and "| slstm |" in table and "| lstm | 64 | 1 | 9 |" in table
    )
    with pytest.raises(UsageError, match="within 5%"):
        char_lm.compare_cells(
            str(root), dataclasses.replace(base, hidden=8, embed=4), cells=["mingru"], out_dir=out
        )
