"""``rnnlab demo`` (the suite and its report) and ``rnnlab probe`` (one probe, one cell)."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from rnnlab.cli.train import TrainArgs, cell_option_flag, cell_options_from_flags, print_train_json, with_train_options
from rnnlab.errors import ConfigError, expected


def check_memory_bias(cell: str, memory_bias: float | None) -> None:
    """--memory-bias sets a gate's bias: refused for the vanilla RNN, which has none (it was ignored)."""
    if memory_bias is not None and cell == "rnn":
        raise ConfigError(expected("--memory-bias", "a gated --cell (lstm: forget gate, gru: update gate; the "
                                   "vanilla RNN has no gate)", "--cell rnn"))


def register(app: typer.Typer, train_app: typer.Typer) -> None:

    @train_app.command("probe")
    @with_train_options
    def train_probe(
        probe: str = typer.Option("checksum", "--probe", help="checksum | distractor | segments | adding | copy"),
        cell: str = typer.Option("lstm", "--cell", help="rnn | lstm | gru"),
        length: int = typer.Option(50, "--length", help="The probe's length T."),
        hidden_size: int = typer.Option(64, "--hidden-size", "--hidden", help="Hidden units."),
        num_layers: int = typer.Option(1, "--num-layers", "--layers", help="Recurrent layers."),
        batch_size: int = typer.Option(64, "--batch-size"),
        steps_per_epoch: int = typer.Option(100, "--steps-per-epoch", help="Batches per epoch (evaluation pace)."),
        memory_bias: Optional[float] = typer.Option(None, "--memory-bias", help="LSTM f / GRU z gate bias at init."),
        data_seed: int = typer.Option(0, "--data-seed", help="Seeds the probe data and test set."),
        cell_option: Optional[List[str]] = cell_option_flag(),
        as_json: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
        run: TrainArgs = None,
    ) -> None:
        """Train one cell on one probe as a full run (folder, checkpoints, resume, report.html)."""
        from rnnlab.tasks.probe import ProbeConfig, ProbeTask  # lazy: keeps --help fast

        if run.resume_run is None:        # a run trained so before this check still resumes with its own flags
            check_memory_bias(cell, memory_bias)

        def config() -> ProbeConfig:
            return ProbeConfig(
                probe=probe, cell=cell, length=length, hidden_size=hidden_size, num_layers=num_layers, batch_size=batch_size,
                steps_per_epoch=steps_per_epoch, memory_bias=memory_bias, seed=data_seed,
                cell_options=cell_options_from_flags(cell_option))

        result = run.start(lambda: ProbeTask(config()), "probe", lambda: ProbeTask(config()).config_dict(),
                           {"data_seed": "seed", "cell_option": "cell_options"})
        if as_json:  # --json always prints its object (with --quiet too); the status lines are on stderr
            print_train_json(result)   # the best checkpoint on the probe's validation set

    @app.command("demo")
    def demo(
        quick: bool = typer.Option(False, "--quick", help="The short suite (under a minute on 2 cores; checksum up to T=100, no ablation)."),
        full: bool = typer.Option(False, "--full", help="Longer lengths and more steps (tens of minutes)."),
        seed: int = typer.Option(0, "--seed", help="Seeds data, init and training: same seed, same numbers on one machine (another CPU rounds differently, which the vanilla RNN's runs can magnify)."),
        out: str = typer.Option("demo-out", "--out", help="Folder for results.json and report.html."),
        seconds: float = typer.Option(0.0, "--max-time", "--seconds", help="Cap on each run's training loop, in seconds of wall time (0 = none)."),
        threads: int = typer.Option(1, "--threads", help="torch threads per run (1: fastest for these small models)."),
        jobs: int = typer.Option(2, "--jobs", help="Runs trained at once in worker processes (2 for 2 cores)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
        force: bool = typer.Option(False, "--force", help="Replace results.json and report.html if --out holds them already."),
        as_json: bool = typer.Option(False, "--json", help="Also print results.json's object on stdout, on one line "
                                     "(the progress and the closing line go to stderr)."),
    ) -> None:
        """RNN vs LSTM vs GRU on the probe tasks: trains them all, writes results.json and report.html."""
        if quick and full:
            raise ConfigError(expected("demo suite flags", "at most one of --quick/--full", "both"))
        if jobs < 1:
            raise ConfigError(expected("--jobs", "an integer >= 1 (runs trained at once)", jobs))
        from rnnlab.suites.demo import DemoConfig, run_demo  # lazy: keeps --help fast

        cfg = DemoConfig(suite="quick" if quick else "full" if full else "default", seed=seed, seconds=seconds,
                         threads=threads)
        res = run_demo(cfg, out, progress=not quiet, jobs=jobs, force=force)
        typer.echo(f"demo done in {res.seconds:.0f} s: {res.report} (open in a browser), {res.results_json}",
                   err=as_json)
        if as_json:
            typer.echo(json.dumps(json.loads(res.results_json.read_text(encoding="utf-8"))))

    @app.command("probe")
    def probe(
        task: str = typer.Argument(..., help="checksum | distractor | segments | adding | copy"),
        cell: str = typer.Option("lstm", "--cell", help="rnn | lstm | gru"),
        length: int = typer.Option(50, "--length", help="The probe's length T."),
        steps: int = typer.Option(400, "--max-steps", "--steps", help="Training steps (Adam, batch 64)."),
        hidden_size: int = typer.Option(32, "--hidden-size", "--hidden", help="Hidden size."),
        seed: int = typer.Option(0, "--seed"),
        lr: float = typer.Option(1e-2, "--lr", help="Adam learning rate."),
        memory_bias: Optional[float] = typer.Option(None, "--memory-bias", help="LSTM forget / GRU update gate "
                                                    "bias at init (default 4, the demo's; none when a "
                                                    "--cell-option sets forget_bias, init=chrono or coupled_gates)."),
        seconds: float = typer.Option(0.0, "--max-time", "--seconds", help="Cap on the training loop, in seconds of wall time (0 = none)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
        cell_option: Optional[List[str]] = cell_option_flag(),
    ) -> None:
        """Train one cell on one probe and print its test metric against chance (rnnlab.tasks.probe.run_probe,
        the demo's settings; `rnnlab train probe` trains a run folder instead)."""
        from rnnlab.tasks.probe import run_probe  # lazy: keeps --help fast

        check_memory_bias(cell, memory_bias)
        r = run_probe(task, cell, length, steps=steps, seconds=seconds, hidden_size=hidden_size, seed=seed, lr=lr,
                      memory_bias="auto" if memory_bias is None else memory_bias,
                      cell_options=cell_options_from_flags(cell_option))
        if as_json:
            typer.echo(json.dumps(r.to_dict()))
        else:
            typer.echo(f"{task} T={length} {cell}: test {r.metric} {r.value:.4f} (chance/baseline "
                       f"{r.chance:.4f}), {r.params} params, {r.steps} steps in {r.seconds:.1f} s")
