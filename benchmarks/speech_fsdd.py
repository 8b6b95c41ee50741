"""Spoken digits on FSDD: isolated words on the official and leave-one-speaker-out splits,
connected digits with CTC, and streaming against offline decoding.

    python benchmarks/speech_fsdd.py --data-dir PATH/TO/fsdd [--out runs/bench-speech] [--smoke]
        [--only words|loso|ctc|stream|memory] [--threads 2] [--run RUN] [-- extra train flags for ctc]

Each training part trains through ``rnnlab train speech`` in this process (so every figure
comes with the command that reproduces it, and its process CPU time is measured) and writes
OUT/<part>.json; ``stream`` and ``memory`` use the ctc run (``--run``, or OUT/ctc-official).
``--smoke`` runs each part for a few steps on small settings, to check the script, not the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from rnnlab.cli.main import main as rnnlab
from rnnlab.tasks.ctc import align, digit_error_rate, string_accuracy
from rnnlab.tasks.speech import load_speech_run, stream_file, transcribe_file

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def train(args, name: str, flags: list[str]) -> tuple[Path, dict, list[str]]:
    """Train in this process; the run folder, its cost (process CPU seconds, wall seconds, load) and the command."""
    out = Path(args.out) / name
    cmd = ["train", "speech", "--dataset", "fsdd", "--data-dir", args.data_dir, "--out", str(out),
           "--threads", str(args.threads), "--quiet", *flags]
    if args.smoke:
        cmd += ["--max-steps", "2", "--hidden", "16", "--layers", "1"]
        if "ctc" in flags:
            cmd += ["--train-strings", "16", "--valid-strings", "8", "--test-strings", "8"]
    cpu, start = _cpu(), time.perf_counter()
    if rnnlab(cmd) != 0:
        sys.exit(f"failed: rnnlab {' '.join(cmd)}")
    cost = {"cpu_s": round(_cpu() - cpu, 1), "wall_s": round(time.perf_counter() - start, 1),
            "load_1min": round(os.getloadavg()[0], 2), "threads": args.threads}
    return out, cost, cmd


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _write(args, name: str, record: dict) -> None:
    path = Path(args.out) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


def evaluate(run: Path) -> dict:
    task, model = load_speech_run(run)
    return task.evaluate_detailed(model, "test")


def words(args) -> None:
    run, cost, cmd = train(args, "words-official", ["--mode", "words", "--max-epochs", "25", "--cell", "lstm",
                                                     "--hidden", "128", "--layers", "2"])
    m = evaluate(run)
    _write(args, "words", {"split": "official", "acc": m["acc"], "n": m["n"], "per_speaker": m["per_speaker"],
                           **cost, "command": "rnnlab " + " ".join(cmd)})


def loso(args) -> None:
    rows = {}
    for spk in SPEAKERS[:2] if args.smoke else SPEAKERS:
        run, cost, cmd = train(args, f"words-{spk}", ["--mode", "words", "--split", f"speaker:{spk}",
                                                      "--max-epochs", "25"])
        rows[spk] = {"acc": evaluate(run)["acc"], **cost, "command": "rnnlab " + " ".join(cmd)}
    worst = min(rows, key=lambda k: rows[k]["acc"])
    _write(args, "loso", {"speakers": rows, "mean_acc": statistics.mean(r["acc"] for r in rows.values()),
                          "worst": worst, "worst_acc": rows[worst]["acc"]})


def ctc(args, name: str = "ctc-official", flags: tuple[str, ...] = ()) -> None:
    """Connected digits with the connected-digit mode's defaults (only the data and threads given)."""
    run, cost, cmd = train(args, name, ["--mode", "ctc", *flags, *args.ctc_flags])
    m = evaluate(run)
    _write(args, name, {"der": m["der"], "string_acc": m["string_acc"], "beam_der": m["beam_der"],
                         "beam_string_acc": m["beam_string_acc"], "beam": m["beam"], "strings": m["n"],
                         "per_speaker_digit_acc": m["per_speaker"], **cost, "command": "rnnlab " + " ".join(cmd)})


