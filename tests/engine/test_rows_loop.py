"""The LSTM's row-major training loop (engine/lstm_tiled.h's rows_forward / rows_backward, run by
fast_kernels.cpp's lstm_forward / lstm_backward): the path a float32 LSTM takes under
set_tiled("auto") when its hidden size is a multiple of the vector width. Outputs, final states
and every gradient against torch.nn in float64, for batch sizes that leave partial blocks of
sequences, padded batches and two threads; each instruction set this CPU has against the
library's row-major loop on the same buffers; when the plan chooses it and when not."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.engine import fast, plan, record_grad_norms
from rnn_parity import lstm_pair64, settable_isas, torch_threads


ISAS = settable_isas()
pytestmark = pytest.mark.skipif(not ISAS, reason="the row-major training loop does not run here (needs the fast "
                                                 "kernels on an x86 CPU with AVX2+FMA)")


@pytest.fixture(autouse=True)
def auto_choice():
    yield
    fast.set_tiled("auto")


def _grads_against_torch64(size, *, threads=1, lengths=None, **kw):
    """rnnlab's float32 LSTM (forward and backward) against torch.nn's in float64 with the same
    weights: the largest |difference| over outputs, final states and the gradients of the inputs,
    initial states and weights; and the loop the plan named."""
    T, B, _, H = size
    ours, theirs, x, h0, c0 = lstm_pair64(size, **kw)
    w_out = torch.randn(T, B, (2 if kw.get("bidirectional") else 1) * H)

    def run(m, dtype):
        ins = [t.detach().to(dtype).requires_grad_(True) for t in (x, h0, c0)]
        seq = ins[0]
        if lengths is not None:
            seq = torch.nn.utils.rnn.pack_padded_sequence(seq, lengths, enforce_sorted=False)
        out, (h, c) = m(seq, (ins[1], ins[2]))
        if lengths is not None:
            out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)[0]
        ((out * w_out.to(dtype)).sum() + (h * h).sum() + c.sum()).backward()
        grads = [t.grad for t in ins] + [p.grad for p in m.parameters()]
        return [out.detach(), h.detach(), c.detach()] + grads

    with torch_threads(threads):
        got = run(ours, torch.float32)
    want = run(theirs, torch.float64)
    return max((a.double() - b).abs().max().item() for a, b in zip(got, want)), ours.plan(B, T, lengths is not None)


SIZES = [(7, 1, 5, 16), (6, 3, 5, 32), (5, 5, 3, 16), (4, 8, 5, 64), (3, 13, 4, 48), (9, 7, 6, 24), (2, 31, 3, 8)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_training_loop_matches_torch_nn(size):
    err, p = _grads_against_torch64(size)
    assert p.loop.startswith("row-major ") and p.loop != "row-major", p.loop
    assert err < 2e-5


@pytest.mark.parametrize("kw", [{"bidirectional": True, "num_layers": 2}, {"bias": False}], ids=["bi2", "nobias"])
def test_stacked_bidirectional_and_without_bias(kw):
    err, p = _grads_against_torch64((5, 6, 7, 32), **kw)
    assert p.loop.startswith("row-major ") and err < 2e-5


def test_packed_sequences_carry_each_state_and_gradient_past_its_end_like_torch_nn():
    err, p = _grads_against_torch64((8, 6, 5, 32), lengths=[8, 3, 5, 1, 8, 6])
    assert p.loop.startswith("row-major ") and err < 2e-5


def test_two_threads_split_the_units_with_the_same_results():
    one, _ = _grads_against_torch64((6, 5, 4, 64), threads=1)
    two, _ = _grads_against_torch64((6, 5, 4, 64), threads=2)
    assert one < 2e-5 and two < 2e-5


def _buffers(T, B, H, masked, seed=0):
    g = torch.Generator().manual_seed(seed)
    xw = torch.randn(T, B, 4 * H, generator=g)
    h0, c0 = torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
    w = torch.randn(4 * H, H, generator=g) * 0.2
    mask = None
    if masked:
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        mask = (torch.arange(T)[:, None] < lengths[None, :]).contiguous()
    d_out = torch.randn(T, B, H, generator=g) * (1 if mask is None else mask[..., None])
    return xw, h0, c0, w, mask, d_out, torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("masked", [False, True], ids=["whole", "masked"])
@pytest.mark.parametrize("shape", [(7, 3, 64), (5, 8, 48), (9, 13, 32), (4, 1, 128), (3, 20, 80)],
                         ids=lambda s: "T{}B{}H{}".format(*s))
def test_each_instruction_set_keeps_the_library_loops_buffers(isa, masked, shape):
    """lstm_rows_forward / lstm_rows_backward (the loop whatever the rule, with set_tiled's
    instruction set) against the library's row-major loop (set_tiled("off")) on the same inputs:
    every saved buffer and gradient, so either backward can follow either forward."""
    T, B, H = shape
    if isa == "avx512" and H % 16:
        pytest.skip("AVX-512's vectors hold 16 units; this size takes AVX2 (covered by the avx2 case)")
    K = fast._KERNELS.module
    xw, h0, c0, w, mask, d_out, dh, dc = _buffers(T, B, H, masked)
    fast.set_tiled("off")
    want = [t.clone() for t in K.lstm_forward(xw.clone(), h0, c0, w, mask)]
    hs, cs, gates, tcs = want
    want_back = [t.clone() for t in K.lstm_backward(d_out, dh, dc, gates, cs, tcs, w, mask, None, None)]
    fast.set_tiled(isa)
    got = [t.clone() for t in K.lstm_rows_forward(xw.clone(), h0, c0, w, mask)]
    got_back = [t.clone() for t in K.lstm_rows_backward(d_out, dh, dc, gates, cs, tcs, w, mask)]
    assert max((a - b).abs().max().item() for a, b in zip(got, want)) < 5e-6
    assert max((a - b).abs().max().item() for a, b in zip(got_back, want_back)) < 5e-6


@pytest.mark.parametrize("choice", ["auto", "off"], ids=["row-major SIMD", "library"])
@pytest.mark.parametrize("masked", [False, True], ids=["whole", "masked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_bias_given_apart_is_added_as_the_projection_is_read(choice, masked, dtype):
    """lstm_forward(xw, ..., bias) gives what lstm_forward(xw + bias, ...) gives, in the row-major
    SIMD loop (float32, where its rule holds) and the library's loop (float64, or set_tiled("off"))."""
    K = fast._KERNELS.module
    xw, h0, c0, w, mask, *_ = _buffers(6, 5, 32, masked)
    xw, h0, c0, w = (t.to(dtype) for t in (xw, h0, c0, w))
    bias = torch.randn(4 * 32, dtype=dtype)
    fast.set_tiled(choice)
    try:
        want = [t.clone() for t in K.lstm_forward(xw + bias, h0, c0, w, mask)]
        got = [t.clone() for t in K.lstm_forward(xw.clone(), h0, c0, w, mask, bias)]
    finally:
        fast.set_tiled("auto")
    assert max((a - b).abs().max().item() for a, b in zip(got, want)) < 1e-6


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("choice", ["auto", "off"], ids=["row-major SIMD", "library"])
@pytest.mark.parametrize("masked", [False, True], ids=["whole", "masked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_grus_and_rnns_bias_given_apart_is_added_as_the_projection_is_read(cell, choice, masked, dtype):
    """gru_forward(xw, ..., b_ih) and rnn_forward(xw, ..., bias) give what the same calls give with
    the bias folded into xw, in the row-major SIMD loop (float32 under "auto", where its rule holds
    for these sizes) and the library's loop (float64, or set_tiled("off"))."""
    K = fast._KERNELS.module
    T, B, H = 6, 5, 32
    g = torch.Generator().manual_seed(3)
    G = 3 * H if cell == "gru" else H
    xw, h0 = torch.randn(T, B, G, generator=g, dtype=dtype), torch.randn(B, H, generator=g, dtype=dtype)
    w, bias = torch.randn(G, H, generator=g, dtype=dtype) * 0.2, torch.randn(G, generator=g, dtype=dtype)
    mask = _buffers(T, B, H, masked)[4]
    fast.set_tiled(choice)
    try:
        if cell == "gru":
            b_hh = torch.randn(G, generator=g, dtype=dtype)
            want = [t.clone() for t in K.gru_forward(xw + bias, h0, w, b_hh, mask)]
            got = [t.clone() for t in K.gru_forward(xw.clone(), h0, w, b_hh, mask, bias)]
        else:
            want = [K.rnn_forward(xw + bias, h0, w, cell == "rnn_relu", mask).clone()]
            got = [K.rnn_forward(xw.clone(), h0, w, cell == "rnn_relu", mask, bias).clone()]
    finally:
        fast.set_tiled("auto")
    assert max((a - b).abs().max().item() for a, b in zip(got, want)) < 1e-6


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("masked", [False, True], ids=["whole", "masked"])
@pytest.mark.parametrize("shape", [(7, 3, 64), (5, 8, 48), (9, 13, 32), (3, 20, 80)],
                         ids=lambda s: "T{}B{}H{}".format(*s))
def test_the_grus_simd_forward_keeps_the_library_loops_buffers(isa, masked, shape):
    """gru_rows_forward (the GRU's forward with the inference loop's tiles, whatever the rule)
    against the library's row-major loop (set_tiled("off")): hs, the gates r z n and W_hn h + b_hn,
    which the library's backward reads."""
    T, B, H = shape
    if isa == "avx512" and H % 16:
        pytest.skip("AVX-512's vectors hold 16 units; this size takes AVX2 (covered by the avx2 case)")
    K = fast._KERNELS.module
    g = torch.Generator().manual_seed(1)
    xw, h0 = torch.randn(T, B, 3 * H, generator=g), torch.randn(B, H, generator=g)
    w, b_hh = torch.randn(3 * H, H, generator=g) * 0.2, torch.randn(3 * H, generator=g)
    mask = _buffers(T, B, H, masked)[4]
    fast.set_tiled("off")
    try:
        want = [t.clone() for t in K.gru_forward(xw.clone(), h0, w, b_hh, mask)]
        fast.set_tiled(isa)
        got = [t.clone() for t in K.gru_rows_forward(xw.clone(), h0, w, b_hh, mask)]
    finally:
        fast.set_tiled("auto")
    assert max((a - b).abs().max().item() for a, b in zip(got, want)) < 5e-6


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("masked", [False, True], ids=["whole", "masked"])
@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
def test_the_rnns_simd_forward_keeps_the_library_loops_states(isa, masked, relu):
    """rnn_rows_forward against the library's row-major loop: the states hs (carried past each
    sequence's end under a mask), which the library's backward reads."""
    T, B, H = 9, 13, 32
    K = fast._KERNELS.module
    g = torch.Generator().manual_seed(2)
    xw, h0, w = torch.randn(T, B, H, generator=g), torch.randn(B, H, generator=g), torch.randn(H, H, generator=g) * 0.2
    mask = _buffers(T, B, H, masked)[4]
    fast.set_tiled("off")
    try:
        want = K.rnn_forward(xw.clone(), h0, w, relu, mask).clone()
        fast.set_tiled(isa)
        got = K.rnn_rows_forward(xw.clone(), h0, w, relu, mask).clone()
    finally:
        fast.set_tiled("auto")
    assert (got - want).abs().max().item() < 5e-6


def test_a_gradient_recorder_keeps_its_norms_on_the_library_backward():
    """The loop keeps no per-step gradient norms: with a recorder on, backward takes the library's
    loop on the same buffers, and the norms match the reference engine's."""
    torch.manual_seed(0)
    fast_m = rnnlab.LSTM(4, 32, engine="fast")
    ref_m = rnnlab.LSTM(4, 32, engine="reference")
    ref_m.load_state_dict(fast_m.state_dict())
    x = torch.randn(6, 5, 4)
    assert fast_m.plan(5, 6).loop.startswith("row-major ")
    norms = []
    for m in (fast_m, ref_m):
        with record_grad_norms() as rec:
            m(x)[0].sum().backward()
        norms.append(rec)
    (a,), (b,) = norms[0].records, norms[1].records
    assert torch.allclose(a.dh, b.dh, atol=1e-5) and torch.allclose(a.dc, b.dc, atol=1e-5)


def test_plan_names_the_loop_by_its_rule():
    wide = "avx512" if "avx512" in ISAS else "avx2"
    assert plan("lstm", 32, 256, steps=35).loop == f"row-major {wide}"
    assert plan("lstm", 1, 64, steps=1).loop == f"row-major {wide}"
    assert plan("lstm", 256, 1024, steps=20).loop == f"row-major {wide}"
    assert plan("lstm", 5, 24, steps=5).loop == "row-major avx2"                  # 24 units: 8-wide vectors
    assert plan("lstm", 5, 64, steps=5, masked=True).loop == f"row-major {wide}"  # padded batches too
    assert plan("lstm", 1, 1024, steps=100).loop == plan("lstm", 1, 1024, steps=100, masked=True).loop
    assert not plan("lstm", 1, 1024, steps=127).loop.startswith("row-major ")     # packing W_hh would not pay
    assert not plan("lstm", 32, 20, steps=5).loop.startswith("row-major ")        # 20 units fill no vector
    assert not plan("lstm", 32, 64, steps=5, dtype=torch.float64).loop.startswith("row-major ")
    assert plan("gru", 32, 64, steps=5).loop == f"row-major {wide}"                 # the GRU's forward steps
    assert "GRU's own" in plan("gru", 32, 64, steps=5).reason
    assert plan("rnn_tanh", 32, 64, steps=5).loop == f"row-major {wide}"            # and the RNN's
    assert "vanilla RNN's own" in plan("rnn_relu", 32, 64, steps=5).reason
    # without a gradient to come: the inference loop, or where its cache rule fails the tiled forward
    assert plan("lstm", 32, 256, steps=5, inference=True).loop == f"inference {wide}"
    assert plan("lstm", 32, 1024, steps=50, inference=True).loop == f"tiled {wide}"
    assert plan("lstm", 32, 512, steps=50).loop == f"row-major {wide}"
    p = plan("lstm", 32, 256, steps=5)
    assert "vectors over units" in p.reason
    fast.set_tiled("off")
    assert plan("lstm", 32, 256, steps=5).loop == "row-major"
    fast.set_tiled(ISAS[-1])                                     # a forced set: the tiled loop, as documented
    assert plan("lstm", 32, 256, steps=5).loop == f"tiled {ISAS[-1]}"


def test_nan_in_the_weights_reaches_the_output_and_the_gradients():
    m = rnnlab.LSTM(3, 16)
    with torch.no_grad():
        m.weight_hh_l0[5, 2] = float("nan")
    x = torch.randn(4, 2, 3, requires_grad=True)
    assert m.plan(2, 4).loop.startswith("row-major ")
    out, _ = m(x)
    out.sum().backward()
    assert out[1:].isnan().any() and x.grad.isnan().any() and m.weight_ih_l0.grad.isnan().any()


def test_the_loop_checks_its_shapes():
    K = fast._KERNELS.module
    xw, h0, c0, w, mask, d_out, dh, dc = _buffers(4, 3, 16, True)
    with pytest.raises(RuntimeError, match="w_hh"):
        K.lstm_rows_forward(xw.clone(), h0, c0, w[:, :8], None)
    with pytest.raises(RuntimeError, match="mask"):
        K.lstm_rows_forward(xw.clone(), h0, c0, w, mask[:, :2])
    hs, cs, gates, tcs = K.lstm_rows_forward(xw.clone(), h0, c0, w, mask)
    with pytest.raises(RuntimeError, match="d_out"):
        K.lstm_rows_backward(d_out[:3], dh, dc, gates, cs, tcs, w, mask)
