"""What a user can get wrong raises an rnnlab error (a ValueError/TypeError subclass) whose message
names the argument, the expected and the received value. Batch 0 and sequence length 0 are
compared with torch.nn first: same behaviour, or a clear rnnlab error where torch.nn refuses.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from rnn_parity import MODES
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab import ConfigError, DeviceError, DTypeError, RnnlabError, ShapeError, StateError

LAYERS = {"RNN": rnnlab.RNN, "LSTM": rnnlab.LSTM, "GRU": rnnlab.GRU}
CELLS = {"RNNCell": rnnlab.RNNCell, "LSTMCell": rnnlab.LSTMCell, "GRUCell": rnnlab.GRUCell}


@contextlib.contextmanager
def raises(exc: type, *fragments: str):
    """pytest.raises plus: it is an rnnlab error, a ValueError or TypeError, and the message holds
    every fragment (the argument's name, the expected value, the received value)."""
    with pytest.raises(exc) as info:
        yield info
    err = info.value
    assert isinstance(err, RnnlabError) and isinstance(err, (ValueError, TypeError)), type(err).__mro__
    msg = str(err)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in message {msg!r}"


def _state(name: str, h, c=None):
    return (h, c) if name == "LSTM" else h


# ------------------------------------------------------------------ layers: inputs and states
@pytest.mark.parametrize("name", list(LAYERS))
def test_wrong_input_feature_size(name: str) -> None:
    with raises(ShapeError, "input_size", "expected 3", "got 5"):
        LAYERS[name](3, 4)(torch.randn(6, 2, 5))
    x = pack_padded_sequence(torch.randn(6, 2, 5), torch.tensor([6, 3]))
    with raises(ShapeError, "input_size", "expected 3", "got 5"):
        LAYERS[name](3, 4)(x)


@pytest.mark.parametrize("dims", [1, 4])
@pytest.mark.parametrize("name", list(LAYERS))
def test_input_of_wrong_rank(name: str, dims: int) -> None:
    x = torch.randn(*([3] * dims))
    with raises(ShapeError, "input", "3-D", "2-D", f"got {dims}-D", str(tuple(x.shape))):
        LAYERS[name](3, 4)(x)


@pytest.mark.parametrize("name", list(LAYERS))
def test_wrong_hidden_state_shape(name: str) -> None:
    m = LAYERS[name](3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    good_h, good_c = torch.zeros(4, 2, 4), torch.zeros(4, 2, 4)
    for bad in (torch.zeros(2, 2, 4), torch.zeros(4, 3, 4), torch.zeros(4, 2, 5), torch.zeros(4, 4)):
        with raises(ShapeError, "h_0", "num_layers*num_directions", "expected (4, 2, 4)", f"got {tuple(bad.shape)}"):
            m(x, _state(name, bad, good_c))
    if name == "LSTM":
        with raises(ShapeError, "c_0", "expected (4, 2, 4)", "got (4, 2, 3)"):
            m(x, (good_h, torch.zeros(4, 2, 3)))
    # unbatched input wants a 2-D state
    with raises(ShapeError, "h_0", "expected (4, 4)", "got (4, 1, 4)"):
        m(torch.randn(5, 3), _state(name, torch.zeros(4, 1, 4), torch.zeros(4, 1, 4)))


def test_lstm_projection_state_shapes_are_named() -> None:
    m = rnnlab.LSTM(3, 4, proj_size=2)
    x = torch.randn(5, 2, 3)
    with raises(ShapeError, "h_0", "expected (1, 2, 2)", "got (1, 2, 4)"):
        m(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    m(x, (torch.zeros(1, 2, 2), torch.zeros(1, 2, 4)))              # the right shapes work


def test_lstm_state_not_a_pair() -> None:
    m = rnnlab.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    h = torch.zeros(1, 2, 4)
    with raises(StateError, "hx", "tuple (h_0, c_0)", "got a Tensor"):
        m(x, h)
    with raises(StateError, "hx", "tuple (h_0, c_0)", "of length 3"):
        m(x, (h, h, h))
    with raises(StateError, "c_0", "expected a Tensor", "got NoneType"):
        m(x, (h, None))
    with pytest.raises(RuntimeError, match="lstm expects two hidden states"):   # torch.nn's RuntimeError and text
        m(x, (h, h, h))
    with pytest.raises(RuntimeError):                                           # torch.nn: an IndexError
        m(x, (h,))
    for wrong in ((h,), (h, h, h)):                                             # torch.nn's cell: its RuntimeError
        with pytest.raises(RuntimeError, match="lstm_cell expects two hidden states"):
            rnnlab.LSTMCell(3, 4)(x[0], tuple(t[0] for t in wrong))


@pytest.mark.parametrize("name", ["RNN", "GRU"])
def test_tuple_state_for_a_single_state_layer(name: str) -> None:
    h = torch.zeros(1, 2, 4)
    with raises(StateError, "hx", "expected a Tensor", "got a tuple"):
        LAYERS[name](3, 4)(torch.randn(5, 2, 3), (h, h))


@pytest.mark.parametrize("name", list(LAYERS))
def test_dtype_mismatch(name: str) -> None:
    m = LAYERS[name](3, 4, dtype=torch.float64)
    with raises(DTypeError, "input dtype", "expected torch.float64", "got torch.float32"):
        m(torch.randn(5, 2, 3))
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    h = torch.zeros(1, 2, 4, dtype=torch.float32)
    with raises(DTypeError, "h_0 dtype", "expected torch.float64", "got torch.float32"):
        m(x, _state(name, h, torch.zeros(1, 2, 4, dtype=torch.float64)))
    if name == "LSTM":
        with raises(DTypeError, "c_0 dtype", "expected torch.float64", "got torch.float32"):
            m(x, (h.double(), h))
    with raises(DTypeError, "input dtype", "got torch.int64"):
        m(torch.ones(5, 2, 3, dtype=torch.long))


# The other device: CUDA where present, else the 'meta' device (tensors with shapes, no data).
OTHER = "cuda" if torch.cuda.is_available() else "meta"


@pytest.mark.parametrize("name", list(LAYERS))
def test_device_mismatch(name: str) -> None:
    m = LAYERS[name](3, 4, device=OTHER)
    with raises(DeviceError, "input device", f"expected {OTHER}", "got cpu"):
        m(torch.randn(5, 2, 3))
    m = LAYERS[name](3, 4)
    h = torch.zeros(1, 2, 4, device=OTHER)
    with raises(DeviceError, "h_0 device", "expected cpu", f"got {OTHER}"):
        m(torch.randn(5, 2, 3), _state(name, h, torch.zeros(1, 2, 4)))
    if name == "LSTM":
        with raises(DeviceError, "c_0 device", "expected cpu", f"got {OTHER}"):
            m(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), h))


# ------------------------------------------------------------------ constructors
@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("hidden", [0, -3])
def test_hidden_size_must_be_positive(name: str, hidden: int) -> None:
    with raises(ConfigError, "hidden_size", "> 0", f"got {hidden}", "hidden_size must be greater than zero"):
        LAYERS[name](3, hidden)


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_sizes_may_be_zero_like_torch(name: str) -> None:
    """torch.nn's cells take sizes of 0 (and refuse negative ones with a RuntimeError)."""
    ref, ours = getattr(nn, name)(0, 0), CELLS[name](0, 0)
    x = torch.randn(2, 0)
    out_ref, out = ref(x), ours(x)
    assert [t.shape for t in torch.utils._pytree.tree_flatten(out)[0]] == \
        [t.shape for t in torch.utils._pytree.tree_flatten(out_ref)[0]]
    with pytest.raises(RuntimeError):
        getattr(nn, name)(3, -3)
    with raises(ShapeError, "hidden_size", ">= 0", "got -3"):
        CELLS[name](3, -3)


@pytest.mark.parametrize("name", list(LAYERS) + list(CELLS))
def test_sizes_must_be_ints(name: str) -> None:
    cls = {**LAYERS, **CELLS}[name]
    with raises(ConfigError, "hidden_size", "expected an int", "got float 4.0"):
        cls(3, 4.0)
    with raises(ConfigError, "input_size", "expected an int", "got str '3'"):
        cls("3", 4)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dropout", [-0.1, 1.5, float("nan"), "0.5"])
def test_dropout_outside_unit_interval(name: str, dropout) -> None:
    with raises(ConfigError, "dropout", "[0, 1]", f"got {dropout!r}"):
        LAYERS[name](3, 4, num_layers=2, dropout=dropout)


@pytest.mark.parametrize("name", list(LAYERS) + list(CELLS))
def test_numpy_integers_where_torch_takes_them(name: str) -> None:
    """torch.nn takes any integer type for num_layers and proj_size (and for the cells' sizes),
    only Python ints for a layer's input_size and hidden_size: the same here."""
    import numpy as np

    cls = {**LAYERS, **CELLS}[name]
    ref = getattr(nn, name)
    if name in CELLS:
        m = cls(np.int64(3), np.int64(4))
        assert (m.input_size, m.hidden_size) == (3, 4) and type(m.hidden_size) is int
        assert m.weight_hh.shape == ref(np.int64(3), np.int64(4)).weight_hh.shape
        return
    m = cls(3, 4, num_layers=np.int64(2))
    assert m.num_layers == 2 and type(m.num_layers) is int
    assert m.state_dict().keys() == ref(3, 4, num_layers=np.int64(2)).state_dict().keys()
    if name == "LSTM":
        assert cls(3, 4, proj_size=np.int32(2)).weight_hr_l0.shape == (2, 4)
    with pytest.raises(TypeError):
        ref(np.int64(3), 4)
    with raises(ConfigError, "input_size", "expected an int", "got int64"):
        cls(np.int64(3), 4)
    with raises(ConfigError, "num_layers", "expected an int", "got float 2.0"):
        cls(3, 4, num_layers=2.0)


@pytest.mark.parametrize("name", list(LAYERS))
def test_num_layers_must_be_positive(name: str) -> None:
    with raises(ConfigError, "num_layers", "> 0", "got 0"):
        LAYERS[name](3, 4, num_layers=0)


@pytest.mark.parametrize("proj", [4, 5])
def test_proj_size_must_be_below_hidden_size(proj: int) -> None:
    with raises(ConfigError, "proj_size", "< hidden_size (4)", f"got {proj}"):
        rnnlab.LSTM(3, 4, proj_size=proj)
    with raises(ConfigError, "proj_size", ">= 0", "got -1"):
        rnnlab.LSTM(3, 4, proj_size=-1)


def test_proj_size_on_gru() -> None:
    for cls in (rnnlab.GRU, rnnlab.RNN):
        for proj in (2, 0):                        # torch.nn refuses the keyword whatever its value
            with raises(ConfigError, "proj_size", "LSTM", f"got {proj}",
                        "proj_size argument is only supported for LSTM, not RNN or GRU"):
                cls(3, 4, proj_size=proj)


@pytest.mark.parametrize("cls", [rnnlab.RNN, rnnlab.RNNCell])
def test_unknown_nonlinearity(cls) -> None:
    with raises(ConfigError, "nonlinearity", "'tanh' or 'relu'", "got 'sigmoid'"):
        cls(3, 4, nonlinearity="sigmoid")


def test_unknown_engine() -> None:
    with raises(ConfigError, "engine", "reference", "got 'nope'"):
        rnnlab.LSTM(3, 4, engine="nope")


# ------------------------------------------------------------------ cells
@pytest.mark.parametrize("name", list(CELLS))
def test_cell_input_and_state_errors(name: str) -> None:
    cell = CELLS[name](3, 4)
    with raises(ShapeError, "input_size", "expected 3", "got 2"):
        cell(torch.randn(2, 2))
    with raises(ShapeError, "input", "2-D", "1-D", "got 3-D"):
        cell(torch.randn(1, 2, 3))
    bad = torch.zeros(3, 4)
    with raises(ShapeError, "shape", "expected (2, 4)", "got (3, 4)"):
        cell(torch.randn(2, 3), (bad, torch.zeros(2, 4)) if name == "LSTMCell" else bad)
    with raises(DTypeError, "input dtype", "expected torch.float32", "got torch.float64"):
        cell(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError):          # what torch.nn's cells raise for it
        cell(torch.randn(2, 3, dtype=torch.float64))
    with raises(DeviceError, "input device", f"expected {OTHER}", "got cpu"):
        CELLS[name](3, 4, device=OTHER)(torch.randn(2, 3))
    if name == "LSTMCell":
        with raises(StateError, "hx", "tuple (h_0, c_0)", "got a Tensor"):
            cell(torch.randn(2, 3), torch.zeros(2, 4))


# ------------------------------------------------------------------ empty batch / sequence
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("batch_first", [False, True])
def test_batch_zero_behaves_as_torch(mode: str, batch_first: bool) -> None:
    ref_cls, our_cls, extra = MODES[mode]
    kw = dict(extra, num_layers=2, bidirectional=True, batch_first=batch_first)
    ref, ours = ref_cls(3, 4, **kw), our_cls(3, 4, **kw)
    ours.load_state_dict(ref.state_dict())
    shape = (0, 5, 3) if batch_first else (5, 0, 3)
    results = []
    for m in (ref, ours):                          # torch.nn first: it defines the behaviour
        x = torch.randn(shape, requires_grad=True)
        out, state = m(x)
        states = state if isinstance(state, tuple) else (state,)
        (out.sum() + sum(s.sum() for s in states)).backward()
        results.append((out.shape, [s.shape for s in states], x.grad.shape))
    assert results[1] == results[0]


@pytest.mark.parametrize("mode", list(MODES))
def test_sequence_length_zero_is_refused_like_torch(mode: str) -> None:
    ref_cls, our_cls, extra = MODES[mode]
    for x in (torch.randn(0, 2, 3), torch.randn(0, 3)):
        with pytest.raises(RuntimeError, match="sequence length"):  # torch.nn refuses it...
            ref_cls(3, 4, **extra)(x)
        with raises(ShapeError, "sequence length", "expected > 0", "got 0"):  # ... so do we, clearly
            our_cls(3, 4, **extra)(x)


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_batch_zero_behaves_as_torch(name: str) -> None:
    ours = CELLS[name](3, 4)
    ref = getattr(nn, name)(3, 4)
    a, b = ref(torch.randn(0, 3)), ours(torch.randn(0, 3))
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    assert [t.shape for t in b] == [t.shape for t in a] == [(0, 4)] * len(a)


# ------------------------------------------------------------------ torch.nn's own words
def _cell_call(name, x, h):
    return lambda m: getattr(m, name)(3, 4)(x, (h, h) if name == "LSTMCell" else h)


TORCH_WORDED = {
    **{f"{n} 4-D input": (lambda m, n=n: getattr(m, n)(3, 4)(torch.randn(2, 2, 2, 3))) for n in LAYERS},
    **{f"{n} float64 input": (lambda m, n=n: getattr(m, n)(3, 4)(torch.randn(2, 3, dtype=torch.float64))) for n in CELLS},
    **{f"{n} 2-D state, 1-D input": _cell_call(n, torch.randn(3), torch.randn(2, 4)) for n in CELLS},
    **{f"{n} 1-D state, 2-D input": _cell_call(n, torch.randn(1, 3), torch.randn(4)) for n in CELLS},
    "LSTMCell 1-D c": lambda m: m.LSTMCell(3, 4)(torch.randn(4, 3), (torch.randn(4, 4), torch.randn(4))),
    **{f"{n} unknown keyword": (lambda m, n=n: getattr(m, n)(3, 4, foo=1, bar=2)) for n in [*LAYERS, *CELLS]},
    "GRU nonlinearity": lambda m: m.GRU(3, 4, nonlinearity="tanh"),
}


@pytest.mark.parametrize("case", list(TORCH_WORDED))
def test_messages_hold_torch_nn_words(case: str) -> None:
    """Code written against torch.nn that matches its error text (pytest.raises(match=...)) still
    matches: rnnlab's message quotes torch.nn's, and the error is of the type torch.nn raises
    (except torch.nn.LSTMCell's IndexError for a 1-D c, which is a ShapeError)."""
    with pytest.raises(Exception) as theirs:
        TORCH_WORDED[case](nn)
    with pytest.raises(RnnlabError) as ours:
        TORCH_WORDED[case](rnnlab)
    assert str(theirs.value).split(": ", 1)[-1] in str(ours.value), (str(theirs.value), str(ours.value))
    if case != "LSTMCell 1-D c":
        assert isinstance(ours.value, type(theirs.value)), (type(theirs.value), type(ours.value).__mro__)


def test_reprs_as_torch_nn() -> None:
    assert repr(rnnlab.RNN(3, 4, nonlinearity="relu")) == repr(nn.RNN(3, 4, nonlinearity="relu"))
    assert repr(rnnlab.RNNCell(3, 4, nonlinearity="relu")) == repr(nn.RNNCell(3, 4, nonlinearity="relu"))
