"""The run folder: its creation rules, its ``config.json``, and ``load_run`` for every command.

Layout::

    RUN/config.json          task name, task config and metadata, train config, rnnlab version
    RUN/metrics.jsonl|csv    one record per step and per evaluation
    RUN/checkpoints/step-XXXXXXXX/   see rnnlab.train.checkpoint
    RUN/plots/*.png, RUN/report.html

A run folder is never reused silently: starting a run in a folder that already holds files
raises CheckpointError naming the two ways forward, ``resume`` (``--resume RUN``) and
``overwrite`` (``--overwrite``, which clears a folder only if it holds nothing but rnnlab's own
files). ``new_run_dir(base)`` picks a free name (``base``, ``base-2``, ``base-3``, ...).

Run folders are relocatable: ``config.json`` records each training data file (``data_files``)
by its absolute path, its path relative to the run folder and its SHA-256, so a command run from
another working directory, or on a run folder moved together with its data, finds the data; a
resume refuses data that changed since training. Only one process writes into a run folder at a
time (``rnnlab.train.lock``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Collection, Iterable

from torch import nn

from rnnlab._version import __version__
from rnnlab.data.digest import listing_digest, sha256_of
from rnnlab.errors import CheckpointError, ConfigError, DataError, RnnlabError, RunFolderTakenError, flag_of
from rnnlab.outputs import check_output, enclosing_run, inside, is_stdout, is_temporary
from rnnlab.train.checkpoint import Checkpoint, list_checkpoints, load_checkpoint, read_meta, write_json_atomic
from rnnlab.train.lock import LEGACY_LOCK_NAME, LOCK_NAME
from rnnlab.train.task import Task, build_task, data_checksum_hook, data_members_hook

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
# What training writes into a run folder; --overwrite clears a folder only if it holds nothing else.
# The lock's files (the current name, the Windows filelock beside it, the name of earlier releases).
LOCK_NAMES = frozenset({LOCK_NAME, LOCK_NAME + ".filelock", LEGACY_LOCK_NAME})
RUN_ENTRIES = frozenset({CONFIG, CHECKPOINTS, "metrics.jsonl", "metrics.csv", "plots", "report.html",
                         "tensorboard", "baselines.json"}) | LOCK_NAMES


def _listed(folder: Path) -> str:
    """A folder's first entries for a message, without the lock's files."""
    return ", ".join(sorted(p.name for p in folder.iterdir() if p.name not in LOCK_NAMES)[:5])


def rnnlab_version() -> str:
    return __version__


def _is_free(folder: Path) -> bool:
    """Absent, empty, or holding only an empty ``checkpoints/`` and temporary files (a run killed
    while being created, before its config.json existed)."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    entries = [p for p in folder.iterdir()
               if not is_temporary(p.name) and p.name not in LOCK_NAMES]  # a torn config.json write
    return all(p.name == CHECKPOINTS and p.is_dir() and not any(p.iterdir()) for p in entries)


