"""``rnnlab train lm`` with and without ``--compile``: the same small 2-layer character LM, the same
steps, one thread: the training process's CPU and wall time, the median step time once
compiled, the first step's time (the compilation), the graphs compiled over the run and the
time of the steps that compiled them. The batches have several lengths (each epoch's last
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


def model_args(a: argparse.Namespace) -> list[str]:
    flags = [x for k, v in MODEL.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return [*flags, "--data-dir", str(a.data_dir), "--batch-size", str(a.batch_size), "--max-steps", str(a.steps),
            "--threads", "1", "--seed", "0", "--no-report", "--quiet", "--json"]


def lengths(a: argparse.Namespace) -> list[int]:
    """The sequence lengths of the run's first ``steps`` batches (the task regenerates them)."""
    task = LMTask(dict(MODEL, data_dir=str(a.data_dir), batch_size=a.batch_size, seed=0))
    seen, epoch = [], 0
    while len(seen) < a.steps:
        seen += [int(b["x"].shape[0]) for b in task.train_batches(epoch)]
        epoch += 1
    return sorted(set(seen[: a.steps]))


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
    out: dict = {"machine": machine(), "steps": a.steps, "backend": a.backend, "lengths": lengths(a),
                 "inductor_cache": "default" if a.warm_cache else "empty", "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if not a.warm_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor-cache")
        for mode, extra in (("eager", []), ("compiled", ["--compile", "--compile-backend", a.backend])):
            rec = run_train([*model_args(a), *extra, "--out", str(Path(tmp) / mode)])
            if rec.get("rc") == 0:
                info = rec["summary"].get("compile") or {}
                # Steady state: after the step that compiled the newest graph (eager: after step 1).
                after = max(1, info.get("last_graph_step") or 1)
                recs = [r for r in read_records(Path(tmp) / mode / "metrics.jsonl") if r.get("kind") == "train"]
                # A record gives tokens/s; a full batch is B x 35 tokens (each epoch's shorter last
                # batch is one step in dozens, which the median passes over).
                ms = [1e3 * a.batch_size * 35 / r["items_per_s"] for r in recs if r["step"] > after]
                rec["median_step_ms_after_compile"] = round(statistics.median(ms), 2)
                rec["steps_timed"] = len(ms)
            out["runs"][mode] = rec
    e, c = out["runs"]["eager"], out["runs"]["compiled"]
    if "median_step_ms_after_compile" in e and "median_step_ms_after_compile" in c:
        out["compiled_over_eager_step"] = round(c["median_step_ms_after_compile"] / e["median_step_ms_after_compile"], 3)
        out["extra_cpu_s_of_compiling"] = round(c["cpu_s"] - e["cpu_s"], 1)
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
