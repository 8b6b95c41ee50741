"""An AOTInductor package of a small language model in a fresh process: compile time, cold start
and per-call latency, beside the eager rnnlab model.

    python benchmarks/bench_aoti.py [--threads 1] [--repeats N] [--json FILE]

The model is ``nn.Embedding(200, 128) -> rnnlab.LSTM(128, 128, 2, batch_first=True) ->
nn.Linear(128, 200)`` (untrained: inference latency only), exported with dynamic batch and time
axes and packaged the way ``rnnlab export RUN --pt2`` does (rnnlab.export.pt2). A new interpreter
then loads only the kernels' library and the package (it never imports rnnlab) and times:
``import torch`` (reported apart), the cold start from after that import to the first call's
output (load_library + aoti_load_package + one call at B=8, T=64), and the median of ``--repeats``
calls at B=1, T=1 (one decoding step) and at B=8, T=64. The eager model is timed at the same
shapes in this process. Prints one JSON object (and writes it to --json), with the CPU seconds of
both processes and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import rnnlab
from rnnlab.engine import fast
from rnnlab.export.pt2 import _aoti_package, export_program
from _report import cpu_seconds

VOCAB, WIDTH, LAYERS = 200, 128, 2
SHAPES = {"step_B1_T1": (1, 1), "B8_T64": (8, 64)}

# Run in the fresh interpreter: argv[1] is the inputs file, argv[2] the results file.
CHILD = r"""
import sys, time, resource
t_start = time.perf_counter()
import torch
t_torch = time.perf_counter()
import json, statistics
io = torch.load(sys.argv[1])
torch.set_num_threads(io["threads"])
t0 = time.perf_counter()
torch.ops.load_library(io["kernels"])
t_lib = time.perf_counter()
run = torch._inductor.aoti_load_package(io["package"])
t_pkg = time.perf_counter()
with torch.no_grad():
    first = run(io["inputs"]["B8_T64"])
first = first[0] if isinstance(first, (tuple, list)) else first
cold = time.perf_counter() - t0
res = {"import_torch_s": t_torch - t_start, "cold_start_s": cold, "load_library_s": t_lib - t0,
       "load_package_s": t_pkg - t_lib, "first_call_s": cold - (t_pkg - t0), "max_abs_diff": {}, "per_call_ms": {}}
