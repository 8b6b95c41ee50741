"""Instruments: what the engine can record while it runs, at no cost when switched off.

``record_grad_norms`` collects, during backward, the per-sample norms ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖
for the LSTM) at every step — the gradient that reaches the hidden state at step t from every
later use of it. ``record_gates`` collects the post-activation gates of every forward.

    >>> import torch, rnnlab
    >>> from rnnlab.engine import record_grad_norms, record_gates
    >>> lstm = rnnlab.LSTM(3, 4)
    >>> x = torch.randn(6, 2, 3)
    >>> with record_grad_norms() as grads, record_gates() as gates:
    ...     out, _ = lstm(x)
    ...     out[-1].sum().backward()
    >>> rec = grads.layers[0]
    >>> tuple(rec.dh.shape), tuple(rec.dc.shape), sorted(gates.layers[0].gates)
    ((6, 2), (6, 2), ['f', 'g', 'i', 'o'])

The recorders are process-wide (not thread-local), because autograd may run a backward pass
on one of its own threads (on CUDA it does).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

from torch import Tensor


@dataclass
class GradRecord:
    layer: int
    direction: int                      # 0 forward in time, 1 reversed (bidirectional)
    cell: str                           # "rnn", "lstm" or "gru"
    dh: Tensor                          # (T, B): ‖∂L/∂h_t‖ per sample, t in forward time order
    dc: Tensor | None = None            # (T, B): ‖∂L/∂c_t‖ per sample (LSTM only)


@dataclass
class GateRecord:
    layer: int
    direction: int
    cell: str
    gates: dict[str, Tensor]            # name -> (T, B, H), post-activation, detached


@dataclass(eq=False)   # identity equality: leaving a block removes *this* recorder, not an equal one
class Recorder:
    """Collects records; ``layers`` lists them sorted by (layer, direction)."""

    records: list = field(default_factory=list)

    @property
    def layers(self) -> list:
        return sorted(self.records, key=lambda r: (r.layer, r.direction))

    def clear(self) -> None:
        self.records.clear()


_grad_recorders: list[Recorder] = []
_gate_recorders: list[Recorder] = []


def grad_recording() -> bool:
    return bool(_grad_recorders)


def gate_recording() -> bool:
    return bool(_gate_recorders)


def emit_grad(record: GradRecord) -> None:
    for r in _grad_recorders:
        r.records.append(record)


def new_grad_norms(like: Tensor, T: int, B: int, cell: bool) -> tuple[Tensor | None, Tensor | None]:
    """Buffers (T, B) a backward loop fills with ‖∂L/∂h_t‖ and, for a cell with a memory
    (``cell``), ‖∂L/∂c_t‖, in the scan's time order; (None, None) while no gradient recorder is on."""
    if not grad_recording():
        return None, None
    return like.new_empty(T, B), (like.new_empty(T, B) if cell else None)


def emit_grad_norms(tag, cell: str, dh: Tensor, dc: Tensor | None = None) -> None:
    """A GradRecord of one layer-direction (``tag``: its ScanTag) from the norms a backward loop
    filled in the scan's time order (new_grad_norms), put back in forward time."""
    emit_grad(GradRecord(tag.layer, tag.direction, cell, tag.to_forward_time(dh),
                         None if dc is None else tag.to_forward_time(dc)))


def emit_gates(record: GateRecord) -> None:
    for r in _gate_recorders:
        r.records.append(record)


@contextlib.contextmanager
def record_grad_norms() -> Iterator[Recorder]:
    """Record ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖) for every backward through the engine inside the block."""
    rec = Recorder()
    _grad_recorders.append(rec)
    try:
        yield rec
    finally:
        _grad_recorders.remove(rec)


@contextlib.contextmanager
def record_gates() -> Iterator[Recorder]:
    """Record the gate activations of every forward through the engine inside the block."""
    rec = Recorder()
    _gate_recorders.append(rec)
    try:
        yield rec
    finally:
        _gate_recorders.remove(rec)
