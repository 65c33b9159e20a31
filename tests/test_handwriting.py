"""experiments.handwriting and seqjax.data.digit_lines: the line generator, training and
resuming, recognising PNG files, command-line errors, sequential-MNIST orderings (tiny models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments.handwriting import __main__ as cli
from experiments.handwriting import input_pipeline as ip
from experiments.handwriting import seqmnist
from experiments.handwriting.decode import recognize
from experiments.handwriting.train import restore
from seqjax.data.digit_lines import (
    DIGIT_SIZE,
    elastic_distort,
    line_texts,
    make_digit_lines,
    resize_height,
)
from seqjax.data.scenes import load_objects

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A tiny run: every field small (the CLI's own flags, so train goes through the parser), with
#: a one-layer convolutional front end and elastically distorted training lines.
TINY = [
    "--num-train", "24", "--num-val", "4", "--num-test", "6", "--max-digits", "3",
    "--height", "12", "--layers", "1", "--hidden", "8", "--beam", "2", "--batch", "4",
    "--conv-layers", "1", "--conv-channels", "2", "--elastic-alpha", "8",
    "--warmup-steps", "1", "--lr", "1e-2", "--log-every", "1", "--eval-every", "0",
    "--progress", "false", "--async-checkpointing", "false",
]  # fmt: skip


@pytest.fixture(scope="module")
def banks():
    return load_objects("digits")


def _crop(img: np.ndarray) -> np.ndarray:
    """The inked columns of a digit (independent of the generator's own crop)."""
    x = img.astype(np.float32) / 255.0
    cols = np.flatnonzero(x.max(0) > 0.1)
    return x[:, cols[0] : cols[-1] + 1]


def test_lines_hold_the_labelled_digits_in_order(banks):
    """Without scaling, shear, jitter or resampling a line is the labelled digits' images
    side by side with the given gaps: the label is what was written."""
    bank = banks[0]
    lines = make_digit_lines(
        5,
        bank,
        seed=4,
        height=DIGIT_SIZE,
        scale=(1.0, 1.0),
        jitter=0,
        shear=0.0,
        gap=(3, 3),
        margin=(2, 2),
    )
    for i in range(5):
        k = int(lines.lengths[i])
        ids = lines.digit_ids[i, :k]
        np.testing.assert_array_equal(lines.labels[i, :k], bank.classes[ids])
        assert (lines.labels[i, k:] == -1).all() and (lines.digit_ids[i, k:] == -1).all()
        parts = [np.zeros((DIGIT_SIZE, 2), np.float32)]
        for j in ids:
            parts += [_crop(bank.images[j]), np.zeros((DIGIT_SIZE, 3), np.float32)]
        expected = np.concatenate(parts[:-1] + [np.zeros((DIGIT_SIZE, 2), np.float32)], axis=1)
        assert lines.widths[i] == expected.shape[1]
        np.testing.assert_allclose(lines.images[i, :, : lines.widths[i]], expected, atol=1e-6)
        assert (lines.images[i, :, lines.widths[i] :] == 0).all()
    assert line_texts(lines)[0] == "".join(map(str, lines.labels[0, : lines.lengths[0]]))


def test_lines_seeded_varied_and_shaped(banks):
    bank = banks[0]
    a = make_digit_lines(12, bank, seed=1, height=16, max_digits=10)
    b = make_digit_lines(12, bank, seed=1, height=16, max_digits=10)
    c = make_digit_lines(12, bank, seed=2, height=16, max_digits=10)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.labels, c.labels)
    assert a.images.shape == (12, 16, a.widths.max()) and a.images.dtype == np.float32
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0
    assert len(set(a.widths.tolist())) > 6  # widths vary with digits, scales and gaps
    assert ((1 <= a.lengths) & (a.lengths <= 10)).all() and len(set(a.lengths.tolist())) > 3
    # more digits, wider lines (each digit is several columns)
    assert np.corrcoef(a.lengths, a.widths)[0, 1] > 0.8
    with pytest.raises(ValueError, match="min_digits"):
        make_digit_lines(2, bank, seed=0, min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match=r"\[M, 28, 28\]"):
        make_digit_lines(2, bank._replace(images=bank.images[:, :20]), seed=0)


