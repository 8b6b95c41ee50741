"""``rnnlab train lm`` and ``rnnlab generate``: thin wrappers over ``rnnlab.tasks.lm``.

``rnnlab evaluate RUN [--text FILE]`` belongs to the training core's CLI; for a language
model it reaches :func:`rnnlab.tasks.lm.evaluate_run` through the task.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    _register_evaluate_fallback(app)

    @train_app.command("lm")
    def train_lm(
        text: Optional[Path] = typer.Option(None, "--text", help="A text file (split contiguously) or a folder with train/valid/test files."),
        dataset: Optional[str] = typer.Option(None, "--dataset", help="timemachine | tinyshakespeare | wikitext2."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local copy of the data set (no download)."),
        encoding: str = typer.Option("utf-8", "--encoding", help="Encoding of --text files."),
        level: Optional[str] = typer.Option(None, "--level", help="char | word (default: the data set's, char for --text)."),
        min_freq: int = typer.Option(1, "--min-freq", help="Tokens seen fewer times become <unk>."),
        preprocess: str = typer.Option("none", "--preprocess", help="none | d2l (lower-case letters and spaces)."),
        split: str = typer.Option("0.9,0.05,0.05", "--split", help="train,valid,test fractions when the corpus has no split."),
        cell: str = typer.Option("lstm", "--cell", help="rnn | lstm | gru."),
        hidden: int = typer.Option(256, "--hidden", help="Hidden units per layer."),
        layers: int = typer.Option(1, "--layers", help="Stacked recurrent layers."),
        embed: Optional[int] = typer.Option(None, "--embed", help="Embedding size; 0 = one-hot (default: one-hot for char, 200 for word)."),
        dropout: float = typer.Option(0.0, "--dropout", help="Dropout on embeddings, between layers, before the decoder."),
        tied: bool = typer.Option(False, "--tied", help="Tie decoder and embedding weights (needs --embed = --hidden)."),
        bptt: int = typer.Option(35, "--bptt", help="Truncated-BPTT length."),
        batch_size: int = typer.Option(32, "--batch-size", help="Sequences per batch."),
        eval_batch_size: int = typer.Option(10, "--eval-batch-size", help="Sequences per batch when scoring held-out text."),
        sampling: str = typer.Option("sequential", "--sampling", help="sequential (state carried) | random (state reset)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/lm, or the next free runs/lm-N)."),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run folder."),
        max_steps: int = typer.Option(0, "--max-steps", help="Stop after this many optimizer steps (0 = no limit; 1000 if no budget is given)."),
        max_epochs: int = typer.Option(0, "--max-epochs", help="Stop after this many epochs (0 = no limit)."),
        max_time: float = typer.Option(0.0, "--max-time", help="Stop after this many seconds (0 = no limit)."),
        seed: int = typer.Option(0, "--seed", help="Seeds the model initialisation and the data order."),
        optimizer: str = typer.Option("sgd", "--optimizer", help="sgd | adam | adamw."),
        lr: float = typer.Option(1.0, "--lr", help="Learning rate (d2l: SGD 1; pytorch/examples: SGD 20)."),
        clip: float = typer.Option(1.0, "--clip", help="Gradient clipping by global norm (0 = off)."),
        schedule: str = typer.Option("none", "--schedule", help="none | step | plateau | cosine."),
        eval_every: int = typer.Option(0, "--eval-every", help="Evaluate every N steps (and at each epoch end)."),
        threads: int = typer.Option(0, "--threads", help="torch threads (0 = torch's default)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Train a character- or word-level language model."""
        from rnnlab.tasks.lm import LMTask
        from rnnlab.train import TrainConfig, fit, new_run_dir
        from rnnlab.train import resume as resume_run

        if resume is not None:
            changes = {k: v for k, v in dict(max_steps=max_steps, max_epochs=max_epochs, max_time=max_time).items() if v}
            result = resume_run(resume, quiet=quiet, **changes)
            if not quiet:
                _print_summary(result.run_dir)
            return
        fractions = _fractions(split)
        task = LMTask(dict(
            text=str(text) if text else None, dataset=dataset, data_dir=str(data_dir) if data_dir else None,
            encoding=encoding, level=level, min_freq=min_freq, split=fractions, preprocess=preprocess, cell=cell,
            hidden=hidden, layers=layers, embed=embed, dropout=dropout, tied=tied, bptt=bptt, batch_size=batch_size,
            eval_batch_size=eval_batch_size, sampling=sampling, seed=seed,
        ))  # every data error is raised here, before any model is built
        if not (max_steps or max_epochs or max_time):
            max_steps = 1000  # no budget given: a short first run rather than an error
        config = TrainConfig(
            max_steps=max_steps, max_epochs=max_epochs, max_time=max_time, seed=seed, optimizer=optimizer, lr=lr,
            clip=clip, schedule=schedule, eval_every=eval_every, threads=threads, quiet=quiet,
        )
        result = fit(task, config, out=out if out is not None else new_run_dir("runs/lm"))
        if not quiet:
            _print_summary(result.run_dir)

    @app.command("generate")
    def generate_cmd(
        run: Path = typer.Argument(..., help="A language-model run folder (rnnlab train lm --out RUN)."),
        prime: str = typer.Option("", "--prime", help="Text to start from; empty starts at a line break."),
        length: int = typer.Option(200, "--length", help="Tokens (characters or words) to generate."),
        temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature; 0 is greedy (argmax)."),
        top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample only among the k most likely tokens."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling: the same seed gives the same text."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder."),
    ) -> None:
        """Sample text from a trained language model, printed as it is produced."""
        from rnnlab.tasks.lm import generate_from_run, read_lm_run

        stream = generate_from_run(run, prime, length, temperature, top_k, seed, checkpoint)
        out = sys.stdout
        out.write(prime)
        if prime and not prime[-1].isspace() and read_lm_run(run).cfg.level == "word":
            out.write(" ")  # word tokens come as "word ", so the prime needs its own separator
        for piece in stream:
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()


