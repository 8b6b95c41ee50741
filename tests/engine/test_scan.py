"""The engine's hand-written BPTT against finite differences, and the layers by equivalence.

gradcheck (float64) runs at two levels: the scan itself, in every family and config, with full
Jacobians (tiny sizes keep it cheap); and whole layers (2 layers, bidirectional, packed, with
projections), where ``fast_mode`` checks a random projection of the Jacobian to stay fast.

Equivalences (flax-style): layer == loop over rnnlab cells; packed == per-sequence runs;
bidirectional == forward run + reversed run; chunked runs with the state carried == one long run.
Every test runs for each engine registered at collection time.
"""

from __future__ import annotations

import pytest
import torch
from rnn_parity import CELLS, ENGINES, MODES, assert_close
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab.engine import get_engine

F64 = torch.float64
TOL = 1e-12   # equivalences reorder no arithmetic that matters: they agree to rounding


def _scan_args(mode: str, bias: bool, masked: bool, proj: bool, T=3, B=2, I=2, H=2):
    g = torch.Generator().manual_seed(0)
    fam_mode = "lstm" if mode == "lstm_proj" else mode
    G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[fam_mode]
    P = 1 if proj else H

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=F64).requires_grad_()

    x, h0 = r(T, B, I), r(B, P)
    c0 = r(B, H) if fam_mode == "lstm" else None
    w_ih, w_hh = r(G * H, I), r(G * H, P)
    b_ih, b_hh = (r(G * H), r(G * H)) if bias else (None, None)
    w_hr = r(P, H) if proj else None
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]], dtype=torch.bool)[:T, :B].unsqueeze(-1) if masked else None
    return fam_mode, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr), mask


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("mode", list(MODES))
def test_scan_gradcheck(mode: str, bias: bool, masked: bool, engine: str) -> None:
    """∂(out, h_T, c_T) wrt x, h0, c0 and every weight, with full Jacobians."""
    fam_mode, args, mask = _scan_args(mode, bias, masked, proj=mode == "lstm_proj")
    scan = get_engine(engine)
    present = [i for i, a in enumerate(args) if a is not None]

    def f(*tensors):
        full = list(args)
        for i, t in zip(present, tensors):
            full[i] = t
        out, h, c = scan(fam_mode, *full, mask=mask)
        return (out, h) if c is None else (out, h, c)

    assert gradcheck(f, [args[i] for i in present], eps=1e-6, atol=1e-7)


def _layer_gradcheck(module, x, lengths, hx, fast: bool) -> None:
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    states = list(hx) if isinstance(hx, tuple) else [hx]

    def f(x, *rest):
        st, ps = rest[: len(states)], rest[len(states):]
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
        state = tuple(st) if len(st) == 2 else st[0]
        out, s = torch.func.functional_call(module, dict(zip(names, ps)), (inp, state))
        out = out.data if lengths is not None else out
        return (out, *s) if isinstance(s, tuple) else (out, s)

    assert gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-7, fast_mode=fast)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("mode", list(MODES))
def test_layer_gradcheck(mode: str, packed: bool, engine: str) -> None:
    """Whole layers: 2 layers, bidirectional, initial state, padded or packed with unsorted lengths."""
    _, our_cls, extra = MODES[mode]
    torch.manual_seed(0)
    m = our_cls(2, 3, num_layers=2, bidirectional=True, dtype=F64, engine=engine, **extra)
    P = extra.get("proj_size", 0) or 3
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 2, generator=g, dtype=F64, requires_grad=True)
    h0 = torch.randn(4, 3, P, generator=g, dtype=F64, requires_grad=True)
    hx = (h0, torch.randn(4, 3, 3, generator=g, dtype=F64, requires_grad=True)) if mode.startswith("lstm") else h0
    lengths = torch.tensor([2, 3, 1]) if packed else None
    _layer_gradcheck(m, x, lengths, hx, fast=True)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", list(MODES))
