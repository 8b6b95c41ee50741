"""Shared test fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Public corpora live beside the repository (../shared/data), never inside it.
SHARED_DATA = Path(os.environ.get("RNNLAB_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    # Build the C++ kernels once, in the controller, before pytest-xdist starts its workers: two
    # workers compiling the same extension at once only wait on each other's lock.
    if not hasattr(config, "workerinput"):
        from rnnlab.engine import fast, variants

        fast.available()
        variants._KERNELS.get()


def run_fresh_python(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter in ``cwd``, without PYTHONPATH (only what is installed is
    importable there, as in a user's process that never imported rnnlab); output captured as text."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared corpora not found at {SHARED_DATA} (set RNNLAB_SHARED_DATA)")
    return SHARED_DATA


def fsdd_subset(dest: Path, digits: str, speakers: tuple[str, ...], takes: tuple[int, ...]) -> Path:
    """Copy the FSDD recordings ``{digit}_{speaker}_{take}.wav`` of every combination into ``dest``
    (the test is skipped where the shared corpus is absent); returns ``dest``."""
    src = SHARED_DATA / "fsdd" / "recordings"
    if not src.is_dir():
        pytest.skip(f"FSDD not found at {src} (set RNNLAB_SHARED_DATA)")
    for d in digits:
        for s in speakers:
            for t in takes:
                shutil.copy(src / f"{d}_{s}_{t}.wav", dest)
    return dest


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Tests run under pytest-xdist with 2 workers on 2 cores: one thread each avoids oversubscription.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def fit_a_few_steps(task, steps: int, lr: float = 1e-2):
    """``steps`` Adam steps over a task's Task contract (seed 0), every loss finite; the model in eval mode."""
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    done = 0
    while done < steps:
        for batch in task.train_batches(done):
            loss = task.training_step(model, batch, None).loss
            assert torch.isfinite(loss), f"loss {float(loss)} at step {done}"
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


def reversal_seq2seq_run(folder: Path) -> Path:
    """A tiny seq2seq run (word reversal, 2 steps) in ``folder``/run, for the export tests."""
    from rnnlab.cli.main import main

    data = folder / "rev.tsv"
    words = ["abc", "bca", "cab", "aab", "bbc", "cca", "abca", "bcab", "acb", "bac"]
    data.write_text("source\ttarget\n" + "".join(f"{w}\t{w[::-1]}\n" for w in words))
    run = folder / "run"
    assert main(["train", "seq2seq", "--train", str(data), "--valid", str(data), "--embed", "8", "--hidden", "16",
                 "--max-steps", "2", "--out", str(run), "--no-report", "--quiet"]) == 0
    return run
