"""``rnnlab train classify`` and ``rnnlab predict``: thin wrappers over ``rnnlab.tasks.classify``.

``rnnlab evaluate RUN --csv FILE`` is the training core's command; for a classifier run it
reaches :func:`rnnlab.tasks.classify.evaluate_run`.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from rnnlab.cli.train import (TrainArgs, cell_option_flag, cell_options_from_flags, check_file_flags,
                              check_input_file, extra_options, missing_option, print_data_warnings, print_train_json,
                              one_stdout, register_evaluator, with_train_options)
from rnnlab.errors import CheckpointError, DataWarning
from rnnlab.outputs import atomic_open, shown, status_stream


def split_list(values: Optional[List[str]]) -> list[str]:
    """Repeated flags and comma-separated values both work: ``--x a --x b`` == ``--x a,b``."""
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


# ``rnnlab train classify`` flag (parameter) -> ClassifyConfig key, where the names differ.
CONFIG_KEYS = {"fmt": "format", "input_kind": "input", "embed_dim": "embed_dim", "data_seed": "seed", "no_scale": "scale",
               "cell_option": "cell_options", "no_baselines": "baselines"}


EVALUATE_FLAGS = ("--csv", "--confusion", "--force", "--encoding", "--missing")   # rnnlab evaluate's, for a classifier


def evaluate_classify(run_dir: Path, split: str, checkpoint: str, extra: list[str]) -> dict:
    """``rnnlab evaluate RUN [--csv FILE [--encoding ENC] [--missing POLICY]] [--confusion OUT.csv [--force]]``
    for a classifier: scores beside the majority class; ``--confusion`` writes the whole confusion
    matrix (printed output summarises it by its largest cells beyond a few classes); ``--encoding``
    and ``--missing`` read ``--csv`` (default: as the run read its data)."""
    from rnnlab.tasks.classify import (check_run_output, evaluate_run, flat_metrics,
                                       write_confusion)  # lazy: keeps --help fast

    opts = extra_options(extra, EVALUATE_FLAGS)
    check_file_flags(opts, "--csv")
    check_input_file(opts.get("csv"), "--csv")
    if "confusion" in opts:
        check_run_output(opts["confusion"], run_dir, [opts.get("csv")], bool(opts.get("force")), flag="--confusion")
    with print_data_warnings():
        m = evaluate_run(str(run_dir), opts.get("csv"), split, checkpoint, missing=opts.get("missing"),
                             encoding=opts.get("encoding"))
    if "confusion" in opts:
        write_confusion(m, m["names"], opts["confusion"], force=True)
    return flat_metrics(m)


def write_baselines(run_dir: Path, table: dict, trained: bytes) -> None:
    """``RUN/baselines.json``, under the run's lock and only into the run just trained: training
    released the folder, and another process may have taken it over (--overwrite) meanwhile."""
    from rnnlab.train.lock import run_lock  # lazy: keeps --help fast (rnnlab.train imports torch)

    with run_lock(run_dir):
        if (run_dir / "config.json").read_bytes() != trained:
            raise CheckpointError(f"run folder {run_dir}: expected the run just trained, got another run started "
                                  "there meanwhile; the baselines table was not written into it")
        with atomic_open(run_dir / "baselines.json", encoding="utf-8") as fh:
            fh.write(json.dumps(table, indent=2) + "\n")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    register_evaluator("classify", evaluate_classify, EVALUATE_FLAGS)

    @train_app.command("classify")
    @with_train_options
    def train_classify(
        train: Optional[Path] = typer.Option(None, "--train", help="Training file: .csv/.tsv/.jsonl (text, numeric, or an index of clips) or .ts (needed unless --resume or --dataset)."),
        valid: Optional[Path] = typer.Option(None, "--valid", help="Held-out file (default: a seeded --valid-frac of --train)."),
        test: Optional[Path] = typer.Option(None, "--test", help="Optional test file."),
        fmt: str = typer.Option("auto", "--format", help="auto | csv | tsv | jsonl | ts."),
        input_kind: str = typer.Option("auto", "--input", help="auto | text | numeric | frames (auto: numeric for .ts or with --value-cols/--id-col, frames with --dataset/--frames/--size; pass numeric for a wide CSV of values)."),
        text_col: str = typer.Option("text", "--text-col", help="Column holding the text."),
        label_col: str = typer.Option("label", "--label-col", help="Column holding the class (any type)."),
        value_cols: Optional[List[str]] = typer.Option(None, "--value-cols", help="Numeric, one sequence per row: the value columns (default: all but the label)."),
        id_col: str = typer.Option("", "--id-col", help="Numeric, one step per row: the sequence id column."),
        feature_cols: Optional[List[str]] = typer.Option(None, "--feature-cols", help="Numeric, one step per row: the variable columns."),
        time_col: str = typer.Option("", "--time-col", help="Numeric, one step per row: orders the steps."),
        missing: str = typer.Option("error", "--missing", help="error | drop | ffill | interpolate."),
        encoding: str = typer.Option("utf-8", "--encoding", help="Encoding of the data files (utf-16, cp1252, latin-1, ...)."),
        level: str = typer.Option("word", "--level", help="Text tokens: word | char."),
        min_freq: int = typer.Option(1, "--min-freq", help="Rarer tokens become <unk>."),
        max_len: int = typer.Option(0, "--max-len", help="Longer sequences are downsampled (numeric) or cut (text), with a warning; see --long-series. 0 (auto): 512 steps for LSTM-FCN (--arch auto on numeric series), 256 for --arch rnn, text and frames."),
        cell: str = typer.Option("lstm", "--cell", help="lstm | gru | rnn."),
        embed_dim: int = typer.Option(64, "--embed", help="Embedding / input projection width."),
        hidden_size: int = typer.Option(64, "--hidden-size", "--hidden", help="Hidden size."),
        num_layers: int = typer.Option(1, "--num-layers", "--layers", help="Recurrent layers."),
        bidirectional: bool = typer.Option(False, "--bidirectional", help="Read both directions."),
        dropout: float = typer.Option(0.1, "--dropout", help="Between layers and before the head."),
        pool: str = typer.Option("last", "--pool", help="last | mean | max over the valid steps."),
        batch_size: int = typer.Option(32, "--batch-size", help="Examples per batch (numeric input: at most this, "
                                       "each training epoch cut into batches whose sizes differ by at most one)."),
        valid_frac: float = typer.Option(0.2, "--valid-frac", help="Held out of --train when no --valid."),
        data_seed: int = typer.Option(0, "--data-seed", help="Seeds the train/valid split and the batch order."),
        no_scale: bool = typer.Option(False, "--no-scale", help="Numeric: do not standardise inputs."),
        init_from: Optional[Path] = typer.Option(None, "--init-from", help="An lm run: start from its vocab, embedding and rnn (and so its token level, cell and sizes)."),
        freeze_epochs: int = typer.Option(0, "--freeze-epochs", help="With --init-from: epochs with transferred weights fixed."),
        cell_option: Optional[List[str]] = cell_option_flag(),
        dataset: str = typer.Option("", "--dataset", help="A named data set instead of files: ucr:NAME (a UCR/UEA set, e.g. ucr:GunPoint, from --data-dir or the installed aeon/sktime) or moving-digits (frames)."),
        dataset_size: int = typer.Option(0, "--dataset-size", help="Frames: training clips of --dataset (0 = its default)."),
        path_col: str = typer.Option("path", "--path-col", help="Frames: the index column holding each clip's path (.npy, frame folder, video)."),
        frames: int = typer.Option(0, "--frames", help="Frames: keep N frames sampled uniformly (0 = all)."),
        size: Tuple[int, int] = typer.Option((0, 0), "--size", metavar="H W", help="Frames: resize every frame (default: keep)."),
        frame_encoder: str = typer.Option("cnn", "--frame-encoder", help="Frames: cnn | torchvision:<model> (with --backbone-weights)."),
        backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights", help="Frames: the torchvision model's state dict."),
        finetune_backbone: bool = typer.Option(False, "--finetune-backbone", help="Frames: train the torchvision backbone too."),
        arch: str = typer.Option("auto", "--arch", help="auto | rnn | lstm-fcn (auto: lstm-fcn for numeric sequences, rnn for text and frames)."),
        normalize: str = typer.Option("auto", "--normalize", help="Numeric: auto (default: channel, or series-scale when the training series' amplitudes span over 100x) | channel (each variable scaled with training statistics) | series (each series z-normalised) | series-scale (series, plus each series' log scale and level as inputs) | none."),
        long_series: str = typer.Option("auto", "--long-series", help="Beyond --max-len: auto | downsample | truncate (auto: downsample numeric, truncate text)."),
        folds: int = typer.Option(0, "--folds", help="Validation without --valid: 0 = auto (stratified k-fold below 1000 numeric series, else holdout), 1 = holdout, K = stratified K-fold."),
        ensemble: int = typer.Option(1, "--ensemble", help="Models per fold from different initialisations; predictions averaged."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="--dataset ucr:NAME: a folder holding NAME/NAME_TRAIN.ts and NAME_TEST.ts."),
        no_baselines: bool = typer.Option(False, "--no-baselines", help="Skip the 1-NN baselines after training."),
        as_json: bool = typer.Option(False, "--json", help="Print the results (scores, baselines) as one JSON object."),
        run: TrainArgs = None,
    ) -> None:
        """Train a sequence classifier (text, numeric sequences, or video / image sequences)."""
        from rnnlab.tasks.classify import (ClassifyConfig, ClassifyTask, baseline_table, check_lm_fields,
                                           format_baselines, format_metrics)  # lazy: keeps --help fast
        from rnnlab.train import load_run  # lazy: keeps --help fast

        def config() -> ClassifyConfig:
            return ClassifyConfig(
                train=str(train) if train else "", valid=str(valid) if valid else "", test=str(test) if test else "",
                format=fmt, input=input_kind, text_col=text_col, label_col=label_col,
                value_cols=split_list(value_cols), id_col=id_col, feature_cols=split_list(feature_cols),
                time_col=time_col, missing=missing, encoding=encoding,
                level=level, min_freq=min_freq, max_len=max_len, cell=cell, embed_dim=embed_dim,
                hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout, pool=pool,
                batch_size=batch_size, valid_frac=valid_frac, scale=not no_scale, seed=data_seed,
                init_from=str(init_from) if init_from else "", freeze_epochs=freeze_epochs,
                cell_options=cell_options_from_flags(cell_option), dataset=dataset, dataset_size=dataset_size,
                path_col=path_col, frames=frames, size=list(size) if any(size) else [], frame_encoder=frame_encoder,
                backbone_weights=str(backbone_weights) if backbone_weights else "", finetune_backbone=finetune_backbone,
                arch=arch, normalize=normalize, long_series=long_series, folds=folds, ensemble=ensemble,
                data_dir=str(data_dir) if data_dir else "", baselines=not no_baselines)

        def build() -> ClassifyTask:
            if train is None and not dataset:
                raise missing_option("--train", "a training file")
            task = ClassifyTask(config())  # every data error is raised here, before any model is built
            if init_from:   # a size flag given even at its default must be the language model's
                check_lm_fields(task.config, {k: v for k, (_, v) in run.explicit.items()})
            return task

        cpu0 = time.process_time()
        with print_data_warnings():
            if run.resume_run is None:
                # numeric input: the budget follows the number of training series (task.train_defaults)
                task = build()
                defaults = task.train_defaults
                if run.given.get("max_epochs") and "max_steps" not in run.given:
                    defaults = task.train_defaults_for_epochs(run.given["max_epochs"])
                result = run.start(lambda: task, "classify", lambda: config().to_dict(), CONFIG_KEYS,
                                   ClassifyTask.data_keys, **defaults)
            else:
                result = run.start(build, "classify", lambda: config().to_dict(), CONFIG_KEYS, ClassifyTask.data_keys,
                                   **ClassifyTask.train_defaults)
            # the run folder keeps the baselines table (baselines.json) with --quiet too; --quiet
            # only leaves out what is printed
            quiet = run.given.get("quiet") and not as_json
            cpu1 = time.process_time()
            trained = (Path(result.run_dir) / "config.json").read_bytes()
            with warnings.catch_warnings():   # the same files again: their warnings were printed above
                warnings.simplefilter("ignore", DataWarning)
                task, model, _ = load_run(result.run_dir)
                m = task.evaluate_detailed(model, task.split("valid")) if not quiet else None
                table = baseline_table(task, model, baselines=task.config.baselines)
            cpu2 = time.process_time()
        write_baselines(Path(result.run_dir), table, trained)
        if quiet:
            return
        if as_json:
            print_train_json(result, {k: m[k] for k in ("loss", "acc", "macro_f1", "n")}, baselines=table,
                             timing={"train_cpu_s": round(cpu1 - cpu0, 1), "baselines_cpu_s": round(cpu2 - cpu1, 1)})
            return
        what = "validation split" + (" (out of fold)" if task.plan["mode"] == "kfold" else
                                     " (the training series: too few for a split)" if task.plan["mode"] == "none" else "")
        print(f"classify: run {result.run_dir}, best checkpoint, {what}")
        print(format_metrics(m, task.label_map.names))
        print(format_baselines(table))

    @app.command("predict")
    def predict_cmd(
        run: Path = typer.Argument(..., metavar="RUN", help="A classifier run folder."),
        csv: Path = typer.Option(..., "--csv", help="File to classify (same format/columns as training; label optional)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Where to write labels and class probabilities (CSV); - for standard output (default: preds.csv, or no file with --json)."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder of the run."),
        force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
        missing: Optional[str] = typer.Option(None, "--missing", help="Missing cells: error | drop | ffill | interpolate (the last two for numeric series; default: the run's policy)."),
        encoding: Optional[str] = typer.Option(None, "--encoding", help="Encoding of --csv (default: the run's)."),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as one JSON object (a file only with --out)."),
    ) -> None:
        """Predict a class (and every class probability) for each sequence of a file."""
        from rnnlab.tasks.classify import predict_run  # lazy: keeps --help fast

        one_stdout(out, as_json)
        target = str(out) if out is not None else (None if as_json else "preds.csv")
        check_input_file(csv, "--csv")
        with print_data_warnings():
            rows = predict_run(str(run), str(csv), target, checkpoint, force, missing, encoding)
        if as_json:
            print(json.dumps({"out": target, "rows": rows}))
        else:
            print(f"predict: {len(rows)} rows -> {shown(target)}", file=status_stream(target))
