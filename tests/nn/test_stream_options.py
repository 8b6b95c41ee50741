"""Stream over layers with cell options (rnnlab.nn.options): the full-sequence forward's numbers.

Options that change the inference equations (layer_norm, peephole, coupled_gates, gru_reset,
zoneout) step the layer itself (backend "module"); the ones that do not (recurrent dropout, weight
drop, initialisation) keep the weight-copying steps; int8 with the former is a ConfigError.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import rnnlab
from rnnlab.errors import ConfigError, ShapeError
from rnnlab.nn.stream import Stream

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-8), torch.float32: dict(atol=1e-5, rtol=1e-5)}

EQUATION_OPTIONS = [
    (rnnlab.LSTM, {"layer_norm": True}),
    (rnnlab.LSTM, {"peephole": True}),
    (rnnlab.LSTM, {"coupled_gates": True}),
    (rnnlab.LSTM, {"zoneout": 0.5}),
    (rnnlab.LSTM, {"zoneout": 0.3, "zoneout_cell": 0.1}),
    (rnnlab.LSTM, {"layer_norm": True, "peephole": True, "coupled_gates": True, "zoneout": 0.2,
                   "recurrent_dropout": 0.3, "weight_drop": 0.4}),
    (rnnlab.GRU, {"layer_norm": True}),
    (rnnlab.GRU, {"gru_reset": "before"}),
    (rnnlab.GRU, {"zoneout": 0.4}),
    (rnnlab.GRU, {"layer_norm": True, "gru_reset": "before", "zoneout": 0.2, "recurrent_dropout": 0.3}),
]
# options with torch.nn's equations at inference: the fast steps stay
NEUTRAL_OPTIONS = [
    (rnnlab.LSTM, {"recurrent_dropout": 0.3}),
    (rnnlab.LSTM, {"weight_drop": 0.5}),
    (rnnlab.LSTM, {"proj_size": 3, "weight_drop": 0.5}),
    (rnnlab.LSTM, {"init": "chrono", "t_max": 20}),
    (rnnlab.GRU, {"forget_bias": 1.0, "weight_drop": 0.2}),
    (rnnlab.RNN, {"weight_drop": 0.3, "init": "orthogonal"}),
]


def _ids(v):
    return getattr(v, "__name__", None) or ",".join(f"{k}={x}" for k, x in v.items())


def _state(m, dtype):
    h0 = torch.randn(m.num_layers, m.proj_size or m.hidden_size, dtype=dtype)
    return (h0, torch.randn(m.num_layers, m.hidden_size, dtype=dtype)) if m.mode == "lstm" else h0


@pytest.mark.parametrize("use_kernels", [None, False], ids=["auto", "reference"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cls,kw", EQUATION_OPTIONS, ids=_ids)
def test_options_stream_equals_full_forward(cls, kw, num_layers, use_kernels) -> None:
    torch.manual_seed(0)
    m = cls(4, 16, num_layers=num_layers, **kw).eval()
    x = torch.randn(11, 4)
    s = Stream(m, use_kernels=use_kernels)
    assert s.backend == "module"
    with torch.no_grad():
        full, _ = m(x)
        torch.testing.assert_close(s.run(x), full, **TOL[torch.float32])
        # from a given state too, and the carried state is the forward's
        state = _state(m, torch.float32)
        full, want = m(x, state)
    s.reset(state)
    torch.testing.assert_close(s.run(x), full, **TOL[torch.float32])
    got = s.state
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


@pytest.mark.parametrize("cls,kw", [EQUATION_OPTIONS[0], EQUATION_OPTIONS[7]], ids=_ids)
def test_options_stream_in_float64_and_numpy_and_rows(cls, kw) -> None:
    torch.manual_seed(1)
    m = cls(3, 8, num_layers=2, **kw).double().eval()
    x = torch.randn(7, 3, dtype=torch.float64)
    s = Stream(m)
    with torch.no_grad():
        full = m(x)[0]
    got = s.run(x)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, full, **TOL[torch.float64])
    s.reset()
    y_np = s.step(x[0].numpy())
    assert isinstance(y_np, np.ndarray) and y_np.shape == (8,) and y_np.dtype == np.float64
    y_row = s.step(x[1].view(1, 3))
    torch.testing.assert_close(torch.stack([torch.from_numpy(y_np), y_row]), full[:2], **TOL[torch.float64])
    with pytest.raises(ShapeError, match="x_t"):
        s.step(torch.ones(2, 3, dtype=torch.float64))


def test_coupled_gates_streams() -> None:
    """The coupled LSTM's weights have 3 gate blocks: once a raw C++ size error, now stepped."""
    torch.manual_seed(2)
    m = rnnlab.LSTM(4, 16, coupled_gates=True)
    s = Stream(m)
    x = torch.randn(10, 4)
    with torch.no_grad():
        torch.testing.assert_close(s.run(x), m.eval()(x)[0], **TOL[torch.float32])


