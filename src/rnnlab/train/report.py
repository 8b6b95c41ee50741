"""``plots/`` and ``report.html`` of a run: loss and metric curves, a summary table, then the
task's own sections. Built from metrics.jsonl records, so it can be redrawn from the folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from rnnlab.report.html import ReportSection, escape, figure_to_img, matplotlib_agg, pyplot, render_page, table
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
