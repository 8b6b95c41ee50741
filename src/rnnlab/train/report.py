"""``plots/`` and ``report.html`` of a run: loss and metric curves, a summary table, then the
task's own sections. Built from metrics.jsonl records, so it can be redrawn from the folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from rnnlab.errors import CheckpointError, OutputError
from rnnlab.outputs import atomic_open, atomic_path, commit
from rnnlab.report.html import ReportSection, escape, figure_to_img, matplotlib_agg, pyplot, render_page, table
from rnnlab.train.checkpoint import read_meta
from rnnlab.train.lock import run_lock
from rnnlab.train.metrics import read_records
from rnnlab.train.rundir import load_run, read_run_config, resolve_checkpoint
from rnnlab.train.task import Task


def _save(fig, path: Path) -> Path:
    """``fig`` as PNG at ``path``, through a temporary file renamed over it (a link there is
    replaced, its target left alone; a failed write leaves the previous plot)."""
    tmp = atomic_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    commit(tmp, path)
    return path


def _curves(records: list[dict[str, Any]], metric: str, plots: Path) -> tuple[list[ReportSection], list[Path]]:
    plt = pyplot()
    train = [r for r in records if r.get("kind") == "train" and isinstance(r.get("loss"), (int, float))]
    evals = [r for r in records if r.get("kind") == "eval"]
    sections, written = [], []

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="train loss (per step)")
    if evals:
        ax.plot([r["step"] for r in evals], [r.get("valid_loss") for r in evals], "o-", label="valid loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    written.append(_save(fig, plots / "loss.png"))
    sections.append(ReportSection("Loss", figure_to_img(fig, "loss curves")))

    key = f"valid_{metric}"
    if any(key in r for r in evals):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([r["step"] for r in evals if key in r], [r[key] for r in evals if key in r], "o-")
        ax.set_xlabel("step")
        ax.set_ylabel(f"valid {metric}")
        ax.grid(alpha=0.3)
        written.append(_save(fig, plots / f"{metric}.png"))
        sections.append(ReportSection(f"Validation {metric}", figure_to_img(fig, metric)))
    return sections, written


def write_report(run_dir: str | Path, task: Task, model: nn.Module,
                 records: list[dict[str, Any]]) -> tuple[Path, list[Path]]:
    """Write ``run_dir/report.html`` and its curves under ``run_dir/plots/``; returns the page and
    the plots written. The task's sections are built first, so a task that fails (its data gone)
    leaves the previous report and plots as they were; each file is renamed into place whole."""
    matplotlib_agg()
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    rows = [("task", task.name), ("steps", train[-1]["step"] if train else 0)]
    if train:
        rows.append(("last train loss", train[-1]["loss"]))
    if evals:
        rows += [(k, v) for k, v in evals[-1].items() if k.startswith("valid_")]
    summary = ReportSection("Summary", table(["", "value"], rows))
    settings = ReportSection(
        "Configuration",
        f"<pre>{escape(json.dumps({k: config[k] for k in ('task_config', 'train_config')}, indent=2))}</pre>",
    )
    model.eval()
    own = task.report_sections(model, str(run_dir))
    plots = run_dir / "plots"
    if plots.is_symlink():
        raise OutputError(f"{plots}: expected the run's plots folder, got a link (not followed: the plots would be "
                          "written where it points); remove the link and run the command again")
    plots.mkdir(exist_ok=True)
    curves, written = _curves(records, task.metric_name, plots)
    page = render_page(f"rnnlab run: {run_dir.name}", [summary, *curves, *own, settings],
                       subtitle=f"task {task.name}, rnnlab {config.get('rnnlab_version')}")
    out = run_dir / "report.html"
    with atomic_open(out) as f:
        f.write(page)
    return out, written


@dataclasses.dataclass(frozen=True)
class WrittenReport:
    report: Path            # RUN/report.html
    plots: list[Path]       # the RUN/plots/*.png this drawing wrote
    checkpoint: Path        # the checkpoint whose weights the task's sections show


def report_run(run_dir: str | Path, checkpoint: str = "latest") -> WrittenReport:
    """Draw ``report.html`` and ``plots/`` of a finished or stopped run again from its folder, holding
    the run's lock: the curves from metrics.jsonl, up to the run's latest checkpoint (the records a
    resume keeps: those after it belong to steps a killed run lost), and the task's sections from
    ``checkpoint`` ("latest", the weights training ends with and reports on; "best"; or a
    checkpoint folder)."""
    run_dir = Path(run_dir)
    records_path = run_dir / "metrics.jsonl"
    read_run_config(run_dir)                         # a folder that is no run: said as evaluate says it
    with run_lock(run_dir):
        path = resolve_checkpoint(run_dir, checkpoint)
        if not records_path.is_file():
            raise CheckpointError(f"run folder {run_dir}: expected metrics.jsonl (the curves are drawn from it), "
                                  "got none")
        task, model, meta = load_run(run_dir, str(path))
        latest = resolve_checkpoint(run_dir, "latest")
        kept = (meta if path == latest else read_meta(latest)).get("loop", {}).get("records")
        records = read_records(records_path)
        try:
            report, plots = write_report(run_dir, task, model, records if kept is None else records[:kept])
        except OSError as exc:
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"{exc.filename or run_dir}: cannot write the report ({exc.strerror or exc})") from exc
    return WrittenReport(report=report, plots=plots, checkpoint=path)
