"""ONNX export: ONNX Runtime's outputs equal rnnlab's (1e-5) for every cell and layer
configuration, at a batch size and sequence length other than the ones exported with."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.errors import ConfigError
from rnnlab.export.onnx import _flat, export_onnx, to_torch

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install rnnlab[onnx]")
pytest.importorskip("onnx", reason="onnx not installed: pip install rnnlab[onnx]")

from rnnlab.export.onnx import onnx_session, run_onnx  # noqa: E402

LAYERS = [
    (rnnlab.LSTM, {}),
    (rnnlab.LSTM, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    (rnnlab.LSTM, {"bias": False, "dropout": 0.3, "num_layers": 2}),
    (rnnlab.GRU, {}),
    (rnnlab.GRU, {"num_layers": 2, "bidirectional": True, "bias": False}),
    (rnnlab.RNN, {"nonlinearity": "relu", "batch_first": True}),
    (rnnlab.RNN, {"num_layers": 3, "bidirectional": True}),
]


def _assert_ort_matches(m, sess, kw, hidden: int, B: int, T: int) -> None:
    """ONNX Runtime's outputs for a random (x, state) equal the layer's own eval outputs to 1e-5."""
    L, D = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    x = torch.randn((B, T, 4) if kw.get("batch_first") else (T, B, 4))
    h0 = torch.randn(L * D, B, hidden)
    state = (h0, torch.randn_like(h0)) if isinstance(m, rnnlab.LSTM) else h0
    with torch.no_grad():
        want = _flat(m.eval()(x, state))
    got = run_onnx(sess, x, state)
    assert len(got) == len(want)
    for name, g, w in zip(["output", "h_n", "c_n"], got, want):
        assert g.shape == tuple(w.shape), name
        torch.testing.assert_close(torch.from_numpy(g), w, atol=1e-5, rtol=1e-5, msg=lambda s: f"{name}: {s}")


def _assert_model_export_matches(m, tmp_path) -> None:
    """A whole model (input (B, T, 3)) exported with dynamic axes runs in ORT as in torch at other sizes."""
    path = export_onnx(m, tmp_path / "t.onnx", example_inputs=(torch.randn(2, 4, 3),), input_names=["x"],
                       output_names=["y"], dynamic_axes={"x": {0: "b", 1: "t"}, "y": {0: "b", 1: "t"}})
    x = torch.randn(3, 9, 3)
    got = run_onnx(onnx_session(path), x)[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), m(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"run_onnx inputs: expected 1, in the graph's order \(x\), got 2"):
        run_onnx(onnx_session(path), x, x)


@pytest.mark.parametrize("cls,kw", LAYERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_layer_matches_onnxruntime(tmp_path, cls, kw) -> None:
    torch.manual_seed(0)
    m = cls(4, 6, **kw)
    path = export_onnx(m, tmp_path / "m.onnx")
    sess = onnx_session(path)
    _assert_ort_matches(m, sess, kw, hidden=6, B=5, T=11)   # exported with (2, 3): the axes are dynamic


@pytest.mark.parametrize("cls", [rnnlab.LSTMCell, rnnlab.GRUCell, rnnlab.RNNCell])
def test_cell_matches_onnxruntime(tmp_path, cls) -> None:
    torch.manual_seed(1)
    m = cls(4, 6)
    sess = onnx_session(export_onnx(m, tmp_path / "c.onnx"))
    x, h = torch.randn(7, 4), torch.randn(7, 6)
    state = (h, torch.randn_like(h)) if cls is rnnlab.LSTMCell else h
    with torch.no_grad():
        want = _flat(m(x, state))
    got = run_onnx(sess, x, state)
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(g), w, atol=1e-5, rtol=1e-5)


def test_model_with_rnnlab_layers(tmp_path) -> None:
    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnnlab.GRU(3, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    m = Tagger().eval()
    _assert_model_export_matches(m, tmp_path)


@pytest.mark.parametrize("kw", [{}, {"locked_dropout": True, "num_layers": 2}, {"weight_drop": 0.3}],
                         ids=["stack", "locked-dropout-2-layers", "weight-drop"])
def test_tied_adaptive_language_model(tmp_path, kw) -> None:
    """A language model whose embedding is read from its adaptive softmax exports with the
    weights still shared, one layer per level included (locked dropout, weight drop: the state
    is one (h, c) per level), and scores a longer sequence and another batch as in torch."""
    from rnnlab.tasks.lm import LanguageModel

    torch.manual_seed(0)
    m = LanguageModel(60, "lstm", 16, embed=16, tied=True, adaptive_cutoffs=(10, 30), **kw).eval()
    levels = kw.get("num_layers", 1) if m.rnn is None else 0
    states = ["h_n", "c_n"] if not levels else [f"{n}_{i}" for i in range(levels) for n in ("h_n", "c_n")]
    path = export_onnx(m, tmp_path / "lm.onnx", example_inputs=(torch.randint(0, 60, (4, 2)),),
                       input_names=["input"], output_names=["logits", *states],
                       dynamic_axes={"input": {0: "seq", 1: "batch"}, "logits": {0: "seq", 1: "batch"},
                                     **{n: {1: "batch"} for n in states}})
    x = torch.randint(0, 60, (9, 3))
    x[0] = torch.tensor([0, 15, 59])                 # a word of the head and of each cluster
    with torch.no_grad():
        want, state = m(x)
    got = run_onnx(onnx_session(path), x)
    torch.testing.assert_close(torch.from_numpy(got[0]), want, atol=1e-5, rtol=1e-5)
    assert len(got) == 1 + len(states)
    torch.testing.assert_close(torch.from_numpy(got[-1]), _flat(state)[-1], atol=1e-5, rtol=1e-5)


def test_refuses_what_it_cannot_export(tmp_path) -> None:
    with pytest.raises(ConfigError, match="proj_size"):
        export_onnx(rnnlab.LSTM(3, 5, proj_size=2), tmp_path / "p.onnx")
    with pytest.raises(ConfigError, match="example_inputs"):
        export_onnx(torch.nn.Sequential(torch.nn.Linear(2, 2)), tmp_path / "s.onnx")


def test_twin_state_dict_round_trip() -> None:
    m = rnnlab.LSTM(3, 4, num_layers=2, bidirectional=True)
    twin = to_torch(m)
    assert isinstance(twin, torch.nn.LSTM)
    for k, v in m.state_dict().items():
        assert torch.equal(twin.state_dict()[k], v), k


def test_export_run_cli(tmp_path) -> None:
    """`rnnlab export RUN --onnx`: a trained run's model runs in ONNX Runtime with rnnlab's numbers,
    at a sequence length other than the exported one."""
    from rnnlab.cli.main import main
    from rnnlab.tasks.toy import ToyConfig, ToyTask
    from rnnlab.train import TrainConfig
    from rnnlab.train.loop import fit
    from rnnlab.train.rundir import load_run

    run = tmp_path / "run"
    fit(ToyTask(ToyConfig(cell="lstm", hidden_size=6, streams=2, seq_len=5, batches_per_epoch=2)),
        TrainConfig(max_steps=2, eval_every=2, checkpoint_every=2, threads=1, quiet=True, report=False), run)
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--onnx", str(out)]) in (0, None)
    _, model, _ = load_run(run)
    x = torch.randn(9, 3, 1)
    with torch.no_grad():
        want = _flat(model(x))
    got = run_onnx(onnx_session(out), x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(g), w, atol=1e-5, rtol=1e-5)
    # how the inputs were made travels with the graph: the task and its metadata, as config.json has them
    import json

    import onnx
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    saved = json.loads((run / "config.json").read_text())
    assert props["rnnlab.task"] == saved["task"] == "toy"
    assert json.loads(props["rnnlab.task_metadata"]) == saved["task_metadata"]


# Variants torch.nn lacks: exported as a plain-op time loop (an ONNX Loop), so one file serves
# every sequence length and batch size.
VARIANTS = [
    (rnnlab.LSTM, {"layer_norm": True}),
    (rnnlab.LSTM, {"peephole": True}),
    (rnnlab.LSTM, {"coupled_gates": True}),
    (rnnlab.LSTM, {"layer_norm": True, "peephole": True, "num_layers": 2}),
    (rnnlab.LSTM, {"coupled_gates": True, "peephole": True, "bidirectional": True, "batch_first": True,
                   "zoneout": 0.2, "zoneout_cell": 0.1, "recurrent_dropout": 0.3}),
    (rnnlab.GRU, {"layer_norm": True}),
    (rnnlab.GRU, {"gru_reset": "before"}),
    (rnnlab.GRU, {"layer_norm": True, "gru_reset": "before"}),
    (rnnlab.GRU, {"layer_norm": True, "num_layers": 2, "bidirectional": True, "bias": False, "zoneout": 0.25}),
]


def _perturb_extras(m: torch.nn.Module) -> None:
    """Gains 1 / biases 0 / peepholes at init would hide a wrong slice: move them off their init."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith(("ln_", "peephole")):
                p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("cls,kw", VARIANTS, ids=lambda v: getattr(v, "__name__", None) or
                         ",".join(f"{k}={w}" for k, w in v.items()))
