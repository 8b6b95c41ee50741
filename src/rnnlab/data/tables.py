"""Tabular inputs for classification and forecasting: CSV, TSV and JSON Lines.

Everything a user's file can get wrong is reported here, once, as a :class:`DataError` that
names the file, the line and the column, so no model code ever sees a malformed value. The
rules that matter for the model:

* A numeric cell parses as a finite float or is *missing*. Missing cells (empty, ``NA``,
  ``NaN``, ``null``, ``?``, ...) are errors by default; the ``missing`` policy opts in to
  ``drop`` (remove the row / time step; one :class:`DataWarning` per file counts what went),
  ``ffill`` (carry the last value forward; leading gaps take the first value) or
  ``interpolate`` (linear between neighbours, ends held constant). ``inf`` is never accepted.
  After loading, no NaN remains.
* A wide table read for a trained model (``trained_cols``) is read by column name, never by
  position: a missing column is an error, an unknown one is left out with a warning.
* Labels of any type (strings, numbers, JSON values) become indices through a
  :class:`LabelMap` built from the training file and saved in the run's metadata. A label at
  prediction time that training never saw is an error, not a silent new class.
* Scaling (:class:`Scaler`) is fitted on the training part only and saved the same way.

Line numbers are 1-based physical lines of the file (the header is line 1 of a CSV).
"""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import csv
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import numpy as np

from rnnlab.data.encodings import foreign_bom
from rnnlab.errors import ConfigError, DataError, DataWarning, expected, listed

MISSING_POLICIES = ("error", "drop", "ffill", "interpolate")
# Cells read as "missing" (case-insensitive, after stripping blanks).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
FORMATS = ("csv", "tsv", "jsonl")
# File extensions the table readers know (``--format`` reads any other name).
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


# ----------------------------------------------------------------------------- raw tables


# True while a trained run reads a file other than its own data (predict, evaluate --csv, forecast,
# backtest): a missing column is then one the run was trained with, and the flag that named it
# belongs to the training command, not to the one reading the file.
_FOR_A_RUN: contextvars.ContextVar[bool] = contextvars.ContextVar("rnnlab_columns_for_a_run", default=False)


@contextlib.contextmanager
def columns_of_a_run():
    """Within the block, :meth:`Table.col` words a missing column as the run's."""
    token = _FOR_A_RUN.set(True)
    try:
        yield
    finally:
        _FOR_A_RUN.reset(token)


@dataclass
class Table:
    """A file read as rows of cells. ``cells[i][j]`` is a str, or for JSONL any JSON value
    (None when the key is absent). ``lines[i]`` is the file line where row ``i`` starts."""

    path: str
    columns: list[str]
    cells: list[list[Any]]
    lines: list[int]

    def col(self, name: str, role: str = "column") -> int:
        """Index of column ``name``; a DataError listing the available columns otherwise."""
        if name not in self.columns:
            hint = ""
            if len(self.columns) == 1 and (sep := next((c for c in ";|" if c in self.columns[0]), None)):
                hint = f" (one column whose name holds {sep!r}: a {sep!r}-separated file? write it with commas or tabs)"
            elif role == "--text-col" and not _FOR_A_RUN.get() and self.cells and sum(map(is_number, self.cells[0])) >= 2:
                hint = (" (name the text column with --text-col; or, if each row is a series of numbers, pass "
                        "--input numeric)")
            if _FOR_A_RUN.get():
                flag = f" (its {role} when it was trained)" if role.startswith("--") else ""
                raise DataError(f"{self.path}: expected a column {name!r} as the run's data had{flag}, got the "
                                f"columns {self.columns}{hint}")
            raise DataError(
                f"{self.path}: {role} {name!r} not found; expected one of {self.columns}, got {name!r}{hint}"
            )
        return self.columns.index(name)

    def where(self, row: int, column: str) -> str:
        return f"{self.path}, line {self.lines[row]}, column {column!r}"


def detect_format(path: str, fmt: str = "auto", also: Sequence[str] = ()) -> str:
    """``csv``, ``tsv`` or ``jsonl`` from the ``fmt`` flag or the file extension. ``also``: further
    extensions the caller reads itself (classify's ``.ts``), named beside these when the extension
    is unknown."""
    if os.path.isdir(path):
        raise DataError(expected("data file", "a file", f"the folder {path!r}"))
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ConfigError(expected("format", f"one of {('auto',) + FORMATS}", repr(fmt)))
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ConfigError(
            f"{path}: format: expected an extension in {sorted([*EXTENSIONS, *also])} or --format, "
            f"got {ext or 'none'!r}"
        )
    return EXTENSIONS[ext]


