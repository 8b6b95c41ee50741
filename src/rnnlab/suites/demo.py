"""``rnnlab demo``: RNN vs LSTM vs GRU on the probe tasks, measured and explained in one report.

For every (probe, length) of a suite, each cell is trained through the shared training core
(:func:`rnnlab.tasks.probe.run_probe`) with the same hidden size, steps, learning rate and seed;
then its gradient-through-time curve is measured (at initialisation and after training) and, for
the gated cells, its gates. The outputs are ``results.json`` (one record per task × cell × length)
and a self-contained ``report.html`` whose plain-language reading is generated from the results.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import platform
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rnnlab.analysis import plots
from rnnlab.analysis.gates import probe_gate_stats
from rnnlab.analysis.gradflow import probe_grad_flow
from rnnlab.data.probes import PROBES
from rnnlab.errors import ConfigError, OutputError, expected, is_int_at_least
from rnnlab.outputs import atomic_open, check_output
from rnnlab.report.html import ReportSection, escape, figure_to_img, render_page, table
from rnnlab.tasks.probe import LABEL, RUN_HIDDEN, RUN_LR, RUN_MEMORY_BIAS, run_probe
from rnnlab.tasks.recurrent import CELLS

# Suites: probe -> lengths. Budgets are in steps (machine-independent); ``seconds`` optionally caps
# each run. Default lengths include T=100 on checksum, the length at which the demo's results
# separate the plain RNN from the gated cells.
SUITES: dict[str, dict[str, Any]] = {
    "quick": {"steps": 400, "checksum_steps": 500,
              "lengths": {"checksum": [20, 100], "distractor": [30], "segments": [30],
                          "adding": [30], "copy": [10]}},
    "default": {"steps": 400, "checksum_steps": 500, "ablation": True,
                "lengths": {"checksum": [25, 50, 100], "distractor": [25, 100], "segments": [25, 100],
                            "adding": [25, 100], "copy": [10, 30]}},
    "full": {"steps": 1000, "checksum_steps": 1000, "ablation": True,
             "lengths": {"checksum": [10, 25, 50, 100, 200, 400], "distractor": [25, 100, 200],
                         "segments": [25, 100, 200], "adding": [25, 100, 200], "copy": [10, 30, 60]}},
}
CELL_ORDER = CELLS                      # the order of tables and reading
# The ablation (default and full suites, not quick): the LSTM alone, at the longest length of these
# probes, under each initialisation / layer-norm variant of ``ablation_variants``.
ABLATION_TASKS = ("checksum", "adding")


def ablation_variants(T: int, memory_bias: float) -> dict[str, tuple[dict[str, Any], float | None]]:
    """variant name -> (cell options, the probe's memory_bias) for the LSTM ablation at length T.

    "torch default" is torch.nn's uniform init (forget-gate bias ≈ 0, no memory_bias);
    "forget_bias=1" is Keras' / Gers et al.'s; "chrono" is Tallec & Ollivier's with t_max = T;
    "layer_norm" adds layer normalisation to the demo's usual init (memory_bias)."""
    return {
        "torch default": ({}, None),
        "forget_bias=1": ({"forget_bias": 1.0}, None),
        f"chrono (t_max={T})": ({"init": "chrono", "t_max": float(T)}, None),
        f"layer_norm + memory_bias={memory_bias:g}": ({"layer_norm": True}, memory_bias),
    }


@dataclass
class DemoConfig:
    suite: str = "default"              # quick | default | full
    seed: int = 0                       # seeds data, init and training: same seed, same numbers
    hidden_size: int = RUN_HIDDEN       # same for all cells (so parameter counts differ: see the table)
    lr: float = RUN_LR                  # Adam; measured to work for all three cells on these probes
    batch_size: int = 64
    memory_bias: float = RUN_MEMORY_BIAS  # LSTM forget / GRU update gate bias at init; the ablation varies it
    seconds: float = 0.0                # optional wall-time cap per training run; 0 = steps only
    steps: int = 0                      # override the suite's steps per run; 0 = the suite's
    threads: int = 1                    # torch threads per run: 1 is fastest for these small models
    tasks: list[str] = field(default_factory=list)         # restrict to these probes; [] = all
    lengths: dict[str, list[int]] = field(default_factory=dict)  # override lengths per probe
    cells: list[str] = field(default_factory=lambda: list(CELL_ORDER))
    ablation: bool = True               # run the suite's ablation section (default and full suites have one)

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ConfigError(expected("demo suite", f"one of {sorted(SUITES)}", repr(self.suite)))
        for t in list(self.tasks) + list(self.lengths):
            if t not in PROBES:
                raise ConfigError(expected("demo task", f"one of {sorted(PROBES)}", repr(t)))
        for c in self.cells:
            if c not in CELL_ORDER:
                raise ConfigError(expected("demo cell", f"one of {CELL_ORDER}", repr(c)))
        for name, value, least in (("demo steps", self.steps, 0), ("demo hidden_size", self.hidden_size, 1),
                                   ("--threads (demo threads)", self.threads, 1)):
            if not is_int_at_least(value, least):
                raise ConfigError(expected(name, f"an integer >= {least}", repr(value)))
        if not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds) and self.seconds >= 0):
            raise ConfigError(expected("--max-time (demo seconds)", "a number of seconds >= 0 (0: no cap)", repr(self.seconds)))

    def plan(self) -> list[tuple[str, int, int]]:
        """(task, length, steps) in run order."""
        suite = SUITES[self.suite]
        lengths = {**suite["lengths"], **self.lengths}
        tasks = self.tasks or list(lengths)
        out = []
        for t in tasks:
            steps = self.steps or (suite["checksum_steps"] if t == "checksum" else suite["steps"])
            out += [(t, T, steps) for T in lengths.get(t, suite["lengths"].get(t, []))]
        return out

    def ablation_plan(self) -> list[tuple[str, int, int, str]]:
        """(task, length, steps, variant) of the ablation runs (LSTM), at each ablation probe's
        longest length in the plan; empty for a suite without an ablation or with ablation off."""
        if not (self.ablation and SUITES[self.suite].get("ablation")):
            return []
        longest: dict[str, tuple[int, int]] = {}
        for t, T, steps in self.plan():
            if t in ABLATION_TASKS and T >= longest.get(t, (0, 0))[0]:
                longest[t] = (T, steps)
        return [(t, T, steps, v) for t, (T, steps) in longest.items()
                for v in ablation_variants(T, self.memory_bias)]


