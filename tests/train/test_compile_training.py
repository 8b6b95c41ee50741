"""``TrainConfig.compile`` / ``--compile``: the training step through torch.compile.

The compiled runs use the ``aot_eager`` backend (dynamo's graph capture and AOTAutograd's
forward/backward split, without inductor's code generation, which takes a minute per graph on
a busy CPU); the product default, inductor, is measured by ``benchmarks/bench_train_compile.py``.
The language-model runs are float64 (``precision="64-true"``), so a compiled run and an eager
run must agree to rounding.
"""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import pytest
import torch
import typer
from safetensors.torch import load_file

from rnnlab.cli.main import app, main
from rnnlab.errors import ConfigError
from rnnlab.nn.seq2seq import EncoderDecoder
from rnnlab.tasks.classify import ClassifyTask, SequenceClassifier
from rnnlab.tasks.forecast import Forecaster, ForecastTask
from rnnlab.tasks.lm import LanguageModel, LMTask
from rnnlab.tasks.probe import ProbeModel, ProbeTask
from rnnlab.tasks.seq2seq import Seq2SeqTask
from rnnlab.tasks.speech import SpeechModel, SpeechTask
from rnnlab.tasks.toy import ToyModel, ToyTask
from rnnlab.train import TrainConfig, evaluate_run, fit, load_run, resume
from rnnlab.train import compile as train_compile
from rnnlab.train.compile import CompiledModel, compile_methods
from rnnlab.train.metrics import read_records
from train_workers import TRAIN, toy_task

BACKEND = "aot_eager"
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 12 + "pack my box with five dozen liquor jugs.\n" * 6


def weights(run, step):
    return load_file(run / "checkpoints" / f"step-{step:08d}" / "model.safetensors")


def train_records(run):
    return [r for r in read_records(run / "metrics.jsonl") if r["kind"] == "train"]


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    """A tiny LM trained over 6 epochs, eagerly and compiled by ``rnnlab train lm --compile --json``."""
    tmp = tmp_path_factory.mktemp("lmc")
    text = tmp / "corpus.txt"
    text.write_text(TEXT)
    cfg = dict(text=str(text), hidden_size=12, num_layers=2, embed=8, bptt=24, batch_size=3, eval_batch_size=4)
    task = LMTask(cfg)
    steps = sum(1 for e in range(6) for _ in task.train_batches(e))
    lengths = {int(b["x"].shape[0]) for e in range(6) for b in task.train_batches(e)}
    train = dict(max_steps=steps, lr=0.5, threads=1, precision="64-true", checkpoint_every=steps)
    fit(task, TrainConfig.for_task(task, **train, quiet=True, report=False), tmp / "eager")
    args = ["train", "lm", "--text", str(text), "--hidden-size", "12", "--num-layers", "2", "--embed", "8",
            "--bptt", "24", "--batch-size", "3", "--eval-batch-size", "4", "--max-steps", str(steps), "--lr", "0.5",
            "--threads", "1", "--precision", "64-true", "--checkpoint-every", str(steps), "--no-report",
            "--compile", "--compile-backend", BACKEND, "--out", str(tmp / "compiled"), "--json"]
    return tmp, steps, lengths, args