def test_variant_layer_matches_onnxruntime(tmp_path, cls, kw) -> None:
    torch.manual_seed(0)
    m = cls(4, 16, **kw)
    _perturb_extras(m)
    path = export_onnx(m, tmp_path / "v.onnx")
    import onnx

    assert any(n.op_type == "Loop" for n in onnx.load(str(path)).graph.node), "expected a dynamic time loop"
    sess = onnx_session(path)
    for B, T in [(5, 11), (1, 2)]:                  # exported with (2, 3): both axes dynamic
        _assert_ort_matches(m, sess, kw, hidden=16, B=B, T=T)


@pytest.mark.parametrize("cls,kw", [(rnnlab.LSTMCell, {"layer_norm": True, "peephole": True, "zoneout": 0.2}),
                                    (rnnlab.LSTMCell, {"coupled_gates": True}),
                                    (rnnlab.GRUCell, {"layer_norm": True, "gru_reset": "before"})])
def test_variant_cell_matches_onnxruntime(tmp_path, cls, kw) -> None:
    torch.manual_seed(2)
    m = cls(4, 8, **kw).eval()
    _perturb_extras(m)
    sess = onnx_session(export_onnx(m, tmp_path / "c.onnx"))
    x, h = torch.randn(7, 4), torch.randn(7, 8)
    state = (h, torch.randn_like(h)) if cls is rnnlab.LSTMCell else h
    with torch.no_grad():
        want = _flat(m(x, state))
    got = run_onnx(sess, x, state)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(g), w, atol=1e-5, rtol=1e-5)