@dataclass
class DemoResult:
    records: list[dict[str, Any]]
    seconds: float
    out: Path
    report: Path
    results_json: Path
    ablation: list[dict[str, Any]] = field(default_factory=list)   # ablation records (with "variant")


class _Progress:
    """A rich progress display: the whole suite, and the run now training (model, task, step); on
    stderr, as training's progress bar, so that stdout holds only what ``--json`` prints."""

    def __init__(self, total_runs: int, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), transient=False, console=Console(stderr=True))
        self.suite = self.p.add_task("demo suite (runs)", total=total_runs)
        self.run = self.p.add_task("", total=1, visible=False)

    def __enter__(self):
        if self.enabled:
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.p.__exit__(*exc)

    def start(self, label: str, steps: int) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        self.p.reset(self.run, total=steps, description=f"  training {label}", visible=True)
        return lambda n: self.p.update(self.run, completed=n)

    def show(self, label: str, completed: int, total: int) -> None:
        if self.enabled:
            self.p.update(self.run, description=f"  training {label}", completed=completed, total=total,
                          visible=True)

    def done(self, line: str) -> None:
        if self.enabled:
            self.p.advance(self.suite)
            self.p.console.print(line)


def _run_one(cfg: DemoConfig, task: str, T: int, steps: int, cell: str, analyse: bool,
             variant: str | None = None, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train one cell on one (probe, length) and measure it; ``variant`` names an ablation run
    (``ablation_variants``). Returns picklable results only, so it can run in a worker process."""
    options, memory_bias = ablation_variants(T, cfg.memory_bias)[variant] if variant else ({}, cfg.memory_bias)
    r = run_probe(task, cell, T, steps=steps, seconds=cfg.seconds, hidden_size=cfg.hidden_size,
                  seed=cfg.seed, lr=cfg.lr, batch_size=cfg.batch_size, quiet=True,
                  memory_bias=memory_bias, on_step=on_step, threads=cfg.threads, cell_options=options)
    ptask, model = r.probe_task, r.model
    torch.manual_seed(cfg.seed)
    fresh = ptask.build_model()                 # the same init distribution and seed as the run
    g_init, g_trained = probe_grad_flow(ptask, fresh), probe_grad_flow(ptask, model)
    rec = r.to_dict()
    curve = rec.pop("loss_curve")
    rec.pop("memory_horizon")
    rec.update(baseline=ptask.spec.baseline, memory_horizon=g_trained.horizon,
               memory_horizon_init=g_init.horizon, horizon_max=len(g_trained.dh) - 1,
               lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
               memory_bias=memory_bias if cell != "rnn" else None)
    if variant:
        rec.update(variant=variant, cell_options=options)
    gate = probe_gate_stats(ptask, model) if analyse and cell != "rnn" else None
    return {"record": rec, "curve": curve, "flow": {"init": g_init, "trained": g_trained} if analyse else None,
            "gates": gate}


_SHARED_STEPS = None                            # worker side: a shared int array, one slot per run


def _worker_init(shared) -> None:
    global _SHARED_STEPS
    _SHARED_STEPS = shared


def _run_in_worker(i: int, *args) -> dict[str, Any]:
    def on_step(n: int) -> None:
        _SHARED_STEPS[i] = n

    return _run_one(*args, on_step=on_step)


def check_demo_out(out: str | Path, force: bool = False) -> Path:
    """``out`` if the demo may write its two files there: a folder (made if absent) outside any run
    folder, whose ``results.json`` and ``report.html`` are new or ``force`` allows replacing them;
    an OutputError otherwise, before anything is trained."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: expected a folder for results.json and report.html, got an existing file")
    for name in ("results.json", "report.html"):
        check_output(out / name, force=force, flag="--out")
    return out