def test_train_mode_module_streams_as_in_eval() -> None:
    """As for dropout between layers, a Stream runs a training-mode module as in eval(): zoneout
    its expectation, no recurrent dropout; the module itself stays in training mode."""
    torch.manual_seed(3)
    m = rnnlab.LSTM(4, 8, num_layers=2, dropout=0.5, zoneout=0.3, recurrent_dropout=0.5, layer_norm=True)
    s = Stream(m)
    x = torch.randn(6, 4)
    got = s.run(x)
    assert m.training
    with torch.no_grad():
        torch.testing.assert_close(got, m.eval()(x)[0], **TOL[torch.float32])


def test_options_stream_refreshes_copies_and_pickles() -> None:
    torch.manual_seed(4)
    m = rnnlab.GRU(4, 8, layer_norm=True).eval()
    s = Stream(m)
    x = torch.randn(6, 4)
    s.run(x[:3])
    with torch.no_grad():
        rest = m(x)[0][3:]
    for twin in (copy.deepcopy(s), pickle.loads(pickle.dumps(s))):     # each continues from step 3
        assert twin.backend == "module"
        torch.testing.assert_close(twin.run(x[3:]), rest, **TOL[torch.float32])
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(0.5)
        want = m(x)[0]
    s.refresh()
    s.reset()
    torch.testing.assert_close(s.run(x), want, **TOL[torch.float32])


@pytest.mark.parametrize("cls,kw", NEUTRAL_OPTIONS, ids=_ids)
def test_inference_neutral_options_keep_the_fast_steps(cls, kw) -> None:
    torch.manual_seed(5)
    m = cls(4, 8, num_layers=2, **kw).eval()
    s = Stream(m)
    assert s.backend != "module"
    x = torch.randn(9, 4)
    with torch.no_grad():
        torch.testing.assert_close(s.run(x), m(x)[0], **TOL[torch.float32])


@pytest.mark.parametrize("cls,kw", EQUATION_OPTIONS, ids=_ids)
def test_int8_refuses_equation_options_by_name(cls, kw) -> None:
    m = cls(4, 8, **kw).eval()
    with pytest.raises(ConfigError, match="int8=True") as err:
        Stream(m, int8=True)
    for name in kw:
        if name not in ("recurrent_dropout", "weight_drop"):
            assert name in str(err.value)


def test_speech_stream_file_with_cell_options(tmp_path) -> None:
    """tasks/speech.py stream_file steps Stream(model.rnn): a layer-norm model streams the offline numbers."""
    pytest.importorskip("soundfile")
    pytest.importorskip("soxr")
    from tests.conftest import fsdd_subset

    from rnnlab.data.audio import load_audio
    from rnnlab.tasks.speech import SpeechConfig, SpeechTask, stream_file

    fsdd_subset(tmp_path, "012", ("george", "jackson"), (0, 5, 6, 7))
    cfg = SpeechConfig(dataset="", audio_dir=str(tmp_path), hidden_size=16, num_layers=2, batch_size=8,
                       valid_frac=0.25, train_strings=8, valid_strings=4, test_strings=4, max_digits=3, beam=4,
                       mode="ctc", cell="lstm", bidirectional=False, blank_bias=0.0, pretrain_words=0,
                       cell_options={"layer_norm": True, "peephole": True})
    task = SpeechTask(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    path = tmp_path / "2_jackson_0.wav"
    streamed = stream_file(task, model, path, chunk_ms=100)
    assert streamed["backend"] == "module"
    wave = torch.from_numpy(load_audio(path, 8000)).double()
    with torch.no_grad():
        lp, _ = model(wave)
    np.testing.assert_allclose(streamed["log_probs"], lp[:, 0].double().numpy(), atol=1e-4)
