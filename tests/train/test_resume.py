"""Exact resume in new processes: at chosen steps, after kill -9 at random moments (some in the
middle of a checkpoint write), after SIGINT/SIGTERM; and DDP on 2 processes == 1 process.

Children come from a preloaded forkserver (see train_workers): real processes, cheap to start.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnlab.train import fit, list_checkpoints, load_checkpoint
from rnnlab.train.checkpoint import PAUSE_ENV
from train_workers import TASK, TRAIN, context, curve, free_port, noop, run_ddp_rank, run_fit, toy_task, train_config

N = TRAIN["max_steps"]
LONG = 100  # the kill -9 chains train longer, so random kill moments fall inside the run


def final_weights(run: Path, steps: int = N) -> dict[str, torch.Tensor]:
    last = list_checkpoints(run / "checkpoints")[-1]
    assert last.name == f"step-{steps:08d}"
    return load_file(last / "model.safetensors")


def assert_same_run(run: Path, ref: Path, steps: int = N) -> None:
    got, want = curve(run), curve(ref)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a == b                                   # bitwise: floats compared exactly
    wa, wb = final_weights(run, steps), final_weights(ref, steps)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def child(target, *args):
    """Start a child; return (process, receiving end of its result pipe)."""
    ctx = context()
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=target, args=(*args, send))
    p.start()
    send.close()
    return p, recv


def finish(p, recv, timeout: float = 120):
    status = recv.recv() if recv.poll(timeout) else None
    p.join(timeout)
    assert p.exitcode == 0 and status is not None and status[0] == "ok", (p.exitcode, status)
    return status


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (in a child, like every run it is compared with)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    finish(*child(run_fit, str(out), {}, {}, False, {}))
    return out


def test_checkpointing_does_not_perturb_and_resume_at_5_steps_is_exact(reference, tmp_path):
    every = tmp_path / "every"                          # a checkpoint after every step, all kept
    finish(*child(run_fit, str(every), {}, dict(checkpoint_every=1, keep_last=1000), False, {}))
    assert_same_run(every, reference)
    # 3: mid-epoch; 5: last batch of epoch 0 (eval + epoch end); 13: mid-epoch after a plateau
    # eval; 20: eval step and epoch end together; 31: late, after lr decays
    for step in (3, 5, 13, 20, 31):
        run = tmp_path / f"at{step}"
        shutil.copytree(every, run)
        for ck in list_checkpoints(run / "checkpoints"):
            if int(ck.name[5:]) > step:
                shutil.rmtree(ck)
        status = finish(*child(run_fit, str(run), {}, dict(checkpoint_every=1, keep_last=1000), True, {}))
        assert status[3] == str(run / "checkpoints" / f"step-{step:08d}")
        assert_same_run(run, reference)


def _latest_loads(run: Path) -> int | None:
    """The checkpoint a resume would start from must be complete and load: its step, or None."""
    found = list_checkpoints(run / "checkpoints")
    if not found:
        return None
    ck = load_checkpoint(found[-1], toy_task().build_model())
    assert ck.meta["step"] == int(found[-1].name[5:]) and set(ck.state) >= {"optimizer", "rng", "carry"}
    return ck.meta["step"]


def _newest_step(run: Path) -> int | None:
    found = list_checkpoints(run / "checkpoints")
    return int(found[-1].name[5:]) if found else None


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tmp_path):
    long = dict(max_steps=LONG, checkpoint_every=4)
    reference = tmp_path / "reference"
    warm = context().Process(target=noop)
    warm.start()
    warm.join(120)
    t0 = time.monotonic()
    finish(*child(run_fit, str(reference), {}, long, False, {}))
    duration = time.monotonic() - t0                    # kill moments scale with the machine's speed
    rng = random.Random(20261123)
    stats = {"kills": 0, "during_write": 0, "before_first_checkpoint": 0, "signals": 0, "resumes": 0}
    chains, kills_per_chain = 3, 9
    for chain in range(chains):
        run = tmp_path / f"chain{chain}"
        for k in range(kills_per_chain + 1):
            resuming = (run / "config.json").exists()  # else it was killed before creating the run: start anew
            start_step = _latest_loads(run) if resuming else None
            stats["resumes"] += resuming
            last = k == kills_per_chain
            mode = "final" if last else ("write" if k % 2 else "random")
            if not last and k == 5:
                mode = ("SIGTERM", "SIGINT", "SIGTERM")[chain]
            env = {PAUSE_ENV: "0.4"} if mode == "write" else {}
            p, recv = child(run_fit, str(run), {}, long, resuming, env)
            if mode == "final":
                status = finish(p, recv)
                assert status[3] == (None if start_step is None else str(run / "checkpoints" / f"step-{start_step:08d}"))
                continue
            if mode == "write":                         # wait for a checkpoint write in progress, kill inside it
                deadline = time.monotonic() + 30
                while not list((run / "checkpoints").glob(".tmp-step-*")) and p.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.3))
            elif mode == "random":
                time.sleep(rng.uniform(0.0, 0.3 * duration))
            else:                                       # a signal: finish the step, checkpoint, exit cleanly
                # wait for a checkpoint only this child can have written: its handlers are installed
                while (_newest_step(run) or 0) <= (start_step or 0) and p.is_alive():
                    time.sleep(0.005)
                try:
                    os.kill(p.pid, getattr(signal, mode))
                except ProcessLookupError:              # it ended on its own first: finish() reports how
                    pass
                status = finish(p, recv)
                stats["signals"] += 1
                if status[2] == mode:
                    trained = [c["step"] for c in curve(run) if c["kind"] == "train"]
                    assert status[1] == trained[-1] == _latest_loads(run)   # nothing trained is lost
                continue
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:                  # it had already ended: it must have succeeded
                pass
            p.join(30)
            try:
                status = recv.recv() if recv.poll(0) else None
            except EOFError:                            # killed: it never sent a result
                status = None
            assert status is None or status[0] == "ok", status
            recv.close()
            if p.exitcode == -signal.SIGKILL:
                stats["kills"] += 1
                stats["during_write"] += bool(list((run / "checkpoints").glob(".tmp-step-*")))
                stats["before_first_checkpoint"] += not list_checkpoints(run / "checkpoints")
        assert_same_run(run, reference, LONG)
    print(f"\nkill -9 trials: {stats}")
    assert stats["kills"] >= 20 and stats["during_write"] >= 8 and stats["signals"] == 3


@pytest.mark.parametrize("devices", [2, 1], ids=["devices-2", "torchrun-world"])
def test_ddp_two_processes_equal_one_process(tmp_path, devices):
    """Two ranks of a torchrun-style job train as one process would; with devices=1 (the default)
    the job takes torchrun's world of 2, and only rank 0 locks the run folder."""
    task_kw = dict(dropout=0.0, streams=8)             # dropout masks would differ between layouts
    train_kw = dict(max_steps=20, devices=devices, checkpoint_every=5, schedule="none")
    ctx = context()
    port = free_port()
    procs = [ctx.Process(target=run_ddp_rank, args=(str(tmp_path / "ddp"), r, 2, port, task_kw, train_kw, str(tmp_path / f"rank{r}.safetensors")))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0]
    single = fit(toy_task(**task_kw), train_config(**{**train_kw, "devices": 1}), tmp_path / "one")
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    for name, want in single.model.state_dict().items():
        for r in range(2):
            torch.testing.assert_close(ranks[r][name], want, rtol=0, atol=1e-6, msg=f"{name} on rank {r}")
    # the DDP run's checkpoint holds both ranks' carries (each rank streams its own half)
    ck = load_checkpoint(list_checkpoints(tmp_path / "ddp" / "checkpoints")[-1])
    assert ck.meta["world_size"] == 2 and len(ck.state["carry"]) == 2 and len(ck.state["rng"]) == 2
    assert ck.state["carry"][0].shape == (1, 4, TASK["hidden_size"])


def test_resume_with_a_budget_below_the_steps_done_is_refused(tmp_path):
    """It would stop at once and record a max_steps below the run's own steps in config.json."""
    import json

    from rnnlab.errors import ConfigError
    from rnnlab.train import resume

    fit(toy_task(), train_config(max_steps=4, checkpoint_every=2), tmp_path / "run")
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ConfigError, match=r"max_steps \(--max-steps\): expected more than the 4 steps the run has done, got 3"):
        resume(tmp_path / "run", max_steps=3)
    assert (tmp_path / "run" / "config.json").read_text() == before
    assert json.loads(before)["train_config"]["max_steps"] == 4
    assert resume(tmp_path / "run", max_steps=4).step == 4         # the budget it has: nothing to train
    assert resume(tmp_path / "run", max_steps=6).step == 6