def new_run_dir(base: str | Path, skip: Collection[Path] = ()) -> Path:
    """``base`` if it is free (absent or an empty folder), else the first free ``base-N``; never a
    name in ``skip`` (folders another process has just taken)."""
    base = Path(base)
    if base.name in ("", ".."):
        base = Path(os.path.abspath(base))              # "." or "..": name the suggestion after the folder
    if not base.name:                                   # the root
        return base / "run"
    candidate, n = base, 1
    while candidate in skip or not _is_free(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def describe_run(out: Path) -> str:
    """A few words on what an existing folder holds, for messages."""
    latest = latest_checkpoint(out)
    if is_run_config(out / CONFIG):
        if latest is not None:
            return f"a run with its latest checkpoint at step {int(latest.name.split('-')[1])}"
        return "a run without a checkpoint yet (stopped or killed before its first one)"
    return "a folder with other files"


def check_not_inside_run(out: Path) -> None:
    """Refuse a run folder inside another run's folder (its plots/ or checkpoints/, say): that
    run's files belong to it, and an --overwrite of it would delete the inner run with them."""
    outer = enclosing_run(Path(os.path.abspath(out)).parent)
    if outer is not None:
        raise CheckpointError(f"run folder {out}: expected a folder outside other runs' folders, got one inside the "
                              f"run folder {outer}; pick another --out")


def check_new_run_dir(out: Path) -> None:
    check_not_inside_run(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"run folder {out}: expected a folder or a new name, got an existing file")
    if not _is_free(out):
        if is_run_config(out / CONFIG):
            raise RunFolderTakenError(
                f"run folder {out}: expected a new or empty folder, got {describe_run(out)}; continue it with "
                f"--resume {out} (Python: resume=True), or start it again from scratch with --overwrite (Python: overwrite=True)"
            )
        raise RunFolderTakenError(
            f"run folder {out}: expected a new or empty folder, got {describe_run(out)} "
            f"({_listed(out)}); pick another --out "
            f"(free: {new_run_dir(out)})"
        )


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.json`` rnnlab wrote (a task name and a training config), not
    a user's file of the same name."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("task"), str) and isinstance(data.get("train_config"), dict)


# What may sit inside a run's own subfolders; anything else there is a user's and stops --overwrite.
_SUBFOLDER_ENTRIES = {
    CHECKPOINTS: lambda p: p.is_dir() and re.fullmatch(r"step-\d+", p.name) is not None,
    "plots": lambda p: p.is_file() and p.suffix in (".png", ".svg"),
    "tensorboard": lambda p: p.is_file() and (p.name.startswith("events.out.tfevents.") or p.name == "hparams.yaml"),
}


def check_clearable(out: Path) -> None:
    """Refuse an ``--overwrite`` of ``out`` unless it is a run folder rnnlab wrote and holds nothing
    else: a ``config.json`` of rnnlab's, only run entries at the top, only checkpoints, plots and
    event files in the run's subfolders, no other run inside. Nothing is touched."""
    check_not_inside_run(out)
    if not out.exists() or _is_free(out):
        return
    if not out.is_dir():
        raise CheckpointError(f"--overwrite {out}: expected a run folder, got a file")
    if not is_run_config(out / CONFIG):
        raise CheckpointError(f"--overwrite {out}: expected a run folder (a config.json written by rnnlab), got a "
                              f"folder with other files ({_listed(out)}); "
                              "nothing was deleted (pick another --out)")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in RUN_ENTRIES and not is_temporary(p.name))
    for name, allowed in _SUBFOLDER_ENTRIES.items():
        sub = out / name
        if sub.is_dir() and not sub.is_symlink():   # a symlinked subfolder is unlinked, its target left alone
            foreign += sorted(f"{name}/{p.name}" for p in sub.iterdir() if not is_temporary(p.name) and not allowed(p))
    if foreign:
        raise CheckpointError(
            f"--overwrite {out}: expected a folder holding only a run's files, got also {foreign[:5]}; "
            "nothing was deleted (pick another --out or remove those files yourself)"
        )


def check_not_an_input(out: Path, task_config: dict[str, Any]) -> None:
    """Refuse an ``--overwrite`` of ``out`` when it is, or holds, a path the task reads (its data, a
    ``--init-from`` run), given as its ``config_dict()``: the deletion would destroy an input of the
    run it starts."""
    if not out.exists():
        return
    for name, value in task_config.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v and Path(v).exists() and (os.path.realpath(v) == os.path.realpath(out) or inside(Path(v), out)):
                raise ConfigError(f"--overwrite {out}: expected a folder that is not an input of this run, got "
                                  f"the one holding its {name} ({v}); nothing was deleted (pick another --out)")


