"""torch.compile(fullgraph=True) and torch.export of rnnlab's layers through the fast engine's
operators (engine/ops.py): float64 outputs and every gradient against the eager model, one
graph for five sequence lengths and two batch sizes, an exported program that runs, and an
AOTInductor package that runs in a fresh process without rnnlab's Python code."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import rnnlab
from rnnlab.cli.main import main
from rnnlab.engine import fast as fast_mod
from rnnlab.errors import ConfigError
from rnnlab.tasks.toy import ToyConfig, ToyTask
from rnnlab.train import TrainConfig
from rnnlab.train.loop import fit
from rnnlab.train.rundir import load_run
from tests.conftest import run_fresh_python

pytestmark = [
    pytest.mark.skipif(not fast_mod.available(), reason=f"fast engine unavailable: {fast_mod.unavailable_reason()}"),
    # inductor imports torch.jit code that warns about itself (torch 2.13)
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"),
]

LAYERS = [
    (rnnlab.LSTM, {}), (rnnlab.GRU, {}), (rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}),
    (rnnlab.GRU, {"bias": False}), (rnnlab.LSTM, {"bidirectional": True, "num_layers": 2}),
]
IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu", "gru_nobias", "lstm_bi2"]


def _loss(out, h):
    hh, cc = h if isinstance(h, tuple) else (h, None)
    loss = (out ** 2).sum() + (hh * torch.arange(hh.shape[-1], dtype=hh.dtype)).sum()
    return loss if cc is None else loss + (cc ** 3).sum()


def _graphs_with_ops(counter) -> int:
    """Graphs the backend compiled that hold any op (dynamo also hands it the empty graph of a
    helper frame it runs once: the fast engine's assume_constant_result check)."""
    return sum(1 for g in counter.graphs if any(n.op == "call_function" for n in g.graph.nodes))


def _grads(m, x):
    out, h = m(x)
    g = torch.autograd.grad(_loss(out, h), [x, *m.parameters()])
    return [out.detach()] + [t.detach() for t in (h if isinstance(h, tuple) else (h,))] + list(g)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled_against_eager(m, dtype, same) -> CompileCounterWithBackend:
    """``m`` compiled (fullgraph, dynamic, aot_eager) against itself eager over five lengths and
    two batch sizes: outputs and every gradient compared by ``same(got, want)``, and no
    recompilation after the first shape. Returns the backend's counter."""
    counter = CompileCounterWithBackend("aot_eager")
    cm = torch.compile(m, fullgraph=True, backend=counter, dynamic=True)
    frames = []
    for B, T in [(3, 4), (3, 9), (2, 6), (3, 11), (4, 2)]:
        x = torch.randn(B, T, 5, dtype=dtype, requires_grad=True)
        got, want = _grads(cm, x), _grads(m, x)
        frames.append(counter.frame_count)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            same(a, b)
    assert frames == [frames[0]] * 5                # no recompilation after the first shape
    return counter


def _close64(a, b):
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("cls,kw", LAYERS, ids=IDS)
def test_fullgraph_matches_eager_in_float64_with_one_graph_for_every_shape(cls, kw):
    torch.manual_seed(0)
    counter = _compiled_against_eager(cls(5, 7, batch_first=True, **kw).double(), torch.float64, _close64)
    assert _graphs_with_ops(counter) == 1


def _ops_in(counter) -> set[str]:
    return {str(n.target) for g in counter.graphs for n in g.graph.nodes if "rnnlab" in str(n.target)}


@pytest.mark.skipif(not fast_mod._tiled_op_ready(), reason="the LSTM's unit-major loop does not run on this CPU")
@pytest.mark.parametrize("kw", [{}, {"bidirectional": True, "num_layers": 2}, {"bias": False}], ids=["lstm", "bi2", "nobias"])
def test_compiled_float32_lstm_runs_the_unit_major_operator_at_every_batch_with_one_graph(kw):
    """The loop eager float32 LSTMs take (lstm_tiled.h), as rnnlab::lstm_tiled_forward: outputs and
    every gradient against the float64 model (which runs the row-major loop), at batches whose
    padding differs (0, 1, 2, 5 and 7 columns) and lengths 2..11, through one graph."""
    torch.manual_seed(0)
    m = rnnlab.LSTM(5, 12, batch_first=True, **kw)
    ref = rnnlab.LSTM(5, 12, batch_first=True, **kw).double()
    ref.load_state_dict(m.state_dict())
    counter = CompileCounterWithBackend("aot_eager")
    cm = torch.compile(m, fullgraph=True, backend=counter, dynamic=True)
    frames = []
    for B, T in [(6, 4), (16, 9), (23, 7), (9, 2), (3, 11)]:
        x = torch.randn(B, T, 5, requires_grad=True)
        got = _grads(cm, x)
        want = _grads(ref, x.detach().double().requires_grad_(True))
        frames.append(counter.frame_count)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b.float(), atol=2e-5, rtol=1e-4)
    assert frames == [frames[0]] * 5
    assert _graphs_with_ops(counter) == 1
    assert _ops_in(counter) == {"rnnlab.lstm_tiled_forward"}
    with torch.no_grad():                                  # inference: a second graph, the same numbers
        x = torch.randn(7, 6, 5)
        torch.testing.assert_close(cm(x)[0], ref(x.double())[0].float(), atol=2e-5, rtol=1e-4)


