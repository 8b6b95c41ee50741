"""Gradient through time: how much of a last-step loss reaches the hidden state k steps back.

For a loss L computed from the output at the last step T-1, the engine's instrument
(:func:`rnnlab.engine.record_grad_norms`) records the per-sample norm ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖
for the LSTM) at every step t. Plotted against the distance d = T-1-t on a log scale, a plain
RNN's curve falls roughly geometrically (a product of d Jacobians diag(1-h²)·W_hh), while the
LSTM's cell path (a product of forget gates) and the GRU's update gate can keep it flat.

The *memory horizon* summarises a curve: the first distance at which the norm falls below
``ratio`` (1e-3) of its value at the loss (d = 0). ``None`` means it never falls that far within
the sequence: the horizon is longer than the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.data.probes import probe_loss
from rnnlab.engine import record_grad_norms
from rnnlab.errors import ShapeError, expected

HORIZON_RATIO = 1e-3


@dataclass
class GradFlow:
    """Mean per-sample gradient norms, indexed by distance from the loss (index 0 = the loss step)."""

    cell: str
    dh: np.ndarray                      # (T,) mean ‖∂L/∂h_{T-1-d}‖ over the batch, d = 0..T-1
    dc: np.ndarray | None               # (T,) the same for the LSTM cell state, else None
    layer: int = 0

    @property
    def distance(self) -> np.ndarray:
        return np.arange(len(self.dh))

    @property
    def horizon_h(self) -> int | None:
        return memory_horizon(self.dh)

    @property
    def horizon_c(self) -> int | None:
        return None if self.dc is None else memory_horizon(self.dc)

    @property
    def horizon(self) -> int | None:
        """The longer of the h and c horizons (the LSTM remembers through whichever path lasts)."""
        hs = [self.horizon_h] + ([self.horizon_c] if self.dc is not None else [])
        if any(h is None for h in hs):
            return None
        return max(hs)  # type: ignore[type-var]

    def to_dict(self) -> dict:
        return {"cell": self.cell, "layer": self.layer, "dh": self.dh.tolist(),
                "dc": None if self.dc is None else self.dc.tolist(),
                "horizon_h": self.horizon_h, "horizon_c": self.horizon_c}


def memory_horizon(norms: np.ndarray | Tensor | list[float], ratio: float = HORIZON_RATIO) -> int | None:
    """First distance d with ``norms[d] < ratio * norms[0]``; None if no such d in the sequence.

    ``norms`` is indexed by distance from the loss (``norms[0]`` at the loss step).

    >>> memory_horizon([1.0, 0.1, 0.01, 0.001, 0.0001])
    4
    >>> memory_horizon([1.0, 0.9, 0.8]) is None
    True
    """
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ShapeError(expected("memory_horizon norms", "a non-empty 1-D sequence", f"shape {a.shape}"))
    if not a[0] > 0:
        return None                     # no gradient at the loss: nothing to measure against
    below = np.nonzero(a < ratio * a[0])[0]
    return int(below[0]) if below.size else None


def grad_flow(model: nn.Module, x: Tensor, loss_fn: Callable[[nn.Module, Tensor], Tensor],
              layer: int = 0) -> GradFlow:
    """Run ``loss_fn(model, x)`` forward and backward under the recorder; summarise ``layer``.

    ``loss_fn`` must build a loss from the model's last-step output only, so that distance from
    the loss is well defined. Parameter gradients are left as they were (zeroed before and
    restored after), so calling this on a model in training does not disturb it.
    """
    saved = {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), record_grad_norms() as rec:
            for p in model.parameters():
                p.grad = None
            loss_fn(model, x).backward()
    finally:
        model.train(was_training)
        for n, p in model.named_parameters():
            p.grad = saved[n]
    recs = [r for r in rec.layers if r.layer == layer and r.direction == 0]
    if not recs:
        raise ShapeError(expected("grad_flow layer", f"a recorded layer (got {len(rec.layers)} records)", layer))
    r = recs[-1]
    dh = r.dh.detach().double().mean(1).flip(0).numpy()          # (T,) by distance
    dc = None if r.dc is None else r.dc.detach().double().mean(1).flip(0).numpy()
    return GradFlow(cell=r.cell, dh=dh, dc=dc, layer=layer)


def probe_grad_flow(task, model: nn.Module, n: int = 256) -> GradFlow:
    """:func:`grad_flow` on the first ``n`` test samples of a probe task, with the loss at the
    last step only (for ``copy``, the last recalled symbol)."""
    test = task.test_batch()
    x, y = test.x[:, :n], test.y[..., :n]
    spec = task.spec

    def last_step_loss(m: nn.Module, inp: Tensor) -> Tensor:
        pred = m(inp)
        if spec.target == "per_step":
            return probe_loss(spec, pred[-1], y[-1])
        return probe_loss(spec, pred, y)

    return grad_flow(model, x, last_step_loss)
