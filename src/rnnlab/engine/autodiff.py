r"""The cells' equations in plain, differentiable torch ops: the engines' second path.

The engines' autograd.Functions run the time loop on preallocated buffers (``out=`` and in-place
ops, C++ kernels) and differentiate it with hand-written BPTT. That backward is itself not
differentiable, and its buffers cannot hold the batched tensors of ``torch.func.vmap``. For
those two cases the engines switch to the functions here, which compute the same equations
(:mod:`rnnlab.cells`) with ordinary torch ops, so that autograd and torch.func derive anything
from them:

- **double backward** (``create_graph=True``: gradient penalties, MAML, Hessian-vector products):
  a Function's backward sees grad mode on, re-runs its forward here from the saved inputs and
  returns ``torch.autograd.grad(..., create_graph=True)`` of it: a first derivative that is
  itself differentiable, to any order (:func:`recompute_grads`);
- **batched gradients** (``torch.autograd.grad(..., is_grads_batched=True)``,
  ``gradcheck(check_batched_grad=True)``): the backward receives vmap's batched tensors and takes
  the same path, whose ops all have batching rules;
- **torch.func transforms** (``vmap``, ``grad``, ``jacrev``, ``jvp``, ...) and forward-mode AD:
  the engines' entry points call :func:`torch_scan` / :func:`torch_variant_scan` directly
  (:func:`use_autodiff`), without any autograd.Function.

Same arguments and results as :func:`rnnlab.engine.scan.scan` and
:func:`rnnlab.engine.variants.variant_scan`, padding mask included: at an invalid step the state
is carried and the output is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad

from rnnlab.cells import layernorm


_BATCHED_KEYSETS: dict[int, bool] = {}   # a dispatch key set's raw bits -> whether it holds "Batched"


def _functorch_wrapped(t) -> bool:
    """A torch.func wrapper, or a batched tensor of the vmap that ``is_grads_batched`` uses."""
    if not isinstance(t, Tensor):
        return False
    if torch._C._functorch.is_functorch_wrapped_tensor(t):
        return True
    # the legacy vmap's "Batched" key has no DispatchKey name in Python: read the set's repr, once
    # per distinct set (a repr costs a few microseconds, and every layer call asks for each tensor)
    keys = torch._C._dispatch_keys(t)
    raw = keys.raw_repr()
    batched = _BATCHED_KEYSETS.get(raw)
    if batched is None:
        batched = _BATCHED_KEYSETS[raw] = "Batched" in str(keys)
    return batched


def use_autodiff(*tensors) -> bool:
    """Whether a forward must run in plain torch ops: inside a torch.func transform, or with a
    forward-mode dual tensor among the inputs (the engines' Functions have no jvp), or under
    torch.compile / torch.export where the fast engine's operators do not cover the call (these
    ops trace; the Functions' Python loops do not)."""
    if torch.compiler.is_compiling():
        return True
    if torch._C._are_functorch_transforms_active() or any(_functorch_wrapped(t) for t in tensors):
        return True
    if forward_ad._current_level >= 0:
        return any(isinstance(t, Tensor) and forward_ad.unpack_dual(t).tangent is not None for t in tensors)
    return False


def backward_needs_autodiff(*grads) -> bool:
    """Whether a Function's backward must differentiate the plain-ops forward instead of running
    its hand-written BPTT: a differentiable backward was asked for (create_graph=True), or the
    incoming gradients are vmap-batched."""
    return torch.is_grad_enabled() or any(_functorch_wrapped(g) for g in grads)


def recompute_grads(run, inputs, needs, grads_out) -> list:
    """∂(run(*inputs))/∂inputs · grads_out through autograd, differentiable when grad mode is on.

    ``inputs``: the Function's tensor inputs as saved (connected to the graph in a
    create_graph backward); ``needs``: which of them want a gradient; ``grads_out``: one
    incoming gradient per output of ``run`` (None: no gradient). Returns one gradient or None per
    input."""
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        leaves = []
        args = []
        for t, n in zip(inputs, needs):
            if t is not None and n and not create and not t.requires_grad:
                t = t.detach().requires_grad_(True)
            args.append(t)
            if t is not None and n:
                leaves.append(t)
        outs = run(*args)
        pairs = [(o, g) for o, g in zip(outs, grads_out) if o is not None and g is not None and o.requires_grad]
        if not leaves or not pairs:
            return [None] * len(inputs)
        got = torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs],
                                  create_graph=create, allow_unused=True)
    result, it = [], iter(got)
    for t, n in zip(inputs, needs):
        if t is not None and n:
            g = next(it)
            result.append(torch.zeros_like(t) if g is None else g)
        else:
            result.append(None)
    return result


def _carry(new: Tensor, old: Tensor, m: Tensor | None) -> Tensor:
    return new if m is None else torch.where(m, new, old)


