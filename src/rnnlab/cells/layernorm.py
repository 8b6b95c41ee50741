r"""Layer normalisation per gate block (Ba, Kiros & Hinton, 2016), forward and hand-written backward.

A pre-activation v ∈ R^{G·h} stacks G gate blocks of size h (torch.nn's layout). Each block is
normalised on its own::

    μ_k = mean(v_k),   σ²_k = mean((v_k − μ_k)²),   r_k = 1/√(σ²_k + ε)
    v̂_k = (v_k − μ_k) r_k

The learnable gain and shift are applied by the caller (``γ ⊙ v̂ + β``), because where the
shift comes from differs between cells (the LSTM's gate shifts are its torch.nn biases).

Backward of v̂ = LN(v) for one block, given g = ∂L/∂v̂ (the gain already multiplied in)::

    ∂L/∂v_k = r_k (g − mean(g) − v̂_k ⊙ mean(g ⊙ v̂_k))

:func:`normalize_backward_reference` is that line, written out. :func:`normalize_backward`, used
by the scans, computes the bracket with torch's fused layer-norm backward kernel (fed v̂ with
μ = 0, r = 1, so that the kernel's own normalisation is the identity) and then multiplies by r;
one pass instead of five, tested equal to the reference. The forward also uses torch's kernel
(one pass for μ, σ², v̂, returning r).
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-5


def normalize(v: Tensor, blocks: int, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """v (..., G·h) → (v̂ (..., G·h), r (..., G, 1)), per gate block."""
    shape = v.shape[:-1] + (blocks, v.shape[-1] // blocks)
    vhat, _, rstd = torch.native_layer_norm(v.reshape(shape), [shape[-1]], None, None, eps)
    return vhat.view(v.shape), rstd


def normalize_backward_reference(g: Tensor, vhat: Tensor, rstd: Tensor, blocks: int) -> Tensor:
    """∂L/∂v (..., G·h) given g = ∂L/∂v̂ (..., G·h), the saved v̂ and r (..., G, 1)."""
    shape = g.shape[:-1] + (blocks, g.shape[-1] // blocks)
    g3, vhat3 = g.reshape(shape), vhat.reshape(shape)
    mean_g = g3.mean(-1, keepdim=True)                               # mean(g)
    mean_gv = (g3 * vhat3).mean(-1, keepdim=True)                    # mean(g ⊙ v̂)
    return ((g3 - mean_g - vhat3 * mean_gv) * rstd).reshape(g.shape)


def normalize_backward(g: Tensor, vhat: Tensor, rstd: Tensor, blocks: int, out: Tensor | None = None) -> Tensor:
    """Same numbers as :func:`normalize_backward_reference`, through torch's fused kernel; written
    into ``out`` (..., G·h) when given (saves a copy into a preallocated buffer)."""
    shape = g.shape[:-1] + (blocks, g.shape[-1] // blocks)
    zero, one = _stats(rstd)
    bracket = torch.ops.aten.native_layer_norm_backward(
        g.reshape(shape), vhat.reshape(shape), [shape[-1]], zero, one, None, None, [True, False, False],
    )[0]                                                             # g − mean(g) − v̂ mean(g v̂)
    if out is None:
        return bracket.mul_(rstd).view(g.shape)
    torch.mul(bracket, rstd, out=out.view(shape))
    return out


_STATS: dict = {}


def _stats(rstd: Tensor) -> tuple[Tensor, Tensor]:
    """μ = 0 and r = 1 shaped like ``rstd`` (cached: the scans call this once per step)."""
    key = (tuple(rstd.shape), rstd.dtype, rstd.device)
    if key not in _STATS:
        if len(_STATS) > 64:
            _STATS.clear()
        _STATS[key] = (torch.zeros(rstd.shape, dtype=rstd.dtype, device=rstd.device),
                       torch.ones(rstd.shape, dtype=rstd.dtype, device=rstd.device))
    return _STATS[key]
