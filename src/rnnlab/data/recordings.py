"""Labelled recordings (isolated words) and the splits that tell the truth about them.

A recording has a label, and where known a speaker and a take number. Labels come from file
names, ``{label}_{speaker}_{take}.wav`` (the Free Spoken Digit Dataset's pattern, e.g.
``7_jackson_32.wav``), or from a CSV with a header naming the columns ``file`` and ``label``
and optionally ``speaker`` and ``take`` (a relative ``file`` is relative to the audio folder
given to :func:`read_label_csv`, else to the CSV's folder). The official split needs a take
for every recording, a speaker split a speaker for every recording.

Splits (each a :class:`Split` of disjoint train and test recordings):

* :func:`official_split`: FSDD's own, takes 0-4 of every speaker and digit are the test set.
  Every test speaker is also a training speaker, so it measures new takes of known voices.
* :func:`speaker_split` / :func:`leave_one_speaker_out`: train on all speakers but one, test on
  that one: what a new user's voice meets.

>>> recs = [Recording(Path(f"{d}_{s}_{t}.wav"), str(d), s, t) for d in range(2) for s in "ab" for t in range(6)]
>>> split = official_split(recs)
>>> len(split.train), len(split.test)
(4, 20)
>>> [s.name for s in leave_one_speaker_out(recs)]
['speaker:a', 'speaker:b']
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from rnnlab.data.audio import AUDIO_EXTENSIONS, check_audio_folder, find_audio_files
from rnnlab.data.registry import dataset_folder
from rnnlab.data.encodings import bom_encoding
from rnnlab.errors import DataError, expected

# {label}_{speaker}_{take}: label and speaker without underscores, take a non-negative int.
NAME_PATTERN = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<take>\d+)$")
OFFICIAL_TEST_TAKES = range(5)


@dataclass(frozen=True)
class Recording:
    path: Path
    label: str
    speaker: str | None = None
    take: int | None = None


@dataclass(frozen=True)
class Split:
    name: str                       # "official" or "speaker:<name>"
    train: tuple[Recording, ...]
    test: tuple[Recording, ...]

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            if not getattr(self, part):
                raise DataError(expected(f"{part} set of split {self.name!r}", "at least one recording", "none"))
        shared = {r.path for r in self.train} & {r.path for r in self.test}
        if shared:
            raise DataError(expected(f"split {self.name!r}", "disjoint train and test recordings",
                                     f"{len(shared)} in both, e.g. {sorted(shared)[0]}"))


def parse_name(path: str | os.PathLike) -> Recording:
    """A recording from a ``{label}_{speaker}_{take}.ext`` file name."""
    p = Path(path)
    m = NAME_PATTERN.match(p.stem)
    if m is None:
        raise DataError(expected(f"file name {p.name!r}", "{label}_{speaker}_{take}.wav (e.g. 7_jackson_32.wav), "
                                 "or give the labels in a CSV", p.name))
    return Recording(p, m["label"], m["speaker"], int(m["take"]))


def scan_recordings(folder: str | os.PathLike, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Recording]:
    """Every audio file in ``folder`` with its labels from its name, sorted by file name."""
    return [parse_name(p) for p in find_audio_files(folder, extensions)]


def _label_text(path: Path) -> io.StringIO:
    """A label CSV's text: UTF-8 (a UTF-8 byte-order mark dropped), or the UTF-16/32 its byte-order
    mark names; other bytes are one DataError (these commands take no --encoding)."""
    raw = path.read_bytes()
    encoding = bom_encoding(raw) or "utf-8"
    try:
        text = raw.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        where = f", line {line}" if encoding == "utf-8" else ""   # (UTF-16/32 newlines are not b"\n")
        said = "" if encoding == "utf-8" else " (as its byte-order mark says)"
        raise DataError(f"label CSV {path}{where}: expected {encoding.upper()} text{said}, got "
                        f"undecodable bytes {raw[exc.start:exc.start + 4]!r} at byte offset {exc.start}; save the "
                        "file as UTF-8") from None
    return io.StringIO(text, newline="")   # (the decoders above drop the byte-order mark)


def label_csv_columns(csv_path: str | os.PathLike) -> list[str]:
    """The column names in the header of a label CSV (``[]`` for an empty file)."""
    return list(csv.DictReader(_label_text(Path(csv_path))).fieldnames or [])


def read_label_csv(csv_path: str | os.PathLike, audio_dir: str | os.PathLike | None = None) -> list[Recording]:
    """Recordings listed in a CSV with columns ``file``, ``label`` and optionally ``speaker``, ``take``.

    A relative ``file`` is relative to ``audio_dir`` (which must be a folder; a file found only
    beside the CSV is taken from there), or without one to the CSV's own folder; an absolute one
    is taken as it is."""
    path = Path(csv_path)
    if not path.is_file():
        got = "a folder" if path.is_dir() else "no such file"
        raise DataError(expected(f"label CSV {str(path)!r}", "an existing file", got))
    base = check_audio_folder(audio_dir) if audio_dir else path.parent
    with _label_text(path) as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in ("file", "label") if c not in columns]
        if missing:
            raise DataError(expected(f"{path}: header", "columns file, label (speaker, take optional)", columns))
        out = []
        for line, row in enumerate(reader, start=2):
            file, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
            if not file or not label:
                raise DataError(expected(f"{path}:{line}", "a file and a label", f"file={file!r}, label={label!r}"))
            audio = base / file
            if not audio.is_file() and audio_dir and (path.parent / file).is_file():
                audio = path.parent / file      # beside the CSV, the rule before --audio-dir: runs made so still read
            if not audio.is_file():
                want = (f"a file in {str(base)!r} (the audio folder) or beside the CSV" if audio_dir
                        else f"a file in {str(base)!r} (the CSV's folder)")
                raise DataError(expected(f"{path}:{line}: file {file!r}", want, "no such file"))
            take = (row.get("take") or "").strip()
            if take and not take.isdigit():
                raise DataError(expected(f"{path}:{line}: take", "a non-negative int", repr(take)))
            out.append(Recording(audio, label, (row.get("speaker") or "").strip() or None,
                                 int(take) if take else None))
    if not out:
        raise DataError(expected(f"label CSV {str(path)!r}", "at least one row", "none"))
    return out


def labels_of(recordings: Iterable[Recording]) -> list[str]:
    """The sorted distinct labels: index ``i`` of this list is class ``i``."""
    return sorted({r.label for r in recordings}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))


def speakers_of(recordings: Iterable[Recording]) -> list[str]:
    speakers = {r.speaker for r in recordings}
    if None in speakers:
        raise DataError(expected("recordings", "a speaker for every recording (file names or a speaker column)",
                                 "some without one"))
    return sorted(speakers)  # type: ignore[arg-type]


def official_split(recordings: Sequence[Recording], test_takes: Iterable[int] = OFFICIAL_TEST_TAKES) -> Split:
    """Takes in ``test_takes`` (FSDD: 0-4) are the test set, the rest the training set."""
    takes = set(test_takes)
    if any(r.take is None for r in recordings):
        raise DataError(expected("recordings for the official split", "a take number for every recording",
                                 "some without one"))
    return Split("official", tuple(r for r in recordings if r.take not in takes),
                 tuple(r for r in recordings if r.take in takes))


def speaker_split(recordings: Sequence[Recording], speaker: str) -> Split:
    """Train on every speaker but ``speaker``; test on ``speaker``."""
    speakers = speakers_of(recordings)
    if speaker not in speakers:
        raise DataError(expected("held-out speaker", "one of " + ", ".join(speakers), repr(speaker)))
    return Split(f"speaker:{speaker}", tuple(r for r in recordings if r.speaker != speaker),
                 tuple(r for r in recordings if r.speaker == speaker))


def leave_one_speaker_out(recordings: Sequence[Recording]) -> list[Split]:
    """One :func:`speaker_split` per speaker, in sorted speaker order."""
    return [speaker_split(recordings, s) for s in speakers_of(recordings)]


def make_split(recordings: Sequence[Recording], name: str) -> Split:
    """A split by its name: ``official`` or ``speaker:NAME``."""
    if name == "official":
        return official_split(recordings)
    if name.startswith("speaker:"):
        return speaker_split(recordings, name.split(":", 1)[1])
    raise DataError(expected("split", "'official' or 'speaker:NAME'", repr(name)))


def fsdd_recordings(data_dir: str | os.PathLike | None = None, **fetch_kw) -> list[Recording]:
    """FSDD's 3,000 recordings, checked against the pinned digest (fetched into the cache if needed)."""
    return scan_recordings(dataset_folder("fsdd", data_dir, **fetch_kw), extensions=(".wav",))