def clear_run_dir(out: Path) -> None:
    """Empty a run folder for ``overwrite``: refused unless :func:`check_clearable` passes, so a
    mistyped ``--out`` never deletes a user's folder. The caller holds the folder's lock. Every
    entry is first renamed out of the way (``.trash-*``), then deleted; a symbolic link is
    removed, never followed."""
    check_clearable(out)
    if not out.exists():
        return
    moved: list[tuple[Path, Path]] = []
    leftovers = []   # .trash-* / .tmp-* of an earlier interrupted write or overwrite: deleted too
    for p in out.iterdir():
        if p.name in LOCK_NAMES:
            continue
        if is_temporary(p.name):
            leftovers.append(p)
            continue
        trash = out / f".trash-{p.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(p, trash)  # the name disappears at once; a kill here leaves only .trash-*
        except OSError as exc:
            for back, tr in reversed(moved):   # put back what was moved: the run stays as it was
                with contextlib.suppress(OSError):
                    os.replace(tr, back)
            raise CheckpointError(f"--overwrite {out}: cannot remove {p.name} ({exc.strerror or exc}); "
                                  "nothing was deleted") from exc
        moved.append((p, trash))
    for trash in [t for _, t in moved] + leftovers:
        try:
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash)
            else:
                trash.unlink()
        except OSError as exc:
            raise CheckpointError(f"--overwrite {out}: cannot delete {trash.name} ({exc.strerror or exc}); the run's "
                                  "files were moved there, so the folder is free") from exc


def check_writable(folder: Path) -> None:
    """Probe by writing: permission bits do not tell the truth for root or read-only mounts."""
    probe = folder / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(
            f"run folder {folder}: expected a writable folder, got {exc.strerror or exc} (read-only?)"
        ) from exc


def make_run_dir(out: Path) -> None:
    check_new_run_dir(out)
    try:
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"run folder {out}: cannot create it ({exc.strerror or exc})") from exc
    check_writable(out)


def data_checksum(path: str | Path, task: str = "", task_config: dict[str, Any] | None = None) -> str | None:
    """SHA-256 of a data file, or of a data folder's files (names and contents, sorted); None if absent.
    With the ``task`` name and its config, the checksum that task registered (see
    :func:`rnnlab.train.task.register_data_checksum`) when it gives one for this path."""
    p = Path(path)
    hook = data_checksum_hook(task) if task and task_config is not None and p.exists() else None
    if hook is not None:
        got = hook(str(p), task_config)
        if got is not None:
            return got
    if p.is_file():
        return sha256_of(p)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
        return listing_digest((f.relative_to(p).as_posix(), sha256_of(f)) for f in files)
    return None


def data_keys(task: Task) -> tuple[str, ...]:
    """The task config's keys that name data files (a task declares them as ``data_keys``)."""
    return tuple(getattr(task, "data_keys", ()))


def record_data_files(out: Path, task_config: dict[str, Any], keys: tuple[str, ...],
                      previous: dict[str, Any] | None = None, task: str = "") -> dict[str, Any]:
    """``{key: {"path": absolute, "run_relative": ..., "sha256": ..., "bytes": ...}}`` for each data
    path of the task config. ``previous`` records keep their checksum (a resume never re-blesses
    changed data: it is checked against the record first)."""
    record: dict[str, Any] = {}
    for key in keys:
        value = task_config.get(key)
        if not value or not isinstance(value, str):
            continue
        p = Path(value).expanduser()
        absolute = os.path.abspath(p)
        entry: dict[str, Any] = {"path": absolute}
        try:
            entry["run_relative"] = os.path.relpath(absolute, os.path.abspath(out))
        except ValueError:  # another drive (Windows)
            pass
        old = (previous or {}).get(key)
        if isinstance(old, dict) and old.get("sha256"):
            entry["sha256"] = old["sha256"]
        else:
            entry["sha256"] = data_checksum(p, task, task_config)
        if p.is_file():
            entry["bytes"] = p.stat().st_size
        record[key] = entry
    return record


def write_run_config(out: Path, task: Task, train_config: dict[str, Any],
                     previous_data: dict[str, Any] | None = None) -> None:
    config = task.config_dict()
    write_json_atomic(
        out / CONFIG,
        {
            "task": task.name,
            "task_config": config,
            "task_metadata": task.metadata(),
            "train_config": train_config,
            "data_files": record_data_files(out, config, data_keys(task), previous_data, task.name),
            "rnnlab_version": rnnlab_version(),
        },
    )


