"""``plots/`` and ``report.html`` of a run: loss and metric curves, a summary table, then the
task's own sections. Built from metrics.jsonl records, so it can be redrawn from the folder."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from torch import nn

from rnnlab.report.html import ReportSection, escape, figure_to_img, matplotlib_agg, pyplot, render_page, table
from rnnlab.errors import CheckpointError
from rnnlab.train.metrics import read_records
from rnnlab.train.rundir import load_run, read_run_config, resolve_checkpoint
from rnnlab.train.task import Task


def _curves(records: list[dict[str, Any]], metric: str, plots: Path) -> list[ReportSection]:
    plt = pyplot()
    train = [r for r in records if r.get("kind") == "train" and isinstance(r.get("loss"), (int, float))]
    evals = [r for r in records if r.get("kind") == "eval"]
    sections = []

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="train loss (per step)")
    if evals:
        ax.plot([r["step"] for r in evals], [r.get("valid_loss") for r in evals], "o-", label="valid loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(plots / "loss.png", dpi=110, bbox_inches="tight")
    sections.append(ReportSection("Loss", figure_to_img(fig, "loss curves")))

    key = f"valid_{metric}"
    if any(key in r for r in evals):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([r["step"] for r in evals if key in r], [r[key] for r in evals if key in r], "o-")
        ax.set_xlabel("step")
        ax.set_ylabel(f"valid {metric}")
        ax.grid(alpha=0.3)
        fig.savefig(plots / f"{metric}.png", dpi=110, bbox_inches="tight")
        sections.append(ReportSection(f"Validation {metric}", figure_to_img(fig, metric)))
    return sections


def write_report(run_dir: str | Path, task: Task, model: nn.Module, records: list[dict[str, Any]]) -> Path:
    matplotlib_agg()
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
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
    sections = [summary, *_curves(records, task.metric_name, plots), *task.report_sections(model, str(run_dir)), settings]
    page = render_page(f"rnnlab run: {run_dir.name}", sections, subtitle=f"task {task.name}, rnnlab {config.get('rnnlab_version')}")
    out = run_dir / "report.html"
    out.write_text(page)
    return out


@dataclasses.dataclass(frozen=True)
class WrittenReport:
    report: Path            # RUN/report.html
    plots: list[Path]       # the RUN/plots/*.png this drawing wrote
    checkpoint: Path        # the checkpoint whose weights the task's sections show


def report_run(run_dir: str | Path, checkpoint: str = "latest") -> WrittenReport:
    """Draw ``report.html`` and ``plots/`` of a finished or stopped run again from its folder: the
    curves from metrics.jsonl, the task's sections from ``checkpoint`` ("latest", the weights
    training ends with and reports on; "best"; or a checkpoint folder)."""
    run_dir = Path(run_dir)
    records_path = run_dir / "metrics.jsonl"
    read_run_config(run_dir)                         # a folder that is no run: said as evaluate says it
    path = resolve_checkpoint(run_dir, checkpoint)
    if not records_path.is_file():
        raise CheckpointError(f"run folder {run_dir}: expected metrics.jsonl (the curves are drawn from it), got none")
    task, model, _ = load_run(run_dir, str(path))
    start = time.time_ns()
    report = write_report(run_dir, task, model, read_records(records_path))
    plots = sorted(p for p in (run_dir / "plots").glob("*.png") if p.stat().st_mtime_ns >= start)
    return WrittenReport(report=report, plots=plots, checkpoint=path)
