"""Choosing the engine (rnnlab.set_engine, RNNLAB_ENGINE, --engine), the plan each call takes, the
GEMM library's guard (gemm.h) and the prebuilt kernels' source check (kernels.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
import torch

import rnnlab
from rnnlab import engine as eng
from rnnlab.engine import dispatch, fast
from rnnlab.engine.kernels import Kernels, source_digest
from rnnlab.errors import ConfigError

needs_fast = pytest.mark.skipif(not fast.available(), reason=f"fast kernels not built: {fast.unavailable_reason()}")


@pytest.fixture
def restore_choice():
    before = eng.get_engine_choice()
    yield
    eng.set_engine(before)


def test_set_engine_rejects_unknown_names(restore_choice):
    with pytest.raises(ConfigError, match=r"^set_engine: expected one of auto, fast, reference, got 'fastest'$"):
        rnnlab.set_engine("fastest")
    assert rnnlab.get_engine_choice() == "auto"


def test_reference_choice_sends_auto_layers_to_the_reference_and_keeps_explicit_ones(restore_choice, monkeypatch):
    calls = []
    ref = dispatch._ENGINES["reference"]
    monkeypatch.setitem(dispatch._ENGINES, "reference", lambda *a, **k: calls.append(1) or ref(*a, **k))
    x = torch.randn(4, 3, 5)
    auto, explicit = rnnlab.LSTM(5, 6), rnnlab.LSTM(5, 6, engine="fast")
    explicit.load_state_dict(auto.state_dict())
    rnnlab.set_engine("reference")
    assert eng.resolve_engine("auto") == "reference" and eng.engine_choice_source() == "set_engine"
    out_ref, _ = auto(x)
    assert len(calls) == 1
    out_fast, _ = explicit(x)          # an explicit engine= is kept (the fast engine never calls "reference"
    assert len(calls) == 1             # through the registry: its fallback is scan itself)
    torch.testing.assert_close(out_fast, out_ref)
    rnnlab.set_engine("auto")
    auto(x)
    assert len(calls) == 1


def test_environment_variable_sets_the_choice_and_reference_loads_no_kernels():
    code = ("import torch, rnnlab; from rnnlab.engine import fast, engine_choice_source; rnnlab.LSTM(3, 4)(torch.randn(2, 1, 3)); "
            "print(rnnlab.get_engine_choice(), engine_choice_source(), fast._KERNELS.module is None)")
    env = {**os.environ, "RNNLAB_ENGINE": "reference"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["reference", "RNNLAB_ENGINE", "True"]


def test_environment_variable_with_an_unknown_name_is_one_config_error(monkeypatch):
    monkeypatch.setenv("RNNLAB_ENGINE", "turbo")
    monkeypatch.setattr(dispatch, "_choice", None)
    with pytest.raises(ConfigError, match=r"^RNNLAB_ENGINE: expected one of auto, fast, reference, got 'turbo'$"):
        rnnlab.LSTM(3, 4)(torch.randn(2, 1, 3))
    monkeypatch.setattr(dispatch, "_choice", None)     # re-read after the variable is restored


def test_cli_engine_flag_sets_the_choice(restore_choice, monkeypatch, tmp_path):
    from rnnlab.cli import main

    monkeypatch.setenv("RNNLAB_ENGINE", "auto")   # restored after the test (the flag exports its value)
    rc = main(["train", "toy", "--engine", "reference", "--max-steps", "1", "--eval-every", "1", "--quiet",
               "--no-report", "--out", str(tmp_path / "run")])
    assert rc == 0
    assert rnnlab.get_engine_choice() == "reference" and os.environ["RNNLAB_ENGINE"] == "reference"


@needs_fast
def test_gemm_guard_is_consistent():
    """oneDNN's matmul is used only on AVX-512 CPUs and only after its load-time check passed."""
    K = fast._KERNELS.module
    uses, reason, failed = K.onednn_state()
    assert fast.gemm_status() == (uses, reason)
    if uses:
        assert K.cpu_isa() == "avx512" and K.onednn_check() == "" and not failed
    if K.cpu_isa() != "avx512":
        assert not uses and "not AVX-512" in reason
    assert fast.cpu_isa() == K.cpu_isa()