def test_compiled_lm_trains_as_the_eager_one_in_one_graph_for_every_length(lm_runs, capsys):
    tmp, steps, lengths, args = lm_runs
    assert main(args) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    summary = json.loads(captured.out)                                 # stdout: the JSON alone
    eager, compiled = tmp / "eager", tmp / "compiled"
    # the same curve and weights, to float64 rounding
    a, b = train_records(eager), train_records(compiled)
    assert len(a) == len(b) == steps
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-9, abs=1e-12)
    wa, wb = weights(eager, steps), weights(compiled, steps)
    assert wa.keys() == wb.keys() and not any("_orig_mod" in k for k in wb)
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-9, atol=1e-12) for k in wa)
    # The lengths: bptt, and each epoch's shorter last batch (a random offset per epoch).
    assert len(lengths) >= 5, lengths
    # One graph, whatever the length; the epoch's first batch starts from a zero state (as the
    # others from a carried one), so it is no other input structure.
    graphs = [r["compile_graphs"] for r in b]
    assert graphs == [1] * steps, graphs
    assert b[0]["compile_s"] > 0 and all("compile_s" not in r for r in b[1:])
    info = summary["compile"]
    assert info["backend"] == BACKEND and info["methods"] == {"forward": "fullgraph"}
    assert (info["graphs_first_step"], info["graphs"], info["recompiles"], info["last_graph_step"]) == (1, 1, 0, 1)
    assert info["first_step_s"] == pytest.approx(b[0]["compile_s"])
    line = [s for s in err if s.startswith("rnnlab: compiled")]     # the summary, a status line on stderr
    assert info["compiling_steps_s"] == pytest.approx(b[0]["compile_s"])
    assert line == [f"rnnlab: compiled forward (fullgraph) with {BACKEND}: first step {b[0]['compile_s']:.1f} s; "
                    f"1 graph (0 recompilations), the last at step 1; the steps that compiled took "
                    f"{info['compiling_steps_s']:.1f} s"], err
    # The run folder is any run's: it loads and evaluates as the eager run does.
    e, c = evaluate_run(eager, "test", "latest"), evaluate_run(compiled, "test", "latest")
    assert c["loss"] == pytest.approx(e["loss"], rel=1e-9)
    _, model, _ = load_run(compiled, checkpoint="latest")
    assert "forward" not in vars(model)


def toy_config(**changes):
    # float32 (the toy task feeds float32 to its evaluation), no plateau schedule: a last-bit
    # difference between the compiled and the eager step cannot change a decision.
    return TrainConfig(**{**TRAIN, "schedule": "none", "max_steps": 12, **changes})


def test_resume_may_switch_compile_on_or_off(tmp_path, capfd):
    """A compile choice does not change the model: a run continues with or without it, said on stderr."""
    fit(toy_task(), toy_config(), tmp_path / "whole")
    fit(toy_task(), toy_config(max_steps=6, compile=True, compile_backend=BACKEND), tmp_path / "on-off")
    r = resume(tmp_path / "on-off", max_steps=12, compile=False)
    assert r.compile is None and "compile True -> False" in capfd.readouterr().err
    fit(toy_task(), toy_config(max_steps=6), tmp_path / "off-on")
    r = resume(tmp_path / "off-on", max_steps=12, compile=True, compile_backend=BACKEND)
    assert r.compile is not None and r.compile["graphs"] >= 1
    assert "compile False -> True" in capfd.readouterr().err
    whole = weights(tmp_path / "whole", 12)
    for run in ("on-off", "off-on"):
        w = weights(tmp_path / run, 12)
        assert w.keys() == whole.keys()
        assert all(torch.allclose(w[k], whole[k], rtol=1e-4, atol=1e-5) for k in w), run
    # A resumed compiled run compiles again: its config keeps compile=True.
    r = resume(tmp_path / "off-on", max_steps=14)
    assert r.compile is not None and r.compile["first_step_s"] > 0
    assert json.loads((tmp_path / "off-on" / "config.json").read_text())["train_config"]["compile"] is True


def test_a_compiled_run_resumes_exactly(tmp_path):
    """Stopped mid-epoch (dropout, a carried state, plateau, Adam) and resumed compiled: the same
    losses and bitwise the same weights as the uninterrupted compiled run."""
    config = TrainConfig(**{**TRAIN, "max_steps": 12, "compile": True, "compile_backend": BACKEND})
    fit(toy_task(), config, tmp_path / "whole")
    fit(toy_task(), config.replace(max_steps=7), tmp_path / "cut")
    resume(tmp_path / "cut", max_steps=12)
    losses = [[r["loss"] for r in train_records(tmp_path / run)] for run in ("whole", "cut")]
    assert losses[0] == losses[1] and len(losses[0]) == 12
    a, b = weights(tmp_path / "whole", 12), weights(tmp_path / "cut", 12)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_is_eager_and_the_compiled_methods_are_restored(tmp_path):
    """Evaluating after every step compiles no graph more than never evaluating (a compiled
    evaluation would: eval mode and no_grad are guards of the training graph)."""
    graphs = {}
    for every in (1, 0):
        r = fit(toy_task(), toy_config(max_steps=4, eval_every=every, compile=True, compile_backend=BACKEND),
                tmp_path / f"every-{every}")
        graphs[every] = [x["compile_graphs"] for x in train_records(tmp_path / f"every-{every}")]
        assert "forward" not in vars(r.model)     # the class's eager forward again
    evals = [x for x in read_records(tmp_path / "every-1" / "metrics.jsonl") if x["kind"] == "eval"]
    assert len(evals) == 4 and graphs[1] == graphs[0], graphs


