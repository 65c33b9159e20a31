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
from seqjax.cells.mlstm import MLSTM, MLSTMCarry, MLSTMParams
from seqjax.cells.rnn import SimpleRNN, SimpleRNNCarry, SimpleRNNParams
from seqjax.cells.slstm import SLSTM, SLSTMCarry, SLSTMParams
from seqjax.cells.xlstm_block import GatedMLP, GatedMLPParams, XLSTMBlock, XLSTMBlockParams

__all__ = [
    "GREFF_VARIANTS",
    "GRU",
    "LSTM",
    "Cell",
    "GatedMLP",
    "GatedMLPParams",
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
    "MLSTM",
    "MLSTMCarry",
    "MLSTMParams",
    "SimpleRNN",
    "SimpleRNNCarry",
    "SimpleRNNParams",
    "SLSTM",
    "SLSTMCarry",
    "SLSTMParams",
    "XLSTMBlock",
    "XLSTMBlockParams",
    "cell_from_config",
    "cell_to_config",
]
