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


def _run(cls, kw, engine, dtype, packed: bool, bidirectional: bool):
    torch.manual_seed(0)
    m = cls(5, 7, num_layers=2, bidirectional=bidirectional, engine=engine, **kw).to(dtype)
    x = torch.randn(9, 4, 5, dtype=dtype, requires_grad=True)
    inp = torch.nn.utils.rnn.pack_padded_sequence(x, [9, 3, 5, 1], enforce_sorted=False) if packed else x
    with record_grad_norms() as grads, record_gates() as gates:
        out, h = m(inp)
        out = out.data if packed else out
        hh, cc = (h if isinstance(h, tuple) else (h, None))
        loss = (out ** 2).sum() + (hh * torch.arange(7, dtype=dtype)).sum()
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


def _compare(engine, cls, kw, dtype, packed, bidirectional):
    want = _run(cls, kw, "reference", dtype, packed, bidirectional)
    got = _run(cls, kw, engine, dtype, packed, bidirectional)
    assert sorted(got) == sorted(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOL[dtype], msg=lambda s: f"{name}: {s}")


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


def test_checkpoint_engine_bounds_saved_activations() -> None:
    """Recomputation keeps segment-boundary states only: far below the full scan's buffers."""
    from rnnlab.bench import activation_bytes

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
