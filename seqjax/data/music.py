"""Bach chorales from ``music21``'s corpus as 88-key piano rolls, cached on disk.

(Over 450 lines: reading, caching, splitting, describing and writing one data source belong
together, and most of the length is docstrings with examples.)

The JSB Chorales benchmark (Boulanger-Lewandowski et al. 2012) holds 382 four-part chorales as
piano rolls sampled every quarter note, split 229/76/77. The same music ships inside the
``music21`` package (its corpus), which is what this module reads: no download at run time.

- :func:`corpus_bwvs`: the chorales in the corpus, one entry per BWV identifier (the corpus's
  iterator lists some files twice; those are deduplicated here).
- :func:`read_chorale`: one chorale parsed with ``music21`` into a :class:`Chorale` (a boolean
  piano roll ``[T, 88]``, key 0 = A0 = MIDI 21, plus the key music21 analyses), or None when
  it is not a four-part (Soprano/Alto/Tenor/Bass) chorale.
- :func:`load_chorales`: many chorales through a disk cache (``$SEQJAX_CACHE``, else
  ``$XDG_CACHE_HOME/seqjax``, else ``~/.cache/seqjax``; never inside the repository), with
  optional transposition to C major / C minor and removal of exact duplicate rolls.
- :func:`split`: train/valid/test by chorale in JSB's proportions with a fixed seed.
- :func:`statistics`, :func:`pad_rolls`, :func:`write_midi` (via ``mido``).

Quantisation: frame ``k`` of a roll at step ``q`` quarter notes holds the keys sounding at
time ``k * q`` (a note with onset ``o`` and duration ``d`` is on in frame ``k`` when
``o <= k * q < o + d``), which is how JSB samples the scores; notes shorter than the step
between two sample points (passing eighths at ``q = 1``) do not appear. Repeats are not
expanded.

Requires the optional ``music21`` and ``mido`` packages (``pip install seqjax[music]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "JSB_SPLIT",
    "KEYS",
    "LOWEST_MIDI",
    "Chorale",
    "cache_dir",
    "corpus_bwvs",
    "load_chorales",
    "pad_rolls",
    "read_chorale",
    "roll_from_score",
    "split",
    "statistics",
    "to_common_key",
    "transpose_roll",
    "write_midi",
]

#: Piano keys in a roll (A0 .. C8).
KEYS = 88
#: MIDI number of key 0 (A0).
LOWEST_MIDI = 21
#: JSB Chorales' train/valid/test chorale counts (of 382).
JSB_SPLIT = (229, 76, 77)
#: Bumped when the cached format or the reading changes.
_CACHE_VERSION = 1
_PARTS = ("soprano", "alto", "tenor", "bass")
_PITCH_CLASSES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


@dataclasses.dataclass(frozen=True, eq=False)
class Chorale:
    """One chorale as a piano roll.

    Attributes:
      bwv: the BWV identifier as the corpus names it (e.g. ``"269"``, ``"153.1"``).
      roll: bool ``[T, 88]``; ``roll[t, k]`` is True when MIDI pitch ``21 + k`` sounds in
        frame ``t``.
      tonic: pitch class ``0..11`` (C = 0) of the key music21's analysis finds.
      mode: ``"major"`` or ``"minor"``.
      step: frame length in quarter notes.
    """

    bwv: str
    roll: np.ndarray
    tonic: int
    mode: str
    step: float = 1.0

    @property
    def frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.roll.shape[0])


def _music21() -> Any:
    try:
        import music21
    except ImportError:
        raise ImportError(
            "seqjax.data.music needs the music21 package: pip install 'seqjax[music]' "
            "(or pip install music21 mido)"
        ) from None
    return music21


def cache_dir() -> Path:
    """Where parsed chorales are cached: ``$SEQJAX_CACHE``, ``$XDG_CACHE_HOME/seqjax`` or
    ``~/.cache/seqjax`` (with ``/music`` appended)."""
    root = os.environ.get("SEQJAX_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "seqjax")
    return Path(root) / "music"


def _bwv_of(path: str) -> str:
    m = re.search(r"bwv([0-9][0-9a-z.\-]*)", os.path.basename(str(path)), re.IGNORECASE)
    if m is None:
        raise ValueError(f"expected a chorale file named bwv<number>, got {path!r}")
    name = m.group(1)
    return re.sub(r"\.(mxl|xml|musicxml|krn|mid)$", "", name, flags=re.IGNORECASE)


def corpus_bwvs() -> list[str]:
    """BWV identifiers of the chorales in music21's corpus, deduplicated, in corpus order.

    Returns:
      e.g. ``["269", "347", "153.1", ...]`` (350 identifiers with music21 10).

    Raises:
      ImportError: ``music21`` is not installed.
    """
    m21 = _music21()
    seen: dict[str, None] = {}
    for name in m21.corpus.chorales.Iterator(returnType="filename"):
        seen.setdefault(_bwv_of(name), None)
    return list(seen)


def _check_step(step: float) -> float:
    step = float(step)
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step: expected a frame length in quarter notes > 0, got {step!r}")
    return step


def read_chorale(bwv: str, step: float = 1.0) -> Chorale | None:
    """Parses chorale ``bwv`` from music21's corpus into a piano roll (no cache).

    Args:
      bwv: a BWV identifier from :func:`corpus_bwvs`.
      step: frame length in quarter notes (1.0 as JSB; 0.5 for eighth notes).

    Returns:
      The :class:`Chorale`, or None when the score lacks one of the Soprano, Alto, Tenor and
      Bass parts or holds no notes.

    Raises:
      ValueError: ``bwv`` is not in the corpus, or ``step`` is not positive.
      ImportError: ``music21`` is not installed.
    """
    step = _check_step(step)
    m21 = _music21()
    try:
        score = m21.corpus.parse(f"bach/bwv{bwv}")
    except Exception as e:  # music21 raises its own CorpusException for unknown names
        raise ValueError(f"bwv: expected a chorale of music21's corpus, got {bwv!r} ({e})") from e
    roll = roll_from_score(score, step)
    if roll is None:
        return None
    key = score.analyze("key")
    tonic = _PITCH_CLASSES[key.tonic.step] + int(key.tonic.alter or 0)
    return Chorale(str(bwv), roll, tonic % 12, str(key.mode), step)


def roll_from_score(score: Any, step: float = 1.0) -> np.ndarray | None:
    """The piano roll of a four-part ``music21`` score, sampled every ``step`` quarter notes.

    Frame ``k`` holds the keys sounding at time ``k * step``: a note with onset ``o`` and
    duration ``d`` (in quarter notes) is on in the frames with ``o <= k * step < o + d``.

    Args:
      score: a ``music21.stream.Score`` with parts named Soprano, Alto, Tenor and Bass
        (case-insensitive prefixes; other parts are ignored).
      step: frame length in quarter notes.

    Returns:
      bool ``[ceil(duration / step), 88]``, or None when a voice is missing or no key sounds.

    Raises:
      ValueError: ``step`` is not positive.
    """
    step = _check_step(step)
    parts = {}
    for part in score.parts:
        name = (part.partName or "").strip().lower()
        for want in _PARTS:
            if name.startswith(want) and want not in parts:
                parts[want] = part
    if len(parts) < len(_PARTS):
        return None
    end = float(score.highestTime)
    frames = int(math.ceil(end / step - 1e-9))
    if frames < 1:
        return None
    roll = np.zeros((frames, KEYS), bool)
    times = np.arange(frames) * step
    for part in parts.values():
        for n in part.flatten().notes:
            onset = float(n.offset)
            dur = float(n.duration.quarterLength)
            on = (times >= onset - 1e-9) & (times < onset + dur - 1e-9)
            for p in n.pitches:
                k = int(p.midi) - LOWEST_MIDI
                if 0 <= k < KEYS:
                    roll[on, k] = True
    if not roll.any():
        return None
    return roll


def _cache_path(root: Path, bwv: str, step: float) -> Path:
    return root / f"v{_CACHE_VERSION}" / f"step{step:g}" / f"bwv{bwv}.npz"


def _load_cached(path: Path, bwv: str, step: float) -> tuple[bool, Chorale | None]:
    try:
        with np.load(path) as z:
            if not bool(z["ok"]):
                return True, None
            roll = np.zeros((int(z["frames"]), KEYS), bool)
            roll[z["t"], z["k"]] = True
            return True, Chorale(bwv, roll, int(z["tonic"]), str(z["mode"]), step)
    except (OSError, KeyError, ValueError):
        return False, None  # missing or damaged: parse again


def _save_cached(path: Path, chorale: Chorale | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    if chorale is None:
        np.savez(tmp, ok=False)
    else:
        t, k = np.nonzero(chorale.roll)
        np.savez(
            tmp,
            ok=True,
            frames=chorale.frames,
            t=t.astype(np.int32),
            k=k.astype(np.int16),
            tonic=chorale.tonic,
            mode=chorale.mode,
        )
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def transpose_roll(roll: np.ndarray, shift: int) -> np.ndarray:
    """``roll`` moved ``shift`` semitones (up when positive).

    Raises:
      ValueError: a sounding key would leave the 88-key range.

    Example:
      >>> r = np.zeros((1, KEYS), bool); r[0, 39] = True   # middle C
      >>> int(np.nonzero(transpose_roll(r, 2))[1][0])
      41
    """
    roll = np.asarray(roll)
    if shift == 0:
        return roll.copy()
    keys = np.nonzero(roll.any(axis=0))[0]
    if keys.size and (keys.min() + shift < 0 or keys.max() + shift >= roll.shape[-1]):
        raise ValueError(
            f"transposing by {shift} moves keys {keys.min()}..{keys.max()} off the roll"
        )
    out = np.zeros_like(roll)
    if shift > 0:
        out[:, shift:] = roll[:, :-shift]
    else:
        out[:, :shift] = roll[:, -shift:]
    return out


def to_common_key(chorale: Chorale) -> Chorale:
    """The chorale transposed to C major (major keys) or C minor (minor keys), by the
    smallest shift (-6..+5 semitones)."""
    shift = (-chorale.tonic + 6) % 12 - 6
    return dataclasses.replace(
        chorale, roll=transpose_roll(chorale.roll, shift), tonic=0, mode=chorale.mode
    )


def load_chorales(
    bwvs: Iterable[str] | None = None,
    *,
    step: float = 1.0,
    transpose: bool = False,
    dedup: bool = True,
    cache: str | os.PathLike | None = None,
) -> list[Chorale]:
    """Four-part chorales as piano rolls, parsed once and then read from the disk cache.

    Args:
      bwvs: BWV identifiers (default: all of :func:`corpus_bwvs`); repeated ones count once.
      step: frame length in quarter notes.
      transpose: move every chorale to C major / C minor (:func:`to_common_key`).
      dedup: drop a chorale whose piano roll (in its original key) equals an earlier one's
        (the corpus holds some harmonisations twice under different numbers).
      cache: cache directory (default :func:`cache_dir`).

    Returns:
      The chorales that are four-part scores, in the order of ``bwvs``.

    Raises:
      ValueError: an identifier not in the corpus, or a bad ``step``.
      ImportError: ``music21`` is needed to parse a chorale not yet cached.
    """
    step = _check_step(step)
    root = Path(cache) if cache is not None else cache_dir()
    names = list(dict.fromkeys(str(b) for b in (corpus_bwvs() if bwvs is None else bwvs)))
    out, seen = [], set()
    for bwv in names:
        path = _cache_path(root, bwv, step)
        hit, chorale = _load_cached(path, bwv, step)
        if not hit:
            chorale = read_chorale(bwv, step)
            _save_cached(path, chorale)
        if chorale is None:
            continue
        if dedup:
            digest = hashlib.sha1(np.packbits(chorale.roll).tobytes()).hexdigest()
            digest += f":{chorale.frames}"
            if digest in seen:
                continue
            seen.add(digest)
        out.append(to_common_key(chorale) if transpose else chorale)
    return out


def split(
    chorales: Sequence[Chorale], seed: int = 0, proportions: Sequence[int] = JSB_SPLIT
) -> dict[str, list[Chorale]]:
    """Train/valid/test by chorale, in ``proportions`` (JSB's 229/76/77), with a fixed seed.

    The chorales are sorted by BWV identifier before the seeded permutation, so the split
    depends only on which chorales there are and on ``seed``.

    Returns:
      ``{"train": [...], "valid": [...], "test": [...]}``; sizes are the proportions scaled
      to ``len(chorales)``, each at least 1 when there are at least 3 chorales.

    Raises:
      ValueError: fewer than 3 chorales, or proportions not three positive numbers.

    Example:
      >>> cs = [Chorale(str(i), np.ones((2, KEYS), bool), 0, "major") for i in range(382)]
      >>> [len(v) for v in split(cs).values()]
      [229, 76, 77]
    """
    if len(proportions) != 3 or min(proportions) <= 0:
        raise ValueError(f"proportions: expected three positive numbers, got {proportions!r}")
    n = len(chorales)
    if n < 3:
        raise ValueError(f"chorales: expected at least 3 to split three ways, got {n}")
    total = float(sum(proportions))
    n_valid = max(1, round(n * proportions[1] / total))
    n_test = max(1, round(n * proportions[2] / total))
    n_train = n - n_valid - n_test  # >= 1 for n >= 3 with JSB's proportions
    if n_train < 1:
        raise ValueError(f"proportions: expected a training share, got {proportions!r}")
    ordered = sorted(chorales, key=lambda c: c.bwv)
    perm = np.random.default_rng(seed).permutation(n)
    picked = [ordered[i] for i in perm]
    return {
        "train": picked[:n_train],
        "valid": picked[n_train : n_train + n_valid],
        "test": picked[n_train + n_valid :],
    }


def statistics(chorales: Sequence[Chorale]) -> dict[str, Any]:
    """Counts and note density of a set of chorales (what the README compares with JSB).

    Returns:
      ``chorales``, ``frames``, ``frames_min/median/max`` per chorale, ``notes_per_frame``
      (mean keys on per frame), ``density`` (that over 88), ``empty_frames`` (fraction),
      ``max_polyphony``, ``lowest_midi``, ``highest_midi``, ``major`` (chorales in a
      major key).

    Example:
      >>> r = np.zeros((4, KEYS), bool); r[:, [39, 43, 46]] = True
      >>> statistics([Chorale("1", r, 0, "major")])["notes_per_frame"]
      3.0
    """
    if not chorales:
        raise ValueError("chorales: expected at least one, got none")
    lengths = np.array([c.frames for c in chorales])
    rolls = np.concatenate([c.roll for c in chorales])
    per_frame = rolls.sum(axis=1)
    keys = np.nonzero(rolls.any(axis=0))[0]
    return {
        "chorales": len(chorales),
        "frames": int(lengths.sum()),
        "frames_min": int(lengths.min()),
        "frames_median": float(np.median(lengths)),
        "frames_max": int(lengths.max()),
        "notes_per_frame": float(per_frame.mean()),
        "density": float(per_frame.mean() / KEYS),
        "empty_frames": float(np.mean(per_frame == 0)),
        "max_polyphony": int(per_frame.max()),
        "lowest_midi": int(keys.min()) + LOWEST_MIDI if keys.size else None,
        "highest_midi": int(keys.max()) + LOWEST_MIDI if keys.size else None,
        "major": int(sum(c.mode == "major" for c in chorales)),
    }


def pad_rolls(
    rolls: Sequence[np.ndarray], length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stacks rolls ``[T_i, 88]`` into float32 ``[B, L, 88]`` with zeros after each end.

    Args:
      rolls: the piano rolls.
      length: ``L`` (default the longest ``T_i``); longer rolls are cut to it.

    Returns:
      ``(padded [B, L, 88], lengths [B] int32)``.

    Example:
      >>> x, n = pad_rolls([np.ones((2, KEYS), bool), np.ones((3, KEYS), bool)])
      >>> x.shape, n.tolist()
      ((2, 3, 88), [2, 3])
    """
    if not len(rolls):
        raise ValueError("rolls: expected at least one, got none")
    L = max(len(r) for r in rolls) if length is None else int(length)
    out = np.zeros((len(rolls), L, rolls[0].shape[-1]), np.float32)
    lengths = np.zeros(len(rolls), np.int32)
    for i, r in enumerate(rolls):
        n = min(len(r), L)
        out[i, :n] = r[:n]
        lengths[i] = n
    return out, lengths


def write_midi(
    roll: np.ndarray,
    path: str | os.PathLike,
    *,
    step: float = 1.0,
    bpm: float = 80.0,
    velocity: int = 80,
    program: int = 19,
) -> int:
    """Writes a piano roll as a one-track MIDI file with ``mido``; a held key is one note.

    Args:
      roll: bool ``[T, 88]``.
      path: the ``.mid`` file.
      step: frame length in quarter notes.
      bpm: tempo in quarter notes per minute.
      velocity: note-on velocity (1..127).
      program: General MIDI program (0-based; 19 = church organ).

    Returns:
      The number of notes written.

    Raises:
      ValueError: ``roll`` is not ``[T, 88]``.
      ImportError: ``mido`` is not installed.
    """
    try:
        import mido
    except ImportError:
        raise ImportError("write_midi needs mido: pip install 'seqjax[music]'") from None
    roll = np.asarray(roll).astype(bool)
    if roll.ndim != 2 or roll.shape[1] != KEYS:
        raise ValueError(f"roll: expected shape [T, {KEYS}], got {roll.shape}")
    tpq = 480
    ticks = int(round(step * tpq))
    mid = mido.MidiFile(ticks_per_beat=tpq)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.Message("program_change", program=program, channel=0, time=0))
    events = []  # (tick, order, message-type, note): note-offs before note-ons at a tick
    padded = np.concatenate([np.zeros((1, KEYS), bool), roll, np.zeros((1, KEYS), bool)])
    change = padded[1:].astype(np.int8) - padded[:-1].astype(np.int8)
    for t, k in zip(*np.nonzero(change), strict=True):
        on = change[t, k] > 0
        events.append((int(t) * ticks, 1 if on else 0, "note_on" if on else "note_off", int(k)))
    events.sort()
    now, notes = 0, 0
    for tick, _, kind, k in events:
        track.append(
            mido.Message(
                kind,
                note=k + LOWEST_MIDI,
                velocity=velocity if kind == "note_on" else 0,
                time=tick - now,
            )
        )
        now = tick
        notes += kind == "note_on"
    mid.save(os.fspath(path))
    return notes
