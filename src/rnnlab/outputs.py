"""Output files of commands (predictions, forecasts, backtests, exports): checked before any
work, written atomically.

:func:`check_output` refuses, before a model is loaded or a row is read, an output path that is
a folder, that is one of the command's input files, that lies inside a run folder (its files
belong to the training that wrote them), or that exists already (unless ``force``), and probes
that its folder is writable. :func:`atomic_open` writes through a temporary file in the same
folder and renames it over the target only once the whole file is written, so a failed or
interrupted write leaves the previous file as it was.

``-`` names standard output: commands whose only output on stdout is a text file (predictions,
forecasts, backtest rows) pass ``stdout=True`` to :func:`check_output`, and :func:`atomic_open` then
writes to ``sys.stdout``; binary outputs (ONNX, pt2) refuse it rather than create a file named ``-``.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator

from rnnlab.errors import OutputError


def enclosing_run(path: str | Path) -> Path | None:
    """The run folder (a folder with ``config.json`` and ``checkpoints/``) that holds ``path``, if any:
    as written, or once symbolic links are resolved (a link to a run's checkpoint is inside it)."""
    for p in dict.fromkeys((Path(os.path.abspath(path)), Path(os.path.realpath(path)))):
        for folder in [p, *p.parents]:
            if (folder / "config.json").is_file() and (folder / "checkpoints").is_dir():
                return folder
    return None


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.abspath(a) == os.path.abspath(b)


def inside(path: Path, folder: Path) -> bool:
    """``path`` lies somewhere under ``folder`` (links resolved)."""
    return Path(os.path.realpath(folder)) in Path(os.path.realpath(path)).parents


# The names rnnlab's own interrupted writes leave (atomic_open, atomic_path and the write probe
# here, checkpoint.py, metrics.py, the trash of an overwrite): a random 8-hex tag, or the metrics
# files' fixed names. A user's ".tmp-thesis" is not one of them.
_TEMPORARY = re.compile(r"\.(tmp|trash)-(.+-[0-9a-f]{8}|[0-9a-f]{8}-.+|metrics\.(jsonl|csv))|\.write-probe-[0-9a-f]{8}")


def is_temporary(name: str) -> bool:
    """``name`` is one that rnnlab's own interrupted writes leave behind (safe to delete)."""
    return _TEMPORARY.fullmatch(name) is not None


STDOUT = "-"


def is_stdout(out: str | Path | None) -> bool:
    """Whether an output path is ``-`` (standard output)."""
    return out is not None and str(out) == STDOUT


def status_stream(out: str | Path | None) -> IO[str]:
    """Where a command's status lines go: stderr when its data goes to standard output."""
    return sys.stderr if is_stdout(out) else sys.stdout


def shown(out: str | Path) -> str:
    """An output path as a status line names it."""
    return "standard output" if is_stdout(out) else str(out)


def refuse_folder(out: str | Path, flag: str) -> None:
    """An OutputError naming ``flag`` when ``out``, a file a command is to write, is a folder."""
    if Path(out).is_dir():
        raise OutputError(f"{flag} {out}: expected a file path, got a folder")


def check_output(out: str | Path, inputs: Iterable[str | Path | None] = (), force: bool = False,
                 flag: str = "--out", stdout: bool = False, run_data: Iterable[str | Path] = (),
                 named: Iterable[str | Path] = ()) -> Path:
    """``out`` if a command may write it; an OutputError naming the flag otherwise (see the module).
    With ``stdout``, ``-`` is accepted (standard output); without, it is refused. ``run_data``: the
    training data files of the run the command reads, never replaced, even with ``force``;
    ``named``: the files the inputs name (the clips of an index), which the command reads too."""
    if is_stdout(out):
        if stdout:
            return Path(STDOUT)
        raise OutputError(f"{flag} -: expected a file path (this output cannot go to standard output)")
    out = Path(out)
    refuse_folder(out, flag)
    for inp in inputs:
        if inp is not None and str(inp) and _same(out, Path(inp)):
            raise OutputError(f"{flag} {out}: expected a file other than the input, got the input file itself; "
                              "write the output elsewhere")
    for member in named:
        if _same(out, Path(member)):
            raise OutputError(f"{flag} {out}: expected a file other than those the input names, got one the command "
                              "reads; write the output elsewhere")
    for data in run_data:
        if _same(out, Path(data)) or (Path(data).is_dir() and inside(out, Path(data))):
            raise OutputError(f"{flag} {out}: expected a file other than the run's training data, got "
                              f"{'one inside ' if Path(data).is_dir() else ''}{data} (the run checks its data "
                              "against it); write the output elsewhere")
    run = enclosing_run(out)
    if run is not None:
        raise OutputError(f"{flag} {out}: expected a path outside the run folder {run} (its files belong to the "
                          "training that wrote them), got one inside it")
    if out.exists() and not force:
        raise OutputError(f"{flag} {out}: expected a new file, got an existing one; pass --force to overwrite it")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{flag} {out}: expected a writable folder, got {exc.strerror or exc} "
                          f"for {parent}") from exc
    return out


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open`` for writing through ``.tmp-NAME-XXXX`` in the same folder and ``os.replace``;
    ``-`` yields ``sys.stdout`` (text modes)."""
    if is_stdout(path):
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc}); any previous file there is unchanged") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_path(path: str | Path) -> Path:
    """A temporary path beside ``path`` for writers that take a file name (move it with :func:`commit`)."""
    path = Path(path)
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


def commit(tmp: Path, path: str | Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc}); any previous file there is unchanged") from exc
