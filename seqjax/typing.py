"""Shape notation used across seqjax docstrings and names.

Letters, as in nanodo and the Flax examples:

- ``B``: batch. Cells accept any number of leading batch dimensions (``*B``), including none.
- ``T``: time steps.
- ``I``: input features of a cell or layer.
- ``H``: hidden units (the LSTM cell state ``c`` has ``H`` units).
- ``P``: projection size of an LSTMP (the output ``h``/``r`` has ``P`` units).
- ``G``: number of fused gate blocks (4 for a full LSTM, 3 for a GRU).

``xs_BTI`` is an input of shape ``[B, T, I]``; ``ys_TBH`` an output of shape ``[T, B, H]``.
"""

from __future__ import annotations

from typing import Any

import jax

#: A JAX array (``jax.Array``); shapes are given in the docstrings, e.g. ``xs: [B, T, I]``.
Array = jax.Array
#: A PRNG key, e.g. ``jax.random.key(0)``.
PRNGKey = jax.Array
#: A shape or batch shape, e.g. ``batch_shape=(32,)``.
Shape = tuple[int, ...]
#: A dtype or anything ``jnp.dtype`` accepts (``jnp.float32``, ``"bfloat16"``).
DType = Any
#: A nest of lists, tuples, dicts and NamedTuples with arrays at the leaves (parameters, carries).
PyTree = Any

__all__ = ["Array", "DType", "PRNGKey", "PyTree", "Shape"]
