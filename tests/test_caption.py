"""seqjax.data.scenes and experiments/caption: generator, grammar, train/resume, CLI, errors.

One tiny attentive run, trained through the command line, is shared by the module.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("mlxtend")
pytest.importorskip("sacrebleu")
PIL = pytest.importorskip("PIL")
if not os.path.exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"):
    pytest.skip(
        "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
        allow_module_level=True,
    )

from PIL import Image  # noqa: E402

from experiments.caption import captioning as cap  # noqa: E402
from experiments.caption import input_pipeline as ip  # noqa: E402
from experiments.caption.__main__ import main  # noqa: E402
from experiments.caption.config import CaptionConfig  # noqa: E402
from experiments.caption.model import (  # noqa: E402
    build_model,
    count_params,
    init_params,
    make_loss_fn,
)
from seqjax.data import scenes as sc  # noqa: E402

PROG = "python -m experiments.caption"
TINY = dict(
    val_size=8,
    test_size=8,
    channels=8,
    hidden=16,
    embed=8,
    batch_size=8,
    warmup_steps=0,
    learning_rate=1e-2,
    schedule="constant",
    log_every=1,
    eval_every=0,
    save_every=4,
    progress=False,
    async_checkpointing=False,
)


@pytest.fixture(scope="module")
def banks():
    return sc.load_objects("both")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny soft-attention run: 4 steps, then resumed to 8 (checkpoints at 4 and 8)."""
    workdir = str(tmp_path_factory.mktemp("runs") / "soft")
    argv = ["train", "--workdir", workdir, "--seed", "1"]
    for k, v in TINY.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    first = main([*argv, "--steps", "4"])
    second = main([*argv, "--steps", "8"])
    return workdir, first, second


# -- the scene generator ------------------------------------------------------------------------


def test_scenes_place_objects_and_captions_parse_back(banks):
    train, _ = banks
    scenes = sc.generate_scenes(300, 11, train)
    kinds = set()
    for s in scenes:
        n = len(s.classes)
        assert 1 <= n <= 4 and s.image.shape == (84, 84) and s.image.dtype == np.uint8
        # each object's pixels are exactly its bank image in its cell; empty cells are black
        occupied = {tuple(c) for c in s.cells.tolist()}
        for (r, c), i, k in zip(s.cells, s.object_ids, s.classes, strict=True):
            np.testing.assert_array_equal(
                s.image[28 * r : 28 * r + 28, 28 * c : 28 * c + 28], train.images[i]
            )
            assert train.classes[i] == k
        for r in range(3):
            for c in range(3):
                if (r, c) not in occupied:
                    assert not s.image[28 * r : 28 * r + 28, 28 * c : 28 * c + 28].any()
        assert [tuple(x) for x in s.cells.tolist()] == sorted(occupied)  # reading order
        # every reference states the scene's content; a changed class or position breaks it
        for text in s.captions:
            assert sc.describes(text, s.classes, s.cells), text
            assert (
                sc.caption_words(text)
                == ip.decode_caption(ip.encode_caption(text, 20))
                .replace(":", " :")
                .replace(",", " ,")
                .split()
            )
        wrong = s.classes.copy()
        wrong[0] = (wrong[0] + 1) % 20
        assert not sc.describes(s.captions[0], wrong, s.cells)
        if n == 2 and s.classes[0] != s.classes[1]:
            swapped = s.cells[::-1].copy()
            assert not sc.describes(s.captions[0], s.classes, swapped)
        kinds.add(sc.relation_of(n, s.cells))
        assert len(s.captions) >= 2  # a paraphrase for every scene
    assert kinds == {"single", "vertical", "horizontal", "list"}


def test_grammar_examples():
    cells = np.array([[0, 0], [1, 0], [0, 2]])
    caps = sc.captions_for(np.array([16, 16, 3]), cells)
    assert caps[0] == "three objects: shirt, shirt, three from left to right"
    assert "two shirts left of a three" in caps and "a three right of two shirts" in caps
    assert sc.captions_for(np.array([4, 1, 9]), np.array([[0, 0], [1, 1], [2, 2]]))[0] == (
        "three digits: four, one, nine from left to right"
    )
    assert sc.captions_for(np.array([7, 17]), np.array([[0, 2], [1, 0]]))[:1] == (
        "a seven above a sneaker",
    )
    assert sc.captions_for(np.array([8]), np.array([[1, 1]])) == ("an eight", "one eight")
    assert sc.captions_for(np.array([1]), np.array([[1, 1]]))[0] == "a one"
    assert sc.parse_caption("a eight") is None and sc.parse_caption("two seven above") is None
    assert not sc.describes("a two left of a one", np.array([1, 2]), np.array([[0, 0], [0, 1]]))


