"""``TrainConfig``: every knob of the training loop, typed, with a reason for each default.

The config is saved in the run folder (``config.json``) and in every checkpoint
(``meta.json``), so a run can be continued from its folder alone. ``from_dict`` rejects
unknown keys: a misspelt option must fail loudly, not train with a default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from rnnlab.errors import ConfigError, expected, field_name

OPTIMIZERS = ("sgd", "adam", "adamw", "ntasgd")
SCHEDULES = ("none", "step", "plateau", "cosine")
NONFINITE = ("stop", "skip")
SELECT = ("best", "last")
ACCELERATORS = ("cpu", "cuda", "auto")
PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")

# Options that may change when a run is resumed: they decide when to stop, how to talk and
# how often to save, never the trajectory. Everything else must match the saved config,
# or the resumed run would not continue the same curve.
RESUME_MUTABLE = frozenset(
    {"max_steps", "max_epochs", "max_time", "quiet", "threads", "keep_last", "checkpoint_every", "report",
     "compile", "compile_backend"}
)
# compile and compile_backend are among them: compiling changes how the step is computed, not the
# model or the data, so a run may be continued with or without it (to rounding, like threads).


# The fields whose flag on `rnnlab train *` is spelled otherwise than --field-name ("": none), for
# error messages (rnnlab.errors.field_name).
TRAIN_FLAGS = {"compile": "--compile", "report": "--no-report", "step_size": "", "gamma": "", "plateau_factor": "",
               "plateau_patience": "", "min_lr": "", "warmup_steps": ""}


@dataclass
class TrainConfig:
    # --- when to stop (whichever comes first) ---
    max_steps: int = 1000               # optimizer steps; 0 = no step limit
    max_epochs: int = 0                 # passes over train_batches; 0 = no epoch limit
    max_time: float = 0.0               # seconds of wall time in this invocation's training loop (setup not counted); 0 = none
    seed: int = 0                       # seeds torch, numpy and random before the model is built

    # --- optimisation ---
    optimizer: str = "adam"             # sgd | adam | adamw; Adam needs the least tuning on small tasks
    lr: float = 1e-3                    # Adam's usual default; SGD on PTB-style LMs wants ~20
    weight_decay: float = 0.0           # L2 (decoupled for adamw); off unless asked
    momentum: float = 0.0               # SGD only; the classic RNN LM recipes use plain SGD
    nonmono: int = 5                    # ntasgd: average once the valid loss is worse than the best of all but the last N evals
    clip: float = 1.0                   # global gradient-norm clip; RNNs explode without it; 0 = off

    # --- learning-rate schedule ---
    schedule: str = "none"              # none | step | plateau | cosine
    step_size: int = 1000               # step: multiply lr by gamma every step_size optimizer steps
    gamma: float = 0.5                  # step: the decay factor
    plateau_factor: float = 4.0         # plateau: divide lr by this when valid loss does not improve (PTB recipe)
    plateau_patience: int = 0           # plateau: evals without improvement tolerated before dividing
    min_lr: float = 0.0                 # plateau/cosine: floor of the learning rate
    warmup_steps: int = 0               # cosine: linear warm-up steps before the cosine decay

    # --- evaluation, checkpoints, stopping early ---
    eval_every: int = 0                 # evaluate every N steps (and always at each epoch end); 0 = epoch end only
    checkpoint_every: int = 0           # save every N steps; 0 = at each epoch end. Always at the end and at a new best
    keep_last: int = 3                  # keep the newest k step checkpoints (and the best); never deletes the only one
    patience: int = 0                   # early stopping: evals without valid-loss improvement; 0 = off
    select: str = "best"                # the run's "best" checkpoint: best (lowest valid loss) | last (the newest; no early stopping)
    nonfinite: str = "stop"             # stop: raise NonFiniteError; skip: drop the step and go on

    # --- devices ---
    accelerator: str = "cpu"            # cpu | cuda | auto; cpu is the reproducible default
    devices: int = 1                    # processes per node (DDP when > 1)
    num_nodes: int = 1                  # nodes (DDP); launch with torchrun or your cluster's launcher
    precision: str = "32-true"          # Lightning precision; exact resume is promised for 32-true on CPU
    compile: bool = False               # torch.compile the model for the training step (rnnlab.train.compile); eval stays eager
    compile_backend: str = "inductor"   # torch.compile's own default: generates fused code; aot_eager only traces (for checks)

    # --- output ---
    quiet: bool = False                 # no progress bar, no summary: for scripts
    threads: int = 0                    # torch.set_num_threads(threads) when > 0; fix it for bitwise resume
    report: bool = True                 # write plots/ and report.html at the end

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def check(ok: bool, what: str, want: str, got: object) -> None:
            if not ok:
                raise ConfigError(expected(field_name("train config", what, self, TRAIN_FLAGS), want, repr(got)))

        for name in ("max_steps", "max_epochs", "eval_every", "checkpoint_every", "patience",
                     "plateau_patience", "warmup_steps", "threads"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 0, name, "an integer >= 0", v)
        for name in ("devices", "num_nodes", "keep_last", "step_size", "nonmono"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an integer >= 1", v)
        for name in ("lr", "max_time", "weight_decay", "momentum", "clip", "gamma", "plateau_factor", "min_lr"):
            v, least = getattr(self, name), "> 0" if name == "lr" else ">= 0"
            check(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > 0 if name == "lr" else v >= 0), name, f"a finite number {least}", v)
        check(self.plateau_factor >= 1, "plateau_factor", "a number >= 1", self.plateau_factor)
        check(self.gamma <= 1, "gamma", "a number in [0, 1]", self.gamma)
        check(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        check(self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}", self.schedule)
        check(self.nonfinite in NONFINITE, "nonfinite", f"one of {NONFINITE}", self.nonfinite)
        check(self.select in SELECT, "select", f"one of {SELECT}", self.select)
        check(self.accelerator in ACCELERATORS, "accelerator", f"one of {ACCELERATORS}", self.accelerator)
        check(isinstance(self.compile, bool), "compile", "true or false", self.compile)
        check(isinstance(self.compile_backend, str) and bool(self.compile_backend), "compile_backend",
              "a torch.compile backend name", self.compile_backend)
        check(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}", self.precision)
        check(self.max_steps > 0 or self.max_epochs > 0 or self.max_time > 0,
              "limits", "at least one of max_steps, max_epochs, max_time > 0", "none")
        check(self.schedule != "cosine" or self.max_steps > 0, "schedule",
              "max_steps > 0 with the cosine schedule (it decays over max_steps)", self.max_steps)
        check(self.momentum == 0 or self.optimizer == "sgd", "momentum", "0 unless optimizer is sgd", self.momentum)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def for_task(cls, task: Any, **overrides: Any) -> "TrainConfig":
        """The task's own training defaults (its ``train_defaults``, if it has them) under ``overrides``:
        ``fit(task)`` and ``rnnlab train TASK`` start from the same settings."""
        return cls(**{**dict(getattr(task, "train_defaults", {})), **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if not isinstance(data, dict):
            raise ConfigError(expected("train config", "a dict", type(data).__name__))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(expected("train config keys", f"a subset of {sorted(known)}", unknown))
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (validated like ``from_dict``)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})
