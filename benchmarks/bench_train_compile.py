"""``rnnlab train lm`` with and without ``--compile``: the same small 2-layer character LM, the same
steps, one thread: the training process's CPU and wall time, the median step time once
compiled, the first step's time (the compilation) and the graphs compiled over the run (the first step's, the later ones and the time of the steps that compiled),
whose batches have several lengths (each epoch's last batch is shorter, by a random offset).

    python benchmarks/bench_train_compile.py --data-dir DATA/timemachine [--steps 200] \\
        [--backend inductor] [--json FILE]

Each run is one ``rnnlab train lm ... --json`` subprocess (OMP_NUM_THREADS=1, --threads 1); the
step times come from the run's metrics.jsonl (a full batch's tokens / the step's tokens per second).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from _lm_bench import machine, run_train

from rnnlab.train.metrics import read_records


def model_args(a: argparse.Namespace) -> list[str]:
    return ["--dataset", "timemachine", "--data-dir", str(a.data_dir), "--preprocess", "d2l", "--level", "char",
            "--max-tokens", "10000", "--cell", "lstm", "--embed", "32", "--hidden-size", "128", "--num-layers", "2",
            "--bptt", "35", "--batch-size", "32", "--max-steps", str(a.steps), "--threads", "1", "--seed", "0",
            "--no-report", "--quiet", "--json"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True, help="Folder holding timemachine.txt.")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    out: dict = {"machine": machine(), "steps": a.steps, "backend": a.backend, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, extra in (("eager", []), ("compiled", ["--compile", "--compile-backend", a.backend])):
            rec = run_train([*model_args(a), *extra, "--out", str(Path(tmp) / mode)])
            if rec.get("rc") == 0:
                info = rec["summary"].get("compile") or {}
                # Steady state: after the step that compiled the newest graph (eager: after step 1).
                after = max(1, info.get("last_graph_step") or 1)
                recs = [r for r in read_records(Path(tmp) / mode / "metrics.jsonl") if r.get("kind") == "train"]
                # A record gives tokens/s; a full batch is 32 x 35 tokens (each epoch's shorter last
                # batch is one step in ~9, which the median passes over).
                ms = [1e3 * 32 * 35 / r["items_per_s"] for r in recs if r["step"] > after]
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
