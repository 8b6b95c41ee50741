r"""Greedy and beam-search decoding of an :class:`~rnnlab.nn.seq2seq.EncoderDecoder`.

Both step the decoder one token at a time (:meth:`EncoderDecoder.step`, the recurrent layers'
T = 1 path) over a whole batch of sources. Each example stops at ``<eos>`` or at its own length
limit, ``max_len`` tokens, or by default ``2·S_i + 10`` for a source of S_i tokens, so an
example decodes the same in any batch.

Beam search keeps K hypotheses per example (the batch runs as B·K rows). At each step the 2K best
continuations of the K hypotheses are taken in order: one that ends in ``<eos>`` among the first
K is finished, the others fill the K live beams. A finished hypothesis of n tokens (its
``<eos>`` included) is ranked by GNMT's length normalisation (Wu et al. 2016)::

    score = log p(y | x) / lp(n),    lp(n) = ((5 + n) / 6) ** alpha     (alpha = 0: no normalisation)

An example is done with K finished hypotheses when ``early_stop`` is set; without it, only once
no live hypothesis can still beat the worst of them (log-probabilities only fall, so a live one
can reach at most its log p / lp(limit)), or at its limit. With K = 1 and ``early_stop`` (or
``alpha = 0``) beam search returns exactly the greedy output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from rnnlab.errors import ConfigError, expected
from rnnlab.nn.seq2seq import BOS_ID, EOS_ID, PAD_ID, EncoderDecoder


@dataclass
class Hypothesis:
    """One output: ``tokens`` without ``<eos>``; ``attention`` has one row per step, the ``<eos>``
    step included when ``finished``."""

    tokens: list[int]
    log_prob: float              # log p(tokens, <eos> if finished | source)
    score: float                 # log_prob / lp(steps): the beam's ranking
    finished: bool               # ended with <eos> (else cut at the length limit)
    attention: Tensor | None     # (steps, S) for this source's S tokens, or None


def length_penalty(n: int, alpha: float) -> float:
    return ((5.0 + n) / 6.0) ** alpha


# Token ids no output holds, whatever the model ranks them (rnnlab's vocabularies; a runtime
# driving the exported decoder step skips them too).
NEVER_OUTPUT = (PAD_ID, BOS_ID)


def next_token(logits: Tensor, never: Sequence[int] = NEVER_OUTPUT) -> Tensor:
    """The greedy choice over ``logits`` (..., V): the most probable token not in ``never`` (by
    default ``<pad>`` and ``<bos>``), as :func:`greedy_decode` makes it; no gradient."""
    idx = torch.tensor(list(never), dtype=torch.long, device=logits.device)
    return logits.detach().index_fill(-1, idx, float("-inf")).argmax(-1)


def _never(model: EncoderDecoder, pad_id: int, bos_id: int, eos_id: int) -> list[int]:
    """The ids decoding never chooses: ``<pad>`` and ``<bos>`` (a model early in training may rank
    them first, but neither can be part of an output: the decoded text would drop them and hide
    steps that were scored), unless one is also the ``<eos>`` id; a ConfigError when no other token
    is left to choose."""
    V = model.output.out_features
    never = sorted({pad_id, bos_id} - {eos_id})
    if not any(k not in never for k in range(V)):
        raise ConfigError(expected("target vocabulary", f"a token besides <pad> ({pad_id}) and <bos> ({bos_id})",
                                   f"{V} token(s)"))
    return never


def _log_probs(logits: Tensor, never: list[int]) -> Tensor:
    """Log-probabilities of the next token, the ``never`` ids at -inf (the others keep the model's own)."""
    # Half-precision logits are summed over many steps: accumulate in float32 at least.
    logp = torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)
    logp[:, never] = float("-inf")
    return logp


def _limits(src_lengths: Tensor, max_len: int | None) -> list[int]:
    if max_len is not None:
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ConfigError(expected("max_len", "an int >= 1", repr(max_len)))
        return [max_len] * len(src_lengths)
    return [2 * int(n) + 10 for n in src_lengths]


@torch.no_grad()
def greedy_decode(model: EncoderDecoder, src: Tensor, src_lengths: Tensor, max_len: int | None = None,
                  bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID) -> list[Hypothesis]:
    """The most probable token at every step (never ``<pad>`` or ``<bos>``), for each source of the batch."""
    never = _never(model, pad_id, bos_id, eos_id)
    B = src.shape[0]
    limits = _limits(src_lengths, max_len)
    S_of = [int(n) for n in src_lengths]
    memory, state = model.encode(src, src_lengths)
    y = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
    tokens: list[list[int]] = [[] for _ in range(B)]
    log_probs = [0.0] * B
    steps = [0] * B                                # decoder steps of example b (its attention rows)
    weights: list[Tensor] = []                     # per step (B, S); sliced per example at the end
    finished = [False] * B
    live = list(range(B))
    for t in range(1, max(limits) + 1):
        logits, state, w = model.step(y, state, memory)
        logp = _log_probs(logits, never)          # (B, V)
        best_lp, y = logp.max(dim=-1)
        best, best_lp_l = y.tolist(), best_lp.tolist()
        if w is not None:
            weights.append(w)
        still = []
        for b in live:
            log_probs[b] += best_lp_l[b]
            steps[b] = t
            if best[b] == eos_id:
                finished[b] = True
                continue
            tokens[b].append(best[b])
            if t < limits[b]:
                still.append(b)
        live = still
        if not live:
            break
    att = torch.stack(weights, 1) if weights else None       # (B, steps, S)
    # Greedy ranks nothing: its score is the plain log-probability (alpha = 0).
    return [Hypothesis(tokens[b], log_probs[b], log_probs[b], finished[b],
                       None if att is None else att[b, : steps[b], : S_of[b]].clone())
            for b in range(B)]