@pytest.mark.skipif(not fast_mod._tiled_op_ready(), reason="the LSTM's unit-major loop does not run on this CPU")
@pytest.mark.parametrize("B", [16, 5], ids=["unpadded", "padded"])
def test_tiled_backward_reads_the_states_behind_out_or_copies_them_with_the_same_gradients(B):
    """Without padding, lstm_tiled_backward reads h_0..h_{T-1} from the buffer the forward's
    ``out`` is a view of; given a copy of out, or with a padded batch (whose gate gradients have
    more columns than out has rows), it builds them from h_0 and out: the same weight gradient
    either way, torch.nn's in float64."""
    torch.manual_seed(0)
    T, I, H = 6, 5, 16
    x, h0, c0 = torch.randn(T, B, I), torch.randn(B, H), torch.randn(B, H)
    w = [torch.randn(4 * H, I) * 0.3, torch.randn(4 * H, H) * 0.3, torch.randn(4 * H), torch.randn(4 * H)]
    out, h, c, cs, gates, tcs = torch.ops.rnnlab.lstm_tiled_forward(x, h0, c0, *w)
    assert out.storage_offset() == B * H                          # a view behind h_0's row
    d_out, dh, dc = torch.randn(T, B, H), torch.randn(B, H), torch.randn(B, H)

    def dw_hh(o):
        return torch.ops.rnnlab.lstm_tiled_backward(d_out, dh, dc, x, h0, o, w[0], w[1], cs, gates, tcs,
                                                    False, False, True, False)[4].clone()

    got, copied = dw_hh(out), dw_hh(out.clone())
    ref = torch.nn.LSTM(I, H).double()
    with torch.no_grad():
        for p, t in zip(ref.parameters(), w):
            p.copy_(t)
    o, (hn, cn) = ref(x.double(), (h0.double()[None], c0.double()[None]))
    want = torch.autograd.grad((o * d_out.double()).sum() + (hn[0] * dh.double()).sum() + (cn[0] * dc.double()).sum(),
                               ref.weight_hh_l0)[0]
    torch.testing.assert_close(got, copied, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not fast_mod._tiled_op_ready(), reason="the LSTM's unit-major loop does not run on this CPU")
def test_set_tiled_off_and_export_keep_the_row_major_operator():
    torch.manual_seed(0)
    m = rnnlab.LSTM(5, 12)
    x = torch.randn(6, 4, 5)
    try:
        fast_mod.set_tiled("off")
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("aot_eager")
        torch.testing.assert_close(torch.compile(m, fullgraph=True, backend=counter)(x)[0], m(x)[0])
        assert _ops_in(counter) == {"rnnlab.seq_forward"}
    finally:
        fast_mod.set_tiled("auto")
    ep = torch.export.export(m.eval(), (x,))          # a program for any CPU and batch: the row-major pair
    targets = {str(n.target) for n in ep.graph.nodes}
    assert "rnnlab.seq_forward.default" in targets and not any("tiled" in t for t in targets)


