"""The fast engine: ``scan``'s signature and numbers, with the time loops in C++.

Why a C++ extension: at the sizes users train (B·H of a few thousand), a step of the reference
costs one matmul plus a dozen small tensor ops, each a trip through Python and the dispatcher and
a pass over memory. ``fast_kernels.cpp`` runs the same loop without Python between steps, writes
the recurrent matmul straight into the saved buffer, and fuses each step's pointwise algebra
(the cell update, every hand-derived gate gradient, the masking) into one pass. The matmuls —
each step's and the whole-sequence ones before and after the loop — go through ``gemm.h``:
on CPUs with AVX-512, oneDNN's single-precision GEMM where the product is large enough to gain
from it (on AMD CPUs it outruns the MKL GEMM behind torch.mm; benchmarks/bench_kernels.py prints both) and after it
passed a load-time check against torch.mm; torch's BLAS on every other CPU, for smaller products
and in double precision (:func:`gemm_status` says which and why). The saved buffers are the reference's (plus the LSTM's
tanh(c_t), so that backward computes no transcendental; tanh is taken as 2σ(2x) − 1, which
ATen evaluates faster than tanh), and the weight gradients are the reference's single matmuls after
the loop, so the two engines agree to rounding; the tests compare them in float64 and float32.

For the LSTM in single precision over whole sequences (no padding mask) there is a second loop,
``lstm_tiled.h``: a unit-major layout in which each thread owns a range of hidden units for the
whole sequence and runs its own register-tiled AVX-512 or AVX2 products with the cell update fused
in, meeting the other threads once per step. On x86 CPUs with AVX2 or AVX-512 a float32 LSTM whose
hidden size is a multiple of 8 takes a third: the row-major loop's layout with the same kind of
register tiles over units in place of each step's library GEMM (``rows_forward`` /
``rows_backward``, run inside ``lstm_forward`` / ``lstm_backward``); other hidden sizes take the
tiled loop from a few sequences on (:func:`set_tiled` gives the rule, :func:`tiled_isa` the
choice here), the library's row-major loop elsewhere.

The extension is compiled when rnnlab is installed, or else on first use (kernels.py). Where it
is missing, or for what it does not cover (LSTM projections, half precision, non-CPU tensors),
the reference runs instead; a missing module is logged once (logger "rnnlab") and
:func:`unavailable_reason` says why.

``engine="auto"`` (the layers' default) is this engine unless ``rnnlab.set_engine("reference")``
(or ``RNNLAB_ENGINE=reference``) says otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.cells import CELL_NAMES, FAMILIES
from rnnlab.engine import ops, record
from rnnlab.engine.autodiff import backward_needs_autodiff, torch_scan, use_autodiff
from rnnlab.engine.compiler_marks import assume_constant_result
from rnnlab.engine.dispatch import Plan, plan  # noqa: F401 (re-exported: fast.plan)
from rnnlab.engine.eager_op import eager_op_ready, gradient_to_come, op_eager_scan
from rnnlab.engine.kernels import FAST_KERNELS as _KERNELS, empty_cache, set_onednn, set_reuse  # noqa: F401 (re-exported)
from rnnlab.engine.scan import ScanTag, autodiff_backward, input_and_weight_grads, scan as reference_scan, wanted
from rnnlab.errors import ConfigError


def available() -> bool:
    """True when the C++ kernels are built (building them now if needed)."""
    return _KERNELS.get() is not None


def unavailable_reason() -> str | None:
    _KERNELS.get()
    return _KERNELS.error


def kernel_library() -> str | None:
    """The file of the kernels' compiled module (None without one): ``torch.ops.load_library`` of
    it defines the ``rnnlab::`` operators, e.g. for an AOTInductor package in a process without rnnlab."""
    return _KERNELS.module.__file__ if available() else None


def mm(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """a @ b (+ bias over the rows) through the kernels' matmul (gemm.h: oneDNN where it pays)."""
    return _KERNELS.module.matmul(a, b, bias)


def onednn_in_use() -> bool:
    """Whether the kernels' large float32 matmuls run on oneDNN here (found in this torch,
    switched on, and torch's mkldnn flag on)."""
    return available() and gemm_backend(64, 64, 64 * 64) == "onednn"


