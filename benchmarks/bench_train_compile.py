"""``rnnlab train lm`` with and without ``--compile``: the same small 2-layer character LM, the same
steps, one thread: the training process's CPU and wall time, CPU ms per step (from a run of
``--steps`` and one of half as many), the median step time once compiled, the first step's time
(the compilation), the graphs compiled over the run and the time of the steps that compiled them. The batches have several lengths (each epoch's last
batch is shorter, by a random offset).

    python benchmarks/bench_train_compile.py --data-dir DATA/timemachine [--steps 200] \\
        [--batch-size 8] [--backend inductor] [--warm-cache] [--json FILE]

At the defaults the 200 batches have 5 lengths (35 and four last-batch lengths).

Each run is one ``rnnlab train lm ... --json`` subprocess (OMP_NUM_THREADS=1, --threads 1); the
compiled run starts from an empty inductor cache (a first run on a machine) unless
--warm-cache, which keeps torch's default cache folder. The step times come from the run's
metrics.jsonl (a full batch's tokens / the step's tokens per second).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from _lm_bench import machine, run_train

from rnnlab.tasks.lm import LMTask
from rnnlab.train.metrics import read_records

MODEL = dict(dataset="timemachine", preprocess="d2l", level="char", max_tokens=10000, cell="lstm", embed=32,
             hidden_size=128, num_layers=2, bptt=35)


def model_args(a: argparse.Namespace, steps: int) -> list[str]:
    flags = [x for k, v in MODEL.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return [*flags, "--data-dir", str(a.data_dir), "--batch-size", str(a.batch_size), "--max-steps", str(steps),
            "--threads", "1", "--seed", "0", "--no-report", "--quiet", "--json"]


def lengths(a: argparse.Namespace) -> list[int]:
    """The sequence lengths of the run's first ``steps`` batches (the task regenerates them)."""
    task = LMTask(dict(MODEL, data_dir=str(a.data_dir), batch_size=a.batch_size, seed=0))
    seen, epoch = [], 0
    while len(seen) < a.steps:
        seen += [int(b["x"].shape[0]) for b in task.train_batches(epoch)]
        epoch += 1
    return sorted(set(seen[: a.steps]))


def timed_run(a: argparse.Namespace, mode: str, extra: list[str], steps: int, tmp: Path) -> dict:
    out = tmp / f"{mode}-{steps}"
    if not a.warm_cache:   # each compiled run compiles from nothing, not from the previous run's cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / f"inductor-cache-{mode}-{steps}")
    rec = run_train([*model_args(a, steps), *extra, "--out", str(out)])
    if rec.get("rc") == 0:
        info = rec["summary"].get("compile") or {}
        # Steady state: after the step that compiled the newest graph (eager: after step 1).
        after = max(1, info.get("last_graph_step") or 1)
        recs = [r for r in read_records(out / "metrics.jsonl") if r.get("kind") == "train"]
        # A record gives tokens/s; a full batch is B x 35 tokens (each epoch's shorter last
        # batch is one step in dozens, which the median passes over).
        ms = [1e3 * a.batch_size * 35 / r["items_per_s"] for r in recs if r["step"] > after]
        rec["median_step_ms_after_compile"] = round(statistics.median(ms), 2)
        rec["steps_timed"] = len(ms)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True, help="Folder holding timemachine.txt.")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--warm-cache", action="store_true", help="Keep torch's inductor cache (default: an empty one).")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    short = a.steps // 2
    out: dict = {"machine": machine(), "steps": a.steps, "short_steps": short, "backend": a.backend,
                 "lengths": lengths(a), "inductor_cache": "default" if a.warm_cache else "empty", "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, extra in (("eager", []), ("compiled", ["--compile", "--compile-backend", a.backend])):
            runs = {n: timed_run(a, mode, extra, n, Path(tmp)) for n in (short, a.steps)}
            rec = runs[a.steps]
            rec["short_run"] = runs[short]
            if runs[short].get("rc") == 0 and rec.get("rc") == 0:
                # CPU per step from two runs of different length: start-up and compilation cancel,
                # and unlike wall time it does not depend on the machine's load.
                rec["cpu_ms_per_step"] = round(1e3 * (rec["cpu_s"] - runs[short]["cpu_s"]) / (a.steps - short), 2)
            out["runs"][mode] = rec
    e, c = out["runs"]["eager"], out["runs"]["compiled"]
    if "cpu_ms_per_step" in e and "cpu_ms_per_step" in c:
        out["compiled_over_eager_cpu_per_step"] = round(c["cpu_ms_per_step"] / e["cpu_ms_per_step"], 3)
        out["compiled_over_eager_median_step"] = round(c["median_step_ms_after_compile"] / e["median_step_ms_after_compile"], 3)
        out["extra_cpu_s_of_compiling"] = round(c["cpu_s"] - e["cpu_s"] - (a.steps - 1) * (c["cpu_ms_per_step"] - e["cpu_ms_per_step"]) / 1e3, 1)
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
