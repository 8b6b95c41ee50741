"""``rnnlab train seq2seq`` and ``rnnlab translate``: thin wrappers over ``rnnlab.tasks.seq2seq``.

``rnnlab evaluate RUN [--split test] [--json]`` is the training core's command; it rebuilds the
task from the run folder and decodes greedily.
"""

from __future__ import annotations

import codecs
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from rnnlab.cli.train import (TrainArgs, cell_option_flag, cell_options_from_flags, print_data_warnings, print_train_json,
                              with_train_options)
from rnnlab.data.encodings import foreign_bom
from rnnlab.errors import ConfigError, DataError, expected

# ``rnnlab train seq2seq`` flag (parameter) -> Seq2SeqConfig key, where the names differ (checked on --resume).
CONFIG_KEYS = {"fmt": "format", "no_header": "header", "embed": "embedding_size", "no_input_feeding": "input_feeding",
               "tied": "tie_embeddings", "data_seed": "seed", "cell_option": "cell_options"}


_ESCAPED = range(0xDC80, 0xDD00)    # the surrogates "surrogateescape" stands undecodable bytes for


def _stdin_lines(encoding: str) -> Iterator[str]:
    """stdin's lines in ``encoding``, any line ending, without it; an undecodable byte stays as
    its surrogate (``_decoded`` refuses that line alone, so outputs stay aligned with inputs)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:             # a text stream without bytes, as an embedding program may set
        yield from (line.rstrip("\r\n") for line in sys.stdin)
        return
    _refuse_a_foreign_bom(buffer, encoding)
    stream = io.TextIOWrapper(buffer, encoding=encoding, errors="surrogateescape", newline=None)
    try:
        for k, line in enumerate(stream):
            line = line.rstrip("\n")
            yield line.removeprefix("\ufeff") if k == 0 else line      # a byte-order mark is not text
    finally:
        stream.detach()            # stdin itself stays open


def _refuse_a_foreign_bom(buffer, encoding: str) -> None:
    """Stdin that starts with a UTF-16/32 byte-order mark read in another encoding would be every
    line garbled: one error naming --encoding instead, before any output."""
    peek = getattr(buffer, "peek", None)
    bom = foreign_bom(peek(4)[:4] if peek is not None else b"", encoding)
    if bom:
        raise DataError(f"stdin: encoding: expected {encoding} text, got a {bom.upper()} stream (it starts "
                        f"with a {bom.upper()} byte-order mark); pass --encoding {bom}")


def _decoded(line: str, k: int, encoding: str) -> str:
    for i, ch in enumerate(line):
        if ord(ch) in _ESCAPED:
            raise DataError(expected(f"stdin line {k}", f"{encoding} text (pass --encoding)",
                                     f"byte 0x{ord(ch) - 0xDC00:02x} at character {i + 1}"))
    return line


def _shown_line(line: str) -> str:
    """A line for --json: undecodable bytes as U+FFFD, never as lone surrogates (invalid UTF-8)."""
    return "".join("\ufffd" if ord(ch) in _ESCAPED else ch for ch in line)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    @train_app.command("seq2seq")
    @with_train_options
    def train_seq2seq(
        train: Optional[Path] = typer.Option(None, "--train", help="Pairs file: .tsv/.csv/.jsonl with source and target columns."),
        valid: Optional[Path] = typer.Option(None, "--valid", help="Held-out pairs (default: a seeded --valid-frac of --train's sources)."),
        test: Optional[Path] = typer.Option(None, "--test", help="Optional test pairs."),
        dataset: Optional[str] = typer.Option(None, "--dataset", help="cmudict | dates (instead of --train)."),
        dataset_size: int = typer.Option(0, "--dataset-size", help="dates: how many to generate (0 = default)."),
        fmt: str = typer.Option("auto", "--format", help="auto | csv | tsv | jsonl."),
        source_col: str = typer.Option("source", "--source-col", help="Source column (a name or a 0-based position)."),
        target_col: str = typer.Option("target", "--target-col", help="Target column (a name or a 0-based position)."),
        no_header: bool = typer.Option(False, "--no-header", help="CSV/TSV without a header: source and target are the first two fields."),
        encoding: str = typer.Option("utf-8", "--encoding", help="Encoding of the pairs files (utf-16, cp1252, latin-1, ...)."),
        source_tokens: str = typer.Option("auto", "--source-tokens", help="char | word | subword (auto: the data set's, char for files)."),
        target_tokens: str = typer.Option("auto", "--target-tokens", help="char | word | subword (auto: the data set's, char for files)."),
        shared_vocab: bool = typer.Option(False, "--shared-vocab", help="One vocabulary and embedding for both sides."),
        min_freq: int = typer.Option(1, "--min-freq", help="Rarer tokens become <unk>."),
        subword_vocab_size: int = typer.Option(8000, "--subword-vocab-size", help="Subword tokens: BPE vocabulary size."),
        max_source_len: int = typer.Option(100, "--max-source-len", help="Longest source in tokens, its <eos> included (a longer one is an error)."),
        max_target_len: int = typer.Option(100, "--max-target-len", help="Longest target in tokens, without <bos>/<eos>; also the decoding limit."),
        valid_frac: float = typer.Option(0.1, "--valid-frac", help="Held out of --train when no --valid."),
        cell: str = typer.Option("lstm", "--cell", help="lstm | gru | rnn."),
        embed: int = typer.Option(64, "--embed", help="Embedding size."),
        hidden_size: int = typer.Option(128, "--hidden-size", "--hidden", help="Hidden size (split between directions when bidirectional)."),
        num_layers: int = typer.Option(1, "--num-layers", "--layers", help="Recurrent layers of encoder and decoder."),
        bidirectional: bool = typer.Option(True, "--bidirectional/--unidirectional", help="Encoder reads both directions."),
        attention: str = typer.Option("general", "--attention", help="none | additive | general | dot."),
        attention_size: int = typer.Option(0, "--attention-size", help="Additive attention's inner size (0 = --hidden-size)."),
        no_input_feeding: bool = typer.Option(False, "--no-input-feeding", help="Decoder input without the previous attentional vector."),
        dropout: float = typer.Option(0.1, "--dropout", help="On embeddings, between layers and before the output layer."),
        tied: bool = typer.Option(False, "--tied", help="Tie the decoder's embedding and output weights."),
        label_smoothing: float = typer.Option(0.0, "--label-smoothing", help="Label smoothing of the training loss."),
        scheduled_sampling: float = typer.Option(0.0, "--scheduled-sampling", help="Probability of feeding the model's own previous output."),
        batch_size: int = typer.Option(64, "--batch-size"),
        metrics: str = typer.Option("auto", "--metrics", help="exact | g2p | text | auto (from the data set; text for files)."),
        data_seed: int = typer.Option(0, "--data-seed", help="Seeds the held-out part, the batch order and scheduled sampling."),
        cell_option: Optional[List[str]] = cell_option_flag(),
        as_json: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
        run: TrainArgs = None,
    ) -> None:
        """Train an encoder-decoder with attention on source/target pairs."""
        from rnnlab.tasks.seq2seq import Seq2SeqConfig, Seq2SeqTask  # lazy: keeps --help fast
        from rnnlab.train import load_run  # lazy: keeps --help fast

        def flags() -> dict:
            """The task config the flags describe, unchecked (on --resume no data is read)."""
            return dict(
                train=str(train) if train else "", valid=str(valid) if valid else "", test=str(test) if test else "",
                dataset=dataset or "", dataset_size=dataset_size, format=fmt, source_col=source_col,
                target_col=target_col, header=not no_header, encoding=encoding, source_tokens=source_tokens,
                target_tokens=target_tokens, shared_vocab=shared_vocab, min_freq=min_freq,
                subword_vocab_size=subword_vocab_size, max_source_len=max_source_len, max_target_len=max_target_len,
                valid_frac=valid_frac, cell=cell, embedding_size=embed, hidden_size=hidden_size, num_layers=num_layers,
                bidirectional=bidirectional, attention=attention, attention_size=attention_size,
                input_feeding=not no_input_feeding, dropout=dropout, tie_embeddings=tied,
                cell_options=cell_options_from_flags(cell_option), label_smoothing=label_smoothing,
                scheduled_sampling=scheduled_sampling, batch_size=batch_size, metrics=metrics, seed=data_seed)

        def build() -> Seq2SeqTask:  # every data error is raised here, before any model is built
            return Seq2SeqTask(Seq2SeqConfig(**flags()))

        with print_data_warnings():  # every target equal to its source: one line on stderr
            result = run.start(build, "seq2seq", flags, CONFIG_KEYS, Seq2SeqTask.data_keys, **Seq2SeqTask.train_defaults)
        if run.given.get("quiet") and not as_json:  # --json always prints its object
            return
        task, model, _ = load_run(result.run_dir)
        m = task.evaluate(model, "valid")
        if as_json:
            print_train_json(result, m)
            return
        scores = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "n")
        print(f"seq2seq: run {result.run_dir}, best checkpoint, validation split ({int(m['n'])} sources): {scores}")

    @app.command("translate")
    def translate_cmd(
        run_dir: Path = typer.Argument(..., metavar="RUN", help="A seq2seq run folder."),
        text: Optional[str] = typer.Argument(None, metavar="INPUT", help="Source text; without it, stdin is read line by line."),
        beam: int = typer.Option(1, "--beam", help="Beam width (1 = greedy)."),
        nbest: int = typer.Option(1, "--nbest", help="Outputs per input (at most --beam), each with its score: "
                                  "the output's log-probability, the same at any --beam (the beam ranks by it "
                                  "normalised for length)."),
        show_attention: bool = typer.Option(False, "--show-attention", help="Print the alignment under each output."),
        png: Optional[Path] = typer.Option(None, "--out", help="With --show-attention: write the best output's "
                                           "alignment as a PNG (or the image format its suffix names: .svg, .pdf, .jpg, ...) here instead of printing it (stdin: one file per line, NAME-K.png)."),
        force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per input."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder of the run."),
        encoding: Optional[str] = typer.Option(None, "--encoding", help="Encoding of stdin (default utf-8; utf-16, "
                                               "cp1252, latin-1, ...); a line that does not decode is a bad line."),
    ) -> None:
        """Translate INPUT (or each line of stdin) with a trained seq2seq run.

        A score (printed with --nbest above 1, and under --json) is the output's natural-log
        probability given the source, its <eos> included: the same number for the same output at
        any --beam. The beam ranks by that log-probability normalised for length, so n-best
        scores need not fall.

        Characters or words the model never saw are read as <unk>, counted and reported on stderr.
        A bad line of stdin (empty, too long, not in --encoding) is reported on stderr and left as an empty output
        line, so outputs stay aligned with inputs; the exit status is then 1 (an rnnlab error).
        """
        if png is not None and not show_attention:
            raise typer.BadParameter("--out writes the alignment: expected it with --show-attention")
        from rnnlab.tasks.seq2seq import (attention_png_check, attention_text, figure_format, load_seq2seq_run,
                                           unknown_summary, write_attention_png)  # lazy: keeps --help fast

        # --beam first: --nbest's limit is stated in terms of it, so a bad beam must not read as a bad nbest.
        for flag, value in (("--beam", beam), ("--nbest", nbest)):
            if value < 1:
                raise ConfigError(expected(flag, "an integer >= 1", value))
        if nbest > beam:
            raise ConfigError(expected("--nbest", f"at most --beam ({beam})", nbest))
        if encoding is not None and text is not None:
            raise ConfigError(expected("--encoding", "it without INPUT (it decodes stdin)", "INPUT too"))
        encoding = encoding or "utf-8"
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ConfigError(expected("--encoding", "an encoding Python knows (utf-8, utf-16, cp1252, ...)",
                                       repr(encoding))) from None
        task, model = load_seq2seq_run(str(run_dir), checkpoint)

        def png_of(k: int) -> Path:
            return png if text is not None else png.with_name(f"{png.stem}-{k}{png.suffix or '.png'}")

        png_check = attention_png_check(run_dir, force) if png is not None else None
        if png is not None:     # before any work: a refused path costs no decoding
            if text is not None:
                png_check(png)      # (its format included)
            else:
                figure_format(png)
        unknown: Counter = Counter()
        with_unknown = bad = total = 0
        for k, line in enumerate([text] if text is not None else _stdin_lines(encoding), 1):
            total += 1
            try:
                if text is None:
                    line = _decoded(line, k, encoding)
                t = task.translate(model, [line], beam, nbest, ["input" if text is not None else f"stdin line {k}"])[0]
            except DataError as exc:
                if text is not None:
                    raise
                bad += 1
                print(f"rnnlab: error: {exc}", file=sys.stderr)
                print(json.dumps({"source": _shown_line(line), "error": str(exc)}, ensure_ascii=False) if as_json
                      else "", flush=True)
                continue
            unknown.update(t.unknown)
            with_unknown += bool(t.unknown)
            if png is not None:
                if t.attention is None:
                    raise ConfigError(expected("--show-attention --out", "a run with attention",
                                               "a fixed-context model (--attention none)"))
                path = png_check(png_of(k))
                write_attention_png(t, path)
                print(f"translate: wrote {path}", file=sys.stderr)
            if as_json:
                rec = {"source": t.source, "outputs": t.outputs, "scores": t.scores, "unknown": t.unknown}
                if show_attention and png is None:
                    rec.update(source_tokens=t.source_tokens, output_tokens=t.output_tokens, attention=t.attention)
                print(json.dumps(rec, ensure_ascii=False), flush=True)
                continue
            for i, out in enumerate(t.outputs):
                print(out if len(t.outputs) == 1 else f"{out}\t{t.scores[i]:.4f}", flush=True)
                if show_attention and png is None:
                    print(attention_text(t, i), flush=True)
        if with_unknown:
            print(f"translate: {with_unknown} of {total} inputs held tokens the model never saw, read as <unk>: "
                  f"{unknown_summary(unknown)}", file=sys.stderr)
        if bad:
            raise DataError(expected("translatable input lines", f"all {total}", f"{bad} left untranslated (see above)"))
