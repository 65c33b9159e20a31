"""Audio for speech models: WAV reading with resampling, log-mel filterbank features.

- :func:`read_wav`: any mono or stereo WAV file at any sample rate (8-, 16-, 24-, 32-bit
  integer or float) to a mono float32 signal at the rate asked for.
- :func:`mel_filterbank`: triangular filters on the HTK mel scale (as Kaldi, torchaudio and
  ``librosa.filters.mel(htk=True, norm=None)``).
- :func:`log_mel_spectrogram`: ``[T, n_mels]`` log-mel energies, 25 ms Hann windows every
  10 ms by default, in JAX (jittable, batchable, runs on any device).
- :func:`normalize_features`: per-utterance mean and variance normalisation of each bin.
- :func:`features`: the three together for a host signal, one compilation for any length.

Libraries, and why: ``soundfile`` (libsndfile) reads WAV in every sample format; resampling
uses ``scipy.signal.resample_poly`` (a polyphase anti-aliased FIR; SciPy is already a
dependency of JAX, so it costs nothing). The STFT and mel projection are a framed FFT and one
matmul in JAX rather than ``librosa``: librosa brings numba and llvmlite (about 100 MB) and
a multi-second import for what is here twenty lines, and a JAX version runs on the same
device as the model and batches under ``vmap``. ``librosa`` serves only as the independent
reference in the tests. A new signal length would recompile a jitted function, so
:func:`features` frames the signal on the host and runs fixed-size blocks of frames.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.typing import Array

__all__ = [
    "features",
    "hz_to_mel",
    "log_mel_spectrogram",
    "mel_filterbank",
    "mel_to_hz",
    "normalize_features",
    "num_frames",
    "read_wav",
    "resample",
]


def _soundfile():
    try:
        import soundfile
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "seqjax.data.audio.read_wav needs the 'soundfile' package: pip install "
            "'seqjax[speech]' (or pip install soundfile)"
        ) from err
    return soundfile


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 log10(1 + f / 700)``.

    Example:
      >>> round(float(hz_to_mel(1000.0)), 1)
      1000.0
    """
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`.

    Example:
      >>> round(float(mel_to_hz(hz_to_mel(440.0))), 6)
      440.0
    """
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int = 80,
    *,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> np.ndarray:
    """Triangular mel filters ``[n_fft // 2 + 1, n_mels]`` (peak 1, HTK scale, no area norm).

    Filter ``m`` rises linearly from mel point ``m`` to ``m + 1`` and falls to ``m + 2``, with
    ``n_mels + 2`` points evenly spaced in mel between ``f_min`` and ``f_max``.

    Args:
      sample_rate: Hz.
      n_fft: FFT size (``n_fft // 2 + 1`` frequency bins from 0 to ``sample_rate / 2``).
      n_mels: number of filters.
      f_min: lowest edge in Hz.
      f_max: highest edge in Hz (default ``sample_rate / 2``).

    Returns:
      float32 matrix; ``power_spectrum [.., F] @ fb`` gives mel energies.

    Raises:
      ValueError: non-positive sizes, or edges outside ``[0, sample_rate / 2]``.

    Example:
      >>> mel_filterbank(16000, 400, 80).shape
      (201, 80)
    """
    if sample_rate <= 0 or n_fft < 2 or n_mels < 1:
        raise ValueError(
            f"expected sample_rate > 0, n_fft >= 2, n_mels >= 1, got {sample_rate}, {n_fft}, "
            f"{n_mels}"
        )
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else f_max
    if not 0 <= f_min < f_max <= nyquist:
        raise ValueError(f"expected 0 <= f_min < f_max <= {nyquist}, got {f_min}, {f_max}")
    freqs = np.linspace(0.0, nyquist, n_fft // 2 + 1)
    pts = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).T.astype(np.float32)


def num_frames(num_samples: int, win_length: int, hop_length: int) -> int:
    """Frames of :func:`log_mel_spectrogram`: ``1 + (N - win) // hop`` (one for short input).

    Example:
      >>> num_frames(16000, 400, 160)
      98
    """
    return 1 + max(0, num_samples - win_length) // hop_length


def log_mel_spectrogram(
    audio: Array,
    sample_rate: int,
    *,
    n_mels: int = 80,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
    n_fft: int | None = None,
    f_min: float = 20.0,
    f_max: float | None = None,
    eps: float = 1e-6,
) -> Array:
    """Log mel energies of Hann-windowed frames: ``log(|rfft|^2 @ mel + eps)``.

    Frames start every ``hop`` samples at sample 0 and hold ``win`` samples (no centring);
    a signal shorter than one window is zero-padded to one frame.

    Args:
      audio: ``[*B, N]`` float signal (any leading batch dimensions).
      sample_rate: Hz (static).
      n_mels: mel bins.
      win_ms, hop_ms: window and hop in milliseconds.
      n_fft: FFT size (default the next power of two >= the window).
      f_min, f_max: filterbank edges in Hz (``f_max`` default Nyquist).
      eps: added before the log.

    Returns:
      ``[*B, T, n_mels]`` float32 with ``T = num_frames(N, win, hop)``.

    Raises:
      ValueError: a rank-0 signal or an FFT shorter than the window.

    Example:
      >>> x = jnp.sin(2 * jnp.pi * 1000 * jnp.arange(16000.0) / 16000)
      >>> log_mel_spectrogram(x, 16000).shape
      (98, 80)
    """
    audio = jnp.asarray(audio, jnp.float32)
    if audio.ndim < 1:
        raise ValueError(f"audio must have shape [*B, N], got shape {audio.shape}")
    win = int(round(sample_rate * win_ms / 1000))
    hop = int(round(sample_rate * hop_ms / 1000))
    n_fft = 1 << (win - 1).bit_length() if n_fft is None else n_fft
    if n_fft < win or hop < 1:
        raise ValueError(f"expected n_fft >= window ({win}) and hop >= 1, got {n_fft}, {hop}")
    n = audio.shape[-1]
    if n < win:
        audio = jnp.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, win - n)])
    frames = num_frames(audio.shape[-1], win, hop)
    idx = np.arange(frames)[:, None] * hop + np.arange(win)[None]
    window = np.hanning(win + 1)[:-1].astype(np.float32)  # periodic Hann
    x = audio[..., idx] * window  # [*B, T, win]
    power = jnp.abs(jnp.fft.rfft(x, n=n_fft, axis=-1)) ** 2
    fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min=f_min, f_max=f_max)
    return jnp.log(power @ fb + eps)


def normalize_features(feats: Array, lengths: Array | None = None, eps: float = 1e-5) -> Array:
    """Per-utterance mean/variance normalisation of each bin over the valid frames.

    Args:
      feats: ``[*B, T, F]``.
      lengths: optional ``[*B]`` valid frames; frames at or after them are set to 0.
      eps: added to the variance.

    Returns:
      ``[*B, T, F]`` with zero mean and unit variance over each utterance's valid frames.

    Example:
      >>> y = normalize_features(jnp.arange(12.0).reshape(6, 2))
      >>> bool(jnp.allclose(y.mean(0), 0, atol=1e-6)), bool(jnp.allclose(y.std(0), 1, atol=1e-3))
      (True, True)
    """
    feats = jnp.asarray(feats, jnp.float32)
    t = feats.shape[-2]
    if lengths is None:
        mask = jnp.ones(feats.shape[:-1] + (1,), feats.dtype)
    else:
        mask = (jnp.arange(t) < jnp.asarray(lengths)[..., None])[..., None].astype(feats.dtype)
    count = jnp.maximum(jnp.sum(mask, axis=-2, keepdims=True), 1.0)
    mean = jnp.sum(feats * mask, axis=-2, keepdims=True) / count
    var = jnp.sum(((feats - mean) * mask) ** 2, axis=-2, keepdims=True) / count
    return (feats - mean) * jax.lax.rsqrt(var + eps) * mask


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``) of ``[N]`` or ``[N, C]``.

    Example:
      >>> resample(np.zeros(8000, np.float32), 8000, 16000).shape
      (16000,)
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} and {target_rate}")
    audio = np.asarray(audio, np.float32)
    if orig_rate == target_rate:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(int(orig_rate), int(target_rate))
    out = resample_poly(audio, target_rate // g, orig_rate // g, axis=0)
    return out.astype(np.float32)


def read_wav(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """A WAV file as a mono float32 signal in ``[-1, 1]`` at ``sample_rate``.

    Channels are averaged; other rates are resampled with :func:`resample`.

    Args:
      path: a WAV file (any channel count, rate and PCM/float sample format).
      sample_rate: the rate returned.

    Returns:
      ``[N]`` float32.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not a readable WAV file, or holds no samples.
    """
    sf = _soundfile()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected a WAV file, got {path!r}, which does not exist")
    try:
        info = sf.info(path)
        if info.format != "WAV" and info.format != "WAVEX":
            raise ValueError(f"format {info.format}")
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, sf.LibsndfileError) as e:  # type: ignore[attr-defined]
        raise ValueError(f"expected a WAV file, got {path!r} that is not one ({e})") from None
    if data.shape[0] == 0:
        raise ValueError(f"expected a WAV file with samples, got {path!r} with none")
    return resample(data.mean(axis=1), int(rate), sample_rate)


@functools.partial(jax.jit, static_argnames=("sample_rate", "n_fft", "n_mels"))
def _log_mel_frames(frames, *, sample_rate, n_fft, n_mels):
    window = np.hanning(frames.shape[-1] + 1)[:-1].astype(np.float32)  # periodic Hann
    power = jnp.abs(jnp.fft.rfft(frames * window, n=n_fft)) ** 2
    return jnp.log(power @ mel_filterbank(sample_rate, n_fft, n_mels, f_min=20.0) + 1e-6)


def features(
    audio: np.ndarray, sample_rate: int = 16000, n_mels: int = 80, chunk: int = 256
) -> np.ndarray:
    """Normalised log-mel features ``[T, n_mels]`` of a host signal ``[N]``.

    The same as :func:`normalize_features` of :func:`log_mel_spectrogram` (defaults: 25 ms
    windows, 10 ms hop), computed on fixed-size blocks of ``chunk`` frames so that signals of
    any length share one compilation.

    Example:
      >>> features(np.zeros(16000, np.float32)).shape
      (98, 80)
    """
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must have shape [N], got shape {audio.shape}")
    win, hop = int(round(sample_rate * 0.025)), int(round(sample_rate * 0.010))
    n_fft = 1 << (win - 1).bit_length()
    if audio.shape[0] < win:
        audio = np.pad(audio, (0, win - audio.shape[0]))
    frames = num_frames(audio.shape[0], win, hop)
    blocks = -(-frames // chunk)
    idx = np.arange(blocks * chunk)[:, None] * hop + np.arange(win)[None]
    padded = np.pad(audio, (0, max(0, int(idx.max()) + 1 - audio.shape[0])))
    framed = padded[idx].reshape(blocks, chunk, win)
    out = np.concatenate(
        [
            np.asarray(_log_mel_frames(b, sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels))
            for b in framed
        ]
    )[:frames]
    mean, var = out.mean(0), out.var(0)
    return ((out - mean) / np.sqrt(var + 1e-5)).astype(np.float32)
