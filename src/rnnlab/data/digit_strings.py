"""Connected digits: strings of 1-7 spoken digits synthesised from isolated recordings.

Each string is built from one pool of recordings (one part of one :class:`Split`, so strings
for training never contain a test recording): a number of words drawn uniformly from
``min_digits..max_digits``, each word a uniformly drawn label and then a uniformly drawn
recording of that label, placed with a random level (``gain_db``) after a random pause
(``pause_s``; ``edge_s`` before the first and after the last word). Optional background noise
(white, pink, or crops of noise recordings) is added at a random signal-to-noise ratio
measured against the words' mean power. If the sum would exceed ``peak``, the whole string is
scaled down (``DigitString.scale``), which keeps the relative levels.

String ``i`` of a data set depends only on ``(seed, i)``: the same in any order, in any
worker, and whatever the data set's size.

Word boundaries are where each recording was placed (FSDD's recordings are trimmed to
near-minimal silence, so they are close to the spoken word).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rnnlab.data.audio import load_audio
from rnnlab.data.recordings import Recording, Split
from rnnlab.errors import ConfigError, DataError, expected

NOISE_KINDS = ("white", "pink", "files")


@dataclass(frozen=True)
class StringConfig:
    min_digits: int = 1
    max_digits: int = 7
    pause_s: tuple[float, float] = (0.02, 0.3)     # between words: from run-together to clearly apart
    edge_s: tuple[float, float] = (0.05, 0.25)     # silence before the first and after the last word
    gain_db: tuple[float, float] = (-6.0, 6.0)     # each word's level relative to its recording
    noise: str | None = None                       # None, "white", "pink" or "files" (noise_files)
    snr_db: tuple[float, float] = (10.0, 30.0)     # background noise level against the words
    peak: float = 0.95                             # largest sample after mixing

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ConfigError(expected("digits per string", "1 <= min_digits <= max_digits",
                                       f"{self.min_digits}..{self.max_digits}"))
        for name in ("pause_s", "edge_s", "gain_db", "snr_db"):
            lo, hi = getattr(self, name)
            if lo > hi or (name.endswith("_s") and lo < 0):
                raise ConfigError(expected(name, "a range (low, high) with low <= high" +
                                           (" and low >= 0" if name.endswith("_s") else ""), (lo, hi)))
        if self.noise is not None and self.noise not in NOISE_KINDS:
            raise ConfigError(expected("noise", "None or one of " + ", ".join(NOISE_KINDS), repr(self.noise)))
        if not 0 < self.peak <= 1:
            raise ConfigError(expected("peak", "0 < peak <= 1", self.peak))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DigitString:
    audio: np.ndarray                              # (N,) float32 at sample_rate
    labels: tuple[str, ...]                        # one per word, e.g. ("4", "0", "7")
    boundaries: tuple[tuple[int, int], ...]        # each word's samples [start, end)
    sources: tuple[Path, ...]                      # the recording behind each word
    gains_db: tuple[float, ...]                    # each word's level change
    snr_db: float | None                           # the noise level drawn (None: no noise)
    scale: float                                   # the whole string's peak scaling (1.0: none)
    sample_rate: int

    @property
    def text(self) -> str:
        return "".join(self.labels) if all(len(x) == 1 for x in self.labels) else " ".join(self.labels)

    def frame_boundaries(self, hop_length: int) -> list[tuple[int, int]]:
        """Word boundaries in frames of ``hop_length`` samples: ``[start // hop, ceil(end / hop))``."""
        return [(s // hop_length, -(-e // hop_length)) for s, e in self.boundaries]


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Noise with power falling as 1/f (white noise shaped in the frequency domain), unit variance."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return x / (x.std() + 1e-12)


class ConnectedDigits:
    """``size`` strings drawn from ``recordings``; ``ds[i]`` is a :class:`DigitString`.

    Build it with :meth:`from_split` so the pool is one part of a split. Recordings are read
    (at ``sample_rate``) when first used and kept.
    """

    def __init__(self, recordings: Sequence[Recording], size: int, seed: int = 0, sample_rate: int = 8000,
                 config: StringConfig | None = None, noise_files: Sequence[str | os.PathLike] = ()):
        self.config = config or StringConfig()
        if not recordings:
            raise DataError(expected("recordings for connected digits", "at least one", "none"))
        if size < 0:
            raise ConfigError(expected("number of strings", "a non-negative int", size))
        if (self.config.noise == "files") != bool(noise_files):
            raise ConfigError(expected("noise files", "given exactly when noise='files'",
                                       f"noise={self.config.noise!r} with {len(noise_files)} files"))
        self.recordings = tuple(recordings)
        self.size, self.seed, self.sample_rate = size, seed, sample_rate
        self.labels = sorted({r.label for r in self.recordings})
        self._by_label = {lab: [r for r in self.recordings if r.label == lab] for lab in self.labels}
        self.noise_files = tuple(Path(p) for p in noise_files)
        self._audio: dict[Path, np.ndarray] = {}

    @classmethod
    def from_split(cls, split: Split, part: str, size: int, seed: int = 0, **kw) -> "ConnectedDigits":
        """Strings from the ``part`` ("train" or "test") recordings of ``split`` only."""
        if part not in ("train", "test"):
            raise ConfigError(expected("split part", "'train' or 'test'", repr(part)))
        return cls(getattr(split, part), size, seed, **kw)

    def __len__(self) -> int:
        return self.size

    def audio_of(self, path: Path) -> np.ndarray:
        """The audio of one file at ``sample_rate``, read once and kept (shared by every string)."""
        if path not in self._audio:
            self._audio[path] = load_audio(path, self.sample_rate)
        return self._audio[path]

    def __getitem__(self, i: int) -> DigitString:
        if not 0 <= i < self.size:
            raise IndexError(f"string index: expected 0..{self.size - 1}, got {i}")
        cfg, sr = self.config, self.sample_rate
        rng = np.random.default_rng([self.seed, i])
        n_words = int(rng.integers(cfg.min_digits, cfg.max_digits + 1))
        labels = [self.labels[int(rng.integers(len(self.labels)))] for _ in range(n_words)]
        sources = [self._by_label[lab][int(rng.integers(len(self._by_label[lab])))] for lab in labels]
        gains = [float(rng.uniform(*cfg.gain_db)) for _ in range(n_words)]
        gaps = [rng.uniform(*cfg.edge_s)] + [rng.uniform(*cfg.pause_s) for _ in range(n_words - 1)] + \
               [rng.uniform(*cfg.edge_s)]
        gaps = [int(round(g * sr)) for g in gaps]

        words = [self.audio_of(r.path) * np.float32(10 ** (g / 20)) for r, g in zip(sources, gains)]
        total = sum(gaps) + sum(len(w) for w in words)
        audio = np.zeros(total, dtype=np.float32)
        bounds, pos = [], gaps[0]
        for w, gap in zip(words, gaps[1:]):
            audio[pos:pos + len(w)] = w
            bounds.append((pos, pos + len(w)))
            pos += len(w) + gap

        snr = None
        if cfg.noise is not None:
            snr = float(rng.uniform(*cfg.snr_db))
            noise = self._noise(rng, total)
            speech_power = np.mean(np.concatenate(words).astype(np.float64) ** 2)
            noise_power = np.mean(noise ** 2)
            if speech_power > 0 and noise_power > 0:
                audio += (noise * math.sqrt(speech_power / (noise_power * 10 ** (snr / 10)))).astype(np.float32)
        peak = float(np.abs(audio).max()) if total else 0.0
        scale = cfg.peak / peak if peak > cfg.peak else 1.0
        if scale != 1.0:
            audio *= np.float32(scale)
        return DigitString(audio, tuple(labels), tuple(bounds), tuple(r.path for r in sources), tuple(gains),
                           snr, scale, sr)

    def _noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        kind = self.config.noise
        if kind == "white":
            return rng.standard_normal(n)
        if kind == "pink":
            return pink_noise(rng, n)
        src = self.audio_of(self.noise_files[int(rng.integers(len(self.noise_files)))]).astype(np.float64)
        start = int(rng.integers(len(src)))
        tiled = np.tile(src, -(-n // len(src)) + 1)       # at least n + len(src): any start fits
        return tiled[start:start + n]
