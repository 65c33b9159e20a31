"""Captioning with a trained run, measuring it, drawing where it looks, writing scene sets.

Metrics of a set of captions against their references (several per image):

- BLEU-1..4: sacrebleu's corpus BLEU (13a tokenisation, ``max_ngram_order`` 1 to 4, i.e. the
  cumulative BLEU-n captioning papers report), on a 0-1 scale;
- exact match: the caption equals one of the references;
- per-relation accuracy: exact match over the scenes of each relation type of the canonical
  caption (``single``, ``vertical``, ``horizontal``, ``list``), and ``meaning`` accuracy: the
  caption is a sentence of the grammar that is true of the scene and names every object
  (:func:`seqjax.data.scenes.describes`), which accepts paraphrases that are not references.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from experiments.caption.config import CaptionConfig
from experiments.caption.input_pipeline import (
    decode_caption,
    eval_scenes,
    images_to_array,
    load_image,
    object_banks,
)
from experiments.caption.model import GRID, Captioner, CaptionParams, attention_weights, caption_ids
from experiments.scaffold import UsageError, pyplot
from seqjax.data.scenes import describes, generate_scenes, parse_caption, relation_of

#: Most images per compiled decoding call; smaller sets are padded to a power of two (>= 8).
CHUNK = 128
RELATIONS = ("single", "vertical", "horizontal", "list")


def _chunks(n: int) -> list[tuple[int, int, int]]:
    out, i = [], 0
    while i < n:
        m = min(CHUNK, n - i)
        out.append((i, m, min(CHUNK, max(8, 1 << (m - 1).bit_length()))))
        i += m
    return out


def caption_ids_of(
    model: Captioner, params: CaptionParams, config: CaptionConfig, images, beam: int
) -> np.ndarray:
    """Word ids ``[N, max_decode]`` of the best caption of each uint8 ``[84, 84]`` image."""
    x = images_to_array(images)
    outs = []
    for i, m, size in _chunks(len(x)):
        chunk = np.zeros((size, *x.shape[1:]), np.float32)
        chunk[:m] = x[i : i + m]
        ids = caption_ids(
            model, params, jnp.asarray(chunk), beam_size=beam, max_length=config.max_decode
        )
        outs.append(np.asarray(ids)[:m])
    return np.concatenate(outs) if outs else np.zeros((0, config.max_decode), np.int32)


def caption_images(
    model: Captioner, params: CaptionParams, config: CaptionConfig, images, *, beam: int = 3
) -> list[str]:
    """The best caption of each uint8 ``[84, 84]`` image (``beam=1``: greedy)."""
    return [decode_caption(r) for r in caption_ids_of(model, params, config, images, beam)]


def bleu_scores(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (0-1) of ``hyps`` against a variable number of references each."""
    from sacrebleu.metrics import BLEU

    width = max(len(r) for r in refs)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
    out = {}
    for n in range(1, 5):
        score = BLEU(max_ngram_order=n).corpus_score(list(hyps), streams).score
        out[f"bleu{n}"] = score / 100.0
    return out


def caption_metrics(hyps: Sequence[str], scenes: Sequence[dict]) -> dict[str, Any]:
    """BLEU-1..4, exact match, meaning accuracy and per-relation accuracy.

    Args:
      hyps: one caption per scene.
      scenes: ``{"captions": [...], "classes": [...] | None, "cells": [...] | None}`` each;
        without classes and cells, meaning accuracy is judged against the parsed canonical
        reference (a list caption names the classes, a pair names them and their relation).
    """
    refs = [s["captions"] for s in scenes]
    out: dict[str, Any] = bleu_scores(hyps, refs)
    exact = [h in r for h, r in zip(hyps, refs, strict=True)]
    out["exact_match"] = float(np.mean(exact))
    meaning = []
    by_rel: dict[str, list[bool]] = {r: [] for r in RELATIONS}
    for h, s, ok in zip(hyps, scenes, exact, strict=True):
        by_rel[s["relation"]].append(ok)
        if s.get("classes") is not None:
            meaning.append(describes(h, np.asarray(s["classes"]), np.asarray(s["cells"])))
        else:
            meaning.append(ok or parse_caption(h) == parse_caption(s["captions"][0]))
    out["meaning_accuracy"] = float(np.mean(meaning))
    out["relation_exact_match"] = {r: (float(np.mean(v)) if v else None) for r, v in by_rel.items()}
    out["relation_counts"] = {r: len(v) for r, v in by_rel.items()}
    return out