def test_elastic_distortion(banks):
    """The elastic warp: a copy at alpha 0, a small displacement moves ink only a little, a
    large one moves it further, ink is roughly kept; lines with it hold the same digits, and
    alpha 0 leaves the generator's random stream (so its lines) unchanged."""
    rng = np.random.default_rng(0)
    digit = banks[0].images[3].astype(np.float32) / 255.0
    np.testing.assert_array_equal(elastic_distort(digit, 0.0, 4.0, rng), digit)
    small = [elastic_distort(digit, 0.5, 4.0, np.random.default_rng(s)) for s in range(8)]
    large = [elastic_distort(digit, 34.0, 4.0, np.random.default_rng(s)) for s in range(8)]
    d_small = np.mean([np.abs(x - digit).sum() for x in small])
    d_large = np.mean([np.abs(x - digit).sum() for x in large])
    assert 0 < d_small < 0.3 * d_large
    for x in small + large:
        assert x.shape == digit.shape and x.dtype == np.float32
        assert 0.6 < x.sum() / digit.sum() < 1.4
    with pytest.raises(ValueError, match="sigma"):
        elastic_distort(digit, 1.0, 0.0, rng)
    with pytest.raises(ValueError, match="2-D"):
        elastic_distort(digit[None], 1.0, 1.0, rng)

    bank = banks[0]
    plain = make_digit_lines(6, bank, seed=9, height=16)
    zero = make_digit_lines(6, bank, seed=9, height=16, elastic=(0.0, 4.0))
    warped = make_digit_lines(6, bank, seed=9, height=16, elastic=(34.0, 4.0))
    for x, y in zip(plain, zero, strict=True):
        np.testing.assert_array_equal(x, y)
    # the first line's digits are drawn before any warp: the same digits, other ink
    np.testing.assert_array_equal(warped.digit_ids[0], plain.digit_ids[0])
    assert not np.array_equal(warped.images[0], plain.images[0])
    for i in range(6):  # every line's label is still the classes of its digit images
        k = int(warped.lengths[i])
        np.testing.assert_array_equal(warped.labels[i, :k], bank.classes[warped.digit_ids[i, :k]])
    with pytest.raises(ValueError, match="elastic"):
        make_digit_lines(2, bank, seed=0, elastic=(-1.0, 4.0))


def _conv_reference(image: np.ndarray, conv, k: int) -> np.ndarray:
    """NumPy loops: per layer a zero-padded 3x3 cross-correlation, bias, ReLU, max over 2 rows
    (and ``k`` columns in the first layer, edges padded); -> frames ``[T, rows * C]``."""
    x = image[:, :, None].astype(np.float64)
    for i, (w, b) in enumerate(conv):
        w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
        h, wd, _ = x.shape
        p = np.pad(x, ((1, 1), (1, 1), (0, 0)))
        y = np.zeros((h, wd, w.shape[3]))
        for r in range(h):
            for c in range(wd):
                y[r, c] = np.einsum("ijc,ijco->o", p[r : r + 3, c : c + 3], w) + b
        y = np.maximum(y, 0.0)
        kc = k if i == 0 else 1
        rows, cols = -(-h // 2), -(-wd // kc)
        pooled = np.full((rows, cols, y.shape[2]), -np.inf)
        for r in range(rows):
            for c in range(cols):
                pooled[r, c] = y[2 * r : 2 * r + 2, kc * c : kc * c + kc].max(axis=(0, 1))
        x = pooled
    return x.transpose(1, 0, 2).reshape(x.shape[1], -1)


def test_conv_front_end_matches_numpy_and_keeps_time_steps():
    import jax
    import jax.numpy as jnp

    from experiments.handwriting.config import LinesConfig
    from experiments.handwriting.model import (
        build_cell,
        conv_front_end,
        forward,
        init_params,
        input_size,
    )

    for height, k, layers in ((12, 2, 2), (9, 3, 1), (10, 1, 3)):
        cfg = LinesConfig(height=height, cols_per_frame=k, conv_layers=layers, conv_channels=3)
        params = init_params(build_cell(cfg), cfg, jax.random.PRNGKey(height))
        rng = np.random.default_rng(k)
        images = [rng.random((height, w)).astype(np.float32) for w in (13, 7)]
        x, lengths = ip.pad_frames(images, k, [8, 16])
        got = np.asarray(conv_front_end(cfg, params.conv, jnp.asarray(x)))
        assert got.shape == (2, x.shape[1], input_size(cfg))
        for i, image in enumerate(images):
            padded = np.zeros((height, x.shape[1] * k), np.float32)
            padded[:, : image.shape[1]] = image
            want = _conv_reference(padded, params.conv, k)
            np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-5)
        logits = forward(build_cell(cfg), cfg, params, jnp.asarray(x), jnp.asarray(lengths))
        assert logits.shape == (2, x.shape[1], ip.NUM_CLASSES)
    plain = LinesConfig(height=12, conv_layers=0)
    assert init_params(build_cell(plain), plain, jax.random.PRNGKey(0)).conv == ()


