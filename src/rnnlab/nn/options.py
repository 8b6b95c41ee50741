"""Cell options torch.nn lacks, as one typed config: ``CellOptions``.

Every field defaults to torch.nn's behaviour, so ``CellOptions()`` is a plain torch.nn layer.
The layers take the fields as keyword arguments (``rnnlab.LSTM(8, 16, layer_norm=True)``); task
code keeps a ``CellOptions`` in its config, saves ``to_dict()`` as JSON, and builds layers with
``rnnlab.tasks.recurrent.recurrent_layer``. The task commands take them as repeated
``--cell-option KEY=VALUE`` flags (:mod:`rnnlab.tasks.cell_options`)::

    >>> o = CellOptions.from_dict({"layer_norm": True, "zoneout": 0.1, "init": "chrono", "t_max": 100})
    >>> cell_kwargs(o)
    {'layer_norm': True, 'zoneout': 0.1, 'init': 'chrono', 't_max': 100}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from rnnlab.errors import ConfigError, ConfigTypeError, with_torch

INITS = ("torch", "orthogonal", "chrono", "identity")
GRU_RESETS = ("after", "before")


@dataclass(frozen=True)
class CellOptions:
    """Options of rnnlab's RNN/LSTM/GRU beyond torch.nn's; each default is torch.nn's behaviour."""

    layer_norm: bool = False           # LN of the input and recurrent pre-activations per gate block (+ LSTM cell)
    peephole: bool = False             # LSTM: gates see c_{t-1} (i, f) and c_t (o) through diagonal weights
    coupled_gates: bool = False        # LSTM: f = 1 − i (W has 3 blocks i|g|o)
    gru_reset: str = "after"           # "after": torch.nn/cuDNN; "before": Cho et al. / d2l
    recurrent_dropout: float = 0.0     # Gal & Ghahramani: one mask per sequence on h in the recurrence
    zoneout: float = 0.0               # Krueger et al.: P(unit keeps its previous h); c too unless zoneout_cell
    zoneout_cell: float | None = None  # LSTM: P(keep previous c); None = same as zoneout
    weight_drop: float = 0.0           # DropConnect on W_hh, one mask per forward (AWD-LSTM)
    forget_bias: float | None = None   # LSTM forget (GRU update) gate bias; None = torch.nn's uniform init
    init: str = "torch"                # torch | orthogonal (W_hh blocks) | chrono (needs t_max) | identity (IRNN)
    t_max: float | None = None         # chrono: the longest dependency the model should start able to hold

    def __post_init__(self) -> None:
        # is_default() then reads one bool, which torch.compile guards in C++ on every call, rather
        # than comparing each field (float fields would each add a Python guard)
        object.__setattr__(self, "_default", all(getattr(self, f.name) == f.default for f in fields(self)))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # unpickling skips __post_init__, and a model pickled by an earlier version has no _default
        self.__dict__.update(state)
        self.__post_init__()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: dict[str, Any], owner: str = "") -> "CellOptions":
        """Build from keyword arguments or saved JSON; unknown keys are a ConfigTypeError (a TypeError,
        as a misspelt keyword argument of torch.nn's constructors), quoting torch.nn's words where
        ``owner``, the class the keywords were given to, is named.
        ``zoneout=(p_h, p_c)`` is accepted as a shorthand for zoneout=p_h, zoneout_cell=p_c."""
        known = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in known]      # in the order given: torch.nn names the first
        if unknown:
            message = f"cell options: expected keys among {sorted(known)}, got unknown {unknown}"
            if owner:
                message = with_torch(message, f"{owner}.__init__() got an unexpected keyword argument {unknown[0]!r}")
            raise ConfigTypeError(message)
        d = dict(d)
        z = d.get("zoneout")
        if isinstance(z, (tuple, list)):
            if len(z) != 2:
                raise ConfigError(f"zoneout: expected p or (p_h, p_c), got {z!r}")
            if d.get("zoneout_cell") is not None:
                raise ConfigError("zoneout_cell: expected it unset when zoneout is a pair (p_h, p_c), got both")
            d["zoneout"], d["zoneout_cell"] = z
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # --------------------------------------------------------------------- queries
    @property
    def zoneout_c(self) -> float:
        return self.zoneout if self.zoneout_cell is None else self.zoneout_cell

    def needs_variant_scan(self, mode: str) -> bool:
        """True when the equations differ from torch.nn's (the layer then runs the variants scan).
        Initialisation and weight drop run on the layer's own engine."""
        return bool(self.layer_norm or self.peephole or self.coupled_gates or self.gru_reset != "after"
                    or self.recurrent_dropout or self.zoneout or (mode == "lstm" and self.zoneout_c))

    def equation_options(self, inference: bool = False) -> dict[str, Any]:
        """The non-default fields that make the equations differ from torch.nn's (those that take
        the variants scan), as {name: value}; with ``inference`` only those that still do in eval
        mode (recurrent dropout acts in training only). Initialisation and weight drop never do."""
        neutral = {"forget_bias", "init", "t_max", "weight_drop"} | ({"recurrent_dropout"} if inference else set())
        return {k: v for k, v in cell_kwargs(self).items() if k not in neutral}

    def num_blocks(self, mode: str, default: int) -> int:
        """Row blocks of W_ih / W_hh: 3 for the coupled LSTM (i|g|o), else the family's."""
        return 3 if (mode == "lstm" and self.coupled_gates) else default

    def is_default(self) -> bool:
        return self._default

    # ------------------------------------------------------------------ validation
    def validate(self, mode: str, bias: bool = True, proj_size: int = 0) -> "CellOptions":
        """Raise ConfigError for a value or a combination the cell family cannot take."""
        family = {"rnn_tanh": "RNN", "rnn_relu": "RNN", "lstm": "LSTM", "gru": "GRU"}[mode]
        for name in ("layer_norm", "peephole", "coupled_gates"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if self.layer_norm and family == "RNN":
            raise ConfigError("layer_norm: expected False for RNN (LSTM and GRU only), got True")
        for name in ("peephole", "coupled_gates"):
            if getattr(self, name) and family != "LSTM":
                raise ConfigError(f"{name}: expected False for {family} (LSTM only), got True")
        if self.gru_reset not in GRU_RESETS:
            raise ConfigError(f"gru_reset: expected one of {GRU_RESETS}, got {self.gru_reset!r}")
        if self.gru_reset != "after" and family != "GRU":
            raise ConfigError(f"gru_reset: expected 'after' for {family} (a GRU option), got {self.gru_reset!r}")
        probs = [("recurrent_dropout", self.recurrent_dropout), ("zoneout", self.zoneout),
                 ("weight_drop", self.weight_drop)]
        if self.zoneout_cell is not None:
            probs.append(("zoneout_cell", self.zoneout_cell))
        for name, p in probs:
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
                raise ConfigError(f"{name}: expected a probability in [0, 1), got {p!r}")
        if self.zoneout_cell is not None and family != "LSTM":
            raise ConfigError(f"zoneout_cell: expected None for {family} (no cell state), got {self.zoneout_cell!r}")
        if (self.recurrent_dropout or self.zoneout) and family == "RNN":
            raise ConfigError("recurrent_dropout/zoneout: expected 0 for RNN (LSTM and GRU only), "
                              f"got {self.recurrent_dropout}/{self.zoneout}")
        if proj_size and self.needs_variant_scan(mode):
            raise ConfigError(f"proj_size: expected 0 with layer_norm/peephole/coupled_gates/recurrent_dropout/"
                              f"zoneout, got {proj_size}")
        if self.init not in INITS:
            raise ConfigError(f"init: expected one of {INITS}, got {self.init!r}")
        if self.init == "identity" and family != "RNN":
            raise ConfigError(f"init: expected 'identity' only for RNN (IRNN), got it for {family}")
        if self.init == "chrono":
            if family == "RNN":
                raise ConfigError("init: expected 'chrono' only for LSTM or GRU (it sets gate biases), got RNN")
            if self.t_max is None or isinstance(self.t_max, bool) or not isinstance(self.t_max, (int, float)) \
                    or not 2 < self.t_max < math.inf:
                raise ConfigError(f"t_max: expected a finite number > 2 with init='chrono', got {self.t_max!r}")
            if self.forget_bias is not None:
                raise ConfigError(f"forget_bias: expected None with init='chrono' (chrono sets it), got {self.forget_bias!r}")
        elif self.t_max is not None:
            raise ConfigError(f"t_max: expected None unless init='chrono', got {self.t_max!r} with init={self.init!r}")
        if self.forget_bias is not None:
            if family == "RNN":
                raise ConfigError(f"forget_bias: expected None for RNN (no gates), got {self.forget_bias!r}")
            if isinstance(self.forget_bias, bool) or not isinstance(self.forget_bias, (int, float)) \
                    or not math.isfinite(self.forget_bias):
                raise ConfigError(f"forget_bias: expected a finite number, got {self.forget_bias!r}")
        if not bias and (self.forget_bias is not None or self.init in ("chrono", "identity")):
            raise ConfigError("bias: expected True with forget_bias/init='chrono'/'identity' (they set biases), got False")
        return self


def cell_kwargs(options: CellOptions) -> dict[str, Any]:
    """The non-default fields, as keyword arguments for rnnlab.RNN/LSTM/GRU."""
    default = CellOptions()
    return {f.name: getattr(options, f.name) for f in fields(options)
            if getattr(options, f.name) != getattr(default, f.name)}


def variant_bench_configs() -> dict[str, tuple[str, CellOptions]]:
    """Named (cell, options) pairs a speed benchmark times against torch.nn's cell of the same
    family: ``rnnlab.LSTM(I, H, **cell_kwargs(options))`` beside ``torch.nn.LSTM(I, H)``."""
    return {
        "lstm layer_norm": ("lstm", CellOptions(layer_norm=True)),
        "lstm peephole": ("lstm", CellOptions(peephole=True)),
        "lstm coupled_gates": ("lstm", CellOptions(coupled_gates=True)),
        "lstm recurrent_dropout=0.25": ("lstm", CellOptions(recurrent_dropout=0.25)),
        "lstm zoneout=0.1": ("lstm", CellOptions(zoneout=0.1)),
        "lstm weight_drop=0.5": ("lstm", CellOptions(weight_drop=0.5)),
        "gru layer_norm": ("gru", CellOptions(layer_norm=True)),
        "gru gru_reset=before": ("gru", CellOptions(gru_reset="before")),
    }
