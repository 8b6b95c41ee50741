"""One writer per run folder: an exclusive lock on ``RUN/.rnnlab.lock``.

Every command that writes into a run folder (training, resuming, ``--overwrite``) holds the lock
for as long as it writes; a second writer fails at once with one line naming the holder's PID.
Readers (``evaluate``, ``generate``, ``predict``, ``export``) never take it.

Why ``flock`` on an open file rather than "create the file if absent": the kernel drops the lock
when the holding process dies, however it dies (``kill -9``, a crash, a lost power supply leaves
no process at all), so a lock file left behind never blocks the next run. The file itself is
never deleted (deleting a lock file that another process has open and is waiting on lets two
processes hold "the" lock at once); it only records who holds it, for the message. On systems
without ``fcntl`` (Windows) the ``filelock`` package provides the same exclusive lock.

Locks are re-entrant within a process: a command that clears a folder and then trains in it
takes the lock once per step without refusing itself.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rnnlab.errors import CheckpointError, RunFolderTakenError

LOCK_NAME = ".rnnlab.lock"
# The name earlier releases used: a generic name a user's own file may have (and a lock truncates
# its file), so it is no longer written; run folders that hold one still count as runs.
LEGACY_LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunLockedError(RunFolderTakenError):
    """Another process holds the run folder's lock."""


# path -> (handle, depth): the locks this process holds.
_HELD: dict[str, tuple[object, int]] = {}


def lock_path(folder: str | Path) -> Path:
    return Path(folder) / LOCK_NAME


def _holder(file: Path) -> str:
    """What the lock file says about its holder: "PID 1234 (rnnlab train lm ..., since 12:00:01 UTC)"."""
    try:
        lines = file.read_text(errors="replace").splitlines()
    except OSError:
        return "an unknown process"
    if not lines or not lines[0].strip().isdigit():
        return "an unknown process (it has not written its PID yet)"
    extra = []
    if len(lines) > 2 and lines[2].strip():
        extra.append(lines[2].strip()[:120])
    if len(lines) > 1 and lines[1].strip():
        extra.append(f"since {lines[1].strip()}")
    return f"PID {lines[0].strip()}" + (f" ({', '.join(extra)})" if extra else "")


def _wait_for_holder(file: Path) -> str:
    """The holder writes its PID just after taking the lock: give it a moment to appear."""
    for _ in range(25):
        holder = _holder(file)
        if holder.startswith("PID"):
            return holder
        time.sleep(0.02)
    return holder


def _stamp() -> str:
    argv = "rnnlab " + " ".join(sys.argv[1:])
    return f"{os.getpid()}\n{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n{argv}\n"


def acquire(folder: str | Path) -> None:
    """Take the exclusive lock of ``folder`` (which must exist) or raise RunLockedError."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        handle, depth = _HELD[key]
        _HELD[key] = (handle, depth + 1)
        return
    file = lock_path(folder)
    refused = RunLockedError(
        f"run folder {folder}: expected no other process writing to it, got one holding its lock: "
        f"{{holder}}; wait for it to finish or stop it, then run the command again"
    )
    if fcntl is None:  # pragma: no cover - Windows
        import filelock   # Windows only: a dependency there (pyproject), absent elsewhere

        handle = filelock.FileLock(str(file) + ".filelock", timeout=0)
        try:
            handle.acquire()
        except filelock.Timeout:
            raise RunLockedError(str(refused).replace("{holder}", _holder(file))) from None
        file.write_text(_stamp())
        _HELD[key] = (handle, 1)
        return
    try:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError(f"run folder {folder}: expected a writable folder, got {exc.strerror or exc} "
                              "creating its lock file (read-only?)") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(str(refused).replace("{holder}", _wait_for_holder(file))) from None
    except OSError as exc:
        os.close(fd)
        raise CheckpointError(f"run folder {folder}: cannot lock it ({exc.strerror or exc})") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _stamp().encode(), 0)
    except OSError:
        pass  # the PID is only for the message; the lock itself is held
    _HELD[key] = (fd, 1)


def release(folder: str | Path) -> None:
    key = str(Path(folder).resolve())
    if key not in _HELD:
        return
    handle, depth = _HELD[key]
    if depth > 1:
        _HELD[key] = (handle, depth - 1)
        return
    del _HELD[key]
    if fcntl is None:  # pragma: no cover - Windows
        handle.release()  # type: ignore[attr-defined]
        return
    try:
        os.ftruncate(handle, 0)  # type: ignore[arg-type]
    except OSError:
        pass
    os.close(handle)  # type: ignore[arg-type]  # closing the descriptor drops the flock


def is_locked(folder: str | Path) -> str | None:
    """The holder's description if another process holds the lock of ``folder``, else None."""
    folder = Path(folder)
    file = lock_path(folder)
    if fcntl is None or not file.is_file() or str(folder.resolve()) in _HELD:
        return None
    fd = os.open(file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(file)
    finally:
        os.close(fd)
    return None


@contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """``with run_lock(RUN): ...``: hold the lock of the (existing) folder RUN for the block."""
    acquire(folder)
    try:
        yield
    finally:
        release(folder)
