r"""The GRU cell (Cho et al., 2014), in torch.nn / cuDNN form.

Equations (gate order r, z, n as in torch.nn). The reset gate multiplies the
recurrent term *after* its bias, as torch.nn does::

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)            reset gate: short-term dependencies
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)            update gate: long-term dependencies
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn)) candidate state
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

Layout: W_ih = [W_ir | W_iz | W_in] (3h, d), W_hh = [W_hr | W_hz | W_hn] (3h, h), biases (3h,).
The engine hands this cell ``xw = W_ih x_t + b_ih`` (one matmul for all steps); b_hh stays in
the step because b_hn sits inside the reset product.

Backward, from the saved gates [r|z|n] and hn = W_hn h_{t-1} + b_hn. Given dh = ∂L/∂h_t::

    dn        = dh ⊙ (1 − z_t)
    dz        = dh ⊙ (h_{t-1} − n_t)
    da_n      = dn ⊙ (1 − n_t²)                  (pre-activation of n, input side)
    da_z      = dz ⊙ z_t(1 − z_t)
    da_r      = da_n ⊙ hn ⊙ r_t(1 − r_t)
    dxw       = [da_r | da_z | da_n]            gradient of W_ih x_t + b_ih
    dhw       = [da_r | da_z | da_n ⊙ r_t]      gradient of W_hh h_{t-1} + b_hh
    dh_{t-1}  = dhw W_hh + dh ⊙ z_t              (the engine performs the matmul)

Saved per step: the gates [r|z|n] (T, B, 3h) and hn (T, B, h).
"""

from __future__ import annotations

import torch
from torch import Tensor

GATES: tuple[str, ...] = ("r", "z", "n")
NUM_BLOCKS = 3
GATES_ARE_OUTPUT = False
HAS_CELL_STATE = False
SHARED_PREACT_GRAD = False


def forward_step(
    xw: Tensor, h_prev: Tensor, w_hh_t: Tensor, b_hh: Tensor | None,
    gates: Tensor, hn_out: Tensor, h_out: Tensor, hw: Tensor,
) -> None:
    """One step. xw (B, 3h); h_prev (B, h); w_hh_t = W_hh^T (h, 3h); hw (B, 3h) is scratch.
    Writes gates (B, 3h) ← [r|z|n], hn_out (B, h) ← W_hn h_{t-1} + b_hn, h_out (B, h) ← h_t."""
    hs = h_prev.shape[1]
    if b_hh is None:
        torch.mm(h_prev, w_hh_t, out=hw)               # W_hh h_{t-1}
    else:
        torch.addmm(b_hh, h_prev, w_hh_t, out=hw)      # W_hh h_{t-1} + b_hh
    rz = gates[:, : 2 * hs]
    torch.add(xw[:, : 2 * hs], hw[:, : 2 * hs], out=rz).sigmoid_()  # r_t, z_t = σ(...)
    r, z, n = gates.chunk(3, dim=1)
    hn_out.copy_(hw[:, 2 * hs :])                     # hn = W_hn h_{t-1} + b_hn
    torch.addcmul(xw[:, 2 * hs :], r, hn_out, out=n).tanh_()  # n_t = tanh(W_in x + b_in + r ⊙ hn)
    torch.sub(h_prev, n, out=h_out)                    # h_t = n_t + z_t ⊙ (h_{t-1} − n_t)
    h_out.mul_(z).add_(n)                              #     = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}


def backward_step(
    dh: Tensor, gates: Tensor, hn: Tensor, h_prev: Tensor, dxw_out: Tensor, dhw_out: Tensor,
) -> Tensor:
    """Writes dxw_out, dhw_out (B, 3h); returns the direct part of dh_{t-1}: dh ⊙ z_t."""
    r, z, n = gates.chunk(3, dim=1)
    da_r, da_z, da_n = dxw_out.chunk(3, dim=1)
    torch.mul(dh, 1.0 - z, out=da_n).mul_(1.0 - n * n)           # da_n = dh ⊙ (1−z) ⊙ (1−n²)
    torch.sub(h_prev, n, out=da_z).mul_(dh).mul_(z).mul_(1.0 - z)  # da_z = dh ⊙ (h_{t-1}−n) ⊙ z(1−z)
    torch.mul(da_n, hn, out=da_r).mul_(r).mul_(1.0 - r)           # da_r = da_n ⊙ hn ⊙ r(1−r)
    dhw_out[:, : 2 * r.shape[1]].copy_(dxw_out[:, : 2 * r.shape[1]])
    torch.mul(da_n, r, out=dhw_out[:, 2 * r.shape[1] :])          # d(hn) = da_n ⊙ r
    return dh * z                                                  # direct path z_t ⊙ h_{t-1}
