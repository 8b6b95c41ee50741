"""Speech features in torch: log-mel filterbank, MFCC, deltas, and two normalisations.

Everything is a tensor operation (a Conv1d for the framed DFT, matrix products for the mel
filterbank and the DCT, gathers for the deltas), so the features run inside a model, export
with it and batch on any device. Definitions, all over frames ``t`` and FFT bins ``k``:

* Framing: the signal is zero-padded by ``n_fft // 2`` on both sides ("centred" frames, as
  librosa's default ``center=True, pad_mode="constant"``); frame ``t`` starts at
  ``t * hop``. A signal of ``n`` samples has ``1 + n // hop`` frames (:func:`frame_count`).
* Window: periodic Hann of ``win_length`` samples, centred in ``n_fft`` (zeros around it).
* Power spectrum: ``P[t, k] = |Σ_n w[n] x[t*hop + n] e^{-2πi k n / n_fft}|²``, ``k = 0..n_fft/2``.
* Mel filterbank: ``n_mels`` triangles with Slaney's mel scale (linear below 1 kHz, logarithmic
  above) and Slaney's area normalisation (each triangle scaled by ``2 / (f_right - f_left)``),
  as librosa's ``filters.mel(htk=False, norm="slaney")``; ``htk=True`` uses the HTK mel scale.
* Log-mel in decibels: ``L = 10 log10(max(M, amin))`` with ``M = P @ melᵀ``; librosa's
  ``power_to_db(M, ref=1.0, amin=amin, top_db=None)``. No ``top_db`` clipping: it depends on
  the utterance's maximum, which a stream does not know yet.
* MFCC: the orthonormal DCT-II of each log-mel frame, first ``n_mfcc`` coefficients
  (librosa's ``feature.mfcc(S=L, dct_type=2, norm="ortho", lifter=0)``).
* Deltas (HTK): ``d[t] = Σ_{n=1..N} n (c[t+n] - c[t-n]) / (2 Σ_{n=1..N} n²)`` with
  ``N = (width - 1) / 2`` and frame indices clamped to the utterance (edge frames repeated);
  librosa's ``feature.delta(c, width, order=1, mode="nearest")``. Delta-deltas are the
  deltas of the deltas (HTK, Kaldi), not librosa's ``order=2`` (a quadratic fit).

Parity with librosa 0.11 (tests/data/test_audio_features.py), absolute, in dB: float64 log-mel
and MFCC to 1e-5; float32 log-mel to 1e-3 on every bin within 80 dB of the utterance's loudest
bin (quieter bins sit at float32's rounding floor of the DFT and carry no speech) and float32
MFCC to 5e-3; deltas to 1e-9 in float64.

Normalisation, per feature (:func:`normalize_utterance`, :class:`RunningNorm`):

* per utterance: ``(x - mean) / sqrt(var + eps)`` over the utterance's valid frames;
* running (causal, for streaming): frame ``t`` uses the mean and variance of frames ``0..t``
  pooled with prior statistics (from the training set) that weigh ``prior_frames`` frames, so
  the first frames of a stream are normalised by the prior and later ones by the speaker.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import ConfigError, DataError, DTypeError, ShapeError, expected, is_int_at_least

KINDS = ("logmel", "mfcc")
NORMALIZATIONS = ("none", "utterance", "running")


# ----------------------------------------------------------------------------- building blocks


def hz_to_mel(f: np.ndarray | float, htk: bool = False) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney: linear (3 mels per 200 Hz) below 1 kHz, log with 27 steps per factor 6.4 above.
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    lin = f / f_sp
    log = min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log, lin)


def mel_to_hz(m: np.ndarray | float, htk: bool = False) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None, htk: bool = False) -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)``, float64, Slaney area-normalised."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ConfigError(expected("mel band edges", f"0 <= fmin < fmax <= {sample_rate / 2:g} Hz",
                                   f"fmin={fmin:g}, fmax={fmax:g}"))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)                       # (K,)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]   # (n_mels, 1)
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))                       # (n_mels, K)
    return weights * (2.0 / (right - left))


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II rows ``(n_out, n_in)``: ``y = D @ x`` is scipy's ``dct(x, 2, norm="ortho")[:n_out]``."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    d = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))
    d[0] /= np.sqrt(2.0)
    return d


def dft_kernels(n_fft: int, win_length: int) -> np.ndarray:
    """Windowed DFT as Conv1d weights ``(2K, 1, n_fft)``: rows ``0..K-1`` real parts, ``K..`` imaginary."""
    n = np.arange(n_fft)
    # Periodic Hann (the DFT-even window of librosa/scipy get_window(fftbins=True)), centred in n_fft.
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    window = np.zeros(n_fft)
    start = (n_fft - win_length) // 2
    window[start:start + win_length] = w
    k = np.arange(n_fft // 2 + 1)[:, None]
    angle = 2 * np.pi * k * n[None, :] / n_fft
    return np.concatenate([window * np.cos(angle), -window * np.sin(angle)])[:, None, :]


def frame_count(n_samples: int | Tensor, hop_length: int) -> int | Tensor:
    """Frames of a centred STFT over ``n_samples`` samples: ``1 + n // hop``."""
    return 1 + n_samples // hop_length


