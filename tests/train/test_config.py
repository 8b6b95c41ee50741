"""TrainConfig validation, run-folder naming rules, the metrics log."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.train import TrainConfig, new_run_dir
from rnnlab.train.metrics import MetricsLog, read_records
from rnnlab.train.rundir import check_new_run_dir


def test_from_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig(max_steps=7, optimizer="sgd", momentum=0.9, schedule="step")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="train config keys.*'lr_rate'"):
        TrainConfig.from_dict({"lr_rate": 0.1})


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"schedule": "linear"}, "schedule"),
        ({"lr": 0.0}, "lr"),
        ({"clip": -1.0}, "clip"),
        ({"max_steps": -1}, "max_steps"),
        ({"max_steps": 0, "max_epochs": 0, "max_time": 0}, "limits"),
        ({"schedule": "cosine", "max_steps": 0, "max_epochs": 2}, "schedule"),
        ({"nonfinite": "ignore"}, "nonfinite"),
        ({"devices": 0}, "devices"),
        ({"momentum": 0.9, "optimizer": "adam"}, "momentum"),
        ({"lr": float("nan")}, "lr"),
    ],
)
def test_bad_values_name_the_field(changes, field):
    flag = "" if field == "limits" else f"--{field.replace('_', '-')} \\("
    with pytest.raises(ConfigError, match=f"{flag}train config {field}\\)?: expected"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), **changes})


def test_lr_is_one_rule_and_fields_name_their_flags():
    """--lr 0 and --lr -1 get the same message; TRAIN_FLAGS spells every flag that differs from the
    field's name, so an error names the flag a command-line user typed."""
    from rnnlab.cli.train import _COMMON
    from rnnlab.train.config import TRAIN_FLAGS

    for lr in (0.0, -1.0):
        with pytest.raises(ConfigError, match=r"--lr \(train config lr\): expected a finite number > 0, got"):
            TrainConfig(lr=lr)
    for f in dataclasses.fields(TrainConfig):
        common = _COMMON.get(f.name) or _COMMON.get(f"no_{f.name}")    # report: --no-report
        flag = common[2] if common else ""
        assert TRAIN_FLAGS.get(f.name, f"--{f.name.replace('_', '-')}") == flag.split("/")[0], f.name


def test_new_run_dir_suffixes_and_reuse_is_refused(tmp_path):
    base = tmp_path / "run"
    assert new_run_dir(base) == base
    base.mkdir()
    assert new_run_dir(base) == base            # an empty folder is free
    (base / "checkpoints").mkdir()
    assert new_run_dir(base) == base            # so is one whose creation was interrupted
    (base / "config.json").write_text("{}")
    assert new_run_dir(base) == tmp_path / "run-2"
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "x").write_text("")
    assert new_run_dir(base) == tmp_path / "run-3"
    # a config.json rnnlab did not write is a user's file: no --resume / --overwrite advice
    with pytest.raises(CheckpointError, match=r"run folder .*run: expected a new or empty folder, got a folder "
                                              r"with other files \(checkpoints, config.json\); pick another --out"):
        check_new_run_dir(base)
    (base / "config.json").write_text('{"task": "toy", "train_config": {}}')
    with pytest.raises(CheckpointError, match=r"run folder .*run: expected a new or empty folder.*--resume"):
        check_new_run_dir(base)


def test_metrics_log_truncates_to_a_record_count_and_drops_a_torn_line(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 5):
        log.log({"kind": "train", "step": step, "loss": float(step)})
    log.log({"kind": "eval", "step": 4, "valid_loss": 0.5})      # a new column: the CSV is rewritten
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')                      # a writer killed mid-line
    assert len(read_records(tmp_path / "metrics.jsonl")) == 5
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["kind", "step", "loss", "valid_loss"]
    log2 = MetricsLog(tmp_path, keep_records=3)                  # resume from a checkpoint taken at 3 records
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 4
    log2.log({"kind": "train", "step": 4, "loss": float("nan")})
    assert read_records(tmp_path / "metrics.jsonl")[-1]["loss"] == "nan"


def test_for_task_starts_from_the_tasks_training_defaults():
    from rnnlab.tasks.lm import LMTask

    cfg = TrainConfig.for_task(LMTask, max_steps=5)
    assert (cfg.optimizer, cfg.lr, cfg.clip, cfg.max_steps) == ("sgd", 1.0, 1.0, 5)
    assert TrainConfig.for_task(object()) == TrainConfig()
