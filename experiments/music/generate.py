"""Sampling chorales from a trained run: MIDI (``mido``), a piano-roll PNG, and WAV when
``fluidsynth`` and a General MIDI soundfont are installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.music.input_pipeline import load_dataset
from experiments.music.model import sample
from experiments.music.train import Model
from experiments.scaffold import UsageError, pyplot
from seqjax.data import music

#: Frames of a test chorale used as the primer.
PRIMER_FRAMES = 8
#: Where Debian's ``fluid-soundfont-gm`` and similar packages put a GM soundfont.
SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
)


def check_out_path(path: str) -> Path:
    """Checks that ``path`` is a writable ``.mid``/``.midi`` file path; creates nothing.

    Raises:
      UsageError: another suffix, an existing directory, or a missing or read-only folder.
    """
    p = Path(path).absolute()
    if p.suffix.lower() not in (".mid", ".midi"):
        raise UsageError(f"--out: expected a .mid file path, got {str(path)!r}")
    if p.is_dir():
        raise UsageError(f"--out: expected a file path, got the directory {str(p)!r}")
    if not p.parent.is_dir():
        raise UsageError(f"--out: expected an existing folder, got {str(p.parent)!r} (missing)")
    if not os.access(p.parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"--out: expected a writable path, got {str(p)!r} (read-only)")
    return p


def primer_roll(model: Model, bwv: str | None) -> np.ndarray:
    """The first :data:`PRIMER_FRAMES` frames of test chorale ``bwv`` (``[P, 88]``; P = 0
    without a primer).

    Raises:
      UsageError: ``bwv`` is not a chorale of the run's test split.
    """
    if bwv is None:
        return np.zeros((0, music.KEYS), np.float32)
    bwv = bwv.lower().removeprefix("bwv").strip()
    test = model.manifest["test"]
    if bwv not in test:
        raise UsageError(
            f"--primer: expected the BWV number of a test chorale of this run (e.g. "
            f"{', '.join(test[:4])}), got {bwv!r}"
        )
    data = load_dataset(model.config)
    chorale = next(c for c in data.test if c.bwv == bwv)
    return chorale.roll[:PRIMER_FRAMES].astype(np.float32)


def generate_roll(
    model: Model, frames: int, *, temperature: float = 1.0, seed: int = 0, primer=None
) -> np.ndarray:
    """A sampled chorale: the primer ``[P, 88]`` followed by ``frames`` new frames (bool)."""
    primer = np.zeros((0, music.KEYS), np.float32) if primer is None else primer
    new = jax.jit(
        lambda p, k: sample(model.cell, model.params, p, frames, k, temperature),
    )(jnp.asarray(primer[None]), jax.random.key(seed))
    return np.concatenate([primer > 0, np.asarray(new[0]) > 0])


def plot_roll(ax: Any, roll: np.ndarray, title: str, *, primer: int = 0) -> None:
    """Draws a piano roll (time across, MIDI pitch up) on a matplotlib axis."""
    keys = np.nonzero(roll.any(axis=0))[0]
    lo, hi = (keys.min() - 2, keys.max() + 3) if keys.size else (30, 60)
    ax.imshow(
        roll[:, lo:hi].T,
        origin="lower",
        aspect="auto",
        cmap="Greys",
        interpolation="nearest",
        extent=(0, len(roll), lo + music.LOWEST_MIDI, hi + music.LOWEST_MIDI),
    )
    if primer:
        ax.axvline(primer, color="tab:red", lw=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("frame (quarter notes)")
    ax.set_ylabel("MIDI pitch")


def render_wav(midi: Path, wav: Path) -> str | None:
    """Renders ``midi`` to ``wav`` with ``fluidsynth`` and a GM soundfont; returns the WAV
    path, or None (with the reason printed) when either is missing."""
    exe = shutil.which("fluidsynth")
    font = next((f for f in SOUNDFONTS if os.path.exists(f)), None)
    if exe is None or font is None:
        return None
    cmd = [exe, "-ni", "-q", "-F", str(wav), "-r", "22050", font, str(midi)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    return str(wav) if done.returncode == 0 and wav.exists() else None


def generate(
    model: Model,
    out: str,
    *,
    frames: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    primer: str | None = None,
) -> dict[str, Any]:
    """Samples a chorale and writes ``out`` (MIDI), ``out`` with ``.png`` (piano roll) and,
    when possible, ``.wav``.

    Args:
      model: from :func:`~experiments.music.train.restore`.
      out: the ``.mid`` path (its folder must exist).
      frames: new frames to sample.
      temperature: divides the logits; 0 takes each key's likelier value.
      seed: sampling seed.
      primer: BWV number of a test chorale whose first frames start the piece.

    Returns:
      ``{"midi", "png", "wav", "frames", "notes", "frames_with_notes"}``.

    Raises:
      UsageError: a bad ``out`` path or an unknown primer (nothing is written).
    """
    path = check_out_path(out)
    prime = primer_roll(model, primer)
    roll = generate_roll(model, frames, temperature=temperature, seed=seed, primer=prime)
    notes = music.write_midi(roll, path, step=model.config.step)
    png = path.with_suffix(".png")
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(8, 3))
        title = f"{model.config.cell} {model.config.output}, T={temperature}, seed {seed}"
        plot_roll(ax, roll, title + (f", primer BWV {primer}" if primer else ""), primer=len(prime))
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        plt.close(fig)
    wav = render_wav(path, path.with_suffix(".wav"))
    return {
        "midi": str(path),
        "png": str(png) if plt is not None else None,
        "wav": wav,
        "frames": int(len(roll)),
        "primer_frames": int(len(prime)),
        "notes": int(notes),
        "frames_with_notes": float(np.mean(roll.any(axis=1))),
    }
