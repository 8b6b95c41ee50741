"""Recomputing (checkpointed) scan: train very long sequences in bounded activation memory.

A scan saves O(T) activations for its backward (hs, gates, cs: about 6·B·H numbers per LSTM
step). ``checkpointed_scan`` runs the forward in segments of ``segment`` steps without saving
anything but each segment's initial state, then in backward recomputes one segment at a time
(with the inner engine: its hand-written BPTT, not autograd through the equations) and backprops
through it. Activation memory becomes O(T/segment + segment) states instead of O(T) — with the
default segment ≈ √T, O(√T) — for one extra forward pass of compute. The layer output itself,
(T, B, P), is still returned whole: it is the caller's tensor, not an activation of the scan.

Used as an engine (``rnnlab.LSTM(..., engine="checkpoint")``) or directly with a chosen segment.
The gradient and gate records are stitched back into one record per scan, as the other engines
give.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rnnlab.engine import record
from rnnlab.engine.autodiff import backward_needs_autodiff, torch_scan, use_autodiff
from rnnlab.engine.dispatch import get_engine
from rnnlab.engine.scan import ScanTag, autodiff_backward
from rnnlab.errors import ConfigError


class _Collect:
    """Route the process-wide recorders' records of inner scans to a local list, to stitch them."""

    def __init__(self, grads: bool):
        self.lst = record._grad_recorders if grads else record._gate_recorders
        self.local = record.Recorder()

    def __enter__(self):
        self.saved = list(self.lst)
        self.lst[:] = [self.local] if self.saved else []
        return self.local

    def __exit__(self, *exc):
        self.lst[:] = self.saved


def _bounds(T: int, segment: int) -> list[tuple[int, int]]:
    return [(s, min(s + segment, T)) for s in range(0, T, segment)]


class _Checkpointed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mode, tag, segment, inner, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        run = get_engine(inner)
        T = x.shape[0]
        is_lstm = mode == "lstm"
        starts = []                                           # the state entering each segment
        out = None                                            # (T, B, P), filled segment by segment
        h, c = h0, c0
        with torch.no_grad(), _Collect(grads=False) as gates:
            for s, e in _bounds(T, segment):
                starts.append((h, c))
                m = None if mask is None else mask[s:e]
                o, h, c = run(mode, x[s:e], h, c, w_ih, w_hh, b_ih, b_hh, w_hr, mask=m,
                              tag=ScanTag(tag.layer, tag.direction))
                if out is None:
                    out = o.new_empty(T, *o.shape[1:])
                out[s:e] = o
        if gates.records:                                     # one record, in forward time
            first = gates.records[0]
            record.emit_gates(record.GateRecord(first.layer, first.direction, first.cell, {
                n: tag.to_forward_time(torch.cat([r.gates[n] for r in gates.records], 0)) for n in first.gates
            }))
        ctx.mode, ctx.tag, ctx.segment, ctx.inner = mode, tag, segment, inner
        # h0 and c0 are the caller's tensors: saved (not kept as attributes) so that autograd
        # refuses a backward after they were changed in place; later starts are this function's own.
        ctx.later_starts = starts[1:]
        ctx.save_for_backward(x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        return (out, h, c) if is_lstm else (out, h)

    @staticmethod
    def backward(ctx, d_out, dh, dc=None):
        x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = ctx.saved_tensors
        starts = [(h0, c0), *ctx.later_starts]
        if backward_needs_autodiff(d_out, dh, dc):
            n = ctx.needs_input_grad
            return (None, None, None, None) + autodiff_backward(
                ctx.mode, n[4:], (d_out, dh, dc), x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        mode, tag, run = ctx.mode, ctx.tag, get_engine(ctx.inner)
        is_lstm = mode == "lstm"
        need = ctx.needs_input_grad
        weights = [w_ih, w_hh, b_ih, b_hh, w_hr]
        leaves = [None if w is None else w.detach().requires_grad_(True) for w in weights]
        grads = [None if w is None else torch.zeros_like(w) for w in weights]
        dx = torch.empty_like(x) if need[4] else None
        bounds = _bounds(x.shape[0], ctx.segment)
        # The recomputation's gate records are duplicates of the forward's: collected and dropped.
        with _Collect(grads=True) as rec, _Collect(grads=False):
            for (s, e), (h_s, c_s) in zip(reversed(bounds), reversed(starts)):
                # (autocast off: the forward ran outside it, and a backward inside an autocast block
                # would recompute in mixed dtypes)
                with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
                    xs = x[s:e].detach().requires_grad_(need[4])
                    h_s = h_s.detach().requires_grad_(True)
                    c_s = c_s.detach().requires_grad_(True) if is_lstm else None
                    m = None if mask is None else mask[s:e]
                    o, h_e, c_e = run(mode, xs, h_s, c_s, *leaves, mask=m, tag=ScanTag(tag.layer, tag.direction))
                    outputs, grad_outputs = [o, h_e], [d_out[s:e], dh]
                    if is_lstm:
                        outputs.append(c_e)
                        grad_outputs.append(dc)
                    inputs = [t for t in [xs, h_s, c_s, *leaves] if t is not None and t.requires_grad]
                    got = torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)
                got = dict(zip(map(id, inputs), got))
                if dx is not None:
                    dx[s:e] = got[id(xs)]
                dh = got[id(h_s)]
                dc = got[id(c_s)] if is_lstm else None
                for i, leaf in enumerate(leaves):
                    if leaf is not None and got.get(id(leaf)) is not None:
                        grads[i] += got[id(leaf)]
        if rec.records:                                       # segments came last-first
            rs = list(reversed(rec.records))
            r0 = rs[0]
            record.emit_grad(record.GradRecord(
                r0.layer, r0.direction, r0.cell, tag.to_forward_time(torch.cat([r.dh for r in rs], 0)),
                None if r0.dc is None else tag.to_forward_time(torch.cat([r.dc for r in rs], 0)),
            ))
        return (None, None, None, None, dx, None, dh if need[6] else None, dc if need[7] else None,
                *[g if n else None for g, n in zip(grads, need[8:])])


def checkpointed_scan(
    mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
    b_ih: Tensor | None = None, b_hh: Tensor | None = None, w_hr: Tensor | None = None,
    mask: Tensor | None = None, tag: ScanTag | None = None, *, segment: int | None = None,
    inner: str = "auto",
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``scan`` that keeps only segment-boundary states and recomputes each segment in backward.

    ``segment`` steps per segment (default ⌈√T⌉); ``inner`` names the engine that runs a segment.
    """
    T = x.shape[0]
    if segment is None:
        segment = max(1, math.ceil(math.sqrt(T)))
    if isinstance(segment, bool) or not isinstance(segment, int) or segment < 1:
        raise ConfigError(f"segment: expected an int >= 1, got {segment!r}")
    if inner == "checkpoint":
        raise ConfigError("inner: expected an engine other than 'checkpoint', got 'checkpoint'")
    if use_autodiff(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):     # torch.func transforms, forward AD
        return torch_scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask)
    tag = tag or ScanTag()
    res = _Checkpointed.apply(mode, tag, segment, inner, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    if mode == "lstm":
        return res
    out, h = res
    return out, h, None
