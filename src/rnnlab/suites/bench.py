"""Speed and memory of rnnlab against torch.nn, measured side by side in one process.

Why one process, alternating: on a shared machine the load changes minute to minute; timing
rnnlab and torch.nn in turns (after a warm-up, taking the median of the repeats) lets both see
the same conditions, so their *ratio* means something even when the absolute times drift.

Kinds of record (``--json`` writes a list of them):
  train    forward+backward ms per batch; ``roofline`` = the step matmuls' FLOPs over the time
           at the rate of one large matmul measured in the same run (3x the forward FLOPs);
           torch's matmul is MKL's, so a torch.nn cell on oneDNN can exceed 100 % where oneDNN
           is the faster of the two (AVX-512 on AMD processors)
  forward  inference forward ms (no grad)
  stream   µs per batch-1 step: ``rnnlab.nn.stream.Stream.step`` vs an ``nn.LSTMCell`` call
  memory   bytes saved for backward (activations held between forward and backward, plus the
           output; weights and the input excluded) for one long sequence, two lengths to show
           the growth is linear; ``engine`` says which rnnlab engine
  onnx     inference ms: ONNX Runtime on the exported layer ("rnnlab" column) vs torch.nn
  gradgrad ms of a gradient-penalty step (forward, ∂L/∂x with create_graph=True, then backward of
           ‖∂L/∂x‖² to the weights: a double backward) at ``gradgrad_size``; rnnlab's create_graph
           backward differentiates the cell equations in plain torch ops (engine/autodiff.py)
  variant  forward+backward ms of a cell variant (layer norm, peepholes, ...; ``note`` is its name,
           see ``rnnlab.nn.options.variant_bench_configs``) vs torch.nn's *standard* cell of the
           same family at ``variant_size``: what the option costs over the cell it replaces
"""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from rich.table import Table
from torch import nn

from rnnlab._version import __version__
from rnnlab.engine import fast, get_engine
from rnnlab.errors import ConfigError, expected, is_int_at_least
from rnnlab.export.onnx import _flat, export_onnx, onnx_session
from rnnlab.nn import GRU, LSTM, RNN
from rnnlab.nn.options import cell_kwargs, variant_bench_configs
from rnnlab.nn.stream import Stream
from rnnlab.tasks.recurrent import CELLS

SIZES: tuple[tuple[int, int, int, int], ...] = (
    (35, 32, 28, 256),     # (T, B, I, H)
    (100, 64, 128, 128),
    (50, 32, 64, 512),
    (500, 8, 32, 64),
)
_RNNLAB = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
_TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
_BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}


@dataclass
class BenchConfig:
    quick: bool = False                      # first size only, 3 repeats, short sequences: < 1 min
    engine: str = "fast"                     # the rnnlab engine timed against torch.nn
    threads: int = 2                         # torch.set_num_threads for the whole run
    cells: tuple[str, ...] = CELLS
    sizes: tuple[tuple[int, int, int, int], ...] = SIZES
    repeats: int = 0                         # 0: 5 (quick) or 15
    memory_T: int = 10_000                   # long sequence for the memory records (quick: 1,000)
    memory_size: tuple[int, int, int] = (16, 32, 128)   # (B, I, H) of the memory records
    stream_hidden: tuple[int, ...] = (64, 256)
    stream_input: int = 32
    onnx: bool = True                        # ORT vs torch inference if onnxruntime is installed
    gemm_n: int = 1024                       # size of the matmul that measures the machine's rate
    variants: bool = True                    # cell variants vs torch.nn's standard cell
    variant_size: tuple[int, int, int, int] = (100, 64, 128, 128)   # (T, B, I, H)
    gradgrad: bool = True                    # double backward (gradient penalty) vs torch.nn's
    gradgrad_size: tuple[int, int, int, int] = SIZES[0]

    def __post_init__(self) -> None:
        for c in self.cells:
            if c not in _RNNLAB:
                raise ConfigError(f"cells: expected names from {list(CELLS)}, got {c!r}")
        for name, value, least in (("--threads (bench threads)", self.threads, 1),
                                   ("--repeats (bench repeats)", self.repeats, 0)):
            if not is_int_at_least(value, least):
                raise ConfigError(expected(name, f"an integer >= {least}", repr(value)))
        get_engine(self.engine)

    @property
    def n_repeats(self) -> int:
        return self.repeats or (3 if self.quick else 15)

    @property
    def run_sizes(self) -> tuple[tuple[int, int, int, int], ...]:
        return self.sizes[:1] if self.quick else self.sizes


