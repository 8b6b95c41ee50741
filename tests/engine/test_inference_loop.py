"""The LSTM's, GRU's and vanilla RNN's inference loops (engine/lstm_tiled.h's lstm_infer, gru_infer
and rnn_infer, their tiles in lstm_tiled_loops.h, gru_loops.h and rnn_loops.h): the path a float32
layer takes when no gradient is to come. Outputs and final states against torch.nn in float64, for batch sizes
that leave partial blocks of sequences and hidden sizes of either vector width, with each
instruction set this CPU has and on two threads; when it is chosen (plan) and when not (a
gradient to come, a gate recorder, a size it does not cover), padded batches, and the operator
that torch.compile calls for it."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import rnnlab
from rnnlab.engine import fast, plan, record_gates
from rnn_parity import lstm_pair64, settable_isas, torch_threads
from tests.conftest import run_fresh_python


ISAS = settable_isas()
pytestmark = pytest.mark.skipif(not ISAS, reason="the inference loop does not run here (needs the fast kernels "
                                                 "on an x86 CPU with AVX2+FMA)")


@pytest.fixture
def calls(monkeypatch):
    """Counts the inference loop's calls; restores the default loop choice after."""
    module = fast._KERNELS.module
    n = {"infer": 0}
    real = module.lstm_infer

    def spy(*args):
        n["infer"] += 1
        return real(*args)

    monkeypatch.setattr(module, "lstm_infer", spy)
    yield n
    fast.set_tiled("auto")


def _against_torch64(size, *, isa=None, threads=1, **kw):
    """rnnlab's float32 LSTM under no_grad against torch.nn's in float64 with the same weights:
    the largest |difference| over outputs and final states."""
    ours, theirs, x, h0, c0 = lstm_pair64(size, **kw)
    if isa:
        fast.set_tiled(isa)
    with torch_threads(threads), torch.no_grad():
        out, (h, c) = ours(x, (h0, c0))
    with torch.no_grad():
        r_out, (r_h, r_c) = theirs(x.double(), (h0.double(), c0.double()))
    return max((a.double() - b).abs().max().item() for a, b in ((out, r_out), (h, r_h), (c, r_c)))


