"""Shared by seq2seq_dates.py and seq2seq_cmudict.py: train a run, score its test split, time decoding."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rnnlab.tasks import Seq2Seq, Seq2SeqConfig
from rnnlab.train import TrainConfig, fit, load_run, new_run_dir


def main(name: str, config: dict, train: dict, smoke: dict, argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=f"Train and score a seq2seq model on {name}.")
    ap.add_argument("--smoke", action="store_true", help="a few steps on a small model, to check the script runs")
    ap.add_argument("--out", default=None, help="run folder (default: a free runs/bench-NAME[-N])")
    ap.add_argument("--json", default=None, help="write the figures to this file too")
    args = ap.parse_args(argv)
    cfg, tr = (dict(config, **smoke.get("config", {})), dict(train, **smoke.get("train", {}))) if args.smoke else (config, train)
    out = Path(args.out) if args.out else new_run_dir(Path("runs") / f"bench-{name}")
    task = Seq2Seq(Seq2SeqConfig(**cfg))
    t0 = time.perf_counter()
    fit(task, TrainConfig.for_task(task, **tr), out)
    train_s = time.perf_counter() - t0
    task, model, _ = load_run(out)
    with torch.no_grad():
        scores = task.evaluate(model, "test")
    sources, _ = task.split("test").pairs.grouped()
    src = task.codec.encode_sources(sources, task.config.max_source_len).ids
    speed = {}
    for beam in (1, 5):
        t0 = time.perf_counter()
        task.decode_ids(model, src, beam=beam)
        speed[f"beam{beam}_words_per_s"] = len(src) / (time.perf_counter() - t0)
    figures = {"data": name, "run": str(out), "train_seconds": train_s, "test": scores, **speed,
               "threads": torch.get_num_threads(), "smoke": args.smoke}
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures
