"""Smoke runs of experiments/translate: data, tokens, train/resume, translate, evaluate, errors."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil

import jax
import numpy as np
import pytest

pytest.importorskip("num2words")
pytest.importorskip("sacrebleu")

from num2words import num2words  # noqa: E402

from experiments.scaffold import UsageError  # noqa: E402
from experiments.translate import input_pipeline as ip  # noqa: E402
from experiments.translate import translate as tr  # noqa: E402
from experiments.translate.__main__ import main  # noqa: E402
from experiments.translate.config import TranslateConfig  # noqa: E402
from experiments.translate.model import (  # noqa: E402
    build_model,
    count_params,
    hidden_for_budget,
    init_params,
)
from experiments.translate.train import restore, saved_config, train_and_evaluate  # noqa: E402

PROG = "python -m experiments.translate"
TINY = dict(
    train_size=64,
    val_size=16,
    test_size=16,
    hidden=8,
    embed=4,
    batch_size=8,
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 12-step en-fr run through the command line: checkpoints at 6 and 12."""
    workdir = str(tmp_path_factory.mktemp("runs") / "fr")
    argv = ["train", "--workdir", workdir, "--seed", "1"]
    for k, v in TINY.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    main(argv)
    return workdir


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# -- data -------------------------------------------------------------------------------------


def test_splits_are_disjoint_and_match_num2words():
    ds = ip.make_dataset("en-de", "pieces", dict(train=300, val=40, test=60), data_seed=3)
    train, val, test = (set(ds.numbers[s]) for s in ip.SPLITS)
    assert not (train & test) and not (train & val) and not (val & test)
    assert len(test) == 60 and len(val) == 40  # evaluation numbers are distinct
    for s, label in zip(ip.SPLITS, (0, 1, 2), strict=True):
        assert np.all(ip.split_of(np.asarray(ds.numbers[s]), 3) == label)
        n, src, tgt = ds.numbers[s][0], ds.source[s][0], ds.target[s][0]
        assert (src, tgt) == (num2words(n, lang="en"), num2words(n, lang="de"))
    # the split of a number does not depend on how many examples are drawn
    ds2 = ip.make_dataset("en-de", "pieces", dict(train=10, val=5, test=5), data_seed=3)
    assert not set(ds2.numbers["train"]) & test
    # about 2 % of all numbers are test numbers; every digit count is drawn
    labels = ip.split_of(np.arange(ip.MAX_NUMBER + 1), 3)
    assert abs(np.mean(labels == 2) - ip.TEST_FRACTION) < 0.002
    assert {len(str(n)) for n in ds.numbers["train"]} == {1, 2, 3, 4, 5, 6}


@pytest.mark.parametrize("lang", ["fr", "de"])
@pytest.mark.parametrize("level", ["pieces", "chars"])
def test_tokenisation_round_trip(lang, level):
    rng = np.random.default_rng(0)
    numbers = [*range(0, 130), *rng.integers(0, ip.MAX_NUMBER + 1, 400).tolist()]
    ds = ip.make_dataset(f"en-{lang}", level, dict(train=1, val=1, test=1), 0)
    texts = [num2words(n, lang=lang) for n in numbers]
    _, outputs, lengths = ip.encode_targets(texts, ds.target_vocab, lang, level)
    for text, ids, n in zip(texts, outputs, lengths, strict=True):
        assert ip.decode_target(ids.tolist(), ds.target_vocab) == text
        assert ids[n - 1] == ip.EOS
        pieces = ip.target_pieces(text, lang, level)
        assert "".join(pieces) == text
        if level == "pieces":
            assert len(pieces) <= 12
            # a piece is one morpheme with at most one leading separator
            assert all(p.strip(" -") and " " not in p[1:] and "-" not in p[1:] for p in pieces)
    if level == "pieces" and lang == "de":
        assert ip.target_pieces("vierunddreißig", "de") == ["vier", "und", "dreißig"]
        with pytest.raises(ValueError, match="cannot split"):
            ip.target_pieces("vierundzwölfzig", "de")
    src, src_len = ip.encode_sources(["forty-two", "three hundred and one"], ds.source_vocab, True)
    words = [ds.source_vocab.symbols[i] for i in src[1, : src_len[1]]]
    assert words == ["one", "and", "hundred", "three"] and src_len.tolist() == [2, 4]


# -- model ------------------------------------------------------------------------------------


def test_hidden_for_budget_matches_parameter_counts():
    base = TranslateConfig(hidden=48, embed=16, bidirectional=False)
    budget = count_params(build_model(base, 32, 70))
    for att in ("dot", "none"):
        config = dataclasses.replace(base, attention=att)
        h = hidden_for_budget(config, budget, 32, 70)
        got = count_params(build_model(dataclasses.replace(config, hidden=h), 32, 70))
        assert abs(got - budget) / budget < 0.05
    assert hidden_for_budget(dataclasses.replace(base, attention="none"), budget, 32, 70) > 48


