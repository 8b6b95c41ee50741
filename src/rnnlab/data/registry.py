"""Named public corpora: where they live, their pinned sha256, and a checksummed download.

A data set is read from a local copy when the user gives one (``data_dir``: a folder holding
the files, or holding the data set's own sub-folder), else from the user cache
(``$RNNLAB_DATA`` or ``~/.cache/rnnlab``), downloading it there first if needed. Every file is
checked against its pinned sha256, so a truncated download or a different edition of a corpus
is an error, not a silent change of the numbers in a results table.

Downloads are atomic: bytes go to a temporary file in the destination folder, are checked,
flushed and fsynced, and only then renamed into place.

A corpus of many small files (``FOLDERS``, e.g. the spoken digits ``fsdd``) is fetched as one
archive of its source repository at a pinned commit; its files are extracted into a temporary
folder, checked by count and by the sha256 of their bytes concatenated in sorted name order,
and only then moved into place.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable

from rnnlab.data.digest import sha256_of
from rnnlab.data.pair_sets import load_pair_dataset
from rnnlab.errors import DataError, expected


@dataclass(frozen=True)
class RemoteFile:
    name: str        # file name in the data set's folder
    url: str         # canonical public source
    sha256: str      # pinned: a download that differs is refused
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


# ----------------------------------------------------------------------------- folders of files


@dataclass(frozen=True)
class RemoteFolder:
    """A data set that is a folder of many small files, fetched as one archive.

    The archive's own bytes are not pinned (a host may recompress it); its contents are: the
    files ending in ``suffix`` in a folder named ``member_dir`` inside it, ``count`` of them,
    whose bytes concatenated in sorted file-name order hash to ``sha256``.
    """

    name: str            # the name users type: --dataset NAME
    dirname: str         # folder under the cache / data dir
    url: str             # a .tar.gz of the source repository at a pinned commit
    member_dir: str      # the folder inside the archive (and inside dirname) holding the files
    suffix: str          # which files count
    count: int
    sha256: str          # of the files' bytes concatenated in sorted name order
    description: str


FOLDERS: dict[str, RemoteFolder] = {
    "fsdd": RemoteFolder(
        name="fsdd",
        dirname="fsdd",
        url="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/"
            "26eb9aaf76e81b692f806f9140c2d2777410d7a1.tar.gz",
        member_dir="recordings",
        suffix=".wav",
        count=3000,
        sha256="ddb17656a0bca4c5ddace082be188ca630516dc2ef1110afe3c4e9cc71173de4",
        description="Free Spoken Digit Dataset: 6 speakers x 10 digits x 50 takes, 8 kHz WAV "
                    "(CC BY-SA 4.0, Zohar Jackson and contributors)",
    ),
}

# A member's file name as extracted: no folders, no leading dot.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def get_folder_spec(name: str) -> RemoteFolder:
    if name not in FOLDERS:
        raise DataError(expected("data set", "one of " + ", ".join(sorted(FOLDERS)), repr(name)))
    return FOLDERS[name]


def folder_files(folder: Path, suffix: str) -> list[Path]:
    """Files in ``folder`` ending in ``suffix``, in sorted name order (the digest's order)."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix)), key=lambda p: p.name)


def folder_digest(paths: list[Path]) -> str:
    """sha256 of the files' bytes concatenated in the given order."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def verify_folder(folder: Path, spec: RemoteFolder) -> list[Path]:
    """The folder's files, after checking their count and digest against ``spec``."""
    files = folder_files(folder, spec.suffix)
    if len(files) != spec.count:
        raise DataError(expected(f"files ending in {spec.suffix} in {str(folder)!r}", spec.count, len(files)))
    got = folder_digest(files)
    if got != spec.sha256:
        raise DataError(expected(f"sha256 of the {spec.count} files in {str(folder)!r}", spec.sha256,
                                 f"{got}; the files are not the pinned edition of {spec.name}"))
    return files


def download_folder(spec: RemoteFolder, dest: Path, fetch: Fetcher | None = None) -> Path:
    """Fetch ``spec``'s archive, extract its ``member_dir`` files, verify, then move into ``dest``.

    ``dest`` appears only complete and verified; the archive is deleted afterwards.
    """
    fetch = fetch or _urllib_fetch
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        archive = work / "archive.tar.gz"
        with open(archive, "wb") as out:
            try:
                fetch(spec.url, out)
            except OSError as exc:
                raise DataError(
                    expected(f"download of {spec.url}", "the archive",
                             f"{type(exc).__name__}: {exc}; without network, give a local copy with --data-dir")
                ) from None
        files = work / spec.member_dir
        files.mkdir()
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    parts = PurePosixPath(member.name).parts
                    # Only regular files directly inside a folder named member_dir, written by
                    # base name: nothing in the archive chooses where a file lands.
                    if (not member.isfile() or len(parts) < 2 or parts[-2] != spec.member_dir
                            or not _SAFE_NAME.match(parts[-1]) or not parts[-1].endswith(spec.suffix)):
                        continue
                    src = tar.extractfile(member)
                    if src is None:
                        continue
                    with src, open(files / parts[-1], "wb") as out:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
        except (tarfile.TarError, EOFError, OSError) as exc:
            reason = " ".join(str(exc).split())[:200]   # tarfile's messages span lines
            raise DataError(expected(f"archive from {spec.url}", "a readable .tar.gz",
                                     f"{type(exc).__name__}: {reason}")) from None
        archive.unlink()
        verify_folder(files, spec)
        final = dest / spec.member_dir
        dest.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(files, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest / spec.member_dir


def _local_folder(spec: RemoteFolder, data_dir: Path) -> Path:
    for d in (data_dir / spec.dirname / spec.member_dir, data_dir / spec.member_dir, data_dir):
        if d.is_dir() and any(p.name.endswith(spec.suffix) for p in d.iterdir()):
            return d
    raise DataError(expected(
        f"--data-dir for data set {spec.name!r}",
        f"{spec.suffix} files in {str(data_dir / spec.dirname / spec.member_dir)!r}, "
        f"{str(data_dir / spec.member_dir)!r} or {str(data_dir)!r}", "none"))


def dataset_folder(name: str, data_dir: str | os.PathLike | None = None, fetch: Fetcher | None = None,
                   download_missing: bool = True) -> Path:
    """The verified local folder of the named folder data set (for example ``fsdd``'s recordings).

    With ``data_dir`` the local copy is used (``data_dir/<dirname>/<member_dir>``,
    ``data_dir/<member_dir>`` or ``data_dir`` itself) and nothing is downloaded; otherwise
    the cache, downloading the archive if the folder is missing (unless ``download_missing``
    is False). Either way the files are checked against the pinned count and digest.
    """
    spec = get_folder_spec(name)
    if data_dir is not None:
        folder = _local_folder(spec, Path(data_dir).expanduser())
    else:
        folder = cache_dir() / spec.dirname / spec.member_dir
        if not folder.is_dir():
            if not download_missing:
                raise DataError(expected(f"data set {name!r}", f"{folder} in the cache", "no such folder"))
            download_folder(spec, cache_dir() / spec.dirname, fetch)
    verify_folder(folder, spec)
    return folder


# Sequence-to-sequence pairs made on the user's machine from a package, not downloaded:
# rnnlab.data.pair_sets (optional extra ``seq2seq``). Imported on use, so that the packages they
# need are not needed by the other data sets.
PAIR_DATASETS = ("cmudict", "dates")


def pair_dataset(name: str, **kwargs):
    """The named pairs data set as :class:`rnnlab.data.pair_sets.PairSplits` (``cmudict``, ``dates``)."""
    return load_pair_dataset(name, **kwargs)
