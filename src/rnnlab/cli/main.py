"""The ``rnnlab`` command. Each area adds its commands in its own module (``rnnlab.cli.<area>``)
with a ``register(app, train_app)`` function, listed in ``_AREAS``; a missing module is skipped.

How a failure ends (docs/cli.md):

- a usage error (unknown command or flag, missing argument, bad value): typer's usage message, exit 2;
- an rnnlab error (:class:`rnnlab.errors.RnnlabError`): ``rnnlab: error: ...``, one line, exit 1;
- any other exception: one line naming it and the log file holding its traceback, exit 1;
- Ctrl-C: ``rnnlab: interrupted``, exit 130.

``rnnlab --debug ...`` prints the traceback instead of the one line.

Command modules import torch, Lightning and matplotlib inside the command functions, never at
module level, so that ``rnnlab --help`` answers without loading them.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
import traceback
from pathlib import Path

import typer

from rnnlab._version import __version__
from rnnlab.errors import Interrupted, RnnlabError

app = typer.Typer(
    name="rnnlab",
    help="Recurrent networks (RNN, LSTM, GRU) from their equations: train, compare, explain, ship.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train a model for a task into a run folder.", no_args_is_help=True)
app.add_typer(train_app, name="train")

_AREAS = ["info", "train", "demo", "lm", "classify", "forecast", "speech", "seq2seq", "bench", "export", "report"]
_DEBUG = False
_KEEP_LOGS = 20   # traceback logs kept in the log folder; older ones are deleted


def _click_exception_type() -> type[Exception]:
    """The base class of the errors typer shows itself (usage errors, bad parameters).

    typer up to 0.25 uses click's ``click.ClickException``; from 0.26 typer vendors click and no
    longer depends on it. Both expose ``typer.BadParameter``, a subclass of that base, so the
    base is found through it rather than by importing either package's private modules."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "ClickException":
            return cls
    raise ImportError(f"typer {getattr(typer, '__version__', '?')}: expected typer.BadParameter "
                      f"to derive from a ClickException, got {typer.BadParameter.__mro__}")


_ClickException = _click_exception_type()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"rnnlab {__version__} (torch {importlib.metadata.version('torch')})")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print rnnlab's and torch's versions and exit.")) -> None:
    global _DEBUG
    _DEBUG = debug


for _area in _AREAS:
    try:
        _module = importlib.import_module(f"rnnlab.cli.{_area}")
    except ModuleNotFoundError as exc:
        if exc.name != f"rnnlab.cli.{_area}":
            raise
        continue
    _module.register(app, train_app)


def _help_text(doc: str) -> str:
    """A command's docstring as its --help shows it. Typer keeps the line breaks of every paragraph
    after the first, so the source's wrapping would show as ragged lines: each line is joined to the
    next, except, after the first paragraph (the one-line summary of the command list), after a line
    ending in ":" or ";" (the items of a list)."""
    paragraphs = []
    for i, para in enumerate(inspect.cleandoc(doc).split("\n\n")):
        lines = para.splitlines()
        joined = lines[0] if lines else ""
        for prev, line in zip(lines, lines[1:]):
            joined += ("\n" if i and prev.rstrip().endswith((":", ";")) else " ") + line.strip()
        paragraphs.append(joined)
    return "\n\n".join(paragraphs)


for _info in app.registered_commands + train_app.registered_commands:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _help_text(_info.callback.__doc__)


def _out_of_memory(exc: BaseException) -> str:
    """The allocator's message when ``exc`` is a failed allocation (MemoryError, torch's CPU
    allocator or CUDA out of memory), else ""."""
    oom = getattr(__import__("torch"), "OutOfMemoryError", ()) if "torch" in sys.modules else ()
    if isinstance(exc, MemoryError) or (oom and isinstance(exc, oom)):
        return str(exc) or type(exc).__name__
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text):
        m = re.search(r"you tried to allocate \d+ bytes", text)
        return m.group(0) if m else text
    return ""


