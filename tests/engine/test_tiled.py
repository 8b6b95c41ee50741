"""The LSTM's unit-major ("tiled") loop of the fast engine (engine/lstm_tiled.h) against the
reference engine and the row-major loop: outputs, final states, every gradient and the
gradient/gate records, for batch sizes that need padding and hidden sizes that leave partial
register tiles, with each instruction set this CPU has."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.engine import fast, record_gates, record_grad_norms
from rnnlab.errors import ConfigError
from rnn_parity import check_parity, grid, settable_isas


ISAS = settable_isas()
needs_tiled = pytest.mark.skipif(
    not ISAS, reason="the tiled LSTM loop does not run here (needs the fast kernels on an x86 CPU with AVX2+FMA)")


@pytest.fixture
def calls(monkeypatch):
    """Counts the tiled kernels' forward and backward calls; restores the default choice after."""
    module = fast._KERNELS.module
    n = {"forward": 0, "backward": 0}
    for name in ("forward", "backward"):
        real = getattr(module, f"lstm_tiled_{name}")

        def spy(*args, _real=real, _name=name):
            n[_name] += 1
            return _real(*args)

        monkeypatch.setattr(module, f"lstm_tiled_{name}", spy)
    yield n
    fast.set_tiled("auto")


def _run(engine: str, size, *, num_layers=1, bidirectional=False, dtype=torch.float32, packed=False, seed=0):
    T, B, I, H = size
    torch.manual_seed(seed)
    m = rnnlab.LSTM(I, H, num_layers=num_layers, bidirectional=bidirectional, engine=engine).to(dtype)
    D = 2 if bidirectional else 1
    x, h0, c0 = (torch.randn(*shape).to(dtype).requires_grad_()      # the same draws in either dtype
                 for shape in ((T, B, I), (num_layers * D, B, H), (num_layers * D, B, H)))
    inp = torch.nn.utils.rnn.pack_padded_sequence(x, [T] + [max(1, T - k) for k in range(1, B)],
                                                  enforce_sorted=False) if packed else x
    with record_grad_norms() as grads, record_gates() as gates:
        out, (hn, cn) = m(inp, (h0, c0))
        out = out.data if packed else out
        w = torch.linspace(-1, 1, H, dtype=dtype)
        loss = (out ** 2).sum() + (hn * w).sum() + (cn ** 3).sum()
        loss.backward()
    named = {"output": out.detach(), "h_n": hn.detach(), "c_n": cn.detach(), "x.grad": x.grad,
             "h0.grad": h0.grad, "c0.grad": c0.grad}
    named.update({f"{n}.grad": p.grad for n, p in m.named_parameters()})
    for r in grads.layers:
        named[f"dh[{r.layer},{r.direction}]"] = r.dh
        named[f"dc[{r.layer},{r.direction}]"] = r.dc
    for r in gates.layers:
        named.update({f"gate {g}[{r.layer},{r.direction}]": v for g, v in r.gates.items()})
    return named


def _assert_close(got: dict, want: dict, scaled: float = 2e-6) -> None:
    """float32 sums of up to a few hundred products taken in another order: equal to a few units
    of 1e-6 relative to each tensor's largest magnitude."""
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name].to(w.dtype)
        torch.testing.assert_close(g, w, atol=scaled * max(1.0, w.abs().max().item()), rtol=0,
                                   msg=lambda s: f"{name}: {s}")


# (T, B, I, H): B = 1, 3, 20, 33, 100 need padding (to 8 or 16 columns); H = 5, 17, 37 leave partial
# register tiles; B = 16, 32, 48, 64 use one to four vectors per tile row.
SIZES = [(6, 1, 3, 5), (5, 3, 4, 17), (4, 16, 5, 8), (3, 20, 6, 37), (2, 33, 2, 64), (3, 32, 4, 12),
         (4, 48, 3, 11), (3, 64, 4, 9), (2, 100, 3, 6)]


@needs_tiled
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_tiled_equals_reference(isa, size, calls) -> None:
    want = _run("reference", size)
    fast.set_tiled(isa)
    got = _run("fast", size)
    assert calls == {"forward": 1, "backward": 1}
    _assert_close(got, want)


# The parity grid's dense float32 LSTM cases (layers, directions, batch_first, bias, initial state)
# against torch.nn.LSTM to the 1e-5. Its batch of 3 keeps the row-major loop under "auto",
# so the tiled loop is forced here.
PARITY = [c for c in grid(torch.float32) if c.mode == "lstm" and not c.packed]


