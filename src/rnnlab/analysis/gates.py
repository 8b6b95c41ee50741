"""Gate statistics: what the gates of a trained (or fresh) LSTM/GRU do on a probe's test set.

Uses the engine's instrument :func:`rnnlab.engine.record_gates` (post-activation gates,
``(T, B, H)`` per gate). Two views: the distribution of each gate's values over all steps,
samples and units (an LSTM that remembers shows forget gates piled up near 1; a GRU that
remembers shows update gates near 1), and one example's gates over time (a heat map: units by
steps) where the moments of writing and holding are visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.engine import record_gates

# Which gates to show, in what order, and what each one means.
GATE_NAMES = {
    "lstm": {"i": "input gate i (write)", "f": "forget gate f (keep)", "o": "output gate o (show)"},
    "gru": {"z": "update gate z (keep)", "r": "reset gate r"},
    "rnn": {},
}
_MAX_VALUES = 50_000                    # per gate, for histograms: a uniform subsample is plenty


@dataclass
class GateStats:
    cell: str
    values: dict[str, np.ndarray]       # gate -> 1-D sample of activations over (T, B, H)
    mean: dict[str, float]              # gate -> mean over every step, sample and unit
    frac_open: dict[str, float]         # gate -> fraction of values > 0.9
    example: dict[str, np.ndarray]      # gate -> (H, T) one example's gates over time
    example_tokens: np.ndarray | None   # (T,) that example's input tokens (None for real inputs)


def gate_stats(model: nn.Module, x: Tensor, example: int = 0, seed: int = 0) -> GateStats | None:
    """Record the first layer's gates of ``model(x)`` (x: (T, B) or (T, B, F)); None for a plain RNN."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), record_gates() as rec:
            model(x)
    finally:
        model.train(was_training)
    recs = [r for r in rec.layers if r.layer == 0 and r.direction == 0]
    if not recs or not recs[-1].gates:
        return None
    r = recs[-1]
    shown = GATE_NAMES.get(r.cell, {})
    g = torch.Generator().manual_seed(seed)
    values, mean, frac_open, ex = {}, {}, {}, {}
    for name in shown:
        a = r.gates[name].detach().float()                          # (T, B, H)
        flat = a.reshape(-1)
        if flat.numel() > _MAX_VALUES:
            flat = flat[torch.randperm(flat.numel(), generator=g)[:_MAX_VALUES]]
        values[name] = flat.numpy()
        mean[name] = a.mean().item()
        frac_open[name] = (a > 0.9).float().mean().item()
        ex[name] = a[:, example, :].T.numpy()                        # (H, T)
    tokens = x[:, example].numpy() if x.dim() == 2 else None
    return GateStats(r.cell, values, mean, frac_open, ex, tokens)


def probe_gate_stats(task, model: nn.Module, n: int = 256) -> GateStats | None:
    """:func:`gate_stats` on the first ``n`` samples of a probe task's fixed test set."""
    test = task.test_batch()
    return gate_stats(model, test.x[:, :n])
