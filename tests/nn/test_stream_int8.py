"""int8 streaming (``Stream(..., int8=True)``) and ``rnnlab export --onnx --int8``.

References: torch's own per-channel quantiser for the weight scales; a float64 torch step that
quantises weights and activations the documented way, run from the Stream's own state each step
(so only float rounding separates them); and the float step, from which the int8 step may differ
by at most what the rounding of weights and activations can cause (the bound is derived below).
"""

from __future__ import annotations

import copy

import pytest
import torch

import rnnlab
from rnnlab.engine import fast
from rnnlab.errors import ConfigError
from rnnlab.nn.stream import Stream, quantize_rows

needs_kernels = pytest.mark.skipif(not fast.available(), reason="the fast kernels are not built")


def test_per_row_scales_match_torch_per_channel_quantiser() -> None:
    w = torch.randn(24, 37, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.01, 3, 24)[:, None]
    q, scale = quantize_rows(w)
    obs = torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, quant_min=-127, quant_max=127,
                                                         qscheme=torch.per_channel_symmetric)
    obs(w)
    want_scale, zero_point = obs.calculate_qparams()
    torch.testing.assert_close(scale, want_scale.float(), rtol=1e-6, atol=0)
    fake = torch.fake_quantize_per_channel_affine(w, want_scale.float(), zero_point.int(), 0, -127, 127)
    assert torch.equal(q.float() * scale[:, None], fake)      # the same int8 values, times the same scales
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert (q.float() * scale[:, None] - w).abs().le(scale[:, None] / 2 + 1e-7).all()


def test_an_all_zero_row_gets_scale_zero() -> None:
    w = torch.randn(3, 5)
    w[1] = 0
    q, scale = quantize_rows(w)
    assert scale[1] == 0 and not q[1].any()