def _ctc_run(args, unidirectional: bool = False) -> Path:
    """``--run``, else OUT/ctc-official (or ctc-official-uni, a unidirectional one), trained if missing."""
    name = "ctc-official-uni" if unidirectional else "ctc-official"
    run = Path(args.run) if args.run else Path(args.out) / name
    if not run.is_dir():
        ctc(args, name, ("--unidirectional",) if unidirectional else ())
    return run


def stream(args) -> None:
    """Offline against streaming on test strings, one thread: DER, string accuracy, real-time factor,
    and the latency of each finalised digit.

    Latency of a digit: (the end of the 100 ms chunk whose processing emitted it + that chunk's
    processing time) - (the end of the digit's sound in the string). That is when a listener
    would see the digit on a live signal fed at real time, counted from when the speaker stopped
    saying it. Greedy streaming CTC never revises an emitted digit, so emitted is final.
    Latencies are taken over the digits the stream decodes right (matched to the spoken ones on
    the edit alignment). One FSDD recording in ten carries more than 0.1 s of quiet after the word, so
    the end of the sound is found in the audio (:func:`sound_end`); ``latency_recording_end_ms``
    counts from the end of the recording instead (smaller, negative where the tail is long)."""
    torch.set_num_threads(1)
    run = _ctc_run(args, unidirectional=True)
    task, model = load_speech_run(run)
    strings = task._strings("test")
    n = min(len(strings), 8 if args.smoke else args.stream_strings)
    tmp = Path(args.out) / "stream-wavs"
    tmp.mkdir(parents=True, exist_ok=True)
    sr = task.fcfg.sample_rate
    refs, beam, greedy, streamed, latencies, from_recording = [], [], [], [], [], []
    compute = audio = cpu_total = 0.0
    for i in range(n):
        s = strings[i]
        path = tmp / f"{i}.wav"
        sf.write(path, s.audio, sr, subtype="FLOAT")
        refs.append(s.text)
        beam.append(transcribe_file(task, model, path)["text"])
        greedy.append(transcribe_file(task, model, path, beam=1)["text"])
        cpu = time.process_time()
        res = stream_file(task, model, path, chunk_ms=args.chunk_ms)
        cpu_total += time.process_time() - cpu
        streamed.append(res["text"])
        compute += res["rtf"] * res["seconds"]
        audio += res["seconds"]
        i_ref = i_hyp = 0
        for a, b in align(list(s.text), list(res["text"])):
            if a is not None and a == b:
                e = res["emissions"][i_hyp]
                shown = e["audio_s"] + e["compute_s"]
                latencies.append(shown - sound_end(s.audio, *s.boundaries[i_ref], sr) / sr)
                from_recording.append(shown - s.boundaries[i_ref][1] / sr)
            i_ref += a is not None
            i_hyp += b is not None
    digits = lambda xs: [list(x) for x in xs]  # noqa: E731
    _write(args, "stream", {
        "strings": n, "chunk_ms": args.chunk_ms, "threads": 1,
        "offline_beam": {"der": digit_error_rate(digits(refs), digits(beam)),
                         "string_acc": string_accuracy(digits(refs), digits(beam))},
        "offline_greedy": {"der": digit_error_rate(digits(refs), digits(greedy)),
                           "string_acc": string_accuracy(digits(refs), digits(greedy))},
        "stream": {"der": digit_error_rate(digits(refs), digits(streamed)),
                   "string_acc": string_accuracy(digits(refs), digits(streamed)),
                   "same_text_as_offline_greedy": sum(a == b for a, b in zip(streamed, greedy))},
        # Wall-clock processing time over audio time, and the same with the process's CPU time
        # (what one core spends; on a shared machine the wall clock also counts waiting for it).
        "rtf": compute / audio, "rtf_cpu": cpu_total / audio, "audio_s": round(audio, 1),
        "latency_ms": _summary(latencies), "latency_recording_end_ms": _summary(from_recording),
        "backend": res["backend"], "load_1min": round(os.getloadavg()[0], 2), "run": str(run)})


