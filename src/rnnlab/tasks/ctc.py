"""CTC decoding and the error rates of label sequences (digit strings, words, characters).

Notation: ``log_probs`` is ``(T, C)``, row ``t`` the log-softmax over ``C`` classes at frame
``t``, one of them the blank ``blank``. A *path* ``π`` gives a class per frame; collapsing it
(merge repeats, then drop blanks) gives a *labelling*. CTC's probability of a labelling is the
sum over its paths: ``P(l | x) = Σ_{π → l} Π_t p_t(π_t)``.

* :func:`ctc_log_prob`: ``log P(l | x)`` by the forward recursion over the blank-extended
  labelling (what ``torch.nn.functional.ctc_loss`` negates).
* :func:`best_alignment`: the most probable single path of a given labelling (Viterbi),
  which gives each label its frames.
* :func:`greedy_decode`: the labelling of the most probable path (argmax per frame). Cheap,
  and the usual choice for streaming; it is not always the most probable labelling.
* :func:`beam_search`: CTC prefix beam search: it keeps the ``beam`` most probable prefixes,
  each with its probability split by whether its paths end in a blank, summed over all the
  paths that reach it. Without pruning (a beam as wide as the number of prefixes) it finds the
  most probable labelling exactly. A beam of one is *not* greedy decoding in general: it
  compares prefixes by their summed probability, where greedy compares single frames (frames
  ``p = (blank .3, a .3, b .4)`` after an ``a``: greedy emits ``b``, a beam of one keeps ``a``,
  which is the more probable labelling); they agree when every frame's best class holds most
  of the mass, as in a trained model's peaked outputs. The final candidates (the surviving
  prefixes and the greedy labelling) are rescored exactly, so the result is never less
  probable than greedy decoding's; pruning alone does not guarantee that.

Every decoder returns :class:`Hypothesis` objects whose ``log_prob`` is the exact
``log P(labels | x)`` and whose tokens carry frame timings from the labelling's best alignment.

Error rates: :func:`edit_distance` (Levenshtein: substitutions, deletions, insertions),
:func:`error_rate` (total edits over total reference length: the digit, word or character
error rate) and :func:`sequence_accuracy` (whole strings right).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from rnnlab.errors import ConfigError, ShapeError, expected

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Token:
    label: int
    start: int          # first frame emitting the label on the best alignment
    end: int            # one past its last frame
    log_prob: float     # Σ log p_t(label) over those frames

    @property
    def frames(self) -> range:
        return range(self.start, self.end)


@dataclass(frozen=True)
class Hypothesis:
    labels: tuple[int, ...]
    log_prob: float             # exact log P(labels | x), summed over all paths
    path_log_prob: float        # log-probability of the best single path of the labels
    tokens: tuple[Token, ...]   # one per label, in order, with frame timings


def _check(log_probs, blank: int) -> np.ndarray:
    lp = log_probs.detach().cpu().double().numpy() if hasattr(log_probs, "detach") else np.asarray(log_probs, np.float64)
    if lp.ndim != 2 or lp.shape[1] < 2:
        raise ShapeError(expected("CTC log-probabilities", "(T, C) with C >= 2 (blank and a label)", tuple(lp.shape)))
    if not 0 <= blank < lp.shape[1]:
        raise ConfigError(expected("blank index", f"0..{lp.shape[1] - 1}", blank))
    if np.isnan(lp).any() or (lp == np.inf).any():
        raise ShapeError(expected("CTC log-probabilities", "no NaN or +inf", "some"))
    return lp


def collapse(path: Sequence[int], blank: int = 0) -> tuple[int, ...]:
    """The labelling of a path: repeats merged, then blanks dropped."""
    out, prev = [], None
    for c in path:
        c = int(c)
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return tuple(out)


def ctc_log_prob(log_probs, labels: Sequence[int], blank: int = 0) -> float:
    """``log P(labels | x)`` by the CTC forward recursion (``-inf`` if no path fits in ``T`` frames)."""
    lp = _check(log_probs, blank)
    T = lp.shape[0]
    ext = [blank]
    for c in labels:
        ext += [int(c), blank]                                     # blank-extended labelling, 2L + 1
    S = len(ext)
    if T == 0:
        return 0.0 if not labels else NEG_INF
    ext_a = np.array(ext)
    # Skipping the blank between two labels is allowed only when they differ.
    skip = np.zeros(S, dtype=bool)
    skip[2:] = (ext_a[2:] != blank) & (ext_a[2:] != ext_a[:-2])
    alpha = np.full(S, NEG_INF)
    alpha[0] = lp[0, ext[0]]
    if S > 1:
        alpha[1] = lp[0, ext[1]]
    for t in range(1, T):
        prev = alpha
        a = prev.copy()
        a[1:] = np.logaddexp(a[1:], prev[:-1])
        a[2:] = np.where(skip[2:], np.logaddexp(a[2:], prev[:-2]), a[2:])
        alpha = a + lp[t, ext_a]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if S > 1 else alpha[-1])


def best_alignment(log_probs, labels: Sequence[int], blank: int = 0) -> tuple[np.ndarray, float]:
    """The most probable path ``(T,)`` that collapses to ``labels``, and its log-probability.

    Raises when no path of ``T`` frames can spell ``labels`` (too many labels, or repeats
    that need blanks between them).
    """
    lp = _check(log_probs, blank)
    T = lp.shape[0]
    ext = [blank]
    for c in labels:
        ext += [int(c), blank]
    S = len(ext)
    ext_a = np.array(ext)
    if T == 0:
        if labels:
            raise ShapeError(expected("frames for the labels", f">= {len(labels)}", 0))
        return np.zeros(0, dtype=np.int64), 0.0
    skip = np.zeros(S, dtype=bool)
    skip[2:] = (ext_a[2:] != blank) & (ext_a[2:] != ext_a[:-2])
    score = np.full(S, NEG_INF)
    score[0] = lp[0, ext[0]]
    if S > 1:
        score[1] = lp[0, ext[1]]
    back = np.zeros((T, S), dtype=np.int8)                         # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, T):
        from_prev = np.full(S, NEG_INF)
        from_prev[1:] = score[:-1]
        from_skip = np.full(S, NEG_INF)
        from_skip[2:] = score[:-2]
        from_skip[~skip] = NEG_INF
        cands = np.stack([score, from_prev, from_skip])                       # (3, S)
        back[t] = np.argmax(cands, axis=0)
        score = cands[back[t], np.arange(S)] + lp[t, ext_a]
    end = S - 1 if S == 1 or score[S - 1] >= score[S - 2] else S - 2
    if score[end] == NEG_INF:
        raise ShapeError(expected(f"a path of {T} frames for {len(labels)} labels", "one with non-zero probability",
                                  "none (too few frames, or zero-probability frames)"))
    best = float(score[end])
    path = np.zeros(T, dtype=np.int64)
    s = end
    for t in range(T - 1, -1, -1):
        path[t] = ext[s]
        s -= int(back[t, s])
    return path, best


def _tokens(lp: np.ndarray, path: np.ndarray, blank: int) -> tuple[Token, ...]:
    tokens, t, T = [], 0, len(path)
    while t < T:
        c = int(path[t])
        end = t + 1
        while end < T and path[end] == c:
            end += 1
        if c != blank:
            tokens.append(Token(c, t, end, float(lp[t:end, c].sum())))
        t = end
    return tuple(tokens)


def _hypothesis(lp: np.ndarray, labels: tuple[int, ...], blank: int, path: np.ndarray | None = None) -> Hypothesis:
    if path is None:
        path, best = best_alignment(lp, labels, blank)
    else:
        best = float(lp[np.arange(len(path)), path].sum())
    return Hypothesis(labels, ctc_log_prob(lp, labels, blank), best, _tokens(lp, path, blank))


def greedy_decode(log_probs, blank: int = 0) -> Hypothesis:
    """The labelling of the argmax path, with each token's frames on that path."""
    lp = _check(log_probs, blank)
    path = lp.argmax(axis=1)
    return _hypothesis(lp, collapse(path, blank), blank, path)


