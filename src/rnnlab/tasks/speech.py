"""Speech: spoken words to labels, and connected digits to text with CTC.

The model::

    waveform (B, N) --AudioFeatures (log-mel / MFCC + deltas, normalised)--> (B, T, D)
    --SpecAugment masks (training only)--> --rnnlab RNN/LSTM/GRU (layers, bidirectional)-->
    words: mean over the valid frames --Linear--> logits (B, C)
    ctc:   per frame --Linear--> log-probabilities (T, B, 1 + C), blank = 0 (torch.nn.CTCLoss)

Two modes over the same recordings (FSDD, or a folder with labels from file names or a CSV):

- ``words``: one label per recording (isolated digits).
- ``ctc``: strings of 1-7 words synthesised from the recordings
  (:class:`rnnlab.data.digit_strings.ConnectedDigits`): training strings from the training
  recordings only, validation strings from a part carved out of them, test strings from the
  split's test recordings. Metrics: digit error rate (edit distance) and string accuracy.

The feature settings live in the run's config; the running-normalisation statistics come from
the training recordings and live in the run's metadata (and the model's buffers), so
``rnnlab transcribe --stream`` computes exactly the offline features chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.data.audio import audio_info, find_audio_files, iter_audio, load_audio
from rnnlab.data.audio_features import AudioFeatures, FeatureConfig, FeatureStream, feature_stats
from rnnlab.data.digit_strings import ConnectedDigits, StringConfig
from rnnlab.data.recordings import (OFFICIAL_TEST_TAKES, Recording, fsdd_recordings, label_csv_columns, make_split,
                                     read_label_csv, scan_recordings)
from rnnlab.data.digest import listing_digest, sha256_of
from rnnlab.errors import CheckpointError, ConfigError, DataError, expected, field_name, is_int_at_least
from rnnlab.nn.stream import Stream
from rnnlab.report.html import figure_to_img, pyplot, table
from rnnlab.tasks.cell_options import check_cell_options
from rnnlab.tasks.classify import classification_metrics
from rnnlab.tasks.ctc import Hypothesis, align, beam_search, digit_error_rate, greedy_decode, string_accuracy
from rnnlab.tasks.recurrent import CELLS, recurrent_layer
from rnnlab.train.rundir import load_run, read_run_config
from rnnlab.train.task import ReportSection, StepOutput, register_data_checksum, register_data_members, register_task

MODES = ("words", "ctc")
DATASETS = ("", "fsdd")
BLANK = 0


# The settings whose default depends on the mode (a config field left at None takes these).
# Connected digits: both directions (offline, the most accurate), three 10 ms frames a step (a
# digit lasts 25-60 frames, so CTC keeps room for its blanks, and the stack runs three times
# fewer steps) and batches of 16 (twice the updates for the same audio).
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "words": {"bidirectional": False, "frame_stack": 1, "batch_size": 32},
    "ctc": {"bidirectional": True, "frame_stack": 3, "batch_size": 16},
}

# The settings whose default depends on the direction too: a unidirectional (streaming) CTC
# model left to itself sits on the all-blank plateau. A high initial bias on the blank output
# takes it off (blank wins every frame from the first update, so the gradient goes into telling
# the digits apart); the first ``pretrain_words`` updates, which train the stack and the head's
# digit rows as an isolated-word classifier (mean over the frames, cross-entropy), get it there
# an epoch sooner (docs/speech.md has the comparison).
DIRECTION_DEFAULTS: dict[tuple[str, bool], dict[str, Any]] = {
    ("ctc", False): {"pretrain_words": 150, "blank_bias": 4.0},
}
NO_DIRECTION_DEFAULTS: dict[str, Any] = {"pretrain_words": 0, "blank_bias": 0.0}


def direction_defaults(mode: str, bidirectional: bool) -> dict[str, Any]:
    """The defaults of ``pretrain_words`` and ``blank_bias`` for a model of this mode and direction."""
    return DIRECTION_DEFAULTS.get((mode, bidirectional), NO_DIRECTION_DEFAULTS)


# The flags of `rnnlab train speech` that are spelled otherwise than their config field ("": none),
# for error messages (rnnlab.errors.field_name).
SPEECH_FLAGS = {"features": "", "cell_options": "--cell-option", "seed": "--data-seed"}

@dataclass
class SpeechConfig:
    mode: str = "words"                # words (one label per recording) | ctc (connected strings)
    dataset: str = "fsdd"              # fsdd | "" (then audio_dir)
    data_dir: str = ""                 # fsdd: a local copy ("" = the user cache, fetched if missing)
    audio_dir: str = ""                # own recordings: {label}_{speaker}_{take}.wav, or labels from a CSV
    labels: str = ""                   # CSV with columns file,label[,speaker,take] for audio_dir (files relative to audio_dir)
    split: str = "official"            # official | speaker:NAME
    features: dict[str, Any] = field(default_factory=lambda: {"normalize": "running"})  # FeatureConfig fields
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 2
    bidirectional: bool | None = None  # None: by mode (MODE_DEFAULTS); unidirectional models can stream
    frame_stack: int | None = None     # feature frames joined into one recurrent step; None: by mode
    dropout: float = 0.1
    cell_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None      # None: by mode
    valid_frac: float = 0.1            # of the training recordings, held out for validation
    seed: int = 0
    # augmentation (training only)
    time_masks: int = 2                # SpecAugment: masks over time ...
    time_mask_frames: int = 10         # ... each up to this many frames
    freq_masks: int = 2                # masks over feature bands ...
    freq_mask_bands: int = 4           # ... each up to this many bands (of the static features and their deltas)
    gain_db: float = 6.0               # random gain in [-gain_db, +gain_db]
    noise_snr_db: float = 0.0          # additive white noise at an SNR in [noise_snr_db, noise_snr_db + 20]; 0 = off
    speed: float = 0.1                 # speed perturbation by a factor in [1 - speed, 1 + speed]; 0 = off
    # ctc
    train_strings: int = 2000          # strings per epoch
    valid_strings: int = 200
    test_strings: int = 300
    max_digits: int = 7
    short_epochs: int = 2              # the first epochs' strings are shorter: epoch e has up to e + 1 words
    pretrain_words: int | None = None  # first updates on isolated words (mean over frames); None: by mode and direction
    blank_bias: float | None = None    # the blank output's initial bias; None: by mode and direction
    string_noise: str = ""             # "" | white | pink: background noise in the strings
    beam: int = 8                      # prefix beam width of the beam_der / beam_string_acc scores (1 = greedy)

    def __post_init__(self) -> None:
        def check(ok: bool, what: str, want: str, got: object) -> None:
            if not ok:
                raise ConfigError(expected(field_name("speech", what, self, SPEECH_FLAGS), want, repr(got)))

        check(is_int_at_least(self.seed, 0), "seed", "an integer >= 0", self.seed)

        check(self.mode in MODES, "mode", f"one of {MODES}", self.mode)
        for name, value in MODE_DEFAULTS[self.mode].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        check(isinstance(self.bidirectional, bool), "bidirectional", "true or false", self.bidirectional)
        for name, value in direction_defaults(self.mode, self.bidirectional).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        check(self.mode == "ctc" or not (self.pretrain_words or self.blank_bias), "pretrain_words and blank_bias",
              "0 in words mode (they start a ctc model)", {"pretrain_words": self.pretrain_words,
                                                          "blank_bias": self.blank_bias})
        check(isinstance(self.blank_bias, (int, float)) and not isinstance(self.blank_bias, bool)
              and np.isfinite(self.blank_bias), "blank_bias", "a finite number", self.blank_bias)
        check(self.dataset in DATASETS, "dataset", "'fsdd', or '' (none) with an audio folder", self.dataset)
        check(bool(self.dataset) != bool(self.audio_dir), "data", "exactly one of dataset and audio_dir",
              {"dataset": self.dataset, "audio_dir": self.audio_dir})
        check(not self.labels or bool(self.audio_dir), "labels", "a CSV only with audio_dir", self.labels)
        check(self.cell in CELLS, "cell", f"one of {CELLS}", self.cell)
        for name in ("hidden_size", "num_layers", "batch_size", "frame_stack", "train_strings", "valid_strings", "test_strings",
                     "max_digits", "beam"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an integer >= 1", v)
        for name in ("time_masks", "time_mask_frames", "freq_masks", "freq_mask_bands", "short_epochs",
                     "pretrain_words"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 0, name, "an integer >= 0", v)
        check(0 <= self.dropout < 1, "dropout", "a number in [0, 1)", self.dropout)
        check(0 < self.valid_frac < 1, "valid_frac", "a number in (0, 1)", self.valid_frac)
        check(self.gain_db >= 0, "gain_db", "a number >= 0", self.gain_db)
        check(0 <= self.speed < 0.5, "speed", "a number in [0, 0.5)", self.speed)
        check(self.string_noise in ("", "white", "pink"), "string_noise", "'', 'white' or 'pink'", self.string_noise)
        self.feature_config()   # checks the feature fields
        self.cell_options = check_cell_options(self.cell_options, self.cell)

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.features)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpeechConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(expected("speech config keys", f"a subset of {sorted(known)}", unknown))
        return cls(**data)


# ----------------------------------------------------------------------------- model


def stack_frames(feats: torch.Tensor, frames: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Join ``k`` consecutive frames of ``feats (B, T, D)`` into one ``(B, ceil(T / k), k * D)``
    (the last step zero-padded); frame counts become ``ceil(frames / k)``."""
    if k == 1:
        return feats, frames
    B, T, D = feats.shape
    steps = -(-T // k)
    x = nn.functional.pad(feats, (0, 0, 0, steps * k - T)).reshape(B, steps, k * D)
    return x, (frames + k - 1) // k


class SpeechModel(nn.Module):
    """Features, a recurrent stack and a linear head; ``forward(wave, lengths)`` gives
    words: logits (B, C); ctc: log-probabilities (T', B, C) and the step counts, where a step
    is ``frame_stack`` feature frames."""

    def __init__(self, features: FeatureConfig, *, mode: str, cell: str, hidden_size: int, num_layers: int,
                 bidirectional: bool, dropout: float, n_out: int, cell_options: dict[str, Any] | None = None,
                 frame_stack: int = 1):
        super().__init__()
        self.mode = mode
        self.frame_stack = frame_stack
        self.features = AudioFeatures(features)
        self.rnn = recurrent_layer(cell, features.dim * frame_stack, hidden_size, num_layers, cell_options,
                                   dropout=dropout, bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear((2 if bidirectional else 1) * hidden_size, n_out)

    def encode(self, feats: torch.Tensor, frames: torch.Tensor, pool: bool | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, T, D) with frame counts (B,) -> head outputs and step counts, as ``forward``.
        ``pool`` (default: words mode) gives the head's output on the mean over the valid steps;
        a ctc model pooled gives the logits of its word rows (B, C - 1), without the blank."""
        pool = self.mode == "words" if pool is None else pool
        feats, frames = stack_frames(feats, frames, self.frame_stack)
        x = feats.transpose(0, 1).contiguous()                                     # (T', B, k*D)
        packed = pack_padded_sequence(x, frames.cpu(), enforce_sorted=False)
        out_p, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out_p, total_length=x.shape[0])               # (T', B, dirs*H)
        if pool:
            mask = (torch.arange(x.shape[0])[:, None] < frames.cpu()[None, :]).to(out)[..., None]
            pooled = (out * mask).sum(0) / frames.to(out)[:, None]
            logits = self.head(self.drop(pooled))
            return (logits if self.mode == "words" else logits[:, BLANK + 1:]), frames
        return torch.log_softmax(self.head(self.drop(out)), dim=-1), frames

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats, frames = self.features(wave, lengths)
        return self.encode(feats.to(self.head.weight.dtype), frames)


# ----------------------------------------------------------------------------- augmentation


def perturb_wave(x: np.ndarray, rng: np.random.Generator, c: SpeechConfig) -> np.ndarray:
    """Speed (resampling by linear interpolation: tempo and pitch together), gain and white noise."""
    if c.speed > 0:
        factor = rng.uniform(1 - c.speed, 1 + c.speed)
        n = max(2, int(round(len(x) / factor)))
        x = np.interp(np.arange(n) * factor, np.arange(len(x)), x).astype(np.float32)
    if c.gain_db > 0:
        x = x * np.float32(10 ** (rng.uniform(-c.gain_db, c.gain_db) / 20))
    if c.noise_snr_db > 0:
        snr = rng.uniform(c.noise_snr_db, c.noise_snr_db + 20)
        power = float(np.mean(x.astype(np.float64) ** 2)) + 1e-12
        x = x + rng.standard_normal(len(x)).astype(np.float32) * np.float32(np.sqrt(power / 10 ** (snr / 10)))
    return x.astype(np.float32)


def spec_augment(feats: torch.Tensor, frames: torch.Tensor, rng: np.random.Generator, c: SpeechConfig,
                 static_dim: int) -> torch.Tensor:
    """SpecAugment's time and frequency masks (set to 0, the normalised mean), per utterance.
    A frequency mask covers the same bands of the static features and of their deltas."""
    feats = feats.clone()
    groups = feats.shape[2] // static_dim
    for b, n in enumerate(frames.tolist()):
        for _ in range(c.freq_masks):
            w = int(rng.integers(0, c.freq_mask_bands + 1))
            if w and w < static_dim:
                f0 = int(rng.integers(0, static_dim - w + 1))
                for g in range(groups):
                    feats[b, :, g * static_dim + f0:g * static_dim + f0 + w] = 0
        for _ in range(c.time_masks):
            w = int(rng.integers(0, min(c.time_mask_frames, max(1, n // 5)) + 1))
            if w:
                t0 = int(rng.integers(0, n - w + 1))
                feats[b, t0:t0 + w] = 0
    return feats


# ----------------------------------------------------------------------------- the task


def _pad(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, :len(w)] = torch.from_numpy(w)
    return out, lengths


@dataclass
class _Part:
    waves: list[np.ndarray]
    targets: list[tuple[int, ...]]          # words: (label,); ctc: the label sequence (1-based)
    speakers: list[str | None]
    sources: list[Any]                      # recording path(s) behind each item


# The training settings each mode trains best with (``rnnlab train speech`` and ``fit`` start from them).
TRAIN_DEFAULTS = {
    "words": {"max_steps": 0, "max_epochs": 30, "optimizer": "adam", "lr": 2e-3, "clip": 5.0},
    "ctc": {"max_steps": 0, "max_epochs": 12, "optimizer": "adam", "lr": 2e-3, "clip": 5.0, "schedule": "plateau"},
}


class SpeechTask:
    name = "speech"
    # recorded with checksums in the run folder (the FSDD copy of --data-dir is a named data set: not recorded)
    data_keys = ("audio_dir", "labels")
    train_defaults = TRAIN_DEFAULTS["words"]
    items_name = "utterances"
    # TrainConfig.compile: the training step calls encode (features are computed without grad, in
    # float64, outside); graph breaks at pack_padded_sequence (torch marks it untraceable).
    compile_methods = {"encode": False}

    def __init__(self, config: SpeechConfig, metadata: dict[str, Any] | None = None) -> None:
        self.config = config
        self.train_defaults = TRAIN_DEFAULTS[config.mode]
        self.metric_name = "acc" if config.mode == "words" else "der"
        self.fcfg = config.feature_config()
        self._parts: dict[str, _Part] = {}
        self._split = None
        if metadata is not None:
            self._meta = metadata
            self.labels = list(metadata["labels"])
            return
        split = self._recording_split()
        self.labels = sorted({r.label for r in split.train})
        unseen = sorted({r.label for r in split.test} - set(self.labels))
        if unseen:
            raise DataError(expected(f"test labels of split {split.name!r}", "labels seen in training", unseen))
        self._meta = {"labels": self.labels, "split": split.name,
                      "n_train": len(self._train_recs), "n_valid": len(self._valid_recs), "n_test": len(split.test)}
        mean, var = self._stats()
        self._meta["feature_mean"], self._meta["feature_var"] = mean.tolist(), var.tolist()

    # --- data --------------------------------------------------------------------------

    def _recordings(self) -> list[Recording]:
        c = self.config
        if c.dataset == "fsdd":
            return fsdd_recordings(c.data_dir or None)
        if c.labels:
            recs = read_label_csv(c.labels, c.audio_dir)
            self._check_label_columns(recs)
        else:
            recs = scan_recordings(c.audio_dir)
        if not recs:
            raise DataError(expected(f"audio folder {c.audio_dir}", "audio files", "none"))
        return recs

    def _check_label_columns(self, recs: list[Recording]) -> None:
        """The column the split needs (official: take, speaker:NAME: speaker), on every row of the
        labels CSV, else one DataError naming the column, the split and what to do."""
        c = self.config
        split = c.split
        if split == "official":
            column, need = "take", f"for --split official (it tests on takes {OFFICIAL_TEST_TAKES[0]}-{OFFICIAL_TEST_TAKES[-1]})"
            missing = [i for i, r in enumerate(recs) if r.take is None]
        elif split.startswith("speaker:"):
            column, need = "speaker", f"for --split {split}"
            missing = [i for i, r in enumerate(recs) if r.speaker is None]
        else:
            return   # make_split names the unknown split
        if not missing:
            return
        what = f"--labels {c.labels}"
        if len(missing) < len(recs):
            more = f" (and {len(missing) - 1} more rows)" if len(missing) > 1 else ""
            raise DataError(expected(what, f"a {column} on every row {need}", f"none on line {missing[0] + 2}{more}"))
        speakers = sorted({r.speaker for r in recs if r.speaker is not None})
        if column == "take":
            if speakers and all(r.speaker is not None for r in recs):
                fix = "add a take column, or pass --split speaker:NAME (NAME one of " + ", ".join(speakers) + ")"
            else:
                fix = "add a take column, or a speaker column and pass --split speaker:NAME"
        else:
            fix = "add a speaker column" + (", or pass --split official (the CSV has takes)"
                                             if all(r.take is not None for r in recs) else "")
        columns = label_csv_columns(c.labels)
        if column in columns:
            raise DataError(expected(what, f"a {column} on every row {need}", f"an empty {column} column") + f"; {fix}")
        raise DataError(expected(what, f"a {column} column {need}", "columns " + ", ".join(columns)) + f"; {fix}")

    def _recording_split(self):
        if self._split is None:
            c = self.config
            split = make_split(self._recordings(), c.split)
            train = list(split.train)
            order = np.random.default_rng([c.seed, 17]).permutation(len(train))
            n_valid = max(1, int(round(c.valid_frac * len(train))))
            if n_valid >= len(train):
                raise DataError(expected("training recordings", "at least 2 (one is held out for validation)",
                                         len(train)))
            self._valid_recs = [train[i] for i in sorted(order[:n_valid])]
            self._train_recs = [train[i] for i in sorted(order[n_valid:])]
            self._split = split
        return self._split

    def _load(self, recs) -> list[np.ndarray]:
        return [load_audio(r.path, self.fcfg.sample_rate) for r in recs]

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and variance of the raw features over (up to 500) training recordings."""
        feats = AudioFeatures(FeatureConfig.from_dict({**self.fcfg.to_dict(), "normalize": "none"}))
        recs = self._train_recs[:: max(1, len(self._train_recs) // 500)]
        raws = []
        for w in self._load(recs):
            raw, _ = feats.raw(torch.from_numpy(w).double())
            raws.append(raw[0])
        return feature_stats(raws)

    def _strings(self, part: str) -> ConnectedDigits:
        c = self.config
        split = self._recording_split()
        recs = {"train": self._train_recs, "valid": self._valid_recs, "test": list(split.test)}[part]
        size = {"train": c.train_strings, "valid": c.valid_strings, "test": c.test_strings}[part]
        seed = {"train": c.seed, "valid": c.seed + 1_000_003, "test": c.seed + 2_000_003}[part]
        scfg = StringConfig(max_digits=c.max_digits, noise=c.string_noise or None)
        return ConnectedDigits(recs, size, seed, sample_rate=self.fcfg.sample_rate, config=scfg)

    def _index(self, label: str) -> int:
        return self.labels.index(label)

    def part(self, name: str) -> _Part:
        """The "train", "valid" or "test" items: recordings (words) or synthesised strings (ctc)."""
        if name not in ("train", "valid", "test"):
            raise ConfigError(expected("split", "train, valid or test", repr(name)))
        if name not in self._parts:
            split = self._recording_split()
            recs = {"train": self._train_recs, "valid": self._valid_recs, "test": list(split.test)}[name]
            if self.config.mode == "words":
                self._parts[name] = _Part(self._load(recs), [(self._index(r.label),) for r in recs],
                                          [r.speaker for r in recs], [r.path for r in recs])
            else:
                ds = self._strings(name)
                if name == "train":   # drawn per epoch in train_batches
                    self._parts[name] = _Part([], [], [], [])
                    self._train_ds = ds
                else:
                    items = [ds[i] for i in range(len(ds))]
                    self._parts[name] = _Part([s.audio for s in items],
                                              [tuple(1 + self._index(lab) for lab in s.labels) for s in items],
                                              [None] * len(items), [s.sources for s in items])
        return self._parts[name]

    # --- the Task protocol -------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def build_model(self) -> SpeechModel:
        c = self.config
        n_out = len(self.labels) + (1 if c.mode == "ctc" else 0)
        model = SpeechModel(self.fcfg, mode=c.mode, cell=c.cell, hidden_size=c.hidden_size,
                            num_layers=c.num_layers, bidirectional=c.bidirectional, dropout=c.dropout,
                            n_out=n_out, cell_options=c.cell_options, frame_stack=c.frame_stack)
        if c.blank_bias:
            with torch.no_grad():
                model.head.bias[BLANK] = c.blank_bias
        model.features.set_stats(torch.tensor(self._meta["feature_mean"], dtype=torch.float64),
                                 torch.tensor(self._meta["feature_var"], dtype=torch.float64))
        return model

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, Any]]:
        c = self.config
        part = self.part("train")
        if c.mode == "ctc" and epoch == 0 and c.pretrain_words:
            yield from self._pretrain_batches(rank, world_size)
        n = len(part.waves) if c.mode == "words" else c.train_strings
        order = np.random.default_rng([c.seed, epoch]).permutation(n)[rank::world_size]
        for start in range(0, len(order), c.batch_size):
            idx = order[start:start + c.batch_size]
            rng = np.random.default_rng([c.seed, epoch, start])
            if c.mode == "words":
                waves, targets = [part.waves[i] for i in idx], [part.targets[i] for i in idx]
            else:
                # Each epoch draws fresh strings: string i of epoch e is string e * n + i of the generator.
                strings = [self._epoch_ds(epoch)[int(i)] for i in idx]
                waves = [s.audio for s in strings]
                targets = [tuple(1 + self._index(lab) for lab in s.labels) for s in strings]
            waves = [perturb_wave(w, rng, c) for w in waves]
            yield {"waves": waves, "targets": targets, "seed": [c.seed, epoch, start, 1]}

    def _pretrain_batches(self, rank: int, world_size: int) -> Iterator[dict[str, Any]]:
        """``pretrain_words`` batches of isolated training recordings (one word each), each batch
        drawn without replacement; they open epoch 0 of a ctc run."""
        c, ds = self.config, self._train_ds    # the training strings' pool: its audio cache is shared
        recs = ds.recordings
        for i in range(c.pretrain_words):
            rng = np.random.default_rng([c.seed, 0, i, 2])
            idx = rng.choice(len(recs), min(len(recs), c.batch_size), replace=False)[rank::world_size]
            waves = [perturb_wave(ds.audio_of(recs[j].path), rng, c) for j in idx]
            yield {"waves": waves, "targets": [(1 + self._index(recs[j].label),) for j in idx],
                   "seed": [c.seed, 0, i, 3], "words": True}

    def _epoch_ds(self, epoch: int) -> ConnectedDigits:
        ds = self._train_ds
        if getattr(self, "_epoch_cache", (None,))[0] != epoch:
            # The first short_epochs draw shorter strings (epoch e: up to e + 1 words), short first
            # as Deep Speech 2's SortaGrad: one word is a label to find, not yet an alignment.
            cfg = ds.config
            if epoch < self.config.short_epochs:
                cfg = dataclasses.replace(cfg, max_digits=min(cfg.max_digits, epoch + 1))
            fresh = ConnectedDigits(ds.recordings, ds.size, ds.seed + 7919 * epoch, sample_rate=ds.sample_rate,
                                    config=cfg)
            fresh._audio = ds._audio   # the recordings' audio is read once
            self._epoch_cache = (epoch, fresh)
        return self._epoch_cache[1]

    def _forward_batch(self, model: SpeechModel, waves: list[np.ndarray], augment_seed: list[int] | None,
                       pool: bool | None = None):
        device = next(model.parameters()).device
        wave, lengths = _pad(waves)
        with torch.no_grad():
            feats, frames = model.features(wave.to(device).double(), lengths)
        feats = feats.to(model.head.weight.dtype)
        if augment_seed is not None:
            feats = spec_augment(feats, frames, np.random.default_rng(augment_seed), self.config,
                                 self.fcfg.static_dim)
        return model.encode(feats, frames, pool)

    def _loss(self, out: torch.Tensor, frames: torch.Tensor, targets: list[tuple[int, ...]], reduction: str):
        device = out.device
        if self.config.mode == "words":
            y = torch.tensor([t[0] for t in targets], device=device)
            return nn.functional.cross_entropy(out, y, reduction=reduction)
        flat = torch.tensor([v for t in targets for v in t], dtype=torch.long)
        tl = torch.tensor([len(t) for t in targets], dtype=torch.long)
        loss = nn.functional.ctc_loss(out.float(), flat, frames.cpu(), tl, blank=BLANK, reduction="none",
                                      zero_infinity=True)
        loss = loss / tl.to(loss)   # per label, as CTCLoss's "mean"
        return loss.mean() if reduction == "mean" else loss.sum()

    def training_step(self, model: nn.Module, batch: dict[str, Any], carry: Any) -> StepOutput:
        if batch.get("words"):    # a ctc run's pretraining: one word per recording, its label by the word rows
            logits, _ = self._forward_batch(model, batch["waves"], batch["seed"], pool=True)
            y = torch.tensor([t[0] - 1 for t in batch["targets"]], device=logits.device)
            return StepOutput(loss=nn.functional.cross_entropy(logits, y), n_items=len(batch["waves"]))
        out, frames = self._forward_batch(model, batch["waves"], batch["seed"])
        loss = self._loss(out, frames, batch["targets"], "mean")
        metrics = {}
        if self.config.mode == "words":
            y = torch.tensor([t[0] for t in batch["targets"]], device=out.device)
            metrics["acc"] = (out.argmax(-1) == y).float().mean().item()
        return StepOutput(loss=loss, n_items=len(batch["waves"]), metrics=metrics)

    @torch.no_grad()
    def outputs(self, model: SpeechModel, part: _Part) -> tuple[list[np.ndarray], float]:
        """Per item: words: log-probabilities (C,); ctc: frame log-probabilities (T, C). And the mean loss."""
        was = model.training
        model.eval()
        res: list[np.ndarray] = []
        loss_sum = 0.0
        try:
            bs = self.config.batch_size
            for s in range(0, len(part.waves), bs):
                out, frames = self._forward_batch(model, part.waves[s:s + bs], None)
                loss_sum += float(self._loss(out, frames, part.targets[s:s + bs], "sum"))
                if self.config.mode == "words":
                    res.extend(torch.log_softmax(out.double(), -1).cpu().numpy())
                else:
                    lp = out.double().cpu().numpy()
                    res.extend(lp[:n, b] for b, n in enumerate(frames.tolist()))
        finally:
            model.train(was)
        return res, loss_sum / max(1, len(part.waves))

    def decode(self, lp: np.ndarray, beam: int | None = None) -> Hypothesis:
        beam = self.config.beam if beam is None else beam
        return greedy_decode(lp, BLANK) if beam <= 1 else beam_search(lp, beam=beam, blank=BLANK)[0]

    def text(self, labels: tuple[int, ...]) -> str:
        words = [self.labels[i - 1] for i in labels]
        return ("" if all(len(w) == 1 for w in self.labels) else " ").join(words)

    def evaluate_detailed(self, model: SpeechModel, split: str = "valid", beam: int | None = None) -> dict[str, Any]:
        """Loss and scores on ``split`` ("train", "valid" or "test"). words: accuracy, macro-F1,
        the confusion matrix and accuracy per speaker. ctc: ``der`` and ``string_acc`` of greedy
        decoding (what training reports after each evaluation, and what streaming gives), and
        ``beam_der`` and ``beam_string_acc`` of a prefix beam search of width ``beam`` (default:
        the run's ``--beam``; 1 = greedy, then they equal ``der`` and ``string_acc``), ``hyps``
        the beam's strings, the confusion matrix and digit accuracy per speaker on them."""
        if self.config.mode == "ctc" and split == "train":
            raise ConfigError(expected("split of a connected-digit (ctc) run", "valid or test (the training "
                                       "strings are drawn afresh every epoch, so there is no fixed set to score)",
                                       "'train'"))
        if beam is not None and not is_int_at_least(beam, 1):
            raise ConfigError(expected("beam", "an integer >= 1", repr(beam)))
        part = self.part(split)
        outs, loss = self.outputs(model, part)
        m: dict[str, Any] = {"loss": loss, "n": len(outs)}
        if self.config.mode == "words":
            y = np.array([t[0] for t in part.targets])
            pred = np.array([int(o.argmax()) for o in outs])
            m.update(classification_metrics(y, pred, len(self.labels)))
            per: dict[str, list[int]] = {}
            for spk, ok in zip(part.speakers, (y == pred).tolist()):
                per.setdefault(str(spk), []).append(int(ok))
            m["per_speaker"] = {k: float(np.mean(v)) for k, v in sorted(per.items())}
        else:
            beam = self.config.beam if beam is None else beam
            refs = [self.text(t) for t in part.targets]
            greedy = [self.text(greedy_decode(o, BLANK).labels) for o in outs]
            hyps = greedy if beam <= 1 else [self.text(self.decode(o, beam).labels) for o in outs]
            sep = None if all(len(w) == 1 for w in self.labels) else " "
            split_words = (lambda s: list(s)) if sep is None else (lambda s: s.split())
            r, h, g = ([split_words(s) for s in xs] for xs in (refs, hyps, greedy))
            m.update(der=digit_error_rate(r, g), string_acc=string_accuracy(r, g),
                     beam_der=digit_error_rate(r, h), beam_string_acc=string_accuracy(r, h), beam=int(beam),
                     refs=refs, hyps=hyps)
            # Per word of the references, on the edit alignment: the confusion matrix (the last
            # row and column stand for "no word": insertions and deletions) and, through the
            # recording behind each word, the accuracy per speaker.
            names = [self.labels[i] for i in range(len(self.labels))]
            index = {w: i for i, w in enumerate(names)}
            none = len(names)
            cm = np.zeros((none + 1, none + 1), dtype=np.int64)
            speaker_of = {rec.path: rec.speaker for rec in self._recording_split().test + tuple(self._valid_recs)}
            per: dict[str, list[int]] = {}
            for ref_w, hyp_w, sources in zip(r, h, part.sources):
                k = 0
                for a, b in align(ref_w, hyp_w):
                    cm[index[a] if a is not None else none, index[b] if b is not None else none] += 1
                    if a is not None:
                        per.setdefault(str(speaker_of.get(sources[k])), []).append(int(a == b))
                        k += 1
            m["confusion"] = cm.tolist()
            m["per_speaker"] = {k: float(np.mean(v)) for k, v in sorted(per.items())}
        return m

    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        m = self.evaluate_detailed(model, split, beam=1)   # der and string_acc: greedy, on every split
        keys = ("loss", "acc", "macro_f1") if self.config.mode == "words" else ("loss", "der", "string_acc")
        return {k: float(m[k]) for k in keys}

    # --- report ------------------------------------------------------------------------

    def report_sections(self, model: nn.Module, run_dir: str) -> list[ReportSection]:
        m = self.evaluate_detailed(model, "test")
        if self.config.mode == "words":
            html = f"<p>{m['n']} test recordings of split {self._meta.get('split', self.config.split)}.</p>"
            html += table(["accuracy", "macro-F1"], [[m["acc"], m["macro_f1"]]])
            html += table(["speaker", "accuracy"], [[k, v] for k, v in m["per_speaker"].items()])
            sections = [ReportSection("Speech: test accuracy, per speaker", html)]
            sections.append(ReportSection("Confusion matrix (test)", self._confusion_img(m["confusion"])))
            return sections
        html = table(["decoder", "DER", "string accuracy"],
                     [["greedy (der, string_acc)", m["der"], m["string_acc"]],
                      [f"prefix beam {m['beam']} (beam_der, beam_string_acc)", m["beam_der"], m["beam_string_acc"]]])
        html += table(["reference", f"decoded (prefix beam {m['beam']})"],
                      [[r, h] for r, h in list(zip(m["refs"], m["hyps"]))[:10]])
        html += (f"<p>Digits decoded right (prefix beam {m['beam']}), per speaker of the recording behind "
                 "each digit:</p>")
        html += table(["speaker", "digit accuracy"], [[k, v] for k, v in m["per_speaker"].items()])
        sections = [ReportSection(f"Connected digits: {m['n']} test strings", html)]
        sections.append(ReportSection("Confusion matrix per digit (test, on the edit alignment)",
                                      self._confusion_img(m["confusion"], [*self.labels, "none"])))
        sections.append(ReportSection("Spectrograms with the CTC alignment", self._alignment_img(model)))
        return sections

    def _confusion_img(self, cm: list[list[int]], names: list[str] | None = None) -> str:
        plt = pyplot()
        cm_a = np.asarray(cm)
        names = names or self.labels
        k = len(names)
        fig, ax = plt.subplots(figsize=(1.2 + 0.5 * k, 1.0 + 0.45 * k))
        ax.imshow(cm_a, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm_a):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > cm_a.max() / 2 else "black")
        ax.set_xticks(range(k), names)
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        return figure_to_img(fig, "confusion matrix")

    def _alignment_img(self, model: SpeechModel, n: int = 3) -> str:
        """The first ``n`` test strings: log-mel/MFCC frames, where each word really is (white
        lines, from the synthesis) and the frames that emit each decoded label on its best CTC
        alignment (cyan)."""
        strings = self._strings("test")
        k = self.config.frame_stack
        was = model.training
        model.eval()
        plt = pyplot()
        n = min(n, len(strings))
        fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n), squeeze=False)
        for ax, i in zip(axes[:, 0], range(n)):
            s = strings[i]
            wave = torch.from_numpy(s.audio).double()
            with torch.no_grad():
                raw, _ = model.features.raw(wave)
                lp, _ = model(wave)
            hyp = self.decode(lp[:, 0].double().numpy())
            img = raw[0, :, :self.fcfg.static_dim].T.numpy()
            # Each band standardised over time: MFCC c0 would otherwise take the whole colour range.
            img = (img - img.mean(1, keepdims=True)) / (img.std(1, keepdims=True) + 1e-9)
            ax.imshow(img, origin="lower", aspect="auto", cmap="magma")
            for lo, hi in s.frame_boundaries(self.fcfg.hop_length):
                ax.axvline(lo - 0.5, color="white", lw=0.8)
                ax.axvline(hi - 0.5, color="white", lw=0.8, ls="--")
            for tok in hyp.tokens:
                ax.axvspan(tok.start * k - 0.5, tok.end * k - 0.5, color="cyan", alpha=0.45)
                ax.text((tok.start + tok.end) * k / 2, self.fcfg.static_dim * 0.85, self.labels[tok.label - 1],
                        color="white", ha="center", fontsize=11, weight="bold")
            ax.set_title(f"reference {s.text!r}, decoded {self.text(hyp.labels)!r}", fontsize=9)
        axes[-1, 0].set_xlabel(f"frame ({self.fcfg.hop_ms:g} ms; the model steps every {k})")
        model.train(was)
        return figure_to_img(fig, "spectrograms with CTC alignment")