def sound_end(audio: np.ndarray, start: int, end: int, sr: int) -> int:
    """The sample where the word in ``audio[start:end]`` stops sounding: the end of its last run
    of three 10 ms frames within 30 dB of its loudest frame. A lone click or a final plosive
    burst does not count, so the end may come early, which makes a latency longer, not shorter."""
    hop = sr // 100
    word = audio[start:end].astype(np.float64)
    energy = np.array([np.mean(word[i:i + hop] ** 2) for i in range(0, len(word), hop)]) + 1e-20
    loud = (energy >= energy.max() * 1e-3).astype(int)
    runs = np.convolve(loud, np.ones(3, dtype=int), mode="valid")   # runs[i] == 3: frames i..i+2 loud
    last = int(np.nonzero(runs == 3)[0][-1]) + 3 if (runs == 3).any() else int(energy.argmax()) + 1
    return start + min(len(word), last * hop)


def _summary(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    # A digit can show before its sound ends (a negative latency): the model may know it before the end.
    return {"digits": int(ms.size), **({"min": float(ms.min()), "p10": float(np.percentile(ms, 10)),
                                        "median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)),
                                        "p99": float(np.percentile(ms, 99)), "max": float(ms.max()),
                                        "mean": float(ms.mean())} if ms.size else {})}


MEMORY_SCRIPT = """
import json, resource, sys, time
from rnnlab.tasks.speech import load_speech_run, transcribe_file
import torch
torch.set_num_threads(1)
task, model = load_speech_run(sys.argv[1])
t = time.perf_counter()
res = transcribe_file(task, model, sys.argv[2])
print(json.dumps({"text": res["text"], "seconds": time.perf_counter() - t,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory(args) -> None:
    """Peak RSS of ``transcribe`` on 1-minute and 10-minute files of test strings (the
    10-minute file is the 1-minute one ten times), each in its own process, and the DER on them."""
    run = _ctc_run(args)
    task, _ = load_speech_run(run)
    strings = task._strings("test")
    sr = task.fcfg.sample_rate
    parts, text, total, i = [], "", 0, 0
    while total < 60 * sr:
        s = strings[i % len(strings)]
        parts.append(s.audio)
        text += s.text
        total += len(s.audio)
        i += 1
    minute = np.concatenate(parts)
    rows = {}
    for minutes in (1, 10):
        path = Path(args.out) / f"memory-{minutes}min.wav"
        sf.write(path, np.tile(minute, minutes), sr)
        out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(run), str(path)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        ref = text * minutes
        rows[f"{minutes}min"] = {"audio_s": round(len(minute) * minutes / sr, 1), "max_rss_mb": round(r["max_rss_mb"], 1),
                                 "wall_s": round(r["seconds"], 1),
                                 "der": digit_error_rate([list(ref)], [list(r["text"])])}
    _write(args, "memory", rows)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="Local FSDD copy (its recordings/ folder or above).")
    p.add_argument("--out", default="runs/bench-speech")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=("words", "loso", "ctc", "stream", "memory"))
    p.add_argument("--run", help="stream, memory: a ctc run to use (default: OUT/ctc-official, trained if missing).")
    p.add_argument("--stream-strings", type=int, default=200, help="stream: test strings to stream.")
    p.add_argument("--chunk-ms", type=float, default=100.0)
    p.add_argument("ctc_flags", nargs="*", help="ctc: extra flags for rnnlab train speech (after --).")
    args = p.parse_args()
    for part in (words, loso, ctc, stream, memory):
        if args.only in (None, part.__name__):
            part(args)


if __name__ == "__main__":
    cli()
