"""Bach chorales: the music21 reader and cache, the frame models' likelihoods, and the
``experiments.music`` command line (train, resume, generate, evaluate, bad invocations).

Everything runs on a handful of chorales parsed once per session into a temporary cache.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import wave

import jax
import jax.numpy as jnp
import numpy as np
import pytest

music21 = pytest.importorskip("music21")
mido = pytest.importorskip("mido")

from experiments.music import model as mm  # noqa: E402
from experiments.music.__main__ import main  # noqa: E402
from experiments.music.config import MusicConfig  # noqa: E402
from experiments.music.generate import SOUNDFONTS  # noqa: E402
from seqjax.data import music  # noqa: E402

#: Chorales of the session cache (the first of the corpus).
N_CHORALES = 8
TINY = [
    "--max-chorales", str(N_CHORALES), "--hidden", "8", "--window", "8", "--batch", "4",
    "--warmup-steps", "0", "--schedule", "constant", "--lr", "0.01", "--log-every", "5",
    "--eval-every", "10", "--save-every", "10", "--progress", "false",
]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A session cache with the first chorales parsed; ``SEQJAX_CACHE`` points at it."""
    root = tmp_path_factory.mktemp("music_cache")
    old = os.environ.get("SEQJAX_CACHE")
    os.environ["SEQJAX_CACHE"] = str(root)
    bwvs = music.corpus_bwvs()[:N_CHORALES]
    chorales = music.load_chorales(bwvs)
    yield root, bwvs, chorales
    if old is None:
        os.environ.pop("SEQJAX_CACHE")
    else:
        os.environ["SEQJAX_CACHE"] = old


# -- the reader --------------------------------------------------------------------------------


def _score(notes_by_part):
    """A music21 score with parts Soprano..Bass; notes are (midi, offset, quarterLength)."""
    from music21 import note, stream

    score = stream.Score()
    for name, notes in notes_by_part.items():
        part = stream.Part()
        part.partName = name
        for midi, offset, ql in notes:
            n = note.Note(midi)
            n.quarterLength = ql
            part.insert(offset, n)
        score.insert(0, part)
    return score


def test_roll_from_score_samples_each_frame_start():
    score = _score(
        {
            "Soprano": [(72, 0, 1), (74, 1, 0.5), (76, 1.5, 0.5), (77, 2, 2)],
            "Alto": [(67, 0, 4)],
            "Tenor": [(64, 0, 3), (62, 3, 1)],
            "Bass": [(48, 0, 2), (43, 2, 2)],
        }
    )
    roll = music.roll_from_score(score, 1.0)
    assert roll.shape == (4, 88) and roll.dtype == bool
    expect = [{72, 67, 64, 48}, {74, 67, 64, 48}, {77, 67, 64, 43}, {77, 67, 62, 43}]
    got = [set((np.nonzero(f)[0] + 21).tolist()) for f in roll]
    assert got == expect  # the eighth 76 at 1.5 falls between quarter samples
    eighth = music.roll_from_score(score, 0.5)
    assert eighth.shape == (8, 88)
    assert set((np.nonzero(eighth[3])[0] + 21).tolist()) == {76, 67, 64, 48}
    assert music.roll_from_score(_score({"Soprano": [(72, 0, 1)]}), 1.0) is None  # one voice


def test_reader_shapes_cache_and_dedup(cache, monkeypatch):
    root, bwvs, chorales = cache
    assert 5 <= len(chorales) <= N_CHORALES
    for c in chorales:
        assert c.roll.dtype == bool and c.roll.shape[1] == music.KEYS and c.frames > 10
        assert c.roll.sum(axis=1).max() <= 4 and 0 <= c.tonic < 12 and c.mode in ("major", "minor")
    assert music.cache_dir() == root / "music"
    assert len(list((root / "music" / "v1" / "step1").glob("bwv*.npz"))) == N_CHORALES
    assert len(set(music.corpus_bwvs())) == len(music.corpus_bwvs()) > 300

    def no_parse(*a, **k):
        raise AssertionError("parsed again instead of reading the cache")

    monkeypatch.setattr(music, "read_chorale", no_parse)
    again = music.load_chorales(bwvs + bwvs[:2])  # repeated identifiers count once
    assert [c.bwv for c in again] == [c.bwv for c in chorales]
    assert all(np.array_equal(a.roll, b.roll) for a, b in zip(again, chorales, strict=True))
    # the same roll under two numbers is kept once
    music._save_cached(music._cache_path(music.cache_dir(), "x1", 1.0), chorales[0])
    music._save_cached(music._cache_path(music.cache_dir(), "x2", 1.0), chorales[0])
    assert [c.bwv for c in music.load_chorales(["x1", "x2"])] == ["x1"]
    assert len(music.load_chorales(["x1", "x2"], dedup=False)) == 2