@torch.no_grad()
def beam_search(model: EncoderDecoder, src: Tensor, src_lengths: Tensor, beam: int = 5, nbest: int = 1,
                alpha: float = 0.6, early_stop: bool = True, max_len: int | None = None,
                bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID) -> list[list[Hypothesis]]:
    """The ``nbest`` best hypotheses of a width-``beam`` search, best first, for each source (no
    hypothesis holds ``<pad>`` or ``<bos>``)."""
    for name, v in (("beam", beam), ("nbest", nbest)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(expected(name, "an int >= 1", repr(v)))
    if nbest > beam:
        raise ConfigError(expected("nbest", f"at most the beam width {beam}", nbest))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ConfigError(expected("alpha (length normalisation)", "a number >= 0", repr(alpha)))
    never = _never(model, pad_id, bos_id, eos_id)
    B, K, dev = src.shape[0], beam, src.device
    limits = _limits(src_lengths, max_len)
    S_of = [int(n) for n in src_lengths]
    memory, state = model.encode(src, src_lengths)
    rep = torch.arange(B, device=dev).repeat_interleave(K)               # row b·K + k is beam k of example b
    memory, state = memory.index_select(rep), state.index_select(rep)
    dtype = torch.float64 if model.output.weight.dtype == torch.float64 else torch.float32
    scores = torch.full((B, K), float("-inf"), dtype=dtype, device=dev)
    scores[:, 0] = 0.0                                                   # one live hypothesis to start
    y = torch.full((B * K,), bos_id, dtype=torch.long, device=dev)
    hist = torch.empty((B * K, 0), dtype=torch.long, device=dev)         # (B·K, t) tokens so far
    att: Tensor | None = None                                            # (B·K, t, S) weights so far
    done_hyps: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B
    for t in range(1, max(limits) + 1):
        logits, state, w = model.step(y, state, memory)
        logp = _log_probs(logits, never)          # (B·K, V)
        V = logp.shape[-1]
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)
        top_s, top_i = cand.topk(min(2 * K, K * V), dim=1)                # (B, 2K)
        top_s_l, top_i_l = top_s.tolist(), top_i.tolist()
        if w is not None:
            att = w.unsqueeze(1) if att is None else torch.cat([att, w.unsqueeze(1)], dim=1)
        src_rows, new_tok, new_scores = [], [], []
        for b in range(B):
            alive: list[tuple[float, int, int]] = []
            if not done[b]:
                for rank, (s, i) in enumerate(zip(top_s_l[b], top_i_l[b])):
                    if s == float("-inf"):
                        break
                    k, tok = divmod(i, V)
                    row = b * K + k
                    if tok == eos_id or t == limits[b]:
                        if rank < K:
                            ended = tok == eos_id
                            toks = hist[row].tolist() + ([] if ended else [tok])
                            rows = None if att is None else att[row, :, : S_of[b]].clone()
                            done_hyps[b].append(Hypothesis(toks, s, s / length_penalty(t, alpha), ended, rows))
                        continue
                    alive.append((s, k, tok))
                    if len(alive) == K:
                        break
                done_hyps[b].sort(key=lambda h: -h.score)
                del done_hyps[b][K:]
                if t == limits[b] or not alive:
                    done[b] = True
                elif len(done_hyps[b]) == K:
                    worst = done_hyps[b][-1].score
                    done[b] = early_stop or alive[0][0] / length_penalty(limits[b], alpha) <= worst
            if done[b]:
                alive = []
            alive += [(float("-inf"), 0, eos_id)] * (K - len(alive))
            for s, k, tok in alive:
                src_rows.append(b * K + k)
                new_tok.append(tok)
                new_scores.append(s)
        if all(done):
            break
        idx = torch.tensor(src_rows, dtype=torch.long, device=dev)
        y = torch.tensor(new_tok, dtype=torch.long, device=dev)
        scores = torch.tensor(new_scores, dtype=dtype, device=dev).view(B, K)
        hist = torch.cat([hist.index_select(0, idx), y.unsqueeze(1)], dim=1)
        if att is not None:
            att = att.index_select(0, idx)
        state = state.index_select(idx)
    return [h[:nbest] for h in done_hyps]
