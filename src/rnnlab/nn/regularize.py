"""AWD-LSTM's regularisers (Merity, Keskar & Socher 2017, "Regularizing and Optimizing LSTM
Language Models") for rnnlab's recurrent layers.

* :func:`embedding_dropout` drops whole words: rows of the embedding matrix, the same row for
  every occurrence of the word in the batch.
* :class:`LockedDropout` (variational dropout, Gal & Ghahramani 2016) samples one mask per
  sequence and feature and applies it at every time step.
* :class:`WeightDrop` (DropConnect on the hidden-to-hidden matrices) drops entries of
  ``weight_hh_l{k}`` once per forward call and hands the dropped tensor to the layer, so the
  fast engine's scan runs unchanged and the same dropped matrix serves every time step.

Shapes: T = time, B = batch, H = features.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import ConfigError, expected


def _check_p(p: float, what: str) -> float:
    if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p < 1.0):
        raise ConfigError(expected(what, "a number in [0, 1)", p))
    return float(p)


def embedding_dropout(embed: nn.Module, ids: Tensor, p: float, training: bool) -> Tensor:
    """``embed(ids)`` with each vocabulary row zeroed with probability ``p`` (the rest scaled by 1/(1-p)).

    ``embed`` is an :class:`torch.nn.Embedding` or any module with ``num_embeddings`` that maps
    ids to vectors (:class:`rnnlab.nn.adaptive.TiedAdaptiveEmbedding`)."""
    out = embed(ids)
    if not training or p == 0.0:
        return out
    mask = out.new_empty((embed.num_embeddings, 1)).bernoulli_(1.0 - p) / (1.0 - p)   # (V, 1)
    # Scaling the looked-up rows by their words' mask equals looking up the masked matrix, without
    # a (V, E) product, and its backward, at every step.
    return out * F.embedding(ids, mask)


class LockedDropout(nn.Module):
    """Dropout whose mask is drawn once per (sequence, feature) and reused at every time step."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _check_p(p, "locked dropout")

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (T, B, H) -> same shape; identity in eval mode."""
        if not self.training or self.p == 0.0:
            return x
        mask = x.new_empty((1, *x.shape[1:])).bernoulli_(1.0 - self.p) / (1.0 - self.p)  # (1, B, H)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WeightDrop(nn.Module):
    """DropConnect on the named weights of a module (by default every ``weight_hh_l{k}``).

    The trained parameter is kept as ``NAME_raw``; before each forward call the module's
    ``NAME`` is set to ``dropout(NAME_raw)`` (a plain tensor, so gradients flow back to the raw
    parameter). One mask per call: all time steps and all sequences of the batch share it.
    """

    def __init__(self, module: nn.Module, p: float, names: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.module = module
        self.p = _check_p(p, "weight drop")
        if names is None:
            names = tuple(n for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_hh"))
        if not names:
            raise ConfigError(expected("weight drop", "a module with weight_hh_l* parameters", type(module).__name__))
        self.names = names
        for n in names:
            w = getattr(module, n)
            del module._parameters[n]
            module.register_parameter(f"{n}_raw", nn.Parameter(w.detach().clone()))
            module.__dict__[n] = w.detach().clone()   # a plain attribute until the first forward

    def _set_weights(self) -> None:
        for n in self.names:
            raw = getattr(self.module, f"{n}_raw")
            # Straight into __dict__: in eval mode dropout returns the Parameter itself, which
            # Module.__setattr__ would register again as a parameter.
            self.module.__dict__[n] = F.dropout(raw, p=self.p, training=self.training)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._set_weights()
        return self.module(*args, **kwargs)

    def unwrap(self) -> nn.Module:
        """The wrapped module as it computes in eval mode, its raw weights back under their own
        names (for export); this wrapper is spent afterwards."""
        for n in self.names:
            raw = self.module._parameters.pop(f"{n}_raw")
            self.module.__dict__.pop(n, None)
            self.module.register_parameter(n, raw)
        return self.module

    def extra_repr(self) -> str:
        return f"p={self.p}, names={list(self.names)}"