def test_split_is_disjoint_seeded_and_in_jsb_proportions():
    cs = [music.Chorale(str(i), np.ones((3, 88), bool), 0, "major") for i in range(345)]
    parts = music.split(cs, seed=0)
    sizes = [len(v) for v in parts.values()]
    assert sizes == [206, 69, 70] and sum(sizes) == 345
    names = [{c.bwv for c in v} for v in parts.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert [c.bwv for c in music.split(cs[::-1], seed=0)["test"]] == [
        c.bwv for c in parts["test"]
    ]  # depends on the set, not the order
    assert {c.bwv for c in music.split(cs, seed=1)["test"]} != names[2]


def test_transpose_and_statistics(cache):
    c = cache[2][0]
    t = music.to_common_key(c)
    shift = (-c.tonic + 6) % 12 - 6
    assert t.tonic == 0 and -6 <= shift <= 5
    k0, k1 = np.nonzero(c.roll), np.nonzero(t.roll)
    assert np.array_equal(k0[0], k1[0]) and np.array_equal(k0[1] + shift, k1[1])
    s = music.statistics(cache[2])
    assert s["frames"] == sum(x.frames for x in cache[2])
    ref = np.concatenate([x.roll for x in cache[2]]).sum(1).mean()
    assert math.isclose(s["notes_per_frame"], ref) and s["max_polyphony"] == 4


# -- likelihoods -------------------------------------------------------------------------------


def test_bernoulli_nll_matches_numpy():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 3, 5)).astype(np.float32)
    out = mm.BernoulliParams(
        jnp.asarray(0.5 * rng.normal(size=(5, 88)), jnp.float32),
        jnp.asarray(rng.normal(size=88) - 3, jnp.float32),
    )
    v = (rng.random((2, 3, 88)) < 0.1).astype(np.float32)
    p = 1 / (1 + np.exp(-(h.astype(np.float64) @ np.asarray(out.w, np.float64) + out.b)))
    ref = -(v * np.log(p) + (1 - v) * np.log(1 - p)).sum(-1)
    np.testing.assert_allclose(mm.frame_nll(out, jnp.asarray(h), jnp.asarray(v)), ref, rtol=1e-5)


def _nade(K, H=3, N=4, seed=1):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    return mm.NADEParams(w_hb=f(H, K), b=f(K), w_hc=f(H, N), c=f(N), W=f(K, N), V=f(K, N))


def test_nade_nll_is_a_normalised_joint_likelihood():
    K = 5
    out, h = _nade(K), jnp.asarray(np.random.default_rng(2).normal(size=(3,)), jnp.float32)
    frames = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=K)), jnp.float32)  # [32, K]
    nll = mm.frame_nll(out, jnp.broadcast_to(h, (len(frames), 3)), frames)
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(-nll))), 1.0, rtol=1e-5)
    # against the chain rule written key by key in NumPy
    o = jax.tree.map(lambda x: np.asarray(x, np.float64), out)
    hh = np.asarray(h, np.float64)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    for v in np.asarray(frames, np.float64)[[0, 7, 21, 31]]:
        a, ref = hh @ o.w_hc + o.c, 0.0
        for k in range(K):
            p = sig(hh @ o.w_hb[:, k] + o.b[k] + sig(a) @ o.V[k])
            ref -= np.log(p if v[k] else 1 - p)
            a = a + v[k] * o.W[k]
        got = mm.frame_nll(out, h, jnp.asarray(v, jnp.float32))
        np.testing.assert_allclose(float(got), ref, rtol=1e-5)
    # the keys depend on earlier keys only: it is not a product of independent marginals
    assert not np.allclose(np.asarray(mm.frame_logits(out, h, frames))[:, -1], 0.0)