def run_demo(cfg: DemoConfig, out: str | Path, progress: bool = True, jobs: int = 1,
             force: bool = False) -> DemoResult:
    """Run the suite, write ``results.json`` and ``report.html`` into ``out``; return the records.
    ``out``'s files are checked first (:func:`check_demo_out`): existing ones are replaced only
    with ``force``, and never inside a run folder.

    ``jobs`` > 1 trains that many runs at once in worker processes (one torch thread each): on a
    2-core machine ``jobs=2`` nearly halves the wall time. Every run is seeded on its own, so the
    numbers do not depend on ``jobs``.
    """
    out = check_demo_out(out, force)
    plan = cfg.plan()
    longest = {t: max(T for tt, T, _ in plan if tt == t) for t, _, _ in plan}
    runs = [(task, T, steps, cell, T == longest[task], None) for task, T, steps in plan for cell in cfg.cells]
    runs += [(task, T, steps, "lstm", False, v) for task, T, steps, v in cfg.ablation_plan()]
    labels = [f"{LABEL[cell]} on {task} T={T}" + (f" [{v}]" if v else "") for task, T, _, cell, _, v in runs]
    results: list[dict[str, Any] | None] = [None] * len(runs)

    def line(i: int) -> str:
        rec = results[i]["record"]
        return (f"{labels[i]}: {rec['metric']} {rec['value']:.3f} (chance {rec['chance']:.3f}), "
                f"{rec['params']} params, {rec['seconds']:.1f}s")

    start = time.perf_counter()
    with _Progress(len(runs), progress) as prog:
        if jobs <= 1:
            for i, run in enumerate(runs):
                results[i] = _run_one(cfg, *run, on_step=prog.start(labels[i], run[2]))
                prog.done(line(i))
        else:
            ctx = mp.get_context("spawn")           # no fork after torch has started its threads
            shared = ctx.Array("i", len(runs), lock=False)
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(shared,)) as ex:
                pending = {ex.submit(_run_in_worker, i, cfg, *run): i for i, run in enumerate(runs)}
                while pending:
                    done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = pending.pop(fut)
                        results[i] = fut.result()
                        prog.done(line(i))
                    active = [i for i in pending.values() if 0 < shared[i] < runs[i][2]]
                    if active:
                        prog.show(", ".join(f"{labels[i]} {shared[i]}/{runs[i][2]}" for i in active[:jobs]),
                                  sum(shared[i] for i in active[:jobs]), sum(runs[i][2] for i in active[:jobs]))
    seconds = time.perf_counter() - start

    records = [res["record"] for run, res in zip(runs, results) if run[5] is None]
    ablation = [res["record"] for run, res in zip(runs, results) if run[5] is not None]
    curves: dict[str, dict[str, list[float]]] = {}
    flows: dict[str, dict[str, dict[str, Any]]] = {}
    gates: dict[str, dict[str, Any]] = {}
    for (task, T, _, cell, analyse, variant), res in zip(runs, results):
        if variant is not None:
            continue
        curves.setdefault(f"{task} T={T}", {})[cell] = res["curve"]
        if analyse:
            flows.setdefault(task, {})[cell] = res["flow"]
            if cell != "rnn" and task in ("checksum", "segments"):
                gates.setdefault(task, {})[cell] = res["gates"]
    payload = {"suite": cfg.suite, "config": dataclasses.asdict(cfg), "seconds": seconds, "jobs": jobs,
               "torch_threads": cfg.threads, "machine": platform.platform(), "records": records,
               "ablation": ablation}
    results_json = out / "results.json"
    with atomic_open(results_json, encoding="utf-8") as fh:
        fh.write(json.dumps(payload, indent=1))
    page = render_demo_report(records, flows, gates, curves, cfg, seconds, ablation)
    report = out / "report.html"
    with atomic_open(report, encoding="utf-8") as fh:
        fh.write(page)
    return DemoResult(records, seconds, out, report, results_json, ablation)


