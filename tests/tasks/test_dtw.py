"""rnnlab.tasks.dtw against the textbook DTW recursion (full cost matrix, float64) and, where
sktime is installed, against sktime's DTW."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.tasks import dtw
from rnnlab.tasks.classify import _dtw_backend, nearest_neighbour

pytestmark = pytest.mark.skipif(not dtw.HAVE_NUMBA, reason="rnnlab's DTW needs numba")


def textbook_dtw(a: np.ndarray, b: np.ndarray) -> float:
    n, m = len(a), len(b)
    c = np.full((n + 1, m + 1), np.inf)
    c[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c[i, j] = ((a[i - 1] - b[j - 1]) ** 2).sum() + min(c[i - 1, j], c[i, j - 1], c[i - 1, j - 1])
    return c[n, m]


def series(rng, lengths, dims):
    return [rng.normal(size=(int(t), dims)) for t in lengths]


@pytest.mark.parametrize("dims", [1, 3])
def test_distances_match_the_textbook_recursion(dims):
    rng = np.random.default_rng(dims)
    a = series(rng, (1, 2, 9, 17), dims)          # lengths 1 and 2: the first row/column paths
    b = series(rng, (1, 5, 12, 30, 3), dims)
    want = np.array([[textbook_dtw(x, y) for y in b] for x in a])
    np.testing.assert_allclose(dtw.dtw_pairwise(a, b), want, rtol=1e-12)


def test_distances_match_sktime():
    pytest.importorskip("sktime")
    from sktime.dists_kernels._numba_distances._distance import dtw_distance

    rng = np.random.default_rng(7)
    a, b = series(rng, (4, 11, 23), 2), series(rng, (6, 19), 2)
    # sktime takes (D, T) series; its bounding window differs from the full one at length 1, so 2+
    want = np.array([[dtw_distance(np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)) for y in b] for x in a])
    np.testing.assert_allclose(dtw.dtw_pairwise(a, b), want, rtol=1e-10)


def test_identical_series_are_at_distance_zero_and_warping_is_free():
    s = np.array([[0.0], [1.0], [2.0], [1.0]])
    stretched = np.repeat(s, 3, axis=0)              # the same shape, three times as slow
    d = dtw.dtw_pairwise([s], [s, stretched, s + 1.0])
    # s + 1 = [1, 2, 3, 2]: the best path pairs 0-1, 1-1, 2-2, 2-3, 1-2, costs 1 + 0 + 0 + 1 + 1
    assert d[0, 0] == 0.0 and d[0, 1] == 0.0 and d[0, 2] == 3.0


def test_bad_series_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        dtw.dtw_pairwise([np.zeros((3, 1))], [np.zeros((0, 1))])
    with pytest.raises(ValueError, match="one D"):
        dtw.dtw_pairwise([np.zeros((3, 1))], [np.zeros((3, 2))])
    assert dtw.dtw_pairwise([], [np.zeros((3, 1))]).shape == (0, 1)


def test_nearest_neighbour_dtw_against_the_textbook_recursion():
    backend = _dtw_backend()
    assert backend is not None          # numba is here (module skip), so there is always a backend
    rng = np.random.default_rng(1)
    train = series(rng, (6, 8, 5), 1)
    test = series(rng, (7, 5), 1)
    want = [int(np.argmin([textbook_dtw(a, b) for b in train])) for a in test]
    np.testing.assert_array_equal(nearest_neighbour(train, np.arange(3), test, "dtw", backend[1]), want)
