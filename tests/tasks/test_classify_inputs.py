"""Classifier runs and the files given to them: --valid / --test checked before training,
``baselines.json`` with --quiet, ``predict`` on labels the run never saw and on long tables
(the sequence id in the output), its warnings as one line, ``evaluate``'s extra flags, wide
tables read by column name, ``--missing drop`` said once, and ``evaluate --json``'s types."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from rnnlab.cli.main import main
from rnnlab.errors import ConfigError, DataError
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


def test_predict_wide_columns_beyond_the_run_warning_is_one_line(tmp_path, capsys):
    """A wide file with more value columns than training: they are no time steps of the run (read by
    name, the run's ten columns are read; the rest is left out, one warning line naming them)."""
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
    assert err == (f"rnnlab: warning: {longer}: left out 10 columns the model was not trained on: 'v10', 'v11', "
                   "'v12', 'v13', 'v14' and 5 more\n")


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


# ----------------------------------------------------------------------------- wide tables: columns by name


def ramps_csv(path, names: list[str], order: list[int] | None = None, extra: str = "", n: int = 8) -> str:
    """Rising ("up") and falling ("down") ramps around zero, one per row, in columns ``names`` (the
    values of step ``order[k]`` in column k); ``extra``: a leading column of that name."""
    steps = len(names)
    order = order if order is not None else list(range(steps))
    rows = []
    for i in range(n):
        y = "up" if i % 2 == 0 else "down"
        ramp = [(t - steps / 2) * (1 if y == "up" else -1) + 0.01 * i for t in range(steps)]
        rows.append(([str(i)] if extra else []) + [f"{ramp[k]:.3f}" for k in order] + [y])
    path.write_text(",".join(([extra] if extra else []) + names + ["label"]) + "\n"
                    + "\n".join(",".join(r) for r in rows) + "\n")
    return str(path)


def probabilities(path) -> list[tuple[str, str]]:
    with open(path) as fh:
        return [(r["line"], r["p_up"]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("wide")
    names = [f"v{t}" for t in range(12)]
    data = ramps_csv(d / "train.csv", names)
    run = d / "run"
    assert main(["train", "classify", "--train", data, "--input", "numeric", "--folds", "1", *TINY, "--no-baselines",
                 "--quiet", "--out", str(run)]) == 0
    return run, d, names


def test_wide_run_records_its_value_columns(wide_run):
    run, _, names = wide_run
    saved = json.loads((run / "config.json").read_text())
    assert saved["task_config"]["value_cols"] == []             # the flag as given stays as it was
    assert saved["task_metadata"]["value_cols"] == names       # the columns training read, in time order


def test_wide_files_are_scored_by_column_name_not_position(wide_run, capsys):
    """The same series with the columns in reverse order (or behind an id column) score and predict
    exactly as the training layout; read by position they were the reversed series."""
    run, d, names = wide_run
    same = ramps_csv(d / "same.csv", names)
    rev = ramps_csv(d / "rev.csv", names[::-1], order=list(range(len(names)))[::-1])
    ided = ramps_csv(d / "ided.csv", names, extra="id")
    capsys.readouterr()
    scores, err = {}, {}
    for f in (same, rev, ided):
        assert main(["evaluate", str(run), "--csv", f, "--json"]) == 0
        cap = capsys.readouterr()
        scores[f], err[f] = json.loads(cap.out.strip().splitlines()[-1]), cap.err
        assert main(["predict", str(run), "--csv", f, "--out", str(d / "p.csv"), "--force"]) == 0
        scores[f]["p"] = probabilities(d / "p.csv")
        err[f] += capsys.readouterr().err
    assert scores[rev] == scores[same] and scores[ided] == scores[same]
    assert err[same] == err[rev] == ""
    assert err[ided] == f"rnnlab: warning: {ided}: left out 1 column the model was not trained on: 'id'\n" * 2


@pytest.mark.parametrize("header, says", [
    ([f"v{t}" for t in range(11)], "got a file without 'v11'"),
    ([f"w{t}" for t in range(12)], "got a file without 'v0', 'v1', 'v2', 'v3', 'v4' and 7 more"),
])
def test_wide_files_without_the_runs_columns_are_refused(wide_run, capsys, header, says):
    run, d, _ = wide_run
    f = ramps_csv(d / "other.csv", header)
    for cmd in (["evaluate", str(run), "--csv", f], ["predict", str(run), "--csv", f, "--out", "-"]):
        assert main(cmd) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"rnnlab: error: {f}: value columns: expected the 12 columns the model was trained on")
        assert err.endswith(says)


def test_wide_runs_without_recorded_columns_read_by_position(wide_run, tmp_path, capsys):
    """Runs from before the columns were recorded keep reading every non-label column in file order."""
    run, d, names = wide_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    for meta in [old / "config.json", *old.glob("checkpoints/*/meta.json")]:
        saved = json.loads(meta.read_text())
        del saved["task_metadata"]["value_cols"]
        meta.write_text(json.dumps(saved))
    renamed = ramps_csv(tmp_path / "renamed.csv", [f"w{t}" for t in range(12)])
    assert main(["evaluate", str(old), "--csv", renamed, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 8


def test_missing_drop_warns_once_in_train_evaluate_and_predict(tmp_path, capsys):
    names = [f"v{t}" for t in range(6)]
    data = ramps_csv(tmp_path / "d.csv", names, n=12)
    lines = (tmp_path / "d.csv").read_text().splitlines()
    lines[1] = ",".join([""] * 6) + ",up"             # a row with no value
    lines[2] = lines[2].replace(lines[2].split(",")[2], "", 1)   # a gap inside a sequence
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    said = (f"rnnlab: warning: {data}: --missing drop removed 1 of 12 rows (sequences with no value or no label) "
            "and 1 missing cell inside a sequence (that time step)")
    assert main(["train", "classify", "--train", data, "--input", "numeric", "--missing", "drop", "--folds", "1",
                 *TINY, "--out", str(run)]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("rnnlab: warning:")]
    assert warned == [said]                      # not again when the run is scored after training
    assert main(["evaluate", str(run), "--csv", data]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [said]
    assert main(["predict", str(run), "--csv", data, "--out", str(tmp_path / "p.csv")]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [said]


@pytest.mark.parametrize("kind, ts", [("numeric", True), ("auto", True), ("text", False)])
def test_unknown_extension_error_names_ts_where_it_is_read(tmp_path, kind, ts):
    f = tmp_path / "x.npy"
    f.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"x.npy: format: expected an extension in \[.*\] or --format") as exc:
        ClassifyTask(ClassifyConfig(train=str(f), input=kind))
    assert ("'.ts'" in str(exc.value)) is ts


def test_evaluate_json_confusion_rows_are_counts_and_undefined_scores_null(text_run, tmp_path, capsys):
    run, _ = text_run
    only_pos = text_csv(tmp_path / "pos.csv", [("good film", "pos"), ("great", "pos")] * 3)
    assert main(["evaluate", str(run), "--csv", only_pos, "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["recall[neg]"] is None                    # no true 'neg' in the file: undefined, not 0
    assert m["recall[pos]"] is not None and m["n"] == 6
    assert all(type(v) is int for k in ("confusion[neg]", "confusion[pos]") for v in m[k])
    assert m["confusion[neg]"] == [0, 0] and sum(m["confusion[pos]"]) == 6
    assert main(["evaluate", str(run), "--csv", only_pos]) == 0
    out = capsys.readouterr().out
    assert "\nconfusion[neg]     0 0\n" in out and "recall[neg]        nan" in out   # printed as before


@pytest.mark.parametrize("kw,also", [(dict(text_col="label"), "--text-col"),
                                     (dict(id_col="id", feature_cols=["v", "label"]), "--feature-cols"),
                                     (dict(id_col="label"), "--id-col"),
                                     (dict(value_cols=["a", "label"]), "--value-cols")])
def test_the_label_column_cannot_be_an_input_too(kw, also):
    """A class read as an input would be learnt from itself: refused, naming both flags."""
    config = ClassifyConfig(train="x.csv", **kw)          # a saved run's config still loads
    with pytest.raises(ConfigError, match=rf"--label-col \(classify label_col\): expected a column other than the "
                                          rf"inputs' \(it is also {also}\), got 'label'"):
        ClassifyTask(config)                              # refused before the file is read
    ClassifyConfig(train="x.csv", **{**kw, "label_col": "class"}).check_label_is_not_an_input()
