"""The instruments: record_grad_norms (‖∂L/∂h_t‖, ‖∂L/∂c_t‖ during backward) and record_gates.

The oracle is an independent step-by-step loop over torch.nn's cells with the layer's weights,
where ``retain_grad`` on every h_t and c_t gives autograd's total gradient into that state (from
the output at t and from every later step). The gates are recomputed from the equations with
torch.nn's hidden states.
"""

from __future__ import annotations

import pytest
import torch
from rnn_parity import ENGINES, MODES, assert_close
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnlab.engine import record_gates, record_grad_norms
from rnnlab.engine.record import gate_recording, grad_recording

F64 = torch.float64
TORCH_CELLS = {"rnn_tanh": (nn.RNNCell, {"nonlinearity": "tanh"}), "rnn_relu": (nn.RNNCell, {"nonlinearity": "relu"}),
               "lstm": (nn.LSTMCell, {}), "gru": (nn.GRUCell, {})}
CELL_NAME = {"rnn_tanh": "rnn", "rnn_relu": "rnn", "lstm": "lstm", "lstm_proj": "lstm", "gru": "gru"}


def _layer(mode: str, engine: str = "reference", **kw):
    _, cls, extra = MODES[mode]
    torch.manual_seed(0)
    return cls(3, 4, dtype=F64, engine=engine, **extra, **kw)


