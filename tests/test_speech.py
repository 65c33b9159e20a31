"""experiments.speech: synthesis and cache, voices, features, training, CLI (tiny models).

espeak-ng is required (``.ci/run`` installs it); without it these tests fail, they do not skip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from experiments.scaffold import UsageError
from experiments.speech import __main__ as cli
from experiments.speech import input_pipeline as ip
from experiments.speech.config import SpeechConfig
from experiments.speech.train import restore, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = SpeechConfig(
    num_train=12,
    num_val=4,
    num_test=4,
    max_digits=3,
    n_mels=16,
    subsample=4,
    layers=1,
    hidden=8,
    length_buckets=1,
    lm_hidden=8,
    lm_steps=3,
    beam=2,
    batch_size=4,
    total_steps=4,
    warmup_steps=1,
    learning_rate=1e-2,
    log_every=1,
    eval_every=0,
    save_every=4,
    progress=False,
    async_checkpointing=False,
)


@pytest.fixture(scope="module")
def espeak():
    path = shutil.which("espeak-ng")
    if path is None:
        pytest.fail("espeak-ng is not installed: apt-get install espeak-ng (.ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory, espeak):
    """A private cache directory for the module (restored afterwards)."""
    old = os.environ.get("SEQJAX_CACHE_DIR")
    path = str(tmp_path_factory.mktemp("speech_cache"))
    os.environ["SEQJAX_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("SEQJAX_CACHE_DIR", None)
    else:
        os.environ["SEQJAX_CACHE_DIR"] = old


def _load(n=4, name="test", split="test", n_mels=16):
    return ip.load_set(
        name, split, n, seed=3, max_digits=3, snr_db=(20.0, 30.0), n_mels=n_mels, workers=2
    )


def test_voices_disjoint_and_valid(espeak, capsys):
    train, test = ip.voices("train"), ip.voices("test")
    assert train and test and not set(train) & set(test)
    split = lambda vs: ({v.split("+")[0] for v in vs}, {v.split("+")[1] for v in vs})  # noqa: E731
    (ta, tv), (sa, sv) = split(train), split(test)
    assert not ta & sa and not tv & sv  # neither accent nor variant is shared
    cli.main(["voices", "--split", "test"])
    lines = capsys.readouterr().out.splitlines()
    assert lines == test and all(" " not in v for v in lines)
    # espeak-ng falls back silently on an unknown voice, so check its own lists instead.
    listing = subprocess.run([espeak, "--voices"], capture_output=True, text=True, check=True)
    languages = {line.split()[1] for line in listing.stdout.splitlines()[1:]}
    listing = subprocess.run(
        [espeak, "--voices=variant"], capture_output=True, text=True, check=True
    )
    variants = {line.split()[-1].removeprefix("!v/") for line in listing.stdout.splitlines()[1:]}
    for v in set(train) | set(test):
        accent, variant = v.split("+")
        assert accent in languages and variant in variants, v


def test_synthesis_cache_reuse_and_features(cache, monkeypatch):
    ds = _load()
    files = os.listdir(os.path.join(cache, "speech"))
    assert len(files) == 1 and files[0].endswith(".npz")
    assert len(ds) == 4 and all(1 <= len(d) <= 3 and d.isdigit() for d in ds.digits)
    assert set(ds.voices) <= set(ip.voices("test"))
    for i in range(len(ds)):
        f = ds.utterance(i)
        assert f.shape[1] == 16 and f.shape[0] > 30  # at least 0.3 s of 10 ms frames
        np.testing.assert_allclose(f.mean(0), 0, atol=2e-2)
        np.testing.assert_allclose(f.std(0), 1, atol=2e-2)
    # Cached: loads without espeak-ng on PATH, identical.
    monkeypatch.setenv("PATH", "")
    again = _load()
    np.testing.assert_array_equal(again.feats, ds.feats)
    assert again.digits == ds.digits and again.voices == ds.voices
    # A set that is not cached needs espeak-ng: a one-line error naming the package.
    with pytest.raises(UsageError, match="apt-get install espeak-ng"):
        _load(n=5)


def test_render_is_deterministic_and_noisy(espeak):
    u = ip.plan("train", 1, 0, 2, (10.0, 10.0))[0]
    a, b = ip.render(u, 0, 0), ip.render(u, 0, 0)
    np.testing.assert_array_equal(a, b)
    clean = ip.synthesize(u.digits, u.voice, speed=u.speed, pitch=u.pitch, gap=u.gap)
    lead = int(u.lead_s * ip.SAMPLE_RATE)
    noise = a[lead : lead + len(clean)] - clean
    snr = 10 * np.log10(np.mean(a**2) / np.mean(noise**2))
    assert abs(snr - 10.0) < 1.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache):
    """A tiny run trained 4 steps, then resumed to 8."""
    workdir = str(tmp_path_factory.mktemp("speech_run"))
    first = train_and_evaluate(TINY, workdir, verbose=False)
    second = train_and_evaluate(
        dataclasses.replace(TINY, total_steps=8, save_every=8), workdir, verbose=False
    )
    return workdir, first, second


def test_train_checkpoint_resume_and_loss_down(run_dir):
    workdir, first, second = run_dir
    assert first["step"] == 4 and first["resumed_from"] is None
    assert second["step"] == 8 and second["resumed_from"] == 4
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "8"
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [r["loss"] for r in map(json.loads, f) if r.get("split") == "train"]
    assert len(losses) == 8 and losses[-1] < losses[0]
    for name in ("greedy", "beam2", "beam2_lm"):
        assert 0 <= second["test"][name]["cer"] and 0 <= second["test"][name]["wer"]
    assert os.path.exists(os.path.join(workdir, "lm.npz"))


def test_resume_after_interruption_is_bit_identical(cache, tmp_path):
    """A run that lost its last checkpoint resumes to the very same losses and parameters."""
    config = dataclasses.replace(TINY, total_steps=8, save_every=4)
    workdir = str(tmp_path / "run")
    first = train_and_evaluate(config, workdir, verbose=False)
    assert first["step"] == 8 and first["resumed_from"] is None
    straight = restore(workdir)

    def losses():
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [r for r in map(json.loads, f) if r.get("split") == "train"]
        return [(r["step"], r["loss"]) for r in rows]

    straight_losses = losses()
    assert [s for s, _ in straight_losses] == list(range(1, 9))
    # As if the process died after saving step 4: steps 5-8 are trained again.
    shutil.rmtree(os.path.join(workdir, "checkpoints", "8"))
    again = train_and_evaluate(config, workdir, verbose=False)
    assert again["step"] == 8 and again["resumed_from"] == 4
    resumed = restore(workdir)
    assert resumed.step == 8 and losses() == straight_losses
    leaves = jax.tree.leaves(straight.params)
    assert len(leaves) == len(jax.tree.leaves(resumed.params)) > 0
    for a, b in zip(leaves, jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_evaluate_json(run_dir, capsys):
    workdir, _, second = run_dir
    out = cli.main(["evaluate", "--workdir", workdir])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(out))
    assert printed["step"] == 8 and printed["test_utterances"] == 4
    assert printed["greedy"] == second["test"]["greedy"]  # same checkpoint, same decoding
    assert set(printed["beam2_lm"]) == {"cer", "wer", "utterance_error"}


def test_transcribe_wavs_any_rate_and_channels(run_dir, espeak, tmp_path, capsys):
    workdir = run_dir[0]
    raw = tmp_path / "raw.wav"
    subprocess.run([espeak, "-v", ip.voices("test")[0], "-w", str(raw), "four one"], check=True)
    x, rate = sf.read(raw)
    assert rate == 22050 and x.ndim == 1
    sf.write(tmp_path / "stereo.wav", np.stack([x, 0.5 * x], 1), rate)
    eight = ip.audio.resample(x.astype(np.float32), rate, 8000)
    sf.write(tmp_path / "eight.wav", eight, 8000, subtype="PCM_16")
    files = [str(raw), str(tmp_path / "stereo.wav"), str(tmp_path / "eight.wav")]
    for beam in ([], ["--beam", "2"]):
        texts = cli.main(["transcribe", "--workdir", workdir, *beam, *files])
        lines = capsys.readouterr().out.splitlines()
        assert lines == texts and len(lines) == 3
        assert all(line.isdigit() or line == "" for line in lines)


def _bad_cases(tmp):
    (tmp / "notwav.wav").write_text("hello")
    (tmp / "empty").mkdir(exist_ok=True)
    return [
        (["voices"], "--split"),
        (["voices", "--split", "dev"], "invalid choice"),
        (["train", "--cell", "lstmx"], "--cell"),
        (["train", "--layers", "0", "--workdir", str(tmp / "w")], "--layers"),
        (["train", "--steps", "many"], "--steps"),
        (["train", "--proj", "4", "--cell", "gru", "--workdir", str(tmp / "w")], "--proj"),
        (["transcribe", "--workdir", str(tmp / "empty")], "FILE.wav"),
        (["transcribe", "--workdir", str(tmp / "empty"), str(tmp / "missing.wav")], "missing"),
        (["transcribe", "--workdir", str(tmp / "empty"), str(tmp / "notwav.wav")], "WAV"),
        (["transcribe", "--beam", "-1", str(tmp / "notwav.wav")], "--beam"),
        (["evaluate", "--workdir", str(tmp / "empty")], "--workdir"),
        (["evaluate", "--workdir", str(tmp / "nothing")], "--workdir"),
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
        assert "Traceback" not in err
    assert not (tmp_path / "w").exists()  # a rejected train wrote nothing


def test_bad_invocation_real_process(tmp_path):
    """The entry point itself: exit status 2, one line on stderr, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.speech", "transcribe", str(tmp_path / "no.wav")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no.wav" in proc.stderr, proc.stderr


def test_match_training_conditions():
    from experiments.speech.train import match_training_conditions

    x = np.sin(np.arange(8000) / 5.0).astype(np.float32)
    y = match_training_conditions(x, TINY)
    pad = int(0.15 * ip.SAMPLE_RATE)
    assert y.shape == (8000 + 2 * pad,) and y.dtype == np.float32
    np.testing.assert_array_equal(y, match_training_conditions(x, TINY))  # deterministic
    clean = np.pad(x, pad)
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((y - clean) ** 2))
    assert abs(snr - TINY.snr_db_max) < 0.5
