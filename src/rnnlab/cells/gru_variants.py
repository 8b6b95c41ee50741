r"""GRU variants torch.nn lacks: the reset gate before the matmul, and layer norm.

Same notation and gate order (r, z, n) as :mod:`rnnlab.cells.gru`; h^in_{t-1} is the recurrent
input (h_{t-1}, or h_{t-1} ⊙ m with recurrent dropout, applied by the scan). Let
xa = W_ih x_t + b_ih (with layer norm: γ_ih ⊙ LN(W_ih x_t) + b_ih; computed by the scan, the matmul
for all steps at once) and R(v) = v + b_h (with layer norm: γ_hh ⊙ LN(v) + b_h, per gate block).

``reset="after"`` (torch.nn / cuDNN; the default)::

    hw    = R(W_hh h^in_{t-1})                       [hw_r|hw_z|hw_n], b_h = b_hh
    r_t   = σ(xa_r + hw_r)        z_t = σ(xa_z + hw_z)
    n_t   = tanh(xa_n + r_t ⊙ hw_n)

``reset="before"`` (Cho et al., 2014; d2l's from-scratch GRU)::

    r_t, z_t as above, from hw_rz = R(W_h{r,z} h^in_{t-1})
    n_t   = tanh(xa_n + R(W_hn (r_t ⊙ h^in_{t-1})))    reset applied before the matmul

Both::

    h_t   = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

Backward, given dh = ∂L/∂h_t; the factors K are computed for all steps before the loop::

    da_n  = dh ⊙ (1 − z)(1 − n²)                     (∂L/∂ of tanh's argument)
    da_z  = dh ⊙ (h_{t-1} − n) z(1 − z)
    after:   da_r = da_n ⊙ hw_n ⊙ r(1 − r);   dhw = [da_r | da_z | da_n ⊙ r]
             du = LN_backward(dhw ⊙ γ_hh) (or dhw);   dh^in = du W_hh
    before:  du_n = LN_backward(da_n ⊙ γ_n) (or da_n);   d(rh) = du_n W_hn
             da_r = d(rh) ⊙ h^in ⊙ r(1 − r);   dhw = [da_r | da_z | da_n]
             du_rz = LN_backward(dhw_rz ⊙ γ_rz);   dh^in = du_rz W_h{r,z} + d(rh) ⊙ r
    dh_{t-1} = dh^in (through the scan's dropout mask) + dh ⊙ z       (the direct path)
    dxa = [da_r | da_z | da_n];   dγ_hh = Σ dhw ⊙ û;   db_hh = Σ dhw

Saved: gates [r|z|n] (T, B, 3h); after: hw (T, B, 3h); before: rh = r ⊙ h^in (T, B, h); with
layer norm, per step, û (B, 3h) and its r (B, 3, 1) (before: split [rz, n]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from rnnlab.cells import layernorm

GATES: tuple[str, ...] = ("r", "z", "n")
HAS_CELL_STATE = False
RESETS = ("after", "before")


@dataclass(frozen=True)
class GRUVariant:
    """Which equations the step uses (defaults: torch.nn's GRU)."""

    layer_norm: bool = False
    reset: str = "after"

    @property
    def blocks(self) -> tuple[str, ...]:
        return GATES


class GRUParams(NamedTuple):
    ln_gain_hh: Tensor | None     # γ_hh (3h,)


class GRUSaved:
    def __init__(self, v: GRUVariant, T: int, B: int, H: int, like: Tensor) -> None:
        self.gates = like.new_empty(T, B, 3 * H)
        self.hw = like.new_empty(T, B, 3 * H) if v.reset == "after" else like.new_empty(B, 3 * H)
        if v.reset == "before":
            self.rh = like.new_empty(T, B, H)
        if v.layer_norm:                               # per step, as torch's LN kernel returns them
            self.uhat: list[Tensor] = [None] * T       # (B, 3h) after; [(B, 2h), (B, h)] before
            self.rstd_u: list[Tensor] = [None] * T     # (B, 3, 1) after; [(B, 2, 1), (B, 1, 1)] before


def _recurrent(v, s, t, src, w_t, b, gain, out, blocks):
    """out ← R(src W_t^T) for ``blocks`` gate blocks (b, gain: the matching slices or None).
    With layer norm, appends (û, r) to the step's saved lists."""
    if not v.layer_norm:
        if b is None:
            torch.mm(src, w_t, out=out)
        else:
            torch.addmm(b, src, w_t, out=out)
        return
    uhat, rstd = layernorm.normalize(torch.mm(src, w_t), blocks)         # û = LN(W src)
    if blocks == 3:
        s.uhat[t], s.rstd_u[t] = uhat, rstd
    else:
        s.uhat[t] = (s.uhat[t] or []) + [uhat]
        s.rstd_u[t] = (s.rstd_u[t] or []) + [rstd]
    if b is None:
        torch.mul(uhat, gain, out=out)
    else:
        torch.addcmul(b, gain, uhat, out=out)


def forward_step(
    v: GRUVariant, t: int, xa: Tensor, h_in: Tensor, h_prev: Tensor, w_hh_t: Tensor,
    b_hh: Tensor | None, p: GRUParams, s: GRUSaved, h_out: Tensor,
) -> None:
    """Step t. xa (B, 3h); h_in, h_prev (B, h); w_hh_t = W_hh^T (h, 3h). Writes h_out ← h_t."""
    H = h_prev.shape[1]
    gates = s.gates[t]
    r, z, n = gates.chunk(3, dim=1)
    gain = p.ln_gain_hh
    if v.reset == "after":
        hw = s.hw[t]
        _recurrent(v, s, t, h_in, w_hh_t, b_hh, gain, hw, 3)            # hw = R(W_hh h^in)
        torch.add(xa[:, : 2 * H], hw[:, : 2 * H], out=gates[:, : 2 * H]).sigmoid_()  # r, z
        torch.addcmul(xa[:, 2 * H :], r, hw[:, 2 * H :], out=n).tanh_()  # n = tanh(xa_n + r ⊙ hw_n)
    else:
        hw = s.hw
        sl = (lambda a, lo, hi: None if a is None else a[lo * H : hi * H])
        _recurrent(v, s, t, h_in, w_hh_t[:, : 2 * H], sl(b_hh, 0, 2), sl(gain, 0, 2), hw[:, : 2 * H], 2)
        torch.add(xa[:, : 2 * H], hw[:, : 2 * H], out=gates[:, : 2 * H]).sigmoid_()  # r, z
        torch.mul(r, h_in, out=s.rh[t])                                   # r ⊙ h^in
        _recurrent(v, s, t, s.rh[t], w_hh_t[:, 2 * H :], sl(b_hh, 2, 3), sl(gain, 2, 3), hw[:, 2 * H :], 1)
        torch.add(xa[:, 2 * H :], hw[:, 2 * H :], out=n).tanh_()          # n = tanh(xa_n + R(W_hn (r ⊙ h^in)))
    torch.sub(h_prev, n, out=h_out).mul_(z).add_(n)                       # h = n + z ⊙ (h_{t-1} − n)


class GRUFactors(NamedTuple):
    k_n: Tensor      # (T, B, h): dh ↦ da_n = (1 − z)(1 − n²)
    k_z: Tensor      # (T, B, h): dh ↦ da_z = (h_{t-1} − n) z(1 − z)
    k_r: Tensor      # (T, B, h): after: hw_n r(1 − r);  before: h^in r(1 − r)
    z: Tensor        # (T, B, h)


def backward_prepare(v: GRUVariant, s: GRUSaved, h_prevs: Tensor, h_ins: Tensor) -> GRUFactors:
    r, z, n = s.gates.chunk(3, dim=2)
    k_n = (1.0 - z) * (1.0 - n * n)
    k_z = (h_prevs - n) * z * (1.0 - z)
    other = s.hw[..., 2 * r.shape[2] :] if v.reset == "after" else h_ins
    k_r = other * r * (1.0 - r)
    return GRUFactors(k_n, k_z, k_r, z)


def backward_step(
    v: GRUVariant, t: int, dh: Tensor, k: GRUFactors, p: GRUParams, s: GRUSaved, w_hh: Tensor,
    dxa_out: Tensor, dhw_out: Tensor, du_out: Tensor,
) -> tuple[Tensor, Tensor]:
    """Gradients of step t given dh (B, h). Writes dxa_out, dhw_out, du_out (B, 3h) (dhw_out is
    dxa_out in the "before" form; du_out is dhw_out without layer norm).
    Returns (∂L/∂h^in, the direct part dh ⊙ z_t of ∂L/∂h_{t-1})."""
    H = dh.shape[1]
    r = s.gates[t, :, :H]
    da_r, da_z, da_n = dxa_out.chunk(3, dim=1)
    torch.mul(dh, k.k_n[t], out=da_n)
    torch.mul(dh, k.k_z[t], out=da_z)
    gain = p.ln_gain_hh
    if v.reset == "after":
        torch.mul(da_n, k.k_r[t], out=da_r)                               # da_r = da_n hw_n r(1 − r)
        dhw_out[:, : 2 * H].copy_(dxa_out[:, : 2 * H])
        torch.mul(da_n, r, out=dhw_out[:, 2 * H :])                       # ∂L/∂hw_n = da_n ⊙ r
        if v.layer_norm:
            layernorm.normalize_backward(dhw_out * gain, s.uhat[t], s.rstd_u[t], 3, out=du_out)
        dh_in = torch.mm(du_out, w_hh)
    else:                                                                 # dhw_out is dxa_out
        if v.layer_norm:
            du_n = layernorm.normalize_backward(da_n * gain[2 * H :], s.uhat[t][1], s.rstd_u[t][1], 1)
            du_out[:, 2 * H :].copy_(du_n)
        else:
            du_n = da_n
        d_rh = torch.mm(du_n, w_hh[2 * H :])                              # ∂L/∂(r ⊙ h^in)
        torch.mul(d_rh, k.k_r[t], out=da_r)                               # da_r = d(rh) h^in r(1 − r)
        if v.layer_norm:
            du_rz = layernorm.normalize_backward(dxa_out[:, : 2 * H] * gain[: 2 * H], s.uhat[t][0], s.rstd_u[t][0], 2)
            du_out[:, : 2 * H].copy_(du_rz)
        else:
            du_rz = dxa_out[:, : 2 * H]
        dh_in = torch.mm(du_rz, w_hh[: 2 * H]).addcmul_(d_rh, r)
    return dh_in, dh * k.z[t]


def recurrent_weight_grad(v: GRUVariant, s: GRUSaved, du: Tensor, h_ins: Tensor) -> Tensor:
    """∂L/∂W_hh (3h, h) from du (T, B, 3h) and the recurrent inputs h^in (T, B, h)."""
    T, B, GH = du.shape
    du2 = du.reshape(T * B, GH)
    if v.reset == "after":
        return torch.mm(du2.t(), h_ins.reshape(T * B, -1))
    H = GH // 3
    return torch.cat((torch.mm(du2[:, : 2 * H].t(), h_ins.reshape(T * B, -1)),
                      torch.mm(du2[:, 2 * H :].t(), s.rh.reshape(T * B, -1))), dim=0)


def param_grads(v: GRUVariant, s: GRUSaved, dhw: Tensor) -> GRUParams:
    if not v.layer_norm:
        return GRUParams(None)
    uhat = torch.stack([u if v.reset == "after" else torch.cat(u, dim=1) for u in s.uhat])  # (T, B, 3h)
    return GRUParams((dhw * uhat).sum((0, 1)))