SIZES = [(7, 1, 5, 16), (6, 3, 5, 32), (5, 5, 3, 16), (4, 8, 5, 64), (3, 13, 4, 48), (9, 7, 6, 24), (2, 31, 3, 8)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_inference_loop_matches_torch_nn(isa, size, calls):
    H = size[3]
    if isa == "avx512" and H % 16:
        pytest.skip("AVX-512's vectors hold 16 units; this size takes AVX2 (covered by the avx2 case)")
    assert _against_torch64(size, isa=isa) < 2e-6
    assert calls["infer"] == 1


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kw", [{"bidirectional": True, "num_layers": 2}, {"bias": False}], ids=["bi2", "nobias"])
def test_inference_loop_stacked_bidirectional_and_without_bias(isa, kw, calls):
    assert _against_torch64((6, 9, 5, 32), isa=isa, **kw) < 2e-6
    assert calls["infer"] == (4 if kw.get("bidirectional") else 1)        # each layer and direction


@pytest.mark.parametrize("isa", ISAS)
def test_two_threads_split_the_units_with_the_same_numbers(isa, calls):
    one = _against_torch64((5, 11, 4, 64), isa=isa, threads=1)
    two = _against_torch64((5, 11, 4, 64), isa=isa, threads=2)
    assert one < 2e-6 and two < 2e-6
    assert calls["infer"] == 2


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kw", [{}, {"bidirectional": True, "num_layers": 2}], ids=["one", "bi2"])
def test_packed_sequences_carry_each_state_past_its_end_like_torch_nn(isa, kw, calls):
    """Unequal lengths (a mask): outputs zero past each sequence's end, final states from its last
    valid step, against torch.nn in float64; B = 7 leaves a partial block of sequences."""
    torch.manual_seed(0)
    ours = rnnlab.LSTM(3, 16, **kw)
    theirs = torch.nn.LSTM(3, 16, **kw).double()
    theirs.load_state_dict(ours.state_dict())
    x, lengths = torch.randn(9, 7, 3), [9, 2, 5, 1, 9, 4, 7]
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    packed64 = torch.nn.utils.rnn.pack_padded_sequence(x.double(), lengths, enforce_sorted=False)
    fast.set_tiled(isa)
    with torch.no_grad():
        out, (h, c) = ours(packed)
        r_out, (r_h, r_c) = theirs(packed64)
    assert calls["infer"] == (4 if kw else 1)
    assert (out.data.double() - r_out.data).abs().max() < 2e-6
    assert (h.double() - r_h).abs().max() < 2e-6 and (c.double() - r_c).abs().max() < 2e-6


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size", [(5, 7, 3, 32), (4, 9, 32, 32), (6, 5, 40, 16), (3, 13, 300, 256)],
                         ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "gemm"])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_input_projection_in_the_tiles_or_by_a_gemm_matches_torch_nn(isa, size, fused, threads):
    """W_ih x_t formed in the tiles beside W_hh h_{t-1}, or by one GEMM over the sequence first,
    whichever the rule (fuse_input) would take: each against torch.nn in float64."""
    K = fast._KERNELS.module
    _, theirs, x, h0, c0 = lstm_pair64(size)
    if isa == "avx512" and size[3] % 16:
        pytest.skip("AVX-512's vectors hold 16 units")
    w = {k: v.float() for k, v in theirs.state_dict().items()}
    fast.set_tiled(isa)
    try:
        with torch_threads(threads):
            out, h, c = K.lstm_infer(x, h0[0], c0[0], w["weight_ih_l0"], w["weight_hh_l0"],
                                     w["bias_ih_l0"] + w["bias_hh_l0"], None, fused=fused)
    finally:
        fast.set_tiled("auto")
    with torch.no_grad():
        r_out, (r_h, r_c) = theirs(x.double(), (h0.double(), c0.double()))
    err = max((a.double() - b).abs().max().item() for a, b in ((out, r_out), (h, r_h[0]), (c, r_c[0])))
    assert err < 2e-6


def test_the_input_projection_rule_and_the_plan_that_names_it():
    K = fast._KERNELS.module
    assert K.infer_fuses_input(32, 28, 256) and K.infer_fuses_input(64, 128, 128) and K.infer_fuses_input(16, 1, 8)
    assert K.infer_fuses_input(16, 256, 256) and K.infer_fuses_input(8, 32, 64)
    assert not K.infer_fuses_input(64, 129, 128)          # more inputs than units: the GEMM
    assert not K.infer_fuses_input(8, 256, 256)           # 2 sequence blocks, 2 MiB of packed weights
    assert not K.infer_fuses_input(7, 16, 64)             # one block: the GEMM reuses each weight better
    p = rnnlab.LSTM(28, 256).plan(32, 35, inference=True)
    assert p.loop.startswith("inference") and p.gemm == "none" and "W_ih x_t formed in its tiles" in p.reason
    p = rnnlab.LSTM(512, 256).plan(32, 35, inference=True)
    assert p.loop.startswith("inference") and p.gemm in ("onednn", "blas") and "input GEMM" in p.reason


CELLS = {"gru": (rnnlab.GRU, torch.nn.GRU, {}), "rnn_tanh": (rnnlab.RNN, torch.nn.RNN, {}),
         "rnn_relu": (rnnlab.RNN, torch.nn.RNN, {"nonlinearity": "relu"})}


@pytest.fixture
def cell_calls(monkeypatch):
    """Counts the GRU's and the vanilla RNN's inference loop calls; restores the loop choice after."""
    module = fast._KERNELS.module
    n = {"infer": 0}
    for name in ("gru_infer", "rnn_infer"):
        real = getattr(module, name)

        def spy(*args, _real=real, **kw):
            n["infer"] += 1
            return _real(*args, **kw)

        monkeypatch.setattr(module, name, spy)
    yield n
    fast.set_tiled("auto")


