"""The contract between the training core and a task (probe, lm, classify, forecast).

The core (``rnnlab.train``) owns the loop, devices, checkpoints, resume, logging and
progress. A task owns its data, model, loss and metrics. A task is any object with the
methods of :class:`Task`; it is registered under a name with :func:`register_task` so a
run folder can rebuild it from its saved config alone.

Exact resume rests on one rule: ``train_batches(epoch, rank, world_size)`` is a pure
function of the task's config (including its seed), the epoch and the shard. On resume the
core regenerates the epoch's batches and skips the ones already consumed, then hands the
saved ``carry`` (for example a language model's hidden state) back to ``training_step``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import torch
from torch import nn

from rnnlab.errors import ConfigError
from rnnlab.report.html import ReportSection

# A batch is whatever the task yields; usually a dict of tensors.
Batch = Any
# Carry: tensors a stateful stream hands from one step to the next (e.g. an LM's (h, c)),
# None for stateless tasks. The core detaches it between steps and stores it in checkpoints.
Carry = Any


@dataclass
class StepOutput:
    loss: torch.Tensor                      # scalar, mean over the local batch; backpropagated by the core
    n_items: int                            # samples or tokens in this local batch, for items/s
    metrics: dict[str, float] = field(default_factory=dict)  # extra per-step numbers, already floats
    carry: Carry = None                     # state for the next step of the same epoch


@runtime_checkable
class Task(Protocol):
    name: str                               # registry name: "probe", "lm", "classify", "forecast", ...
    items_name: str                         # what n_items counts: "samples" or "tokens"
    metric_name: str                        # the headline metric shown in the progress bar ("acc", "ppl", ...)
    # Optional: ``train_defaults``, a dict of TrainConfig fields the task trains best with
    # (TrainConfig.for_task reads it; fit(task) and ``rnnlab train TASK`` start from it).
    # Optional: ``compile_methods``, {method name: fullgraph}, the methods ``training_step`` calls on
    # the model, compiled with TrainConfig.compile (default {"forward": False}: see rnnlab.train.compile).

    def config_dict(self) -> dict[str, Any]:
        """The task's config as JSON-able dict; ``build_task(name, config_dict, metadata)`` rebuilds it."""

    def metadata(self) -> dict[str, Any]:
        """JSON-able facts learned from the data that the model depends on (vocabulary, label map,
        scaling statistics). Saved with every checkpoint; passed back when rebuilding."""

    def build_model(self) -> nn.Module:
        """A fresh model. Called after the core has seeded torch."""

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """The training batches of one epoch for this shard, deterministic in (config, epoch, shard)."""

    def training_step(self, model: nn.Module, batch: Batch, carry: Carry) -> StepOutput:
        """Forward and loss for one batch (the core calls backward, clips and steps)."""

    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        """Metrics on a held-out split, with ``model`` in eval mode and grad disabled by the caller.
        Must include ``loss`` and ``metric_name``."""

    def report_sections(self, model: nn.Module, run_dir: str) -> list[ReportSection]:
        """Task-specific sections for report.html (may be empty)."""


TASKS_PACKAGE = "rnnlab.tasks"
TaskFactory = Callable[[dict[str, Any], dict[str, Any] | None], Task]
_REGISTRY: dict[str, TaskFactory] = {}


def register_task(name: str, factory: TaskFactory) -> None:
    """Register ``factory(config_dict, metadata_or_None) -> Task`` under ``name``."""
    _REGISTRY[name] = factory


# A task whose data file names other files (an index of video clips) registers how to checksum it:
# ``fn(path, task_config) -> sha256 hex``, or None for the file's own bytes. The run folder records
# and checks that checksum, so changing a file the index names is caught as a change of the data.
DataChecksum = Callable[[str, dict[str, Any]], "str | None"]
_CHECKSUMS: dict[str, DataChecksum] = {}


def register_data_checksum(name: str, fn: DataChecksum) -> None:
    """Register ``fn(path, task_config) -> sha256 hex or None`` for the data paths of task ``name``."""
    _CHECKSUMS[name] = fn


# ... and which files it names: ``fn(path, task_config) -> paths`` (the clips of an index), which
# commands writing beside the run must not replace, as they must not replace the data file itself.
DataMembers = Callable[[str, dict[str, Any]], "list[str]"]
_MEMBERS: dict[str, DataMembers] = {}


def register_data_members(name: str, fn: DataMembers) -> None:
    """Register ``fn(path, task_config) -> [paths]``: the files a data path of task ``name`` names."""
    _MEMBERS[name] = fn


def _registered(table: dict[str, Any], name: str) -> Any:
    """What task ``name`` registered in ``table``, if anything (the built-in tasks are looked up by name)."""
    if name not in _REGISTRY:
        importlib.import_module(TASKS_PACKAGE)
    return table.get(name)


def data_members_hook(name: str) -> DataMembers | None:
    """The data members function task ``name`` registered, if any."""
    return _registered(_MEMBERS, name)


def data_checksum_hook(name: str) -> DataChecksum | None:
    """The data checksum task ``name`` registered, if any."""
    return _registered(_CHECKSUMS, name)


def build_task(name: str, config: dict[str, Any], metadata: dict[str, Any] | None = None) -> Task:
    if name not in _REGISTRY:
        # The built-in tasks register when their package is imported. It sits above this layer, so
        # it is found by name, as a user's own task module would be, not imported as code.
        importlib.import_module(TASKS_PACKAGE)
    if name not in _REGISTRY:
        raise ConfigError(f"task: expected one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name](config, metadata)
