"""Recurrent cells: the pure math of one time step."""

from seqjax.cells.base import Cell
from seqjax.cells.config import cell_from_config, cell_to_config
from seqjax.cells.gru import GRU, GRUCarry, GRUParams
from seqjax.cells.lstm import GREFF_VARIANTS, LSTM, LSTMCarry, LSTMGatesCarry, LSTMParams
from seqjax.cells.min_rnn import (
    MinGRU,
    MinGRUCarry,
    MinGRUParams,
    MinLSTM,
    MinLSTMCarry,
    MinLSTMParams,
)
from seqjax.cells.rnn import SimpleRNN, SimpleRNNCarry, SimpleRNNParams

__all__ = [
    "GREFF_VARIANTS",
    "GRU",
    "LSTM",
    "Cell",
    "GRUCarry",
    "GRUParams",
    "LSTMCarry",
    "LSTMGatesCarry",
    "LSTMParams",
    "MinGRU",
    "MinGRUCarry",
    "MinGRUParams",
    "MinLSTM",
    "MinLSTMCarry",
    "MinLSTMParams",
    "SimpleRNN",
    "SimpleRNNCarry",
    "SimpleRNNParams",
    "cell_from_config",
    "cell_to_config",
]
