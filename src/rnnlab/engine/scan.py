"""Run one cell family over a sequence as a single autograd.Function, with hand-written BPTT.

Forward:
  1. the input projection of all T steps in one matmul: xw = x W_ih^T + b        (T, B, G·h)
  2. the time loop, where each step adds the recurrent term and applies the cell's equations
     (``rnnlab.cells.<family>.forward_step``), writing into preallocated buffers;
Backward (BPTT, reverse time):
  3. the loop again, backwards, calling the cell's ``backward_step`` and one matmul per step
     for dh_{t-1} = dhw_t W_hh;
  4. the weight gradients in one matmul each after the loop:
     dW_ih = dxw^T x,  dW_hh = dhw^T h_{0..T-1},  db = Σ dxw,  dx = dxw W_ih.

Saved for backward (activation memory, linear in T):
  hs    (T+1, B, p)   hidden states h_0..h_T (the output is a view of hs[1:])
  gates (T, B, G·h)   post-activation gates (LSTM, GRU; for the RNN the gates *are* hs[1:])
  cs    (T+1, B, h)   LSTM cells c_0..c_T
  hn    (T, B, h)     GRU: W_hn h_{t-1} + b_hn, needed for ∂/∂r

Variable lengths: ``mask`` (T, B, 1) marks valid steps. At an invalid step the state is carried
unchanged (h_t = h_{t-1}), the output is 0, and in backward the step is the identity, so the
final state of every sequence is the state at its last valid step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.cells import CELL_NAMES, FAMILIES
from rnnlab.engine import record
from rnnlab.engine.autodiff import backward_needs_autodiff, recompute_grads, torch_scan, use_autodiff


class ScanTag:
    """Where a scan sits in a layer stack, for the instruments. ``reverse_index`` (T, B) maps scan
    time back to forward time for a reversed direction (None for a forward direction)."""

    __slots__ = ("layer", "direction", "reverse_index")

    def __init__(self, layer: int = 0, direction: int = 0, reverse_index: Tensor | None = None):
        self.layer, self.direction, self.reverse_index = layer, direction, reverse_index

    def to_forward_time(self, v: Tensor) -> Tensor:
        """v (T, B, ...) in scan time -> forward time."""
        if self.reverse_index is None:
            return v
        idx = self.reverse_index
        if v.dim() == 3:
            idx = idx.unsqueeze(-1).expand_as(v)
        return v.gather(0, idx)


def wanted(needs_input_grad, positions, has_bias: bool = True) -> tuple[bool, ...]:
    """(x, W_ih, W_hh, b_ih, b_hh) wanted by autograd, from a Function's ``needs_input_grad`` and
    those arguments' positions in its ``apply``; the biases only when the layer has them."""
    x, w_ih, w_hh, b_ih, b_hh = (needs_input_grad[i] for i in positions)
    return x, w_ih, w_hh, b_ih and has_bias, b_hh and has_bias


def _row_sums(t2: Tensor) -> Tensor:
    return t2.sum(0)


def input_and_weight_grads(need, dxw: Tensor, dhw: Tensor, x: Tensor, w_ih: Tensor, hs: Tensor, mm=torch.mm,
                           colsum=_row_sums):
    """After the BPTT loop: ∂L/∂x and the weight and bias gradients, one matmul (or sum) each.

    dxw (T, B, G·H) is ∂L/∂(x W_ih^T + b_ih) and dhw (T, B, G·H) is ∂L/∂(h W_hh^T + b_hh) (the same
    tensor where both pre-activations are summed before any nonlinearity); hs (T+1, B, P) holds
    h_0..h_T. ``need`` says which of (x, W_ih, W_hh, b_ih, b_hh) want a gradient (see
    :func:`wanted`), so nothing is computed that nobody asked for. ``mm`` multiplies two matrices
    (the fast engines pass their own, which may call oneDNN); ``colsum`` sums a (rows, N) matrix
    over its rows (the compiled operators pass their own). Where dhw is dxw (LSTM, RNN) the two bias
    gradients are one sum, returned as two tensors (two leaves)."""
    need_x, need_w_ih, need_w_hh, need_b_ih, need_b_hh = need
    T, B, GH = dxw.shape
    dxw2, dhw2 = dxw.view(T * B, GH), dhw.view(T * B, GH)
    dx = mm(dxw2, w_ih).view(T, B, x.shape[2]) if need_x else None
    dw_ih = mm(dxw2.t(), x.reshape(T * B, x.shape[2])) if need_w_ih else None
    dw_hh = mm(dhw2.t(), hs[:-1].reshape(T * B, hs.shape[2])) if need_w_hh else None
    db_ih = colsum(dxw2) if need_b_ih else None
    db_hh = None
    if need_b_hh:
        db_hh = db_ih.clone() if dhw is dxw and db_ih is not None else colsum(dhw2)
    return dx, dw_ih, dw_hh, db_ih, db_hh


