"""The float32 LSTM batch-1 step as operators (rnnlab::lstm_step_pack, rnnlab::lstm_step): the
same numbers as torch.nn.LSTMCell and as Stream's C++ step over several steps, one graph for a
compiled greedy decoding loop, an exported program that holds the operator, and the refusals
(gradients, batch > 1, wrong shapes or dtype)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from rnnlab.engine import fast
from rnnlab.nn.stream import Stream

pytestmark = pytest.mark.skipif(not fast.available(), reason=f"fast engine unavailable: {fast.unavailable_reason()}")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _cell_and_lstm(I, H, bias=True):
    torch.manual_seed(0)
    cell = nn.LSTMCell(I, H, bias=bias)
    lstm = nn.LSTM(I, H, bias=bias)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(cell.weight_ih)
        lstm.weight_hh_l0.copy_(cell.weight_hh)
        if bias:
            lstm.bias_ih_l0.copy_(cell.bias_ih)
            lstm.bias_hh_l0.copy_(cell.bias_hh)
    return cell, lstm


# H = 200 with 3 chunks: the units split unevenly over the threads; H = 130: a chunk's last block partly empty
@pytest.mark.parametrize("I,H,bias,chunks", [(3, 8, True, None), (5, 200, True, 3), (7, 130, False, 2)])
def test_step_matches_lstm_cell_and_stream(I, H, bias, chunks):
    cell, lstm = _cell_and_lstm(I, H, bias)
    packed = fast.lstm_step_pack(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, chunks=chunks)
    stream = Stream(lstm)
    assert stream.backend == "kernels"
    h = c = torch.zeros(1, H)
    h_ref, c_ref = h, c
    for _ in range(6):
        x = torch.randn(1, I)
        h, c = fast.lstm_step(x, h, c, packed)
        with torch.no_grad():
            h_ref, c_ref = cell(x, (h_ref, c_ref))
        h_stream = stream.step(x)
        assert h.shape == c.shape == (1, H)
        torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(c, c_ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(h[0], h_stream, atol=1e-6, rtol=0)
        torch.testing.assert_close(c[0], stream.state[1][0], atol=1e-6, rtol=0)


def test_unbatched_step_and_inputs_left_unchanged():
    cell, _ = _cell_and_lstm(4, 16)
    packed = fast.lstm_step_pack(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    x, h, c = torch.randn(4), torch.randn(16), torch.randn(16)
    before = (h.clone(), c.clone())
    h1, c1 = fast.lstm_step(x, h, c, packed)
    with torch.no_grad():
        h_ref, c_ref = cell(x, (h, c))
    torch.testing.assert_close(h1, h_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(c1, c_ref, atol=1e-6, rtol=0)
    assert torch.equal(h, before[0]) and torch.equal(c, before[1])      # functional: no state kept or written


class Greedy(nn.Module):
    """Embedding -> LSTM step -> linear -> argmax, fed back for a fixed number of steps."""

    def __init__(self, vocab=11, I=6, H=16):
        super().__init__()
        self.emb, self.cell, self.head = nn.Embedding(vocab, I), nn.LSTMCell(I, H), nn.Linear(H, vocab)
        self.H = H
        self.requires_grad_(False)
        self.register_buffer("packed", fast.lstm_step_pack(self.cell.weight_ih, self.cell.weight_hh,
                                                           self.cell.bias_ih, self.cell.bias_hh))

    def forward(self, token, steps: int = 7, use_op: bool = True):
        h = c = torch.zeros(1, self.H)
        out = []
        for _ in range(steps):
            x = self.emb(token)
            h, c = fast.lstm_step(x, h, c, self.packed) if use_op else self.cell(x, (h, c))
            token = self.head(h).argmax(-1)
            out.append(token)
        return torch.cat(out), h, c


def test_compiled_greedy_loop_is_one_graph_with_the_same_results():
    torch.manual_seed(1)
    model = Greedy()
    start = torch.tensor([3])
    want = model(start, use_op=False)
    eager = model(start)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    got = compiled(start)
    assert counter.frame_count == 1 and len(counter.graphs) == 1
    op = torch.ops.rnnlab.lstm_step
    steps = [n for n in counter.graphs[0].graph.nodes if n.target in (op, op.default)]
    assert len(steps) == 7                                             # one opaque call per step
    assert torch.equal(got[0], want[0]) and torch.equal(eager[0], want[0])
    for a, b in zip(got[1:], want[1:]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    got2 = compiled(torch.tensor([5]))                                # another start token: no recompile
    assert counter.frame_count == 1
    assert torch.equal(got2[0], model(torch.tensor([5]), use_op=False)[0])


class OneStep(nn.Module):
    def __init__(self, I=5, H=12):
        super().__init__()
        torch.manual_seed(2)
        self.cell = nn.LSTMCell(I, H).requires_grad_(False)
        self.register_buffer("packed", fast.lstm_step_pack(self.cell.weight_ih, self.cell.weight_hh,
                                                           self.cell.bias_ih, self.cell.bias_hh))

    def forward(self, x, h, c):
        return fast.lstm_step(x, h, c, self.packed)


def test_export_holds_the_operator_and_matches():
    m = OneStep()
    args = (torch.randn(1, 5), torch.randn(1, 12), torch.randn(1, 12))
    ep = torch.export.export(m, args)
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert torch.ops.rnnlab.lstm_step.default in targets
    new = (torch.randn(1, 5), torch.randn(1, 12), torch.randn(1, 12))
    got = ep.module()(*new)
    want = m.cell(new[0], (new[1], new[2]))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_refusals():
    cell, _ = _cell_and_lstm(3, 8)
    packed = fast.lstm_step_pack(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert not packed.requires_grad                       # the helper packs detached weights
    h = c = torch.zeros(1, 8)
    with pytest.raises(RuntimeError, match="inference only"):
        fast.lstm_step(torch.randn(1, 3, requires_grad=True), h, c, packed)
    with pytest.raises(RuntimeError, match="inference only"):
        torch.ops.rnnlab.lstm_step_pack(cell.weight_ih, cell.weight_hh, None, None, 1)
    with torch.no_grad():                                 # grad mode off: the same inputs run
        assert fast.lstm_step(torch.randn(1, 3, requires_grad=True), h, c, packed)[0].shape == (1, 8)
    with pytest.raises(RuntimeError, match="batch 1 only"):
        fast.lstm_step(torch.randn(2, 3), torch.zeros(2, 8), torch.zeros(2, 8), packed)
    with pytest.raises(RuntimeError, match="expected I = 3"):
        fast.lstm_step(torch.randn(1, 4), h, c, packed)
    with pytest.raises(RuntimeError, match="float32"):
        fast.lstm_step(torch.randn(1, 3, dtype=torch.float64), h, c, packed)
    with pytest.raises(RuntimeError, match="not rnnlab::lstm_step_pack's output"):
        fast.lstm_step(torch.randn(1, 3), h, c, packed[:-1])
