"""Second derivatives and batched gradients through every layer, cell and cell option, on every
engine: gradgradcheck (finite differences of the first derivative, in float64) and gradcheck /
gradgradcheck with ``check_batched_grad=True`` (vmap over the backward), plus torch.func's
transforms against plain loops. Shapes are tiny and the option grid uses gradcheck's fast mode:
what is checked is the algebra, not the speed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab.engine import engine_names

LAYER_ENGINES = ["reference", "fast", "checkpoint"]
assert set(LAYER_ENGINES) <= set(engine_names())

# (class, constructor kwargs) of the options grid, one entry per option and family
OPTIONS = [
    (rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}), (rnnlab.LSTM, {}), (rnnlab.GRU, {}),
    (rnnlab.LSTM, {"proj_size": 1}),
    (rnnlab.LSTM, {"layer_norm": True}), (rnnlab.GRU, {"layer_norm": True}),
    (rnnlab.LSTM, {"peephole": True}), (rnnlab.LSTM, {"coupled_gates": True, "peephole": True}),
    (rnnlab.GRU, {"gru_reset": "before"}), (rnnlab.GRU, {"gru_reset": "before", "layer_norm": True}),
    (rnnlab.LSTM, {"recurrent_dropout": 0.3}), (rnnlab.GRU, {"recurrent_dropout": 0.3}),
    (rnnlab.LSTM, {"zoneout": (0.2, 0.4)}), (rnnlab.GRU, {"zoneout": 0.3}),
    (rnnlab.LSTM, {"weight_drop": 0.3}), (rnnlab.LSTM, {"forget_bias": 1.0, "init": "orthogonal"}),
]
CELL_OPTIONS = [
    (rnnlab.RNNCell, {}), (rnnlab.RNNCell, {"nonlinearity": "relu"}), (rnnlab.LSTMCell, {}), (rnnlab.GRUCell, {}),
    (rnnlab.LSTMCell, {"layer_norm": True, "peephole": True}), (rnnlab.LSTMCell, {"coupled_gates": True}),
    (rnnlab.GRUCell, {"layer_norm": True}), (rnnlab.GRUCell, {"gru_reset": "before"}),
    (rnnlab.LSTMCell, {"zoneout": 0.3}),
]


def _ids(item) -> str:
    cls, kw = item
    return cls.__name__ + "".join(f"-{k}={v}" for k, v in kw.items())


def functional(module: nn.Module, *extra_args):
    """f(x, *params) -> flat outputs, reseeding torch's RNG so dropout-like masks repeat per call."""
    names = [n for n, _ in module.named_parameters()]

    def f(x, *params):
        torch.manual_seed(7)
        out = torch.func.functional_call(module, dict(zip(names, params)), (x, *extra_args))
        return tuple(torch.utils._pytree.tree_flatten(out)[0])

    return f


def inputs(module: nn.Module, x: torch.Tensor) -> tuple:
    return (x.double().requires_grad_(),) + tuple(p.detach().requires_grad_() for p in module.parameters())


@pytest.mark.parametrize("engine", LAYER_ENGINES)
@pytest.mark.parametrize("item", OPTIONS, ids=_ids)
def test_layer_gradgradcheck(item, engine) -> None:
    cls, kw = item
    torch.manual_seed(0)
    m = cls(2, 2, engine=engine, **kw).double().train()
    args = inputs(m, torch.randn(3, 2, 2))
    f = functional(m)
    # fast_mode: the Jacobians compared along random directions (torch's own choice for slow ops)
    assert gradcheck(f, args, check_batched_grad=True, fast_mode=True)
    assert gradgradcheck(f, args, check_batched_grad=True, fast_mode=True)


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_stacked_bidirectional_packed_gradgrad(engine) -> None:
    """Two layers (the second layer's input has history), both directions, a packed batch and an
    initial state: the double backward reaches through the stack and the padding masks."""
    torch.manual_seed(0)
    m = rnnlab.GRU(2, 2, num_layers=2, bidirectional=True, engine=engine).double()
    h0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]

    def f(x, h, *params):
        packed = pack_padded_sequence(x, torch.tensor([3, 2, 1]))
        out, hn = torch.func.functional_call(m, dict(zip(names, params)), (packed, h))
        return out.data, hn

    args = (torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True), h0) + tuple(
        p.detach().requires_grad_() for p in m.parameters())
    assert gradgradcheck(f, args, fast_mode=True)