def scan_forward(mode, tag, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
    """Steps 1-2 without autograd: (out, h_T, c_T or None, saved), where ``saved`` = (hs, gates,
    cs, hn) are the buffers :func:`scan_backward` reads (gates None for the RNN, whose gates are
    hs[1:]; cs, hn None where the family has none). ``out`` is a view of hs[1:] without a mask."""
    family = FAMILIES[mode]
    relu = mode == "rnn_relu"
    T, B, I = x.shape
    GH = w_ih.shape[0]
    H = GH // family.NUM_BLOCKS
    P = w_hh.shape[1]                                  # h, or the projection size
    has_bias = b_ih is not None

    # 1. Input projection for all steps in one matmul. LSTM and RNN add both biases here;
    #    the GRU keeps b_hh for its step (b_hn sits inside the reset product).
    x2 = x.reshape(T * B, I)
    if has_bias:
        b = b_ih + b_hh if family.SHARED_PREACT_GRAD else b_ih
        xw = torch.addmm(b, x2, w_ih.t()).view(T, B, GH)
    else:
        xw = torch.mm(x2, w_ih.t()).view(T, B, GH)

    w_hh_t = w_hh.t()
    hs = x.new_empty(T + 1, B, P)
    hs[0] = h0
    cs = hn = None
    if mode == "lstm":
        gates = x.new_empty(T, B, GH)
        cs = x.new_empty(T + 1, B, H)
        cs[0] = c0
        scratch = x.new_empty(B, H)
        w_hr_t = None if w_hr is None else w_hr.t()
    elif mode == "gru":
        gates = x.new_empty(T, B, GH)
        hn = x.new_empty(T, B, H)
        scratch = x.new_empty(B, GH)
    else:
        gates = hs[1:]                                 # the RNN's activation is h_t itself (GATES_ARE_OUTPUT)

    # 2. The time loop.
    for t in range(T):
        if mode == "lstm":
            family.forward_step(xw[t], hs[t], cs[t], w_hh_t, w_hr_t, gates[t], cs[t + 1], hs[t + 1], scratch)
        elif mode == "gru":
            family.forward_step(xw[t], hs[t], w_hh_t, b_hh, gates[t], hn[t], hs[t + 1], scratch)
        else:
            family.forward_step(xw[t], hs[t], w_hh_t, hs[t + 1], relu)
        if mask is not None:
            m = mask[t]                                # (B, 1): carry the state past the end
            hs[t + 1].copy_(torch.where(m, hs[t + 1], hs[t]))
            if cs is not None:
                cs[t + 1].copy_(torch.where(m, cs[t + 1], cs[t]))

    if record.gate_recording():
        # Every scan emits a record, the RNN's with an empty dict (record_gates' contract), so
        # consumers see one record per layer and direction whatever the family.
        names = family.GATES
        blocks = gates.detach().chunk(len(names), dim=2) if names else ()
        record.emit_gates(record.GateRecord(
            tag.layer, tag.direction, CELL_NAMES[mode],
            {n: tag.to_forward_time(g) for n, g in zip(names, blocks)},
        ))

    saved_gates = None if family.GATES_ARE_OUTPUT else gates  # the RNN's "gates" alias hs[1:]
    out = hs[1:] if mask is None else hs[1:] * mask    # (T, B, p); zero at padded steps
    return out, hs[T].clone(), (cs[T].clone() if mode == "lstm" else None), (hs, saved_gates, cs, hn)


def scan_backward(mode, tag, need, has_bias, d_out, d_h_last, d_c_last, x, mask, w_ih, w_hh, w_hr, saved):
    """Steps 3-4: the gradients (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr) from the
    incoming ones and :func:`scan_forward`'s ``saved``; ``need`` says which of (x, h0, c0, W_ih,
    W_hh, b_ih, b_hh) are wanted (None for the others; dW_hr comes whenever there is W_hr)."""
    hs, gates, cs, hn = saved
    family = FAMILIES[mode]
    relu = mode == "rnn_relu"
    T, B, I = x.shape
    GH = w_ih.shape[0]
    H = GH // family.NUM_BLOCKS
    if gates is None:
        gates = hs[1:]

    dh = d_h_last.clone()                              # ∂L/∂h_t arriving from later steps
    dc = d_c_last.clone() if mode == "lstm" else None  # cloned: the LSTM step updates dc in place
    dxw = x.new_empty(T, B, GH)
    dhw = dxw if family.SHARED_PREACT_GRAD else x.new_empty(T, B, GH)
    dw_hr = torch.zeros_like(w_hr) if w_hr is not None else None
    scratch = x.new_empty(B, H)
    rec_h, rec_c = record.new_grad_norms(x, T, B, cell=mode == "lstm")
    if mask is not None:
        d_out = d_out * mask                           # padded outputs were constant zeros

    # 3. BPTT.
    for t in range(T - 1, -1, -1):
        dh = dh + d_out[t]                             # total ∂L/∂h_t
        if rec_h is not None:
            rec_h[t] = torch.linalg.vector_norm(dh, dim=1)
        dh_in, dc_in = dh, dc
        if mask is not None:
            # An invalid (padded) step is the identity: feed the cell zeros, so its gate
            # gradients (and dW_hr) vanish, and pass dh, dc straight through below.
            m = mask[t]
            dh, dc = dh * m, (dc * m if dc is not None else None)
        direct = None
        if mode == "lstm":
            dc_prev = family.backward_step(dh, dc, gates[t], cs[t + 1], cs[t], w_hr, dw_hr, dxw[t], scratch)
            if rec_c is not None:
                rec_c[t] = torch.linalg.vector_norm(dc, dim=1)  # dc now holds the total ∂L/∂c_t
        elif mode == "gru":
            direct = family.backward_step(dh, gates[t], hn[t], hs[t], dxw[t], dhw[t])
        else:
            family.backward_step(dh, hs[t + 1], dxw[t], relu)
        dh_prev = torch.mm(dhw[t], w_hh)               # dh_{t-1} = dhw_t W_hh
        if direct is not None:
            dh_prev.add_(direct)
        if mask is not None:
            dh_prev = torch.where(m, dh_prev, dh_in)
            if mode == "lstm":
                dc_prev = torch.where(m, dc_prev, dc_in)
        dh = dh_prev
        if mode == "lstm":
            dc = dc_prev

    if rec_h is not None:
        record.emit_grad_norms(tag, CELL_NAMES[mode], rec_h, rec_c)

    # 4. Weight gradients, one matmul each.
    dx, dw_ih, dw_hh, db_ih, db_hh = input_and_weight_grads(
        (need[0], need[3], need[4], need[5] and has_bias, need[6] and has_bias), dxw, dhw, x, w_ih, hs)
    dh0 = dh if need[1] else None
    dc0 = dc if (mode == "lstm" and need[2]) else None
    return dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr


class _Scan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mode, tag, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        out, h_last, c_last, saved = scan_forward(mode, tag, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        ctx.mode, ctx.tag, ctx.has_bias = mode, tag, b_ih is not None
        ctx.save_for_backward(x, mask, w_ih, w_hh, b_hh, w_hr, *saved, h0, c0, b_ih)
        if mode == "lstm":
            return out, h_last, c_last
        return out, h_last

    @staticmethod
    def backward(ctx, d_out, d_h_last, d_c_last=None):
        x, mask, w_ih, w_hh, b_hh, w_hr, hs, gates, cs, hn, h0, c0, b_ih = ctx.saved_tensors
        if backward_needs_autodiff(d_out, d_h_last, d_c_last):
            return (None, None) + autodiff_backward(ctx.mode, ctx.needs_input_grad[2:], (d_out, d_h_last, d_c_last),
                                                    x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        need = [ctx.needs_input_grad[i] for i in (2, 4, 5, 6, 7, 8, 9)]
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = scan_backward(
            ctx.mode, ctx.tag, need, ctx.has_bias, d_out, d_h_last, d_c_last, x, mask, w_ih, w_hh, w_hr,
            (hs, gates, cs, hn))
        return None, None, dx, None, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr


def autodiff_backward(mode, need, grads, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr=None) -> tuple:
    """The gradients of (x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) by autograd through
    :func:`rnnlab.engine.autodiff.torch_scan` (double backward, batched gradients); ``need``: the
    Function's needs_input_grad for those arguments, in that order."""
    def run(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        return torch_scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask)

    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = recompute_grads(
        run, [x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr], [need[i] for i in (0, 2, 3, 4, 5, 6, 7, 8)], grads)
    return dx, None, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr


def scan(
    mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
    b_ih: Tensor | None = None, b_hh: Tensor | None = None, w_hr: Tensor | None = None,
    mask: Tensor | None = None, tag: ScanTag | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run the ``mode`` cell ("rnn_tanh", "rnn_relu", "lstm", "gru") over x (T, B, I).

    Returns (out (T, B, p), h_T (B, p), c_T (B, h) or None). ``mask`` (T, B, 1) bool marks valid
    steps for variable-length batches. Inputs are not validated here: the layers do that.
    """
    if use_autodiff(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):     # torch.func transforms, forward AD
        return torch_scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask)
    tag = tag or ScanTag()
    res = _Scan.apply(mode, tag, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    if mode == "lstm":
        return res
    out, h = res
    return out, h, None
