"""The engine: one autograd.Function that runs a cell over a sequence with hand-written BPTT.

``scan`` is the reference implementation. Faster implementations with the same signature and
the same numbers register themselves with :func:`register_engine`; layers pick one by name
(``engine="reference"`` always works and is what the tests compare the others against).

Registered here: ``"reference"`` (scan.py), ``"fast"`` (fast.py: the same loops in C++, built at
install; falls back to the reference where it cannot run), ``"auto"`` (the layers' default: what
:func:`set_engine` / ``RNNLAB_ENGINE`` say, "fast" unless set otherwise), ``"checkpoint"``
(checkpoint.py: recomputes segments in backward, O(√T) activations). Which loop a call takes
within an engine is decided by :func:`plan` (dispatch.py), the one place that decides it.
"""

from __future__ import annotations

from rnnlab.engine.checkpoint import checkpointed_scan
from rnnlab.engine.dispatch import (
    ENGINE_CHOICES,
    ENGINE_ENV,
    Plan,
    engine_choice_source,
    engine_names,
    get_engine,
    get_engine_choice,
    plan,
    register_engine,
    resolve_engine,
    set_engine,
)
from rnnlab.engine import fast
from rnnlab.engine.fast import fast_scan
from rnnlab.engine.record import GateRecord, GradRecord, record_gates, record_grad_norms
from rnnlab.engine.scan import ScanTag, scan


def _auto_scan(*args, **kwargs):
    return get_engine(resolve_engine("auto"))(*args, **kwargs)


register_engine("fast", fast_scan)
register_engine("auto", _auto_scan)      # set_engine's choice: fast (else the reference), or the reference
register_engine("checkpoint", checkpointed_scan)


__all__ = [
    "scan", "fast_scan", "checkpointed_scan", "ScanTag", "register_engine", "get_engine", "engine_names",
    "set_engine", "get_engine_choice", "engine_choice_source", "resolve_engine", "ENGINE_CHOICES", "ENGINE_ENV",
    "plan", "Plan", "fast", "record_grad_norms", "record_gates", "GradRecord", "GateRecord",
]