def _mask(lengths: Tensor | None, batch: int, frames: int, device) -> Tensor:
    """``(B, T, 1)`` True on valid frames."""
    if lengths is None:
        return torch.ones(batch, frames, 1, dtype=torch.bool, device=device)
    return (torch.arange(frames, device=device)[None, :] < lengths.to(device)[:, None])[..., None]


def deltas(x: Tensor, width: int = 9, lengths: Tensor | None = None) -> Tensor:
    """HTK deltas of ``x (B, T, F)`` along time; frames clamp to each utterance's ``lengths``."""
    if width < 3 or width % 2 == 0:
        raise ConfigError(expected("delta width", "an odd int >= 3", repr(width)))
    B, T, _ = x.shape
    half = (width - 1) // 2
    last = (lengths.to(x.device) - 1 if lengths is not None else torch.full((B,), T - 1, device=x.device))
    t = torch.arange(T, device=x.device)[None, :]                                  # (1, T)
    out = torch.zeros_like(x)
    for n in range(1, half + 1):
        ahead = torch.minimum(t + n, last[:, None]).clamp(min=0)                 # (B, T)
        behind = torch.minimum((t - n).clamp(min=0), last[:, None])
        gather = lambda idx: torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[2]))  # noqa: E731
        out = out + n * (gather(ahead) - gather(behind))
    return out / (2 * sum(n * n for n in range(1, half + 1)))


