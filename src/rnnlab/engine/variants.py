"""The variants scan: LSTM/GRU variants and state regularisers as one autograd.Function.

Same structure as the reference scan (:mod:`rnnlab.engine.scan`): the input projection of all
steps in one matmul (its layer norm, if any, runs a step at a time inside the loop), the time loop over the
cell's ``forward_step`` (:mod:`rnnlab.cells.lstm_variants`, :mod:`rnnlab.cells.gru_variants`),
hand-written BPTT over its ``backward_step``, and the weight gradients in one matmul each.

The scan adds what belongs to the sequence rather than to the cell's equations:

- recurrent dropout (Gal & Ghahramani, 2016): the recurrent input is h^in_{t-1} = h_{t-1} ⊙ m,
  one mask m (B, P) per sequence, already scaled by 1/(1 − p);
- zoneout (Krueger et al., 2016): h_t = z_t ⊙ h_{t-1} + (1 − z_t) ⊙ h̃_t and likewise for c, where
  h̃_t, c̃_t are what the cell computed; z_t (T, B, h) is a 0/1 mask in training and the constant
  p (the mask's expectation) in evaluation;
- variable lengths, exactly as the reference scan (``mask`` (T, B, 1)).

Their backward, in the loop: ∂L/∂h̃_t = (1 − z_t) ⊙ dh_t and dh_{t-1} += z_t ⊙ dh_t (c alike);
dh_{t-1} += m ⊙ ∂L/∂h^in_{t-1} (the cell returns ∂L/∂h^in); dW_hh = Σ_t du_t^T h^in_{t-1}.

Masks are drawn by the caller from torch's RNG and passed in as tensors, so the backward is exact
and a seed makes a run repeatable. DropConnect on W_hh needs no scan support: the layer passes the
masked weight and autograd carries the product.

Saved for backward, besides the cell's own buffers: hs (T+1, B, P), cs (T+1, B, h), the
normalised input projection x̂ (B, G·h) and its r (B, G, 1) per step with layer norm, the recurrent
inputs h^in (T, B, P) with recurrent dropout, h̃ / c̃ (T, B, h) with zoneout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rnnlab.cells import gru_variants, layernorm, lstm_variants
from rnnlab.engine import record
from rnnlab.engine.autodiff import backward_needs_autodiff, recompute_grads, torch_variant_scan, use_autodiff
from rnnlab.engine.compile_cache import tag_compile_caches
from rnnlab.engine.compiler_marks import assume_constant_result
from rnnlab.engine.dispatch import plan, resolve_engine
from rnnlab.engine.eager_op import gradient_to_come, output_grads
from rnnlab.engine.kernels import VARIANT_KERNELS as _KERNELS
from rnnlab.engine.scan import ScanTag, input_and_weight_grads, wanted

CELLS = {"lstm": lstm_variants, "gru": gru_variants}


@dataclass(frozen=True)
class VariantSpec:
    """The static part of a variants scan: which equations. ``cell`` is an ``LSTMVariant`` or a
    ``GRUVariant``; the masks and parameters are tensors passed to :func:`variant_scan`."""

    mode: str                                            # "lstm" or "gru"
    cell: lstm_variants.LSTMVariant | gru_variants.GRUVariant


class _VariantScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, tag, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh,
                ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c, peephole, rd_mask, zo_h, zo_c):
        is_lstm = spec.mode == "lstm"
        cell, v = CELLS[spec.mode], spec.cell
        T, B, I = x.shape
        GH = w_ih.shape[0]
        G = len(v.blocks)
        H = GH // G
        has_bias = b_ih is not None

        # 1. Input side: xa = [γ_ih ⊙ LN](W_ih x) + b_ih (+ b_hh for the LSTM). The projection is one
        #    matmul for all steps; with layer norm, its normalisation runs inside the loop, a step
        #    at a time, where the step's slice is still in cache (whole-sequence passes over
        #    (T, B, G·h) cost more in memory traffic than they save in calls).
        x2 = x.reshape(T * B, I)
        bias = None
        if has_bias:
            bias = b_ih + b_hh if is_lstm else b_ih
        xhat: list[Tensor] = []                                              # per step: x̂ (B, G·h), r (B, G, 1)
        rstd_x: list[Tensor] = []
        if v.layer_norm:
            xw = torch.mm(x2, w_ih.t()).view(T, B, GH)
            xa_t = x.new_empty(B, GH)
            if bias is None:
                bias = x.new_zeros(GH)
        elif bias is not None:
            xa = torch.addmm(bias, x2, w_ih.t()).view(T, B, GH)
        else:
            xa = torch.mm(x2, w_ih.t()).view(T, B, GH)

        w_hh_t = w_hh.t()
        hs = x.new_empty(T + 1, B, H)
        hs[0] = h0
        cs = x.new_empty(T + 1, B, H) if is_lstm else None
        if is_lstm:
            cs[0] = c0
        h_ins = hs[:-1] if rd_mask is None else x.new_empty(T, B, H)
        htil = x.new_empty(T, B, H) if zo_h is not None else None
        ctil = x.new_empty(T, B, H) if zo_c is not None else None
        saved = (lstm_variants.LSTMSaved if is_lstm else gru_variants.GRUSaved)(v, T, B, H, x)
        params = (lstm_variants.LSTMParams(ln_gain_hh, ln_gain_c, ln_bias_c, peephole) if is_lstm
                  else gru_variants.GRUParams(ln_gain_hh))

        # 2. The time loop.
        for t in range(T):
            h_prev = hs[t]
            if v.layer_norm:
                xh, r = layernorm.normalize(xw[t], G)                        # x̂_t = LN(W_ih x_t)
                xhat.append(xh)
                rstd_x.append(r)
                torch.addcmul(bias, ln_gain_ih, xh, out=xa_t)                # xa = γ_ih ⊙ x̂ + b
            else:
                xa_t = xa[t]
            if rd_mask is not None:
                torch.mul(h_prev, rd_mask, out=h_ins[t])                     # h^in = h_{t-1} ⊙ m
            h_out = hs[t + 1] if htil is None else htil[t]
            if is_lstm:
                c_out = cs[t + 1] if ctil is None else ctil[t]
                cell.forward_step(v, t, xa_t, h_ins[t], cs[t], w_hh_t, params, saved, c_out, h_out)
            else:
                cell.forward_step(v, t, xa_t, h_ins[t], h_prev, w_hh_t, b_hh, params, saved, h_out)
            if htil is not None:                                             # zoneout: h = h̃ + z (h_{t-1} − h̃)
                torch.sub(h_prev, htil[t], out=hs[t + 1]).mul_(zo_h[t]).add_(htil[t])
            if ctil is not None:
                torch.sub(cs[t], ctil[t], out=cs[t + 1]).mul_(zo_c[t]).add_(ctil[t])
            if mask is not None:
                m = mask[t]                                                  # (B, 1): carry the state past the end
                hs[t + 1].copy_(torch.where(m, hs[t + 1], hs[t]))
                if cs is not None:
                    cs[t + 1].copy_(torch.where(m, cs[t + 1], cs[t]))

        if record.gate_recording():
            blocks = saved.gates.detach().chunk(len(cell.GATES), dim=2)
            record.emit_gates(record.GateRecord(
                tag.layer, tag.direction, spec.mode,
                {n: tag.to_forward_time(g) for n, g in zip(cell.GATES, blocks)},
            ))

        ctx.spec, ctx.tag, ctx.has_bias, ctx.saved = spec, tag, has_bias, saved
        ctx.xhat, ctx.rstd_x = xhat, rstd_x
        ctx.save_for_backward(x, mask, w_ih, w_hh, b_hh, ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c,
                              peephole, rd_mask, zo_h, zo_c, hs, cs, h_ins if rd_mask is not None else None,
                              ctil, h0, c0, b_ih)
        out = hs[1:] if mask is None else hs[1:] * mask                      # (T, B, h)
        if is_lstm:
            return out, hs[T].clone(), cs[T].clone()
        return out, hs[T].clone()

    @staticmethod
    def buffers(ctx) -> list[Tensor | None]:
        """After forward: the VARIANT_BUFFERS it left on ctx (the per-step ones stacked)."""
        hs, cs, h_ins, ctil = ctx.saved_tensors[13:17]
        s, v = ctx.saved, ctx.spec.cell
        lstm = ctx.spec.mode == "lstm"
        before = not lstm and v.reset == "before"
        out = [hs, cs, h_ins, ctil, s.gates, s.y if lstm else (None if before else s.hw), s.rh if before else None]
        if not v.layer_norm:
            return out + [None] * 8
        out += [torch.stack(ctx.xhat), torch.stack(ctx.rstd_x)]
        if before:                                   # per step: [r z block, n block]
            return out + [torch.stack([u[0] for u in s.uhat]), torch.stack([r[0] for r in s.rstd_u]), None, None,
                          torch.stack([u[1] for u in s.uhat]), torch.stack([r[1] for r in s.rstd_u])]
        return out + [torch.stack(s.uhat), torch.stack(s.rstd_u),
                      torch.stack(s.chat) if lstm else None, torch.stack(s.rstd_c) if lstm else None, None, None]

    @staticmethod
    def restore(ctx, args, buffers) -> None:
        """What forward leaves on ctx, from its apply's ``args`` and :meth:`buffers`."""
        (spec, tag, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c, peephole,
         rd_mask, zo_h, zo_c) = args
        hs, cs, h_ins, ctil, gates, y_or_hw, rh, xhat, rstd_x, uhat, rstd_u, chat, rstd_c, uhat_n, rstd_u_n = buffers
        lstm, v = spec.mode == "lstm", spec.cell
        T, B, _ = x.shape
        saved = (lstm_variants.LSTMSaved if lstm else gru_variants.GRUSaved)(v, T, B, hs.shape[2], x)
        saved.gates = gates
        if lstm:
            saved.y = y_or_hw
        elif v.reset == "after":
            saved.hw = y_or_hw
        else:
            saved.rh = rh
        ctx.xhat, ctx.rstd_x = [], []
        if v.layer_norm:
            ctx.xhat, ctx.rstd_x = list(xhat.unbind(0)), list(rstd_x.unbind(0))
            if not lstm and v.reset == "before":
                saved.uhat = [list(p) for p in zip(uhat.unbind(0), uhat_n.unbind(0))]
                saved.rstd_u = [list(p) for p in zip(rstd_u.unbind(0), rstd_u_n.unbind(0))]
            else:
                saved.uhat, saved.rstd_u = list(uhat.unbind(0)), list(rstd_u.unbind(0))
            if lstm:
                saved.chat, saved.rstd_c = list(chat.unbind(0)), list(rstd_c.unbind(0))
        ctx.spec, ctx.tag, ctx.has_bias, ctx.saved = spec, tag, b_ih is not None, saved
        ctx.save_for_backward(x, mask, w_ih, w_hh, b_hh, ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c,
                              peephole, rd_mask, zo_h, zo_c, hs, cs, h_ins, ctil, h0, c0, b_ih)

    @staticmethod
    def backward(ctx, d_out, d_h_last, d_c_last=None):
        (x, mask, w_ih, w_hh, b_hh, ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c, peephole,
         rd_mask, zo_h, zo_c, hs, cs, h_ins, ctil, h0, c0, b_ih) = ctx.saved_tensors
        if backward_needs_autodiff(d_out, d_h_last, d_c_last):
            return (None, None) + _autodiff_backward(
                ctx.spec, ctx.needs_input_grad[2:], (d_out, d_h_last, d_c_last),
                x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c, peephole,
                rd_mask, zo_h, zo_c)
        xhat, rstd_x = ctx.xhat, ctx.rstd_x
        spec, tag, saved = ctx.spec, ctx.tag, ctx.saved
        is_lstm = spec.mode == "lstm"
        cell, v = CELLS[spec.mode], spec.cell
        T, B, I = x.shape
        GH = w_ih.shape[0]
        G = len(v.blocks)
        H = GH // G
        if h_ins is None:
            h_ins = hs[:-1]
        params = (lstm_variants.LSTMParams(ln_gain_hh, ln_gain_c, ln_bias_c, peephole) if is_lstm
                  else gru_variants.GRUParams(ln_gain_hh))

        dxa = x.new_empty(T, B, GH)
        if v.layer_norm:
            dxw = x.new_empty(T, B, GH)                                      # ∂L/∂(W_ih x) before the LN
            acc_ih = x.new_zeros(B, GH)                                      # Σ_t dxa ⊙ x̂ (for γ_ih)
        # ∂L/∂(what b_hh is added to): the LSTM and the "before" GRU add it beside xa.
        dhw = dxa if (is_lstm or v.reset == "before") else x.new_empty(T, B, GH)
        du = dhw if not v.layer_norm else x.new_empty(T, B, GH)              # ∂L/∂(W_hh h^in)
        if is_lstm:
            factors = cell.backward_prepare(v, saved, cs[:-1])
            acc = cell.new_accumulators(v, B, H, x)
            dz = x.new_empty(B, H)                                           # scratch
            dc = d_c_last.clone()
        else:
            factors = cell.backward_prepare(v, saved, hs[:-1], h_ins)
            dc = None
        keep_h = None if zo_h is None else 1.0 - zo_h                        # ∂h_t/∂h̃_t
        keep_c = None if zo_c is None else 1.0 - zo_c
        dh = d_h_last.clone()
        rec_h, rec_c = record.new_grad_norms(x, T, B, cell=is_lstm)
        if mask is not None:
            d_out = d_out * mask                                             # padded outputs were constant zeros

        # 3. BPTT.
        for t in range(T - 1, -1, -1):
            dh = dh + d_out[t]                                               # total ∂L/∂h_t
            if rec_h is not None:
                rec_h[t] = torch.linalg.vector_norm(dh, dim=1)
                if is_lstm and ctil is not None:
                    rec_c[t] = torch.linalg.vector_norm(dc, dim=1)           # c_t reaches the loss only via later steps
            dh_in0, dc_in0 = dh, dc
            if mask is not None:                                             # an invalid step is the identity
                m = mask[t]
                dh = dh * m
                dc = dc * m if dc is not None else None
            dh_cell = dh if keep_h is None else dh * keep_h[t]               # ∂L/∂h̃_t
            if is_lstm:
                dc_cell = dc.clone() if keep_c is None else dc * keep_c[t]   # ∂L/∂c̃_t (updated in place)
                dh_rec, dc_prev = cell.backward_step(v, t, dh_cell, dc_cell, factors, params, saved, w_hh,
                                                     acc, dz, dxa[t], du[t])
                if rec_c is not None and ctil is None:
                    rec_c[t] = torch.linalg.vector_norm(dc_cell, dim=1)      # now the total ∂L/∂c_t
                if keep_c is not None:
                    dc_prev.addcmul_(dc, zo_c[t])                            # c_t = z c_{t-1} + ...
                direct = None
            else:
                dh_rec, direct = cell.backward_step(v, t, dh_cell, factors, params, saved, w_hh,
                                                    dxa[t], dhw[t], du[t])
            if v.layer_norm:                                                 # input LN, this step
                acc_ih.addcmul_(dxa[t], xhat[t])
                layernorm.normalize_backward(dxa[t] * ln_gain_ih, xhat[t], rstd_x[t], G, out=dxw[t])
            dh_prev = dh_rec if rd_mask is None else dh_rec.mul_(rd_mask)     # through h^in = h ⊙ m
            if direct is not None:
                dh_prev.add_(direct)
            if keep_h is not None:
                dh_prev.addcmul_(dh, zo_h[t])                                # h_t = z h_{t-1} + ...
            if mask is not None:
                dh_prev = torch.where(m, dh_prev, dh_in0)
                if is_lstm:
                    dc_prev = torch.where(m, dc_prev, dc_in0)
            dh = dh_prev
            if is_lstm:
                dc = dc_prev

        if rec_h is not None:
            record.emit_grad_norms(tag, spec.mode, rec_h, rec_c)

        # 4. Weight gradients, one matmul (or one reduction) each.
        need = ctx.needs_input_grad
        dxa2 = dxa.view(T * B, GH)
        if v.layer_norm:
            d_gain_ih = acc_ih.sum(0) if need[10] else None
            dxw2 = dxw.view(T * B, GH)
        else:
            d_gain_ih, dxw2 = None, dxa2
        dx = torch.mm(dxw2, w_ih).view(T, B, I) if need[2] else None
        dw_ih = torch.mm(dxw2.t(), x.reshape(T * B, I)) if need[6] else None
        if is_lstm:
            dw_hh = torch.mm(du.view(T * B, GH).t(), h_ins.reshape(T * B, H))
            pg = cell.param_grads(v, acc, dxa, cs[:-1], cs[1:] if ctil is None else ctil)
        else:
            dw_hh = cell.recurrent_weight_grad(v, saved, du, h_ins)
            pg = cell.param_grads(v, saved, dhw)
        db_ih = db_hh = None
        if ctx.has_bias:
            db_ih = dxa2.sum(0) if need[8] else None
            db_hh = dhw.view(T * B, GH).sum(0) if need[9] else None
        dh0 = dh if need[4] else None
        dc0 = dc if (is_lstm and need[5]) else None
        if is_lstm:
            extra = (pg.ln_gain_hh, pg.ln_gain_c, pg.ln_bias_c, pg.peephole)
        else:
            extra = (pg.ln_gain_hh, None, None, None)
        return (None, None, dx, None, dh0, dc0, dw_ih, dw_hh if need[7] else None, db_ih, db_hh,
                d_gain_ih, *extra, None, None, None)


