"""Mixed precision: rnnlab's layers and cells under ``torch.autocast`` (CPU here; the code is the
same for CUDA).

With autocast on, the recurrence runs in the weights' dtype with autocast off, and the output and
the states come back in the autocast dtype (as torch.nn's RNNs, autocast's lower-precision ops).
Each case checks: no error, the autocast dtype, the values of the float32 forward rounded to it,
float32 parameter gradients close to the float32 ones, states fed back in the autocast dtype.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnlab
from rnnlab import DTypeError

AMP = torch.bfloat16
TOL = {"rtol": 1e-2, "atol": 1e-2}            # bf16 rounding of the outputs (2^-8 relative)
GRAD_RTOL = 1e-2     # relative to the gradient's norm: the gradients reaching the outputs are rounded too

LAYER_CASES = {
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
    "rnn_tanh": ("RNN", {}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
    "lstm_2layer_bidir_batch_first": ("LSTM", {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    "gru_2layer_bidir": ("GRU", {"num_layers": 2, "bidirectional": True}),
    "rnn_2layer": ("RNN", {"num_layers": 2}),
    "lstm_proj": ("LSTM", {"proj_size": 4}),
    "lstm_proj_bidir": ("LSTM", {"proj_size": 4, "bidirectional": True}),
    "lstm_layer_norm": ("LSTM", {"layer_norm": True}),
    "gru_layer_norm": ("GRU", {"layer_norm": True}),
}
ENGINES = ["fast", "reference", "checkpoint", "auto-after-set_engine-reference"]


@pytest.fixture
def restore_choice():
    before = rnnlab.get_engine_choice()
    yield
    rnnlab.set_engine(before)


def _engine(name: str) -> str:
    if name == "auto-after-set_engine-reference":
        rnnlab.set_engine("reference")
        return "auto"
    return name


def _states(h) -> tuple[torch.Tensor, ...]:
    return h if isinstance(h, tuple) else (h,)


def _loss(out: torch.Tensor, h, seed: int = 1) -> torch.Tensor:
    """A loss that reads every output and state element, in float32, with fixed weights."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for t in (out, *_states(h)):
        total = total + (t.float() * torch.randn(t.shape, generator=g)).sum()
    return total


def _run(model: nn.Module, x, hx=None, amp: bool = False):
    model.zero_grad(set_to_none=True)
    if amp:
        with torch.autocast("cpu", dtype=AMP):
            out, h = model(x, hx)
    else:
        out, h = model(x, hx)
    data = out.data if isinstance(out, PackedSequence) else out
    _loss(data, h).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return data, h, grads


def _check_grads(model: nn.Module, grads, grads32) -> None:
    for name, p in model.named_parameters():
        assert grads[name].dtype == torch.float32 == p.dtype, name
        err = float((grads[name] - grads32[name]).norm() / grads32[name].norm().clamp_min(1e-12))
        assert err < GRAD_RTOL, f"{name}: relative gradient error {err:.2e}"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_runs_under_autocast(case, engine, restore_choice):
    cls_name, kw = LAYER_CASES[case]
    torch.manual_seed(0)
    model = getattr(rnnlab, cls_name)(5, 16, engine=_engine(engine), **kw)
    x = torch.randn(3, 6, 5) if kw.get("batch_first") else torch.randn(6, 3, 5)
    out32, h32, grads32 = _run(model, x)
    out, h, grads = _run(model, x, amp=True)

    assert out.dtype == AMP
    assert [s.dtype for s in _states(h)] == [AMP] * len(_states(h32))
    torch.testing.assert_close(out.float(), out32, **TOL)
    for s, s32 in zip(_states(h), _states(h32)):
        torch.testing.assert_close(s.float(), s32, **TOL)
    _check_grads(model, grads, grads32)