def decode_file(path: str, raw: bytes, encoding: str) -> str:
    """``raw`` decoded as ``encoding``, or one DataError with advice that fits the bytes: a UTF-16/32
    byte-order mark names its encoding, other undecodable bytes name their line."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(expected("--encoding", "a codec Python knows (utf-8, utf-16, cp1252, latin-1, ...)",
                                   repr(encoding))) from None
    bom = foreign_bom(raw, encoding)
    if bom:
        raise DataError(f"{path}: encoding: expected {encoding} text, got a {bom.upper()} file (it starts with a "
                        f"{bom.upper()} byte-order mark); pass --encoding {bom}, or save the file as UTF-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : max(exc.end, exc.start + 1)][:4]
        raise DataError(f"{path}, line {line}: encoding: expected {encoding} text, got undecodable bytes {bad!r} "
                        f"at byte offset {exc.start}; pass --encoding with the file's encoding "
                        "(for example cp1252 or latin-1)") from None


def _read_text(path: str, encoding: str = "utf-8") -> str:
    if not os.path.isfile(path):
        raise DataError(expected("data file", "an existing file", repr(path)))
    with open(path, "rb") as fh:
        raw = fh.read()
    text = decode_file(path, raw, encoding).replace("\r\n", "\n")
    if text.startswith("\ufeff"):  # a BOM written by spreadsheet programs
        text = text[1:]
    if not text.strip():
        raise DataError(f"{path}: expected a header and at least one row, got an empty file")
    return text


def read_table(path: str, fmt: str = "auto", encoding: str = "utf-8") -> Table:
    """Read a CSV/TSV (first row is the header) or a JSONL file (one JSON object per line)."""
    fmt = detect_format(path, fmt)
    text = _read_text(path, encoding)
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    return _read_delimited(path, text, "," if fmt == "csv" else "\t")


def _read_delimited(path: str, text: str, delimiter: str) -> Table:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    cells: list[list[Any]] = []
    lines: list[int] = []
    blank: list[int] = []
    start = 1
    try:
        for row in reader:
            line = start
            start = reader.line_num + 1
            if not row:
                if header is not None and len(header) == 1:
                    blank.append(line)  # in a one-column file a blank line is an empty cell ...
                continue  # ... elsewhere it is just a blank line
            if header is None:
                header = [c.strip() for c in row]
                _check_header(path, header, line)
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}, line {line}: fields: expected {len(header)} (as in the header), got {len(row)} "
                    "(a ragged row)"
                )
            for b in blank:  # ... unless only blank lines follow it (the end of the file)
                cells.append([""])
                lines.append(b)
            blank = []
            cells.append(row)
            lines.append(line)
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV: {exc}") from None
    if header is None:
        raise DataError(f"{path}: expected a header and at least one row, got an empty file")
    if not cells:
        raise DataError(f"{path}: expected at least one data row after the header, got none")
    return Table(path, header, cells, lines)


def _check_header(path: str, header: list[str], line: int) -> None:
    seen: set[str] = set()
    for name in header:
        if name == "":
            raise DataError(f"{path}, line {line}: header: expected a name for every column, got an empty name")
        if name in seen:
            raise DataError(f"{path}, line {line}: header: expected unique column names, got {name!r} twice")
        seen.add(name)


def _read_jsonl(path: str, text: str) -> Table:
    columns: list[str] = []
    records: list[dict] = []
    lines: list[int] = []
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise DataError(f"{path}, line {i}: expected a JSON object, got invalid JSON ({msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}, line {i}: expected a JSON object, got {type(rec).__name__}")
        for k in rec:
            if k not in columns:
                columns.append(k)
        records.append(rec)
        lines.append(i)
    if not records:
        raise DataError(f"{path}: expected at least one JSON object, got an empty file")
    cells = [[rec.get(c) for c in columns] for rec in records]
    return Table(path, columns, cells, lines)


# ----------------------------------------------------------------------------- cells


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip().lower() in MISSING_TOKENS
    return False


def parse_number(value: Any, where: str) -> float:
    """A finite float from a cell, or NaN for a missing cell (handled by the missing policy)."""
    if is_missing(value):
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{where}: expected a number, got {json.dumps(value)[:40]}")
    try:
        x = float(value.strip()) if isinstance(value, str) else float(value)
    except (ValueError, OverflowError):
        raise DataError(f"{where}: expected a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(x):
        raise DataError(f"{where}: expected a finite number, got {str(value)[:40]!r}")
    return x


_F32_MAX = float(np.finfo(np.float32).max)


def as_float32(values: np.ndarray, where: str) -> np.ndarray:
    """``values`` as float32 (the models' dtype), or a DataError for numbers float32 cannot hold."""
    big = np.abs(values) > _F32_MAX
    if big.any():
        raise DataError(f"{where}: expected numbers within float32's range (|x| <= 3.4e38), got "
                        f"{float(values[big].flat[0]):g}; rescale the data")
    return values.astype(np.float32)


def label_key(value: Any) -> str:
    """The string a label is known by: strings as they are (stripped), other JSON values as
    JSON (``1`` -> ``"1"``, ``true`` -> ``"true"``), so any label type maps to a class."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, sort_keys=True)


def check_missing_policy(policy: str) -> str:
    if policy not in MISSING_POLICIES:
        raise ConfigError(expected("missing", f"one of {MISSING_POLICIES}", repr(policy)))
    return policy


def warn_dropped(path: str, *parts: str) -> None:
    """One DataWarning for what ``--missing drop`` removed from ``path``; ``parts`` say what
    ("3 of 40 rows with a missing cell"), the empty ones (nothing of that kind removed) left out."""
    said = [p for p in parts if p]
    if said:
        warnings.warn(f"{path}: --missing drop removed {' and '.join(said)}", DataWarning, stacklevel=3)


def _count(n: int, total: int | None, what: str, one: str = "") -> str:
    """``"3 of 40 rows"`` (``""`` for none): a part of :func:`warn_dropped`'s message; ``one``: what
    a count of 1 without a total says instead of ``what`` (the singular)."""
    if not n:
        return ""
    if total is not None:
        return f"{n} of {total} {what}"
    return f"1 {one}" if n == 1 and one else f"{n} {what}"


def fill_missing(values: np.ndarray, policy: str, where: Sequence[str],
                 columns: Sequence[str] | None = None) -> np.ndarray:
    """Apply ``ffill`` or ``interpolate`` to each column of ``values`` (T, D) in place of NaN.

    ``where[t]`` describes time step ``t`` for error messages, ``columns[d]`` names column ``d``
    (when ``where`` does not already name it). ``error`` raises on the first NaN; ``drop`` is
    handled by the caller (it removes whole rows) and is not accepted here.
    """
    if not np.isnan(values).any():
        return values

    def name(d: int) -> str:
        return f", column {columns[d]!r}" if columns is not None else ""

    if policy == "error":
        t, d = map(int, np.argwhere(np.isnan(values))[0])
        raise DataError(
            f"{where[t]}{name(d)}: expected a value, got a missing cell; "
            "pass --missing drop|ffill|interpolate to allow gaps"
        )
    out = values.copy()
    for d in range(out.shape[1]):
        col = out[:, d]
        ok = ~np.isnan(col)
        if not ok.any():
            raise DataError(f"{where[0]}{name(d)}: expected at least one value, got only missing cells")
        idx = np.arange(len(col))
        if policy == "interpolate":
            col[~ok] = np.interp(idx[~ok], idx[ok], col[ok])
        elif policy == "ffill":
            last = col[ok][0]  # leading gaps take the first observed value
            for t in range(len(col)):
                if ok[t]:
                    last = col[t]
                else:
                    col[t] = last
        else:
            raise ConfigError(expected("missing", "ffill or interpolate here", repr(policy)))
    return out


# ----------------------------------------------------------------------------- labels


@dataclass
class LabelMap:
    """Class names in index order. Built from training labels; sorted numerically when every
    label is a number, else as strings, so the same file always gives the same indices."""

    names: list[str]

    @classmethod
    def fit(cls, keys: Iterable[str], source: str = "labels") -> "LabelMap":
        uniq = sorted(set(keys))
        try:
            uniq.sort(key=float)
        except ValueError:
            pass
        if len(uniq) < 2:
            raise DataError(
                f"{source}: expected at least 2 classes, got {len(uniq)} ({uniq}); a classifier needs a choice"
            )
        return cls(uniq)

    def index(self, key: str, where: str) -> int:
        try:
            return self._lookup[key]
        except AttributeError:
            self._lookup = {n: i for i, n in enumerate(self.names)}
            return self.index(key, where)
        except KeyError:
            raise DataError(
                f"{where}: label: expected one seen in training {self.names[:20]}, got unseen {key!r}"
            ) from None

    def __len__(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"names": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelMap":
        return cls([str(n) for n in d["names"]])


# ----------------------------------------------------------------------------- scaling


@dataclass
class Scaler:
    """Per-column standardisation ``(x - mean) / std``, fitted on the training part only (a
    scaler fitted on all rows would leak the future into a forecaster). A constant column gets
    std 1 so it passes through centred instead of dividing by zero."""

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, values: np.ndarray, where: str = "data", columns: Sequence[str] | None = None) -> "Scaler":
        """``values`` (N, D). Computed on values divided by each column's largest magnitude, so
        numbers near float64's limit (1e300) do not overflow when squared."""
        values = np.asarray(values, dtype=np.float64)
        peak = np.abs(values).max(axis=0) if len(values) else np.ones(values.shape[1:])
        peak = np.where((peak > 0) & np.isfinite(peak), peak, 1.0)
        unit = values / peak
        mean = unit.mean(axis=0) * peak
        std = unit.std(axis=0) * peak
        bad = ~(np.isfinite(mean) & np.isfinite(std))
        if bad.any():
            d = int(np.flatnonzero(bad)[0])
            name = f"column {columns[d]!r}" if columns is not None and d < len(columns) else f"column {d}"
            raise DataError(f"{where}: {name}: expected values whose mean and spread are finite, got mean "
                            f"{float(mean[d]):g}, std {float(std[d]):g}; rescale the data")
        std = np.where(std > 1e-12, std, 1.0)
        return cls([float(m) for m in mean], [float(s) for s in std])

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - np.asarray(self.mean)) / np.asarray(self.std)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * np.asarray(self.std) + np.asarray(self.mean)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        return cls([float(v) for v in d["mean"]], [float(v) for v in d["std"]])


