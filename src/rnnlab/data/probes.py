"""Probe tasks: synthetic sequences that isolate the situations where gating matters.

Each generator is a pure function of ``(T, batch, seed_or_generator, **params)`` and returns a
:class:`ProbeBatch`. Every generator builds its inputs first and then computes its targets with
the task's own labelling function (``*_label``), which reads *only* the tokens the task says the
answer depends on; the tests check both that the generator agrees with the labelling function and
that the labelling function ignores everything else.

Layout: time first, like ``torch.nn``'s default: tokens ``(T, B)`` int64, real inputs ``(T, B, F)``.

| probe      | situation | answer depends on                     | chance / trivial baseline      |
|------------|-----------|---------------------------------------|--------------------------------|
| checksum   | 1: early  | first ``n_keys`` tokens and the query | acc 0.5 (balanced)             |
| distractor | 2: noise  | the ``n_signal`` signal tokens only   | acc 0.5 (balanced)             |
| segments   | 3: breaks | tokens after the last boundary only   | acc 0.5 (balanced)             |
| adding     | classic   | the two marked values                 | MSE 1/6 ≈ 0.167 (predict 1)    |
| copy       | classic   | the first 10 symbols                  | CE 10·ln 8/(T+20) (memoryless) |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.errors import ConfigError, expected

Seed = "int | torch.Generator"


@dataclass
class ProbeBatch:
    x: Tensor   # (T, B) int64 tokens, or (T, B, F) float32 for real-valued probes
    y: Tensor   # (B,) int64 class | (B,) float32 value | (T, B) int64 per-step class


def _gen(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(expected("probe seed", "an int or a torch.Generator", type(seed).__name__))
    return torch.Generator().manual_seed(seed)


def _check(name: str, T: int, batch: int, min_T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < min_T:
        raise ConfigError(expected(f"{name} length T", f"an int >= {min_T}", T))
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(expected(f"{name} batch size", "an int >= 1", batch))


def _randint(low: int, high: Tensor | int, size: tuple[int, ...], g: torch.Generator) -> Tensor:
    """Uniform ints in [low, high) where ``high`` may differ per element (a tensor)."""
    u = torch.rand(size, generator=g)
    return (low + (u * (high - low)).floor()).long()


# ---------------------------------------------------------------------------------------------
# checksum — situation 1: an early observation decides the answer
# ---------------------------------------------------------------------------------------------
# Tokens: key digits 0..D-1 | noise D..D+N-1 | query "even" D+N, query "odd" D+N+1.
# x = [k_1 .. k_K, noise x (T-K-1), q]; the checksum is the parity of k_1 + ... + k_K and the
# label is 1 iff the query names it. The query is drawn independently of the keys, "even" with
# probability ``query_skew``, so (with D even) the classes are balanced and the query alone says
# nothing (P(label | q) = 1/2): without the early tokens a model is at chance. Remembering the
# checksum alone gives ``query_skew`` (predict "match" iff checksum is even); comparing it with
# the query gives 1. The skew is what lets gradient descent start: with a symmetric query the
# label is an XOR of the checksum and the query, and no part of the answer rewards memory until
# both are learnt at once (a long plateau, measured > 1500 steps at T=30 for every cell).


def checksum_vocab(n_keys: int = 1, n_digits: int = 10, n_noise: int = 8, query_skew: float = 0.75) -> int:
    return n_digits + n_noise + 2


def checksum_label(x: Tensor, n_keys: int = 1, n_digits: int = 10, n_noise: int = 8,
                   query_skew: float = 0.75) -> Tensor:
    """Reads only the first ``n_keys`` tokens and the last (query) token.  (T, B) -> (B,)"""
    parity = x[:n_keys].sum(0) % 2
    query = x[-1] - (n_digits + n_noise)                                   # 0 "even", 1 "odd"
    return (query == parity).long()


def checksum(T: int, batch: int, seed: int | torch.Generator, n_keys: int = 1, n_digits: int = 10,
             n_noise: int = 8, query_skew: float = 0.75) -> ProbeBatch:
    _check("checksum", T, batch, n_keys + 1)
    if n_digits < 2 or n_digits % 2:
        raise ConfigError(expected("checksum n_digits", "an even int >= 2 (balanced parity)", n_digits))
    if not 0.0 <= query_skew <= 1.0:
        raise ConfigError(expected("checksum query_skew", "a probability in [0, 1]", query_skew))
    g = _gen(seed)
    keys = torch.randint(0, n_digits, (n_keys, batch), generator=g)
    noise = torch.randint(n_digits, n_digits + n_noise, (T - n_keys - 1, batch), generator=g)
    odd_query = (torch.rand(batch, generator=g) >= query_skew).long()
    query = odd_query + n_digits + n_noise
    x = torch.cat([keys, noise, query[None]], 0)                        # (T, B)
    return ProbeBatch(x, checksum_label(x, n_keys, n_digits, n_noise, query_skew))


# ---------------------------------------------------------------------------------------------
# distractor — situation 2: many tokens are irrelevant
# ---------------------------------------------------------------------------------------------
# Tokens: signal "+" = 0, signal "−" = 1, distractors 2..N+1. n_signal (odd) signal tokens at
# random distinct positions; label = 1 iff "+" outnumbers "−" (a majority vote, like sentiment).


def distractor_vocab(n_signal: int = 3, n_distract: int = 8) -> int:
    return 2 + n_distract


def distractor_label(x: Tensor, n_signal: int = 3, n_distract: int = 8) -> Tensor:
    """Reads only the signal tokens (ids 0 and 1).  (T, B) -> (B,)"""
    return ((x == 0).sum(0) > (x == 1).sum(0)).long()


def distractor(T: int, batch: int, seed: int | torch.Generator, n_signal: int = 3,
               n_distract: int = 8) -> ProbeBatch:
    if n_signal < 1 or n_signal % 2 == 0:
        raise ConfigError(expected("distractor n_signal", "an odd int >= 1", n_signal))
    _check("distractor", T, batch, n_signal)
    g = _gen(seed)
    x = torch.randint(2, 2 + n_distract, (T, batch), generator=g)
    # n_signal distinct positions per sample: the first n_signal of a random permutation.
    pos = torch.rand(T, batch, generator=g).argsort(0)[:n_signal]          # (S, B)
    sign = torch.randint(0, 2, (n_signal, batch), generator=g)
    x.scatter_(0, pos, sign)
    return ProbeBatch(x, distractor_label(x, n_signal, n_distract))


# ---------------------------------------------------------------------------------------------
# segments — situation 3: the sequence has logical breaks
# ---------------------------------------------------------------------------------------------
# Tokens: ordinary 0..S-1, flag S, boundary S+1. n_segments segments of about T/n tokens split
# by boundary tokens; each segment holds one flag with probability 1/2. Label = 1 iff the last segment holds a flag.
# A model that never resets ("any flag so far") scores 0.5 + 0.5**n_segments: near chance.


def segments_vocab(n_segments: int = 4, n_symbols: int = 6) -> int:
    return n_symbols + 2


def segments_label(x: Tensor, n_segments: int = 4, n_symbols: int = 6) -> Tensor:
    """Reads only the tokens after the last boundary.  (T, B) -> (B,)"""
    flag, boundary = n_symbols, n_symbols + 1
    T = x.shape[0]
    t = torch.arange(T)[:, None].expand_as(x)
    last_boundary = torch.where(x == boundary, t, -1).amax(0)              # (B,)
    in_last = t > last_boundary[None]
    return ((x == flag) & in_last).any(0).long()


def segments(T: int, batch: int, seed: int | torch.Generator, n_segments: int = 4,
             n_symbols: int = 6) -> ProbeBatch:
    if n_segments < 1:
        raise ConfigError(expected("segments n_segments", "an int >= 1", n_segments))
    _check("segments", T, batch, 4 * n_segments)
    g = _gen(seed)
    flag, boundary = n_symbols, n_symbols + 1
    x = torch.randint(0, n_symbols, (T, batch), generator=g)
    # Boundaries near j*T/n, jittered by up to a quarter segment: segments of similar length,
    # none empty, so every segment can hold a flag and the last one has about T/n tokens.
    L = T // n_segments
    j = torch.arange(1, n_segments)[:, None]                                # (n-1, 1)
    cuts = j * L - 1 + torch.randint(-(L // 4), L // 4 + 1, (n_segments - 1, batch), generator=g)
    x.scatter_(0, cuts, boundary)
    edges = torch.cat([torch.full((1, batch), -1), cuts, torch.full((1, batch), T)], 0)  # (n+1, B)
    for k in range(n_segments):
        start, length = edges[k] + 1, edges[k + 1] - edges[k] - 1           # (B,), (B,) length >= 1
        has_flag = torch.rand(batch, generator=g) < 0.5
        where = start + _randint(0, length, (batch,), g)
        cols = has_flag.nonzero().squeeze(1)
        x[where[cols], cols] = flag
    return ProbeBatch(x, segments_label(x, n_segments, n_symbols))


# ---------------------------------------------------------------------------------------------
# adding — the adding problem (Hochreiter & Schmidhuber 1997)
# ---------------------------------------------------------------------------------------------
# x[..., 0] = values U[0, 1]; x[..., 1] = 1 at one position in the first half and one in the
# second half. Target = sum of the two marked values. Predicting the constant 1 gives
# MSE = Var(U1 + U2) = 2/12 ≈ 0.167.


def adding_label(x: Tensor) -> Tensor:
    """Reads only the two marked values.  (T, B, 2) -> (B,)"""
    return (x[..., 0] * x[..., 1]).sum(0)


def adding(T: int, batch: int, seed: int | torch.Generator) -> ProbeBatch:
    _check("adding", T, batch, 2)
    g = _gen(seed)
    values = torch.rand(T, batch, generator=g)
    half = T // 2
    first = torch.randint(0, half, (batch,), generator=g)
    second = torch.randint(half, T, (batch,), generator=g)
    marks = torch.zeros(T, batch)
    marks[first, torch.arange(batch)] = 1.0
    marks[second, torch.arange(batch)] = 1.0
    x = torch.stack([values, marks], -1)                                  # (T, B, 2)
    return ProbeBatch(x, adding_label(x))


# ---------------------------------------------------------------------------------------------
# copy — the copy-memory task (Arjovsky et al. 2016)
# ---------------------------------------------------------------------------------------------
# Inputs (length T+20): 10 symbols from {1..8}, T-1 blanks (0), a delimiter (9), 10 blanks.
# Targets (length T+20): blank (0) everywhere except the last 10 steps, which hold the symbols.
# A memoryless model predicts blank for T+10 steps and guesses uniformly for 10:
# cross-entropy 10·ln 8 / (T+20).

COPY_SYMBOLS, COPY_N = 8, 10


def copy_label(x: Tensor) -> Tensor:
    """Reads only the first 10 symbols.  (T+20, B) -> (T+20, B)"""
    y = torch.zeros_like(x)
    y[-COPY_N:] = x[:COPY_N]
    return y


def copy(T: int, batch: int, seed: int | torch.Generator) -> ProbeBatch:
    _check("copy", T, batch, 1)
    g = _gen(seed)
    x = torch.zeros(T + 2 * COPY_N, batch, dtype=torch.long)
    x[:COPY_N] = torch.randint(1, COPY_SYMBOLS + 1, (COPY_N, batch), generator=g)
    x[COPY_N + T - 1] = COPY_SYMBOLS + 1                                   # the delimiter
    return ProbeBatch(x, copy_label(x))


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSpec:
    """What a trainer needs to know about a probe, beside its generator."""

    name: str
    make: Callable[..., ProbeBatch]         # (T, batch, seed, **params) -> ProbeBatch
    inputs: str                             # "tokens" (x is (T, B) ids) or "real" (x is (T, B, F))
    in_size: Callable[..., int]             # vocabulary size or feature count, from params
    n_out: int                              # head outputs: classes, or 1 for regression
    target: str                             # "final" (one label per sequence) or "per_step"
    loss: str                               # "ce" or "mse"
    metric: str                             # "acc", "mse" or "xent"
    higher_is_better: bool
    chance: Callable[[int], float]          # T -> chance level / trivial baseline of the metric
    baseline: str                           # what the chance number means, in words
    situation: str                          # the claim this probe tests, in words
    params: dict[str, Any] = field(default_factory=dict)  # generator keyword defaults

    def generate(self, T: int, batch: int, seed: int | torch.Generator, **params: Any) -> ProbeBatch:
        unknown = set(params) - set(self.params)
        if unknown:
            raise ConfigError(expected(f"{self.name} probe params", sorted(self.params), sorted(unknown)))
        return self.make(T, batch, seed, **{**self.params, **params})

    def input_size(self, **params: Any) -> int:
        return self.in_size(**{**self.params, **params})

    def seq_len(self, T: int) -> int:
        """The number of time steps the model actually runs (copy adds 20)."""
        return T + 2 * COPY_N if self.name == "copy" else T


PROBES: dict[str, ProbeSpec] = {
    "checksum": ProbeSpec(
        "checksum", checksum, "tokens", checksum_vocab, 2, "final", "ce", "acc", True,
        lambda T: 0.5, "chance (balanced classes)",
        "An early observation decides the answer: the first token carries a checksum (its "
        "parity) that a query at the end must be checked against.",
        {"n_keys": 1, "n_digits": 10, "n_noise": 8, "query_skew": 0.75}),
    "distractor": ProbeSpec(
        "distractor", distractor, "tokens", distractor_vocab, 2, "final", "ce", "acc", True,
        lambda T: 0.5, "chance (balanced classes)",
        "Many tokens are irrelevant: a majority vote of a few signal tokens hidden among "
        "distractors.",
        {"n_signal": 3, "n_distract": 8}),
    "segments": ProbeSpec(
        "segments", segments, "tokens", segments_vocab, 2, "final", "ce", "acc", True,
        lambda T: 0.5, "chance (balanced classes)",
        "The sequence has logical breaks: the answer depends only on the segment after the last "
        "boundary, so the state must be reset at each boundary.",
        {"n_segments": 4, "n_symbols": 6}),
    "adding": ProbeSpec(
        "adding", adding, "real", lambda: 2, 1, "final", "mse", "mse", False,
        lambda T: 1.0 / 6.0, "MSE of always predicting 1",
        "The adding problem: sum the two marked numbers of a long sequence.", {}),
    "copy": ProbeSpec(
        "copy", copy, "tokens", lambda: COPY_SYMBOLS + 2, COPY_SYMBOLS + 1, "per_step", "ce",
        "xent", False, lambda T: COPY_N * math.log(COPY_SYMBOLS) / (T + 2 * COPY_N),
        "cross-entropy of a memoryless model",
        "Copy memory: reproduce the first 10 symbols after a long blank.", {}),
}


def get_probe(name: str) -> ProbeSpec:
    if name not in PROBES:
        raise ConfigError(expected("probe", f"one of {sorted(PROBES)}", repr(name)))
    return PROBES[name]


def probe_loss(spec: ProbeSpec, pred: Tensor, y: Tensor) -> Tensor:
    """The training loss: MSE for a real-valued target, else cross-entropy (per step for ``copy``)."""
    if spec.loss == "mse":
        return F.mse_loss(pred, y)
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), y.reshape(-1))


def probe_metric(spec: ProbeSpec, pred: Tensor, y: Tensor) -> float:
    """The headline metric: accuracy, MSE, or per-step cross-entropy (as the baseline is stated)."""
    if spec.metric == "acc":
        return (pred.argmax(-1) == y).float().mean().item()
    return probe_loss(spec, pred, y).item()