def _relation_from_caption(caption: str) -> str:
    p = parse_caption(caption)
    if p is None:
        raise UsageError(f"captions.jsonl: expected captions of the scene grammar, got {caption!r}")
    if p["kind"] == "single":
        return "single"
    if p["kind"] == "list":
        return "list"
    return "vertical" if p["relation"] in ("above", "below") else "horizontal"


def evaluate_model(
    model: Captioner,
    params: CaptionParams,
    config: CaptionConfig,
    *,
    beams: Sequence[int] = (1, 3, 5),
    scenes_dir: str | None = None,
    attention_png: str | None = None,
    examples: int = 3,
) -> dict[str, Any]:
    """Metrics for each beam size on the run's test scenes, or on a ``make-scenes`` folder.

    Args:
      model, params, config: the run.
      beams: beam sizes to measure (1: greedy).
      scenes_dir: a ``make-scenes`` folder instead of the run's test scenes.
      attention_png: also draw the attention maps of the first ``examples`` scenes captioned
        right and the first ``examples`` captioned wrong (by the last beam size) to this PNG.
      examples: scenes of each kind in the PNG.

    Returns:
      ``{"scenes": n, "source": ..., "beam_1": {...metrics, "seconds"}, "beam_3": ...}``
      (and ``"attention_png"``: the drawn scenes' indices, captions and references).
    """
    if scenes_dir is not None:
        images, scenes = read_scene_dir(scenes_dir)
        source = os.path.abspath(scenes_dir)
    else:
        _, test_bank = object_banks(config)
        gen = eval_scenes(test_bank, config, "test")
        images = [s.image for s in gen]
        scenes = [
            {
                "captions": list(s.captions),
                "classes": s.classes,
                "cells": s.cells,
                "relation": relation_of(len(s.classes), s.cells),
            }
            for s in gen
        ]
        source = f"test split (data_seed {config.data_seed})"
    out: dict[str, Any] = {"scenes": len(images), "source": source}
    hyps: list[str] = []
    for k in beams:
        start = time.perf_counter()
        hyps = caption_images(model, params, config, images, beam=k)
        metrics = caption_metrics(hyps, scenes)
        metrics["seconds"] = time.perf_counter() - start
        out[f"beam_{k}"] = metrics
    if attention_png is not None and model.attentional:
        right = [i for i, h in enumerate(hyps) if h in scenes[i]["captions"]][:examples]
        wrong = [i for i, h in enumerate(hyps) if h not in scenes[i]["captions"]][:examples]
        chosen = right + wrong
        titles = [
            f"{'right' if i in right else 'WRONG'}: {hyps[i]} | ref: {scenes[i]['captions'][0]}"
            for i in chosen
        ]
        write_attention_png(
            model,
            params,
            config,
            [images[i] for i in chosen],
            attention_png,
            beam=beams[-1],
            titles=titles,
        )
        out["attention_png"] = {
            "path": os.path.abspath(attention_png),
            "beam": beams[-1],
            "scenes": [
                {"index": i, "caption": hyps[i], "references": scenes[i]["captions"]}
                for i in chosen
            ],
        }
    return out