# ----------------------------------------------------------------------------- text classification


@dataclass
class TextExamples:
    texts: list[str]
    labels: list[int] | None          # None when the file has no label column (prediction)
    lines: list[int]
    label_map: LabelMap | None = None
    path: str = ""


def load_text_classification(
    path: str,
    text_col: str,
    label_col: str,
    label_map: LabelMap | None = None,
    missing: str = "error",
    fmt: str = "auto",
    require_labels: bool = True,
    encoding: str = "utf-8",
) -> TextExamples:
    """Texts and label indices from a CSV/TSV/JSONL file.

    With ``label_map`` None the labels define a new map (training); otherwise every label must
    be in it (evaluation, prediction). ``require_labels=False`` accepts a file without the label
    column (prediction on new data). ``missing='drop'`` skips rows with an empty text or label.
    """
    check_missing_policy(missing)
    if missing in ("ffill", "interpolate"):
        raise ConfigError(expected("--missing for text", "error or drop (a text cannot be interpolated)",
                                   repr(missing)))
    table = read_table(path, fmt, encoding)
    ti = table.col(text_col, "--text-col")
    has_labels = label_col in table.columns
    if require_labels or label_map is None:
        li = table.col(label_col, "--label-col")
    else:
        li = table.columns.index(label_col) if has_labels else None
    texts: list[str] = []
    keys: list[str] = []
    lines: list[int] = []
    dropped = 0
    for r, row in enumerate(table.cells):
        text, lab = row[ti], (row[li] if li is not None else "")
        bad = None
        if text is None or (isinstance(text, str) and not text.strip()):
            bad = text_col
        elif li is not None and is_missing(lab):
            bad = label_col
        if bad is not None:
            if missing == "drop":
                dropped += 1
                continue
            raise DataError(f"{table.where(r, bad)}: expected a value, got a missing cell "
                            "(use --missing drop to skip such rows)")
        if not isinstance(text, str):
            raise DataError(f"{table.where(r, text_col)}: expected text, got {json.dumps(text)[:40]}")
        texts.append(text)
        keys.append(label_key(lab) if li is not None else "")
        lines.append(table.lines[r])
    if not texts:
        raise DataError(f"{path}: expected at least one usable row, got none after --missing {missing}")
    warn_dropped(path, _count(dropped, len(table.cells), "rows with an empty text or a missing label"))
    labels = None
    if li is not None:
        if label_map is None:
            label_map = LabelMap.fit(keys, f"{path}: column {label_col!r}")
        where = [f"{path}, line {ln}, column {label_col!r}" for ln in lines]
        labels = [label_map.index(k, w) for k, w in zip(keys, where)]
    return TextExamples(texts, labels, lines, label_map, path)