def test_test_lines_use_only_held_out_digit_images(banks):
    train_bank, test_bank = banks
    seen = {img.tobytes() for img in train_bank.images}
    assert not any(img.tobytes() in seen for img in test_bank.images)
    test = ip.make_set("test", 30, seed=0, max_digits=4, height=12)
    train = ip.make_set("train", 30, seed=0, max_digits=4, height=12)
    for ds, bank in ((test, test_bank), (train, train_bank)):
        for text, ids in zip(ds.texts, ds.digit_ids, strict=True):
            assert text == "".join(str(int(bank.classes[j])) for j in ids)
    assert not any(test_bank.images[j].tobytes() in seen for ids in test.digit_ids for j in ids)
    # the first 30 lines of a larger set are the same lines (chunked seeds)
    assert ip.make_set("test", 30, seed=0, max_digits=4, height=12).texts == test.texts


def test_frames_are_column_stacks():
    image = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    f = ip.frames(image, 2)
    assert f.shape == (3, 6)
    np.testing.assert_array_equal(f[0], np.concatenate([image[:, 0], image[:, 1]]))
    np.testing.assert_array_equal(f[2], np.concatenate([image[:, 4], np.zeros(3)]))
    assert ip.length_bounds(33, 2) == [16, 32]


def _line(banks, n=3):
    ds = ip.make_set("test", n, seed=5, max_digits=4, height=20)
    return ds, [ip.line_image(ds, i) for i in range(n)]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two line images after resampling ``a`` to ``b``'s width."""
    a = np.asarray(Image.fromarray(a, "F").resize(b.shape[::-1], Image.Resampling.BILINEAR))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_png_lines_come_back_like_generated_lines(banks, tmp_path):
    """A generated line saved as black-on-white RGB at twice the height, and as grey-scale at
    1.5 times, is read back like the original line (inversion, crop, padding, rescale)."""
    _, lines = _line(banks)
    prepared = [ip.prepare_line(x, 20) for x in lines]
    for i, (x, want) in enumerate(zip(lines, prepared, strict=True)):
        big = resize_height(x, 40)
        rgb = np.repeat((255 * (1 - np.clip(big, 0, 1)))[..., None], 3, axis=-1).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(tmp_path / f"rgb{i}.png")
        grey = (255 * np.clip(resize_height(x, 30), 0, 1)).astype(np.uint8)
        Image.fromarray(grey, "L").save(tmp_path / f"grey{i}.png")
        other = prepared[(i + 1) % len(prepared)]
        for name in (f"rgb{i}.png", f"grey{i}.png"):
            got = ip.prepare_line(ip.read_png(str(tmp_path / name)), 20)
            assert got.shape[0] == 20 and abs(got.shape[1] - want.shape[1]) <= 3
            # resampling blurs the edges a little: the same line correlates > 0.85, another
            # line of the set well below
            assert _corr(got, want) > 0.85 and _corr(other, want) < 0.6, name
    # the form of a generated line is kept: ink spans INK_FRACTION of the height
    rows = np.flatnonzero((prepared[0] > 0.2).any(1))
    assert abs((rows[-1] - rows[0] + 1) / 20 - ip.INK_FRACTION) <= 0.1


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run trained 4 steps through the CLI, then resumed to 8."""
    workdir = str(tmp_path_factory.mktemp("lines_run"))
    first = cli.main(["train", "--workdir", workdir, "--steps", "4", "--save-every", "4", *TINY])
    second = cli.main(["train", "--workdir", workdir, "--steps", "8", "--save-every", "8"])
    return workdir, first, second


def test_train_checkpoint_resume_and_loss_down(run_dir):
    workdir, first, second = run_dir
    assert first["step"] == 4 and first["resumed_from"] is None
    assert second["step"] == 8 and second["resumed_from"] == 4
    assert second["params"] == first["params"] and second["test_lines"] == 6
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int)[-1] == "8"
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["hidden"] == 8  # the resumed run kept the saved configuration
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [r["loss"] for r in map(json.loads, f) if r.get("split") == "train"]
    assert len(losses) == 8 and losses[-1] < losses[0]
    for name in ("greedy", "beam2"):
        rates = second["test"][name]
        assert 0 <= rates["cer"] and 0 <= rates["line_accuracy"] <= 1


def test_evaluate_json_and_plot(run_dir, tmp_path, capsys):
    workdir, _, second = run_dir
    png = str(tmp_path / "lines.png")
    out = cli.main(["evaluate", "--workdir", workdir, "--plot", png])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(out))
    assert printed["step"] == 8 and printed["num_lines"] == 6 and printed["lines"] == "test"
    assert printed["greedy"] == second["test"]["greedy"]  # same checkpoint, same decoding
    g = printed["greedy"]
    assert g["cer"] == pytest.approx(g["substitutions"] + g["deletions"] + g["insertions"])
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 300


def test_recognize_grey_and_rgb_pngs(run_dir, banks, tmp_path, capsys):
    workdir = run_dir[0]
    _, lines = _line(banks, 2)
    files = []
    for i, x in enumerate(lines):
        grey = (255 * np.clip(resize_height(x, 28), 0, 1)).astype(np.uint8)
        Image.fromarray(grey, "L").save(tmp_path / f"g{i}.png")
        big = (255 * (1 - np.clip(resize_height(x, 64), 0, 1))).astype(np.uint8)
        Image.fromarray(np.stack([big] * 3, -1), "RGB").save(tmp_path / f"c{i}.png")
        files += [str(tmp_path / f"g{i}.png"), str(tmp_path / f"c{i}.png")]
    for beam in ([], ["--beam", "2"]):
        texts = cli.main(["recognize", "--workdir", workdir, *beam, *files])
        lines_out = capsys.readouterr().out.splitlines()
        assert lines_out == texts and len(texts) == 4
        assert all(t.isdigit() or t == "" for t in texts)
        # each file's line is the model's reading of that image brought to the training form
        # (tested above against the generated lines), in the order of the files
        model = restore(workdir)
        prepared = [ip.prepare_line(ip.read_png(f), model.config.height) for f in files]
        for f, text, x in zip(files, texts, prepared, strict=True):
            alone = recognize(
                model.cell, model.config, model.params, [x], beam=int(beam[-1]) if beam else 0
            )
            assert alone == [text], f


def _bad_cases(tmp):
    (tmp / "notpng.png").write_text("hello")
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(tmp / "line.jpg", "JPEG")
    (tmp / "empty").mkdir(exist_ok=True)
    return [
        (["recognize", "--workdir", str(tmp / "empty"), str(tmp / "missing.png")], "missing.png"),
        (["recognize", "--workdir", str(tmp / "empty"), str(tmp / "notpng.png")], "PNG"),
        (["recognize", "--workdir", str(tmp / "empty"), str(tmp / "line.jpg")], "PNG"),
        (["recognize", "--workdir", str(tmp / "empty"), str(tmp / "empty")], "PNG"),
        (["recognize", "--workdir", str(tmp / "empty")], "IMAGE.png"),
        (["recognize", "--beam", "-1", str(tmp / "line.jpg")], "--beam"),
        (["evaluate", "--workdir", str(tmp / "empty")], "--workdir"),
        (["train", "--cell", "lstmx"], "--cell"),
        (["train", "--height", "4", "--workdir", str(tmp / "w")], "--height"),
        (["train", "--elastic-sigma", "0", "--workdir", str(tmp / "w")], "--elastic-sigma"),
        (["train", "--elastic-alpha", "-2", "--workdir", str(tmp / "w")], "--elastic-alpha"),
        (["train", "--conv-layers", "-1", "--workdir", str(tmp / "w")], "--conv-layers"),
        (["train", "--conv-channels", "0", "--workdir", str(tmp / "w")], "--conv-channels"),
        (["seqmnist", "--order", "diagonal"], "--order"),
        (["seqmnist", "--steps", "0"], "--steps"),
    ]


def test_bad_invocations_exit_2_one_line(tmp_path, capsys):
    for argv, needle in _bad_cases(tmp_path):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(cli.PROG), (argv, err)
        assert "error:" in lines[0] and needle in lines[0], (argv, err)
    assert not (tmp_path / "w").exists()  # a rejected train wrote nothing


def test_bad_invocation_real_process(tmp_path):
    """The entry point itself: exit status 2, one line on stderr, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.handwriting", "recognize", str(tmp_path / "no.png")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no.png" in proc.stderr, proc.stderr


