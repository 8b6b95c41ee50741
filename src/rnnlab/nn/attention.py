r"""Attention over a sequence of keys: additive (Bahdanau) and multiplicative (Luong general, dot).

A query q (the decoder's state) scores every key k_s (the encoder's outputs); the weights are
the softmax of the scores over the valid source positions and the context is the weighted sum
of the keys::

    additive  (Bahdanau et al. 2015; Luong's "concat")   e_s = vᵀ tanh(W_q q + b + W_k k_s)
    general   (Luong et al. 2015)                          e_s = qᵀ W_a k_s
    dot       (Luong et al. 2015)                          e_s = qᵀ k_s
    α = softmax(e) over positions with mask_s = True,      context = Σ_s α_s k_s

Shapes: B = batch, S = source length, T = query steps, Q = query size, K = key size,
A = attention size (additive only)::

    query   (B, Q) or (B, T, Q)      keys (B, S, K)      mask (B, S) bool, True = a real position
    context (B, K) or (B, T, K)      weights (B, S) or (B, T, S)

The part of the score that depends on the keys only (W_k k for additive, W_a k for general) is
computed once per source by :meth:`project_keys` and passed back as ``projected`` at every
decoder step, so a decoding loop does not redo it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnlab.errors import ConfigError, ShapeError, expected

ATTENTIONS = ("additive", "general", "dot")


class Attention(nn.Module):
    """Base class: subclasses define :meth:`project_keys` and :meth:`score`."""

    query_size: int
    key_size: int

    def project_keys(self, keys: Tensor) -> Tensor:
        """The key-only part of the score, computed once per source. (B, S, ·)"""
        raise NotImplementedError

    def score(self, query: Tensor, projected: Tensor) -> Tensor:
        """Scores e: query (B, T, Q), projected keys (B, S, ·) -> (B, T, S)."""
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor | None = None,
                projected: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(context, weights)``; see the module docstring for shapes."""
        if query.dim() not in (2, 3) or query.shape[-1] != self.query_size:
            raise ShapeError(expected("attention query shape", f"(B, {self.query_size}) or (B, T, {self.query_size})",
                                      tuple(query.shape)))
        if keys.dim() != 3 or keys.shape[-1] != self.key_size or keys.shape[0] != query.shape[0]:
            raise ShapeError(expected("attention keys shape", f"({query.shape[0]}, S, {self.key_size})", tuple(keys.shape)))
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query                            # (B, T, Q)
        if projected is None:
            projected = self.project_keys(keys)
        e = self.score(q, projected)                                            # (B, T, S)
        if mask is not None:
            if mask.shape != keys.shape[:2] or mask.dtype != torch.bool:
                raise ShapeError(expected("attention mask", f"a bool tensor of shape {tuple(keys.shape[:2])}",
                                          f"{mask.dtype} {tuple(mask.shape)}"))
            e = e.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(e, dim=-1)                                      # (B, T, S)
        context = torch.bmm(weights, keys)                                      # (B, T, K)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


class AdditiveAttention(Attention):
    """Bahdanau et al.'s score e_s = vᵀ tanh(W_q q + b + W_k k_s), with an attention size A."""

    def __init__(self, query_size: int, key_size: int, attention_size: int | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        _check_sizes(query_size=query_size, key_size=key_size)
        attention_size = query_size if attention_size is None else attention_size
        _check_sizes(attention_size=attention_size)
        self.query_size, self.key_size, self.attention_size = query_size, key_size, attention_size
        f = {"device": device, "dtype": dtype}
        self.query_proj = nn.Linear(query_size, attention_size, bias=True, **f)    # W_q, b
        self.key_proj = nn.Linear(key_size, attention_size, bias=False, **f)       # W_k
        self.v = nn.Parameter(torch.empty(attention_size, **f))
        nn.init.uniform_(self.v, -1 / math.sqrt(attention_size), 1 / math.sqrt(attention_size))

    def project_keys(self, keys: Tensor) -> Tensor:
        return self.key_proj(keys)                                               # (B, S, A)

    def score(self, query: Tensor, projected: Tensor) -> Tensor:
        hidden = torch.tanh(self.query_proj(query).unsqueeze(2) + projected.unsqueeze(1))  # (B, T, S, A)
        return hidden @ self.v                                                   # (B, T, S)


class GeneralAttention(Attention):
    """Luong et al.'s "general" score e_s = qᵀ W_a k_s."""

    def __init__(self, query_size: int, key_size: int, device=None, dtype=None) -> None:
        super().__init__()
        _check_sizes(query_size=query_size, key_size=key_size)
        self.query_size, self.key_size = query_size, key_size
        self.key_proj = nn.Linear(key_size, query_size, bias=False, device=device, dtype=dtype)   # W_a

    def project_keys(self, keys: Tensor) -> Tensor:
        return self.key_proj(keys)                                               # (B, S, Q)

    def score(self, query: Tensor, projected: Tensor) -> Tensor:
        return torch.bmm(query, projected.transpose(1, 2))                       # (B, T, S)


class DotAttention(Attention):
    """Luong et al.'s "dot" score e_s = qᵀ k_s (no parameters; Q must equal K)."""

    def __init__(self, query_size: int, key_size: int | None = None) -> None:
        super().__init__()
        key_size = query_size if key_size is None else key_size
        _check_sizes(query_size=query_size, key_size=key_size)
        if key_size != query_size:
            raise ConfigError(expected("dot attention key size", f"the query size {query_size}", key_size))
        self.query_size = self.key_size = query_size

    def project_keys(self, keys: Tensor) -> Tensor:
        return keys

    def score(self, query: Tensor, projected: Tensor) -> Tensor:
        return torch.bmm(query, projected.transpose(1, 2))                       # (B, T, S)


def make_attention(kind: str, query_size: int, key_size: int, attention_size: int | None = None,
                   device=None, dtype=None) -> Attention:
    if kind == "additive":
        return AdditiveAttention(query_size, key_size, attention_size, device=device, dtype=dtype)
    if kind == "general":
        return GeneralAttention(query_size, key_size, device=device, dtype=dtype)
    if kind == "dot":
        return DotAttention(query_size, key_size)
    raise ConfigError(expected("attention", " or ".join(ATTENTIONS), repr(kind)))


def _check_sizes(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(expected(name, "an int > 0", repr(v)))