# ----------------------------------------------------------------------------- numeric sequences


@dataclass
class SequenceExamples:
    """Numeric sequences for classification: ``seqs[i]`` is a float32 array (T_i, D)."""

    seqs: list[np.ndarray]
    labels: list[int] | None
    lines: list[int]                  # the line where each sequence starts
    label_map: LabelMap | None = None
    path: str = ""
    dims: int = 1
    columns: list[str] | None = None  # the value (wide) or feature (long) columns read, by name; None for .ts


def _finish_labels(path: str, keys: list[str | None], lines: list[int], label_map: LabelMap | None,
                   source: str) -> tuple[list[int] | None, LabelMap | None]:
    if any(k is None for k in keys):
        return None, label_map
    if label_map is None:
        label_map = LabelMap.fit(keys, f"{path}: {source}")
    return [label_map.index(k, f"{path}, line {ln}") for k, ln in zip(keys, lines)], label_map


def load_sequences_wide(
    path: str,
    label_col: str,
    value_cols: Sequence[str] | None = None,
    label_map: LabelMap | None = None,
    missing: str = "error",
    fmt: str = "auto",
    require_labels: bool = True,
    encoding: str = "utf-8",
    trained_cols: Sequence[str] | None = None,
) -> SequenceExamples:
    """One univariate sequence per row: a label column and value columns (all the other
    columns, in file order, unless ``value_cols`` names them).

    ``trained_cols`` (without ``value_cols``): the value columns of the file a model was trained
    on, in time order. They are read by name, in that order wherever they stand in this file; a
    missing one is an error, and other columns (but the label) are left out with one DataWarning,
    rather than read as time steps.

    Trailing missing cells end a shorter sequence (the UCR archive pads variable-length series
    with NaN at the end); missing cells *inside* a sequence follow the ``missing`` policy.
    """
    check_missing_policy(missing)
    table = read_table(path, fmt, encoding)
    li = table.col(label_col, "--label-col") if (require_labels or label_map is None) else (
        table.columns.index(label_col) if label_col in table.columns else None)
    if value_cols:
        vis = [table.col(c, "--value-cols") for c in value_cols]
    elif trained_cols:
        vis = _trained_columns(table, trained_cols, li)
    else:
        vis = [j for j, c in enumerate(table.columns) if j != li]
    if not vis:
        raise DataError(f"{path}: value columns: expected at least one besides the label, got none")
    seqs: list[np.ndarray] = []
    keys: list[str | None] = []
    lines: list[int] = []
    dropped_rows = dropped_cells = 0
    for r, row in enumerate(table.cells):
        vals = np.array([parse_number(row[j], table.where(r, table.columns[j])) for j in vis])
        ok = np.flatnonzero(~np.isnan(vals))
        if len(ok) == 0:
            if missing == "drop":
                dropped_rows += 1
                continue
            raise DataError(f"{table.where(r, table.columns[vis[0]])}: expected a sequence, got only missing cells")
        vals = vals[: ok[-1] + 1]  # trailing gaps: a shorter series
        gaps = int(np.isnan(vals).sum())
        if missing == "drop":
            vals = vals[~np.isnan(vals)]
        else:
            where = [table.where(r, table.columns[vis[t]]) for t in range(len(vals))]
            vals = fill_missing(vals[:, None], missing, where)[:, 0]
        lab = row[li] if li is not None else None
        if lab is not None and is_missing(lab):
            if missing == "drop":
                dropped_rows += 1
                continue
            raise DataError(f"{table.where(r, label_col)}: expected a label, got a missing cell")
        dropped_cells += gaps if missing == "drop" else 0
        seqs.append(as_float32(vals, table.where(r, table.columns[vis[0]]))[:, None])
        keys.append(label_key(lab) if li is not None else None)
        lines.append(table.lines[r])
    if not seqs:
        raise DataError(f"{path}: expected at least one sequence, got none after --missing {missing}")
    warn_dropped(path, _count(dropped_rows, len(table.cells), "rows (sequences with no value or no label)"),
                 _count(dropped_cells, None, "missing cells inside sequences (those time steps)",
                        "missing cell inside a sequence (that time step)"))
    labels, label_map = _finish_labels(path, keys, lines, label_map, f"column {label_col!r}")
    return SequenceExamples(seqs, labels, lines, label_map, path, 1, [table.columns[j] for j in vis])


