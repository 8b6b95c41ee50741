"""Cell options in the tasks: ``cell_options`` config fields (checked early, naming the flag),
the layers they build, the round trip through a run folder, ``--cell-option`` parsing, and the
demo's ablation plumbing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.errors import ConfigError
from rnnlab.tasks.cell_options import check_cell_options, parse_cell_option_flags
from rnnlab.tasks.classify import ClassifyConfig, ClassifyTask
from rnnlab.tasks.forecast import ForecastConfig, ForecastTask
from rnnlab.tasks.lm import LMTask
from rnnlab.tasks.probe import ProbeConfig, ProbeTask

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
LN_PARAMS = {"ln_gain_ih_l0", "ln_gain_hh_l0"}


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT)
    return p


def _param_names(layer) -> set[str]:
    return {n for n, _ in layer.named_parameters()}


# ------------------------------------------------------------------------------- parsing


def test_flags_are_read_by_the_type_of_their_key():
    d = parse_cell_option_flags(["layer_norm=true", "forget_bias=1", "init=chrono", "t_max=100",
                                 "zoneout=0.1", "peephole=off", "zoneout_cell=none"])
    assert d == {"layer_norm": True, "forget_bias": 1, "init": "chrono", "t_max": 100, "zoneout": 0.1,
                 "peephole": False, "zoneout_cell": None}
    assert type(d["zoneout"]) is float and type(d["forget_bias"]) is int
    assert parse_cell_option_flags(None) == {} and parse_cell_option_flags([]) == {}


@pytest.mark.parametrize("items, words", [
    (["layer_norm"], "KEY=VALUE"),
    (["layernorm=1"], "'layernorm'"),
    (["layer_norm=maybe"], "true or false"),
    (["forget_bias=big"], "a number"),
    (["zoneout=0.1", "zoneout=0.2"], "given once"),
])
def test_bad_flags_name_the_flag(items, words):
    with pytest.raises(ConfigError, match="--cell-option") as exc:
        parse_cell_option_flags(items)
    assert words in str(exc.value)


# ------------------------------------------------------------------------- task configs


@pytest.mark.parametrize("options, cell, words", [
    ({"layer_nrom": True}, "lstm", "unknown ['layer_nrom']"),
    ({"layer_norm": True}, "rnn", "layer_norm: expected False for RNN"),
    ({"init": "chrono"}, "lstm", "t_max: expected a finite number > 2"),
    ({"init": "chrono", "t_max": float("inf")}, "gru", "t_max: expected a finite number > 2"),
    ({"forget_bias": float("nan")}, "lstm", "forget_bias: expected a finite number, got nan"),
    ({"zoneout": 1.5}, "gru", "zoneout: expected a probability"),
    ({"peephole": True}, "gru", "peephole"),
    ({"layer_norm": "yes"}, "lstm", "layer_norm: expected True or False"),
])
def test_every_task_config_rejects_bad_options_before_any_data_is_read(options, cell, words, text_file):
    makers = [
        lambda: ClassifyConfig(train="missing.csv", cell=cell, cell_options=options),
        lambda: ForecastConfig(data="missing.csv", targets=["y"], cell=cell, cell_options=options),
        lambda: ProbeConfig(cell=cell, length=6, cell_options=options),
        lambda: LMTask(dict(text=str(text_file), cell=cell, cell_options=options)),
    ]
    for make in makers:
        with pytest.raises(ConfigError, match="--cell-option") as exc:
            make()
        assert words in str(exc.value)


def test_config_keeps_the_canonical_options_and_default_is_empty():
    assert ClassifyConfig(train="x.csv").cell_options == {}
    c = ClassifyConfig(train="x.csv", cell_options={"zoneout": [0.1, 0.2], "layer_norm": False})
    assert c.cell_options == {"zoneout": 0.1, "zoneout_cell": 0.2}   # defaults dropped, pair split
    assert check_cell_options({"init": "torch"}, "gru") == {}
    with pytest.raises(ConfigError, match="init_from"):
        ClassifyConfig(train="x.csv", init_from="lm-run", cell_options={"layer_norm": True})
    with pytest.raises(ConfigError, match="memory_bias"):
        ProbeConfig(length=6, memory_bias=4.0, cell_options={"forget_bias": 1.0})
    ProbeConfig(length=6, memory_bias=4.0, cell_options={"layer_norm": True})  # LN on top of the demo's init


def test_options_reach_the_layers_of_every_task(text_file, tmp_path):
    lm = LMTask(dict(text=str(text_file), hidden_size=8, bptt=5, batch_size=4, cell_options={"layer_norm": True}))
    assert LN_PARAMS <= _param_names(lm.build_model().rnn)
    plain = LMTask(dict(text=str(text_file), hidden_size=8, bptt=5, batch_size=4))
    assert not any(n.startswith("ln_") for n in _param_names(plain.build_model().rnn))

    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in [("good", "pos"), ("bad", "neg")] * 6))
    clf = ClassifyTask(ClassifyConfig(train=str(data), cell="gru", hidden_size=4, embed_dim=4,
                                      cell_options={"layer_norm": True}))
    assert LN_PARAMS <= _param_names(clf.build_model().rnn)

    series = tmp_path / "s.csv"
    series.write_text("y\n" + "\n".join(str(np.sin(i / 3)) for i in range(80)))
    fc = ForecastTask(ForecastConfig(data=str(series), targets=["y"], context=8, horizon=2, hidden_size=4,
                                     cell_options={"forget_bias": 2.0}))
    rnn = fc.build_model().rnn
    assert rnn.options.forget_bias == 2.0
    H = 4   # LSTM gate order i|f|g|o: the forget gate's bias starts at 2 (split over the two biases)
    assert torch.allclose(rnn.bias_ih_l0[H:2 * H] + rnn.bias_hh_l0[H:2 * H], torch.full((H,), 2.0))

    probe = ProbeTask(ProbeConfig(length=6, hidden_size=4, cell_options={"init": "chrono", "t_max": 6}))
    assert probe.build_model().rnn.options.init == "chrono"


# -------------------------------------------------------------- run folders and the CLI


def test_lm_run_saves_options_and_resume_generate_evaluate_rebuild_them(text_file, tmp_path, capsys):
    from rnnlab.tasks.lm import load_lm

    run = tmp_path / "run"
    args = ["train", "lm", "--text", str(text_file), "--hidden", "8", "--bptt", "5", "--batch-size", "4",
            "--cell-option", "layer_norm=true", "--cell-option", "forget_bias=1", "--quiet", "--no-report",
            "--out", str(run)]
    assert main(args + ["--max-steps", "2"]) == 0
    saved = json.loads((run / "config.json").read_text())["task_config"]["cell_options"]
    assert saved == {"layer_norm": True, "forget_bias": 1}
    task, model = load_lm(run)
    assert LN_PARAMS <= _param_names(model.rnn) and model.rnn.options.forget_bias == 1
    assert main(["train", "lm", "--resume", str(run), "--max-steps", "3", "--quiet", "--no-report"]) == 0
    assert main(["generate", str(run), "--length", "5", "--seed", "0"]) == 0
    assert main(["evaluate", str(run), "--json"]) == 0
    assert "ppl" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_errors_name_the_flag(text_file, tmp_path, capsys):
    assert main(["train", "lm", "--text", str(text_file), "--cell", "rnn", "--cell-option", "layer_norm=1",
                 "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "--cell-option" in err and "layer_norm" in err and not (tmp_path / "r").exists()
    assert main(["probe", "adding", "--length", "6", "--cell-option", "colour=red"]) == 1
    assert "--cell-option key" in capsys.readouterr().err


def test_probe_commands_take_cell_options(tmp_path, capsys):
    assert main(["probe", "adding", "--length", "6", "--steps", "2", "--hidden", "4", "--json",
                 "--cell-option", "init=chrono", "--cell-option", "t_max=6"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    run = tmp_path / "run"
    assert main(["train", "probe", "--probe", "adding", "--length", "6", "--hidden", "4", "--steps-per-epoch", "2",
                 "--max-steps", "2", "--quiet", "--no-report", "--cell-option", "layer_norm=on",
                 "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["task_config"]["cell_options"] == {"layer_norm": True}
    for cmd in (["train", "lm"], ["train", "classify"], ["train", "forecast"], ["train", "probe"], ["probe"]):
        assert main(cmd + ["--help"]) == 0
        assert "--cell-option" in capsys.readouterr().out


# --------------------------------------------------------------------------- demo ablation


def test_demo_ablation_plan_is_in_default_and_full_but_not_quick():
    from rnnlab.suites.demo import DemoConfig

    assert DemoConfig(suite="quick").ablation_plan() == []
    plan = DemoConfig(suite="default").ablation_plan()
    assert {(t, T) for t, T, _, _ in plan} == {("checksum", 100), ("adding", 100)}
    assert [v for t, _, _, v in plan if t == "checksum"] == [
        "torch default", "forget_bias=1", "chrono (t_max=100)", "layer_norm + memory_bias=4"]
    assert {(t, T) for t, T, _, _ in DemoConfig(suite="full").ablation_plan()} == {("checksum", 400), ("adding", 200)}
    assert DemoConfig(suite="default", ablation=False).ablation_plan() == []


def test_demo_runs_the_ablation_and_reports_it(tmp_path, monkeypatch):
    from rnnlab.suites import demo

    monkeypatch.setitem(demo.SUITES, "default", {"steps": 2, "checksum_steps": 2, "ablation": True,
                                                 "lengths": {"checksum": [6], "adding": [5]}})
    cfg = demo.DemoConfig(suite="default", hidden_size=4, cells=["lstm"])
    res = demo.run_demo(cfg, tmp_path / "demo", progress=False)
    data = json.loads(res.results_json.read_text())
    assert len(data["records"]) == 2 and all("variant" not in r for r in data["records"])
    abl = data["ablation"]
    assert sorted((r["task"], r["variant"]) for r in abl) == sorted(
        (t, v) for t, T in (("checksum", 6), ("adding", 5)) for v in demo.ablation_variants(T, 4.0))
    by = {(r["task"], r["variant"]): r for r in abl}
    assert by["checksum", "torch default"]["cell_options"] == {} and by["checksum", "torch default"]["memory_bias"] is None
    assert by["adding", "chrono (t_max=5)"]["cell_options"] == {"init": "chrono", "t_max": 5.0}
    assert by["adding", "layer_norm + memory_bias=4"]["memory_bias"] == 4.0
    assert all(r["cell"] == "lstm" and r["steps"] == 2 for r in abl)
    html = res.report.read_text()
    assert "<h2>Ablation: initialisation and layer norm</h2>" in html
    assert "memory_bias=4 (main suite)" in html and "<b>checksum</b> T=6 (LSTM" in html