def _grammar_sentences(classes: np.ndarray) -> set[str]:
    """Every sentence of the grammar over the classes present (single, pair, list forms)."""
    import itertools

    present = sorted({sc.CLASS_NAMES[int(c)] for c in classes})
    out = set()
    phrases = []
    for n in present:
        out |= {f"a {n}", f"an {n}", f"one {n}"}
        phrases += [f"a {n}", f"an {n}"] + [f"{k} {sc.plural(n)}" for k in ("two", "three")]
    for a, b in itertools.product(phrases, phrases):
        out |= {f"{a} {r} {b}" for r in ("above", "below", "left of", "right of")}
    k = sc.COUNT_WORDS[len(classes)]
    for perm in set(itertools.permutations([sc.CLASS_NAMES[int(c)] for c in classes])):
        for kind in ("digits", "items", "objects"):
            for d in ("left to right", "right to left"):
                out.add(f"{k} {kind}: {', '.join(perm)} from {d}")
    return out


def test_references_are_every_true_sentence_of_the_grammar():
    """BLEU and exact match are fair only if the references hold every paraphrase the grammar
    allows: the sentences `describes` accepts, found by enumerating the grammar, are exactly
    the references."""
    bank = sc.ObjectBank(np.zeros((20, 28, 28), np.uint8), np.arange(20))
    rng = np.random.default_rng(3)
    for _ in range(300):
        s = sc.generate_scene(rng, bank)
        true = {t for t in _grammar_sentences(s.classes) if sc.describes(t, s.classes, s.cells)}
        assert true == set(s.captions), (s.classes, s.cells)


def test_train_and_test_objects_are_disjoint_and_generation_is_seeded(banks):
    train, test = banks
    assert set(np.unique(train.classes)) == set(range(20)) == set(np.unique(test.classes))
    seen = {im.tobytes() for im in train.images}
    assert not any(im.tobytes() in seen for im in test.images)
    a, b = sc.generate_scenes(5, 3, test), sc.generate_scenes(5, 3, test)
    c = sc.generate_scenes(5, 4, test)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        assert x.captions == y.captions
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))
    with pytest.raises(ValueError, match="kinds"):
        sc.load_objects("cats")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        sc.load_objects("fashion", fashion_dir="/nonexistent")


def test_make_scenes_writes_pngs_and_jsonl(tmp_path, capsys, banks):
    out = tmp_path / "scenes"
    main(["make-scenes", "--out", str(out), "--n", "4", "--seed", "9"])
    assert capsys.readouterr().out.strip() == str(out / "captions.jsonl")
    recs = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(recs) == 4
    expect = sc.generate_scenes(4, 9, banks[1])
    for rec, s in zip(recs, expect, strict=True):
        assert set(rec) == {"image", "captions"} and rec["captions"] == list(s.captions)
        np.testing.assert_array_equal(np.asarray(Image.open(out / rec["image"])), s.image)


# -- the model ----------------------------------------------------------------------------------


def test_show_and_tell_matches_budget_and_reads_captions(banks):
    base = CaptionConfig(**{k: v for k, v in TINY.items() if k in ("channels", "hidden", "embed")})
    soft, none = build_model(base), build_model(dataclasses.replace(base, attention="none"))
    assert not none.attentional and soft.attentional
    assert abs(count_params(none) - count_params(soft)) / count_params(soft) < 0.03
    # jitted: the convolutional encoder's init and forward are slow op by op
    params = jax.jit(init_params, static_argnums=0)(none, jax.random.key(0))
    batch = ip.scenes_to_batch(sc.generate_scenes(3, 0, banks[0]), None, 20)
    out = jax.jit(make_loss_fn(none))(params, batch, None)
    V = len(ip.vocabulary())
    assert abs(float(out.loss_sum / out.count) - np.log(V)) < 1.0  # near uniform at init
    assert float(out.count) == float(batch["tgt_len"].sum())


def test_bleu_and_metrics_against_hand_counts():
    refs = [["a seven above a two", "a two below a seven"]]
    assert cap.bleu_scores(["a two below a seven"], refs)["bleu4"] == pytest.approx(1.0)
    # 'a seven above a one': unigrams 4/5 match; bigrams 'a seven','seven above','above a' 3/4
    got = cap.bleu_scores(["a seven above a one"], refs)
    assert got["bleu1"] == pytest.approx(0.8) and got["bleu2"] == pytest.approx(np.sqrt(0.8 * 0.75))
    scene = {
        "captions": refs[0],
        "classes": [7, 2],
        "cells": [[0, 0], [1, 0]],
        "relation": "vertical",
    }
    m = cap.caption_metrics(["a two below a seven"], [scene])
    assert m["exact_match"] == 1.0 and m["relation_exact_match"]["vertical"] == 1.0
    assert m["relation_exact_match"]["single"] is None


# -- training and the command line --------------------------------------------------------------