def _trained_columns(table: Table, trained: Sequence[str], li: int | None) -> list[int]:
    """The indices of the ``trained`` value columns in ``table``, in their order: a DataError naming
    those the file lacks; one DataWarning naming the other columns (but the label), left out."""
    lacking = [c for c in trained if c not in table.columns]
    if lacking:
        raise DataError(expected(f"{table.path}: value columns",
                                 f"the {len(trained)} columns the model was trained on, by name in any order "
                                 f"({listed(trained, 3)})",
                                 f"a file without {listed(lacking, 5)}"))
    known = set(trained)
    extra = [c for j, c in enumerate(table.columns) if j != li and c not in known]
    if extra:
        warnings.warn(f"{table.path}: left out {len(extra)} {'column' if len(extra) == 1 else 'columns'} the "
                      f"model was not trained on: {listed(extra, 5)}", DataWarning, stacklevel=3)
    return [table.columns.index(c) for c in trained]


def load_sequences_long(
    path: str,
    id_col: str,
    label_col: str,
    feature_cols: Sequence[str],
    time_col: str | None = None,
    label_map: LabelMap | None = None,
    missing: str = "error",
    fmt: str = "auto",
    require_labels: bool = True,
    encoding: str = "utf-8",
) -> SequenceExamples:
    """One time step per row: a sequence id, feature columns (one per variable, so
    multivariate), a label that is constant within a sequence, and optionally a time column
    that orders the steps (else file order). Sequences may have different lengths."""
    check_missing_policy(missing)
    if not feature_cols:
        raise ConfigError(expected("--feature-cols", "at least one column", "none"))
    table = read_table(path, fmt, encoding)
    ii = table.col(id_col, "--id-col")
    li = table.col(label_col, "--label-col") if (require_labels or label_map is None) else (
        table.columns.index(label_col) if label_col in table.columns else None)
    fis = [table.col(c, "--feature-cols") for c in feature_cols]
    tci = table.col(time_col, "--time-col") if time_col else None
    groups: dict[str, list[int]] = {}
    for r, row in enumerate(table.cells):
        key = label_key(row[ii]) if not is_missing(row[ii]) else None
        if key is None:
            raise DataError(f"{table.where(r, id_col)}: expected a sequence id, got a missing cell")
        groups.setdefault(key, []).append(r)
    seqs: list[np.ndarray] = []
    keys: list[str | None] = []
    lines: list[int] = []
    dropped_rows = dropped_seqs = 0
    for gid, rows in groups.items():
        if tci is not None:
            times = [parse_time(table.cells[r][tci], table.where(r, time_col)) for r in rows]
            order = sorted(range(len(rows)), key=lambda k: times[k])  # the time column orders the steps
            rows = [rows[k] for k in order]
            times = [times[k] for k in order]
            check_increasing(times, [table.where(r, time_col) for r in rows], [table.lines[r] for r in rows],
                             f"sequence {gid!r}")
        vals = np.array([[parse_number(table.cells[r][j], table.where(r, table.columns[j])) for j in fis]
                         for r in rows])  # (T, D)
        where = [f"{table.path}, line {table.lines[r]}" for r in rows]
        if missing == "drop":
            keep = ~np.isnan(vals).any(axis=1)
            vals, where = vals[keep], [w for w, k in zip(where, keep) if k]
            dropped_rows += int((~keep).sum())
            if len(vals) == 0:
                dropped_seqs += 1
                continue
        else:
            vals = fill_missing(vals, missing, where, list(feature_cols))
        key = None
        if li is not None:
            labs = {label_key(table.cells[r][li]) for r in rows if not is_missing(table.cells[r][li])}
            if not labs:
                if missing == "drop":
                    dropped_seqs += 1
                    continue
                raise DataError(f"{table.where(rows[0], label_col)}: expected a label for sequence {gid!r}, "
                                "got only missing cells")
            if len(labs) > 1:
                raise DataError(f"{table.where(rows[0], label_col)}: expected one label per sequence, "
                                f"got {sorted(labs)[:5]} for sequence {gid!r}")
            key = labs.pop()
        seqs.append(as_float32(vals, where[0]))
        keys.append(key)
        lines.append(table.lines[rows[0]])
    if not seqs:
        raise DataError(f"{path}: expected at least one sequence, got none after --missing {missing}")
    warn_dropped(path, _count(dropped_rows, len(table.cells), "rows (time steps with a missing feature cell)"),
                 _count(dropped_seqs, len(groups), "sequences (no complete row or no label)"))
    labels, label_map = _finish_labels(path, keys, lines, label_map, f"column {label_col!r}")
    return SequenceExamples(seqs, labels, lines, label_map, path, len(fis), list(feature_cols))


