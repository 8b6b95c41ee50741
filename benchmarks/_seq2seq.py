"""Shared by seq2seq_dates.py and seq2seq_cmudict.py: train a run, score its test split, time decoding."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from seq2seq_decode_speed import decode_speed

from rnnlab.tasks import Seq2Seq, Seq2SeqConfig
from rnnlab.tasks.seq2seq import write_attention_png
from rnnlab.train import TrainConfig, fit, load_run, new_run_dir
from _report import cpu_seconds, emit


def main(name: str, config: dict, train: dict, smoke: dict, argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=f"Train and score a seq2seq model on {name}.")
    ap.add_argument("--smoke", action="store_true", help="a few steps on a small model, to check the script runs")
    ap.add_argument("--out", default=None, help="run folder (default: a free runs/bench-NAME[-N])")
    ap.add_argument("--json", default=None, help="write the figures to this file too")
    ap.add_argument("--figure", default=None, help="write the attention heat map of a long test source here (PNG)")
    ap.add_argument("--repeats", type=int, default=5, help="decoding passes timed (the median is reported)")
    ap.add_argument("--resume", default=None, metavar="RUN",
                    help="continue this run folder (trained by this script) instead of starting one")
    ap.add_argument("--max-time", type=float, default=None,
                    help="seconds of wall time for this invocation's training (default: the script's)")
    args = ap.parse_args(argv)
    cfg, tr = (dict(config, **smoke.get("config", {})), dict(train, **smoke.get("train", {}))) if args.smoke else (config, train)
    if args.max_time is not None:
        tr = dict(tr, max_time=args.max_time)
    out = Path(args.resume or args.out or new_run_dir(Path("runs") / f"bench-{name}"))
    task = Seq2Seq(Seq2SeqConfig(**cfg))
    t0, c0 = time.perf_counter(), cpu_seconds()
    result = fit(task, TrainConfig.for_task(task, **tr), out, resume=bool(args.resume))
    train_s, train_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    task, model, _ = load_run(out)
    with torch.no_grad():
        scores = task.evaluate(model, "test")
    figures = {"data": name, "run": str(out), "resumed": bool(args.resume), "config": cfg, "train": tr, "stop_reason": result.stop_reason,
               "steps": result.step, "epochs": result.epoch, "train_wall_seconds": train_s, "train_cpu_seconds": train_cpu, "test": scores,
               "decoding": decode_speed(task, model, "test", repeats=1 if args.smoke else args.repeats),
               "threads": torch.get_num_threads(), "smoke": args.smoke}
    if args.figure and model.attention is not None:
        sources, _ = task.split("test").pairs.grouped()
        longest = max(sources[:50], key=len)
        [t] = task.translate(model, [longest])
        figures["figure"] = str(write_attention_png(t, args.figure))
    return emit(figures, args.json)
