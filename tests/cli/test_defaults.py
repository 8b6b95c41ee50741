"""Every ``rnnlab train TASK`` flag's default is the task config's own default, so the command
line and the Python API (``LMConfig()``, ``ProbeConfig()``, ...) train the same model.

The flags are read from the click command typer builds; each is matched to its config field (by
name, or through the table below where the names differ) and compared with the dataclass
default. A flag that is no config field must be listed in ``NOT_FIELDS`` with the reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import pytest
import typer

from rnnlab.cli.main import app
from rnnlab.cli.train import _COMMON
from rnnlab.data.audio_features import FeatureConfig
from rnnlab.tasks.classify import ClassifyConfig
from rnnlab.tasks.forecast import ForecastConfig
from rnnlab.tasks.lm import LMConfig
from rnnlab.tasks.probe import ProbeConfig
from rnnlab.tasks.seq2seq import Seq2SeqConfig
from rnnlab.tasks.speech import SpeechConfig
from rnnlab.tasks.toy import ToyConfig

CONFIGS: dict[str, type] = {
    "toy": ToyConfig, "lm": LMConfig, "classify": ClassifyConfig, "forecast": ForecastConfig,
    "probe": ProbeConfig, "speech": SpeechConfig, "seq2seq": Seq2SeqConfig,
}
# flag parameter -> config key where the names differ; "!key": the flag is the key's negation
KEYS: dict[str, dict[str, str]] = {
    "classify": {"fmt": "format", "input_kind": "input", "data_seed": "seed", "no_scale": "!scale",
                 "cell_option": "cell_options", "no_baselines": "!baselines"},
    "forecast": {"csv": "data", "target": "targets", "fmt": "format", "data_seed": "seed",
                 "cell_option": "cell_options"},
    "lm": {"cell_option": "cell_options", "adaptive_softmax": "adaptive_cutoffs"},
    "probe": {"data_seed": "seed", "cell_option": "cell_options"},
    "seq2seq": {"fmt": "format", "embed": "embedding_size", "no_header": "!header", "tied": "tie_embeddings",
                "no_input_feeding": "!input_feeding", "data_seed": "seed", "cell_option": "cell_options"},
    "speech": {"feature_kind": "features.kind", "n_mels": "features.n_mels", "n_mfcc": "features.n_mfcc",
               "deltas": "features.deltas", "normalize": "features.normalize", "data_seed": "seed",
               "cell_option": "cell_options"},
    "toy": {},
}
# how a flag's value becomes the config's (the command does the same)
CONVERT: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("lm", "split"): lambda v: tuple(float(x) for x in v.split(",")),
    ("lm", "adaptive_softmax"): lambda v: [int(x) for x in v.split(",")] if v.strip() else [],
    ("classify", "size"): lambda v: list(v) if any(v) else [],
    ("forecast", "target"): lambda v: list(v or []),
}
NOT_FIELDS: dict[str, set[str]] = {
    # --json: how the result is printed, not part of the model
    "classify": {"as_json"},
    "forecast": {"as_json"},
    "lm": {"as_json"},
    "probe": {"as_json"},
    "seq2seq": {"as_json"},
    "speech": {"as_json"},
    "toy": {"as_json"},
}


def _train_commands() -> dict[str, Any]:
    group = typer.main.get_command(app).commands["train"]
    return dict(group.commands)


def _default(config: type, key: str) -> Any:
    """The config's default for ``key`` (``features.n_mels``: a field of a nested config dict)."""
    outer, _, inner = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(config)}
    assert outer in fields, f"{config.__name__} has no field {outer!r}"
    f = fields[outer]
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if inner:      # speech's features: the config's dict over FeatureConfig's defaults
        return {**dataclasses.asdict(FeatureConfig()), **value}[inner]
    return value


def _same(a: Any, b: Any) -> bool:
    empty = (None, "", [], {}, ())
    if a in empty and b in empty:     # "not given" spelled None by a flag, "" or [] by a config
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def test_every_task_has_a_config_here():
    assert set(_train_commands()) == set(CONFIGS)


