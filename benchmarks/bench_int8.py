"""int8 inference: what it saves in time and what it costs in perplexity and accuracy.

Three parts, in one run, written to one JSON file:

1. **Streaming step** (batch 1): ``Stream(layer)`` against ``Stream(layer, int8=True)`` on the same
   layer (``--cell``, input 32, hidden 256 by default, one layer), repeats alternating between the
   two, the median of the per-repeat means.
2. **Language model**: d2l's Time Machine character LSTM (one-hot input, 256 units, SGD lr 1,
   clip 1, the first 10,000 characters; ``benchmarks/lm_timemachine.py`` trains it for 500
   epochs, here ``--lm-epochs``), trained with ``rnnlab train lm``; the test split's perplexity
   streamed one character at a time through the float and the int8 Stream, and through ONNX
   Runtime from ``rnnlab export --onnx`` and ``--onnx --int8``.
3. **Classifier**: the snippet classifier of ``examples/classify_forecast.md`` (which book is a
   10-word snippet from; embedding 64 -> LSTM 64 -> last state), trained with
   ``rnnlab train classify`` for ``--cls-epochs``; test accuracy through the float and the int8
   Stream (one snippet at a time, the head on the final state) and through ONNX Runtime.

``--cell gru`` or ``rnn`` runs all three parts with that cell instead of the LSTM (the language
model and the classifier trained with ``--cell``). Training runs as a child process with ``--threads``; its CPU seconds are recorded beside the
figures, as is the load average (timings on a shared machine are inflated, ratios less so).

Usage (from the repository root; DATA holds timemachine/, tinyshakespeare/, wikitext-2/)::

    OMP_NUM_THREADS=1 python benchmarks/bench_int8.py --data-dir DATA --threads 1 \\
        --out runs/bench-int8 --json docs/data/bench-int8.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _lm_bench import REPO, machine, run_train

from rnnlab.engine import fast
from rnnlab.export.onnx import export_run, onnx_session, run_onnx
from rnnlab.nn.stream import Stream
from rnnlab.train.rundir import load_run
from _report import cpu_seconds


LAYERS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}


def step_times(cell: str, input_size: int, hidden: int, layers: int, repeats: int, steps: int) -> dict:
    """µs per Stream.step, float32 and int8, repeats alternating; medians of the per-repeat means."""
    torch.manual_seed(0)
    layer = LAYERS[cell](input_size, hidden, layers).eval()
    runners = {"float32": Stream(layer), "int8": Stream(layer, int8=True)}
    xs = torch.randn(steps, input_size)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for s in runners.values():                       # warm-up: caches, first-call costs
        for x in xs[:200]:
            s.step(x)
    for _ in range(repeats):
        for name, s in runners.items():
            s.reset()
            t0 = time.perf_counter()
            for x in xs:
                s.step(x)
            times[name].append((time.perf_counter() - t0) / steps * 1e6)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"cell": cell, "input_size": input_size, "hidden_size": hidden, "num_layers": layers, "batch": 1,
            "repeats": repeats, "steps_per_repeat": steps, "float32_us": round(med["float32"], 3),
            "int8_us": round(med["int8"], 3), "ratio": round(med["int8"] / med["float32"], 3),
            "backends": {k: s.backend for k, s in runners.items()},
            "all_us": {k: [round(t, 3) for t in v] for k, v in times.items()}}


def stream_outputs(stream: Stream, xs: torch.Tensor) -> torch.Tensor:
    stream.reset()
    return stream.run(xs)


def lm_figures(run: Path, onnx_dir: Path) -> dict:
    """Test-split perplexity, one stream of characters at batch 1: float vs int8 Stream, and ONNX
    Runtime on the float and the int8 export."""
    task, model, _ = load_run(run)
    ids = task.ids("test")
    x, y = ids[:-1], ids[1:]
    with torch.no_grad():
        emb = F.one_hot(x, model.vocab_size).float() if model.embedding is None else model.embedding(x)
        out: dict = {"test_tokens": int(y.numel())}
        full, _ = model(x[:, None])                                   # the layer's own forward
        out["ppl_model_forward"] = math.exp(F.cross_entropy(full[:, 0], y).item())
        for name, int8 in (("float32", False), ("int8", True)):
            t0 = cpu_seconds()
            hs = stream_outputs(Stream(model.rnn, int8=int8), emb)
            logits = model.decoder(hs)
            out[f"ppl_stream_{name}"] = math.exp(F.cross_entropy(logits, y).item())
            out[f"stream_{name}_cpu_s"] = round(cpu_seconds() - t0, 2)
    out["stream_ppl_change_pct"] = 100 * (out["ppl_stream_int8"] / out["ppl_stream_float32"] - 1)
    out.update(onnx_figures(run, onnx_dir / "lm", lambda sess: math.exp(F.cross_entropy(
        torch.from_numpy(run_onnx(sess, x[:, None])[0][:, 0]), y).item()), "ppl"))
    out["onnx_ppl_change_pct"] = 100 * (out["ppl_onnx_int8"] / out["ppl_onnx_float32"] - 1)
    return out


def classifier_figures(run: Path, test_csv: Path, onnx_dir: Path) -> dict:
    """Test accuracy, one snippet at a time through the float and the int8 Stream (the head on the
    final state), and through ONNX Runtime on the float and the int8 export (batches)."""
    task, model, _ = load_run(run)
    if model.pool != "last" or model.dirs != 1:
        raise SystemExit("bench_int8: expected a unidirectional classifier pooling its last state")
    split = task.load_file(str(test_csv), require_labels=True)
    batches = list(task._batches(split, torch.arange(len(split.inputs)).numpy()))
    out: dict = {"test_examples": len(split.inputs)}
    with torch.no_grad():
        for name, int8 in (("float32", False), ("int8", True)):
            stream = Stream(model.rnn, int8=int8)
            right = 0
            t0 = cpu_seconds()
            for b in batches:
                for j in range(b["x"].shape[1]):
                    stream.reset()
                    stream.run(model.embed(b["x"][: int(b["lengths"][j]), j]))
                    state = stream.state                      # (h, c) for the LSTM, h otherwise
                    logits = model.head((state[0] if isinstance(state, tuple) else state)[-1])
                    right += int(int(logits.argmax()) == int(b["y"][j]))
            out[f"acc_stream_{name}"] = right / len(split.inputs)
            out[f"stream_{name}_cpu_s"] = round(cpu_seconds() - t0, 2)

        def accuracy(sess) -> float:
            right = 0
            for b in batches:
                logits = run_onnx(sess, b["x"], b["lengths"])[0]
                right += int((torch.from_numpy(logits).argmax(-1) == b["y"]).sum())
            return right / len(split.inputs)

        out.update(onnx_figures(run, onnx_dir / "cls", accuracy, "acc"))
    out["stream_acc_change_points"] = 100 * (out["acc_stream_int8"] - out["acc_stream_float32"])
    out["onnx_acc_change_points"] = 100 * (out["acc_onnx_int8"] - out["acc_onnx_float32"])
    return out


def onnx_figures(run: Path, stem: Path, score, key: str) -> dict:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, int8 in (("float32", False), ("int8", True)):
        path = export_run(run, f"{stem}.{name}.onnx", force=True, int8=int8).paths[0]
        out[f"{key}_onnx_{name}"] = score(onnx_session(path, threads=1))
        out[f"onnx_{name}_bytes"] = path.stat().st_size
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder with timemachine/, tinyshakespeare/, wikitext-2/")
    p.add_argument("--out", default="runs/bench-int8", help="folder for the runs, snippets and ONNX files")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cell", choices=sorted(LAYERS), default="lstm", help="the cell of all three parts")
    p.add_argument("--lm-epochs", type=int, default=300)
    p.add_argument("--cls-epochs", type=int, default=5)
    p.add_argument("--hidden", type=int, default=256, help="hidden size of the step-time layer")
    p.add_argument("--input", type=int, default=32, help="input size of the step-time layer")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--skip-training", action="store_true", help="reuse the runs already under --out")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out_dir = Path(a.out).resolve()
    data = Path(a.data_dir).resolve()
    res: dict = {"machine": machine(), "torch": torch.__version__, "threads": a.threads,
                 "cell": a.cell, "int8_isa": fast.int8_isa(), "load_before": [round(x, 2) for x in os.getloadavg()],
                 "command": " ".join(sys.argv)}

    t0 = cpu_seconds()
    res["step"] = step_times(a.cell, a.input, a.hidden, 1, a.repeats, a.steps)
    res["step"]["cpu_s"] = round(cpu_seconds() - t0, 1)
    print(f"step (B=1, I={a.input}, H={a.hidden}): float32 {res['step']['float32_us']:.2f} us, "
          f"int8 {res['step']['int8_us']:.2f} us, ratio {res['step']['ratio']:.3f}", flush=True)

    lm_run, cls_run, snippets = out_dir / "lm", out_dir / "classify", out_dir / "snippets"
    common = ["--seed", str(a.seed), "--threads", str(a.threads), "--quiet", "--json", "--no-report", "--overwrite"]
    if not a.skip_training:
        res["lm_train"] = run_train(["--dataset", "timemachine", "--data-dir", str(data / "timemachine"),
                                     "--preprocess", "d2l", "--level", "char", "--max-tokens", "10000",
                                     "--cell", a.cell, "--embed", "0", "--hidden", "256", "--layers", "1",
                                     "--batch-size", "32", "--bptt", "35", "--optimizer", "sgd", "--lr", "1",
                                     "--clip", "1", "--max-epochs", str(a.lm_epochs), *common, "--out", str(lm_run)])
        subprocess.run([sys.executable, str(REPO / "examples" / "make_corpus_snippets.py"), "--data-dir", str(data),
                        "--out", str(snippets)], check=True, capture_output=True)
        res["cls_train"] = run_train(["--train", str(snippets / "train.csv"), "--valid", str(snippets / "valid.csv"),
                                      "--test", str(snippets / "test.csv"), "--label-col", "source",
                                      "--cell", a.cell, "--max-epochs", str(a.cls_epochs), *common, "--out", str(cls_run)], task="classify")
        for k in ("lm_train", "cls_train"):
            if res[k]["rc"] != 0:
                raise SystemExit(f"bench_int8: {k} failed: {res[k].get('error')}")
            print(f"{k}: {res[k]['cpu_s']} CPU s, {res[k]['wall_s']} s wall", flush=True)

    t0 = cpu_seconds()
    res["lm"] = lm_figures(lm_run, out_dir / "onnx")
    res["lm"]["eval_cpu_s"] = round(cpu_seconds() - t0, 1)
    lm = res["lm"]
    print(f"LM test perplexity ({lm['test_tokens']} chars): Stream float32 {lm['ppl_stream_float32']:.4f}, "
          f"int8 {lm['ppl_stream_int8']:.4f} ({lm['stream_ppl_change_pct']:+.3f} %); ONNX Runtime float32 "
          f"{lm['ppl_onnx_float32']:.4f}, int8 {lm['ppl_onnx_int8']:.4f} ({lm['onnx_ppl_change_pct']:+.3f} %)", flush=True)
    t0 = cpu_seconds()
    res["classifier"] = classifier_figures(cls_run, snippets / "test.csv", out_dir / "onnx")
    res["classifier"]["eval_cpu_s"] = round(cpu_seconds() - t0, 1)
    c = res["classifier"]
    print(f"classifier test accuracy ({c['test_examples']} snippets): Stream float32 {c['acc_stream_float32']:.4f}, "
          f"int8 {c['acc_stream_int8']:.4f} ({c['stream_acc_change_points']:+.2f} points); ONNX Runtime float32 "
          f"{c['acc_onnx_float32']:.4f}, int8 {c['acc_onnx_int8']:.4f} ({c['onnx_acc_change_points']:+.2f} points)")
    res["targets"] = {"step_ratio_le_0.6": res["step"]["ratio"] <= 0.6,
                      "lm_ppl_change_le_1pct": abs(lm["stream_ppl_change_pct"]) <= 1.0,
                      "cls_acc_change_le_0.5_points": abs(c["stream_acc_change_points"]) <= 0.5}
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    res["bench_cpu_s"] = round(cpu_seconds(), 1)
    print("targets:", json.dumps(res["targets"]))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
