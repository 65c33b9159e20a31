"""Flax adapters over the pure seqjax cells: ``seqjax.flax.linen`` and ``seqjax.flax.nnx``.

Each flavour has two modules:

- a cell module (``linen.Cell``, an ``nn.RNNCellBase``; ``nnx.Cell``, an ``nnx.RNNCellBase``)
  wrapping any steppable seqjax cell, so that Flax's own ``nn.RNN`` / ``nnx.RNN`` (with
  ``seq_lengths``), ``nn.Bidirectional`` and hand-written loops run it step by step;
- a whole-sequence module (``linen.RNN``, ``nnx.RNN``) that calls :func:`seqjax.scan` once:
  the fast path, and the way to run bidirectional compositions and stacks of them.

Both give the same numbers as :func:`seqjax.scan` with the same parameters. Parameters convert
both ways: :func:`seqjax.flax.linen.params_to_flax` / :func:`~seqjax.flax.linen.params_from_flax`
for linen variables, ``params=`` and ``seqjax_params()`` for nnx modules.

The names are also exported here: ``LinenCell``, ``LinenRNN``, ``NnxCell``, ``NnxRNN``,
``params_to_flax``, ``params_from_flax``.

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn, seqjax
  >>> from seqjax.flax import LinenCell
  >>> rnn = nn.RNN(LinenCell(seqjax.GRU(4)))
  >>> xs = jnp.ones((2, 5, 3))
  >>> rnn.apply(rnn.init(jax.random.key(0), xs), xs).shape
  (2, 5, 4)
"""

from __future__ import annotations

from seqjax.flax import linen, nnx
from seqjax.flax.linen import RNN as LinenRNN
from seqjax.flax.linen import Cell as LinenCell
from seqjax.flax.linen import params_from_flax, params_to_flax
from seqjax.flax.nnx import RNN as NnxRNN
from seqjax.flax.nnx import Cell as NnxCell

__all__ = [
    "LinenCell",
    "LinenRNN",
    "NnxCell",
    "NnxRNN",
    "linen",
    "nnx",
    "params_from_flax",
    "params_to_flax",
]
