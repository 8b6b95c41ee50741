"""The loop: non-finite guard, schedules, early stopping, time budget, report, CLI."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

import typer

from rnnlab.cli import train as cli_train
from rnnlab.errors import CheckpointError, ConfigError, NonFiniteError
from rnnlab.tasks.toy import ToyConfig, ToyTask
from rnnlab.train import fit, list_checkpoints, load_checkpoint, resume
from rnnlab.train.checkpoint import nonfinite_entries
from train_workers import TASK, curve, toy_task, train_config


class NaNAt(ToyTask):
    """The toy task whose loss turns NaN at the given (1-based) steps."""

    def __init__(self, bad_steps, **kw):
        super().__init__(ToyConfig(**{**TASK, **kw}))
        self.bad_steps, self.calls = set(bad_steps), 0

    def training_step(self, model, batch, carry):
        self.calls += 1
        out = super().training_step(model, batch, carry)
        if self.calls in self.bad_steps:
            out.loss = out.loss * float("nan")
        return out


def test_nonfinite_stops_and_names_step_and_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError) as info:
        fit(NaNAt({8}), train_config(max_steps=20, checkpoint_every=3), out)
    msg = str(info.value)
    assert "step 8:" in msg and f"last good checkpoint: {out / 'checkpoints' / 'step-00000006'}" in msg
    for path in list_checkpoints(out / "checkpoints"):   # nothing non-finite was ever written
        ck = load_checkpoint(path, toy_task().build_model())
        assert nonfinite_entries(ck.state) == [] and ck.meta["step"] <= 6


def test_nonfinite_skip_drops_the_step_and_goes_on(tmp_path):
    task = NaNAt({3, 4})
    r = fit(task, train_config(max_steps=10, nonfinite="skip"), tmp_path / "run")
    assert r.step == 10 and r.skipped_steps == 2
    rows = [c for c in curve(tmp_path / "run") if c["kind"] == "train"]
    assert [c.get("skipped", 0) for c in rows][:5] == [0, 0, 1, 1, 0]
    assert all(torch.isfinite(p).all() for p in r.model.parameters())


class InfGradAt(ToyTask):
    """Finite loss, but an infinite gradient at the given step."""

    def __init__(self, bad_step):
        super().__init__(ToyConfig(**TASK))
        self.bad_step, self.calls = bad_step, 0

    def training_step(self, model, batch, carry):
        self.calls += 1
        out = super().training_step(model, batch, carry)
        if self.calls == self.bad_step:
            out.loss = out.loss + (model.head.bias * 0).sum()
            model.head.bias.register_hook(lambda g: g * float("inf"))   # the run stops at this step
        return out


def test_infinite_gradient_with_finite_loss_is_caught(tmp_path):
    with pytest.raises(NonFiniteError, match=r"step 4: expected a finite loss and gradient, got loss=[0-9.]+, grad norm=(inf|nan)"):
        fit(InfGradAt(4), train_config(max_steps=10), tmp_path / "run")


def test_epoch_records_average_the_epoch(tmp_path):
    fit(toy_task(), train_config(max_steps=10), tmp_path / "run")
    rows = curve(tmp_path / "run")
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [(e["step"], e["epoch"], e["train_steps"]) for e in epochs] == [(5, 0, 5), (10, 1, 5)]
    first = [r["loss"] for r in rows if r["kind"] == "train" and r["step"] <= 5]
    assert epochs[0]["train_loss"] == pytest.approx(sum(first) / 5)


class Flat(ToyTask):
    """Valid loss never improves after the first evaluation."""

    def evaluate(self, model, split="valid"):
        return {"loss": 1.0, "rmse": 1.0}


def test_plateau_divides_lr_and_early_stopping_stops(tmp_path):
    task = Flat(ToyConfig(**TASK))
    r = fit(task, train_config(max_steps=100, eval_every=2, schedule="plateau", plateau_factor=4.0,
                               lr=0.1, patience=3), tmp_path / "run")
    # evaluations at steps 2 (best), 4, 5 (epoch end), 6: three without improvement
    assert r.stop_reason == "early_stopping" and r.step == 6 and r.best_step == 2
    lrs = [c["lr"] for c in curve(tmp_path / "run") if c["kind"] == "train"]
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.025, 0.00625])


class Scored(ToyTask):
    """The toy task whose n-th evaluation (from 1) scores a valid loss of ``score(n)``."""

    score = staticmethod(float)

    def __init__(self):
        super().__init__(ToyConfig(**TASK))
        self.evals = 0

    def evaluate(self, model, split="valid"):
        self.evals += 1
        return {"loss": self.score(self.evals), "rmse": 1.0}


class Falling(Scored):
    """Valid loss that improves at every evaluation."""

    score = staticmethod(lambda n: 1.0 / n)


def test_a_budget_ending_between_evaluations_scores_the_last_step_for_best(tmp_path):
    # scheduled evaluations at steps 3, 5 (epoch end) and 6; the budget ends at 7
    r = fit(Falling(), train_config(max_steps=7, eval_every=3), tmp_path / "run")
    evals = [c["step"] for c in curve(tmp_path / "run") if c["kind"] == "eval"]
    assert evals == [3, 5, 6, 7] and r.best_step == 7 and r.metrics["loss"] == pytest.approx(1 / 4)
    latest = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1], toy_task().build_model())
    assert latest.meta["step"] == 7 and latest.meta["best_step"] == 7
    # a budget ending on a scheduled evaluation is not evaluated twice
    task = Falling()
    fit(task, train_config(max_steps=6, eval_every=3), tmp_path / "at6")
    assert task.evals == 3


def test_the_last_steps_evaluation_leaves_the_schedule_and_early_stopping_alone(tmp_path, monkeypatch):
    task = Flat(ToyConfig(**TASK))
    r = fit(task, train_config(max_steps=7, eval_every=3, schedule="plateau", plateau_factor=4.0, lr=0.1,
                               patience=10), tmp_path / "run")
    latest = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1], toy_task().build_model())
    # evaluations 3 (best), 5, 6 without improvement; the one at 7 counts for nothing
    assert r.best_step == 3 and latest.meta["loop"]["bad_evals"] == 2
    assert latest.state["scheduler"]["last_epoch"] == 3           # stepped by the three scheduled ones
    # early stopping's bar is the lowest scheduled evaluation, even when the last step set "best"
    fit(Falling(), train_config(max_steps=7, eval_every=3), tmp_path / "falling")
    loop = load_checkpoint(list_checkpoints(tmp_path / "falling" / "checkpoints")[-1], toy_task().build_model()).meta["loop"]
    assert (loop["best_step"], loop["best_loss"], loop["scheduled_best_loss"]) == (7, 1 / 4, 1 / 3)
    # NT-ASGD's trigger watches the scheduled evaluations only
    from rnnlab.train.ntasgd import NTASGD
    seen = []
    observe = NTASGD.observe
    monkeypatch.setattr(NTASGD, "observe", lambda self, loss, step=None: seen.append(step) or observe(self, loss, step))
    fit(Flat(ToyConfig(**TASK)), train_config(max_steps=7, eval_every=3, optimizer="ntasgd", lr=0.1), tmp_path / "nt")
    assert seen == [3, 5, 6]


class SignalAt(Falling):
    """Falling, with a SIGTERM to this process during the given (1-based) training step."""

    def __init__(self, step):
        super().__init__()
        self.at, self.calls = step, 0

    def training_step(self, model, batch, carry):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().training_step(model, batch, carry)


def test_a_run_signalled_at_its_last_step_is_evaluated_there_when_resumed(tmp_path):
    out = tmp_path / "run"
    r = fit(SignalAt(7), train_config(max_steps=7, eval_every=3), out)
    assert r.stop_reason == "SIGTERM" and r.step == 7 and r.best_step == 6        # no evaluation on a signal
    again = Falling()
    again.evals = 10                       # its next evaluation scores 1/11, below step 6's 1/3
    r = fit(again, train_config(max_steps=7, eval_every=3), out, resume=True)
    assert r.step == 7 and r.best_step == 7 and again.evals == 11
    assert [c["step"] for c in curve(out) if c["kind"] == "eval"] == [3, 5, 6, 7]


def test_a_finished_run_is_not_evaluated_again_and_keeps_its_last_evaluation_when_continued(tmp_path):
    out = tmp_path / "run"
    fit(Flat(ToyConfig(**TASK)), train_config(max_steps=7, eval_every=3), out)      # 7 does not move best (3)
    task = Falling()
    fit(task, train_config(max_steps=7, eval_every=3), out, resume=True)             # nothing left to do
    assert task.evals == 0
    fit(Flat(ToyConfig(**TASK)), train_config(max_steps=9, eval_every=3), out, resume=True)
    assert [c["step"] for c in curve(out) if c["kind"] == "eval"] == [3, 5, 6, 7, 9]


class Rising(Scored):
    """Valid loss that only gets worse: the first evaluation is the lowest (score(n) = n)."""


def test_select_last_keeps_the_newest_checkpoint_as_best_and_never_stops_early(tmp_path):
    best = fit(Rising(), train_config(max_steps=12, eval_every=2, patience=2), tmp_path / "best")
    assert best.stop_reason == "early_stopping" and best.best_step == 2
    r = fit(Rising(), train_config(max_steps=12, eval_every=2, patience=2, select="last"), tmp_path / "last")
    assert r.stop_reason == "max_steps" and r.step == 12 and r.best_step == 12
    assert r.best_loss == r.metrics["loss"]                      # the newest evaluation's, not the lowest
    kept = [load_checkpoint(p, toy_task().build_model()).meta["step"] for p in list_checkpoints(tmp_path / "last" / "checkpoints")]
    assert max(kept) == 12 and 2 not in kept                     # nothing held back for an early low


def test_select_flag_reaches_the_run_and_best_is_the_last_checkpoint(tmp_path):
    from rnnlab.cli.main import main
    from rnnlab.train.rundir import resolve_checkpoint
    out = tmp_path / "run"
    assert main(["train", "probe", "--probe", "checksum", "--length", "6", "--max-steps", "6", "--eval-every", "2",
                 "--patience", "1", "--select", "last", "--out", str(out), "--quiet", "--no-report"]) == 0
    assert json.loads((out / "config.json").read_text())["train_config"]["select"] == "last"
    assert resolve_checkpoint(out, "best").name == "step-00000006"


def test_select_is_checked():
    with pytest.raises(ConfigError, match="select"):
        train_config(select="lowest")


def test_step_and_cosine_schedules(tmp_path):
    fit(toy_task(), train_config(max_steps=6, schedule="step", step_size=2, gamma=0.5, lr=0.1), tmp_path / "s")
    assert [c["lr"] for c in curve(tmp_path / "s") if c["kind"] == "train"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    fit(toy_task(), train_config(max_steps=5, schedule="cosine", warmup_steps=1, lr=0.1), tmp_path / "c")
    lrs = [c["lr"] for c in curve(tmp_path / "c") if c["kind"] == "train"]
    want = [0.1] + [0.1 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert lrs == pytest.approx(want)


def test_time_budget_and_epoch_limit(tmp_path):
    r = fit(toy_task(), train_config(max_steps=0, max_time=0.3, checkpoint_every=0), tmp_path / "t")
    assert r.stop_reason == "max_time" and r.step >= 1 and r.last_checkpoint.name == f"step-{r.step:08d}"
    r = fit(toy_task(), train_config(max_steps=0, max_epochs=2), tmp_path / "e")
    assert r.stop_reason == "max_epochs" and r.step == 10 and r.epoch == 2


def test_resume_refuses_a_changed_trajectory_but_accepts_new_limits(tmp_path):
    out = tmp_path / "run"
    fit(toy_task(), train_config(max_steps=4), out)
    with pytest.raises(ConfigError, match=r"train config expected the run's values for \['lr'\]"):
        fit(toy_task(), train_config(max_steps=8, lr=0.5), out, resume=True)
    with pytest.raises(ConfigError, match="task config expected"):
        fit(toy_task(hidden_size=5), train_config(max_steps=8), out, resume=True)
    r = resume(out, max_steps=6)
    assert r.step == 6 and r.resumed_from.name == "step-00000004"


def cli(args: list[str]) -> None:
    """This area's commands on their own app (other areas' commands are not needed here)."""
    app, train_app = typer.Typer(), typer.Typer()
    app.add_typer(train_app, name="train")
    cli_train.register(app, train_app)
    app(args=args, standalone_mode=False)


def test_report_and_cli(tmp_path, capsys):
    out = tmp_path / "run"
    cli(["train", "toy", "--out", str(out), "--max-steps", "6", "--eval-every", "3", "--quiet", "--threads", "1"])
    assert capsys.readouterr().out == ""                          # quiet prints nothing
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "Toy: valid stream 0" in page and "Loss" in page
    assert (out / "plots" / "loss.png").stat().st_size > 0 and (out / "plots" / "rmse.png").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == "toy" and cfg["train_config"]["max_steps"] == 6 and "rnnlab_version" in cfg

    cli(["evaluate", str(out), "--split", "test", "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"loss", "rmse"} and metrics["rmse"] == pytest.approx(math.sqrt(metrics["loss"]))

    with pytest.raises(CheckpointError, match="expected a new or empty folder"):
        cli(["train", "toy", "--out", str(out), "--max-steps", "2", "--quiet"])
    cli(["train", "toy", "--resume", str(out), "--max-steps", "8", "--quiet"])
    assert [c["step"] for c in curve(out) if c["kind"] == "train"] == list(range(1, 9))
    # a flag the task's evaluation does not take is a usage error (exit status 2), as a misspelt one is
    for flag, words in (("--bogus", "No such option: --bogus"), ("--debug", "it goes before the command")):
        with pytest.raises(Exception, match=words) as info:     # click's, from the click typer runs on
            cli(["evaluate", str(out), flag])
        assert type(info.value).__name__ == "NoSuchOption" and info.value.exit_code == 2


def test_tensorboard_logger_when_installed(tmp_path):
    pytest.importorskip("tensorboard")                 # the optional [tensorboard] extra
    fit(toy_task(), train_config(max_steps=4, eval_every=2), tmp_path / "run")
    events = list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_the_result_times_the_training_loop_not_the_setup(tmp_path):
    """``train_seconds`` (what --max-time bounds) leaves out what fit does before the first step:
    here a model that takes a second to build."""
    import time

    class SlowToBuild(ToyTask):
        def build_model(self):
            time.sleep(1.0)
            return super().build_model()

    t = time.monotonic()
    result = fit(SlowToBuild(ToyConfig(**TASK)), train_config(max_steps=3), tmp_path / "run")
    assert 0 < result.train_seconds <= time.monotonic() - t - 1.0


def test_a_checkpoint_folder_given_as_the_run_says_how_to_name_it(tmp_path, monkeypatch):
    from rnnlab.train.rundir import load_run, read_run_config

    out = tmp_path / "run"
    result = fit(toy_task(), train_config(max_steps=3), out)
    step = result.last_checkpoint
    want = (f"run folder {step}: expected a run folder, got a checkpoint of the run {out}; give the run folder "
            f"{out} (with --checkpoint {step.name} where the command takes one; --resume continues from the latest)")
    for read in (load_run, read_run_config):
        with pytest.raises(CheckpointError) as err:
            read(step)
        assert str(err.value) == want
    load_run(out, step.name)        # the way the message names works
    # named from inside the checkpoint folder, relative paths: found as well
    monkeypatch.chdir(step)
    with pytest.raises(CheckpointError, match=r"run folder \.: expected a run folder, got a checkpoint of the run "
                                              r"\.\./\.\.; give the run folder \.\./\.\. \(with --checkpoint"):
        load_run(".")
