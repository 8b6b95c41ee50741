"""The fast engine as ``torch.library`` operators, for ``torch.compile`` and ``torch.export``.

``fast_kernels.cpp`` registers two pairs of sequence operators with the dispatcher (``TORCH_LIBRARY(rnnlab)``):

    rnnlab::seq_forward(mode, x, h0, c0?, w_ih, w_hh, b_ih?, b_hh?, mask?) -> (hs, cs, gates, hn, tcs)
    rnnlab::seq_backward(mode, d_out, d_h_last, d_c_last?, hs, cs, gates, hn, tcs, w_hh, mask?)
        -> (dxw, dhw, dh0, dc0)
    rnnlab::lstm_tiled_forward(x, h0, c0, w_ih, w_hh, b_ih?, b_hh?)
        -> (out, h_last, c_last, cs, gates, tcs)
    rnnlab::lstm_tiled_backward(d_out, d_h_last, d_c_last, x, h0, out, w_ih, w_hh, cs, gates, tcs, need_x,
        need_w_ih, need_w_hh, need_b) -> (dx, dh0, dc0, dw_ih, dw_hh, db)

the row-major time loops of :mod:`rnnlab.engine.fast` with the buffers they save (unused ones
empty), and the LSTM's unit-major loop (``lstm_tiled.h``) with its own, whose batch is padded to
:func:`tiled_padded_batch` (a multiple of 8 on every CPU, so that the fake implementation can
compute it from a symbolic batch; its outputs and gradients are unpadded copies, and the padded
buffers pass from one operator to the other untouched, so no graph asks whether the padding is
empty, which would guard on the batch). This module gives them what the compilers need from
Python: a fake implementation (the output shapes, symbolic in T and B, so one graph serves every
length and batch) and the autograd formula (the backward operator, then, for the row-major pair,
the input and weight gradients as ordinary matmuls, which the compiler sees and fuses; the
unit-major backward operator computes its own). Dynamo, AOTAutograd and export then see
one opaque call per layer and direction instead of a Python loop they cannot trace. The
operators live in C++, so a package compiled by AOTInductor runs them after
``torch.ops.load_library`` of the kernels' module alone.

Which one a traced layer calls (:func:`rnnlab.engine.fast.fast_scan`): under ``torch.compile``, a
float32 LSTM with a gradient to come whose hidden size is a multiple of 8 (``set_tiled("auto")``)
takes the row-major operator, whose kernel runs lstm_tiled.h's row-major training loop where its
length and batch rule holds at each call; another float32 LSTM without a padding mask takes the
unit-major operator wherever the eager engine has the loop (x86 with AVX2 or AVX-512, not switched
off by ``set_tiled``, read when traced), at every batch size, since a batch rule would put a guard
on the batch; everything else, and everything under ``torch.export`` (a package that runs on any
CPU, at any batch), takes the row-major one.

Not covered here: LSTM projections and half precision run the eager engine inside one Python
operator under ``torch.compile`` (:mod:`rnnlab.engine.eager_op`, ``rnnlab_eager::scan``), cell
options likewise (:mod:`rnnlab.engine.variants`, ``rnnlab_variants::scan``); under
``torch.export`` all of them take the plain-ops equations of :mod:`rnnlab.engine.autodiff`,
unrolled for the example's length.

Without a gradient to come (``torch.no_grad()``, or nothing requiring one: a constant of the
traced graph), a float32 LSTM of at most ``infer_max_hidden()`` units (512 with AVX-512, else 256), a
multiple of 8, takes
the inference loop instead, which keeps nothing for backward:

    rnnlab::lstm_infer(x, h0, c0, w_ih, w_hh, b_ih?, b_hh?) -> (out, h_last, c_last)

and a float32 GRU or vanilla RNN, by the same rule, its own inference loop:

    rnnlab::gru_infer(x, h0, w_ih, w_hh, b_ih?, b_hh?) -> (out, h_last)
    rnnlab::rnn_infer(x, h0, w_ih, w_hh, b_ih?, b_hh?, relu) -> (out, h_last)

(inference only, as the step below; no batch or length rule here, so the eager engine's "or up to
8 sequences" and "from H²/8192 sequence-steps" do not apply).

A third pair is the float32 LSTM's batch-1 step, the loops of ``Stream``'s C++ step for one layer as
a pure function, for decoding loops that ``torch.compile`` or ``torch.export`` should trace:

    rnnlab::lstm_step_pack(w_ih, w_hh, b_ih?, b_hh?, chunks) -> packed
    rnnlab::lstm_step(x, h, c, packed) -> (h_new, c_new)

(helpers: :func:`rnnlab.engine.fast.lstm_step_pack`, :func:`rnnlab.engine.fast.lstm_step`). They
are inference only, as the three operators above: their autograd kernel (in C++, so that a call
does not pass through a Python autograd kernel) refuses, with grad mode on, any input that
requires a gradient.

The backward operators have no derivative of their own: ``create_graph=True`` through a compiled
model raises, while the eager engines' double backward is unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.engine.compile_cache import tag_compile_caches
from rnnlab.engine.scan import input_and_weight_grads

_registered = False


def _empty(x: Tensor) -> Tensor:
    return x.new_empty(0)


def _fake_forward(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mask):
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[1]
    hs = x.new_empty(T + 1, B, H)
    if mode == "lstm":
        return hs, x.new_empty(T + 1, B, H), x.new_empty(T, B, 4 * H), _empty(x), x.new_empty(T, B, H)
    if mode == "gru":
        return hs, _empty(x), x.new_empty(T, B, 3 * H), x.new_empty(T, B, H), _empty(x)
    return hs, _empty(x), _empty(x), _empty(x), _empty(x)


def _fake_backward(mode, d_out, d_h_last, d_c_last, hs, cs, gates, hn, tcs, w_hh, mask):
    T, B, H = d_out.shape
    GH = w_hh.shape[0]
    dxw = d_out.new_empty(T, B, GH)
    dhw = d_out.new_empty(T, B, GH) if mode == "gru" else _empty(d_out)
    dc0 = d_out.new_empty(B, H) if mode == "lstm" else _empty(d_out)
    return dxw, dhw, d_out.new_empty(B, H), dc0


def _setup_context(ctx, inputs, output):
    mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mask = inputs
    hs, cs, gates, hn, tcs = output
    ctx.mode, ctx.has_bias = mode, b_ih is not None
    ctx.mark_non_differentiable(gates, hn, tcs)
    ctx.save_for_backward(x, w_ih, w_hh, mask, hs, cs, gates, hn, tcs)


def _column_sums(t2: Tensor) -> Tensor:
    """The sum of a (rows, N) matrix over its rows: a bias gradient. Taken as a row of ones
    times the matrix, which a compiled graph runs as one GEMM: inductor's own kernel for
    a sum over rows walks each block of columns down every row, several times slower than the GEMM
    or ATen's sum (benchmarks/bench_compile.py's training step shows the difference). The GEMM adds
    in a plainer order than ATen's sum, so in float32 its rounding error is larger (still some 1e-6
    of the sum; float64 agrees with the eager engines to the parity tests' 1e-12)."""
    return torch.mm(t2.new_ones(1, t2.shape[0]), t2).view(-1)


