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
from rnnlab.engine import fast as fast_engine

NO_NUMBA = pytest.mark.skipif(not _stream_kernels.HAVE_NUMBA, reason="numba not installed: pip install rnnlab[fast]")
NO_KERNELS = pytest.mark.skipif(not fast_engine.available(),
                                reason=f"fast kernels unavailable: {fast_engine.unavailable_reason()}")
# (use_numba, use_kernels): the C++ step (LSTM without projection; others fall back), numba, NumPy
BACKENDS = [pytest.param((True, True), id="kernels", marks=NO_KERNELS),
            pytest.param((True, False), id="numba", marks=NO_NUMBA),
            pytest.param((False, False), id="numpy")]
TOL = {torch.float64: dict(atol=1e-12, rtol=1e-10), torch.float32: dict(atol=1e-6, rtol=1e-5)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("cls,kw", LAYERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_stream_equals_full_forward(cls, kw, dtype, backend) -> None:
    use_numba, use_kernels = backend
    torch.manual_seed(0)
    m = cls(4, 6, **kw).to(dtype).eval()
    x = torch.randn(13, 4, dtype=dtype)
    h0 = torch.randn(m.num_layers, m.proj_size or 6 if hasattr(m, "proj_size") else 6, dtype=dtype)
    state = (h0, torch.randn(m.num_layers, 6, dtype=dtype)) if m.mode == "LSTM" or m.mode == "lstm" else h0
    with torch.no_grad():
        full, want_state = m(x, state)
    s = Stream(m, use_numba=use_numba, use_kernels=use_kernels)
    lstm_plain = m.mode.lower() == "lstm" and not getattr(m, "proj_size", 0)
    assert s.backend == ("kernels" if use_kernels and lstm_plain else "numba" if use_numba else "numpy")
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
    for cell in (rnnlab.LSTMCell(3, 4), torch.nn.GRUCell(3, 4)):  # a cell has a mode, but no layers
        with pytest.raises(ConfigError, match="layer, got (LSTMCell|GRUCell)"):
            Stream(cell)
    s = Stream(rnnlab.LSTM(3, 4))
    with pytest.raises(ShapeError, match="x_t"):
        s.step(torch.ones(2, 3))
    with pytest.raises(StateError, match="tuple"):
        s.reset(torch.zeros(1, 4))
    with pytest.raises(ShapeError, match="state h"):
        s.reset((torch.zeros(2, 4), torch.zeros(1, 4)))


@NO_KERNELS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_kernel_stream_on_two_threads_and_after_refresh(dtype) -> None:
    """H = 128 on two threads: each thread steps half of the units (its own weights); equal to
    the full forward. refresh() picks up new weights; numpy and (1, I) inputs, a float64 input to a
    float32 stream, and a wrong size (ShapeError) all go the checked way."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(1)
        m = rnnlab.LSTM(5, 128, num_layers=2).to(dtype).eval()
        s = Stream(m)
        assert s.backend == "kernels" and s._cpp.chunks() == 2
        x = torch.randn(9, 5, dtype=dtype)
        with torch.no_grad():
            torch.testing.assert_close(s.run(x), m(x)[0], **TOL[dtype])
            for p in m.parameters():
                p.mul_(0.5)
            s.refresh()
            s.reset()
            torch.testing.assert_close(s.run(x), m(x)[0], **TOL[dtype])
            s.reset()
            y_np = s.step(x[0].numpy())
            assert isinstance(y_np, np.ndarray) and y_np.shape == (128,)
            y_row = s.step(x[1].view(1, 5))
            other = torch.float64 if dtype == torch.float32 else torch.float32
            y_cast = s.step(x[2].to(other))
            assert y_row.dtype == y_cast.dtype == dtype
            torch.testing.assert_close(torch.stack([torch.from_numpy(y_np), y_row]), m(x[:2])[0], **TOL[dtype])
        with pytest.raises(ShapeError, match="x_t"):
            s.step(torch.ones(4, dtype=dtype))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("use_kernels", [True, False], ids=["kernels", "loops"])
def test_stream_copies_pickles_and_follows_a_dtype_change(use_kernels) -> None:
    import copy
    import pickle

    torch.manual_seed(0)
    m = rnnlab.LSTM(4, 8).eval()
    s = Stream(m, use_kernels=use_kernels)
    x = torch.randn(6, 4)
    first = s.run(x[:3])
    with torch.no_grad():
        rest = m(x)[0][3:]
    for twin in (copy.deepcopy(s), pickle.loads(pickle.dumps(s))):   # each continues from step 3
        assert twin.backend == s.backend
        torch.testing.assert_close(twin.run(x[3:]), rest, **TOL[torch.float32])
    m.double()
    s.refresh()                                   # weights now float64: the state follows (reset)
    with torch.no_grad():
        torch.testing.assert_close(s.run(x.double()), m(x.double())[0], **TOL[torch.float64])
    assert first.dtype == torch.float32
