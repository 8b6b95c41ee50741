"""``fit``: the one training loop every task goes through.

Why Lightning **Fabric** with a short explicit loop, not the Lightning Trainer: exact resume of
a stateful stream needs us to own the loop. A language model carries its hidden state from one
batch to the next within an epoch; resuming mid-epoch must regenerate that epoch's batches,
skip the consumed ones, and hand the saved carry to the next ``training_step``. The Trainer's
loops, fault-tolerant sampler state and callback order would have to be bent for each of these;
with Fabric we keep what a library should do for us (device placement, precision, DDP
process groups with gloo or NCCL, launching, loggers) and write the ~150 lines of loop that
define the order of events, which is exactly what a bitwise-equal resume depends on.

One step, in order (the checkpoint is taken at the end, so a resumed run starts there):

    train step (forward via the task, backward, clip, non-finite check, optimizer, schedule)
    -> log -> evaluate (every ``eval_every`` steps and after the epoch's last batch)
    -> advance the epoch after its last batch -> decide to stop -> checkpoint if due

The epoch's last batch is known by looking one batch ahead, so the epoch-end evaluation belongs
to the same step as the batch and a checkpoint never falls between them. Only the scheduled
evaluations drive what can change the trajectory (decay-on-plateau, NT-ASGD, early stopping).
A run whose budget (``max_steps``, ``max_time``) ends between them is evaluated once more at its
last step, for "best" alone: its final weights can be the best, and the summary scores them.
Continued later with a larger budget, such a run trains as one run straight through (early
stopping keeps its own bar, the lowest scheduled evaluation); its metrics hold that one more
evaluation, and its "best" may be that step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from rnnlab.errors import CheckpointError, ConfigError, DataError, NonFiniteError, RnnlabError, expected
from rnnlab.train import checkpoint as ckpt
from rnnlab.train import lock as run_lock
from rnnlab.train.compile import CompiledModel, check_backend, compile_methods
from rnnlab.train.config import RESUME_MUTABLE, TrainConfig
from rnnlab.train.metrics import MetricsLog
from rnnlab.train.ntasgd import NTASGD
from rnnlab.train.progress import ProgressBar
from rnnlab.train.report import write_report
from rnnlab.train.rng import capture_rng, restore_rng, seed_all
from rnnlab.train.rundir import (
    CHECKPOINTS,
    check_clearable,
    check_new_run_dir,
    check_not_an_input,
    check_writable,
    clear_run_dir,
    data_keys,
    latest_checkpoint,
    make_run_dir,
    read_run_config,
    rebuild_task,
    resolve_data_paths,
    rnnlab_version,
    verify_data_files,
    write_run_config,
)
from rnnlab.train.task import Task


# What lets a run that stopped for each reason go on (a resume's stop reason is never max_time: its clock restarts).
_BUDGET_FLAGS = {"max_steps": "give a larger --max-steps to continue it",
                 "max_epochs": "give a larger --max-epochs to continue it",
                 "early_stopping": "early stopping ended it (its --patience cannot change on --resume): train a new run "
                                   "to go further"}


@dataclass
class RunResult:
    run_dir: Path
    step: int                               # optimizer steps taken in total (batches consumed)
    epoch: int                              # completed epochs
    stop_reason: str                        # max_steps | max_epochs | max_time | early_stopping | SIGINT | SIGTERM
    last_checkpoint: Path | None
    best_step: int | None                   # step of the best evaluation (lowest valid loss)
    best_loss: float | None
    metrics: dict[str, float]               # the last evaluation's metrics (empty if none ran)
    skipped_steps: int = 0                  # steps dropped by nonfinite="skip"
    resumed_from: Path | None = None        # the checkpoint this invocation started from
    compile: dict[str, Any] | None = None   # with config.compile: backend, first_step_s, graphs, recompiles
    model: nn.Module | None = field(default=None, repr=False)   # the trained model (rank 0's), for notebooks
    # seconds in this invocation's training loop (steps, evaluations, checkpoints), the span --max-time
    # bounds; setup before it (the first import of the training library, building the model) is not counted
    train_seconds: float = 0.0


@dataclass
class LoopState:
    """The loop's position, saved as JSON in every checkpoint's meta.json."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0                 # batches of ``epoch`` already consumed
    last_eval_step: int | None = None
    best_loss: float | None = None          # "best": the lowest validation loss, at best_step
    best_step: int | None = None
    scheduled_best_loss: float | None = None   # the lowest of the scheduled evaluations (early stopping's bar)
    bad_evals: int = 0                      # scheduled evaluations since that one (early stopping)
    skipped_steps: int = 0
    records: int = 0                        # lines of metrics.jsonl at this point (truncated to on resume)
    epoch_loss_sum: float = 0.0             # sum of this epoch's finite step losses (for the epoch record)
    epoch_steps: int = 0                    # steps counted in epoch_loss_sum

    @classmethod
    def from_meta(cls, data: dict[str, Any], where: Path) -> "LoopState":
        given = data
        if isinstance(data, dict) and "scheduled_best_loss" not in data:
            # saved before a run's last step could be evaluated off the schedule: every evaluation was scheduled
            data = {**data, "scheduled_best_loss": data.get("best_loss")}
        try:
            state = cls(**data)
        except TypeError as exc:
            raise CheckpointError(f"{where}: loop state expected {[f.name for f in dataclasses.fields(cls)]}, got {sorted(given)}") from exc
        for f in dataclasses.fields(cls):
            v = getattr(state, f.name)
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if f.name in ("epoch_loss_sum", "best_loss", "scheduled_best_loss"):
                ok = number or (v is None and f.name != "epoch_loss_sum")
            else:
                ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (
                    v is None and f.name in ("last_eval_step", "best_step"))
            if not ok:
                raise CheckpointError(f"{where}: loop.{f.name}: expected {'a number' if f.name.endswith(('sum', 'loss')) else 'an integer >= 0'}, "
                                      f"got {json.dumps(v)[:40]} (was the file edited?)")
        return state


