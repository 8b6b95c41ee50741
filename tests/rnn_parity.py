"""Shared helpers for comparing rnnlab's layers and cells with torch.nn (imported by tests/*).

The oracle is torch.nn with the *same* weights (``load_state_dict`` from the torch module). A
case is run twice, once through each module, with the same input, the same initial state and
the same loss; then the outputs, the final states and the gradients of the input, of the
initial state and of every parameter are compared one by one, and a failure names the tensor
(tinygrad-style), e.g. ``lstm-L2-bi ... grad[weight_hh_l1_reverse]: max |diff| 3e-4``.

Every helper takes ``engine=`` so a new engine registered with
``rnnlab.engine.register_engine`` is checked by re-running the same grid: the parity tests are
parametrized over ``ENGINES`` (all registered names, read at import time).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnlab
from rnnlab.engine import engine_names

# Every engine registered when the tests are collected; the reference is always first.
ENGINES: list[str] = ["reference"] + [n for n in engine_names() if n != "reference"]

# mode name -> (torch.nn class, rnnlab class, extra constructor kwargs)
MODES: dict[str, tuple[type, type, dict]] = {
    "rnn_tanh": (nn.RNN, rnnlab.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, rnnlab.RNN, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, rnnlab.LSTM, {}),
    "lstm_proj": (nn.LSTM, rnnlab.LSTM, {"proj_size": 2}),
    "gru": (nn.GRU, rnnlab.GRU, {}),
}
CELLS: dict[str, tuple[type, type, dict]] = {
    "rnn_tanh": (nn.RNNCell, rnnlab.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNNCell, rnnlab.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTMCell, rnnlab.LSTMCell, {}),
    "gru": (nn.GRUCell, rnnlab.GRUCell, {}),
}

# Tolerances of the issue: 1e-10 in float64, 1e-5 in float32 (absolute and relative).
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@dataclass(frozen=True)
class Case:
    """One point of the parity grid. Sizes are small on purpose (T<=6, B<=4, I<=3, H<=4)."""

    mode: str = "lstm"
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    with_state: bool = False
    packed: bool = False
    dtype: torch.dtype = torch.float64
    T: int = 5
    B: int = 3
    I: int = 3
    H: int = 4

    @property
    def is_lstm(self) -> bool:
        return self.mode.startswith("lstm")

    @property
    def P(self) -> int:
        return MODES[self.mode][2].get("proj_size", 0) or self.H

    @property
    def D(self) -> int:
        return 2 if self.bidirectional else 1

    def lengths(self) -> Tensor:
        """Unsorted lengths, at least one full-length and one shorter sequence (when B > 1)."""
        base = [self.T, max(1, self.T - 3), max(1, self.T - 1), 2][: self.B]
        return torch.tensor(base[1:2] + base[:1] + base[2:])  # unsorted: short one first

    def __str__(self) -> str:
        return (f"{self.mode}-L{self.num_layers}-{'bi' if self.bidirectional else 'uni'}"
                f"-{'bf' if self.batch_first else 'tf'}-{'bias' if self.bias else 'nobias'}"
                f"-{'h0' if self.with_state else 'nostate'}-{'packed' if self.packed else 'padded'}"
                f"-{str(self.dtype).removeprefix('torch.')}")


def kwargs(case: Case) -> dict:
    return dict(MODES[case.mode][2], num_layers=case.num_layers, bidirectional=case.bidirectional,
                batch_first=case.batch_first, bias=case.bias, dtype=case.dtype)


def make_pair(case: Case, engine: str = "reference", device: str | torch.device = "cpu",
              seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(torch.nn module, rnnlab module) with the rnnlab one loaded from the torch one's state dict."""
    ref_cls, our_cls, _ = MODES[case.mode]
    torch.manual_seed(seed)
    ref = ref_cls(case.I, case.H, device=device, **kwargs(case))
    ours = our_cls(case.I, case.H, device=device, engine=engine, **kwargs(case))
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@dataclass
class Inputs:
    x: Tensor                   # the padded input, (T, B, I) or (B, T, I); a leaf
    h0: Tensor | None           # (L·D, B, P)
    c0: Tensor | None           # (L·D, B, H)
    lengths: Tensor | None      # (B,) for packed cases


def make_inputs(case: Case, device: str | torch.device = "cpu", seed: int = 1) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    shape = (case.B, case.T, case.I) if case.batch_first else (case.T, case.B, case.I)
    x = torch.randn(shape, generator=g, dtype=case.dtype)
    h0 = c0 = None
    if case.with_state:
        LD = case.num_layers * case.D
        h0 = torch.randn(LD, case.B, case.P, generator=g, dtype=case.dtype).to(device).requires_grad_()
        if case.is_lstm:
            c0 = torch.randn(LD, case.B, case.H, generator=g, dtype=case.dtype).to(device).requires_grad_()
    lengths = case.lengths() if case.packed else None
    return Inputs(x.to(device).requires_grad_(), h0, c0, lengths)


def forward(module: nn.Module, case: Case, inp: Inputs) -> dict[str, Tensor]:
    """Run one module; return its outputs by name (packed output as its .data)."""
    x = inp.x
    if inp.lengths is not None:
        x = pack_padded_sequence(x, inp.lengths, batch_first=case.batch_first, enforce_sorted=False)
    hx = None
    if inp.h0 is not None:
        hx = (inp.h0, inp.c0) if case.is_lstm else inp.h0
    out, state = module(x, hx)
    if isinstance(out, PackedSequence):
        assert isinstance(x, PackedSequence)
        res = {"output": out.data, "output.batch_sizes": out.batch_sizes,
               "output.sorted_indices": out.sorted_indices, "output.unsorted_indices": out.unsorted_indices}
    else:
        res = {"output": out}
    h_n, c_n = state if case.is_lstm else (state, None)
    res["h_n"] = h_n
    if c_n is not None:
        res["c_n"] = c_n
    return res


