"""``rnnlab export RUN --onnx model.onnx`` / ``--pt2 model.pt2``: a training run's model to ONNX or an
AOTInductor package (thin: calls export_run / export_run_pt2)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    @app.command("export")
    def export(
        run: Path = typer.Argument(..., help="A training-run folder."),
        onnx: Path = typer.Option(None, "--onnx", help="Where to write the ONNX model."),
        pt2: Path = typer.Option(None, "--pt2", help="Where to write an AOTInductor package (.pt2; "
                                 "torch.export + AOTInductor, dynamic batch and sequence axes)."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder of the run."),
        force: bool = typer.Option(False, "--force", help="Overwrite --onnx / --pt2 if it exists."),
        int8: bool = typer.Option(False, "--int8", help="With --onnx: int8 weights with per-channel scales "
                                  "(ONNX Runtime's dynamic quantisation)."),
    ) -> None:
        """Export a run's model to ONNX or an AOTInductor package (dynamic batch and sequence axes);
        needs only the run folder.

        A seq2seq run is two ONNX files beside --onnx: STEM.encoder.onnx and STEM.decoder.onnx (one step)."""
        if onnx is None and pt2 is None:
            raise typer.BadParameter("expected --onnx PATH or --pt2 PATH (or both)")
        if int8 and onnx is None:
            raise typer.BadParameter("--int8: expected it with --onnx PATH (the AOTInductor package stays float)")
        prepared = None
        if pt2 is not None:   # its refusals come before --onnx is written, so a refused export writes nothing
            from rnnlab.export.pt2 import prepare_pt2  # lazy: keeps --help fast

            prepared = prepare_pt2(run, pt2, checkpoint, force=force)
        if onnx is not None:
            from rnnlab.export.onnx import export_run  # lazy: keeps --help fast

            path = export_run(run, onnx, checkpoint, force=force, int8=int8)
            typer.echo(f"wrote {path[0]} and {path[1]}" if isinstance(path, tuple) else f"wrote {path}")
        if pt2 is not None:
            from rnnlab.engine.fast import kernel_library  # lazy: keeps --help fast
            from rnnlab.export.pt2 import export_run_pt2  # lazy: keeps --help fast

            typer.echo(f"wrote {export_run_pt2(run, pt2, checkpoint, force=force, prepared=prepared)} "
                       f"(load the operators first: torch.ops.load_library({kernel_library()!r}))")