def _backward(ctx, d_hs, d_cs, *_):
    """d_hs (T+1, B, H): the gradient of every h_t the graph read (its outputs hs[1:] and h_T);
    the kernels' d_out is its rows 1..T, their d_h_last zero (the same sum, d_out[T-1] + d_h_T)."""
    x, w_ih, w_hh, mask, hs, cs, gates, hn, tcs = ctx.saved_tensors
    mode = ctx.mode
    if d_hs is None:
        d_hs = torch.zeros_like(hs)
    d_out = d_hs[1:]
    d_h_last = torch.zeros_like(hs[0])
    d_c_last = None
    if mode == "lstm":
        d_c_last = torch.zeros_like(cs[-1]) if d_cs is None else d_cs[-1]
    dxw, dhw, dh0, dc0 = torch.ops.rnnlab.seq_backward(mode, d_out, d_h_last, d_c_last, hs, cs, gates, hn, tcs,
                                                       w_hh, mask)
    if mode != "gru":
        dhw = dxw
    need = ctx.needs_input_grad
    which = (need[1], need[4], need[5], need[6] and ctx.has_bias, need[7] and ctx.has_bias)
    dx, dw_ih, dw_hh, db_ih, db_hh = input_and_weight_grads(which, dxw, dhw, x, w_ih, hs, colsum=_column_sums)
    return (None, dx, dh0 if need[2] else None, dc0 if mode == "lstm" and need[3] else None,
            dw_ih, dw_hh, db_ih, db_hh, None)


