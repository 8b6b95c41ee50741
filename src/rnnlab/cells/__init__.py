"""The cells: the equations, written once, each family in its own module with its hand-derived
backward step. ``FAMILIES`` maps the engine's mode names to those modules."""

from rnnlab.cells import gru, lstm, rnn

FAMILIES = {"rnn_tanh": rnn, "rnn_relu": rnn, "lstm": lstm, "gru": gru}
CELL_NAMES = {"rnn_tanh": "rnn", "rnn_relu": "rnn", "lstm": "lstm", "gru": "gru"}

__all__ = ["rnn", "lstm", "gru", "FAMILIES", "CELL_NAMES"]
