"""Attention against Cho et al.'s fixed context vector on the same data: score by source length.

    python benchmarks/seq2seq_attention_vs_none.py [--out DIR] [--steps 1500] [--attention general]
                                                   [--smoke] [--json FILE] [--plot PNG]

The data: random strings of 2 to 40 letters (10-letter alphabet) to be written reversed, seeded,
split 80/10/10 (train, valid, test), written as TSV files under ``--out``. Two runs train on them
with the same settings and the same number of steps, one with ``--attention`` (general by default)
and one with ``none`` (the decoder sees only the encoder's final state). Each run's greedy test
outputs are scored per source length (bins of 5 characters): exact match and character error
rate. The plot shows exact match against source length for both: the fixed-vector model falls
off as the source outgrows what one vector holds (Bahdanau et al. 2015, figure 2), the attention
model does not.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from rnnlab.metrics.sequence import token_error_rate
from rnnlab.report.html import pyplot
from rnnlab.tasks import Seq2Seq, Seq2SeqConfig
from rnnlab.train import TrainConfig, fit, load_run
from _report import cpu_seconds, emit

ALPHABET = "abcdefghij"
BIN = 5


def make_pairs(folder: Path, n: int, min_len: int, max_len: int, seed: int) -> dict[str, Path]:
    rng = random.Random(seed)
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(ALPHABET) for _ in range(rng.randint(min_len, max_len))))
    words = sorted(words)
    rng.shuffle(words)
    cut = [0, int(0.8 * n), int(0.9 * n), n]
    paths = {}
    folder.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(("train", "valid", "test")):
        paths[split] = folder / f"{split}.tsv"
        paths[split].write_text("source\ttarget\n" + "".join(f"{w}\t{w[::-1]}\n" for w in words[cut[k]: cut[k + 1]]))
    return paths


def by_length(examples) -> dict[int, dict[str, float]]:
    """Per bin of source lengths (its lower end): mean length, exact match, character error rate, count."""
    bins: dict[int, list] = {}
    for source, refs, output, _ in examples:
        bins.setdefault((len(source) // BIN) * BIN, []).append((refs, output, len(source)))
    out = {}
    for lo in sorted(bins):
        rows = [(r, o) for r, o, _ in bins[lo]]
        out[lo] = {"mean_length": sum(n for *_, n in bins[lo]) / len(rows),
                   "exact": sum(o in r for r, o in rows) / len(rows),
                   "cer": token_error_rate([o for _, o in rows], [r for r, _ in rows], chars=True), "n": len(rows)}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/attention-vs-none", help="folder for the data, the two runs and the plot")
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps of each run")
    ap.add_argument("--pairs", type=int, default=12000)
    ap.add_argument("--max-len", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--attention", default="general", help="the attention compared with none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, help="train only this one (to split the two runs across processes); "
                    "a later call without it resumes finished runs at once and plots both")
    ap.add_argument("--smoke", action="store_true", help="a few steps on a small model, to check the script runs")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="PNG path (default: OUT/attention-vs-none.png)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    pairs, steps, hidden = (300, 3, 16) if args.smoke else (args.pairs, args.steps, args.hidden)
    files = make_pairs(out / "data", pairs, 2, args.max_len, args.seed)
    results = {}
    for attention in (args.attention, "none"):
        if args.only and attention != args.only:
            continue
        cfg = Seq2SeqConfig(train=str(files["train"]), valid=str(files["valid"]), test=str(files["test"]),
                            hidden_size=hidden, embedding_size=32, attention=attention, metrics="text")
        task = Seq2Seq(cfg)
        run = out / f"run-{attention}"
        # An existing run is resumed (at once, if it has its steps); the training seconds of every
        # call add up in train-seconds.json beside it.
        seconds_file = out / f"train-seconds-{attention}.json"
        spent = json.loads(seconds_file.read_text()) if seconds_file.exists() else {"cpu": 0.0, "wall": 0.0}
        w0, c0 = time.perf_counter(), cpu_seconds()
        fit(task, TrainConfig.for_task(task, max_steps=steps, max_epochs=0, eval_every=500, threads=1, quiet=True,
                                       report=False), run, resume=(run / "config.json").exists())
        spent = {"cpu": spent["cpu"] + cpu_seconds() - c0, "wall": spent["wall"] + time.perf_counter() - w0}
        seconds_file.write_text(json.dumps(spent))
        wall, cpu = spent["wall"], spent["cpu"]
        task, model, _ = load_run(run)
        m = task.evaluate_detailed(model, "test")
        results[attention] = {"run": str(run), "train_cpu_seconds": cpu, "train_wall_seconds": wall,
                              "test_exact": m["exact"], "test_ter": m["ter"], "by_length": by_length(m["examples"])}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for attention, r in results.items():
        xs = [v["mean_length"] for v in r["by_length"].values()]
        ax.plot(xs, [v["exact"] for v in r["by_length"].values()], marker="o",
                label=f"attention {attention}" if attention != "none" else "none (fixed context vector)")
    ax.set_xlabel("source length (characters)")
    ax.set_ylabel("exact match (test)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Reversing strings, {steps} steps each, hidden {hidden}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plot = Path(args.plot) if args.plot else out / "attention-vs-none.png"
    fig.savefig(plot, dpi=100)
    plt.close(fig)
    figures = {"pairs": pairs, "steps": steps, "hidden": hidden, "smoke": args.smoke, "plot": str(plot),
               "results": results}
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
