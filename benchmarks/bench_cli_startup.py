"""How long ``rnnlab --help`` takes, from process start to exit: the median of fresh processes.

    python benchmarks/bench_cli_startup.py [--runs 10] [--json FILE]

Each run starts a new interpreter (``python -m rnnlab ...``, the console script's code path), so
the figure includes Python's own start-up and every import the command line does before it can
print its help. A bare ``python -c pass`` is timed the same way for reference. Beside the wall
time, the CPU time (user + system) of each process: on a busy machine the wall time waits for a
core, the CPU time does not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "rnnlab --help": [sys.executable, "-m", "rnnlab", "--help"],
    "rnnlab train lm --help": [sys.executable, "-m", "rnnlab", "train", "lm", "--help"],
}


def time_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh process running ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="Fresh processes per command (default 10).")
    parser.add_argument("--json", type=Path, help="Also write the medians and every run's time here.")
    args = parser.parse_args()

    src = str(Path(__file__).resolve().parents[1] / "src")   # this checkout's rnnlab, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    time_once(COMMANDS["rnnlab --help"], env)   # warm the file cache and write the .pyc files
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):   # interleaved, so a burst of load elsewhere hits every command alike
        for name, cmd in COMMANDS.items():
            wall, used = time_once(cmd, env)
            times[name].append(wall)
            cpu[name].append(used)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    cpu_medians = {name: statistics.median(ts) for name, ts in cpu.items()}

    width = max(map(len, COMMANDS))
    print(f"median of {args.runs} fresh processes, {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name, med in medians.items():
        print(f"  {name:<{width}}  {med:6.3f} s  (min {min(times[name]):.3f}, max {max(times[name]):.3f}), "
              f"CPU {cpu_medians[name]:.3f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": args.runs, "median_s": medians, "times_s": times,
                                         "cpu_median_s": cpu_medians, "cpu_s": cpu,
                                         "python": platform.python_version(), "cpus": os.cpu_count(),
                                         "load_average": os.getloadavg()[0]}, indent=1))
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
