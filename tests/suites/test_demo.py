"""The demo: a tiny suite end to end (files, sections, embedded images, records), and the
generated reading says what the numbers say, including when they contradict the claim."""

import json

import pytest

from rnnlab.errors import ConfigError
from rnnlab.suites.demo import DemoConfig, reading, run_demo


@pytest.mark.slow
def test_tiny_suite_writes_results_and_a_self_contained_report(tmp_path):
    cfg = DemoConfig(suite="quick", steps=3, hidden_size=4, tasks=["checksum", "adding"], cells=["rnn", "lstm"],
                     lengths={"checksum": [6, 8], "adding": [6]})
    res = run_demo(cfg, tmp_path / "demo", progress=False)
    data = json.loads(res.results_json.read_text())
    recs = data["records"]
    assert len(recs) == 3 * 2                    # (2 checksum lengths + 1 adding) x 2 cells
    for r in recs:
        for key in ("task", "cell", "length", "metric", "value", "chance", "params", "seconds",
                    "memory_horizon", "memory_horizon_init"):
            assert key in r
        assert r["steps"] == 3
    assert {(r["task"], r["length"]) for r in recs} == {("checksum", 6), ("checksum", 8), ("adding", 6)}
    html = res.report.read_text()
    for section in ("Reading", "Accuracy / error against length", "Results", "Gradient through time",
                    "Gates", "Loss curves", "Setup"):
        assert f"<h2>{section}</h2>" in html
    # metric-vs-length, 2 gradient figures, checksum gate histogram + 1 heat map, loss curves
    assert html.count('src="data:image/png;base64,') == 6
    assert "http://" not in html and "https://" not in html and "<script" not in html


def _rec(task, cell, T, value, chance=0.5, metric="acc", hib=True):
    return {"task": task, "cell": cell, "length": T, "value": value, "chance": chance, "metric": metric,
            "higher_is_better": hib, "baseline": "chance", "params": {"rnn": 10, "lstm": 40, "gru": 30}[cell]}


def test_reading_reports_the_claim_and_its_contradiction():
    claim = [_rec("checksum", "rnn", 100, 0.51), _rec("checksum", "lstm", 100, 0.99),
             _rec("checksum", "gru", 100, 0.97)]
    text = " ".join(reading(claim))
    assert "As the claim predicts, at T=100" in text and "Against the claim" not in text
    against = [_rec("distractor", c, T, 0.98) for c in ("rnn", "lstm", "gru") for T in (25, 100)]
    text = " ".join(reading(against))
    assert "Against the claim" in text and "up to T=100" in text
    worse = [_rec("adding", "rnn", 50, 0.01, 1 / 6, "mse", False), _rec("adding", "lstm", 50, 0.15, 1 / 6, "mse", False),
             _rec("adding", "gru", 50, 0.02, 1 / 6, "mse", False)]
    assert "the LSTM did worse than the plain RNN" in " ".join(reading(worse))
    assert "GRU/LSTM = 0.75" in " ".join(reading(worse))


def test_bad_demo_config():
    with pytest.raises(ConfigError):
        DemoConfig(suite="huge")
    with pytest.raises(ConfigError):
        DemoConfig(tasks=["nope"])
