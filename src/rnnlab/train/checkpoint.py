"""The checkpoint folder: one writer, one reader, used by every command.

A checkpoint is a folder ``checkpoints/step-XXXXXXXX/`` holding::

    model.safetensors   the weights (safetensors: loading runs no code)
    state.pt            optimizer and scheduler state, RNG states, the task's carry; plain
                        tensors and containers, read back with ``torch.load(weights_only=True)``
    meta.json           format version, rnnlab version, task name/config/metadata, train config,
                        loop position (step, epoch, batch within epoch) and best metric; written last

Why a folder and a rename: the files are written into a hidden temporary folder in the same
``checkpoints/`` directory, each flushed and fsynced, ``meta.json`` last; then the folder is
renamed to its final name with ``os.replace`` (atomic on POSIX) and the parent fsynced. A
folder named ``step-*`` that holds ``meta.json`` is therefore complete, whatever moment a
``kill -9`` hits. Deletions go the other way: rename to a hidden name first, then remove.

Format versions (bump when the layout changes, and add a loader branch saying why):
    1: the layout above (first release).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

from rnnlab.errors import CheckpointError, NonFiniteError
from rnnlab.outputs import is_temporary

FORMAT_VERSION = 1
WEIGHTS, STATE, META = "model.safetensors", "state.pt", "meta.json"
_NAME = re.compile(r"^step-(\d{8})$")
# Test hook: seconds to sleep inside the temporary folder between state.pt and meta.json, so a
# test can kill a process in the middle of a checkpoint write. Unset in normal use.
PAUSE_ENV = "RNNLAB_TEST_CHECKPOINT_PAUSE"


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]                # meta.json as written
    state: dict[str, Any]               # state.pt: optimizer, scheduler, rng, carry (per rank)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_step(path: str | Path) -> int | None:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoints under ``ckpt_root``, oldest first (hidden temporary folders ignored)."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / META).is_file()]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def remove_stale(ckpt_root: str | Path) -> None:
    """Remove temporary and half-deleted folders that a killed process left behind."""
    root = Path(ckpt_root)
    if root.is_dir():
        for p in root.iterdir():
            if is_temporary(p.name):   # rnnlab's own names only: anything else there is left alone
                shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------- checks


def nonfinite_entries(obj: Any, prefix: str = "") -> list[str]:
    """Names of floating tensors in a nested container that hold NaN or inf."""
    bad: list[str] = []
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            bad.append(prefix or "tensor")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += nonfinite_entries(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += nonfinite_entries(v, f"{prefix}[{i}]")
    return bad


# ----------------------------------------------------------------------------- writing


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def nonfinite_json(obj: Any, prefix: str = "") -> list[str]:
    """Paths of the floats in a JSON-able container that JSON cannot hold (NaN, inf)."""
    bad: list[str] = []
    if isinstance(obj, float) and not math.isfinite(obj):
        bad.append(f"{prefix or 'value'}={obj!r}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += nonfinite_json(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += nonfinite_json(v, f"{prefix}[{i}]")
    return bad


def dumps_json(obj: Any, where: str | Path) -> str:
    """Strict JSON, or a NonFiniteError naming the values JSON cannot hold (never ValueError)."""
    bad = nonfinite_json(obj)
    if bad:
        raise NonFiniteError(f"{where}: expected finite numbers, got {', '.join(bad[:3])}"
                             + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                             + " (data values too large or a diverged model?)")
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON through a temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    text = dumps_json(obj, path)
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        _write_bytes(tmp, text.encode())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    _fsync_dir(path.parent)


def _weights_for_saving(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU copies of the state dict, with tied tensors (same storage) stored once.

    safetensors refuses tensors that share memory; a tied LM decoder/embedding would. The
    aliases go in the file's metadata and are restored on load.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() > 0 and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu").contiguous()
    return tensors, aliases


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write a complete checkpoint folder at ``path`` atomically (see the module docstring).

    Refuses (NonFiniteError) to write a non-finite tensor; raises CheckpointError when the
    folder cannot be written. An existing folder of the same name is replaced.
    """
    path = Path(path)
    tensors, aliases = _weights_for_saving(model)
    bad = nonfinite_entries(tensors, "weights") + nonfinite_entries(state, "state")
    if bad:
        raise NonFiniteError(f"checkpoint {path}: expected finite tensors, got NaN/inf in {', '.join(bad[:5])}")
    meta = {"format_version": FORMAT_VERSION, **meta}
    meta_text = dumps_json(meta, path / META)
    parent = path.parent
    tmp = parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        _write_bytes(tmp / WEIGHTS, st_save(tensors, metadata={"rnnlab_aliases": json.dumps(aliases)}))
        with open(tmp / STATE, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
        if pause > 0:
            time.sleep(pause)
        _write_bytes(tmp / META, meta_text.encode())
        _fsync_dir(tmp)
        if path.exists():  # re-saving a step (e.g. a resumed run stopping where it started)
            trash = parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
            os.replace(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, path)
        _fsync_dir(parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"checkpoint {path}: cannot write ({exc.strerror or exc})") from exc
    return path


def prune_checkpoints(ckpt_root: str | Path, keep_last: int, keep: set[int] = frozenset()) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints and the steps in ``keep``.

    The newest complete checkpoint is always kept, so the only good one is never removed.
    Returns the removed folders.
    """
    complete = list_checkpoints(ckpt_root)
    if not complete:
        return []
    keep_paths = set(complete[-max(1, keep_last):])
    keep_paths |= {p for p in complete if checkpoint_step(p) in keep}
    removed = []
    for p in complete:
        if p in keep_paths:
            continue
        trash = p.parent / f".trash-{p.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(p, trash)  # the step-* name disappears atomically, then the files go
        except FileNotFoundError:
            continue  # already gone (removed by hand)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(p)
    return removed


# ----------------------------------------------------------------------------- reading


def _load_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            aliases = json.loads((f.metadata() or {}).get("rnnlab_aliases", "{}"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{file}: expected a safetensors file, got no such file") from exc
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
        raise CheckpointError(f"{file}: expected a safetensors file, got unreadable data ({exc})") from exc
    for alias, target in aliases.items():
        if target not in tensors:
            raise CheckpointError(f"{file}: tied tensor {alias!r} points to missing {target!r}")
        tensors[alias] = tensors[target]
    return tensors


def load_weights_into(model: nn.Module, file: str | Path) -> None:
    """Load ``model.safetensors`` into ``model``, checking every name and shape first."""
    file = Path(file)
    tensors = _load_weights(file)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise CheckpointError(
            f"{file}: expected the model's parameters, got a different model "
            f"(missing {missing[:5]}, unexpected {extra[:5]})"
        )
    for name, t in own.items():
        if tuple(tensors[name].shape) != tuple(t.shape):
            raise CheckpointError(
                f"{file}: parameter {name!r} expected shape {tuple(t.shape)}, got {tuple(tensors[name].shape)} "
                f"(checkpoint from a model of a different shape)"
            )
    model.load_state_dict(tensors, strict=True)


def read_meta(path: str | Path) -> dict[str, Any]:
    file = Path(path) / META
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{file}: expected a checkpoint's meta.json, got no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: expected JSON, got unreadable data ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{file}: expected format_version {FORMAT_VERSION}, got {version!r}")
    check_meta_types(meta, file)
    return meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key -> (check, what it must be); keys that a checkpoint may lack are checked only when present.
_META_TYPES = {
    "task": (lambda v: isinstance(v, str), "a string"),
    "task_config": (lambda v: isinstance(v, dict), "a JSON object"),
    "task_metadata": (lambda v: v is None or isinstance(v, dict), "a JSON object or null"),
    "train_config": (lambda v: isinstance(v, dict), "a JSON object"),
    "step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "batch_in_epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "best_step": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0 or null"),
    "best_loss": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)), "a number or null"),
    "world_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "loop": (lambda v: isinstance(v, dict), "a JSON object"),
    "metrics": (lambda v: isinstance(v, dict), "a JSON object"),
}


def check_meta_types(meta: dict[str, Any], file: Path) -> None:
    """A meta.json edited by hand (``"step": "ten"``) is refused here, naming the key, rather than
    failing later inside the loop."""
    for key, (ok, want) in _META_TYPES.items():
        if key in meta and not ok(meta[key]):
            raise CheckpointError(f"{file}: {key}: expected {want}, got {json.dumps(meta[key])[:60]} "
                                  "(was the file edited?)")


def _short_reason(exc: Exception) -> str:
    """The informative line of torch.load's long message (the refused global, or the first line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if any(w in ln for w in ("GLOBAL", "Unsupported", "Unpickler", "unpickl")):
            return ln
    return lines[0] if lines else type(exc).__name__


def read_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``state.pt`` through ``torch.load(weights_only=True)``: a pickle that would build any
    object other than tensors and plain containers is refused before anything runs."""
    file = Path(path) / STATE
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{file}: expected training state, got no such file") from exc
    except Exception as exc:  # UnpicklingError (refused object), RuntimeError/EOFError (truncated)
        if not zipfile.is_zipfile(file) and "GLOBAL" not in str(exc):   # neither torch.save's zip nor a pickle it refuses
            raise CheckpointError(f"{file}: expected training state (torch.save's file), got a corrupt or "
                                  "truncated file (move its checkpoint folder away to resume from an earlier one)") from exc
        reason = _short_reason(exc)
        raise CheckpointError(
            f"{file}: expected weights-only training state, got a file that weights_only loading refuses "
            f"({type(exc).__name__}: {reason})"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict, got {type(state).__name__}")
    return state


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    with_state: bool = True,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Read a checkpoint folder; load its weights into ``model`` when given.

    Every failure (missing file, truncated or garbled data, a different model shape, a pickle
    that is not weights-only) raises CheckpointError naming the file and the reason.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: expected a checkpoint folder, got no such folder")
    meta = read_meta(path)
    state = read_state(path, map_location) if with_state else {}
    if model is not None:
        load_weights_into(model, path / WEIGHTS)
    return Checkpoint(path=path, meta=meta, state=state)