def _quantize_vector(v: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The step's activation quantiser: q = round(v · 127 / max|v|), scale max|v| / 127 (float32)."""
    m = v.abs().max()
    if m == 0:
        return torch.zeros_like(v), 0.0
    return torch.round((v * (127 / m)).clamp(-127, 127)), float(m / 127)


def _int8_step_reference(layer, mode, x, h, c, below=None):
    """One int8 step of ``mode`` in float64, from state h (L, H) (and c, LSTM); returns the new
    (h, c) (c None but for the LSTM). Gate equations as torch.nn documents them. ``below``: the
    inputs of layers 1.. (the step's own new h of the layer below, float32), so that an input
    within float rounding of an int8 rounding tie is quantised as the step quantised it."""
    h_new, c_new = [], []
    z = x
    for k in range(layer.num_layers):
        if k and below is not None:
            z = below[k - 1]
        qx, sx = _quantize_vector(z.float())
        qh, sh = _quantize_vector(h[k].float())
        qi, si = quantize_rows(getattr(layer, f"weight_ih_l{k}"))
        qr, sr = quantize_rows(getattr(layer, f"weight_hh_l{k}"))
        ax = getattr(layer, f"bias_ih_l{k}").detach().double() + sx * si.double() * (qi.double() @ qx.double())
        ah = getattr(layer, f"bias_hh_l{k}").detach().double() + sh * sr.double() * (qr.double() @ qh.double())
        if mode == "lstm":
            i, f, g, o = (ax + ah).chunk(4)
            cn = torch.sigmoid(f) * c[k].double() + torch.sigmoid(i) * torch.tanh(g)
            hn = torch.sigmoid(o) * torch.tanh(cn)
            c_new.append(cn)
        elif mode == "gru":
            (xr, xz, xn), (hr, hz, hn_) = ax.chunk(3), ah.chunk(3)
            r, u = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            hn = (1 - u) * torch.tanh(xn + r * hn_) + u * h[k].double()
        else:
            hn = torch.relu(ax + ah) if mode == "rnn_relu" else torch.tanh(ax + ah)
        h_new.append(hn)
        z = hn
    return torch.stack(h_new), torch.stack(c_new) if c_new else None


def _layer(mode, input_size, hidden, layers):
    if mode == "lstm":
        return rnnlab.LSTM(input_size, hidden, num_layers=layers)
    if mode == "gru":
        return rnnlab.GRU(input_size, hidden, num_layers=layers)
    return rnnlab.RNN(input_size, hidden, num_layers=layers, nonlinearity=mode[4:])


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@needs_kernels
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("input_size,hidden", [(5, 70), (1, 70), (3, 130)])
def test_int8_step_equals_the_quantised_reference(mode, input_size, hidden, two_threads) -> None:
    """Input 5 and H = 70 are not multiples of the kernel's 4-input quads and 64-column blocks
    (G·H = 280, 210, 70 columns); input 1 is a weight matrix of one column (a scalar series);
    H = 130 on two threads splits the units into two chunks."""
    torch.manual_seed(0)
    layer = _layer(mode, input_size, hidden, 2).eval()
    stream = Stream(layer, int8=True)
    assert stream.backend == "kernels int8"
    assert stream._cpp.chunks() == (2 if hidden >= 128 else 1)
    for x in torch.randn(12, input_size) * 2:
        state = stream.state
        h, c = state if mode == "lstm" else (state, None)
        out = stream.step(x)
        got = stream.state
        got_h = got[0] if mode == "lstm" else got
        want_h, want_c = _int8_step_reference(layer, mode, x, h, c, below=got_h)
        # float32 accumulation of the rescaled sums and the step's sigmoid (2 ulp): ~1e-6
        torch.testing.assert_close(got_h.double(), want_h, atol=2e-6, rtol=0)
        if mode == "lstm":
            torch.testing.assert_close(got[1].double(), want_c, atol=2e-6, rtol=0)
        assert torch.equal(out, got_h[-1])


@needs_kernels
@pytest.mark.parametrize("mode", ["gru", "rnn_tanh"])
def test_int8_step_stays_near_the_float_step(mode) -> None:
    """Over 50 steps of a 2-layer stack the int8 outputs follow the float ones (the rounding of
    weights and activations moves them by a few thousandths, it does not accumulate into drift)."""
    torch.manual_seed(3)
    layer = _layer(mode, 16, 128, 2).eval()
    xs = torch.randn(50, 16)
    diff = (Stream(layer, int8=True).run(xs) - Stream(layer).run(xs)).abs()
    assert 0 < diff.max() < 0.05 and diff.mean() < 0.005, (float(diff.max()), float(diff.mean()))


@needs_kernels
def test_int8_step_is_within_the_rounding_bound_of_the_float_step() -> None:
    """From the same state, |h_int8 − h_float| ≤ (1.5 + |c|/4)·Δa, where Δa bounds the change of
    every pre-activation by the rounding: weights by s_w/2 per entry, inputs by s_z/2, so per row
    Δa ≤ Σ_k (|w_k| + s_w/2)·s_z/2 + (s_w/2)·|z_k| over both inputs x and h. (σ' ≤ 1/4, tanh' ≤ 1:
    c' = σ(a_f)c + σ(a_i)tanh(a_g) moves ≤ Δa(|c|/4 + 5/4), h = σ(a_o)tanh(c') ≤ Δa/4 + that.)"""
    torch.manual_seed(1)
    H, I = 64, 16
    layer = rnnlab.LSTM(I, H).eval()
    h0, c0 = torch.randn(1, H).tanh(), torch.randn(1, H)
    x = torch.randn(I)
    bound_a = torch.zeros(4 * H, dtype=torch.float64)
    for w, z in ((layer.weight_ih_l0, x), (layer.weight_hh_l0, h0[0])):
        w, z = w.detach().double(), z.double()
        s_w = w.abs().amax(1) / 127
        s_z = z.abs().max() / 127
        bound_a += (w.abs() + s_w[:, None] / 2).sum(1) * s_z / 2 + s_w / 2 * z.abs().sum()
    da = bound_a.view(4, H).amax(0)                                  # per unit, over its 4 gates
    bound_h = (1.5 + c0[0].double().abs() / 4) * da
    results = []
    for int8 in (False, True):
        s = Stream(layer, int8=int8)
        s.reset((h0, c0))
        results.append(s.step(x).double())
    diff = (results[1] - results[0]).abs()
    assert diff.max() > 0                                            # the int8 step ran
    assert (diff <= bound_h + 1e-6).all(), float((diff - bound_h).max())
    assert bound_h.max() < 0.2               # a worst case (every rounding aligned), yet not vacuous


@needs_kernels
def test_int8_stream_copies_and_reset() -> None:
    torch.manual_seed(2)
    layer = rnnlab.LSTM(4, 8).eval()
    xs = torch.randn(6, 4)
    s = Stream(layer, int8=True)
    first = s.run(xs)
    twin = copy.deepcopy(s)
    assert twin.backend == "kernels int8"
    s.reset()
    twin.reset()
    torch.testing.assert_close(s.run(xs), first, atol=0, rtol=0)
    torch.testing.assert_close(twin.run(xs), first, atol=0, rtol=0)


@needs_kernels
@pytest.mark.parametrize("make, says", [
    (lambda: rnnlab.LSTM(4, 8, proj_size=3), "without projection only"),
    (lambda: rnnlab.LSTM(4, 8).double(), "float32 module"),
])
def test_int8_refuses_what_the_int8_step_does_not_run(make, says) -> None:
    with pytest.raises(ConfigError, match=f"int8=True: expected .*{says}"):
        Stream(make().eval(), int8=True)


def test_int8_refuses_the_reference_engine() -> None:
    with pytest.raises(ConfigError, match="int8=True: expected a layer the C\\+\\+ int8 step runs"):
        Stream(rnnlab.LSTM(4, 8).eval(), use_kernels=False, int8=True)
    # a layer's own engine= counts as set_engine's choice does (it was passed over: int8 ran the kernels)
    with pytest.raises(ConfigError, match="int8=True: expected a layer the C\\+\\+ int8 step runs"):
        Stream(rnnlab.LSTM(4, 8, engine="reference").eval(), int8=True)
    assert Stream(rnnlab.LSTM(4, 8, engine="reference").eval()).backend in ("numba", "numpy")
    assert Stream(rnnlab.LSTM(4, 8, engine="reference").eval(), use_kernels=True).backend.startswith("kernels") \
        or not fast.available()


def test_export_int8_runs_in_onnxruntime_close_to_the_float_model(tmp_path) -> None:
    """`rnnlab export RUN --onnx PATH --int8` on a small language-model run: ONNX Runtime's int8
    logits stay near the float graph's, the file holds int8 LSTM weights, and it is smaller."""
    pytest.importorskip("onnxruntime.quantization", reason="onnxruntime not installed: pip install rnnlab[onnx]")
    onnx = pytest.importorskip("onnx", reason="onnx not installed: pip install rnnlab[onnx]")
    from rnnlab.cli.main import main
    from rnnlab.export.onnx import onnx_session, run_onnx
    from rnnlab.tasks.lm import LMTask
    from rnnlab.train import TrainConfig
    from rnnlab.train.loop import fit

    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    run = tmp_path / "run"
    fit(LMTask({"text": str(text), "level": "char", "hidden_size": 32, "embed": 16, "bptt": 8, "batch_size": 4}),
        TrainConfig(max_steps=3, eval_every=3, checkpoint_every=3, threads=1, quiet=True, report=False), run)
    f32, i8 = tmp_path / "f.onnx", tmp_path / "q.onnx"
    assert main(["export", str(run), "--onnx", str(f32)]) in (0, None)
    assert main(["export", str(run), "--onnx", str(i8), "--int8"]) in (0, None)
    ops = {n.op_type for n in onnx.load(str(i8)).graph.node}
    assert "DynamicQuantizeLSTM" in ops, ops
    assert i8.stat().st_size < 0.5 * f32.stat().st_size
    x = torch.randint(0, 10, (11, 3))
    want = run_onnx(onnx_session(f32), x)[0]
    got = run_onnx(onnx_session(i8), x)[0]
    p_want = torch.softmax(torch.from_numpy(want), -1)
    p_got = torch.softmax(torch.from_numpy(got), -1)
    # int8 rounding moves the probabilities a little, never by much at this size
    assert 0 < (p_got - p_want).abs().max() < 0.05