# ----------------------------------------------------------------------------- building blocks


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "ntasgd":
        return NTASGD(params, lr=config.lr, weight_decay=config.weight_decay, nonmono=config.nonmono)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """Per-step schedules (step, cosine) step after each optimizer step; plateau after each eval."""
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.schedule == "plateau":
        # The PTB recipe: if the valid loss did not improve, divide the lr by a factor (4 in Zaremba et al.).
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=1.0 / config.plateau_factor, patience=config.plateau_patience,
            threshold=0.0, min_lr=config.min_lr,
        )
    if config.schedule == "cosine":
        warm, total, floor = config.warmup_steps, config.max_steps, config.min_lr / config.lr

        def factor(step: int) -> float:  # a closure, not stored by state_dict (weights-only safe)
            if step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def _peek(it: Iterator[Any]) -> Iterator[tuple[Any, bool]]:
    """Yield (batch, is_last) by looking one batch ahead."""
    end = object()
    cur = next(it, end)
    while cur is not end:
        nxt = next(it, end)
        yield cur, nxt is end
        cur = nxt


def _map_tensors(obj: Any, fn) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_map_tensors(v, fn) for v in obj)
    if isinstance(obj, list):
        return [_map_tensors(v, fn) for v in obj]
    return obj


def _json_normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _quiet_lightning(quiet: bool) -> None:
    for name in ("lightning.fabric", "lightning.pytorch", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)


