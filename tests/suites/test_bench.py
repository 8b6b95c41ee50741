"""rnnlab bench, --quick smoke at tiny sizes: every kind of record, with its fields (no timings
are asserted: benchmarks are not unit tests)."""

from __future__ import annotations

import json

import pytest

from rnnlab.suites.bench import BenchConfig, activation_bytes, render_table, run_bench
from rnnlab.errors import ConfigError

FIELDS = {"kind", "cell", "T", "B", "I", "H", "rnnlab", "torch", "ratio"}


def _tiny(**kw) -> BenchConfig:
    return BenchConfig(quick=True, sizes=((6, 2, 3, 4),), repeats=1, memory_T=40, memory_size=(2, 3, 4),
                       stream_hidden=(8,), stream_input=3, gemm_n=64, variant_size=(5, 2, 3, 4),
                       gradgrad_size=(5, 2, 3, 4), **kw)


def test_quick_bench_records() -> None:
    res = run_bench(_tiny())
    kinds = {r["kind"] for r in res.as_dicts()}
    want = {"train", "forward", "stream", "memory", "variant", "gradgrad"}
    try:
        import onnxruntime  # noqa: F401
        want.add("onnx")
    except ImportError:
        pass
    assert kinds == want
    for r in res.as_dicts():
        assert FIELDS <= set(r), r
        assert r["rnnlab"] > 0 and r["torch"] > 0
        assert r["ratio"] == pytest.approx(r["rnnlab"] / r["torch"])
    cells = {(r["kind"], r["cell"]) for r in res.as_dicts()}
    assert {("train", c) for c in ("rnn", "lstm", "gru")} <= cells
    from rnnlab.nn.options import variant_bench_configs

    variants = {(r["cell"], r["note"]) for r in res.as_dicts() if r["kind"] == "variant"}
    assert variants == {(c, name) for name, (c, _) in variant_bench_configs().items()}
    assert render_table(res).row_count == len(res.records)
    json.dumps(res.as_dicts())


@pytest.mark.parametrize("engine,extra,B", [("reference", 0, 2), ("fast", 1, 2), ("fast", 1, 16)])
def test_memory_is_linear_in_T_and_below_torch(engine, extra, B) -> None:
    """Saved activations: exactly proportional to T (fixed per-step buffers); the fast engine
    also keeps tanh(c_t) so that its backward computes no transcendental. B = 16 takes the LSTM's
    tiled loop where the CPU has it (a whole number of vectors: no padding columns saved)."""
    import torch

    import rnnlab
    from rnnlab.engine import fast

    if engine == "fast" and not fast.available():
        pytest.skip(f"fast engine unavailable: {fast.unavailable_reason()}")
    m = rnnlab.LSTM(3, 8, engine=engine)
    a = activation_bytes(m, torch.randn(50, B, 3))
    b = activation_bytes(m, torch.randn(100, B, 3))
    per_step = B * 4 * (4 * 8 + 8 + 8 + extra * 8)   # B·4 bytes·(gates 4H + c H + h H [+ tanh(c) H])
    assert b - a == 50 * per_step
    assert a < activation_bytes(torch.nn.LSTM(3, 8), torch.randn(50, B, 3))


def test_cli_quick_json(tmp_path, monkeypatch, capsys) -> None:
    import rnnlab.suites.bench as bench_mod
    from rnnlab.cli.main import main

    monkeypatch.setattr(bench_mod, "SIZES", ((4, 2, 3, 4),))
    orig = bench_mod.BenchConfig

    def tiny(**kw):
        kw.update(sizes=((4, 2, 3, 4),), memory_T=20, memory_size=(2, 3, 4), stream_hidden=(8,),
                  stream_input=3, gemm_n=64, repeats=1)
        return orig(**kw)

    monkeypatch.setattr(bench_mod, "BenchConfig", tiny)
    out = tmp_path / "b.json"
    assert main(["bench", "--quick", "--no-onnx", "--no-variants", "--no-gradgrad", "--json", str(out)]) in (0, None)
    data = json.loads(out.read_text())
    assert isinstance(data, list)
    assert all(r["machine"]["threads"] == 2 for r in data)
    assert {r["kind"] for r in data} == {"train", "forward", "stream", "memory"}
    for r in data:
        assert {"kind", "cell", "T", "B", "I", "H", "rnnlab", "torch", "ratio"} <= set(r)
        assert r["ratio"] == pytest.approx(r["rnnlab"] / r["torch"])
    # --json without a file (as on every other command), like --json -: the records on stdout as one
    # JSON list, the table on stderr
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--json", "--quick", "--no-onnx", "--no-variants", "--no-gradgrad"]) in (0, None)
    printed = capsys.readouterr()
    assert [r["kind"] for r in json.loads(printed.out)] == [r["kind"] for r in data] and "ratio" in printed.err
    assert not (tmp_path / "-").exists()


def test_bad_config() -> None:
    with pytest.raises(ConfigError, match="cells"):
        BenchConfig(cells=("transformer",))
    with pytest.raises(ConfigError, match="engine"):
        BenchConfig(engine="nope")
    with pytest.raises(ConfigError, match=r"--threads \(bench threads\): expected an integer >= 1, got 0"):
        BenchConfig(threads=0)
    with pytest.raises(ConfigError, match=r"--repeats \(bench repeats\): expected an integer >= 0, got -1"):
        BenchConfig(repeats=-1)      # (no median of no repeats, after minutes of timing)


def test_memory_counts_the_checkpoint_engines_segment_states() -> None:
    """engine="checkpoint" keeps one (h, c) per segment on its backward node, outside autograd's
    saved tensors: they are counted beside the output (T·B·H) and the final state."""
    import math

    import torch

    import rnnlab

    T, B, H = 400, 2, 8
    m = rnnlab.LSTM(3, H, engine="checkpoint")
    got = activation_bytes(m, torch.randn(T, B, 3))
    segments = math.ceil(T / math.ceil(math.sqrt(T)))
    output, final, starts = T * B * H * 4, 2 * B * H * 4, segments * 2 * B * H * 4
    assert got == output + final + starts       # the first start is the layer's own zero state
