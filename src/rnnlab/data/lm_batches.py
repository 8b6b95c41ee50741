"""Batches for language models: truncated BPTT over a token stream.

Two ways to cut one long id stream into ``(T, B)`` batches (d2l §9.3 names them):

* ``sequential``: the stream is laid out as ``B`` contiguous rows, and consecutive batches
  continue each row where the last one stopped, so the hidden state left by one batch is the
  right initial state for the next. The trainer carries it across batches, detached (that
  is truncated BPTT: gradients flow back at most ``bptt`` steps). Each epoch starts at a
  random offset in ``[0, bptt)`` so the cut points move; the state is reset at epoch start.
* ``random``: independent windows of ``bptt`` tokens at shuffled positions; the state is
  reset for every batch, since neighbouring rows of consecutive batches are unrelated.

Both are pure functions of ``(ids, config, epoch, rank, world_size)`` — the training core's
exact-resume rule. Sharding for data-parallel training gives each rank a slice of the
``B`` columns, so ``world_size`` ranks together see exactly the single-process batch.

Every batch is a dict: ``x`` (T, B) input ids, ``y`` (T, B) next-token targets, and ``reset``
(True when the carried state must be dropped before this batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from rnnlab.errors import ConfigError, expected

SAMPLING = ("sequential", "random")


@dataclass(frozen=True)
class LMBatching:
    bptt: int = 35                 # truncation length: tokens per row per batch (d2l num_steps, pytorch/examples bptt)
    batch_size: int = 32           # rows B; divided among ranks when sharded
    sampling: str = "sequential"   # "sequential" (carry state) or "random" (reset every batch)
    seed: int = 0                  # fixes the per-epoch offset and, for random sampling, the order

    def __post_init__(self) -> None:
        if not isinstance(self.bptt, int) or self.bptt < 1:
            raise ConfigError(expected("bptt", "an integer >= 1", self.bptt))
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(expected("batch_size", "an integer >= 1", self.batch_size))
        if self.sampling not in SAMPLING:
            raise ConfigError(expected("sampling", " or ".join(SAMPLING), repr(self.sampling)))


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Lay a 1-D stream out as ``batch_size`` contiguous columns: (N,) -> (N // B, B), tail dropped."""
    rows = ids.numel() // batch_size
    return ids[: rows * batch_size].view(batch_size, rows).t().contiguous()  # (L, B)


def _generator(seed: int, epoch: int) -> torch.Generator:
    # One stream per (seed, epoch): resuming at epoch e regenerates exactly epoch e's batches.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _shard(batch_size: int, rank: int, world_size: int) -> slice:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(expected("rank / world_size", "0 <= rank < world_size", f"rank {rank}, world_size {world_size}"))
    if batch_size % world_size:
        raise ConfigError(expected("batch_size", f"a multiple of the number of processes ({world_size})", batch_size))
    per = batch_size // world_size
    return slice(rank * per, (rank + 1) * per)


def lm_batches(
    ids: torch.Tensor, cfg: LMBatching, epoch: int, rank: int = 0, world_size: int = 1
) -> Iterator[dict[str, torch.Tensor | bool]]:
    """The training batches of one epoch (see the module docstring)."""
    cols = _shard(cfg.batch_size, rank, world_size)
    g = _generator(cfg.seed, epoch)
    offset = int(torch.randint(0, cfg.bptt, (1,), generator=g))
    if cfg.sampling == "sequential":
        # Inputs and targets as two aligned (L, B) grids, targets shifted by one token.
        n = (ids.numel() - offset - 1) // cfg.batch_size * cfg.batch_size
        x_all = batchify(ids[offset : offset + n], cfg.batch_size)[:, cols]          # (L, B_local)
        y_all = batchify(ids[offset + 1 : offset + 1 + n], cfg.batch_size)[:, cols]  # (L, B_local)
        for k, i in enumerate(range(0, x_all.shape[0], cfg.bptt)):
            yield {"x": x_all[i : i + cfg.bptt], "y": y_all[i : i + cfg.bptt], "reset": k == 0}
    else:
        n_windows = (ids.numel() - offset - 1) // cfg.bptt
        starts = offset + cfg.bptt * torch.randperm(n_windows, generator=g)
        steps = torch.arange(cfg.bptt)
        for b in range(n_windows // cfg.batch_size):
            s = starts[b * cfg.batch_size : (b + 1) * cfg.batch_size][cols]  # (B_local,)
            pos = s.unsqueeze(0) + steps.unsqueeze(1)                        # (T, B_local)
            yield {"x": ids[pos], "y": ids[pos + 1], "reset": True}


def eval_batches(ids: torch.Tensor, batch_size: int, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sequential ``(x, y)`` chunks over a held-out stream, no offset, state to be carried throughout.

    ``batch_size`` is lowered to ``len(ids) - 1`` for a very short stream so that every split
    of at least two tokens can be scored.
    """
    b = max(1, min(batch_size, ids.numel() - 1))
    n = (ids.numel() - 1) // b * b
    x_all = batchify(ids[:n], b)
    y_all = batchify(ids[1 : n + 1], b)
    for i in range(0, x_all.shape[0], bptt):
        yield x_all[i : i + bptt], y_all[i : i + bptt]
