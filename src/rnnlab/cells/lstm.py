r"""The LSTM cell (Hochreiter & Schmidhuber, 1997; with the forget gate of Gers et al., 2000).

Equations (gate order i, f, g, o as in torch.nn)::

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)            input gate: what to write
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)            forget gate: what to erase
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)         candidate cell content
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)            output gate: what to show
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t                            the cell: an additive path
    h_t = o_t ⊙ tanh(c_t)

With ``proj_size = p > 0`` (torch.nn's LSTMP): h_t = W_hr (o_t ⊙ tanh(c_t)), W_hr ∈ R^{p×h},
and the recurrence uses this projected h_t.

Layout: W_ih = [W_ii | W_if | W_ig | W_io] stacked over rows, shape (4h, d); W_hh likewise
(4h, h) or (4h, p); biases (4h,). The engine hands this cell
``xw = W_ih x_t + b_ih + b_hh`` (both biases folded into the one input-projection matmul).

Backward, written from saved post-activation gates (σ' = y(1−y), tanh' = 1−y²). Given
dh = ∂L/∂h_t (total: from the output at t and from step t+1) and dc = ∂L/∂c_t carried from
step t+1::

    dr        = dh W_hr                       (projection only; otherwise dr = dh)
    dc_total  = dc + dr ⊙ o_t ⊙ (1 − tanh²(c_t))
    do        = dr ⊙ tanh(c_t) ⊙ o_t(1 − o_t)
    di        = dc_total ⊙ g_t ⊙ i_t(1 − i_t)
    df        = dc_total ⊙ c_{t-1} ⊙ f_t(1 − f_t)
    dg        = dc_total ⊙ i_t ⊙ (1 − g_t²)
    dc_{t-1}  = dc_total ⊙ f_t                 the additive path: a product of forget gates
    dh_{t-1}  = [di|df|dg|do] W_hh             (the engine performs this matmul)
    dW_hr    += dh^T (o_t ⊙ tanh(c_t))

Saved per step: the gates [i|f|g|o] (T, B, 4h) and the cells c (T+1, B, h).
"""

from __future__ import annotations

import torch
from torch import Tensor

GATES: tuple[str, ...] = ("i", "f", "g", "o")
NUM_BLOCKS = 4
GATES_ARE_OUTPUT = False
HAS_CELL_STATE = True
SHARED_PREACT_GRAD = True


def forward_step(
    xw: Tensor, h_prev: Tensor, c_prev: Tensor, w_hh_t: Tensor, w_hr_t: Tensor | None,
    gates: Tensor, c_out: Tensor, h_out: Tensor, tanh_c: Tensor,
) -> None:
    """One step, writing into preallocated buffers.

    xw (B, 4h); h_prev (B, p or h); c_prev (B, h); w_hh_t = W_hh^T; w_hr_t = W_hr^T or None.
    gates (B, 4h) ← [i|f|g|o]; c_out (B, h) ← c_t; h_out ← h_t; tanh_c (B, h) is scratch.
    """
    hs = c_prev.shape[1]
    torch.addmm(xw, h_prev, w_hh_t, out=gates)        # pre-activations of all four gates
    gates[:, : 2 * hs].sigmoid_()                      # i_t, f_t = σ(...)
    gates[:, 2 * hs : 3 * hs].tanh_()                  # g_t = tanh(...)
    gates[:, 3 * hs :].sigmoid_()                      # o_t = σ(...)
    i, f, g, o = gates.chunk(4, dim=1)
    torch.mul(f, c_prev, out=c_out)                    # c_t = f_t ⊙ c_{t-1}
    c_out.addcmul_(i, g)                               #     + i_t ⊙ g_t
    torch.tanh(c_out, out=tanh_c)
    if w_hr_t is None:
        torch.mul(o, tanh_c, out=h_out)                # h_t = o_t ⊙ tanh(c_t)
    else:
        tanh_c.mul_(o)
        torch.mm(tanh_c, w_hr_t, out=h_out)            # h_t = W_hr (o_t ⊙ tanh(c_t))


def backward_step(
    dh: Tensor, dc: Tensor, gates: Tensor, c: Tensor, c_prev: Tensor,
    w_hr: Tensor | None, dw_hr: Tensor | None, da_out: Tensor, scratch: Tensor,
) -> Tensor:
    """Gradients of one step.

    dh (B, p or h) = ∂L/∂h_t; dc (B, h) = ∂L/∂c_t from step t+1, overwritten with dc_total.
    Writes da_out (B, 4h) ← [di|df|dg|do] and returns dc_{t-1} (a new tensor).
    With projection, accumulates dW_hr into dw_hr. ``scratch`` is (B, h).
    """
    i, f, g, o = gates.chunk(4, dim=1)
    di, df, dg, do = da_out.chunk(4, dim=1)
    tanh_c = torch.tanh(c, out=scratch)
    if w_hr is not None:
        dw_hr.addmm_(dh.t(), tanh_c * o)               # dW_hr += dh^T (o ⊙ tanh c)
        dr = dh @ w_hr                                 # dr = dh W_hr
    else:
        dr = dh
    # do = dr ⊙ tanh(c_t) ⊙ o(1 − o)
    torch.mul(dr, tanh_c, out=do)
    do.mul_(o).mul_(1.0 - o)
    # dc_total = dc + dr ⊙ o ⊙ (1 − tanh²(c_t))
    tanh_c.mul_(tanh_c).neg_().add_(1.0).mul_(o).mul_(dr)
    dc.add_(tanh_c)
    torch.mul(dc, g, out=di).mul_(i).mul_(1.0 - i)     # di = dc_total ⊙ g ⊙ i(1 − i)
    torch.mul(dc, c_prev, out=df).mul_(f).mul_(1.0 - f)  # df = dc_total ⊙ c_{t-1} ⊙ f(1 − f)
    torch.mul(g, g, out=dg).neg_().add_(1.0).mul_(i).mul_(dc)  # dg = dc_total ⊙ i ⊙ (1 − g²)
    return dc * f                                      # dc_{t-1} = dc_total ⊙ f
