"""The figures in README.md and docs/, written from the JSON that ``rnnlab demo`` and ``rnnlab bench``
produce, never typed by hand.

    rnnlab demo --quick --out demo-out                       # writes demo-out/results.json
    cp demo-out/results.json docs/data/demo-quick.json
    rnnlab bench --json docs/data/bench.json                 # 15 repeats; on a quiet machine
    python benchmarks/ucr_classify.py                        # writes docs/data/results-classify.json
    python benchmarks/bench_int8.py --json docs/data/bench-int8.json
    python benchmarks/bench_int8.py --cell gru --json docs/data/bench-int8-gru.json
    python benchmarks/bench_compile.py --size T B I H --json FILE  # per size; docs/data/bench-compile.json holds the runs
    python benchmarks/bench_aoti.py --json docs/data/bench-aoti.json
    python tools/docs_tables.py            # rewrite the tables between the markers
    python tools/docs_tables.py --check    # exit 1 when a table differs from its JSON (the tests run this)

A table lives between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in a markdown file.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_JSON = ROOT / "docs" / "data" / "demo-quick.json"
BENCH_JSON = ROOT / "docs" / "data" / "bench.json"
UCR_JSON = ROOT / "docs" / "data" / "results-classify.json"   # python benchmarks/ucr_classify.py
UCR_SETS = ("ItalyPowerDemand", "GunPoint", "ArrowHead", "BasicMotions", "PickupGestureWiimoteZ", "JapaneseVowels",
            "ACSF1", "OSULeaf", "PLAID")   # the benchmark's nine
DEMO_CMD = "rnnlab demo --quick"
BENCH_CMD = "rnnlab bench"
CELLS = ("rnn", "lstm", "gru")
LABEL = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
METRIC = {"acc": "accuracy", "mse": "MSE", "xent": "cross-entropy"}


def _value(r: dict) -> str:
    return f"{r['value']:.2f}" if r["metric"] == "acc" else f"{r['value']:.3f}"


def _horizon(r: dict) -> str:
    return f"> {r['horizon_max']}" if r["memory_horizon"] is None else str(r["memory_horizon"])


def demo_rows() -> list[tuple[dict, dict[str, dict]]]:
    records = json.loads(DEMO_JSON.read_text())["records"]
    keys = list(dict.fromkeys((r["task"], r["length"]) for r in records))
    by = {(r["task"], r["length"], r["cell"]): r for r in records}
    return [(by[k + (next(c for c in CELLS if k + (c,) in by),)], {c: by[k + (c,)] for c in CELLS if k + (c,) in by})
            for k in keys]


def readme_results() -> str:
    """A few headline rows: the demo's longest checksum and its adding probe, and the bench's
    activation memory, each with the command that produced it."""
    lines = ["| result | RNN | LSTM | GRU | command |", "|---|---|---|---|---|"]
    rows = demo_rows()
    for task in ("checksum", "adding"):
        picked = [(r0, cells) for r0, cells in rows if r0["task"] == task]
        if not picked:
            continue
        r0, cells = max(picked, key=lambda rc: rc[0]["length"])
        what = f"{task} T={r0['length']}: test {METRIC[r0['metric']]} (chance or baseline {r0['chance']:.3g})"
        lines.append(f"| {what} | " + " | ".join(_value(cells[c]) if c in cells else "" for c in CELLS)
                     + f" | `{DEMO_CMD}` |")
    bench = json.loads(BENCH_JSON.read_text())
    train = [r for r in bench if r["kind"] == "train"]
    if train:    # seconds: the machine is named on the performance page
        size = (train[0]["T"], train[0]["B"], train[0]["I"], train[0]["H"])
        ratio = {r["cell"]: r["ratio"] for r in train if (r["T"], r["B"], r["I"], r["H"]) == size}
        lines.append(f"| training step time / torch.nn's, T={size[0]} B={size[1]} I={size[2]} H={size[3]} | "
                     + " | ".join(f"{ratio[c]:.2f}" if c in ratio else "" for c in CELLS) + f" | `{BENCH_CMD}` |")
    memory = [r for r in bench if r["kind"] == "memory"]
    if memory:   # bytes, not seconds: the same on every machine
        T = max(r["T"] for r in memory)
        for r in (r for r in memory if r["T"] == T):
            lines.append(f"| LSTM memory kept for backward, with the output / torch.nn's, T={T} B={r['B']} H={r['H']}, engine {r['engine']} | "
                         f"| {r['ratio']:.2f} | | `{BENCH_CMD}` |")
    return "\n".join(lines)


def demo_table() -> str:
    lines = ["| probe | T | metric | chance / baseline | RNN | LSTM | GRU | memory horizon RNN / LSTM / GRU |",
             "|---|---|---|---|---|---|---|---|"]
    for r0, cells in demo_rows():
        lines.append(f"| {r0['task']} | {r0['length']} | {METRIC[r0['metric']]} | {r0['chance']:.3g} | "
                     + " | ".join(_value(cells[c]) if c in cells else "" for c in CELLS) + " | "
                     + " / ".join(_horizon(cells[c]) if c in cells else "" for c in CELLS) + " |")
    params = {c: cells[c]["params"] for r0, cells in demo_rows()[:1] for c in cells}
    hidden = demo_rows()[0][0]["hidden_size"]
    lines.append("")
    lines.append(f"Parameters at hidden size {hidden} on the first probe: "
                 + ", ".join(f"{LABEL[c]} {params[c]:,}" for c in CELLS if c in params) + ".")
    return "\n".join(lines)


def _amount(r: dict, v: float) -> str:
    if r["unit"] == "bytes":
        return f"{v / 2**20:.1f} MiB"
    return f"{v:.2f} {'µs' if r['unit'] == 'us' else 'ms'}"


def bench_table() -> str:
    bench = json.loads(BENCH_JSON.read_text())
    m = bench[0]["machine"] if bench else {}
    lines = [f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('threads', '?')} torch threads, "
             f"torch {m.get('torch', '?')}, large-matmul rate {m.get('gemm_gflops', '?')} GFLOP/s; "
             f"CPU ISA {m.get('cpu_isa', '?')}, torch's CPU capability {m.get('torch_cpu_capability', '?')}, "
             f"oneDNN GEMM {'on' if m.get('onednn_gemm') else 'off'}; "
             f"load average {m.get('load_avg_1min', '?')} at the start.", "",
             "| kind | cell or variant | T | B | I | H | engine | loop | GEMM | rnnlab | torch.nn | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in bench:
        name = r["note"] if r["kind"] == "variant" else r["cell"]
        engine = r["engine"] or ("ORT" if r["kind"] == "onnx" else "")
        lines.append(f"| {r['kind']} | {name} | {r['T']} | {r['B']} | {r['I']} | {r['H']} | {engine} | "
                     f"{r.get('loop') or ''} | {r.get('gemm') or ''} | {_amount(r, r['rnnlab'])} | {_amount(r, r['torch'])} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def _acc(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def _correct(r: dict, acc: float) -> int:
    """Test series classified right: published accuracies are rounded to 4 or 5 digits."""
    return round(acc * r["n_test"])


def _reached(r: dict, acc: float) -> bool:
    """``acc`` at or above the row's published figure: compared as test series right, or for a
    figure given to fewer digits (``published_digits``) with ``acc`` rounded to as many."""
    pub, digits = r["published_lstm_fcn_acc"], r.get("published_digits")
    if digits:
        return round(acc, digits) >= pub
    return _correct(r, acc) >= _correct(r, pub)


def _published(r: dict) -> str:
    """The published figure as given (two digits print as two)."""
    pub, digits = r["published_lstm_fcn_acc"], r.get("published_digits")
    return f"{pub:.{digits}f}" if pub is not None and digits else _acc(pub)


def _published_right(r: dict) -> str:
    """Test series right that the published figure stands for (a range when it is rounded coarser
    than one series)."""
    pub, digits, n = r["published_lstm_fcn_acc"], r.get("published_digits"), r["n_test"]
    if not digits:
        return f"{_correct(r, pub)} / {n}"
    half = 0.5 * 10 ** -digits
    lo, hi = math.ceil((pub - half) * n), math.ceil((pub + half) * n) - 1
    return f"{lo}–{hi} / {n}"


DTW_NAMES = {"rnnlab": "rnnlab's numba kernel (rnnlab.tasks.dtw)", "aeon": "aeon's dtw_pairwise_distance"}


def ucr_table() -> str:
    """The UCR/UEA classification rows of benchmarks/ucr_classify.py, a summary line under them."""
    data = json.loads(UCR_JSON.read_text())
    rows = [r for r in data["rows"] if not r.get("smoke")]
    lines = ["| set | train / test series | length | classes | validation | model | majority | 1-NN Euclidean | "
             "1-NN DTW | LSTM-FCN (published) | CPU s (train + baselines) | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        length = str(r["length_max"]) if r["length_min"] == r["length_max"] else f"{r['length_min']}–{r['length_max']}"
        v = r["validation"]
        val = f"{v['folds']}-fold" if v["mode"] == "kfold" else v["mode"]
        dims = f" × {r['dims']} variables" if r["dims"] > 1 else ""
        lines.append(f"| {r['set']} | {r['n_train']} / {r['n_test']} | {length}{dims} | {r['classes']} | {val} | "
                     f"{_acc(r['model_acc'])} | {_acc(r['majority_acc'])} | {_acc(r['nn1_euclidean_acc'])} | "
                     f"{_acc(r['nn1_dtw_acc'])} | {_published(r)} | "
                     f"{r['train_cpu_s']:.0f} + {r['baselines_cpu_s']:.0f} | {r['wall_s']:.0f} |")
    dtw = [r for r in rows if r["nn1_dtw_acc"] is not None]
    pub = [r for r in rows if r["published_lstm_fcn_acc"] is not None]
    lines += ["", f"Model accuracy ≥ 1-NN DTW on {sum(r['model_acc'] >= r['nn1_dtw_acc'] for r in dtw)} of "
              f"{len(dtw)} sets; at or above LSTM-FCN's published accuracy on "
              f"{sum(_reached(r, r['model_acc']) for r in pub)} of {len(pub)} "
              f"(compared as test series right, or at the figure's two digits where it has two); "
              f"above the majority class on {sum(r['model_acc'] > r['majority_acc'] for r in rows)} of {len(rows)}. "
              f"DTW: {', '.join(sorted({DTW_NAMES.get(r['dtw_backend'], r['dtw_backend']) for r in dtw}))}. "
              f"{_ucr_machines(rows)}; load average up to {max(r['load_avg_1min_end'] for r in rows):.1f} "
              "(the cores were shared with other jobs)."]
    missing = [n for n in UCR_SETS if n not in {r["set"] for r in rows}]
    if missing:
        lines.append(f"Not in this run: {', '.join(missing)}.")
    return "\n".join(lines)


def _ucr_machines(rows: list[dict]) -> str:
    """"Machine: ..." for the rows of one table; each row names the machine it ran on, and rows
    merged from several machines say which sets ran where."""
    where: dict[str, list[str]] = {}
    for r in rows:
        m = r["machine"]
        thread = "thread" if r["threads"] == 1 else "threads"
        where.setdefault(f"{m['cpu']}, {m['cores']} cores, {r['threads']} torch {thread}, torch {m['torch']}",
                         []).append(r["set"])
    if len(where) == 1:
        return f"Machine: {next(iter(where))}"
    return "Machines: " + "; ".join(f"{desc} ({', '.join(sets)})" for desc, sets in where.items())


def _ucr_section_table(data: dict, key: str, label: str, how: str) -> str:
    """Rows of one section of the UCR JSON (a non-default way of training the sets with a published
    LSTM-FCN figure) beside that figure and the default-flag run."""
    section = data.get(key, {"rows": []})
    rows = [r for r in section["rows"] if not r.get("smoke")]
    default = {r["set"]: r for r in data["rows"] if not r.get("smoke")}
    lines = [f"| set | model, {label} | test series right | LSTM-FCN (published) | series right | "
             "model, default flags | best step / steps | CPU s (train) | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = default.get(r["set"])
        lines.append(f"| {r['set']} | {_acc(r['model_acc'])} | {_correct(r, r['model_acc'])} / {r['n_test']} | "
                     f"{_published(r)} | {_published_right(r)} | {_acc(d['model_acc']) if d else ''} | "
                     f"{r.get('best_step') or ''} / {r['steps']} | {r['train_cpu_s']:.0f} | {r['wall_s']:.0f} |")
    reached = sum(_reached(r, r["model_acc"]) for r in rows)
    lines += ["", f"At or above LSTM-FCN's published accuracy on {reached} of {len(rows)} sets {how} (compared as "
              f"test series right). {_ucr_machines(rows)}."]
    # the published protocol retrains only the sets whose figure came with it (IEEE Access 2019)
    published = [r["set"] for r in default.values() if r.get("published_lstm_fcn_acc") is not None
                 and (key != "published_protocol" or r.get("published_source", "ieee-access-2019") == "ieee-access-2019")]
    missing = [n for n in published if n not in {r["set"] for r in rows}]
    if missing:
        lines.append(f"Not in this run: {', '.join(missing)}.")
    return "\n".join(lines)


def ucr_published_table() -> str:
    """The sets with a published LSTM-FCN figure, trained under that figure's protocol
    (``python benchmarks/ucr_classify.py --protocol published``), beside the default-flag run."""
    return _ucr_section_table(json.loads(UCR_JSON.read_text()), "published_protocol", "published protocol",
                              "under its protocol")


def ucr_ensemble_table() -> str:
    """The same sets with the default flags and ``--ensemble N``
    (``python benchmarks/ucr_classify.py --ensemble N``)."""
    data = json.loads(UCR_JSON.read_text())
    sizes = sorted({r["ensemble"] for r in data.get("ensemble", {"rows": []})["rows"]})
    label = "--ensemble " + "/".join(map(str, sizes)) if sizes else "--ensemble"
    return _ucr_section_table(data, "ensemble", f"`{label}`", f"with `{label}`")


FORECAST_JSON = ROOT / "docs" / "data" / "results-forecast.json"


def forecast_table() -> str:
    """M3 sMAPE per frequency, the global forecaster beside the baselines of the same run (ETS
    where the run had statsforecast) and the published anchors
    (``python benchmarks/m3_forecast.py --json docs/data/results-forecast.json``)."""
    r = json.loads(FORECAST_JSON.read_text())
    pub = r["published"]
    ets = "ets" in r["overall_smape"]
    lines = ["| frequency | series | horizon | rnnlab (global LSTM) | Theta | " + ("ETS | " if ets else "")
             + "naive | seasonal naive | Theta, published | training CPU s |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if ets else "")]
    for f in r["frequencies"]:
        s = f["smape"]
        lines.append(f"| {f['frequency']} | {f['series']:,} | {f['horizon']} | {s['model']:.2f} | {s['theta']:.2f} | "
                     + (f"{s['ets']:.2f} | " if ets else "")
                     + f"{s['naive']:.2f} | {s['snaive']:.2f} | {pub['Theta'].get(f['frequency'], float('nan')):.2f} | "
                     f"{f['train_cpu_s']:.0f} |")
    o = r["overall_smape"]
    lines.append(f"| **all** | {r['series']:,} | | **{o['model']:.2f}** | {o['theta']:.2f} | "
                 + (f"{o['ets']:.2f} | " if ets else "")
                 + f"{o['naive']:.2f} | {o['snaive']:.2f} | {pub['Theta']['all']:.2f} (N-BEATS {pub['N-BEATS']['all']:.2f}) | |")
    lines += ["", f"Command: `{r['command']}`; {r['series']:,} of the 3,003 series"
              + ("" if r["complete"] else " (a subset: the published figures are over all 3,003)")
              + f"; {r['cpu_s']:.0f} CPU s, {r['wall_s']:.0f} s wall on {r['machine']}."]
    if ets:
        fits = sum(f["ets_naive_fallbacks"] for f in r["frequencies"])
        lines[-1] += (f" ETS is statsforecast's automatic ETS ({sum(f['ets_cpu_s'] for f in r['frequencies']):.0f} "
                      "CPU s of that" + (f"; naive forecasts stand in for the {fits} series it could not fit"
                                         if fits else "") + ").")
    return "\n".join(lines)


LM_TM_JSON = ROOT / "docs" / "data" / "results-lm-timemachine.json"
LM_WT2_JSON = ROOT / "docs" / "data" / "results-lm-wikitext2.json"
WT2_TRAIN_TOKENS = 2088628   # WikiText-2 train.txt with <eos>


def _shown_command(cmd: str, name: str) -> str:
    """The benchmark's command as a user would type it: no local data folder, a runs/ folder."""
    words = cmd.split()
    out = []
    skip = False
    for i, w in enumerate(words):
        if skip:
            skip = False
            continue
        if w == "--data-dir":
            skip = True
            continue
        if i > 0 and words[i - 1] == "--out":
            w = f"runs/{name}"
        out.append(w)
    return " ".join(out)