def beam_search(log_probs, beam: int = 8, blank: int = 0, nbest: int = 1) -> list[Hypothesis]:
    """CTC prefix beam search: the ``nbest`` best labellings found, best first.

    The search ranks prefixes by the probability summed over the paths it kept; at the end the
    surviving prefixes and the greedy labelling are rescored by their exact ``log P`` and
    returned in that order (so the best is never less probable than :func:`greedy_decode`'s).
    """
    if beam < 1 or nbest < 1:
        raise ConfigError(expected("beam and nbest", "positive ints", (beam, nbest)))
    lp = _check(log_probs, blank)
    T, C = lp.shape
    labels = [c for c in range(C) if c != blank]
    # prefix -> [log P(prefix, paths ending in blank), log P(prefix, paths ending in its last label)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF]}
    for t in range(T):
        row = lp[t]
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix, which, value):
            entry = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
            entry[which] = np.logaddexp(entry[which], value)

        for prefix, (pb, pnb) in beams.items():
            total = np.logaddexp(pb, pnb)
            add(prefix, 0, total + row[blank])                   # a blank keeps the prefix
            last = prefix[-1] if prefix else None
            if last is not None:
                add(prefix, 1, pnb + row[last])                  # a repeat merges into the last label
            for c in labels:
                # After a blank, c == last starts a new label; directly after it, it would merge.
                add(prefix + (c,), 1, (pb if c == last else total) + row[c])
        ranked = sorted(nxt.items(), key=lambda kv: (-np.logaddexp(*kv[1]), kv[0]))
        beams = dict(ranked[:beam])
    # The final prefixes, and the greedy labelling, rescored exactly: the beam's sums are
    # lower bounds (pruned paths are missing), and with the greedy labelling among the
    # candidates the result is never less probable than greedy decoding's.
    candidates = set(beams) | {collapse(lp.argmax(axis=1), blank)}
    scored = sorted(((ctc_log_prob(lp, c, blank), c) for c in candidates), key=lambda sc: (-sc[0], sc[1]))
    # Labellings of probability zero (frames with -inf entries) fill a beam wider than the choices.
    scored = [sc for sc in scored if sc[0] > NEG_INF] or scored[:1]
    return [_hypothesis(lp, c, blank) for _, c in scored[:nbest]]