def test_train_resumes_and_loss_goes_down(trained):
    workdir, first, second = trained
    assert first["step"] == 4 and second["step"] == 8 and second["resumed_from"] == 4
    logs = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl")) if x.strip()]
    losses = {
        r["step"]: r["loss"] for r in logs if "loss" in r and r.get("split", "train") == "train"
    }
    assert set(range(1, 9)) <= set(losses)
    assert np.mean([losses[s] for s in (7, 8)]) < np.mean([losses[s] for s in (1, 2)])
    res = json.load(open(os.path.join(workdir, "results.json")))
    assert res["attention"] == "soft" and 0 <= res["val_exact_match_greedy"] <= 1


def test_caption_cli_grey_and_rgb_any_size(trained, tmp_path, capsys, banks):
    workdir = trained[0]
    s = sc.generate_scenes(2, 5, banks[1])
    grey, rgb = tmp_path / "grey.png", tmp_path / "rgb.png"
    Image.fromarray(s[0].image).resize((50, 50)).save(grey)
    Image.fromarray(s[1].image).convert("RGB").resize((120, 90)).save(rgb)
    png = tmp_path / "maps" / "att.png"
    capsys.readouterr()
    caps = main(
        [
            "caption",
            "--workdir",
            workdir,
            "--beam",
            "2",
            "--attention-png",
            str(png),
            str(grey),
            str(rgb),
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == caps and len(lines) == 2
    assert Image.open(png).size[0] > 100
    # same captions without the PNG, in input order
    capsys.readouterr()
    assert main(["caption", "--workdir", workdir, "--beam", "2", str(rgb), str(grey)]) == caps[::-1]


def test_attention_weights_are_distributions(trained, banks):
    from experiments.caption.model import attention_weights
    from experiments.caption.train import restore

    run = restore(trained[0])
    imgs = ip.images_to_array([s.image for s in sc.generate_scenes(2, 1, banks[1])])
    ids = jnp.array([[5, 6, ip.EOS, 0], [5, 5, 5, 5]], jnp.int32)
    w = np.asarray(attention_weights(run.model, run.params, jnp.asarray(imgs), ids))
    assert w.shape == (2, 4, 49)
    np.testing.assert_allclose(w[0, :3].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(w[0, 3], 0.0)  # after EOS
    np.testing.assert_allclose(w[1].sum(-1), 1.0, rtol=1e-5)


def test_evaluate_json(trained, capsys, tmp_path):
    workdir = trained[0]
    png = tmp_path / "maps.png"
    out = main(["evaluate", "--workdir", workdir, "--beams", "1", "--attention-png", str(png)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(out))
    m = out["beam_1"]
    keys = {"bleu1", "bleu2", "bleu3", "bleu4", "exact_match", "meaning_accuracy"}
    assert keys <= set(m) and set(m["relation_exact_match"]) == set(cap.RELATIONS)
    assert out["scenes"] == 8 and out["step"] == 8
    assert all(0 <= m[k] <= 1 for k in keys)
    assert os.path.exists(os.path.join(workdir, "evaluation.json"))
    drawn = out["attention_png"]["scenes"]
    assert png.exists() and 1 <= len(drawn) <= 6
    wrong = [d for d in drawn if d["caption"] not in d["references"]]
    assert len(wrong) == min(3, round((1 - m["exact_match"]) * 8))


BAD = [
    (["caption", "--workdir", "{tmp}/nothing", "{tmp}/ok.png"], "expected a run directory"),
    (["caption", "--workdir", "{run}", "{tmp}/missing.png"], "got nothing at"),
    (["caption", "--workdir", "{run}", "{tmp}/file"], "expected a readable PNG"),
    (["caption", "--workdir", "{run}", "--beam", "0", "{tmp}/file"], "--beam"),
    (["caption", "--workdir", "{run}"], "IMAGE"),
    (["evaluate", "--workdir", "{tmp}"], "expected a run directory"),
    (["evaluate", "--workdir", "{run}", "--scenes", "{tmp}"], "captions.jsonl"),
    (["make-scenes", "--out", "{tmp}/w", "--n", "0", "--seed", "1"], "--n"),
    (["make-scenes", "--out", "{tmp}/file", "--n", "2", "--seed", "1"], "expected a directory"),
    (["train", "--workdir", "{tmp}/w", "--attention", "hard"], "--attention"),
    (["train", "--workdir", "{tmp}/w", "--steps", "0"], "--steps"),
    (["train", "--workdir", "{run}", "--hidden", "32"], "--hidden"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_invocations_one_line_exit_2(argv, message, trained, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    Image.new("L", (10, 10)).save(tmp_path / "ok.png")
    run = trained[0]
    argv = [a.format(tmp=tmp_path, run=run) for a in argv]
    before = sorted(os.listdir(run))
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(PROG) and ": error: " in err[0], err
    assert message in err[0]
    assert not (tmp_path / "w").exists() and sorted(os.listdir(run)) == before
