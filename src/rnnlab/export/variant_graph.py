r"""Inference-only twins, in plain torch ops, of rnnlab layers and cells whose equations torch.nn lacks.

Why: torch.nn has no layer norm, peepholes, coupled gates or reset-before GRU, and rnnlab's own
forward is a hand-written autograd.Function that no exporter can see into. These modules hold a
copy of the layer's parameters (the same names, extras included: ``ln_gain_*``, ``ln_bias_cell``,
``peephole``) and compute the eval-mode step equations of :mod:`rnnlab.cells.lstm_variants` and
:mod:`rnnlab.cells.gru_variants` with ops every ONNX runtime has. They are ``torch.jit.script``-ed
by :func:`variant_twin`, so the time loop becomes an ONNX ``Loop`` and the sequence length stays
dynamic. Regularisers act as in eval: recurrent dropout and weight drop vanish, zoneout keeps its
expectation (h = p h_{t-1} + (1 − p) h̃_t, likewise c). Inter-layer dropout is off.

Calling convention, like torch.nn (no PackedSequence, no unbatched input)::

    layer(input (T, B, I) or (B, T, I), hx=None | h0 | (h0, c0)) -> output, h_n | (h_n, c_n)
    cell(input (B, I), hx=None | h | (h, c)) -> h' | (h', c')
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells import layernorm
from rnnlab.errors import ConfigError
from rnnlab.nn.cells import CellBase
from rnnlab.nn.layers import RecurrentBase
from rnnlab.nn.variants import _suffixes



def _ln(v: Tensor, blocks: int, h: int, eps: float) -> Tensor:
    """Layer norm of each of the ``blocks`` gate blocks of size h in the last axis (no affine)."""
    shape: List[int] = list(v.size())
    return F.layer_norm(v.reshape(shape[:-1] + [blocks, h]), [h], eps=eps).reshape(shape)


def _vec(module: nn.Module, name: str, n: int, like: Tensor, fill: float) -> Tensor:
    """A copy of the parameter ``name`` of ``module``, or a constant (n,) tensor where it is absent."""
    p = getattr(module, name, None)
    if p is None:
        return torch.full((n,), fill, dtype=like.dtype, device=like.device)
    return p.detach().clone()


class _Direction(nn.Module):
    """One layer-direction of a variant LSTM or GRU: the time loop over the step equations."""

    __constants__ = ["lstm", "layer_norm", "peephole", "coupled", "before", "zoneout_h", "zoneout_c", "G", "H", "eps"]

    def __init__(self, module: nn.Module, sfx: str) -> None:
        super().__init__()
        o = module.options
        self.lstm = module.mode == "lstm"
        self.layer_norm = bool(o.layer_norm)
        self.peephole = bool(o.peephole)
        self.coupled = bool(o.coupled_gates) and self.lstm
        self.before = o.gru_reset == "before"
        self.zoneout_h = float(o.zoneout)
        self.zoneout_c = float(o.zoneout_c) if self.lstm else 0.0
        self.eps = float(layernorm.EPS)                     # the cells' layer-norm epsilon
        w_ih = getattr(module, "weight_ih" + sfx)
        self.H = H = module.hidden_size
        self.G = G = w_ih.shape[0] // H
        self.register_buffer("w_ih", w_ih.detach().clone())
        self.register_buffer("w_hh", getattr(module, "weight_hh" + sfx).detach().clone())
        b_ih = _vec(module, "bias_ih" + sfx, G * H, w_ih, 0.0)
        b_hh = _vec(module, "bias_hh" + sfx, G * H, w_ih, 0.0)
        # The LSTM adds both biases on the input side; the GRU's b_hh sits inside R(·) (reset gate).
        self.register_buffer("b_ih", b_ih + b_hh if self.lstm else b_ih)
        self.register_buffer("b_hh", b_hh)
        self.register_buffer("g_ih", _vec(module, "ln_gain_ih" + sfx, G * H, w_ih, 1.0))
        self.register_buffer("g_hh", _vec(module, "ln_gain_hh" + sfx, G * H, w_ih, 1.0))
        self.register_buffer("g_c", _vec(module, "ln_gain_cell" + sfx, H, w_ih, 1.0))
        self.register_buffer("b_c", _vec(module, "ln_bias_cell" + sfx, H, w_ih, 0.0))
        self.register_buffer("peep", _vec(module, "peephole" + sfx, (2 if self.coupled else 3) * H, w_ih, 0.0))

    def input_side(self, x: Tensor) -> Tensor:
        """xa = [γ_ih ⊙ LN](W_ih x) + b for all steps at once: x (..., I) -> (..., G·H)."""
        xw = torch.matmul(x, self.w_ih.t())
        if self.layer_norm:
            xw = self.g_ih * _ln(xw, self.G, self.H, self.eps)
        return xw + self.b_ih

    def _recurrent(self, v: Tensor, lo: int, hi: int) -> Tensor:
        """R(v) for gate blocks lo..hi of the GRU: [γ_hh ⊙ LN](v) + b_hh."""
        H = self.H
        if self.layer_norm:
            v = self.g_hh[lo * H: hi * H] * _ln(v, hi - lo, H, self.eps)
        return v + self.b_hh[lo * H: hi * H]

    def lstm_step(self, xa: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        H = self.H
        u = torch.matmul(h, self.w_hh.t())                                  # (B, G·H)
        a = xa + (self.g_hh * _ln(u, self.G, H, self.eps) if self.layer_norm else u)
        if self.coupled:
            a_i, a_g, a_o = a[:, :H], a[:, H: 2 * H], a[:, 2 * H:]
            if self.peephole:
                a_i = a_i + self.peep[:H] * c
            i = torch.sigmoid(a_i)
            f = 1.0 - i                                                     # f = 1 − i
        else:
            a_i, a_f, a_g, a_o = a[:, :H], a[:, H: 2 * H], a[:, 2 * H: 3 * H], a[:, 3 * H:]
            if self.peephole:
                a_i = a_i + self.peep[:H] * c
                a_f = a_f + self.peep[H: 2 * H] * c
            i = torch.sigmoid(a_i)
            f = torch.sigmoid(a_f)
        c_new = f * c + i * torch.tanh(a_g)                                 # c̃_t
        if self.peephole:
            a_o = a_o + self.peep[2 * H:] * c_new if not self.coupled else a_o + self.peep[H:] * c_new
        o = torch.sigmoid(a_o)
        if self.layer_norm:
            h_new = o * torch.tanh(self.g_c * _ln(c_new, 1, H, self.eps) + self.b_c)
        else:
            h_new = o * torch.tanh(c_new)
        if self.zoneout_h > 0.0:
            h_new = h_new + self.zoneout_h * (h - h_new)                     # expectation of zoneout
        if self.zoneout_c > 0.0:
            c_new = c_new + self.zoneout_c * (c - c_new)
        return h_new, c_new

    def gru_step(self, xa: Tensor, h: Tensor) -> Tensor:
        H = self.H
        if self.before:
            hw = self._recurrent(torch.matmul(h, self.w_hh[: 2 * H].t()), 0, 2)
            rz = torch.sigmoid(xa[:, : 2 * H] + hw)
            r, z = rz[:, :H], rz[:, H:]
            n = torch.tanh(xa[:, 2 * H:] + self._recurrent(torch.matmul(r * h, self.w_hh[2 * H:].t()), 2, 3))
        else:
            hw = self._recurrent(torch.matmul(h, self.w_hh.t()), 0, 3)
            rz = torch.sigmoid(xa[:, : 2 * H] + hw[:, : 2 * H])
            r, z = rz[:, :H], rz[:, H:]
            n = torch.tanh(xa[:, 2 * H:] + r * hw[:, 2 * H:])
        h_new = n + z * (h - n)
        if self.zoneout_h > 0.0:
            h_new = h_new + self.zoneout_h * (h - h_new)
        return h_new

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """x (T, B, I), h and c (B, H) (c unused by the GRU) -> output (T, B, H), h_T, c_T."""
        xa = self.input_side(x)                                             # (T, B, G·H)
        outs: List[Tensor] = []
        for t in range(xa.size(0)):                                         # an ONNX Loop once scripted
            if self.lstm:
                h, c = self.lstm_step(xa[t], h, c)
            else:
                h = self.gru_step(xa[t], h)
            outs.append(h)
        return torch.stack(outs, 0), h, c


class VariantLayer(nn.Module):
    """A stacked, optionally bidirectional variant LSTM/GRU layer, eval equations only."""

    __constants__ = ["D"]

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.D = module.num_directions
        self.dirs = nn.ModuleList([_Direction(module, sfx) for sfx in _suffixes(module)])

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """x (T, B, I); h0, c0 (L·D, B, H) (c0 unused by the GRU) -> output (T, B, D·H), h_n, c_n."""
        layer_in = x
        cur = x
        hs: List[Tensor] = []
        cs: List[Tensor] = []
        for k, d in enumerate(self.dirs):
            if k % self.D == 0:                                             # forward direction: a new layer
                layer_in = cur
                cur, h, c = d(layer_in, h0[k], c0[k])
            else:                                                           # reverse: flip time, run, flip back
                out, h, c = d(torch.flip(layer_in, [0]), h0[k], c0[k])
                cur = torch.cat([cur, torch.flip(out, [0])], 2)
            hs.append(h)
            cs.append(c)
        return cur, torch.stack(hs, 0), torch.stack(cs, 0)


class _Front(nn.Module):
    """torch.nn's calling convention (batch_first, hx None / h0 / (h0, c0)) around the scripted core."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.lstm = module.mode == "lstm"
        self.batch_first = bool(module.batch_first)
        self.LD = module.num_layers * module.num_directions
        self.H = module.hidden_size
        with warnings.catch_warnings():
            # torch 2.13 marks torch.jit.script deprecated; it is still the only route by which the
            # (also TorchScript) ONNX exporter turns a Python loop into an ONNX Loop.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated",
                                    category=DeprecationWarning)
            self.core = torch.jit.script(VariantLayer(module).eval())

    def forward(self, input: Tensor, hx=None):
        x = input.transpose(0, 1) if self.batch_first else input            # (T, B, I)
        if hx is None:
            h0 = x.new_zeros(self.LD, x.shape[1], self.H)
            hx = (h0, h0) if self.lstm else h0
        h0, c0 = hx if self.lstm else (hx, hx)
        out, h, c = self.core(x, h0, c0)
        out = out.transpose(0, 1) if self.batch_first else out
        return (out, (h, c)) if self.lstm else (out, h)