def build_speech_task(config: dict[str, Any], metadata: dict[str, Any] | None = None) -> SpeechTask:
    return SpeechTask(SpeechConfig.from_dict(config), metadata)


register_task("speech", build_speech_task)


def _recorded_audio(path: str, task_config: dict[str, Any]) -> list[Path] | None:
    """The recordings a data path of a speech run stands for: the audio files in an audio folder
    (not its other files), or those a label CSV names; None for another path."""
    p = Path(path)
    try:
        if p.is_dir():
            return find_audio_files(p)
        if p.is_file() and p.suffix.lower() == ".csv":
            return [r.path for r in read_label_csv(p, task_config.get("audio_dir") or None)]
    except (DataError, OSError):
        return None
    return None


def speech_data_checksum(path: str, task_config: dict[str, Any]) -> str | None:
    """SHA-256 of what a speech run reads from a data path: an audio folder's recordings (names and
    bytes), or a label CSV's bytes and those of the recordings it names; None: the path's own."""
    audio = _recorded_audio(path, task_config)
    if audio is None:
        return None
    return listing_digest(((f.name, sha256_of(f) if f.is_file() else "missing") for f in audio),
                          head=sha256_of(path).encode() if Path(path).is_file() else b"")


def speech_data_members(path: str, task_config: dict[str, Any]) -> list[str]:
    """The recordings a label CSV names, wherever they are (outputs must not replace them)."""
    return [str(f) for f in _recorded_audio(path, task_config) or []] if Path(path).is_file() else []