def test_model_with_variant_layer(tmp_path) -> None:
    """A model around a variant layer (called without a state: zeros of the input's batch)."""
    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnnlab.LSTM(3, 8, batch_first=True, layer_norm=True, peephole=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    torch.manual_seed(3)
    m = Tagger().eval()
    _perturb_extras(m)
    _assert_model_export_matches(m, tmp_path)


def test_training_only_options_use_the_fused_operator(tmp_path) -> None:
    """weight_drop / forget_bias / init change nothing at inference: torch.nn's twin, ONNX's LSTM op."""
    import onnx

    m = rnnlab.LSTM(3, 5, weight_drop=0.5, forget_bias=1.0, init="orthogonal")
    assert isinstance(to_torch(m), torch.nn.LSTM)
    path = export_onnx(m, tmp_path / "w.onnx")
    assert any(n.op_type == "LSTM" for n in onnx.load(str(path)).graph.node)


def test_twin_check_refuses_a_wrong_twin(monkeypatch, tmp_path) -> None:
    """The parity check before export is live: a twin whose numbers differ is refused."""
    import copy

    from rnnlab.export import onnx as onnx_mod

    real = onnx_mod.variant_twin

    def off_by_a_peephole(module):
        other = copy.deepcopy(module)
        with torch.no_grad():
            other.peephole_l0.add_(0.5)
        return real(other)

    monkeypatch.setattr(onnx_mod, "variant_twin", off_by_a_peephole)
    with pytest.raises(ConfigError, match="export twin to match"):
        export_onnx(rnnlab.LSTM(3, 5, peephole=True), tmp_path / "x.onnx")


def _toy_run(tmp_path):
    from rnnlab.tasks.toy import ToyConfig, ToyTask
    from rnnlab.train import TrainConfig
    from rnnlab.train.loop import fit

    run = tmp_path / "run"
    fit(ToyTask(ToyConfig(cell="gru", hidden_size=6, streams=2, seq_len=5, batches_per_epoch=2)),
        TrainConfig(max_steps=2, eval_every=2, checkpoint_every=2, threads=1, quiet=True, report=False), run)
    return run


def _probe_run(tmp_path):
    from rnnlab.cli.main import main

    run = tmp_path / "probe"
    assert main(["train", "probe", "--probe", "checksum", "--length", "6", "--hidden", "8", "--max-steps", "2",
                 "--quiet", "--no-report", "--out", str(run)]) == 0
    return run


def test_export_runs_the_written_graph_in_onnx_runtime_and_reports_it(tmp_path, capsys) -> None:
    """`rnnlab export --json`: the file was run in ONNX Runtime on inputs of another batch size and
    length than the traced ones, and its largest difference from the model is reported."""
    import json

    from rnnlab.cli.main import main

    run = _probe_run(tmp_path)
    capsys.readouterr()
    out = tmp_path / "m.onnx"
    assert main(["export", str(run), "--onnx", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    record = json.loads(cap.out)
    assert record["pt2"] is None and record["int8"] is False
    [entry] = record["onnx"]
    assert entry["path"] == str(out) and out.is_file()
    assert 0 <= entry["runtime_difference"] < 1e-5
    assert record["checked_shape"] == [7, 3] and record["traced_shape"] == [5, 2]
    assert cap.err.splitlines() == [f"wrote {out}", "ONNX Runtime on example inputs of shape (7, 3) (traced with "
                                    f"(5, 2)): largest difference from the model {entry['runtime_difference']:.1e} "
                                    "(relative to the largest output, where above 1)"]
    # a task whose example is its first training batch has no other: the line says the check used it
    toy = _toy_run(tmp_path)
    capsys.readouterr()
    assert main(["export", str(toy), "--onnx", str(tmp_path / "toy.onnx")]) == 0
    assert "ONNX Runtime on the traced example inputs (shape (5, 2, 1))" in capsys.readouterr().out


def test_export_refuses_a_graph_with_the_traced_sizes_fixed(tmp_path, monkeypatch) -> None:
    """A graph exported without dynamic axes cannot take the check's other batch and length:
    ONNX Runtime's refusal is the export's one-line ConfigError, and nothing is written."""
    import rnnlab.export.onnx as onnx_export

    run = _probe_run(tmp_path)
    real = onnx_export.export_onnx
    monkeypatch.setattr(onnx_export, "export_onnx", lambda module, path, **kw: real(module, path, **{**kw, "dynamic_axes": {}}))
    out = tmp_path / "m.onnx"
    with pytest.raises(ConfigError, match=r"shape \(7, 3\).*got inputs it refused; nothing was written"):
        onnx_export.export_run(run, out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_export_refuses_a_graph_that_onnx_runtime_runs_differently(tmp_path, monkeypatch) -> None:
    """A written graph that computes something else (here: another network's weights) is refused
    before the target exists, and leaves no temporary file."""
    import rnnlab.export.onnx as onnx_export

    run = _toy_run(tmp_path)
    real = onnx_export.export_onnx

    def other_network(module, path, **kw):
        other = onnx_export.copy.deepcopy(module)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.5)
        return real(other, path, **kw)

    monkeypatch.setattr(onnx_export, "export_onnx", other_network)
    out = tmp_path / "m.onnx"
    with pytest.raises(ConfigError, match="expected ONNX Runtime to give the model's outputs.*nothing was written"):
        onnx_export.export_run(run, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_export_without_onnxruntime_says_it_did_not_run_the_graph(tmp_path, monkeypatch, capsys) -> None:
    import importlib.util

    from rnnlab.cli.main import main

    run = _toy_run(tmp_path)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    capsys.readouterr()
    out = tmp_path / "m.onnx"
    assert main(["export", str(run), "--onnx", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"wrote {out}", "not run in ONNX Runtime: onnxruntime is not installed (pip install 'rnnlab[onnx]')"]