def loss_of(outs: dict[str, Tensor], seed: int = 2) -> Tensor:
    """A loss that weights every output element differently, so no gradient is trivially shared."""
    g = torch.Generator().manual_seed(seed)
    total = 0
    for name in ("output", "h_n", "c_n"):
        if name in outs:
            t = outs[name]
            w = torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)
            total = total + (t * w).sum()
    return total


def grads(module: nn.Module, inp: Inputs) -> dict[str, Tensor]:
    """Gradients by name after a backward: input, h_0, c_0 and every parameter."""
    res = {"grad[input]": inp.x.grad}
    if inp.h0 is not None:
        res["grad[h_0]"] = inp.h0.grad
    if inp.c0 is not None:
        res["grad[c_0]"] = inp.c0.grad
    for name, p in module.named_parameters():
        res[f"grad[{name}]"] = p.grad
    return res


def assert_close(name: str, got: Tensor | None, want: Tensor | None, tol: float, where: str = "") -> None:
    """Compare one named tensor; the failure names it and gives the largest difference."""
    prefix = f"{where}: {name}" if where else name
    if want is None or got is None:
        assert got is None and want is None, f"{prefix}: rnnlab gave {type(got).__name__}, torch.nn {type(want).__name__}"
        return
    assert got.shape == want.shape, f"{prefix}: shape {tuple(got.shape)} != torch.nn's {tuple(want.shape)}"
    assert got.dtype == want.dtype, f"{prefix}: dtype {got.dtype} != torch.nn's {want.dtype}"
    if not got.is_floating_point():
        assert torch.equal(got.cpu(), want.cpu()), f"{prefix}: {got.tolist()} != torch.nn's {want.tolist()}"
        return
    if not torch.allclose(got, want, atol=tol, rtol=tol):
        diff = (got - want).abs()
        worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape)) if diff.numel() else ()
        raise AssertionError(
            f"{prefix}: max |diff| {diff.max().item():.3e} at {worst} "
            f"(rnnlab {got[worst].item():.6g}, torch.nn {want[worst].item():.6g}), tolerance {tol:g}"
        )


def assert_all_close(got: dict[str, Tensor], want: dict[str, Tensor], tol: float, where: str = "") -> None:
    assert set(got) == set(want), f"{where}: names {sorted(got)} != torch.nn's {sorted(want)}"
    for name in want:
        assert_close(name, got[name], want[name], tol, where)


def check_parity(case: Case, engine: str = "reference", device: str | torch.device = "cpu") -> None:
    """The full comparison for one case: outputs, final states and every gradient."""
    ref, ours = make_pair(case, engine, device)
    results = []
    for module in (ref, ours):
        inp = make_inputs(case, device)
        outs = forward(module, case, inp)
        loss_of(outs).backward()
        results.append((outs, grads(module, inp)))
    (ref_out, ref_grad), (our_out, our_grad) = results
    tol = TOL[case.dtype]
    where = f"{case} engine={engine}"
    assert_all_close(our_out, ref_out, tol, where)
    assert_all_close(our_grad, ref_grad, tol, where)


def grid(dtype: torch.dtype = torch.float64) -> list[Case]:
    """The full grid of the issue: 5 modes x layers x directions x layout x bias x state x packing."""
    cases = []
    for mode in MODES:
        for num_layers in (1, 2):
            for bidirectional in (False, True):
                for batch_first in (False, True):
                    for bias in (True, False):
                        for with_state in (False, True):
                            for packed in (False, True):
                                cases.append(Case(mode, num_layers, bidirectional, batch_first, bias,
                                                  with_state, packed, dtype))
    return cases


__all__ = [
    "ENGINES", "MODES", "CELLS", "TOL", "Case", "Inputs", "kwargs", "make_pair", "make_inputs",
    "forward", "loss_of", "grads", "assert_close", "assert_all_close", "check_parity", "grid", "replace",
]


def settable_isas() -> list[str]:
    """The instruction sets ``rnnlab.engine.fast.set_tiled`` accepts on this CPU ("avx512",
    "avx2"; empty without the kernels or AVX2+FMA), leaving the choice at "auto": what the tests of
    the LSTM's tiled and inference loops run each case with."""
    from rnnlab.engine import fast
    from rnnlab.errors import ConfigError

    if not fast.available() or fast.cpu_isa() not in ("avx512", "avx2"):
        return []
    have = []
    for isa in ("avx512", "avx2"):
        try:
            fast.set_tiled(isa)
            have.append(isa)
        except ConfigError:
            pass
    fast.set_tiled("auto")
    return have


def lstm_pair64(size: tuple[int, int, int, int], **kw):
    """rnnlab's LSTM of ``size`` (T, B, I, H) with layer kwargs ``kw`` and torch.nn's in float64 with
    the same weights (seed 0), and float32 inputs for both: (ours, theirs, x (T, B, I), h0, c0
    (layers·directions, B, H)). The tests of the LSTM's SIMD loops compare against it."""
    T, B, I, H = size
    torch.manual_seed(0)
    ours = rnnlab.LSTM(I, H, **kw)
    theirs = torch.nn.LSTM(I, H, **kw).double()
    theirs.load_state_dict(ours.state_dict())
    layers = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    return ours, theirs, torch.randn(T, B, I), torch.randn(layers, B, H), torch.randn(layers, B, H)


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
