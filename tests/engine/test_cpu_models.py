"""The engine on CPUs other than this one: the parity smoke (cpu_smoke.py) under qemu's user-mode
emulation of an AVX2 CPU without AVX-512 (Haswell) and of one without AVX (Nehalem).

Each model runs one subprocess (about a minute: qemu is some 30x slower than the host): RNN,
LSTM, GRU and the layer-norm LSTM's fused kernel at B=32 H=256, forward and backward, against
torch.nn's native kernels (the reference engine for the variant), then one ``rnnlab train lm``
step. Besides the
numbers, the test checks which paths ran: oneDNN's matmul is only used on AVX-512 CPUs, the
LSTM's tiled loop runs its AVX2 code on Haswell and does not run on Nehalem (where any AVX
instruction outside a runtime-checked region would be a SIGILL, i.e. a failed subprocess).

Skipped where ``qemu-x86_64`` is not on PATH (``apt-get install qemu-user``; .ci/run installs it
where it can), on non-x86-64 hosts, and where the kernels cannot be built natively (under qemu
a build would take many minutes).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab.engine import fast
from rnnlab.engine import variants as engine_variants

QEMU = shutil.which("qemu-x86_64")
SMOKE = Path(__file__).with_name("cpu_smoke.py")

pytestmark = [
    pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not on PATH (apt-get install qemu-user)"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="qemu-x86_64 user mode emulates x86-64 on x86-64 here"),
]

TOLERANCE = 2e-4        # relative to each tensor's largest entry: float32 sums in another order


@pytest.fixture(scope="module")
def built() -> None:
    if not fast.available() or engine_variants._KERNELS.get() is None:
        pytest.skip(f"the kernels are not built natively here: {fast.unavailable_reason() or engine_variants._KERNELS.error}")


def smoke(model: str, tmp_path: Path) -> dict:
    env = dict(os.environ)
    src = str(Path(fast.__file__).resolve().parents[2])      # this checkout's src (or site-packages)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    # numpy's OpenBLAS picks its kernels from CPUID; on qemu's Nehalem model it takes AVX code and
    # numpy's import-time check dies of SIGILL before rnnlab runs. Naming the core keeps it honest.
    env["OPENBLAS_CORETYPE"] = "Nehalem" if model == "Nehalem" else "Haswell"
    env.pop("RNNLAB_ENGINE", None)
    proc = subprocess.run([QEMU, "-cpu", model, sys.executable, str(SMOKE), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{model}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_parity(rec: dict) -> None:
    assert rec["fast"] and rec["variant_kernels"]
    optional = {"lstm tiled", "lstm tiled operator", "lstm tiled operator padded",   # where the tiled loop runs
                "lstm inference operator"}                                             # where the inference loop runs
    assert set(rec["diffs"]) - optional == {"rnn", "lstm", "gru", "lstm layer_norm", "lstm operator", "lstm inference",
                                            "gru inference", "rnn inference", "lstm step operator"}
    assert "rnnlab::lstm_step is inference only" in rec["step_refusal"]   # the operators' C++ autograd kernel
    for name, d in rec["diffs"].items():
        assert d < TOLERANCE, (name, d)
    assert rec["calls"]["reference"] == 0                   # the fast engine ran every layer itself
    assert rec["variant_gemm"][0] > 0                        # the fused layer-norm kernel ran (its matmuls)
    assert rec["cli_rc"] == 0
    assert rec["int8_stream"] < 2e-6                       # float32 rescaling and sigmoid rounding only
    assert 0 < rec["int8_gru_stream"] < 0.05               # int8 rounding, not a wrong gate


@pytest.mark.slow
def test_avx2_cpu_haswell(built, tmp_path):
    """An AVX2 CPU: torch dispatches AVX2; oneDNN's matmul stays off (every product on BLAS);
    the LSTM's row-major training loop runs its AVX2 code, in the parity smoke and in the CLI's
    training step, and so does the tiled loop when set_tiled forces it."""
    rec = smoke("Haswell", tmp_path)
    assert rec["capability"] == "AVX2" and rec["cpu_isa"] == "avx2"
    assert rec["onednn"][0] is False and "not AVX-512" in rec["onednn"][1]
    assert rec["tiled_isa"] == "avx2"
    assert rec["infer_isa"] == "avx2" and rec["calls"]["inference"] == 4   # the inference loop's AVX2 code ran
    assert "lstm inference operator" in rec["diffs"]          # and its operator, through the dispatcher
    assert rec["calls"]["gru inference"] == 4 and rec["calls"]["rnn inference"] == 4   # and the GRU's, RNN's
    assert rec["int8_isa"] == "avx2"
    assert rec["tiled_operator"] and "lstm tiled operator" in rec["diffs"]   # what torch.compile calls here
    assert "lstm tiled operator padded" in rec["diffs"]       # its backward's other way to the states
    check_parity(rec)
    assert rec["rows_isa"] == "avx2" and rec["calls"]["row-major"] >= 1   # the plain LSTM's training loop
    assert rec["calls"]["tiled"] == 1 and "lstm tiled" in rec["diffs"]    # forced (the layer-norm LSTM has its own kernel)
    assert rec["gemm"][1] == 0 and rec["gemm"][0] > 0 and rec["variant_gemm"][1] == 0
    assert rec["cli_calls"]["row-major"] >= 1 and rec["cli_calls"]["tiled"] == 0 and rec["cli_gemm"][1] == 0


@pytest.mark.slow
def test_cpu_without_avx_nehalem(built, tmp_path):
    """A CPU without AVX: torch's DEFAULT kernels; no tiled loop (the row-major loop runs), no
    oneDNN, and nothing of rnnlab's executes an AVX instruction (the subprocess would die)."""
    rec = smoke("Nehalem", tmp_path)
    assert rec["capability"] == "DEFAULT" and rec["cpu_isa"] in ("sse4.2", "baseline")
    assert rec["onednn"][0] is False
    assert rec["tiled_isa"] == "" and rec["rows_isa"] == ""
    assert rec["infer_isa"] == "" and rec["calls"]["inference"] == 0      # no-grad forwards on the row-major loop
    assert "lstm inference operator" not in rec["diffs"]
    assert rec["calls"]["gru inference"] == 0 and rec["calls"]["rnn inference"] == 0
    assert rec["int8_isa"] == "base"
    assert not rec["tiled_operator"] and "neither AVX-512 nor AVX2" in rec["tiled_operator_error"]
    check_parity(rec)
    assert rec["calls"]["tiled"] == 0 and rec["cli_calls"]["tiled"] == 0
    assert rec["gemm"][1] == 0 and rec["gemm"][0] > 0 and rec["cli_gemm"][1] == 0