def gemm_status() -> tuple[bool, str]:
    """(whether the kernels' large float32 matmuls may use oneDNN here, why): decided once per
    process from the CPU (AVX-512 only) and a load-time check of oneDNN's matmul against
    torch.mm (gemm.h). Before torch's and set_onednn's switches, which gemm_backend honours."""
    if not available():
        return False, f"no kernels ({unavailable_reason()})"
    uses, reason, _ = _KERNELS.module.onednn_state()
    return uses, reason


def cpu_isa() -> str:
    """The CPU's vector instruction set as the kernels see it: "avx512", "avx2", "avx", "sse4.2",
    "baseline" on x86-64, the machine's name elsewhere (gemm.h's cpu_isa); without the kernels,
    torch's own capability in lower case."""
    if available():
        return _KERNELS.module.cpu_isa()
    return torch.backends.cpu.get_cpu_capability().lower()


def gemm_backend(M: int, K: int, N: int) -> str:
    """Which library a float32 (M, K) @ (K, N) product of the kernels runs on: "onednn" or "blas"."""
    return _KERNELS.module.gemm_backend(M, K, N) if available() else "blas"


TILED_CHOICES = ("auto", "avx512", "avx2", "off")


def set_tiled(choice: bool | str = "auto") -> None:
    """The LSTM's loops with rnnlab's own SIMD kernels (``lstm_tiled.h``). "auto" (default): the
    row-major training loop where the hidden size is a multiple of 8 (see docs/engines.md), else
    the unit-major (tiled) loop: on CPUs with AVX-512, its AVX-512 code from 9 sequences on, its
    AVX2 code for 4 to 8, the library's row-major loop for 1 to 3; on CPUs with AVX2 but not
    AVX-512, AVX2 code from 8 sequences on, the row-major loop below; elsewhere the row-major loop.
    "avx512" or "avx2" forces the tiled loop with that set for every batch (and that set in the
    inference loop), "off" (or False) keeps the library's row-major loop everywhere: for tests and
    benchmarks that compare them. An instruction set this CPU lacks raises ``ConfigError`` and changes
    nothing. Builds the kernels if they are not built yet (the check needs them)."""
    value = "auto" if choice is True else "off" if choice is False else choice
    if value not in TILED_CHOICES:
        raise ConfigError(f"set_tiled: expected one of {TILED_CHOICES} or a bool, got {choice!r}")
    if available():                                   # without the kernels there is nothing to switch
        try:
            _KERNELS.module.set_tiled(value)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def tiled_isa(batch: int = 32) -> str:
    """The instruction set the LSTM's tiled loop uses here for a batch of ``batch`` sequences
    ("avx512", "avx2"), or "" where the row-major loop runs instead (kernels not built, not x86,
    switched off by :func:`set_tiled`, or under "auto" a single sequence)."""
    return _KERNELS.module.tiled_isa_for(batch) if available() else ""


def int8_isa() -> str:
    """The instruction set of the int8 streaming step here (``Stream(..., int8=True)``):
    "avx512-vnni", "avx2" or "base" (portable loops), or "" where the kernels are not built."""
    return _KERNELS.module.int8_isa() if available() else ""