# ---------------------------------------------------------------------------------------------
# The reading: sentences generated from the numbers
# ---------------------------------------------------------------------------------------------

SOLVED, CHANCE = 0.8, 0.2               # fraction of the way from chance to perfect


def _progress_to_perfect(r: dict[str, Any]) -> float:
    if r["higher_is_better"]:
        return (r["value"] - r["chance"]) / (1.0 - r["chance"])
    return (r["chance"] - r["value"]) / r["chance"]


def _verdict(r: dict[str, Any]) -> str:
    p = _progress_to_perfect(r)
    return "solved" if p >= SOLVED else "near chance" if p < CHANCE else "partly learnt"


def _fmt(r: dict[str, Any]) -> str:
    return f"{r['value']:.3f}" if r["metric"] != "acc" else f"{r['value']:.2f}"


def reading(records: list[dict[str, Any]], flows: dict[str, dict[str, dict[str, Any]]] | None = None) -> list[str]:
    """Plain-language findings, each one a sentence built from the records."""
    lines: list[str] = []
    for task in dict.fromkeys(r["task"] for r in records):
        rows = [r for r in records if r["task"] == task]
        lengths = sorted({r["length"] for r in rows})
        by = {(r["cell"], r["length"]): r for r in rows}
        metric, baseline = rows[0]["metric"], rows[0]["baseline"]
        parts = []
        for T in lengths:
            cells = [c for c in CELL_ORDER if (c, T) in by]
            parts.append(f"T={T}: " + ", ".join(
                f"{LABEL[c]} {_fmt(by[c, T])} ({_verdict(by[c, T])})" for c in cells))
        text = f"<b>{task}</b> ({metric}; {baseline} = {by[rows[0]['cell'], lengths[0]]['chance']:.3g} at T={lengths[0]}): " + "; ".join(parts) + "."
        rnn = {T: _verdict(by["rnn", T]) for T in lengths if ("rnn", T) in by}
        gated_ok = {T: all(_verdict(by[c, T]) == "solved" for c in ("lstm", "gru") if (c, T) in by)
                    for T in lengths}
        sep = [T for T in lengths if rnn.get(T) == "near chance" and gated_ok[T]]
        if sep:
            text += (f" As the claim predicts, at T={sep[0]} the plain RNN stays near chance while the "
                     f"gated cells solve the task.")
        elif rnn and all(v == "solved" for v in rnn.values()):
            text += (f" <b>Against the claim</b>, the plain RNN solved this task at every length tested "
                     f"(up to T={max(rnn)}): at these lengths and this budget gating was not needed.")
        elif rnn:
            worst = [T for T in lengths if rnn.get(T) != "solved"]
            if worst:
                text += f" The plain RNN falls short from T={worst[0]} on"
                failing_gated = [T for T in worst if not gated_ok[T]]
                if failing_gated:
                    T0 = failing_gated[0]
                    gated = ", ".join(f"{LABEL[c]} {_verdict(by[c, T0])}" for c in ("lstm", "gru") if (c, T0) in by)
                    text += f", but the gated cells do not solve it either at T={', '.join(map(str, failing_gated))} (T={T0}: {gated})"
                    ahead = [T for T in failing_gated if rnn.get(T) == "near chance" and all(
                        _verdict(by[c, T]) == "partly learnt" for c in ("lstm", "gru") if (c, T) in by)]
                    text += (f"; at T={', '.join(map(str, ahead))} they are partly there while the RNN is at the "
                             f"baseline." if ahead else ": this budget does not separate the cells there.")
                else:
                    text += ", where the gated cells succeed."
        for T in lengths:
            for c in ("lstm", "gru"):
                if (c, T) in by and ("rnn", T) in by and _verdict(by["rnn", T]) == "solved" and _verdict(by[c, T]) != "solved":
                    text += f" At T={T} the {LABEL[c]} did worse than the plain RNN ({_fmt(by[c, T])} vs {_fmt(by['rnn', T])})."
        lines.append(text)
    if flows:
        for task, by_cell in flows.items():
            bits = []
            for cell in CELL_ORDER:
                if cell in by_cell:
                    gi, gt = by_cell[cell]["init"], by_cell[cell]["trained"]
                    hmax = len(gt.dh) - 1
                    h = lambda x: f"beyond {hmax}" if x is None else str(x)  # noqa: E731
                    bits.append(f"{LABEL[cell]} {h(gi.horizon)} at init, {h(gt.horizon)} after training")
            lines.append(f"Memory horizon on {task} (steps back until the gradient of a last-step loss "
                         f"falls below 1e-3 of its value at the loss): " + "; ".join(bits) + ".")
    biases = {r.get("memory_bias") for r in records if r["cell"] != "rnn"} - {None}
    if biases and flows:
        b = max(biases)
        lines.append(f"Caveat: the LSTM and GRU started with their memory gate biased open (bias {b:g}, "
                     f"σ({b:g}) = {1 / (1 + math.exp(-b)):.3f}; chrono-style init), which is much of why their "
                     f"gradient reaches far back already at initialisation. The plain RNN has no gate to bias "
                     f"(it keeps torch.nn's init).")
    p = {c: next((r["params"] for r in records if r["cell"] == c), None) for c in CELL_ORDER}
    if p["lstm"] and p["gru"]:
        lines.append(f"Parameters at the same hidden size: RNN {p['rnn']}, LSTM {p['lstm']}, GRU {p['gru']} "
                     f"(GRU/LSTM = {p['gru'] / p['lstm']:.2f}; 3 gate blocks against 4).")
    return lines


