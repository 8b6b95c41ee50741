"""A tiny regression task for the training core's tests and for smoke runs (``rnnlab train toy``).

Each of ``streams`` parallel series is a noisy sine with its own frequency and phase; the
model reads the series one value at a time and predicts the next one (mean squared error).
Batches are consecutive windows of ``seq_len`` steps, and with ``stateful`` the recurrent
state is carried from one window to the next, like a language model's truncated BPTT:
that is what makes exact resume non-trivial, so the core's tests exercise it here.

Batches are a pure function of (seed, epoch, shard): the core may regenerate any epoch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.errors import ConfigError, expected
from rnnlab.report.html import figure_to_img, pyplot
from rnnlab.tasks.recurrent import CELLS, recurrent_layer
from rnnlab.train.task import ReportSection, StepOutput, register_task


@dataclass
class ToyConfig:
    seed: int = 0                 # decides every series (frequencies, phases, noise)
    cell: str = "gru"             # rnn | lstm | gru
    hidden_size: int = 16         # tiny: the task exists to exercise the loop, not to be hard
    num_layers: int = 1
    streams: int = 8              # parallel series = the global batch; split across DDP ranks
    seq_len: int = 12             # steps per window (truncated BPTT length)
    batches_per_epoch: int = 6    # windows per epoch
    stateful: bool = True         # carry the hidden state across the windows of an epoch
    dropout: float = 0.0          # on the recurrent output; > 0 makes steps consume torch's RNG
    noise: float = 0.05           # std of the noise added to each series
    valid_batches: int = 2        # windows in the valid and test splits

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "streams", "seq_len", "batches_per_epoch", "valid_batches"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(expected(f"toy config {name}", "an integer >= 1", repr(v)))
        if self.cell not in CELLS:
            raise ConfigError(expected("toy config cell", f"one of {CELLS}", repr(self.cell)))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(expected("toy config dropout", "a number in [0, 1)", repr(self.dropout)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ToyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(expected("toy config keys", f"a subset of {sorted(known)}", unknown))
        return cls(**data)


class ToyModel(nn.Module):
    """x (T, B, 1) -> prediction of the next value (T, B, 1), and the recurrent state."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.rnn = recurrent_layer(cfg.cell, 1, cfg.hidden_size, cfg.num_layers)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, 1)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        h, state = self.rnn(x, state)          # (T, B, H)
        return self.head(self.drop(h)), state  # (T, B, 1)


_SPLIT_OFFSET = {"train": 0, "valid": 1_000_003, "test": 2_000_003}


class ToyTask:
    name = "toy"
    items_name = "points"
    metric_name = "rmse"
    compile_methods = {"forward": True}     # TrainConfig.compile: one graph, no break

    def __init__(self, cfg: ToyConfig, metadata: dict[str, Any] | None = None):
        self.cfg = cfg
        if metadata is None:  # scaling statistics learned from the first training epoch
            raw = self._series("train", 0)
            metadata = {"mean": float(raw.mean()), "std": float(raw.std())}
        if not isinstance(metadata, dict) or not {"mean", "std"} <= set(metadata):
            raise ConfigError(expected("toy metadata", "{'mean': float, 'std': float}", repr(metadata)))
        self.mean, self.std = float(metadata["mean"]), float(metadata["std"])

    # -- data

    def _series(self, split: str, epoch: int) -> torch.Tensor:
        """(L + 1, streams) raw values, a pure function of (seed, split, epoch)."""
        c = self.cfg
        n_batches = c.batches_per_epoch if split == "train" else c.valid_batches
        length = n_batches * c.seq_len + 1
        g = torch.Generator().manual_seed(c.seed * 7919 + _SPLIT_OFFSET[split] + epoch)
        freq = 0.1 + 0.4 * torch.rand(c.streams, generator=g)          # (S,)
        phase = 2 * math.pi * torch.rand(c.streams, generator=g)       # (S,)
        t = torch.arange(length, dtype=torch.float32)[:, None]         # (L+1, 1)
        return torch.sin(freq * t + phase) + c.noise * torch.randn(length, c.streams, generator=g)

    def _windows(self, split: str, epoch: int, rank: int, world_size: int) -> Iterator[dict[str, torch.Tensor]]:
        c = self.cfg
        z = (self._series(split, epoch) - self.mean) / self.std         # (L+1, S)
        z = z[:, rank::world_size].unsqueeze(-1)                        # (L+1, B, 1)
        n_batches = c.batches_per_epoch if split == "train" else c.valid_batches
        for i in range(n_batches):
            lo = i * c.seq_len
            yield {"x": z[lo:lo + c.seq_len], "y": z[lo + 1:lo + c.seq_len + 1]}   # (T, B, 1) each

    # -- the Task contract

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def metadata(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def build_model(self) -> nn.Module:
        return ToyModel(self.cfg)

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        if self.cfg.streams % world_size:
            raise ConfigError(expected("toy streams", f"a multiple of the world size {world_size}", self.cfg.streams))
        return self._windows("train", epoch, rank, world_size)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], carry: Any) -> StepOutput:
        state = carry if self.cfg.stateful else None
        pred, state = model(batch["x"], state)
        loss = F.mse_loss(pred, batch["y"])
        return StepOutput(loss=loss, n_items=batch["y"].numel(), metrics={"rmse": math.sqrt(max(float(loss.detach()), 0.0))},
                          carry=state if self.cfg.stateful else None)

    def _predict(self, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        dev = next(model.parameters()).device
        preds, ys, state = [], [], None
        for batch in self._windows(split, 0, 0, 1):
            pred, state = model(batch["x"].to(dev), state if self.cfg.stateful else None)
            preds.append(pred.cpu())
            ys.append(batch["y"])
        return torch.cat(preds), torch.cat(ys)                          # (L, S, 1) each

    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        if split not in ("valid", "test"):
            raise ConfigError(expected("toy split", "'valid' or 'test'", repr(split)))
        pred, y = self._predict(model, split)
        mse = float(F.mse_loss(pred, y))
        return {"loss": mse, "rmse": math.sqrt(mse)}

    def report_sections(self, model: nn.Module, run_dir: str) -> list[ReportSection]:
        plt = pyplot()
        with torch.no_grad():
            pred, y = self._predict(model, "valid")
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(y[:, 0, 0] * self.std + self.mean, label="series")
        ax.plot(pred[:, 0, 0] * self.std + self.mean, label="one-step prediction")
        ax.set_xlabel("t")
        ax.legend()
        return [ReportSection("Toy: valid stream 0", figure_to_img(fig, "toy prediction"))]


def _factory(config: dict[str, Any], metadata: dict[str, Any] | None) -> ToyTask:
    return ToyTask(ToyConfig.from_dict(config), metadata)


register_task("toy", _factory)
