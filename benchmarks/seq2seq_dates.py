"""Dates in 8 languages and 9 styles -> ISO 8601 with the task's default model and training
settings, 3 epochs (the docs' ``rnnlab train seq2seq --dataset dates --max-epochs 3``): exact
match on the test split, training CPU seconds, decoding speed, and the attention heat map of a
test source.

    python benchmarks/seq2seq_dates.py [--smoke] [--out RUN] [--json FILE] [--figure PNG]

Aim: at least 99.5 % exact match within 5 minutes of CPU time (one thread, the process's user +
system seconds), with a clean alignment in the heat map.
"""

import sys

import torch
from _seq2seq import main

CONFIG = dict(dataset="dates")
TRAIN = dict(max_epochs=3, threads=1)
SMOKE = {"config": {"dataset_size": 600, "hidden_size": 16, "embedding_size": 8},
         "train": {"max_epochs": 0, "max_steps": 3, "report": False}}

if __name__ == "__main__":
    torch.set_num_threads(1)
    main("dates", CONFIG, TRAIN, SMOKE, sys.argv[1:])
