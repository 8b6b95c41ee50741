"""Sequence classification: text or numeric sequences -> one class per sequence.

The model (Keras's "LSTM -> dense -> softmax" classifier, with choices)::

    tokens (T, B)        --Embedding-->  (T, B, E)
    or values (T, B, D)  --Linear----->  (T, B, E)
    --rnnlab RNN/LSTM/GRU (layers, bidirectional, dropout), fed as a PackedSequence-->
    pooling over the valid steps of each sequence only (last state | mean | max)  (B, dirs*H)
    --dropout, Linear-->  logits (B, C)

Padding never changes a prediction: the recurrent layers see a PackedSequence, so a
sequence's final state is its state at its own last step (for the backward direction, its
state after reading its own first step), and mean/max pooling mask the padded positions.
Binary problems use the same two-logit softmax as multi-class ones (equivalent to a sigmoid
on the logit difference), so one head and one loss serve both.

Data come from CSV/TSV/JSONL (text, or numeric sequences in "wide" or "long" layout) or the
UCR/UEA ``.ts`` format (see :mod:`rnnlab.data.tables` and :mod:`rnnlab.data.ts_format`).
Metrics: accuracy, macro-F1, per-class precision/recall, a confusion matrix, and the
majority-class baseline beside them, so a user sees at once whether the network learned
anything.

Transfer (``init_from``): a text classifier can start from a trained ``lm`` run: it adopts
the language model's vocabulary, embedding and recurrent layers (cell, sizes, layers) and
trains a new head; ``freeze_epochs`` keeps the transferred weights fixed for the first epochs.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.data.tables import (
    LabelMap,
    Scaler,
    SequenceExamples,
    TextExamples,
    columns_of_a_run,
    detect_format,
    label_key,
    load_sequences_long,
    load_sequences_wide,
    load_text_classification,
    read_table,
)
from rnnlab.data.frames import check_frame_shape, check_frames_config, index_checksum, index_clips, read_examples
from rnnlab.data.text import UNK, Vocab, tokenize
from rnnlab.data.ts_format import load_ts
from rnnlab.data.ucr import is_ucr, ucr_path
from rnnlab.errors import (CheckpointError, ConfigError, DataError, DataWarning, RnnlabError, expected,
                           field_name, flag_of, is_int_at_least)
from rnnlab.outputs import atomic_open, check_output
from rnnlab.report.html import figure_to_img, pyplot, score_cell, table
from rnnlab.tasks.cell_options import check_cell_options
from rnnlab.tasks.recurrent import CELLS, recurrent_layer
from rnnlab.tasks.transfer import copy_lm_weights, load_lm_source
from rnnlab.tasks.video import build_frame_encoder, report_sections as frame_sections
from rnnlab.train.rundir import check_run_output, load_run, read_run_config
from rnnlab.train.task import ReportSection, StepOutput, register_data_checksum, register_data_members, register_task

POOLS = ("last", "mean", "max")
INPUTS = ("auto", "text", "numeric", "frames")
LEVELS = ("word", "char")
ARCHS = ("auto", "rnn", "lstm-fcn")          # auto: lstm-fcn for numeric input, rnn for text and frames
NORMALIZE = ("auto", "channel", "series", "series-scale", "none")
# --normalize auto: channel scaling, unless the training series' amplitudes span more than this
# factor (the 90th over the 10th percentile of their standard deviations, the widest variable):
# one scale for all would then leave the quiet series' values near zero, so each series is
# z-normalised instead and its own scale becomes an input (series-scale).
AMPLITUDE_SPREAD = 100.0
LONG_SERIES = ("auto", "downsample", "truncate")   # auto: downsample numeric series, truncate token sequences
# The input length beyond which sequences are downsampled or cut (--max-len 0, auto): a recurrent
# classifier backpropagates through every step, so 256; LSTM-FCN's LSTM reads the variables as its
# steps (dimension shuffle) and only its convolutions run along time, so it keeps twice as many, as
# the paper keeps every step: averaging a signal over many steps removes the fast detail that some
# classes differ in (electrical appliances' current, for one).
MAX_LEN = {"lstm-fcn": 512, "rnn": 256}

# Validation when no --valid file is given (numeric input, --folds 0 = auto): below KFOLD_BELOW
# training series, a 20 % holdout leaves a handful of series per class to pick a checkpoint on, so
# the choice is noise; stratified k-fold scores every training series instead (each fold's model
# on the series it did not see). Above it, a holdout is large enough and k times cheaper.
KFOLD_BELOW = 1000
DEFAULT_FOLDS = 5
KFOLD_SELECT = "last"      # the checkpoint each fold keeps (see _set_train_defaults)
# The budget from the data size (numeric input): about BUDGET_EPOCHS passes over the training
# set, but at least MIN_SAMPLES and at most MAX_SAMPLES series seen (and never under
# MIN_EPOCHS passes), so a 50-series set gets hundreds of epochs and a 100k-series set a few.
BUDGET_EPOCHS = 150
MIN_SAMPLES, MAX_SAMPLES, MIN_EPOCHS = 10_000, 20_000, 3
EVALS_PER_RUN = 40        # evaluations over the budget; early stopping after a quarter of them
LSTM_FCN_DROPOUT = 0.8    # Karim et al. 2017: dropout 0.8 after the LSTM branch
# The 1-NN DTW baseline fills one cost matrix per (evaluation, training) pair of series: above this
# many cells in all (minutes, at about 1e9 cells a second on two cores), the row is left out and
# the table says why, rather than the command hanging after training. PLAID's test split: 3e10.
DTW_MAX_CELLS = 3e11


# The flags of `rnnlab train classify` that are spelled otherwise than their config field ("": none),
# for error messages (rnnlab.errors.field_name).
CLASSIFY_FLAGS = {"embed_dim": "--embed", "scale": "--no-scale", "seed": "--data-seed",
                  "cell_options": "--cell-option", "baselines": "--no-baselines"}

@dataclass
class ClassifyConfig:
    train: str = ""                    # training file: .csv/.tsv/.jsonl (text or numeric) or .ts
    valid: str = ""                    # held-out file; "" = a seeded random valid_frac of train
    test: str = ""                     # optional test file, evaluated as split "test"
    format: str = "auto"               # csv | tsv | jsonl | ts | auto (from the extension)
    input: str = "auto"                # text | numeric | auto (numeric for .ts or when id/feature/value cols are given)
    text_col: str = "text"             # text input: the column holding the text
    label_col: str = "label"           # the class column (any type; mapped to indices)
    value_cols: list[str] = field(default_factory=list)    # numeric, wide: one sequence per row ([] = all non-label columns)
    id_col: str = ""                   # numeric, long: one step per row, grouped by this id
    feature_cols: list[str] = field(default_factory=list)  # numeric, long: the variables (multivariate)
    time_col: str = ""                 # numeric, long: orders the steps of a sequence (else file order)
    missing: str = "error"             # error | drop | ffill | interpolate
    encoding: str = "utf-8"            # of the data files (utf-16, cp1252, latin-1, ...)
    level: str = "word"                # text: word or char tokens (as the lm task)
    min_freq: int = 1                  # text: rarer tokens become <unk>
    max_len: int = 0                   # longer sequences are downsampled or cut (long_series), always with a warning; 0 = auto (MAX_LEN)
    cell: str = "lstm"                 # lstm | gru | rnn
    embed_dim: int = 64                # embedding / input-projection width
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.1               # between layers and before the head
    pool: str = "last"                 # last | mean | max, over valid steps only
    batch_size: int = 32
    valid_frac: float = 0.2            # used when no valid file is given
    scale: bool = True                 # numeric: standardise each variable with train statistics
    seed: int = 0                      # batch order and the train/valid split
    init_from: str = ""                # text: an lm run folder to start from (vocab, embedding, rnn)
    freeze_epochs: int = 0             # with init_from: epochs during which transferred weights stay fixed
    cell_options: dict[str, Any] = field(default_factory=dict)  # rnnlab.nn.options.CellOptions fields; {} = torch.nn
    # frames input (video, image sequences; rnnlab.data.frames): an index of path,label rows, or a named data set
    dataset: str = ""                  # a named synthetic data set (moving-digits) instead of train/valid/test files
    dataset_size: int = 0              # its training clips (0 = its default; valid and test get a fifth each)
    path_col: str = "path"             # frames: the index column holding each clip's path
    frames: int = 0                    # frames: keep N frames sampled uniformly (0 = all)
    size: list[int] = field(default_factory=list)  # frames: resize every frame to [H, W] ([] = keep)
    frame_encoder: str = "cnn"         # frames: cnn | torchvision:<model> (needs torchvision and backbone_weights)
    backbone_weights: str = ""         # frames: the torchvision model's state dict file
    finetune_backbone: bool = False    # frames: train the torchvision backbone too (else frozen)
    # numeric sequences (time-series classification)
    arch: str = "auto"                 # auto | rnn | lstm-fcn (auto: lstm-fcn for numeric input, else rnn)
    normalize: str = "auto"            # auto | channel (train statistics per variable) | series (z-normalise each series) | series-scale | none
    long_series: str = "auto"          # auto | downsample | truncate: what happens beyond max_len (auto: downsample numeric)
    folds: int = 0                     # validation without a valid file: 0 = auto, 1 = holdout, k >= 2 = stratified k-fold
    ensemble: int = 1                  # models per fold trained from different initialisations; predictions averaged
    data_dir: str = ""                 # dataset ucr:NAME: a folder with NAME/NAME_TRAIN.ts (else aeon/sktime's data)
    baselines: bool = True             # after training: majority class, 1-NN Euclidean, 1-NN DTW (with numba or aeon)

    def __post_init__(self) -> None:
        def check(ok: bool, what: str, want: str, got: object) -> None:
            if not ok:
                raise ConfigError(expected(field_name("classify", what, self, CLASSIFY_FLAGS), want, repr(got)))

        check(is_int_at_least(self.seed, 0), "seed", "an integer >= 0", self.seed)

        check(self.input in INPUTS, "input", f"one of {INPUTS}", self.input)
        check(self.cell in CELLS, "cell", f"one of {CELLS}", self.cell)
        check(self.pool in POOLS, "pool", f"one of {POOLS}", self.pool)
        check(self.level in LEVELS, "level", f"one of {LEVELS}", self.level)
        check(self.arch in ARCHS, "arch", f"one of {ARCHS}", self.arch)
        check(self.normalize in NORMALIZE, "normalize", f"one of {NORMALIZE}", self.normalize)
        check(self.long_series in LONG_SERIES, "long_series", f"one of {LONG_SERIES}", self.long_series)
        check(isinstance(self.folds, int) and not isinstance(self.folds, bool) and self.folds >= 0, "folds",
              "an integer >= 0 (0 = auto, 1 = holdout, k >= 2 = k-fold)", self.folds)
        check(isinstance(self.ensemble, int) and not isinstance(self.ensemble, bool) and self.ensemble >= 1,
              "ensemble", "an integer >= 1", self.ensemble)
        check(not (self.folds >= 2 and self.valid), "folds", "0 or 1 with a valid file (the folds are cut from "
              "train)", self.folds)
        for name in ("embed_dim", "hidden_size", "num_layers", "batch_size", "min_freq"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an integer >= 1", v)
        check(isinstance(self.max_len, int) and not isinstance(self.max_len, bool) and self.max_len >= 0, "max_len",
              "an integer >= 1, or 0 for auto", self.max_len)
        check(0 <= self.dropout < 1, "dropout", "a number in [0, 1)", self.dropout)
        check(0 < self.valid_frac < 1, "valid_frac", "a number in (0, 1)", self.valid_frac)
        check(self.freeze_epochs >= 0, "freeze_epochs", "an integer >= 0", self.freeze_epochs)
        check(not self.freeze_epochs or bool(self.init_from), "freeze_epochs", "0 without init_from",
              self.freeze_epochs)
        check(not (self.init_from and self.bidirectional), "bidirectional", "off with init_from (a language "
              "model reads one direction)", self.bidirectional)
        check(not (self.init_from and self.resolved_input() != "text"), "init_from", "text input (a language "
              "model reads tokens)", self.init_from)
        check(not (self.init_from and self.cell_options), "cell_options (--cell-option)", "none with init_from "
              "(the language model's cell options come with its layers)", self.cell_options)
        self.cell_options = check_cell_options(self.cell_options, self.cell)
        check(self.resolved_arch() == "rnn" or self.resolved_input() == "numeric", "arch",
              "rnn for text and frames input (lstm-fcn reads numeric sequences)", self.arch)
        if is_ucr(self.dataset):
            check(not (self.train or self.valid or self.test), "train/valid/test", f"none with --dataset "
                  f"{self.dataset} (it names its files)", [p for p in (self.train, self.valid, self.test) if p])
        elif self.resolved_input() == "frames":
            check_frames_config(self)

    def check_label_is_not_an_input(self) -> None:
        """ConfigError when the class column is also read as an input (it would be learnt from
        itself). Checked when a run is trained, not when one is loaded: a saved run keeps loading."""
        inputs = {"text": [("text_col", self.text_col)],
                  "numeric": [("id_col", self.id_col), ("time_col", self.time_col),
                              *(("feature_cols", c) for c in self.feature_cols),
                              *(("value_cols", c) for c in self.value_cols)]}.get(self.resolved_input(), [])
        clash = next((name for name, col in inputs if col and col == self.label_col), None)
        if clash is not None:
            raise ConfigError(expected(field_name("classify", "label_col", self, CLASSIFY_FLAGS),
                                       f"a column other than the inputs' (it is also {flag_of(clash, CLASSIFY_FLAGS)})",
                                       repr(self.label_col)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassifyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(expected("classify config keys", f"a subset of {sorted(known)}", unknown))
        return cls(**data)

    def resolved_input(self) -> str:
        if self.input != "auto":
            return self.input
        if is_ucr(self.dataset):
            return "numeric"
        if self.dataset or self.frames or self.size:
            return "frames"
        if self.train.lower().endswith(".ts") or self.format == "ts" or self.id_col or self.feature_cols \
                or self.value_cols:
            return "numeric"
        return "text"

    def resolved_arch(self) -> str:
        if self.arch != "auto":
            return self.arch
        return "lstm-fcn" if self.resolved_input() == "numeric" else "rnn"

    def resolved_max_len(self) -> int:
        """``max_len``, or with 0 (auto) the architecture's MAX_LEN."""
        return self.max_len or MAX_LEN[self.resolved_arch()]

    def resolved_long(self) -> str:
        if self.long_series != "auto":
            return self.long_series
        return "downsample" if self.resolved_input() == "numeric" else "truncate"


