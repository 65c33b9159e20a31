"""seqjax: recurrent sequence models as pure JAX functions.

Cells are frozen hyperparameter definitions whose methods are pure functions of explicit
parameter and carry pytrees; :func:`scan` runs any cell or composition over time.

The names imported here (cells, their parameter and carry NamedTuples, the combinators and
regularisation wrappers, :func:`scan`) are the core API. The submodules are part of the public
API too; the ones not needed by the core are imported on first use, so ``import seqjax`` stays
light:

- ``seqjax.cells``, ``seqjax.combinators``, ``seqjax.regularization``: what the top-level
  names come from;
- ``seqjax.scan_engine``: the time loop under :func:`scan`, its options and kernel registry;
  ``seqjax.kernels``: the fast kernels it dispatches to;
- ``seqjax.attention``, ``seqjax.attention_decoder``, ``seqjax.seq2seq``: attention over a
  memory, the attentional decoder cell, encoder-decoder bridges;
- ``seqjax.decode``: sampling, greedy and beam search; ``seqjax.ctc``: CTC loss and decoding;
- ``seqjax.train``: train state, steps, Optax recipes, Orbax checkpoints, the training loop;
- ``seqjax.data``: bundled and synthetic datasets, batching and padding;
- ``seqjax.flax``: Flax linen and nnx adapters; ``seqjax.interop``: PyTorch weights;
- ``seqjax.typing``: the shape notation and type aliases of the docstrings.
"""

import importlib as _importlib
import typing as _typing

from seqjax import kernels as kernels  # registers the fast kernels (cells never import them)
from seqjax.cells import (
    GREFF_VARIANTS,
    GRU,
    LSTM,
    MLSTM,
    SLSTM,
    Cell,
    GatedMLP,
    GatedMLPParams,
    GRUCarry,
    GRUParams,
    LSTMCarry,
    LSTMGatesCarry,
    LSTMParams,
    MinGRU,
    MinGRUCarry,
    MinGRUParams,
    MinLSTM,
    MinLSTMCarry,
    MinLSTMParams,
    MLSTMCarry,
    MLSTMParams,
    SimpleRNN,
    SimpleRNNCarry,
    SimpleRNNParams,
    SLSTMCarry,
    SLSTMParams,
    XLSTMBlock,
    XLSTMBlockParams,
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

if _typing.TYPE_CHECKING:  # the submodules, for type checkers (run time: see __getattr__)
    from seqjax import (
        attention,
        attention_decoder,
        cells,
        combinators,
        ctc,
        data,
        decode,
        flax,
        interop,
        regularization,
        scan_engine,
        seq2seq,
        train,
        typing,
    )

__version__ = "0.1.0"


def __getattr__(name: str):
    # A public name not bound above is a submodule loaded on first use (seqjax.train, ...).
    if name in __all__:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])


__all__ = [
    "Bidirectional",
    "bidirectional",
    "BidirectionalCarry",
    "BidirectionalParams",
    "Cell",
    "cell_from_config",
    "cell_to_config",
    "GatedMLP",
    "GatedMLPParams",
    "GREFF_VARIANTS",
    "GRU",
    "GRUCarry",
    "GRUParams",
    "LSTM",
    "LSTMCarry",
    "LSTMGatesCarry",
    "LSTMParams",
    "MinGRU",
    "MinGRUCarry",
    "MinGRUParams",
    "MinLSTM",
    "MinLSTMCarry",
    "MinLSTMParams",
    "MLSTM",
    "MLSTMCarry",
    "MLSTMParams",
    "scan",
    "ScanOptions",
    "SimpleRNN",
    "SimpleRNNCarry",
    "SimpleRNNParams",
    "SLSTM",
    "SLSTMCarry",
    "SLSTMParams",
    "Stack",
    "stack",
    "StackCarry",
    "StackParams",
    "variational_dropout",
    "VariationalDropout",
    "weight_drop",
    "WeightDrop",
    "XLSTMBlock",
    "XLSTMBlockParams",
    "Zoneout",
    "zoneout",
    # Every public submodule: those not imported above load on first use. A new public module
    # is one more name here (tests/test_api_surface.py fails while one is missing).
    "attention",
    "attention_decoder",
    "cells",
    "combinators",
    "ctc",
    "data",
    "decode",
    "flax",
    "interop",
    "kernels",
    "regularization",
    "scan_engine",
    "seq2seq",
    "train",
    "typing",
]
