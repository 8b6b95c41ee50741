"""What the fast kernels gain from oneDNN's matmul (engine/gemm.h) and from reusing their
buffers (engine/workspace.h), measured side by side.

    python benchmarks/bench_onednn.py [--threads 2] [--repeats 15]

Prints (1) the large-matmul rate of torch.mm (MKL) and of the kernels' matmul with oneDNN,
(2) one LSTM step's recurrent product at B=32 H=256 with oneDNN on and off, and (3) forward+backward
time of rnnlab layers with oneDNN off, on, and on without buffer reuse, beside torch.nn, in
alternating rounds in one process (medians), as ratios to torch.nn. See the README's "oneDNN for
the large matmuls" and "Reused buffers".
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import rnnlab
from rnnlab.bench import _train_step
from rnnlab.engine import fast

CASES = [("lstm", (35, 32, 28, 256), {}), ("lstm", (100, 64, 128, 128), {}), ("lstm", (50, 32, 64, 512), {}),
         ("lstm", (100, 64, 128, 128), {"layer_norm": True}), ("gru", (35, 32, 28, 256), {}),
         ("rnn", (50, 32, 64, 512), {})]
CLASSES = {"lstm": (rnnlab.LSTM, torch.nn.LSTM), "gru": (rnnlab.GRU, torch.nn.GRU), "rnn": (rnnlab.RNN, torch.nn.RNN)}


def seconds(f, repeats: int) -> float:
    for _ in range(3):
        f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not fast.available():
        raise SystemExit(f"the fast kernels are not built here: {fast.unavailable_reason()}")
    mm = fast._KERNELS.module.matmul
    print(f"threads={a.threads}; the kernels' large float32 products run on: {fast.gemm_backend(32, 256, 1024)}")

    n = 2048
    x, y = torch.randn(n, n), torch.randn(n, n)
    flops = 2 * n**3
    print(f"matmul {n}^3: torch.mm {flops / seconds(lambda: x @ y, 5) / 1e9:.0f} GFLOP/s, "
          f"kernels' matmul {flops / seconds(lambda: mm(x, y, None), 5) / 1e9:.0f} GFLOP/s")

    h, w = torch.randn(32, 256), torch.randn(1024, 256)
    step = {}
    for on in (True, False):
        fast.set_onednn(on)
        step[on] = seconds(lambda: [mm(h, w.t(), None) for _ in range(100)], 9) / 100
    fast.set_onednn(True)
    print(f"step product (32, 256) @ (256, 1024): oneDNN {step[True] * 1e6:.0f} µs, BLAS {step[False] * 1e6:.0f} µs")

    for cell, (T, B, I, H), kw in CASES:
        ours_cls, theirs_cls = CLASSES[cell]
        torch.manual_seed(0)
        ours, theirs = ours_cls(I, H, **kw), theirs_cls(I, H)
        x = torch.randn(T, B, I)

        ours_step, theirs_step = _train_step(ours, x), _train_step(theirs, x)
        settings = {"oneDNN": (True, True), "BLAS": (False, True), "no reuse": (True, False)}
        times = {name: [] for name in [*settings, "torch.nn"]}
        for _ in range(3):
            ours_step()
            theirs_step()
        for _ in range(a.repeats):                  # alternating rounds: all see the same load
            for name, (onednn, reuse) in settings.items():
                fast.set_onednn(onednn)
                fast.set_reuse(reuse)
                t0 = time.perf_counter()
                ours_step()
                times[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs_step()
            times["torch.nn"].append(time.perf_counter() - t0)
        fast.set_onednn(True)
        fast.set_reuse(True)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        label = f"{cell}{' ' + ','.join(kw) if kw else ''} T={T} B={B} I={I} H={H}"
        print(f"{label:38s} torch.nn {med['torch.nn']:6.2f} ms; ratio "
              + "  ".join(f"{name} {med[name] / med['torch.nn']:.2f}" for name in settings))


if __name__ == "__main__":
    main()
