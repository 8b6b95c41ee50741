"""``rnnlab train lm`` and ``rnnlab generate``: thin wrappers over ``rnnlab.tasks.lm``.

``rnnlab evaluate RUN [--split test] [--text FILE]`` belongs to the training core's CLI; for a
language-model run it reaches :func:`rnnlab.tasks.lm.evaluate_run` through the evaluator
registered here. The common train flags (budget, optimizer, --out, --resume, ...) come from
``rnnlab.cli.train.with_train_options``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from rnnlab.cli.train import (TrainArgs, cell_option_flag, cell_options_from_flags, check_file_flags, extra_options,
                              json_number, print_data_warnings, register_evaluator, with_train_options)
from rnnlab.errors import ConfigError, expected


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    register_evaluator("lm", _evaluate_lm, EVALUATE_FLAGS)

    @train_app.command("lm")
    @with_train_options
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
        hidden_size: int = typer.Option(256, "--hidden-size", "--hidden", help="Hidden units per layer."),
        num_layers: int = typer.Option(1, "--num-layers", "--layers", help="Stacked recurrent layers."),
        embed: Optional[int] = typer.Option(None, "--embed", help="Embedding size; 0 = one-hot (default: --hidden-size with --tied, else one-hot for char, 200 for word)."),
        dropout: float = typer.Option(0.0, "--dropout", help="Dropout on embeddings, between layers, before the decoder."),
        tied: bool = typer.Option(False, "--tied", help="Share the input embedding with the output layer (needs --embed = --hidden-size, or --layers >= 2); with --adaptive-softmax the embedding is read from its clusters."),
        bptt: int = typer.Option(35, "--bptt", help="Truncated-BPTT length."),
        batch_size: int = typer.Option(32, "--batch-size", help="Sequences per batch."),
        eval_batch_size: int = typer.Option(10, "--eval-batch-size", help="Sequences per batch when scoring held-out text."),
        sampling: str = typer.Option("sequential", "--sampling", help="sequential (state carried) | random (state reset)."),
        max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Train on the first N tokens of the training split only (d2l: 10000)."),
        adaptive_softmax: str = typer.Option("", "--adaptive-softmax", help="Adaptive softmax cluster cutoffs, e.g. 2000,10000 (default: full softmax)."),
        locked_dropout: bool = typer.Option(False, "--locked-dropout", help="One dropout mask per sequence, reused at every step (AWD-LSTM)."),
        input_dropout: Optional[float] = typer.Option(None, "--input-dropout", help="Dropout on the embeddings (default: --dropout)."),
        hidden_dropout: Optional[float] = typer.Option(None, "--hidden-dropout", help="Dropout between layers (default: --dropout)."),
        embed_dropout: float = typer.Option(0.0, "--embed-dropout", help="Drop whole words: rows of the embedding matrix."),
        weight_drop: float = typer.Option(0.0, "--weight-drop", help="DropConnect on the hidden-to-hidden matrices."),
        ar: float = typer.Option(0.0, "--ar", help="Activation regularisation weight (AWD-LSTM: 2)."),
        tar: float = typer.Option(0.0, "--tar", help="Temporal activation regularisation weight (AWD-LSTM: 1)."),
        init_std: Optional[float] = typer.Option(None, "--init-std", help="Draw every weight matrix from N(0, S^2) and zero every bias (d2l's from-scratch models: 0.01); default: torch.nn's initialisation."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary (perplexities, tokens/s, steps) as one JSON object."),
        cell_option: Optional[List[str]] = cell_option_flag(),
        run: TrainArgs = None,
    ) -> None:
        """Train a character- or word-level language model.

        Defaults of the common flags for language models: SGD, --lr 1, --clip 1 (d2l's setting).
        A --max-time or --max-epochs budget on its own is not cut short by the default 1000 steps.
        """
        from rnnlab.tasks.lm import LMTask  # lazy: keeps --help fast

        given = run.given
        defaults: dict = dict(LMTask.train_defaults)
        if ("max_time" in given or "max_epochs" in given) and "max_steps" not in given:
            defaults["max_steps"] = 0

        def config() -> dict:
            return dict(
                text=str(text) if text else None, dataset=dataset, data_dir=str(data_dir) if data_dir else None,
                encoding=encoding, level=level, min_freq=min_freq, split=list(_fractions(split)), preprocess=preprocess,
                cell=cell, hidden_size=hidden_size, num_layers=num_layers, embed=embed, dropout=dropout, tied=tied, bptt=bptt,
                batch_size=batch_size, eval_batch_size=eval_batch_size, sampling=sampling, seed=given.get("seed", 0),
                cell_options=cell_options_from_flags(cell_option), max_tokens=max_tokens,
                adaptive_cutoffs=list(_cutoffs(adaptive_softmax)), locked_dropout=locked_dropout,
                input_dropout=input_dropout, hidden_dropout=hidden_dropout, embed_dropout=embed_dropout,
                weight_drop=weight_drop, ar=ar, tar=tar, init_std=init_std,
            )

        def build() -> LMTask:  # every data error is raised here, before any model is built
            with print_data_warnings():   # most tokens <unk>: one line on stderr
                return LMTask(config())

        t0 = time.perf_counter()
        result = run.start(build, "lm", config, {"cell_option": "cell_options",
                                                  "adaptive_softmax": "adaptive_cutoffs"}, LMTask.data_keys, **defaults)
        if as_json:
            _print_json(result, time.perf_counter() - t0)
        elif not given.get("quiet"):
            _print_summary(result.run_dir)

    @app.command("generate")
    def generate_cmd(
        run: Path = typer.Argument(..., metavar="RUN", help="A language-model run folder (rnnlab train lm --out RUN)."),
        prime: str = typer.Option("", "--prime", help="Text to start from; empty starts at a line break."),
        length: int = typer.Option(200, "--length", help="Tokens (characters or words) to generate."),
        temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature; 0 is greedy (argmax)."),
        top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample only among the k most likely tokens."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling: the same seed gives the same text."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder of the run."),
    ) -> None:
        """Sample text from a trained language model, printed as it is produced."""
        from rnnlab.tasks.lm import generate_from_run, read_lm_run  # lazy: keeps --help fast

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


EVALUATE_FLAGS = ("--text", "--encoding")   # rnnlab evaluate's flags for a language model


def _evaluate_lm(run_dir: Path, split: str, checkpoint: str, extra: list[str]) -> dict[str, float]:
    """``rnnlab evaluate RUN [--split S | --text FILE [--encoding E]]`` for a language-model run."""
    from rnnlab.tasks.lm import evaluate_run  # lazy: keeps --help fast

    opts = extra_options(extra, EVALUATE_FLAGS)
    check_file_flags(opts, "--text")
    return evaluate_run(run_dir, opts.get("text"), split, checkpoint=checkpoint, encoding=opts.get("encoding"))


def _summary(run_dir: Path) -> dict[str, float]:
    """The run's headline numbers (its valid scores are its last evaluation's: a run whose budget
    ends between evaluations is evaluated at its last step)."""
    from rnnlab.tasks.lm import summarize_run  # lazy: keeps --help fast

    return summarize_run(run_dir)


def _print_summary(run_dir: Path) -> None:
    s = _summary(run_dir)
    parts = []
    if "train_ppl" in s:
        parts.append(f"train ppl {s['train_ppl']:.3f}" + (f" ({s['train_bpc']:.3f} bpc)" if "train_bpc" in s else ""))
    if "valid_ppl" in s:
        parts.append(f"valid ppl {s['valid_ppl']:.3f}" + (f" ({s['valid_bpc']:.3f} bpc)" if "valid_bpc" in s else ""))
    if "tokens_per_s" in s:
        parts.append(f"{s['tokens_per_s']:,.0f} tokens/s")
    if parts:
        print("lm: " + ", ".join(parts), flush=True)


def _print_json(result, wall_s: float) -> None:
    s = _summary(result.run_dir)
    # run, steps and best_step as every `train --json` gives them (run_dir kept for scripts that read it)
    s.update(run=str(result.run_dir), run_dir=str(result.run_dir), stop_reason=result.stop_reason,
             steps=int(result.step), best_step=None if result.best_step is None else int(result.best_step),
             epochs=result.epoch, wall_s=wall_s)
    # the valid_* scores also as every `train --json` gives them: {"valid": {"loss": ..., "ppl": ...}}
    s["valid"] = {k[len("valid_"):]: v for k, v in s.items() if k.startswith("valid_") and isinstance(v, (int, float))}
    if result.compile is not None:
        s["compile"] = result.compile
    print(json.dumps(json_number(s)), flush=True)


def _cutoffs(text: str) -> tuple[int, ...]:
    if not text.strip():
        return ()
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(expected("--adaptive-softmax", "comma-separated integers such as 2000,10000", repr(text))) from None


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ConfigError(expected("--split", "three comma-separated fractions such as 0.9,0.05,0.05", repr(text)))
    return parts  # type: ignore[return-value]
