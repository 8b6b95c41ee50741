"""The engine: one autograd.Function that runs a cell over a sequence with hand-written BPTT.

``scan`` is the reference implementation. Faster implementations with the same signature and
the same numbers register themselves with :func:`register_engine`; layers pick one by name
(``engine="reference"`` always works and is what the tests compare the others against).

Registered here: ``"reference"`` (scan.py), ``"fast"`` (fast.py: the same loops in C++, built on
first use; falls back to the reference where it cannot run), ``"auto"`` (the best available, i.e.
"fast"), ``"checkpoint"`` (checkpoint.py: recomputes segments in backward, O(√T) activations).
"""

from __future__ import annotations

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


# The fast path (C++ time loops, same numbers; falls back to the reference where it cannot run)
# and the recomputing (checkpointed) driver register themselves here.
from rnnlab.engine.fast import fast_scan  # noqa: E402

from rnnlab.engine.checkpoint import checkpointed_scan  # noqa: E402

register_engine("fast", fast_scan)
register_engine("auto", fast_scan)       # the best engine available here (fast, else the reference)
register_engine("checkpoint", checkpointed_scan)


__all__ = [
    "scan", "fast_scan", "checkpointed_scan", "ScanTag", "register_engine", "get_engine", "engine_names",
    "record_grad_norms", "record_gates", "GradRecord", "GateRecord",
]
