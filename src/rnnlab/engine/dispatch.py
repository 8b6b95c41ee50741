"""Which code runs a recurrent call, decided in one place: :func:`plan`.

Every path of the package asks :func:`plan` before it runs: ``fast_scan`` (C++ row-major loop,
the LSTM's tiled loop, or a fall-back to the reference), ``variant_scan`` (the layer-norm
LSTM's C++ loop or the Python variants scan), the recomputing engine (its segments' path) and
``Stream`` (the C++ streaming step, numba or NumPy). The answer is a :class:`Plan`: the engine,
its time loop, the library of its largest matrix products and the reason, one line. Shapes,
dtype, device, cell options and the CPU decide, never timing, so a run and its resumed
continuation take the same paths. ``rnnlab info --plan CELL`` prints the plan; the table in
docs/engines.md is checked against it (tests/engine/test_dispatch_table.py).

Also here: the registry of engines by name (:func:`register_engine`, :func:`get_engine`) and
the process-wide choice behind ``engine="auto"`` (:func:`set_engine`, ``RNNLAB_ENGINE``).
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from rnnlab.cells import CELL_NAMES
from rnnlab.cells.lstm_variants import LSTMVariant
from rnnlab.engine.kernels import FAST_KERNELS, VARIANT_KERNELS
from rnnlab.engine.scan import scan
from rnnlab.errors import ConfigError

# ----------------------------------------------------------------------------- engines by name
_ENGINES: dict[str, Callable] = {"reference": scan}


def register_engine(name: str, fn: Callable) -> None:
    """Register a scan implementation with ``scan``'s signature under ``name``."""
    _ENGINES[name] = fn


def get_engine(name: str) -> Callable:
    if name not in _ENGINES:
        raise ConfigError(f"engine: expected one of {sorted(_ENGINES)}, got {name!r}")
    return _ENGINES[name]


def engine_names() -> list[str]:
    return sorted(_ENGINES)


# ----------------------------------------------------------------------------- the process-wide choice
ENGINE_CHOICES = ("auto", "fast", "reference")
ENGINE_ENV = "RNNLAB_ENGINE"
_choice: str | None = None           # None: not read yet from RNNLAB_ENGINE
_source = "default"


def _checked(name: object, what: str) -> str:
    if name not in ENGINE_CHOICES:
        raise ConfigError(f"{what}: expected one of {', '.join(ENGINE_CHOICES)}, got {name!r}")
    if name == "fast" and FAST_KERNELS.get() is None:
        raise ConfigError(f"{what}: expected the fast kernels for 'fast', got none here ({FAST_KERNELS.error})")
    return name


def set_engine(name: str) -> None:
    """What the layers' default ``engine="auto"`` runs, for this process.

    ``"auto"`` (the default): the C++ kernels (``"fast"``) for every call they cover, the
    reference for the rest and wherever the kernels are missing. ``"fast"``: the same, but
    raises ``ConfigError`` here when the kernels are not available, instead of falling back.
    ``"reference"``: the Python reference engine everywhere (same numbers, slower; the kernels
    are not even loaded). Layers built with an explicit ``engine=`` other than ``"auto"`` keep
    it. The environment variable ``RNNLAB_ENGINE`` sets the same at start-up.
    """
    global _choice, _source
    _choice, _source = _checked(name, "set_engine"), "set_engine"


def get_engine_choice() -> str:
    """The current choice of :func:`set_engine` ("auto", "fast" or "reference"), read from
    ``RNNLAB_ENGINE`` on first use when ``set_engine`` was not called."""
    global _choice, _source
    if _choice is None:
        _choice = _checked(os.environ.get(ENGINE_ENV) or "auto", ENGINE_ENV)
        _source = ENGINE_ENV if os.environ.get(ENGINE_ENV) else "default"
    return _choice


def engine_choice_source() -> str:
    """Where :func:`get_engine_choice` comes from: "default", "RNNLAB_ENGINE" or "set_engine"."""
    get_engine_choice()
    return _source