# ----------------------------------------------------------------------------- time


def parse_time(value: Any, where: str) -> float:
    """A timestamp as a float: a plain number, or an ISO 8601 date/datetime (seconds since the
    epoch, UTC when no zone is given). Missing timestamps are always errors: a gap in time is
    not a gap in value."""
    if is_missing(value):
        raise DataError(f"{where}: expected a timestamp, got a missing cell")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise DataError(f"{where}: expected a finite timestamp, got {value!r}")
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        try:
            x = float(s)
            if math.isfinite(x):
                return x
        except ValueError:
            pass
        dt = _period_start(s)
        if dt is None:
            try:
                dt = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
            except ValueError:
                pass
        if dt is not None:
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            try:
                return dt.timestamp()
            except (OverflowError, OSError, ValueError):
                pass
    raise DataError(f"{where}: expected a number or an ISO date (2024-01-31 or 2024-01-31T12:00), a month "
                    f"(1949-01, 1949/01) or a quarter (1949-Q1), got {str(value)[:40]!r}")


_MONTH = re.compile(r"^(\d{4})[-/](\d{1,2})$")
_QUARTER = re.compile(r"^(\d{4})[-/ ]?[Qq]([1-4])$")


def _period_start(s: str) -> datetime | None:
    """The first instant of a month ("1949-01", "1949/1") or a quarter ("1949-Q1", "1949Q1"),
    which ``datetime.fromisoformat`` does not read; None for anything else."""
    m = _MONTH.match(s)
    if m and 1 <= int(m.group(2)) <= 12:
        return datetime(int(m.group(1)), int(m.group(2)), 1)
    m = _QUARTER.match(s)
    if m:
        return datetime(int(m.group(1)), 3 * int(m.group(2)) - 2, 1)
    return None


# Calendar periods by their typical spacing in seconds: (name, seasonal period, lowest, highest spacing).
FREQUENCIES = (
    ("hourly", 24, 3500, 3700),
    ("daily", 7, 86000, 87000),
    ("weekly", 52, 6.9 * 86400, 7.1 * 86400),
    ("monthly", 12, 28 * 86400, 31 * 86400),
    ("quarterly", 4, 89 * 86400, 92 * 86400),
    ("yearly", 1, 365 * 86400, 366 * 86400),
)


def is_number(cell: str) -> bool:
    """Whether a cell reads as a plain number."""
    try:
        float(cell)
    except (TypeError, ValueError):   # TypeError: a JSON null or list
        return False
    return True


def plain_numbers(times: Sequence[str]) -> bool:
    """Whether a time column holds plain numbers (steps) rather than dates: its first cell decides."""
    return bool(times) and is_number(times[0])


