"""d2l's Time Machine character language models (Dive into Deep Learning, 0.17 edition, §8.6
rnn-concise, §9.1 gru, §9.2 lstm), reproduced with ``rnnlab train lm``.

d2l's setting, as ``d2l.load_data_time_machine(batch_size=32, num_steps=35)`` and
``d2l.train_ch8(net, train_iter, vocab, lr=1, num_epochs=500, device)``: the book's text cleaned
to lower-case letters and spaces, character tokens, the first 10,000 of them, one-hot input,
one layer of 256 hidden units, sequential batches of 32 × 35 with a random offset per epoch
and the state reset at each epoch start, SGD with lr 1, the gradient norm clipped to 1, 500
epochs. d2l's models built from scratch draw every weight from N(0, 0.01²) and start every
bias at zero (``--init-std 0.01``); its concise ones take torch.nn's initialisation. d2l reports
the perplexity of the last training epoch: RNN 1.3, GRU 1.1, LSTM 1.2 (``D2L_PPL`` below). Each
cell runs with both initialisations (``--inits``); the check is that the d2l-initialised row
lands within 10 % of d2l's figure.

rnnlab splits the book 90/5/5 before cutting the first 10,000 training tokens, so the training
text is the book's first 10,000 cleaned characters as in d2l, and the rows also report a
held-out perplexity d2l does not have.

Usage (from the repository root)::

    python benchmarks/lm_timemachine.py --data-dir DATA/timemachine --threads 1 \\
        --json docs/data/results-lm-timemachine.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from _lm_bench import REPO, machine, run_train

from rnnlab.train.metrics import read_records

D2L_PPL = {"rnn": 1.3, "gru": 1.1, "lstm": 1.2}
TOLERANCE = 0.10
INIT_FLAGS = {"d2l": ["--init-std", "0.01"], "torch": []}   # d2l's from-scratch init; torch.nn's


def args_for(cell: str, init: str, a: argparse.Namespace) -> list[str]:
    return [*INIT_FLAGS[init], "--dataset", "timemachine", "--data-dir", str(a.data_dir), "--preprocess", "d2l", "--level", "char",
            "--max-tokens", "10000", "--cell", cell, "--embed", "0", "--hidden", "256", "--layers", "1",
            "--batch-size", "32", "--bptt", "35", "--optimizer", "sgd", "--lr", "1", "--clip", "1",
            "--max-epochs", str(a.epochs), "--seed", str(a.seed), "--threads", str(a.threads),
            "--quiet", "--json", "--no-report", "--overwrite", "--out", str(Path(a.out) / f"{cell}-{init}")]


def last_epoch_train_ppl(run_dir: Path) -> float:
    """exp(mean training loss of the last epoch), the figure d2l prints."""
    path = run_dir / "metrics.jsonl"
    epochs = [r for r in read_records(path) if r.get("kind") == "epoch" and r.get("train_loss") is not None]
    return math.exp(epochs[-1]["train_loss"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder with timemachine.txt")
    p.add_argument("--cells", default="rnn,gru,lstm")
    p.add_argument("--inits", default="d2l,torch", help="d2l (N(0, 0.01²) weights, zero biases) and/or torch")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench-timemachine")
    p.add_argument("--json", default="docs/data/results-lm-timemachine.json")
    a = p.parse_args()
    results = {"benchmark": "timemachine-d2l", "machine": machine(), "threads": a.threads, "epochs": a.epochs,
               "d2l_ppl": D2L_PPL, "tolerance": TOLERANCE, "rows": []}
    inits = [i.strip() for i in a.inits.split(",") if i.strip()]
    for init in inits:
        if init not in INIT_FLAGS:
            p.error(f"--inits: expected names from {sorted(INIT_FLAGS)}, got {init!r}")
    for init in inits:
        for cell in [c.strip() for c in a.cells.split(",") if c.strip()]:
            args = args_for(cell, init, a)
            print(f"== {cell}, {init} init: rnnlab train lm {' '.join(args)}", flush=True)
            rec = {"row": cell, "init": init, **run_train(args)}
            rec["d2l_ppl"] = D2L_PPL[cell]
            if rec["rc"] == 0:
                ppl = last_epoch_train_ppl(REPO / a.out / f"{cell}-{init}")
                rec["train_ppl_last_epoch"] = ppl
                rec["rel_diff"] = ppl / D2L_PPL[cell] - 1.0
                rec["within_tolerance"] = abs(rec["rel_diff"]) <= TOLERANCE
                rec["valid_ppl"] = rec["summary"].get("valid_ppl")
            results["rows"].append(rec)
            print(json.dumps(rec, indent=1), flush=True)
            path = REPO / a.json
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
