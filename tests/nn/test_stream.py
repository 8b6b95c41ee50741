"""Stream: stepping one time step at a time gives the full-sequence forward's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rnnlab
from rnnlab.errors import ConfigError, ShapeError, StateError
from rnnlab.nn import _stream_kernels
from rnnlab.nn.stream import Stream

LAYERS = [
    (rnnlab.LSTM, {"num_layers": 2}),
    (rnnlab.LSTM, {"proj_size": 3}),
    (rnnlab.GRU, {"num_layers": 2}),
    (rnnlab.GRU, {"bias": False}),
    (rnnlab.RNN, {"num_layers": 2}),
    (rnnlab.RNN, {"nonlinearity": "relu"}),
    (torch.nn.LSTM, {"num_layers": 2}),
]
BACKENDS = [pytest.param(True, id="numba", marks=pytest.mark.skipif(
    not _stream_kernels.HAVE_NUMBA, reason="numba not installed: pip install rnnlab[fast]")),
    pytest.param(False, id="numpy")]
TOL = {torch.float64: dict(atol=1e-12, rtol=1e-10), torch.float32: dict(atol=1e-6, rtol=1e-5)}


@pytest.mark.parametrize("use_numba", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("cls,kw", LAYERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_stream_equals_full_forward(cls, kw, dtype, use_numba) -> None:
    torch.manual_seed(0)
    m = cls(4, 6, **kw).to(dtype).eval()
    x = torch.randn(13, 4, dtype=dtype)
    h0 = torch.randn(m.num_layers, m.proj_size or 6 if hasattr(m, "proj_size") else 6, dtype=dtype)
    state = (h0, torch.randn(m.num_layers, 6, dtype=dtype)) if m.mode == "LSTM" or m.mode == "lstm" else h0
    with torch.no_grad():
        full, want_state = m(x, state)
    s = Stream(m, use_numba=use_numba)
    s.reset(state)
    got = s.run(x)
    assert got.dtype == dtype
    torch.testing.assert_close(got, full, **TOL[dtype])
    for a, b in zip(s.state if isinstance(s.state, tuple) else (s.state,),
                    want_state if isinstance(want_state, tuple) else (want_state,)):
        torch.testing.assert_close(a, b, **TOL[dtype])
    # a reset starts the sequence afresh: same outputs as a zero-state forward
    s.reset()
    with torch.no_grad():
        torch.testing.assert_close(s.run(x[:5]), m(x[:5])[0], **TOL[dtype])


def test_step_accepts_numpy_and_batch_of_one() -> None:
    m = rnnlab.GRU(3, 4).eval()
    s = Stream(m)
    y = s.step(np.ones(3, dtype=np.float32))
    assert isinstance(y, np.ndarray) and y.shape == (4,)
    assert tuple(s.step(torch.ones(1, 3)).shape) == (4,)


def test_stream_errors() -> None:
    with pytest.raises(ConfigError, match="bidirectional"):
        Stream(rnnlab.LSTM(3, 4, bidirectional=True))
    with pytest.raises(ConfigError, match="module"):
        Stream(torch.nn.Linear(3, 4))
    s = Stream(rnnlab.LSTM(3, 4))
    with pytest.raises(ShapeError, match="x_t"):
        s.step(torch.ones(2, 3))
    with pytest.raises(StateError, match="tuple"):
        s.reset(torch.zeros(1, 4))
    with pytest.raises(ShapeError, match="state h"):
        s.reset((torch.zeros(2, 4), torch.zeros(1, 4)))