register_data_checksum("speech", speech_data_checksum)
register_data_members("speech", speech_data_members)


# ----------------------------------------------------------------------------- run folders: transcribe


def load_speech_run(run_dir: str | os.PathLike, checkpoint: str = "best") -> tuple[SpeechTask, SpeechModel]:
    cfg = read_run_config(run_dir)
    if cfg["task"] != "speech":
        raise CheckpointError(expected(f"run folder {run_dir}", "a speech run (task 'speech')",
                                       f"a run of task {cfg['task']!r}"))
    task, model, _ = load_run(run_dir, checkpoint)
    return task, model


def _seconds(step: int, task: SpeechTask) -> float:
    """The audio time of a recurrent step's start (a step is ``frame_stack`` feature frames)."""
    return round(step * task.fcfg.hop_ms * task.config.frame_stack / 1000, 3)


# Longer files are transcribed window by window, so memory stays that of one window.
LONG_FILE_S = 60.0
WINDOW_S = 30.0     # each window's core; every token comes from the window whose core holds its start
MARGIN_S = 2.0      # audio either side of the core, so a word cut by a core's edge is heard whole


def _windows(path: str | os.PathLike, sample_rate: int, core: int, margin: int
             ) -> Iterator[tuple[int, np.ndarray, int, float]]:
    """``(offset, samples, core_start, core_end)`` windows over the file, read block by block:
    cores of ``core`` samples tile the file, each window adds ``margin`` samples either side."""
    buf, buf_start, core_start = np.zeros(0, dtype=np.float32), 0, 0
    for block in iter_audio(path, sample_rate):
        buf = np.concatenate([buf, block])
        while buf_start + len(buf) >= core_start + core + margin:
            lo = max(0, core_start - margin)
            yield lo, buf[lo - buf_start:core_start + core + margin - buf_start], core_start, core_start + core
            core_start += core
            drop = max(0, core_start - margin) - buf_start
            buf, buf_start = buf[drop:], buf_start + drop
    if buf_start + len(buf) > core_start:
        lo = max(0, core_start - margin)
        yield lo, buf[lo - buf_start:], core_start, float("inf")