def _manual(layer, mode: str, x: torch.Tensor):
    """Re-run ``layer`` (no projection) as a loop over torch.nn cells. Returns the output and, per
    (layer, direction), the lists of h_t and c_t in forward time order, each with retain_grad."""
    cell_cls, extra = TORCH_CELLS[mode]
    D = 2 if layer.bidirectional else 1
    states = {}
    seq = x
    for k in range(layer.num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            cell = cell_cls(seq.shape[-1], layer.hidden_size, dtype=F64, **extra)
            cell.load_state_dict({n: getattr(layer, n + sfx) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            order = range(seq.shape[0]) if d == 0 else range(seq.shape[0] - 1, -1, -1)
            hs, cs = {}, {}
            h = c = None
            for t in order:
                if mode == "lstm":
                    h, c = cell(seq[t], None if h is None else (h, c))
                    c.retain_grad()
                    cs[t] = c
                else:
                    h = cell(seq[t], h)
                h.retain_grad()
                hs[t] = h
            T = seq.shape[0]
            states[(k, d)] = ([hs[t] for t in range(T)], [cs[t] for t in range(T)] if cs else None)
            outs.append(torch.stack([hs[t] for t in range(T)]))
        seq = torch.cat(outs, dim=-1)
    return seq, states


def _norms(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.grad.norm(dim=1) for t in ts])                  # (T, B)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("mode", list(TORCH_CELLS))
def test_grad_norms_equal_autograds_total_gradient_at_every_step(mode: str, bidirectional: bool, engine: str) -> None:
    layer = _layer(mode, engine, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(5, 3, 3, dtype=F64)
    w = torch.randn(5, 3, layer.num_directions * 4, dtype=F64)
    with record_grad_norms() as rec:
        out, _ = layer(x)
        (out * w).sum().backward()
    ref_out, states = _manual(layer, mode, x)
    (ref_out * w).sum().backward()
    assert_close("output (oracle)", out, ref_out, 1e-12)
    records = rec.layers
    assert [(r.layer, r.direction) for r in records] == sorted(states)
    for r in records:
        hs, cs = states[(r.layer, r.direction)]
        where = f"{mode} layer {r.layer} direction {r.direction}"
        assert r.cell == CELL_NAME[mode]
        assert r.dh.shape == (5, 3)
        assert_close("dh", r.dh, _norms(hs), 1e-10, where)
        if mode == "lstm":
            assert r.dc is not None and r.dc.shape == (5, 3)
            assert_close("dc", r.dc, _norms(cs), 1e-10, where)
        else:
            assert r.dc is None


@pytest.mark.parametrize("mode", list(MODES))
def test_dh_at_the_last_step_is_the_output_gradient_there(mode: str) -> None:
    """With the loss on the output only, nothing flows into h_T from later: ‖∂L/∂h_T‖ = ‖∂L/∂out_T‖."""
    layer = _layer(mode)
    x = torch.randn(6, 2, 3, dtype=F64)
    with record_grad_norms() as rec:
        out, _ = layer(x)
        out.retain_grad()
        loss = (out.tanh() * torch.randn_like(out)).sum()
        loss.backward()
    (r,) = rec.layers
    want = out.grad[-1].norm(dim=1)                                          # (B,)
    assert_close("dh[T-1]", r.dh[-1], want, 1e-12, mode)
    assert (r.dh[:-1] > 0).all()
    assert (r.dc is not None) == mode.startswith("lstm")


def test_bidirectional_record_is_in_forward_time_order() -> None:
    """The reverse direction's output at forward step T-1 is its *first* scan step: with the loss
    there only, the gradient reaches forward step T-1 and no other. In scan order it would sit at 0."""
    layer = _layer("gru", bidirectional=True)
    x = torch.randn(5, 2, 3, dtype=F64)
    with record_grad_norms() as rec:
        out, _ = layer(x)
        out[-1, :, 4:].sum().backward()                                       # reverse half, t = T-1
    fwd, rev = rec.layers
    assert rev.direction == 1
    assert (rev.dh[-1] > 0).all() and torch.count_nonzero(rev.dh[:-1]) == 0
    assert torch.count_nonzero(fwd.dh) == 0


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_packed_record_equals_per_sequence_records(mode: str, bidirectional: bool) -> None:
    layer = _layer(mode, num_layers=2, bidirectional=bidirectional)
    lengths = torch.tensor([2, 5, 3])
    x = torch.randn(5, 3, 3, dtype=F64)
    with record_grad_norms() as rec:
        out, _ = layer(pack_padded_sequence(x, lengths, enforce_sorted=False))
        (out.data ** 2).sum().backward()
    for b, n in enumerate(lengths.tolist()):
        with record_grad_norms() as one:
            o, _ = layer(x[:n, b : b + 1])
            (o ** 2).sum().backward()
        for r, r1 in zip(rec.layers, one.layers):
            where = f"{mode} sequence {b} layer {r.layer} direction {r.direction}"
            assert_close("dh", r.dh[:n, b], r1.dh[:, 0], 1e-10, where)
            if r.dc is not None:
                assert_close("dc", r.dc[:n, b], r1.dc[:, 0], 1e-10, where)


@pytest.mark.parametrize("mode", list(MODES))
def test_recording_does_not_change_gradients(mode: str) -> None:
    layer = _layer(mode, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)

    def grads():
        out, _ = layer(x)
        return torch.autograd.grad((out ** 2).sum(), [x, *layer.parameters()])

    plain = grads()
    with record_grad_norms() as rec, record_gates():
        recorded = grads()
    assert len(rec.layers) == 4
    for a, b in zip(plain, recorded):
        assert torch.equal(a, b)


def test_nothing_is_recorded_outside_the_context() -> None:
    layer = _layer("lstm")
    x = torch.randn(4, 2, 3, dtype=F64)
    assert not grad_recording() and not gate_recording()
    with record_grad_norms() as rec, record_gates() as gates:
        out, _ = layer(x)                       # forward inside, backward outside: no grad record
        assert grad_recording() and gate_recording()
    assert not grad_recording() and not gate_recording()
    out.sum().backward()
    assert rec.layers == []
    assert len(gates.layers) == 1
    out, _ = layer(x)                           # a whole pass after the block: nothing new
    out.sum().backward()
    assert rec.layers == [] and len(gates.layers) == 1
    with record_grad_norms() as inner:          # forward outside, backward inside: recorded
        out, _ = layer(x)
    with record_grad_norms() as inner:
        out.sum().backward()
    assert len(inner.layers) == 1


def test_nested_recorders_both_record() -> None:
    layer = _layer("rnn_tanh")
    with record_grad_norms() as outer:
        with record_grad_norms() as inner:
            layer(torch.randn(3, 2, 3, dtype=F64))[0].sum().backward()
        layer(torch.randn(3, 2, 3, dtype=F64))[0].sum().backward()
    assert len(inner.layers) == 1 and len(outer.layers) == 2


# ------------------------------------------------------------------ gates
def _gates_from_equations(layer, mode: str, x: torch.Tensor, h_seq: torch.Tensor, sfx: str = "_l0"):
    """Post-activation gates recomputed from the weights and torch.nn's hidden states h_{t-1}."""
    w_ih, w_hh = getattr(layer, "weight_ih" + sfx), getattr(layer, "weight_hh" + sfx)
    b_ih, b_hh = getattr(layer, "bias_ih" + sfx), getattr(layer, "bias_hh" + sfx)
    h_prev = torch.cat([torch.zeros_like(h_seq[:1]), h_seq[:-1]])                  # (T, B, H)
    xi = x @ w_ih.t() + b_ih
    hh = h_prev @ w_hh.t() + b_hh
    if mode == "lstm":
        i, f, g, o = (xi + hh).chunk(4, -1)
        return {"i": i.sigmoid(), "f": f.sigmoid(), "g": g.tanh(), "o": o.sigmoid()}
    xr, xz, xn = xi.chunk(3, -1)
    hr, hz, hn = hh.chunk(3, -1)
    r = (xr + hr).sigmoid()
    return {"r": r, "z": (xz + hz).sigmoid(), "n": (xn + r * hn).tanh()}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_gates_equal_the_equations(mode: str, engine: str) -> None:
    layer = _layer(mode, engine, bidirectional=True)
    ref_cls = nn.LSTM if mode == "lstm" else nn.GRU
    ref = ref_cls(3, 4, bidirectional=True, dtype=F64)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    with record_gates() as rec:
        layer(x)
    with torch.no_grad():
        h_seq, _ = ref(x)
    fwd, rev = rec.layers
    assert (fwd.direction, rev.direction) == (0, 1) and fwd.cell == mode
    want_f = _gates_from_equations(layer, mode, x, h_seq[..., :4])
    # the reverse direction, computed in its own time order, then flipped back to forward order
    want_r = _gates_from_equations(layer, mode, x.flip(0), h_seq[..., 4:].flip(0), "_l0_reverse")
    for r, want in ((fwd, want_f), (rev, {k: v.flip(0) for k, v in want_r.items()})):
        assert list(r.gates) == list(want)                                      # names, in layout order
        for name, g in r.gates.items():
            assert g.shape == (5, 2, 4) and not g.requires_grad
            assert_close(f"gate {name}", g, want[name].detach(), 1e-12, f"{mode} direction {r.direction}")


def test_rnn_records_no_gates_and_layers_are_ordered() -> None:
    with record_gates() as rec:
        _layer("rnn_tanh", num_layers=2, bidirectional=True)(torch.randn(3, 2, 3, dtype=F64))
    # the RNN has no gates, but still one record per layer and direction (an empty dict)
    assert [(r.layer, r.direction, r.cell, r.gates) for r in rec.layers] == [
        (0, 0, "rnn", {}), (0, 1, "rnn", {}), (1, 0, "rnn", {}), (1, 1, "rnn", {})]
    with record_gates() as rec:
        _layer("lstm", num_layers=2, bidirectional=True)(torch.randn(3, 2, 3, dtype=F64))
    assert [(r.layer, r.direction) for r in rec.layers] == [(0, 0), (0, 1), (1, 0), (1, 1)]