def _refuse_a_checkpoint_folder(run_dir: Path) -> None:
    """A CheckpointError saying how to name it, when ``run_dir`` is one of a run's checkpoint folders."""
    folder = Path(os.path.abspath(run_dir))
    run = folder.parent.parent
    if folder.parent.name == CHECKPOINTS and is_run_config(run / CONFIG):
        shown = os.path.relpath(run) if not os.path.isabs(run_dir) else str(run)
        raise CheckpointError(f"run folder {run_dir}: expected a run folder, got a checkpoint of the run {shown}; "
                              f"give the run folder {shown} (with --checkpoint {folder.name} where the command takes "
                              "one; --resume continues from the latest)")


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    file = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run folder {run_dir}: expected a run folder, got "
                              + ("a file" if Path(run_dir).exists() else "no such folder"))
    try:
        cfg = json.loads(file.read_text())
    except FileNotFoundError as exc:
        _refuse_a_checkpoint_folder(Path(run_dir))
        raise CheckpointError(f"{file}: expected a run folder's config.json, got no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: expected JSON, got unreadable data ({exc})") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(cfg).__name__}")
    for key, kind in (("task", str), ("task_config", dict), ("train_config", dict)):
        if key not in cfg:
            raise CheckpointError(f"{file}: expected key {key!r}, got {sorted(cfg)}")
        if not isinstance(cfg[key], kind):
            raise CheckpointError(f"{file}: {key}: expected a JSON {'string' if kind is str else 'object'}, "
                                  f"got {json.dumps(cfg[key])[:60]} (was the file edited?)")
    for key in ("task_metadata", "data_files"):
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            raise CheckpointError(f"{file}: {key}: expected a JSON object or null, got {json.dumps(cfg[key])[:60]} "
                                  "(was the file edited?)")
    return cfg


def resolve_data_paths(run_dir: str | Path, task_config: dict[str, Any],
                       data_files: dict[str, Any] | None) -> dict[str, Any]:
    """The task config with each recorded data path pointing where the data is now: its absolute
    path if it is still there, else the same place relative to the run folder (a run moved together
    with its data). A path found nowhere becomes absolute, so errors name a real location."""
    if not data_files:
        return task_config
    out = dict(task_config)
    for key, rec in data_files.items():
        if key not in out or not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
            continue
        candidates = [Path(rec["path"])]
        if isinstance(rec.get("run_relative"), str):
            candidates.append(Path(os.path.normpath(Path(os.path.abspath(run_dir)) / rec["run_relative"])))
        found = next((c for c in candidates if c.exists()), None)
        out[key] = str(found if found is not None else candidates[0])
    return out


def _members(files: Iterable[str | Path | None], cfg: dict[str, Any]) -> list[str]:
    """The files each of ``files`` names, by the run's task (the clips of an index)."""
    hook = data_members_hook(cfg["task"]) if isinstance(cfg.get("task"), str) else None
    if hook is None:
        return []
    return [m for f in files if f and Path(f).is_file() for m in hook(str(f), cfg.get("task_config") or {})]


def _run_config_or_none(run_dir: str | Path) -> dict[str, Any]:
    try:
        return read_run_config(run_dir)
    except RnnlabError:
        return {}


def run_data_files(run_dir: str | Path, cfg: dict[str, Any] | None = None) -> list[str | Path]:
    """The training data files a run recorded, where they are now, and the files they name (the
    clips of an index): outputs of commands reading the run must not replace them (the run would
    no longer verify against its data). ``cfg``: the run's config.json, if read already."""
    cfg = _run_config_or_none(run_dir) if cfg is None else cfg
    found = resolve_data_paths(run_dir, cfg.get("task_config") or {}, cfg.get("data_files"))
    files = [found[k] for k in (cfg.get("data_files") or {}) if isinstance(found.get(k), str)]
    return files + _members(files, cfg)


