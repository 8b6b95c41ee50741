"""Gradient through time: the recorded norms equal autograd's on an explicit loop, the horizon
is computed as defined, and gate statistics have the documented shapes."""

import numpy as np
import pytest
import torch

from rnnlab.analysis.gates import probe_gate_stats
from rnnlab.analysis.gradflow import memory_horizon, probe_grad_flow
from rnnlab.errors import ShapeError
from rnnlab.tasks.probe import ProbeConfig, ProbeTask


def test_memory_horizon_on_a_synthetic_decay():
    norms = 0.5 ** np.arange(30)                 # 0.5**10 = 9.8e-4 is the first below 1e-3
    assert memory_horizon(norms) == 10
    assert memory_horizon(norms[:10]) is None    # never falls that far: longer than the sequence
    assert memory_horizon(torch.tensor([2.0, 1.0, 0.0019, 0.0021])) == 2
    assert memory_horizon([0.0, 0.0]) is None
    with pytest.raises(ShapeError):
        memory_horizon([])


def test_recorded_norms_match_autograd_through_an_explicit_loop():
    torch.manual_seed(0)
    task = ProbeTask(ProbeConfig(probe="checksum", length=12, cell="rnn", hidden_size=6, test_size=16))
    model = task.build_model()
    gf = probe_grad_flow(task, model, n=16)
    assert gf.dh.shape == (12,) and gf.dc is None and gf.cell == "rnn"
    # The same loss through torch.nn.RNNCell, step by step, keeping each h_t's gradient.
    cell = torch.nn.RNNCell(model.rnn.input_size, 6)
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in model.rnn.state_dict().items()})
    test = task.test_batch()
    x = model.embed(test.x[:, :16]).detach()
    h, hs = torch.zeros(16, 6), []
    for t in range(12):
        h = cell(x[t], h)
        h.retain_grad()
        hs.append(h)
    loss = torch.nn.functional.cross_entropy(model.head(h), test.y[:16])
    loss.backward()
    want = torch.stack([hh.grad.norm(dim=1).mean() for hh in hs]).flip(0).double().numpy()
    np.testing.assert_allclose(gf.dh, want, rtol=1e-4, atol=1e-10)


def test_lstm_flow_has_cell_norms_and_gates_have_shapes():
    torch.manual_seed(0)
    task = ProbeTask(ProbeConfig(probe="segments", length=16, cell="lstm", hidden_size=5, test_size=20))
    model = task.build_model()
    gf = probe_grad_flow(task, model)
    assert gf.dc is not None and gf.dc.shape == (16,) and gf.dh[0] > 0
    st = probe_gate_stats(task, model, n=20)
    assert set(st.values) == {"i", "f", "o"}
    assert st.example["f"].shape == (5, 16) and st.example_tokens.shape == (16,)
    assert all(0 <= v <= 1 for v in st.mean.values())
    rnn = ProbeTask(ProbeConfig(probe="segments", length=16, cell="rnn", hidden_size=5, test_size=20))
    assert probe_gate_stats(rnn, rnn.build_model()) is None
