"""Training core: one loop (on Lightning Fabric), run folders, checkpoints, exact resume.

Python API (the CLI wraps exactly these)::

    from rnnlab.train import TrainConfig, fit, resume, load_run, evaluate_run
    result = fit(task, TrainConfig(max_steps=500), out="runs/probe")     # -> RunResult
    result = resume("runs/probe", max_steps=1000)                         # continue in the same folder
    task, model, meta = load_run("runs/probe")                            # for evaluate/generate/predict
"""

import torch

from rnnlab.train.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from rnnlab.train.config import TrainConfig
from rnnlab.train.loop import RunResult, fit, resume
from rnnlab.train.rundir import load_run, latest_checkpoint, new_run_dir, read_run_config
from rnnlab.train.task import ReportSection, StepOutput, Task, build_task, register_task


def evaluate_run(run_dir, split: str = "valid", checkpoint: str = "best") -> dict[str, float]:
    """Metrics of a trained run on ``split``: rebuilds the task and model with ``load_run``."""
    task, model, _ = load_run(run_dir, checkpoint=checkpoint)
    with torch.no_grad():
        return {k: float(v) for k, v in task.evaluate(model, split).items()}


__all__ = [
    "TrainConfig", "fit", "resume", "RunResult", "load_run", "evaluate_run", "new_run_dir",
    "read_run_config", "latest_checkpoint", "save_checkpoint", "load_checkpoint", "list_checkpoints",
    "prune_checkpoints", "Checkpoint", "Task", "StepOutput", "ReportSection", "register_task", "build_task",
]
