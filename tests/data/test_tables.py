"""Loaders for classification and forecasting tables: every path and every user error."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from rnnlab.data.tables import (
    LabelMap,
    Scaler,
    check_length,
    detect_format,
    fill_missing,
    load_forecast_series,
    load_forecast_table,
    load_sequences_long,
    load_sequences_wide,
    load_text_classification,
    read_table,
)
from rnnlab.data.ts_format import load_ts
from rnnlab.errors import ConfigError, DataError, DataWarning


def write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


# ----------------------------------------------------------------------------- text


def test_text_csv_with_quoted_newline_and_string_labels(tmp_path):
    path = write(tmp_path, "a.csv", 'id,text,label\n1,good film,pos\n2,"bad\nfilm",neg\n3,fine,pos\n')
    ex = load_text_classification(path, "text", "label")
    assert ex.texts == ["good film", "bad\nfilm", "fine"]
    assert ex.label_map.names == ["neg", "pos"]
    assert ex.labels == [1, 0, 1]
    assert ex.lines == [2, 3, 5]  # the quoted newline makes row 2 span lines 3-4


def test_text_tsv_and_numeric_labels_sort_numerically(tmp_path):
    path = write(tmp_path, "a.tsv", "text\tlabel\na\t10\nb\t2\nc\t-1\n")
    ex = load_text_classification(path, "text", "label")
    assert ex.label_map.names == ["-1", "2", "10"]
    assert ex.labels == [2, 1, 0]


def test_text_jsonl_labels_of_any_type(tmp_path):
    rows = [{"t": "x y", "y": True}, {"t": "z", "y": 3}, {"t": "w", "y": "3"}, {"t": "v", "y": 3.0}]
    path = write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ex = load_text_classification(path, "t", "y")
    # 3, "3" and 3.0 are the same class "3"; true is its own class
    assert ex.label_map.names == ["3", "true"]
    assert ex.labels == [1, 0, 0, 0]


def test_missing_column_names_file_and_choices(tmp_path):
    path = write(tmp_path, "a.csv", "text,label\nx,1\ny,2\n")
    with pytest.raises(DataError, match=r"a\.csv: --label-col 'lab' not found; expected one of \['text', 'label'\]"):
        load_text_classification(path, "text", "lab")
    numbers = write(tmp_path, "n.csv", "label,v0,v1\n1,0.5,0.7\n0,0.1,0.2\n")   # a numeric table read as text
    with pytest.raises(DataError, match=r"--text-col 'text' not found.*with --text-col; or, if each row is a series "
                                        r"of numbers, pass --input numeric"):
        load_text_classification(numbers, "text", "label")


@pytest.mark.parametrize("content", ["", "   \n\n", "text,label\n"])
def test_empty_files(tmp_path, content):
    path = write(tmp_path, "e.csv", content)
    with pytest.raises(DataError, match="e.csv: expected"):
        load_text_classification(path, "text", "label")


def test_empty_jsonl(tmp_path):
    with pytest.raises(DataError, match="empty file"):
        read_table(write(tmp_path, "e.jsonl", "\n"))


def test_missing_text_or_label_strict_then_drop(tmp_path):
    path = write(tmp_path, "a.csv", "text,label\nx,a\n,b\ny,\nz,b\n")
    with pytest.raises(DataError, match=r"line 3, column 'text': expected a value, got a missing cell"):
        load_text_classification(path, "text", "label")
    with pytest.warns(DataWarning, match=r"a.csv: --missing drop removed 2 of 4 rows with an empty text or a "
                                         r"missing label$"):
        ex = load_text_classification(path, "text", "label", missing="drop")
    assert ex.texts == ["x", "z"] and ex.lines == [2, 5]


def test_single_class_is_an_error(tmp_path):
    path = write(tmp_path, "a.csv", "text,label\nx,a\ny,a\n")
    with pytest.raises(DataError, match=r"expected at least 2 classes, got 1 \(\['a'\]\)"):
        load_text_classification(path, "text", "label")


def test_unseen_label_at_evaluation(tmp_path):
    path = write(tmp_path, "a.csv", "text,label\nx,a\ny,c\n")
    with pytest.raises(DataError, match=r"a.csv, line 3, column 'label': label: expected one seen in training "
                                        r"\['a', 'b'\], got unseen 'c'"):
        load_text_classification(path, "text", "label", label_map=LabelMap(["a", "b"]))


def test_prediction_file_without_label_column(tmp_path):
    path = write(tmp_path, "a.csv", "text\nx\ny\n")
    ex = load_text_classification(path, "text", "label", label_map=LabelMap(["a", "b"]), require_labels=False)
    assert ex.labels is None and ex.texts == ["x", "y"]


def test_ragged_row(tmp_path):
    path = write(tmp_path, "a.csv", "text,label\nx,a\ny,b,extra\n")
    with pytest.raises(DataError, match=r"line 3: fields: expected 2 \(as in the header\), got 3 \(a ragged row\)"):
        read_table(path)


def test_bad_json_line(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"t": "x", "y": 1}\n{"t": oops}\n')
    with pytest.raises(DataError, match=r"a.jsonl, line 2: expected a JSON object, got invalid JSON"):
        read_table(path)
    path = write(tmp_path, "b.jsonl", '[1, 2]\n')
    with pytest.raises(DataError, match="line 1: expected a JSON object, got list"):
        read_table(path)


def test_unknown_extension_and_format():
    with pytest.raises(ConfigError, match="format"):
        read_table("data.xlsx")
    with pytest.raises(ConfigError, match="format"):
        read_table("data.csv", fmt="excel")


def test_duplicate_header_names(tmp_path):
    with pytest.raises(DataError, match="unique column names, got 'a' twice"):
        read_table(write(tmp_path, "a.csv", "a,a\n1,2\n"))


# ----------------------------------------------------------------------------- numeric sequences


def test_wide_layout_equal_and_variable_length(tmp_path):
    path = write(tmp_path, "w.csv", "label,v1,v2,v3,v4\nup,1,2,3,4\ndown,4,3,,\nup,0,1,2,NaN\n")
    ex = load_sequences_wide(path, "label")
    assert [s.shape for s in ex.seqs] == [(4, 1), (2, 1), (3, 1)]  # trailing gaps end a shorter series
    np.testing.assert_array_equal(ex.seqs[1][:, 0], [4, 3])
    assert ex.label_map.names == ["down", "up"] and ex.labels == [1, 0, 1]


def test_wide_layout_interior_gap_and_policies(tmp_path):
    path = write(tmp_path, "w.csv", "label,a,b,c,d\nx,1,,3,4\ny,2,2,2,2\n")
    with pytest.raises(DataError, match=r"w.csv, line 2, column 'b': expected a value, got a missing cell"):
        load_sequences_wide(path, "label")
    assert load_sequences_wide(path, "label", missing="interpolate").seqs[0][:, 0].tolist() == [1, 2, 3, 4]
    assert load_sequences_wide(path, "label", missing="ffill").seqs[0][:, 0].tolist() == [1, 1, 3, 4]
    with pytest.warns(DataWarning, match=r"w.csv: --missing drop removed 1 missing cell inside a sequence \(that time step\)"):
        assert load_sequences_wide(path, "label", missing="drop").seqs[0][:, 0].tolist() == [1, 3, 4]


def test_unparseable_and_infinite_numbers(tmp_path):
    path = write(tmp_path, "w.csv", "label,a,b\nx,1,2\ny,3,abc\n")
    with pytest.raises(DataError, match=r"w.csv, line 3, column 'b': expected a number, got 'abc'"):
        load_sequences_wide(path, "label")
    path = write(tmp_path, "w2.csv", "label,a,b\nx,1,inf\ny,3,4\n")
    with pytest.raises(DataError, match=r"line 2, column 'b': expected a finite number, got 'inf'"):
        load_sequences_wide(path, "label")


def test_long_layout_multivariate_variable_length_ordered_by_time(tmp_path):
    path = write(tmp_path, "l.csv",
                 "sid,t,x,y,cls\n"
                 "a,2,20,200,hi\nb,1,5,50,lo\na,1,10,100,hi\na,3,30,300,hi\nb,2,6,60,lo\n")
    ex = load_sequences_long(path, "sid", "cls", ["x", "y"], time_col="t")
    assert ex.dims == 2
    np.testing.assert_array_equal(ex.seqs[0], [[10, 100], [20, 200], [30, 300]])
    np.testing.assert_array_equal(ex.seqs[1], [[5, 50], [6, 60]])
    assert ex.labels == [0, 1] and ex.label_map.names == ["hi", "lo"]


def test_long_layout_label_must_be_constant_and_time_unique(tmp_path):
    path = write(tmp_path, "l.csv", "sid,x,cls\na,1,p\na,2,q\nb,3,q\n")
    with pytest.raises(DataError, match=r"expected one label per sequence, got \['p', 'q'\] for sequence 'a'"):
        load_sequences_long(path, "sid", "cls", ["x"])
    path = write(tmp_path, "l2.csv", "sid,t,x,cls\na,1,1,p\na,1,2,p\nb,1,3,q\n")
    with pytest.raises(DataError, match=r"line 3, column 't': sequence 'a': expected strictly increasing"):
        load_sequences_long(path, "sid", "cls", ["x"], time_col="t")


# ----------------------------------------------------------------------------- forecasting


def test_forecast_table_targets_covariates_and_iso_time(tmp_path):
    path = write(tmp_path, "f.csv", "date,load,temp\n2024-01-01,1,10\n2024-01-02,2,11\n2024-01-03,3,12\n")
    fr = load_forecast_table(path, ["load"], ["temp"], "date")
    assert fr.targets[:, 0].tolist() == [1, 2, 3] and fr.covariates[:, 0].tolist() == [10, 11, 12]
    assert fr.times == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert np.all(np.diff(fr.time_values) == 86400)


def test_forecast_duplicate_and_unsorted_timestamps(tmp_path):
    dup = write(tmp_path, "d.csv", "t,y\n1,1\n2,2\n2,3\n")
    with pytest.raises(DataError, match=r"d.csv, line 4, column 't': time: expected strictly increasing "
                                        r"timestamps, got a duplicate of line 3"):
        load_forecast_table(dup, ["y"], time_col="t")
    uns = write(tmp_path, "u.csv", "t,y\n2024-01-02,1\n2024-01-01,2\n")
    with pytest.raises(DataError, match=r"line 3, column 't': time: .* got one earlier than line 2; sort the file by "
                                        r"time; if the file holds several series, name the column .* with --id-col"):
        load_forecast_table(uns, ["y"], time_col="t")
    bad = write(tmp_path, "b.csv", "t,y\nmonday,1\n")
    with pytest.raises(DataError, match=r"line 2, column 't': expected a number or an ISO date"):
        load_forecast_table(bad, ["y"], time_col="t")


def test_forecast_missing_policies_leave_no_nan(tmp_path):
    path = write(tmp_path, "m.csv", "y,x\n1,5\nNA,6\n3,\n4,8\n")
    with pytest.raises(DataError, match=r"m.csv, line 3, column 'y': expected a value, got a missing cell"):
        load_forecast_table(path, ["y"], ["x"])
    fr = load_forecast_table(path, ["y"], ["x"], missing="interpolate")
    assert fr.targets[:, 0].tolist() == [1, 2, 3, 4] and fr.covariates[:, 0].tolist() == [5, 6, 7, 8]
    fr = load_forecast_table(path, ["y"], ["x"], missing="ffill")
    assert fr.targets[:, 0].tolist() == [1, 1, 3, 4] and fr.covariates[:, 0].tolist() == [5, 6, 6, 8]
    with pytest.warns(DataWarning, match=r"m.csv: --missing drop removed 2 of 4 rows with a missing cell$"):
        fr = load_forecast_table(path, ["y"], ["x"], missing="drop")
    assert fr.targets[:, 0].tolist() == [1, 4] and fr.lines == [2, 5]
    with pytest.raises(ConfigError, match="missing: expected one of"):
        load_forecast_table(path, ["y"], missing="zero")


def test_series_too_short_names_both_numbers():
    with pytest.raises(DataError, match=r"expected at least context \+ horizon = 24 \+ 6 = 30 rows, got 20"):
        check_length(20, 24, 6, "series")


def test_fill_missing_leading_gap_and_all_missing():
    v = np.array([[np.nan], [2.0], [np.nan], [4.0]])
    assert fill_missing(v, "ffill", ["r"] * 4)[:, 0].tolist() == [2, 2, 2, 4]
    assert fill_missing(v, "interpolate", ["r"] * 4)[:, 0].tolist() == [2, 2, 3, 4]
    with pytest.raises(DataError, match="only missing cells"):
        fill_missing(np.full((3, 1), np.nan), "ffill", ["r"] * 3)


def test_scaler_round_trip_and_constant_column():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    s = Scaler.fit(x)
    assert s.std[1] == 1.0  # a constant column is centred, not divided by zero
    np.testing.assert_allclose(Scaler.from_dict(s.to_dict()).inverse(s.transform(x)), x)


def test_one_column_file_blank_line_is_a_missing_cell_not_a_skipped_row(tmp_path):
    path = write(tmp_path, "one.csv", "y\n1\n\n3\n\n\n")
    with pytest.raises(DataError, match=r"one.csv, line 3, column 'y': expected a value, got a missing cell"):
        load_forecast_table(path, ["y"])
    fr = load_forecast_table(path, ["y"], missing="interpolate")
    assert fr.targets[:, 0].tolist() == [1, 2, 3] and fr.lines == [2, 3, 4]  # trailing blank lines end the file


def test_text_refuses_fill_policies(tmp_path):
    path = write(tmp_path, "a.csv", "text,label\nx,a\ny,b\n")
    with pytest.raises(ConfigError, match="--missing for text: expected error or drop"):
        load_text_classification(path, "text", "label", missing="ffill")


def test_a_folder_given_as_data_file_is_named_as_a_folder(tmp_path):
    (tmp_path / "d.csv").mkdir()    # even with a table's extension
    for path in (tmp_path, tmp_path / "d.csv"):
        with pytest.raises(DataError, match=r"data file: expected a file, got the folder"):
            detect_format(str(path))


# ----------------------------------------------------------------------------- a trained model's wide columns

WIDE = "label,v0,v1,v2\nup,1,2,3\ndown,3,2,1\n"


def test_wide_trained_columns_are_read_by_name_in_any_order(tmp_path):
    """A model's value columns are found by name wherever they stand: a file with its columns in
    another order gives the same sequences (read by position it gave them reversed)."""
    ref = load_sequences_wide(write(tmp_path, "a.csv", WIDE), "label")
    assert ref.columns == ["v0", "v1", "v2"]
    rev = write(tmp_path, "r.csv", "v2,v1,v0,label\n3,2,1,up\n1,2,3,down\n")
    ex = load_sequences_wide(rev, "label", trained_cols=ref.columns)
    assert [s[:, 0].tolist() for s in ex.seqs] == [s[:, 0].tolist() for s in ref.seqs] == [[1, 2, 3], [3, 2, 1]]
    assert ex.columns == ["v0", "v1", "v2"]
    # without trained columns (a run from before they were recorded): every non-label column in file order
    assert load_sequences_wide(rev, "label").seqs[0][:, 0].tolist() == [3, 2, 1]


@pytest.mark.parametrize("header, lacking", [
    ("v0,v1,label", "a file without 'v2'"),                                        # a column missing
    ("w0,w1,w2,label", "a file without 'v0', 'v1', 'v2'"),                          # renamed
])
def test_wide_trained_columns_missing_from_the_file_are_named(tmp_path, header, lacking):
    cells = ",".join(["1"] * (header.count(",")))
    path = write(tmp_path, "m.csv", f"{header}\n{cells},up\n{cells},down\n")
    with pytest.raises(DataError, match=r"m.csv: value columns: expected the 3 columns the model was trained on, by "
                                        rf"name in any order \('v0', 'v1', 'v2'\), got {lacking}$"):
        load_sequences_wide(path, "label", trained_cols=["v0", "v1", "v2"])


def test_wide_trained_columns_leave_other_columns_out_with_one_warning(tmp_path):
    path = write(tmp_path, "x.csv", "id,v0,v1,v2,label,note\n7,1,2,3,up,a\n8,3,2,1,down,b\n")
    with pytest.warns(DataWarning, match=r"x.csv: left out 2 columns the model was not trained on: 'id', 'note'$") as got:
        ex = load_sequences_wide(path, "label", trained_cols=["v0", "v1", "v2"])
    assert len(got) == 1 and [s[:, 0].tolist() for s in ex.seqs] == [[1, 2, 3], [3, 2, 1]]
    # a prediction file without the label column: the label is no column to leave out
    path = write(tmp_path, "p.csv", "v1,v0,v2\n2,1,3\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        ex = load_sequences_wide(path, "label", label_map=LabelMap(["down", "up"]), require_labels=False,
                                 trained_cols=["v0", "v1", "v2"])
    assert ex.seqs[0][:, 0].tolist() == [1, 2, 3] and ex.labels is None


def test_long_layout_reads_feature_columns_by_name_in_any_order(tmp_path):
    """Long tables name their variables (--feature-cols), so another column order reads the same."""
    a = write(tmp_path, "a.csv", "id,x,y,label\ns,1,10,u\ns,2,20,u\nt,3,30,d\n")
    b = write(tmp_path, "b.csv", "y,label,x,extra,id\n10,u,1,z,s\n20,u,2,z,s\n30,d,3,z,t\n")
    got = [load_sequences_long(p, "id", "label", ["x", "y"]) for p in (a, b)]
    assert [s.tolist() for s in got[0].seqs] == [s.tolist() for s in got[1].seqs] == [[[1, 10], [2, 20]], [[3, 30]]]
    assert got[0].columns == got[1].columns == ["x", "y"]


def test_unknown_extension_names_the_callers_own_extensions():
    with pytest.raises(ConfigError, match=r"x.npy: format: expected an extension in \['.csv', '.json', '.jsonl', "
                                          r"'.ndjson', '.tab', '.ts', '.tsv'\] or --format, got '.npy'"):
        detect_format("x.npy", also=(".ts",))
    with pytest.raises(ConfigError, match=r"'.tab', '.tsv'\] or --format"):
        detect_format("x.npy")


# ----------------------------------------------------------------------------- --missing drop says what it removed


def _one_warning(load, match: str):
    """``load()`` under pytest.warns: exactly one DataWarning, matching ``match``."""
    with pytest.warns(DataWarning, match=match) as got:
        out = load()
    assert len([w for w in got if issubclass(w.category, DataWarning)]) == 1, [str(w.message) for w in got]
    return out


def test_drop_warns_once_per_file_with_counts(tmp_path):
    blank = ",".join([""] * 3)
    wide = write(tmp_path, "w.csv", "label,a,b,c\n" + f"x,{blank}\n" * 5 + "x,1,,3\ny,1,2,3\nx,1,2,3\n,1,2,3\n")
    ex = _one_warning(lambda: load_sequences_wide(wide, "label", missing="drop"),
                      r"w.csv: --missing drop removed 6 of 9 rows \(sequences with no value or no label\) and 1 "
                      r"missing cell inside a sequence \(that time step\)$")
    assert len(ex.seqs) == 3
    long = write(tmp_path, "l.csv", "id,x,label\na,1,u\na,,u\na,3,u\nb,,d\nc,1,d\nc,2,d\nd,5,\n")
    ex = _one_warning(lambda: load_sequences_long(long, "id", "label", ["x"], missing="drop"),
                      r"l.csv: --missing drop removed 2 of 7 rows \(time steps with a missing feature cell\) and "
                      r"2 of 4 sequences \(no complete row or no label\)$")
    assert [len(s) for s in ex.seqs] == [2, 2]
    fc = write(tmp_path, "f.csv", "id,t,y\n" + "\n".join(f"{s},{t},{'' if (t % 10 == 3 and s == 'a') else t}"
                                                         for s in "ab" for t in range(40)) + "\n")
    frames = _one_warning(lambda: load_forecast_series(fc, ["y"], time_col="t", id_col="id", missing="drop"),
                          r"f.csv: --missing drop removed 4 of 80 rows with a missing cell \(in 1 of 2 series\)$")
    assert [len(f) for f in frames] == [36, 40]
    fw = write(tmp_path, "fw.csv", "t,a,b\n0,,1\n1,1,\n2,2,2\n3,,3\n4,4,4\n")
    frames = _one_warning(lambda: load_forecast_series(fw, [], time_col="t", wide=True, missing="drop"),
                          r"fw.csv: --missing drop removed 2 missing cells inside 2 of 2 series \(those time steps\)$")
    assert [len(f) for f in frames] == [3, 4]    # a's leading gap is where it starts, not a dropped cell
    ts = write(tmp_path, "d.ts", "@classLabel true a b\n@data\n?,?:1,2:a\n1,?,3:4,5,6:a\n1,2:3,4:b\n")
    ex = _one_warning(lambda: load_ts(ts, missing="drop"),
                      r"d.ts: --missing drop removed 1 of 3 cases \(no step without a missing value\) and 1 time "
                      r"step with a missing value inside the other cases$")
    assert [len(s) for s in ex.seqs] == [2, 2]


def test_drop_without_anything_to_drop_is_silent(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        load_sequences_wide(write(tmp_path, "w.csv", WIDE), "label", missing="drop")
        load_text_classification(write(tmp_path, "t.csv", "text,label\nx,a\ny,b\n"), "text", "label", missing="drop")
        load_forecast_table(write(tmp_path, "f.csv", "y\n1\n2\n"), ["y"], missing="drop")


def test_a_semicolon_separated_file_gets_a_hint(tmp_path):
    f = tmp_path / "semi.csv"
    f.write_text("t;y\n1;2.5\n2;3.5\n3;4.0\n")
    with pytest.raises(DataError, match=r"--target 'y' not found; expected one of \['t;y'\], got 'y' \(one column "
                                        r"whose name holds ';': a ';'-separated file\? write it with commas or tabs\)"):
        load_forecast_series(str(f), ["y"], time_col="t")