def _autodiff_backward(spec, need, grads, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, peep,
                       rd_mask, zo_h, zo_c) -> tuple:
    """Gradients of (x, mask, h0, ..., zo_c) by autograd through
    :func:`rnnlab.engine.autodiff.torch_variant_scan` (double backward, batched gradients). The
    masks get none: they are drawn, not learned."""
    def run(x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, peep):
        return torch_variant_scan(spec, x, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_gain_ih=g_ih, ln_gain_hh=g_hh,
                                  ln_gain_c=g_c, ln_bias_c=b_c, peephole=peep, rd_mask=rd_mask,
                                  zoneout_h=zo_h, zoneout_c=zo_c, mask=mask)

    inputs = [x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, peep]
    got = recompute_grads(run, inputs, [need[0]] + list(need[2:13]), grads)
    return (got[0], None, *got[1:], None, None, None)


def variant_scan(
    spec: VariantSpec, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
    b_ih: Tensor | None = None, b_hh: Tensor | None = None, *,
    ln_gain_ih: Tensor | None = None, ln_gain_hh: Tensor | None = None,
    ln_gain_c: Tensor | None = None, ln_bias_c: Tensor | None = None, peephole: Tensor | None = None,
    rd_mask: Tensor | None = None, zoneout_h: Tensor | None = None, zoneout_c: Tensor | None = None,
    mask: Tensor | None = None, tag: ScanTag | None = None, fast: bool = False, engine: str | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run a variant cell over x (T, B, I); returns (out (T, B, h), h_T (B, h), c_T or None).

    rd_mask (B, h): recurrent-dropout mask, scaled; zoneout_h / zoneout_c (T, B, h) or a view
    broadcast to it: the zoneout masks (1 = keep the previous value). ``engine``: the layer's
    engine name (else ``fast`` says "fast" or "reference"); :func:`rnnlab.engine.plan` says
    whether the C++ loop covers the case. Inputs are not validated.
    """
    engine = engine or ("fast" if fast else "reference")
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting() and _variant_ops_ready():
        return _op_scan(spec, engine, x, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c,
                        peephole, rd_mask, zoneout_h, zoneout_c, mask)
    p = plan(spec.mode, x.shape[1], h0.shape[-1], steps=x.shape[0], dtype=x.dtype, device=x.device.type,
             masked=mask is not None, engine=engine, variant=spec.cell,
             state_masks=rd_mask is not None or zoneout_h is not None or zoneout_c is not None,
             recording=record.grad_recording(),
             autodiff=use_autodiff(x, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c,
                                   peephole, rd_mask, zoneout_h, zoneout_c))
    if p.loop == "autograd":                                         # torch.func transforms, forward AD
        return torch_variant_scan(spec, x, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_gain_ih=ln_gain_ih,
                                  ln_gain_hh=ln_gain_hh, ln_gain_c=ln_gain_c, ln_bias_c=ln_bias_c,
                                  peephole=peephole, rd_mask=rd_mask, zoneout_h=zoneout_h,
                                  zoneout_c=zoneout_c, mask=mask)
    tag = tag or ScanTag()
    fn, args = _function_and_args(p, spec, tag, x, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_gain_ih, ln_gain_hh, ln_gain_c,
                                  ln_bias_c, peephole, rd_mask, zoneout_h, zoneout_c, mask)
    res = fn.apply(*args)
    if spec.mode == "lstm":
        return res
    out, h = res
    return out, h, None


def _function_and_args(p, spec, tag, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, peep, rd_mask, zo_h,
                       zo_c, mask) -> tuple[type, tuple]:
    """The autograd.Function that runs the plan's loop, with its apply's arguments."""
    if p.loop == "variants C++":
        return _LNLSTMFast, (tag, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c)
    return _VariantScan, (spec, tag, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, peep, rd_mask,
                          zo_h, zo_c)


# ----------------------------------------------------------------------------- fast path
# The layer-norm LSTM's loop in C++ (variants_kernels.cpp): same equations, saved quantities and
# backward as the Python step above, which stays the reference the tests compare it with. Where
# it runs (layer_norm=True only, on the fast engine) is the dispatch's call (dispatch.plan).


LN_LSTM_BUFFERS = 10    # hs, cs, gates, xhat, rx, uhat, ru, chat, rc, y


def ln_lstm_buffer_shapes(T, B, H) -> list[tuple]:
    """The shapes of the C++ layer-norm LSTM loop's buffers (variants_kernels.cpp's ln_lstm_forward):
    hs, cs (T+1, B, H); gates, xhat, uhat (T, B, 4H); rx, ru (T, B, 4); chat, y (T, B, H); rc (T, B)."""
    G = 4 * H
    return [(T + 1, B, H), (T + 1, B, H), (T, B, G), (T, B, G), (T, B, 4), (T, B, G), (T, B, 4), (T, B, H),
            (T, B), (T, B, H)]


# The Python variants scan: what its backward reads that its forward computed, in a fixed order,
# None where the variant has none: hs, cs (LSTM), h_ins (recurrent dropout), ctil (zoneout of c),
# gates, then the LSTM's y (tanh of the cell) or the "after" GRU's hw (W_hh h), the "before" GRU's
# rh (r ⊙ h); with layer norm, its per-step normalised values and reciprocal deviations stacked
# over time: x̂ and r_x, û and r_u (the "before" GRU's r and z blocks; its n block in uhat_n and
# rstd_u_n), the LSTM's ĉ and r_c.
VARIANT_BUFFERS = ("hs", "cs", "h_ins", "ctil", "gates", "y_or_hw", "rh",
                   "xhat", "rstd_x", "uhat", "rstd_u", "chat", "rstd_c", "uhat_n", "rstd_u_n")


def variant_buffer_shapes(spec: VariantSpec, T, B, H, G, rd_mask: bool, zo_c: bool) -> list[tuple | None]:
    """The shapes of VARIANT_BUFFERS (G: the gate blocks of W_ih, len(spec.cell.blocks))."""
    lstm = spec.mode == "lstm"
    before = not lstm and spec.cell.reset == "before"
    ln = spec.cell.layer_norm
    shapes = [(T + 1, B, H), (T + 1, B, H) if lstm else None, (T, B, H) if rd_mask else None,
              (T, B, H) if zo_c else None, (T, B, (4 if lstm else 3) * H),
              (T, B, H) if lstm else (None if before else (T, B, 3 * H)), (T, B, H) if before else None]
    if not ln:
        return shapes + [None] * 8
    u = (T, B, 2 * H) if before else (T, B, G * H)
    r = (T, B, 2, 1) if before else (T, B, G, 1)
    return shapes + [(T, B, G * H), (T, B, G, 1), u, r, (T, B, H) if lstm else None, (T, B, 1, 1) if lstm else None,
                     (T, B, H) if before else None, (T, B, 1, 1) if before else None]


class _LNLSTMFast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tag, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c):
        T, B, I = x.shape
        GH = w_ih.shape[0]
        xw = _KERNELS.module.matmul(x.reshape(T * B, I), w_ih.t(), None).view(T, B, GH)   # W_ih x (gemm.h); LN'd in place
        bias = b_ih + b_hh if b_ih is not None else x.new_zeros(GH)
        hs, cs, gates, xhat, rx, uhat, ru, chat, rc, y = _KERNELS.module.ln_lstm_forward(
            xw, bias, g_ih.contiguous(), g_hh.contiguous(), g_c.contiguous(), b_c.contiguous(),
            h0.contiguous(), c0.contiguous(), w_hh.contiguous(), layernorm.EPS)
        if record.gate_recording():
            blocks = gates.detach().chunk(4, dim=2)
            record.emit_gates(record.GateRecord(tag.layer, tag.direction, "lstm",
                                                {n: tag.to_forward_time(g) for n, g in zip(lstm_variants.GATES, blocks)}))
        _LNLSTMFast.restore(ctx, (tag, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c),
                            (hs, cs, gates, xhat, rx, uhat, ru, chat, rc, y))
        return hs[1:], hs[T].clone(), cs[T].clone()

    @staticmethod
    def restore(ctx, args, buffers) -> None:
        """What forward leaves on ctx, from its apply's ``args`` and the loop's ``buffers`` (hs, cs,
        gates, xhat, rx, uhat, ru, chat, rc, y; shapes: :func:`ln_lstm_buffer_shapes`)."""
        tag, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c = args
        ctx.has_bias = b_ih is not None
        ctx.save_for_backward(x, w_ih, w_hh, g_ih, g_hh, g_c, *buffers, h0, c0, b_ih, b_hh, b_c)

    @staticmethod
    def backward(ctx, d_out, d_h_last, d_c_last):
        (x, w_ih, w_hh, g_ih, g_hh, g_c, hs, cs, gates, xhat, rx, uhat, ru, chat, rc, y,
         h0, c0, b_ih, b_hh, b_c) = ctx.saved_tensors
        if backward_needs_autodiff(d_out, d_h_last, d_c_last):
            n = ctx.needs_input_grad                 # apply's order: tag, x, h0, c0, w_ih, w_hh, b_ih, b_hh, ...
            got = _autodiff_backward(VariantSpec("lstm", lstm_variants.LSTMVariant(layer_norm=True)),
                                     (n[1], False, *n[2:], False), (d_out, d_h_last, d_c_last),
                                     x, None, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, None,
                                     None, None, None)
            return (None, got[0], *got[2:12])
        T, B, I = x.shape
        GH = w_ih.shape[0]
        dxw, du, dh0, dc0, d_g_ih, d_g_hh, db, d_g_c, d_b_c = _KERNELS.module.ln_lstm_backward(
            d_out.contiguous(), d_h_last.contiguous(), d_c_last.contiguous(), g_ih.contiguous(), g_hh.contiguous(),
            g_c.contiguous(), w_hh.contiguous(), cs, gates, xhat, rx, uhat, ru, chat, rc, y)
        need = ctx.needs_input_grad                  # apply's order: tag, x, h0, c0, w_ih, w_hh, b_ih, b_hh, ...
        dx, dw_ih, dw_hh, _, _ = input_and_weight_grads(  # the biases' sum comes from the kernel
            wanted(need, (1, 4, 5, 6, 7), has_bias=False), dxw, du, x, w_ih, hs,
            mm=lambda a, b: _KERNELS.module.matmul(a, b, None))
        db = db if ctx.has_bias else None
        return None, dx, dh0, dc0, dw_ih, dw_hh, db, db, d_g_ih, d_g_hh, d_g_c, d_b_c


# ------------------------------------------------------------------ under torch.compile
# The scan above is a Python loop: traced by dynamo it unrolls, one graph per sequence length.
# Under torch.compile (not export, whose programs must run without rnnlab's Python code) each
# call is instead one opaque operator, rnnlab_variants::scan, whose implementation is the eager
# scan (the plan's Function, its forward and backward run by hand), so one graph serves every
# length. When a gradient is to come, the operator also returns the buffers the Function's
# backward reads (the layer-norm LSTM's C++ loop's; VARIANT_BUFFERS, the Python scan's, its
# per-step layer-norm values stacked over time, since an operator's outputs are fixed in number),
# and the backward operator runs that backward on them: one forward per training step, as eager,
# with eager's numbers.

_TENSORS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "g_ih", "g_hh", "g_c", "b_c", "peep", "rd_mask", "zo_h",
            "zo_c", "mask")
_LEARNED = 12                      # the first 12 take gradients; the masks are drawn, not learned
_BUFFERS = 15                      # at most this many buffers the operator returns (VARIANT_BUFFERS)
_STAT_SLOTS = {VARIANT_BUFFERS.index(n) for n in ("rstd_x", "rstd_u", "rstd_c", "rstd_u_n")}
_SCAN_RESULT = tuple[(Tensor,) * (3 + _BUFFERS)]   # out, h_T, c_T, then the buffers


def _spec_code(spec: VariantSpec) -> str:
    v = spec.cell
    if spec.mode == "lstm":
        return f"lstm:{int(v.layer_norm)}:{int(v.peephole)}:{int(v.coupled)}"
    return f"gru:{int(v.layer_norm)}:{v.reset}"


def _spec_from_code(code: str) -> VariantSpec:
    mode, *f = code.split(":")
    if mode == "lstm":
        return VariantSpec("lstm", lstm_variants.LSTMVariant(f[0] == "1", f[1] == "1", f[2] == "1"))
    return VariantSpec("gru", gru_variants.GRUVariant(f[0] == "1", f[1]))


class _Ctx:
    """What the Functions' forward and backward use of ctx, to run both outside autograd."""

    def __init__(self, needs: tuple):
        self.needs_input_grad = needs
        self.saved_tensors: tuple = ()

    def save_for_backward(self, *tensors) -> None:
        self.saved_tensors = tensors