@needs_tiled
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", PARITY, ids=str)
def test_tiled_parity_with_torch_nn(isa, case, calls) -> None:
    fast.set_tiled(isa)
    check_parity(case, "fast")
    assert calls["forward"] == calls["backward"] == case.num_layers * (2 if case.bidirectional else 1)


@needs_tiled
@pytest.mark.parametrize("isa", ISAS)
def test_tiled_stacked_bidirectional_equals_reference_float64(isa, calls) -> None:
    """Both directions of two layers through the tiled loop, against the reference in float64."""
    size = (7, 5, 4, 10)
    want = _run("reference", size, num_layers=2, bidirectional=True, dtype=torch.float64)
    fast.set_tiled(isa)
    got = _run("fast", size, num_layers=2, bidirectional=True)
    assert calls == {"forward": 4, "backward": 4}
    _assert_close(got, want)


@needs_tiled
def test_tiled_equals_the_row_major_loop(calls) -> None:
    size = (9, 24, 7, 40)
    isa = fast.tiled_isa(size[1])          # forced: "auto" takes the row-major training loop at 40 units
    fast.set_tiled("off")
    want = _run("fast", size)
    assert calls == {"forward": 0, "backward": 0}
    fast.set_tiled(isa)
    got = _run("fast", size)
    assert calls == {"forward": 1, "backward": 1}
    _assert_close(got, want)


@needs_tiled
def test_masks_and_double_precision_keep_the_row_major_loop(calls) -> None:
    _run("fast", (5, 4, 3, 6), packed=True)
    _run("fast", (5, 4, 3, 6), dtype=torch.float64)
    assert calls == {"forward": 0, "backward": 0}


@needs_tiled
@pytest.mark.parametrize("isa", ISAS)
def test_thread_count_does_not_change_the_loop(isa) -> None:
    """Each sum runs over k in the same order whichever thread owns the unit: bitwise equal."""
    fast.set_tiled(isa)
    K = fast._KERNELS.module
    torch.manual_seed(1)
    T, B, I, H = 6, 19, 5, 45
    args = (torch.randn(T, B, I), torch.randn(B, H), torch.randn(B, H), torch.randn(4 * H, I),
            torch.randn(4 * H, H) * 0.2, torch.randn(4 * H))
    d_out, dh, dc = torch.randn(T, B, H), torch.randn(B, H), torch.randn(B, H)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            hs, cs, gates, tcs = [t.clone() for t in K.lstm_tiled_forward(*args)]
            da, dh0, dc0 = [t.clone() for t in K.lstm_tiled_backward(d_out, dh, dc, gates, cs, tcs, args[4], False)]
            results.append((hs, cs, gates, tcs, da, dh0, dc0))
    finally:
        torch.set_num_threads(before)
        fast.set_tiled("auto")
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@needs_tiled
def test_nan_in_the_weights_reaches_the_output(calls) -> None:
    """The activations clamp their argument, but NaN goes through: a diverged model is seen."""
    torch.manual_seed(0)
    m = rnnlab.LSTM(3, 20)
    with torch.no_grad():
        m.weight_hh_l0[0, 0] = float("nan")
    out, (h, c) = m(torch.randn(4, 9, 3))       # 9 sequences: the tiled loop with AVX-512 or AVX2 alone
    assert calls["forward"] == 1
    assert torch.isnan(out[1:]).all() and torch.isnan(h).all() and torch.isnan(c).all()


@needs_tiled
def test_backward_twice_with_retained_graph(calls) -> None:
    torch.manual_seed(0)
    m = rnnlab.LSTM(4, 9)
    x = torch.randn(5, 9, 4, requires_grad=True)       # 9 sequences: the tiled loop with AVX-512 or AVX2 alone
    out, _ = m(x)
    loss = (out ** 2).sum()
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in m.parameters()] + [x.grad.clone()]
    loss.backward()
    for g, p in zip(first, [*m.parameters(), x]):
        torch.testing.assert_close(p.grad, 2 * g)
    assert calls == {"forward": 1, "backward": 2}


