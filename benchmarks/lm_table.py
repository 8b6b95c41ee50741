"""The language-model table of docs/results.md: each row is one ``rnnlab train lm`` command, run as a
subprocess and timed, then scored from its run folder.

Rows (pick with ``--rows``; all by default):

* ``tm-rnn``, ``tm-gru``, ``tm-lstm`` — d2l's setting on The Time Machine (d2l §9.5/§10.1-10.2):
  d2l's cleaning (lower-case letters and spaces), one-hot input, 1 layer of 256, batch 32,
  bptt 35, SGD lr 1, clip 1. d2l trains 500 epochs and reports *training* perplexity 1.0-1.3;
  these rows also hold out the last 10 % of the book (contiguous: 5 % valid, 5 % test) for held-out perplexities.
* ``shakespeare-3min`` and ``shakespeare-long`` — a character LSTM on tiny Shakespeare with a
  3-minute and a longer wall-clock budget; the figure is validation loss in nats/char.
* ``wikitext2`` — pytorch/examples' word_language_model defaults (2-layer LSTM, emsize 200,
  nhid 200, dropout 0.2, bptt 35, batch 20, SGD lr 20, clip 0.25, lr / 4 on a validation
  plateau) with the wall-clock budget given; validation and test perplexity.

Usage (from the repository root; the corpora are read from --data-dir, a folder with a local copy of each)::

    python benchmarks/lm_table.py --rows tm-lstm --tm-epochs 500
    python benchmarks/lm_table.py --rows shakespeare-3min,shakespeare-long --long-seconds 1800
    python benchmarks/lm_table.py --rows wikitext2 --wikitext-seconds 3600

It prints a Markdown table (command, figures, wall time) and writes ``results.json`` in --out.
Nothing here is a unit test: each row takes minutes to hours on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rows(a: argparse.Namespace) -> dict[str, list[str]]:
    data = ["--data-dir", os.path.relpath(a.data_dir, REPO)]   # commands run in the repository root
    common = ["--quiet", "--threads", str(a.threads), "--seed", "0"]
    d2l = ["--dataset", "timemachine", *data, "--preprocess", "d2l",
           "--hidden", "256", "--layers", "1", "--embed", "0", "--batch-size", "32", "--bptt", "35",
           "--optimizer", "sgd", "--lr", "1", "--clip", "1", "--max-epochs", str(a.tm_epochs)]
    if a.tm_seconds:
        d2l += ["--max-time", str(a.tm_seconds)]
    shakespeare = ["--dataset", "tinyshakespeare", *data, "--cell", "lstm", "--hidden", "256", "--layers", "2",
                   "--embed", "64", "--dropout", "0.1", "--bptt", "64", "--batch-size", "32",
                   "--eval-batch-size", "64", "--optimizer", "adam", "--lr", "0.003", "--clip", "1",
                   "--eval-every", "200"]
    wikitext = ["--dataset", "wikitext2", *data, "--level", "word", "--cell", "lstm", "--layers", "2",
                "--embed", "200", "--hidden", "200", "--dropout", "0.2", "--bptt", "35", "--batch-size", "20",
                "--optimizer", "sgd", "--lr", "20", "--clip", "0.25", "--schedule", "plateau",
                "--eval-every", str(a.wikitext_eval_every), "--max-time", str(a.wikitext_seconds)]
    out = Path(a.out)
    return {
        "tm-rnn": [*d2l, "--cell", "rnn", *common, "--out", str(out / "tm-rnn")],
        "tm-gru": [*d2l, "--cell", "gru", *common, "--out", str(out / "tm-gru")],
        "tm-lstm": [*d2l, "--cell", "lstm", *common, "--out", str(out / "tm-lstm")],
        "shakespeare-3min": [*shakespeare, "--max-time", "180", *common, "--out", str(out / "shakespeare-3min")],
        "shakespeare-long": [*shakespeare, "--max-time", str(a.long_seconds), *common,
                             "--out", str(out / "shakespeare-long")],
        "wikitext2": [*wikitext, *common, "--out", str(out / "wikitext2")],
    }


def run_row(name: str, args: list[str], test: bool) -> dict:
    from rnnlab.tasks.lm import evaluate_run, summarize_run

    cmd = ["rnnlab", "train", "lm", *args]
    run_dir = Path(args[args.index("--out") + 1])
    t0 = time.perf_counter()
    exe = Path(sys.executable).with_name("rnnlab")   # the venv's rnnlab, activated or not
    run = [str(exe), *cmd[1:]] if exe.exists() else cmd
    proc = subprocess.run(run, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rec = {"row": name, "command": shlex.join(cmd), "wall_s": round(wall, 1), "rc": proc.returncode}
    if proc.returncode != 0:
        rec["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return rec
    rec.update(summarize_run(REPO / run_dir))   # a budget ending between evaluations: its last step's too
    if test:
        t1 = time.perf_counter()
        rec.update({f"test_{k}": v for k, v in evaluate_run(REPO / run_dir, split="test").items()})
        rec["test_eval_s"] = round(time.perf_counter() - t1, 1)
    return rec


def fmt(rec: dict) -> str:
    if rec.get("rc"):
        return f"| {rec['row']} | `{rec['command']}` | failed: {rec.get('error')} | {rec['wall_s']} s |"
    figs = [f"steps {int(rec.get('steps', 0))}"]
    for key, label in (("train_ppl", "train ppl"), ("valid_ppl", "valid ppl"), ("valid_loss", "valid nats/tok"),
                       ("test_ppl", "test ppl"), ("tokens_per_s", "tokens/s")):
        if key in rec:
            figs.append(f"{label} {rec[key]:.3f}" if key != "tokens_per_s" else f"{label} {rec[key]:,.0f}")
    return f"| {rec['row']} | `{rec['command']}` | {'; '.join(figs)} | {rec['wall_s']} s |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="tm-rnn,tm-gru,tm-lstm,shakespeare-3min,shakespeare-long,wikitext2")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default="runs/bench-lm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tm-epochs", type=int, default=500, help="d2l trains 500 epochs")
    p.add_argument("--tm-seconds", type=float, default=0, help="wall-clock cap per Time Machine row (0 = none)")
    p.add_argument("--long-seconds", type=float, default=1800)
    p.add_argument("--wikitext-seconds", type=float, default=3600)
    p.add_argument("--wikitext-eval-every", type=int, default=1000)
    a = p.parse_args()
    table = rows(a)
    names = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit(f"lm_table: unknown rows {unknown}; known: {sorted(table)}")
    out = REPO / a.out
    out.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"# {os.cpu_count()} CPUs visible, --threads {a.threads}", flush=True)
    print("| row | command | figures | wall time |\n|---|---|---|---|", flush=True)
    for name in names:
        rec = run_row(name, table[name], test=name.startswith(("wikitext", "tm-")))
        results.append(rec)
        print(fmt(rec), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
