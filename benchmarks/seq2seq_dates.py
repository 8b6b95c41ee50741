"""Dates in 8 languages and 9 styles -> ISO 8601: exact match on the test split, training time,
greedy and beam-5 decoding speed.

    python benchmarks/seq2seq_dates.py [--smoke] [--out RUN] [--json FILE]

Aim: 99.5 % exact match within 5 minutes of CPU training, with a diagonal attention map in the
run's report.html.
"""

import sys

from _seq2seq import main

CONFIG = dict(dataset="dates", dataset_size=40000, cell="lstm", embedding_size=32, hidden_size=128,
              attention="additive", dropout=0.1, batch_size=128)
TRAIN = dict(max_time=300.0, max_epochs=20, max_steps=0, lr=3e-3, eval_every=200)
SMOKE = {"config": {"dataset_size": 600, "hidden_size": 16, "embedding_size": 8},
         "train": {"max_time": 0.0, "max_epochs": 0, "max_steps": 3, "eval_every": 0, "report": False}}

if __name__ == "__main__":
    main("dates", CONFIG, TRAIN, SMOKE, sys.argv[1:])
