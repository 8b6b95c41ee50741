"""torch.nn-compatible recurrent layers: ``RNN``, ``LSTM``, ``GRU``.

Same constructor arguments, parameter names, shapes, default initialisation, forward signature
and outputs as ``torch.nn``; a state dict loads both ways. The work is done by an engine of
:mod:`rnnlab.engine`, one call per layer and direction, chosen with ``engine=``: ``"auto"`` (the
default: what ``rnnlab.set_engine`` / ``RNNLAB_ENGINE`` chose, which unless told otherwise is the
C++ time loops of ``engine/fast.py`` where they are built and cover the case, else the
reference), ``"reference"`` (``engine/scan.py``: the cells' equations and hand-written BPTT in Python,
the readable path the tests compare every other engine with), ``"fast"`` (the C++ loops,
whatever ``set_engine`` says) or ``"checkpoint"`` (recomputes segments in backward: O(√T)
activation memory).

Shape legend: T = sequence length, B = batch, I = input_size, H = hidden_size,
P = proj_size if > 0 else H, D = 2 if bidirectional else 1, L = num_layers.

    input   (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched, or a PackedSequence
    h_0     (L·D, B, P)          c_0 (L·D, B, H)  (LSTM)
    output  (T, B, D·P)          h_n (L·D, B, P)  c_n (L·D, B, H)

Parameters of layer k (suffix ``_reverse`` for the reversed direction), G = gate blocks
(RNN 1; LSTM 4 = i|f|g|o; GRU 3 = r|z|n)::

    weight_ih_l{k}  (G·H, I if k == 0 else D·P)
    weight_hh_l{k}  (G·H, P)
    bias_ih_l{k}    (G·H,)       bias_hh_l{k} (G·H,)       (bias=True)
    weight_hr_l{k}  (P, H)                                 (LSTM with proj_size > 0)
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnlab.cells import FAMILIES
from rnnlab.engine import Plan, get_engine, get_engine_choice, plan
from rnnlab.engine.scan import ScanTag
from rnnlab.errors import ConfigError, ConfigTypeError, DeviceError, DTypeError, ShapeError, StateError, with_torch
from rnnlab.nn import variants as _variants
from rnnlab.nn.options import CellOptions, cell_kwargs

PACKED_UNDER_COMPILE = (
    "PackedSequence input under torch.compile or torch.export is not supported (its lengths decide the "
    "shapes, data the graph cannot hold): pass the padded batch (and, where the padding matters, run "
    "the layer eagerly or export it with `rnnlab export --onnx`)")

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def integer_arg(name: str, v: Any) -> int:
    """An integer of any integer type (NumPy's too, as torch.nn takes them where it only counts or
    allocates); bools refused."""
    if not isinstance(v, bool):
        try:
            return operator.index(v)
        except TypeError:
            pass
    raise ConfigTypeError(f"{name}: expected an int, got {type(v).__name__} {v!r}")


def _check_config(mode: str, input_size, hidden_size, num_layers, dropout, bias, batch_first,
                  proj_size) -> tuple[int, int]:
    """torch.nn.RNNBase's checks, in its order, accepting and refusing the same values; rnnlab's
    messages carry torch.nn's, which code written against torch.nn may match. Returns num_layers
    and proj_size as ints (torch.nn checks neither's type: a NumPy integer works)."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
        raise ConfigError(with_torch(f"dropout: expected a number in [0, 1], got {dropout!r}",
                                     "dropout should be a number in range [0, 1] representing the "
                                     "probability of an element being zeroed"))
    for name, v in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(v, bool):
            raise ConfigTypeError(with_torch(f"{name}: expected True or False, got {type(v).__name__} {v!r}",
                                             f"{name} should be of type bool, got: {type(v).__name__}"))
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigTypeError(with_torch(f"{name}: expected an int, got {type(v).__name__} {v!r}",
                                             f"{name} should be of type int, got: {type(v).__name__}"))
        if v <= 0:
            raise ConfigError(with_torch(f"{name}: expected an int > 0, got {v}", f"{name} must be greater than zero"))
    num_layers = integer_arg("num_layers", num_layers)
    if num_layers <= 0:
        raise ConfigError(with_torch(f"num_layers: expected an int > 0, got {num_layers}",
                                     "num_layers must be greater than zero"))
    proj_size = integer_arg("proj_size", proj_size)
    if proj_size < 0:
        raise ConfigError(with_torch(f"proj_size: expected an int >= 0, got {proj_size}",
                                     "proj_size should be a positive integer or zero to disable projections"))
    if proj_size >= hidden_size:
        raise ConfigError(with_torch(f"proj_size: expected a value < hidden_size ({hidden_size}), got {proj_size}",
                                     "proj_size has to be smaller than hidden_size"))
    return num_layers, proj_size


def _no_proj_size(family: str, proj_size) -> None:
    """torch.nn.RNN and GRU refuse the keyword itself, whatever its value."""
    if proj_size is not _ABSENT:
        raise ConfigError(with_torch(f"proj_size: expected no proj_size for {family} (projections exist only "
                                     f"for LSTM), got {proj_size!r}",
                                     "proj_size argument is only supported for LSTM, not RNN or GRU"))


_ABSENT = object()

# What autocast casts: floating tensors other than float64 (torch's is_eligible); a model in
# float64 is not autocast by torch.nn either.
_AUTOCAST_ELIGIBLE = (torch.float16, torch.bfloat16, torch.float32)


# Whether autocast is on for any device: torch's own one-call check (private: looked up once, with
# the public per-device check as the fallback), so the common case costs a fraction of a microsecond.
_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", None)
if not callable(_any_autocast):
    def _any_autocast() -> bool:
        return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")


def _autocast_device_type(input: Any) -> str | None:
    """The device type of ``input`` (a Tensor or a PackedSequence's data) if autocast is on for it."""
    if not _any_autocast():
        return None
    t = input.data if isinstance(input, PackedSequence) else input
    if not isinstance(t, Tensor):
        return None                     # refused with rnnlab's error by the forward itself
    device_type = t.device.type
    try:
        return device_type if torch.is_autocast_enabled(device_type) else None
    except RuntimeError:                # a device type autocast does not know
        return None


def _cast_floating(obj: Any, dtype: torch.dtype) -> Any:
    """``obj`` with each autocast-eligible floating tensor in it (a Tensor, a PackedSequence's data,
    tuples and lists of them: inputs, states, outputs) cast to ``dtype``; differentiable."""
    if isinstance(obj, Tensor):
        return obj.to(dtype) if obj.dtype in _AUTOCAST_ELIGIBLE and obj.dtype != dtype else obj
    if isinstance(obj, PackedSequence):
        return obj._replace(data=_cast_floating(obj.data, dtype))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast_floating(o, dtype) for o in obj)
    return obj