def check_decoding_options(task: SpeechTask, beam: int | None = None, chunk_ms: float | None = None) -> None:
    """ConfigError unless ``beam`` (a prefix beam width: ctc runs only) and ``chunk_ms`` (the audio of
    a streaming chunk) can be used on ``task``'s run; None is not given. The checks of
    :func:`transcribe_file`, :func:`stream_file` and ``rnnlab transcribe``."""
    if beam is not None:
        if not is_int_at_least(beam, 1):
            raise ConfigError(expected("--beam (beam)", "an integer >= 1", repr(beam)))
        if task.config.mode != "ctc":
            raise ConfigError(expected("--beam (beam)", "a connected-digit (ctc) run (a words run classifies each "
                                       "recording: there is no beam to search)", f"beam {beam} for a words run"))
    if chunk_ms is not None and not (isinstance(chunk_ms, (int, float)) and not isinstance(chunk_ms, bool)
                                     and math.isfinite(chunk_ms) and chunk_ms > 0):
        raise ConfigError(expected("--chunk-ms (chunk_ms)", "a number of milliseconds > 0",
                                   f"{chunk_ms:g}" if isinstance(chunk_ms, float) else repr(chunk_ms)))


def _transcribe_wave(task: SpeechTask, model: SpeechModel, wave: np.ndarray, beam: int | None, offset_s: float = 0.0
                     ) -> tuple[str, float, list[dict[str, Any]]]:
    with torch.no_grad():
        out, _ = model(torch.from_numpy(wave).double())
    if task.config.mode == "words":
        lp = torch.log_softmax(out[0].double(), -1).numpy()
        k = int(lp.argmax())
        end = round(offset_s + len(wave) / task.fcfg.sample_rate, 3)
        return task.labels[k], float(lp[k]), [{"token": task.labels[k], "start_s": round(offset_s, 3), "end_s": end,
                                                "score": float(lp[k])}]
    hyp = task.decode(out[:, 0].double().numpy(), beam)
    # the last recurrent step holds frames padded past the audio (a frame's window, frame stacking):
    # a token it emits ends with the audio, not after it
    stop = offset_s + len(wave) / task.fcfg.sample_rate
    return task.text(hyp.labels), hyp.log_prob, [
        {"token": task.labels[t.label - 1], "start_s": round(min(offset_s + _seconds(t.start, task), stop), 3),
         "end_s": round(min(offset_s + _seconds(t.end, task), stop), 3), "score": t.log_prob} for t in hyp.tokens]


