"""Named public corpora: where they live, their pinned sha256, and a checksummed download.

A data set is read from a local copy when the user gives one (``data_dir``: a folder holding
the files, or holding the data set's own sub-folder), else from the user cache
(``$RNNLAB_DATA`` or ``~/.cache/rnnlab``), downloading it there first if needed. Every file is
checked against its pinned sha256, so a truncated download or a different edition of a corpus
is an error, not a silent change of the numbers in a results table.

Downloads are atomic: bytes go to a temporary file in the destination folder, are checked,
flushed and fsynced, and only then renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from rnnlab.errors import DataError, expected


@dataclass(frozen=True)
class RemoteFile:
    name: str        # file name in the data set's folder
    url: str         # canonical public source
    sha256: str      # pinned; see /work/shared/data/<dir>/SOURCE.md for provenance
    size: int        # bytes, for messages and a quick sanity check


@dataclass(frozen=True)
class DatasetSpec:
    name: str                                 # the name users type: --dataset NAME
    dirname: str                              # folder under the cache / data dir
    files: dict[str, RemoteFile]              # split ("train"/"valid"/"test") or "all" -> file
    level: str                                # the level the corpus is usually modelled at
    description: str


_PT_EXAMPLES = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2"

DATASETS: dict[str, DatasetSpec] = {
    "timemachine": DatasetSpec(
        name="timemachine",
        dirname="timemachine",
        files={"all": RemoteFile(
            "timemachine.txt", "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
            "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516", 178979)},
        level="char",
        description="H. G. Wells, The Time Machine, as used by d2l's RNN chapters (no split: split contiguously)",
    ),
    "tinyshakespeare": DatasetSpec(
        name="tinyshakespeare",
        dirname="tinyshakespeare",
        files={"all": RemoteFile(
            "input.txt", "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1115394)},
        level="char",
        description="karpathy/char-rnn tiny Shakespeare, 1.1 MB (no split: split contiguously)",
    ),
    "wikitext2": DatasetSpec(
        name="wikitext2",
        dirname="wikitext-2",
        files={
            "train": RemoteFile("train.txt", f"{_PT_EXAMPLES}/train.txt",
                                "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f", 10797148),
            "valid": RemoteFile("valid.txt", f"{_PT_EXAMPLES}/valid.txt",
                                "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8", 1121681),
            "test": RemoteFile("test.txt", f"{_PT_EXAMPLES}/test.txt",
                               "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", 1256449),
        },
        level="word",
        description="WikiText-2 (v1, tokenised) as in pytorch/examples' word_language_model",
    ),
}

# A fetcher copies the bytes at a URL into an open binary file. Tests replace it.
Fetcher = Callable[[str, BinaryIO], None]


def _urllib_fetch(url: str, out: BinaryIO) -> None:
    with urllib.request.urlopen(url, timeout=60) as resp:  # file:// URLs work too
        while chunk := resp.read(1 << 20):
            out.write(chunk)


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(expected("data set", "one of " + ", ".join(sorted(DATASETS)), repr(name)))
    return DATASETS[name]


def cache_dir() -> Path:
    """``$RNNLAB_DATA`` if set, else ``~/.cache/rnnlab``."""
    env = os.environ.get("RNNLAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rnnlab"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, rf: RemoteFile) -> None:
    got = sha256_of(path)
    if got != rf.sha256:
        raise DataError(
            expected(f"sha256 of {str(path)!r}", rf.sha256, f"{got} ({path.stat().st_size} bytes; "
                     f"expected {rf.size}); the file is not the pinned edition of {rf.url}")
        )


def download(rf: RemoteFile, dest: Path, fetch: Fetcher | None = None) -> Path:
    """Fetch ``rf`` into ``dest`` atomically; the file appears only if its sha256 matches."""
    fetch = fetch or _urllib_fetch
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                fetch(rf.url, out)
            except OSError as exc:  # URLError is an OSError
                raise DataError(
                    expected(f"download of {rf.url}", "the file",
                             f"{type(exc).__name__}: {exc}; without network, give a local copy with --data-dir")
                ) from None
            out.flush()
            os.fsync(out.fileno())
        _verify(tmp, rf)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _local_copy(spec: DatasetSpec, data_dir: Path) -> dict[str, Path]:
    """Files of ``spec`` in ``data_dir`` or ``data_dir/<dirname>``; DataError naming both places if absent."""
    for d in (data_dir / spec.dirname, data_dir):
        paths = {k: d / rf.name for k, rf in spec.files.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    names = ", ".join(rf.name for rf in spec.files.values())
    raise DataError(
        expected(f"--data-dir for data set {spec.name!r}", f"{names} in {str(data_dir / spec.dirname)!r} or {str(data_dir)!r}",
                 "no such files")
    )


def dataset_files(name: str, data_dir: str | os.PathLike | None = None, fetch: Fetcher | None = None,
                  download_missing: bool = True) -> dict[str, Path]:
    """``{split or "all": verified local path}`` for the named data set.

    With ``data_dir`` the local copy is used and nothing is downloaded; otherwise the cache,
    downloading what is missing (unless ``download_missing`` is False).
    """
    spec = get_spec(name)
    if data_dir is not None:
        paths = _local_copy(spec, Path(data_dir).expanduser())
    else:
        root = cache_dir() / spec.dirname
        paths = {k: root / rf.name for k, rf in spec.files.items()}
        for k, rf in spec.files.items():
            if not paths[k].is_file():
                if not download_missing:
                    raise DataError(expected(f"data set {name!r}", f"{paths[k]} in the cache", "no such file"))
                download(rf, paths[k], fetch)
    for k, rf in spec.files.items():
        _verify(paths[k], rf)
    return paths


# Sequence-to-sequence pairs made on the user's machine from a package, not downloaded:
# rnnlab.data.pair_sets (optional extra ``seq2seq``). Imported on use, so that the packages they
# need are not needed by the other data sets.
PAIR_DATASETS = ("cmudict", "dates")


def pair_dataset(name: str, **kwargs):
    """The named pairs data set as :class:`rnnlab.data.pair_sets.PairSplits` (``cmudict``, ``dates``)."""
    from rnnlab.data.pair_sets import load_pair_dataset

    return load_pair_dataset(name, **kwargs)