def ablation_rows(ablation: list[dict[str, Any]], records: list[dict[str, Any]],
                  cfg: DemoConfig) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """task -> [(variant, record)], the ablation's LSTM runs followed, when the main suite trained
    it, by the main suite's LSTM at the same length (the demo's usual init, memory_bias)."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for r in ablation:
        out.setdefault(r["task"], []).append((r["variant"], r))
    for task, rows in out.items():
        T = rows[0][1]["length"]
        main = next((r for r in records if r["task"] == task and r["cell"] == "lstm" and r["length"] == T), None)
        if main is not None:
            rows.append((f"memory_bias={cfg.memory_bias:g} (main suite)", main))
    return out


def ablation_reading(rows_by_task: dict[str, list[tuple[str, dict[str, Any]]]]) -> list[str]:
    """One sentence per probe, generated from the ablation's numbers."""
    lines = []
    for task, rows in rows_by_task.items():
        r0 = rows[0][1]
        ranked = sorted(rows, key=lambda vr: _progress_to_perfect(vr[1]), reverse=True)
        text = (f"<b>{task}</b> T={r0['length']} (LSTM, {r0['metric']}, {r0['baseline']} {r0['chance']:.3g}): "
                + ", ".join(f"{v} {_fmt(r)} ({_verdict(r)})" for v, r in ranked) + ".")
        verdicts = {v: _verdict(r) for v, r in rows}
        torch_v = verdicts.get("torch default")
        solved = [v for v, _ in ranked if verdicts[v] == "solved"]
        if len(solved) == len(rows):
            text += " Every variant solves it at this budget: here the initialisation and layer norm did not matter."
        elif not solved:
            text += (f" No variant solves it at this budget; the best, {ranked[0][0]}, gets "
                     f"{_fmt(ranked[0][1])}.")
        elif torch_v is not None and torch_v != "solved":
            text += (f" torch.nn's default init is {torch_v} while {', '.join(solved)} "
                     f"{'solves' if len(solved) == 1 else 'solve'} it: how the gates start decides the outcome here.")
        else:
            failing = [v for v, _ in ranked if verdicts[v] != "solved"]
            text += f" Not solved with {', '.join(failing)}."
        lines.append(text)
    return lines