def check_run_output(out: str | Path, run_dir: str | Path, inputs: Iterable[str | Path | None] = (),
                     force: bool = False, flag: str = "--out", stdout: bool = False) -> Path:
    """:func:`rnnlab.outputs.check_output` for a command that reads the run at ``run_dir``: never one
    of the run's training data files (nor a file in a recorded data folder, nor a clip an index
    names), even with ``force``; never an input of the command, nor a file an input names."""
    if is_stdout(out):                  # nothing on disk to protect: no need to list the run's data
        return check_output(out, flag=flag, stdout=stdout)
    cfg = _run_config_or_none(run_dir)
    inputs = list(inputs)
    return check_output(out, inputs, force, flag=flag, stdout=stdout, run_data=run_data_files(run_dir, cfg),
                        named=_members(inputs, cfg))


# The `rnnlab train` flag of each recorded data key, where it is not --key.
_DATA_FLAGS = {"data": "--csv"}


def verify_data_files(run_dir: str | Path, cfg: dict[str, Any] | None = None,
                      task_config: dict[str, Any] | None = None) -> None:
    """DataError unless every data file recorded in ``config.json`` is present (at its absolute or
    run-relative path, or where ``task_config`` now points) with the checksum it had when
    training started."""
    run_dir = Path(run_dir)
    cfg = cfg if cfg is not None else read_run_config(run_dir)
    file = run_dir / CONFIG
    for key, rec in (cfg.get("data_files") or {}).items():
        if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
            continue
        if task_config is not None and isinstance(task_config.get(key), str) and task_config[key]:
            where = os.path.abspath(task_config[key])
        else:
            where = resolve_data_paths(run_dir, {key: rec["path"]}, {key: rec})[key]
        if not Path(where).exists():
            given = task_config.get(key) if task_config is not None else None
            if isinstance(given, str) and given and os.path.abspath(given) != os.path.abspath(rec["path"]):
                # a path given now, not the recorded one, is the one missing
                raise DataError(f"training data {key!r} ({task_config[key]}): expected the file the run was trained "
                                f"on (recorded as {rec['path']}), got no such file")
            relative = os.path.normpath(Path(os.path.abspath(run_dir)) / rec["run_relative"]) if rec.get("run_relative") else None
            also = f" or {relative}" if relative and relative != os.path.normpath(rec["path"]) else ""
            raise DataError(f"{file}: training data {key!r}: expected it at {rec['path']}{also}, got no such file "
                            f"(moved or deleted since training?); put it back there (a resumed run may also take its new "
                            f"place: rnnlab train {cfg.get('task', 'TASK')} --resume {run_dir} "
                            f"{flag_of(key, _DATA_FLAGS)} NEW_PATH)")
        want = rec.get("sha256")
        if want:
            task = cfg.get("task") if isinstance(cfg.get("task"), str) else ""
            got = data_checksum(where, task, task_config if task_config is not None else cfg.get("task_config"))
            if got != want:
                # a path given now that is not the recorded one is another file, not the same one changed
                other = os.path.abspath(where) != os.path.abspath(rec["path"])
                label = "checksum"   # of every file in a folder, or of an index and the clips it names
                if Path(where).is_dir():
                    what = "a different folder" if other else "a folder whose files changed (one edited, added or removed)"
                elif _members([where], cfg):
                    what = ("a different file" if other else
                            "a changed file, or changed files it names (one edited, added or removed)")
                else:
                    what, label = ("a different file" if other else "a changed file"), "sha256"
                fix = (f"pass the {'folder' if Path(where).is_dir() else 'file'} it was trained on" if other
                       else "restore it")
                raise DataError(f"{file}: training data {key!r} ({where}): expected the data the run was trained on "
                                f"({label} {want[:12]}), got {what} ({label} {str(got)[:12]}); {fix}, "
                                "or train a new run on the new data")


