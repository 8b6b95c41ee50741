"""WikiText-2 word language model: test perplexity within a CPU time budget, beside pytorch/examples.

Rows (``--rows``):

* ``tied-adaptive`` — rnnlab's recipe for a CPU budget: a 1-layer LSTM (hidden 512) with an
  adaptive softmax (cutoffs 2000, 10000) over the 33,278-word vocabulary whose clusters are also
  the input embedding (``--tied``: adaptive input), locked dropout 0.3, embedding dropout 0.05,
  Adam 2e-3, clip 0.25, bptt 35, batch 32, and a cosine decay of the learning rate over
  ``--max-steps`` steps (each row's default fits an hour of 2 cores here; ``--seconds`` stops it
  earlier on a slower machine).
* ``awd-small`` — the same without tying: a separate 256-wide embedding, its own matrix of
  33,278 × 256 parameters.
* ``pytorch-examples`` — pytorch/examples' word_language_model defaults (2-layer LSTM 200,
  emsize 200, dropout 0.2, SGD lr 20, clip 0.25, bptt 35, batch 20, full softmax, lr / 4 when
  the validation loss does not improve), trained by rnnlab under the same budget.

Each row is ``rnnlab train lm ... --max-time SECONDS --json`` run as a subprocess; the best
checkpoint is then scored on the test split. The JSON records the command, wall and CPU
seconds, the load average around the run, tokens/s and the perplexities, so a run on a busy
machine is read for what it is.

Usage (from the repository root)::

    python benchmarks/lm_wikitext2.py --data-dir DATA/wikitext-2 --seconds 3600 --threads 2 \\
        --rows tied-adaptive --out runs/bench-wt2 --json docs/data/results-lm-wikitext2.json

Rows not named in ``--rows`` are kept from the existing JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _lm_bench import REPO, machine, run_train

from rnnlab.tasks.lm import evaluate_run

# pytorch/examples word_language_model README: "python main.py --cuda --epochs 6  # Train a LSTM on
# Wikitext-2 with CUDA, reaching perplexity of 117.61" (its defaults otherwise).
REFERENCE = {"name": "pytorch/examples word_language_model, --epochs 6 (published)", "test_ppl": 117.61}


def rows(a: argparse.Namespace) -> dict[str, list[str]]:
    common = ["--dataset", "wikitext2", "--data-dir", str(a.data_dir), "--level", "word", "--bptt", "35",
              "--max-time", str(a.seconds), "--threads", str(a.threads), "--seed", "0", "--quiet", "--json",
              "--no-report", "--overwrite", "--eval-every", str(a.eval_every)]
    small = ["--adaptive-softmax", "2000,10000", "--locked-dropout", "--dropout", "0.3", "--embed-dropout", "0.05",
             "--batch-size", "32", "--optimizer", "adam", "--lr", "0.002", "--clip", "0.25", "--schedule", "cosine"]
    return {
        "tied-adaptive": [*common, "--cell", "lstm", "--layers", "1", "--embed", "512", "--hidden", "512", "--tied",
                          *small, "--max-steps", str(a.max_steps or 18500)],
        "awd-small": [*common, "--cell", "lstm", "--layers", "1", "--embed", "256", "--hidden", "512",
                      *small, "--max-steps", str(a.max_steps or 15000)],
        # its own schedule: lr / 4 after an evaluation without improvement
        "pytorch-examples": [*common, "--schedule", "plateau", "--cell", "lstm", "--layers", "2", "--embed", "200",
                             "--hidden", "200", "--dropout", "0.2", "--batch-size", "20", "--optimizer", "sgd",
                             "--lr", "20", "--clip", "0.25"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder with train.txt, valid.txt, test.txt")
    p.add_argument("--rows", default="tied-adaptive", help="comma-separated: tied-adaptive, awd-small, pytorch-examples")
    p.add_argument("--seconds", type=float, default=3600, help="wall-clock training budget per row")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None,
                   help="the cosine schedule's length (default: each cosine row's own, sized to an hour here)")
    p.add_argument("--eval-every", type=int, default=1500)
    p.add_argument("--out", default="runs/bench-wt2")
    p.add_argument("--json", default="docs/data/results-lm-wikitext2.json")
    a = p.parse_args()
    table = rows(a)
    out = REPO / a.out
    path = REPO / a.json
    # Rows not rerun are kept from the existing file, in the table's order.
    kept = json.loads(path.read_text())["rows"] if path.exists() else []
    results = {"benchmark": "wikitext2", "machine": machine(), "threads": a.threads, "budget_s": a.seconds,
               "reference": REFERENCE, "rows": kept}
    for name in [r.strip() for r in a.rows.split(",") if r.strip()]:
        args = [*table[name], "--out", str(out / name)]
        print(f"== {name}: rnnlab train lm {' '.join(args)}", flush=True)
        rec = {"row": name, **run_train(args)}
        if rec["rc"] == 0:
            t0, c0 = time.perf_counter(), time.process_time()
            test = evaluate_run(out / name, split="test")
            rec["test_ppl"], rec["test_loss"] = test["ppl"], test["loss"]
            rec["test_eval_wall_s"] = round(time.perf_counter() - t0, 1)
            rec["test_eval_cpu_s"] = round(time.process_time() - c0, 1)
            s = rec["summary"]
            rec["valid_ppl"] = s.get("valid_ppl")
            rec["tokens_per_cpu_s"] = round(s["steps"] * _tokens_per_step(args) / max(rec["cpu_s"], 1e-9), 1)
        results["rows"] = sorted([r for r in results["rows"] if r["row"] != name] + [rec],
                                 key=lambda r: list(table).index(r["row"]) if r["row"] in table else len(table))
        print(json.dumps(rec, indent=1), flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")


def _tokens_per_step(args: list[str]) -> int:
    return int(args[args.index("--bptt") + 1]) * int(args[args.index("--batch-size") + 1])


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
