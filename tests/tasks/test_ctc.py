"""CTC decoding on hand-made alignments, against torch's CTC loss and brute force; error rates on hand cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from rnnlab.errors import ConfigError, ShapeError
from rnnlab.tasks.ctc import (
    Edits, beam_search, best_alignment, collapse, ctc_log_prob, digit_error_rate, edit_distance, greedy_decode,
    string_accuracy,
)

B = 0  # blank


def peaked(path, C, p=0.9):
    """Log-probs (T, C) whose argmax follows ``path`` with probability ``p`` per frame."""
    lp = np.full((len(path), C), (1 - p) / (C - 1))
    lp[np.arange(len(path)), path] = p
    return np.log(lp)


def random_log_probs(rng, T, C, sharpness=1.0):
    return torch.log_softmax(torch.from_numpy(rng.standard_normal((T, C)) * sharpness), dim=1).numpy()


def torch_ctc(lp, labels):
    return -torch.nn.functional.ctc_loss(
        torch.from_numpy(lp)[:, None], torch.tensor([labels], dtype=torch.long), torch.tensor([lp.shape[0]]),
        torch.tensor([len(labels)]), blank=B, reduction="none", zero_infinity=False).item()


def test_collapse():
    assert collapse([0, 1, 1, 0, 0, 2, 2, 2, 0, 1]) == (1, 2, 1)
    assert collapse([1, 0, 1, 1, 0]) == (1, 1)
    assert collapse([0, 0]) == () and collapse([]) == ()
    assert collapse([3, 3, 1], blank=3) == (1,)


def test_ctc_log_prob_by_hand_and_against_torch():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    # Paths of "1" in two frames: (1,1), (b,1), (1,b).
    by_hand = 0.3 * 0.6 + 0.5 * 0.6 + 0.3 * 0.1
    assert ctc_log_prob(np.log(p), [1]) == pytest.approx(np.log(by_hand), abs=1e-12)
    assert ctc_log_prob(np.log(p), [1, 1]) == float("-inf")      # "11" needs a blank between: 3 frames
    rng = np.random.default_rng(0)
    for labels in ([1], [1, 2], [2, 2], [1, 2, 1, 3], [3, 3, 3], []):
        lp = random_log_probs(rng, 9, 4)
        assert ctc_log_prob(lp, labels) == pytest.approx(torch_ctc(lp, labels), abs=1e-9), labels


def test_greedy_on_a_hand_made_alignment():
    path = [B, 1, 1, B, 2, 2, 2, B, 1, B, B, 1]
    hyp = greedy_decode(peaked(path, 3))
    assert hyp.labels == (1, 2, 1, 1)
    assert [(t.label, t.start, t.end) for t in hyp.tokens] == [(1, 1, 3), (2, 4, 7), (1, 8, 9), (1, 11, 12)]
    assert hyp.path_log_prob == pytest.approx(len(path) * np.log(0.9))
    assert hyp.tokens[1].log_prob == pytest.approx(3 * np.log(0.9))
    assert hyp.log_prob == pytest.approx(torch_ctc(peaked(path, 3), list(hyp.labels)), abs=1e-9)
    assert hyp.log_prob >= hyp.path_log_prob


def test_best_alignment_recovers_the_designed_path_and_inserts_blanks_between_repeats():
    path = [B, B, 3, 3, B, 1, B, 1, 1, 2, B]
    got, score = best_alignment(peaked(path, 4), [3, 1, 1, 2])
    assert got.tolist() == path and score == pytest.approx(len(path) * np.log(0.9))
    # Uniform frames: any path is as good; the one found must still spell the labels.
    got, _ = best_alignment(np.log(np.full((5, 3), 1 / 3)), [1, 1])
    assert collapse(got) == (1, 1)
    with pytest.raises(ShapeError, match="path of 2 frames"):
        best_alignment(np.log(np.full((2, 3), 1 / 3)), [1, 1])


def test_beam_search_times_tokens_on_a_hand_made_alignment():
    path = [B, 2, 2, B, B, 1, B, 2, B]
    (hyp,) = beam_search(peaked(path, 3), beam=4)
    assert hyp.labels == (2, 1, 2)
    assert [(t.start, t.end) for t in hyp.tokens] == [(1, 3), (5, 6), (7, 8)]


def test_beam_of_one_differs_from_greedy_where_summing_paths_matters():
    # Frame 1 says "a"; frame 2 has b as its argmax but blank + a outweigh it.
    lp = np.log(np.array([[0.05, 0.9, 0.05], [0.3, 0.3, 0.4]]))
    assert greedy_decode(lp).labels == (1, 2)
    (one,) = beam_search(lp, beam=1)
    assert one.labels == (1,)
    assert one.log_prob > greedy_decode(lp).log_prob        # 0.9 * 0.6 > 0.9 * 0.4 + 0.05 * 0.4


def test_beam_of_one_equals_greedy_on_peaked_frames():
    rng = np.random.default_rng(1)
    for _ in range(40):
        T, C = int(rng.integers(1, 25)), int(rng.integers(2, 6))
        path = rng.integers(0, C, T)
        lp = peaked(path, C, p=0.95)
        (one,) = beam_search(lp, beam=1)
        assert one.labels == greedy_decode(lp).labels == collapse(path)


def test_exhaustive_beam_finds_the_most_probable_labelling():
    rng = np.random.default_rng(2)
    for _ in range(6):
        T, C = 5, 3
        lp = random_log_probs(rng, T, C)
        labellings = {collapse(p) for p in itertools.product(range(C), repeat=T)}
        brute = max(labellings, key=lambda lab: torch_ctc(lp, list(lab)))
        (best,) = beam_search(lp, beam=len(labellings) + 1)
        assert best.labels == brute
        assert best.log_prob == pytest.approx(torch_ctc(lp, list(brute)), abs=1e-9)


def test_beam_is_at_least_as_probable_as_greedy_on_random_inputs():
    # Never below greedy (its labelling is among the rescored candidates); often above it.
    rng = np.random.default_rng(3)
    strictly_better = 0
    for _ in range(30):
        lp = random_log_probs(rng, int(rng.integers(5, 30)), 5, sharpness=1.5)
        greedy, (beam,) = greedy_decode(lp), beam_search(lp, beam=8)
        assert beam.log_prob >= greedy.log_prob - 1e-12
        assert beam.log_prob == pytest.approx(torch_ctc(lp, list(beam.labels)), abs=1e-9)
        strictly_better += beam.log_prob > greedy.log_prob + 1e-9
    assert strictly_better > 0            # the inputs are hard enough for the beam to matter


def test_nbest_is_distinct_and_ranked():
    lp = random_log_probs(np.random.default_rng(4), 12, 4)
    hyps = beam_search(lp, beam=10, nbest=5)
    assert len({h.labels for h in hyps}) == 5
    assert [h.log_prob for h in hyps] == sorted((h.log_prob for h in hyps), reverse=True)


def test_torch_input_empty_input_and_bad_input():
    lp = torch.log_softmax(torch.randn(7, 4), dim=1)
    assert greedy_decode(lp).labels == greedy_decode(lp.numpy()).labels
    assert greedy_decode(np.zeros((0, 3))).labels == () and beam_search(np.zeros((0, 3)))[0].labels == ()
    with pytest.raises(ShapeError):
        greedy_decode(np.zeros(5))
    with pytest.raises(ConfigError):
        greedy_decode(np.zeros((3, 3)), blank=3)
    with pytest.raises(ShapeError, match="NaN"):
        beam_search(np.full((3, 3), np.nan))
    with pytest.raises(ConfigError):
        beam_search(lp, beam=0)


# ----------------------------------------------------------------------------- error rates


@pytest.mark.parametrize("ref,hyp,edits", [
    ("123", "123", Edits(0, 0, 0)),
    ("123", "124", Edits(1, 0, 0)),
    ("123", "13", Edits(0, 1, 0)),
    ("123", "1223", Edits(0, 0, 1)),
    ("", "12", Edits(0, 0, 2)),
    ("12", "", Edits(0, 2, 0)),
    ("4567", "5674", Edits(0, 1, 1)),       # a rotation: one deletion and one insertion, not 4 substitutions
    ("1111", "11", Edits(0, 2, 0)),
])
def test_edit_distance_hand_cases(ref, hyp, edits):
    assert edit_distance(ref, hyp) == edits


def test_edit_distance_total_against_a_recursive_reference():
    def lev(a, b):
        if not a or not b:
            return len(a) + len(b)
        return min(lev(a[1:], b) + 1, lev(a, b[1:]) + 1, lev(a[1:], b[1:]) + (a[0] != b[0]))
    rng = np.random.default_rng(5)
    for _ in range(60):
        a = tuple(rng.integers(0, 3, rng.integers(0, 6)))
        b = tuple(rng.integers(0, 3, rng.integers(0, 6)))
        e = edit_distance(a, b)
        assert e.total == lev(a, b)
        # The counts explain the lengths: len(hyp) = len(ref) - deletions + insertions.
        assert len(b) == len(a) - e.deletions + e.insertions


def test_digit_error_rate_and_string_accuracy():
    refs = ["123", "45", "6"]
    hyps = ["123", "4", "67"]
    assert digit_error_rate(refs, hyps) == pytest.approx(2 / 6)
    assert string_accuracy(refs, hyps) == pytest.approx(1 / 3)
    assert digit_error_rate([(1, 2)], [(1, 2)]) == 0.0
    with pytest.raises(ShapeError):
        digit_error_rate(refs, hyps[:2])
    with pytest.raises(ShapeError):
        digit_error_rate([""], ["1"])


def test_align_spells_both_sequences_with_edit_distance_edits():
    from rnnlab.tasks.ctc import align

    assert align("522", "52") == [("5", "5"), ("2", None), ("2", "2")]
    assert align("31", "381") == [("3", "3"), (None, "8"), ("1", "1")]
    rng = np.random.default_rng(0)
    for _ in range(300):
        ref, hyp = list(rng.integers(0, 3, rng.integers(0, 6))), list(rng.integers(0, 3, rng.integers(0, 6)))
        pairs = align(ref, hyp)
        assert [a for a, _ in pairs if a is not None] == ref and [b for _, b in pairs if b is not None] == hyp
        e = edit_distance(ref, hyp)
        assert sum(a != b for a, b in pairs) == e.total
        assert sum(a is not None and b is not None and a != b for a, b in pairs) == e.substitutions