def resolve_engine(name: str) -> str:
    """The registered engine a layer's ``engine=name`` runs now: "auto" follows
    :func:`get_engine_choice` ("fast" unless it says "reference"); other names are themselves."""
    if name != "auto":
        return name
    return "reference" if get_engine_choice() == "reference" else "fast"


# ----------------------------------------------------------------------------- the plan
LOOPS = {
    "tiled avx512": "the LSTM's unit-major loop with AVX-512 code (lstm_tiled.h)",
    "tiled avx2": "the LSTM's unit-major loop with AVX2 code (lstm_tiled.h)",
    "inference avx512": "the cell's inference loop with AVX-512 code, nothing saved for backward "
                        "(lstm_tiled.h, gru_loops.h, rnn_loops.h)",
    "inference avx2": "the cell's inference loop with AVX2 code, nothing saved for backward "
                      "(lstm_tiled.h, gru_loops.h, rnn_loops.h)",
    "row-major avx512": "the C++ time loop's layout with the cell's own AVX-512 step code (lstm_tiled.h; "
                        "the GRU's and RNN's forward steps only)",
    "row-major avx2": "the C++ time loop's layout with the cell's own AVX2 step code (lstm_tiled.h; "
                      "the GRU's and RNN's forward steps only)",
    "row-major": "the C++ time loop (fast_kernels.cpp)",
    "python": "the reference: the equations over torch ops (scan.py)",
    "variants C++": "the layer-norm LSTM's C++ loop (variants_kernels.cpp)",
    "variants python": "the variants scan over torch ops (variants.py)",
    "autograd": "the equations under torch's autograd (autodiff.py), for torch.func and forward AD",
    "stream C++": "the C++ streaming step (fast_kernels.cpp)",
    "stream C++ int8": "the C++ streaming step with int8 weights (fast_kernels.cpp)",
    "stream numba": "the numba streaming step (nn/_stream_kernels.py)",
    "stream numpy": "the NumPy streaming step (nn/_stream_kernels.py)",
}
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


class Plan:
    """What runs one layer-direction's call: ``engine`` ("fast", "reference" or "checkpoint"),
    ``loop`` (a key of :data:`LOOPS`), ``gemm`` (the library of its largest products: "onednn",
    "blas" or "torch") and ``reason`` (why, one line). The GEMM and the reason are worked out on
    first access, so that a forward pays only for the decision."""

    __slots__ = ("engine", "loop", "_why", "_shape", "_inner", "_gemm", "_reason")

    def __init__(self, engine: str, loop: str, why: str = "", shape: tuple | None = None,
                 inner: "Plan | None" = None) -> None:
        self.engine, self.loop, self._why, self._shape, self._inner = engine, loop, why, shape, inner
        self._gemm = self._reason = None

    @property
    def tiled(self) -> bool:
        return self.loop.startswith("tiled")

    @property
    def gemm(self) -> str:
        if self._gemm is None:
            self._gemm, self._reason = self._explain()
        return self._gemm

    @property
    def reason(self) -> str:
        if self._reason is None:
            self._gemm, self._reason = self._explain()
        return self._reason

    def _explain(self) -> tuple[str, str]:
        if self._inner is not None:
            return self._inner.gemm, f"{self._why}; each segment: {self._inner.reason}"
        if self.engine != "fast" or self.loop.startswith("stream"):
            return ("torch" if not self.loop.startswith("stream") else "none"), self._why
        return _fast_gemm(*self._shape, variants=self.loop == "variants C++",
                          inference=self.loop.startswith("inference"), rows=self.loop.startswith("row-major "))

    def to_dict(self) -> dict[str, str]:
        return {"engine": self.engine, "loop": self.loop, "gemm": self.gemm, "reason": self.reason}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self.to_dict() == other.to_dict()

    __hash__ = None

    def __repr__(self) -> str:
        return f"Plan(engine={self.engine!r}, loop={self.loop!r})"

    def __str__(self) -> str:
        return f"engine {self.engine}, loop {self.loop}, GEMM {self.gemm}: {self.reason}"


