"""Word embeddings tied to an adaptive softmax (adaptive input, Baevski & Auli 2019).

:class:`torch.nn.AdaptiveLogSoftmaxWithLoss` (Grave et al. 2017) scores the ``cutoffs[0]`` most
frequent words with the rows of its head, ``head.weight[:cutoffs[0]]`` (width ``in_features``),
and each rarer cluster ``i`` through a factorised layer: ``tail[i][0]`` projects the input down
to ``d_i = in_features // div_value**(i+1)`` and ``tail[i][1]``'s rows (width ``d_i``) score the
cluster's words. :class:`TiedAdaptiveEmbedding` reads the same numbers backwards: a word of the
head is embedded as its head row, a word of cluster ``i`` as its ``tail[i][1]`` row projected
back up by ``tail[i][0]``'s matrix::

    e(w) = head.weight[w]                                   w < cutoffs[0]
    e(w) = tail[i][1].weight[w - lo_i] @ tail[i][0].weight   lo_i <= w < hi_i

so rare words get small embeddings, and the embedding has no parameters of its own (the tying
of Press & Wolf 2017 and Inan et al. 2017, carried over to the adaptive softmax). The head's
cluster rows and bias serve the output only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TiedAdaptiveEmbedding(nn.Module):
    """Embedding whose weights are those of ``softmax`` (not copied, not registered twice).

    The softmax stays a child of the model that owns it, so its parameters appear once in
    ``parameters()`` and in checkpoints; this module keeps a plain reference to it.
    """

    def __init__(self, softmax: nn.AdaptiveLogSoftmaxWithLoss) -> None:
        super().__init__()
        self._softmax = (softmax,)   # a tuple: not a submodule, so no second copy in state_dict
        self.cutoffs = [0, *softmax.cutoffs]           # ends with n_classes
        self.num_embeddings = softmax.n_classes
        self.embedding_dim = softmax.in_features

    @property
    def softmax(self) -> nn.AdaptiveLogSoftmaxWithLoss:
        return self._softmax[0]

    def _rows(self, i: int) -> tuple[Tensor, Tensor | None]:
        """Cluster ``i``'s word vectors and the matrix taking them to ``embedding_dim`` (None: the head)."""
        s = self.softmax
        if i == 0:
            return s.head.weight[: self.cutoffs[1]], None
        down, out = s.tail[i - 1][0], s.tail[i - 1][1]
        return out.weight, down.weight

    @property
    def weight(self) -> Tensor:
        """The full (V, E) embedding matrix (for inspection and transfer; forward does not build it)."""
        parts = []
        for i in range(len(self.cutoffs) - 1):
            rows, up = self._rows(i)
            parts.append(rows if up is None else rows @ up)
        return torch.cat(parts)

    def forward(self, ids: Tensor) -> Tensor:
        """``ids`` (...) int64 -> (..., E); whole-word dropout is :func:`rnnlab.nn.regularize.embedding_dropout`'s."""
        # Every cluster looks every id up (clamped into its range) and keeps its own words: a few
        # small matrix products per token, no data-dependent shapes, so it traces and compiles.
        flat = ids.reshape(-1)
        out = None
        for i in range(len(self.cutoffs) - 1):
            lo, hi = self.cutoffs[i], self.cutoffs[i + 1]
            rows, up = self._rows(i)
            e = F.embedding((flat - lo).clamp(0, hi - lo - 1), rows)
            e = e if up is None else e @ up
            out = e if out is None else torch.where(((flat >= lo) & (flat < hi)).unsqueeze(1), e, out)
        return out.view(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, cutoffs={self.cutoffs[1:-1]}"