@pytest.mark.parametrize("engine", ["fast", "reference", "checkpoint"])
@pytest.mark.parametrize("case", ["lstm", "gru", "rnn_tanh", "lstm_proj", "lstm_layer_norm"])
def test_layer_state_fed_back_in_autocast_dtype(case, engine, restore_choice):
    """The states a call returns (autocast dtype) are accepted by the next call, and also a
    user's hx in the autocast dtype; the input may be in the autocast dtype too."""
    cls_name, kw = LAYER_CASES[case]
    torch.manual_seed(0)
    model = getattr(rnnlab, cls_name)(5, 16, engine=engine, **kw)
    x1, x2 = torch.randn(4, 2, 5), torch.randn(4, 2, 5)
    _, h32 = model(x1)
    out32, h2_32 = model(x2, h32)
    with torch.autocast("cpu", dtype=AMP):
        _, h = model(x1)
        out, h2 = model(x2.to(AMP), h)
    assert out.dtype == AMP and all(s.dtype == AMP for s in _states(h2))
    torch.testing.assert_close(out.float(), out32, **TOL)
    for s, s32 in zip(_states(h2), _states(h2_32)):
        torch.testing.assert_close(s.float(), s32, **TOL)

    hx = tuple(s.detach().to(AMP) for s in _states(h32))   # a user's hx in bf16
    hx = hx if cls_name == "LSTM" else hx[0]
    out32b, _, grads32 = _run(model, x2, tuple(s.to(AMP).float() for s in hx) if cls_name == "LSTM" else hx.float())
    outb, _, grads = _run(model, x2, hx, amp=True)
    torch.testing.assert_close(outb.float(), out32b, **TOL)
    _check_grads(model, grads, grads32)


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "RNN"])
def test_packed_sequence_under_autocast(cls_name, engine):
    torch.manual_seed(0)
    model = getattr(rnnlab, cls_name)(5, 8, bidirectional=True, engine=engine)
    packed = pack_padded_sequence(torch.randn(6, 3, 5), torch.tensor([6, 2, 4]), enforce_sorted=False)
    out32, h32, grads32 = _run(model, packed)
    with torch.autocast("cpu", dtype=AMP):
        out_packed, _ = model(packed)
    assert isinstance(out_packed, PackedSequence)
    assert out_packed.batch_sizes.dtype == torch.int64
    assert torch.equal(out_packed.sorted_indices, packed.sorted_indices)
    out, h, grads = _run(model, packed, amp=True)
    assert out.dtype == AMP and all(s.dtype == AMP for s in _states(h))
    torch.testing.assert_close(out.float(), out32, **TOL)
    _check_grads(model, grads, grads32)


@pytest.mark.parametrize(("cls_name", "options"), [
    ("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}),
    ("LSTMCell", {"layer_norm": True}), ("GRUCell", {"layer_norm": True}),
], ids=["LSTMCell", "GRUCell", "RNNCell", "RNNCell-relu", "LSTMCell-layer_norm", "GRUCell-layer_norm"])
def test_cell_runs_under_autocast(cls_name, options, restore_choice):
    torch.manual_seed(0)
    cell = getattr(rnnlab, cls_name)(4, 16, **options)
    xs = torch.randn(3, 2, 4)
    for engine in ("auto", "reference"):
        rnnlab.set_engine(engine)

        def steps(amp: bool):
            cell.zero_grad(set_to_none=True)
            h, outs = None, []
            with torch.autocast("cpu", dtype=AMP, enabled=amp):
                for x in xs:                       # states fed back in the autocast dtype
                    h = cell(x, h)
                    outs.append(h)
            loss = sum(_loss(o[0] if isinstance(o, tuple) else o, o[1:] if isinstance(o, tuple) else ())
                       for o in outs)
            loss.backward()
            return outs, {n: p.grad.clone() for n, p in cell.named_parameters()}

        outs32, grads32 = steps(False)
        outs, grads = steps(True)
        for o, o32 in zip(outs, outs32):
            for s, s32 in zip(_states(o), _states(o32)):
                assert s.dtype == AMP
                torch.testing.assert_close(s.float(), s32, **TOL)
        _check_grads(cell, grads, grads32)

    with torch.autocast("cpu", dtype=AMP):                 # unbatched
        r = cell(xs[0, 0])
    assert all(s.dtype == AMP and s.shape == (16,) for s in _states(r))


@pytest.mark.parametrize("make", [
    lambda: (nn.LSTM(5, 8), rnnlab.LSTM(5, 8)),
    lambda: (nn.LSTM(5, 8, 2, bidirectional=True), rnnlab.LSTM(5, 8, 2, bidirectional=True)),
    lambda: (nn.RNN(5, 8), rnnlab.RNN(5, 8)),
    lambda: (nn.RNNCell(5, 8), rnnlab.RNNCell(5, 8)),
], ids=["LSTM", "LSTM-2-bidir", "RNN", "RNNCell"])
def test_dtypes_and_values_match_torch_nn(make):
    """Where torch.nn's CPU autocast returns the autocast dtype, rnnlab returns the same dtypes
    and values close to torch.nn's. (torch.nn on the CPU returns float32 for GRU, LSTMCell, GRUCell,
    an LSTM's c_n with proj_size and a packed LSTM: type promotion with the float32 state, not a
    choice of autocast's; on CUDA every one of them is in the autocast dtype, as rnnlab's always.)"""
    torch.manual_seed(0)
    ref, ours = make()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5) if isinstance(ref, nn.RNNCell) else torch.randn(6, 2, 5)
    with torch.autocast("cpu", dtype=AMP):
        r_ours = ours(x)
        try:
            r_ref = ref(x)
        except RuntimeError as exc:
            # torch.nn's LSTM under CPU autocast is oneDNN's bfloat16 LSTM, which some CPUs lack
            # (AVX2 ones: "could not create a primitive descriptor"): compare with its float32
            # numbers and the dtype it returns where it runs (the autocast dtype for these cases)
            if "primitive descriptor" not in str(exc):
                raise
            r_ref = None
    flat = lambda r: [t for item in (r if isinstance(r, tuple) else (r,)) for t in _states(item)]  # noqa: E731
    if r_ref is None:
        r_ref = ref(x)
        assert [t.dtype for t in flat(r_ours)] == [AMP] * len(flat(r_ref))
    else:
        assert [t.dtype for t in flat(r_ours)] == [t.dtype for t in flat(r_ref)]
    for a, b in zip(flat(r_ours), flat(r_ref)):
        torch.testing.assert_close(a.float(), b.float(), rtol=3e-2, atol=3e-2)