def _cell_against_torch64(cell, size, *, isa, lengths=None, threads=1, **kw):
    """rnnlab's float32 GRU or RNN under no_grad against torch.nn's in float64 with the same weights
    (a PackedSequence where ``lengths`` are given): the largest |difference| over outputs and h_T."""
    T, B, I, H = size
    ours_cls, theirs_cls, cell_kw = CELLS[cell]
    torch.manual_seed(0)
    ours = ours_cls(I, H, **cell_kw, **kw)
    theirs = theirs_cls(I, H, **cell_kw, **kw).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I)
    h0 = torch.randn(kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1), B, H)
    xs, xs64 = x, x.double()
    if lengths is not None:
        xs = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        xs64 = torch.nn.utils.rnn.pack_padded_sequence(x.double(), lengths, enforce_sorted=False)
    fast.set_tiled(isa)
    with torch_threads(threads), torch.no_grad():
        out, h = ours(xs, h0)
        r_out, r_h = theirs(xs64, h0.double())
    if lengths is not None:
        out, r_out = out.data, r_out.data
    return max((out.double() - r_out).abs().max().item(), (h.double() - r_h).abs().max().item())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size", [(7, 1, 5, 16), (6, 3, 5, 32), (4, 8, 5, 64), (3, 13, 4, 48), (5, 17, 40, 32),
                                  (9, 7, 6, 24)], ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_gru_and_rnn_inference_loops_match_torch_nn(cell, isa, size, cell_calls):
    if isa == "avx512" and size[3] % 16:
        pytest.skip("AVX-512's vectors hold 16 units; this size takes AVX2 (covered by the avx2 case)")
    assert _cell_against_torch64(cell, size, isa=isa) < 2e-6
    assert cell_calls["infer"] == 1


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kw", [{"bidirectional": True, "num_layers": 2}, {"bias": False}], ids=["bi2", "nobias"])
def test_gru_and_rnn_inference_loops_stacked_bidirectional_and_without_bias(cell, isa, kw, cell_calls):
    assert _cell_against_torch64(cell, (6, 9, 5, 32), isa=isa, **kw) < 2e-6
    assert cell_calls["infer"] == (4 if kw.get("bidirectional") else 1)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
