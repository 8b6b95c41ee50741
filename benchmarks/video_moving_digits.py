"""Video classification on ``moving-digits``: accuracy within a CPU-time budget, the
frame-shuffled control, throughput, and the frame encoder's share of the time.

    PYTHONPATH=src python benchmarks/video_moving_digits.py --out video_moving_digits.json

Runs the classify task's own model and batches (what ``rnnlab train classify --dataset
moving-digits`` trains) in a plain loop that stops when the process has used ``--budget``
seconds of CPU time or the validation accuracy reaches ``--target``. Times are given as CPU
seconds (what the budget counts) and as wall seconds (inflated when other processes share
the cores). ``--control`` trains the same model on ``moving-digits-shuffled`` (each clip's frames
permuted): an order-blind model could do as well there, so the gap measures the use of order.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from rnnlab.tasks.classify import ClassifyConfig, ClassifyTask


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def train(dataset: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    task = ClassifyTask(ClassifyConfig(dataset=dataset, dataset_size=args.size, cell=args.cell,
                                       hidden_size=args.hidden, embed_dim=args.embed, dropout=0.0,
                                       batch_size=args.batch_size, seed=args.seed))
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    w0, c0 = clocks()
    history, clips, epoch, done = [], 0, 0, False
    while not done:
        model.train()
        for batch in task.train_batches(epoch):
            loss = task.training_step(model, batch, None).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            clips += len(batch["y"])
            if time.process_time() - c0 >= args.budget:
                done = True
                break
        w1, c1 = clocks()
        valid = task.evaluate(model, "valid")["acc"]
        history.append({"epoch": epoch, "valid_acc": valid, "cpu_s": time.process_time() - c0,
                        "wall_s": time.perf_counter() - w0})
        print(dataset, history[-1], flush=True)
        c0 += time.process_time() - c1           # evaluation does not count against the budget
        w0 += time.perf_counter() - w1
        epoch += 1
        done = done or valid >= args.target
    train_wall, train_cpu = time.perf_counter() - w0, time.process_time() - c0
    test = task.evaluate(model, "test")
    return {"dataset": dataset, "test_acc": test["acc"], "test_macro_f1": test["macro_f1"],
            "epochs": epoch, "train_clips": clips, "train_cpu_s": train_cpu, "train_wall_s": train_wall,
            "train_clips_per_cpu_s": clips / train_cpu, "train_clips_per_wall_s": clips / train_wall,
            "history": history, "_task": task, "_model": model}


def shares(task: ClassifyTask, model: torch.nn.Module, reps: int) -> dict:
    """Inference throughput and the frame encoder's share of inference and training time."""
    batch = next(iter(task.train_batches(0)))
    x, lengths, y = batch["x"], batch["lengths"], batch["y"]
    n = len(y)

    def timed(fn) -> tuple[float, float]:
        fn()                                     # warm-up
        w, c = clocks()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - w) / reps, (time.process_time() - c) / reps

    model.eval()
    with torch.no_grad():
        inf_all = timed(lambda: model(x, lengths))
        inf_cnn = timed(lambda: model.embed(x))
    model.train()

    def step_all() -> None:
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x, lengths), y).backward()

    def step_cnn() -> None:
        model.zero_grad()
        model.embed(x).sum().backward()

    tr_all, tr_cnn = timed(step_all), timed(step_cnn)
    return {"batch": n, "frames": int(x.shape[0]),
            "infer_clips_per_cpu_s": n / inf_all[1], "infer_clips_per_wall_s": n / inf_all[0],
            "infer_cnn_share_cpu": inf_cnn[1] / inf_all[1], "train_step_cnn_share_cpu": tr_cnn[1] / tr_all[1],
            "infer_cnn_share_wall": inf_cnn[0] / inf_all[0], "train_step_cnn_share_wall": tr_cnn[0] / tr_all[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="video_moving_digits.json")
    ap.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training per model")
    ap.add_argument("--target", type=float, default=0.99, help="stop when the validation accuracy reaches it")
    ap.add_argument("--size", type=int, default=0, help="training clips (0 = the data set's default)")
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-control", action="store_true", help="skip the frame-shuffled control")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"args": vars(args), "torch_threads": torch.get_num_threads()}
    ordered = train("moving-digits", args)
    result["timing"] = shares(ordered.pop("_task"), ordered.pop("_model"), args.reps)
    result["ordered"] = ordered
    if not args.no_control:
        control = train("moving-digits-shuffled", args)
        control.pop("_task"), control.pop("_model")
        result["shuffled"] = control
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2, default=float)
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, default=float)[:2000])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