def quiet_under_trace(forward: Callable) -> Callable:
    """Wraps a layer's or cell's ``forward`` for ``torch.jit.trace``: the size checks read sizes as
    Python values, which the tracer warns may not generalise; they only refuse bad inputs, and
    the traced graph serves other lengths and batches (the engine takes its operators under
    tracing: tests/nn/test_jit_trace.py), so the warnings are silenced there."""

    @functools.wraps(forward)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not torch.jit.is_tracing():
            return forward(self, *args, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return forward(self, *args, **kwargs)

    return wrapper


def outside_autocast(forward: Callable) -> Callable:
    """Wraps a layer's or cell's ``forward`` for ``torch.autocast`` (mixed precision).

    With autocast on for the input's device type, the recurrence runs with autocast off in the
    weights' dtype (inputs and states cast to it: the engines' matrix products need one dtype),
    and the floating outputs and states come back in the autocast dtype (as torch.nn's do on CUDA,
    where its RNNs are autocast's lower-precision ops; on the CPU torch.nn returns that dtype for
    some cells only: docs/compatibility.md); states fed back in that dtype are accepted.
    Weights in float64, which autocast leaves alone, run and return float64 as in torch.nn.
    Without autocast this is the plain forward."""

    @functools.wraps(forward)
    def wrapper(self: nn.Module, input: Any, *args: Any, **kwargs: Any) -> Any:
        device_type = _autocast_device_type(input)
        if device_type is None:
            return forward(self, input, *args, **kwargs)
        w = self.weight_ih if hasattr(self, "weight_ih") else self.weight_ih_l0
        if w.dtype not in _AUTOCAST_ELIGIBLE:
            with torch.autocast(device_type, enabled=False):
                return forward(self, input, *args, **kwargs)
        amp_dtype = torch.get_autocast_dtype(device_type)
        input, args = _cast_floating(input, w.dtype), _cast_floating(args, w.dtype)
        kwargs = {k: _cast_floating(v, w.dtype) for k, v in kwargs.items()}
        with torch.autocast(device_type, enabled=False):
            result = forward(self, input, *args, **kwargs)
        return _cast_floating(result, amp_dtype)

    return wrapper


class RecurrentBase(nn.Module):
    """Stacked, optionally bidirectional layers of one cell family (like torch.nn.RNNBase)."""

    def __init__(
        self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
        batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
        proj_size: int = 0, device: Any = None, dtype: Any = None, engine: str = "auto",
        options: CellOptions | None = None,
    ) -> None:
        super().__init__()
        num_layers, proj_size = _check_config(mode, input_size, hidden_size, num_layers, dropout, bias,
                                              batch_first, proj_size)
        # Options torch.nn lacks (rnnlab.nn.options); the defaults are torch.nn's behaviour.
        self.options = (options or CellOptions()).validate(mode, bias, proj_size)
        get_engine(engine)  # fail early on an unknown name
        if engine == "auto":
            # read RNNLAB_ENGINE now, not in the first forward, which torch.compile may trace
            get_engine_choice()
        self.engine = engine
        if dropout > 0 and num_layers == 1:
            # torch.nn warns here too: dropout acts only between layers.
            warnings.warn(
                f"dropout={dropout} has no effect with num_layers=1: rnnlab (like torch.nn) applies "
                "dropout between recurrent layers only (torch.nn: dropout option adds dropout after all "
                "but last recurrent layer, so non-zero dropout expects num_layers greater than 1)",
                UserWarning, stacklevel=3,
            )
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        gate_size = self.options.num_blocks(mode, FAMILIES[mode].NUM_BLOCKS) * hidden_size
        real_hidden = proj_size if proj_size > 0 else hidden_size
        factory = {"device": device, "dtype": dtype}

        # Registered in torch.nn's order, so that the same seed gives the same initial weights.
        # torch.nn's bookkeeping, same names and meaning: the parameter names per layer-direction
        # (_all_weights) and in one list (_flat_weights_names); _flat_weights is a property.
        self._all_weights: list[list[str]] = []
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else real_hidden * num_directions
                suffix = "_reverse" if direction == 1 else ""
                params = [
                    (f"weight_ih_l{layer}{suffix}", (gate_size, layer_input)),
                    (f"weight_hh_l{layer}{suffix}", (gate_size, real_hidden)),
                ]
                if bias:
                    params += [(f"bias_ih_l{layer}{suffix}", (gate_size,)), (f"bias_hh_l{layer}{suffix}", (gate_size,))]
                if proj_size > 0:
                    params.append((f"weight_hr_l{layer}{suffix}", (proj_size, hidden_size)))
                for name, shape in params:
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                self._all_weights.append([n for n, _ in params])
                self._flat_weights_names.extend(n for n, _ in params)
        _variants.add_parameters(self, factory)     # none unless an option needs them
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's default: every parameter ~ U(−1/√H, 1/√H)."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)
        if not self.options.is_default():
            _variants.init_parameters(self)

    @property
    def _torch_name(self) -> str:
        return {"lstm": "LSTM", "gru": "GRU"}.get(self.mode, "RNN")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def real_hidden_size(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters of each layer-direction, in torch.nn's order (as torch.nn's attribute)."""
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    @property
    def _flat_weights(self) -> list[Tensor | None]:
        """torch.nn's flat list of the weights, read from the attributes at each access, so that it
        follows reparametrisations (``torch.nn.utils.weight_norm``), ``functional_call`` and ``.to()``."""
        return [getattr(self, n, None) for n in self._flat_weights_names]

    def flatten_parameters(self) -> None:
        """torch.nn's call to pack the weights for cuDNN. rnnlab's engines read the parameters as
        they are, so there is nothing to pack: a no-op, as torch.nn's is on the CPU."""

    # torch.nn.RNNBase's checking methods, for code that calls or overrides them.
    def check_input(self, input: Tensor, batch_sizes: Tensor | None) -> None:
        if input.dim() != (2 if batch_sizes is not None else 3):
            raise ShapeError(with_torch(
                f"input: expected {2 if batch_sizes is not None else 3}-D, got {input.dim()}-D",
                f"input must have {2 if batch_sizes is not None else 3} dimensions, got {input.dim()}"))
        x = input if batch_sizes is not None else (input.transpose(0, 1) if self.batch_first else input)
        self._check_input(x if x.dim() == 3 else x.unsqueeze(1))

    def get_expected_hidden_size(self, input: Tensor, batch_sizes: Tensor | None) -> tuple[int, int, int]:
        if batch_sizes is not None:
            batch = int(batch_sizes[0])
        else:
            batch = input.size(0) if self.batch_first else input.size(1)
        return (self.num_layers * self.num_directions, batch, self.real_hidden_size)

    def get_expected_cell_size(self, input: Tensor, batch_sizes: Tensor | None) -> tuple[int, int, int]:
        L, B, _ = self.get_expected_hidden_size(input, batch_sizes)
        return (L, B, self.hidden_size)

    def check_hidden_size(self, hx: Tensor, expected_hidden_size: tuple[int, int, int],
                          msg: str = "Expected hidden size {}, got {}") -> None:
        if hx.size() != expected_hidden_size:
            raise ShapeError(with_torch(f"hidden state shape: expected {tuple(expected_hidden_size)}, got {tuple(hx.shape)}",
                                        msg.format(expected_hidden_size, list(hx.size()))))

    def check_forward_args(self, input: Tensor, hidden: Any, batch_sizes: Tensor | None) -> None:
        self.check_input(input, batch_sizes)
        if self.mode == "lstm":
            self.check_hidden_size(hidden[0], self.get_expected_hidden_size(input, batch_sizes),
                                   "Expected hidden[0] size {}, got {}")
            self.check_hidden_size(hidden[1], self.get_expected_cell_size(input, batch_sizes),
                                   "Expected hidden[1] size {}, got {}")
        else:
            self.check_hidden_size(hidden, self.get_expected_hidden_size(input, batch_sizes))

    def permute_hidden(self, hx: Any, permutation: Tensor | None):
        if permutation is None:
            return hx
        if isinstance(hx, tuple):
            return tuple(h.index_select(1, permutation) for h in hx)
        return hx.index_select(1, permutation)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "_param_names" in state:                  # modules pickled before torch.nn's names
            self._all_weights = state["_param_names"]
            self._flat_weights_names = [n for names in self._all_weights for n in names]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        for key, value in cell_kwargs(self.options).items():   # (torch.nn's RNN shows no nonlinearity either)
            s += f", {key}={value!r}"
        return s

    def plan(self, batch_size: int, steps: int = 1, masked: bool = False, inference: bool = False) -> Plan:
        """The path each layer-direction's forward takes for a batch of ``batch_size`` sequences of
        ``steps`` steps (``masked``: padded, a PackedSequence of unequal lengths; ``inference``: no
        gradient to come), with this layer's engine, dtype, device and cell options:
        :func:`rnnlab.engine.plan`."""
        w = self.weight_ih_l0
        return plan(self.mode, batch_size, self.hidden_size, steps=steps, dtype=w.dtype, device=w.device.type,
                    masked=masked, proj_size=self.proj_size, engine=self.engine, inference=inference,
                    input_size=self.input_size, **_variants.plan_options(self))

    # ----------------------------------------------------------------------------- forward
    @quiet_under_trace
    @outside_autocast       # torch.autocast: the recurrence in the weights' dtype, outputs in autocast's
    def forward(self, input: Tensor | PackedSequence, hx: Any = None):
        is_lstm = self.mode == "lstm"
        packed = isinstance(input, PackedSequence)
        lengths = None
        sorted_indices = unsorted_indices = batch_sizes = None
        if packed:
            if torch.compiler.is_compiling():   # dynamo and export: the lengths decide the shapes
                raise ConfigError(PACKED_UNDER_COMPILE)
            batch_sizes, sorted_indices, unsorted_indices = input.batch_sizes, input.sorted_indices, input.unsorted_indices
            x, lengths = pad_packed_sequence(input, batch_first=False)   # (T, B, I), original order
            unbatched = False
        else:
            if not isinstance(input, Tensor):
                raise ShapeError(f"input: expected a Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ShapeError(with_torch(
                    f"input: expected a 3-D (batched) or 2-D (unbatched) tensor, got {input.dim()}-D with shape {tuple(input.shape)}",
                    f"{self._torch_name}: Expected input to be 2D or 3D, got {input.dim()}D"
                    f"{' tensor' if self.mode.startswith('rnn') else ''} instead"))   # (torch.nn's RNN says 'tensor')
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        self._check_input(x)
        T, B, _ = x.shape
        if T == 0:
            # torch.nn refuses this too ("Expected sequence length to be larger than 0"); said here
            # in rnnlab's terms instead of returning an empty output and an untouched state.
            raise ShapeError(with_torch(
                f"input sequence length (time dimension): expected > 0, got 0 for input of shape {tuple(input.shape)}",
                "Expected sequence length to be larger than 0 in RNN"))
        h0, c0 = self._initial_state(hx, x, B, unbatched)

        mask = reverse_index = None
        if lengths is not None:
            lengths = lengths.to(x.device)
            steps = torch.arange(T, device=x.device).unsqueeze(1)                  # (T, 1)
            valid = steps < lengths.unsqueeze(0)                                   # (T, B)
            if not bool(valid.all()):
                mask = valid.unsqueeze(-1)                                         # (T, B, 1)
            # Reverse each sequence within its own length: t -> len-1-t on valid steps.
            reverse_index = torch.where(valid, lengths.unsqueeze(0) - 1 - steps, steps)
        elif self.bidirectional:
            reverse_index = torch.arange(T - 1, -1, -1, device=x.device).unsqueeze(1).expand(T, B)

        run_scan = get_engine(self.engine)
        h_n, c_n = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                w = [getattr(self, n) for n in self._all_weights[k]]   # (all_weights would build every layer's)
                w_ih, w_hh = w[0], w[1]
                b_ih, b_hh = (w[2], w[3]) if self.bias else (None, None)
                w_hr = w[-1] if self.proj_size > 0 else None
                if direction == 0:
                    tag = ScanTag(layer, 0)
                    seq = layer_input
                else:
                    tag = ScanTag(layer, 1, reverse_index)
                    seq = layer_input.gather(0, reverse_index.unsqueeze(-1).expand_as(layer_input))
                if self.options.is_default():
                    out, h, c = run_scan(self.mode, seq, h0[k], c0[k] if is_lstm else None,
                                     w_ih, w_hh, b_ih, b_hh, w_hr, mask=mask, tag=tag)
                else:   # options torch.nn lacks: rnnlab.nn.variants
                    out, h, c = _variants.run_layer(self, k, seq, h0[k], c0[k] if is_lstm else None,
                                                    w_ih, w_hh, b_ih, b_hh, w_hr, mask, tag)
                if direction == 1:
                    out = out.gather(0, reverse_index.unsqueeze(-1).expand_as(out))
                outs.append(out)
                h_n.append(h)
                if is_lstm:
                    c_n.append(c)
            layer_input = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
            if layer < self.num_layers - 1 and self.training and self.dropout > 0:   # (a 1-layer call reads no float)
                if packed:   # torch.nn's mask: drawn over the packed rows, so one seed gives the same numbers
                    keep = F.dropout(layer_input.new_ones(int(batch_sizes.sum()), layer_input.shape[-1]),
                                     p=self.dropout, training=True)
                    layer_input = layer_input * pad_packed_sequence(
                        PackedSequence(keep, batch_sizes, sorted_indices, unsorted_indices))[0]
                else:
                    layer_input = F.dropout(layer_input, p=self.dropout, training=True)

        output = layer_input                                                       # (T, B, D·P)
        h_n = torch.stack(h_n, 0)
        hidden = (h_n, torch.stack(c_n, 0)) if is_lstm else h_n
        if packed:
            if sorted_indices is not None:
                output = output.index_select(1, sorted_indices)
                sorted_lengths = lengths.index_select(0, sorted_indices.to(lengths.device))
            else:
                sorted_lengths = lengths
            data = pack_padded_sequence(output, sorted_lengths.cpu(), enforce_sorted=True).data
            return PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices), hidden
        if unbatched:
            output = output.squeeze(1)
            hidden = (hidden[0].squeeze(1), hidden[1].squeeze(1)) if is_lstm else hidden.squeeze(1)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, hidden

    # -------------------------------------------------------------------------- validation
    def _check_input(self, x: Tensor) -> None:
        w = self.weight_ih_l0
        if x.dtype not in _SUPPORTED_DTYPES or x.dtype != w.dtype:
            torch_dtype = (f"RNN input dtype ({x.dtype}) does not match weight dtype ({w.dtype}). "
                           f"Convert input: input.to({w.dtype}), or convert model: model.to({x.dtype})")
            if x.dtype not in _SUPPORTED_DTYPES:
                raise DTypeError(with_torch(f"input dtype: expected a floating dtype like the weights ({w.dtype}), "
                                            f"got {x.dtype}", torch_dtype))
            raise DTypeError(with_torch(f"input dtype: expected {w.dtype} (the weights' dtype), got {x.dtype}", torch_dtype))
        if x.shape[-1] != self.input_size:
            raise ShapeError(with_torch(f"input.size(-1) (input_size): expected {self.input_size}, got {x.shape[-1]}",
                                        f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                                        f"got {x.shape[-1]}"))
        if x.device != w.device:
            raise DeviceError(f"input device: expected {w.device} (the weights' device), got {x.device}")

    def _initial_state(self, hx: Any, x: Tensor, B: int, unbatched: bool) -> tuple[Tensor, Tensor | None]:
        LD = self.num_layers * self.num_directions
        P, H = self.real_hidden_size, self.hidden_size
        is_lstm = self.mode == "lstm"
        if hx is None:
            h0 = x.new_zeros(LD, B, P)
            return h0, (x.new_zeros(LD, B, H) if is_lstm else None)
        if is_lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                got = f"a {type(hx).__name__}" + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else "")
                message = f"hx: expected a tuple (h_0, c_0) for LSTM, got {got}"
                raise StateError(with_torch(message, "lstm expects two hidden states")   # torch.nn's text for
                                 if isinstance(hx, (tuple, list)) and len(hx) > 2 else message)   # more than two only
            h0, c0 = hx
            self._check_state("h_0", h0, x, (LD, P), unbatched)
            self._check_state("c_0", c0, x, (LD, H), unbatched)
            if unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            return h0, c0
        if isinstance(hx, (tuple, list)):
            raise StateError(f"hx: expected a Tensor for {self.mode.split('_')[0].upper()}, got a {type(hx).__name__}")
        self._check_state("h_0", hx, x, (LD, P), unbatched)
        return (hx.unsqueeze(1) if unbatched else hx), None

    def _check_state(self, name: str, s: Any, x: Tensor, size: tuple[int, int], unbatched: bool) -> None:
        if not isinstance(s, Tensor):
            raise StateError(f"{name}: expected a Tensor, got {type(s).__name__}")
        want = (size[0], size[1]) if unbatched else (size[0], x.shape[1], size[1])
        if tuple(s.shape) != want:
            legend = "(num_layers*num_directions, hidden)" if unbatched else "(num_layers*num_directions, batch, hidden)"
            if s.dim() != len(want):
                which = "hx" if self.mode != "lstm" else "hx and cx"
                torch_msg = (f"For {'unbatched 2-D' if unbatched else 'batched 3-D'} input, {which} should also be "
                             f"{len(want)}-D but got {s.dim()}-D tensor")
            else:
                idx = "" if self.mode != "lstm" else ("[0]" if name == "h_0" else "[1]")
                full = (size[0], 1 if unbatched else x.shape[1], size[1])
                got = list(s.shape) if not unbatched else [s.shape[0], 1, s.shape[1]]
                torch_msg = f"Expected hidden{idx} size {full}, got {got}"
            raise ShapeError(with_torch(f"{name} shape {legend}: expected {want}, got {tuple(s.shape)}", torch_msg))
        if s.dtype != x.dtype:
            raise DTypeError(f"{name} dtype: expected {x.dtype} (the input's dtype), got {s.dtype}")
        if s.device != x.device:
            raise DeviceError(f"{name} device: expected {x.device} (the input's device), got {s.device}")


