"""seqjax.data.audio against librosa (independent reference) and closed forms."""

from __future__ import annotations

import librosa  # the dev extra's independent reference
import numpy as np
import pytest
import soundfile as sf

from seqjax.data import audio


def test_mel_filterbank_equals_librosa_htk():
    ours = audio.mel_filterbank(16000, 512, 80, f_min=20.0)
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=20.0, htk=True, norm=None)
    np.testing.assert_allclose(ours, ref.T, atol=1e-5)


def test_log_mel_equals_librosa():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000).astype(np.float32)
    s = librosa.feature.melspectrogram(
        y=x,
        sr=16000,
        n_fft=512,
        win_length=400,
        hop_length=160,
        center=False,
        window="hann",
        power=2.0,
        n_mels=40,
        fmin=20.0,
        htk=True,
        norm=None,
    )
    ref = np.log(s.T + 1e-6)
    # librosa's 400-sample window sits in the middle of its 512-sample frame, 56 samples in:
    # its frame k is ours on the signal from sample 56.
    ours = np.asarray(audio.log_mel_spectrogram(x[56:], 16000, n_mels=40))
    assert ours.shape == (audio.num_frames(4000 - 56, 400, 160), 40)
    ours = ours[: ref.shape[0]]
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3500.0])
def test_pure_tone_lands_in_its_mel_bin(freq):
    sr, n_mels = 16000, 80
    t = np.arange(sr) / sr
    feats = np.asarray(audio.log_mel_spectrogram(np.sin(2 * np.pi * freq * t), sr))
    centres = audio.mel_to_hz(
        np.linspace(audio.hz_to_mel(20.0), audio.hz_to_mel(sr / 2), n_mels + 2)
    )[1:-1]
    expected = int(np.argmin(np.abs(centres - freq)))
    assert abs(int(np.argmax(feats.mean(0))) - expected) <= 1


def test_normalize_features_with_lengths():
    rng = np.random.default_rng(1)
    f = rng.standard_normal((2, 7, 3)).astype(np.float32) * 5 + 2
    out = np.asarray(audio.normalize_features(f, np.array([7, 4])))
    for b, n in enumerate([7, 4]):
        v = out[b, :n]
        np.testing.assert_allclose(v.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(v.std(0), 1, atol=1e-3)
        assert np.all(out[b, n:] == 0)
        ref = (f[b, :n] - f[b, :n].mean(0)) / np.sqrt(f[b, :n].var(0) + 1e-5)
        np.testing.assert_allclose(v, ref, atol=1e-4)


@pytest.mark.parametrize("n", [300, 12345])
def test_features_equal_normalized_log_mel(n):
    x = np.random.default_rng(2).standard_normal(n).astype(np.float32)
    ref = np.asarray(audio.normalize_features(audio.log_mel_spectrogram(x, 16000, n_mels=24)))
    for chunk in (7, 256):
        ours = audio.features(x, n_mels=24, chunk=chunk)
        assert ours.shape == (audio.num_frames(max(n, 400), 400, 160), 24)
        np.testing.assert_allclose(ours, ref, atol=1e-3)


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (22050, 2), (16000, 2), (44100, 1)])
def test_read_wav_resamples_and_mixes(tmp_path, rate, channels):
    t = np.arange(int(rate * 0.5)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    path = tmp_path / "x.wav"
    sf.write(path, data, rate, subtype="PCM_16")
    y = audio.read_wav(path, 16000)
    assert y.dtype == np.float32 and y.shape == (8000,)
    spec = np.abs(np.fft.rfft(y[1000:-1000]))
    peak = np.argmax(spec) * 16000 / len(y[1000:-1000])
    assert abs(peak - 440.0) < 3.0
    assert abs(np.max(np.abs(y[1000:-1000])) - 0.5) < 0.02


def test_read_wav_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        audio.read_wav(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(ValueError, match="expected a WAV file"):
        audio.read_wav(bad)
    flac = tmp_path / "x.flac"
    sf.write(flac, np.zeros(100), 8000, format="FLAC")
    with pytest.raises(ValueError, match="expected a WAV file"):
        audio.read_wav(flac)
