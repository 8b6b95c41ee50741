"""NT-ASGD: non-monotonically triggered averaged SGD (Merity, Keskar & Socher 2017, AWD-LSTM).

Plain SGD until the validation loss stops improving in a non-monotone sense: at an evaluation,
when at least ``nonmono`` earlier losses are known and the new loss is worse than the best of
all but the last ``nonmono`` of them, averaging starts. From then on every step still takes an
SGD step, and a running mean of the iterates (``ax``) is kept; evaluations and saved weights use
the mean (:meth:`NTASGD.averaged`), training goes on from the SGD iterate.

The training core calls :meth:`NTASGD.observe` after each evaluation; nothing else in the
loop is specific to this optimizer.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch


class NTASGD(torch.optim.Optimizer):
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1.0, weight_decay: float = 0.0,
                 nonmono: int = 5) -> None:
        # The trigger's bookkeeping lives in the param group so state_dict carries it.
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, nonmono=nonmono, averaging=False,
                                      history=[], n_avg=0, trigger_step=None))

    @property
    def averaging(self) -> bool:
        return bool(self.param_groups[0]["averaging"])

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        g0 = self.param_groups[0]
        if g0["averaging"]:
            g0["n_avg"] += 1
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["weight_decay"]:
                    d = d.add(p, alpha=group["weight_decay"])
                p.add_(d, alpha=-group["lr"])
                if g0["averaging"]:
                    ax = self.state[p]["ax"]
                    ax.add_(p - ax, alpha=1.0 / g0["n_avg"])   # running mean of the iterates since the trigger
        return loss

    def observe(self, val_loss: float, step: int | None = None) -> bool:
        """Record a validation loss; True if this one triggered averaging."""
        g0 = self.param_groups[0]
        hist, n = g0["history"], g0["nonmono"]
        switched = False
        if not g0["averaging"] and len(hist) > n and val_loss > min(hist[:-n]):
            g0["averaging"], g0["n_avg"], g0["trigger_step"] = True, 1, step
            for group in self.param_groups:
                for p in group["params"]:
                    self.state[p]["ax"] = p.detach().clone()
            switched = True
        hist.append(float(val_loss))
        return switched

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """Within the block the parameters hold the averaged weights (when averaging has started);
        the SGD iterates wait in the state as ``raw``, so a state_dict taken inside restores them."""
        if not self.averaging:
            yield
            return
        params = [p for g in self.param_groups for p in g["params"] if "ax" in self.state[p]]
        with torch.no_grad():
            for p in params:
                self.state[p]["raw"] = p.detach().clone()
                p.copy_(self.state[p]["ax"])
        try:
            yield
        finally:
            with torch.no_grad():
                for p in params:
                    p.copy_(self.state[p].pop("raw"))

    def use_average(self) -> None:
        """Leave the averaged weights in the parameters for good (at the end of training)."""
        if self.averaging:
            with torch.no_grad():
                for g in self.param_groups:
                    for p in g["params"]:
                        if "ax" in self.state[p]:
                            p.copy_(self.state[p]["ax"])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # A checkpoint written inside averaged() holds the averages as weights: put the SGD iterates back.
        with torch.no_grad():
            for g in self.param_groups:
                for p in g["params"]:
                    raw = self.state[p].pop("raw", None) if p in self.state else None
                    if raw is not None:
                        p.copy_(raw)