def plan(mode: str, batch: int, hidden: int, *, steps: int = 1, dtype: torch.dtype = torch.float32,
         device: str = "cpu", masked: bool = False, proj_size: int = 0, engine: str = "auto",
         variant: object = None, state_masks: bool = False, recording: bool = False, autodiff: bool = False,
         stream: bool = False, numba: bool = False, int8: bool = False, inference: bool = False,
         input_size: int = 0) -> Plan:
    """The path one layer-direction of cell ``mode`` ("lstm", "gru", "rnn_tanh", "rnn_relu") takes.

    ``engine``: the layer's ``engine=`` ("auto" follows :func:`set_engine`). ``masked``: a
    padded batch (lengths). ``variant``: the cell's equations when they are not torch.nn's (an
    ``LSTMVariant`` / ``GRUVariant`` of :mod:`rnnlab.cells`), with ``state_masks`` when zoneout
    or recurrent dropout masks take part; ``recording``: a gradient recorder is on;
    ``autodiff``: under torch.func transforms or forward-mode AD. ``stream``: a ``Stream``'s
    batch-1 step (``numba``: numba is there and wanted; ``int8``: int8 weights asked for).
    ``inference``: no gradient to come (``torch.no_grad()``, or nothing requires one) and no gate
    recorder on, so that nothing need be kept for backward. ``input_size``: the layer's input
    features, where known (the inference loop's input projection depends on it; 0: not known).
    """
    resolved = resolve_engine(engine)
    if stream:
        covered = not proj_size and (int8 or mode == "lstm")
        if resolved == "fast" and covered and FAST_KERNELS.get() is not None:
            if int8:
                return Plan("fast", "stream C++ int8", "int8 weights stream on the C++ int8 step")
            return Plan("fast", "stream C++", "an LSTM without projection streams on the C++ step")
        if resolved != "fast":
            why = _reference_why(engine, resolved)
        elif not covered:
            why = ("the C++ int8 step covers layers without projection only" if int8
                   else "the C++ step covers the LSTM without projection only")
        else:
            why = f"the kernels are not available ({FAST_KERNELS.error})"
        return Plan("reference", "stream numba" if numba else "stream numpy", why)
    if autodiff:
        return Plan("reference", "autograd", "torch.func transforms or forward-mode AD need torch's own autograd")
    if resolved == "checkpoint":
        if variant is not None:
            return Plan("reference", "variants python", "cell options run the variants scan; the recomputing "
                        "engine does not cover them")
        inner = plan(mode, batch, hidden, steps=steps, dtype=dtype, device=device, masked=masked,
                     proj_size=proj_size, recording=recording, inference=inference, input_size=input_size)
        return Plan("checkpoint", inner.loop, "engine 'checkpoint': segments recomputed in backward (its forward "
                    "runs them without a gradient: the inference loop where that covers the call)", inner=inner)
    if variant is not None:
        why = _variant_unsupported(mode, variant, resolved, engine, dtype, device, masked, state_masks, recording)
        if why:
            return Plan("reference", "variants python", why)
        return Plan("fast", "variants C++", shape=(mode, batch, hidden, steps, dtype, masked, ""))
    if resolved != "fast":
        return Plan(resolved, "python", _reference_why(engine, resolved))
    why = _unsupported_reason(device, dtype, proj_size > 0)
    if why:
        return Plan("reference", "python", why)
    if inference:
        isa = _inference_isa(dtype, steps, batch, hidden)
        if isa:
            return Plan("fast", f"inference {isa}",
                        shape=(mode, batch, hidden, steps, dtype, masked, isa, input_size))
    isa = _tiled_isa(mode, dtype, masked, steps, batch)
    # without a gradient to come, where the inference loop's cache rule fails the tiled loop's
    # forward (W_hh read once per step) beats the row-major training loop's (once per block)
    rows = "" if inference and isa else _rows_isa(mode, dtype, steps, batch, hidden)
    if rows:
        return Plan("fast", f"row-major {rows}", shape=(mode, batch, hidden, steps, dtype, masked, rows))
    return Plan("fast", f"tiled {isa}" if isa else "row-major", shape=(mode, batch, hidden, steps, dtype, masked, isa))