def test_gru_and_rnn_packed_sequences_carry_each_state_past_its_end_like_torch_nn(cell, isa, threads, cell_calls):
    err = _cell_against_torch64(cell, (9, 7, 3, 16), isa=isa, lengths=[9, 2, 5, 1, 9, 4, 7], threads=threads)
    assert err < 2e-6 and cell_calls["infer"] == 1


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "gemm"])
def test_gru_and_rnn_input_projection_in_the_tiles_or_by_a_gemm_matches_torch_nn(cell, isa, fused):
    K = fast._KERNELS.module
    T, B, I, H = 5, 11, 24, 32
    _, theirs_cls, cell_kw = CELLS[cell]
    torch.manual_seed(0)
    theirs = theirs_cls(I, H, **cell_kw).double()
    w = {k: v.float() for k, v in theirs.state_dict().items()}
    args = (w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"])
    x, h0 = torch.randn(T, B, I), torch.randn(B, H)
    fast.set_tiled(isa)
    try:
        if cell == "gru":
            out, h = K.gru_infer(x, h0, *args, None, fused=fused)
        else:
            out, h = K.rnn_infer(x, h0, *args, cell == "rnn_relu", None, fused=fused)
    finally:
        fast.set_tiled("auto")
    with torch.no_grad():
        r_out, r_h = theirs(x.double(), h0[None].double())
    assert max((out.double() - r_out).abs().max().item(), (h.double() - r_h[0]).abs().max().item()) < 2e-6


def _infer(K, cell, x, h0, c0, w, fused):
    args = (w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"])
    if cell == "lstm":
        return K.lstm_infer(x, h0, c0, args[0], args[1], args[2] + args[3], None, fused=fused)
    if cell == "gru":
        return K.gru_infer(x, h0, *args, None, fused=fused)
    return K.rnn_infer(x, h0, *args, cell == "rnn_relu", None, fused=fused)


@pytest.mark.parametrize("cell", ["lstm", *CELLS])
@pytest.mark.parametrize("size", [(7, 16, 24, 32), (5, 3, 8, 16), (6, 9, 40, 16)],
                         ids=["fused", "gemm-few-sequences", "gemm-wide-input"])
def test_batch_first_layers_match_torch_nn_either_way(cell, size):
    """batch_first=True layers under no_grad, at sizes where the rule forms W_ih x_t in the tiles
    and where a GEMM does, two layers deep: outputs and final states against torch.nn in float64."""
    T, B, I, H = size
    ours_cls, theirs_cls, kw = (rnnlab.LSTM, torch.nn.LSTM, {}) if cell == "lstm" else CELLS[cell]
    torch.manual_seed(0)
    ours = ours_cls(I, H, num_layers=2, batch_first=True, **kw)
    theirs = theirs_cls(I, H, num_layers=2, batch_first=True, **kw).double()
    theirs.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    p = ours.plan(B, T, inference=True)                    # (the first layer's)
    assert p.loop.startswith("inference") and (p.gemm == "none") == (B == 16)
    x = torch.randn(B, T, I)
    with torch.no_grad():
        out, state = ours(x)
        r_out, r_state = theirs(x.double())
    pairs = [(out, r_out)] + (list(zip(state, r_state)) if cell == "lstm" else [(state, r_state)])
    assert max((a.double() - b).abs().max().item() for a, b in pairs) < 2e-6


@pytest.mark.parametrize("cell", ["lstm", *CELLS])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "gemm"])
def test_a_batch_first_input_is_read_where_it_lies(cell, fused):
    """A batch-first input reaches the loops as the (T, B, I) transposed view of a (B, T, I) tensor:
    the tiles that form W_ih x_t read its rows where they lie, and the GEMM way multiplies the
    (B·T, I) matrix as it is, its rows then read batch-major; neither copies x (the profiler lists
    no aten::copy_ of its shape), and both give what the contiguous input gives."""
    K = fast._KERNELS.module
    T, B, I, H = 6, 11, 24, 32
    torch.manual_seed(0)
    gates = {"lstm": 4, "gru": 3}.get(cell, 1)
    w = {"weight_ih_l0": torch.randn(gates * H, I) * 0.3, "weight_hh_l0": torch.randn(gates * H, H) * 0.3,
         "bias_ih_l0": torch.randn(gates * H), "bias_hh_l0": torch.randn(gates * H)}
    xb, h0, c0 = torch.randn(B, T, I), torch.randn(B, H), torch.randn(B, H)
    view = xb.transpose(0, 1)
    want = _infer(K, cell, view.contiguous(), h0, c0, w, fused)
    with torch.profiler.profile(record_shapes=True) as prof:
        got = _infer(K, cell, view, h0, c0, w, fused)
    assert max((a - b).abs().max().item() for a, b in zip(got, want)) < 1e-6
    assert not [e for e in prof.events() if e.name == "aten::copy_" and list(e.input_shapes[0]) == [T, B, I]]


