"""``rnnlab bench``: speed and memory against torch.nn (thin: flags -> BenchConfig -> run_bench)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from rnnlab.outputs import atomic_open, check_output, is_stdout


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        quick: bool = typer.Option(False, "--quick", help="Fewer repeats and a shorter memory sequence (< 1 min)."),
        json_path: Path = typer.Option(None, "--json", help="Write the records to this JSON file ('-', or no file: "
                                       "print them to stdout as one JSON list, the table then going to stderr)."),
        engine: str = typer.Option("fast", "--engine", help="auto | fast | reference | checkpoint: the rnnlab engine to time against torch.nn."),
        threads: int = typer.Option(2, "--threads", help="torch.set_num_threads for the run."),
        no_onnx: bool = typer.Option(False, "--no-onnx", help="Skip the ONNX Runtime records."),
        no_variants: bool = typer.Option(False, "--no-variants",
                                         help="Skip the cell-variant records (layer norm, peepholes, ... vs torch.nn's "
                                              "standard cell at T=100 B=64 I=128 H=128)."),
        no_gradgrad: bool = typer.Option(False, "--no-gradgrad",
                                         help="Skip the double-backward records (a gradient-penalty step vs torch.nn's)."),
        repeats: int = typer.Option(0, "--repeats", help="Timed repeats per measurement (0: 3 quick, 15 full)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
    ) -> None:
        """Time rnnlab against torch.nn (alternating, median of repeats) and print the table."""

        from rnnlab.suites.bench import BenchConfig, render_table, run_bench  # lazy: keeps --help fast

        to_stdout = is_stdout(json_path)
        if json_path is not None and not to_stdout:   # refused before minutes of timing, not after
            check_output(json_path, force=force, flag="--json")

        console = Console(width=max(Console().width, 150), stderr=to_stdout)  # the table has 11 columns
        cfg = BenchConfig(quick=quick, engine=engine, threads=threads, onnx=not no_onnx,
                          variants=not no_variants, gradgrad=not no_gradgrad, repeats=repeats)
        res = run_bench(cfg, log=lambda s: console.print(f"[dim]{s}[/dim]"))
        console.print(render_table(res))
        if json_path is not None:
            # A list of records (the documented format), each carrying the machine it ran on.
            text = json.dumps([{**r, "machine": res.machine} for r in res.as_dicts()], indent=1)
            if to_stdout:
                print(text)
                return
            with atomic_open(json_path, encoding="utf-8") as fh:
                fh.write(text)
            console.print(f"records written to {json_path}")
