"""The UCR/UEA ``.ts`` format used by the time-series classification archives.

A file is a header of ``@key value`` lines, then ``@data`` and one case per line::

    # comments start with '#'
    @problemName BasicMotions
    @timeStamps false
    @missing false
    @univariate false
    @dimensions 2
    @equalLength true
    @seriesLength 3
    @classLabel true standing running
    @data
    0.1,0.2,0.3:1.0,1.1,1.2:standing

Dimensions are separated by ``:``, values by ``,``, ``?`` is a missing value, and the class
label (when ``@classLabel true``) is the last field. Cases may differ in length unless
``@equalLength true``; within a case every dimension must have the same length (a ragged
case is an error). ``@timeStamps true`` (values written as ``(t,v)``) is not supported and
says so. Missing values follow the same ``missing`` policy as the CSV loaders.
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab.data.tables import (
    LabelMap,
    SequenceExamples,
    check_missing_policy,
    fill_missing,
    label_key,
    _read_text,
    _count,
    as_float32,
    warn_dropped,
)
from rnnlab.errors import DataError

_BOOL_KEYS = {"timestamps", "missing", "univariate", "equallength", "classlabel", "targetlabel"}


def _bool(path: str, line: int, key: str, value: str) -> bool:
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise DataError(f"{path}, line {line}: @{key}: expected true or false, got {value.strip()[:20]!r}")
    return v == "true"


def _value(path: str, line: int, dim: int, col: int, tok: str) -> float:
    s = tok.strip()
    if s == "?" or s.lower() in ("nan", ""):
        return math.nan
    try:
        x = float(s)
    except ValueError:
        raise DataError(f"{path}, line {line}, dimension {dim + 1}, value {col + 1}: expected a number, "
                        f"got {s[:40]!r}") from None
    if not math.isfinite(x):
        raise DataError(f"{path}, line {line}, dimension {dim + 1}, value {col + 1}: expected a finite "
                        f"number, got {s[:40]!r}")
    return x


def load_ts(
    path: str,
    label_map: LabelMap | None = None,
    missing: str = "error",
    require_labels: bool = True,
    encoding: str = "utf-8",
) -> SequenceExamples:
    """Read a ``.ts`` file into sequences (T_i, D) and label indices."""
    check_missing_policy(missing)
    text = _read_text(path, encoding)
    header: dict[str, object] = {}
    declared: list[str] | None = None
    in_data = False
    seqs: list[np.ndarray] = []
    keys: list[str] = []
    lines: list[int] = []
    dims: int | None = None
    dropped_steps = dropped_cases = 0
    for ln, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if not in_data:
            if not s.startswith("@"):
                raise DataError(f"{path}, line {ln}: expected a '@key value' header line or @data, got {s[:40]!r}")
            key, _, rest = s[1:].partition(" ")
            k = key.lower()
            if k == "data":
                in_data = True
                if header.get("timestamps"):
                    raise DataError(f"{path}: @timeStamps true: expected plain values, got time-stamped "
                                    "series, which rnnlab does not read")
                if "classlabel" not in header and require_labels:
                    raise DataError(f"{path}: header: expected @classLabel before @data, got none")
                continue
            if k in _BOOL_KEYS:
                if k == "classlabel":
                    parts = rest.split()
                    if not parts:
                        raise DataError(f"{path}, line {ln}: @classLabel: expected true or false, got nothing")
                    header[k] = _bool(path, ln, key, parts[0])
                    if header[k]:
                        declared = [label_key(p) for p in parts[1:]] or None
                else:
                    header[k] = _bool(path, ln, key, rest)
            elif k in ("dimensions", "serieslength"):
                try:
                    header[k] = int(rest.strip())
                    if header[k] < 1:
                        raise ValueError
                except ValueError:
                    raise DataError(f"{path}, line {ln}: @{key}: expected a positive integer, "
                                    f"got {rest.strip()[:20]!r}") from None
            else:
                header[k] = rest.strip()  # @problemName and unknown keys are kept, not used
            continue
        has_label = bool(header.get("classlabel"))
        fields = s.split(":")
        label = None
        if has_label:
            if len(fields) < 2:
                raise DataError(f"{path}, line {ln}: expected dimensions and a class label separated by ':', "
                                f"got {len(fields)} field")
            label = label_key(fields[-1])
            fields = fields[:-1]
            if not label:
                raise DataError(f"{path}, line {ln}: class label: expected a value, got an empty field")
        want = dims if dims is not None else header.get("dimensions", len(fields))
        if len(fields) != want:
            raise DataError(f"{path}, line {ln}: dimensions: expected {want}, got {len(fields)}")
        dims = len(fields)
        cols = [[_value(path, ln, d, c, tok) for c, tok in enumerate(f.split(","))] for d, f in enumerate(fields)]
        lens = [len(c) for c in cols]
        if len(set(lens)) != 1:
            raise DataError(f"{path}, line {ln}: a ragged case: expected every dimension to have the same "
                            f"length, got lengths {lens}")
        if header.get("equallength") and "serieslength" in header and lens[0] != header["serieslength"]:
            raise DataError(f"{path}, line {ln}: series length: expected {header['serieslength']} "
                            f"(@seriesLength), got {lens[0]}")
        vals = np.array(cols, dtype=np.float64).T  # (T, D)
        where = [f"{path}, line {ln}, value {t + 1}" for t in range(len(vals))]
        if missing == "drop":
            keep = ~np.isnan(vals).any(axis=1)
            if not keep.any():
                dropped_cases += 1
                continue
            dropped_steps += int((~keep).sum())
            vals = vals[keep]
        elif np.isnan(vals).any():
            if missing == "error":
                t, d = map(int, np.argwhere(np.isnan(vals))[0])
                raise DataError(f"{path}, line {ln}, dimension {d + 1}, value {t + 1}: expected a number, got a "
                                "missing value ('?'); pass --missing drop|ffill|interpolate to allow gaps")
            vals = fill_missing(vals, missing, where)
        if label is not None and declared is not None and label not in declared:
            raise DataError(f"{path}, line {ln}: class label: expected one of @classLabel {declared[:20]}, "
                            f"got {label!r}")
        seqs.append(as_float32(vals, f"{path}, line {ln}"))
        keys.append(label)
        lines.append(ln)
    if not in_data:
        raise DataError(f"{path}: expected an @data line, got none")
    if not seqs:
        raise DataError(f"{path}: expected at least one case after @data, got none")
    warn_dropped(path, _count(dropped_cases, len(seqs) + dropped_cases, "cases (no step without a missing value)"),
                 _count(dropped_steps, None, "time steps with a missing value inside the other cases",
                        "time step with a missing value inside the other cases"))
    if header.get("equallength") and len({len(x) for x in seqs}) > 1:
        raise DataError(f"{path}: @equalLength true: expected one length, got lengths "
                        f"{sorted({len(x) for x in seqs})[:10]}")
    labels = None
    if header.get("classlabel"):
        if label_map is None:
            label_map = LabelMap.fit(keys, f"{path}: class labels")
        labels = [label_map.index(k, f"{path}, line {l}") for k, l in zip(keys, lines)]
    elif require_labels:
        raise DataError(f"{path}: @classLabel: expected true for training or evaluation, got false")
    return SequenceExamples(seqs, labels, lines, label_map, path, dims or 1)


def write_ts(path: str, seqs: list[np.ndarray], labels: list[str] | None, problem: str = "rnnlab") -> None:
    """Write sequences (T_i, D) in ``.ts`` format (used by tests and examples)."""
    dims = seqs[0].shape[1]
    equal = len({len(s) for s in seqs}) == 1
    lines = [f"@problemName {problem}", "@timeStamps false", "@missing false",
             f"@univariate {'true' if dims == 1 else 'false'}", f"@dimensions {dims}",
             f"@equalLength {'true' if equal else 'false'}"]
    if equal:
        lines.append(f"@seriesLength {len(seqs[0])}")
    if labels is not None:
        lines.append("@classLabel true " + " ".join(sorted(set(labels))))
    else:
        lines.append("@classLabel false")
    lines.append("@data")
    for i, s in enumerate(seqs):
        parts = [",".join(repr(float(v)) for v in s[:, d]) for d in range(dims)]
        if labels is not None:
            parts.append(labels[i])
        lines.append(":".join(parts))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