@pytest.mark.parametrize("cell", ["lstm", *CELLS])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "gemm"])
@pytest.mark.parametrize("threads", [1, 2])
def test_padded_batches_with_either_input_projection_match_torch_nn(cell, fused, threads):
    """Each loop called directly with a mask (B = 11: two blocks of sequences, the second partial)
    and the input projection in the tiles or by a GEMM, on 1 and 2 threads, against torch.nn's
    packed sequences in float64: outputs at valid steps zero elsewhere, final states."""
    K = fast._KERNELS.module
    T, B, I, H = 8, 11, 12, 32
    lengths = [8, 3, 5, 1, 8, 6, 2, 7, 4, 8, 5]
    _, theirs_cls, cell_kw = CELLS.get(cell, (None, torch.nn.LSTM, {}))
    torch.manual_seed(0)
    theirs = theirs_cls(I, H, **cell_kw).double()
    w = {k: v.float() for k, v in theirs.state_dict().items()}
    wts = (w["weight_ih_l0"], w["weight_hh_l0"])
    x, h0, c0 = torch.randn(T, B, I), torch.randn(B, H), torch.randn(B, H)
    mask = torch.arange(T)[:, None] < torch.tensor(lengths)[None, :]
    with torch_threads(threads):
        if cell == "lstm":
            out, h, c = K.lstm_infer(x, h0, c0, *wts, w["bias_ih_l0"] + w["bias_hh_l0"], mask, fused=fused)
        elif cell == "gru":
            out, h = K.gru_infer(x, h0, *wts, w["bias_ih_l0"], w["bias_hh_l0"], mask, fused=fused)
        else:
            out, h = K.rnn_infer(x, h0, *wts, w["bias_ih_l0"], w["bias_hh_l0"], cell == "rnn_relu", mask, fused=fused)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x.double(), lengths, enforce_sorted=False)
    state = (h0[None].double(), c0[None].double()) if cell == "lstm" else h0[None].double()
    with torch.no_grad():
        r_out, r_state = theirs(packed, state)
    r_out, _ = torch.nn.utils.rnn.pad_packed_sequence(r_out, total_length=T)
    r_h = r_state[0] if cell == "lstm" else r_state
    assert (out.double() - r_out).abs().max().item() < 2e-6
    assert (h.double() - r_h[0]).abs().max().item() < 2e-6
    if cell == "lstm":
        assert (c.double() - r_state[1][0]).abs().max().item() < 2e-6


@pytest.mark.parametrize("cell", CELLS)
def test_gru_and_rnn_training_does_not_take_the_inference_loop(cell, cell_calls):
    ours_cls, _, cell_kw = CELLS[cell]
    m = ours_cls(3, 16, **cell_kw)
    x = torch.randn(4, 6, 3)
    m(x)[0].sum().backward()
    assert cell_calls["infer"] == 0 and m.weight_hh_l0.grad is not None
    with torch.no_grad():
        m(x)
    assert cell_calls["infer"] == 1


def test_a_nan_reaches_the_relu_rnns_output(cell_calls):
    m = rnnlab.RNN(3, 16, nonlinearity="relu")
    with torch.no_grad():
        m.weight_hh_l0[5, 2] = float("nan")
        out, _ = m(torch.randn(4, 2, 3))
    assert cell_calls["infer"] == 1 and torch.isnan(out[1:]).any()


def test_nan_in_the_weights_reaches_the_output(calls):
    m = rnnlab.LSTM(3, 16)
    with torch.no_grad():
        m.weight_hh_l0[5, 2] = float("nan")
        out, _ = m(torch.randn(4, 2, 3))
    assert calls["infer"] == 1 and torch.isnan(out[1:]).any()


def test_a_gradient_to_come_a_gate_recorder_and_float64_take_the_other_loops(calls):
    m = rnnlab.LSTM(3, 16)
    x = torch.randn(4, 6, 3)
    m(x)[0].sum().backward()                                  # training: the loops that save for backward
    with torch.no_grad(), record_gates() as rec:              # gates wanted: the tiled loop keeps them
        m(x)
    assert rec.records
    with torch.no_grad():
        m.double()(x.double())
    assert calls["infer"] == 0
    with torch.no_grad():
        m.float()(x)
    with torch.inference_mode():
        m(x)
    x.requires_grad_(False)
    for p in m.parameters():
        p.requires_grad_(False)
    m(x)                                                      # grad mode on, but nothing requires a gradient
    assert calls["infer"] == 3