def test_embedding_lstm_linear_compiles_once_across_five_lengths():
    torch.manual_seed(0)
    emb, rnn, head = torch.nn.Embedding(20, 6), rnnlab.LSTM(6, 8, num_layers=2, batch_first=True), torch.nn.Linear(8, 20)

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.rnn, self.head = emb, rnn, head

        def forward(self, tokens):
            return self.head(self.rnn(self.emb(tokens))[0])

    model = LM().double()
    counter = CompileCounterWithBackend("aot_eager")
    cm = torch.compile(model, fullgraph=True, backend=counter)
    frames = []
    for T in (3, 5, 8, 13, 21):
        tokens = torch.randint(0, 20, (2, T))
        if T == 3:
            torch._dynamo.mark_dynamic(tokens, 1)
        loss = torch.nn.functional.cross_entropy(cm(tokens).flatten(0, 1), tokens.flatten())
        got = torch.autograd.grad(loss, list(model.parameters()))
        ref = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
        want = torch.autograd.grad(ref, list(model.parameters()))
        torch.testing.assert_close(loss, ref, atol=1e-12, rtol=1e-10)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
        frames.append(counter.frame_count)
    assert frames == [frames[0]] * 5
    assert _graphs_with_ops(counter) == 1


OPTIONS = [(rnnlab.LSTM, {"layer_norm": True, "peephole": True}, False), (rnnlab.LSTM, {"layer_norm": True}, False),
           (rnnlab.GRU, {"layer_norm": True, "gru_reset": "before"}, False),
           (rnnlab.LSTM, {"zoneout": 0.3, "bidirectional": True}, False),
           (rnnlab.LSTM, {"recurrent_dropout": 0.3, "zoneout": 0.2, "coupled_gates": True}, True),
           (rnnlab.LSTM, {"peephole": True, "num_layers": 2}, False), (rnnlab.GRU, {"gru_reset": "before"}, False),
           (rnnlab.GRU, {"recurrent_dropout": 0.3, "zoneout": 0.2}, True)]


@pytest.mark.parametrize("cls,kw,training", OPTIONS, ids=["ln_peephole", "ln_fused", "gru_ln_before", "zoneout_bi",
                                                          "masks_training", "peephole2", "gru_before",
                                                          "gru_masks_training"])
def test_cell_options_compile_to_one_graph_for_five_lengths(cls, kw, training):
    """Options run the eager variants scan inside one operator (rnnlab_variants::scan) under
    compile: eager's numbers in float64, one graph across five lengths and two batch sizes. In
    training the layer draws its dropout and zoneout masks in the graph, from torch's generator
    (aot_eager runs them as eager does), so a seed gives both the same masks."""
    torch.manual_seed(0)
    m = cls(4, 6, batch_first=True, **kw).double().train(training)   # eval: zoneout's masks are its expectation
    counter = CompileCounterWithBackend("aot_eager")
    cm = torch.compile(m, fullgraph=True, backend=counter, dynamic=True)
    frames = []
    for B, T in [(3, 5), (3, 9), (2, 7), (3, 12), (5, 3)]:
        x = torch.randn(B, T, 4, dtype=torch.float64, requires_grad=True)
        torch.manual_seed(T)
        got = _grads(cm, x)
        torch.manual_seed(T)
        want = _grads(m, x)
        frames.append(counter.frame_count)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    assert frames == [frames[0]] * 5
    assert _graphs_with_ops(counter) == 1
    assert _ops_in(counter) == {"rnnlab_variants.scan"}


@pytest.mark.parametrize("kw", [{"proj_size": 3}, {"proj_size": 2, "num_layers": 2, "bidirectional": True}],
                         ids=["proj", "proj_bi2"])