def _is_rank_zero_by_env() -> bool:
    """Before launching: is this the process that owns the run folder? (torchrun sets RANK;
    Lightning's own launcher sets LOCAL_RANK/NODE_RANK in the processes it starts.)"""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _world(config: TrainConfig) -> tuple[int, int]:
    """(devices, num_nodes) of the run: the config's, or under torchrun with one device asked for,
    the launcher's world."""
    devices, num_nodes = config.devices, config.num_nodes
    if devices * num_nodes == 1 and torch.distributed.is_torchelastic_launched():
        devices = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        num_nodes = max(1, int(os.environ.get("WORLD_SIZE", "1")) // devices)
    return devices, num_nodes


def _make_fabric(config: TrainConfig, out: Path):
    from lightning.fabric import Fabric   # lazy: lightning is slow to import, and only fit/resume use it

    _quiet_lightning(config.quiet)  # after the import: lightning sets its loggers' level when imported

    devices, num_nodes = _world(config)
    loggers = []
    if importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None:
        from lightning.fabric.loggers import TensorBoardLogger   # lazy: as Fabric above, and only with tensorboard

        loggers.append(TensorBoardLogger(root_dir=str(out), name="tensorboard", version=""))
    strategy = "ddp" if devices * num_nodes > 1 else "auto"
    return Fabric(
        accelerator=config.accelerator, strategy=strategy, devices=devices, num_nodes=num_nodes,
        precision=config.precision, loggers=loggers or None,
    )


class _Signals:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and returns.
    A second signal raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------- run folder


def _normal_config(config: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """A task config for comparison: JSON-normal, data paths absolute."""
    out = _json_normal(config)
    for k in keys:
        if isinstance(out.get(k), str) and out[k]:
            out[k] = os.path.abspath(os.path.expanduser(out[k]))
    return out


def _prepare_run_dir(out: Path, task: Task, config: TrainConfig, resume: bool) -> Path | None:
    """Create (or check, when resuming) the run folder; return the checkpoint to start from."""
    if not resume:
        make_run_dir(out)
        write_run_config(out, task, config.to_dict())
        return None
    saved = read_run_config(out)
    if saved["task"] != task.name:
        raise ConfigError(f"resume {out}: task expected {saved['task']!r} (the run's), got {task.name!r}")
    keys = data_keys(task)
    recorded = saved.get("data_files") or {}
    saved_task = resolve_data_paths(out, saved["task_config"], recorded)
    mine = task.config_dict()
    # Recorded data files are compared by content (verify_data_files), not by where they are now.
    a = {k: v for k, v in _normal_config(saved_task, keys).items() if k not in recorded}
    # The task was rebuilt from the saved config: a key the run lacks (an option added since it
    # was trained) holds its default there, which is what the run used.
    b = {k: v for k, v in _normal_config(mine, keys).items() if k not in recorded and k in a}
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ConfigError(f"resume {out}: task config expected the run's values for {diff}, got "
                          + ", ".join(f"{k}={b.get(k)!r} (was {a.get(k)!r})" for k in diff))
    old, new = saved["train_config"], config.to_dict()
    changed = sorted(k for k in new if k not in RESUME_MUTABLE and _json_normal(old.get(k)) != _json_normal(new[k]))
    if changed:
        raise ConfigError(
            f"resume {out}: train config expected the run's values for {changed} "
            f"(only {sorted(RESUME_MUTABLE)} may change), got "
            + ", ".join(f"{k}={new[k]!r} (was {old.get(k)!r})" for k in changed)
        )
    verify_data_files(out, saved, mine)
    applied = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in sorted(RESUME_MUTABLE - {"quiet", "report"})
               if k in new and k in old and _json_normal(old[k]) != _json_normal(new[k])]   # (how it talks: not news)
    applied += [f"{k} {rec.get('path')!r} -> {os.path.abspath(mine[k])!r} (same content)" for k, rec in recorded.items()
                if isinstance(rec, dict) and k in mine and isinstance(mine[k], str)
                and os.path.abspath(mine[k]) != rec.get("path")]
    if applied:  # said even with quiet: a flag that changed the run must not pass unnoticed
        print(f"rnnlab: resume {out}: applying {', '.join(applied)}", file=sys.stderr, flush=True)
    check_writable(out)
    ckpt.remove_stale(out / CHECKPOINTS)
    write_run_config(out, task, new, previous_data=saved.get("data_files"))
    return latest_checkpoint(out)


def _ensure_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"run folder {out}: cannot create it ({exc.strerror or exc})") from exc


def _lock_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Check the folder, then take its lock (released by the caller). Checks that depend on the
    folder's content are repeated under the lock: another process may have started meanwhile."""
    if resume:
        read_run_config(out)
        run_lock.acquire(out)
        return
    if out.exists() and not out.is_dir():
        check_new_run_dir(out)
    # refused before the lock file is created: a refused --out leaves the folder as it was
    if overwrite:
        check_clearable(out)
    else:
        check_new_run_dir(out)
    _ensure_folder(out)
    run_lock.acquire(out)
    try:
        if overwrite:
            clear_run_dir(out)
        check_new_run_dir(out)
    except BaseException:
        run_lock.release(out)
        raise


# ----------------------------------------------------------------------------- the loop