@pytest.mark.parametrize("item", CELL_OPTIONS, ids=_ids)
def test_cell_gradgradcheck(item) -> None:
    cls, kw = item
    torch.manual_seed(0)
    m = cls(2, 3, **kw).double().train()
    f = functional(m)
    args = inputs(m, torch.randn(2, 2))
    # fast_mode: the Jacobians compared along random directions (torch's own choice for slow ops)
    assert gradcheck(f, args, check_batched_grad=True, fast_mode=True)
    assert gradgradcheck(f, args, check_batched_grad=True, fast_mode=True)


def test_rnn_cell_second_derivative_is_not_zero() -> None:
    """The Hessian-vector product of an RNNCell against torch.nn.RNNCell's (a silent zero once)."""
    torch.manual_seed(0)
    ref = nn.RNNCell(3, 4).double()
    ours = rnnlab.RNNCell(3, 4).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    hvps = []
    for m in (ref, ours):
        (g,) = torch.autograd.grad(m(x).pow(3).sum(), x, create_graph=True)
        (hv,) = torch.autograd.grad(g.sum(), x)
        hvps.append(hv)
    assert hvps[0].abs().max() > 1e-3
    torch.testing.assert_close(hvps[1], hvps[0])


@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_gradient_penalty_matches_torch(mode, engine) -> None:
    """A gradient-penalty step (‖∂L/∂x‖² differentiated w.r.t. the weights) against torch.nn's."""
    torch.manual_seed(0)
    ref = getattr(nn, mode)(3, 4, num_layers=2)
    ours = getattr(rnnlab, mode)(3, 4, num_layers=2, engine=engine)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 3)
    grads = []
    for m in (ref, ours):
        xi = x.clone().requires_grad_()
        out, _ = m(xi)
        (gx,) = torch.autograd.grad(out.square().sum(), xi, create_graph=True)
        grads.append(torch.autograd.grad(gx.square().sum(), list(m.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_vmap_forward_and_per_sample_grads(engine) -> None:
    """torch.func.vmap over the forward and over torch.func.grad (per-sample gradients) equal a
    Python loop over the samples."""
    torch.manual_seed(0)
    m = rnnlab.LSTM(3, 4, engine=engine)
    params = {k: v.detach() for k, v in m.named_parameters()}
    xs = torch.randn(5, 6, 1, 3)                                   # 5 samples of (T=6, B=1, I=3)

    def run(p, x):
        return torch.func.functional_call(m, p, (x,))[0]

    batched = torch.func.vmap(run, in_dims=(None, 0))(params, xs)
    torch.testing.assert_close(batched, torch.stack([run(params, x) for x in xs]))

    def loss(p, x):
        return run(p, x).square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs)
    for i, x in enumerate(xs):
        expected = torch.autograd.grad(loss({k: v.requires_grad_() for k, v in params.items()}, x),
                                       list(params.values()))
        for name, e in zip(params, expected):
            torch.testing.assert_close(per_sample[name][i], e)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch's jvp decompositions
def test_jvp_matches_finite_difference() -> None:
    torch.manual_seed(0)
    m = rnnlab.GRU(2, 3).double()
    x, v = torch.randn(4, 2, 2, dtype=torch.float64), torch.randn(4, 2, 2, dtype=torch.float64)
    _, tangent = torch.func.jvp(lambda x: m(x)[0], (x,), (v,))
    eps = 1e-6
    fd = (m(x + eps * v)[0] - m(x - eps * v)[0]) / (2 * eps)
    torch.testing.assert_close(tangent, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("plain_first", [True, False], ids=["plain-first", "batched-first"])
def test_a_legacy_batched_tensor_is_told_apart_every_time(plain_first, monkeypatch) -> None:
    """The check that sends a legacy-vmap batched tensor (is_grads_batched's) to the plain-ops
    scan remembers its answer per dispatch key set: from an empty memory, asked twice, a batched
    tensor is batched and a plain one plain, whichever came first."""
    import warnings

    from torch._vmap_internals import vmap as legacy_vmap

    from rnnlab.engine import autodiff

    monkeypatch.setattr(autodiff, "_BATCHED_KEYSETS", {})
    seen = []

    def record(t):
        seen.append((autodiff._functorch_wrapped(t), autodiff._functorch_wrapped(t)))
        return t * 2

    def plain_is_plain():
        plain = torch.randn(3)
        return not autodiff._functorch_wrapped(plain) and not autodiff._functorch_wrapped(plain)

    if plain_first:
        assert plain_is_plain()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        legacy_vmap(record)(torch.randn(4, 3))
    assert seen == [(True, True)]
    assert plain_is_plain() and not autodiff._functorch_wrapped(None)
    assert sorted(autodiff._BATCHED_KEYSETS.values()) == [False, True]
