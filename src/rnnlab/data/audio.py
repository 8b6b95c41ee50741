"""Audio in: WAV, FLAC and OGG files at any sample rate and channel count, as mono float32.

Reading goes through ``soundfile`` (libsndfile) and resampling through ``soxr`` (the SoX
resampler, "HQ" quality); both are in the ``audio`` extra (``pip install rnnlab[audio]``).
A file is read in blocks, each block mixed to mono (the mean of the channels) and fed to a
streaming resampler, so the memory held is the mono output at the target rate plus one block:
a 10-minute 96 kHz 6-channel file never exists as one multi-channel array.

Everything a file can get wrong becomes one :class:`~rnnlab.errors.DataError` line that names
the file: missing, a folder, not audio (a text file named ``.wav``), no samples, a WAV whose
data chunk is shorter than its header says (a truncated download or copy), undecodable
frames, non-finite samples in a float file.

>>> import numpy as np, soundfile as sf, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
>>> sf.write(path, np.zeros((4800, 2), dtype="float32"), 48000)   # 0.1 s, stereo
>>> x = load_audio(path, sample_rate=8000)
>>> x.shape, x.dtype
((800,), dtype('float32'))
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from rnnlab.errors import ConfigError, DataError, expected, optional_module

# Extensions a folder scan picks up; any format libsndfile knows is readable by path.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
# Frames read per block: 2**16 frames is 0.7 s at 96 kHz, 8 s at 8 kHz; at 6 channels it is
# a 1.5 MB float32 block.
BLOCK_FRAMES = 1 << 16
# libsndfile's log line for a WAV whose data chunk is shorter than its header declares.
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Declared data sizes that streaming writers use when the length is unknown (not truncation).
_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)


def _optional(module: str, what: str):
    """The optional package ``module`` of the ``audio`` extra, or one ConfigError saying how to get it."""
    return optional_module(module, what, f"the {module!r} package (pip install 'rnnlab[audio]')")


def _soundfile():
    return _optional("soundfile", "audio support")


def _soxr():
    return _optional("soxr", "resampling")


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: native rate, channels, frames (per channel) and format."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str       # e.g. "WAV", "FLAC", "OGG"
    subtype: str      # e.g. "PCM_16", "FLOAT", "VORBIS"

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(expected(f"audio file {str(p)!r}", "an existing file", "no such file"))
    if not p.is_file():
        raise DataError(expected(f"audio file {str(p)!r}", "a file", "a folder or special file"))
    if p.stat().st_size == 0:
        raise DataError(expected(f"audio file {str(p)!r}", "audio data", "an empty file (0 bytes)"))
    return p


def _open(p: Path):
    sf = _soundfile()
    try:
        return sf.SoundFile(str(p))
    except sf.LibsndfileError as exc:
        raise DataError(expected(f"audio file {str(p)!r}", "a readable WAV, FLAC or OGG file",
                                 f"{_libsndfile_reason(exc)}")) from None


def _libsndfile_reason(exc: Exception) -> str:
    # "Error opening 'x.wav': Format not recognised." -> "format not recognised"
    msg = str(getattr(exc, "error_string", "") or exc).strip().rstrip(".")
    return msg[:1].lower() + msg[1:] if msg else type(exc).__name__


def _check_not_truncated(p: Path, f) -> None:
    if f.format not in ("WAV", "WAVEX", "RF64"):
        return
    m = _SHORT_DATA.search(f.extra_info or "")
    if m is None:
        return
    declared, present = int(m.group(1)), int(m.group(2))
    if declared in _UNKNOWN_SIZES or present >= declared:
        return
    raise DataError(expected(f"audio file {str(p)!r}", f"{declared} bytes of sample data (as its header says)",
                             f"{present}; the file is truncated"))


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """The header of an audio file, checked (readable, not truncated, not empty)."""
    p = _check_path(path)
    with _open(p) as f:
        _check_not_truncated(p, f)
        info = AudioInfo(str(p), int(f.samplerate), int(f.channels), int(f.frames), f.format, f.subtype)
    if info.frames == 0:
        raise DataError(expected(f"audio file {str(p)!r}", "at least one sample", "0 (an empty recording)"))
    return info


def iter_audio(path: str | os.PathLike, sample_rate: int | None = None, *,
               block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """The file as consecutive mono float32 blocks at ``sample_rate`` (None: the file's own rate).

    Concatenated, the blocks are exactly what :func:`load_audio` returns; a block may be empty
    (the resampler holds back a few samples until it has enough context). Memory is one block
    of the file plus the resampler's state, whatever the file's length.
    """
    if sample_rate is not None and (not isinstance(sample_rate, int) or sample_rate <= 0):
        raise ConfigError(expected("sample_rate", "a positive int (Hz) or None", repr(sample_rate)))
    if block_frames <= 0:
        raise ConfigError(expected("block_frames", "a positive int", repr(block_frames)))
    info = audio_info(path)
    p = Path(info.path)
    sf = _soundfile()
    resampler = None
    if sample_rate is not None and sample_rate != info.sample_rate:
        resampler = _soxr().ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality="HQ")
    read = 0
    with _open(p) as f:
        while True:
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True)  # (n, channels)
            except sf.LibsndfileError as exc:
                raise DataError(expected(f"audio file {str(p)!r}", "decodable audio frames",
                                         f"a decoding error after {read} frames: {_libsndfile_reason(exc)}")) from None
            n = block.shape[0]
            last = n < block_frames  # a short read is the end (frame counts of some formats are estimates)
            read += n
            # Mean of the channels: loudness-preserving for correlated channels, never clips.
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if not np.isfinite(mono).all():
                raise DataError(expected(f"audio file {str(p)!r}", "finite samples",
                                         f"NaN or infinity within frames {read - n}..{read}"))
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            yield np.ascontiguousarray(mono, dtype=np.float32)
            if last:
                break
    if read == 0:
        raise DataError(expected(f"audio file {str(p)!r}", "at least one decodable sample", "0"))


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, *,
               max_seconds: float | None = None) -> np.ndarray:
    """The whole file as one mono float32 array ``(N,)`` at ``sample_rate`` (None: native).

    Samples are in [-1, 1] for integer formats (float files are passed through). With
    ``max_seconds`` a longer file is an error instead of a large allocation.
    """
    if max_seconds is not None:
        info = audio_info(path)
        if info.seconds > max_seconds:
            raise DataError(expected(f"audio file {info.path!r}", f"at most {max_seconds:g} s",
                                     f"{info.seconds:.1f} s"))
    blocks = list(iter_audio(path, sample_rate))
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Mono float32 ``x`` from ``from_rate`` to ``to_rate`` with the same resampler as the reader."""
    for name, r in (("from_rate", from_rate), ("to_rate", to_rate)):
        if not isinstance(r, (int, np.integer)) or r <= 0:
            raise ConfigError(expected(name, "a positive int (Hz)", repr(r)))
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise DataError(expected("audio to resample", "a mono array (N,)", f"shape {tuple(x.shape)}"))
    if from_rate == to_rate:
        return x.copy()
    return _soxr().resample(x, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def check_audio_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path if it is an existing folder, else one DataError saying what it is instead."""
    d = Path(folder)
    if not d.is_dir():
        got = "a file" if d.exists() else "no such folder"
        raise DataError(expected(f"audio folder {str(d)!r}", "an existing folder", got))
    return d


def find_audio_files(folder: str | os.PathLike, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files directly in ``folder`` (not recursive), sorted by name."""
    d = check_audio_folder(folder)
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise DataError(expected(f"audio folder {str(d)!r}", "files ending in " + ", ".join(extensions), "none"))
    return files