def normalize_utterance(x: Tensor, lengths: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` per utterance and feature over the valid frames of ``x (B, T, F)``.

    Padded frames come out as zeros.
    """
    mask = _mask(lengths, x.shape[0], x.shape[1], x.device).to(x.dtype)          # (B, T, 1)
    n = mask.sum(1, keepdim=True).clamp(min=1)                                   # (B, 1, 1)
    mean = (x * mask).sum(1, keepdim=True) / n
    var = (((x - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * mask


def running_normalize(x: Tensor, mean: Tensor, var: Tensor, prior_frames: float = 100.0,
                      state: tuple[Tensor, Tensor, Tensor] | None = None, eps: float = 1e-5,
                      ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """Causal normalisation of ``x (T, F)``, one utterance; returns ``(y, state)``.

    Frame ``t`` is normalised with the mean and variance of the pooled set {the prior, as
    ``prior_frames`` frames of mean ``mean`` and variance ``var``} ∪ {frames 0..t}. ``state``
    carries (count, sum, sum of squares) of the frames seen so far, in float64, so feeding an
    utterance in chunks gives the same output as feeding it whole.
    """
    if x.dim() != 2 or x.shape[1] != mean.shape[-1]:
        raise ShapeError(expected("running_normalize input", f"(T, {mean.shape[-1]})", tuple(x.shape)))
    if state is None:
        z = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        state = (torch.zeros((), dtype=torch.float64, device=x.device), z, z.clone())
    count, s1, s2 = state
    if x.shape[0] == 0:
        return x, state
    xd = x.to(torch.float64)
    c1 = s1 + torch.cumsum(xd, 0)                                                # (T, F)
    c2 = s2 + torch.cumsum(xd * xd, 0)
    n = count + torch.arange(1, x.shape[0] + 1, dtype=torch.float64, device=x.device)[:, None]
    m0, v0 = mean.to(torch.float64), var.to(torch.float64)
    w = float(prior_frames)
    mu = (w * m0 + c1) / (w + n)
    second = (w * (v0 + m0 * m0) + c2) / (w + n)
    sd = torch.sqrt((second - mu * mu).clamp(min=0.0) + eps)
    y = ((xd - mu) / sd).to(x.dtype)
    return y, (n[-1, 0], c1[-1], c2[-1])


class RunningNorm:
    """:func:`running_normalize` with its state kept between calls: one stream, chunk by chunk."""

    def __init__(self, mean: Tensor, var: Tensor, prior_frames: float = 100.0, eps: float = 1e-5):
        if prior_frames < 0:
            raise ConfigError(expected("prior_frames", "a number >= 0", repr(prior_frames)))
        self.mean, self.var = torch.as_tensor(mean), torch.as_tensor(var)
        if self.mean.shape != self.var.shape or self.mean.dim() != 1:
            raise ShapeError(expected("prior mean and variance", "two (F,) tensors",
                                      f"{tuple(self.mean.shape)} and {tuple(self.var.shape)}"))
        self.prior_frames, self.eps = prior_frames, eps
        self.reset()

    def reset(self) -> None:
        """Forget the stream (a new speaker or utterance)."""
        self.state: tuple[Tensor, Tensor, Tensor] | None = None

    def __call__(self, chunk: Tensor) -> Tensor:
        y, self.state = running_normalize(chunk, self.mean, self.var, self.prior_frames, self.state, self.eps)
        return y


def feature_stats(utterances) -> tuple[Tensor, Tensor]:
    """Per-feature mean and variance over all frames of an iterable of ``(T, F)`` tensors (float64)."""
    count, s1, s2 = 0, None, None
    for u in utterances:
        u = torch.as_tensor(u).to(torch.float64)
        count += u.shape[0]
        s1 = u.sum(0) if s1 is None else s1 + u.sum(0)
        s2 = (u * u).sum(0) if s2 is None else s2 + (u * u).sum(0)
    if not count:
        raise DataError(expected("feature statistics", "at least one frame", "none"))
    mean = s1 / count
    return mean, (s2 / count - mean * mean).clamp(min=0.0)


# ----------------------------------------------------------------------------- the module


@dataclass
class FeatureConfig:
    """How audio becomes frames. Saved with a model, so a run rebuilds its front end exactly."""

    kind: str = "mfcc"               # "logmel" (n_mels dB values) or "mfcc" (n_mfcc cepstra)
    sample_rate: int = 8000          # FSDD's rate; input at other rates is resampled to it on reading
    win_ms: float = 25.0             # analysis window: the usual 25 ms speech frame
    hop_ms: float = 10.0             # 100 frames a second
    n_fft: int | None = None         # None: the next power of two >= the window
    n_mels: int = 40                 # enough resolution below 4 kHz for digits
    n_mfcc: int = 13                 # the classic 13 cepstra (c0 included)
    fmin: float = 20.0               # below the voice; drops DC and hum
    fmax: float | None = None        # None: Nyquist
    htk: bool = False                # mel scale: Slaney (librosa's default) or HTK
    deltas: int = 2                  # 0: static only; 1: + deltas; 2: + delta-deltas
    delta_width: int = 9             # frames in the delta regression (±4 frames, 40 ms lookahead)
    amin: float = 1e-10              # power floor before the log (-100 dB)
    normalize: str = "utterance"     # "none", "utterance" or "running" (causal, for streaming)
    prior_frames: float = 100.0      # running: weight of the training statistics, in frames

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(expected("feature kind", " or ".join(KINDS), repr(self.kind)))
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(expected("feature normalisation", ", ".join(NORMALIZATIONS), repr(self.normalize)))
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise ConfigError(expected("sample_rate", "a positive int (Hz)", repr(self.sample_rate)))
        if self.deltas not in (0, 1, 2):
            raise ConfigError(expected("deltas", "0, 1 or 2", repr(self.deltas)))
        if self.hop_length < 1 or self.win_length < 2:
            raise ConfigError(expected("window and hop", "at least 2 and 1 samples",
                                       f"{self.win_length} and {self.hop_length}"))
        if self.n_fft_ < self.win_length:
            raise ConfigError(expected("n_fft", f">= the window ({self.win_length} samples)", repr(self.n_fft)))
        if self.n_fft_ % 2:   # centred frames pad n_fft // 2 each side: an odd n_fft gives one frame fewer
            raise ConfigError(expected("n_fft", "an even number of samples", repr(self.n_fft)))
        if not is_int_at_least(self.n_mels, 1):
            raise ConfigError(expected("--n-mels (n_mels)", "an integer >= 1", repr(self.n_mels)))
        if self.kind == "mfcc" and not 1 <= self.n_mfcc <= self.n_mels:
            raise ConfigError(expected("--n-mfcc (n_mfcc)", f"1..--n-mels ({self.n_mels})", repr(self.n_mfcc)))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def n_fft_(self) -> int:
        return self.n_fft if self.n_fft is not None else 1 << max(0, (self.win_length - 1).bit_length())

    @property
    def static_dim(self) -> int:
        return self.n_mels if self.kind == "logmel" else self.n_mfcc

    @property
    def dim(self) -> int:
        """Features per frame: the static ones times (1 + deltas)."""
        return self.static_dim * (1 + self.deltas)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(expected("feature config keys", "some of " + ", ".join(sorted(known)), unknown))
        return cls(**d)


class AudioFeatures(nn.Module):
    """Waveforms ``(B, N)`` (or ``(N,)``) at ``cfg.sample_rate`` → features ``(B, T, cfg.dim)``.

    ``forward(wave, lengths=None)`` returns ``(features, frame_lengths)``; ``lengths`` are the
    valid samples of each row of a zero-padded batch. A batch gives each row exactly what the
    row alone would give (up to its frame length; padded frames are zero). The running
    normalisation needs prior statistics: :meth:`set_stats` (from :func:`feature_stats` over
    the training set's un-normalised features), else it raises.
    """

    def __init__(self, cfg: FeatureConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FeatureConfig()
        self.register_buffer("dft", torch.from_numpy(dft_kernels(cfg.n_fft_, cfg.win_length)), persistent=False)
        mel = mel_filterbank(cfg.sample_rate, cfg.n_fft_, cfg.n_mels, cfg.fmin, cfg.fmax, cfg.htk)
        self.register_buffer("mel", torch.from_numpy(mel.T.copy()), persistent=False)           # (K, n_mels)
        self.register_buffer("dct", torch.from_numpy(dct_matrix(cfg.n_mfcc, cfg.n_mels).T.copy()),
                             persistent=False)                                                   # (n_mels, n_mfcc)
        # Training-set statistics for the running normalisation; saved with the model.
        self.register_buffer("stats_mean", torch.zeros(cfg.dim, dtype=torch.float64))
        self.register_buffer("stats_var", torch.ones(cfg.dim, dtype=torch.float64))
        self.register_buffer("has_stats", torch.zeros((), dtype=torch.bool))

    def set_stats(self, mean: Tensor, var: Tensor) -> None:
        if mean.shape != (self.cfg.dim,) or var.shape != (self.cfg.dim,):
            raise ShapeError(expected("feature statistics", f"two ({self.cfg.dim},) tensors",
                                      f"{tuple(mean.shape)} and {tuple(var.shape)}"))
        self.stats_mean.copy_(mean)
        self.stats_var.copy_(var)
        self.has_stats.fill_(True)

    def power(self, wave: Tensor) -> Tensor:
        """Power spectra ``(B, T, n_fft // 2 + 1)`` of centred frames."""
        pad = self.cfg.n_fft_ // 2
        x = F.pad(wave[:, None, :], (pad, pad))                                   # (B, 1, N + n_fft)
        spec = F.conv1d(x, self.dft.to(wave.dtype), stride=self.cfg.hop_length)   # (B, 2K, T)
        re, im = spec.chunk(2, dim=1)
        return (re * re + im * im).transpose(1, 2)

    def log_mel(self, wave: Tensor) -> Tensor:
        """Log-mel filterbank in dB ``(B, T, n_mels)``."""
        mel = self.power(wave) @ self.mel.to(wave.dtype)
        return 10.0 * torch.log10(torch.clamp(mel, min=self.cfg.amin))

    def static(self, wave: Tensor) -> Tensor:
        """The static features (log-mel or MFCC) ``(B, T, static_dim)``, before deltas and normalisation."""
        lm = self.log_mel(wave)
        return lm if self.cfg.kind == "logmel" else lm @ self.dct.to(wave.dtype)

    def raw(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Static features with deltas, not normalised: ``((B, T, dim), frame_lengths)``."""
        if wave.dim() == 1:
            wave = wave[None]
        if wave.dim() != 2:
            raise ShapeError(expected("waveform", "(N,) or (B, N)", tuple(wave.shape)))
        if not wave.is_floating_point():
            raise DTypeError(expected("waveform dtype", "floating point", wave.dtype))
        B, N = wave.shape
        if lengths is None:
            lengths = torch.full((B,), N, dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if lengths.shape != (B,) or bool((lengths > N).any()) or bool((lengths < 1).any()):
            raise ShapeError(expected("waveform lengths", f"({B},) values in 1..{N}", lengths.tolist()))
        # Zero past each row's end so a row's frames do not depend on what pads it.
        keep = torch.arange(N, device=wave.device)[None, :] < lengths.to(wave.device)[:, None]
        wave = wave * keep
        frames = frame_count(lengths, self.cfg.hop_length)
        x = self.static(wave)                                                     # (B, T, S)
        parts = [x]
        for _ in range(self.cfg.deltas):
            parts.append(deltas(parts[-1], self.cfg.delta_width, frames))
        x = torch.cat(parts, dim=2) * _mask(frames, B, x.shape[1], x.device).to(x.dtype)
        return x, frames

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, frames = self.raw(wave, lengths)
        if self.cfg.normalize == "utterance":
            x = normalize_utterance(x, frames)
        elif self.cfg.normalize == "running":
            if not bool(self.has_stats):
                raise ConfigError(expected("running normalisation", "training statistics (AudioFeatures.set_stats)",
                                           "none set"))
            x = torch.stack([
                torch.cat([running_normalize(x[b, :n], self.stats_mean, self.stats_var, self.cfg.prior_frames)[0],
                           x.new_zeros(x.shape[1] - n, x.shape[2])])
                for b, n in enumerate(frames.tolist())
            ])
        return x, frames


class FeatureStream:
    """:class:`AudioFeatures` fed chunk by chunk: each frame is emitted as soon as it is final.

    ``accept(samples)`` takes any number of new samples (at ``cfg.sample_rate``) and returns
    the frames ``(k, dim)`` that became final; ``finish()`` returns the rest. Concatenated,
    the outputs equal the offline features of the whole signal (``AudioFeatures(cfg)``) with
    the same normalisation, which must be causal: ``"running"`` or ``"none"``.

    A frame is final when its window is complete (``n_fft // 2`` samples past its centre)
    and, with deltas, when the ``delta_width // 2`` frames after it are, once per delta
    order: the lookahead is ``n_fft // 2`` samples plus ``deltas * (delta_width // 2)`` hops
    (16 + 80 ms with the defaults at 8 kHz). Memory is bounded: only the frames still
    needed for deltas are kept. Frames are computed in the module's buffers' precision
    (float64 unless converted) and returned as ``dtype``.
    """

    def __init__(self, features: AudioFeatures, dtype: torch.dtype = torch.float32):
        cfg = features.cfg
        if cfg.normalize == "utterance":
            raise ConfigError(expected("normalisation of a stream", "'running' or 'none' (causal)", "'utterance'"))
        if cfg.normalize == "running" and not bool(features.has_stats):
            raise ConfigError(expected("running normalisation", "training statistics (AudioFeatures.set_stats)",
                                       "none set"))
        self.features, self.cfg, self.dtype = features, cfg, dtype
        self.lookahead_frames = cfg.deltas * ((cfg.delta_width - 1) // 2)
        dtype = features.dft.dtype
        self._basis = features.dft[:, 0, :].to(dtype)                                # (2K, n_fft)
        self.reset()

    def reset(self) -> None:
        """Start a new signal."""
        self._pending = np.zeros(self.cfg.n_fft_ // 2, dtype=np.float64)  # the centred frames' left padding
        self._samples = 0            # samples accepted
        self._static: list[Tensor] = []
        self._static_start = 0       # frame index of self._static[0]
        self._computed = 0           # static frames computed
        self._emitted = 0
        self._finished = False
        self._norm = (RunningNorm(self.features.stats_mean, self.features.stats_var, self.cfg.prior_frames)
                      if self.cfg.normalize == "running" else None)

    def _frames_from_pending(self) -> None:
        n_fft, hop = self.cfg.n_fft_, self.cfg.hop_length
        k = 0 if len(self._pending) < n_fft else 1 + (len(self._pending) - n_fft) // hop
        if k == 0:
            return
        idx = np.arange(k)[:, None] * hop + np.arange(n_fft)[None, :]
        frames = torch.from_numpy(self._pending[idx]).to(self._basis.dtype)       # (k, n_fft)
        spec = frames @ self._basis.T                                               # (k, 2K)
        re, im = spec.chunk(2, dim=1)
        mel = (re * re + im * im) @ self.features.mel.to(frames.dtype)
        x = 10.0 * torch.log10(torch.clamp(mel, min=self.cfg.amin))
        if self.cfg.kind == "mfcc":
            x = x @ self.features.dct.to(frames.dtype)
        self._static.extend(x)
        self._computed += k
        self._pending = self._pending[k * hop:]

    def _emit(self, upto: int, final: bool) -> Tensor:
        """Frames ``self._emitted .. upto - 1``, with deltas over the kept static frames."""
        a, D = self._emitted, self.lookahead_frames
        if upto <= a:
            return torch.zeros(0, self.cfg.dim, dtype=self.dtype)
        lo = max(0, a - D)
        hi = self._computed if final else upto + D
        block = torch.stack(self._static[lo - self._static_start:hi - self._static_start])[None]   # (1, n, S)
        parts = [block]
        for _ in range(self.cfg.deltas):
            # Clamping at the block's start is right when lo == 0 and never reaches the
            # emitted frames otherwise (they start D frames in); at its end likewise.
            parts.append(deltas(parts[-1], self.cfg.delta_width))
        x = torch.cat(parts, dim=2)[0, a - lo:upto - lo]
        if self._norm is not None:
            x = self._norm(x)
        self._emitted = upto
        keep_from = max(0, upto - D) - self._static_start
        del self._static[:keep_from]
        self._static_start += keep_from
        return x.to(self.dtype)

    def accept(self, samples) -> Tensor:
        """Add samples ``(n,)``; the frames ``(k, dim)`` that are now final."""
        if self._finished:
            raise ConfigError(expected("stream", "reset() after finish()", "more samples"))
        x = np.asarray(samples.detach().cpu() if isinstance(samples, Tensor) else samples, dtype=np.float64)
        if x.ndim != 1:
            raise ShapeError(expected("stream samples", "a mono array (n,)", f"shape {tuple(x.shape)}"))
        self._pending = np.concatenate([self._pending, x])
        self._samples += len(x)
        self._frames_from_pending()
        return self._emit(max(self._emitted, self._computed - self.lookahead_frames), final=False)

    def finish(self) -> Tensor:
        """The remaining frames ``(k, dim)``: the signal has ended."""
        if self._samples == 0:
            raise DataError(expected("stream", "at least one sample before finish()", "none"))
        total = int(frame_count(self._samples, self.cfg.hop_length))
        # The right padding of centred frames; enough zeros for the last frame's window.
        self._pending = np.concatenate([self._pending, np.zeros(self.cfg.n_fft_, dtype=np.float64)])
        self._frames_from_pending()
        self._computed = total                       # frames past the end were padding only
        self._static = self._static[:total - self._static_start]
        self._finished = True
        return self._emit(total, final=True)
