"""Streaming inference: feed one time step at a time, keep the state between calls.

For online use at batch 1 (a sensor reading per tick, live text a character at a time) the full
layer forward is the wrong tool: each call pays for sequence bookkeeping and a dozen dispatched
tensor ops that dwarf the arithmetic. ``Stream`` copies the weights once and runs each step as
one compiled call. For an LSTM without projection that is the C++ step of the fast kernels
(``fast_kernels.cpp``: weights packed for sequential reads, an AVX2/FMA path picked at run time,
and from H = 128 up to ``torch.get_num_threads()`` threads as at construction, each with at least
64 of the units and their weights); otherwise one numba loop per layer over pre-transposed NumPy
arrays (``_stream_kernels``), or NumPy without numba. A layer with cell options that change its
inference equations (``layer_norm``, ``peephole``, ``coupled_gates``, ``gru_reset="before"``,
``zoneout``: rnnlab's options torch.nn lacks) steps a private eval-mode copy of the layer itself, one
length-1 forward per step with the carried state (backend "module"; slower, but the same cell
code). All give the same numbers as the full-sequence forward in ``eval()`` up to float rounding;
``Stream.backend`` says which runs.

    >>> import torch, rnnlab
    >>> lstm = rnnlab.LSTM(3, 8, num_layers=2).eval()
    >>> x = torch.randn(5, 3)                       # (T, I): one sequence
    >>> stream = Stream(lstm)
    >>> outs = torch.stack([stream.step(x_t) for x_t in x])
    >>> full, _ = lstm(x)
    >>> bool(torch.allclose(outs, full, atol=1e-6))
    True
    >>> stream.reset()                              # start a new sequence

Works with rnnlab's RNN/LSTM/GRU layers and torch.nn's (same parameter names), unidirectional
only (a reversed direction needs the future). Dropout between layers, recurrent dropout and weight
drop are inference no-ops here, and zoneout uses its expectation, as in ``eval()``, whatever the
module's mode. If the module's weights change (training goes on), call :meth:`Stream.refresh`.

``Stream(layer, int8=True)`` runs the C++ step with dynamic int8 quantisation (float32 RNN, LSTM
and GRU layers without projection): the weight matrices are stored as int8 with one scale per output row
(:func:`quantize_rows`), each step quantises each layer's input and previous state to int8 with
one scale each, and the products are exact integer sums rescaled per row. A step reads a quarter
of the weight bytes, and the outputs differ from the float step by the rounding of weights and
activations (``benchmarks/bench_int8.py`` measures what that costs in perplexity and accuracy).
It runs torch.nn's equations only: a layer with cell options that change them is a ConfigError
naming the options.

    >>> q8 = Stream(rnnlab.GRU(3, 8).eval(), int8=True)
    >>> q8.backend, q8.step(torch.randn(3)).shape
    ('kernels int8', torch.Size([8]))
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.engine import fast, plan
from rnnlab.errors import ConfigError, ShapeError, StateError
from rnnlab.nn import _stream_kernels as K

_MODES = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
INT8_MAX = 127          # symmetric int8: [-127, 127], so that negating a value never overflows


def quantize_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row (per output channel) int8 quantisation of a weight matrix (G, K).

    Returns ``(q, scale)``: q int8 (G, K) = round(w / scale) in [-127, 127] (ties to even) and
    scale float32 (G,) = max |w_row| / 127, so that q · scale[:, None] approximates w within
    scale / 2 per entry. An all-zero row gets scale 0 and zeros.
    """
    w = w.detach().to("cpu", torch.float32)
    scale = w.abs().amax(dim=1) / INT8_MAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / safe[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def _unit_major(v: Tensor, H: int) -> Tensor:
    """Rows of a gate-major weight or bias (G·H, ...) reordered unit-major (row G·j + k = gate k of
    unit j), the order the C++ steps read, so that each thread's units own a contiguous block."""
    return v.reshape(v.shape[0] // H, H, *v.shape[1:]).transpose(0, 1).reshape(v.shape).contiguous()


def _equation_options(module: nn.Module) -> dict:
    """The module's cell options (rnnlab.nn.options) that change its equations at inference, which
    the weight-copying steps do not implement, as {name: value}; {} for torch.nn's equations."""
    options = getattr(module, "options", None)
    if options is None or options.is_default():
        return {}
    return options.equation_options(inference=True)     # a Stream runs as in eval()


def _mode_of(module: nn.Module) -> str:
    mode = getattr(module, "mode", None)
    if isinstance(mode, str) and mode.upper() in _MODES and hasattr(module, "num_layers"):   # a layer, not a cell
        return _MODES[mode.upper()]
    raise ConfigError(f"module: expected an rnnlab or torch.nn RNN/LSTM/GRU layer, got {type(module).__name__}")


class Stream:
    """Stateful step-by-step runner of a recurrent layer stack at batch 1.

    ``step(x_t)`` takes x_t of shape (I,) or (1, I) (a Tensor or NumPy array) and returns the top
    layer's output h_t, shape (P,), as a Tensor (or an ndarray if given one). ``state`` gives
    (h (L, P), c (L, H)) for the LSTM, h (L, P) otherwise, as torch.nn's unbatched hidden state.
    """

    def __init__(self, module: nn.Module, use_numba: bool | None = None, use_kernels: bool | None = None,
                 int8: bool = False) -> None:
        self.mode = _mode_of(module)
        self.int8 = bool(int8)
        if getattr(module, "bidirectional", False):
            raise ConfigError("module: expected a unidirectional layer for streaming, got bidirectional=True")
        if getattr(module, "batch_first", False) is None:  # pragma: no cover - defensive
            raise ConfigError("module: batch_first must be a bool")
        self.module = module
        self.use_numba = K.HAVE_NUMBA if use_numba is None else (use_numba and K.HAVE_NUMBA)
        # None: the layer's own engine= (an rnnlab layer's), else the process-wide choice (rnnlab.set_engine)
        own = getattr(module, "engine", None)
        own = own if isinstance(own, str) else "auto"
        self._engine = own if use_kernels is None else "fast" if use_kernels else "reference"
        self._cpp = None
        self.refresh()
        self.reset()

    @property
    def backend(self) -> str:
        """Which step runs: "kernels" (C++, LSTM without projection), "kernels int8" (C++ with int8
        weights, ``int8=True``: any cell without projection), "numba", "numpy", or "module" (the
        layer's own forward one step at a time: cell options that change the equations)."""
        if self._layer is not None:
            return "module"
        if self._cpp is not None:
            return "kernels int8" if self.int8 else "kernels"
        return "numba" if self.use_numba else "numpy"

    def plan(self):
        """The path of the step, as :func:`rnnlab.engine.plan` decides it (backend "module": the
        layer's own plan for a batch-1, one-step inference forward)."""
        if self._layer is not None:
            return self._layer.plan(1, 1, inference=True)
        return plan(self.mode, 1, self.hidden_size, proj_size=self.proj_size, engine=self._engine,
                    stream=True, numba=self.use_numba, int8=self.int8)

    # ------------------------------------------------------------------------ weights
    def refresh(self) -> None:
        """Copy the module's current weights (call after they change)."""
        m = self.module
        self.num_layers = m.num_layers
        self.hidden_size = m.hidden_size
        self.proj_size = getattr(m, "proj_size", 0)
        self.input_size = m.input_size
        self._x_shape = (m.input_size,)
        first = getattr(m, "weight_ih_l0")
        self.dtype = np.float64 if first.dtype == torch.float64 else np.float32
        dt = self.dtype
        self._torch_dtype = torch.float64 if dt == np.float64 else torch.float32
        self._options = _equation_options(m)
        self._layer = None
        if self._options:
            self._refresh_module()
            return

        def arr(t: Tensor | None, shape) -> np.ndarray:
            if t is None:
                return np.zeros(shape, dtype=dt)
            return np.ascontiguousarray(t.detach().to("cpu", torch.float64 if dt == np.float64 else torch.float32).numpy())

        self.layers = []
        for k in range(self.num_layers):
            w_ih = getattr(m, f"weight_ih_l{k}")
            w_hh = getattr(m, f"weight_hh_l{k}")
            G = w_ih.shape[0]
            b_ih = arr(getattr(m, f"bias_ih_l{k}", None), (G,))
            b_hh = arr(getattr(m, f"bias_hh_l{k}", None), (G,))
            w_t = np.ascontiguousarray(np.concatenate([arr(w_ih, None), arr(w_hh, None)], axis=1).T)  # (I+P, G)
            w_hr = getattr(m, f"weight_hr_l{k}", None) if self.proj_size else None
            w_hr_t = np.zeros((0, 0), dtype=dt) if w_hr is None else np.ascontiguousarray(arr(w_hr, None).T)  # (H, P)
            # LSTM and RNN fold both biases (as the engine does); the GRU keeps b_hh apart.
            b = b_ih + b_hh if self.mode != "gru" else b_ih
            self.layers.append((w_t, b, b_hh, w_hr_t))
        H = self.hidden_size
        G = self.layers[0][0].shape[1]
        self._a = np.empty(G, dtype=dt)
        self._hw = np.empty(G, dtype=dt)
        self._tmp = np.empty(H, dtype=dt)
        self._one = dt(1.0)
        self._cpp = self._build_kernel_step()
        self._keep_state()

    def _refresh_module(self) -> None:
        """Backend "module": a private copy of the layer on the CPU, in eval mode, in the stream's
        dtype, on the stream's engine choice; each step is its length-1 forward."""
        if self.int8:
            got = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
            raise ConfigError(f"int8=True: expected a layer with torch.nn's cell equations (the int8 step has no "
                              f"cell options), got {got}")
        layer = copy.deepcopy(self.module).to("cpu", self._torch_dtype).eval().requires_grad_(False)
        if hasattr(layer, "engine"):
            layer.engine = self._engine
        self._layer = layer
        self.layers = []
        self._cpp = None
        self._keep_state()

    def _keep_state(self) -> None:
        """After a refresh: keep the state unless the module changed dtype or shape (then zeros)."""
        h = getattr(self, "_h", None)
        if h is not None:
            P = self.proj_size or self.hidden_size
            if h.dtype != self.dtype or h.shape != (self.num_layers, P):
                self.reset()
            elif self._cpp is not None:
                self._bind_state()

    # A Stream copies and pickles without its C++ step (rebuilt from the module on load).
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_cpp"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_engine" not in state:            # pickled before the engine name was kept
            self._engine = "fast" if state.get("_want_kernels", True) else "reference"
        self.int8 = state.get("int8", False)
        self.__dict__.setdefault("_layer", None)          # pickled before the "module" backend
        self.__dict__.setdefault("_options", {})
        self._cpp = None if self._layer is not None else self._build_kernel_step()
        if self._cpp is not None:
            self._bind_state()

    def _build_kernel_step(self):
        """The C++ step of the fast kernels (float: LSTM without projection; ``int8``: any cell
        without projection, else a ConfigError), or None where it does not apply or the kernels
        are not built. Weights go in unit-major: column G·j + k = gate k of unit j, so that each
        thread's units own a contiguous block (see fast_kernels.cpp)."""
        plan = self.plan()
        if self.int8:
            if plan.loop != "stream C++ int8":
                raise ConfigError(f"int8=True: expected a layer the C++ int8 step runs (no projection, fast "
                                  f"engine), got {plan.reason}")
            if self._torch_dtype != torch.float32:
                raise ConfigError(f"int8=True: expected a float32 module, got {self._torch_dtype}")
            return self._build_int8_step()
        if plan.loop != "stream C++":
            return None
        m, H = self.module, self.hidden_size
        ws, bs = [], []
        for k in range(self.num_layers):
            w = torch.cat([getattr(m, f"weight_ih_l{k}"), getattr(m, f"weight_hh_l{k}")], 1).detach()
            w = w.to("cpu", self._torch_dtype)
            ws.append(_unit_major(w, H).t().contiguous())                                      # (I+H, 4H)
            bs.append(_unit_major(torch.from_numpy(self.layers[k][1]), H))                     # b_ih + b_hh
        state = torch.zeros(self.num_layers, H, dtype=self._torch_dtype)
        return fast._KERNELS.module.LSTMStreamer(ws, bs, state, state.clone(), torch.get_num_threads())

    def _build_int8_step(self):
        """The C++ int8 step: each layer's W_ih and W_hh quantised per row, columns unit-major."""
        m, H = self.module, self.hidden_size
        wx, wh, sx, sh, bs, b_hn = [], [], [], [], [], []
        for k in range(self.num_layers):
            for name, ws, ss in (("ih", wx, sx), ("hh", wh, sh)):
                q, scale = quantize_rows(getattr(m, f"weight_{name}_l{k}"))
                ws.append(_unit_major(q, H).t().contiguous())                # (K, G·H)
                ss.append(_unit_major(scale, H))
            _, b, b_hh, _ = self.layers[k]
            b = torch.from_numpy(b.copy())
            if self.mode == "gru":         # r and z take both biases; n adds b_hh inside r ⊙ (·)
                b[: 2 * H] += torch.from_numpy(b_hh[: 2 * H])
                b_hn.append(torch.from_numpy(b_hh[2 * H:].copy()))
            else:
                b_hn.append(torch.zeros(0))
            bs.append(_unit_major(b, H))
        state = torch.zeros(self.num_layers, H)
        return fast._KERNELS.module.StreamerInt8(self.mode, wx, wh, sx, sh, bs, b_hn, state, state.clone(),
                                                 torch.get_num_threads())

    def _bind_state(self) -> None:
        # shares memory; a GRU or RNN has no cell state: the step gets zeros it never reads
        c = self._c if self._c is not None else np.zeros_like(self._h)
        self._cpp.bind(torch.from_numpy(self._h), torch.from_numpy(c))

    # -------------------------------------------------------------------------- state
    def reset(self, state: Tensor | tuple[Tensor, Tensor] | None = None) -> None:
        """Start a new sequence from zeros, or from ``state`` (torch.nn's unbatched hx layout)."""
        L, H = self.num_layers, self.hidden_size
        P = self.proj_size or H
        dt = self.dtype
        self._h = np.zeros((L, P), dtype=dt)
        self._c = np.zeros((L, H), dtype=dt) if self.mode == "lstm" else None
        if self._cpp is not None:
            self._bind_state()
        # (weights..., h row, c row) per layer, views into the state, for the step loop
        self._rows = [(*w, self._h[k], None if self._c is None else self._c[k]) for k, w in enumerate(self.layers)]
        if state is None:
            return
        if self.mode == "lstm":
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise StateError(f"state: expected a tuple (h, c) for LSTM, got {type(state).__name__}")
            h, c = state
            self._set("c", c, (L, H))
        else:
            h = state
        self._set("h", h, (L, P))

    def _set(self, name: str, t, shape) -> None:
        a = np.asarray(t.detach().cpu() if isinstance(t, Tensor) else t, dtype=self.dtype)
        if a.shape != shape:
            raise ShapeError(f"state {name} shape (num_layers, hidden): expected {shape}, got {a.shape}")
        (self._h if name == "h" else self._c)[...] = a

    @property
    def state(self):
        h = torch.from_numpy(self._h.copy())
        return (h, torch.from_numpy(self._c.copy())) if self.mode == "lstm" else h

    # --------------------------------------------------------------------------- step
    def step(self, x_t):
        """Advance one step; returns the top layer's output h_t (P,)."""
        cpp = self._cpp
        if cpp is not None:
            if isinstance(x_t, Tensor) and x_t.shape == self._x_shape:   # the hot path
                try:
                    return cpp.step(x_t)                  # C++ checks dtype, layout and device
                except RuntimeError:
                    pass
            return self._kernel_step(x_t)
        if self._layer is not None:
            return self._module_step(x_t)
        as_tensor = isinstance(x_t, Tensor)
        x = (x_t.detach().numpy() if x_t.device.type == "cpu" else x_t.detach().cpu().numpy()) if as_tensor else np.asarray(x_t)
        if x.shape != self._x_shape:                       # the one check on the hot path
            x = self._one_row(x)
        if x.dtype != self.dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=self.dtype)
        if self.use_numba:
            # The kernels read the whole previous state before writing any of the new one, so
            # they update the state rows in place: no allocation per step.
            for w_t, b, b_hh, w_hr_t, h, c in self._rows:
                if c is not None:
                    K.lstm_step(x, h, c, w_t, b, w_hr_t, self._a, self._tmp, h, c, self._one)
                elif self.mode == "gru":
                    K.gru_step(x, h, w_t, b, b_hh, self._a, self._hw, h, self._one)
                else:
                    K.rnn_step(x, h, w_t, b, self.mode == "rnn_relu", self._a, h, self._one)
                x = h
        else:
            for k, (w_t, b, b_hh, w_hr_t) in enumerate(self.layers):
                c = None if self._c is None else self._c[k]
                h_new, c_new = K.numpy_step(self.mode, x, self._h[k], c, w_t, b, b_hh, w_hr_t)
                if c_new is not None:
                    self._c[k] = c_new
                self._h[k] = h_new
                x = self._h[k]
        return torch.from_numpy(x.copy()) if as_tensor else x.copy()

    def _module_step(self, x_t):
        """Backend "module": the layer's forward on a length-1 unbatched input from the carried
        state, which it writes back; returns h_t as a Tensor, or an ndarray if given one."""
        as_tensor = isinstance(x_t, Tensor)
        x = x_t.detach().cpu() if as_tensor else torch.from_numpy(np.asarray(x_t))
        x = self._one_row(x).to(self._torch_dtype).reshape(1, self.input_size)
        h = torch.from_numpy(self._h)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            if self._c is not None:
                out, (h_n, c_n) = self._layer(x, (h, torch.from_numpy(self._c)))
                self._c[...] = c_n.numpy()
            else:
                out, h_n = self._layer(x, h)
        self._h[...] = h_n.numpy()
        y = out[0]
        return y.clone() if as_tensor else y.numpy().copy()

    def _kernel_step(self, x_t):
        """The C++ step for inputs off the hot path: (1, I) rows, other dtypes, arrays."""
        if isinstance(x_t, Tensor):
            return self._cpp.step(self._as_input(x_t.detach().cpu()))
        self._cpp.step(self._as_input(torch.from_numpy(np.ascontiguousarray(x_t, dtype=self.dtype))))
        return self._h[-1].copy()

    def _one_row(self, x):
        """x_t (I,) as given, or the row of a (1, I) batch; a Tensor or an ndarray."""
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        if tuple(x.shape) != self._x_shape:
            raise ShapeError(f"x_t shape: expected ({self.input_size},) or (1, {self.input_size}), got {tuple(x.shape)}")
        return x

    def _as_input(self, x: Tensor) -> Tensor:
        return self._one_row(x).to(self._torch_dtype).contiguous()

    def run(self, xs) -> Tensor:
        """Step through xs (T, I) and return the outputs (T, P)."""
        return torch.stack([torch.as_tensor(self.step(x_t)) for x_t in xs])
