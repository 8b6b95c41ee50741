"""``rnnlab export RUN --onnx model.onnx``: a training run's model to ONNX (thin: calls export_run)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    @app.command("export")
    def export(
        run: Path = typer.Argument(..., help="A training-run folder."),
        onnx: Path = typer.Option(..., "--onnx", help="Where to write the ONNX model."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="'best' or 'latest'."),
        force: bool = typer.Option(False, "--force", help="Overwrite --onnx if it exists."),
    ) -> None:
        """Export a run's model to ONNX (dynamic batch and sequence axes); needs only the run folder.

        A seq2seq run is two files beside --onnx: STEM.encoder.onnx and STEM.decoder.onnx (one step)."""
        from rnnlab.export.onnx import export_run  # lazy: keeps --help fast

        path = export_run(run, onnx, checkpoint, force=force)
        typer.echo(f"wrote {path[0]} and {path[1]}" if isinstance(path, tuple) else f"wrote {path}")