# Stops after which the run's last step is evaluated if it was not: its budget ran out. A signal
# stops without (a prompt exit; a run stopped so at its last step is evaluated when resumed); the
# other stops follow an evaluation.
_FINAL_EVALUATION = ("max_steps", "max_time")


def fit(task: Task, config: TrainConfig | None = None, out: str | Path = "run", resume: bool = False,
        overwrite: bool = False) -> RunResult:
    """Train ``task`` into the run folder ``out``; continue it from its latest checkpoint if ``resume``.
    Without ``config``, ``TrainConfig.for_task(task)``: the task's own training defaults.

    Raises CheckpointError for a reused folder without ``resume`` (nothing is overwritten unless
    ``overwrite``, which clears a folder holding only a run's files), for a folder another
    process is writing to (``rnnlab.train.lock``),
    NonFiniteError on a NaN/inf loss or gradient (unless ``config.nonfinite == "skip"``).

    With ``devices * num_nodes > 1`` this is one rank of a DDP job: under torchrun (or SLURM) each
    process calls ``fit``; otherwise Lightning's launcher re-runs the current command once per
    extra device, so from a notebook use the CLI or torchrun. Every rank must get the same
    number of equally shaped batches from ``train_batches(epoch, rank, world_size)``, and the
    task's ``training_step`` must call ``model(...)`` (the DDP-wrapped forward) for gradients
    to be averaged.
    """
    config = TrainConfig.for_task(task) if config is None else config
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"fit config: expected a TrainConfig, got {type(config).__name__}")
    config.validate()
    if config.compile:
        check_backend(config.compile_backend)   # before the run folder is touched
    if config.accelerator == "cuda" and not torch.cuda.is_available():   # likewise (Lightning's error is a traceback)
        raise ConfigError(expected("accelerator (--accelerator)", "a CUDA GPU that torch sees, for 'cuda'",
                                   f"none here (torch {torch.__version__}); use cpu, or auto to take a GPU where one is"))
    out = Path(out)
    if config.threads:
        torch.set_num_threads(config.threads)
    _quiet_lightning(config.quiet)

    if resume and overwrite:
        raise ConfigError("fit: expected resume or overwrite, got both")
    # Rank 0 of a DDP job owns the folder; a run of one process owns it whatever RANK or
    # SLURM_PROCID say (two such processes under srun would otherwise both write it).
    devices, num_nodes = _world(config)
    locked = devices * num_nodes == 1 or _is_rank_zero_by_env()
    if overwrite:   # before anything is deleted: never an input of the run it starts
        check_not_an_input(out, task.config_dict())
    if locked:  # fail before any process is launched; hold the folder until training ends
        _lock_run_dir(out, resume, overwrite)
    try:
        return _fit_locked(task, config, out, resume)
    finally:
        if locked:
            run_lock.release(out)


def _fit_locked(task: Task, config: TrainConfig, out: Path, resume: bool) -> RunResult:
    fabric = _make_fabric(config, out)
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size

    start: Path | None = None
    error: RnnlabError | None = None
    if fabric.is_global_zero:
        try:
            start = _prepare_run_dir(out, task, config, resume)
        except RnnlabError as exc:
            error = exc
    if world > 1:
        message = fabric.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        start_name = fabric.broadcast(None if start is None else str(start))
        start = None if start_name is None else Path(start_name)
        if message and error is None:
            raise CheckpointError(f"rank {rank}: rank 0 could not prepare the run folder ({message})")
    if error is not None:
        raise error
    return _Run(task, config, out, fabric, start).train()