def tiled_padded_batch(B):
    """The batch the unit-major operator pads to (lstm_tiled.h's op_padded_batch): a multiple of 8,
    a function of B alone, so symbolic in a compiled graph."""
    return (B + 7) // 8 * 8


def _fake_tiled_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[1]
    Bp = tiled_padded_batch(B)
    return (x.new_empty(T, B, H), x.new_empty(B, H), x.new_empty(B, H), x.new_empty(T + 1, H, Bp),
            x.new_empty(4 * H, T, Bp), x.new_empty(T, H, Bp))


def _fake_tiled_backward(d_out, d_h_last, d_c_last, x, h0, out, w_ih, w_hh, cs, gates, tcs, need_x, need_w_ih, need_w_hh,
                         need_b):
    B, H = x.shape[1], w_hh.shape[1]
    return (x.new_empty(x.shape) if need_x else _empty(x), x.new_empty(B, H), x.new_empty(B, H),
            w_ih.new_empty(w_ih.shape) if need_w_ih else _empty(x),
            w_hh.new_empty(w_hh.shape) if need_w_hh else _empty(x),
            w_hh.new_empty(w_hh.shape[0]) if need_b else _empty(x))


def _setup_tiled_context(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = inputs
    out, _, _, cs, gates, tcs = output
    ctx.has_bias = b_ih is not None
    ctx.mark_non_differentiable(cs, gates, tcs)
    ctx.save_for_backward(x, h0, out, w_ih, w_hh, cs, gates, tcs)   # h0 and out: the states dW_hh reads


def _tiled_backward(ctx, d_out, d_h_last, d_c_last, *_):
    """As _backward, for the unit-major loop, whose operator also computes the input and weight
    gradients (the matmuls run over its padded buffers, which stay inside the operators)."""
    x, h0, out, w_ih, w_hh, cs, gates, tcs = ctx.saved_tensors
    need = ctx.needs_input_grad
    if d_out is None:
        d_out = x.new_zeros(x.shape[0], x.shape[1], w_hh.shape[1])
    if d_h_last is None:
        d_h_last = x.new_zeros(x.shape[1], w_hh.shape[1])
    if d_c_last is None:
        d_c_last = x.new_zeros(x.shape[1], w_hh.shape[1])
    need_b = ctx.has_bias and (need[5] or need[6])
    dx, dh0, dc0, dw_ih, dw_hh, db = torch.ops.rnnlab.lstm_tiled_backward(
        d_out, d_h_last, d_c_last, x, h0, out, w_ih, w_hh, cs, gates, tcs, need[0], need[3], need[4], need_b)
    db_ih = db if need_b and need[5] else None
    db_hh = (db.clone() if db_ih is not None else db) if need_b and need[6] else None   # two leaves, two tensors
    return (dx if need[0] else None, dh0 if need[1] else None, dc0 if need[2] else None,
            dw_ih if need[3] else None, dw_hh if need[4] else None, db_ih, db_hh)


STEP_HEAD = 16          # fast_kernels.cpp's kStepHead: the packed step weights' header
STEP_BLOCK = 64         # its kBlock: columns per packed block


def step_packed_len(I, H, chunks):
    """The length of ``rnnlab::lstm_step_pack``'s output (fast_kernels.cpp's step_packed_len)."""
    n = STEP_HEAD + (4 * H + STEP_HEAD - 1) // STEP_HEAD * STEP_HEAD
    for k in range(chunks):
        ncols = 4 * ((k + 1) * H // chunks) - 4 * (k * H // chunks)
        n += (ncols + STEP_BLOCK - 1) // STEP_BLOCK * STEP_BLOCK * (I + H)
    return n


def _fake_step_pack(w_ih, w_hh, b_ih, b_hh, chunks):
    return w_ih.new_empty(step_packed_len(w_ih.shape[1], w_hh.shape[1], chunks))


def _fake_step(x, h, c, packed):
    return h.new_empty(h.shape), c.new_empty(c.shape)


def _fake_infer(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
    return x.new_empty(T, B, H), x.new_empty(B, H), x.new_empty(B, H)


def _fake_gru_infer(x, h0, w_ih, w_hh, b_ih, b_hh):
    T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
    return x.new_empty(T, B, H), x.new_empty(B, H)


def _fake_rnn_infer(x, h0, w_ih, w_hh, b_ih, b_hh, relu):
    return _fake_gru_infer(x, h0, w_ih, w_hh, b_ih, b_hh)


def register() -> None:
    """Add the fake implementations, and the training operators' autograd formulas, to the C++
    operators (once; the kernels' module must be loaded, which defines the operators)."""
    global _registered
    tag_compile_caches()       # every trace: a tag the user set since is extended again
    if _registered:
        return
    torch.library.register_fake("rnnlab::seq_forward")(_fake_forward)
    torch.library.register_fake("rnnlab::seq_backward")(_fake_backward)
    torch.library.register_autograd("rnnlab::seq_forward", _backward, setup_context=_setup_context)
    torch.library.register_fake("rnnlab::lstm_tiled_forward")(_fake_tiled_forward)
    torch.library.register_fake("rnnlab::lstm_tiled_backward")(_fake_tiled_backward)
    torch.library.register_autograd("rnnlab::lstm_tiled_forward", _tiled_backward, setup_context=_setup_tiled_context)
    torch.library.register_fake("rnnlab::lstm_step_pack")(_fake_step_pack)
    torch.library.register_fake("rnnlab::lstm_step")(_fake_step)
    torch.library.register_fake("rnnlab::lstm_infer")(_fake_infer)
    torch.library.register_fake("rnnlab::gru_infer")(_fake_gru_infer)
    torch.library.register_fake("rnnlab::rnn_infer")(_fake_rnn_infer)
    _registered = True


def is_registered() -> bool:
    return _registered


def op_scan(mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
            b_ih: Tensor | None, b_hh: Tensor | None, mask: Tensor | None):
    """``scan``'s results through the operator: (out (T, B, H), h_T, c_T or None)."""
    hs, cs, _, _, _ = torch.ops.rnnlab.seq_forward(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mask)
    out = hs[1:] if mask is None else hs[1:] * mask
    return out, hs[-1], (cs[-1] if mode == "lstm" else None)


def op_infer(mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None,
             b_hh: Tensor | None):
    """``scan`` without a gradient to come, through the cell's inference operator: (out, h_T, c_T or None)."""
    if mode == "lstm":
        return torch.ops.rnnlab.lstm_infer(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    if mode == "gru":
        out, h_last = torch.ops.rnnlab.gru_infer(x, h0, w_ih, w_hh, b_ih, b_hh)
    else:
        out, h_last = torch.ops.rnnlab.rnn_infer(x, h0, w_ih, w_hh, b_ih, b_hh, mode == "rnn_relu")
    return out, h_last, None


def op_tiled_lstm(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None,
                  b_hh: Tensor | None):
    """The LSTM's ``scan`` through the unit-major operator: (out (T, B, H), h_T, c_T)."""
    out, h_last, c_last, _, _, _ = torch.ops.rnnlab.lstm_tiled_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return out, h_last, c_last
