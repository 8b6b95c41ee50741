"""The variant cells' hand-written BPTT against autograd on a plain PyTorch loop written here.

Every option (layer norm, peepholes, coupled gates, GRU reset before/after, recurrent dropout,
zoneout on h and c, variable lengths) and their combinations: outputs and every gradient agree in
float64 to 1e-10, and torch.autograd.gradcheck passes on small sizes.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnlab.cells.gru_variants import GRUVariant
from rnnlab.cells.lstm_variants import LSTMVariant
from rnnlab.engine import record_gates, record_grad_norms
from rnnlab.engine.variants import VariantSpec, variant_scan

DT = torch.float64
EPS = 1e-5


# ------------------------------------------------------------------ the plain reference
def ln(v, blocks, gain):
    """γ ⊙ (v − μ)/√(σ² + ε) per gate block, written out."""
    shape = v.shape[:-1] + (blocks, v.shape[-1] // blocks)
    v3 = v.reshape(shape)
    mu = v3.mean(-1, keepdim=True)
    var = ((v3 - mu) ** 2).mean(-1, keepdim=True)
    return ((v3 - mu) / torch.sqrt(var + EPS)).reshape(v.shape) * gain


def zone(z, old, new):
    return new if z is None else z * old + (1 - z) * new


def ref_lstm(v, x, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_gain_ih=None, ln_gain_hh=None, ln_gain_c=None,
             ln_bias_c=None, peephole=None, rd_mask=None, zoneout_h=None, zoneout_c=None, mask=None):
    H = h0.shape[1]
    G = 3 if v.coupled else 4
    h, c, outs = h0, c0, []
    for t in range(x.shape[0]):
        h_in = h if rd_mask is None else h * rd_mask
        xi, hh = x[t] @ w_ih.T, h_in @ w_hh.T
        if v.layer_norm:
            xi, hh = ln(xi, G, ln_gain_ih), ln(hh, G, ln_gain_hh)
        a = xi + hh + (0 if b_ih is None else b_ih + b_hh)
        if v.coupled:
            a_i, a_g, a_o = a.split(H, 1)
        else:
            a_i, a_f, a_g, a_o = a.split(H, 1)
        if v.peephole:
            p = peephole.split(H)
            a_i = a_i + p[0] * c
            if not v.coupled:
                a_f = a_f + p[1] * c
        i = torch.sigmoid(a_i)
        f = 1 - i if v.coupled else torch.sigmoid(a_f)
        g = torch.tanh(a_g)
        c_new = f * c + i * g
        if v.peephole:
            a_o = a_o + peephole.split(H)[-1] * c_new
        o = torch.sigmoid(a_o)
        zc = ln(c_new, 1, ln_gain_c) + ln_bias_c if v.layer_norm else c_new
        h_new = o * torch.tanh(zc)
        h_new = zone(None if zoneout_h is None else zoneout_h[t], h, h_new)
        c_new = zone(None if zoneout_c is None else zoneout_c[t], c, c_new)
        if mask is not None:
            h_new, c_new = torch.where(mask[t], h_new, h), torch.where(mask[t], c_new, c)
        outs.append(h_new if mask is None else h_new * mask[t])
        h, c = h_new, c_new
    return torch.stack(outs), h, c


def ref_gru(v, x, h0, w_ih, w_hh, b_ih, b_hh, ln_gain_ih=None, ln_gain_hh=None, rd_mask=None,
            zoneout_h=None, mask=None):
    H = h0.shape[1]
    h, outs = h0, []
    bi = b_ih if b_ih is not None else torch.zeros(3 * H, dtype=x.dtype)
    bh = b_hh if b_hh is not None else torch.zeros(3 * H, dtype=x.dtype)
    for t in range(x.shape[0]):
        h_in = h if rd_mask is None else h * rd_mask
        xi = x[t] @ w_ih.T
        if v.layer_norm:
            xi = ln(xi, 3, ln_gain_ih)
        x_r, x_z, x_n = (xi + bi).split(H, 1)
        if v.reset == "after":
            hw = h_in @ w_hh.T
            if v.layer_norm:
                hw = ln(hw, 3, ln_gain_hh)
            h_r, h_z, h_n = (hw + bh).split(H, 1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
        else:                                     # d2l: H̃ = tanh(X W_xh + (R ⊙ H) W_hh + b_h)
            hw = h_in @ w_hh[: 2 * H].T
            if v.layer_norm:
                hw = ln(hw, 2, ln_gain_hh[: 2 * H])
            h_r, h_z = (hw + bh[: 2 * H]).split(H, 1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            hn = (r * h_in) @ w_hh[2 * H :].T
            if v.layer_norm:
                hn = ln(hn, 1, ln_gain_hh[2 * H :])
            n = torch.tanh(x_n + hn + bh[2 * H :])
        h_new = (1 - z) * n + z * h
        h_new = zone(None if zoneout_h is None else zoneout_h[t], h, h_new)
        if mask is not None:
            h_new = torch.where(mask[t], h_new, h)
        outs.append(h_new if mask is None else h_new * mask[t])
        h = h_new
    return torch.stack(outs), h, None


# ---------------------------------------------------------------------------- setup
T, B, I, H = 5, 3, 4, 6


def make(mode, v, *, bias=True, rd=False, zo_h=None, zo_c=None, lengths=False, seed=0, size=(T, B, I, H)):
    """Random float64 inputs and parameters (leaves), masks (constants) for one variant."""
    T_, B_, I_, H_ = size
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=DT).requires_grad_()  # noqa: E731
    G = (3 if v.coupled else 4) if mode == "lstm" else 3
    leaves = dict(x=r(T_, B_, I_), h0=r(B_, H_), w_ih=r(G * H_, I_) * 0.5, w_hh=r(G * H_, H_) * 0.5)
    leaves = {k: t.detach().requires_grad_() for k, t in leaves.items()}
    if mode == "lstm":
        leaves["c0"] = r(B_, H_)
    if bias:
        leaves["b_ih"], leaves["b_hh"] = r(G * H_), r(G * H_)
    if v.layer_norm:
        leaves["ln_gain_ih"], leaves["ln_gain_hh"] = r(G * H_), r(G * H_)
        if mode == "lstm":
            leaves["ln_gain_c"], leaves["ln_bias_c"] = r(H_), r(H_)
    if mode == "lstm" and v.peephole:
        leaves["peephole"] = r((2 if v.coupled else 3) * H_)
    consts = {}
    if rd:
        consts["rd_mask"] = torch.bernoulli(torch.full((B_, H_), 0.7, dtype=DT), generator=g) / 0.7
    for name, p in (("zoneout_h", zo_h), ("zoneout_c", zo_c)):
        if p == "eval":                              # the expectation, as a broadcast view
            consts[name] = torch.full((1, 1, 1), 0.3, dtype=DT).expand(T_, B_, H_)
        elif p:
            consts[name] = torch.bernoulli(torch.full((T_, B_, H_), p, dtype=DT), generator=g)
    if lengths:
        lens = torch.tensor([T_, 2, T_ - 1][:B_])
        consts["mask"] = (torch.arange(T_).unsqueeze(1) < lens).unsqueeze(-1)
    return leaves, consts


def run_engine(mode, v, leaves, consts):
    kw = {k: t for k, t in leaves.items() if k not in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")}
    return variant_scan(VariantSpec(mode, v), leaves["x"], leaves["h0"], leaves.get("c0"), leaves["w_ih"],
                        leaves["w_hh"], leaves.get("b_ih"), leaves.get("b_hh"), **kw, **consts)


def run_ref(mode, v, leaves, consts):
    args = dict(leaves)
    if mode == "lstm":
        return ref_lstm(v, args.pop("x"), args.pop("h0"), args.pop("c0"), args.pop("w_ih"), args.pop("w_hh"),
                        args.pop("b_ih", None), args.pop("b_hh", None), **args, **consts)
    return ref_gru(v, args.pop("x"), args.pop("h0"), args.pop("w_ih"), args.pop("w_hh"),
                   args.pop("b_ih", None), args.pop("b_hh", None), **args, **consts)


def compare(mode, v, **kw):
    leaves, consts = make(mode, v, **kw)
    got, want = run_engine(mode, v, leaves, consts), run_ref(mode, v, leaves, consts)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(o.shape, generator=g, dtype=DT) for o in want if o is not None]
    for name, a, b in zip(("out", "h_T", "c_T"), got, want):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m: f"{name}: {m}")
    names = list(leaves)
    loss = lambda outs: sum((o * w).sum() for o, w in zip([o for o in outs if o is not None], weights))  # noqa: E731
    g_got = torch.autograd.grad(loss(got), [leaves[n] for n in names])
    g_want = torch.autograd.grad(loss(want), [leaves[n] for n in names])
    for n, a, b in zip(names, g_got, g_want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m, n=n: f"d{n}: {m}")


LSTM_STRUCT = [LSTMVariant(*flags) for flags in itertools.product((False, True), repeat=3)]
GRU_STRUCT = [GRUVariant(ln_, reset) for ln_ in (False, True) for reset in ("after", "before")]


def _id(v):
    return "-".join(f"{k}={getattr(v, k)}" for k in v.__dataclass_fields__)


@pytest.mark.parametrize("v", LSTM_STRUCT, ids=_id)
def test_lstm_structure_matches_autograd(v):
    compare("lstm", v)


@pytest.mark.parametrize("v", GRU_STRUCT, ids=_id)
def test_gru_structure_matches_autograd(v):
    compare("gru", v)


REGS = {
    "recurrent_dropout": dict(rd=True),
    "zoneout_h": dict(zo_h=0.3),
    "zoneout_c": dict(zo_c=0.4),
    "zoneout_both": dict(zo_h=0.3, zo_c=0.5),
    "zoneout_eval": dict(zo_h="eval", zo_c="eval"),
    "lengths": dict(lengths=True),
    "all": dict(rd=True, zo_h=0.3, zo_c=0.5, lengths=True),
    "no_bias": dict(bias=False, rd=True),
}


@pytest.mark.parametrize("reg", sorted(REGS))
@pytest.mark.parametrize("v", [LSTMVariant(), LSTMVariant(True, True, False), LSTMVariant(True, True, True)], ids=_id)
def test_lstm_regularisers_match_autograd(v, reg):
    compare("lstm", v, **REGS[reg])


@pytest.mark.parametrize("reg", sorted(k for k in REGS if "zoneout_c" not in k and k != "zoneout_both"))
@pytest.mark.parametrize("v", GRU_STRUCT, ids=_id)
def test_gru_regularisers_match_autograd(v, reg):
    kw = {k: val for k, val in REGS[reg].items() if k != "zo_c"}
    if reg == "zoneout_eval":
        kw = dict(zo_h="eval")
    compare("gru", v, **kw)


def test_lstm_all_off_is_the_standard_lstm():
    """With every option off, the variant cell is torch.nn's LSTM (and the GRU torch.nn's GRU)."""
    for mode, v, cls in (("lstm", LSTMVariant(), torch.nn.LSTM), ("gru", GRUVariant(), torch.nn.GRU)):
        leaves, consts = make(mode, v)
        m = cls(I, H, dtype=DT)
        with torch.no_grad():
            for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
                getattr(m, {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0", "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0"}[name]).copy_(leaves[name])
        hx = (leaves["h0"][None], leaves["c0"][None]) if mode == "lstm" else leaves["h0"][None]
        want, _ = m(leaves["x"], hx)
        got = run_engine(mode, v, leaves, consts)[0]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


GRADCHECK = [
    ("lstm", LSTMVariant(True, False, False), {}),
    ("lstm", LSTMVariant(False, True, False), dict(zo_c=0.5)),
    ("lstm", LSTMVariant(True, True, True), dict(rd=True, zo_h=0.5, lengths=True)),
    ("gru", GRUVariant(True, "after"), dict(rd=True)),
    ("gru", GRUVariant(True, "before"), dict(zo_h=0.5)),
    ("gru", GRUVariant(False, "before"), dict(lengths=True)),
]


@pytest.mark.parametrize("mode,v,kw", GRADCHECK, ids=[f"{m}-{_id(v)}-{sorted(k)}" for m, v, k in GRADCHECK])
def test_gradcheck(mode, v, kw):
    leaves, consts = make(mode, v, size=(3, 3, 2, 3), **kw)
    names = list(leaves)

    def f(*tensors):
        outs = run_engine(mode, v, dict(zip(names, tensors)), consts)
        return tuple(o for o in outs if o is not None)

    assert torch.autograd.gradcheck(f, tuple(leaves[n] for n in names), eps=1e-6, atol=1e-7)


def test_coupled_records_f_as_one_minus_i_and_grad_norms():
    v = LSTMVariant(layer_norm=True, coupled=True)
    leaves, consts = make("lstm", v)
    with record_gates() as gates, record_grad_norms() as grads:
        out, h, c = run_engine("lstm", v, leaves, consts)
        out.sum().backward()
    g = gates.layers[0].gates
    torch.testing.assert_close(g["f"], 1 - g["i"], rtol=0, atol=1e-15)
    rec = grads.layers[0]
    assert rec.dh.shape == (T, B) and rec.dc.shape == (T, B)
    # The last step's ‖∂L/∂h_T‖ is the norm of the all-ones output gradient.
    torch.testing.assert_close(rec.dh[-1], torch.full((B,), H ** 0.5, dtype=DT))


def test_fused_layernorm_backward_equals_the_written_formula():
    from rnnlab.cells import layernorm

    g = torch.Generator().manual_seed(3)
    v = torch.randn(5, 4, 3 * 7, generator=g, dtype=DT)
    up = torch.randn(5, 4, 3 * 7, generator=g, dtype=DT)
    vhat, rstd = layernorm.normalize(v, 3)
    torch.testing.assert_close(layernorm.normalize_backward(up, vhat, rstd, 3),
                               layernorm.normalize_backward_reference(up, vhat, rstd, 3), rtol=0, atol=1e-12)
    # and the formula is autograd's derivative of the written-out LN
    vv = v.clone().requires_grad_()
    (ln(vv, 3, 1.0) * up).sum().backward()
    torch.testing.assert_close(layernorm.normalize_backward_reference(up, vhat, rstd, 3), vv.grad, rtol=0, atol=1e-10)
