"""CMUdict grapheme -> phoneme: PER and WER on the test split (every pronunciation of a word is a
reference), training time, greedy and beam-5 decoding speed.

    python benchmarks/seq2seq_cmudict.py [--smoke] [--out RUN] [--json FILE]

Published figures on another split of the dictionary (Yao & Zweig 2015, encoder-decoder LSTM:
PER 7.63 %, WER 28.61 %; Sequitur: 5.88 % / 24.53 %). This split is rnnlab's (by a hash of the
word, 90/5/5), so the numbers are comparable in size only.
"""

import sys

import torch
from _seq2seq import main

# One layer: a step costs about half a two-layer model's CPU time, so the hour buys twice the epochs.
CONFIG = dict(dataset="cmudict", cell="lstm", embedding_size=64, hidden_size=256, num_layers=1,
              attention="general", dropout=0.2, batch_size=128)
TRAIN = dict(max_time=3600.0, max_epochs=30, max_steps=0, lr=2e-3, schedule="plateau", plateau_factor=2.0,
             eval_every=1000, threads=1)
SMOKE = {"config": {"hidden_size": 16, "embedding_size": 8, "num_layers": 1},
         "train": {"max_time": 0.0, "max_epochs": 0, "max_steps": 3, "eval_every": 0, "report": False}}

if __name__ == "__main__":
    torch.set_num_threads(1)
    main("cmudict", CONFIG, TRAIN, SMOKE, sys.argv[1:])