def _eager_function(code: str, engine: str, ts: list):
    spec = _spec_from_code(code)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, peep, rd_mask, zo_h, zo_c, mask = ts
    p = plan(spec.mode, x.shape[1], h0.shape[-1], steps=x.shape[0], dtype=x.dtype, device=x.device.type,
             masked=mask is not None, engine=engine, variant=spec.cell,
             state_masks=rd_mask is not None or zo_h is not None or zo_c is not None)
    return _function_and_args(p, spec, ScanTag(), *ts[:-1], mask)


def _buffer_kind(code: str, engine: str, x: Tensor, masked: bool, state_masks: bool) -> str:
    """Which buffers the operator returns when a gradient is to come: "ln" (the layer-norm LSTM's
    C++ loop) or "variant" (the Python variants scan). From dtype, device, engine and options,
    never from a size, so the fake implementation agrees with the operator."""
    spec = _spec_from_code(code)
    p = plan(spec.mode, 1, 1, dtype=x.dtype, device=x.device.type, masked=masked, engine=engine,
             variant=spec.cell, state_masks=state_masks)
    return "ln" if p.loop == "variants C++" else "variant"


def _op_forward(code: str, engine: str, ts: list[Tensor | None], save: bool) -> tuple[Tensor, ...]:
    fn, args = _eager_function(code, engine, ts)
    ctx = _Ctx((False,) * len(args))
    with torch.no_grad():
        res = fn.forward(ctx, *args)
    out, h = res[0], res[1]
    kept: list[Tensor | None] = []
    if save and fn is _LNLSTMFast:
        kept = list(ctx.saved_tensors[6:6 + LN_LSTM_BUFFERS])
    elif save:
        kept = _VariantScan.buffers(ctx)
    if kept:
        out = out.clone()          # a view of hs, which is returned too: an operator's outputs may not alias
    kept = [t if t is not None else ts[0].new_empty(0) for t in kept]
    kept += [ts[0].new_empty(0) for _ in range(_BUFFERS - len(kept))]
    return (out, h, res[2] if len(res) > 2 else ts[0].new_empty(0), *kept)


