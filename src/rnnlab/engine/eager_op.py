"""One opaque operator for the CPU layer calls that the C++ operators of :mod:`rnnlab.engine.ops`
do not cover under ``torch.compile``: LSTM projections (``proj_size``), half precision, and every
layer where the kernels are not built.

``rnnlab_eager::scan`` runs the eager engine's forward (:func:`rnnlab.engine.fast.fast_scan`
outside the compiler, with its numbers), and ``rnnlab_eager::scan_backward`` recomputes that
forward under autograd and returns the gradients: dynamo and AOTAutograd see one call per layer
and direction, whose shapes the fake implementations give for any length and batch, so one
graph serves every length, where tracing the equations in torch ops would unroll them once per
length. Training pays a second forward inside the backward operator. Not under ``torch.export``:
a program that runs without rnnlab's Python code keeps the plain-ops equations there.
"""

from __future__ import annotations

import torch
from torch import Tensor

_LEARNED = 8        # x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr: the inputs that may need gradients
_registered = False
_eager_scan = None  # rnnlab.engine.fast.fast_scan, set by that module (which imports this one)


def set_eager_scan(fn) -> None:
    global _eager_scan
    _eager_scan = fn


def _scan(mode: str, ts: list[Tensor | None]):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask = ts
    return _eager_scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask)


def _outputs(mode: str, res, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    out, h, c = res
    # an operator's outputs may not alias each other or its inputs
    return out.clone(), h.clone(), c.clone() if mode == "lstm" else like.new_empty(0)


def output_grads(x: Tensor, h0: Tensor, c0: Tensor | None, d_out: Tensor | None, d_h: Tensor | None,
                 d_c: Tensor | None) -> list[Tensor]:
    """The incoming gradients of a scan operator's (out, h_T[, c_T]), zeros for those autograd
    passes as None (the backward operators take tensors); c_T's only with ``c0`` (the LSTM)."""
    grads = [d_out if d_out is not None else x.new_zeros(x.shape[0], x.shape[1], h0.shape[-1]),
             d_h if d_h is not None else x.new_zeros(h0.shape)]
    if c0 is not None:
        grads.append(d_c if d_c is not None else x.new_zeros(c0.shape))
    return grads


def _register() -> None:
    lib = "rnnlab_eager"

    @torch.library.custom_op(f"{lib}::scan", mutates_args=())
    def scan_op(mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
                b_ih: Tensor | None, b_hh: Tensor | None, w_hr: Tensor | None,
                mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            return _outputs(mode, _scan(mode, [x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask]), x)

    @scan_op.register_fake
    def _(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask):
        T, B, P = x.shape[0], x.shape[1], h0.shape[-1]
        c = x.new_empty(B, c0.shape[-1]) if mode == "lstm" else x.new_empty(0)     # H, not P
        return x.new_empty(T, B, P), x.new_empty(B, P), c

    @torch.library.custom_op(f"{lib}::scan_backward", mutates_args=())
    def scan_backward_op(mode: str, grads: list[Tensor], needs: list[bool], ts: list[Tensor | None]) -> list[Tensor]:
        leaves = [t.detach().requires_grad_(n) if t is not None and k < _LEARNED else t
                  for k, (t, n) in enumerate(zip(ts, [*needs, False]))]
        wanted = [t for k, t in enumerate(leaves[:_LEARNED]) if t is not None and needs[k]]
        with torch.enable_grad():
            res = _scan(mode, leaves)
            outs = [res[0], res[1]] + ([res[2]] if mode == "lstm" else [])
            got = iter(torch.autograd.grad(outs, wanted, grads[:len(outs)], allow_unused=True))
        result = []
        for k, t in enumerate(ts[:_LEARNED]):
            if t is None or not needs[k]:
                result.append(ts[0].new_empty(0))
                continue
            g = next(got)          # None where the input does not reach the outputs
            result.append(torch.zeros_like(t) if g is None else g.clone())
        return result

    @scan_backward_op.register_fake
    def _(mode, grads, needs, ts):
        return [t.new_empty(t.shape) if t is not None and n else ts[0].new_empty(0) for t, n in zip(ts[:_LEARNED], needs)]

    def setup_context(ctx, inputs, output):
        ts = inputs[1:]
        ctx.mode, ctx.present = inputs[0], [t is not None for t in ts]
        ctx.save_for_backward(*[t for t in ts if t is not None])

    def backward(ctx, d_out, d_h, d_c):
        it = iter(ctx.saved_tensors)
        ts = [next(it) if present else None for present in ctx.present]
        grads = output_grads(ts[0], ts[1], ts[2] if ctx.mode == "lstm" else None, d_out, d_h, d_c)
        needs = [bool(n) for n in ctx.needs_input_grad[1:1 + _LEARNED]]
        got = torch.ops.rnnlab_eager.scan_backward(ctx.mode, grads, needs, ts)
        return (None, *[g if n else None for g, n in zip(got, needs)], None)

    scan_op.register_autograd(backward, setup_context=setup_context)


@torch.compiler.assume_constant_result
def eager_op_ready() -> bool:
    """Registers the operators once, when first traced (a constant to the compilers)."""
    global _registered
    if not _registered:
        _register()
        _registered = True
    return True


def op_eager_scan(mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Tensor | None, b_hh: Tensor | None, w_hr: Tensor | None,
                  mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    out, h, c = torch.ops.rnnlab_eager.scan(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask)
    return out, h, (c if mode == "lstm" else None)
