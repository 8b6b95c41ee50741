"""torch.nn-compatible layers and cells built on rnnlab's engine."""

from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.nn.layers import GRU, LSTM, RNN, RecurrentBase

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "RecurrentBase"]