@pytest.mark.skipif("avx512" not in ISAS, reason="needs a CPU with AVX-512 (the choice changes between passes)")
def test_choice_changed_between_forward_and_backward(calls) -> None:
    """A forward padded for AVX2 (8 columns) and a backward with AVX-512 chosen: the saved layout wins."""
    torch.manual_seed(0)
    m, ref = rnnlab.LSTM(5, 7), rnnlab.LSTM(5, 7, engine="reference")
    ref.load_state_dict(m.state_dict())
    x, h0, c0 = torch.randn(4, 3, 5), torch.randn(1, 3, 7), torch.randn(1, 3, 7)
    grads = []
    for model in (m, ref):
        xi = x.clone().requires_grad_()
        fast.set_tiled("avx2")
        out, (_, c) = model(xi, (h0, c0))
        fast.set_tiled("avx512")
        (out.sum() + c.sum()).backward()
        grads.append([xi.grad] + [p.grad for p in model.parameters()])
    assert calls == {"forward": 1, "backward": 1}
    for g, want in zip(*grads):
        torch.testing.assert_close(g, want, atol=1e-5, rtol=1e-5)


def test_set_tiled_rejects_unknown_choices() -> None:
    with pytest.raises(ConfigError, match="expected one of"):
        fast.set_tiled("sse2")
    assert fast.tiled_isa() in ("avx512", "avx2", "")


@pytest.mark.skipif(not fast.available() or "avx512" in ISAS, reason="this CPU has AVX-512 (or no fast kernels)")
def test_set_tiled_refuses_an_instruction_set_the_cpu_lacks() -> None:
    before = fast.tiled_isa()
    with pytest.raises(ConfigError, match="cannot run"):
        fast.set_tiled("avx512")
    assert fast.tiled_isa() == before


@needs_tiled
def test_auto_choice_by_batch_size(calls) -> None:
    """Under "auto": up to 3 sequences keep the row-major loop (up to 7 on CPUs without AVX-512),
    and on AVX-512 CPUs batches of up to 8 take AVX2's 8-column vectors; a forced choice applies
    to every batch."""
    wide = "avx512" in ISAS
    assert fast.tiled_isa(1) == fast.tiled_isa(3) == ""
    assert fast.tiled_isa(4) == ("avx2" if wide else "")
    assert fast.tiled_isa(7) == ("avx2" if wide else "")
    _run("fast", (3, 1, 2, 4))
    _run("fast", (3, 3, 2, 4))
    assert calls == {"forward": 0, "backward": 0}
    assert fast.tiled_isa(8) == "avx2"
    assert fast.tiled_isa(9) == ("avx512" if wide else "avx2")
    fast.set_tiled("avx2")
    assert fast.tiled_isa(1) == fast.tiled_isa(64) == "avx2"
    fast.set_tiled("off")
    assert fast.tiled_isa(64) == ""


@needs_tiled
@pytest.mark.parametrize("B", [5, 9, 16])
def test_output_is_contiguous_like_torch(B, calls) -> None:
    """Padded (B=5 to 8 by the AVX2 code that AVX-512 CPUs run for 4 to 8 sequences; B=9 to 16 with
    AVX-512 or AVX2) or not, the output is a plain (T, B, H) tensor, as torch.nn's."""
    if not fast.tiled_isa(B):
        pytest.skip(f"no tiled loop at batch {B} on this CPU")
    out, _ = rnnlab.LSTM(3, 6)(torch.randn(4, B, 3))
    assert calls["forward"] == 1
    assert out.shape == (4, B, 6) and out.is_contiguous()
    assert out.view(4 * B, 6).shape == (4 * B, 6)


@needs_tiled
def test_recorded_backward_on_a_new_thread_with_more_threads_than_cores(calls) -> None:
    """The per-thread partial sums of the gradient record are sized by the team the loop gets, also
    on a thread torch has not set up (autograd called from a user thread) with more torch threads
    than OpenMP's default (this once wrote past the end of the buffer)."""
    import threading

    before = torch.get_num_threads()
    torch.set_num_threads(4)
    fast.set_tiled(fast.tiled_isa(16))    # forced: "auto" takes the row-major training loop at 8 units
    try:
        torch.manual_seed(0)
        m, ref = rnnlab.LSTM(3, 8), rnnlab.LSTM(3, 8, engine="reference")
        ref.load_state_dict(m.state_dict())
        x = torch.randn(5, 16, 3)
        records = []
        for model in (m, ref):
            with record_grad_norms() as rec:
                out, _ = model(x)
                t = threading.Thread(target=lambda: out.pow(2).sum().backward())
                t.start()
                t.join()
            records.append(rec.layers[0].dh)
    finally:
        torch.set_num_threads(before)
    assert calls["backward"] == 1
    torch.testing.assert_close(records[0], records[1], atol=1e-5, rtol=1e-5)
