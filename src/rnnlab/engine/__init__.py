"""The engine: one autograd.Function that runs a cell over a sequence with hand-written BPTT."""

from rnnlab.engine.record import GateRecord, GradRecord, record_gates, record_grad_norms
from rnnlab.engine.scan import scan

__all__ = ["scan", "record_grad_norms", "record_gates", "GradRecord", "GateRecord"]
