"""Layer options torch.nn lacks: defaults are torch.nn, parameters, regularisers in train/eval,
seeded determinism, initialisations, and the layer equals a loop of variants scans."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab.engine import record_gates, scan
from rnnlab.engine.variants import variant_scan
from rnnlab.errors import ConfigError
from rnnlab.nn.options import CellOptions, cell_kwargs
from rnnlab.tasks.cell_options import parse_cell_option_flags
from rnnlab.nn.variants import spec_for

DT = torch.float64
CLASSES = {"rnn": (rnnlab.RNN, torch.nn.RNN), "lstm": (rnnlab.LSTM, torch.nn.LSTM), "gru": (rnnlab.GRU, torch.nn.GRU)}
DEFAULTS = dict(layer_norm=False, gru_reset="after", recurrent_dropout=0.0, zoneout=0.0, weight_drop=0.0,
                forget_bias=None, init="torch", t_max=None)


@pytest.mark.parametrize("cell", sorted(CLASSES))
def test_explicit_defaults_reproduce_torch_nn(cell):
    ours, theirs = CLASSES[cell]
    kw = {k: v for k, v in DEFAULTS.items() if not (cell == "rnn" and k in ("layer_norm",))}
    torch.manual_seed(0)
    a = ours(3, 5, num_layers=2, bidirectional=True, dtype=DT, **kw)
    torch.manual_seed(0)
    b = theirs(3, 5, num_layers=2, bidirectional=True, dtype=DT)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sb)
    x = torch.randn(6, 2, 3, dtype=DT)
    (oa, _), (ob, _) = a(x), b(x)
    torch.testing.assert_close(oa, ob, rtol=0, atol=1e-12)
    assert repr(a) == repr(b)


EXTRA = {
    ("lstm", "layer_norm"): {"ln_gain_ih": (20,), "ln_gain_hh": (20,), "ln_gain_cell": (5,), "ln_bias_cell": (5,)},
    ("gru", "layer_norm"): {"ln_gain_ih": (15,), "ln_gain_hh": (15,)},
    ("lstm", "peephole"): {"peephole": (15,)},
}


@pytest.mark.parametrize("cell,option", sorted(EXTRA))
def test_extra_parameters_are_named_and_present_only_with_the_option(cell, option):
    cls = CLASSES[cell][0]
    m = cls(3, 5, num_layers=2, bidirectional=True, **{option: True})
    base = set(cls(3, 5, num_layers=2, bidirectional=True).state_dict())
    extra = {k: tuple(v.shape) for k, v in m.state_dict().items() if k not in base}
    want = {f"{n}_l{k}{s}": shape for n, shape in EXTRA[(cell, option)].items() for k in (0, 1) for s in ("", "_reverse")}
    assert extra == want
    # the torch.nn parameters are still there with their shapes, and draw the same initial numbers
    torch.manual_seed(1)
    a = cls(3, 5, **{option: True})
    torch.manual_seed(1)
    b = CLASSES[cell][1](3, 5)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_coupled_gates_have_three_blocks_and_peepholes_two():
    m = rnnlab.LSTM(3, 5, coupled_gates=True, peephole=True)
    assert m.weight_ih_l0.shape == (15, 3) and m.weight_hh_l0.shape == (15, 5) and m.peephole_l0.shape == (10,)


@pytest.mark.parametrize("kw", [dict(layer_norm=True, peephole=True), dict(coupled_gates=True, zoneout=(0.2, 0.3)),
                                dict(gru_reset="before", layer_norm=True), dict(recurrent_dropout=0.3)],
                         ids=lambda kw: ",".join(kw))
def test_layer_equals_a_loop_of_variant_scans(kw):
    """Two layers, bidirectional, lengths: the layer is the composition of single-direction scans."""
    cell = "gru" if "gru_reset" in kw else "lstm"
    torch.manual_seed(0)
    m = CLASSES[cell][0](3, 4, num_layers=2, bidirectional=True, dtype=DT, **kw).eval()
    x = torch.randn(6, 3, 3, dtype=DT)
    lengths = torch.tensor([6, 4, 2])
    out, _ = m(pack_padded_sequence(x, lengths, enforce_sorted=False))
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out)
    # the same through variant_scan, one sequence at a time (no padding at all)
    for b in range(3):
        seq = x[: lengths[b], b : b + 1]
        for layer in range(2):
            outs = []
            for d in range(2):
                k = layer * 2 + d
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                p = lambda n: getattr(m, n + sfx, None)  # noqa: E731
                s = seq.flip(0) if d else seq
                H = 4
                zo = m.options.zoneout
                zmask = lambda q: None if not q else torch.full((s.shape[0], 1, H), q, dtype=DT)  # noqa: E731
                o, _, _ = variant_scan(
                    spec_for(m), s, torch.zeros(1, H, dtype=DT), torch.zeros(1, H, dtype=DT) if cell == "lstm" else None,
                    p("weight_ih"), p("weight_hh"), p("bias_ih"), p("bias_hh"), ln_gain_ih=p("ln_gain_ih"),
                    ln_gain_hh=p("ln_gain_hh"), ln_gain_c=p("ln_gain_cell"), ln_bias_c=p("ln_bias_cell"),
                    peephole=p("peephole"), zoneout_h=zmask(zo), zoneout_c=zmask(m.options.zoneout_c if cell == "lstm" else 0),
                )
                outs.append(o.flip(0) if d else o)
            seq = torch.cat(outs, 2)
        torch.testing.assert_close(out[: lengths[b], b : b + 1], seq, rtol=0, atol=1e-12)


REGULARISERS = [("lstm", dict(recurrent_dropout=0.4)), ("lstm", dict(zoneout=0.3)), ("lstm", dict(weight_drop=0.5)),
                ("lstm", dict(zoneout=(0.1, 0.5), recurrent_dropout=0.2, layer_norm=True)),
                ("gru", dict(recurrent_dropout=0.4, zoneout=0.3)), ("gru", dict(weight_drop=0.5, gru_reset="before")),
                ("rnn", dict(weight_drop=0.5))]


@pytest.mark.parametrize("cell,kw", REGULARISERS, ids=[f"{c}-{','.join(k)}" for c, k in REGULARISERS])
def test_regularisers_random_in_training_seeded_and_off_in_eval(cell, kw):
    torch.manual_seed(0)
    m = CLASSES[cell][0](3, 6, num_layers=2, dtype=DT, **kw)
    x = torch.randn(7, 4, 3, dtype=DT)

    def run(seed):
        torch.manual_seed(seed)
        m.zero_grad()
        out, _ = m(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in m.parameters()]

    o1, g1 = run(5)
    o2, g2 = run(5)
    o3, _ = run(6)
    assert torch.equal(o1, o2) and all(torch.equal(a, b) for a, b in zip(g1, g2))   # seeded
    assert not torch.allclose(o1, o3)                                              # random masks
    m.eval()
    e1, e2 = m(x)[0], m(x)[0]
    assert torch.equal(e1, e2)                                                     # deterministic in eval
    # eval without zoneout: recurrent dropout and weight drop are off -> the plain structure
    plain = {k: v for k, v in kw.items() if k not in ("recurrent_dropout", "weight_drop")}
    if "zoneout" not in plain:
        ref = CLASSES[cell][0](3, 6, num_layers=2, dtype=DT, **plain).eval()
        ref.load_state_dict(m.state_dict())
        torch.testing.assert_close(e1, ref(x)[0], rtol=0, atol=1e-12)


def test_zoneout_in_eval_is_the_expectation():
    """h_t = p h_{t-1} + (1 − p) h̃_t with p the zoneout probability (Krueger et al.)."""
    torch.manual_seed(0)
    m = rnnlab.GRU(3, 4, zoneout=0.25, dtype=DT).eval()
    x = torch.randn(5, 2, 3, dtype=DT)
    cell = torch.nn.GRUCell(3, 4, dtype=DT)
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in m.state_dict().items()})
    h = torch.zeros(2, 4, dtype=DT)
    for t in range(5):
        h = 0.25 * h + 0.75 * cell(x[t], h)
    torch.testing.assert_close(m(x)[1][0], h, rtol=0, atol=1e-12)


def test_weight_drop_is_one_dropconnect_mask_on_w_hh_per_forward():
    torch.manual_seed(0)
    m = rnnlab.LSTM(3, 5, weight_drop=0.5, dtype=DT, engine="reference")   # bitwise against the reference scan
    x = torch.randn(4, 2, 3, dtype=DT)
    torch.manual_seed(9)
    out, _ = m(x)
    torch.manual_seed(9)
    w_hh = F.dropout(m.weight_hh_l0, p=0.5, training=True)
    want, _, _ = scan("lstm", x, torch.zeros(2, 5, dtype=DT), torch.zeros(2, 5, dtype=DT), m.weight_ih_l0, w_hh,
                      m.bias_ih_l0, m.bias_hh_l0)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    out.sum().backward()
    dropped = w_hh == 0
    assert dropped.any() and torch.all(m.weight_hh_l0.grad[dropped] == 0)


# ------------------------------------------------------------------- initialisation
def test_orthogonal_init_per_block():
    m = rnnlab.LSTM(3, 8, num_layers=2, init="orthogonal", dtype=DT)
    for w in (m.weight_hh_l0, m.weight_hh_l1):
        for block in w.split(8):
            torch.testing.assert_close(block @ block.T, torch.eye(8, dtype=DT), rtol=0, atol=1e-10)


def test_forget_bias_sets_the_effective_bias():
    m = rnnlab.LSTM(3, 8, forget_bias=1.0)
    torch.testing.assert_close(m.bias_ih_l0[8:16] + m.bias_hh_l0[8:16], torch.ones(8))
    c = rnnlab.LSTM(3, 8, forget_bias=1.0, coupled_gates=True)                # f = σ(−a_i)
    torch.testing.assert_close(c.bias_ih_l0[:8] + c.bias_hh_l0[:8], -torch.ones(8))
    g = rnnlab.GRU(3, 8, forget_bias=2.0)                                     # update gate z keeps h
    torch.testing.assert_close(g.bias_ih_l0[8:16] + g.bias_hh_l0[8:16], torch.full((8,), 2.0))


def test_chrono_init_biases_in_range():
    torch.manual_seed(0)
    t_max = 50
    m = rnnlab.LSTM(3, 256, init="chrono", t_max=t_max)
    b_f = m.bias_ih_l0[256:512] + m.bias_hh_l0[256:512]
    b_i = m.bias_ih_l0[:256] + m.bias_hh_l0[:256]
    assert b_f.min() >= 0 and b_f.max() <= torch.log(torch.tensor(t_max - 1.0))
    assert b_f.max() > torch.log(torch.tensor(t_max / 2.0))                   # spread over the range
    torch.testing.assert_close(b_i, -b_f)
    # the g and o biases keep torch.nn's uniform init
    assert m.bias_ih_l0[512:].abs().max() <= 1 / 16


def test_irnn_identity_init():
    m = rnnlab.RNN(3, 6, nonlinearity="relu", init="identity")
    assert torch.equal(m.weight_hh_l0, torch.eye(6))
    assert torch.equal(m.bias_ih_l0, torch.zeros(6)) and torch.equal(m.bias_hh_l0, torch.zeros(6))


def test_layer_norm_gains_start_at_one():
    m = rnnlab.LSTM(3, 5, layer_norm=True)
    assert torch.equal(m.ln_gain_ih_l0, torch.ones(20)) and torch.equal(m.ln_bias_cell_l0, torch.zeros(5))


# ---------------------------------------------------------------------- errors, options
@pytest.mark.parametrize("cls,kw,match", [
    (rnnlab.GRU, dict(peephole=True), "peephole"),
    (rnnlab.RNN, dict(layer_norm=True), "layer_norm"),
    (rnnlab.LSTM, dict(gru_reset="before"), "gru_reset"),
    (rnnlab.GRU, dict(gru_reset="middle"), "gru_reset"),
    (rnnlab.LSTM, dict(zoneout=1.0), "zoneout"),
    (rnnlab.LSTM, dict(init="chrono"), "t_max"),
    (rnnlab.LSTM, dict(init="identity"), "init"),
    (rnnlab.LSTM, dict(layer_norm=True, proj_size=2), "proj_size"),
    (rnnlab.LSTM, dict(forget_bias=1.0, bias=False), "bias"),
    (rnnlab.LSTM, dict(layer_nrom=True), "unknown"),
])
def test_bad_options_raise_config_errors(cls, kw, match):
    with pytest.raises(ConfigError, match=match):
        cls(3, 5, **kw)


def test_parse_and_round_trip_cell_options():
    o = CellOptions.from_dict(parse_cell_option_flags(
        ["layer_norm=1", "zoneout=0.1", "zoneout_cell=0.2", "init=chrono", "t_max=80"]))
    assert o == CellOptions(layer_norm=True, zoneout=0.1, zoneout_cell=0.2, init="chrono", t_max=80.0)
    assert CellOptions.from_dict(o.to_dict()) == o
    assert rnnlab.LSTM(3, 5, **cell_kwargs(o)).options == o
    assert cell_kwargs(CellOptions()) == {}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_cell_option_flags(["layer_norm"])
    with pytest.raises(ConfigError, match="a number"):
        parse_cell_option_flags(["zoneout=lots"])


@pytest.mark.parametrize("cell,kw", [("lstm", dict(layer_norm=True, peephole=True, recurrent_dropout=0.2)),
                                     ("lstm", dict(coupled_gates=True, zoneout=0.1)),
                                     ("gru", dict(layer_norm=True, gru_reset="before"))])
def test_one_training_step_moves_every_parameter(cell, kw):
    torch.manual_seed(0)
    m = CLASSES[cell][0](3, 5, num_layers=2, bidirectional=True, **kw)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    out, _ = m(torch.randn(6, 4, 3))
    out.square().mean().backward()
    opt.step()
    for k, v in m.state_dict().items():
        assert not torch.equal(v, before[k]), k


def test_gates_are_recorded_through_the_layer():
    m = rnnlab.LSTM(3, 5, num_layers=2, layer_norm=True)
    with record_gates() as g:
        m(torch.randn(4, 2, 3))
    assert [(r.layer, r.direction, sorted(r.gates)) for r in g.layers] == [(0, 0, list("fgio")), (1, 0, list("fgio"))]


# ------------------------------------------------------------------------- cells, d2l
@pytest.mark.parametrize("cell,kw", [("lstm", dict(layer_norm=True, peephole=True)), ("lstm", dict(coupled_gates=True)),
                                     ("gru", dict(layer_norm=True, gru_reset="before")), ("gru", dict(layer_norm=True))])
def test_cell_loop_equals_layer_with_options(cell, kw):
    cell_cls = {"lstm": rnnlab.LSTMCell, "gru": rnnlab.GRUCell}[cell]
    torch.manual_seed(0)
    c = cell_cls(3, 5, dtype=DT, **kw)
    layer = CLASSES[cell][0](3, 5, dtype=DT, **kw)
    assert set(layer.state_dict()) == {k + "_l0" for k in c.state_dict()}
    layer.load_state_dict({k + "_l0": v for k, v in c.state_dict().items()})
    x = torch.randn(4, 2, 3, dtype=DT)
    h = torch.zeros(2, 5, dtype=DT)
    s = (h, h.clone()) if cell == "lstm" else h
    for t in range(4):
        s = c(x[t], s)
    h_layer = layer(x)[1]
    want = h_layer[0][0] if cell == "lstm" else h_layer[0]
    torch.testing.assert_close(s[0] if cell == "lstm" else s, want, rtol=0, atol=1e-12)


def test_cells_default_to_torch_nn_and_reject_per_sequence_masks():
    torch.manual_seed(0)
    a = rnnlab.LSTMCell(3, 5, layer_norm=False, forget_bias=None)
    torch.manual_seed(0)
    b = torch.nn.LSTMCell(3, 5)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items()) and repr(a) == repr(b)
    with pytest.raises(ConfigError, match="recurrent_dropout"):
        rnnlab.GRUCell(3, 5, recurrent_dropout=0.2)


def test_gru_reset_before_reproduces_d2l_from_scratch_gru():
    """d2l.ai §10.2: Z, R = σ(X W_x· + H W_h· + b_·); H̃ = tanh(X W_xh + (R ⊙ H) W_hh + b_h);
    H = Z ⊙ H + (1 − Z) ⊙ H̃ — with b_hh = 0 the same numbers as gru_reset="before"."""
    torch.manual_seed(0)
    I_, H_ = 3, 4
    W = {k: torch.randn(I_ if k[1] == "x" else H_, H_, dtype=DT) * 0.5 for k in ("Wxz", "Whz", "Wxr", "Whr", "Wxh", "Whh")}
    b = {k: torch.randn(H_, dtype=DT) for k in ("bz", "br", "bh")}
    X = torch.randn(6, 2, I_, dtype=DT)
    H = torch.zeros(2, H_, dtype=DT)
    outs = []
    for x in X:                                         # d2l's gru(inputs, state, params)
        Z = torch.sigmoid(x @ W["Wxz"] + H @ W["Whz"] + b["bz"])
        R = torch.sigmoid(x @ W["Wxr"] + H @ W["Whr"] + b["br"])
        H_tilda = torch.tanh(x @ W["Wxh"] + (R * H) @ W["Whh"] + b["bh"])
        H = Z * H + (1 - Z) * H_tilda
        outs.append(H)
    m = rnnlab.GRU(I_, H_, gru_reset="before", dtype=DT)
    with torch.no_grad():                               # rows r | z | n, transposed from d2l's x @ W
        m.weight_ih_l0.copy_(torch.cat([W["Wxr"].T, W["Wxz"].T, W["Wxh"].T]))
        m.weight_hh_l0.copy_(torch.cat([W["Whr"].T, W["Whz"].T, W["Whh"].T]))
        m.bias_ih_l0.copy_(torch.cat([b["br"], b["bz"], b["bh"]]))
        m.bias_hh_l0.zero_()
    torch.testing.assert_close(m(X)[0], torch.stack(outs), rtol=0, atol=1e-12)
    # and the torch.nn form differs from it (the reset gate's place matters)
    m_after = rnnlab.GRU(I_, H_, dtype=DT)
    m_after.load_state_dict(m.state_dict())
    assert not torch.allclose(m_after(X)[0], torch.stack(outs))


def test_variant_bench_configs_build():
    from rnnlab.nn.options import variant_bench_configs

    for name, (cell, o) in variant_bench_configs().items():
        m = CLASSES[cell][0](3, 4, **cell_kwargs(o))
        assert m.options == o, name


# ------------------------------------------------------------------------- fast path
@pytest.mark.slow  # the first run compiles the C++ extension (about a minute), cached afterwards
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_layer_norm_lstm_fast_path_equals_python_scan(dtype, tol):
    from rnnlab.engine import variants

    if variants._KERNELS.get() is None:
        pytest.skip(f"variants fast path not buildable here: {variants._KERNELS.error}")
    torch.manual_seed(0)
    a = rnnlab.LSTM(5, 7, num_layers=2, bidirectional=True, layer_norm=True, dtype=dtype)
    with torch.no_grad():                       # move gains/biases off 1/0 so that every term counts
        for p in a.parameters():
            p.add_(0.3 * torch.randn_like(p))
    b = rnnlab.LSTM(5, 7, num_layers=2, bidirectional=True, layer_norm=True, dtype=dtype, engine="fast")
    b.load_state_dict(a.state_dict())
    x = torch.randn(6, 3, 5, dtype=dtype)
    hx = (torch.randn(4, 3, 7, dtype=dtype), torch.randn(4, 3, 7, dtype=dtype))
    w = torch.randn(6, 3, 14, dtype=dtype)
    outs = []
    for m in (a, b):
        out, (h, c) = m(x, hx)
        ((out * w).sum() + h.sum() + c.square().sum()).backward()
        outs.append((out, h, c))
    for name, u, v in zip(("out", "h", "c"), *outs):
        torch.testing.assert_close(u, v, rtol=0, atol=tol, msg=lambda m, n=name: f"{n}: {m}")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=tol * 10, msg=lambda m, n=name: f"d{n}: {m}")
    # cases the fast path does not cover run the Python scan (and still agree): lengths
    lengths = torch.tensor([6, 3, 5])
    pa, _ = a(torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False))
    pb, _ = b(torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False))
    torch.testing.assert_close(pa.data, pb.data, rtol=0, atol=0)



@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "blas"])
@pytest.mark.parametrize("threads", [1, 2])
def test_layer_norm_lstm_fast_path_at_onednn_sizes_and_two_threads(dtype, onednn, threads):
    """B·H·4H = 2^21: the step matmuls reach gemm.h's oneDNN threshold (float32); two threads split
    each step's rows and the gain-gradient sums' columns. Equal to the Python scan to rounding."""
    from rnnlab.engine import fast, variants

    if variants._KERNELS.get() is None:
        pytest.skip(f"variants fast path not buildable here: {variants._KERNELS.error}")
    torch.manual_seed(0)
    a = rnnlab.LSTM(24, 128, layer_norm=True, dtype=dtype)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.3 * torch.randn_like(p))
    b = rnnlab.LSTM(24, 128, layer_norm=True, dtype=dtype, engine="fast")
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 32, 24, dtype=dtype)
    w = torch.randn(5, 32, 128, dtype=dtype)
    old = torch.get_num_threads()
    fast.set_onednn(onednn)
    try:
        got = []
        for m in (a, b):
            torch.set_num_threads(threads if m is b else 1)
            out, (h, c) = m(x)
            ((out * w).sum() + h.sum() + c.square().sum()).backward()
            got.append({"out": out.detach(), "c": c.detach(), **{n: p.grad for n, p in m.named_parameters()}})
    finally:
        torch.set_num_threads(old)
        fast.set_onednn(True)
    for name, want in got[0].items():
        scale = max(1.0, want.abs().max().item())
        tol = 1e-10 * scale if dtype == torch.float64 else 2e-5 * scale
        torch.testing.assert_close(got[1][name], want, rtol=0, atol=tol, msg=lambda m, n=name: f"{n}: {m}")