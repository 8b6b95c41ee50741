"""The engine: one autograd.Function that runs a cell over a sequence with hand-written BPTT.

``scan`` is the reference implementation. Faster implementations with the same signature and
the same numbers register themselves with :func:`register_engine`; layers pick one by name
(``engine="reference"`` always works and is what the tests compare the others against).

Registered here: ``"reference"`` (scan.py), ``"fast"`` (fast.py: the same loops in C++, built at
install; falls back to the reference where it cannot run), ``"auto"`` (the layers' default: what
:func:`set_engine` / ``RNNLAB_ENGINE`` say, "fast" unless set otherwise), ``"checkpoint"``
(checkpoint.py: recomputes segments in backward, O(√T) activations).
"""

from __future__ import annotations

import os
from typing import Callable

from rnnlab.engine.record import GateRecord, GradRecord, record_gates, record_grad_norms
from rnnlab.engine.scan import ScanTag, scan
from rnnlab.errors import ConfigError

_ENGINES: dict[str, Callable] = {"reference": scan}


def register_engine(name: str, fn: Callable) -> None:
    """Register a scan implementation with ``scan``'s signature under ``name``."""
    _ENGINES[name] = fn


def get_engine(name: str) -> Callable:
    if name not in _ENGINES:
        raise ConfigError(f"engine: expected one of {sorted(_ENGINES)}, got {name!r}")
    return _ENGINES[name]


def engine_names() -> list[str]:
    return sorted(_ENGINES)


# ----------------------------------------------------------------------------- the process-wide choice
ENGINE_CHOICES = ("auto", "fast", "reference")
ENGINE_ENV = "RNNLAB_ENGINE"
_choice: str | None = None           # None: not read yet from RNNLAB_ENGINE
_source = "default"


def _checked(name: object, what: str) -> str:
    if name not in ENGINE_CHOICES:
        raise ConfigError(f"{what}: expected one of {', '.join(ENGINE_CHOICES)}, got {name!r}")
    if name == "fast" and not fast.available():
        raise ConfigError(f"{what}: expected the fast kernels for 'fast', got none here "
                          f"({fast.unavailable_reason()})")
    return name


def set_engine(name: str) -> None:
    """What the layers' default ``engine="auto"`` runs, for this process.

    ``"auto"`` (the default): the C++ kernels (``"fast"``) for every call they cover, the
    reference for the rest and wherever the kernels are missing. ``"fast"``: the same, but
    raises ``ConfigError`` here when the kernels are not available, instead of falling back.
    ``"reference"``: the Python reference engine everywhere (same numbers, slower; the kernels
    are not even loaded). Layers built with an explicit ``engine=`` other than ``"auto"`` keep
    it. The environment variable ``RNNLAB_ENGINE`` sets the same at start-up.
    """
    global _choice, _source
    _choice, _source = _checked(name, "set_engine"), "set_engine"


def get_engine_choice() -> str:
    """The current choice of :func:`set_engine` ("auto", "fast" or "reference"), read from
    ``RNNLAB_ENGINE`` on first use when ``set_engine`` was not called."""
    global _choice, _source
    if _choice is None:
        _choice = _checked(os.environ.get(ENGINE_ENV) or "auto", ENGINE_ENV)
        _source = ENGINE_ENV if os.environ.get(ENGINE_ENV) else "default"
    return _choice


def engine_choice_source() -> str:
    """Where :func:`get_engine_choice` comes from: "default", "RNNLAB_ENGINE" or "set_engine"."""
    get_engine_choice()
    return _source


def resolve_engine(name: str) -> str:
    """The registered engine a layer's ``engine=name`` runs now: "auto" follows
    :func:`get_engine_choice` ("fast" unless it says "reference"); other names are themselves."""
    if name != "auto":
        return name
    return "reference" if get_engine_choice() == "reference" else "fast"


def _auto_scan(*args, **kwargs):
    return _ENGINES[resolve_engine("auto")](*args, **kwargs)


# The fast path (C++ time loops, same numbers; falls back to the reference where it cannot run)
# and the recomputing (checkpointed) driver register themselves here.
from rnnlab.engine import fast  # noqa: E402
from rnnlab.engine.fast import fast_scan  # noqa: E402

from rnnlab.engine.checkpoint import checkpointed_scan  # noqa: E402

register_engine("fast", fast_scan)
register_engine("auto", _auto_scan)      # set_engine's choice: fast (else the reference), or the reference
register_engine("checkpoint", checkpointed_scan)


__all__ = [
    "scan", "fast_scan", "checkpointed_scan", "ScanTag", "register_engine", "get_engine", "engine_names",
    "set_engine", "get_engine_choice", "engine_choice_source", "resolve_engine", "ENGINE_CHOICES",
    "record_grad_norms", "record_gates", "GradRecord", "GateRecord",
]