@needs_fast
@pytest.mark.parametrize("B,tiled", [(32, "auto"), (32, "off"), (2, "auto")])
def test_plan_names_the_paths_that_run(B, tiled):
    """fast.plan's loop and GEMM are what a forward+backward actually takes (tiled-loop calls and
    the kernels' per-library product counts)."""
    H = 256
    fast.set_tiled(tiled)
    try:
        p = fast.plan("lstm", B, H, steps=3)
        K = fast._KERNELS.module
        calls = []
        tiled_forward = fast._tiled_forward
        fast._tiled_forward = lambda *a, **k: calls.append(1) or tiled_forward(*a, **k)
        try:
            K.gemm_counts(True)
            m = rnnlab.LSTM(8, H)
            m(torch.randn(3, B, 8))[0].sum().backward()
            blas, onednn = K.gemm_counts(True)
        finally:
            fast._tiled_forward = tiled_forward
        assert p.engine == "fast"
        assert (p.loop.startswith("tiled")) == bool(calls)
        if p.loop == "row-major":   # the per-step products go where the plan says (the others are too small)
            assert (onednn >= 3) == (p.gemm == "onednn") and (onednn == 0) == (p.gemm == "blas") and blas > 0
    finally:
        fast.set_tiled("auto")


def test_plan_for_the_reference_and_uncovered_cases(restore_choice):
    assert fast.plan("gru", 8, 16, engine="reference").loop == "python"
    assert fast.plan("lstm", 8, 16, proj_size=4).engine == "reference"
    assert fast.plan("lstm", 8, 16, dtype=torch.float16).engine == "reference"
    rnnlab.set_engine("reference")
    assert fast.plan("lstm", 8, 16).engine == "reference"


def test_prebuilt_module_is_used_only_for_its_own_sources(monkeypatch, tmp_path):
    """The digest is read from the module file before it is imported: importing a stale module
    would run its operator registration, and the rebuilt module's would then abort the process."""
    src = tmp_path / "k.cpp"
    src.write_text("// a kernel")
    (tmp_path / "k.h").write_text("// its header")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    ran = tmp_path / "imported"
    (pkg / "_zz_kernels.py").write_text(            # stands in for the compiled module file
        f"import pathlib\npathlib.Path({str(ran)!r}).touch()\nsource_digest = {source_digest(src)!r}\n")
    monkeypatch.setattr(eng, "__path__", [*eng.__path__, str(pkg)])
    monkeypatch.delitem(sys.modules, "rnnlab.engine._zz_kernels", raising=False)
    k = Kernels("zz", src)
    (tmp_path / "k.h").write_text("// its header, edited")           # an editable install's edit
    assert k._load_prebuilt() is None
    assert not ran.exists()                                            # never imported
    (tmp_path / "k.h").write_text("// its header")
    module = k._load_prebuilt()
    assert module is sys.modules["rnnlab.engine._zz_kernels"] and ran.exists()
    monkeypatch.delitem(sys.modules, "rnnlab.engine._zz_kernels")
    (pkg / "_zz_kernels.py").unlink()
    assert k._load_prebuilt() is None                                  # none installed


def test_info_plan_prints_the_plan(capsys):
    from rnnlab.cli.main import main

    assert main(["info", "--plan", "gru", "--hidden-size", "64", "--batch-size", "8", "--engine", "reference"]) == 0
    assert capsys.readouterr().out.strip() == str(fast.plan("gru", 8, 64, steps=35, engine="reference"))
    assert main(["info", "--plan", "lstm", "--dtype", "float64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == fast.plan("lstm", 32, 256, steps=35, dtype=torch.float64).to_dict()
    for inputs in (32, 512):               # the inference loop's input projection depends on the input size
        assert main(["info", "--plan", "lstm", "--inference", "--input-size", str(inputs), "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == fast.plan("lstm", 32, 256, steps=35, inference=True,
                                                               input_size=inputs).to_dict()