class _FastScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, route, tag, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh):
        mode, ctx.tiled = route               # the cell, and whether the plan chose the tiled loop
        family = FAMILIES[mode]
        T, B, I = x.shape
        GH = w_ih.shape[0]
        has_bias = b_ih is not None
        b = None
        if has_bias:  # as the reference: LSTM and RNN fold both biases here, the GRU only b_ih
            b = b_ih + b_hh if family.SHARED_PREACT_GRAD else b_ih
        w_hh_c = w_hh.contiguous()
        # the inputs as given, for a differentiable (or batched) backward: saved after the buffers
        ctx.originals = (x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh)
        if ctx.tiled:
            return _tiled_forward(ctx, tag, x, h0, c0, w_ih, w_hh_c, b)
        x2 = x.reshape(T * B, I)
        # (the bias is added by the forward loops as they read the projection: no pass to fill it)
        xw = mm(x2, w_ih.t()).view(T, B, GH)
        m = None if mask is None else mask.reshape(T, B).contiguous()
        cs = hn = gates = tcs = None
        if mode == "lstm":
            hs, cs, gates, tcs = _KERNELS.module.lstm_forward(xw, h0.contiguous(), c0.contiguous(), w_hh_c, m, b)
        elif mode == "gru":
            hs, gates, hn = _KERNELS.module.gru_forward(xw, h0.contiguous(), w_hh_c, b_hh, m, b)
        else:
            hs = _KERNELS.module.rnn_forward(xw, h0.contiguous(), w_hh_c, mode == "rnn_relu", m, b)
        del xw

        if record.gate_recording() and family.GATES:
            blocks = gates.detach().chunk(len(family.GATES), dim=2)
            record.emit_gates(record.GateRecord(
                tag.layer, tag.direction, CELL_NAMES[mode],
                {n: tag.to_forward_time(g) for n, g in zip(family.GATES, blocks)},
            ))
        ctx.mode, ctx.tag, ctx.has_bias = mode, tag, has_bias
        ctx.save_for_backward(x, m, w_ih, w_hh_c, hs, gates, cs, hn, tcs, *ctx.originals)
        del ctx.originals
        out = hs[1:] if mask is None else hs[1:] * mask    # (T, B, H); zero at padded steps
        h_last = hs[T].clone()
        if mode == "lstm":
            return out, h_last, cs[T].clone()
        return out, h_last

    @staticmethod
    def backward(ctx, d_out, d_h_last, d_c_last=None):
        if backward_needs_autodiff(d_out, d_h_last, d_c_last):
            return (None, None) + autodiff_backward(ctx.mode, ctx.needs_input_grad[2:] + (False,), (d_out, d_h_last, d_c_last),
                                                    *ctx.saved_tensors[-8:])[:8]
        if ctx.tiled:
            return _tiled_backward(ctx, d_out, d_h_last, d_c_last)
        x, m, w_ih, w_hh, hs, gates, cs, hn, tcs = ctx.saved_tensors[:-8]
        mode, tag = ctx.mode, ctx.tag
        T, B, I = x.shape
        if m is not None:
            d_out = d_out * m.unsqueeze(-1)                # padded outputs were constant zeros
        d_out = d_out.contiguous()
        rec_h, rec_c = record.new_grad_norms(x, T, B, cell=mode == "lstm")
        dc0 = None
        if mode == "lstm":
            dxw, dh0, dc0 = _KERNELS.module.lstm_backward(d_out, d_h_last, d_c_last, gates, cs, tcs, w_hh, m, rec_h, rec_c)
            dhw = dxw
        elif mode == "gru":
            dxw, dhw, dh0 = _KERNELS.module.gru_backward(d_out, d_h_last, gates, hn, hs, w_hh, m, rec_h)
        else:
            dxw, dh0 = _KERNELS.module.rnn_backward(d_out, d_h_last, hs, w_hh, mode == "rnn_relu", m, rec_h)
            dhw = dxw
        if rec_h is not None:
            record.emit_grad_norms(tag, CELL_NAMES[mode], rec_h, rec_c)

        # Weight gradients, one matmul each: the reference's own function.
        need = ctx.needs_input_grad
        dx, dw_ih, dw_hh, db_ih, db_hh = input_and_weight_grads(
            wanted(need, (2, 6, 7, 8, 9), ctx.has_bias), dxw, dhw, x, w_ih, hs, mm=mm)
        return (None, None, dx, None, dh0 if need[4] else None, dc0 if need[5] else None,
                dw_ih, dw_hh, db_ih, db_hh)


def _tiled_forward(ctx, tag, x, h0, c0, w_ih, w_hh, b):
    """_FastScan.forward for the LSTM's unit-major loop: gates (4H, T, Bp), states (·, H, Bp), hs
    (T+1, Bp, H), the batch padded to Bp inside the kernels (the extra columns are dropped here)."""
    T, B, _ = x.shape
    hs, cs, gates, tcs = _KERNELS.module.lstm_tiled_forward(
        x.contiguous(), h0.contiguous(), c0.contiguous(), w_ih.contiguous(), w_hh, b)
    if record.gate_recording():
        blocks = gates.detach().permute(1, 2, 0)[:, :B].chunk(4, dim=2)   # (T, B, H) each
        record.emit_gates(record.GateRecord(
            tag.layer, tag.direction, CELL_NAMES["lstm"],
            {n: tag.to_forward_time(g) for n, g in zip(FAMILIES["lstm"].GATES, blocks)},
        ))
    ctx.mode, ctx.tag, ctx.has_bias = "lstm", tag, b is not None
    ctx.save_for_backward(x, w_ih, w_hh, hs, gates, cs, tcs, *ctx.originals)
    del ctx.originals
    # the output as every other engine returns it, (T, B, H) contiguous: a view of the saved hs
    # when there is no padding, else a copy without the padding columns
    out = hs[1:] if gates.shape[2] == B else hs[1:, :B].contiguous()
    return out, hs[T, :B].clone(), cs[T].t()[:B].clone(memory_format=torch.contiguous_format)