def test_layer_gradcheck_full_jacobian(mode: str, engine: str) -> None:
    """Full Jacobians through a whole layer: bidirectional, packed with unsorted lengths, h0 (c0)."""
    _, our_cls, extra = MODES[mode]
    torch.manual_seed(0)
    kw = dict(extra, **({"proj_size": 1} if "proj_size" in extra else {}))
    m = our_cls(2, 2, bidirectional=True, dtype=F64, engine=engine, **kw)
    P = kw.get("proj_size", 0) or 2
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 2, generator=g, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 2, P, generator=g, dtype=F64, requires_grad=True)
    hx = (h0, torch.randn(2, 2, 2, generator=g, dtype=F64, requires_grad=True)) if mode.startswith("lstm") else h0
    _layer_gradcheck(m, x, torch.tensor([2, 3]), hx, fast=False)


@pytest.mark.parametrize("mode", list(CELLS))
def test_cell_gradcheck(mode: str) -> None:
    _, our_cls, extra = CELLS[mode]
    torch.manual_seed(0)
    cell = our_cls(2, 3, dtype=F64, **extra)
    names = [n for n, _ in cell.named_parameters()]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, generator=g, dtype=F64, requires_grad=True)
    h = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    c = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def f(x, h, c, *ps):
        out = torch.func.functional_call(cell, dict(zip(names, ps)), (x, (h, c) if mode == "lstm" else h))
        return out if isinstance(out, tuple) else (out,)

    assert gradcheck(f, (x, h, c, *params), eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------ equivalences
def _layer(mode: str, engine: str, **kw):
    _, our_cls, extra = MODES[mode]
    torch.manual_seed(0)
    return our_cls(3, 4, dtype=F64, engine=engine, **extra, **kw)


def _split(state, is_lstm):
    return state if is_lstm else (state,)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", list(CELLS))
def test_layer_equals_loop_over_cells(mode: str, engine: str) -> None:
    """A 2-layer layer == a loop, layer by layer and step by step, over rnnlab cells with its weights."""
    is_lstm = mode == "lstm"
    layer = _layer(mode, engine, num_layers=2)
    _, cell_cls, extra = CELLS[mode]
    cells = []
    for k, size in enumerate((3, 4)):
        cell = cell_cls(size, 4, dtype=F64, **extra)
        cell.load_state_dict({n: getattr(layer, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        cells.append(cell)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    out, state = layer(x)
    seq = x
    finals = []
    for cell in cells:
        h = c = None
        steps = []
        for t in range(seq.shape[0]):
            if is_lstm:
                h, c = cell(seq[t], None if h is None else (h, c))
            else:
                h = cell(seq[t], h)
            steps.append(h)
        seq = torch.stack(steps)
        finals.append((h, c))
    assert_close("output", out, seq, TOL, mode)
    for i, name in enumerate(("h_n", "c_n")[: 2 if is_lstm else 1]):
        assert_close(name, _split(state, is_lstm)[i], torch.stack([f[i] for f in finals]), TOL, mode)
    gx_layer, = torch.autograd.grad((out ** 2).sum(), x)
    gx_loop, = torch.autograd.grad((seq ** 2).sum(), x)
    assert_close("grad[input]", gx_layer, gx_loop, TOL, mode)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", list(MODES))
def test_packed_equals_per_sequence_runs(mode: str, engine: str) -> None:
    """Each sequence of an unsorted packed batch == that sequence run alone, trimmed to its length:
    the outputs, the final states (the state at its last valid step) and the input gradients."""
    is_lstm = mode.startswith("lstm")
    layer = _layer(mode, engine, num_layers=2, bidirectional=True)
    lengths = torch.tensor([3, 6, 1, 4])
    T, B = 6, 4
    x = torch.randn(T, B, 3, dtype=F64, requires_grad=True)
    P = MODES[mode][2].get("proj_size", 0) or 4
    h0 = torch.randn(4, B, P, dtype=F64)
    c0 = torch.randn(4, B, 4, dtype=F64)
    out, state = layer(pack_padded_sequence(x, lengths, enforce_sorted=False), (h0, c0) if is_lstm else h0)
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(out)
    gx, = torch.autograd.grad((padded ** 2).sum(), x)
    for b in range(B):
        n = int(lengths[b])
        xb = x[:n, b : b + 1]
        hb = (h0[:, b : b + 1], c0[:, b : b + 1]) if is_lstm else h0[:, b : b + 1]
        ob, sb = layer(xb, hb)
        where = f"{mode} sequence {b} (length {n})"
        assert_close("output", padded[:n, b : b + 1], ob, TOL, where)
        assert torch.count_nonzero(padded[n:, b]) == 0
        for name, s, s1 in zip(("h_n", "c_n"), _split(state, is_lstm), _split(sb, is_lstm)):
            assert_close(name, s[:, b : b + 1], s1, TOL, where)
        gb, = torch.autograd.grad((ob ** 2).sum(), x)
        assert_close("grad[input]", gx[:, b], gb[:, b], TOL, where)
        assert torch.count_nonzero(gx[n:, b]) == 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", list(MODES))
def test_bidirectional_equals_forward_plus_reversed_run(mode: str, engine: str) -> None:
    is_lstm = mode.startswith("lstm")
    bi = _layer(mode, engine, bidirectional=True)
    fwd, rev = _layer(mode, engine), _layer(mode, engine)
    sd = bi.state_dict()
    fwd.load_state_dict({k: v for k, v in sd.items() if not k.endswith("_reverse")})
    rev.load_state_dict({k.removesuffix("_reverse"): v for k, v in sd.items() if k.endswith("_reverse")})
    x = torch.randn(5, 3, 3, dtype=F64)
    out, state = bi(x)
    of, sf = fwd(x)
    orv, sr = rev(x.flip(0))
    P = of.shape[-1]
    assert_close("output[forward half]", out[..., :P], of, TOL, mode)
    assert_close("output[reverse half]", out[..., P:], orv.flip(0), TOL, mode)
    for name, s, a, b in zip(("h_n", "c_n"), _split(state, is_lstm), _split(sf, is_lstm), _split(sr, is_lstm)):
        assert_close(name, s, torch.cat([a, b]), TOL, mode)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", list(MODES))
def test_chunked_runs_with_carried_state_equal_one_long_run(mode: str, engine: str) -> None:
    """Truncated BPTT's premise: outputs and final state are the same, and so are the gradients
    when the carried state is not detached."""
    is_lstm = mode.startswith("lstm")
    layer = _layer(mode, engine, num_layers=2, batch_first=True)
    x = torch.randn(2, 7, 3, dtype=F64, requires_grad=True)                      # (B, T, I)
    out, state = layer(x)
    loss = (out ** 2).sum() + sum((s ** 2).sum() for s in _split(state, is_lstm))
    g_long = torch.autograd.grad(loss, [x, *layer.parameters()])
    outs, st = [], None
    for a, b in ((0, 3), (3, 4), (4, 7)):
        o, st = layer(x[:, a:b], st)
        outs.append(o)
    chunked = torch.cat(outs, dim=1)
    assert_close("output", chunked, out, TOL, mode)
    for name, s, s1 in zip(("h_n", "c_n"), _split(st, is_lstm), _split(state, is_lstm)):
        assert_close(name, s, s1, TOL, mode)
    loss = (chunked ** 2).sum() + sum((s ** 2).sum() for s in _split(st, is_lstm))
    g_chunk = torch.autograd.grad(loss, [x, *layer.parameters()])
    names = ["input"] + [n for n, _ in layer.named_parameters()]
    for n, a, b in zip(names, g_chunk, g_long):
        assert_close(f"grad[{n}]", a, b, 1e-10, mode)


def test_scan_outputs_are_zero_past_each_length_and_state_is_carried() -> None:
    """The mask contract of scan: output 0 at invalid steps, h_T = h at the last valid step."""
    torch.manual_seed(0)
    lstm = rnnlab.LSTM(2, 3, dtype=F64)
    x = torch.randn(4, 2, 2, dtype=F64)
    mask = torch.tensor([[1, 1], [1, 1], [1, 0], [1, 0]], dtype=torch.bool).unsqueeze(-1)
    args = (x, torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3, dtype=F64),
            lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    out_m, h_m, c_m = rnnlab.engine.scan("lstm", *args, mask=mask)
    out, h, c = rnnlab.engine.scan("lstm", *args)
    assert torch.equal(out_m[2:, 1], torch.zeros(2, 3, dtype=F64))
    assert_close("out (valid steps)", out_m[:2], out[:2], 0.0)
    assert_close("h_T of the short sequence", h_m[1], out[1, 1], 0.0)
    assert_close("h_T of the full sequence", h_m[0], h[0], 0.0)
