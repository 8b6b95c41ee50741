"""Forward+backward time of rnnlab's cell variants beside torch.nn's standard cell, one process.

    python benchmarks/bench_variants.py [--threads 2] [--repeats 9] [--size T B I H]

Models are timed in turns (interleaved, after a warm-up) and the median reported, so that on a
shared machine every model sees the same load; the ratio to torch.nn is the number to read.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import rnnlab
from rnnlab.nn.options import cell_kwargs, variant_bench_configs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--size", type=int, nargs=4, default=(100, 64, 128, 128), metavar=("T", "B", "I", "H"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    T, B, I, H = a.size
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    ours = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU}
    models = {"torch.nn.LSTM": ("lstm", torch.nn.LSTM(I, H)), "torch.nn.GRU": ("gru", torch.nn.GRU(I, H)),
              "rnnlab lstm (default)": ("lstm", rnnlab.LSTM(I, H)), "rnnlab gru (default)": ("gru", rnnlab.GRU(I, H))}
    for name, (cell, o) in variant_bench_configs().items():
        models[name] = (cell, ours[cell](I, H, **cell_kwargs(o)))

    def step(m: torch.nn.Module) -> float:
        t0 = time.perf_counter()
        out, _ = m(x)
        out.sum().backward()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {k: [] for k in models}
    for _, m in models.values():
        step(m)
    for _ in range(a.repeats):
        for k, (_, m) in models.items():
            times[k].append(step(m))
    base = {c: statistics.median(times[f"torch.nn.{c.upper()}"]) for c in ("lstm", "gru")}
    print(f"threads={a.threads} T={T} B={B} I={I} H={H} repeats={a.repeats}: median forward+backward")
    for k, (cell, _) in models.items():
        med = statistics.median(times[k])
        print(f"{k:32s} {med * 1e3:9.1f} ms   x{med / base[cell]:.2f} vs torch.nn.{cell.upper()}")


if __name__ == "__main__":
    main()
