"""Classifier runs and the files given to them: --valid / --test checked before training,
``baselines.json`` with --quiet, ``predict`` on labels the run never saw and on long tables
(the sequence id in the output), its warnings as one line, and ``evaluate``'s extra flags."""

from __future__ import annotations

import csv
import json

import pytest

from rnnlab.cli.main import main
from rnnlab.errors import DataError
from rnnlab.tasks.classify import ClassifyConfig, ClassifyTask

TINY = ["--hidden", "8", "--embed", "8", "--max-steps", "3", "--no-report"]


def text_csv(path, rows) -> str:
    path.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny text classifier trained with --quiet, and its training file."""
    d = tmp_path_factory.mktemp("text")
    data = text_csv(d / "text.csv", [("good film", "pos"), ("bad film", "neg"), ("great", "pos"), ("awful", "neg")] * 6)
    run = d / "run"
    assert main(["train", "classify", "--train", data, *TINY, "--quiet", "--out", str(run)]) == 0
    return run, data


def long_csv(path, ids, labels, steps: int = 6) -> str:
    rows = ["sid,t,x,label"]
    for s, y in zip(ids, labels):
        rows += [f"{s},{t},{(t if y == 'up' else -t) + 0.1 * (ord(s[-1]) % 3):.3f},{y}" for t in range(steps)]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_quiet_run_keeps_baselines_json(text_run):
    run, _ = text_run
    table = json.loads((run / "baselines.json").read_text(encoding="utf-8"))
    assert table["split"] == "valid" and [r["name"] for r in table["rows"]] == ["model", "majority class"]
    assert not list(run.glob(".tmp-*"))   # written atomically: no temporary file left


@pytest.mark.parametrize("flag", ["--valid", "--test"])
def test_unseen_label_in_valid_or_test_stops_before_training(tmp_path, capsys, flag):
    data = text_csv(tmp_path / "text.csv", [("good", "pos"), ("bad", "neg")] * 6)
    unseen = text_csv(tmp_path / "unseen.csv", [("good", "pos"), ("bad", "neg"), ("ok", "maybe"), ("fine", "pos")])
    for steps in ("3", "2"):
        run = tmp_path / f"run{flag}{steps}"
        assert main(["train", "classify", "--train", data, flag, unseen, "--eval-every", "1", *TINY,
                     "--max-steps", steps, "--out", str(run)]) == 1
        cap = capsys.readouterr()
        err = cap.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rnnlab: error: ")
        assert "unseen.csv, line 4" in err[0] and "got unseen 'maybe'" in err[0]
        assert "step 1" not in cap.err + cap.out   # no training step ran
        assert not run.exists()                    # as for a bad --train file: no run folder at all
    # the Python API too: the task refuses the file when it is built
    with pytest.raises(DataError, match="line 4.*unseen 'maybe'"):
        ClassifyTask(ClassifyConfig(train=data, **{flag[2:]: unseen}))


def test_predict_keeps_rows_with_unseen_labels(text_run, tmp_path, capsys):
    run, _ = text_run
    new = text_csv(tmp_path / "new.csv", [("good", "pos"), ("bad", "neg"), ("ok", "maybe"), ("fine", "pos")])
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), "--csv", new, "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "predict: 4 rows" in cap.out
    assert cap.err.strip() == (f"rnnlab: warning: {new}: 1 of 4 rows have a label the model never saw ('maybe'): "
                               "predicted, but they cannot be scored")
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["pos", "neg", "maybe", "pos"]
    assert [r["line"] for r in rows] == ["2", "3", "4", "5"]
    assert all(r["pred"] in ("neg", "pos") and abs(float(r["p_neg"]) + float(r["p_pos"]) - 1) < 1e-5 for r in rows)
    # evaluate still refuses such a file: it scores every row
    assert main(["evaluate", str(run), "--csv", new]) == 1
    assert "got unseen 'maybe'" in capsys.readouterr().err


def test_predict_long_table_writes_the_sequence_id(tmp_path, capsys):
    ids = [f"s{i}" for i in range(8)]
    data = long_csv(tmp_path / "long.csv", ids, ["up", "down"] * 4)
    run = tmp_path / "run"
    assert main(["train", "classify", "--train", data, "--id-col", "sid", "--feature-cols", "x", "--time-col", "t",
                 *TINY, "--no-baselines", "--quiet", "--out", str(run)]) == 0
    new = long_csv(tmp_path / "new.csv", ["b", "a", "c"], ["up", "down", "maybe"])
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), "--csv", new, "--out", str(out)]) == 0
    assert "1 of 3 sequences have a label the model never saw ('maybe')" in capsys.readouterr().err
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["sid", "line", "label", "pred", "p_down", "p_up"]
    assert [(r["sid"], r["line"], r["label"]) for r in rows] == [("b", "2", "up"), ("a", "8", "down"),
                                                                ("c", "14", "maybe")]
    # without the label column too
    (tmp_path / "nolabel.csv").write_text("sid,t,x\n" + "\n".join(f"z{i // 4},{i % 4},{i}" for i in range(8)) + "\n")
    assert main(["predict", str(run), "--csv", str(tmp_path / "nolabel.csv"), "--out", str(out), "--force"]) == 0
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:3] == ["sid", "line", "pred"] and [r["sid"] for r in rows] == ["z0", "z1"]


def test_predict_cut_warning_is_one_line(tmp_path, capsys):
    wide = tmp_path / "wide.csv"
    wide.write_text("label," + ",".join(f"v{i}" for i in range(10)) + "\n" + "\n".join(
        f"{y}," + ",".join(str(i if y == "up" else -i) for i in range(10)) for y in ["up", "down"] * 4) + "\n")
    run = tmp_path / "run"
    assert main(["train", "classify", "--train", str(wide), "--input", "numeric", *TINY, "--no-baselines", "--quiet",
                 "--out", str(run)]) == 0
    longer = tmp_path / "longer.csv"
    longer.write_text("label," + ",".join(f"v{i}" for i in range(20)) + "\n" + "up," + ",".join(map(str, range(20))) + "\n")
    capsys.readouterr()
    assert main(["predict", str(run), "--csv", str(longer), "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"rnnlab: warning: {longer}: 1 of 1 sequences are longer than 10 steps and were cut")
    assert len(err.strip().splitlines()) == 1 and "DataWarning" not in err


@pytest.mark.parametrize("extra, says", [
    (["--jsn"], "No such option: --jsn"),
    (["--cvs", "FILE"], "No such option: --cvs"),
    (["--csv"], "Option '--csv' requires an argument"),
    (["--encoding", "latin-1"], "--encoding: expected it with --csv FILE"),
    (["--confusion", "c.csv", "--force=yes"], "Option '--force' does not take a value"),
])
def test_evaluate_extra_flag_typos_are_usage_errors(text_run, capsys, extra, says):
    run, data = text_run
    assert main(["evaluate", str(run), *[data if a == "FILE" else a for a in extra]]) == 2
    err = capsys.readouterr().err
    assert says in err and "Usage: rnnlab evaluate" in err


def test_evaluate_csv_encoding(text_run, tmp_path, capsys):
    run, _ = text_run
    f = tmp_path / "latin.csv"
    f.write_bytes("text,label\ngood café,pos\nbad crème,neg\n".encode("latin-1"))
    assert main(["evaluate", str(run), "--csv", str(f), "--encoding", "latin-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 2
    assert main(["evaluate", str(run), "--csv=" + str(f), "--encoding=latin-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 2
    assert main(["evaluate", str(run), "--csv", str(f)]) == 1    # read as the run's utf-8: a data error
