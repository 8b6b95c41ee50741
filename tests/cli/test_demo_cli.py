"""`rnnlab probe` and `rnnlab train probe` end to end (tiny budgets), and the demo's flag errors."""

import json

from rnnlab.cli import main


def test_probe_json(capsys):
    assert main(["probe", "adding", "--cell", "gru", "--length", "8", "--steps", "5", "--hidden", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "adding" and out["cell"] == "gru" and out["steps"] == 5
    assert out["metric"] == "mse" and abs(out["chance"] - 1 / 6) < 1e-9 and len(out["loss_curve"]) == 5


def test_probe_and_demo_errors(capsys):
    assert main(["probe", "nope"]) == 1
    assert "probe: expected one of" in capsys.readouterr().err
    assert main(["demo", "--quick", "--full"]) == 1


def test_train_probe_makes_a_run_folder_with_a_report(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "probe", "--probe", "checksum", "--cell", "lstm", "--length", "6", "--hidden", "4",
                 "--steps-per-epoch", "3", "--max-steps", "3", "--quiet", "--out", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Gradient through time" in html and "Gates" in html