def test_plan_names_the_inference_loop_by_its_size_rule():
    K = fast._KERNELS.module
    have = fast.cpu_isa()
    wide = "avx512" if have == "avx512" else "avx2"
    assert plan("lstm", 32, 256, steps=5, inference=True).loop == f"inference {wide}"
    assert plan("lstm", 1, 1024, steps=128, inference=True).loop == f"inference {wide}"
    assert plan("lstm", 8, 512, steps=8, inference=True).loop == f"inference {wide}"
    # 512 units: the inference loop with AVX-512 (a panel's rows stay in L2); W_hh past L2 with AVX2
    assert plan("lstm", 9, 512, steps=50, inference=True).loop == (f"inference {wide}" if wide == "avx512"
                                                                   else f"tiled {wide}")
    assert plan("lstm", 9, 1024, steps=50, inference=True).loop == f"tiled {wide}"
    # each call packs W_hh: from T·B ≥ H² / 8192 sequence-steps on
    assert plan("lstm", 1, 256, steps=7, inference=True).loop == plan("lstm", 1, 256, steps=7).loop
    assert plan("lstm", 1, 256, steps=8, inference=True).loop == f"inference {wide}"
    assert plan("lstm", 8, 1024, steps=15, inference=True).loop == plan("lstm", 8, 1024, steps=15).loop
    assert plan("lstm", 1, 64, steps=1, inference=True).loop == f"inference {wide}"
    assert plan("lstm", 32, 24, steps=5, inference=True).loop == "inference avx2"      # 24 units: 8-wide vectors
    assert plan("lstm", 32, 20, steps=5, inference=True).loop == plan("lstm", 32, 20, steps=5).loop
    assert plan("lstm", 32, 64, steps=5, masked=True, inference=True).loop.startswith("inference")
    for kw in ({"dtype": torch.float64}, {"proj_size": 4}, {"steps": 0}):
        assert not plan("lstm", 32, 64, inference=True, **{"steps": 5, **kw}).loop.startswith("inference")
    assert plan("gru", 32, 64, steps=5, inference=True).loop == f"inference {wide}"
    assert plan("rnn_tanh", 32, 64, steps=5, inference=True).loop == f"inference {wide}"
    assert plan("rnn_relu", 32, 64, steps=5, inference=True).loop == f"inference {wide}"
    assert K.infer_max_hidden() == (512 if wide == "avx512" else 256)
    before = K.tiled_choice()
    try:                                                 # AVX2's vectors on an AVX-512 CPU: 256
        fast.set_tiled("avx2")
        assert K.infer_max_hidden() == 256 and plan("lstm", 9, 512, steps=50, inference=True).loop == "tiled avx2"
    finally:
        fast.set_tiled(before)
    p = plan("lstm", 32, 256, steps=5, inference=True)
    assert "no gradient to come" in p.reason and p.gemm in ("onednn", "blas")
    try:
        fast.set_tiled("off")
        assert plan("lstm", 32, 256, steps=5, inference=True).loop == "row-major"
    finally:
        fast.set_tiled("auto")


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _ops_in(counter) -> set[str]:
    return {str(n.target) for g in counter.graphs for n in g.graph.nodes if "rnnlab" in str(n.target)}


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_inference_runs_the_inference_operator_with_one_graph(fresh_dynamo):
    """Under torch.no_grad a compiled float32 LSTM calls rnnlab::lstm_infer, one graph across
    batches and lengths, with torch.nn's float64 numbers; with a gradient to come, the tiled
    operator as before."""
    torch.manual_seed(0)
    m = rnnlab.LSTM(5, 16, batch_first=True, num_layers=2)
    ref = torch.nn.LSTM(5, 16, batch_first=True, num_layers=2).double()
    ref.load_state_dict(m.state_dict())
    counter = CompileCounterWithBackend("aot_eager")
    cm = torch.compile(m, fullgraph=True, backend=counter, dynamic=True)
    frames = []
    with torch.no_grad():
        for B, T in [(6, 4), (2, 9), (13, 7), (9, 2), (3, 11)]:   # (B = 1 specialises, as for any model)
            x = torch.randn(B, T, 5)
            out, (h, c) = cm(x)
            r_out, (r_h, r_c) = ref(x.double())
            for a, b in ((out, r_out), (h, r_h), (c, r_c)):
                torch.testing.assert_close(a, b.float(), atol=2e-6, rtol=1e-5)
            frames.append(counter.frame_count)
    assert frames == [frames[0]] * 5
    assert _ops_in(counter) == {"rnnlab.lstm_infer"}
    torch.library.opcheck(torch.ops.rnnlab.lstm_infer.default,
                          (torch.randn(3, 2, 5), torch.randn(2, 16), torch.randn(2, 16), *[p.detach() for p in
                           (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)]),
                          test_utils=("test_schema", "test_faketensor"))
    cm(torch.randn(2, 3, 5))[0].sum().backward()              # a gradient to come: the saving operator
    assert "rnnlab.seq_forward" in _ops_in(counter)           # (16 units: the row-major training loop's)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("cell", ["gru", "rnn_relu"])