def log_dir() -> Path:
    """Where tracebacks of unexpected errors go: ``RNNLAB_LOG_DIR``, else the user cache folder
    (``$XDG_CACHE_HOME/rnnlab/logs``, ``~/Library/Caches/rnnlab/logs`` on macOS,
    ``%LOCALAPPDATA%\\rnnlab\\logs`` on Windows)."""
    if os.environ.get("RNNLAB_LOG_DIR"):
        return Path(os.environ["RNNLAB_LOG_DIR"])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        cache = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        cache = Path.home() / "Library" / "Caches"
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rnnlab" / "logs"


def _write_log(exc: BaseException, argv: list[str]) -> Path | None:
    """Write the command line and ``exc``'s traceback to a new file in :func:`log_dir`; None
    when no file can be written there (the caller then says so)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = (f"rnnlab {' '.join(argv)}\n"
            f"python {sys.version.split()[0]}, typer {getattr(typer, '__version__', '?')}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"rnnlab-{stamp}-{os.getpid()}.log"
        path.write_text(text, encoding="utf-8")
        for old in sorted(folder.glob("rnnlab-*.log"))[:-_KEEP_LOGS]:
            old.unlink(missing_ok=True)
    except OSError:
        return None
    return path


def _one_line(text: str, whole: bool) -> str:
    """``text`` on one line: all of it joined (``whole``), else its first line (the log has the rest)."""
    lines = [s.strip() for s in text.strip().splitlines() if s.strip()]
    return " ".join(lines) if whole or len(lines) <= 1 else f"{lines[0]} ..."


# Commands whose --json takes a file ('-': standard output).
_JSON_FILE_COMMANDS = ("bench",)


def _bare_json_means_stdout(args: list[str]) -> list[str]:
    """``rnnlab bench --json`` with no file after it (at the end, or before another option) as
    ``--json -``: standard output, as the bare flag means on every other command."""
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in _JSON_FILE_COMMANDS:
        return args
    for i, a in enumerate(args):
        if a == "--json" and (i + 1 == len(args) or (args[i + 1].startswith("-") and args[i + 1] != "-")):
            return args[:i + 1] + ["-"] + args[i + 1:]
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command, turn every failure into an exit status and at most one line
    on stderr (usage errors keep typer's usage block)."""
    global _DEBUG
    _DEBUG = False
    args = _bare_json_means_stdout(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args   # also before the callback has run (an error while parsing)
    try:
        code = app(args=args, standalone_mode=False, prog_name="rnnlab")
    except _ClickException as exc:   # usage errors (exit 2) and click's few others (exit 1)
        exc.show()
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:   # end of input at a prompt
        print("rnnlab: aborted", file=sys.stderr)
        return 1
    except KeyboardInterrupt:   # outside typer's own handling, which returns 130 (below)
        print("rnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (rnnlab ... | head): point stdout at /dev/null so that the
        # interpreter's last flush does not fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Interrupted as exc:   # a training run stopped by a signal, after its last checkpoint
        print(f"rnnlab: interrupted: {exc}", file=sys.stderr)
        return exc.exit_code
    except RnnlabError as exc:
        if debug or _DEBUG:
            traceback.print_exc()
        else:
            print(f"rnnlab: error: {_one_line(str(exc), whole=True)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if _out_of_memory(exc) and not (debug or _DEBUG):
            print(f"rnnlab: error: out of memory: {_one_line(_out_of_memory(exc), whole=False)}; a smaller "
                  "model, batch or sequence length needs less (--debug shows where)", file=sys.stderr)
            return 1
        if debug or _DEBUG:
            traceback.print_exc()
            return 1
        log = _write_log(exc, args)
        where = f"traceback in {log}" if log else f"no log written to {log_dir()}; rerun with --debug"
        what = type(exc).__qualname__ + (f": {_one_line(str(exc), whole=False)}" if str(exc).strip() else "")
        print(f"rnnlab: unexpected error: {what} ({where})", file=sys.stderr)
        return 1
    if code == 130:   # typer turns Ctrl-C into Exit(130), which standalone_mode=False returns
        print("rnnlab: interrupted", file=sys.stderr)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
