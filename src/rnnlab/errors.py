"""rnnlab's exception types.

Every error a user can cause (a bad shape, a bad file, a bad flag) is raised as one of
these, with a message that names the thing, the expected value and the received value.
They subclass the built-in type a Python user would catch (ValueError, TypeError, ...),
so ``except ValueError`` keeps working, and also the type torch.nn raises for the same mistake
(a shape error is a RuntimeError too, a dtype mismatch a ValueError too, a non-integer size a
TypeError), so code written against torch.nn's modules catches rnnlab's errors unchanged. The CLI prints the message on one line and exits
non-zero; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import importlib


class RnnlabError(Exception):
    """Base class of every error rnnlab raises on purpose."""


class Interrupted(RnnlabError):
    """A training run stopped by SIGINT (Ctrl-C) or SIGTERM after its final checkpoint: the
    command exits with the shell's status for that signal (130, 143) rather than 0."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(RnnlabError, ValueError):
    """An invalid constructor argument, option or flag value."""


class ConfigTypeError(ConfigError, TypeError):
    """A constructor argument of the wrong type (a float size, a non-bool flag)."""


class ShapeError(RnnlabError, ValueError, RuntimeError):
    """A tensor whose shape does not fit (input size, hidden state, batch)."""


class DTypeError(RnnlabError, TypeError, ValueError, RuntimeError):
    """Tensors of different dtypes, or a dtype the engine does not support (torch.nn's layers raise
    ValueError for it, its cells RuntimeError)."""


class DeviceError(RnnlabError, ValueError, RuntimeError):
    """Tensors on different devices."""


class StateError(RnnlabError, TypeError, RuntimeError):
    """A recurrent state of the wrong kind (for example an LSTM state that is not a pair); a
    RuntimeError too, as torch.nn's "lstm expects two hidden states"."""


class DataError(RnnlabError, ValueError):
    """A data file or data set that cannot be used: empty, malformed, too short, unknown."""


class CheckpointError(RnnlabError, ValueError):
    """A checkpoint or run folder that cannot be read, written or used."""


class RunFolderTakenError(CheckpointError):
    """A new run's folder is in use: it holds a run or other files, or another process holds its lock."""


class NonFiniteError(RnnlabError, FloatingPointError):
    """Training produced a NaN or infinite loss or gradient."""


def with_torch(message: str, torch_message: str) -> str:
    """rnnlab's message followed by torch.nn's for the same mistake, which code written against
    torch.nn may match: ``<message> (torch.nn: <torch_message>)``."""
    return f"{message} (torch.nn: {torch_message})"


def expected(what: str, want: object, got: object) -> str:
    """The one message shape of rnnlab's errors: ``<what>: expected <want>, got <got>``."""
    return f"{what}: expected {want}, got {got}"


def listed(names, most: int = 10) -> str:
    """``'a', 'b', 'c'`` for a message: the first ``most`` names, then how many more."""
    names = list(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(repr(n) for n in names[:most]) + more


def is_int_at_least(value: object, least: int) -> bool:
    """An int (not a bool) >= ``least``: what a count or seed field accepts."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def flag_of(name: str, flags: dict[str, str]) -> str:
    """The command-line flag of config field ``name``: ``flags[name]`` where it is spelled otherwise
    ("" for none), else ``--name`` with dashes."""
    return flags.get(name, "--" + name.replace("_", "-"))


def field_name(task: str, name: str, config: object, flags: dict[str, str]) -> str:
    """How an error names the field ``name`` of a task's ``config`` (a dataclass): the flag that sets
    it beside the field, ``--hidden-size (classify hidden_size)``, so that a command-line user and a
    Python user each recognise it. ``flags`` lists the fields whose flag is spelled otherwise, ""
    for a field with no flag; a ``name`` that is no field (``train/valid/test``) stays as it is."""
    fields = getattr(config, "__dataclass_fields__", {})
    if name not in fields:
        return f"{task} {name}"
    flag = flag_of(name, flags)
    return f"{flag} ({task} {name})" if flag else f"{task} {name}"


class OutputError(RnnlabError, OSError):
    """An output path that must not be written (an input, a folder, a run's own file) or a write that failed."""


def optional_module(module: str, what: str, want: str, got: str = "it is not installed"):
    """The module ``module`` of an optional extra (imported on first use, so that the package
    imports without it), or one ConfigError ``<what>: expected <want>, got <got>`` saying how to
    install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(expected(what, want, got)) from None


class DataWarning(UserWarning):
    """Data changed on the way in (long sequences downsampled or cut): the CLI prints it as one
    ``rnnlab: warning:`` line; Python code sees a warning it can filter or turn into an error."""