def test_nade_sampling_follows_the_likelihood():
    K, out = 3, _nade(3, seed=4)
    cell = mm.build_cell(MusicConfig(cell="rnn", hidden=3))
    params = mm.MusicParams(cell.init(jax.random.key(0), K), out)
    h = jnp.zeros((4000, 3), jnp.float32)
    v = jax.jit(lambda o, h, k: mm._sample_frame(o, h, k, 1.0))(out, h, jax.random.key(1))
    codes = np.asarray(v @ jnp.asarray([4.0, 2.0, 1.0]), np.int64)
    freq = np.bincount(codes, minlength=8) / len(codes)
    frames = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=K)), jnp.float32)
    prob = np.exp(-np.asarray(mm.frame_nll(out, jnp.zeros((8, 3), jnp.float32), frames)))
    np.testing.assert_allclose(freq, prob, atol=0.03)
    draw = jax.jit(lambda p, k: mm.sample(cell, p, jnp.zeros((2, 1, K)), 5, k))
    new = draw(params, jax.random.key(0))
    assert new.shape == (2, 5, K) and set(np.unique(np.asarray(new))) <= {0.0, 1.0}


# -- the command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    """A tiny GRU-NADE run: 10 steps, then a rerun of the command with ``--steps 20``
    (which resumes from the checkpoint at step 10)."""
    wd = str(tmp_path_factory.mktemp("music") / "run")
    base = ["train", "--workdir", wd, "--cell", "gru", "--output", "nade"] + TINY
    first = main(base + ["--steps", "10"])
    second = main(["train", "--workdir", wd, "--steps", "20"])
    return wd, first, second


def test_train_resume_exact_and_loss_goes_down(trained, tmp_path):
    wd, first, res = trained
    assert first["resumed_from"] is None and first["step"] == 10
    assert res["resumed_from"] == 10 and res["step"] == 20 and res["chorales"]["train"] >= 3
    rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
    train_loss = [r["loss"] for r in rows if r["split"] == "train"]
    assert [r["step"] for r in rows if r["split"] == "train"] == [5, 10, 15, 20]
    assert train_loss[-1] < train_loss[0] - 1.0
    assert res["test_nll"] == pytest.approx(res["test_nll_best"])
    # the same 20 steps in one go end exactly where the resumed run ended
    once = str(tmp_path / "once")
    full = main(
        ["train", "--workdir", once, "--cell", "gru", "--output", "nade", "--steps", "20"] + TINY
    )
    assert full["test_nll_final"] == res["test_nll_final"]
    assert full["valid_nll_final"] == res["valid_nll_final"]


def test_generate_writes_midi_music21_and_mido_read(trained, tmp_path, capsys):
    wd = trained[0]
    with open(os.path.join(wd, "data.json")) as f:
        primer = json.load(f)["test"][0]
    out = tmp_path / "gen.mid"
    args = ["generate", "--workdir", wd, "--out", str(out), "--frames", "16", "--primer", primer]
    res = main(args)
    assert json.loads(capsys.readouterr().out)["notes"] == res["notes"] > 0
    assert res["frames"] == 16 + 8 and res["png"] and os.path.exists(res["png"])
    ons = [m for m in mido.MidiFile(str(out)).tracks[0] if m.type == "note_on" and m.velocity]
    assert len(ons) == res["notes"]
    parsed = music21.converter.parse(str(out))
    assert len(parsed.flatten().notes) > 0
    # WAV only where fluidsynth and a General MIDI soundfont are installed
    synth = shutil.which("fluidsynth") and any(os.path.exists(f) for f in SOUNDFONTS)
    if synth:
        with wave.open(res["wav"]) as w:
            assert w.getnframes() / w.getframerate() >= 24 * 60 / 80  # 24 quarters at 80 bpm
    else:
        assert res["wav"] is None


def test_evaluate_prints_json(trained, capsys):
    wd, _, full = trained
    res = main(["evaluate", "--workdir", wd])
    printed = json.loads(capsys.readouterr().out)
    assert printed["test_nll_per_frame"] == pytest.approx(full["test_nll"], rel=1e-6)
    assert printed["test_frames"] > 0 and res["step"] == full["best_step"]


BAD = [
    (["train", "--workdir", "{file}"], "expected a directory"),
    (["train", "--workdir", "{tmp}/new", "--hidden", "-5"], "--hidden"),
    (["train", "--workdir", "{tmp}/new", "--steps", "0"], "--steps"),
    (["train", "--workdir", "{tmp}/new", "--cell", "tanh"], "--cell"),
    (["train", "--workdir", "{tmp}/new", "--output", "rbm"], "--output"),
    (["train", "--workdir", "{run}", "--hidden", "9"], "--hidden"),
    (["generate", "--workdir", "{tmp}/missing", "--out", "{tmp}/a.mid"], "--workdir"),
    (["generate", "--workdir", "{run}", "--out", "{tmp}/no/dir/a.mid"], "--out"),
    (["generate", "--workdir", "{run}", "--out", "{tmp}/a.wav"], "--out"),
    (["generate", "--workdir", "{run}", "--out", "{tmp}"], "--out"),
    (["generate", "--workdir", "{run}", "--out", "{tmp}/a.mid", "--primer", "99999"], "--primer"),
    (["generate", "--workdir", "{run}", "--out", "{tmp}/a.mid", "--frames", "0"], "--frames"),
    (["generate", "--workdir", "{run}", "--out", "{tmp}/a.mid", "--temperature", "-1"], "--temp"),
    (["evaluate", "--workdir", "{tmp}/missing"], "--workdir"),
    (["evaluate", "--workdir", "{file}"], "--workdir"),
    (["compare", "--budgets", "1M"], "--budgets"),
    (["train"], "--workdir"),
]


def test_bad_invocations_are_one_line_exit_2(trained, tmp_path, capsys):
    run = trained[0]
    (tmp_path / "a_file").write_text("x")
    before = {n: os.path.getmtime(os.path.join(run, n)) for n in os.listdir(run)}
    for argv, needle in BAD:
        argv = [a.format(tmp=tmp_path, run=run, file=tmp_path / "a_file") for a in argv]
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2, argv
        assert err.count("\n") == 1 and "error:" in err and needle in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "new").exists() and not (tmp_path / "a.mid").exists()
    assert {n: os.path.getmtime(os.path.join(run, n)) for n in os.listdir(run)} == before


def test_compare_table_markdown_and_figure(tmp_path):
    from experiments.music import compare as cmp

    def row(cell, output, seed, nll):
        tl = [{"step": s, "elapsed_s": s / 10, "test_nll": nll + 1 / s} for s in (10, 20)]
        return dict(
            budget="20K", cell=cell, output=output, seed=seed, hidden=8, params=123,
            test_nll=nll, test_nll_final=nll + 0.1, valid_nll=nll, train_elapsed_s=2.0,
            timeline=tl,
        )  # fmt: skip

    rows = [row("rnn", "bernoulli", s, 9.0 + s) for s in (0, 1)] + [row("gru", "nade", 0, 7.0)]
    table = cmp._table(rows)
    assert [(t["cell"], t["output"], t["seeds"]) for t in table] == [
        ("rnn", "bernoulli", 2),
        ("gru", "nade", 1),
    ]
    assert table[0]["test_nll_mean"] == 9.5 and table[0]["test_nll_sd"] == pytest.approx(
        0.7071, 1e-3
    )
    payload = {
        "command": "cmd", "wall_s": 60.0, "load_average": [1.0, 2.0, 3.0], "cpus": 2,
        "runs": rows, "table": table,
        "sample": {"run": "x/20K_gru_nade_s0", "primer_bwv": "269", "primer_frames": 2,
                   "generated": [[30, 40], [31], []], "real": [[30, 40], [32], [33]]},
    }  # fmt: skip
    md = cmp.markdown(payload)
    assert "**9.50** ± 0.71 (2)" in md and "9.10 / 8.91" in md and "load average 1.0" in md
    cmp.figure(payload, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
