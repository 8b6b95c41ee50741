"""``rnnlab report RUN``: draw a run's report.html and plots/ again from its folder (thin: calls
rnnlab.train.report.report_run)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run: Path = typer.Argument(..., metavar="RUN", help="A training-run folder."),
        checkpoint: str = typer.Option("latest", "--checkpoint",
                                       help="latest (the weights training ends with, as the report it writes) | "
                                            "best (those evaluate, predict and export read) | a checkpoint folder."),
        as_json: bool = typer.Option(False, "--json", help="Print the files written as one JSON object."),
    ) -> None:
        """Write RUN/report.html and RUN/plots/ from the run's metrics.jsonl and a checkpoint.

        For runs trained with --no-report, killed (kill -9) before training wrote their report, or
        drawn again after an upgrade; the report of a finished run is the same one training wrote.
        Replaces the run's report.html and its plots/*.png, nothing else."""
        from rnnlab.train.report import report_run  # lazy: keeps --help fast

        written = report_run(run, checkpoint)
        if as_json:
            print(json.dumps({"report": str(written.report), "plots": [str(p) for p in written.plots],
                              "checkpoint": str(written.checkpoint)}))
        else:
            typer.echo(f"wrote {written.report} ({len(written.plots)} plots, checkpoint {written.checkpoint.name})")