def test_seqmnist_orderings():
    perm = seqmnist.permutation()
    np.testing.assert_array_equal(np.sort(perm), np.arange(784))  # a bijection of the pixels
    np.testing.assert_array_equal(perm, seqmnist.permutation())  # fixed
    assert (perm != np.arange(784)).mean() > 0.99
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    row, pixel, permuted = (seqmnist.sequences(images, o) for o in ("row", "pixel", "permuted"))
    assert row.shape == (3, 28, 28) and pixel.shape == permuted.shape == (3, 784, 1)
    for n, r, c in [(0, 0, 0), (1, 5, 17), (2, 27, 27), (2, 13, 0)]:
        v = images[n, r, c] / 255.0
        assert row[n, r, c] == pytest.approx(v)  # step r reads row r
        assert pixel[n, 28 * r + c, 0] == pytest.approx(v)  # row-major pixels
        i = int(np.flatnonzero(perm == 28 * r + c)[0])
        assert permuted[n, i, 0] == pytest.approx(v)  # step i reads pixel perm[i]
    # the permuted sequence holds the same pixels, in another order
    np.testing.assert_array_equal(np.sort(permuted, 1), np.sort(pixel, 1))
    with pytest.raises(ValueError, match="order"):
        seqmnist.sequences(images, "spiral")


def test_seqmnist_cli_grid_writes_results(tmp_path, capsys):
    rows = cli.main(
        ["seqmnist", "--order", "row", "--cell", "gru,rnn", "--steps", "3", "--hidden", "4"]
        + ["--batch", "8", "--out", str(tmp_path)]
    )
    assert [(r["order"], r["cell"], r["seq_len"]) for r in rows] == [
        ("row", "gru", 28),
        ("row", "rnn", 28),
    ]
    assert all(0 <= r["test_accuracy"] <= 1 and r["steps"] == 3 for r in rows)
    saved = json.loads((tmp_path / "seqmnist.json").read_text())
    assert saved["runs"] == rows and "seqmnist" in saved["command"]
    table = (tmp_path / "seqmnist.md").read_text()
    assert "| row | 28 | gru | 4 |" in table and "| row | 28 | rnn | 4 |" in table
    assert len(capsys.readouterr().out.splitlines()) == 3  # a JSON line per run + the summary