def _tiled_backward(ctx, d_out, d_h_last, d_c_last):
    x, w_ih, w_hh, hs, gates, cs, tcs = ctx.saved_tensors[:-8]
    B, Bp = x.shape[1], gates.shape[2]
    recording = record.grad_recording()
    res = _KERNELS.module.lstm_tiled_backward(d_out, d_h_last, d_c_last, gates, cs, tcs, w_hh, recording)
    da, dh0, dc0 = res[:3]
    if recording:
        record.emit_grad_norms(ctx.tag, CELL_NAMES["lstm"], res[3], res[4])
    dxw = da.permute(1, 2, 0)                              # (T, Bp, 4H) view of (4H, T, Bp)
    need = ctx.needs_input_grad
    which = wanted(need, (2, 6, 7, 8, 9), ctx.has_bias)
    xp = x if Bp == B or not which[1] else torch.nn.functional.pad(x, (0, 0, 0, Bp - B))  # for ∂W_ih
    dx, dw_ih, dw_hh, db_ih, db_hh = input_and_weight_grads(which, dxw, dxw, xp, w_ih, hs, mm=mm)
    if dx is not None and Bp != B:
        dx = dx[:, :B]
    return (None, None, dx, None, dh0 if need[4] else None, dc0 if need[5] else None,
            dw_ih, dw_hh, db_ih, db_hh)


@assume_constant_result
def _ops_ready() -> bool:
    """Whether the kernels' operators are there (loading the kernels now if needed), with their
    fake implementations and the training operators' autograd formulas. A constant to the
    compilers: run once, when traced."""
    if _KERNELS.get() is None:
        return False
    ops.register()
    return True


@assume_constant_result
def _tiled_op_ready() -> bool:
    """Whether a compiled float32 LSTM takes the unit-major operator: the loop runs on this CPU and
    set_tiled has not switched it off (read when traced, as _ops_ready)."""
    return _KERNELS.module.tiled_choice() != "off" and _KERNELS.module.tiled_op_isa_for(8) != ""


@assume_constant_result
def _rows_op_ready(hidden: int) -> bool:
    """Whether a compiled float32 LSTM of ``hidden`` units takes the row-major operator (op_scan),
    whose kernel runs lstm_tiled.h's row-major training loop for that size (rows_isa_for's rule
    without the length and batch, which it applies when called), rather than the unit-major one."""
    m = _KERNELS.module
    return m.tiled_choice() == "auto" and m.infer_isa(hidden) != ""


@assume_constant_result
def _infer_op_ready(hidden: int) -> bool:
    """Whether a compiled float32 layer of ``hidden`` units without a gradient to come takes its
    inference operator: the loop runs here for that size (infer_isa), set_tiled has not switched it
    off, and W_hh fits the cache rule without the batch (H ≤ infer_max_hidden(): 512 with AVX-512,
    else 256). Read when traced."""
    m = _KERNELS.module
    return hidden <= m.infer_max_hidden() and m.infer_isa(hidden) != ""


STEP_MIN_UNITS_PER_CHUNK = 64      # fast_kernels.cpp's kMinUnitsPerThread, as Stream's step