def ablation_section(ablation: list[dict[str, Any]], records: list[dict[str, Any]], cfg: DemoConfig) -> ReportSection:
    """"Ablation: initialisation and layer norm": a table and the generated reading."""
    rows_by_task = ablation_rows(ablation, records, cfg)
    rows = []
    for task, vrs in rows_by_task.items():
        for v, r in vrs:
            opts = r.get("cell_options", {})
            init_h = r.get("memory_horizon_init")
            rows.append((task, r["length"], v, json.dumps(opts) if opts else "none (torch.nn)",
                         "off" if r.get("memory_bias") is None else r["memory_bias"], r["metric"], r["value"],
                         r["chance"], f"> {r['horizon_max']}" if init_h is None else init_h,
                         f"> {r['horizon_max']}" if r["memory_horizon"] is None else r["memory_horizon"],
                         r["seconds"]))
    body = ('<div class="reading">' + "".join(f"<p>{line}</p>" for line in ablation_reading(rows_by_task)) +
            "</div>" + table(["task", "T", "variant", "cell options", "memory_bias", "metric", "test value",
                              "chance/baseline", "memory horizon at init", "memory horizon trained", "seconds"],
                             rows) +
            '<p class="note">The LSTM alone, same hidden size, steps, learning rate and seed as the main suite; '
            'only the initialisation and layer norm differ. memory_bias is the demo\'s own init of the forget '
            '(and input) gate biases; the cell options are those of <code>--cell-option</code> '
            '(<code>rnnlab probe TASK --cell-option init=chrono --cell-option t_max=T</code> reruns one).</p>')
    return ReportSection("Ablation: initialisation and layer norm", body)


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def render_demo_report(records, flows, gates, curves, cfg: DemoConfig, seconds: float,
                       ablation: list[dict[str, Any]] | None = None) -> str:
    tasks = list(dict.fromkeys(r["task"] for r in records))
    secs: list[ReportSection] = []
    secs.append(ReportSection("Reading", '<div class="reading">' + "".join(
        f"<p>{line}</p>" for line in reading(records, flows)) + "</div>"))
    secs.append(ReportSection("Accuracy / error against length", figure_to_img(
        plots.metric_vs_length(records, tasks), "metric vs length") +
        '<p class="note">Dashed: chance level (acc) or trivial baseline (MSE of predicting 1 for adding; '
        'cross-entropy of a memoryless model for copy). Higher is better for acc, lower for mse/xent.</p>'))
    rows = [(r["task"], r["length"], LABEL[r["cell"]], r["metric"], r["value"], r["chance"],
             f"> {r['horizon_max']}" if r["memory_horizon"] is None else r["memory_horizon"],
             r["params"], r["steps"], r["seconds"], 100 * r["seconds"] / max(r["steps"], 1))
            for r in records]
    secs.append(ReportSection("Results", table(
        ["task", "T", "cell", "metric", "test value", "chance/baseline", "memory horizon", "params",
         "steps", "seconds", "s / 100 steps"], rows)))
    grad_html = ""
    for task, by_cell in flows.items():
        grad_html += figure_to_img(plots.grad_vs_distance(by_cell, f"{task} T={max(r['length'] for r in records if r['task'] == task)}"),
                                   f"gradient vs distance on {task}")
    secs.append(ReportSection("Gradient through time", grad_html +
        '<p class="note">‖∂L/∂h_t‖ (solid) and the LSTM\'s ‖∂L/∂c_t‖ (dotted) for a loss at the last step, '
        'mean over 256 test sequences, divided by the value at the loss. Dashed line: the 1e-3 threshold '
        'that defines the memory horizon.</p>'))
    gate_html = ""
    for task, by_cell in gates.items():
        T = max(r["length"] for r in records if r["task"] == task)
        gate_html += figure_to_img(plots.gate_histograms(by_cell, f"{task} T={T}"), f"gate histograms {task}")
        for cell, st in by_cell.items():
            if st is not None:
                gate_html += figure_to_img(plots.gate_heatmap(st, f"{task} T={T}"), f"gate heat map {cell} {task}")
    if gate_html:
        secs.append(ReportSection("Gates", gate_html +
            '<p class="note">After training, over 256 test sequences (first layer). Heat maps: one test '
            'sequence, hidden units by time steps.</p>'))
    secs.append(ReportSection("Loss curves", figure_to_img(plots.loss_curves(curves), "loss curves")))
    if ablation:
        secs.append(ablation_section(ablation, records, cfg))
    probe_rows = [(n, PROBES[n].situation, PROBES[n].baseline) for n in tasks]
    setup = (table(["probe", "what it tests", "baseline"], probe_rows) +
             f'<p class="note">Suite {escape(cfg.suite)}, seed {cfg.seed}, hidden size {cfg.hidden_size}, Adam lr {cfg.lr}, '
             f'batch {cfg.batch_size}, gradient clipping 1.0, memory-gate bias at init {cfg.memory_bias} '
             f'(LSTM forget gate and GRU update gate; LSTM input gate {-cfg.memory_bias}); the plain RNN keeps '
             f'torch.nn\'s init. Total wall time {seconds:.0f} s with {cfg.threads} torch thread(s) per run '
             f'({escape(platform.platform())}). Rerun: <code>rnnlab demo --{escape(cfg.suite)} --seed {cfg.seed}</code>'
             f'{"" if cfg.suite != "default" else " (no suite flag)"}.</p>')
    secs.append(ReportSection("Setup", setup))
    return render_page("rnnlab demo: RNN vs LSTM vs GRU", secs,
                       "Do gates keep information across long spans? Measured on probe tasks.")
