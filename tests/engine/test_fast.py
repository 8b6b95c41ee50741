"""The fast engine (C++ time loops) and the checkpointed engine against the reference:
outputs, final states, every gradient and the gradient/gate records, float64 tight and float32
at the 1e-5 level, with and without variable lengths, in both directions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rnnlab
from rnnlab.engine import checkpointed_scan, get_engine, record_gates, record_grad_norms, scan
from rnnlab.engine import fast as fast_mod
from rnnlab.errors import ConfigError

needs_fast = pytest.mark.skipif(
    not fast_mod.available(), reason=f"fast engine unavailable: {fast_mod.unavailable_reason()}"
)
CLASSES = [(rnnlab.LSTM, {}), (rnnlab.GRU, {}), (rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}),
           (rnnlab.GRU, {"bias": False})]
TOL = {torch.float64: dict(atol=1e-12, rtol=1e-10), torch.float32: dict(atol=1e-5, rtol=1e-5)}


def _run(cls, kw, engine, dtype, packed: bool, bidirectional: bool, size=(9, 4, 5, 7)):
    T, B, I, H = size
    torch.manual_seed(0)
    m = cls(I, H, num_layers=2, bidirectional=bidirectional, engine=engine, **kw).to(dtype)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    lengths = [T, 3, 5, 1] + [T - k % T for k in range(B - 4)]
    inp = torch.nn.utils.rnn.pack_padded_sequence(x, lengths[:B], enforce_sorted=False) if packed else x
    with record_grad_norms() as grads, record_gates() as gates:
        out, h = m(inp)
        out = out.data if packed else out
        hh, cc = (h if isinstance(h, tuple) else (h, None))
        loss = (out ** 2).sum() + (hh * torch.arange(H, dtype=dtype)).sum()
        if cc is not None:
            loss = loss + (cc ** 3).sum()
        loss.backward()
    named = {"output": out.detach(), "h_n": hh.detach(), "x.grad": x.grad}
    named.update({f"{n}.grad": p.grad for n, p in m.named_parameters()})
    for r in grads.layers:
        named[f"dh[{r.layer},{r.direction}]"] = r.dh
        if r.dc is not None:
            named[f"dc[{r.layer},{r.direction}]"] = r.dc
    for r in gates.layers:
        named.update({f"gate {g}[{r.layer},{r.direction}]": v for g, v in r.gates.items()})
    return named


def _compare(engine, cls, kw, dtype, packed, bidirectional, size=(9, 4, 5, 7), scaled: float | None = None):
    """``scaled``: float32 tolerance relative to each tensor's largest magnitude (sums of a few
    hundred float32 products, taken in a different order, differ by that much)."""
    want = _run(cls, kw, "reference", dtype, packed, bidirectional, size)
    got = _run(cls, kw, engine, dtype, packed, bidirectional, size)
    assert sorted(got) == sorted(want)
    for name in want:
        tol = TOL[dtype] if scaled is None else dict(atol=scaled * max(1.0, want[name].abs().max().item()), rtol=0)
        torch.testing.assert_close(got[name], want[name], **tol, msg=lambda s: f"{name}: {s}")


@needs_fast
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cls,kw", CLASSES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_fast_equals_reference(cls, kw, dtype, packed, bidirectional) -> None:
    _compare("fast", cls, kw, dtype, packed, bidirectional)


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("cls,kw", CLASSES[:3], ids=lambda v: getattr(v, "__name__", str(v)))
def test_checkpointed_equals_reference(cls, kw, packed) -> None:
    _compare("checkpoint", cls, kw, torch.float64, packed, True)


@pytest.mark.parametrize("segment", [1, 4, 9, 50])
def test_checkpointed_scan_any_segment(segment) -> None:
    torch.manual_seed(2)
    T, B, I, H = 9, 3, 4, 5
    args = [torch.randn(T, B, I, dtype=torch.float64, requires_grad=True),
            torch.randn(B, H, dtype=torch.float64, requires_grad=True),
            torch.randn(B, H, dtype=torch.float64, requires_grad=True),
            torch.randn(4 * H, I, dtype=torch.float64, requires_grad=True),
            torch.randn(4 * H, H, dtype=torch.float64, requires_grad=True)]
    results = []
    for f in (scan, lambda *a: checkpointed_scan(*a, segment=segment, inner="reference")):
        out, h, c = f("lstm", *args)
        grads = torch.autograd.grad((out.sin().sum() + h.sum() + (c * c).sum()), args)
        results.append([out, h, c, *grads])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-10)


def test_checkpointed_scan_rejects_bad_segment() -> None:
    x = torch.randn(3, 1, 2)
    with pytest.raises(ConfigError, match="segment"):
        checkpointed_scan("rnn_tanh", x, torch.zeros(1, 2), None, torch.randn(2, 2), torch.randn(2, 2), segment=0)


@needs_fast
def test_fast_falls_back_where_unsupported() -> None:
    """Projections and half precision run the reference (same numbers by construction)."""
    torch.manual_seed(3)
    ref = rnnlab.LSTM(3, 6, proj_size=2, engine="reference")
    fast = rnnlab.LSTM(3, 6, proj_size=2, engine="fast")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(fast(x)[0], ref(x)[0], atol=0, rtol=0)


def test_engines_registered() -> None:
    assert get_engine("fast") is fast_mod.fast_scan
    assert get_engine("checkpoint") is checkpointed_scan


@pytest.mark.parametrize("engine", ["reference", "checkpoint", pytest.param("fast", marks=needs_fast)])
@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.GRU, rnnlab.RNN])
def test_initial_state_changed_in_place_refuses_backward(cls, engine) -> None:
    """As torch.nn: h0 / c0 changed in place after the forward make the backward raise (the
    checkpoint engine kept them outside autograd's version checks and gave a wrong gradient)."""
    torch.manual_seed(0)
    m = cls(3, 4, engine=engine).double()
    h = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    h0 = h * 1
    c0 = h * 1
    out, _ = m(torch.randn(5, 2, 3, dtype=torch.float64), (h0, c0) if cls is rnnlab.LSTM else h0)
    (c0 if cls is rnnlab.LSTM else h0).mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_checkpoint_engine_bounds_saved_activations() -> None:
    """Recomputation keeps segment-boundary states only: far below the full scan's buffers."""
    from rnnlab.suites.bench import activation_bytes

    x = torch.randn(400, 2, 3)
    full = activation_bytes(rnnlab.LSTM(3, 8, engine="reference"), x)
    ckpt = activation_bytes(rnnlab.LSTM(3, 8, engine="checkpoint"), x)
    assert ckpt < 0.25 * full


@needs_fast
def test_a_built_kernel_loads_without_the_build_lock(tmp_path):
    """A process killed while torch's builder held its lock must not hang later processes: once
    built, the kernels are imported from the stamped file without touching the lock."""
    import subprocess
    import sys

    from torch.utils import cpp_extension

    lock = Path(cpp_extension._get_build_directory(fast_mod._KERNELS.ext_name, False)) / "lock"
    if lock.exists():
        pytest.skip(f"a build lock is held right now: {lock}")
    lock.touch()                                   # as if a process died holding it, just now
    try:
        code = "from rnnlab.engine import fast; print(fast.available())"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        lock.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


# ---------------------------------------------------------------- the kernels' matmul (gemm.h)
# Sizes whose per-step recurrent product reaches gemm.h's oneDNN threshold (2^21 multiply-adds):
# B·H·G·H for the step, and far more for the whole-sequence products.
LARGE = {rnnlab.LSTM: (6, 32, 24, 128), rnnlab.GRU: (6, 32, 24, 160), rnnlab.RNN: (6, 32, 24, 256)}


@needs_fast
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "blas"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("cls", list(LARGE), ids=lambda c: c.__name__)
def test_fast_equals_reference_at_sizes_that_use_onednn(cls, packed, onednn, threads) -> None:
    """float32 at sizes where the step and sequence matmuls go to oneDNN (when torch has it), and
    the same with every matmul kept on BLAS, on one thread and on two (the LSTM then splits each
    step's rows): all equal the reference to float32 rounding."""
    T, B, I, H = LARGE[cls]
    G = {rnnlab.LSTM: 4, rnnlab.GRU: 3, rnnlab.RNN: 1}[cls]
    K = fast_mod._KERNELS.module
    old = torch.get_num_threads()
    fast_mod.set_onednn(onednn)
    torch.set_num_threads(threads)
    try:                                          # the step product really goes where the parameter says
        assert fast_mod.gemm_backend(B, H, G * H) == ("onednn" if onednn and K.onednn_state()[0] else "blas")
        _compare("fast", cls, {}, torch.float32, packed, False, size=LARGE[cls], scaled=1e-5)
    finally:
        torch.set_num_threads(old)
        fast_mod.set_onednn(True)


@needs_fast
@pytest.mark.parametrize("cls,kw", CLASSES[:3], ids=["lstm", "gru", "rnn"])
def test_fast_on_two_threads_equals_reference_float64(cls, kw) -> None:
    """The row-split LSTM step (small sizes, BLAS) on two threads, float64, packed lengths."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _compare("fast", cls, kw, torch.float64, True, True, size=(7, 20, 5, 24))
    finally:
        torch.set_num_threads(old)


@needs_fast
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")   # torch's flags() chatter
def test_gemm_backend_choice_depends_on_shape_and_dtype_only() -> None:
    K = fast_mod._KERNELS.module
    assert fast_mod.gemm_backend(8, 64, 256) == "blas"              # small: a oneDNN call's fixed cost dominates
    big = fast_mod.gemm_backend(32, 256, 1024)
    assert big == ("onednn" if K.onednn_state()[0] else "blas") and fast_mod.onednn_in_use() == (big == "onednn")
    fast_mod.set_onednn(False)
    try:
        assert fast_mod.gemm_backend(32, 256, 1024) == "blas"
    finally:
        fast_mod.set_onednn(True)
    with torch.backends.mkldnn.flags(enabled=False):                 # torch's own switch is honoured
        assert fast_mod.gemm_backend(32, 256, 1024) == "blas"


@needs_fast
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("M,K,N", [(1, 256, 1024), (7, 3, 5), (32, 256, 1024), (1024, 1120, 256),
                                   (1, 1460, 1460), (1, 2048, 1024), (4096, 1, 512), (4096, 512, 1)])
@pytest.mark.parametrize("with_bias", [False, True], ids=["", "bias"])
def test_kernel_matmul_equals_torch(dtype, M, K, N, with_bias) -> None:
    """matmul(a, b, bias) == torch.addmm, with a transposed operand as the engine passes them,
    and it never writes into the bias (a (1, N) broadcast of it is a view)."""
    torch.manual_seed(0)
    a = torch.randn(M, K, dtype=dtype)
    b = torch.randn(N, K, dtype=dtype).t()
    bias = torch.randn(N, dtype=dtype) if with_bias else None
    kept = None if bias is None else bias.clone()
    got = fast_mod._KERNELS.module.matmul(a, b, bias)
    want = torch.addmm(bias, a, b) if with_bias else a @ b
    tol = dict(atol=1e-4, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got, want, **tol)
    if bias is not None:
        assert torch.equal(bias, kept)


@needs_fast
@pytest.mark.parametrize("cls,size", [(rnnlab.LSTM, (3, 1, 8, 1232)), (rnnlab.GRU, (3, 1, 8, 1232)),
                                      (rnnlab.RNN, (3, 1, 8, 1500)), (rnnlab.LSTM, (4, 1, 2048, 64)),
                                      (rnnlab.LSTM, (512, 16, 1, 64))],
                         ids=["lstm-B1", "gru-B1", "rnn-B1", "lstm-B1-wide-input", "lstm-I1"])
def test_thin_products_stay_off_onednn(cls, size) -> None:
    """Batch 1 at large H, a wide input at batch 1, and a one-feature input over many steps: products
    with a dimension of 1 (which once corrupted the heap inside oneDNN with accumulation) run on
    BLAS and equal the reference."""
    T, B, I, H = size
    G = {rnnlab.LSTM: 4, rnnlab.GRU: 3, rnnlab.RNN: 1}[cls]
    assert fast_mod.gemm_backend(B, H, G * H) == "blas" and fast_mod.gemm_backend(T * B, I, G * H) == "blas"
    torch.manual_seed(0)
    ref, fast = cls(I, H, engine="reference"), cls(I, H, engine="fast")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I)
    outs = []
    for m in (ref, fast):
        out, _ = m(x)
        out.square().sum().backward()
        outs.append((out.detach(), m.weight_hh_l0.grad))
    for want, got in zip(*outs):
        torch.testing.assert_close(got, want, atol=1e-5 * max(1.0, want.abs().max().item()), rtol=0)


# ------------------------------------------------------------ reused buffers (workspace.h)
@needs_fast
@pytest.mark.parametrize("kw", [{}, {"layer_norm": True}], ids=["lstm", "ln-lstm"])
def test_reused_buffers_never_touch_what_someone_holds(kw) -> None:
    """The kernels hand a buffer out again only when nothing holds it: outputs (and views of them)
    kept from earlier calls keep their values across later calls, forward and backward; a buffer
    nobody holds any more is reused; empty_cache() lets them go and results stay right."""
    torch.manual_seed(0)
    m = rnnlab.LSTM(6, 8, engine="fast", **kw)
    ref = rnnlab.LSTM(6, 8, engine="reference", **kw)
    ref.load_state_dict(m.state_dict())
    xs = [torch.randn(5, 3, 6) for _ in range(4)]
    kept, views = [], []
    for x in xs:                                   # train-style: forward, backward, keep the outputs
        out, (h, c) = m(x)
        out.sum().backward()
        kept.append((out.detach(), out.detach().clone()))
        views.append((out[1:].detach(), out[1:].detach().clone()))
    with torch.no_grad():
        for x in xs:                               # and inference calls of the same size in between
            m(x)
    for (t, copy), (v, vcopy) in zip(kept, views):
        assert torch.equal(t, copy) and torch.equal(v, vcopy)
    with torch.no_grad():
        torch.testing.assert_close(m(xs[1])[0], ref(xs[1])[0], atol=1e-5, rtol=1e-5)
    # the kernel itself: memory nobody holds any more is handed out again
    K = fast_mod._KERNELS.module
    xw, h0, w = torch.randn(5, 3, 32), torch.zeros(3, 8), torch.randn(32, 8)
    first = K.lstm_forward(xw.clone(), h0, h0, w, None)
    ptr = first[0].data_ptr()
    del first
    again = K.lstm_forward(xw.clone(), h0, h0, w, None)
    assert again[0].data_ptr() == ptr
    fast_mod.empty_cache()
    with torch.no_grad():
        torch.testing.assert_close(m(xs[2])[0], ref(xs[2])[0], atol=1e-5, rtol=1e-5)