def _op_backward(code: str, engine: str, grads: list[Tensor], needs: list[bool],
                 ts: list[Tensor | None], buffers: list[Tensor]) -> list[Tensor]:
    fn, args = _eager_function(code, engine, ts)
    where = {id(t): k for k, t in enumerate(args) if isinstance(t, Tensor)}
    wanted_args = [False] * len(args)
    for k, t in enumerate(ts[:_LEARNED]):
        if t is not None and needs[k]:
            wanted_args[where[id(t)]] = True
    ctx = _Ctx(tuple(wanted_args))
    with torch.no_grad():                        # ctx as the forward operator's run left it
        if fn is _LNLSTMFast:
            _LNLSTMFast.restore(ctx, args, buffers[:LN_LSTM_BUFFERS])
            n_out = 3
        else:
            _VariantScan.restore(ctx, args, [b if b.numel() else None for b in buffers[:len(VARIANT_BUFFERS)]])
            n_out = 3 if args[0].mode == "lstm" else 2
        got = fn.backward(ctx, *grads[:n_out])
    # an operator's outputs may not alias its inputs or each other (the Functions return one
    # tensor for both biases, and may hand back an incoming gradient)
    taken = {t.untyped_storage().data_ptr() for t in (*grads, *ts) if t is not None and t.numel()}
    result = []
    for k, t in enumerate(ts[:_LEARNED]):
        g = got[where[id(t)]] if t is not None and needs[k] else None
        if g is None:
            g = ts[0].new_empty(0)
        elif g.untyped_storage().data_ptr() in taken:
            g = g.clone()
        if g.numel():
            taken.add(g.untyped_storage().data_ptr())
        result.append(g)
    return result