def _reference_why(engine: str, resolved: str) -> str:
    if resolved != "reference":
        return f"engine {resolved!r} is not the fast engine"
    return "engine='reference'" if engine == "reference" else "rnnlab.set_engine / RNNLAB_ENGINE chose the reference"


def _unsupported_reason(device: str, dtype: torch.dtype, has_proj: bool) -> str:
    """Why the fast kernels do not run a call ("" when they do)."""
    if has_proj:
        return "LSTM projections (proj_size) run on the reference"
    if device != "cpu":
        return f"{device} tensors run on the reference"
    if dtype not in (torch.float32, torch.float64):
        return f"{dtype} runs on the reference"
    if FAST_KERNELS.get() is None:
        return f"the kernels are not available ({FAST_KERNELS.error})"
    return ""


def _variant_unsupported(mode, variant, resolved, engine, dtype, device, masked, state_masks, recording) -> str:
    """Why the layer-norm LSTM's C++ loop does not run a variant cell ("" when it does)."""
    if resolved != "fast":
        return f"cell options run the variants scan; {_reference_why(engine, resolved)}"
    if mode != "lstm" or variant != LSTMVariant(layer_norm=True):
        return "the C++ variants loop covers the layer-norm LSTM only (no peephole, coupling, GRU)"
    if state_masks:
        return "zoneout and recurrent dropout run on the Python variants scan"
    if masked:
        return "padded batches (lengths) run on the Python variants scan"
    if device != "cpu" or dtype not in (torch.float32, torch.float64):
        return f"{device} {dtype} runs on the Python variants scan"
    if recording:
        return "a gradient recorder is on: the Python variants scan records"
    if VARIANT_KERNELS.get() is None:
        return f"the variants kernels are not available ({VARIANT_KERNELS.error})"
    return ""


def _tiled_isa(mode: str, dtype: torch.dtype, masked: bool, T: int, B: int) -> str:
    """The instruction set of the LSTM's unit-major loop (lstm_tiled.h) for such a call, or ""
    for the row-major loop: single precision, whole sequences (no padding mask), a CPU with
    AVX-512 or AVX2+FMA, the batch rule of lstm_tiled.h's isa_for."""
    if mode != "lstm" or dtype != torch.float32 or masked or T == 0:
        return ""
    return FAST_KERNELS.module.tiled_isa_for(B)


def _rows_isa(mode: str, dtype: torch.dtype, T: int, B: int, H: int) -> str:
    """The instruction set of the LSTM's row-major training loop (lstm_tiled.h's rows_forward /
    rows_backward, run by fast_kernels.cpp's lstm_forward / lstm_backward), or of the GRU's or
    RNN's forward on its row-major buffers (gru_rows_forward / rnn_rows_forward, run by gru_forward /
    rnn_forward), for such a call, or "": float32 (padded batches too), set_tiled's "auto", H a
    multiple of the vector width and T·B ≥ H² / 8192 (rows_isa_for)."""
    if dtype != torch.float32 or T == 0:
        return ""
    return FAST_KERNELS.module.rows_isa_for(B, H, T)


def _inference_isa(dtype: torch.dtype, T: int, B: int, H: int) -> str:
    """The instruction set of the cell's inference loop (lstm_tiled.h's lstm_infer, gru_infer,
    rnn_infer) for such a call without a gradient to come, or "": float32 (padded batches too), H a
    multiple of the vector width, and the size rule of infer_isa_for (H up to 512 with AVX-512,
    256 with AVX2, or up to 8 sequences; and T·B ≥ H² / 8192)."""
    if dtype != torch.float32 or T == 0:
        return ""
    return FAST_KERNELS.module.infer_isa_for(B, H, T)


