"""Spoken digit strings synthesised with ``espeak-ng``, cached as log-mel features, batched.

Voices are ``accent+variant`` pairs (``espeak-ng -v en-us+m3``). The test split's accents
*and* variants never occur in training, so its speakers are unseen (speaker-independent).
Each utterance is 1 to ``max_digits`` uniformly random digits read as words ("four zero
one"), with random speaking rate (120-220 words/min), pitch (20-80), word gap (0-60 ms),
leading and trailing silence and white noise at a random SNR. Features are 80-bin log-mel
filterbanks at 16 kHz (:mod:`seqjax.data.audio`), normalised per utterance.

Synthesis is slow enough (tens of ms per utterance) that a set is cached after the first
run: one ``.npz`` per set under the user cache directory (``$SEQJAX_CACHE_DIR``, else
``$XDG_CACHE_HOME/seqjax``, else ``~/.cache/seqjax``), named by a hash of everything that
defines the set, never in the repository.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import NamedTuple

import numpy as np

from experiments.scaffold import UsageError
from seqjax.data import audio

SAMPLE_RATE = 16000
DIGITS = "0123456789"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: CTC classes: 0 is the blank, digit d is class d + 1.
NUM_CLASSES = 11
CACHE_VERSION = 1

TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
TEST_ACCENTS = ("en-gb-scotland", "en-029")
TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt", "klatt2", "klatt3",
    "adam", "anika", "belinda", "benjamin", "caleb", "david", "ed", "edward", "grandma", "iven",
    "john", "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert", "steph",
    "travis", "victor", "zac", "Alex", "Andy", "Annie", "Lee", "Tweaky", "Denis",
)  # fmt: skip
TEST_VARIANTS = (
    "m7", "m8", "f5", "klatt4", "klatt5", "boris", "antonio", "aunty", "gustave", "shelby",
    "Gene", "Hugo", "Jacky", "marcelo", "miguel", "pablo",
)  # fmt: skip
SPLITS = ("train", "test")


def voices(split: str) -> list[str]:
    """The ``espeak-ng -v`` arguments of a split (``"train"`` or ``"test"``), accent+variant.

    Raises:
      UsageError: an unknown split.
    """
    if split == "train":
        accents, variants = TRAIN_ACCENTS, TRAIN_VARIANTS
    elif split == "test":
        accents, variants = TEST_ACCENTS, TEST_VARIANTS
    else:
        raise UsageError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
    return [f"{a}+{v}" for a in accents for v in variants]


def check_espeak() -> str:
    """The path of ``espeak-ng``.

    Raises:
      UsageError: it is not installed (names the Debian package).
    """
    path = shutil.which("espeak-ng")
    if path is None:
        raise UsageError(
            "espeak-ng: expected the espeak-ng program to synthesise speech, got none on PATH "
            "(install the Debian package: apt-get install espeak-ng)"
        )
    return path


def text_of(digits: str) -> str:
    """Digit words of a digit string: ``"401"`` -> ``"four zero one"``."""
    return " ".join(WORDS[int(d)] for d in digits)


def synthesize(
    digits: str, voice: str, *, speed: int = 175, pitch: int = 50, gap: int = 0
) -> np.ndarray:
    """``espeak-ng`` reading ``digits`` as words, as a float32 signal at 16 kHz.

    Raises:
      UsageError: espeak-ng is missing.
      RuntimeError: espeak-ng failed.
    """
    exe = check_espeak()
    with tempfile.TemporaryDirectory(prefix="seqjax_speech_") as tmp:
        path = os.path.join(tmp, "u.wav")
        cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap), "-w", path]
        proc = subprocess.run([*cmd, text_of(digits)], capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not os.path.exists(path):
            raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.strip()}")
        return audio.read_wav(path, SAMPLE_RATE)


class Utterance(NamedTuple):
    """What makes one utterance: transcript, voice and jitter."""

    digits: str
    voice: str
    speed: int
    pitch: int
    gap: int
    lead_s: float
    tail_s: float
    snr_db: float


def plan(split: str, n: int, seed: int, max_digits: int, snr_db: tuple[float, float]):
    """``n`` random :class:`Utterance` descriptions of a split (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), n])
    vs = voices(split)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, max_digits + 1))
        out.append(
            Utterance(
                digits="".join(DIGITS[int(d)] for d in rng.integers(0, 10, k)),
                voice=vs[int(rng.integers(len(vs)))],
                speed=int(rng.integers(120, 221)),
                pitch=int(rng.integers(20, 81)),
                gap=int(rng.integers(0, 7)),
                lead_s=float(rng.uniform(0.0, 0.3)),
                tail_s=float(rng.uniform(0.0, 0.3)),
                snr_db=float(rng.uniform(*snr_db)),
            )
        )
    return out