# ----------------------------------------------------------------------------- model


def pool_states(out: torch.Tensor, h_n: torch.Tensor, lengths: torch.Tensor, pool: str,
                num_layers: int, dirs: int) -> torch.Tensor:
    """Pool over valid steps. ``out`` (T, B, dirs*H) zero-padded, ``h_n`` (layers*dirs, B, H),
    ``lengths`` (B,). Returns (B, dirs*H)."""
    if pool == "last":
        last = h_n.view(num_layers, dirs, h_n.shape[-2], h_n.shape[-1])[-1]  # (dirs, B, H)
        return torch.cat(list(last), dim=-1)
    t = out.shape[0]
    mask = (torch.arange(t, device=out.device)[:, None] < lengths.to(out.device)[None, :])[..., None]  # (T, B, 1)
    if pool == "mean":
        return (out * mask).sum(0) / lengths.to(out.device, out.dtype)[:, None]
    return out.masked_fill(~mask, float("-inf")).amax(0)


class SequenceClassifier(nn.Module):
    def __init__(self, *, vocab_size: int, input_dims: int, embed_dim: int, cell: str, hidden_size: int,
                 num_layers: int, bidirectional: bool, dropout: float, pool: str, n_classes: int,
                 cell_options: dict[str, Any] | None = None, encoder: nn.Module | None = None) -> None:
        super().__init__()
        # vocab_size > 0: token ids; else numeric inputs with input_dims variables; an encoder
        # (frames: rnnlab.tasks.video) maps (T, B, ...) inputs to (T, B, embed_dim) itself.
        self.embed = encoder if encoder is not None else (
            nn.Embedding(vocab_size, embed_dim) if vocab_size > 0 else nn.Linear(input_dims, embed_dim))
        self.rnn = recurrent_layer(cell, embed_dim, hidden_size, num_layers, cell_options, dropout=dropout,
                                   bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        self.dirs = 2 if bidirectional else 1
        self.num_layers = num_layers
        self.pool = pool
        self.head = nn.Linear(self.dirs * hidden_size, n_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (T, B) ids, (T, B, D) values or (T, B, H, W, C) frames, lengths (B,) -> pooled (B, dirs*H)."""
        emb = self.embed(x)  # (T, B, E)
        packed = pack_padded_sequence(emb, lengths.cpu(), enforce_sorted=False)
        out_p, h_n = self.rnn(packed)
        if isinstance(h_n, tuple):  # LSTM: (h, c)
            h_n = h_n[0]
        out, _ = pad_packed_sequence(out_p, total_length=x.shape[0])  # (T, B, dirs*H)
        return pool_states(out, h_n, lengths, self.pool, self.num_layers, self.dirs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x, lengths)))  # (B, C)


def _conv_block(c_in: int, c_out: int, k: int) -> nn.Sequential:
    # "same" padding as Keras pads it (left (k-1)//2, right k//2); torch's padding="same" warns
    # for even kernels.
    return nn.Sequential(nn.ConstantPad1d(((k - 1) // 2, k // 2), 0.0), nn.Conv1d(c_in, c_out, k),
                         nn.BatchNorm1d(c_out), nn.ReLU())


class LSTMFCN(nn.Module):
    """LSTM-FCN (Karim, Majumdar, Darabi and Chen, 2017): an LSTM branch beside a fully
    convolutional branch, their features concatenated into a softmax layer.

    * FCN branch: three blocks conv1d -> batch norm -> ReLU of ``filters`` (128, 256, 128) with
      kernels (8, 5, 3), then global average pooling over the valid steps of each series.
    * LSTM branch, with the paper's *dimension shuffle*: the LSTM reads the D variables as its
      steps and the ``length`` time steps as the features of each step (a univariate series is
      one step of ``length`` features), then dropout 0.8 on its last hidden state. The layer is
      rnnlab's (``cell``: lstm, or gru / rnn for the variants).

    Inputs are (T, B, D) zero-padded with ``lengths`` (B,); T <= ``length`` (the task pads every
    series to ``length``, the longest training series after downsampling, as the paper pads).
    """

    def __init__(self, *, input_dims: int, length: int, cell: str, hidden_size: int, num_layers: int,
                 n_classes: int, cell_options: dict[str, Any] | None = None,
                 filters: tuple[int, ...] = (128, 256, 128), kernels: tuple[int, ...] = (8, 5, 3),
                 dropout: float = LSTM_FCN_DROPOUT) -> None:
        super().__init__()
        self.length = length
        self.rnn = recurrent_layer(cell, length, hidden_size, num_layers, cell_options)
        self.drop = nn.Dropout(dropout)
        chans = (input_dims,) + tuple(filters)
        self.fcn = nn.Sequential(*[_conv_block(chans[i], chans[i + 1], k) for i, k in enumerate(kernels)])
        self.head = nn.Linear(hidden_size + filters[-1], n_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        if t > self.length:
            raise DataError(expected("LSTM-FCN input length", f"<= {self.length} steps", t))
        x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.length - t))            # (L, B, D)
        steps = x.permute(2, 1, 0)                                          # (D, B, L): variables as steps
        _, h_n = self.rnn(steps)
        if isinstance(h_n, tuple):  # LSTM: (h, c)
            h_n = h_n[0]
        lstm = self.drop(h_n[-1])                                           # (B, H)
        conv = self.fcn(x.permute(1, 2, 0))                                  # (B, F, L)
        mask = (torch.arange(self.length, device=x.device)[None, :] < lengths.to(x.device)[:, None])  # (B, L)
        gap = (conv * mask[:, None, :]).sum(-1) / lengths.to(x.device, conv.dtype)[:, None]
        return torch.cat([lstm, gap], dim=-1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x, lengths))


# The fields a classifier takes from the language model of ``init_from``.
LM_FIELDS = ("level", "cell", "embed_dim", "hidden_size", "num_layers")


def check_lm_fields(config: ClassifyConfig, given: dict[str, Any]) -> None:
    """ConfigError unless each of ``given`` (LM_FIELDS named by the user: field -> value) is the
    value ``config`` took from the language model of ``init_from``."""
    clash = [f"{field_name('classify', k, config, CLASSIFY_FLAGS)} {v!r} (the language model's: "
             f"{getattr(config, k)!r})" for k, v in given.items() if k in LM_FIELDS and v != getattr(config, k)]
    if clash:
        raise ConfigError(expected("--init-from", "the language model's own token level and layer sizes, which the "
                                   "classifier takes from it (leave those flags out)", "; ".join(clash)))


def _adopt_lm(config: ClassifyConfig, lm: Any) -> ClassifyConfig:
    """``config`` with the language model's token level and layer sizes, which the classifier takes
    from ``init_from`` (so that config.json says what was trained). A field set to another value
    than its default and the model's is refused rather than ignored (the command line also refuses
    a flag given at its default value: check_lm_fields)."""
    model = {"level": lm.vocab.level, **{k: lm.arch[k] for k in LM_FIELDS if k != "level"}}
    adopted = dataclasses.replace(config, **model)
    defaults = {f.name: f.default for f in dataclasses.fields(ClassifyConfig)}
    check_lm_fields(adopted, {k: getattr(config, k) for k in LM_FIELDS if getattr(config, k) != defaults[k]})
    return adopted


class MemberEnsemble(nn.Module):
    """Several classifiers of the same shape (seeds and/or folds): ``forward`` gives the log of
    their mean class probabilities (so argmax and cross-entropy are the ensemble's);
    ``member_logits`` gives each member's own logits (M, B, C)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def member_logits(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x, lengths) for m in self.members])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.member_logits(x, lengths), dim=-1)
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


# ----------------------------------------------------------------------------- metrics


# Classes up to which the confusion matrix is kept dense in the metrics (and printed, plotted);
# beyond, only its non-zero cells are kept: a 10,000-class matrix would take 800 MB dense.
DENSE_CONFUSION = 50
PRINTED_CONFUSION = 20      # the CLI prints the matrix up to this many classes, else the top confusions
TOP_CONFUSIONS = 10


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes present in truth or prediction; an undefined precision or
    recall counts as an F1 of 0), per-class precision and recall (NaN where undefined: a class
    never predicted has no precision, a class absent from ``y_true`` no recall), the non-zero
    cells of the confusion matrix (``cells``: [true, pred, count], most frequent first) and, up
    to ``DENSE_CONFUSION`` classes, the dense matrix ``cm[true, pred]``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    codes, counts = np.unique(y_true * n_classes + y_pred, return_counts=True)
    t, p = codes // n_classes, codes % n_classes
    tp = np.zeros(n_classes)
    np.add.at(tp, t[t == p], counts[t == p])
    pred_n = np.bincount(y_pred, minlength=n_classes)
    true_n = np.bincount(y_true, minlength=n_classes)
    # undefined (NaN, null in JSON) for a class never predicted (precision) or absent from y_true (recall)
    precision = np.divide(tp, pred_n, out=np.full_like(tp, np.nan), where=pred_n > 0)
    recall = np.divide(tp, true_n, out=np.full_like(tp, np.nan), where=true_n > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    present = (pred_n + true_n) > 0
    order = np.argsort(-counts, kind="stable")
    out = {
        "acc": float(tp.sum() / max(1, len(y_true))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "support": true_n.tolist(),
        "cells": [[int(t[i]), int(p[i]), int(counts[i])] for i in order],
    }
    if n_classes <= DENSE_CONFUSION:
        cm = np.zeros((n_classes, n_classes), dtype=np.int64)
        cm[t, p] = counts
        out["confusion"] = cm.tolist()
    return out


def _classes_shown(m: dict[str, Any], names: list[str], most: int = DENSE_CONFUSION) -> list[int]:
    """Every class up to ``most`` of them, else the ``most`` largest by support (in class order)."""
    if len(names) <= most:
        return list(range(len(names)))
    return sorted(np.argsort(-np.asarray(m["support"]), kind="stable")[:most].tolist())


def top_confusions(m: dict[str, Any], names: list[str], k: int = TOP_CONFUSIONS) -> list[tuple[str, str, int]]:
    """The ``k`` most frequent mistakes as (true, predicted, count)."""
    return [(names[t], names[p], c) for t, p, c in m["cells"] if t != p][:k]


def write_confusion(m: dict[str, Any], names: list[str], path: str, force: bool = False) -> int:
    """The whole confusion matrix as CSV: one row per non-zero cell (true, predicted, count).
    Returns the number of rows."""
    check_output(path, (), force, flag="--confusion")
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["true", "predicted", "count"])
        for t, p, c in sorted(m["cells"]):
            w.writerow([names[t], names[p], c])
    return len(m["cells"])


# ----------------------------------------------------------------------------- the task


def _subset(ex: TextExamples | SequenceExamples, idx: np.ndarray) -> TextExamples | SequenceExamples:
    pick = [int(i) for i in idx]
    if isinstance(ex, TextExamples):
        return dataclasses.replace(ex, texts=[ex.texts[i] for i in pick], labels=[ex.labels[i] for i in pick],
                                   lines=[ex.lines[i] for i in pick])
    if hasattr(ex, "clips"):   # rnnlab.data.frames.FrameExamples
        return dataclasses.replace(ex, clips=[ex.clips[i] for i in pick], labels=[ex.labels[i] for i in pick],
                                   lines=[ex.lines[i] for i in pick])
    return dataclasses.replace(ex, seqs=[ex.seqs[i] for i in pick], labels=[ex.labels[i] for i in pick],
                               lines=[ex.lines[i] for i in pick])


class _OpenLabelMap(LabelMap):
    """The run's classes, for reading a file to predict: a label never seen in training is no
    error there (the row is still predicted); it gets an index past the known classes, in
    ``unseen`` order, so it can be written back as it was given."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self.unseen: dict[str, int] = {}

    def index(self, key: str, where: str) -> int:
        try:
            return super().index(key, where)
        except DataError:
            return len(self.names) + self.unseen.setdefault(key, len(self.unseen))


@dataclass
class _Split:
    inputs: list[np.ndarray]     # int64 ids (T,) or float32 values (T, D)
    labels: np.ndarray | None    # (N,) int64
    lines: list[int]
    path: str
    folds: np.ndarray | None = None   # k-fold: the fold of each example (the member that does not train on it)
    raw: list[np.ndarray] | None = None   # numeric: the series as read (before scaling and downsampling), for baselines


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of each example: every class is shuffled (seeded) and dealt round the
    folds in turn, one class after another, so each fold holds each class's share to within one
    example and the fold sizes differ by at most one."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 7919])
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
    folds = np.empty(len(labels), dtype=np.int64)
    folds[order] = np.arange(len(order)) % k
    return folds


def validation_plan(config: ClassifyConfig, kind: str, counts: np.ndarray) -> dict[str, Any]:
    """How the checkpoint is chosen: ``{"mode": "file"}`` (a valid file or a named data set's own
    split), ``{"mode": "holdout"}`` (valid_frac of train), ``{"mode": "kfold", "folds": k}`` or
    ``{"mode": "none"}`` (too few series per class for any split: the budget is trained out and
    "valid" reports the training series). The auto rule is :data:`KFOLD_BELOW`'s."""
    c = config
    if c.valid or (c.dataset and not is_ucr(c.dataset)):
        return {"mode": "file"}
    if c.folds == 1 or (c.folds == 0 and (kind != "numeric" or counts.sum() >= KFOLD_BELOW)):
        return {"mode": "holdout"}
    smallest = int(counts[counts > 0].min())
    k = c.folds if c.folds >= 2 else min(DEFAULT_FOLDS, smallest)
    if c.folds >= 2 and k > smallest:
        raise DataError(expected(f"{c.train or c.dataset}: --folds {k}", f"at most the smallest class's "
                                 f"{smallest} examples (stratified folds)", k))
    return {"mode": "kfold", "folds": k} if k >= 2 else {"mode": "none"}


def budget(n: int, batch_size: int, steps: int | None = None) -> dict[str, Any]:
    """TrainConfig fields for ``n`` training series (numeric input): steps from the data size
    (or ``steps``), Adam with a cosine schedule after a 5 % warm-up, ~EVALS_PER_RUN evaluations
    (and one per epoch) and early stopping after a quarter of them without a better validation loss."""
    if steps is None:
        samples = max(min(max(BUDGET_EPOCHS * n, MIN_SAMPLES), MAX_SAMPLES), MIN_EPOCHS * n)
        steps = math.ceil(samples / min(batch_size, n))
    steps = max(1, steps)
    every = max(1, steps // EVALS_PER_RUN)
    # the loop also evaluates at every epoch end: count those in, so patience stays a quarter of the run
    evals = steps // every + steps // max(1, math.ceil(n / batch_size))
    return {"max_steps": steps, "max_epochs": 0, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine",
            "warmup_steps": max(1, steps // 20), "min_lr": 1e-5, "eval_every": every,
            "patience": max(1, evals // 4)}


def batch_bounds(n: int, size: int, even: bool = False) -> list[tuple[int, int]]:
    """[start, stop) of each batch of at most ``size`` of ``n`` examples in order: full batches and
    a remainder, or with ``even`` the same number of batches as equal as they come (36 by 32:
    18 + 18; 67 by 32: 23 + 22 + 22)."""
    if not even:
        return [(s, min(n, s + size)) for s in range(0, n, size)]
    count = -(-n // size)
    base, extra = divmod(n, count) if count else (0, 0)
    bounds, s = [], 0
    for b in range(count):
        e = s + base + (b < extra)
        bounds.append((s, e))
        s = e
    return bounds


def downsample(s: np.ndarray, factor: int) -> np.ndarray:
    """(T, D) -> (ceil(T / factor), D): the mean of each window of ``factor`` steps (the last
    window may be shorter)."""
    if factor <= 1:
        return s
    t = len(s)
    n = math.ceil(t / factor)
    pad = n * factor - t
    sums = np.concatenate([s, np.zeros((pad, s.shape[1]), s.dtype)]).reshape(n, factor, -1).sum(1)
    counts = np.full(n, factor, dtype=np.float64)
    counts[-1] = factor - pad
    return sums / counts[:, None]


def _znorm_moments(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z-normalised series, mean (1, D), std (1, D)) of one series (T, D)."""
    mean = s.mean(0, keepdims=True)
    std = s.std(0, keepdims=True)
    return (s - mean) / np.where(std > 1e-8, std, 1.0), mean, std


def znorm(s: np.ndarray) -> np.ndarray:
    """Each variable of one series to mean 0, standard deviation 1 (a constant variable to 0)."""
    return _znorm_moments(s)[0]


def znorm_with_scale(s: np.ndarray) -> np.ndarray:
    """(T, D) -> (T, 3D): the z-normalised series, then each variable's log10 standard deviation
    and asinh of its mean as constant variables, so the shape and the level are both inputs on
    scales that stay comparable across orders of magnitude."""
    z, mean, std = _znorm_moments(s)
    t = len(s)
    return np.concatenate([z, np.repeat(np.log10(np.maximum(std, 1e-8)), t, 0),
                           np.repeat(np.arcsinh(mean), t, 0)], axis=1)


def amplitude_spread(seqs: list[np.ndarray]) -> float:
    """The 90th over the 10th percentile of the series' standard deviations, for the variable
    where that ratio is largest (1 when every series is constant)."""
    std = np.array([np.asarray(x, dtype=np.float64).std(0) for x in seqs])       # (N, D)
    lo, hi = np.percentile(std, 10, axis=0), np.percentile(std, 90, axis=0)
    ratio = np.where(hi > 0, hi / np.maximum(lo, 1e-12), 1.0)
    return float(ratio.max())


class ClassifyTask:
    name = "classify"
    # Text: epochs, not steps, since data sets differ in size by orders of magnitude; Adam needs
    # no tuning on small data. Numeric input replaces these by ``budget`` (from the number of
    # training series) in ``self.train_defaults``, frames by the same epochs with a cosine decay;
    # fit(task) and ``rnnlab train classify`` both read the instance's.
    train_defaults = {"max_steps": 0, "max_epochs": 10, "optimizer": "adam", "lr": 2e-3}
    # TrainConfig.compile: the model's forward, with graph breaks at pack_padded_sequence (torch
    # marks it untraceable). An ensemble (members > 1) calls its members one by one: not compiled.
    compile_methods = {"forward": False}
    items_name = "samples"
    metric_name = "acc"
    data_keys = ("train", "valid", "test")   # recorded with checksums in the run folder

    def __init__(self, config: ClassifyConfig, metadata: dict[str, Any] | None = None) -> None:
        if config.max_len == 0:
            # auto: the limit that applies, so that config.json says what was trained, a resumed
            # run compares with it and everything below reads config.max_len
            config = dataclasses.replace(config, max_len=config.resolved_max_len())
        self.config = config
        self.kind = config.resolved_input()
        self._epoch = 0
        self._splits: dict[str, _Split] = {}
        self._lm = None  # the LMSource of init_from, on a fresh (not rebuilt) task only
        self._fresh = metadata is None
        self._value_cols: list[str] = []   # the training file's, once read (wide numeric tables only)
        if metadata is not None:
            self._meta = metadata
            # runs of rnnlab before value_cols was recorded: every non-label column, in file order
            self._value_cols = list(metadata.get("value_cols") or [])
            self.label_map = LabelMap.from_dict(metadata["label_map"])
            self._restore_codec(metadata)
            self.arch = dict(metadata["arch"])
            self.plan = dict(metadata.get("validation", {"mode": "file" if config.valid or config.dataset
                                                         else "holdout"}))
            self._set_train_defaults(int(sum(metadata["train_counts"])))
            return
        if not config.train and not config.dataset:
            raise ConfigError(expected("classify train", "a data file", "none"))
        config.check_label_is_not_an_input()
        if self.kind == "text" and config.init_from:
            self._lm = load_lm_source(config.init_from)
            config = self.config = _adopt_lm(config, self._lm)
        train = self._read(self._path("train"), None, require_labels=True)
        self._value_cols = self._wide_columns(train)
        self.label_map = train.label_map
        all_counts = np.bincount(np.asarray(train.labels), minlength=len(self.label_map))
        self.plan = validation_plan(config, self.kind, all_counts)
        # Vocabulary, scaling and the majority class are learned from the training part only
        # (k-fold: from the whole training file; every member's scaler would differ otherwise).
        fit_part = train if self.plan["mode"] != "holdout" else _subset(train, self._holdout(len(train.labels))["train"])
        self._fit_codec(fit_part)
        self.arch = dict(self._lm.arch) if self._lm is not None else {
            "embed_dim": config.embed_dim, "cell": config.cell, "hidden_size": config.hidden_size,
            "num_layers": config.num_layers}
        if config.cell_options:   # only when given: metadata of runs without options stays as it was
            self.arch["cell_options"] = dict(config.cell_options)
        if config.resolved_arch() == "lstm-fcn":
            self.arch["model"] = "lstm-fcn"
            self.arch["length"] = self.length
        members = config.ensemble * (self.plan.get("folds", 1))
        if members > 1:
            self.arch["members"] = members
        counts = np.bincount(np.asarray(fit_part.labels), minlength=len(self.label_map))
        self._meta = {
            "input": self.kind,
            "label_map": self.label_map.to_dict(),
            "train_counts": counts.tolist(),
            "majority_class": int(counts.argmax()),
            "arch": self.arch,
            "validation": self.plan,
            **self._codec_meta(),
        }
        if self._value_cols:   # wide numeric tables only: runs of other inputs keep their metadata as it was
            self._meta["value_cols"] = self._value_cols
        if config.init_from:
            self._meta["init_from"] = {"run": os.path.abspath(config.init_from)}
        self._raw_train = train
        self._set_train_defaults(int(counts.sum()))
        # A --valid or --test file is read and checked now, before any model is built: a label
        # unseen in training (or any other data error) there would otherwise stop the run at its
        # first evaluation, or at its end, after training.
        for name in ("valid", "test"):
            if getattr(config, name) and not config.dataset:
                self.split(name)

    def _set_train_defaults(self, n: int | None) -> None:
        self._n_train = n or 0
        if self.kind == "numeric" and n:
            self.train_defaults = budget(n, self.config.batch_size)
            if self.plan.get("mode") == "kfold":
                # every fold trains its whole budget and keeps its last model: with a few dozen
                # series per fold the out-of-fold loss swings from one evaluation to the next, so
                # the lowest one picks noise
                self.train_defaults["select"] = KFOLD_SELECT
        elif self.kind == "frames" and n:
            # the same ten epochs, with the rate decayed to zero over them (cosine): at a constant
            # rate the validation accuracy of clip models swings by points from epoch to epoch
            epochs = ClassifyTask.train_defaults["max_epochs"]
            self.train_defaults = {**ClassifyTask.train_defaults, "max_epochs": 0, "schedule": "cosine",
                                   "max_steps": epochs * math.ceil(n / self.config.batch_size)}

    def train_defaults_for_epochs(self, epochs: int) -> dict[str, Any]:
        """``train_defaults`` when only ``--max-epochs`` is given: where the defaults are a step
        budget (numeric and frames input), it covers exactly ``epochs`` epochs, and the schedule
        decays over them, rather than the budget silently ending the run at another epoch (numeric
        input: with the warm-up, evaluation pace and patience of a budget of that length)."""
        if not self.train_defaults.get("max_steps") or not getattr(self, "_n_train", 0):
            return dict(self.train_defaults)
        n = self._n_train
        steps = max(1, int(epochs)) * math.ceil(n / min(self.config.batch_size, n))
        if self.kind == "numeric":
            # warm-up, evaluation pace and patience follow the new length (patience a quarter of it)
            return {**self.train_defaults, **budget(n, self.config.batch_size, steps)}
        return {**self.train_defaults, "max_epochs": 0, "max_steps": steps}

    @property
    def members(self) -> int:
        return int(self.arch.get("members", 1))

    # --- data --------------------------------------------------------------------------

    def _path(self, split: str) -> str:
        """The file of ``split``, or ``"<dataset>:<split>"`` for a named data set."""
        c = self.config
        if is_ucr(c.dataset):
            if split == "valid":
                raise DataError(expected(f"{c.dataset}: a valid split", "none (UCR sets have train and test; "
                                         "validation is cut from train)", "a request for one"))
            return ucr_path(c.dataset, split, c.data_dir)
        return f"{c.dataset}:{split}" if c.dataset else {"train": c.train, "valid": c.valid, "test": c.test}[split]

    def _read(self, path: str, label_map: LabelMap | None, require_labels: bool) -> TextExamples | SequenceExamples:
        c = self.config
        if self.kind == "frames":
            return read_examples(c, path, label_map, require_labels)
        fmt = "auto" if c.format == "ts" else c.format
        if self.kind == "text":
            if self._reads_ts(path):
                detect_format(path, fmt, also=(".ts",))  # an unknown extension: the error names .ts too
            return load_text_classification(path, c.text_col, c.label_col, label_map, c.missing, fmt, require_labels,
                                            encoding=c.encoding)
        if path.lower().endswith(".ts") or c.format == "ts":
            return load_ts(path, label_map, c.missing, require_labels, encoding=c.encoding)
        detect_format(path, fmt, also=(".ts",))  # an unknown extension: the error names .ts too
        if c.id_col:
            return load_sequences_long(path, c.id_col, c.label_col, c.feature_cols, c.time_col or None,
                                       label_map, c.missing, fmt, require_labels, encoding=c.encoding)
        if c.feature_cols:
            raise ConfigError(expected("--feature-cols", "to come with --id-col (long layout)", c.feature_cols))
        # the training file's value columns, read by name (not position) in every later file
        trained = None if c.value_cols else self._value_cols
        return load_sequences_wide(path, c.label_col, c.value_cols or None, label_map, c.missing, fmt,
                                   require_labels, encoding=c.encoding, trained_cols=trained)

    def _reads_ts(self, path: str) -> bool:
        """Text input read from ``path`` where a ``.ts`` file would have been read: the training
        file of ``--input auto`` (a ``.ts`` name makes the input numeric)."""
        return self._fresh and self.config.input == "auto" and path == self.config.train

    def _wide_columns(self, train: TextExamples | SequenceExamples) -> list[str]:
        """The value columns of a wide numeric training table, by name in time order (recorded in
        the run's metadata); [] for any other input."""
        if not isinstance(train, SequenceExamples) or self.config.id_col or not train.columns:
            return []
        return list(train.columns)

    def _fit_codec(self, train: TextExamples | SequenceExamples) -> None:
        c = self.config
        if self.kind == "frames":
            self.frame_shape = list(train.clips[0].shape[1:])  # (H, W, C)
            return
        if self.kind == "text":
            if self._lm is not None:
                self.vocab = self._lm.vocab
                return
            tokens = [t for text in train.texts for t in self._tokens(text)]
            if c.level == "word":
                self.vocab = Vocab.build(tokens, "word", c.min_freq)
            else:  # always an <unk>: a classifier must accept characters it never saw
                base = Vocab.build(tokens, "char", c.min_freq)
                itos = base.itos if base.unk else [UNK] + base.itos
                self.vocab = Vocab("char", itos, UNK)
        else:
            self.dims = train.dims
            self.normalize = c.normalize if c.scale else "none"
            if self.normalize == "auto":
                spread = amplitude_spread(train.seqs)
                self.normalize = "series-scale" if spread > AMPLITUDE_SPREAD else "channel"
                if self.normalize == "series-scale":
                    warnings.warn(f"{c.train or c.dataset}: the training series' amplitudes span a factor of "
                                  f"{spread:,.0f} (10th to 90th percentile of their standard deviations): each "
                                  f"series is z-normalised and its scale and level are added as inputs "
                                  f"(--normalize series-scale); --normalize channel scales all series alike",
                                  DataWarning, stacklevel=3)
            if self.normalize == "series":
                values = np.concatenate([znorm(s.astype(np.float64)) for s in train.seqs], axis=0)
            elif self.normalize == "series-scale":
                values = np.concatenate([znorm_with_scale(s.astype(np.float64)) for s in train.seqs], axis=0)
            else:
                values = np.concatenate(train.seqs, axis=0).astype(np.float64)  # (sum T, D)
            # series: z-normalised series are then scaled per variable too (a no-op for one variable)
            self.scaler = Scaler.fit(values, f"{c.train or c.dataset}: training part") if self.normalize != "none" else None
            longest = max(len(s) for s in train.seqs)
            # One factor for every series (train, test, predict), so a step means the same time span in all.
            self.factor = math.ceil(longest / c.max_len) if c.resolved_long() == "downsample" else 1
            self.length = min(math.ceil(longest / self.factor), c.max_len)
            if self.factor > 1:
                warnings.warn(f"{c.train or c.dataset}: series up to {longest} steps are longer than --max-len "
                              f"{c.max_len}: every series is downsampled by {self.factor} (the mean of each "
                              f"{self.factor} steps); pass --max-len {longest} to keep every step", DataWarning,
                              stacklevel=3)

    @property
    def input_dims(self) -> int:
        """The model's input variables per step: the file's, three times over with series-scale."""
        return self.dims * (3 if self.normalize == "series-scale" else 1)

    def _codec_meta(self) -> dict[str, Any]:
        if self.kind == "frames":
            return {"frame_shape": self.frame_shape}
        if self.kind == "text":
            return {"vocab": self.vocab.to_json()}
        return {"dims": self.dims, "scaler": self.scaler.to_dict() if self.scaler else None,
                "normalize": self.normalize, "factor": self.factor, "length": self.length}

    def _restore_codec(self, meta: dict[str, Any]) -> None:
        if meta.get("input", self.kind) != self.kind:
            raise CheckpointError(expected("classify metadata input", self.kind, meta.get("input")))
        if self.kind == "frames":
            self.frame_shape = [int(v) for v in meta["frame_shape"]]
        elif self.kind == "text":
            self.vocab = Vocab.from_json(meta["vocab"])
        else:
            self.dims = int(meta["dims"])
            self.scaler = Scaler.from_dict(meta["scaler"]) if meta.get("scaler") else None
            # runs of rnnlab before these options: channel scaling (or none), first max_len steps kept
            self.normalize = meta.get("normalize", "channel" if self.scaler else "none")
            self.factor = int(meta.get("factor", 1))
            self.length = int(meta.get("length", self.config.max_len))

    def _tokens(self, text: str) -> list[str]:
        level = self.vocab.level if hasattr(self, "vocab") else self.config.level
        return tokenize(text.strip("\n") if level == "word" else text, level)

    def _encode(self, ex: TextExamples | SequenceExamples) -> _Split:
        c = self.config
        if self.kind == "frames":
            return _Split(check_frame_shape(ex, self.frame_shape), np.asarray(ex.labels, dtype=np.int64)
                          if ex.labels is not None else None, ex.lines, ex.path)
        cut = 0
        if self.kind == "text":
            inputs = []
            for t in ex.texts:
                tokens = self._tokens(t)
                cut += len(tokens) > c.max_len
                inputs.append(self.vocab.encode(tokens[: c.max_len]).numpy())
            raw = None
            limit = c.max_len
        else:
            if ex.dims != self.dims:
                raise DataError(expected(f"{ex.path}: variables per step", self.dims, ex.dims))
            inputs, limit = [], self.length
            for s in ex.seqs:
                s = s.astype(np.float64)
                if self.normalize == "series":
                    s = znorm(s)
                elif self.normalize == "series-scale":
                    s = znorm_with_scale(s)
                if self.scaler is not None:
                    s = self.scaler.transform(s)
                s = downsample(s, self.factor)
                cut += len(s) > limit
                inputs.append(s[:limit].astype(np.float32))
            raw = list(ex.seqs)
        if cut:
            after = f" after downsampling by {self.factor}" if self.kind == "numeric" and self.factor > 1 else ""
            why = f"--max-len {c.max_len}" if limit == c.max_len else \
                f"the run's input length, its longest training series; --max-len {c.max_len}"
            warnings.warn(f"{ex.path}: {cut} of {len(inputs)} sequences are longer than {limit} steps{after} "
                          f"and were cut to their first {limit} ({why})", DataWarning, stacklevel=3)
        labels = np.asarray(ex.labels, dtype=np.int64) if ex.labels is not None else None
        return _Split(inputs, labels, ex.lines, ex.path, raw=raw)

    def _holdout(self, n: int) -> dict[str, np.ndarray]:
        """Row indices of the train/valid parts when valid is carved out of the training file
        (seeded, so a rebuilt task holds out the same rows)."""
        c = self.config
        order = np.random.default_rng(c.seed).permutation(n)
        n_valid = max(1, int(round(c.valid_frac * n)))
        if n - n_valid < 1:
            raise DataError(expected(f"{c.train}: examples", "at least 2 to hold some out for validation", n))
        return {"valid": np.sort(order[:n_valid]), "train": np.sort(order[n_valid:])}

    def split(self, name: str) -> _Split:
        """The encoded examples of ``train``, ``valid`` or ``test`` (loaded on first use). With
        k-fold validation both ``train`` and ``valid`` are the whole training file with each
        example's fold; without any split (mode "none") ``valid`` is the training file."""
        if name in self._splits:
            return self._splits[name]
        c = self.config
        if name not in ("train", "valid", "test"):
            raise ConfigError(expected("split", "train, valid or test", repr(name)))
        if name == "test" and not (c.test or c.dataset):
            raise DataError(expected("test split", "a --test file", "none"))
        mode = self.plan["mode"]
        if name in ("train", "valid") and mode != "file":
            raw = getattr(self, "_raw_train", None) or self._read(self._path("train"), self.label_map, True)
            full = self._encode(raw)
            if mode == "holdout":
                for k, idx in self._holdout(len(full.inputs)).items():
                    self._splits[k] = _Split([full.inputs[i] for i in idx], full.labels[idx],
                                             [full.lines[i] for i in idx], full.path,
                                             raw=[full.raw[i] for i in idx] if full.raw is not None else None)
            else:
                if mode == "kfold":
                    full.folds = stratified_folds(full.labels, self.plan["folds"], c.seed)
                self._splits["train"] = self._splits["valid"] = full
            return self._splits[name]
        path = self._path(name)
        raw = getattr(self, "_raw_train", None) if name == "train" else None
        self._splits[name] = self._encode(raw or self._read(path, self.label_map, True))
        return self._splits[name]

    def collate(self, inputs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad to the longest: ids (T, B) int64 or values (T, B, D) float32, and lengths (B,)."""
        lengths = torch.tensor([len(x) for x in inputs], dtype=torch.long)
        if (lengths < 1).any():
            raise DataError(expected("sequence length", ">= 1", int(lengths.min())))
        t = int(lengths.max())
        if self.kind == "text":
            x = torch.zeros(t, len(inputs), dtype=torch.long)
        elif self.kind == "frames":   # uint8 (T, B, H, W, C): the model's frame encoder scales it
            x = torch.zeros(t, len(inputs), *self.frame_shape, dtype=torch.uint8)
        else:
            x = torch.zeros(t, len(inputs), self.input_dims, dtype=torch.float32)
        for b, seq in enumerate(inputs):
            x[: len(seq), b] = torch.from_numpy(np.asarray(seq))
        return x, lengths

    def _batches(self, split: _Split, order: np.ndarray, even: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        for s, e in batch_bounds(len(order), self.config.batch_size, even):
            idx = order[s:e]
            x, lengths = self.collate([split.inputs[i] for i in idx])
            batch = {"x": x, "lengths": lengths, "index": torch.as_tensor(idx)}
            if split.labels is not None:
                batch["y"] = torch.as_tensor(split.labels[idx])
            if split.folds is not None:
                batch["fold"] = torch.as_tensor(split.folds[idx])
            yield batch

    # --- the Task contract ---------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def _build_one(self) -> nn.Module:
        c = self.config
        if self.arch.get("model") == "lstm-fcn":
            return LSTMFCN(input_dims=self.input_dims, length=int(self.arch["length"]), cell=self.arch["cell"],
                           hidden_size=self.arch["hidden_size"], num_layers=self.arch["num_layers"],
                           n_classes=len(self.label_map), cell_options=self.arch.get("cell_options"))
        encoder = None
        if self.kind == "frames":
            encoder = build_frame_encoder(c.frame_encoder, c.backbone_weights, self.frame_shape[2],
                                          self.arch["embed_dim"], c.finetune_backbone)
        rnn_arch = {k: v for k, v in self.arch.items() if k not in ("model", "length", "members")}
        return SequenceClassifier(
            vocab_size=len(self.vocab) if self.kind == "text" else 0,
            input_dims=self.input_dims if self.kind == "numeric" else 0, pool=c.pool, n_classes=len(self.label_map),
            bidirectional=c.bidirectional, dropout=c.dropout, encoder=encoder, **rnn_arch)

    def build_model(self) -> nn.Module:
        if self.members > 1:   # built one after the other from the seeded generator: different initialisations
            model: nn.Module = MemberEnsemble([self._build_one() for _ in range(self.members)])
        else:
            model = self._build_one()
        if self._fresh and self._lm is not None:
            for m in (model.members if self.members > 1 else [model]):
                copy_lm_weights(self._lm.model, m, self._lm.extra_tokens)
        return model

    def transferred_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The embedding and recurrent weights that came from the lm run (frozen for
        ``freeze_epochs`` epochs by switching off their gradients)."""
        if not self.config.init_from:
            return []
        return [p for m in (model.members if self.members > 1 else [model])
                for p in list(m.embed.parameters()) + list(m.rnn.parameters())]

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        self._epoch = epoch
        split = self.split("train")
        gen = np.random.default_rng([self.config.seed, epoch])
        order = gen.permutation(len(split.inputs))[rank::world_size]
        # numeric input: even batches, since LSTM-FCN's batch norm and Adam's step make a remainder
        # of a few series (36 by 32: 32 + 4) the noisiest step of every epoch
        return self._batches(split, order, even=self.kind == "numeric")

    def member_folds(self) -> np.ndarray:
        """The fold each member holds out (k-fold), else -1: member m holds out fold m % k."""
        k = self.plan.get("folds", 0) if self.plan["mode"] == "kfold" else 0
        return np.arange(self.members) % k if k else np.full(self.members, -1)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], carry: Any) -> StepOutput:
        if self.config.freeze_epochs:
            frozen = self._epoch < self.config.freeze_epochs
            for p in self.transferred_parameters(model):
                p.requires_grad_(not frozen)
        device = next(model.parameters()).device
        x, lengths, y = batch["x"].to(device), batch["lengths"], batch["y"].to(device)
        if self.members == 1:
            logits = model(x, lengths)
            loss = nn.functional.cross_entropy(logits, y)
            acc = (logits.argmax(-1) == y).float().mean().item()
            return StepOutput(loss=loss, n_items=len(y), metrics={"acc": acc})
        # Each member on the examples outside its fold; the mean of the members' losses (each
        # member's gradient is its own loss's, scaled by 1/M, which Adam does not see).
        losses, correct, seen = [], 0.0, 0
        fold = batch.get("fold")
        for m, held_out in zip(model.members, self.member_folds()):
            keep = torch.ones(len(y), dtype=torch.bool) if held_out < 0 or fold is None else fold != int(held_out)
            if not keep.any():
                continue
            idx = torch.nonzero(keep).flatten()
            ln = lengths[idx]
            logits = m(x[: int(ln.max()), idx.to(device)], ln)
            losses.append(nn.functional.cross_entropy(logits, y[idx.to(device)]))
            correct += (logits.argmax(-1) == y[idx.to(device)]).float().sum().item()
            seen += len(idx)
        loss = torch.stack(losses).mean()
        return StepOutput(loss=loss, n_items=len(y), metrics={"acc": correct / max(1, seen)})

    @torch.no_grad()
    def predict_split(self, model: nn.Module, split: _Split) -> tuple[np.ndarray, float | None]:
        """Class probabilities (N, C) in file order, and the mean cross-entropy when labelled.
        A k-fold split (``folds`` set) is scored out of fold: each example by the members that
        did not train on it."""
        device = next(model.parameters()).device
        probs = np.zeros((len(split.inputs), len(self.label_map)), dtype=np.float64)
        loss_sum = 0.0
        out_of_fold = split.folds is not None and self.members > 1
        held = torch.as_tensor(self.member_folds())
        for batch in self._batches(split, np.arange(len(split.inputs))):
            if out_of_fold:
                member = torch.log_softmax(model.member_logits(batch["x"].to(device), batch["lengths"]).float(), -1)
                use = (held[:, None] == batch["fold"][None, :]).to(device)           # (M, B)
                logits = torch.logsumexp(member.masked_fill(~use[..., None], float("-inf")), 0) \
                    - torch.log(use.sum(0).clamp(min=1).to(member.dtype))[:, None]
            else:
                logits = model(batch["x"].to(device), batch["lengths"]).float()
            probs[batch["index"].numpy()] = torch.softmax(logits, -1).cpu().numpy()
            if "y" in batch:
                loss_sum += nn.functional.cross_entropy(logits, batch["y"].to(device), reduction="sum").item()
        return probs, (loss_sum / len(split.inputs) if split.labels is not None else None)

    def evaluate_detailed(self, model: nn.Module, split: _Split) -> dict[str, Any]:
        """Metrics for the model and for the majority-class baseline on a labelled split."""
        was = model.training
        model.eval()
        try:
            probs, loss = self.predict_split(model, split)
        finally:
            model.train(was)
        y = split.labels
        n = len(self.label_map)
        m = classification_metrics(y, probs.argmax(1), n)
        base = classification_metrics(y, np.full_like(y, self._meta["majority_class"]), n)
        m.update(loss=float(loss), majority_acc=base["acc"], majority_macro_f1=base["macro_f1"], n=len(y))
        return m

    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        m = self.evaluate_detailed(model, self.split(split))
        return {k: float(m[k]) for k in ("loss", "acc", "macro_f1", "majority_acc", "majority_macro_f1")}

    # --- files: evaluate / predict ----------------------------------------------------

    def load_file(self, path: str, require_labels: bool) -> _Split:
        with columns_of_a_run():
            return self._encode(self._read(path, self.label_map, require_labels))

    def evaluate_file(self, model: nn.Module, path: str) -> dict[str, Any]:
        """Full metrics on a labelled file (labels unseen in training are an error)."""
        return self.evaluate_detailed(model, self.load_file(path, require_labels=True))

    def _sequence_ids(self, path: str, split: _Split) -> list[str] | None:
        """Long layout (``id_col``): the id of each sequence of ``split`` (read from ``path``),
        else None. A sequence's line is that of one of its rows, whose id cell names it."""
        c = self.config
        if self.kind != "numeric" or not c.id_col or path.lower().endswith(".ts") or c.format == "ts":
            return None
        table = read_table(path, c.format, c.encoding)
        with columns_of_a_run():
            ii = table.col(c.id_col, "--id-col")
        ids = {ln: label_key(row[ii]) for ln, row in zip(table.lines, table.cells)}
        return [ids[ln] for ln in split.lines]

    def predict_file(self, model: nn.Module, path: str, out: str) -> int:
        """Write ``out`` (CSV) with the columns of :meth:`predict_rows`, probabilities to six
        decimals. Returns the number of rows written."""
        rows = self.predict_rows(model, path)
        write_predictions(rows, out, list(self.label_map.names), self.config.id_col)
        return len(rows)

    def predict_rows(self, model: nn.Module, path: str) -> list[dict[str, Any]]:
        """One dict per sequence of ``path``: the sequence ``id`` (long layout: its ``id_col`` value;
        a fixed key, which no column name can clash with), the input ``line``, the ``label`` when the file has one, the predicted label (``pred``) and
        one probability per class (``p_<label>``), in that order. A label unseen in training is
        given as it is and the row predicted like any other (it cannot be scored; a DataWarning
        counts such rows)."""
        labels = _OpenLabelMap(list(self.label_map.names))
        with columns_of_a_run():
            split = self._encode(self._read(path, labels, require_labels=False))
        if labels.unseen:
            unseen = int(np.sum(split.labels >= len(self.label_map)))
            what = "rows" if self.kind == "text" else "sequences"
            warnings.warn(f"{path}: {unseen} of {len(split.inputs)} {what} have a label the model never saw "
                          f"({', '.join(repr(k) for k in list(labels.unseen)[:5])}"
                          f"{', ...' if len(labels.unseen) > 5 else ''}): predicted, but they cannot be scored",
                          DataWarning, stacklevel=2)
        ids = self._sequence_ids(path, split)
        was = model.training
        model.eval()
        try:
            probs, _ = self.predict_split(model, dataclasses.replace(split, labels=None))
        finally:
            model.train(was)

        names = self.label_map.names
        given = names + list(labels.unseen)
        rows = []
        for i, p in enumerate(probs):
            row: dict[str, Any] = {} if ids is None else {"id": ids[i]}
            row["line"] = split.lines[i]
            if split.labels is not None:
                row["label"] = given[int(split.labels[i])]
            row["pred"] = names[int(p.argmax())]
            row.update((f"p_{n}", float(v)) for n, v in zip(names, p))
            rows.append(row)
        return rows

    # --- report ------------------------------------------------------------------------

    def report_sections(self, model: nn.Module, run_dir: str) -> list[ReportSection]:
        m = self.evaluate_detailed(model, self.split("valid"))
        sections = classification_report_sections(m, self.label_map.names, "validation split")
        if self.config.test or self.config.dataset:
            t = self.evaluate_detailed(model, self.split("test"))
            sections += [ReportSection(f"Test split: {s.title}", s.html)
                         for s in classification_report_sections(t, self.label_map.names, "test split")]
        if self.kind == "frames":
            sections += frame_sections(self, model)
        return sections


def classification_report_sections(m: dict[str, Any], names: list[str], what: str) -> list[ReportSection]:
    rows = [["model", m["acc"], m["macro_f1"]], ["majority class", m["majority_acc"], m["majority_macro_f1"]]]
    html = f"<p>{m['n']} examples of the {what}.</p>" + table(["", "accuracy", "macro-F1"], rows)
    html += table(["class", "precision", "recall", "support"],
                  [[names[i], m["precision"][i], m["recall"][i], int(m["support"][i])]
                   for i in _classes_shown(m, names)])
    sections = [ReportSection("Classification: scores beside the majority-class baseline", html)]
    plt = pyplot()

    k = len(names)
    if "confusion" not in m:
        rows = [[t, p, c] for t, p, c in top_confusions(m, names, 20)]
        sections.append(ReportSection("Most frequent confusions",
                                      f"<p>{k} classes: the matrix is summarised by its largest off-diagonal cells "
                                      "(rnnlab evaluate RUN --confusion FILE writes all of it).</p>"
                                      + table(["true", "predicted", "count"], rows)))
        return sections
    cm = np.asarray(m["confusion"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * k, 1.0 + 0.45 * k))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), [n[:12] for n in names], rotation=45, ha="right")
    ax.set_yticks(range(k), [n[:12] for n in names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax.set_title("confusion matrix")
    sections.append(ReportSection("Confusion matrix", figure_to_img(fig, "confusion matrix")))
    return sections


def build_classify_task(config: dict[str, Any], metadata: dict[str, Any] | None = None) -> ClassifyTask:
    return ClassifyTask(ClassifyConfig.from_dict(config), metadata)


register_task("classify", build_classify_task)


def _frames_index(path: str, task_config: dict[str, Any]) -> tuple[str, str] | None:
    """(path column, format) to read the data file ``path`` as an index of clips with; None where
    the run's input is not frames or ``path`` is no file."""
    try:
        c = ClassifyConfig.from_dict(task_config)
    except RnnlabError:
        return None
    if c.resolved_input() != "frames" or not os.path.isfile(path):
        return None
    return c.path_col, "auto" if c.format == "ts" else c.format


def frames_data_checksum(path: str, task_config: dict[str, Any]) -> str | None:
    """The checksum a run records for a data path: for frames input, of the index and of every
    clip it names (:func:`rnnlab.data.frames.index_checksum`); else None (the file's own)."""
    index = _frames_index(path, task_config)
    return None if index is None else index_checksum(path, *index)


register_data_checksum("classify", frames_data_checksum)


def frames_data_members(path: str, task_config: dict[str, Any]) -> list[str]:
    """The clips a frames index names (:func:`rnnlab.data.frames.index_clips`); none for other input."""
    index = _frames_index(path, task_config)
    return [] if index is None else index_clips(path, *index)


register_data_members("classify", frames_data_members)


# ----------------------------------------------------------------------------- run folders


def load_classify_run(run_dir: str, checkpoint: str = "best") -> tuple[ClassifyTask, nn.Module]:
    cfg = read_run_config(run_dir)
    if cfg["task"] != "classify":
        raise CheckpointError(expected(f"run folder {run_dir}", "a classifier (task 'classify')",
                                       f"a run of task {cfg['task']!r}"))
    task, model, _ = load_run(run_dir, checkpoint)
    return task, model


def evaluate_run(run_dir: str, path: str | None = None, split: str = "valid", checkpoint: str = "best", *,
                 missing: str | None = None, encoding: str | None = None) -> dict[str, Any]:
    """``rnnlab evaluate RUN [--csv FILE [--encoding ENC] [--missing POLICY]]`` for a classifier: full
    metrics beside the majority class, on a labelled file (read with ``encoding`` and ``missing``,
    default the run's) or on the run's own ``split``; ``names`` holds the class names."""
    task, model = load_classify_run(run_dir, checkpoint)
    if path:
        task = with_file_options(task, missing, encoding)
    m = task.evaluate_file(model, path) if path else task.evaluate_detailed(model, task.split(split))
    m["names"] = list(task.label_map.names)
    return m


class CountRow(list):
    """A row of the confusion matrix: a list of ints (``--json`` writes ``[10, 0]``) that prints as
    the counts separated by spaces (``10 0``, as ``rnnlab evaluate`` shows it)."""

    def __str__(self) -> str:
        return " ".join(str(v) for v in self)


def flat_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """One flat dict (as ``rnnlab evaluate`` prints): scalars, per-class precision/recall (NaN where
    undefined), and the confusion matrix as rows of counts (true class per row, :class:`CountRow`)."""
    out: dict[str, Any] = {k: float(m[k]) for k in ("loss", "acc", "macro_f1", "majority_acc", "majority_macro_f1")}
    out["n"] = int(m["n"])
    for i, name in enumerate(m["names"]):
        out[f"precision[{name}]"] = float(m["precision"][i])
        out[f"recall[{name}]"] = float(m["recall"][i])
    if "confusion" in m and len(m["names"]) <= PRINTED_CONFUSION:
        for i, name in enumerate(m["names"]):
            out[f"confusion[{name}]"] = CountRow(int(v) for v in m["confusion"][i])
    else:
        for r, (t, p, c) in enumerate(top_confusions(m, m["names"]), start=1):
            out[f"top_confusion[{r}]"] = f"{t} -> {p}: {c}"
    return out


def with_file_options(task: Any, missing: str | None = None, encoding: str | None = None) -> Any:
    """The task reading new files with another ``--missing`` policy or ``--encoding`` than training's."""
    changes = {k: v for k, v in (("missing", missing), ("encoding", encoding)) if v is not None}
    if changes:
        task.config = dataclasses.replace(task.config, **changes)
        task._splits = {}
    return task


def write_predictions(rows: list[dict[str, Any]], out: str, names: list[str], id_col: str = "") -> None:
    """The rows of :meth:`ClassifyTask.predict_rows` as CSV at ``out`` (``-``: standard output),
    the ``id`` column under its own name ``id_col``, probabilities to six decimals."""
    keys = list(rows[0]) if rows else ["line", "pred"] + [f"p_{n}" for n in names]
    probs = {f"p_{n}" for n in names}
    header = [id_col if k == "id" else k for k in keys]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow([f"{v:.6f}" if k in probs else v for k, v in row.items()])


def predict_run(run_dir: str, path: str, out: str | None, checkpoint: str = "best", force: bool = False,
                missing: str | None = None, encoding: str | None = None) -> list[dict[str, Any]]:
    """``rnnlab predict RUN --csv FILE --out preds.csv`` (``-``: standard output; None: no file):
    the rows of :meth:`ClassifyTask.predict_rows`, labels and class probabilities. The output path
    is checked before anything is read (see :func:`rnnlab.outputs.check_output`)."""
    if out is not None:
        check_run_output(out, run_dir, [path], force, stdout=True)
    task, model = load_classify_run(run_dir, checkpoint)
    task = with_file_options(task, missing, encoding)
    rows = task.predict_rows(model, path)
    if out is not None:
        write_predictions(rows, out, list(task.label_map.names), task.config.id_col)
    return rows


def format_metrics(m: dict[str, Any], names: list[str]) -> str:
    """Metrics as the plain text the CLI prints."""
    lines = [f"{m['n']} examples: accuracy {m['acc']:.4f}, macro-F1 {m['macro_f1']:.4f} "
             f"(majority class: accuracy {m['majority_acc']:.4f}, macro-F1 {m['majority_macro_f1']:.4f})",
             f"{'class':<16}{'precision':>10}{'recall':>10}{'support':>9}"]
    shown = _classes_shown(m, names)
    for i in shown:
        n = names[i]
        lines.append(f"{n[:16]:<16}{score_cell(m['precision'][i]):>10}{score_cell(m['recall'][i]):>10}{int(m['support'][i]):>9}")
    if len(shown) < len(names):
        lines.append(f"({len(names) - len(shown)} smaller classes not shown; --json lists every class)")
    if "confusion" in m and len(names) <= PRINTED_CONFUSION:
        lines.append("confusion matrix (rows: true, columns: predicted)")
        lines.extend("  " + " ".join(f"{v:>6}" for v in row) for row in m["confusion"])
    else:
        lines.append(f"most frequent confusions ({len(names)} classes; rnnlab evaluate RUN --confusion FILE writes all)")
        lines.extend(f"  {t[:24]} -> {p[:24]}: {c}" for t, p, c in top_confusions(m, names))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- baselines

BASELINE_ROWS = ("model", "majority class", "1-NN Euclidean", "1-NN DTW")


def _dtw_backend() -> tuple[str, Any] | None:
    """A pairwise DTW over lists of (T, D) series (full window, squared point costs): aeon's when
    aeon is installed, else rnnlab's numba kernel (:mod:`rnnlab.tasks.dtw`); None without either."""
    if importlib.util.find_spec("aeon") is not None:
        try:
            from aeon.distances import dtw_pairwise_distance   # optional: imported only when present
        except ImportError:        # an aeon whose numba does not import: rnnlab's kernel instead
            pass
        else:
            return "aeon", lambda a, b: dtw_pairwise_distance([np.ascontiguousarray(s.T) for s in a],
                                                              [np.ascontiguousarray(s.T) for s in b])
    from rnnlab.tasks import dtw   # loads numba: only once a DTW baseline is asked for

    return ("rnnlab", dtw.dtw_pairwise) if dtw.HAVE_NUMBA else None


def _padded(series: list[np.ndarray], length: int) -> np.ndarray:
    """(N, length * D): each (T, D) series zero-padded (or cut) to ``length`` steps, flattened."""
    out = np.zeros((len(series), length, series[0].shape[1]))
    for i, s in enumerate(series):
        out[i, : min(len(s), length)] = s[:length]
    return out.reshape(len(series), -1)


def nearest_neighbour(train: list[np.ndarray], train_y: np.ndarray, test: list[np.ndarray],
                      metric: str, dtw: Any = None) -> np.ndarray:
    """1-NN labels of ``test`` among ``train`` (series (T, D) as read, before any scaling):
    ``euclidean`` on series zero-padded to the longest of both sets (so unequal lengths compare),
    ``dtw`` (full window, the ``dtw`` pairwise function) on the series as they are. Ties go to the
    first training series."""
    if metric == "euclidean":
        length = max(len(s) for s in list(train) + list(test))
        a, b = _padded(list(test), length), _padded(list(train), length)
        d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    else:
        d = np.asarray(dtw([np.asarray(s, dtype=np.float64) for s in test],
                           [np.asarray(s, dtype=np.float64) for s in train]))
    return np.asarray(train_y)[np.argmin(d, axis=1)]


def baseline_table(task: ClassifyTask, model: nn.Module, split: str | None = None,
                   baselines: bool = True) -> dict[str, Any]:
    """The model beside the majority class, 1-NN Euclidean and (with numba or aeon installed)
    1-NN DTW, all on one evaluation split: ``test`` when the run has one, else ``valid`` (k-fold:
    out of fold, each baseline fitted on the other folds); ``baselines=False`` keeps the model
    and majority rows only. Returns ``{"split", "n", "rows":
    [{"name", "acc", "macro_f1"}...], "dtw": backend or None, "dtw_skipped": why or ""}``; text
    and frames have no 1-NN rows."""
    c = task.config
    split = split or ("test" if c.test or c.dataset else "valid")
    ev = task.split(split)
    m = task.evaluate_detailed(model, ev)
    n_cls = len(task.label_map)
    rows = [{"name": "model", "acc": m["acc"], "macro_f1": m["macro_f1"]},
            {"name": "majority class", "acc": m["majority_acc"], "macro_f1": m["majority_macro_f1"]}]
    backend, skipped = None, ""
    if task.kind == "numeric" and baselines:
        tr = task.split("train")
        if split == "valid" and ev.folds is not None:   # k-fold: out of fold, as the model is scored
            pairs = [(np.flatnonzero(ev.folds != f), np.flatnonzero(ev.folds == f)) for f in np.unique(ev.folds)]
            train_raw, train_y, eval_raw = ev.raw, ev.labels, ev.raw
        elif split == "valid" and task.plan["mode"] == "none":
            pairs = []          # no held-out series: a 1-NN would find each series itself
        else:
            pairs = [(np.arange(len(tr.raw)), np.arange(len(ev.raw)))]
            train_raw, train_y, eval_raw = tr.raw, tr.labels, ev.raw
        backend = _dtw_backend() if pairs else None
        cells = sum(sum(len(train_raw[i]) for i in fit) * sum(len(eval_raw[i]) for i in ev_idx) for fit, ev_idx in pairs)
        if backend is not None and cells > DTW_MAX_CELLS:
            skipped = (f"{cells:.1e} cost-matrix cells, over the {DTW_MAX_CELLS:.0e} that take minutes "
                       f"(rnnlab.tasks.classify.DTW_MAX_CELLS)")
            backend = None
        for name, metric in (("1-NN Euclidean", "euclidean"), ("1-NN DTW", "dtw")):
            if not pairs or (metric == "dtw" and backend is None):
                continue
            pred = np.zeros(len(ev.labels), dtype=np.int64)
            for fit_idx, eval_idx in pairs:
                pred[eval_idx] = nearest_neighbour([train_raw[i] for i in fit_idx], train_y[fit_idx],
                                                   [eval_raw[i] for i in eval_idx], metric,
                                                   backend[1] if backend else None)
            b = classification_metrics(ev.labels, pred, n_cls)
            rows.append({"name": name, "acc": b["acc"], "macro_f1": b["macro_f1"]})
    return {"split": split, "n": int(m["n"]), "rows": rows, "dtw": backend[0] if backend else None,
            "dtw_skipped": skipped, "validation": dict(task.plan)}


def format_baselines(table: dict[str, Any]) -> str:
    lines = [f"{table['n']} examples of the {table['split']} split"
             + (" (out of fold)" if table["split"] == "valid" and table["validation"].get("mode") == "kfold" else ""),
             f"{'':<16}{'accuracy':>10}{'macro-F1':>10}"]
    lines += [f"{r['name']:<16}{r['acc']:>10.4f}{r['macro_f1']:>10.4f}" for r in table["rows"]]
    if table.get("dtw_skipped"):
        lines.append(f"(1-NN DTW left out: {table['dtw_skipped']})")
    elif table["dtw"] is None and any(r["name"] == "1-NN Euclidean" for r in table["rows"]):
        lines.append("(1-NN DTW needs numba or aeon: pip install 'rnnlab[ucr]')")
    return "\n".join(lines)
