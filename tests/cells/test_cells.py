"""The cell modules (rnnlab.cells.{rnn,lstm,gru}): one step forward and the hand-written backward
step, each against the equations written out here with plain torch ops and differentiated by
autograd (the oracle, haste-style); and the docstrings against SPEC.md and the layout constants.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from rnn_parity import assert_close

from rnnlab.cells import CELL_NAMES, FAMILIES, gru, lstm, rnn

F64 = torch.float64
B, I, H, P = 3, 2, 4, 2
SPEC = Path(__file__).resolve().parents[3] / "shared" / "SPEC.md"


def _r(*shape, g):
    return torch.randn(*shape, generator=g, dtype=F64)


def _leaf(t):
    return t.clone().requires_grad_()


@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
def test_rnn_step_forward_and_backward(relu: bool) -> None:
    g = torch.Generator().manual_seed(0)
    xw, h_prev, w_hh, dh = _r(B, H, g=g), _r(B, H, g=g), _r(H, H, g=g), _r(B, H, g=g)
    h = torch.empty(B, H, dtype=F64)
    rnn.forward_step(xw, h_prev, w_hh.t(), h, relu)
    da = torch.empty(B, H, dtype=F64)
    rnn.backward_step(dh, h, da, relu)

    xw_, h_prev_ = _leaf(xw), _leaf(h_prev)
    a = xw_ + h_prev_ @ w_hh.t()                     # W_ih x + b_ih + b_hh + W_hh h_{t-1}
    want = a.relu() if relu else a.tanh()
    (want * dh).sum().backward()
    assert_close("h_t", h, want.detach(), 1e-12)
    assert_close("da", da, xw_.grad, 1e-12)
    assert_close("dh_{t-1} = da W_hh", da @ w_hh, h_prev_.grad, 1e-12)


@pytest.mark.parametrize("proj", [False, True], ids=["plain", "proj"])
def test_lstm_step_forward_and_backward(proj: bool) -> None:
    g = torch.Generator().manual_seed(1)
    p = P if proj else H
    xw, h_prev, c_prev = _r(B, 4 * H, g=g), _r(B, p, g=g), _r(B, H, g=g)
    w_hh, w_hr = _r(4 * H, p, g=g), (_r(P, H, g=g) if proj else None)
    dh, dc = _r(B, p, g=g), _r(B, H, g=g)
    gates, c, h, scratch = (torch.empty(B, 4 * H, dtype=F64), torch.empty(B, H, dtype=F64),
                            torch.empty(B, p, dtype=F64), torch.empty(B, H, dtype=F64))
    lstm.forward_step(xw, h_prev, c_prev, w_hh.t(), None if w_hr is None else w_hr.t(), gates, c, h, scratch)
    da = torch.empty(B, 4 * H, dtype=F64)
    dw_hr = torch.zeros(P, H, dtype=F64) if proj else None
    dc_total = dc.clone()
    dc_prev = lstm.backward_step(dh, dc_total, gates, c, c_prev, w_hr, dw_hr, da, torch.empty(B, H, dtype=F64))

    # the equations, gate order i, f, g, o
    xw_, h_prev_, c_prev_ = _leaf(xw), _leaf(h_prev), _leaf(c_prev)
    w_hr_ = _leaf(w_hr) if proj else None
    a_i, a_f, a_g, a_o = (xw_ + h_prev_ @ w_hh.t()).chunk(4, dim=1)
    i, f, gg, o = a_i.sigmoid(), a_f.sigmoid(), a_g.tanh(), a_o.sigmoid()
    c_ = f * c_prev_ + i * gg
    h_ = o * c_.tanh()
    if proj:
        h_ = h_ @ w_hr_.t()
    c_.retain_grad()
    ((h_ * dh).sum() + (c_ * dc).sum()).backward()
    assert_close("gates [i|f|g|o]", gates, torch.cat([i, f, gg, o], 1).detach(), 1e-12)
    assert_close("c_t", c, c_.detach(), 1e-12)
    assert_close("h_t", h, h_.detach(), 1e-12)
    assert_close("da [di|df|dg|do]", da, xw_.grad, 1e-12)
    assert_close("dc_t (total)", dc_total, c_.grad, 1e-12)
    assert_close("dc_{t-1}", dc_prev, c_prev_.grad, 1e-12)
    assert_close("dh_{t-1} = da W_hh", da @ w_hh, h_prev_.grad, 1e-12)
    if proj:
        assert_close("dW_hr", dw_hr, w_hr_.grad, 1e-12)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gru_step_forward_and_backward(bias: bool) -> None:
    g = torch.Generator().manual_seed(2)
    xw, h_prev, w_hh = _r(B, 3 * H, g=g), _r(B, H, g=g), _r(3 * H, H, g=g)
    b_hh = _r(3 * H, g=g) if bias else None
    dh = _r(B, H, g=g)
    gates, hn, h, hw = (torch.empty(B, 3 * H, dtype=F64), torch.empty(B, H, dtype=F64),
                        torch.empty(B, H, dtype=F64), torch.empty(B, 3 * H, dtype=F64))
    gru.forward_step(xw, h_prev, w_hh.t(), b_hh, gates, hn, h, hw)
    dxw, dhw = torch.empty(B, 3 * H, dtype=F64), torch.empty(B, 3 * H, dtype=F64)
    direct = gru.backward_step(dh, gates, hn, h_prev, dxw, dhw)

    # the equations, gate order r, z, n; the reset multiplies W_hn h + b_hn (after its bias)
    xw_, h_prev_ = _leaf(xw), _leaf(h_prev)
    hw_ = _leaf(h_prev @ w_hh.t() + (b_hh if bias else 0))       # W_hh h_{t-1} + b_hh, a leaf here
    x_r, x_z, x_n = xw_.chunk(3, 1)
    h_r, h_z, h_n = hw_.chunk(3, 1)
    r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    h_ = (1 - z) * n + z * h_prev_
    (h_ * dh).sum().backward()
    assert_close("gates [r|z|n]", gates, torch.cat([r, z, n], 1).detach(), 1e-12)
    assert_close("hn = W_hn h + b_hn", hn, h_n.detach(), 1e-12)
    assert_close("h_t", h, h_.detach(), 1e-12)
    assert_close("dxw", dxw, xw_.grad, 1e-12)
    assert_close("dhw", dhw, hw_.grad, 1e-12)
    assert_close("direct dh_{t-1} = dh z", direct, h_prev_.grad, 1e-12)


def test_lstm_forget_path_is_a_product_of_forget_gates() -> None:
    """SPEC: ∂c_t/∂c_{t-1} = diag(f_t). With dh = 0, dc_{t-1} = dc ⊙ f exactly."""
    g = torch.Generator().manual_seed(3)
    xw, h_prev, c_prev, w_hh = _r(B, 4 * H, g=g), _r(B, H, g=g), _r(B, H, g=g), _r(4 * H, H, g=g)
    gates, c, h, s = (torch.empty(B, 4 * H, dtype=F64), torch.empty(B, H, dtype=F64),
                      torch.empty(B, H, dtype=F64), torch.empty(B, H, dtype=F64))
    lstm.forward_step(xw, h_prev, c_prev, w_hh.t(), None, gates, c, h, s)
    dc = _r(B, H, g=g)
    dc_prev = lstm.backward_step(torch.zeros(B, H, dtype=F64), dc.clone(), gates, c, c_prev, None, None,
                                 torch.empty(B, 4 * H, dtype=F64), s)
    f = gates.chunk(4, 1)[1]
    assert_close("dc_{t-1}", dc_prev, dc * f, 0.0)


# ------------------------------------------------------------------ layout and docstrings
def test_layout_constants() -> None:
    assert (lstm.GATES, lstm.NUM_BLOCKS, lstm.HAS_CELL_STATE) == (("i", "f", "g", "o"), 4, True)
    assert (gru.GATES, gru.NUM_BLOCKS, gru.HAS_CELL_STATE) == (("r", "z", "n"), 3, False)
    assert (rnn.GATES, rnn.NUM_BLOCKS, rnn.HAS_CELL_STATE) == ((), 1, False)
    assert set(FAMILIES) == set(CELL_NAMES) == {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    for fam in (lstm, gru):
        assert fam.NUM_BLOCKS == len(fam.GATES)
        # the docstring's stacked layout W_ih = [W_i? | ...] follows GATES
        assert " | ".join(f"W_i{n}" for n in fam.GATES) in fam.__doc__


def _spec_block(title: str) -> list[str]:
    text = SPEC.read_text()
    start = text.index(title)
    lines = []
    for line in text[start:].splitlines()[1:]:
        if not line.strip():
            if lines:
                break
            continue
        if not line.startswith("    "):
            if lines:
                break
            continue                                               # the title's continuation line
        lines.append(re.split(r"\s{2,}", line.strip())[0])            # the formula, not its gloss
    return lines


@pytest.mark.skipif(not SPEC.is_file(), reason=f"SPEC.md not found at {SPEC}")
@pytest.mark.parametrize("module, title", [(rnn, "Vanilla RNN:"), (lstm, "LSTM (gate order"), (gru, "GRU (gate order")])
def test_docstring_holds_specs_equations(module, title: str) -> None:
    doc = " ".join(re.sub(r"\s+", " ", module.__doc__).split())
    equations = _spec_block(title)
    assert equations, f"no equations under {title!r} in SPEC.md"
    for formula in equations:
        assert formula in doc, f"{module.__name__}: SPEC equation {formula!r} missing from the docstring"
