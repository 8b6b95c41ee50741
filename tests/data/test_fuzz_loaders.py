"""Fuzzing the file loaders with Hypothesis: whatever a file holds, a loader either returns
clean data (finite numbers, labels inside the label map) or raises one of rnnlab's own
errors, and it does so quickly (a per-example deadline). 3,600 generated files in all
(6 tests x 600), derandomised so a failure reproduces."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rnnlab.data.tables import (
    load_forecast_table,
    load_sequences_long,
    load_sequences_wide,
    load_text_classification,
    read_table,
)
from rnnlab.data.ts_format import load_ts
from rnnlab.errors import RnnlabError

# --missing drop says what it removed (a DataWarning); the fuzzing is about what is read
pytestmark = pytest.mark.filterwarnings("ignore::rnnlab.errors.DataWarning")

FUZZ = settings(max_examples=600, deadline=400, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Cells that exercise every parsing branch: numbers, missing tokens, non-finite, junk, quotes.
NUMBERISH = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["", " ", "NA", "nan", "NaN", "null", "?", "inf", "-Infinity", "1e999", "1_0", "0x10",
                     "2024-01-01", "2024-13-45", "1,5", '"', "\n", "a\tb", "true"]),
    st.text(max_size=6),
)
NUMBER = st.one_of(st.floats(-1e6, 1e6, allow_nan=False, width=32).map(repr), st.integers(-99, 99).map(str))
# Mostly valid, sometimes anything: both the success path and every error path get exercised.
CELL = st.integers(0, 11).flatmap(lambda k: NUMBERISH if k == 0 else NUMBER)
LABEL = st.sampled_from(["a", "b", "c", "1", "2.0", "a", "b", "a", "b", "", "NA"])
MISSING = st.sampled_from(["error", "drop", "ffill", "interpolate"])


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _write(folder, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return path


def _csv(header: list[str], rows: list[list[str]], delimiter: str = ",") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _check_sequences(ex) -> None:
    for s in ex.seqs:
        assert s.ndim == 2 and len(s) >= 1 and np.isfinite(s).all()
    if ex.labels is not None:
        assert all(0 <= y < len(ex.label_map) for y in ex.labels)


@FUZZ
@given(raw=st.text(alphabet=st.sampled_from(list("ab ,\t\"\n\r0123.-e?{}[]:\\")), max_size=120),
       fmt=st.sampled_from(["csv", "tsv", "jsonl"]), missing=MISSING)
def test_fuzz_raw_text_files(fuzz_dir, raw, fmt, missing):
    """A valid file with arbitrary characters appended, in any of the three table formats."""
    valid = {"csv": "text,label\nx,a\ny,b\n", "tsv": "text\tlabel\nx\ta\ny\tb\n",
             "jsonl": '{"text": "x", "label": "a"}\n{"text": "y", "label": 2}\n'}[fmt]
    path = _write(fuzz_dir, f"raw.{fmt}", valid + raw)
    try:
        ex = load_text_classification(path, "text", "label", missing=missing)
    except RnnlabError as exc:
        event(f"rnnlab error: {type(exc).__name__}")
        return
    event("loaded")
    assert len(ex.texts) == len(ex.labels) >= 1 and len(ex.label_map) >= 2


@FUZZ
@given(rows=st.lists(st.tuples(st.text(max_size=12), st.one_of(LABEL, LABEL, NUMBERISH)), max_size=8),
       delimiter=st.sampled_from([",", "\t"]), missing=MISSING)
def test_fuzz_structured_text_csv(fuzz_dir, rows, delimiter, missing):
    path = _write(fuzz_dir, "s.csv" if delimiter == "," else "s.tsv",
                  _csv(["text", "label"], [list(r) for r in rows], delimiter))
    try:
        ex = load_text_classification(path, "text", "label", missing=missing)
    except RnnlabError as exc:
        event(f"rnnlab error: {type(exc).__name__}")
        return
    event("loaded")
    assert all(isinstance(t, str) and t.strip() for t in ex.texts)
    assert all(0 <= y < len(ex.label_map) for y in ex.labels)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                    max_leaves=6)


VALID_RECORD = st.fixed_dictionaries({"t": st.text(min_size=1, max_size=5), "y": LABEL})


@FUZZ
@given(records=st.lists(st.integers(0, 9).flatmap(
           lambda k: VALID_RECORD if k else st.one_of(st.fixed_dictionaries({"t": JSON, "y": JSON}), JSON)),
           max_size=6),
       junk=st.integers(0, 9).map(lambda k: k == 0), missing=MISSING)
def test_fuzz_jsonl(fuzz_dir, records, junk, missing):
    lines = [json.dumps(r) for r in records] + (["{not json"] if junk else [])
    path = _write(fuzz_dir, "j.jsonl", "\n".join(lines))
    try:
        read_table(path)
        ex = load_text_classification(path, "t", "y", missing=missing)
    except RnnlabError as exc:
        event(f"rnnlab error: {type(exc).__name__}")
        return
    event("loaded")
    assert all(isinstance(t, str) for t in ex.texts) and len(ex.label_map) >= 2


@FUZZ
@given(rows=st.lists(st.tuples(LABEL, CELL, CELL), max_size=8), missing=MISSING,
       layout=st.sampled_from(["wide", "long"]))
def test_fuzz_numeric_sequences(fuzz_dir, rows, missing, layout):
    header = ["label", "a", "b"] if layout == "wide" else ["label", "x", "id"]
    path = _write(fuzz_dir, "n.csv", _csv(header, [list(r) for r in rows]))
    try:
        if layout == "wide":
            ex = load_sequences_wide(path, "label", missing=missing)
        else:
            ex = load_sequences_long(path, "id", "label", ["x"], missing=missing)
    except RnnlabError as exc:
        event(f"rnnlab error: {type(exc).__name__}")
        return
    event("loaded")
    _check_sequences(ex)


@FUZZ
@given(rows=st.lists(st.lists(CELL, min_size=3, max_size=3), max_size=10), missing=MISSING,
       with_time=st.booleans())
def test_fuzz_forecast_table(fuzz_dir, rows, missing, with_time):
    path = _write(fuzz_dir, "f.csv", _csv(["t", "y", "x"], rows))
    try:
        fr = load_forecast_table(path, ["y"], ["x"], "t" if with_time else None, missing)
    except RnnlabError as exc:
        event(f"rnnlab error: {type(exc).__name__}")
        return
    event("loaded")
    assert len(fr) >= 1 and np.isfinite(fr.targets).all() and np.isfinite(fr.covariates).all()
    if with_time:
        assert np.all(np.diff(fr.time_values) > 0)


HEADER_LINES = st.sampled_from([
    "@problemName p", "@timeStamps false", "@timeStamps true", "@missing true", "@univariate true",
    "@dimensions 2", "@dimensions 0", "@dimensions x", "@equalLength true", "@equalLength false",
    "@seriesLength 3", "@classLabel true a b", "@classLabel false", "@classLabel", "@classLabel maybe",
    "# comment", "", "junk",
])
TS_CELL = st.integers(0, 29).flatmap(lambda k: NUMBERISH if k == 0 else NUMBER).filter(
    lambda s: ":" not in s and "," not in s and "\n" not in s and "\r" not in s)
# A case: usually 2 dimensions of one length (valid), sometimes ragged or of another width.
VALID_CASE = st.integers(1, 4).flatmap(
    lambda n: st.lists(st.lists(TS_CELL, min_size=n, max_size=n), min_size=2, max_size=2))
ANY_CASE = st.lists(st.lists(TS_CELL, min_size=1, max_size=4), min_size=1, max_size=3)
# A case: usually 2 dimensions of one length (valid), sometimes ragged or of another width.
CASE = st.integers(0, 7).flatmap(lambda k: ANY_CASE if k == 0 else VALID_CASE)


@FUZZ
@given(header=st.integers(0, 2).flatmap(lambda k: st.lists(HEADER_LINES, max_size=4) if k == 0 else st.just([])),
       base=st.integers(0, 5).map(lambda k: k > 0), data=st.booleans(),
       cases=st.lists(st.tuples(CASE, st.sampled_from(["a", "b"] * 5 + ["c", ""])), max_size=5),
       missing=MISSING)
def test_fuzz_ts(fuzz_dir, header, base, data, cases, missing):
    lines = (["@classLabel true a b"] if base else []) + list(header) + (["@data"] if data or base else [])
    for dims, label in cases:
        lines.append(":".join(",".join(d) for d in dims) + (f":{label}" if label else ""))
    path = _write(fuzz_dir, "x.ts", "\n".join(lines) + "\n")
    try:
        ex = load_ts(path, missing=missing)
    except RnnlabError as exc:
        event(f"rnnlab error: {type(exc).__name__}")
        return
    event("loaded")
    _check_sequences(ex)
    assert len({s.shape[1] for s in ex.seqs}) == 1
