"""Capture and restore every random number generator a step may use (torch, numpy, random).

States are stored as plain tensors so that ``state.pt`` loads with ``weights_only=True`` and
so that the ranks of a DDP run can gather theirs with one collective.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from rnnlab.errors import CheckpointError


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, torch.Tensor]:
    _, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),                                           # uint8 (5056,)
        "numpy_key": torch.from_numpy(np.asarray(np_key, dtype=np.int64)),         # (624,)
        "numpy_pos": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
        "python": torch.tensor([py_version, *py_state], dtype=torch.int64),        # (626,)
        "python_gauss": torch.tensor([0.0 if py_gauss is None else 1.0, py_gauss or 0.0], dtype=torch.float64),
    }
    return state


def restore_rng(state: dict[str, torch.Tensor]) -> None:
    try:
        torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
        pos, has_gauss = (int(v) for v in state["numpy_pos"])
        key = state["numpy_key"].cpu().numpy().astype(np.uint32)
        np.random.set_state(("MT19937", key, pos, has_gauss, float(state["numpy_gauss"][0])))
        py = [int(v) for v in state["python"]]
        has, g = (float(v) for v in state["python_gauss"])
        random.setstate((py[0], tuple(py[1:]), g if has else None))
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"state.pt: rng state expected torch/numpy/python entries, got unusable data ({exc})") from exc
