"""seqjax: recurrent sequence models as pure JAX functions.

Cells are frozen hyperparameter definitions whose methods are pure functions of explicit
parameter and carry pytrees; :func:`scan` runs any cell or composition over time.

Submodules loaded on first use: ``seqjax.interop`` (PyTorch import) and ``seqjax.flax``
(Flax linen and nnx adapters).
"""

from __future__ import annotations

import importlib

from seqjax import kernels as kernels  # registers the fast kernels (cells never import them)
from seqjax.cells import (
    GREFF_VARIANTS,
    GRU,
    LSTM,
    Cell,
    GRUCarry,
    GRUParams,
    LSTMCarry,
    LSTMGatesCarry,
    LSTMParams,
    SimpleRNN,
    SimpleRNNCarry,
    SimpleRNNParams,
    cell_from_config,
    cell_to_config,
)
from seqjax.combinators import (
    Bidirectional,
    BidirectionalCarry,
    BidirectionalParams,
    Stack,
    StackCarry,
    StackParams,
    bidirectional,
    stack,
)
from seqjax.regularization import (
    VariationalDropout,
    WeightDrop,
    Zoneout,
    variational_dropout,
    weight_drop,
    zoneout,
)
from seqjax.scan import ScanOptions, scan

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("interop", "flax", "train", "data", "decode", "kernels")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"seqjax.{name}")
    raise AttributeError(f"module 'seqjax' has no attribute {name!r}")


__all__ = [
    "GREFF_VARIANTS",
    "GRU",
    "LSTM",
    "Bidirectional",
    "BidirectionalCarry",
    "BidirectionalParams",
    "Cell",
    "GRUCarry",
    "GRUParams",
    "LSTMCarry",
    "LSTMGatesCarry",
    "LSTMParams",
    "SimpleRNN",
    "SimpleRNNCarry",
    "SimpleRNNParams",
    "ScanOptions",
    "Stack",
    "StackCarry",
    "StackParams",
    "bidirectional",
    "cell_from_config",
    "cell_to_config",
    "scan",
    "stack",
    "VariationalDropout",
    "WeightDrop",
    "Zoneout",
    "variational_dropout",
    "weight_drop",
    "zoneout",
]