def _register_ops() -> None:
    lib = "rnnlab_variants"

    # one argument per tensor (autograd of an operator sees a list argument as one input)
    @torch.library.custom_op(f"{lib}::scan", mutates_args=())
    def scan_op(code: str, engine: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
                b_ih: Tensor | None, b_hh: Tensor | None, g_ih: Tensor | None, g_hh: Tensor | None, g_c: Tensor | None,
                b_c: Tensor | None, peep: Tensor | None, rd_mask: Tensor | None, zo_h: Tensor | None,
                zo_c: Tensor | None, mask: Tensor | None, save: bool) -> _SCAN_RESULT:
        return _op_forward(code, engine, [x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, peep, rd_mask, zo_h,
                                          zo_c, mask], save)

    @scan_op.register_fake
    def _(code, engine, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, peep, rd_mask, zo_h, zo_c, mask, save):
        T, B, H = x.shape[0], x.shape[1], h0.shape[-1]
        c = x.new_empty(B, H) if code.startswith("lstm") else x.new_empty(0)
        kind = save and _buffer_kind(code, engine, x, mask is not None,
                                     rd_mask is not None or zo_h is not None or zo_c is not None)
        shapes = []
        if kind == "ln":
            shapes = ln_lstm_buffer_shapes(T, B, H)
        elif kind == "variant":
            shapes = variant_buffer_shapes(_spec_from_code(code), T, B, H, w_ih.shape[0] // H, rd_mask is not None,
                                           zo_c is not None)
        # the layer norms' reciprocal deviations come in the dtype torch's kernel gives them (float32
        # for half precision on CUDA)
        stat = layernorm.normalize(x.new_zeros(1, 2), 2)[1].dtype
        kept = [x.new_empty(0) if s is None else
                x.new_empty(s, dtype=stat if kind == "variant" and k in _STAT_SLOTS else x.dtype)
                for k, s in enumerate(shapes)]
        kept += [x.new_empty(0) for _ in range(_BUFFERS - len(kept))]
        return (x.new_empty(T, B, H), x.new_empty(B, H), c, *kept)

    @torch.library.custom_op(f"{lib}::scan_backward", mutates_args=())
    def scan_backward_op(code: str, engine: str, grads: list[Tensor], needs: list[bool],
                         ts: list[Tensor | None], buffers: list[Tensor]) -> list[Tensor]:
        return _op_backward(code, engine, grads, needs, ts, buffers)

    @scan_backward_op.register_fake
    def _(code, engine, grads, needs, ts, buffers):
        return [t.new_empty(t.shape) if t is not None and n else ts[0].new_empty(0)
                for t, n in zip(ts[:_LEARNED], needs)]

    def setup_context(ctx, inputs, output):
        ts = inputs[2:-1]
        ctx.code, ctx.engine, ctx.present = inputs[0], inputs[1], [t is not None for t in ts]
        buffers = output[3:]
        ctx.mark_non_differentiable(*buffers)
        ctx.kept = bool(buffers[0].numel())     # a constant of the graph (the fake's shapes say it too)
        ctx.save_for_backward(*[t for t in ts if t is not None], *(buffers if ctx.kept else ()))

    def backward(ctx, d_out, d_h, d_c, *_):
        it = iter(ctx.saved_tensors)
        ts = [next(it) if present else None for present in ctx.present]
        buffers = list(it)
        # c_T has h_T's shape (no projections with cell options)
        grads = output_grads(ts[0], ts[1], ts[1] if ctx.code.startswith("lstm") else None, d_out, d_h, d_c)
        needs = [bool(n) for n in ctx.needs_input_grad[2:2 + _LEARNED]]
        got = torch.ops.rnnlab_variants.scan_backward(ctx.code, ctx.engine, grads, needs, ts, buffers)
        return (None, None, *[g if n else None for g, n in zip(got, needs)], *[None] * (len(ts) - _LEARNED), None)

    scan_op.register_autograd(backward, setup_context=setup_context)


@assume_constant_result
def _variant_ops_ready() -> bool:
    """Registers the operators once, when first traced (a constant to the compilers)."""
    global _ops_registered
    tag_compile_caches()       # every trace, as ops.register
    if not _ops_registered:
        _register_ops()
        _ops_registered = True
    return True


_ops_registered = False


def _op_scan(spec, engine, *ts) -> tuple[Tensor, Tensor, Tensor | None]:
    # The engine goes in resolved (a constant of the graph, and of its cache key), so the operator
    # runs the loop its fake implementation described even after set_engine changes "auto"'s choice.
    save = gradient_to_come(*ts[:_LEARNED])
    out, h, c, *_ = torch.ops.rnnlab_variants.scan(_spec_code(spec), resolve_engine(engine), *ts, save)
    return out, h, (c if spec.mode == "lstm" else None)
