"""torch.compile of rnnlab's LSTM (fullgraph, through the fast engine's operators) vs eager rnnlab vs
torch.compile of torch.nn.LSTM: training step (forward + backward of a fixed random projection of
the output) and inference, median wall and CPU ms (the four models take turns in every repeat,
in a new seeded order each time, so load changes fall on all alike and none always runs after the
same neighbour); the compile time of a 2-layer language model and its graph
count across 5 sequence lengths.

    python benchmarks/bench_compile.py [--size T B I H] [--proj P] [--layer-norm] [--repeats N] [--threads N]
        [--backend inductor] [--json FILE]
    python benchmarks/bench_compile.py --overhead [--size T B I H] [--repeats N] [--json FILE]

``--overhead`` measures instead what a call costs beyond its operator: thread CPU µs per call of
an eager and a compiled rnnlab LSTM (inference, one step of the size's batch) and of its inference
operator called alone, back to back ("warm") and after 3.5 ms of other Python work each time
("after other work", as a call inside a model meets the CPU's caches and predictors).

``--proj P`` gives both LSTMs a projection to P units (``proj_size``), which rnnlab compiles as one
operator running its eager engine (``rnnlab_eager::scan``). ``--layer-norm`` times rnnlab's
layer-norm LSTM (``rnnlab_variants::scan`` under compile) alone: torch.nn has no such layer.

The default size is the first of ``rnnlab bench``'s (rnnlab.suites.bench.SIZES). Prints one JSON
object (and writes it to --json), with the machine's load average beside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

import torch
from torch import nn

import rnnlab
from rnnlab.suites.bench import SIZES


def _interleaved_medians(fns: dict, repeats: int, before=None) -> dict:
    """{name: (median wall ms, median CPU ms of this thread)} of each fn(), the fns taking turns in
    every repeat, so that a change in the machine's load falls on all of them alike, in an order
    drawn anew for each repeat (seeded): a call finds the caches holding the weights of the call
    before it, and a fixed order would give each fn the same neighbour every time (compiled rnnlab
    after eager rnnlab: its own weights, warm). ``before()``, if given, runs untimed before each call."""
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    order = list(fns.items())
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for name, fn in order:
            if before is not None:
                before()
            t, c = time.perf_counter(), time.thread_time()
            fn()
            cpu[name].append((time.thread_time() - c) * 1e3)
            wall[name].append((time.perf_counter() - t) * 1e3)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in fns}


def _steps(model, x, w_out):
    def train():
        out, _ = model(x)
        (out * w_out).sum().backward()       # a dense gradient, as a real loss gives (out.sum()'s is a broadcast)

    def infer():
        with torch.no_grad():
            model(x)

    return train, infer


def _graphs(fn, *args) -> tuple[int, int]:
    """(graphs, graph breaks) torch.compile makes of fn(*args), from dynamo's explain()."""
    ex = torch._dynamo.explain(fn)(*args)
    return ex.graph_count, ex.graph_break_count


def lm_compile(backend: str, lengths=(12, 20, 28, 36, 44), B: int = 8, vocab: int = 200, H: int = 128) -> dict:
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.rnn, self.head = nn.Embedding(vocab, H), rnnlab.LSTM(H, H, 2, batch_first=True), nn.Linear(H, vocab)

        def forward(self, tokens):
            return self.head(self.rnn(self.emb(tokens))[0])

    # no length equal to the batch: dynamo's duck sizing would tie the two sizes in the first graph
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = LM()
    cm = torch.compile(model, fullgraph=True, backend=backend, dynamic=True)
    first = None
    for T in lengths:
        tokens = torch.randint(0, vocab, (B, T))
        t = time.perf_counter()
        loss = nn.functional.cross_entropy(cm(tokens).flatten(0, 1), tokens.flatten())
        loss.backward()
        if first is None:
            first = time.perf_counter() - t
    return {"compile_and_first_step_s": round(first, 2), "lengths": list(lengths),
            "graphs": int(torch._dynamo.utils.counters["stats"]["unique_graphs"])}