def _fast_gemm(mode: str, batch: int, hidden: int, steps: int, dtype: torch.dtype, masked: bool,
               isa: str, input_size: int = 0, variants: bool = False, inference: bool = False,
               rows: bool = False) -> tuple[str, str]:
    """The GEMM library and the reason of a fast-engine plan."""
    K = (VARIANT_KERNELS if variants else FAST_KERNELS).module
    G = _GATES[mode] * hidden
    if dtype != torch.float32:
        gemm, gemm_why = "blas", "double precision stays on BLAS"
    else:
        # the tiled loop's step products are its own SIMD code: its largest GEMMs are the sequence's
        # (input projection, weight gradients); the row-major loop's are each step's
        gemm = (K.gemm_backend(steps * batch, hidden, G) if inference or rows else
                K.gemm_backend(G, steps * batch, hidden) if isa else K.gemm_backend(batch, hidden, G))
        uses, status = K.onednn_state()[:2]
        gemm_why = status if gemm == "onednn" or not uses else "below oneDNN's size threshold"
    if inference:
        loop = (f"inference loop with {isa.upper()} code: no gradient to come, so nothing is kept for "
                f"backward and vectors run over units ({_inference_why(batch, hidden)})")
        if input_size and K.infer_fuses_input(batch, input_size, hidden):
            return "none", (f"{loop}; W_ih x_t formed in its tiles beside W_hh h_{{t-1}} ({input_size} inputs, "
                            f"at most {hidden}, and {batch} sequences: no GEMM over the sequence first)")
        return gemm, f"{loop}; its input GEMM on {gemm}: {gemm_why}"
    if rows and mode != "lstm":
        cell = "GRU" if mode == "gru" else "vanilla RNN"
        return gemm, (f"row-major loop with the {cell}'s own {isa.upper()} forward steps: "
                      f"{_rows_why()}; its backward steps and sequence GEMMs on {gemm}: {gemm_why}")
    if rows:
        return gemm, (f"row-major loop with the LSTM's own {isa.upper()} step code: {_rows_why()}; its "
                      f"sequence GEMMs on {gemm}: {gemm_why}")
    if isa:
        return gemm, (f"tiled loop with {isa.upper()} code: {_tiled_why(isa, batch)}; "
                      f"its sequence GEMMs on {gemm}: {gemm_why}")
    if variants:
        return gemm, f"the layer-norm LSTM's own C++ loop; its step GEMM on {gemm}: {gemm_why}"
    loop_why = (f"the {CELL_NAMES[mode]}'s C++ loop" if mode != "lstm" else
                "float64 and padded batches take it" if dtype != torch.float32 or masked else
                f"no tiled loop at batch {batch} here ({_tiled_why('', batch)})")
    return gemm, f"row-major loop: {loop_why}; its step GEMM on {gemm}: {gemm_why}"


def _inference_why(batch: int, hidden: int) -> str:
    if FAST_KERNELS.module.tiled_choice() != "auto":
        return f"set_tiled({FAST_KERNELS.module.tiled_choice()!r})"
    if hidden <= 256:
        return f"W_hh of {hidden} units fits a core's L2 cache"
    if hidden <= FAST_KERNELS.module.infer_max_hidden():
        return "AVX-512: a panel of 16 units' W_hh rows stays in L2 while every block of sequences reads it"
    return f"{batch} sequences (at most 8) read W_hh at most 3 times per step"


def _rows_why() -> str:
    return "vectors over units, full at any batch, no padding or transposes"


def _tiled_why(isa: str, batch: int) -> str:
    have = FAST_KERNELS.module.cpu_isa()
    choice = FAST_KERNELS.module.tiled_choice()
    if choice != "auto":
        return f"forced by set_tiled({choice!r})"
    if not isa:
        if have not in ("avx512", "avx2"):
            return f"the CPU has {have}, neither AVX-512 nor AVX2+FMA"
        return "fewer than 4 sequences" if have == "avx512" else "fewer than 8 sequences without AVX-512"
    if isa == "avx2" and have == "avx512":
        return "8-column vectors pay at batches up to 8"
    return "the CPU's widest"