def render(u: Utterance, seed: int, index: int) -> np.ndarray:
    """The noisy signal of an :class:`Utterance` (noise seeded by ``(seed, index)``)."""
    x = synthesize(u.digits, u.voice, speed=u.speed, pitch=u.pitch, gap=u.gap)
    x = np.concatenate(
        [np.zeros(int(u.lead_s * SAMPLE_RATE)), x, np.zeros(int(u.tail_s * SAMPLE_RATE))]
    )
    rng = np.random.default_rng([seed, index, 7])
    power = float(np.mean(x**2)) + 1e-12
    noise = rng.standard_normal(x.shape) * np.sqrt(power / 10 ** (u.snr_db / 10))
    return (x + noise).astype(np.float32)


class SpeechSet(NamedTuple):
    """Features and transcripts of one set.

    Attributes:
      feats: ``[sum T, n_mels]`` float16, the utterances' frames concatenated.
      offsets: ``[N + 1]`` int64, utterance ``i`` is ``feats[offsets[i]:offsets[i + 1]]``.
      digits: transcripts (digit strings).
      voices: voice of each utterance.
    """

    feats: np.ndarray
    offsets: np.ndarray
    digits: list[str]
    voices: list[str]

    def __len__(self) -> int:
        return len(self.digits)

    def utterance(self, i: int) -> np.ndarray:
        """Features ``[T, n_mels]`` float32 of utterance ``i``."""
        return self.feats[self.offsets[i] : self.offsets[i + 1]].astype(np.float32)


