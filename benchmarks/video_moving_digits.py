"""Video classification on ``moving-digits`` with the defaults of ``rnnlab train classify``:
accuracy and the CPU time it took, the frame-shuffled control against the order-blind bound,
throughput, and the frame encoder's share of the time beside the recurrent layer's.

    PYTHONPATH=src python benchmarks/video_moving_digits.py --out video_moving_digits.json

1. ``rnnlab train classify --dataset moving-digits --threads N`` runs as a child process, with no
   other flag, so every setting is the command's default; its CPU time (user + system, from
   ``wait4``) is the budget the figures speak of, its wall time is given beside it (inflated
   when other processes share the cores). The best checkpoint is then scored on the test split.
2. The control: the same command on ``moving-digits-shuffled`` (every clip's frames permuted, in
   training and test), and the ordered run's model on the shuffled test clips. A clip's frames in
   any order still show the digit and the axis of motion (the set of places it occupies), not which
   way along the axis it went, and the start places are drawn so that the two ways cover the same
   places: an order-blind model can at best be right on half of the clips whose digit it
   recognises, ``bound = digit accuracy / 2`` (one frame alone: a quarter).
3. Throughput of the trained model on a batch of the training split (the default batch size):
   a training step (forward, backward, Adam) and inference, medians of ``--reps`` repetitions in
   CPU seconds, and the share of the frame encoder (CNN) and of the recurrent layer and head (RNN):
   each part run alone, forward and backward for training.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from rnnlab.tasks.classify import ClassifyConfig, ClassifyTask
from rnnlab.train import load_run


def start_cli(dataset: str, out: str, threads: int) -> tuple[subprocess.Popen, list[str], float]:
    """``rnnlab train classify --dataset DATASET`` at its defaults, started as a child process."""
    cmd = [sys.executable, "-m", "rnnlab", "train", "classify", "--dataset", dataset, "--out", out, "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    return subprocess.Popen(cmd), cmd, time.perf_counter()


def finish_cli(proc: subprocess.Popen, cmd: list[str], t0: float, out: str) -> dict:
    """Wait for a training child: its own CPU time (user + system, ``wait4``), wall time, and the
    validation accuracy after each epoch."""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}")
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        evals = [r for r in map(json.loads, fh) if "valid_acc" in r]
    return {"command": " ".join(["rnnlab"] + cmd[3:]), "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "epochs": len(evals), "valid_acc_per_epoch": [round(r["valid_acc"], 4) for r in evals]}


def parts(task: ClassifyTask, model: torch.nn.Module, split: str) -> dict:
    """Accuracy of the whole label, of its digit and of its direction on ``split``."""
    s = task.split(split)
    model.eval()
    probs, _ = task.predict_split(model, s)
    names = task.label_map.names
    pred = [names[i].split("-") for i in probs.argmax(1)]
    true = [names[i].split("-") for i in s.labels]
    return {"acc": float(np.mean([p == t for p, t in zip(pred, true)])),
            "digit_acc": float(np.mean([p[0] == t[0] for p, t in zip(pred, true)])),
            "direction_acc": float(np.mean([p[1] == t[1] for p, t in zip(pred, true)])), "n": len(true)}


def median_cpu(fn, reps: int) -> float:
    fn()                                                  # warm-up
    times = []
    for _ in range(reps):
        c = time.process_time()
        fn()
        times.append(time.process_time() - c)
    return float(np.median(times))


def throughput(task: ClassifyTask, model: torch.nn.Module, reps: int) -> dict:
    batch = next(iter(task.train_batches(0)))
    x, lengths, y = batch["x"], batch["lengths"], batch["y"]
    n = len(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x, lengths), y).backward()
        opt.step()

    emb = model.embed(x).detach()
    g = torch.randn_like(emb)

    def cnn_step() -> None:
        model.zero_grad()
        model.embed(x).backward(g)

    def rnn_step() -> None:
        model.zero_grad()
        with from_features(model):
            torch.nn.functional.cross_entropy(model(emb.clone().requires_grad_(), lengths), y).backward()

    train = {"step": median_cpu(step, reps), "cnn": median_cpu(cnn_step, reps), "rnn": median_cpu(rnn_step, reps)}
    model.eval()
    with torch.no_grad(), from_features(model):
        infer = {"rnn": median_cpu(lambda: model(emb, lengths), reps)}
    with torch.no_grad():
        infer.update(step=median_cpu(lambda: model(x, lengths), reps), cnn=median_cpu(lambda: model.embed(x), reps))
    out = {"batch": n, "frames": int(x.shape[0]), "torch_threads": torch.get_num_threads()}
    for name, t in (("train", train), ("infer", infer)):
        out[f"{name}_clips_per_cpu_s"] = n / t["step"]
        out[f"{name}_cnn_share"] = t["cnn"] / (t["cnn"] + t["rnn"])
        out[f"{name}_rnn_share"] = t["rnn"] / (t["cnn"] + t["rnn"])
        out[f"{name}_median_cpu_s"] = t
    return out


@contextlib.contextmanager
def from_features(model: torch.nn.Module):
    """``model`` reading frame features (T, B, E) instead of frames: its encoder skipped."""
    enc, model.embed = model.embed, torch.nn.Identity()
    try:
        yield model
    finally:
        model.embed = enc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="video_moving_digits.json")
    ap.add_argument("--threads", type=int, default=1, help="--threads of the training command (0 = torch's default)")
    ap.add_argument("--reps", type=int, default=20, help="batches timed for throughput (medians)")
    ap.add_argument("--runs", default="", help="folder for the two run folders (default: a temporary one)")
    ap.add_argument("--no-control", action="store_true", help="skip the frame-shuffled control run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.runs or tempfile.mkdtemp(prefix="rnnlab-video-")
    result: dict = {"args": vars(args), "load_avg_before": os.getloadavg()}

    # The two trainings run side by side (one core each with --threads 1); each child's CPU time is its own.
    runs = {"ordered": "moving-digits"} if args.no_control else {"ordered": "moving-digits",
                                                                  "shuffled": "moving-digits-shuffled"}
    started = {k: start_cli(d, os.path.join(root, k), args.threads) for k, d in runs.items()}
    for k, (proc, cmd, t0) in started.items():
        result[k] = finish_cli(proc, cmd, t0, os.path.join(root, k))

    task, model, _ = load_run(os.path.join(root, "ordered"))
    result["ordered"]["test"] = parts(task, model, "test")
    shuffled_task = ClassifyTask(ClassifyConfig.from_dict({**task.config_dict(), "dataset": "moving-digits-shuffled"}))
    result["ordered"]["test_frames_shuffled"] = parts(shuffled_task, model, "test")
    result["throughput"] = throughput(task, model, args.reps)
    if not args.no_control:
        task_s, model_s, _ = load_run(os.path.join(root, "shuffled"))
        result["shuffled"]["test"] = parts(task_s, model_s, "test")
        result["order_blind_bound"] = {
            "rule": "digit accuracy / 2 (frames in any order show the digit and the axis, not the way along it)",
            "of_the_shuffled_run": result["shuffled"]["test"]["digit_acc"] / 2,
            "of_the_ordered_run": result["ordered"]["test"]["digit_acc"] / 2,
            "perfect_digits": 0.5,
            "single_frame": "digit accuracy / 4",
        }
    result["load_avg_after"] = os.getloadavg()
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