def resume(run_dir: str | Path, data_paths: dict[str, str] | None = None, **changes: Any) -> RunResult:
    """Continue the run in ``run_dir`` from its latest checkpoint, rebuilding the task from the
    folder; ``changes`` may set the options in ``RESUME_MUTABLE`` (e.g. ``max_steps=2000``).
    ``data_paths`` points recorded data files to a new place (``{"train": "moved/train.csv"}``);
    their content must be the one the run was trained on (checked by SHA-256)."""
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    file = run_dir / "config.json"
    task_config = resolve_data_paths(run_dir, saved["task_config"], saved.get("data_files"))
    for key, path in (data_paths or {}).items():
        if key not in (saved.get("data_files") or {}):
            raise ConfigError(f"resume {run_dir}: data path {key!r}: expected one of the run's data files "
                              f"{sorted(saved.get('data_files') or {})}, got {key!r}")
        task_config[key] = os.path.abspath(path)
    task = rebuild_task(saved["task"], task_config, saved.get("task_metadata"), file)
    try:
        TrainConfig.from_dict(saved["train_config"])
    except ConfigError as exc:
        raise CheckpointError(f"{file}: train_config: {exc} (was the file edited?)") from exc
    config = TrainConfig.from_dict({**saved["train_config"], **changes})
    done = [ckpt.checkpoint_step(p) or 0 for p in ckpt.list_checkpoints(run_dir / CHECKPOINTS)]
    own = saved["train_config"].get("max_steps")
    if changes.get("max_steps") and done and config.max_steps <= max(done) and config.max_steps != own:
        # it would stop at once, and config.json would record a budget it never had (the run's own
        # budget, reached, trains nothing and says so, as a resume without --max-steps does)
        raise ConfigError(expected("max_steps (--max-steps)", f"more than the {max(done)} steps the run has done",
                                   repr(config.max_steps)))
    return fit(task, config, run_dir, resume=True)