def transcribe_file(task: SpeechTask, model: SpeechModel, path: str | os.PathLike,
                    beam: int | None = None) -> dict[str, Any]:
    """``{"file", "text", "score", "tokens": [{"token", "start_s", "end_s", "score"}]}``: the
    scores are natural-log probabilities (words: of the label; ctc: of the whole labelling,
    and each token's summed over the frames that emit it).

    A ctc run reads a file longer than ``LONG_FILE_S`` in windows (``WINDOW_S`` cores with
    ``MARGIN_S`` either side), so memory does not grow with the file; its score is then the
    sum of the windows' scores. A words run classifies one recording and refuses long files.
    ``beam``: the prefix beam width of a ctc run (default: the run's; 1 = greedy)."""
    check_decoding_options(task, beam)
    sr = task.fcfg.sample_rate
    info = audio_info(path)
    if info.seconds > LONG_FILE_S:
        if task.config.mode == "words":
            raise DataError(expected(f"audio file {str(path)!r}", f"one word of at most {LONG_FILE_S:g} s for a "
                                     f"words run (a ctc run transcribes long files)", f"{info.seconds:.1f} s"))
        model.eval()
        texts, score, tokens = [], 0.0, []
        for offset, wave, lo, hi in _windows(path, sr, int(WINDOW_S * sr), int(MARGIN_S * sr)):
            if len(wave) < task.fcfg.win_length:
                continue
            _, s, toks = _transcribe_wave(task, model, wave, beam, offset / sr)
            keep = [t for t in toks if lo / sr <= t["start_s"] < hi / sr]
            tokens += keep
            score += s
        sep = "" if all(len(w) == 1 for w in task.labels) else " "
        return {"file": str(path), "text": sep.join(t["token"] for t in tokens), "score": score, "tokens": tokens}
    wave = load_audio(path, sr)
    if len(wave) < task.fcfg.win_length:
        raise DataError(expected(f"audio file {str(path)!r}", f"at least {task.fcfg.win_length} samples "
                                 f"({task.fcfg.win_ms:g} ms)", f"{len(wave)}"))
    model.eval()
    text, score, tokens = _transcribe_wave(task, model, wave, beam)
    return {"file": str(path), "text": text, "score": score, "tokens": tokens}


