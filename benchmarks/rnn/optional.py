"""The libraries compared against seqjax, each optional: the benchmark runs without them."""

from __future__ import annotations

try:
    import torch
except ImportError:  # pragma: no cover - torch is a dev dependency
    torch = None
try:
    import flax.linen as nn
except ImportError:  # pragma: no cover
    nn = None
try:
    import equinox as eqx
except ImportError:  # pragma: no cover
    eqx = None

__all__ = ["eqx", "nn", "torch"]