def infer_frequency(times: Sequence[str] | None, values: np.ndarray | None) -> tuple[str, int]:
    """The calendar frequency of a time column and its seasonal period, from the median spacing
    of its timestamps: ("monthly", 12), ("daily", 7), ... ("", 0) when the column is absent,
    numeric, or irregular."""
    if times is None or values is None or len(values) < 2 or plain_numbers(times):
        return "", 0   # plain numbers: steps, not dates
    step = float(np.median(np.diff(values)))
    for name, period, lo, hi in FREQUENCIES:
        if lo <= step <= hi:
            return name, period
    return "", 0


def check_increasing(times: Sequence[float], where: Sequence[str], lines: Sequence[int], what: str = "time",
                     one_series: bool = False) -> None:
    """``where[k]`` locates row k for the message; ``lines[k]`` is its line number. ``one_series``:
    the file was read as one series (no --id-col, not --wide), so a long table of several series
    is the likely cause and the message names --id-col."""
    several = ("; if the file holds several series, name the column that tells them apart "
               "with --id-col" if one_series else "")
    for k in range(1, len(times)):
        if times[k] == times[k - 1]:
            raise DataError(f"{where[k]}: {what}: expected strictly increasing timestamps, "
                            f"got a duplicate of line {lines[k - 1]}{several}")
        if times[k] < times[k - 1]:
            raise DataError(f"{where[k]}: {what}: expected strictly increasing timestamps, "
                            f"got one earlier than line {lines[k - 1]}; sort the file by time{several}")


# ----------------------------------------------------------------------------- forecasting


@dataclass
class SeriesFrame:
    """A forecasting file: targets (N, D_y) and covariates (N, D_x), float64, no NaN."""

    targets: np.ndarray
    covariates: np.ndarray
    target_names: list[str]
    covariate_names: list[str]
    times: list[str] | None          # the time column's cells as written, if any
    time_values: np.ndarray | None   # (N,) parsed, strictly increasing
    lines: list[int] = field(default_factory=list)
    path: str = ""
    name: str = ""                   # the series id (long table) or column (wide table); "" for one series

    def __len__(self) -> int:
        return len(self.targets)


def load_forecast_table(
    path: str,
    targets: Sequence[str],
    covariates: Sequence[str] = (),
    time_col: str | None = None,
    missing: str = "error",
    fmt: str = "auto",
    encoding: str = "utf-8",
) -> SeriesFrame:
    """Read a forecasting file: optional time column (checked: strictly increasing, no
    duplicates), target columns and covariate columns; missing cells follow ``missing``."""
    check_missing_policy(missing)
    if not targets:
        raise ConfigError(expected("--target", "at least one target column", "none"))
    table = read_table(path, fmt, encoding)
    tis = [table.col(c, "--target") for c in targets]
    cis = [table.col(c, "--covariates") for c in covariates]
    overlap = set(targets) & set(covariates)
    if overlap:
        raise ConfigError(expected("--covariates", "columns that are not targets", sorted(overlap)))
    cols = tis + cis
    vals = np.array([[parse_number(row[j], table.where(r, table.columns[j])) for j in cols]
                     for r, row in enumerate(table.cells)], dtype=np.float64).reshape(len(table.cells), len(cols))
    where = [f"{path}, line {ln}" for ln in table.lines]
    keep = np.ones(len(vals), dtype=bool)
    times_raw: list[str] | None = None
    tvals: np.ndarray | None = None
    if time_col:
        tci = table.col(time_col, "--time-col")
        tv = [parse_time(row[tci], table.where(r, time_col)) for r, row in enumerate(table.cells)]
        check_increasing(tv, [table.where(r, time_col) for r in range(len(tv))], table.lines, one_series=True)
        times_raw = [str(row[tci]).strip() for row in table.cells]
        tvals = np.array(tv)
    if missing == "drop":
        keep = ~np.isnan(vals).any(axis=1)
        vals = vals[keep]
        where = [w for w, k in zip(where, keep) if k]
        if times_raw is not None:
            times_raw = [t for t, k in zip(times_raw, keep) if k]
            tvals = tvals[keep]
        if len(vals) == 0:
            raise DataError(f"{path}: expected at least one complete row, got none after --missing drop")
        warn_dropped(path, _count(int((~keep).sum()), len(keep), "rows with a missing cell"))
    else:
        vals = fill_missing(vals, missing, where, list(targets) + list(covariates))
    lines = [ln for ln, k in zip(table.lines, keep) if k]
    n_t = len(tis)
    return SeriesFrame(vals[:, :n_t], vals[:, n_t:], list(targets), list(covariates), times_raw, tvals,
                       lines, path)


def check_length(n: int, context: int, horizon: int, what: str) -> None:
    """A series must hold at least one context window plus its horizon."""
    if n < context + horizon:
        raise DataError(
            f"{what}: expected at least context + horizon = {context} + {horizon} = {context + horizon} rows, "
            f"got {n}"
        )


