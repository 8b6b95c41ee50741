"""Dynamic time warping for the 1-NN DTW baseline of ``rnnlab train classify``.

The distance is the classic one the UCR archive's 1-NN DTW figures use: full window (no band),
squared Euclidean point costs summed over channels, and the cumulative cost of the best warping
path, without a square root (aeon's and sktime's ``dtw_distance`` define it the same way):

    C[i, j] = ||a_i - b_j||² + min(C[i-1, j], C[i, j-1], C[i-1, j-1]),   C[0, 0] = ||a_0 - b_0||²

Why a kernel here rather than a library call: aeon's DTW is the reference one but pins an older
numba than rnnlab's fast path needs, and sktime's, called pair by pair from Python, is too slow
for long variable-length sets (PLAID: series up to 1,344 steps). This one keeps two rows of the cost matrix, so
memory is O(length), and runs the test series in parallel on torch's thread count. It needs numba
(``pip install 'rnnlab[ucr]'`` or ``rnnlab[fast]``);
without numba :data:`HAVE_NUMBA` is False and the baseline row is left out.
"""

from __future__ import annotations

import numpy as np
import torch

try:  # numba is optional (the [ucr] and [fast] extras)
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False


def _dtw(a: np.ndarray, b: np.ndarray, prev: np.ndarray, cur: np.ndarray) -> float:
    """DTW distance of ``a`` (Ta, D) and ``b`` (Tb, D); ``prev``/``cur`` are scratch rows of at
    least Tb entries (the cost matrix's previous and current row, swapped after each row). Each
    row's first cell, which has one predecessor, is filled before the row's loop over the rest."""
    ta, tb, d = a.shape[0], b.shape[0], a.shape[1]
    for i in range(ta):
        cost = 0.0
        for k in range(d):
            diff = a[i, k] - b[0, k]
            cost += diff * diff
        cur[0] = cost + (prev[0] if i > 0 else 0.0)
        for j in range(1, tb):
            cost = 0.0
            for k in range(d):
                diff = a[i, k] - b[j, k]
                cost += diff * diff
            best = cur[j - 1]
            if i > 0:
                best = min(best, prev[j], prev[j - 1])
            cur[j] = cost + best
        prev, cur = cur, prev
    return prev[tb - 1]


def _pairwise(flat_a, off_a, flat_b, off_b, out):   # pragma: no cover - compiled below
    """out[i, j] = DTW(a_i, b_j); series i of a is rows off_a[i]:off_a[i+1] of flat_a (N, D)."""
    na, nb = off_a.shape[0] - 1, off_b.shape[0] - 1
    longest = 0
    for j in range(nb):
        longest = max(longest, off_b[j + 1] - off_b[j])
    for i in numba.prange(na):
        prev = np.empty(longest)
        cur = np.empty(longest)
        a = flat_a[off_a[i]:off_a[i + 1]]
        for j in range(nb):
            out[i, j] = _dtw_jit(a, flat_b[off_b[j]:off_b[j + 1]], prev, cur)


if HAVE_NUMBA:
    _dtw_jit = numba.njit(cache=True, nogil=True)(_dtw)
    _pairwise_jit = numba.njit(cache=True, nogil=True, parallel=True)(_pairwise)


def _pack(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Series (T_i, D) as one (ΣT_i, D) float64 array and the offsets of each."""
    off = np.zeros(len(series) + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(s) for s in series])
    return np.ascontiguousarray(np.concatenate(series), dtype=np.float64), off


def dtw_pairwise(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """(len(a), len(b)) DTW distances between series given as (T, D) arrays of any lengths."""
    if not HAVE_NUMBA:
        raise RuntimeError("rnnlab's DTW needs numba: pip install 'rnnlab[ucr]'")
    if not a or not b:
        return np.zeros((len(a), len(b)))
    dims = a[0].shape[1]
    if any(s.ndim != 2 or s.shape[1] != dims or len(s) == 0 for s in list(a) + list(b)):
        raise ValueError("dtw_pairwise takes non-empty (T, D) series with one D")
    flat_a, off_a = _pack(a)
    flat_b, off_b = _pack(b)
    out = np.empty((len(a), len(b)))
    # as many threads as torch was given (--threads), not numba's default of every core
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    _pairwise_jit(flat_a, off_a, flat_b, off_b, out)
    return out