class RNN(RecurrentBase):
    r"""Elman RNN, a drop-in replacement for ``torch.nn.RNN``: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    (or relu). See :mod:`rnnlab.cells.rnn` for the equations and their backward.

    Extra keyword options (defaults = torch.nn): ``weight_drop``, ``init="orthogonal"|"identity"``
    (IRNN); see :class:`rnnlab.nn.options.CellOptions`."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device: Any = None, dtype: Any = None,
                 engine: str = "auto", proj_size: Any = _ABSENT, **options: Any) -> None:
        _no_proj_size("RNN", proj_size)
        if nonlinearity not in ("tanh", "relu"):
            raise ConfigError(with_torch(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}",
                                         f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."))
        self.nonlinearity = nonlinearity
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype, engine, CellOptions.from_dict(options, "RNNBase"))   # torch.nn names its base class


class LSTM(RecurrentBase):
    r"""LSTM, a drop-in replacement for ``torch.nn.LSTM`` (gate order i, f, g, o; optional proj_size).
    See :mod:`rnnlab.cells.lstm` for the equations and their backward.

    Extra keyword options (defaults = torch.nn; equations in :mod:`rnnlab.cells.lstm_variants`):
    ``layer_norm``, ``peephole``, ``coupled_gates``, ``recurrent_dropout``, ``zoneout`` (p or
    (p_h, p_c)), ``zoneout_cell``, ``weight_drop``, ``forget_bias``, ``init="orthogonal"|"chrono"``
    with ``t_max``; see :class:`rnnlab.nn.options.CellOptions`."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Any = None, dtype: Any = None,
                 engine: str = "auto", **options: Any) -> None:
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, engine, CellOptions.from_dict(options, "RNNBase"))


class GRU(RecurrentBase):
    r"""GRU, a drop-in replacement for ``torch.nn.GRU`` (gate order r, z, n; reset after the
    recurrent bias). See :mod:`rnnlab.cells.gru` for the equations and their backward.

    Extra keyword options (defaults = torch.nn; equations in :mod:`rnnlab.cells.gru_variants`):
    ``layer_norm``, ``gru_reset="after"|"before"``, ``recurrent_dropout``, ``zoneout``,
    ``weight_drop``, ``forget_bias`` (update gate), ``init="orthogonal"|"chrono"`` with ``t_max``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: Any = None, proj_size: Any = _ABSENT,
                 engine: str = "auto", **options: Any) -> None:
        _no_proj_size("GRU", proj_size)
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, engine, CellOptions.from_dict(options, "RNNBase"))