def _chunks(path: str | os.PathLike, sample_rate: int, step: int) -> Iterator[np.ndarray]:
    """The file in consecutive pieces of ``step`` samples (the last may be shorter), read block by block."""
    buf = np.zeros(0, dtype=np.float32)
    for block in iter_audio(path, sample_rate):
        buf = np.concatenate([buf, block])
        n = len(buf) // step * step
        for s in range(0, n, step):
            yield buf[s:s + step]
        buf = buf[n:]
    if len(buf):
        yield buf


def stream_file(task: SpeechTask, model: SpeechModel, path: str | os.PathLike, chunk_ms: float = 100.0,
                on_partial=None) -> dict[str, Any]:
    """Transcribe ``path`` as a live signal: ``chunk_ms`` of samples at a time through
    :class:`FeatureStream` and the recurrent stack's step path (:class:`rnnlab.nn.Stream`), greedy
    CTC on the steps so far. ``on_partial(text, seconds)`` is called when the text changes.

    Returns the final result with ``rtf`` (processing time / audio time), the step
    log-probabilities (ctc), and ``emissions`` (ctc): for each token, ``audio_s``, the end of the
    chunk whose processing emitted it, and ``compute_s``, the time that chunk took to process.
    Greedy CTC never takes a token back, so a token is final when it is emitted; on a live
    signal it appears at ``audio_s + compute_s`` (when the processing keeps up, ``rtf < 1``)."""
    check_decoding_options(task, chunk_ms=chunk_ms)
    c = task.config
    if c.bidirectional:
        raise ConfigError(expected("a model to stream", "a unidirectional one", "a bidirectional run"))
    if task.fcfg.normalize == "utterance":
        raise ConfigError(expected("feature normalisation to stream", "'running' or 'none'", "'utterance'"))
    sr, k = task.fcfg.sample_rate, c.frame_stack
    model.eval()
    rnn_stream = Stream(model.rnn)
    feat_stream = FeatureStream(model.features, dtype=model.head.weight.dtype)
    step = max(1, int(round(sr * chunk_ms / 1000)))
    rows: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []     # feature frames not yet a whole recurrent step
    pooled = None
    best: list[int] = []     # ctc: the argmax label of every step so far
    labels: list[int] = []
    emissions: list[dict[str, Any]] = []
    text = ""
    samples, elapsed = 0, 0.0
    chunks = _chunks(path, sr, step)
    with torch.no_grad():
        while True:
            chunk = next(chunks, None)
            t0 = time.perf_counter()
            if chunk is not None:
                samples += len(chunk)
                pending.extend(feat_stream.accept(chunk))
            else:
                if samples == 0:
                    raise DataError(expected(f"audio file {str(path)!r}", "at least one sample", "none"))
                pending.extend(feat_stream.finish())
                if len(pending) % k:   # the last step zero-padded, as offline
                    pending.extend([torch.zeros_like(pending[0])] * (k - len(pending) % k))
            while len(pending) >= k:
                h = rnn_stream.step(torch.cat(pending[:k]))
                del pending[:k]
                if c.mode == "words":
                    pooled = h.clone() if pooled is None else pooled + h
                    rows.append(h)
                else:
                    rows.append(torch.log_softmax(model.head(h), -1))
            new, fresh = text, []
            if rows and c.mode == "words":
                new = task.labels[int(model.head(pooled / len(rows)).argmax())]
            elif rows:
                # Greedy CTC, extended step by step: a label is emitted when the argmax moves onto it.
                for row in rows[len(best):]:
                    j = int(row.argmax())
                    if j != BLANK and (not best or best[-1] != j):
                        labels.append(j)
                        fresh.append(j)
                    best.append(j)
                new = task.text(tuple(labels))
            spent = time.perf_counter() - t0
            elapsed += spent
            if c.mode == "ctc":
                emissions += [{"token": task.labels[j - 1], "audio_s": samples / sr, "compute_s": spent}
                              for j in fresh]
            if new != text:
                text = new
                if on_partial is not None:
                    on_partial(text, samples / sr)
            if chunk is None:
                break
    seconds = samples / sr
    lp = torch.stack(rows).double().numpy() if c.mode == "ctc" else None
    return {"file": str(path), "text": text, "rtf": elapsed / max(seconds, 1e-9), "seconds": seconds,
            "backend": rnn_stream.backend, "log_probs": lp, "emissions": emissions}
