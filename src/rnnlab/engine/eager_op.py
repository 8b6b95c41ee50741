"""One opaque operator for the CPU layer calls that the C++ operators of :mod:`rnnlab.engine.ops`
do not cover under ``torch.compile``: LSTM projections (``proj_size``), half precision, and every
layer where the kernels are not built.

``rnnlab_eager::scan`` runs the forward of the engine that eager mode takes for these calls (the
reference's loop, :func:`rnnlab.engine.scan.scan_forward`, outside the compiler) and, when a
gradient is to come, returns the buffers its backward reads (hs, gates, cs, hn) beside the
outputs; ``rnnlab_eager::scan_backward`` runs that backward (:func:`rnnlab.engine.scan.scan_backward`)
on them. Dynamo and AOTAutograd see one call per layer and direction, whose shapes the fake
implementations give for any length and batch, so one graph serves every length, where tracing
the equations in torch ops would unroll them once per length. Not under ``torch.export``: a
program that runs without rnnlab's Python code keeps the plain-ops equations there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.engine.compile_cache import tag_compile_caches
from rnnlab.engine.compiler_marks import assume_constant_result
from rnnlab.engine.scan import ScanTag, scan_backward, scan_forward

_LEARNED = 8        # x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr: the inputs that may need gradients
_registered = False
# which of scan_forward's saved buffers (hs, gates, cs, hn) each family has: the RNN's gates are hs[1:]
_SAVED = {"lstm": (True, True, True, False), "gru": (True, True, False, True),
          "rnn_tanh": (True, False, False, False), "rnn_relu": (True, False, False, False)}


def gradient_to_come(*tensors: Tensor | None) -> bool:
    """Whether autograd will ask the operator called on ``tensors`` for a backward: grad mode on
    and one of them requiring a gradient (a constant of a compiled graph, which guards on both).
    The scan operators then return the buffers their backward reads."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def output_grads(x: Tensor, h0: Tensor, c0: Tensor | None, d_out: Tensor | None, d_h: Tensor | None,
                 d_c: Tensor | None) -> list[Tensor]:
    """The incoming gradients of a scan operator's (out, h_T[, c_T]), zeros for those autograd
    passes as None (the backward operators take tensors); c_T's only with ``c0`` (the LSTM)."""
    grads = [d_out if d_out is not None else x.new_zeros(x.shape[0], x.shape[1], h0.shape[-1]),
             d_h if d_h is not None else x.new_zeros(h0.shape)]
    if c0 is not None:
        grads.append(d_c if d_c is not None else x.new_zeros(c0.shape))
    return grads


def _saved_shapes(mode: str, x: Tensor, h0: Tensor, w_ih: Tensor) -> list[tuple]:
    T, B, P = x.shape[0], x.shape[1], h0.shape[-1]
    GH = w_ih.shape[0]
    H = GH // {"lstm": 4, "gru": 3}.get(mode, 1)
    shapes = [(T + 1, B, P), (T, B, GH), (T + 1, B, H), (T, B, H)]
    return [s if present else (0,) for s, present in zip(shapes, _SAVED[mode])]


def _register() -> None:
    lib = "rnnlab_eager"

    @torch.library.custom_op(f"{lib}::scan", mutates_args=())
    def scan_op(mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
                b_ih: Tensor | None, b_hh: Tensor | None, w_hr: Tensor | None, mask: Tensor | None,
                save: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        with torch.no_grad():
            out, h, c, saved = scan_forward(mode, ScanTag(), x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        if save and mask is None:
            out = out.clone()      # a view of hs, which is returned too: an operator's outputs may not alias
        kept = [t if save and t is not None else x.new_empty(0) for t in saved]
        return (out, h, c if c is not None else x.new_empty(0), *kept)

    @scan_op.register_fake
    def _(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, save):
        T, B, P = x.shape[0], x.shape[1], h0.shape[-1]
        c = x.new_empty(B, c0.shape[-1]) if mode == "lstm" else x.new_empty(0)     # H, not P
        kept = [x.new_empty(s) if save else x.new_empty(0) for s in _saved_shapes(mode, x, h0, w_ih)]
        return (x.new_empty(T, B, P), x.new_empty(B, P), c, *kept)

    @torch.library.custom_op(f"{lib}::scan_backward", mutates_args=())
    def scan_backward_op(mode: str, grads: list[Tensor], needs: list[bool], ts: list[Tensor | None],
                         saved: list[Tensor | None]) -> list[Tensor]:
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask = ts
        d_c = grads[2] if mode == "lstm" else None
        with torch.no_grad():
            got = scan_backward(mode, ScanTag(), needs[:7], b_ih is not None, grads[0], grads[1], d_c,
                                x, mask, w_ih, w_hh, w_hr, saved)
        return [g if t is not None and n and g is not None else x.new_empty(0)
                for g, t, n in zip(got, ts[:_LEARNED], needs)]

    @scan_backward_op.register_fake
    def _(mode, grads, needs, ts, saved):
        return [t.new_empty(t.shape) if t is not None and n else ts[0].new_empty(0) for t, n in zip(ts[:_LEARNED], needs)]

    def setup_context(ctx, inputs, output):
        mode, ts = inputs[0], inputs[1:1 + _LEARNED + 1]
        ctx.mode, ctx.present = mode, [t is not None for t in ts]
        kept = [t for t, present in zip(output[3:], _SAVED[mode]) if present]
        ctx.mark_non_differentiable(*output[3:])
        ctx.save_for_backward(*[t for t in ts if t is not None], *kept)

    def backward(ctx, d_out, d_h, d_c, *_):
        it = iter(ctx.saved_tensors)
        ts = [next(it) if present else None for present in ctx.present]
        saved = [next(it) if present else None for present in _SAVED[ctx.mode]]
        grads = output_grads(ts[0], ts[1], ts[2] if ctx.mode == "lstm" else None, d_out, d_h, d_c)
        needs = [bool(n) for n in ctx.needs_input_grad[1:1 + _LEARNED]]
        got = torch.ops.rnnlab_eager.scan_backward(ctx.mode, grads, needs, ts, saved)
        return (None, *[g if n else None for g, n in zip(got, needs)], None, None)

    scan_op.register_autograd(backward, setup_context=setup_context)


@assume_constant_result
def eager_op_ready() -> bool:
    """Registers the operators once, when first traced (a constant to the compilers)."""
    global _registered
    tag_compile_caches()       # every trace, as ops.register
    if not _registered:
        _register()
        _registered = True
    return True


def op_eager_scan(mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Tensor | None, b_hh: Tensor | None, w_hr: Tensor | None,
                  mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """The scan through ``rnnlab_eager::scan``: (out (T, B, P), h_T, c_T or None)."""
    save = gradient_to_come(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    out, h, c, *_ = torch.ops.rnnlab_eager.scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, save)
    return out, h, (c if mode == "lstm" else None)
