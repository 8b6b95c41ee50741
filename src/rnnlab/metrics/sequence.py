"""Scores of output sequences against one or more references each.

* :func:`token_error_rate`: edit distance (substitutions + deletions + insertions) over the
  corpus divided by the reference tokens; against several references an output is scored
  against the closest one (fewest edits; the first on a tie). For grapheme-to-phoneme this is
  the phoneme error rate, PER.
* :func:`sequence_error_rate`: the fraction of outputs that equal none of their references. For
  grapheme-to-phoneme this is the word error rate, WER (a word is wrong unless its whole
  pronunciation matches one of the dictionary's).
* :func:`exact_match`: 1 − sequence error rate.
* :func:`corpus_bleu`, :func:`corpus_chrf`: sacreBLEU's scores (0..100) for text outputs
  (optional extra ``seq2seq``), with every reference of each output.

Outputs are token lists or strings; a string is split on whitespace (so ``"R EH D"`` is three
phonemes) unless ``chars=True``, which scores characters.
"""

from __future__ import annotations

from typing import Sequence, Union

from rnnlab.errors import ConfigError, DataError, expected, optional_module

Tokens = Union[str, Sequence[str]]


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences, every edit costing 1.

    >>> edit_distance("kitten", "sitting")
    3
    """
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _tokens(x: Tokens, chars: bool) -> list:
    if isinstance(x, str):
        return list(x) if chars else x.split()
    return list(x)


def _check(hyps: Sequence, refs: Sequence) -> list[list]:
    if len(hyps) != len(refs):
        raise DataError(expected("references", f"one list per output ({len(hyps)})", len(refs)))
    if not hyps:
        raise DataError(expected("outputs to score", "at least one", "none"))
    out = []
    for i, r in enumerate(refs):
        rs = [r] if isinstance(r, str) else list(r)
        if not rs:
            raise DataError(expected(f"references of output {i}", "at least one", "none"))
        out.append(rs)
    return out


def closest_reference(hyp: Tokens, refs: Sequence[Tokens], chars: bool = False) -> tuple[int, int]:
    """``(edits, reference length)`` for the reference of ``refs`` closest to ``hyp``."""
    h = _tokens(hyp, chars)
    best: tuple[int, int] | None = None
    for r in refs:
        rt = _tokens(r, chars)
        d = edit_distance(h, rt)
        if best is None or d < best[0]:
            best = (d, len(rt))
    assert best is not None
    return best


def token_error_rate(hyps: Sequence[Tokens], refs: Sequence[Tokens | Sequence[Tokens]], chars: bool = False) -> float:
    """Σ edits to the closest reference / Σ that reference's length, over the corpus."""
    edits = total = 0
    for h, rs in zip(hyps, _check(hyps, refs)):
        d, n = closest_reference(h, rs, chars)
        edits += d
        total += n
    if total == 0:
        raise DataError(expected("references", "at least one token", "only empty references"))
    return edits / total


def sequence_error_rate(hyps: Sequence[Tokens], refs: Sequence[Tokens | Sequence[Tokens]], chars: bool = False) -> float:
    """Fraction of outputs equal to none of their references (compared as token lists)."""
    wrong = 0
    for h, rs in zip(hyps, _check(hyps, refs)):
        ht = _tokens(h, chars)
        wrong += all(_tokens(r, chars) != ht for r in rs)
    return wrong / len(hyps)


def exact_match(hyps: Sequence[Tokens], refs: Sequence[Tokens | Sequence[Tokens]], chars: bool = False) -> float:
    return 1.0 - sequence_error_rate(hyps, refs, chars)


def g2p_scores(hyps: Sequence[Tokens], refs: Sequence[Tokens | Sequence[Tokens]]) -> dict[str, float]:
    """``{"per": ..., "wer": ...}`` for phoneme outputs scored against every pronunciation of each word."""
    return {"per": token_error_rate(hyps, refs), "wer": sequence_error_rate(hyps, refs)}


def _sacrebleu_refs(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> list[list[str | None]]:
    """sacreBLEU wants reference *streams*: stream k holds every output's k-th reference (None
    where an output has fewer)."""
    per_output = _check(hyps, refs)
    width = max(len(r) for r in per_output)
    return [[r[k] if k < len(r) else None for r in per_output] for k in range(width)]


def _sacrebleu():
    return optional_module("sacrebleu", "BLEU/chrF", "the sacrebleu package (pip install 'rnnlab[seq2seq]')")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """sacreBLEU's corpus BLEU (13a tokenisation, 0..100)."""
    return float(_sacrebleu().corpus_bleu(list(hyps), _sacrebleu_refs(hyps, refs)).score)


def corpus_chrf(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """sacreBLEU's corpus chrF (character 6-grams, β = 2, 0..100)."""
    return float(_sacrebleu().corpus_chrf(list(hyps), _sacrebleu_refs(hyps, refs)).score)