@pytest.mark.parametrize("task", sorted(CONFIGS))
def test_train_flag_defaults_are_the_config_defaults(task):
    command = _train_commands()[task]
    config = CONFIGS[task]
    wrong = []
    checked = 0
    for p in command.params:
        if p.name in _COMMON or p.name == "rnnlab_ctx" or p.name in NOT_FIELDS.get(task, ()):
            continue     # the common flags default to "not given": TrainConfig and the task decide
        key = KEYS[task].get(p.name, p.name)
        negate = key.startswith("!")
        want = _default(config, key.lstrip("!"))
        got = CONVERT.get((task, p.name), lambda v: v)(p.default)
        if negate:
            got = not got
        if key == "cell_options":
            got = {}
        if not _same(got, want):
            wrong.append(f"{p.opts[0]} {got!r} (config {key.lstrip('!')} = {want!r})")
        checked += 1
    assert not wrong, f"rnnlab train {task}: flag defaults differ from {config.__name__}'s: " + "; ".join(wrong)
    assert checked >= 3


def test_the_model_size_flags_share_one_name():
    """--hidden-size and --num-layers on every train command (--hidden and --layers still work)."""
    for task, command in _train_commands().items():
        opts = {p.name: p.opts for p in command.params}
        assert "--hidden-size" in opts.get("hidden_size", ()), task
        if task != "toy":
            assert "--num-layers" in opts.get("num_layers", ()), task


def test_probe_command_runs_one_run_of_the_demo():
    """``rnnlab probe`` is one run of the demo: its model and training defaults are DemoConfig's."""
    from rnnlab.suites.demo import SUITES, DemoConfig

    command = typer.main.get_command(app).commands["probe"]
    defaults = {p.name: p.default for p in command.params}
    demo = DemoConfig()
    assert defaults["hidden_size"] == demo.hidden_size
    assert defaults["lr"] == demo.lr
    assert defaults["seed"] == demo.seed
    assert defaults["steps"] == SUITES["default"]["steps"]


def test_probe_command_and_run_probe_share_defaults():
    """``rnnlab probe`` and ``rnnlab.tasks.probe.run_probe`` train the same model by default."""
    import inspect

    from rnnlab.tasks.probe import RUN_MEMORY_BIAS, run_probe

    command = typer.main.get_command(app).commands["probe"]
    cli = {p.name: p.default for p in command.params}
    api = {k: v.default for k, v in inspect.signature(run_probe).parameters.items()}
    for key in ("steps", "hidden_size", "lr", "seed", "seconds"):
        assert cli[key] == api[key], key
    # the CLI's "not given" memory bias is run_probe's "auto": the demo's bias unless an option sets it
    assert cli["memory_bias"] is None and api["memory_bias"] == "auto" and RUN_MEMORY_BIAS == 4.0
    opts = {p.name: p.opts for p in command.params}
    assert opts["steps"][0] == "--max-steps" and opts["seconds"][0] == "--max-time"   # train's names


@pytest.mark.parametrize("task", ["classify", "forecast", "seq2seq", "speech", "probe"])
def test_errors_name_the_flag_that_sets_a_field(task):
    """A config error names the field's flag beside the field (``--embed (classify embed_dim)``):
    every flag so named is a flag of ``rnnlab train TASK`` and sets that field."""
    import importlib

    from rnnlab.errors import field_name

    flags = getattr(importlib.import_module(f"rnnlab.tasks.{task}"), f"{task.upper()}_FLAGS")
    command = _train_commands()[task]
    sets = {}    # flag -> the config field its parameter sets
    for p in command.params:
        if p.name in _COMMON or p.name == "rnnlab_ctx":
            continue
        for opt in p.opts:
            sets[opt] = KEYS[task].get(p.name, p.name).lstrip("!").split(".")[0]
    config = CONFIGS[task]
    named = 0
    for f in dataclasses.fields(config):
        text = field_name(task, f.name, config, flags)
        flag = text.split(" ")[0]
        if flag.startswith("--"):
            assert sets.get(flag) == f.name, f"{text}: {flag} is not the flag of {task} {f.name}"
            named += 1
        else:
            assert text == f"{task} {f.name}"
    assert named >= 8
    assert field_name(task, "train/valid/test", config, flags) == f"{task} train/valid/test"


def test_a_negative_data_seed_is_a_config_error_naming_the_flag(tmp_path, capsys):
    from rnnlab.cli.main import main

    assert main(["train", "seq2seq", "--dataset", "dates", "--data-seed", "-1", "--out", str(tmp_path / "r")]) == 1
    assert "rnnlab: error: --data-seed (seq2seq seed): expected an integer >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
