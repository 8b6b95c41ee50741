"""The dispatch table in docs/engines.md is what ``rnnlab.engine.plan`` answers.

The tables are read from the page (between ``<!-- dispatch-table -->`` markers), so neither can
change without the other. The grid: every cell, cell options that route differently, four dtypes,
padded or not, with and without an LSTM projection, batch sizes on both sides of the tiled
loop's thresholds, CPU and CUDA tensors, every engine name and the process-wide choice, with the
kernels present and missing. Rows for another CPU than this one cannot be checked here
(tests/engine/test_cpu_models.py runs emulated CPUs).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch

import rnnlab
from rnnlab.engine import fast, plan
from rnnlab.engine.kernels import FAST_KERNELS, VARIANT_KERNELS
from rnnlab.errors import ConfigError
from rnnlab.nn import _stream_kernels
from rnnlab.nn import variants as nn_variants
from rnnlab.nn.stream import Stream

DOC = Path(__file__).resolve().parents[2] / "docs" / "engines.md"
MODES = {"lstm": "lstm", "gru": "gru", "rnn_tanh": "rnn", "rnn_relu": "rnn"}
BATCHES = (1, 3, 4, 8, 9, 32)
HIDDEN = (16, 20, 24)      # vectors of 16 units, of 8, of neither
# (name, cell kwargs, which modes take it, the docs' "equations" value)
OPTIONS = [
    ("none", {}, ("lstm", "gru", "rnn_tanh", "rnn_relu"), "torch.nn"),
    ("weight_drop", {"weight_drop": 0.3}, ("lstm", "gru", "rnn_tanh", "rnn_relu"), "torch.nn"),
    ("forget_bias", {"forget_bias": 1.0}, ("lstm", "gru"), "torch.nn"),
    ("layer_norm", {"layer_norm": True}, ("lstm",), "layer_norm only"),
    ("layer_norm, recurrent_dropout (eval)", {"layer_norm": True, "recurrent_dropout": 0.2}, ("lstm",),
     "layer_norm only"),
    ("layer_norm, zoneout", {"layer_norm": True, "zoneout": 0.1}, ("lstm",), "other options"),
    ("gru layer_norm", {"layer_norm": True}, ("gru",), "other options"),
    ("peephole", {"peephole": True}, ("lstm",), "other options"),
    ("coupled_gates", {"coupled_gates": True}, ("lstm",), "other options"),
    ("gru_reset=before", {"gru_reset": "before"}, ("gru",), "other options"),
    ("zoneout", {"zoneout": 0.1}, ("lstm", "gru"), "other options"),
]


def read_table(marker: str) -> tuple[list[str], list[dict[str, str]]]:
    text = DOC.read_text(encoding="utf-8")
    body = re.search(rf"<!-- {marker} -->\n(.*?)\n<!-- /{marker} -->", text, re.S)
    assert body, f"docs/engines.md: no <!-- {marker} --> table"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.group(1).splitlines()]
    head = rows[0]
    return head, [dict(zip(head, r)) for r in rows[2:]]


def matches(cell: str, value: str) -> bool:
    """Whether a table cell (``any``, a list ``a, b``, ``≥ 9``, ``4–8``, ``> 0``) admits ``value``."""
    if cell == "any":
        return True
    m = re.fullmatch(r"(≥|>|<)\s*(\d+)", cell)
    if m:
        v, n = int(value), int(m.group(2))
        return {"≥": v >= n, ">": v > n, "<": v < n}[m.group(1)]
    m = re.fullmatch(r"multiple of (\d+)", cell)
    if m:
        return int(value) % int(m.group(1)) == 0
    m = re.fullmatch(r"(\d+)–(\d+)", cell)
    if m:
        return int(m.group(1)) <= int(value) <= int(m.group(2))
    return value in [c.strip() for c in cell.split(",")]


def expected(rows: list[dict[str, str]], call: dict[str, str]) -> tuple[int, str, str]:
    for i, row in enumerate(rows):
        if all(matches(row[k], v) for k, v in call.items()):
            if row["loop"] == "as engine=auto":
                _, engine, loop = expected(rows, {**call, "engine=": "auto"})
                return i, row["engine"], loop
            return i, row["engine"], row["loop"]
    raise AssertionError(f"no row of the dispatch table matches {call}")


@pytest.fixture
def kernels_missing(monkeypatch):
    """The kernels as on a machine where they could be neither found nor built."""
    def missing():
        for k in (FAST_KERNELS, VARIANT_KERNELS):
            monkeypatch.setattr(k, "module", None)
            monkeypatch.setattr(k, "error", "not built (test)")
    return missing


@pytest.fixture
def restore_choice():
    before = rnnlab.get_engine_choice()
    yield
    rnnlab.set_engine(before)


needs_kernels = pytest.mark.skipif(not fast.available(), reason="the fast kernels are not built here")


@needs_kernels
def test_plan_follows_the_dispatch_table(restore_choice, kernels_missing):
    _, rows = read_table("dispatch-table")
    cpu = fast.cpu_isa()
    hit: set[int] = set()
    checked = 0
    cases = []
    for mode, (name, kwargs, modes, equations) in itertools.product(MODES, OPTIONS):
        if mode not in modes:
            continue
        cls = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU}.get(mode)
        layer = (cls(2, 16, **kwargs) if cls else rnnlab.RNN(2, 16, nonlinearity=mode.split("_")[1], **kwargs)).eval()
        for proj in ((0, 4) if mode == "lstm" and equations == "torch.nn" else (0,)):
            cases.append((mode, name, equations, proj, nn_variants.plan_options(layer)))
    for kernels in ("built", "missing"):
        if kernels == "missing":
            kernels_missing()
        for (mode, name, equations, proj, options), dtype, masked, B, H, device, engine in itertools.product(
                cases, ("float32", "float64", "float16", "bfloat16"), (False, True), BATCHES, HIDDEN, ("cpu", "cuda"),
                ("auto", "fast", "reference", "checkpoint", "auto under set_engine('reference')")):
            choice, name_given = ("reference", "auto") if engine.startswith("auto under") else ("auto", engine)
            rnnlab.set_engine(choice)
            p = plan(mode, B, H, steps=5, dtype=getattr(torch, dtype), device=device, masked=masked,
                     proj_size=proj, engine=name_given, **options)
            call = {"cell": MODES[mode], "equations": equations, "dtype": dtype, "padded": "yes" if masked else "no",
                    "proj_size": str(proj), "device": device,
                    "engine=": "reference" if choice == "reference" else name_given,
                    "kernels": kernels, "CPU": cpu, "hidden": str(H), "batch": str(B)}
            row, want_engine, want_loop = expected(rows, call)
            assert (p.engine, p.loop) == (want_engine, want_loop), (call, name, str(p))
            assert p.reason and p.gemm                   # the explanation exists for every plan
            hit.add(row)
            checked += 1
    rnnlab.set_engine("auto")
    other_cpu = {i for i, r in enumerate(rows) if r["CPU"] not in ("any", cpu)}
    assert hit | other_cpu == set(range(len(rows))), f"rows no call of the grid reaches: {set(range(len(rows))) - hit - other_cpu}"
    assert checked > 10_000


@needs_kernels
def test_the_two_cases_before_the_table():
    from rnnlab.cells.lstm_variants import LSTMVariant

    for engine in ("auto", "fast", "reference", "checkpoint"):
        assert plan("lstm", 8, 16, engine=engine, autodiff=True).loop == "autograd"
    ln = LSTMVariant(layer_norm=True)
    assert plan("lstm", 8, 16, engine="fast", variant=ln).loop == "variants C++"
    assert plan("lstm", 8, 16, engine="fast", variant=ln, recording=True).loop == "variants python"


@needs_kernels
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("proj", [0, 4])
@pytest.mark.parametrize("use_kernels", [None, True, False])
@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("int8", [False, True])
def test_stream_follows_the_stream_table(mode, proj, use_kernels, use_numba, int8):
    if proj and mode != "lstm":
        pytest.skip("projections exist only for the LSTM")
    _, rows = read_table("stream-table")
    cls = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU}.get(mode)
    layer = cls(3, 8, proj_size=proj) if proj else cls(3, 8) if cls else rnnlab.RNN(3, 8, nonlinearity=mode[4:])
    numba = use_numba and _stream_kernels.HAVE_NUMBA
    call = {"cell": MODES[mode], "proj_size": str(proj), "int8": "yes" if int8 else "no",
            "engine=": {None: "auto", True: "fast", False: "reference"}[use_kernels],
            "kernels": "built", "numba": "yes" if numba else "no"}
    try:
        _, engine, loop = expected(rows, call)
    except AssertionError:          # no row: int8 asked for where the int8 step does not run
        assert int8
        with pytest.raises(ConfigError, match="int8=True"):
            Stream(layer.eval(), use_numba=use_numba, use_kernels=use_kernels, int8=True)
        return
    stream = Stream(layer.eval(), use_numba=use_numba, use_kernels=use_kernels, int8=int8)
    p = stream.plan()
    assert (p.engine, p.loop) == (engine, loop)
    # and the step that runs is the planned one
    assert stream.backend == {"stream C++": "kernels", "stream C++ int8": "kernels int8", "stream numba": "numba",
                              "stream numpy": "numpy"}[loop]


@needs_kernels
@pytest.mark.parametrize("kind,kwargs,B,masked", [
    ("lstm", {}, 16, False), ("lstm", {}, 2, False), ("lstm", {}, 16, True), ("lstm", {"proj_size": 4}, 4, False),
    ("gru", {}, 4, False), ("rnn", {}, 4, False), ("lstm", {"layer_norm": True}, 4, False),
    ("lstm", {"layer_norm": True}, 4, True),
    ("lstm", {"peephole": True}, 4, False), ("gru", {"layer_norm": True}, 4, False),
])
def test_a_layer_runs_the_path_its_plan_names(monkeypatch, kind, kwargs, B, masked):
    """Spies on the paths: the loop the layer's plan names is the one its forward and backward take."""
    from rnnlab.engine import variants as engine_variants

    ran = []
    for owner, name, loop in ((fast, "_tiled_forward", "tiled"), (fast, "reference_scan", "python"),
                              (engine_variants._LNLSTMFast, "apply", "variants C++"),
                              (engine_variants._VariantScan, "apply", "variants python")):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, _real=real, _loop=loop, **k: ran.append(_loop) or _real(*a, **k))
    K = fast._KERNELS.module
    for name in ("lstm_forward", "gru_forward", "rnn_forward"):
        real = getattr(K, name)

        def row_major(xw, *args, _real=real, _lstm=name == "lstm_forward"):   # the C++ loop's own SIMD steps
            w_hh = args[2] if _lstm else args[1]                                 # (lstm: h0, c0, w_hh; else h0, w_hh)
            if K.rows_isa_for(xw.shape[1], w_hh.shape[1], xw.shape[0]):
                ran.append("rows")
            return _real(xw, *args)

        monkeypatch.setattr(K, name, row_major)
    layer = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}[kind](3, 16, **kwargs)
    T = 5
    x = torch.randn(T, B, 3)
    if masked:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, [T] + [T - 1] * (B - 1))
    out = layer(x)[0]
    (out.data if masked else out).sum().backward()
    p = layer.plan(B, T, masked=masked)
    want = {"tiled avx512": "tiled", "tiled avx2": "tiled", "row-major avx512": "rows", "row-major avx2": "rows",
            "row-major": None}.get(p.loop, p.loop)
    assert ran == ([want] if want else []), (str(p), ran)