def _has_command(app: typer.Typer, name: str) -> bool:
    return any((c.name or (c.callback.__name__ if c.callback else "")).replace("_", "-") == name
               for c in app.registered_commands)


def _register_evaluate_fallback(app: typer.Typer) -> None:
    """``rnnlab evaluate`` for language-model runs, registered only while the training core's
    CLI (listed before ``lm`` in ``rnnlab.cli.main._AREAS``) provides no ``evaluate`` command."""
    if _has_command(app, "evaluate"):
        return

    @app.command("evaluate")
    def evaluate_cmd(
        run: Path = typer.Argument(..., help="A language-model run folder."),
        text: Optional[Path] = typer.Option(None, "--text", help="Score this text file instead of the run's test split."),
        split: str = typer.Option("test", "--split", help="train | valid | test (without --text)."),
        encoding: Optional[str] = typer.Option(None, "--encoding", help="Encoding of --text (default: the run's)."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder."),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
    ) -> None:
        """Perplexity of a trained language model on its test split or on a text file."""
        import json

        from rnnlab.tasks.lm import evaluate_run

        m = evaluate_run(run, str(text) if text else None, split, encoding, checkpoint)
        if as_json:
            print(json.dumps(m))
        else:
            print(", ".join(f"{k} {v:.4f}" if k not in ("tokens", "tokens_per_s") else f"{k} {v:,.0f}"
                            for k, v in m.items()))


def _print_summary(run_dir: Path) -> None:
    from rnnlab.tasks.lm import summarize_run

    s = summarize_run(run_dir)
    parts = []
    if "train_ppl" in s:
        parts.append(f"train ppl {s['train_ppl']:.3f}" + (f" ({s['train_bpc']:.3f} bpc)" if "train_bpc" in s else ""))
    if "valid_ppl" in s:
        parts.append(f"valid ppl {s['valid_ppl']:.3f}" + (f" ({s['valid_bpc']:.3f} bpc)" if "valid_bpc" in s else ""))
    if "tokens_per_s" in s:
        parts.append(f"{s['tokens_per_s']:,.0f} tokens/s")
    if parts:
        print("lm: " + ", ".join(parts), flush=True)


def _fractions(text: str) -> tuple[float, float, float]:
    from rnnlab.errors import ConfigError, expected

    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ConfigError(expected("--split", "three comma-separated fractions such as 0.9,0.05,0.05", repr(text)))
    return parts  # type: ignore[return-value]