def test_a_compiled_gru_or_rnn_runs_its_inference_operator_with_one_graph(cell, fresh_dynamo):
    """Under torch.no_grad a compiled float32 GRU or RNN calls its inference operator, one graph
    across batches and lengths, with torch.nn's float64 numbers; with a gradient to come, the
    saving operator."""
    ours_cls, theirs_cls, cell_kw = CELLS[cell]
    op = "gru_infer" if cell == "gru" else "rnn_infer"
    torch.manual_seed(0)
    m = ours_cls(5, 16, batch_first=True, num_layers=2, **cell_kw)
    ref = theirs_cls(5, 16, batch_first=True, num_layers=2, **cell_kw).double()
    ref.load_state_dict(m.state_dict())
    counter = CompileCounterWithBackend("aot_eager")
    cm = torch.compile(m, fullgraph=True, backend=counter, dynamic=True)
    frames = []
    with torch.no_grad():
        for B, T in [(6, 4), (2, 9), (13, 7), (9, 2), (3, 11)]:
            x = torch.randn(B, T, 5)
            out, h = cm(x)
            r_out, r_h = ref(x.double())
            torch.testing.assert_close(out, r_out.float(), atol=2e-6, rtol=1e-5)
            torch.testing.assert_close(h, r_h.float(), atol=2e-6, rtol=1e-5)
            frames.append(counter.frame_count)
    assert frames == [frames[0]] * 5
    assert _ops_in(counter) == {f"rnnlab.{op}"}
    weights = [p.detach() for p in (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)]
    extra = () if cell == "gru" else (True,)
    torch.library.opcheck(getattr(torch.ops.rnnlab, op).default,
                          (torch.randn(3, 2, 5), torch.randn(2, 16), *weights, *extra),
                          test_utils=("test_schema", "test_faketensor"))
    cm(torch.randn(2, 3, 5))[0].sum().backward()
    assert "rnnlab.seq_forward" in _ops_in(counter)
    with pytest.raises(RuntimeError, match="inference only"):
        getattr(torch.ops.rnnlab, op)(torch.randn(2, 1, 5), torch.zeros(1, 16), m.weight_ih_l0, m.weight_hh_l0,
                                      m.bias_ih_l0, m.bias_hh_l0, *extra)