def _other_work(seconds: float = 0.0035) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def call_overhead(B: int, I: int, H: int, repeats: int, backend: str) -> dict:
    """Median thread-CPU µs per call (T = 1, inference) of rnnlab's LSTM eager and compiled and of
    its inference operator alone, warm and after other work; the layers' cost beyond the operator."""
    model = rnnlab.LSTM(I, H, batch_first=True)
    compiled = torch.compile(model, fullgraph=True, backend=backend, dynamic=True)
    x = torch.randn(B, 1, I)
    weights = [p.detach() for p in model.parameters()]        # w_ih, w_hh, b_ih, b_hh
    calls = {"eager": lambda: model(x), "compiled": lambda: compiled(x),
             "operator": lambda: torch.ops.rnnlab.lstm_infer(x.transpose(0, 1), x.new_zeros(B, H),
                                                             x.new_zeros(B, H), *weights)}
    out = {}
    with torch.no_grad():
        for f in calls.values():
            f(), f()                                   # compiles; first calls
        for mode, before in (("warm", None), ("after_other_work", _other_work)):
            med = {name: round(cpu_ms * 1e3, 1)
                   for name, (_, cpu_ms) in _interleaved_medians(calls, repeats, before).items()}
            out[mode] = {"us_per_call": med, "beyond_operator_us": {
                name: round(med[name] - med["operator"], 1) for name in ("eager", "compiled")}}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=4, default=list(SIZES[0]), metavar=("T", "B", "I", "H"))
    p.add_argument("--proj", type=int, default=0, help="proj_size of both LSTMs (0: none)")
    p.add_argument("--layer-norm", action="store_true", help="rnnlab's layer-norm LSTM, without torch.nn rows")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--json", default=None)
    p.add_argument("--overhead", action="store_true", help="what a call costs beyond its operator (see above)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    T, B, I, H = a.size
    if a.overhead:
        res = {"size": {"T": 1, "B": B, "I": I, "H": H}, "threads": a.threads, "repeats": a.repeats,
               "backend": a.backend, "torch": torch.__version__, "load_before": os.getloadavg()[0],
               "call_overhead": call_overhead(B, I, H, a.repeats, a.backend), "load_after": os.getloadavg()[0]}
        _emit(res, a.json)
        return
    x = torch.randn(B, T, I)
    w_out = torch.randn(B, T, a.proj or H)
    ours = rnnlab.LSTM(I, H, batch_first=True, proj_size=a.proj, layer_norm=a.layer_norm)
    theirs = nn.LSTM(I, H, batch_first=True, proj_size=a.proj)
    res = {"size": {"T": T, "B": B, "I": I, "H": H, "proj_size": a.proj, "layer_norm": a.layer_norm},
           "threads": a.threads, "repeats": a.repeats, "backend": a.backend,
           "torch": torch.__version__, "load_before": os.getloadavg()[0]}
    rows = {}
    cpu0 = time.process_time()
    steps = {}
    torch._dynamo.reset()
    models = [("rnnlab eager", ours, False), ("rnnlab compiled fullgraph", ours, True),
              ("torch.nn eager", theirs, False), ("torch.nn compiled", theirs, True)]
    for name, model, compiled in models[:2] if a.layer_norm else models:
        m = torch.compile(model, fullgraph=name.startswith("rnnlab"), backend=a.backend, dynamic=True) if compiled else model
        t = time.perf_counter()
        train, infer = _steps(m, x, w_out)
        train()
        first = time.perf_counter() - t
        infer()                                            # the inference graph, compiled here
        train()
        steps[name] = (train, infer)
        rows[name] = {"first_call_s": round(first, 2)}
    for kind, k in (("train", 0), ("infer", 1)):
        for name, (ms, cpu) in _interleaved_medians({n: f[k] for n, f in steps.items()}, a.repeats).items():
            rows[name][f"{kind}_ms"] = round(ms, 3)
            rows[name][f"{kind}_cpu_ms"] = round(cpu, 3)
    for name, model in (("rnnlab compiled fullgraph", ours), ("torch.nn compiled", theirs)):
        if name not in rows:
            continue
        torch._dynamo.reset()
        rows[name]["graphs"], rows[name]["graph_breaks"] = _graphs(model, x)
    res["rows"] = rows
    eager = rows["rnnlab eager"]
    comp = rows["rnnlab compiled fullgraph"]
    res["compiled_over_eager"] = {k: round(comp[k] / eager[k], 3) for k in ("train_ms", "infer_ms", "train_cpu_ms",
                                                                            "infer_cpu_ms")}
    res["lm_2layer"] = lm_compile(a.backend)
    res["cpu_s"] = round(time.process_time() - cpu0, 1)
    res["load_after"] = os.getloadavg()[0]
    _emit(res, a.json)


def _emit(res: dict, path: str | None) -> None:
    text = json.dumps(res, indent=2)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
