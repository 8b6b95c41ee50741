"""The recurrent part of every task's model, declared once: which cells there are and how one is built.

    >>> from rnnlab.tasks.recurrent import RecurrentSpec
    >>> spec = RecurrentSpec(cell="gru", hidden_size=8, num_layers=2)
    >>> spec.build(input_size=3)
    GRU(3, 8, num_layers=2)

A task's config names the cell, ``hidden_size``, ``num_layers`` and the cell options (torch.nn's
names; the options are :class:`rnnlab.nn.options.CellOptions` fields, ``{}`` = torch.nn) and
builds its stack with :func:`recurrent_layer` or :meth:`RecurrentSpec.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from rnnlab.errors import ConfigError, expected
from rnnlab.nn import GRU, LSTM, RNN
from rnnlab.tasks.cell_options import check_cell_options

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
                    cell_options: dict[str, Any] | None = None, **layer_kwargs: Any) -> nn.Module:
    """The stack ``rnn_class(cell)(input_size, hidden_size, num_layers, **layer_kwargs, **cell_options)``."""
    return rnn_class(cell)(input_size, hidden_size, num_layers=num_layers, **layer_kwargs,
                           **(cell_options or {}))


@dataclass
class RecurrentSpec:
    """Cell kind, size and options of a recurrent stack; ``build`` makes the layer."""

    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    cell_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_cell(self.cell)
        for name in ("hidden_size", "num_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(expected(name, "an int >= 1", repr(v)))
        self.cell_options = check_cell_options(self.cell_options, self.cell)

    def build(self, input_size: int, **layer_kwargs: Any) -> nn.Module:
        return recurrent_layer(self.cell, input_size, self.hidden_size, self.num_layers,
                               self.cell_options, **layer_kwargs)