def test_compile_methods_default_and_bad_declarations():
    class Plain:
        name = "plain"

    class Bad:
        name = "bad"
        compile_methods = {"forward": "yes"}

    assert compile_methods(Plain()) == {"forward": False}
    with pytest.raises(ConfigError, match="compile_methods: expected a non-empty dict"):
        compile_methods(Bad())
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"Linear.decode to be a method"):
        CompiledModel(model, {"decode": True}, BACKEND)


def test_a_bad_backend_is_refused_before_the_run_folder_is_made(tmp_path):
    with pytest.raises(ConfigError, match=r"--compile-backend \(train config compile_backend\): expected a torch.compile backend"):
        fit(toy_task(), toy_config(compile=True, compile_backend="bogus"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"--compile \(train config compile\): expected true or false"):
        toy_config(compile="yes")


def test_every_built_in_task_names_methods_of_its_model():
    """The methods each task compiles are methods of the model class it builds, in every mode."""
    def prop(cls, **cfg):
        return cls.compile_methods.fget(NS(cfg=NS(**cfg), config=NS(**cfg)))

    cases = [
        (ToyModel, ToyTask.compile_methods), (ProbeModel, ProbeTask.compile_methods),
        (SequenceClassifier, ClassifyTask.compile_methods), (SpeechModel, SpeechTask.compile_methods),
        (LanguageModel, prop(LMTask, adaptive_cutoffs=())), (LanguageModel, prop(LMTask, adaptive_cutoffs=(5,))),
        (Forecaster, prop(ForecastTask, mode="direct")), (Forecaster, prop(ForecastTask, mode="autoregressive")),
        (EncoderDecoder, prop(Seq2SeqTask, scheduled_sampling=0.0)),
        (EncoderDecoder, prop(Seq2SeqTask, scheduled_sampling=0.5)),
    ]
    for model_cls, methods in cases:
        assert methods and all(callable(getattr(model_cls, name, None)) for name in methods), (model_cls, methods)
    assert prop(LMTask, adaptive_cutoffs=()) == {"forward": True}
    assert prop(LMTask, adaptive_cutoffs=(5,)) == {"forward": False}
    assert prop(Seq2SeqTask, scheduled_sampling=0.5) == {"encode": False, "step": False}


def test_a_compiled_run_exports_like_an_eager_one(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    fit(toy_task(), toy_config(max_steps=2, compile=True, compile_backend=BACKEND), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "model.onnx")]) in (0, None)
    assert (tmp_path / "model.onnx").stat().st_size > 0


def test_every_train_command_has_the_compile_flags_with_one_help():
    group = typer.main.get_command(app).commands["train"]
    helps = set()
    for name, command in group.commands.items():
        opts = {o: p for p in command.params for o in (*p.opts, *p.secondary_opts)}
        assert {"--compile", "--no-compile", "--compile-backend"} <= set(opts), name
        helps.add((opts["--compile"].help, opts["--compile-backend"].help))
    assert len(group.commands) >= 7 and len(helps) == 1


def test_without_the_private_graph_hook_compiling_still_runs_uncounted(monkeypatch):
    """torch._dynamo.lookup_backend is private: where a torch lacks it the model is compiled by
    the backend's name and the graphs go uncounted (None), instead of failing."""
    found = train_compile._private()
    monkeypatch.setattr(train_compile, "_private", lambda: NS(**{**vars(found), "lookup_backend": None}))
    model = torch.nn.Linear(3, 2)
    compiled = CompiledModel(model, {"forward": True}, BACKEND)
    assert compiled.counter.backend == BACKEND
    x = torch.randn(4, 3)
    try:
        torch.testing.assert_close(model(x), torch.nn.functional.linear(x, model.weight, model.bias))
        compiled.step_done(1, 0.5)
        assert compiled.counter.graphs is None and compiled.recompiles is None
        assert "graphs not counted" in compiled.describe()
    finally:
        compiled.restore()
    assert "forward" not in vars(model)
