"""Per-step and per-eval metrics of a run: ``metrics.jsonl`` (the record) and ``metrics.csv``.

Written here rather than through Lightning's CSVLogger because exact resume needs
to cut the log back to the checkpoint: a process killed after its last checkpoint has logged
steps that the resumed run will log again. Each checkpoint stores how many records existed
when it was written; resuming truncates ``metrics.jsonl`` to that count and rebuilds the CSV.
The CSV gains a column when a record brings a new key (the first eval, say): it is then
rewritten from the JSONL, which happens a handful of times per run.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from rnnlab.errors import CheckpointError


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # "nan"/"inf": JSON has no literal for them
    return v


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a torn last line (killed writer) is dropped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        if isinstance(rec, dict):
            records.append(rec)
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and ``metrics.csv`` in ``run_dir``."""

    def __init__(self, run_dir: str | Path, keep_records: int = 0):
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        self.csv = Path(run_dir) / "metrics.csv"
        records = read_records(self.jsonl)
        if len(records) < keep_records:
            raise CheckpointError(
                f"{self.jsonl}: expected at least {keep_records} records (the checkpoint's count), got {len(records)}"
            )
        self.records = records[:keep_records]
        try:
            self._rewrite_all()
        except OSError as exc:
            raise CheckpointError(f"{self.jsonl}: cannot write ({exc.strerror or exc})") from exc

    def __len__(self) -> int:
        return len(self.records)

    def _columns(self) -> list[str]:
        cols: list[str] = []
        for rec in self.records:
            cols += [k for k in rec if k not in cols]
        return cols

    def _rewrite_all(self) -> None:
        """Both files through a temporary file and os.replace: a kill here never leaves half a log."""
        self._header = self._columns()
        tmp = self.jsonl.with_name(".tmp-metrics.jsonl")
        with open(tmp, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in self.records))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.jsonl)
        tmp = self.csv.with_name(".tmp-metrics.csv")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._header)
            w.writeheader()
            w.writerows(self.records)
        os.replace(tmp, self.csv)

    def sync(self) -> None:
        """fsync the log; called before each checkpoint, whose record count must stay true."""
        try:
            with open(self.jsonl, "a") as f:  # the CSV is derived: resume rebuilds it from the JSONL
                os.fsync(f.fileno())
        except OSError as exc:
            raise CheckpointError(f"{self.jsonl}: cannot write ({exc.strerror or exc})") from exc

    def log(self, record: dict[str, Any]) -> None:
        record = {k: _finite_or_none(v) for k, v in record.items()}
        self.records.append(record)
        try:
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")
            if any(k not in self._header for k in record):
                self._rewrite_all()
                return
            with open(self.csv, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._header).writerow(record)
        except OSError as exc:
            raise CheckpointError(
                f"{self.jsonl.parent}: cannot write the metrics log ({exc.strerror or exc}); the run stopped "
                f"and continues from its last checkpoint with --resume {self.jsonl.parent}"
            ) from exc
