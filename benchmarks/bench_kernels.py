"""What each part of the fast kernels buys: the LSTM's tiled loop (engine/lstm_tiled.h),
oneDNN's matmul (engine/gemm.h) and reused buffers (engine/workspace.h), measured side by side.

    python benchmarks/bench_kernels.py [--threads 2] [--repeats 15] [--sweep | --inference | --inference-input | --rows]

Prints (1) the large-matmul rate of torch.mm (MKL) and of the kernels' matmul with oneDNN,
(2) one LSTM step's recurrent product at B=32 H=256 with oneDNN on and off, and (3) forward+backward
time of rnnlab layers beside torch.nn, in alternating rounds in one process (medians), as ratios
to torch.nn, for each setting: "default" (everything on: for the standard LSTM, its row-major
training loop with rnnlab's own step code), for the standard LSTM "tiled" (the unit-major loop at
the CPU's widest instruction set), "tiled AVX2" (the narrower set, where the CPU has AVX-512) and
"row-major" (the library's step GEMM: rnnlab's SIMD loops off),
then "row-major BLAS" (oneDNN off too; "BLAS" for the other cells), "tiled AVX2 BLAS" (the AVX2
code with oneDNN off) and "no reuse" (buffer reuse off). Last, (4) the LSTM at T=35 I=32 H=256
for batches of 1 to 32 with the row-major loop and the tiled one at each vector width, each also
with oneDNN off: the measurements behind the tiled loop's batch-size rule. ``--inference`` prints
only (5), a forward without a gradient to come at I=64 over hidden sizes 64 to 1024, batches 1 to 64
and lengths 1, 8 and 50: the inference loop (lstm_tiled.h's lstm_infer), the tiled loop's forward and
the row-major loop (the input projection and the loop; all called directly) as ratios to torch.nn's
forward under torch.no_grad: the measurements behind the inference loop's size rule. ``--rows``
prints only (6), forward+backward of the LSTM at T=20 I=64 over hidden sizes 64 to 1024 and batches
1 to 64: "default" (the row-major training loop of lstm_tiled.h's rows_forward / rows_backward
wherever its rule takes it), "tiled" and "row-major" as above: the measurements behind its rule.
``--inference-input`` prints only (7), the inference loop with its input projection formed in its
tiles ("fused") and by one GEMM over the sequence first ("GEMM"), as ratios to torch.nn's forward
under torch.no_grad, at input sizes either side of the rule (lstm_tiled.h's fuse_input).

What a CPU without AVX-512 runs is the "BLAS" settings (gemm.h uses oneDNN only with AVX-512)
and, for the LSTM, "tiled AVX2 BLAS" against "row-major BLAS". On an AVX-512 CPU these columns
are the AVX2 code on an AVX-512 CPU, not an AVX2 machine: torch.nn and the BLAS still run their
AVX-512 code there, so the ratios to torch.nn are a stand-in, the tiled-vs-row-major comparison
the point. See docs/engines.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import rnnlab
from rnnlab.suites.bench import _train_step
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
    ap.add_argument("--sweep", action="store_true", help="Only (4), the batch-size sweep.")
    ap.add_argument("--inference", action="store_true", help="Only (5), the inference loop's size sweep.")
    ap.add_argument("--rows", action="store_true", help="Only (6), the row-major training loop's size sweep.")
    ap.add_argument("--inference-input", action="store_true",
                    help="Only (7), the inference loop's input projection: in its tiles or a GEMM first.")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not fast.available():
        raise SystemExit(f"the fast kernels are not built here: {fast.unavailable_reason()}")
    mm = fast._KERNELS.module.matmul
    print(f"threads={a.threads}; CPU {fast.cpu_isa()}, torch capability {torch.backends.cpu.get_cpu_capability()}; "
          f"the kernels' large float32 products run on: {fast.gemm_backend(32, 256, 1024)} ({fast.gemm_status()[1]}); "
          f"the LSTM's tiled loop uses: {fast.tiled_isa(32) or 'nothing (off)'} at B=32")

    if a.sweep:
        return sweep(a.repeats)
    if a.inference:
        return inference_sweep(a.repeats)
    if a.rows:
        return rows_sweep(a.repeats)
    if a.inference_input:
        return inference_input_sweep(a.repeats)
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
        # name -> (tiled loop, oneDNN, reuse)
        settings = {"default": ("auto", True, True)}
        if cell == "lstm" and not kw and fast.tiled_isa(B):
            settings["tiled"] = (fast.cpu_isa(), True, True)
            if fast.cpu_isa() == "avx512":
                settings["tiled AVX2"] = ("avx2", True, True)
            settings["row-major"] = ("off", True, True)
        settings["row-major BLAS" if "row-major" in settings else "BLAS"] = ("off", False, True)
        if "row-major" in settings:
            settings["tiled AVX2 BLAS"] = ("avx2", False, True)
        settings["no reuse"] = ("auto", True, False)
        compare(cell, (T, B, I, H), kw, settings, a.repeats)

    sweep(a.repeats)


def rows_sweep(repeats: int) -> None:
    if not fast.tiled_isa(32):
        raise SystemExit("the LSTM's SIMD loops do not run on this CPU")
    print("LSTM forward+backward, T=20 I=64; ratios to torch.nn (default: the loop the plan names)")
    settings = {"default": ("auto", True, True), "tiled": (fast.cpu_isa(), True, True), "row-major": ("off", True, True)}
    for H in (64, 128, 256, 512, 1024):
        for B in (1, 4, 8, 16, 32, 64):
            print(f"  default runs: {rnnlab.LSTM(64, H).plan(B, 20).loop}", end="; ")
            compare("lstm", (20, B, 64, H), {}, settings, repeats)


def sweep(repeats: int) -> None:
    if fast.tiled_isa(32):
        # Small batches: which loop and which vector width pay (the "auto" rule of lstm_tiled.h)
        print("LSTM T=35 I=32 H=256 by batch size:")
        settings = {"row-major": ("off", True, True), "tiled AVX2": ("avx2", True, True)}
        if fast.tiled_isa(32) == "avx512":
            settings["tiled AVX-512"] = ("avx512", True, True)
        settings["row-major BLAS"] = ("off", False, True)
        settings["tiled AVX2 BLAS"] = ("avx2", False, True)
        for B in (1, 2, 4, 8, 16, 32):
            compare("lstm", (35, B, 32, 256), {}, settings, repeats)


def _alternating_medians(runs: dict, repeats: int) -> dict:
    """{name: median ms} of each no-grad call in ``runs`` after one warm-up call each, the calls
    alternating in every round so that all see the same load."""
    times = {name: [] for name in runs}
    with torch.no_grad():
        for f in runs.values():
            f()
        for _ in range(repeats):
            for name, f in runs.items():
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def inference_sweep(repeats: int) -> None:
    K = fast._KERNELS.module
    print("LSTM forward without a gradient to come, I=64; ratios to torch.nn's under torch.no_grad (-: the loop "
          "does not run there); * marks what the size rule chooses")
    for H in (64, 128, 256, 512, 1024):
        for B in (1, 4, 8, 16, 32, 64):
            for T in (1, 8, 50):
                torch.manual_seed(0)
                theirs = torch.nn.LSTM(64, H)
                x, h0, c0 = torch.randn(T, B, 64), torch.zeros(B, H), torch.zeros(B, H)
                w_ih, w_hh = theirs.weight_ih_l0.detach(), theirs.weight_hh_l0.detach()
                b = (theirs.bias_ih_l0 + theirs.bias_hh_l0).detach()
                runs = {"torch.nn": lambda: theirs(x),
                        "row-major": lambda: K.lstm_forward(torch.addmm(b, x.view(T * B, 64), w_ih.t()).view(T, B, 4 * H),
                                                            h0, c0, w_hh, None)}
                if K.infer_isa(H):
                    runs["inference"] = lambda: K.lstm_infer(x, h0, c0, w_ih, w_hh, b, None)
                if fast.tiled_isa(B):
                    runs["tiled"] = lambda: K.lstm_tiled_forward(x, h0, c0, w_ih, w_hh, b)
                med = _alternating_medians(runs, repeats)
                chosen = ("inference" if K.infer_isa_for(B, H, T) else "tiled" if fast.tiled_isa(B) else "row-major")
                cells = [f"{name} {med[name] / med['torch.nn']:.2f}{'*' if name == chosen else ' '}" if name in med
                         else f"{name} -    " for name in ("inference", "tiled", "row-major")]
                print(f"H={H:<5d} B={B:<3d} T={T:<3d} torch.nn {med['torch.nn']:7.2f} ms; " + "  ".join(cells), flush=True)


# (T, B, I, H): the bench's sizes the inference loop covers, then inputs from H/4 to 2H at 128 and
# 256 units and batches from 1 to 64
INPUT_SIZES = [(35, 32, 28, 256), (100, 64, 128, 128), (500, 8, 32, 64),
               *[(50, B, I, H) for H in (128, 256) for B in (1, 8, 16, 64) for I in (H // 4, H, 2 * H)]]


def inference_input_sweep(repeats: int) -> None:
    K = fast._KERNELS.module
    if not K.infer_isa(64):
        raise SystemExit("the LSTM's inference loop does not run on this CPU")
    print("LSTM forward without a gradient to come: the inference loop with W_ih x_t in its tiles (fused) or a "
          "GEMM first; ratios to torch.nn's under torch.no_grad; * marks what the rule (fuse_input) chooses")
    for T, B, I, H in INPUT_SIZES:
        torch.manual_seed(0)
        theirs = torch.nn.LSTM(I, H)
        x, h0, c0 = torch.randn(T, B, I), torch.zeros(B, H), torch.zeros(B, H)
        w_ih, w_hh = theirs.weight_ih_l0.detach(), theirs.weight_hh_l0.detach()
        b = (theirs.bias_ih_l0 + theirs.bias_hh_l0).detach()
        runs = {"torch.nn": lambda: theirs(x),
                "fused": lambda: K.lstm_infer(x, h0, c0, w_ih, w_hh, b, None, fused=True),
                "GEMM": lambda: K.lstm_infer(x, h0, c0, w_ih, w_hh, b, None, fused=False)}
        med = _alternating_medians(runs, repeats)
        chosen = "fused" if K.infer_fuses_input(B, I, H) else "GEMM"
        cells = [f"{name} {med[name] / med['torch.nn']:.2f}{'*' if name == chosen else ' '}" for name in ("fused", "GEMM")]
        print(f"T={T:<4d} B={B:<3d} I={I:<5d} H={H:<4d} torch.nn {med['torch.nn']:7.2f} ms; " + "  ".join(cells),
              flush=True)


def compare(cell: str, size: tuple[int, int, int, int], kw: dict, settings: dict, repeats: int) -> None:
    """Forward+backward of an rnnlab layer under each setting and of torch.nn, alternating rounds;
    prints the medians as ratios to torch.nn."""
    T, B, I, H = size
    ours_cls, theirs_cls = CLASSES[cell]
    torch.manual_seed(0)
    ours, theirs = ours_cls(I, H, **kw), theirs_cls(I, H)
    x = torch.randn(T, B, I)
    ours_step, theirs_step = _train_step(ours, x), _train_step(theirs, x)
    times = {name: [] for name in [*settings, "torch.nn"]}
    for _ in range(3):
        ours_step()
        theirs_step()
    try:
        for _ in range(repeats):                    # alternating rounds: all see the same load
            for name, (tiled, onednn, reuse) in settings.items():
                fast.set_tiled(tiled)
                fast.set_onednn(onednn)
                fast.set_reuse(reuse)
                t0 = time.perf_counter()
                ours_step()
                times[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs_step()
            times["torch.nn"].append(time.perf_counter() - t0)
    finally:
        fast.set_tiled("auto")
        fast.set_onednn(True)
        fast.set_reuse(True)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    label = f"{cell}{' ' + ','.join(kw) if kw else ''} T={T} B={B} I={I} H={H}"
    print(f"{label:38s} torch.nn {med['torch.nn']:6.2f} ms; ratio "
          + "  ".join(f"{name} {med[name] / med['torch.nn']:.2f}" for name in settings), flush=True)


if __name__ == "__main__":
    main()
