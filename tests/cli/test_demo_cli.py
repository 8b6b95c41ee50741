"""`rnnlab probe` and `rnnlab train probe` end to end (tiny budgets), and the demo's flag errors."""

import json

from rnnlab.cli import main


def test_probe_json(capsys):
    assert main(["probe", "adding", "--cell", "gru", "--length", "8", "--steps", "5", "--hidden", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "adding" and out["cell"] == "gru" and out["steps"] == 5
    assert out["metric"] == "mse" and abs(out["chance"] - 1 / 6) < 1e-9 and len(out["loss_curve"]) == 5


def test_probe_and_demo_errors(capsys, tmp_path):
    assert main(["probe", "nope"]) == 1
    assert "probe: expected one of" in capsys.readouterr().err
    assert main(["demo", "--quick", "--full"]) == 1
    assert main(["demo", "--quick", "--jobs", "0"]) == 1
    assert "--jobs: expected an integer >= 1" in capsys.readouterr().err
    for flags, message in ((["--threads", "0"], "--threads (demo threads): expected an integer >= 1, got 0"),
                           (["--max-time", "nan"], "--max-time (demo seconds): expected a number of seconds >= 0")):
        assert main(["demo", "--quick", *flags, "--out", str(tmp_path / "d")]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    # a gate bias for the vanilla RNN, which has no gate, is refused (it was ignored), before any run folder
    for argv in (["probe", "checksum", "--cell", "rnn", "--memory-bias", "2"],
                 ["train", "probe", "--cell", "rnn", "--memory-bias", "2", "--out", str(tmp_path / "p")]):
        assert main(argv) == 1
        assert ("--memory-bias: expected a gated --cell (lstm: forget gate, gru: update gate; the vanilla RNN has no "
                "gate), got --cell rnn") in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_train_probe_makes_a_run_folder_with_a_report(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "probe", "--probe", "checksum", "--cell", "lstm", "--length", "6", "--hidden", "4",
                 "--steps-per-epoch", "3", "--max-steps", "3", "--quiet", "--out", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Gradient through time" in html and "Gates" in html


def _run_folder(path):
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_demo_refuses_to_replace_files_before_training(tmp_path, capsys):
    """An --out holding results.json or report.html is refused unless --force, a file or a path in
    a run folder always, and each before anything is trained (the files are left as they were)."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my page")
    assert main(["demo", "--quick", "--out", str(out)]) == 1
    assert "pass --force" in capsys.readouterr().err
    assert (out / "report.html").read_text() == "my page" and not (out / "results.json").exists()
    (tmp_path / "f.txt").write_text("x")
    assert main(["demo", "--quick", "--out", str(tmp_path / "f.txt")]) == 1
    assert "got an existing file" in capsys.readouterr().err
    run = _run_folder(tmp_path / "run")
    assert main(["demo", "--quick", "--out", str(run), "--force"]) == 1
    assert "outside the run folder" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]


def test_bench_json_is_checked_before_timing(tmp_path, capsys):
    """`rnnlab bench --json` refuses an existing file (without --force) and a path inside a run
    folder before any timing starts, leaving the file as it was."""
    mine = tmp_path / "precious.txt"
    mine.write_text("keep")
    assert main(["bench", "--quick", "--json", str(mine)]) == 1
    assert "pass --force" in capsys.readouterr().err and mine.read_text() == "keep"
    run = _run_folder(tmp_path / "run")
    assert main(["bench", "--quick", "--json", str(run / "config.json"), "--force"]) == 1
    assert "outside the run folder" in capsys.readouterr().err and (run / "config.json").read_text() == "{}"


def test_probe_errors_name_the_probe_commands_own_flags(capsys):
    """rnnlab probe sets run_probe's steps and seed by --max-steps and --seed: its errors do not
    name rnnlab train probe's --steps-per-epoch or --data-seed."""
    assert main(["probe", "adding", "--max-steps", "0"]) == 1
    assert "rnnlab: error: --max-steps (run_probe steps): expected an int >= 1, got 0" in capsys.readouterr().err
    assert main(["probe", "adding", "--seed", "-1"]) == 1
    err = capsys.readouterr().err
    assert "probe seed: expected an int >= 0, got -1" in err and "--data-seed" not in err


def test_demo_json_prints_the_results_object_alone_on_stdout(tmp_path, capsys, monkeypatch):
    from rnnlab.suites import demo as demo_suite

    monkeypatch.setitem(demo_suite.SUITES, "quick", {"steps": 3, "checksum_steps": 3, "lengths": {"checksum": [6]}})
    out = tmp_path / "d"
    assert main(["demo", "--quick", "--jobs", "1", "--json", "--out", str(out)]) in (0, None)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == json.loads((out / "results.json").read_text())
    assert [(r["task"], r["length"], r["steps"]) for r in json.loads(lines[0])["records"]] == [("checksum", 6, 3)] * 3
    assert "demo done in" in captured.err
