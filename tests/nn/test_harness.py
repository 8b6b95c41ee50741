"""A shared layer harness in the Keras spirit: every layer configuration in ``SPECS`` passes the
same baseline checks (output and state shapes, parameter count, state-dict round trip with
itself and, where torch.nn has the same layer, both ways with torch.nn, a one-step training
test in which every parameter moves, float32 and float64).

A new option (layer norm, peepholes, ...) gets these tests for free: add a ``Spec`` whose
``build`` passes the option (``torch_cls=None`` when torch.nn has no equivalent). Every spec runs
for each engine registered at collection time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import pytest
import torch
from rnn_parity import ENGINES, assert_close
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnlab

T, B, I, H = 5, 3, 3, 4


@dataclass(frozen=True)
class Spec:
    name: str
    cls: type                                    # the rnnlab layer or cell class
    kwargs: dict = field(default_factory=dict)   # constructor options beyond (input_size, hidden_size)
    torch_cls: type | None = None                # torch.nn's equivalent, if it has one
    gates: int = 1                               # gate blocks G in W_ih (G·H, ·)

    @property
    def is_cell(self) -> bool:
        return issubclass(self.cls, rnnlab.nn.cells.CellBase)

    @property
    def has_c(self) -> bool:
        return self.cls in (rnnlab.LSTM, rnnlab.LSTMCell)

    @property
    def P(self) -> int:
        return self.kwargs.get("proj_size", 0) or H

    @property
    def D(self) -> int:
        return 2 if self.kwargs.get("bidirectional") else 1

    @property
    def L(self) -> int:
        return self.kwargs.get("num_layers", 1)

    def build(self, dtype=torch.float32, engine: str = "reference", **extra) -> nn.Module:
        kw = dict(self.kwargs, dtype=dtype, **extra)
        if not self.is_cell:
            kw["engine"] = engine
        return self.cls(I, H, **kw)

    def build_torch(self, dtype=torch.float32) -> nn.Module:
        return self.torch_cls(I, H, dtype=dtype, **self.kwargs)

    def expected_num_params(self) -> int:
        """From the layout: per layer and direction G·H·(in + P) weights, 2·G·H biases, P·H projection."""
        bias = self.kwargs.get("bias", True)
        proj = self.kwargs.get("proj_size", 0)
        total = 0
        for layer in range(1 if self.is_cell else self.L):
            layer_in = I if layer == 0 else self.P * self.D
            per = self.gates * H * (layer_in + self.P) + (2 * self.gates * H if bias else 0) + proj * H
            total += per * (1 if self.is_cell else self.D)
        return total


SPECS: list[Spec] = [
    Spec("rnn", rnnlab.RNN, {}, nn.RNN),
    Spec("rnn-relu-2L-bi", rnnlab.RNN, {"nonlinearity": "relu", "num_layers": 2, "bidirectional": True}, nn.RNN),
    Spec("lstm", rnnlab.LSTM, {}, nn.LSTM, 4),
    Spec("lstm-2L-bi-nobias", rnnlab.LSTM, {"num_layers": 2, "bidirectional": True, "bias": False}, nn.LSTM, 4),
    Spec("lstm-proj-2L-bi", rnnlab.LSTM, {"proj_size": 2, "num_layers": 2, "bidirectional": True}, nn.LSTM, 4),
    Spec("lstm-2L-dropout", rnnlab.LSTM, {"num_layers": 2, "dropout": 0.3, "batch_first": True}, nn.LSTM, 4),
    Spec("gru", rnnlab.GRU, {}, nn.GRU, 3),
    Spec("gru-2L-bi-batch_first", rnnlab.GRU, {"num_layers": 2, "bidirectional": True, "batch_first": True}, nn.GRU, 3),
    Spec("rnn-cell", rnnlab.RNNCell, {}, nn.RNNCell),
    Spec("rnn-cell-relu-nobias", rnnlab.RNNCell, {"nonlinearity": "relu", "bias": False}, nn.RNNCell),
    Spec("lstm-cell", rnnlab.LSTMCell, {}, nn.LSTMCell, 4),
    Spec("gru-cell", rnnlab.GRUCell, {}, nn.GRUCell, 3),
]
LAYER_SPECS = [s for s in SPECS if not s.is_cell]
DTYPES = [torch.float32, torch.float64]
_ids = {"ids": lambda s: s.name}


def _input(spec: Spec, dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if spec.is_cell:
        return torch.randn(B, I, generator=g, dtype=dtype)
    shape = (B, T, I) if spec.kwargs.get("batch_first") else (T, B, I)
    return torch.randn(shape, generator=g, dtype=dtype)


def _run(module: nn.Module, spec: Spec, x) -> list[torch.Tensor]:
    """The module's outputs as a flat list: [output, h_n(, c_n)] or [h'(, c')] for cells.
    ``x`` may be a pair (input, state)."""
    res = module(*x) if isinstance(x, tuple) else module(x)
    if spec.is_cell:
        return list(res) if isinstance(res, tuple) else [res]
    out, state = res
    if isinstance(out, PackedSequence):
        out = out.data
    return [out, *(state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", SPECS, **_ids)
def test_shapes_and_dtype(spec: Spec, dtype, engine: str) -> None:
    m = spec.build(dtype, engine).eval()
    assert all(p.dtype == dtype for p in m.parameters())
    outs = _run(m, spec, _input(spec, dtype))
    if spec.is_cell:
        want = [(B, H)] * (2 if spec.has_c else 1)
    else:
        out_shape = (B, T, spec.D * spec.P) if spec.kwargs.get("batch_first") else (T, B, spec.D * spec.P)
        want = [out_shape, (spec.L * spec.D, B, spec.P)] + ([(spec.L * spec.D, B, H)] if spec.has_c else [])
    assert [tuple(o.shape) for o in outs] == want
    assert all(o.dtype == dtype and torch.isfinite(o).all() for o in outs)
    # unbatched input: (I,) for cells, (T, I) for layers (batch_first does not apply)
    x = _input(spec, dtype)
    x1 = x[0] if spec.is_cell or spec.kwargs.get("batch_first") else x[:, 0]
    want1 = [(H,)] * len(want) if spec.is_cell else (
        [(T, spec.D * spec.P), (spec.L * spec.D, spec.P)] + ([(spec.L * spec.D, H)] if spec.has_c else []))
    assert [tuple(o.shape) for o in _run(m, spec, x1)] == want1


@pytest.mark.parametrize("spec", LAYER_SPECS, **_ids)
def test_packed_input_gives_packed_output(spec: Spec) -> None:
    m = spec.build().eval()
    bf = spec.kwargs.get("batch_first", False)
    lengths = torch.tensor([3, T, 1])
    packed = pack_padded_sequence(_input(spec, torch.float32), lengths, batch_first=bf, enforce_sorted=False)
    out, _ = m(packed)
    assert isinstance(out, PackedSequence)
    assert out.data.shape == (int(lengths.sum()), spec.D * spec.P)
    assert torch.equal(out.batch_sizes, packed.batch_sizes) and torch.equal(out.sorted_indices, packed.sorted_indices)


@pytest.mark.parametrize("spec", SPECS, **_ids)
def test_parameter_count(spec: Spec) -> None:
    m = spec.build()
    n = sum(p.numel() for p in m.parameters())
    assert n == spec.expected_num_params()
    if spec.torch_cls is not None:
        assert n == sum(p.numel() for p in spec.build_torch().parameters())


@pytest.mark.parametrize("spec", SPECS, **_ids)
def test_state_dict_round_trip(spec: Spec) -> None:
    """Into a fresh module (another seed) and back: identical tensors, identical function."""
    torch.manual_seed(0)
    a = spec.build(torch.float64).eval()
    torch.manual_seed(1)
    b = spec.build(torch.float64).eval()
    x = _input(spec, torch.float64)
    assert not torch.equal(_run(a, spec, x)[0], _run(b, spec, x)[0])
    b.load_state_dict(a.state_dict())
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    for i, (u, v) in enumerate(zip(_run(a, spec, x), _run(b, spec, x))):
        assert torch.equal(u, v), f"{spec.name}: output {i} differs after the round trip"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.torch_cls is not None], **_ids)
def test_state_dict_round_trip_with_torch_both_ways(spec: Spec) -> None:
    ref = spec.build_torch(torch.float64).eval()
    ours = spec.build(torch.float64).eval()
    ours.load_state_dict(ref.state_dict())                 # torch.nn -> rnnlab
    back = spec.build_torch(torch.float64).eval()
    back.load_state_dict(ours.state_dict())                # rnnlab -> torch.nn
    x = _input(spec, torch.float64)
    for i, (u, v, w) in enumerate(zip(_run(ref, spec, x), _run(ours, spec, x), _run(back, spec, x))):
        assert_close(f"output {i} (rnnlab)", v, u, 1e-10, spec.name)
        assert torch.equal(w, u), f"{spec.name}: output {i} of torch.nn after the round trip"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", SPECS, **_ids)
def test_one_training_step_moves_every_parameter(spec: Spec, dtype, engine: str) -> None:
    torch.manual_seed(0)
    m = spec.build(dtype, engine).train()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = _input(spec, dtype)
    outs = _run(m, spec, x)
    if spec.is_cell:   # a second step from the first one's state, else W_hh meets only h = 0
        outs = _run(m, spec, (x, tuple(outs) if spec.has_c else outs[0]))
    loss = sum(((o - 0.5) ** 2).mean() for o in outs)
    opt.zero_grad()
    loss.backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{spec.name}: no finite gradient for {n}"
    opt.step()
    for n, p in m.named_parameters():
        assert not torch.equal(p.detach(), before[n]), f"{spec.name}: parameter {n} did not move"
    with torch.no_grad():
        outs = _run(m.eval(), spec, x)
        if spec.is_cell:
            outs = _run(m, spec, (x, tuple(outs) if spec.has_c else outs[0]))
        new_loss = sum(((o - 0.5) ** 2).mean() for o in outs)
    if "dropout" not in spec.kwargs:     # with dropout the loss above was measured in train mode
        assert new_loss < loss.detach(), f"{spec.name}: one SGD step did not lower the loss"


@pytest.mark.parametrize("spec", SPECS, **_ids)
def test_dtype_conversion_follows_the_module(spec: Spec) -> None:
    m = spec.build(torch.float32).eval()
    x = _input(spec, torch.float64)
    m64 = m.to(torch.float64)
    outs = _run(m64, spec, x)
    assert all(o.dtype == torch.float64 for o in outs)
    with torch.no_grad():                                  # inference mode works too
        assert all(o.dtype == torch.float64 for o in _run(m64, spec, x))


def test_harness_count_formula_sees_a_missing_parameter() -> None:
    """The harness can fail: a module that lost a parameter no longer matches the layout count."""
    spec = SPECS[2]
    m = spec.build()
    del m.bias_hh_l0
    assert sum(p.numel() for p in m.parameters()) != spec.expected_num_params()

