"""Child processes for the training-core tests.

Starting Python and importing torch + Lightning costs seconds on a busy 2-core machine, so
the tests start children from a multiprocessing *forkserver* that imported them once: each
child is still a new process (its own pid, memory and RNG state; ``kill -9`` kills it for
real), but it starts in milliseconds.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
from pathlib import Path
from typing import Any

PRELOAD = ["torch", "numpy", "lightning.fabric", "safetensors.torch", "rnnlab.train", "rnnlab.tasks.toy", "train_workers"]

# The run every reproducibility test uses: dropout (consumes torch's RNG), a carried state,
# a plateau schedule driven by evaluations, Adam state, epochs of 5 batches.
TASK = dict(dropout=0.1, stateful=True, batches_per_epoch=5, hidden_size=12, streams=6, seq_len=8)
TRAIN = dict(max_steps=36, eval_every=4, checkpoint_every=3, keep_last=2, schedule="plateau", plateau_factor=2.0,
             optimizer="adam", lr=0.02, threads=1, quiet=True, report=False)

_CTX = None


def context():
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


def toy_task(**changes: Any):
    from rnnlab.tasks.toy import ToyConfig, ToyTask

    return ToyTask(ToyConfig(**{**TASK, **changes}))


def train_config(**changes: Any):
    from rnnlab.train import TrainConfig

    return TrainConfig(**{**TRAIN, **changes})


def curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-clock column."""
    from rnnlab.train.metrics import read_records

    return [{k: v for k, v in r.items() if k != "items_per_s"} for r in read_records(Path(run_dir) / "metrics.jsonl")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send(conn, value) -> None:
    if conn is not None:
        conn.send(value)
        conn.close()


def run_fit(out: str, task_kw: dict, train_kw: dict, resume: bool, env: dict, conn=None) -> None:
    """Child: fit (or resume) the toy run; report (status, step, stop_reason, resumed_from)."""
    os.environ.update(env)
    from rnnlab.errors import RnnlabError
    from rnnlab.train import fit

    try:
        r = fit(toy_task(**task_kw), train_config(**train_kw), out, resume=resume)
        _send(conn, ("ok", r.step, r.stop_reason, None if r.resumed_from is None else str(r.resumed_from)))
    except RnnlabError as exc:
        _send(conn, ("error", type(exc).__name__, str(exc), None))


def run_as_nobody(out: str, resume: bool, conn) -> None:
    """Child: drop root privileges (if any) so permission bits apply, then try to train."""
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    run_fit(out, {}, dict(max_steps=40), resume, {}, conn)


def run_ddp_rank(out: str, rank: int, world: int, port: int, task_kw: dict, train_kw: dict, weights: str) -> None:
    """Child: one rank of a torchrun-style DDP job on CPU (gloo); saves its final parameters."""
    os.environ.update({
        "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
        "GROUP_RANK": "0", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        "TORCHELASTIC_RUN_ID": "rnnlab-test", "GLOO_SOCKET_IFNAME": "lo",
    })
    from safetensors.torch import save_file

    from rnnlab.train import fit

    r = fit(toy_task(**task_kw), train_config(**train_kw), out)
    save_file({k: v.contiguous() for k, v in r.model.state_dict().items()}, weights)


def noop() -> None:
    """Child: nothing (starts the forkserver, so later timings exclude its imports)."""