def test_the_inference_operators_autograd_kernel_is_in_cpp(tmp_path):
    """The inference-only operators refuse a gradient, and run under no_grad, in a process that
    loaded the kernels' library alone (an AOTInductor package's): their autograd kernel is C++,
    so no call passes through Python (as torch.library's Python autograd registration would)."""
    code = (
        "import torch\n"
        f"torch.ops.load_library({fast.kernel_library()!r})\n"
        "w_ih, w_hh = torch.randn(64, 3, requires_grad=True), torch.randn(64, 16, requires_grad=True)\n"
        "x, h = torch.randn(2, 1, 3), torch.zeros(1, 16)\n"
        "for call in (lambda: torch.ops.rnnlab.lstm_infer(x, h, h, w_ih, w_hh, None, None),\n"
        "             lambda: torch.ops.rnnlab.lstm_step_pack(w_ih, w_hh, None, None, 1)):\n"
        "    try:\n"
        "        call()\n"
        "        raise SystemExit('no refusal')\n"
        "    except RuntimeError as e:\n"
        "        assert 'rnnlab::' in str(e) and 'is inference only' in str(e), str(e)\n"
        "with torch.no_grad():\n"
        "    out = torch.ops.rnnlab.lstm_infer(x, h, h, w_ih, w_hh, None, None)[0]\n"
        "assert out.shape == (2, 1, 16) and not out.requires_grad\n"
        "for name in ('lstm_infer', 'gru_infer', 'rnn_infer', 'lstm_step_pack', 'lstm_step'):\n"
        "    dump = torch._C._dispatch_dump('rnnlab::' + name)\n"
        "    line = next(l for l in dump.splitlines() if l.startswith('Autograd'))\n"
        "    assert 'fast_kernels.cpp' in line, line\n"
        "print('ok')\n"
    )
    res = run_fresh_python(code, tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_the_operator_refuses_a_gradient():
    m = rnnlab.LSTM(3, 16)
    fast._ops_ready()
    with pytest.raises(RuntimeError, match="inference only"):
        torch.ops.rnnlab.lstm_infer(torch.randn(2, 1, 3), torch.zeros(1, 16), torch.zeros(1, 16),
                                    m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)
    # after rnnlab registered its Python parts, the autograd kernel is still the C++ one
    for name in ("lstm_infer", "gru_infer", "rnn_infer", "lstm_step_pack", "lstm_step"):
        line = next(x for x in torch._C._dispatch_dump(f"rnnlab::{name}").splitlines() if x.startswith("Autograd"))
        assert "fast_kernels.cpp" in line, line


def test_an_empty_batch_gives_empty_outputs():
    m = rnnlab.LSTM(3, 16)
    with torch.no_grad():
        out, (h, c) = m(torch.randn(4, 0, 3))           # (no sequence-steps: the rule keeps the other loops)
        assert out.shape == (4, 0, 16) and h.shape == c.shape == (1, 0, 16)
        out, h, c = fast._KERNELS.module.lstm_infer(torch.randn(4, 0, 3), torch.zeros(0, 16), torch.zeros(0, 16),
                                                    m.weight_ih_l0, m.weight_hh_l0, None, None)
    assert out.shape == (4, 0, 16) and h.shape == c.shape == (0, 16)


def test_the_loop_checks_its_shapes():
    m = rnnlab.LSTM(3, 16)
    with pytest.raises(RuntimeError, match="expected x"):
        fast._KERNELS.module.lstm_infer(torch.randn(4, 2, 3), torch.zeros(3, 16), torch.zeros(2, 16),
                                        m.weight_ih_l0.detach(), m.weight_hh_l0.detach(), None, None)
    for fused in (True, False):   # no input features: refused, rather than read from an empty x
        with pytest.raises(RuntimeError, match="at least 1 input feature"):
            fast._KERNELS.module.lstm_infer(torch.randn(4, 2, 0), torch.zeros(2, 16), torch.zeros(2, 16),
                                            torch.zeros(64, 0), m.weight_hh_l0.detach(), None, None, fused=fused)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_compiled_graph_keeps_running_after_set_tiled_off(fresh_dynamo):
    """The choice is read when traced: a graph holding rnnlab::lstm_infer still runs after the loops
    are switched off for eager calls (as one holding the tiled operator does)."""
    m = rnnlab.LSTM(5, 16)
    cm = torch.compile(m, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 3, 5)
    try:
        with torch.no_grad():
            before = cm(x)[0]
            fast.set_tiled("off")
            after = cm(x)[0]
            eager = m(x)[0]                                    # eager: the row-major loop now
    finally:
        fast.set_tiled("auto")
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(eager, before, atol=2e-6, rtol=1e-5)