def test_float16_autocast():
    torch.manual_seed(0)
    model = rnnlab.LSTM(5, 8, num_layers=2)
    x = torch.randn(4, 2, 5)
    out32, _ = model(x)
    with torch.autocast("cpu", dtype=torch.float16):
        out, (h, c) = model(x)
    assert out.dtype == h.dtype == c.dtype == torch.float16
    torch.testing.assert_close(out.float(), out32, rtol=1e-2, atol=1e-2)


def test_float64_model_is_left_alone_as_in_torch_nn():
    """autocast does not touch float64: a float64 model runs and returns float64, as torch.nn's."""
    model, ref = rnnlab.GRU(5, 8).double(), nn.GRU(5, 8).double()
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    with torch.autocast("cpu", dtype=AMP):
        out, h = model(x)
        out_ref, _ = ref(x)
        cell_out = rnnlab.LSTMCell(5, 8).double()(x[0])
    assert out.dtype == h.dtype == out_ref.dtype == torch.float64
    assert all(s.dtype == torch.float64 for s in cell_out)


def test_dtype_checks_unchanged_without_autocast():
    model, cell = rnnlab.LSTM(5, 8), rnnlab.LSTMCell(5, 8)
    with pytest.raises(DTypeError):
        model(torch.randn(4, 2, 5, dtype=AMP))
    with pytest.raises(DTypeError):
        cell(torch.randn(2, 5, dtype=AMP))
    with torch.autocast("cpu", dtype=AMP, enabled=False):
        with pytest.raises(DTypeError):
            model(torch.randn(4, 2, 5, dtype=AMP))


def test_autocast_state_restored_and_weights_untouched():
    model = rnnlab.LSTM(5, 8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.autocast("cpu", dtype=AMP):
        model(torch.randn(4, 2, 5))
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == AMP
    assert not torch.is_autocast_enabled("cpu")
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[n])


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "RNN"])
def test_unbatched_layer_under_autocast(cls_name):
    torch.manual_seed(0)
    model = getattr(rnnlab, cls_name)(5, 8, num_layers=2)
    x = torch.randn(6, 5)
    out32, h32 = model(x)
    with torch.autocast("cpu", dtype=AMP):
        out, h = model(x)
        out2, _ = model(x, h)
    assert out.shape == out32.shape and out.dtype == out2.dtype == AMP
    assert all(s.dtype == AMP and s.shape == s32.shape for s, s32 in zip(_states(h), _states(h32)))
    torch.testing.assert_close(out.float(), out32, **TOL)


@pytest.mark.parametrize("kw", [{"proj_size": 4}, {}])
@pytest.mark.parametrize("choice", ["auto", "reference"])
def test_checkpoint_backward_inside_the_autocast_block(kw, choice, restore_choice):
    """The checkpoint engine recomputes segments in backward: with backward() called inside the
    autocast block (not PyTorch's advice, but common), the recomputation runs outside autocast too,
    and the gradients are the ones a backward outside the block gives."""
    rnnlab.set_engine(choice)
    torch.manual_seed(0)
    m = rnnlab.LSTM(4, 16, engine="checkpoint", **kw)
    x = torch.randn(7, 3, 4)
    grads = []
    for inside in (True, False):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = m(x)
            if inside:
                out.float().square().sum().backward()
        if not inside:
            out.float().square().sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