res["max_abs_diff"]["B8_T64"] = (first - io["expected"]["B8_T64"]).abs().max().item()
with torch.no_grad():
    for name, x in io["inputs"].items():
        out = run(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        res["max_abs_diff"][name] = max(res["max_abs_diff"].get(name, 0.0), (out - io["expected"][name]).abs().max().item())
        times = []
        for _ in range(io["repeats"]):
            t = time.perf_counter()
            run(x)
            times.append((time.perf_counter() - t) * 1e3)
        res["per_call_ms"][name] = statistics.median(times)
res["rnnlab_imported"] = any(k == "rnnlab" or k.startswith("rnnlab.") for k in sys.modules)
r = resource.getrusage(resource.RUSAGE_SELF)
res["cpu_s"] = r.ru_utime + r.ru_stime
json.dump(res, open(sys.argv[2], "w"))
"""


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.rnn = rnnlab.LSTM(WIDTH, WIDTH, LAYERS, batch_first=True)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads in both processes (default 1)")
    ap.add_argument("--repeats", type=int, default=200, help="calls timed per shape; the median is reported")
    ap.add_argument("--json", default=None, help="write the figures to this file too")
    ap.add_argument("--warm-cache", action="store_true", help="keep torch's inductor cache (default: a new, empty one)")
    args = ap.parse_args()
    if not fast.available():
        sys.exit(f"bench_aoti: expected the fast kernels, got none ({fast.unavailable_reason()})")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    cpu0 = cpu_seconds()
    torch.manual_seed(0)
    model = TinyLM().eval()
    gen = torch.Generator().manual_seed(1)
    inputs = {name: torch.randint(0, VOCAB, (b, t), generator=gen) for name, (b, t) in SHAPES.items()}
    example = torch.randint(0, VOCAB, (3, 7), generator=gen)   # neither 1 nor equal sizes: no specialisation
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "lm.pt2"
        if not args.warm_cache:   # an empty inductor cache: the compile time of a first export, not a cache hit
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor-cache")
        t0, c0 = time.perf_counter(), cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN)   # the C++ compiler runs as children
        program = export_program(model, (example,), {"tokens": {0: "batch", 1: "seq"}}, ["tokens"])
        export_s = time.perf_counter() - t0
        _aoti_package()(program, package_path=str(package))
        compile_s = time.perf_counter() - t0
        compile_cpu = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN) - c0
        with torch.no_grad():
            expected = {name: model(x) for name, x in inputs.items()}
            eager_ms = {name: median_ms(lambda x=x: model(x), args.repeats) for name, x in inputs.items()}
            fast.set_tiled("off")   # the loop the exported operator runs, for a like-for-like figure
            try:
                row_major_ms = {name: median_ms(lambda x=x: model(x), args.repeats) for name, x in inputs.items()}
            finally:
                fast.set_tiled("auto")
        io = Path(tmp) / "io.pt"
        torch.save({"inputs": inputs, "expected": expected, "kernels": fast.kernel_library(), "package": str(package),
                    "threads": args.threads, "repeats": args.repeats}, io)
        results = Path(tmp) / "child.json"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # the child cannot find rnnlab's code
        env["OMP_NUM_THREADS"] = str(args.threads)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(io), str(results)], env=env, cwd=tmp,
                              capture_output=True, text=True, timeout=600)
        child_wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"bench_aoti: the fresh process failed:\n{proc.stderr[-3000:]}")
        child = json.loads(results.read_text())
        package_bytes = package.stat().st_size
    figures = {
        "model": f"Embedding({VOCAB}, {WIDTH}) -> rnnlab.LSTM({WIDTH}, {WIDTH}, {LAYERS}, batch_first=True) -> Linear({WIDTH}, {VOCAB})",
        "export_s": round(export_s, 2),
        "export_and_package_s": round(compile_s, 2), "export_and_package_cpu_s": round(compile_cpu, 2),
        "package_bytes": package_bytes,
        "fresh_process": {
            "wall_s": round(child_wall, 2), "cpu_s": round(child["cpu_s"], 2),
            "import_torch_s": round(child["import_torch_s"], 3),
            "cold_start_s": round(child["cold_start_s"], 3),
            "of_which": {k: round(child[k], 3) for k in ("load_library_s", "load_package_s", "first_call_s")},
            "rnnlab_imported": child["rnnlab_imported"],
            "max_abs_diff_vs_eager": child["max_abs_diff"],
            "matches_eager_1e-5": all(d <= 1e-5 for d in child["max_abs_diff"].values()),
        },
        "per_call_ms": {name: {"aoti": round(child["per_call_ms"][name], 4), "eager": round(eager_ms[name], 4),
                               "eager_row_major": round(row_major_ms[name], 4),
                               "aoti_over_eager": round(child["per_call_ms"][name] / eager_ms[name], 3)}
                        for name in SHAPES},
        # the eager loop at each shape; the package always runs the row-major loop (the exported operator)
        "eager_loop": {name: model.rnn.plan(b, t, inference=True).loop for name, (b, t) in SHAPES.items()},
        "shapes": {name: {"batch": b, "steps": t} for name, (b, t) in SHAPES.items()},
        "repeats": args.repeats, "inductor_cache": "warm" if args.warm_cache else "empty", "threads": args.threads,
        "parent_cpu_s": round(cpu_seconds() - cpu0, 2),
        "children_cpu_s": round(cpu_seconds(resource.RUSAGE_CHILDREN), 2),
        "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__, "rnnlab": rnnlab.__version__, "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    if child["rnnlab_imported"] or not figures["fresh_process"]["matches_eager_1e-5"]:
        sys.exit("bench_aoti: the fresh process imported rnnlab or disagreed with eager beyond 1e-5")


if __name__ == "__main__":
    main()
