"""Sequence metrics: edit distance and error rates against jiwer, multiple references, sacreBLEU."""

from __future__ import annotations

import random

import pytest

from rnnlab.errors import DataError
from rnnlab.metrics.sequence import (corpus_bleu, corpus_chrf, edit_distance, exact_match, g2p_scores,
                                     sequence_error_rate, token_error_rate)


def _brute_distance(a, b):
    """Edit distance by recursion over prefixes (exponential; tiny inputs only)."""
    if not a or not b:
        return len(a) + len(b)
    return min(_brute_distance(a[1:], b) + 1, _brute_distance(a, b[1:]) + 1, _brute_distance(a[1:], b[1:]) + (a[0] != b[0]))


def test_edit_distance_against_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 5))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 5))]
        assert edit_distance(a, b) == _brute_distance(a, b), (a, b)


def test_single_reference_rates_match_jiwer():
    jiwer = pytest.importorskip("jiwer")
    rng = random.Random(1)
    phones = ["AA", "AE", "B", "D", "EH", "R", "T"]
    refs = [" ".join(rng.choices(phones, k=rng.randint(1, 6))) for _ in range(60)]
    hyps = [" ".join(rng.choices(phones, k=rng.randint(0, 6))) if i % 3 else r for i, r in enumerate(refs)]
    assert token_error_rate(hyps, refs) == pytest.approx(jiwer.wer(refs, [h or "" for h in hyps]))
    assert token_error_rate(hyps, refs, chars=True) == pytest.approx(jiwer.cer(refs, hyps))
    assert sequence_error_rate(hyps, refs) == pytest.approx(sum(h.split() != r.split() for h, r in zip(hyps, refs)) / 60)


def test_multiple_references_score_against_the_closest():
    refs = [["R EH D", "R IY D"], ["T AH M EY T OW", "T AH M AA T OW"], ["AH"]]
    hyps = ["R IY D", "T AH M AA T AH", "EY"]
    s = g2p_scores(hyps, refs)
    assert s["per"] == pytest.approx((0 + 1 + 1) / (3 + 6 + 1))
    assert s["wer"] == pytest.approx(2 / 3)
    assert exact_match(hyps, refs) == pytest.approx(1 / 3)
    assert exact_match([["2", "0"]], [[["2", "0"]]]) == 1.0
    with pytest.raises(DataError, match=r"references: expected one list per output \(2\), got 1"):
        token_error_rate(["a", "b"], [["a"]])


def test_bleu_and_chrf_use_every_reference():
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps = ["the cat is on the mat", "there is a dog here"]
    refs = [["the cat is on the mat", "a cat sits on the mat"], ["a dog is here"]]
    streams = [[r[0] for r in refs], ["a cat sits on the mat", None]]
    assert corpus_bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score)
    assert corpus_chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, streams).score)
    assert corpus_bleu(hyps[:1], refs[:1]) == pytest.approx(100.0)
    assert corpus_bleu(hyps, refs) > corpus_bleu(hyps, [r[-1:] for r in refs])