def test_projections_compile_to_one_graph_with_eager_numbers(kw):
    """proj_size has no C++ operator: under compile it runs the eager engine inside
    rnnlab_eager::scan, so float64 outputs and every gradient are eager's, with one graph for
    five lengths and two batch sizes."""
    torch.manual_seed(0)
    counter = _compiled_against_eager(rnnlab.LSTM(5, 7, batch_first=True, **kw).double(), torch.float64, _close64)
    assert _graphs_with_ops(counter) == 1 and _ops_in(counter) == {"rnnlab_eager.scan"}


@pytest.mark.parametrize("cls,kw,dtype", [(rnnlab.LSTM, {}, torch.float16), (rnnlab.GRU, {}, torch.bfloat16),
                                          (rnnlab.RNN, {"nonlinearity": "relu"}, torch.bfloat16)],
                         ids=["lstm_half", "gru_bf16", "rnn_relu_bf16"])
def test_half_precision_compiles_to_one_graph_with_eager_numbers(cls, kw, dtype):
    def same(a, b):
        assert a.dtype == dtype and torch.equal(a, b)      # the same eager loop ran

    torch.manual_seed(0)
    counter = _compiled_against_eager(cls(5, 8, batch_first=True, **kw).to(dtype), dtype, same)
    assert _graphs_with_ops(counter) == 1 and _ops_in(counter) == {"rnnlab_eager.scan"}


@pytest.mark.parametrize("cls,kw", [(rnnlab.GRU, {"num_layers": 2}), (rnnlab.RNN, {"bidirectional": True}),
                                    (rnnlab.LSTM, {"bias": False})], ids=["gru2", "rnn_bi", "lstm_nobias"])
def test_without_the_kernels_operators_every_layer_compiles_through_the_eager_loop(cls, kw, monkeypatch):
    """Where the C++ operators are not there (kernels not built), every layer takes
    rnnlab_eager::scan: eager's numbers and gradients in float64, one graph for every shape."""
    monkeypatch.setattr(fast_mod, "_ops_ready", lambda: False)
    torch.manual_seed(0)
    counter = _compiled_against_eager(cls(5, 7, batch_first=True, **kw).double(), torch.float64, _close64)
    assert _graphs_with_ops(counter) == 1 and _ops_in(counter) == {"rnnlab_eager.scan"}


def test_projection_backward_reads_the_forward_buffers_without_running_forward_again(monkeypatch):
    """rnnlab_eager::scan keeps the buffers its backward reads when a gradient is to come: one
    forward loop per training step, as eager; under no_grad it keeps none of them."""
    import importlib

    from rnnlab.engine import eager_op
    scan = importlib.import_module("rnnlab.engine.scan")   # the package's `scan` attribute is the function

    calls, real = [], scan.scan_forward

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(eager_op, "scan_forward", counted)
    monkeypatch.setattr(scan, "scan_forward", counted)     # eager's own loop (rnnlab.engine.scan._Scan)
    m = rnnlab.LSTM(5, 7, proj_size=3, batch_first=True).double()
    cm = torch.compile(m, fullgraph=True, backend="aot_eager", dynamic=True)
    x = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    _grads(cm, x)                                        # compiles
    calls.clear()
    got, want = _grads(cm, x), _grads(m, x)
    assert len(calls) == 2                               # compiled forward + eager's own, no recompute in backward
    for a, b in zip(got, want):
        _close64(a, b)
    w = [p.detach() for p in m.parameters()]
    h0, c0 = torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 7, dtype=torch.float64)
    kept = torch.ops.rnnlab_eager.scan("lstm", x.detach().transpose(0, 1), h0, c0, *w, None, False)[3:]
    assert all(t.numel() == 0 for t in kept)


