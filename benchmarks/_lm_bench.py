"""Shared pieces of the language-model benchmarks (lm_wikitext2.py, lm_timemachine.py): run one
``rnnlab train lm`` command as a subprocess and record what it cost (wall time, the child's CPU
time, the load average around it) beside the figures it reached."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rnnlab_exe() -> list[str]:
    exe = Path(sys.executable).with_name("rnnlab")   # the venv's rnnlab, activated or not
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rnnlab"]


def machine() -> dict:
    return {"cpus_visible": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine()}


def run_train(args: list[str], task: str = "lm") -> dict:
    """Run ``rnnlab train TASK ARGS`` (ARGS should include --json); its JSON summary plus costs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([*rnnlab_exe(), "train", task, *args], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rec = {
        "command": shlex.join(["rnnlab", "train", task, *args]), "rc": proc.returncode, "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    rec["cpu_share"] = round(rec["cpu_s"] / max(wall, 1e-9), 3)
    if proc.returncode != 0:
        rec["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return rec
    rec["summary"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rec