class _Run:
    def __init__(self, task: Task, config: TrainConfig, out: Path, fabric, start: Path | None):
        self.task, self.config, self.out, self.fabric = task, config, out, fabric
        self.rank, self.world = fabric.global_rank, fabric.world_size
        self.root = out / CHECKPOINTS
        self.loop = LoopState()
        self.carry: Any = None
        self.last_saved: Path | None = start
        self.start = start
        self.last_metrics: dict[str, float] = {}

        seed_all(config.seed)
        self.model = task.build_model()
        self.optimizer = make_optimizer(config, self.model)
        self.scheduler = make_scheduler(config, self.optimizer)
        state = None
        if start is not None:
            ck = ckpt.load_checkpoint(start, self.model)
            state = ck.state
            self.loop = LoopState.from_meta(ck.meta.get("loop", {}), start / ckpt.META)
            saved_world = ck.meta.get("world_size", 1)
            if saved_world != self.world:
                raise ConfigError(f"resume {start}: world size expected {saved_world} (the run's), got {self.world}")
        self.model_f, self.optimizer_f = fabric.setup(self.model, self.optimizer)
        self.rng_state = None
        if state is not None:
            where = start / ckpt.STATE
            try:
                self.optimizer.load_state_dict(state["optimizer"])
                if self.scheduler is not None:
                    self.scheduler.load_state_dict(state["scheduler"])
                self.rng_state = state["rng"][self.rank]
                self.carry = fabric.to_device(state["carry"][self.rank])
            except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
                raise CheckpointError(f"{where}: expected optimizer/scheduler/rng/carry state for this run, got unusable data ({exc})") from exc
        self.log = MetricsLog(out, keep_records=self.loop.records) if fabric.is_global_zero else None
        self.bar = None
        # Last (train() restores it), in place, after Fabric has converted and moved the model: the
        # module Fabric (and DDP) call is self.model itself, which keeps its own state_dict keys.
        self.compiled = CompiledModel(self.model, compile_methods(task), config.compile_backend) if config.compile else None

    # --------------------------------------------------------------- pieces

    def _sync_flags(self, *flags: bool) -> list[bool]:
        """Every rank must take the same decision (stop, skip): OR the flags across ranks."""
        if self.world == 1:
            return list(flags)
        t = torch.tensor([float(f) for f in flags], device=self.fabric.device)
        t = self.fabric.all_reduce(t, reduce_op="sum")
        return [bool(v > 0) for v in t.tolist()]

    def _evaluate(self, final: bool = False) -> bool:
        """Evaluate on "valid"; update plateau schedule, best and early stopping. True if "best"
        moved here. ``final`` (the run's last step, off the schedule): "best" only; the schedule,
        NT-ASGD and early stopping see the scheduled evaluations alone, so that a run continued
        with a larger budget trains as one run straight through."""
        self.model.eval()
        with torch.no_grad(), self._averaged(), self._eager():
            metrics = {k: float(v) for k, v in self.task.evaluate(self.model, "valid").items()}
        self.model.train()
        if (not final and isinstance(self.optimizer, NTASGD) and self.optimizer.observe(metrics["loss"], self.loop.step)
                and self.bar):
            self.bar.note(f"ntasgd: averaging from step {self.loop.step}")
        if "loss" not in metrics:
            raise ConfigError(f"task {self.task.name} evaluate: expected a 'loss' entry, got {sorted(metrics)}")
        self.last_metrics = metrics
        loop = self.loop
        loop.last_eval_step = loop.step
        if self.log is not None:
            self._log({"kind": "eval", "step": loop.step, "epoch": loop.epoch, **{f"valid_{k}": v for k, v in metrics.items()}})
        if self.config.schedule == "plateau" and not final:
            self.scheduler.step(metrics["loss"])
        finite = math.isfinite(metrics["loss"])
        if self.config.select == "last":   # _save moves "best" to each checkpoint; nothing to stop early on
            return False
        if not final:
            if finite and (loop.scheduled_best_loss is None or metrics["loss"] < loop.scheduled_best_loss):
                loop.scheduled_best_loss, loop.bad_evals = metrics["loss"], 0
            else:
                loop.bad_evals += 1
        if finite and (loop.best_loss is None or metrics["loss"] < loop.best_loss):
            loop.best_loss, loop.best_step = metrics["loss"], loop.step
            return True
        return False

    def _final_evaluation(self, saved: bool = False) -> None:
        """The run's last step, scored when its budget ended it between scheduled evaluations: saved
        first (a job killed during a long evaluation keeps its checkpoint; ``saved``: it is on disk
        already, as on resume), then evaluated, then saved again with the evaluation (its record,
        the step it was taken at, "best"), so that a later resume neither repeats nor loses it."""
        if not saved:
            self._save()
        self._evaluate(final=True)
        self._save()

    def _eager(self):
        """Evaluation runs the model eagerly even when the training step is compiled."""
        return self.compiled.eager() if self.compiled is not None else contextlib.nullcontext()

    def _averaged(self):
        """NT-ASGD evaluates and saves the averaged weights; other optimizers: nothing to do."""
        return self.optimizer.averaged() if isinstance(self.optimizer, NTASGD) else contextlib.nullcontext()

    def _log(self, record: dict[str, Any]) -> None:
        self.log.log(record)
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step",)}
        if self.fabric.loggers:
            self.fabric.log_dict(numbers, step=record["step"])

    def _meta(self) -> dict[str, Any]:
        task = self.task
        return {
            "rnnlab_version": rnnlab_version(),
            "task": task.name,
            "task_config": task.config_dict(),
            "task_metadata": task.metadata(),
            "train_config": self.config.to_dict(),
            "step": self.loop.step,
            "epoch": self.loop.epoch,
            "batch_in_epoch": self.loop.batch_in_epoch,
            "best_loss": self.loop.best_loss,
            "best_step": self.loop.best_step,
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.last_metrics.items()},
            "world_size": self.world,
            "loop": dataclasses.asdict(self.loop),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _gather(self, obj: Any) -> list[Any]:
        """One entry per rank (RNG states and carries differ between ranks)."""
        if self.world == 1:
            return [obj]
        def gather(t: torch.Tensor) -> torch.Tensor:  # (world, *t.shape); shards must have equal shapes
            parts = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(parts, t.contiguous())
            return torch.stack(parts)

        gathered = _map_tensors(obj, gather)
        return [_map_tensors(gathered, lambda t, r=r: t[r]) for r in range(self.world)]

    def _save(self) -> None:
        if self.config.select == "last":   # every rank, so that all agree on the best step
            loss = self.last_metrics.get("loss")
            self.loop.best_step = self.loop.step
            self.loop.best_loss = loss if loss is not None and math.isfinite(loss) else None
        rngs = self._gather(capture_rng())
        carries = self._gather(self.carry)
        error = None
        if self.fabric.is_global_zero:
            self.loop.records = len(self.log)
            self.log.sync()
            path = self.root / ckpt.checkpoint_name(self.loop.step)
            state = {
                "format_version": ckpt.FORMAT_VERSION,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "rng": _map_tensors(rngs, lambda t: t.detach().cpu()),
                "carry": _map_tensors(carries, lambda t: t.detach().cpu()),
            }
            try:
                with self._averaged():
                    state["optimizer"] = self.optimizer.state_dict()   # holds the SGD iterates while averaged
                    ckpt.save_checkpoint(path, self.model, self._meta(), state)
                keep = {self.loop.best_step} if self.loop.best_step is not None else set()
                ckpt.prune_checkpoints(self.root, self.config.keep_last, keep)
                self.last_saved = path
            except RnnlabError as exc:
                error = exc
        if self.world > 1:
            message = self.fabric.broadcast(None if error is None else str(error))
            if message and error is None:
                raise CheckpointError(f"rank {self.rank}: rank 0 failed to write a checkpoint ({message})")
            self.last_saved = self.root / ckpt.checkpoint_name(self.loop.step)
        if error is not None:
            raise error

    def _end_epoch(self) -> None:
        loop = self.loop
        if self.log is not None:
            record = {"kind": "epoch", "step": loop.step, "epoch": loop.epoch, "train_steps": loop.epoch_steps}
            if loop.epoch_steps:
                record["train_loss"] = loop.epoch_loss_sum / loop.epoch_steps
            self._log(record)
        loop.epoch += 1
        loop.epoch_loss_sum, loop.epoch_steps = 0.0, 0

    def _stop_reason(self, signal_name: str | None, time_up: bool) -> str | None:
        c, loop = self.config, self.loop
        if signal_name:
            return signal_name
        if c.max_steps and loop.step >= c.max_steps:
            return "max_steps"
        if c.max_epochs and loop.epoch >= c.max_epochs:
            return "max_epochs"
        if c.patience and loop.bad_evals >= c.patience:
            return "early_stopping"
        if time_up:
            return "max_time"
        return None

    def _step(self, batch: Any, signals: _Signals, t_start: float) -> tuple[str | None, bool]:
        """One optimizer step. Returns (signal name or None, time up) as agreed by all ranks."""
        c, loop = self.config, self.loop
        t0 = time.perf_counter()
        batch = self.fabric.to_device(batch)
        self.optimizer_f.zero_grad(set_to_none=True)
        out = self.task.training_step(self.model_f, batch, self.carry)
        loss = out.loss
        self.fabric.backward(loss)
        grad_norm = self.fabric.clip_gradients(
            self.model_f, self.optimizer_f, max_norm=c.clip if c.clip > 0 else float("inf"), error_if_nonfinite=False
        )
        grad_norm = float(grad_norm) if grad_norm is not None else 0.0
        loss_value = float(loss.detach())
        bad = not (math.isfinite(loss_value) and math.isfinite(grad_norm))
        time_up = bool(c.max_time) and time.monotonic() - t_start >= c.max_time
        bad, got_signal, time_up = self._sync_flags(bad, signals.received is not None, time_up)
        lr = self.optimizer.param_groups[0]["lr"]
        step = loop.step + 1
        if bad:
            if c.nonfinite == "stop":
                good = str(self.last_saved) if self.last_saved is not None else "none (no checkpoint written yet)"
                raise NonFiniteError(
                    f"step {step}: expected a finite loss and gradient, got loss={loss_value}, "
                    f"grad norm={grad_norm}; last good checkpoint: {good}"
                )
            self.optimizer_f.zero_grad(set_to_none=True)
            loop.skipped_steps += 1  # the carry of the bad step is dropped: it may hold NaN
        else:
            self.optimizer_f.step()
            if self.scheduler is not None and c.schedule in ("step", "cosine"):
                self.scheduler.step()
            self.carry = _map_tensors(out.carry, lambda t: t.detach())
        loop.step = step
        loop.batch_in_epoch += 1
        dt = max(time.perf_counter() - t0, 1e-9)
        if self.compiled is not None:
            first = self.compiled.first_step_s is None
            self.compiled.step_done(step, dt)
        if self.world > 1:
            loss_value = float(self.fabric.all_reduce(loss.detach().float(), reduce_op="mean"))
        if not bad:
            loop.epoch_loss_sum += loss_value
            loop.epoch_steps += 1
        if self.log is not None:
            record = {
                "kind": "train", "step": step, "epoch": loop.epoch, "loss": loss_value, "lr": lr,
                "items_per_s": out.n_items * self.world / dt, "grad_norm": grad_norm,
                **{k: float(v) for k, v in out.metrics.items()},
            }
            if bad:
                record["skipped"] = 1
            if self.compiled is not None:   # graphs compiled so far in this invocation; the first step's time
                if self.compiled.counter.graphs is not None:
                    record["compile_graphs"] = self.compiled.counter.graphs
                if first:
                    record["compile_s"] = dt
            self._log(record)
            if self.bar is not None:
                self.bar.update(step, loss_value, record["items_per_s"], out.metrics.get(self.task.metric_name))
        return (signals.received if got_signal else None), time_up

    # --------------------------------------------------------------- the loop

    def train(self) -> RunResult:
        c, loop, task = self.config, self.loop, self.task
        if self.fabric.is_global_zero and not c.quiet:
            self.bar = ProgressBar(c.max_steps or None, loop.step, task.items_name, task.metric_name, quiet=False)
        if self.rng_state is not None:
            restore_rng(self.rng_state)  # last, just before the first step, as at save time
        t_start = time.monotonic()
        stop = self._stop_reason(None, False)
        already = stop                       # a resumed run that had already reached its budget
        self.model_f.train()
        try:
            if stop in _FINAL_EVALUATION and loop.step and loop.last_eval_step != loop.step:
                # a signal (or a kill during it) stopped the run at its last step before that evaluation
                self._final_evaluation(saved=True)
            with _Signals() as signals:
                while stop is None:
                    batches = iter(task.train_batches(loop.epoch, self.rank, self.world))
                    for _ in range(loop.batch_in_epoch):
                        if next(batches, None) is None:
                            raise CheckpointError(
                                f"resume at epoch {loop.epoch}, batch {loop.batch_in_epoch}: expected train_batches to "
                                f"regenerate the same epoch, got fewer batches (is train_batches deterministic?)"
                            )
                    took_any = loop.batch_in_epoch > 0
                    for batch, is_last in _peek(batches):
                        took_any = True
                        got_signal, time_up = self._step(batch, signals, t_start)
                        improved = False
                        if (c.eval_every and loop.step % c.eval_every == 0) or is_last:
                            improved = self._evaluate()
                        if is_last:
                            self._end_epoch()
                            loop.batch_in_epoch = 0
                        stop = self._stop_reason(got_signal, time_up)
                        due = loop.step % c.checkpoint_every == 0 if c.checkpoint_every else is_last
                        if stop in _FINAL_EVALUATION and loop.last_eval_step != loop.step:
                            # the budget ends between evaluations: the weights it ends with are
                            # scored too, so that "best" and the summary can be them
                            self._final_evaluation()
                        elif improved or stop or due:
                            self._save()
                        if stop:
                            break
                    if not took_any:
                        raise DataError(f"task {task.name} train_batches(epoch={loop.epoch}): expected batches, got none")
                    stop = stop or self._stop_reason(None, False)
        finally:
            train_seconds = time.monotonic() - t_start
            if self.bar is not None:
                self.bar.close()
            if self.compiled is not None:
                self.compiled.restore()
        if isinstance(self.optimizer, NTASGD):
            self.optimizer.use_average()
        if self.fabric.is_global_zero and c.report:
            write_report(self.out, task, self.model, self.log.records)
        if self.fabric.is_global_zero and already is not None and stop == already:
            # said even with --quiet, as the changes a resume applies are: the command did nothing
            print(f"rnnlab: nothing to train: the run had already stopped ({stop}) at step {loop.step}; "
                  f"{_BUDGET_FLAGS.get(stop, 'give it a larger budget to continue it')}", file=sys.stderr, flush=True)
        if self.fabric.is_global_zero and not c.quiet:
            # status, as the progress bar: on stderr, so that stdout holds only what --json prints
            print(f"rnnlab: stopped ({stop}) at step {loop.step}, epoch {loop.epoch}; run folder {self.out}",
                  file=sys.stderr, flush=True)
            if self.compiled is not None:
                print(f"rnnlab: {self.compiled.describe()}", file=sys.stderr, flush=True)
        return RunResult(
            run_dir=self.out, step=loop.step, epoch=loop.epoch, stop_reason=stop, last_checkpoint=self.last_saved,
            best_step=loop.best_step, best_loss=loop.best_loss, metrics=dict(self.last_metrics),
            skipped_steps=loop.skipped_steps, resumed_from=self.start, model=self.model,
            compile=None if self.compiled is None else self.compiled.summary(), train_seconds=train_seconds,
        )