@pytest.mark.parametrize("cls,kw,function", [(rnnlab.LSTM, {"layer_norm": True}, "_LNLSTMFast"),
                                             (rnnlab.LSTM, {"zoneout": 0.2, "peephole": True}, "_VariantScan"),
                                             (rnnlab.GRU, {"gru_reset": "before"}, "_VariantScan"),
                                             (rnnlab.LSTM, {"layer_norm": True, "coupled_gates": True}, "_VariantScan"),
                                             (rnnlab.GRU, {"layer_norm": True, "gru_reset": "before"}, "_VariantScan"),
                                             (rnnlab.GRU, {"layer_norm": True, "zoneout": 0.1}, "_VariantScan")],
                         ids=["ln_fused", "zoneout_peephole", "gru_before", "ln_coupled", "gru_ln_before", "gru_ln_zoneout"])
def test_cell_option_backward_reads_the_forward_buffers_without_running_forward_again(cls, kw, function, monkeypatch):
    """Under compile (rnnlab_variants::scan) the buffers of the layer-norm LSTM's C++ loop, and of
    the Python variants scan (its per-step layer-norm values stacked over time), go from the forward
    operator to the backward one, so a training step runs the loop forward once, as eager; eager's
    numbers and gradients in float64."""
    from rnnlab.engine import variants as variants_mod

    fn = getattr(variants_mod, function)
    calls, real = [], fn.forward

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(fn, "forward", staticmethod(counted))
    torch.manual_seed(0)
    m = cls(5, 7, batch_first=True, **kw).double().eval()          # eval: zoneout's masks are its expectation
    cm = torch.compile(m, fullgraph=True, backend="aot_eager", dynamic=True)
    x = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    _grads(cm, x)                                        # compiles
    calls.clear()
    got = _grads(cm, x)
    assert len(calls) == 1                               # the compiled step's forward; backward did not run it again
    for a, b in zip(got, _grads(m, x)):
        _close64(a, b)


@pytest.mark.parametrize("cls,kw", [(rnnlab.LSTM, {"layer_norm": True}), (rnnlab.LSTM, {"layer_norm": True, "peephole": True}),
                                    (rnnlab.LSTM, {"zoneout": 0.2, "recurrent_dropout": 0.2, "coupled_gates": True}),
                                    (rnnlab.GRU, {"layer_norm": True, "gru_reset": "before", "recurrent_dropout": 0.2})],
                         ids=["ln_fused", "ln_peephole", "masks_coupled", "gru_ln_before_rd"])
def test_variants_operator_passes_torch_opcheck_with_its_buffers(cls, kw, monkeypatch):
    """torch.library.opcheck on rnnlab_variants::scan as a training step calls it (save=True): the
    fake implementation's shapes and dtypes are the real buffers', no output aliases another or an
    input, and the autograd registration holds."""
    from rnnlab.engine import variants as variants_mod

    calls, real = [], variants_mod._op_scan

    def recorded(spec, engine, *ts):
        calls.append((variants_mod._spec_code(spec), variants_mod.resolve_engine(engine), *ts))
        return real(spec, engine, *ts)

    monkeypatch.setattr(variants_mod, "_op_scan", recorded)
    torch.manual_seed(0)
    m = cls(4, 6, batch_first=True, **kw).double().train()
    torch.compile(m, fullgraph=True, backend="eager")(torch.randn(2, 5, 4, dtype=torch.float64))
    assert calls
    for args in calls:
        torch.library.opcheck(torch.ops.rnnlab_variants.scan.default, (*args, True),
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_layer_norm_lstm_keeps_its_traced_loop_after_set_engine_changes():
    """The operator takes the engine resolved when traced: a compiled layer-norm LSTM (whose
    operator's outputs depend on the loop) keeps running after set_engine changes "auto"'s
    choice, with eager's gradients (inductor checks every output's shape at run time)."""
    torch.manual_seed(0)
    m = rnnlab.LSTM(4, 6, layer_norm=True, batch_first=True).double()
    cm = torch.compile(m, fullgraph=True, backend="inductor", dynamic=True)
    x = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    _grads(cm, x)
    try:
        rnnlab.set_engine("reference")
        got, want = _grads(cm, x), _grads(m, x)
    finally:
        rnnlab.set_engine("auto")
    for a, b in zip(got, want):
        _close64(a, b)


def test_cell_options_export_through_the_plain_ops():
    """export keeps the plain-ops equations (a program without rnnlab's Python code), unrolled
    for the example's length."""
    torch.manual_seed(0)
    m = rnnlab.LSTM(4, 6, layer_norm=True).double().eval()
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    ep = torch.export.export(m, (x,))
    assert not any("rnnlab" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x)[0], m(x)[0], atol=1e-12, rtol=1e-10)


