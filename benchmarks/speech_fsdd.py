"""Spoken digits on FSDD: isolated words on the official and leave-one-speaker-out splits,
connected digits with CTC, and streaming against offline decoding.

    python benchmarks/speech_fsdd.py --data-dir PATH/TO/fsdd [--out runs/bench-speech] [--smoke]
        [--only words|loso|ctc|stream] [--threads 2]

Each part trains through ``rnnlab train speech`` (so every figure comes with the command that
reproduces it) and prints a table; ``--smoke`` runs each part for a few steps on small
settings, to check the script, not the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from rnnlab.cli.main import main as rnnlab

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def train(args, name: str, flags: list[str]) -> tuple[Path, float, list[str]]:
    out = Path(args.out) / name
    cmd = ["train", "speech", "--dataset", "fsdd", "--data-dir", args.data_dir, "--out", str(out),
           "--threads", str(args.threads), "--quiet", *flags]
    if args.smoke:
        cmd += ["--max-steps", "2", "--hidden", "16", "--layers", "1", "--train-strings", "16",
                "--valid-strings", "8", "--test-strings", "8"]
    start = time.perf_counter()
    if rnnlab(cmd) != 0:
        sys.exit(f"failed: rnnlab {' '.join(cmd)}")
    return out, time.perf_counter() - start, cmd


def evaluate(run: Path) -> dict:
    from rnnlab.tasks.speech import load_speech_run

    task, model = load_speech_run(run)
    return task.evaluate_detailed(model, "test")


def words(args) -> None:
    run, secs, cmd = train(args, "words-official", ["--mode", "words", "--max-epochs", "25", "--cell", "lstm",
                                                     "--hidden", "128", "--layers", "2"])
    m = evaluate(run)
    print(f"isolated digits, official split: accuracy {m['acc']:.4f} on {m['n']} recordings "
          f"({secs / 60:.1f} min)\n  rnnlab {' '.join(cmd)}")


def loso(args) -> None:
    rows = []
    for spk in SPEAKERS[:2] if args.smoke else SPEAKERS:
        run, secs, cmd = train(args, f"words-{spk}", ["--mode", "words", "--split", f"speaker:{spk}",
                                                      "--max-epochs", "25"])
        rows.append((spk, evaluate(run)["acc"], secs))
    print("isolated digits, leave one speaker out:")
    for spk, acc, secs in rows:
        print(f"  {spk:<10} accuracy {acc:.4f} ({secs / 60:.1f} min)")
    worst = min(rows, key=lambda r: r[1])
    print(f"  mean {statistics.mean(r[1] for r in rows):.4f}, worst {worst[0]} {worst[1]:.4f}")


def ctc(args) -> None:
    run, secs, cmd = train(args, "ctc-official", ["--mode", "ctc", "--cell", "gru", "--max-epochs", "15"])
    m = evaluate(run)
    print(f"connected digits, official split: DER {m['der']:.4f}, string accuracy {m['string_acc']:.4f} "
          f"(greedy DER {m['greedy_der']:.4f}, string accuracy {m['greedy_string_acc']:.4f}) on {m['n']} "
          f"strings ({secs / 60:.1f} min)\n  rnnlab {' '.join(cmd)}")


def stream(args) -> None:
    import numpy as np
    import soundfile as sf
    import torch

    from rnnlab.tasks.ctc import digit_error_rate
    from rnnlab.tasks.speech import load_speech_run, stream_file, transcribe_file

    run = Path(args.out) / "ctc-official"
    if not run.is_dir():
        ctc(args)
    torch.set_num_threads(1)
    task, model = load_speech_run(run)
    part = task.part("test")
    refs, offline, streamed, rtfs = [], [], [], []
    tmp = Path(args.out) / "stream-wavs"
    tmp.mkdir(parents=True, exist_ok=True)
    for i, (wave, target) in enumerate(list(zip(part.waves, part.targets))[: 8 if args.smoke else 100]):
        path = tmp / f"{i}.wav"
        sf.write(path, np.asarray(wave), task.fcfg.sample_rate)
        refs.append(task.text(target))
        offline.append(transcribe_file(task, model, path, beam=1)["text"])
        res = stream_file(task, model, path, chunk_ms=100)
        streamed.append(res["text"])
        rtfs.append(res["rtf"])
    print(json.dumps({"offline_der": digit_error_rate(refs, offline), "stream_der": digit_error_rate(refs, streamed),
                      "rtf_median_one_thread": statistics.median(rtfs), "strings": len(refs)}))


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="Local FSDD copy (its recordings/ folder or above).")
    p.add_argument("--out", default="runs/bench-speech")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=("words", "loso", "ctc", "stream"))
    args = p.parse_args()
    for part in (words, loso, ctc, stream):
        if args.only in (None, part.__name__):
            part(args)


if __name__ == "__main__":
    cli()