def test_translate_texts_keeps_input_order_across_chunks(monkeypatch):
    """Decoding in fixed-size chunks (the last one padded) gives each input its own output."""
    ds = ip.make_dataset("en-fr", "pieces", dict(train=1, val=1, test=1), 0)
    config = TranslateConfig(hidden=8, embed=4)
    model = build_model(config, ds.source_vocab.size, ds.target_vocab.size)
    params = init_params(model, jax.random.key(3))
    params = params._replace(w_out=params.w_out * 20, src_embed=params.src_embed * 20)
    texts = [num2words(n, lang="en") for n in (5, 42, 317, 9001, 123456)]
    one_by_one = [tr.translate_texts(model, params, ds, config, [t], beam=2)[0] for t in texts]
    assert len(set(one_by_one)) > 1  # outputs differ, so the order is observable
    monkeypatch.setattr(tr, "CHUNK", 2)
    batched = tr.translate_texts(model, params, ds, config, texts, beam=2)
    assert batched == one_by_one


# -- training ---------------------------------------------------------------------------------


def test_train_writes_run_directory_and_loss_goes_down(trained):
    files = set(os.listdir(trained))
    assert {"config.json", "dataset.json", "results.json", "metrics.jsonl", "checkpoints"} <= files
    steps = sorted(int(s) for s in os.listdir(os.path.join(trained, "checkpoints")) if s.isdigit())
    assert steps == [6, 12]
    records = read_jsonl(os.path.join(trained, "metrics.jsonl"))
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [6, 12] and evals[1]["loss"] < evals[0]["loss"]
    res = json.load(open(os.path.join(trained, "results.json")))
    assert res["step"] == 12 and 0 <= res["val_exact_match_greedy"] <= 1
    config = saved_config(trained)
    assert (config.total_steps, config.hidden, config.seed, config.train_size) == (12, 8, 1, 64)


def test_resume_is_exact(tmp_path, trained):
    config = saved_config(trained)
    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed)
    shutil.rmtree(resumed / "checkpoints" / "12")  # as if killed between steps 6 and 12
    res = train_and_evaluate(config, str(resumed), verbose=False)
    assert res["resumed_from"] == 6 and res["step"] == 12
    a, b = restore(trained), restore(str(resumed))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a changed architecture is refused before anything is written
    with pytest.raises(UsageError, match="--hidden: expected the run's own value 8"):
        train_and_evaluate(dataclasses.replace(config, hidden=16), str(resumed), verbose=False)


# -- command line -----------------------------------------------------------------------------


def test_translate_args_and_stdin(trained, capsys, monkeypatch):
    texts = ["forty-two", "three hundred and one", "Nine hundred and ninety-nine thousand"]
    main(["translate", "--workdir", trained, "--beam", "2", *texts])
    from_args = capsys.readouterr().out.splitlines()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts) + "\n"))
    main(["translate", "--workdir", trained, "--beam", "2"])
    from_stdin = capsys.readouterr().out.splitlines()
    run = restore(trained)
    direct = tr.translate_texts(run.model, run.params, run.dataset, run.config, texts, beam=2)
    assert from_args == from_stdin == direct and len(direct) == 3


def test_unknown_words_one_line_exit_2(trained, capsys):
    with pytest.raises(SystemExit) as e:
        main(["translate", "--workdir", trained, "forty-two", "two million", "seven cats"])
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing translated before the error
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{PROG} translate: error:")
    assert "'million'" in err[0] and "'cats'" in err[0] and "'seven'" not in err[0]


def test_evaluate_prints_metrics_json(trained, capsys):
    main(["evaluate", "--workdir", trained, "--beams", "1", "2"])
    out = json.loads(capsys.readouterr().out)
    assert {"split", "examples", "length_penalty", "beam_1", "beam_2", "step"} <= set(out)
    for k in ("beam_1", "beam_2"):
        assert {"exact_match", "bleu", "bleu_pieces", "chrf", "decode_s", "by_length"} <= set(
            out[k]
        )
        counts = sum(c for _, c in out[k]["by_length"].values())
        assert counts == out["examples"] == 16
    assert os.path.exists(os.path.join(trained, "evaluation_test.json"))