def rebuild_task(name: Any, config: Any, metadata: Any, file: Path) -> Task:
    """``build_task`` on a config read from ``file``: a bad value is reported as the file's, not as
    a command-line flag's (an edited config.json or meta.json)."""
    if not isinstance(name, str) or not isinstance(config, dict) or not (metadata is None or isinstance(metadata, dict)):
        raise CheckpointError(f"{file}: expected task (a string), task_config (an object) and task_metadata "
                              f"(an object), got {type(name).__name__}, {type(config).__name__}, "
                              f"{type(metadata).__name__} (was the file edited?)")
    try:
        return build_task(name, config, metadata)
    except RnnlabError as exc:
        raise CheckpointError(f"{file}: cannot rebuild the {name!r} task from it ({exc}) (was the file edited?)") from exc
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{file}: cannot rebuild the {name!r} task from it ({type(exc).__name__}: {exc}) "
                              "(was the file edited?)") from exc


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(Path(run_dir) / CHECKPOINTS)
    return found[-1] if found else None


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint of the best evaluation so far, if it is still on disk; else None."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return None
    best_step = read_meta(latest).get("best_step")
    if best_step is None:
        return None
    if not isinstance(best_step, int) or isinstance(best_step, bool):
        raise CheckpointError(f"{latest / 'meta.json'}: best_step: expected an integer or null, got {best_step!r} "
                              "(was the file edited?)")
    found = [p for p in list_checkpoints(Path(run_dir) / CHECKPOINTS) if p.name == f"step-{best_step:08d}"]
    return found[0] if found else None


def resolve_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """``which`` is "best" (falls back to the latest), "latest", or one of the run's checkpoint
    folders: a path, or a name such as ``step-00000040`` (read under ``RUN/checkpoints``). A folder
    of another run is refused: its meta.json would rebuild that run's task and model."""
    run_dir = Path(run_dir)
    if which not in ("best", "latest"):
        own = run_dir / CHECKPOINTS
        path = Path(which)
        if not path.is_dir() and (own / which).is_dir():
            path = own / which
        if not path.is_dir():
            names = [p.name for p in list_checkpoints(own)] if own.is_dir() else []
            raise CheckpointError(f"--checkpoint {which}: expected best, latest or a checkpoint folder of {run_dir} "
                                  f"({', '.join(names[-3:]) or 'none yet'}), got no such folder")
        if os.path.abspath(path.parent) != os.path.abspath(own):
            raise CheckpointError(f"--checkpoint {which}: expected a checkpoint folder of {run_dir} (in {own}), got "
                                  "one elsewhere; give that folder's own run instead")
        return path
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir}: expected a run folder, got no such folder")
    path = (best_checkpoint(run_dir) if which == "best" else None) or latest_checkpoint(run_dir)
    if path is None:
        _refuse_a_checkpoint_folder(run_dir)
        raise CheckpointError(f"run folder {run_dir}: expected at least one complete checkpoint, got none")
    return path


def load_run(run_dir: str | Path, checkpoint: str = "best", map_location: str = "cpu") -> tuple[Task, nn.Module, dict[str, Any]]:
    """Rebuild a trained run: ``(task, model in eval mode, checkpoint meta)``.

    The task comes back through ``build_task(name, config, metadata)`` from the checkpoint's own
    meta.json (so the vocabulary or scaling it trained with), the weights from safetensors.
    """
    path = resolve_checkpoint(run_dir, checkpoint)
    meta = read_meta(path)
    for key in ("task", "task_config"):
        if key not in meta:
            raise CheckpointError(f"{path / 'meta.json'}: expected key {key!r}, got none")
    try:
        data_files = read_run_config(run_dir).get("data_files")
    except CheckpointError:
        data_files = None  # the checkpoint alone still rebuilds the model
    task_config = meta["task_config"]
    if isinstance(task_config, dict):
        task_config = resolve_data_paths(run_dir, task_config, data_files)
    task = rebuild_task(meta["task"], task_config, meta.get("task_metadata"), path / "meta.json")
    try:
        model = task.build_model()
    except RnnlabError as exc:
        raise CheckpointError(f"{path / 'meta.json'}: cannot rebuild the model ({exc}) (was the file edited?)") from exc
    ck: Checkpoint = load_checkpoint(path, model, with_state=False)
    model.to(map_location)
    model.eval()
    return task, model, ck.meta


def env_rank() -> int:
    """The global rank a launcher (torchrun, SLURM, Lightning) gave this process, 0 otherwise."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return 0
