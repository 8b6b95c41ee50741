"""torch.nn-compatible single-step cells: ``RNNCell``, ``LSTMCell``, ``GRUCell``.

Same constructor arguments, parameter names (``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh``), initialisation, inputs and outputs as torch.nn. A step is a scan of length one
through the engine, so the cells share the layers' equations and hand-written backward.

    input (B, I) or (I,)   hx (B, H) or (H,)   -> h' (and c' for the LSTM cell)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.cells import FAMILIES
from rnnlab.engine import get_engine
from rnnlab.engine.autodiff import torch_scan
from rnnlab.engine.scan import ScanTag, scan
from rnnlab.errors import ConfigError, DeviceError, DTypeError, ShapeError, StateError, with_torch
from rnnlab.nn import variants as _variants
from rnnlab.nn.layers import integer_arg, outside_autocast, quiet_under_trace
from rnnlab.nn.options import CellOptions, cell_kwargs


class CellBase(nn.Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Any = None, options: CellOptions | None = None) -> None:
        super().__init__()
        # Options torch.nn lacks (rnnlab.nn.options); the defaults are torch.nn's behaviour.
        self.options = (options or CellOptions()).validate(mode, bias)
        if self.options.recurrent_dropout or self.options.weight_drop:
            raise ConfigError("recurrent_dropout/weight_drop: expected 0 for a single-step cell (their masks are "
                              "drawn once per sequence: use the layer), got "
                              f"{self.options.recurrent_dropout}/{self.options.weight_drop}")
        # torch.nn's cells check nothing themselves: torch.empty refuses a non-integer size (TypeError)
        # or a negative one (RuntimeError) and sizes of 0 are accepted; so are they here.
        input_size, hidden_size = integer_arg("input_size", input_size), integer_arg("hidden_size", hidden_size)
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if v < 0:
                raise ShapeError(f"{name}: expected an int >= 0, got {v}")
        self.mode = mode
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        gate_size = self.options.num_blocks(mode, FAMILIES[mode].NUM_BLOCKS) * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(gate_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gate_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        _variants.add_parameters(self, factory)     # none unless an option needs them
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's default: every parameter ~ U(−1/√H, 1/√H)."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)
        if not self.options.is_default():
            _variants.init_parameters(self)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.mode == "rnn_relu":
            s += ", nonlinearity=relu"       # torch.nn.RNNCell's spelling
        for key, value in cell_kwargs(self.options).items():
            s += f", {key}={value!r}"
        return s

    def _prepare_input(self, input: Any) -> tuple[Tensor, bool]:
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise ShapeError(f"input: expected a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ShapeError(with_torch(
                f"input: expected a 2-D (batched) or 1-D (unbatched) tensor, got {input.dim()}-D with shape {tuple(input.shape)}",
                f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead"))
        if input.shape[-1] != self.input_size:
            raise ShapeError(with_torch(f"input.size(-1) (input_size): expected {self.input_size}, got {input.shape[-1]}",
                                        f"input has inconsistent input_size: got {input.shape[-1]} expected {self.input_size}"))
        unbatched = input.dim() == 1
        return (input.unsqueeze(0) if unbatched else input), unbatched

    def _check_weights_match(self, x: Tensor) -> None:
        """After the shapes (torch.nn's order): the input's dtype and device are the weights'."""
        w = self.weight_ih
        if x.dtype != w.dtype:
            raise DTypeError(with_torch(f"input dtype: expected {w.dtype} (the weights' dtype), got {x.dtype}",
                                        f"mat1 and mat2 must have the same dtype, but got {_scalar_name(x.dtype)} and "
                                        f"{_scalar_name(w.dtype)}"))
        if x.device != w.device:
            raise DeviceError(f"input device: expected {w.device} (the weights' device), got {x.device}")

    def _prepare_state(self, name: str, s: Any, x: Tensor, unbatched: bool, index: int = 0) -> Tensor:
        if s is None:
            return x.new_zeros(x.shape[0], self.hidden_size)
        if not isinstance(s, Tensor):
            raise StateError(f"{name}: expected a Tensor, got {type(s).__name__}")
        want = (self.hidden_size,) if unbatched else (x.shape[0], self.hidden_size)
        if tuple(s.shape) != want:
            cls = type(self).__name__
            if s.dim() not in (1, 2):
                which = f"hx[{index}]" if self.mode == "lstm" else "hidden"
                torch_msg = f"{cls}: Expected {which} to be 1D or 2D, got {s.dim()}D instead"
            elif s.shape[-1] != self.hidden_size:
                torch_msg = f"hidden{index} has inconsistent hidden_size: got {s.shape[-1]}, expected {self.hidden_size}"
            elif unbatched:              # a 2-D state for a 1-D input: torch.nn reads its rows as the size
                torch_msg = f"hidden{index} has inconsistent hidden_size: got {s.shape[0]}, expected {self.hidden_size}"
            elif s.dim() == 2 or index == 0:   # (a 1-D state for a 2-D input: torch.nn reads its size as the batch)
                torch_msg = f"Input batch size {x.shape[0]} doesn't match hidden{index} batch size {s.shape[0]}"
            else:                        # torch.nn.LSTMCell indexes the missing dimension of c
                torch_msg = "Dimension out of range (expected to be in range of [-1, 0], but got 1)"
            raise ShapeError(with_torch(f"{name} shape: expected {want}, got {tuple(s.shape)}", torch_msg))
        if s.dtype != x.dtype:
            raise DTypeError(f"{name} dtype: expected {x.dtype} (the input's dtype), got {s.dtype}")
        if s.device != x.device:
            raise DeviceError(f"{name} device: expected {x.device} (the input's device), got {s.device}")
        return s.unsqueeze(0) if unbatched else s

    def _step(self, x: Tensor, h: Tensor, c: Tensor | None):
        if not self.options.is_default():    # options torch.nn lacks: rnnlab.nn.variants
            _, h1, c1 = _variants.run_layer(self, 0, x.unsqueeze(0), h, c, self.weight_ih, self.weight_hh,
                                            self.bias_ih, self.bias_hh, None, None, ScanTag())
            return h1, c1
        # torch.jit.trace records registered operators, not Python autograd functions: the fast
        # engine takes rnnlab's operators under tracing (and is the reference where none is built).
        run = get_engine("fast") if torch.jit.is_tracing() else scan
        if run is scan and torch.is_grad_enabled() and not any(t is not None and t.requires_grad for t in (x, h, c)):
            # Only the weights want a gradient: in plain ops autograd keeps the input and state for it,
            # not the weights, as torch.nn's cells (a weight updated in place before backward is no error).
            run = torch_scan
        out, h1, c1 = run(self.mode, x.unsqueeze(0), h, c, self.weight_ih, self.weight_hh,
                          self.bias_ih, self.bias_hh)
        return h1, c1


def _scalar_name(dtype: torch.dtype) -> str:
    """A dtype as torch's C++ messages name it (Float, Double, Half, BFloat16)."""
    return _SCALAR_NAMES.get(dtype, str(dtype).removeprefix("torch."))


_SCALAR_NAMES = {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16"}


class RNNCell(CellBase):
    """One step of the Elman RNN, a drop-in replacement for ``torch.nn.RNNCell``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device: Any = None, dtype: Any = None, **options: Any) -> None:
        if nonlinearity not in ("tanh", "relu"):
            # torch.nn.RNNCell refuses it only in forward (RuntimeError); refused here at once
            raise ConfigError(with_torch(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}",
                                         f"Unknown nonlinearity: {nonlinearity}"))
        self.nonlinearity = nonlinearity
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, bias, device, dtype,
                         CellOptions.from_dict(options, type(self).__name__))

    @quiet_under_trace
    @outside_autocast       # torch.autocast: the step in the weights' dtype, outputs in autocast's
    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._prepare_input(input)
        h0 = self._prepare_state("hx", hx, x, unbatched)
        self._check_weights_match(x)
        h, _ = self._step(x, h0, None)
        return h.squeeze(0) if unbatched else h


class GRUCell(CellBase):
    """One step of the GRU, a drop-in replacement for ``torch.nn.GRUCell``.

    Extra keyword options (defaults = torch.nn): ``layer_norm``, ``gru_reset``, ``zoneout`` (per
    step), ``forget_bias``, ``init``; see :class:`rnnlab.nn.options.CellOptions`."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Any = None, **options: Any) -> None:
        super().__init__("gru", input_size, hidden_size, bias, device, dtype, CellOptions.from_dict(options, type(self).__name__))

    @quiet_under_trace
    @outside_autocast       # torch.autocast: the step in the weights' dtype, outputs in autocast's
    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._prepare_input(input)
        h0 = self._prepare_state("hx", hx, x, unbatched)
        self._check_weights_match(x)
        h, _ = self._step(x, h0, None)
        return h.squeeze(0) if unbatched else h


class LSTMCell(CellBase):
    """One step of the LSTM, a drop-in replacement for ``torch.nn.LSTMCell``; returns (h', c').

    Extra keyword options (defaults = torch.nn): ``layer_norm``, ``peephole``, ``coupled_gates``,
    ``zoneout``/``zoneout_cell`` (per step), ``forget_bias``, ``init``; see
    :class:`rnnlab.nn.options.CellOptions`."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Any = None, **options: Any) -> None:
        super().__init__("lstm", input_size, hidden_size, bias, device, dtype, CellOptions.from_dict(options, type(self).__name__))

    @quiet_under_trace
    @outside_autocast       # torch.autocast: the step in the weights' dtype, outputs in autocast's
    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        x, unbatched = self._prepare_input(input)
        if hx is None:
            h0 = c0 = None
        elif not isinstance(hx, (tuple, list)) or len(hx) != 2:
            got = f"a {type(hx).__name__}" + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else "")
            message = f"hx: expected a tuple (h_0, c_0) for LSTMCell, got {got}"
            raise StateError(with_torch(message, "lstm_cell expects two hidden states")
                             if isinstance(hx, (tuple, list)) else message)
        else:
            h0, c0 = hx
        h0 = self._prepare_state("h_0", h0, x, unbatched, 0)
        c0 = self._prepare_state("c_0", c0, x, unbatched, 1)
        self._check_weights_match(x)
        h, c = self._step(x, h0, c0)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)