def cache_dir() -> str:
    """The user cache directory of seqjax (``$SEQJAX_CACHE_DIR``, XDG, ``~/.cache``)."""
    if os.environ.get("SEQJAX_CACHE_DIR"):
        return os.environ["SEQJAX_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "seqjax")


def load_set(
    name: str,
    split: str,
    n: int,
    *,
    seed: int,
    max_digits: int,
    snr_db: tuple[float, float],
    n_mels: int,
    verbose: bool = False,
    workers: int = 2,
) -> SpeechSet:
    """A synthesised set from the cache, synthesising and caching it on the first call.

    Args:
      name: ``train``, ``val`` or ``test`` (seeds differ between names).
      split: whose voices speak (``train`` or ``test``).
      n: utterances.
      seed, max_digits, snr_db, n_mels: what defines the set (part of the cache key).
      verbose: print progress.
      workers: concurrent espeak-ng processes.

    Raises:
      UsageError: espeak-ng is missing (only when the set is not cached).
    """
    key = dict(
        v=CACHE_VERSION,
        name=name,
        split=split,
        n=n,
        seed=seed,
        max_digits=max_digits,
        snr_db=list(snr_db),
        n_mels=n_mels,
        voices=voices(split),
    )
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), "speech", f"{name}-{n}-{digest}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return SpeechSet(
                z["feats"], z["offsets"], list(z["digits"]), [str(v) for v in z["voices"]]
            )
    check_espeak()
    set_seed = seed * 1000 + ("train", "val", "test").index(name)
    utts = plan(split, n, set_seed, max_digits, snr_db)
    if verbose:
        print(f"synthesising {n} {name} utterances with espeak-ng (cached in {path})", flush=True)

    def one(i: int) -> np.ndarray:
        x = render(utts[i], set_seed, i)
        return audio.features(x, SAMPLE_RATE, n_mels).astype(np.float16)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        feats = list(pool.map(one, range(n)))
    offsets = np.concatenate([[0], np.cumsum([f.shape[0] for f in feats])]).astype(np.int64)
    out = SpeechSet(
        np.concatenate(feats), offsets, [u.digits for u in utts], [u.voice for u in utts]
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(
        tmp,
        feats=out.feats,
        offsets=out.offsets,
        digits=np.array(out.digits),
        voices=np.array(out.voices),
    )
    os.replace(tmp, path)  # atomic: a concurrent or interrupted run never sees half a file
    return out


def stack_frames(feats: np.ndarray, k: int) -> np.ndarray:
    """``[T, F]`` -> ``[ceil(T / k), k * F]``: ``k`` consecutive frames per step (zero-padded)."""
    t, f = feats.shape
    steps = -(-t // k)
    padded = np.zeros((steps * k, f), np.float32)
    padded[:t] = feats
    return padded.reshape(steps, k * f)


def pad_batch(
    feats: list[np.ndarray], subsample: int, *, bounds=None, multiple: int = 16, rows=None
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked, padded inputs ``[B, T, k F]`` and lengths ``[B]`` of feature matrices.

    ``T`` is the smallest of ``bounds`` that fits (few distinct shapes, few compilations), or
    without ``bounds`` the longest length rounded up to a multiple of ``multiple``; ``rows``
    pads the batch with empty rows (length 0).
    """
    stacked = [stack_frames(f, subsample) for f in feats]
    lengths = np.array([s.shape[0] for s in stacked], np.int32)
    longest = int(lengths.max())
    t = -(-longest // multiple) * multiple
    if bounds is not None:
        t = min([b for b in bounds if b >= longest], default=t)
    b = len(stacked) if rows is None else rows
    out = np.zeros((b, t, stacked[0].shape[1]), np.float32)
    for i, s in enumerate(stacked):
        out[i, : s.shape[0]] = s
    return out, np.concatenate([lengths, np.zeros(b - len(stacked), np.int32)])


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def length_bounds(max_frames: int, subsample: int, buckets: int) -> list[int]:
    """``buckets`` padded lengths (time steps, multiples of 8), the largest fitting
    ``max_frames`` frames."""
    longest = _ceil_div(max_frames, subsample)
    return sorted(
        {_ceil_div(_ceil_div(longest * k, buckets), 8) * 8 for k in range(1, buckets + 1)}
    )


def max_frames(*sets: SpeechSet) -> int:
    """Frames of the longest utterance in ``sets``."""
    return max(int(np.diff(d.offsets).max()) for d in sets)


def encode(digits: list[str], max_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """CTC labels ``[B, max_digits]`` (digit d -> class d + 1) and label lengths ``[B]``."""
    labels = np.zeros((len(digits), max_digits), np.int32)
    for i, s in enumerate(digits):
        labels[i, : len(s)] = [int(c) + 1 for c in s]
    return labels, np.array([len(s) for s in digits], np.int32)


def make_batch(
    ds: SpeechSet, idx, subsample: int, max_digits: int, rows=None, bounds=None
) -> dict[str, np.ndarray]:
    """The batch of utterances ``idx``: inputs, lengths, labels, label lengths, weights."""
    idx = [int(i) for i in idx]
    x, lengths = pad_batch([ds.utterance(i) for i in idx], subsample, bounds=bounds, rows=rows)
    b = x.shape[0]
    labels, label_lengths = encode([ds.digits[i] for i in idx], max_digits)
    pad = b - len(idx)
    return {
        "inputs": x,
        "lengths": lengths,
        "labels": np.pad(labels, ((0, pad), (0, 0))),
        "label_lengths": np.pad(label_lengths, (0, pad)),
        "weights": np.concatenate([np.ones(len(idx), np.float32), np.zeros(pad, np.float32)]),
    }


def eval_batches(
    ds: SpeechSet, batch_size: int, subsample: int, max_digits: int, bounds=None
) -> list[dict]:
    """The whole set in batches of ``batch_size`` rows (the last padded with weight-0 rows)."""
    return [
        make_batch(
            ds, range(s, min(s + batch_size, len(ds))), subsample, max_digits, batch_size, bounds
        )
        for s in range(0, len(ds), batch_size)
    ]