# ----------------------------------------------------------------------------- error rates


@dataclass(frozen=True)
class Edits:
    substitutions: int
    deletions: int          # reference labels missing from the hypothesis
    insertions: int         # hypothesis labels not in the reference

    @property
    def total(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def edit_distance(ref: Sequence, hyp: Sequence) -> Edits:
    """Levenshtein alignment of ``hyp`` to ``ref``; among minimal alignments, the counts of the
    one that prefers substitutions, then deletions (a fixed, documented tie-break)."""
    n, m = len(ref), len(hyp)
    # d[i][j] = (total, subs, dels, ins) for ref[:i] vs hyp[:j]; tuples compare total first.
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            t, s, d, ins = prev[j - 1]
            same = ref[i - 1] == hyp[j - 1]
            diag = (t + (not same), s + (not same), d, ins)
            t, s, d, ins = prev[j]
            up = (t + 1, s, d + 1, ins)
            t, s, d, ins = cur[j - 1]
            left = (t + 1, s, d, ins + 1)
            cur.append(min(diag, up, left, key=lambda e: e[0]))
        prev = cur
    _, s, d, ins = prev[m]
    return Edits(s, d, ins)


def align(ref: Sequence, hyp: Sequence) -> list[tuple[Any, Any]]:
    """A minimal edit alignment as pairs ``(r, h)``: a match or substitution ``(r, h)``, a deletion
    ``(r, None)``, an insertion ``(None, h)``, in order; ties broken as :func:`edit_distance`'s
    (substitutions, then deletions), so its counts are that function's."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int64)
    d[:, 0], d[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]), d[i - 1, j] + 1, d[i, j - 1] + 1)
    pairs: list[tuple[Any, Any]] = []
    i, j = n, m
    while i or j:
        if i and j and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i, j] == d[i - 1, j] + 1:
            pairs.append((ref[i - 1], None))
            i -= 1
        else:
            pairs.append((None, hyp[j - 1]))
            j -= 1
    return pairs[::-1]


def error_rate(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> float:
    """Σ edit distance / Σ reference length over a corpus (the digit/word error rate)."""
    if len(refs) != len(hyps):
        raise ShapeError(expected("hypotheses", f"one per reference ({len(refs)})", len(hyps)))
    ref_len = sum(len(r) for r in refs)
    if ref_len == 0:
        raise ShapeError(expected("references", "at least one label in total", "only empty ones"))
    return sum(edit_distance(r, h).total for r, h in zip(refs, hyps)) / ref_len


def sequence_accuracy(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> float:
    """Fraction of hypotheses equal to their reference as a whole (string accuracy)."""
    if len(refs) != len(hyps) or not refs:
        raise ShapeError(expected("hypotheses", f"one per reference ({len(refs)}), at least one", len(hyps)))
    return sum(tuple(r) == tuple(h) for r, h in zip(refs, hyps)) / len(refs)


# The names the speech task reports.
digit_error_rate = error_rate
string_accuracy = sequence_accuracy