def lstm_step_pack(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None, b_hh: Tensor | None = None,
                   chunks: int | None = None) -> Tensor:
    """One float32 LSTM layer's weights packed for :func:`lstm_step` (``rnnlab::lstm_step_pack``):
    a 1-D tensor holding b_ih + b_hh and [W_ih | W_hh] in the layout ``Stream``'s C++ step reads.
    The weights are detached (the step is inference only). ``chunks``: how many threads share a
    step's units (default as ``Stream``: ``torch.get_num_threads()``, at most one per 64 units).
    Loads the kernels if needed; raises ConfigError where they are not built."""
    if not _ops_ready():
        raise ConfigError(f"lstm_step_pack: the fast kernels are unavailable: {unavailable_reason()}")
    H = w_hh.shape[1]
    if chunks is None:
        chunks = max(1, min(torch.get_num_threads(), H // STEP_MIN_UNITS_PER_CHUNK))
    detach = [None if t is None else t.detach() for t in (w_ih, w_hh, b_ih, b_hh)]
    return torch.ops.rnnlab.lstm_step_pack(*detach, chunks)


def lstm_step(x: Tensor, h: Tensor, c: Tensor, packed: Tensor) -> tuple[Tensor, Tensor]:
    """One float32 LSTM step at batch 1 through the operator ``rnnlab::lstm_step``: x (1, I), h and
    c (1, H) (or all three unbatched), ``packed`` from :func:`lstm_step_pack`; returns new (h, c),
    the numbers of ``Stream``'s step and of ``torch.nn.LSTMCell`` up to float rounding. A pure
    function (no state in C++), so a decoding loop of these traces under ``torch.compile`` and
    ``torch.export`` as one call per step. Inference only: inputs that require grad raise (with
    grad mode on)."""
    return torch.ops.rnnlab.lstm_step(x, h, c, packed)


def fast_scan(
    mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
    b_ih: Tensor | None = None, b_hh: Tensor | None = None, w_hr: Tensor | None = None,
    mask: Tensor | None = None, tag: ScanTag | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``rnnlab.engine.scan`` with the loops in C++; falls back to it where :func:`plan` says so."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():   # compile, export, jit.trace: ops.py's operators
        if w_hr is None and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and _ops_ready():
            if mask is None and x.dtype == torch.float32 and not torch.compiler.is_exporting():
                # (a jit.trace records one graph for both grad modes: the operator pair with a backward)
                no_grad = not gradient_to_come(x, h0, c0, w_ih, w_hh, b_ih, b_hh) and not torch.jit.is_tracing()
                if no_grad and _infer_op_ready(w_hh.shape[1]):
                    return ops.op_infer(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
                # (without a gradient to come, larger LSTMs keep the unit-major forward, as eager)
                if mode == "lstm" and _tiled_op_ready() and (no_grad or not _rows_op_ready(w_hh.shape[1])):
                    return ops.op_tiled_lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
            return ops.op_scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mask)
        # projections, half precision, or no built kernels: the eager engine as one operator
        if x.device.type == "cpu" and not torch.compiler.is_exporting() and eager_op_ready():
            return op_eager_scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask)
        return torch_scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask)
    p = plan(mode, x.shape[1], h0.shape[-1], steps=x.shape[0], dtype=x.dtype, device=x.device.type,
             masked=mask is not None, proj_size=0 if w_hr is None else w_hr.shape[0], engine="fast",
             autodiff=use_autodiff(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr),
             inference=not gradient_to_come(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) and not record.gate_recording(),
             input_size=x.shape[-1])
    if p.loop == "autograd":                                           # torch.func transforms, forward AD
        return torch_scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask)
    if p.engine == "reference":
        return reference_scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask=mask, tag=tag)
    if p.loop.startswith("inference"):            # nothing to keep for a backward
        m = None if mask is None else mask.reshape(x.shape[0], x.shape[1])
        if mode == "gru":
            out, h = _KERNELS.module.gru_infer(x, h0, w_ih, w_hh, b_ih, b_hh, m)
            return out, h, None
        if mode != "lstm":
            out, h = _KERNELS.module.rnn_infer(x, h0, w_ih, w_hh, b_ih, b_hh, mode == "rnn_relu", m)
            return out, h, None
        b = None if b_ih is None else b_ih + b_hh
        return tuple(_KERNELS.module.lstm_infer(x, h0, c0, w_ih, w_hh, b, m))
    tag = tag or ScanTag()
    res = _FastScan.apply((mode, p.tiled), tag, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh)
    if mode == "lstm":
        return res
    out, h = res
    return out, h, None