def test_packed_sequences_under_compile_and_export_are_one_clear_error_or_run_eagerly():
    """Their lengths decide the shapes: export and fullgraph compile stop with rnnlab's one line;
    a compile that allows graph breaks runs the layer eagerly, with eager's numbers."""
    torch.manual_seed(0)
    m = rnnlab.LSTM(3, 6)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 4, 3), torch.tensor([5, 4, 2, 1]))
    with pytest.raises(ConfigError, match="PackedSequence input under torch.compile or torch.export"):
        torch.export.export(m, (packed,))
    with pytest.raises(Exception, match="PackedSequence input under torch.compile or torch.export"):
        torch.compile(m, fullgraph=True, backend="aot_eager")(packed)     # dynamo wraps it (Unsupported)
    got, want = torch.compile(m, backend="aot_eager")(packed), m(packed)
    torch.testing.assert_close(got[0].data, want[0].data)
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_inductor_training_and_inference_match_eager():
    torch.manual_seed(0)
    m = rnnlab.LSTM(5, 8, batch_first=True)
    cm = torch.compile(m, fullgraph=True, dynamic=True)
    x = torch.randn(3, 6, 5, requires_grad=True)
    for a, b in zip(_grads(cm, x), _grads(m, x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(cm(x)[0], m(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls,kw", LAYERS, ids=IDS)
def test_export_runs_every_length_like_eager(cls, kw):
    torch.manual_seed(0)
    m = cls(5, 7, batch_first=True, **kw).double().eval()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    ep = torch.export.export(m, (x,), dynamic_shapes={"input": {0: torch.export.Dim("B", max=64),
                                                                 1: torch.export.Dim("T", max=512)}})
    assert any("rnnlab.seq_forward" in str(n.target) for n in ep.graph.nodes)
    for B, T in [(3, 6), (2, 11), (5, 3)]:
        x = torch.randn(B, T, 5, dtype=torch.float64)
        got, want = ep.module()(x), m(x)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


@pytest.mark.slow
def test_pt2_export_of_a_run_runs_in_a_fresh_process_without_rnnlab(tmp_path):
    """`rnnlab export RUN --pt2`: the AOTInductor package runs, after loading the kernels' library
    alone, with the run's numbers, at a sequence length and batch other than the exported ones."""
    run = tmp_path / "run"
    fit(ToyTask(ToyConfig(cell="lstm", hidden_size=6, streams=2, seq_len=5, batches_per_epoch=2)),
        TrainConfig(max_steps=2, eval_every=2, checkpoint_every=2, threads=1, quiet=True, report=False), run)
    package = tmp_path / "model.pt2"
    assert main(["export", str(run), "--pt2", str(package)]) in (0, None)
    _, model, _ = load_run(run)
    x = torch.randn(9, 3, 1)
    with torch.no_grad():
        out = model(x)
    torch.save({"x": x, "y": out[0] if isinstance(out, tuple) else out}, tmp_path / "io.pt")
    code = (
        "import sys, torch\n"
        f"torch.ops.load_library({fast_mod.kernel_library()!r})\n"
        f"run = torch._inductor.aoti_load_package({str(package)!r})\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r})\n"
        "out = run(io['x'])\n"
        "out = out[0] if isinstance(out, (tuple, list)) else out\n"
        "assert not any(k.startswith('rnnlab') for k in sys.modules), 'rnnlab was imported'\n"
        "print((out - io['y']).abs().max().item())\n"
    )
    res = run_fresh_python(code, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert float(res.stdout.strip().splitlines()[-1]) < 1e-5
