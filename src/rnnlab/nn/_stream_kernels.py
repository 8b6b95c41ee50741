"""Batch-1 step kernels for :mod:`rnnlab.nn.stream`: plain loops over NumPy arrays.

Why loops and not torch: a streaming step at batch 1 is a few hundred thousand multiply-adds, and
torch spends more time dispatching its dozen small ops than computing them. These loops, compiled
by numba when it is installed (``pip install rnnlab[fast]``), do the whole step in one call.
Without numba they still run — as plain Python they would be hopeless, so the Stream then uses
:func:`numpy_step` (same equations, NumPy's vector ops) instead.

The weights come pre-transposed and stacked: ``w_t`` = [W_ih | W_hh]^T, shape (I + P, G·H), so the
gate pre-activations accumulate column by column (``a += w_t[j] · z_j``), a contiguous inner loop
that the compiler vectorises without reordering any sum. The equations are those of
``rnnlab.cells`` (see their docstrings); gate order LSTM i|f|g|o, GRU r|z|n.
"""

from __future__ import annotations

import math

import numpy as np

try:  # numba is optional (the [fast] extra)
    import numba

    _jit = numba.njit(cache=True, nogil=True)
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

    def _jit(f):
        return f


@_jit
def _matvec_t(w_t, z, row0, n, out):
    """out += Σ_j w_t[row0 + j] · z[j] for j < n   (w_t (K, G), z (n,), out (G,))."""
    G = out.shape[0]
    for j in range(n):
        zj = z[j]
        for k in range(G):
            out[k] += w_t[row0 + j, k] * zj


@_jit
def lstm_step(x, h, c, w_t, b, w_hr_t, a, tmp, h_out, c_out, one):
    """One LSTM step. x (I,), h (P,), c (H,); a (4H,) and tmp (H,) are scratch; w_hr_t = W_hr^T
    (H, P), or an empty (0, 0) array without projection. ``one`` is 1 in the arrays' dtype, so
    that float32 math stays float32 (as torch's). h_out/c_out may alias h/c: the whole previous
    state is read (the matvecs) before any of the new one is written."""
    I = x.shape[0]
    P = h.shape[0]
    H = c.shape[0]
    for k in range(4 * H):
        a[k] = b[k]
    _matvec_t(w_t, x, 0, I, a)
    _matvec_t(w_t, h, I, P, a)
    for k in range(H):
        i = one / (one + math.exp(-a[k]))                 # i = σ(·)
        f = one / (one + math.exp(-a[H + k]))             # f = σ(·)
        g = math.tanh(a[2 * H + k])                       # g = tanh(·)
        o = one / (one + math.exp(-a[3 * H + k]))         # o = σ(·)
        cn = f * c[k] + i * g                             # c_t = f ⊙ c_{t-1} + i ⊙ g
        c_out[k] = cn
        tmp[k] = o * math.tanh(cn)                        # o ⊙ tanh(c_t)
    if w_hr_t.shape[0] == 0:
        for k in range(H):
            h_out[k] = tmp[k]
    else:                                                 # h_t = W_hr (o ⊙ tanh(c_t))
        for p in range(P):
            h_out[p] = 0 * one
        _matvec_t(w_hr_t, tmp, 0, H, h_out)


@_jit
def gru_step(x, h, w_t, b_ih, b_hh, a, hw, h_out, one):
    """One GRU step. a, hw (3H,) scratch: a = W_ih x + b_ih, hw = W_hh h + b_hh."""
    I = x.shape[0]
    H = h.shape[0]
    for k in range(3 * H):
        a[k] = b_ih[k]
        hw[k] = b_hh[k]
    _matvec_t(w_t, x, 0, I, a)
    _matvec_t(w_t, h, I, H, hw)
    for k in range(H):
        r = one / (one + math.exp(-(a[k] + hw[k])))              # r = σ(·)
        z = one / (one + math.exp(-(a[H + k] + hw[H + k])))      # z = σ(·)
        n = math.tanh(a[2 * H + k] + r * hw[2 * H + k])          # n = tanh(W_in x + b_in + r ⊙ hn)
        h_out[k] = (h[k] - n) * z + n                            # (1 − z) ⊙ n + z ⊙ h_{t-1}


@_jit
def rnn_step(x, h, w_t, b, relu, a, h_out, one):
    """One Elman step: h_t = act(W_ih x + W_hh h + b_ih + b_hh); a (H,) scratch."""
    I = x.shape[0]
    H = h.shape[0]
    for k in range(H):
        a[k] = b[k]
    _matvec_t(w_t, x, 0, I, a)
    _matvec_t(w_t, h, I, H, a)
    for k in range(H):
        h_out[k] = max(a[k], 0 * one) if relu else math.tanh(a[k])


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def numpy_step(mode, x, h, c, w_t, b_ih, b_hh, w_hr_t):
    """The same step with NumPy vector ops (the fallback without numba). Returns (h_t, c_t)."""
    z = np.concatenate([x, h])
    if mode == "lstm":
        a = z @ w_t + b_ih
        H = c.shape[0]
        i, f, g, o = _sigmoid(a[:H]), _sigmoid(a[H:2 * H]), np.tanh(a[2 * H:3 * H]), _sigmoid(a[3 * H:])
        cn = f * c + i * g
        hn = o * np.tanh(cn)
        return (hn if w_hr_t.shape[0] == 0 else hn @ w_hr_t), cn
    I = x.shape[0]
    if mode == "gru":
        H = h.shape[0]
        a = x @ w_t[:I] + b_ih
        hw = h @ w_t[I:] + b_hh
        r, zg = _sigmoid(a[:H] + hw[:H]), _sigmoid(a[H:2 * H] + hw[H:2 * H])
        n = np.tanh(a[2 * H:] + r * hw[2 * H:])
        return (h - n) * zg + n, None
    a = z @ w_t + b_ih
    return (np.maximum(a, 0.0) if mode == "rnn_relu" else np.tanh(a)), None
