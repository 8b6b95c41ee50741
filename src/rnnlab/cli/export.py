"""``rnnlab export RUN --onnx model.onnx`` / ``--pt2 model.pt2``: a training run's model to ONNX or an
AOTInductor package (thin: calls export_run / export_run_pt2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from rnnlab.cli.train import json_number


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    @app.command("export")
    def export(
        run: Path = typer.Argument(..., metavar="RUN", help="A training-run folder."),
        onnx: Path = typer.Option(None, "--onnx", help="Where to write the ONNX model."),
        pt2: Path = typer.Option(None, "--pt2", help="Where to write an AOTInductor package (.pt2; "
                                 "torch.export + AOTInductor, dynamic batch and sequence axes)."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder of the run."),
        force: bool = typer.Option(False, "--force", help="Overwrite --onnx / --pt2 if it exists."),
        int8: bool = typer.Option(False, "--int8", help="With --onnx: int8 weights with per-channel scales "
                                  "(ONNX Runtime's dynamic quantisation)."),
        as_json: bool = typer.Option(False, "--json", help="Print the files written and the ONNX Runtime check as "
                                     "one JSON object (status lines go to stderr)."),
    ) -> None:
        """Export a run's model to ONNX or an AOTInductor package (dynamic batch and sequence axes);
        needs only the run folder.

        A seq2seq run is two ONNX files beside --onnx: STEM.encoder.onnx and STEM.decoder.onnx (one step).

        Where onnxruntime is installed, each ONNX file is run on an example batch other than the traced
        one (another batch size and length) and is written only if it gives the model's outputs; the
        largest difference is printed (with --int8, the int8 file's difference from the float model)."""
        if onnx is None and pt2 is None:
            raise typer.BadParameter("expected --onnx PATH or --pt2 PATH (or both)")
        if int8 and onnx is None:
            raise typer.BadParameter("--int8: expected it with --onnx PATH (the AOTInductor package stays float)")
        if onnx is not None and pt2 is not None and os.path.abspath(onnx) == os.path.abspath(pt2):
            raise typer.BadParameter(f"--pt2 {pt2}: expected a path other than --onnx (the package would replace "
                                     "the ONNX file)")
        say = typer.echo if not as_json else (lambda line: typer.echo(line, err=True))
        prepared = None
        if pt2 is not None:   # its refusals come before --onnx is written, so a refused export writes nothing
            from rnnlab.export.pt2 import export_run_pt2, prepare_pt2  # lazy: keeps --help fast
            prepared = prepare_pt2(run, pt2, checkpoint, force=force)
        record: dict = {"onnx": None, "pt2": None, "int8": int8}
        if onnx is not None:
            from rnnlab.export.onnx import export_run  # lazy: keeps --help fast
            done = export_run(run, onnx, checkpoint, force=force, int8=int8)
            say("wrote " + " and ".join(str(p) for p in done.paths))
            say(_check_line(done, int8))
            record["onnx"] = [{"path": str(p), "runtime_difference": d} for p, d in zip(done.paths, done.difference)]
            record["checked_shape"], record["traced_shape"] = list(done.checked), list(done.traced)
        if pt2 is not None:
            from rnnlab.engine.fast import kernel_library  # lazy: keeps --help fast
            packaged = export_run_pt2(run, pt2, checkpoint, force=force, prepared=prepared)
            say(f"wrote {packaged.path} (load the operators first: torch.ops.load_library({kernel_library()!r}))")
            if packaged.minimums:
                least = ", ".join(f"{k} at least {v}" for k, v in packaged.minimums.items())
                say(f"the package needs inputs of {least}; it does not check them (AOTInductor checks input sizes "
                    "only where AOTI_RUNTIME_CHECK_INPUTS=1 is set), and reads a smaller input past its end")
            record["pt2"] = {"path": str(packaged.path), "kernel_library": kernel_library(),
                             "min_sizes": packaged.minimums}
        if as_json:
            typer.echo(json.dumps(json_number(record)))


def _check_line(done, int8: bool) -> str:
    """The status line of export_run's ONNX Runtime check."""
    if any(d is None for d in done.difference):
        return "not run in ONNX Runtime: onnxruntime is not installed (pip install 'rnnlab[onnx]')"
    worst = max(done.difference)
    what = "the int8 graph's largest difference from the float model" if int8 else "largest difference from the model"
    inputs = (f"example inputs of shape {done.checked} (traced with {done.traced})" if done.checked != done.traced
              else f"the traced example inputs (shape {done.traced})")
    return f"ONNX Runtime on {inputs}: {what} {worst:.1e} (relative to the largest output, where above 1)"