@dataclass
class BenchRecord:
    kind: str                                # "train" | "forward" | "stream" | "memory" | "onnx" | "variant"
    cell: str
    T: int
    B: int
    I: int
    H: int
    rnnlab: float                            # ms (train, forward, onnx), µs (stream), bytes (memory)
    torch: float
    ratio: float                             # rnnlab / torch
    unit: str
    roofline: float | None = None            # rnnlab's fraction of the GEMM rate (train, forward)
    roofline_torch: float | None = None
    engine: str = ""
    note: str = ""
    gemm: str = ""                           # where the step's recurrent product ran: onednn | blas | torch
    loop: str = ""                           # the time loop: a key of rnnlab.engine.dispatch.LOOPS


@dataclass
class BenchResult:
    records: list[BenchRecord] = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def as_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.records]


def time_pair(fa: Callable[[], object], fb: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median seconds of fa and fb, run in alternation (order flipped every round)."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for r in range(repeats):
        for f, acc in ((fa, ta), (fb, tb)) if r % 2 == 0 else ((fb, tb), (fa, ta)):
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def gemm_rate(n: int, repeats: int = 5) -> float:
    """FLOP/s of an n×n×n float32 matmul on this machine, now (fastest of the repeats)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / min(ts)          # the best run: the machine's rate, not the neighbours' load


def step_flops(cell: str, T: int, B: int, I: int, H: int) -> float:
    """Matmul FLOPs of a forward over T steps: input projection plus recurrent term."""
    return 2.0 * T * B * _BLOCKS[cell] * H * (I + H)


def _pair(cell: str, I: int, H: int, engine: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = _RNNLAB[cell](I, H, engine=engine)
    theirs = _TORCH[cell](I, H)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _train_step(m: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def f() -> None:
        m.zero_grad(set_to_none=True)
        out, _ = m(x)
        out.sum().backward()
    return f


def _forward(m: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def f() -> None:
        with torch.no_grad():
            m(x)
    return f


def _graph_held(root: Any) -> Iterator[torch.Tensor]:
    """Tensors the autograd graph from ``root`` holds outside its saved tensors: the segment
    states after the first (``later_starts``) that rnnlab's checkpoint engine keeps on its backward
    node (the first, h0 and c0, are saved tensors)."""
    todo, seen = [root], set()
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for pair in getattr(node, "later_starts", ()) or ():
            yield from (t for t in pair if isinstance(t, torch.Tensor))
        todo.extend(n for n, _ in getattr(node, "next_functions", ()))


def activation_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes that a forward keeps for backward (saved tensors and the checkpoint engine's segment
    states, deduplicated by storage) plus its outputs; the module's parameters and the input
    itself are not counted."""
    skip = {p.untyped_storage().data_ptr() for p in module.parameters()} | {x.untyped_storage().data_ptr()}
    seen: dict[int, int] = {}

    def add(t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            seen[st.data_ptr()] = st.nbytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        add(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, hidden = module(x)
    for t in [out, *(hidden if isinstance(hidden, tuple) else (hidden,))]:
        add(t)
    for t in _graph_held(out.grad_fn):
        add(t)
    total = sum(seen.values())
    del out, hidden
    return total


def _bench_speed(cfg: BenchConfig, res: BenchResult, rate: float, log: Callable[[str], None]) -> None:
    for T, B, I, H in cfg.run_sizes:
        for cell in cfg.cells:
            ours, theirs = _pair(cell, I, H, cfg.engine)
            x = torch.randn(T, B, I)
            flops = step_flops(cell, T, B, I, H)
            for kind, make, mult in (("forward", _forward, 1.0), ("train", _train_step, 3.0)):
                # the loop and GEMM library the layer takes at this size (forward: under no_grad)
                path = ours.plan(B, T, inference=kind == "forward")
                a, b = time_pair(make(ours, x), make(theirs, x), cfg.n_repeats, warmup=1 if cfg.quick else 2)
                res.records.append(BenchRecord(
                    kind, cell, T, B, I, H, a * 1e3, b * 1e3, a / b, "ms",
                    roofline=mult * flops / (a * rate), roofline_torch=mult * flops / (b * rate), engine=cfg.engine,
                    gemm=path.gemm, loop=path.loop,
                ))
                log(f"{kind:7s} {cell:4s} T={T} B={B} I={I} H={H}: rnnlab {a * 1e3:.2f} ms, torch {b * 1e3:.2f} ms")


def _gradient_penalty_step(m: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def f() -> None:
        m.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_()
        out, _ = m(xi)
        (gx,) = torch.autograd.grad(out.square().sum(), xi, create_graph=True)
        gx.square().sum().backward()
    return f


def _bench_gradgrad(cfg: BenchConfig, res: BenchResult, log: Callable[[str], None]) -> None:
    T, B, I, H = cfg.gradgrad_size
    if cfg.quick:
        T = min(T, 10)
    x = torch.randn(T, B, I)
    for cell in cfg.cells:
        ours, theirs = _pair(cell, I, H, cfg.engine)
        a, b = time_pair(_gradient_penalty_step(ours, x), _gradient_penalty_step(theirs, x),
                         max(3, cfg.n_repeats // 3), warmup=1)
        res.records.append(BenchRecord("gradgrad", cell, T, B, I, H, a * 1e3, b * 1e3, a / b, "ms",
                                       engine=cfg.engine, note="gradient penalty: ∂‖∂L/∂x‖²/∂W"))
        log(f"gradgrad {cell:4s} T={T} B={B} I={I} H={H}: rnnlab {a * 1e3:.2f} ms, torch {b * 1e3:.2f} ms")


def _bench_variants(cfg: BenchConfig, res: BenchResult, log: Callable[[str], None]) -> None:
    T, B, I, H = cfg.variant_size
    x = torch.randn(T, B, I)
    for name, (cell, options) in variant_bench_configs().items():
        torch.manual_seed(0)
        ours = _RNNLAB[cell](I, H, engine=cfg.engine, **cell_kwargs(options))
        theirs = _TORCH[cell](I, H)
        a, b = time_pair(_train_step(ours, x), _train_step(theirs, x), cfg.n_repeats, warmup=1 if cfg.quick else 2)
        res.records.append(BenchRecord("variant", cell, T, B, I, H, a * 1e3, b * 1e3, a / b, "ms",
                                       engine=cfg.engine, note=name))
        log(f"variant {name} T={T} B={B} I={I} H={H}: rnnlab {a * 1e3:.2f} ms, torch.nn {cell} {b * 1e3:.2f} ms")


def _bench_memory(cfg: BenchConfig, res: BenchResult, log: Callable[[str], None]) -> None:
    B, I, H = cfg.memory_size
    T_long = cfg.memory_T if not cfg.quick else min(cfg.memory_T, 500)
    for T in (T_long // 2, T_long):
        x = torch.randn(T, B, I)
        for engine in (cfg.engine, "checkpoint"):
            ours, theirs = _pair("lstm", I, H, engine)
            a, b = activation_bytes(ours, x), activation_bytes(theirs, x)
            res.records.append(BenchRecord("memory", "lstm", T, B, I, H, float(a), float(b), a / b, "bytes",
                                           engine=engine))
            log(f"memory  lstm T={T} engine={engine}: rnnlab {a / 2**20:.1f} MiB, torch {b / 2**20:.1f} MiB")


def _bench_stream(cfg: BenchConfig, res: BenchResult, log: Callable[[str], None]) -> None:
    I = cfg.stream_input
    n = 100 if cfg.quick else 2000
    for H in cfg.stream_hidden:
        torch.manual_seed(0)
        layer = LSTM(I, H).eval()
        cell = nn.LSTMCell(I, H).eval()
        stream = Stream(layer)
        xs = torch.randn(n, I)
        state = (torch.zeros(1, H), torch.zeros(1, H))

        def ours() -> None:
            for x_t in xs:
                stream.step(x_t)

        def theirs() -> None:
            s = state
            with torch.no_grad():
                for x_t in xs:
                    s = cell(x_t.view(1, I), s)

        a, b = time_pair(ours, theirs, max(3, cfg.n_repeats // 3), warmup=1)
        a, b = a / n * 1e6, b / n * 1e6
        res.records.append(BenchRecord("stream", "lstm", 1, 1, I, H, a, b, a / b, "us",
                                       note="Stream.step vs nn.LSTMCell, batch 1"))
        log(f"stream  lstm H={H}: rnnlab {a:.1f} us, torch {b:.1f} us")


def _bench_onnx(cfg: BenchConfig, res: BenchResult, log: Callable[[str], None]) -> None:
    if importlib.util.find_spec("onnxruntime") is None:   # the onnx extra
        log("onnx: onnxruntime not installed, skipped (pip install rnnlab[onnx])")
        return
    T, B, I, H = cfg.sizes[0]
    with tempfile.TemporaryDirectory() as tmp:
        for cell in cfg.cells:
            ours, theirs = _pair(cell, I, H, "reference")
            ours.eval()
            theirs.eval()
            sess = onnx_session(export_onnx(ours, Path(tmp) / f"{cell}.onnx"), threads=cfg.threads)
            x = torch.randn(T, B, I)
            h0 = torch.zeros(1, B, H)
            feeds = {"input": x.numpy(), "h0": h0.numpy()}
            if cell == "lstm":
                feeds["c0"] = h0.numpy()
            got = sess.run(None, feeds)
            with torch.no_grad():
                want = _flat(ours(x))
            err = max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))
            a, b = time_pair(lambda: sess.run(None, feeds), _forward(theirs, x), cfg.n_repeats)
            res.records.append(BenchRecord("onnx", cell, T, B, I, H, a * 1e3, b * 1e3, a / b, "ms",
                                           note=f"ORT vs torch.nn inference; max |ORT - rnnlab| = {err:.1e}"))
            log(f"onnx    {cell}: ORT {a * 1e3:.2f} ms, torch {b * 1e3:.2f} ms, max diff {err:.1e}")


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "rnnlab": __version__, "load_avg_1min": round(load, 2),
            # the CPU's vector ISA as rnnlab's kernels see it, torch's own dispatch level, and
            # whether the kernels may use oneDNN's GEMM here (each record's "gemm" says which ran)
            "cpu_isa": fast.cpu_isa(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_gemm": fast.gemm_status()[0], "onednn_gemm_why": fast.gemm_status()[1]}


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda s: None) -> BenchResult:
    """Run every measurement of ``cfg``; returns the records (and the machine they ran on)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        res = BenchResult(machine=machine_info(cfg.threads))
        rate = gemm_rate(cfg.gemm_n if not cfg.quick else min(cfg.gemm_n, 512))
        res.machine["gemm_gflops"] = round(rate / 1e9, 1)
        log(f"GEMM rate: {rate / 1e9:.1f} GFLOP/s")
        _bench_speed(cfg, res, rate, log)
        if cfg.variants:
            _bench_variants(cfg, res, log)
        if cfg.gradgrad:
            _bench_gradgrad(cfg, res, log)
        _bench_stream(cfg, res, log)
        _bench_memory(cfg, res, log)
        if cfg.onnx:
            _bench_onnx(cfg, res, log)
        res.machine["load_avg_1min_end"] = machine_info(cfg.threads)["load_avg_1min"]
        return res
    finally:
        torch.set_num_threads(old_threads)


def _fmt(r: BenchRecord, v: float) -> str:
    if r.unit == "bytes":
        return f"{v / 2**20:.1f} MiB"
    return f"{v:.2f} {'µs' if r.unit == 'us' else 'ms'}"


def render_table(res: BenchResult):
    """A rich Table of the records."""
    m = res.machine
    t = Table(title=f"rnnlab vs torch.nn — {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                    f"{m.get('threads')} threads, torch {m.get('torch')}, GEMM {m.get('gemm_gflops')} GFLOP/s, "
                    f"load {m.get('load_avg_1min')}")
    for col in ("kind", "cell", "T", "B", "I", "H", "engine", "rnnlab", "torch.nn", "ratio", "roofline (rnnlab/torch)"):
        t.add_column(col, justify="right" if col not in ("kind", "cell", "engine") else "left")
    for r in res.records:
        roof = "" if r.roofline is None else f"{r.roofline:.0%} / {r.roofline_torch:.0%}"
        cell = r.note if r.kind == "variant" else r.cell              # a variant's note is its name
        t.add_row(r.kind, cell, str(r.T), str(r.B), str(r.I), str(r.H), r.engine or ("ORT" if r.kind == "onnx" else ""),
                  _fmt(r, r.rnnlab), _fmt(r, r.torch), f"{r.ratio:.2f}", roof)
    return t
