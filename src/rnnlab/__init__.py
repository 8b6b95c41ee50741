"""rnnlab: the vanilla RNN, the LSTM and the GRU, written from their equations.

The layers and cells are drop-in replacements for ``torch.nn``'s::

    >>> import torch, rnnlab
    >>> lstm = rnnlab.LSTM(input_size=3, hidden_size=5, num_layers=2)
    >>> out, (h, c) = lstm(torch.randn(7, 2, 3))   # (T, B, I) -> (T, B, H)
    >>> tuple(out.shape), tuple(h.shape), tuple(c.shape)
    ((7, 2, 5), (2, 2, 5), (2, 2, 5))
"""

from rnnlab.errors import (
    CheckpointError,
    ConfigError,
    ConfigTypeError,
    DataError,
    DeviceError,
    DTypeError,
    NonFiniteError,
    RnnlabError,
    ShapeError,
    StateError,
)
from rnnlab.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

from rnnlab._version import __version__  # noqa: F401  (rnnlab.__version__)

__all__ = [
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "RnnlabError", "ConfigError", "ConfigTypeError", "ShapeError", "DTypeError", "DeviceError",
    "StateError", "DataError", "CheckpointError", "NonFiniteError",
]
