r"""Layer normalisation per gate block (Ba, Kiros & Hinton, 2016), forward and hand-written backward.

A pre-activation v ∈ R^{G·h} stacks G gate blocks of size h (torch.nn's layout). Each block is
normalised on its own::

    μ_k = mean(v_k),   σ²_k = mean((v_k − μ_k)²),   r_k = 1/√(σ²_k + ε)
    v̂_k = (v_k − μ_k) r_k

The learnable gain and shift are applied by the caller (``γ ⊙ v̂ + β``), because where the
shift comes from differs between cells (the LSTM's gate shifts are its torch.nn biases).

Backward of v̂ = LN(v) for one block, given g = ∂L/∂v̂ (the gain already multiplied in)::

    ∂L/∂v_k = r_k (g − mean(g) − v̂_k ⊙ mean(g ⊙ v̂_k))

The forward uses torch's layer-norm kernel (it is one fused pass for μ, σ² and v̂, and
returns r for the backward); the backward is written here.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-5


def normalize(v: Tensor, blocks: int, vhat_out: Tensor, rstd_out: Tensor, eps: float = EPS) -> None:
    """v (..., G·h) → vhat_out (..., G·h) ← v̂ per block, rstd_out (..., G, 1) ← r.

    Writes into preallocated buffers (saved for the backward)."""
    shape = vhat_out.shape[:-1] + (blocks, v.shape[-1] // blocks)   # v may be (T·B, G·h) for (T, B, G·h)
    mean = rstd_out.new_empty(rstd_out.shape)          # μ is not needed by the backward
    torch.ops.aten.native_layer_norm.out(
        v.reshape(shape), [shape[-1]], None, None, eps,
        out0=vhat_out.view(shape), out1=mean, out2=rstd_out,
    )


def normalize_backward(g: Tensor, vhat: Tensor, rstd: Tensor, blocks: int, out: Tensor) -> Tensor:
    """out (..., G·h) ← ∂L/∂v given g = ∂L/∂v̂ (..., G·h), the saved v̂ and r (..., G, 1)."""
    shape = g.shape[:-1] + (blocks, g.shape[-1] // blocks)
    g3, vhat3, out3 = g.reshape(shape), vhat.reshape(shape), out.view(shape)
    mean_g = g3.mean(-1, keepdim=True)                               # mean(g)
    mean_gv = (g3 * vhat3).mean(-1, keepdim=True)                     # mean(g ⊙ v̂)
    torch.sub(g3, mean_g, out=out3)                                   # g − mean(g)
    out3.addcmul_(vhat3, mean_gv, value=-1.0).mul_(rstd)              # − v̂ mean(g v̂), times r
    return out