def load_forecast_series(
    path: str,
    targets: Sequence[str],
    covariates: Sequence[str] = (),
    time_col: str | None = None,
    id_col: str | None = None,
    wide: bool = False,
    missing: str = "error",
    fmt: str = "auto",
    encoding: str = "utf-8",
) -> list[SeriesFrame]:
    """Every series of a forecasting file, in file order.

    * one series: rows are time steps (:func:`load_forecast_table`);
    * a long table (``id_col``): one row per (series id, time step), the series told apart by
      ``id_col`` and each ordered by ``time_col`` (else file order); series may differ in length;
    * a wide table (``wide``): one column per series (``targets``, or every column but the time
      column); leading and trailing missing cells are where a shorter series starts or ends,
      gaps inside follow ``missing``.
    """
    check_missing_policy(missing)
    if id_col and wide:
        raise ConfigError(expected("table layout", "a long table (--id-col) or a wide one (--wide), not both",
                                   "both"))
    if not id_col and not wide:
        return [load_forecast_table(path, targets, covariates, time_col, missing, fmt, encoding)]
    table = read_table(path, fmt, encoding)
    tci = table.col(time_col, "--time-col") if time_col else None
    if wide:
        if covariates:
            raise ConfigError(expected("--covariates with --wide", "none (every column is a series)",
                                       list(covariates)))
        names = list(targets) or [c for c in table.columns if c != time_col]
        cols = [table.col(c, "--target") for c in names]
        times_all = None
        if tci is not None:
            times_all = [parse_time(row[tci], table.where(r, time_col)) for r, row in enumerate(table.cells)]
            check_increasing(times_all, [table.where(r, time_col) for r in range(len(times_all))], table.lines)
        out, dropped = [], []
        for name, j in zip(names, cols):
            vals = np.array([parse_number(row[j], table.where(r, name)) for r, row in enumerate(table.cells)])
            ok = np.flatnonzero(~np.isnan(vals))
            if len(ok) == 0:
                raise DataError(f"{path}: column {name!r}: expected a series, got only missing cells")
            rows = np.arange(ok[0], ok[-1] + 1)
            out.append(_series(table, rows, vals[rows, None], 1, [name], [], tci, times_all, missing, name))
            dropped.append(len(rows) - len(out[-1]))
        inside = f"inside {sum(map(bool, dropped))} of {len(out)} series"
        warn_dropped(path, _count(sum(dropped), None, f"missing cells {inside} (those time steps)",
                                  f"missing cell {inside} (that time step)"))
        return out
    ii = table.col(id_col, "--id-col")
    tis = [table.col(c, "--target") for c in targets]
    cis = [table.col(c, "--covariates") for c in covariates]
    groups: dict[str, list[int]] = {}
    for r, row in enumerate(table.cells):
        if is_missing(row[ii]):
            raise DataError(f"{table.where(r, id_col)}: expected a series id, got a missing cell")
        groups.setdefault(label_key(row[ii]), []).append(r)
    out, dropped = [], []
    for gid, rows in groups.items():
        times = None
        if tci is not None:
            tv = [parse_time(table.cells[r][tci], table.where(r, time_col)) for r in rows]
            order = sorted(range(len(rows)), key=lambda k: tv[k])
            rows = [rows[k] for k in order]
            times = {r: tv[k] for r, k in zip(rows, order)}
            check_increasing([times[r] for r in rows], [table.where(r, time_col) for r in rows],
                             [table.lines[r] for r in rows], f"series {gid!r}")
        vals = np.array([[parse_number(table.cells[r][j], table.where(r, table.columns[j])) for j in tis + cis]
                         for r in rows], dtype=np.float64).reshape(len(rows), len(tis) + len(cis))
        times_all = None if times is None else {r: times[r] for r in rows}
        out.append(_series(table, np.array(rows), vals, len(tis), list(targets), list(covariates), tci,
                           times_all, missing, gid))
        dropped.append(len(rows) - len(out[-1]))
    warn_dropped(path, _count(sum(dropped), len(table.cells), f"rows with a missing cell (in "
                              f"{sum(map(bool, dropped))} of {len(out)} series)"))
    return out


def _series(table: Table, rows: np.ndarray, vals: np.ndarray, n_t: int, targets: list[str], covariates: list[str],
            tci: int | None, times: Any, missing: str, name: str) -> SeriesFrame:
    """One series of a long or wide table: ``rows`` of ``table`` in time order, ``vals`` their cells."""
    where = [f"{table.path}, line {table.lines[r]}" for r in rows]
    keep = np.ones(len(rows), dtype=bool)
    if missing == "drop":
        keep = ~np.isnan(vals).any(axis=1)
        vals = vals[keep]
    else:
        vals = fill_missing(vals, missing, where, targets + covariates)
    rows = rows[keep]
    if len(rows) == 0:
        raise DataError(f"{table.path}: series {name!r}: expected at least one complete row, got none")
    times_raw = tvals = None
    if tci is not None:
        times_raw = [str(table.cells[r][tci]).strip() for r in rows]
        tvals = np.array([times[r] for r in rows], dtype=np.float64)
    return SeriesFrame(vals[:, :n_t], vals[:, n_t:], targets, covariates, times_raw, tvals,
                       [table.lines[r] for r in rows], table.path, name)
