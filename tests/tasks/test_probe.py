"""The probe task: contract behaviour (determinism, sharding, a separate test set), config errors,
and a short run through the training core that must clearly beat chance."""

import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.tasks.probe import ProbeConfig, ProbeTask, run_probe
from rnnlab.train.task import Task, build_task


def test_is_a_registered_task_and_rebuilds_from_its_config():
    t = ProbeTask(ProbeConfig(probe="segments", length=20, cell="gru", hidden_size=8))
    assert isinstance(t, Task)
    again = build_task("probe", t.config_dict(), t.metadata())
    assert again.config_dict() == t.config_dict()


def test_train_batches_are_deterministic_and_shards_partition_the_batch():
    t = ProbeTask(ProbeConfig(probe="checksum", length=12, batch_size=8, steps_per_epoch=3))
    a, b = list(t.train_batches(0)), list(t.train_batches(0))
    assert len(a) == 3 and all(torch.equal(x.x, y.x) for x, y in zip(a, b))
    assert not torch.equal(a[0].x, a[1].x)                      # fresh data every step
    assert not torch.equal(a[0].x, list(t.train_batches(1))[0].x)  # and every epoch
    s0, s1 = list(t.train_batches(0, 0, 2)), list(t.train_batches(0, 1, 2))
    assert torch.equal(torch.cat([s0[0].x, s1[0].x], 1).sort(1).values, a[0].x.sort(1).values)
    test = t.test_batch()
    assert test.x.shape == (12, 1000)
    assert not any(torch.equal(test.x[:, :8], x.x) for x in a)


def test_model_outputs_per_probe():
    for probe, shape in [("checksum", (5, 2)), ("adding", (5,)), ("copy", (30, 5, 9))]:
        t = ProbeTask(ProbeConfig(probe=probe, length=10, cell="rnn", hidden_size=4))
        m = t.build_model()
        assert tuple(m(t.spec.generate(10, 5, 0).x).shape) == shape
        ev = t.evaluate(m)
        assert "loss" in ev and t.metric_name in ev


def test_memory_bias_sets_the_memory_gate_only():
    m = ProbeTask(ProbeConfig(cell="lstm", hidden_size=4, memory_bias=3.0)).build_model()
    b = m.rnn.bias_ih_l0 + m.rnn.bias_hh_l0
    assert torch.allclose(b[4:8], torch.full((4,), 3.0)) and torch.allclose(b[:4], torch.full((4,), -3.0))
    g = ProbeTask(ProbeConfig(cell="gru", hidden_size=4, memory_bias=3.0)).build_model()
    assert torch.allclose((g.rnn.bias_ih_l0 + g.rnn.bias_hh_l0)[4:8], torch.full((4,), 3.0))


@pytest.mark.parametrize("bad", [{"cell": "tcn"}, {"probe": "nope"}, {"length": 0}, {"params": {"x": 1}},
                                 {"hidden_size": "8"}, {"bogus": 1}, {"hidden": 8, "hidden_size": 8},
                                 {"memory_bias": float("nan")}, {"memory_bias": float("-inf")}])
def test_config_errors(bad):
    with pytest.raises(ConfigError):
        ProbeConfig.from_dict(bad)


def test_short_lstm_run_beats_chance_on_checksum(tmp_path):
    torch.set_num_threads(1)
    r = run_probe("checksum", "lstm", 10, steps=150, hidden_size=32, lr=1e-2, memory_bias=4.0,
                  out=str(tmp_path / "run"))
    assert r.steps == 150 and len(r.loss_curve) == 150
    assert r.chance == 0.5 and r.value >= 0.8, r.value
    assert (tmp_path / "run").is_dir()             # trained through the core's run folder
    assert r.params == sum(p.numel() for p in r.model.parameters())


def test_a_config_saved_with_the_older_names_loads():
    # Run folders written by rnnlab 0.1.0 name the stack's size hidden/layers.
    cfg = ProbeConfig.from_dict({"cell": "gru", "hidden": 6, "layers": 2})
    assert (cfg.hidden_size, cfg.num_layers) == (6, 2)
    rnn = ProbeTask(cfg).build_model().rnn
    assert (rnn.hidden_size, rnn.num_layers) == (6, 2)


def test_validation_and_test_sets_are_drawn_apart():
    """Training evaluates (and picks its best checkpoint) on a set of its own: the test set never
    chose anything. Both are fixed for a seed and of the same size."""
    task = ProbeTask(ProbeConfig(probe="checksum", cell="lstm", length=12, hidden_size=8, test_size=64, seed=3))
    valid, test = task.valid_batch(), task.test_batch()
    assert valid.x.shape == test.x.shape and not torch.equal(valid.x, test.x)
    again = ProbeTask(ProbeConfig(probe="checksum", cell="lstm", length=12, hidden_size=8, test_size=64, seed=3))
    assert torch.equal(again.valid_batch().x, valid.x) and torch.equal(again.test_batch().x, test.x)
    model = task.build_model().eval()
    with torch.no_grad():
        assert task.evaluate(model, "valid") != task.evaluate(model, "test")


def test_a_probe_is_timed_by_its_training_loop_not_its_setup(monkeypatch):
    """``seconds`` is the training loop's time (what --max-time bounds), not fit's whole call, so
    that the first run of a process, which pays the one-time setup (importing the training
    library), compares fairly with the next."""
    import rnnlab.tasks.probe as probe
    from rnnlab.train import fit

    import time

    results = []
    build = probe.ProbeTask.build_model

    def slow_build(self):                         # setup that a first run pays
        time.sleep(1.0)
        return build(self)

    monkeypatch.setattr(probe.ProbeTask, "build_model", slow_build)
    monkeypatch.setattr(probe, "fit", lambda *a: results.append(fit(*a)) or results[-1])
    t = time.monotonic()
    res = run_probe("checksum", "lstm", 5, steps=2, hidden_size=8)
    [result] = results
    assert res.seconds == result.train_seconds and 0 < res.seconds <= time.monotonic() - t - 1.0
    assert res.steps == 2
