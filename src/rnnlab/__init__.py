"""rnnlab: the vanilla RNN, the LSTM and the GRU, written from their equations.

The layers and cells are drop-in replacements for ``torch.nn``'s::

    >>> import torch, rnnlab
    >>> lstm = rnnlab.LSTM(input_size=3, hidden_size=5, num_layers=2)
    >>> out, (h, c) = lstm(torch.randn(7, 2, 3))   # (T, B, I) -> (T, B, H)
    >>> tuple(out.shape), tuple(h.shape), tuple(c.shape)
    ((7, 2, 5), (2, 2, 5), (2, 2, 5))
"""

from __future__ import annotations

import importlib
from typing import Any

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
from rnnlab._version import __version__  # noqa: F401  (rnnlab.__version__)

# Names served from a submodule on first access: importing ``rnnlab`` (as the ``rnnlab`` command
# does before parsing its flags) must not import torch, so that ``rnnlab --help`` stays fast.
_LAZY = {name: "rnnlab.nn" for name in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell")}
_LAZY.update({name: "rnnlab.engine" for name in ("set_engine", "get_engine_choice")})

__all__ = [
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "RnnlabError", "ConfigError", "ConfigTypeError", "ShapeError", "DTypeError", "DeviceError",
    "StateError", "DataError", "CheckpointError", "NonFiniteError",
    "set_engine", "get_engine_choice",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value   # later lookups skip this function
        return value
    raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
