"""Cell options (``rnnlab.nn.options.CellOptions``) as the tasks keep them: a plain dict.

Every task that builds recurrent layers (lm, classify, forecast, probe) has a config field
``cell_options: dict`` (empty = torch.nn's behaviour). It is checked here when the config is
built, long before a model exists, and stored in its canonical form (the non-default fields of
``CellOptions``, JSON-friendly), so the run's config.json rebuilds the same layers for
``--resume``, ``rnnlab evaluate``, ``generate``, ``predict`` and ``forecast``.

The command line gives them as a repeatable flag, ``--cell-option KEY=VALUE``; values are read
by the type of the key (bool: 1/0/true/false/yes/no/on/off; numbers: int when they look like one,
else float; "none" for the optional ones)::

    >>> parse_cell_option_flags(["layer_norm=true", "init=chrono", "t_max=100"])
    {'layer_norm': True, 'init': 'chrono', 't_max': 100}
    >>> check_cell_options({"forget_bias": 1}, "lstm")
    {'forget_bias': 1}
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from rnnlab.errors import ConfigError, expected
from rnnlab.nn.options import CellOptions, cell_kwargs

FLAG = "--cell-option"
MODES = {"rnn": "rnn_tanh", "lstm": "lstm", "gru": "gru"}   # task cell name -> layer mode
KEYS = tuple(f.name for f in fields(CellOptions))

_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def check_cell_options(options: Any, cell: str, bias: bool = True) -> dict[str, Any]:
    """Validate ``options`` for a layer of ``cell`` (rnn | lstm | gru); return the canonical dict.

    ConfigError names the flag and the offending key (unknown keys, bad values, options the cell
    family cannot take, e.g. layer_norm on a plain RNN)."""
    if not isinstance(options, dict):
        raise ConfigError(expected(f"cell_options ({FLAG})", "a dict of KEY: VALUE", type(options).__name__))
    if cell not in MODES:
        raise ConfigError(expected("cell", f"one of {tuple(MODES)}", repr(cell)))
    try:
        opts = CellOptions.from_dict(options).validate(MODES[cell], bias)
    except ConfigError as exc:
        raise ConfigError(f"{FLAG} (cell {cell}): {exc}") from None
    return cell_kwargs(opts)


def sets_memory_gate_bias(options: dict[str, Any]) -> bool:
    """True when the options set the LSTM forget / GRU update gate bias themselves (forget_bias,
    init=chrono) or leave no forget-gate rows (coupled_gates): a task's own memory-gate bias
    init (the probe's ``memory_bias``) would clash with them."""
    return "forget_bias" in options and options["forget_bias"] is not None \
        or options.get("init") == "chrono" or bool(options.get("coupled_gates"))


def parse_cell_option_flags(values: list[str] | None) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` from repeated ``--cell-option`` flags -> a dict (not yet checked
    against a cell: the task config does that)."""
    kinds = {f.name: str(f.type) for f in fields(CellOptions)}
    out: dict[str, Any] = {}
    for item in values or []:
        if "=" not in item:
            raise ConfigError(expected(FLAG, "KEY=VALUE, e.g. layer_norm=true", repr(item)))
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in kinds:
            raise ConfigError(expected(f"{FLAG} key", f"one of {list(KEYS)}", repr(key)))
        if key in out:
            raise ConfigError(expected(f"{FLAG} {key}", "given once", f"{out[key]!r} and {value!r}"))
        out[key] = _parse_value(key, value, kinds[key])
    return out


def _parse_value(key: str, value: str, kind: str) -> Any:
    if kind.startswith("bool"):
        if value.lower() not in _BOOL:
            raise ConfigError(expected(f"{FLAG} {key}", "true or false (1/0, yes/no, on/off)", repr(value)))
        return _BOOL[value.lower()]
    if kind.startswith("str"):
        return value
    if value.lower() == "none" and "None" in kind:
        return None
    for number in (int, float):
        try:
            return number(value)
        except ValueError:
            continue
    raise ConfigError(expected(f"{FLAG} {key}", "a number", repr(value)))