def _load(r: dict) -> str:
    return f"{r['load_before'][0]:.1f} → {r['load_after'][0]:.1f}"


def lm_timemachine_table() -> str:
    data = json.loads(LM_TM_JSON.read_text())
    init_names = {"d2l": "d2l's: N(0, 0.01²), biases 0", "torch": "torch.nn's"}
    lines = ["| model | initialisation | d2l's training ppl | rnnlab training ppl (last epoch) | difference | "
             "held-out valid ppl | tokens/s (median step) | CPU s | wall s | load (1 min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        init = init_names[r.get("init", "torch")]
        if r["rc"] != 0:
            lines.append(f"| {LABEL[r['row']]} | {init} | {r['d2l_ppl']} | failed | | | | {r['cpu_s']} | {r['wall_s']} | "
                         f"{_load(r)} |")
            continue
        s = r["summary"]
        ok = "within" if r["within_tolerance"] else "outside"
        lines.append(f"| {LABEL[r['row']]} | {init} | {r['d2l_ppl']} | {r['train_ppl_last_epoch']:.2f} | "
                     f"{r['rel_diff']:+.1%} ({ok} {data['tolerance']:.0%}) | {r['valid_ppl']:.2f} | "
                     f"{s['tokens_per_s']:,.0f} | {r['cpu_s']:,.0f} | {r['wall_s']:,.0f} | {_load(r)} |")
    first = data["rows"][0]
    lines += ["", f"Command of the first row (the others differ in `--cell`, and the torch.nn-initialised rows "
              f"drop `--init-std`): `{_shown_command(first['command'], 'tm-' + first['row'])}`. "
              f"{data['epochs']} epochs, `--threads {data['threads']}`, {data['machine']['cpus_visible']} CPUs visible."]
    return "\n".join(lines)


def lm_wikitext2_table() -> str:
    data = json.loads(LM_WT2_JSON.read_text())
    lines = ["| model | command | trained | valid ppl | test ppl | tokens/s (median step) | CPU s | wall s | load (1 min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    ref = data["reference"]
    for r in data["rows"]:
        cmd = _shown_command(r["command"], "wt2-" + r["row"])
        if r["rc"] != 0:
            lines.append(f"| {r['row']} | `{cmd}` | failed | | | | {r['cpu_s']} | {r['wall_s']} | {_load(r)} |")
            continue
        s = r["summary"]
        epochs = s["steps"] * int(cmd.split("--bptt ")[1].split()[0]) * int(cmd.split("--batch-size ")[1].split()[0]) / WT2_TRAIN_TOKENS
        valid = "no evaluation within the budget" if r.get("valid_ppl") is None else f"{r['valid_ppl']:.1f}"
        lines.append(f"| {r['row']} | `{cmd}` | {int(s['steps']):,} steps ({epochs:.2f} epochs) | {valid} | "
                     f"{r['test_ppl']:.1f} | {s['tokens_per_s']:,.0f} | {r['cpu_s']:,.0f} | {r['wall_s']:,.0f} | {_load(r)} |")
    lines.append(f"| {ref['name']} | `python main.py --cuda --epochs 6` | 6 epochs | | {ref['test_ppl']} | | | | |")
    for r in (r for r in data["rows"] if r["rc"] == 0):
        per_cpu = r["tokens_per_cpu_s"]
        line = (f"The {r['row']} row processed {per_cpu:,.0f} training tokens per CPU second (reading the "
                f"corpus and any validation included) with `--threads {data['threads']}`")
        if r["cpu_share"] < 0.9 * data["threads"]:   # it did not have its cores: what they would have given
            line += (f"; at that rate 60 minutes of 2 fully available cores would give at most "
                     f"{per_cpu * 7200 / WT2_TRAIN_TOKENS:.1f} epochs.")
        else:
            line += f", using {r['cpu_share']:.2f} cores on average over its {r['wall_s'] / 60:.0f} minutes."
        lines += ["", line]
    return "\n".join(lines)


INT8_JSONS = (ROOT / "docs" / "data" / "bench-int8.json",        # python benchmarks/bench_int8.py
              ROOT / "docs" / "data" / "bench-int8-gru.json")    # ... --cell gru


def int8_table() -> str:
    """Float32 against int8 for each cell benchmarked: the streaming step's time, and the language
    model's perplexity and the classifier's accuracy through ``Stream`` and ONNX Runtime
    (``benchmarks/bench_int8.py [--cell gru]``)."""

    def mb(n: int) -> str:
        return f"{n / 1e6:.2f} MB"

    lines = ["| cell | | float32 | int8 | change |", "|---|---|---|---|---|"]
    notes = []
    for path in INT8_JSONS:
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        st, lm, cls = r["step"], r["lm"], r["classifier"]
        cell = r.get("cell", "lstm").upper()
        lines += [
            f"| {cell} | `Stream.step`, batch 1, input {st['input_size']}, hidden {st['hidden_size']} (median of "
            f"{st['repeats']} × {st['steps_per_repeat']:,} steps, alternating; float32 step: {st['backends']['float32']}) "
            f"| {st['float32_us']:.1f} µs | {st['int8_us']:.1f} µs | {st['ratio']:.2f}× |",
            f"| {cell} | language model, test perplexity ({lm['test_tokens']:,} characters), `Stream` | "
            f"{lm['ppl_stream_float32']:.4f} | {lm['ppl_stream_int8']:.4f} | {lm['stream_ppl_change_pct']:+.3f} % |",
            f"| {cell} | language model, test perplexity, ONNX Runtime (`--onnx` / `--onnx --int8`) | "
            f"{lm['ppl_onnx_float32']:.4f} | {lm['ppl_onnx_int8']:.4f} | {lm['onnx_ppl_change_pct']:+.3f} % |",
            f"| {cell} | classifier, test accuracy ({cls['test_examples']:,} snippets), `Stream` | "
            f"{cls['acc_stream_float32']:.4f} | {cls['acc_stream_int8']:.4f} | {cls['stream_acc_change_points']:+.2f} points |",
            f"| {cell} | classifier, test accuracy, ONNX Runtime | {cls['acc_onnx_float32']:.4f} | "
            f"{cls['acc_onnx_int8']:.4f} | {cls['onnx_acc_change_points']:+.2f} points |",
            f"| {cell} | ONNX file, language model / classifier | {mb(lm['onnx_float32_bytes'])} / "
            f"{mb(cls['onnx_float32_bytes'])} | {mb(lm['onnx_int8_bytes'])} / {mb(cls['onnx_int8_bytes'])} | |",
        ]
        notes.append(f"{cell}: int8 loop {r['int8_isa']}, torch {r['torch']}, {r['threads']} thread(s), load average "
                     f"{r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after")
    return "\n".join(lines + ["", "; ".join(notes) + "."])


AOTI_JSON = ROOT / "docs" / "data" / "bench-aoti.json"           # python benchmarks/bench_aoti.py --json FILE
COMPILE_JSON = ROOT / "docs" / "data" / "bench-compile.json"   # benchmarks/bench_compile.py, one run per size
COMPILE_MODELS = ("rnnlab eager", "rnnlab compiled fullgraph", "torch.nn eager", "torch.nn compiled")


def compile_table() -> str:
    """CPU ms per call, training step and inference, of eager and compiled rnnlab and torch.nn LSTMs
    at each size, and the 2-layer LM's graphs across lengths."""
    r = json.loads(COMPILE_JSON.read_text())
    lines = ["| T B I H | rnnlab eager | rnnlab compiled | torch.nn eager | torch.compile(torch.nn) "
             "| compiled / eager |", "|---|---|---|---|---|---|"]
    for run in r["runs"]:
        z, rows, ratio = run["size"], run["rows"], run["compiled_over_eager"]
        cells = " | ".join(f"{rows[m]['train_cpu_ms']:.1f} / {rows[m]['infer_cpu_ms']:.2f}" for m in COMPILE_MODELS)
        lines.append(f"| {z['T']} {z['B']} {z['I']} {z['H']} | {cells} | "
                     f"{ratio['train_cpu_ms']:.3f} / {ratio['infer_cpu_ms']:.3f} |")
    lm = r["runs"][0]["lm_2layer"]
    lines += ["", "CPU milliseconds per call, training step / inference, median of "
              f"{r['runs'][0]['repeats']}; {r['runs'][0]['backend']}, {r['runs'][0]['threads']} thread, "
              f"torch {r['runs'][0]['torch']}, {r['machine']}. The 2-layer language model: "
              f"{lm['graphs']} graph across lengths {', '.join(map(str, lm['lengths']))}. Command, once per size: "
              f"`{r['command']}`."]
    return "\n".join(lines)


def gradgrad_table() -> str:
    """The gradient-penalty step's time over torch.nn's, per cell, from the bench run."""
    recs = [r for r in json.loads(BENCH_JSON.read_text()) if r["kind"] == "gradgrad"]
    lines = ["| cell | T | B | I | H | engine | rnnlab | torch.nn | rnnlab / torch.nn |", "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        lines.append(f"| {r['cell']} | {r['T']} | {r['B']} | {r['I']} | {r['H']} | {r['engine']} | "
                     f"{_amount(r, r['rnnlab'])} | {_amount(r, r['torch'])} | {r['ratio']:.2f} |")
    m = recs[0]["machine"] if recs else {}
    lines += ["", f"{m.get('threads', '?')} torch threads, {m.get('cpu', '?')}; `{BENCH_CMD} --json FILE` "
              "(docs/data/bench.json, the run the performance page shows)."]
    return "\n".join(lines)


def aoti_table() -> str:
    """benchmarks/bench_aoti.py's packaging cost, cold start and per-call times beside eager's."""
    r = json.loads(AOTI_JSON.read_text())
    f, calls, loops = r["fresh_process"], r["per_call_ms"], r["eager_loop"]
    lines = ["| | AOTInductor package | eager | eager, library row-major loop | package / eager |",
             "|---|---|---|---|---|",
             f"| export and compile (empty inductor cache) | {r['export_and_package_s']:.1f} s "
             f"({r['export_and_package_cpu_s']:.1f} CPU s) | | | |",
             f"| cold start in a fresh process, after `import torch` ({f['import_torch_s']:.1f} s) | "
             f"{f['cold_start_s']:.1f} s (`aoti_load_package` {f['of_which']['load_package_s']:.1f} s) | | | |"]
    for name, label in (("step_B1_T1", "decoding step, batch 1, one token"), ("B8_T64", "batch 8 × 64 tokens")):
        c = calls[name]
        lines.append(f"| {label} (eager: {loops[name]} loop) | {c['aoti']:.3f} ms | {c['eager']:.3f} ms | "
                     f"{c['eager_row_major']:.3f} ms | {c['aoti_over_eager']:.2f} |")
    lines += ["", f"Medians of {r['repeats']} calls, {r['threads']} thread, torch {r['torch']}; outputs match eager "
              f"to 1e-5: {f['matches_eager_1e-5']}. Command: `python benchmarks/bench_aoti.py --json FILE` "
              "(docs/data/bench-aoti.json)."]
    return "\n".join(lines)


TABLES = {
    "readme-results": (ROOT / "README.md", readme_results),
    "demo-results": (ROOT / "docs" / "results.md", demo_table),
    "bench": (ROOT / "docs" / "performance.md", bench_table),
    "ucr-classify": (ROOT / "docs" / "results.md", ucr_table),
    "ucr-published": (ROOT / "docs" / "results.md", ucr_published_table),
    "ucr-ensemble": (ROOT / "docs" / "results.md", ucr_ensemble_table),
    "forecast-m3": (ROOT / "docs" / "results.md", forecast_table),
    "lm-timemachine": (ROOT / "docs" / "results.md", lm_timemachine_table),
    "lm-wikitext2": (ROOT / "docs" / "results.md", lm_wikitext2_table),
    "int8": (ROOT / "docs" / "engines.md", int8_table),
    "compile": (ROOT / "docs" / "engines.md", compile_table),
    "aoti": (ROOT / "docs" / "engines.md", aoti_table),
    "gradgrad": (ROOT / "docs" / "compatibility.md", gradgrad_table),
}


def render(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- table:{re.escape(name)} -->\n).*?(<!-- /table:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- table:{name} --> ... <!-- /table:{name} --> markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args(argv)
    stale = []
    for name, (path, make) in TABLES.items():
        text = path.read_text(encoding="utf-8")
        new = render(text, name, make())
        if new != text:
            stale.append(f"{path.relative_to(ROOT)} ({name})")
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("tables differ from their JSON: " + ", ".join(stale) + "; run python tools/docs_tables.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
