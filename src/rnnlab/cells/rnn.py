r"""The vanilla (Elman) RNN cell.

Equations, for input x_t ∈ R^d and hidden state h_t ∈ R^h::

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)        (nonlinearity="tanh")
    h_t = relu(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)        (nonlinearity="relu")

Shapes and layout as torch.nn.RNN: W_ih (h, d), W_hh (h, h), b_ih (h,), b_hh (h,). The engine
hands this cell ``xw = W_ih x_t + b_ih + b_hh`` (both biases folded into the input projection,
computed for all steps in one matmul), so a step only adds the recurrent term.

Backward (a = the pre-activation, written from the output y = h_t)::

    tanh'(a) = 1 − h_t²            relu'(a) = [h_t > 0]
    da       = dh_t ⊙ act'(a)
    dh_{t-1} = da W_hh             (a matmul the engine's caller of this step performs via dhw)

The gradient with respect to the pre-activation is the same for the input and the recurrent
projection (``dxw == dhw``), so the engine stores it once.
"""

from __future__ import annotations

import torch
from torch import Tensor

GATES: tuple[str, ...] = ()          # no gates; the saved "activation" is h_t itself
NUM_BLOCKS = 1                       # row blocks stacked in W_ih / W_hh
GATES_ARE_OUTPUT = True             # the saved activation is h_t itself
HAS_CELL_STATE = False
SHARED_PREACT_GRAD = True            # dxw == dhw


def forward_step(xw: Tensor, h_prev: Tensor, w_hh_t: Tensor, h_out: Tensor, relu: bool) -> None:
    """h_out (B, h) ← act(xw + h_prev W_hh^T). ``w_hh_t`` is W_hh transposed, (h, h)."""
    torch.addmm(xw, h_prev, w_hh_t, out=h_out)      # a = W_ih x + b_ih + b_hh + W_hh h_{t-1}
    if relu:
        h_out.relu_()                                 # h_t = relu(a)
    else:
        h_out.tanh_()                                 # h_t = tanh(a)


def backward_step(dh: Tensor, h: Tensor, da_out: Tensor, relu: bool) -> None:
    """da_out (B, h) ← dh ⊙ act'(a), with act' written from the output h = h_t."""
    if relu:
        torch.mul(dh, h > 0, out=da_out)              # relu'(a) = [h_t > 0]
    else:
        torch.mul(h, h, out=da_out)                   # tanh'(a) = 1 − h_t²
        da_out.neg_().add_(1.0).mul_(dh)
