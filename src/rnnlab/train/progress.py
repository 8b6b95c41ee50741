"""The live progress bar: step, loss, the task's metric, items per second, ETA. Silent when quiet."""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressBar:
    def __init__(self, total_steps: int | None, start_step: int, items_name: str, metric_name: str, quiet: bool):
        self.quiet = quiet
        self.items_name = items_name
        self.metric_name = metric_name
        self._rate: float | None = None
        self._metric = "-"
        if quiet:
            self._progress = None
            return
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]step {task.completed}/{task.fields[total_txt]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn(f"{metric_name} " + "{task.fields[metric]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task(
            "train", total=total_steps, completed=start_step, total_txt=total_steps or "?",
            loss="-", metric="-", rate="-",
        )
        self._progress.start()

    def update(self, step: int, loss: float, items_per_s: float, metric: float | None = None) -> None:
        if self._progress is None:
            return
        # Exponential moving average: a single slow step (a checkpoint) should not make the rate jump.
        self._rate = items_per_s if self._rate is None else 0.9 * self._rate + 0.1 * items_per_s
        if metric is not None and math.isfinite(metric):
            self._metric = f"{metric:.4g}"
        self._progress.update(
            self._task, completed=step, loss=f"{loss:.4g}", metric=self._metric,
            rate=f"{self._rate:,.0f} {self.items_name}/s",
        )

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def now() -> float:
    return time.perf_counter()
