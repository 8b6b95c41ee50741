"""torch.jit.trace of rnnlab's layers (deprecated by torch 2.13 in favour of torch.compile and
torch.export, still used to ship TorchScript): one graph (the engine's operators, whatever the grad
mode) that serves other lengths and batch sizes, with torch.nn's outputs and gradients."""

import warnings

import pytest
import torch

import rnnlab

SHAPES = [(6, 8, 5), (9, 3, 5), (2, 1, 5), (30, 17, 5)]    # (T, B, I); traced at the first


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("kw", [{}, {"batch_first": True, "num_layers": 2, "bidirectional": True}],
                         ids=["plain", "stacked-bidirectional"])
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_a_traced_layer_serves_other_sizes(cls, kw, grad):
    torch.manual_seed(0)
    ours, theirs = getattr(rnnlab, cls)(5, 16, **kw), getattr(torch.nn, cls)(5, 16, **kw)
    theirs.load_state_dict(ours.state_dict())
    with torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)   # none of "may not generalise" either
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        traced = torch.jit.trace(ours, (torch.randn(*SHAPES[0]),))   # check_trace on: a second trace agrees
    for shape in SHAPES:
        x = torch.randn(*shape)
        with torch.set_grad_enabled(grad):
            out, ref = traced(x)[0], theirs(x)[0]
        assert out.shape == ref.shape and (out - ref).abs().max() < 1e-5, shape
        if grad:
            g = torch.autograd.grad(out.square().sum(), list(ours.parameters()))
            r = torch.autograd.grad(ref.square().sum(), list(theirs.parameters()))
            assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(g, r)), shape