def read_scene_dir(path: str) -> tuple[list[np.ndarray], list[dict]]:
    """Images and references of a ``make-scenes`` folder (``captions.jsonl`` and its PNGs).

    Raises:
      UsageError: a missing or malformed ``captions.jsonl``, or an unreadable image.
    """
    index = os.path.join(path, "captions.jsonl")
    if not os.path.isfile(index):
        raise UsageError(f"--scenes: expected a folder made by make-scenes, got no {index!r}")
    images, scenes = [], []
    with open(index, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                name, caps = rec["image"], rec["captions"]
                if (
                    not isinstance(name, str)
                    or not caps
                    or not all(isinstance(c, str) for c in caps)
                ):
                    raise ValueError("bad fields")
            except (ValueError, KeyError, TypeError) as e:
                raise UsageError(
                    f'--scenes: expected {{"image": ..., "captions": [...]}} on line {n} of '
                    f"{index}, got {line.strip()[:60]!r} ({e})"
                ) from None
            images.append(load_image(os.path.join(path, name)))
            rel = _relation_from_caption(caps[0])
            scenes.append({"captions": caps, "classes": None, "cells": None, "relation": rel})
    if not images:
        raise UsageError(f"--scenes: expected at least one scene, got an empty {index}")
    return images, scenes


def make_scenes(out_dir: str, n: int, seed: int, objects: str = "both") -> str:
    """Writes ``n`` test-object scenes as PNGs and ``captions.jsonl`` to ``out_dir``.

    Scenes use the test objects only (images no run trains on), from
    ``np.random.default_rng(seed)``.

    Returns:
      The path of ``captions.jsonl``.
    """
    from PIL import Image

    cfg = CaptionConfig(objects=objects)
    _, test_bank = object_banks(cfg)
    scenes = generate_scenes(n, seed, test_bank)
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    for i, s in enumerate(scenes):
        name = f"scene_{i:05d}.png"
        Image.fromarray(s.image, mode="L").save(os.path.join(out_dir, name))
        lines.append(json.dumps({"image": name, "captions": list(s.captions)}))
    index = os.path.join(out_dir, "captions.jsonl")
    with open(index, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return index


def write_attention_png(
    model: Captioner,
    params: CaptionParams,
    config: CaptionConfig,
    images: Sequence[np.ndarray],
    out_path: str,
    *,
    beam: int = 3,
    titles: Sequence[str] | None = None,
) -> list[str]:
    """Draws each image with its attention map over the 7x7 grid for every generated word.

    One row per image: the image, then one panel per word (the image with the word's
    attention, upsampled to 84x84, overlaid in colour), ending with ``<eos>``.

    Returns:
      The captions drawn.

    Raises:
      UsageError: the model has no attention.
    """
    if not model.attentional:
        raise UsageError("--attention-png: expected a model trained with --attention soft")
    ids = caption_ids_of(model, params, config, images, beam)
    w = np.asarray(attention_weights(model, params, jnp.asarray(images_to_array(images)), ids))
    from experiments.caption.input_pipeline import vocabulary

    vocab = vocabulary()
    caps = [decode_caption(r) for r in ids]
    lengths = [int(np.argmax(r == 2)) + 1 if (r == 2).any() else len(r) for r in ids]
    cols = 1 + max(lengths)
    plt = pyplot()
    if plt is None:
        raise UsageError(
            "--attention-png: expected matplotlib to be installed (pip install matplotlib)"
        )
    fig, axes = plt.subplots(
        len(images), cols, figsize=(1.3 * cols, 1.5 * len(images)), squeeze=False
    )
    for i, img in enumerate(images):
        for ax in axes[i]:
            ax.axis("off")
        axes[i][0].imshow(img, cmap="gray", vmin=0, vmax=255)
        title = caps[i] if titles is None else titles[i]
        # the caption runs under the row, across the word panels
        axes[i][0].text(0, -0.06, title, transform=axes[i][0].transAxes, fontsize=7, va="top")
        for t in range(lengths[i]):
            ax = axes[i][t + 1]
            heat = np.kron(w[i, t].reshape(GRID, GRID), np.ones((12, 12)))
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=max(1e-6, heat.max()))
            ax.set_title(vocab[int(ids[i, t])], fontsize=7)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.94, bottom=0.06, wspace=0.05, hspace=0.5)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return caps
