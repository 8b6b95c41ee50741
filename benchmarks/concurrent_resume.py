"""Two `rnnlab train ... --resume RUN` started at the same moment, N times over: how many of the
second writers are refused, and does the run survive every pair?

    python benchmarks/concurrent_resume.py --pairs 20

Each pair resumes the same toy run a few steps further, with a checkpoint every step and
``--keep-last 2`` (the settings under which unlocked writers used to corrupt a run), and a short
pause inside each checkpoint write so the two processes overlap. After each pair the run must
load, its metrics must hold every train step once and in order, and its latest checkpoint must
be the last step. Prints one line per pair and the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
CLI = "import sys; from rnnlab.cli.main import main; sys.exit(main())"


def cli(*argv: object, pause: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}  # SRC: --src
    if pause:
        env["RNNLAB_TEST_CHECKPOINT_PAUSE"] = str(pause)
    return subprocess.Popen([sys.executable, "-c", CLI, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def intact(run: Path, last: int) -> str | None:
    """None if the run is whole at step ``last``, else what is wrong."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout judges the run
    from rnnlab.train import latest_checkpoint, load_run

    try:
        load_run(run)
    except Exception as exc:  # noqa: BLE001 - any failure to load is corruption here
        return f"load_run: {exc}"
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    if steps != list(range(1, last + 1)):
        return f"metrics steps {steps[-6:]} (expected 1..{last})"
    latest = latest_checkpoint(run)
    if latest is None or latest.name != f"step-{last:08d}":
        return f"latest checkpoint {latest}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3, help="steps each pair adds")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds inside each checkpoint write")
    ap.add_argument("--src", default=None, help="the rnnlab source tree to run (another checkout, to compare)")
    args = ap.parse_args()
    global SRC
    SRC = args.src or SRC
    with tempfile.TemporaryDirectory(prefix="rnnlab-concurrency-") as tmp:
        run = Path(tmp) / "run"
        p = cli("train", "toy", "--hidden-size", "4", "--max-steps", "2", "--quiet", "--no-report", "--out", run)
        _, err = p.communicate()
        assert p.returncode == 0, err
        refusals = corrupt = both_ran = 0
        last = 2
        for i in range(1, args.pairs + 1):
            last += args.steps
            argv = ("train", "toy", "--resume", run, "--max-steps", last, "--checkpoint-every", "1", "--keep-last", "2",
                    "--quiet")
            procs = [cli(*argv, pause=args.pause), cli(*argv, pause=args.pause)]
            outputs = [q.communicate() for q in procs]
            results = [(q.returncode, o, e) for q, (o, e) in zip(procs, outputs)]
            codes = sorted(c for c, _, _ in results)
            refused = [e.strip().splitlines()[-1] for c, _, e in results if c != 0]
            ok_refusal = codes[0] == 0 and codes[1] != 0 and all("holding its lock" in r for r in refused)
            refusals += ok_refusal
            both_ran += codes == [0, 0]
            problem = intact(run, last)
            corrupt += problem is not None
            print(f"pair {i:2d}: exit codes {codes}, "
                  f"{'one refused' if ok_refusal else 'NO REFUSAL' if codes == [0, 0] else 'unexpected: ' + '; '.join(refused)}"
                  f", run {'intact' if problem is None else 'CORRUPT: ' + problem}", flush=True)
        print(f"{args.pairs} pairs -> {refusals} refusals, {corrupt} corrupt runs"
              + (f" ({both_ran} pairs where both writers ran)" if both_ran else ""))


if __name__ == "__main__":
    main()
