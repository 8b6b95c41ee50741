"""The recurrent part of every task's model, declared once: which cells there are and how a stack is built.

A task's config names the cell, ``hidden_size``, ``num_layers`` and the cell options (torch.nn's
names; the options are :class:`rnnlab.nn.options.CellOptions` fields, ``{}`` = torch.nn), and its
model builds the stack with :func:`recurrent_layer`::

    >>> from rnnlab.tasks.recurrent import recurrent_layer
    >>> recurrent_layer("gru", input_size=3, hidden_size=8, num_layers=2, dropout=0.1)
    GRU(3, 8, num_layers=2, dropout=0.1)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rnnlab.errors import ConfigError, expected
from rnnlab.nn import GRU, LSTM, RNN

# The cell kinds a task accepts, in the order tables and plots show them.
CELLS = ("rnn", "lstm", "gru")
LAYERS: dict[str, type[nn.Module]] = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


# torch.nn's names for the size of the stack. The probe and language-model configs of run folders
# written by rnnlab 0.1.0 said ``hidden`` and ``layers``; ``upgrade_keys`` reads them.
RENAMED = {"hidden": "hidden_size", "layers": "num_layers"}


def upgrade_keys(config: dict[str, Any], what: str) -> dict[str, Any]:
    """``config`` with the 0.1.0 keys ``hidden``/``layers`` renamed to ``hidden_size``/``num_layers``."""
    out = dict(config)
    for old, new in RENAMED.items():
        if old in out:
            if new in out:
                raise ConfigError(expected(f"{what} keys", f"{new!r} or the older {old!r}, not both", sorted(config)))
            out[new] = out.pop(old)
    return out


def check_cell(cell: object, what: str = "cell") -> str:
    """``cell`` if it names a cell kind, else ConfigError."""
    if cell not in CELLS:
        raise ConfigError(expected(what, f"one of {CELLS}", repr(cell)))
    return cell   # type: ignore[return-value]


def rnn_class(cell: str) -> type[nn.Module]:
    """rnnlab's layer for ``cell`` (a drop-in for torch.nn's)."""
    return LAYERS[check_cell(cell)]


def recurrent_layer(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                    cell_options: dict[str, Any] | None = None, dropout: float = 0.0,
                    **layer_kwargs: Any) -> nn.Module:
    """The stack ``rnn_class(cell)(input_size, hidden_size, num_layers, ...)`` with the cell options;
    ``dropout`` acts between layers, so a one-layer stack leaves it out (torch.nn warns otherwise)."""
    return rnn_class(cell)(input_size, hidden_size, num_layers=num_layers,
                           dropout=dropout if num_layers > 1 else 0.0, **layer_kwargs, **(cell_options or {}))