def torch_scan(
    mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
    b_ih: Tensor | None = None, b_hh: Tensor | None = None, w_hr: Tensor | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """torch.nn's RNN/LSTM/GRU equations over x (T, B, I) in differentiable torch ops."""
    xw = torch.matmul(x, w_ih.t())
    if b_ih is not None:
        xw = xw + (b_ih + b_hh if mode != "gru" else b_ih)
    h, c = h0, c0
    outs = []
    for t in range(x.shape[0]):
        m = None if mask is None else mask[t]
        hw = torch.matmul(h, w_hh.t())
        if mode == "lstm":
            i, f, g, o = (xw[t] + hw).chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if w_hr is not None:
                h_new = torch.matmul(h_new, w_hr.t())
            c = _carry(c_new, c, m)
        elif mode == "gru":
            if b_hh is not None:
                hw = hw + b_hh
            H = hw.shape[-1] // 3
            rz = torch.sigmoid(xw[t][..., : 2 * H] + hw[..., : 2 * H])
            r, z = rz[..., :H], rz[..., H:]
            n = torch.tanh(xw[t][..., 2 * H :] + r * hw[..., 2 * H :])
            h_new = n + z * (h - n)
        else:
            a = xw[t] + hw
            h_new = torch.relu(a) if mode == "rnn_relu" else torch.tanh(a)
        h = _carry(h_new, h, m)
        outs.append(h if m is None else h * m)
    return torch.stack(outs, 0), h, (c if mode == "lstm" else None)


def _ln(v: Tensor, blocks: int) -> Tensor:
    """Layer norm of each of ``blocks`` gate blocks in the last axis (no affine), as the scans."""
    shape = v.shape[:-1] + (blocks, v.shape[-1] // blocks)
    return F.layer_norm(v.reshape(shape), shape[-1:], eps=layernorm.EPS).reshape(v.shape)


def torch_variant_scan(
    spec, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
    b_ih: Tensor | None = None, b_hh: Tensor | None = None, *,
    ln_gain_ih=None, ln_gain_hh=None, ln_gain_c=None, ln_bias_c=None, peephole=None,
    rd_mask=None, zoneout_h=None, zoneout_c=None, mask=None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`rnnlab.engine.variants.variant_scan`'s equations (:mod:`rnnlab.cells.lstm_variants`,
    :mod:`rnnlab.cells.gru_variants`, zoneout and recurrent dropout) in differentiable torch ops."""
    is_lstm = spec.mode == "lstm"
    v = spec.cell
    G = len(v.blocks)
    H = w_hh.shape[1]
    xw = torch.matmul(x, w_ih.t())
    if v.layer_norm:
        xw = ln_gain_ih * _ln(xw, G)
    if b_ih is not None:
        xw = xw + (b_ih + b_hh if is_lstm else b_ih)

    def recurrent(u: Tensor, lo: int, hi: int) -> Tensor:          # the GRU's R(·) on blocks lo..hi
        if v.layer_norm:
            u = ln_gain_hh[lo * H: hi * H] * _ln(u, hi - lo)
        return u if b_hh is None else u + b_hh[lo * H: hi * H]

    h, c = h0, c0
    outs = []
    for t in range(x.shape[0]):
        m = None if mask is None else mask[t]
        h_in = h if rd_mask is None else h * rd_mask
        if is_lstm:
            u = torch.matmul(h_in, w_hh.t())
            a = xw[t] + (ln_gain_hh * _ln(u, G) if v.layer_norm else u)
            if v.coupled:
                a_i, a_g, a_o = a.chunk(3, dim=-1)
                if v.peephole:
                    a_i = a_i + peephole[:H] * c
                i = torch.sigmoid(a_i)
                f = 1.0 - i
            else:
                a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)
                if v.peephole:
                    a_i = a_i + peephole[:H] * c
                    a_f = a_f + peephole[H: 2 * H] * c
                i, f = torch.sigmoid(a_i), torch.sigmoid(a_f)
            c_new = f * c + i * torch.tanh(a_g)
            if v.peephole:
                a_o = a_o + peephole[-H:] * c_new
            zc = ln_gain_c * _ln(c_new, 1) + ln_bias_c if v.layer_norm else c_new
            h_new = torch.sigmoid(a_o) * torch.tanh(zc)
            if zoneout_c is not None:
                c_new = c_new + zoneout_c[t] * (c - c_new)
            c = _carry(c_new, c, m)
        else:
            if v.reset == "after":
                hw = recurrent(torch.matmul(h_in, w_hh.t()), 0, 3)
                rz = torch.sigmoid(xw[t][..., : 2 * H] + hw[..., : 2 * H])
                r, z = rz[..., :H], rz[..., H:]
                n = torch.tanh(xw[t][..., 2 * H:] + r * hw[..., 2 * H:])
            else:
                hw = recurrent(torch.matmul(h_in, w_hh[: 2 * H].t()), 0, 2)
                rz = torch.sigmoid(xw[t][..., : 2 * H] + hw)
                r, z = rz[..., :H], rz[..., H:]
                n = torch.tanh(xw[t][..., 2 * H:] + recurrent(torch.matmul(r * h_in, w_hh[2 * H:].t()), 2, 3))
            h_new = n + z * (h - n)
        if zoneout_h is not None:
            h_new = h_new + zoneout_h[t] * (h - h_new)
        h = _carry(h_new, h, m)
        outs.append(h if m is None else h * m)
    return torch.stack(outs, 0), h, (c if is_lstm else None)
