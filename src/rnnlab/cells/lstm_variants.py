r"""LSTM variants torch.nn lacks: layer norm, peepholes, a coupled input-forget gate.

Same notation and gate order (i, f, g, o) as :mod:`rnnlab.cells.lstm`. With every option off the
equations are exactly that module's. ``u_t = W_hh h^in_{t-1}`` is the recurrent projection, where
h^in is the recurrent input (h_{t-1}, or h_{t-1} ⊙ m with recurrent dropout, applied by the scan).

Layer norm (``layer_norm=True``; Ba et al., 2016; per gate block, see
:mod:`rnnlab.cells.layernorm`; the torch.nn biases are the shifts of the gate LNs, as in haste)::

    a_t = γ_ih ⊙ LN(W_ih x_t) + b_ih + γ_hh ⊙ LN(u_t) + b_hh          a = [a_i|a_f|a_g|a_o]
    h_t = o_t ⊙ tanh(γ_c ⊙ LN(c_t) + β_c)

Peepholes (``peephole=True``; Gers & Schmidhuber, 2000; diagonal weights p = [p_i|p_f|p_o])::

    i_t = σ(a_i + p_i ⊙ c_{t-1})    f_t = σ(a_f + p_f ⊙ c_{t-1})    o_t = σ(a_o + p_o ⊙ c_t)

Coupled gates (``coupled_gates=True``; CIFG in Greff et al., 2017): f_t = 1 − i_t. There is no
forget block, so W_ih, W_hh, b_ih, b_hh stack three blocks [i|g|o] (3h rows) and p = [p_i|p_o].

In every variant::

    g_t = tanh(a_g)      c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t      h_t = o_t ⊙ tanh(z_t)
    z_t = γ_c ⊙ LN(c_t) + β_c  with layer norm, else z_t = c_t.

The input side xa = γ_ih ⊙ LN(W_ih x_t) + b_ih + b_hh (without layer norm W_ih x_t + b_ih + b_hh)
is computed by the scan (the matmul for all steps at once) and handed to the step. Zoneout (applied by the scan) mixes the c_t and h_t written here
with the previous state; c_t above is then the cell's candidate c̃_t (Krueger et al., 2016).

Backward, from saved post-activations (σ' = y(1−y), tanh' = 1−y²). dh = ∂L/∂h_t and dc = ∂L/∂c_t
from later steps; the factors K are computed for all steps at once before the loop::

    do        = dh ⊙ y_t ⊙ o(1 − o)                      y_t = tanh(z_t)
    dz        = dh ⊙ o ⊙ (1 − y_t²)
    dc       += LN_backward(dz ⊙ γ_c)  (or dz)  + do ⊙ p_o
    di        = dc ⊙ g ⊙ i(1 − i)                      coupled: dc ⊙ (g − c_{t-1}) ⊙ i(1 − i)
    df        = dc ⊙ c_{t-1} ⊙ f(1 − f)                (not coupled)
    dg        = dc ⊙ i ⊙ (1 − g²)
    dc_{t-1}  = dc ⊙ f + di ⊙ p_i + df ⊙ p_f
    da        = [di|df|dg|do]  (or [di|dg|do]);  du = LN_backward(da ⊙ γ_hh) (or da)
    dh^in     = du W_hh
    dγ_hh = Σ da ⊙ û,   dγ_c = Σ dz ⊙ ĉ,   dβ_c = Σ dz   (summed step by step),   dp_i = Σ di ⊙ c_{t-1}, ... dp_o = Σ do ⊙ c_t

Saved per step (T steps, B batch): gates [i|f|g|o] (T, B, 4h) (f = 1 − i when coupled), y (T, B, h);
with layer norm, per step, û (B, G·h), its r (B, G, 1), ĉ (B, h), its r (B, 1, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from rnnlab.cells import layernorm

GATES: tuple[str, ...] = ("i", "f", "g", "o")   # the recorded (post-activation) gates
HAS_CELL_STATE = True


@dataclass(frozen=True)
class LSTMVariant:
    """Which equations the step uses (all False: torch.nn's LSTM)."""

    layer_norm: bool = False
    peephole: bool = False
    coupled: bool = False

    @property
    def blocks(self) -> tuple[str, ...]:
        """Row blocks of W_ih / W_hh / the biases."""
        return ("i", "g", "o") if self.coupled else ("i", "f", "g", "o")

    @property
    def peephole_blocks(self) -> tuple[str, ...]:
        return ("i", "o") if self.coupled else ("i", "f", "o")


class LSTMParams(NamedTuple):
    ln_gain_hh: Tensor | None     # γ_hh (G·h,)
    ln_gain_c: Tensor | None      # γ_c (h,)
    ln_bias_c: Tensor | None      # β_c (h,)
    peephole: Tensor | None       # p (3h,) [p_i|p_f|p_o] or (2h,) [p_i|p_o]


class LSTMSaved:
    """Buffers the forward writes and the backward reads; shapes in the module docstring."""

    def __init__(self, v: LSTMVariant, T: int, B: int, H: int, like: Tensor) -> None:
        G = len(v.blocks)
        self.gates = like.new_empty(T, B, 4 * H)
        self.y = like.new_empty(T, B, H)
        self.pre = like.new_empty(B, G * H)            # scratch: pre-activations of one step
        if v.layer_norm:                               # per step: torch's LN kernel allocates them
            self.uhat: list[Tensor] = [None] * T       # (B, G·h)
            self.rstd_u: list[Tensor] = [None] * T     # (B, G, 1)
            self.chat: list[Tensor] = [None] * T       # (B, h)
            self.rstd_c: list[Tensor] = [None] * T     # (B, 1, 1)


def forward_step(
    v: LSTMVariant, t: int, xa: Tensor, h_in: Tensor, c_prev: Tensor, w_hh_t: Tensor,
    p: LSTMParams, s: LSTMSaved, c_out: Tensor, h_out: Tensor,
) -> None:
    """Step t. xa (B, G·h) input side with biases; h_in (B, h) recurrent input; c_prev (B, h);
    w_hh_t = W_hh^T (h, G·h). Writes c_out ← c_t, h_out ← h_t and the saved buffers at t."""
    B, H = c_prev.shape
    G = len(v.blocks)
    pre = s.pre
    if v.layer_norm:
        uhat, s.rstd_u[t] = layernorm.normalize(torch.mm(h_in, w_hh_t), G)  # û_t = LN(W_hh h^in)
        s.uhat[t] = uhat
        torch.addcmul(xa, p.ln_gain_hh, uhat, out=pre)                   # a = xa + γ_hh ⊙ û
    else:
        torch.addmm(xa, h_in, w_hh_t, out=pre)                           # a = xa + W_hh h^in
    gates = s.gates[t]
    i, f, g, o = gates.chunk(4, dim=1)
    if v.coupled:
        a_i, a_g, a_o = pre.chunk(3, dim=1)
        if v.peephole:
            a_i.addcmul_(p.peephole[:H], c_prev)                         # + p_i ⊙ c_{t-1}
        torch.sigmoid(a_i, out=i)                                        # i_t = σ(a_i)
        torch.mul(i, -1.0, out=f).add_(1.0)                              # f_t = 1 − i_t
    else:
        a_if, a_g, a_o = pre[:, : 2 * H], pre[:, 2 * H : 3 * H], pre[:, 3 * H :]
        if v.peephole:                                                   # + [p_i|p_f] ⊙ c_{t-1}
            a_if.view(B, 2, H).addcmul_(p.peephole[: 2 * H].view(2, H), c_prev.unsqueeze(1))
        torch.sigmoid(a_if, out=gates[:, : 2 * H])                       # i_t, f_t = σ(a_i), σ(a_f)
    torch.tanh(a_g, out=g)                                               # g_t = tanh(a_g)
    torch.mul(f, c_prev, out=c_out).addcmul_(i, g)                       # c_t = f c_{t-1} + i g
    if v.peephole:
        a_o.addcmul_(p.peephole[-H:], c_out)                             # + p_o ⊙ c_t
    torch.sigmoid(a_o, out=o)                                            # o_t = σ(a_o)
    y = s.y[t]
    if v.layer_norm:
        chat, s.rstd_c[t] = layernorm.normalize(c_out, 1)                # ĉ_t
        s.chat[t] = chat
        torch.addcmul(p.ln_bias_c, p.ln_gain_c, chat, out=y).tanh_()     # y = tanh(γ_c ĉ + β_c)
    else:
        torch.tanh(c_out, out=y)                                         # y = tanh(c_t)
    torch.mul(o, y, out=h_out)                                           # h_t = o_t ⊙ y_t


class LSTMFactors(NamedTuple):
    k_c: Tensor      # (T, B, 3 or 2, h): dc ↦ [di|df|dg] (or [di|dg])
    k_o: Tensor      # (T, B, h): dh ↦ do = y o(1 − o)
    k_z: Tensor      # (T, B, h): dh ↦ dz = o (1 − y²)


def backward_prepare(v: LSTMVariant, s: LSTMSaved, c_prevs: Tensor) -> LSTMFactors:
    """The step-independent derivative factors for all steps at once (c_prevs = c_0..c_{T-1})."""
    T, B, H = c_prevs.shape
    i, f, g, o = s.gates.chunk(4, dim=2)
    di_da = i * (1.0 - i)                                               # σ'(a_i)
    dg_da = 1.0 - g * g                                                 # tanh'(a_g)
    k_c = c_prevs.new_empty(T, B, 2 if v.coupled else 3, H)
    if v.coupled:
        torch.sub(g, c_prevs, out=k_c[:, :, 0]).mul_(di_da)             # (g − c_{t-1}) i(1 − i)
    else:
        torch.mul(g, di_da, out=k_c[:, :, 0])                           # g i(1 − i)
        torch.mul(f, 1.0 - f, out=k_c[:, :, 1]).mul_(c_prevs)           # c_{t-1} f(1 − f)
    torch.mul(i, dg_da, out=k_c[:, :, -1])                              # i (1 − g²)
    k_o = s.y * o * (1.0 - o)
    k_z = o * (1.0 - s.y * s.y)
    return LSTMFactors(k_c, k_o, k_z)


def new_accumulators(v: LSTMVariant, B: int, H: int, like: Tensor) -> LSTMParams:
    """Per-sample sums for the layer-norm gains and bias, filled step by step (B, ·)."""
    if not v.layer_norm:
        return LSTMParams(None, None, None, None)
    G = len(v.blocks)
    return LSTMParams(like.new_zeros(B, G * H), like.new_zeros(B, H), like.new_zeros(B, H), None)


def backward_step(
    v: LSTMVariant, t: int, dh: Tensor, dc: Tensor, k: LSTMFactors, p: LSTMParams, s: LSTMSaved,
    w_hh: Tensor, acc: LSTMParams, dz_out: Tensor, da_out: Tensor, du_out: Tensor,
) -> tuple[Tensor, Tensor]:
    """Gradients of step t. dh (B, h) = ∂L/∂h_t; dc (B, h) = ∂L/∂c_t from later steps, updated in
    place to the total. Writes da_out (B, G·h) = ∂L/∂a and du_out (B, G·h) = ∂L/∂u (the same tensor
    as da_out without layer norm); dz_out (B, h) is scratch; adds this step's terms to ``acc``.
    Returns (∂L/∂h^in, ∂L/∂c_{t-1})."""
    B, H = dh.shape
    G = len(v.blocks)
    gates = s.gates[t]
    do = da_out[:, -H:]
    torch.mul(dh, k.k_o[t], out=do)                                      # do = dh y o(1 − o)
    torch.mul(dh, k.k_z[t], out=dz_out)                                  # dz = dh o (1 − y²)
    if v.layer_norm:
        acc.ln_gain_c.addcmul_(dz_out, s.chat[t])                        # dγ_c += dz ⊙ ĉ
        acc.ln_bias_c.add_(dz_out)                                       # dβ_c += dz
        dc.add_(layernorm.normalize_backward(dz_out * p.ln_gain_c, s.chat[t], s.rstd_c[t], 1))
    else:
        dc.add_(dz_out)
    if v.peephole:
        dc.addcmul_(do, p.peephole[-H:])                                 # o peeks at c_t
    nk = k.k_c.shape[2]
    torch.mul(dc.unsqueeze(1), k.k_c[t], out=da_out[:, : nk * H].view(B, nk, H))  # [di|df|dg]
    dc_prev = dc * gates[:, H : 2 * H]                                   # dc ⊙ f
    if v.peephole:
        dc_prev.addcmul_(da_out[:, :H], p.peephole[:H])                  # + di ⊙ p_i
        if not v.coupled:
            dc_prev.addcmul_(da_out[:, H : 2 * H], p.peephole[H : 2 * H])  # + df ⊙ p_f
    if v.layer_norm:
        acc.ln_gain_hh.addcmul_(da_out, s.uhat[t])                       # dγ_hh += da ⊙ û
        layernorm.normalize_backward(da_out * p.ln_gain_hh, s.uhat[t], s.rstd_u[t], G, out=du_out)
    return torch.mm(du_out, w_hh), dc_prev                               # dh^in = du W_hh


def param_grads(v: LSTMVariant, acc: LSTMParams, da: Tensor, c_prevs: Tensor, c_new: Tensor) -> LSTMParams:
    """Gradients of the variant parameters: the accumulators summed over the batch; the peepholes
    from the whole-sequence buffers (T, B, ·) da = ∂L/∂a, c_prevs = c_0..c_{T-1}, c_new = the c_t
    each step computed."""
    H = c_prevs.shape[2]
    d_gain_hh = d_gain_c = d_bias_c = d_peep = None
    if v.layer_norm:
        d_gain_hh, d_gain_c, d_bias_c = (a.sum(0) for a in acc[:3])
    if v.peephole:
        terms = [(da[..., :H] * c_prevs).sum((0, 1))]                    # dp_i
        if not v.coupled:
            terms.append((da[..., H : 2 * H] * c_prevs).sum((0, 1)))     # dp_f
        terms.append((da[..., -H:] * c_new).sum((0, 1)))                 # dp_o
        d_peep = torch.cat(terms)
    return LSTMParams(d_gain_hh, d_gain_c, d_bias_c, d_peep)