def test_heatmaps_write_png_and_tokens(trained, tmp_path, capsys):
    main(["heatmaps", "--workdir", trained, "--numbers", "34", "342571", "--out", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert (tmp_path / out["png"]).stat().st_size > 1000
    saved = json.loads((tmp_path / out["png"].replace(".png", ".json")).read_text())
    assert saved == out and [e["number"] for e in out["examples"]] == [34, 342571]
    ex = out["examples"][1]
    assert ex["source_tokens"] == ip.source_words(num2words(342571, lang="en"))
    assert "".join(ex["target_tokens"][:-1]) == ex["translation"]
    # the weights drawn are a distribution over the source words at every output step
    run = restore(trained)
    ds = run.dataset
    sub = ds._replace(source={"x": [num2words(34, lang="en")]}, target={"x": ["trente-quatre"]})
    arrays = ip.split_arrays(sub, "x", False, ip.widths(ds))
    from experiments.translate.model import attention_weights

    w = np.asarray(attention_weights(run.model, run.params, *(arrays[k] for k in KEYS)))
    np.testing.assert_allclose(w[0, :3].sum(-1), 1.0, rtol=1e-5)
    assert np.all(w[0, :3, 2:] == 0) and np.all(w[0, 3:] == 0)  # padding gets no weight


KEYS = ("src", "src_len", "tgt_in", "tgt_len")


def test_metrics_match_references():
    import sacrebleu

    hyps, refs = ["deux mille", "trois cent", "vingt"], ["deux mille", "trois cents", "vingt"]
    assert tr.exact_match(hyps, refs) == pytest.approx(2 / 3)
    bleu, chrf = tr.bleu_chrf(hyps, refs)
    assert bleu == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert chrf == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    # German numbers are one word: text BLEU is 0 even for a perfect output, piece BLEU is not
    de = ["vierunddreißig", "dreihundertzweiundvierzig"]
    assert tr.bleu_chrf(de, de)[0] == 0.0
    assert tr.bleu_pieces(de, de, "de", "pieces") == pytest.approx(100.0)
    assert tr.bleu_pieces(de, de, "de", "pieces") == pytest.approx(
        sacrebleu.corpus_bleu(
            ["vier und dreißig", "drei hundert zwei und vierzig"],
            [["vier und dreißig", "drei hundert zwei und vierzig"]],
            tokenize="none",
        ).score
    )
    assert tr.by_length(["one", "two thousand", "three"], hyps, refs) == {
        "1": [1.0, 2],
        "2": [0.0, 1],
    }


BAD = [
    (["train"], "--workdir"),
    (["train", "--workdir", "{tmp}/w", "--pair", "en-es"], "en-es"),
    (["train", "--workdir", "{tmp}/w", "--attention", "multihead"], "multihead"),
    (["train", "--workdir", "{tmp}/w", "--cell", "rnn"], "rnn"),
    (["train", "--workdir", "{tmp}/w", "--hidden", "-5"], "--hidden: expected an int >= 1"),
    (["train", "--workdir", "{tmp}/w", "--hidden", "7"], "--hidden: expected an even size"),
    (["train", "--workdir", "{tmp}/w", "--steps", "0"], "--steps: expected an int >= 1"),
    (["train", "--workdir", "{tmp}/w", "--layers", "x"], "'x'"),
    (["train", "--workdir", "{tmp}/w", "--train-size", "3"], "--train-size"),
    (["train", "--workdir", "{tmp}/file"], "expected a directory"),
    (["translate", "--workdir", "{tmp}/none", "one"], "expected a run directory"),
    (["translate", "--workdir", "{run}", "--beam", "0", "one"], "--beam: expected a number >= 1"),
    (["translate", "--workdir", "{run}", "one", ""], "empty input"),
    (["translate", "--workdir", "{run}", "--length-penalty", "-1", "one"], "--length-penalty"),
    (["evaluate", "--workdir", "{tmp}/none"], "expected a run directory"),
    (["evaluate", "--workdir", "{run}", "--beams", "0"], "--beams: expected a number >= 1"),
    (["evaluate", "--workdir", "{run}", "--split", "train"], "invalid choice"),
    (["compare", "--variants", "additive,luong"], "--variants"),
    (["heatmaps", "--workdir", "{run}", "--numbers", "1000000"], "--numbers"),
    (["heatmaps", "--workdir", "{tmp}/none"], "expected a run directory"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_invocations_one_line_exit_2(argv, message, trained, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = [a.format(tmp=tmp_path, run=trained) for a in argv]
    before = sorted(os.listdir(trained))
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(PROG) and ": error: " in err[0]
    assert message in err[0]
    assert not (tmp_path / "w").exists() and sorted(os.listdir(trained)) == before


@pytest.mark.slow
def test_compare_writes_table_plot_and_heatmaps(tmp_path):
    from experiments.translate.compare import compare

    base = TranslateConfig(**{**TINY, "total_steps": 4, "eval_every": 2, "save_every": 4})
    out = tmp_path / "results"
    summary = compare(
        str(tmp_path / "runs"), base, variants=["additive", "none"], out_dir=out, name="cmp"
    )
    assert set(summary) == {"additive", "none"} and set(summary["none"]) == {1, 4, 8}
    payload = json.loads((out / "cmp.json").read_text())
    params = [r["params"] for r in payload["rows"]]
    assert abs(params[1] - params[0]) / params[0] < 0.1  # equal budgets
    assert payload["rows"][1]["hidden"] > payload["rows"][0]["hidden"]
    assert "| additive |" in (out / "cmp.md").read_text()
    assert (out / "cmp.png").exists() and (out / "cmp_heatmaps.png").exists()
