"""torch.jit.trace of rnnlab's layers and cells (deprecated by torch 2.13 in favour of torch.compile and
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


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
def test_a_traced_cell_saves_and_serves_other_batches(cls, tmp_path):
    """The cells trace (sanity check on), save and load as torch.nn's do, with torch.nn's outputs
    and gradients at other batch sizes (a cell's step used to be a Python autograd function,
    which a trace cannot record)."""
    torch.manual_seed(0)
    ours, theirs = getattr(rnnlab, cls)(5, 16), getattr(torch.nn, cls)(5, 16)
    theirs.load_state_dict(ours.state_dict())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        traced = torch.jit.trace(ours, (torch.randn(8, 5),))
        torch.jit.save(traced, tmp_path / "cell.pt")
        loaded = torch.jit.load(tmp_path / "cell.pt")
    for batch in (8, 3, 1):
        x = torch.randn(batch, 5, requires_grad=True)
        out, ref = loaded(x), theirs(x)
        out, ref = (out[0], ref[0]) if cls == "LSTMCell" else (out, ref)
        assert (out - ref).abs().max() < 1e-5, batch
        g, r = torch.autograd.grad(out.square().sum(), x), torch.autograd.grad(ref.square().sum(), x)
        assert torch.allclose(g[0], r[0], rtol=1e-4, atol=1e-5), batch
