"""The run folder: its creation rules, its ``config.json``, and ``load_run`` for every command.

Layout::

    RUN/config.json          task name, task config and metadata, train config, rnnlab version
    RUN/metrics.jsonl|csv    one record per step and per evaluation
    RUN/checkpoints/step-XXXXXXXX/   see rnnlab.train.checkpoint
    RUN/plots/*.png, RUN/report.html

A run folder is never reused silently: starting a run in a folder that already holds files
raises CheckpointError; continuing one needs ``resume``. ``new_run_dir(base)`` picks a free
name (``base``, ``base-2``, ``base-3``, ...).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from torch import nn

from rnnlab._version import __version__
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.train.checkpoint import Checkpoint, list_checkpoints, load_checkpoint, read_meta, write_json_atomic
from rnnlab.train.task import Task, build_task

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"


def rnnlab_version() -> str:
    return __version__


def _is_free(folder: Path) -> bool:
    """Absent, empty, or holding only an empty ``checkpoints/`` and temporary files (a run killed
    while being created, before its config.json existed)."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    entries = [p for p in folder.iterdir() if not p.name.startswith(".tmp-")]   # a torn config.json write
    return all(p.name == CHECKPOINTS and p.is_dir() and not any(p.iterdir()) for p in entries)


def new_run_dir(base: str | Path) -> Path:
    """``base`` if it is free (absent or an empty folder), else the first free ``base-N``."""
    base = Path(base)
    candidate, n = base, 1
    while not _is_free(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def check_new_run_dir(out: Path) -> None:
    if not _is_free(out):
        raise CheckpointError(
            f"run folder {out}: expected a new or empty folder, got an existing run "
            f"(resume it with --resume {out} / resume=True, or pick another name; "
            f"rnnlab.train.new_run_dir suggests {new_run_dir(out)})"
        )


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


def write_run_config(out: Path, task: Task, train_config: dict[str, Any]) -> None:
    write_json_atomic(
        out / CONFIG,
        {
            "task": task.name,
            "task_config": task.config_dict(),
            "task_metadata": task.metadata(),
            "train_config": train_config,
            "rnnlab_version": rnnlab_version(),
        },
    )


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    file = Path(run_dir) / CONFIG
    try:
        cfg = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{file}: expected a run folder's config.json, got no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: expected JSON, got unreadable data ({exc})") from exc
    for key in ("task", "task_config", "train_config"):
        if not isinstance(cfg, dict) or key not in cfg:
            raise CheckpointError(f"{file}: expected key {key!r}, got {sorted(cfg) if isinstance(cfg, dict) else cfg!r}")
    return cfg


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
    found = [p for p in list_checkpoints(Path(run_dir) / CHECKPOINTS) if p.name == f"step-{best_step:08d}"]
    return found[0] if found else None


def resolve_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """``which`` is "best" (falls back to the latest), "latest", or a checkpoint folder path."""
    run_dir = Path(run_dir)
    if which not in ("best", "latest"):
        return Path(which)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir}: expected a run folder, got no such folder")
    path = (best_checkpoint(run_dir) if which == "best" else None) or latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"run folder {run_dir}: expected at least one complete checkpoint, got none")
    return path


def load_run(run_dir: str | Path, checkpoint: str = "best", map_location: str = "cpu") -> tuple[Task, nn.Module, dict[str, Any]]:
    """Rebuild a trained run: ``(task, model in eval mode, checkpoint meta)``.

    The task comes back through ``build_task(name, config, metadata)`` from the checkpoint's own
    meta.json (so the vocabulary or scaling it trained with), the weights from safetensors.
    """
    path = resolve_checkpoint(run_dir, checkpoint)
    meta = read_meta(path)
    try:
        task = build_task(meta["task"], meta["task_config"], meta.get("task_metadata"))
    except KeyError as exc:
        raise CheckpointError(f"{path / 'meta.json'}: expected key {exc.args[0]!r}, got none") from exc
    except ConfigError as exc:
        raise CheckpointError(f"{path / 'meta.json'}: cannot rebuild the task ({exc})") from exc
    model = task.build_model()
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