class VariantCell(nn.Module):
    """One step of a variant LSTMCell/GRUCell (eval equations), torch.nn's cell convention."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.lstm = module.mode == "lstm"
        self.H = module.hidden_size
        self.step = _Direction(module, "")

    def forward(self, input: Tensor, hx=None):
        x = input.unsqueeze(0)                                              # (1, B, I)
        if hx is None:
            h = x.new_zeros(input.shape[0], self.H)
            hx = (h, h) if self.lstm else h
        h, c = hx if self.lstm else (hx, hx)
        _, h1, c1 = self.step(x, h, c)
        return (h1, c1) if self.lstm else h1


def equations_differ(module: nn.Module) -> bool:
    """True when the layer's eval-mode equations are not torch.nn's (the options that act only in
    training or at init: recurrent_dropout, weight_drop, forget_bias, init, leave them torch.nn's)."""
    o = getattr(module, "options", None)
    if o is None:
        return False
    # CellOptions knows which options need the variants scan; of those, recurrent dropout alone is
    # off in eval mode.
    return dataclasses.replace(o, recurrent_dropout=0.0).needs_variant_scan(module.mode)


def variant_twin(module: nn.Module) -> nn.Module:
    """The scripted inference twin of an rnnlab layer or cell with variant equations, in eval mode."""
    if module.mode not in ("lstm", "gru"):
        raise ConfigError(f"{type(module).__name__}: expected an LSTM or GRU for variant export, got {module.mode}")
    if isinstance(module, CellBase):
        # A cell has no time loop to keep dynamic: traced by the exporter as it stands.
        return VariantCell(module).eval()
    if not isinstance(module, RecurrentBase):
        raise ConfigError(f"module: expected an rnnlab LSTM/GRU layer or cell, got {type(module).__name__}")
    if module.proj_size > 0:
        raise ConfigError(f"proj_size: expected 0 for ONNX export, got {module.proj_size}")
    return _Front(module).eval()
