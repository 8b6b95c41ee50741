"""Time-series classification: tiny training sets, long series, stratified folds, LSTM-FCN,
normalisation, ensembles, the 1-NN baselines and ``ucr:NAME`` data sets."""

from __future__ import annotations

import importlib.util
import json
import math
import warnings

import numpy as np
import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.data.ts_format import write_ts
from rnnlab.data.ucr import ucr_path
from rnnlab.errors import ConfigError, DataError, DataWarning
from rnnlab.tasks.classify import (
    ClassifyConfig,
    ClassifyTask,
    LSTMFCN,
    MemberEnsemble,
    _dtw_backend,
    amplitude_spread,
    baseline_table,
    batch_bounds,
    budget,
    downsample,
    format_baselines,
    nearest_neighbour,
    stratified_folds,
    znorm,
    znorm_with_scale,
)
from rnnlab.train import TrainConfig
from tests.conftest import fit_a_few_steps


def ts_file(path, n_per_class: int = 4, length: int = 12, dims: int = 1, classes: int = 2, seed: int = 0,
            lengths: list[int] | None = None) -> str:
    """Class c: a sine of frequency c + 1 plus noise; ``lengths`` gives per-series lengths."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    i = 0
    for c in range(classes):
        for _ in range(n_per_class):
            t = lengths[i % len(lengths)] if lengths else length
            x = np.sin(np.linspace(0, 2 * np.pi * (c + 1), t))[:, None] + 0.1 * rng.normal(size=(t, dims))
            seqs.append(x.astype(np.float64))
            labels.append(f"c{c}")
            i += 1
    write_ts(str(path), seqs, labels)
    return str(path)


def quick_fit(task, steps: int = 3, lr: float = 1e-2):
    return fit_a_few_steps(task, steps, lr)


def no_data_warnings():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error", DataWarning)
    return ctx


# ----------------------------------------------------------------------------- tiny training sets


def test_one_series_per_class_trains_without_a_split(tmp_path):
    """Too few series per class for any split: the budget is trained out, "valid" is the training file."""
    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts", n_per_class=1), hidden_size=4))
    assert task.plan == {"mode": "none"} and task.members == 1
    assert len(task.split("train").inputs) == len(task.split("valid").inputs) == 2
    m = task.evaluate(quick_fit(task), "valid")
    assert 0 <= m["acc"] <= 1 and math.isfinite(m["loss"])
    table = baseline_table(task, quick_fit(task), baselines=True)
    assert [r["name"] for r in table["rows"]] == ["model", "majority class"]   # a 1-NN would find each series itself


def test_three_series_per_class_get_three_folds(tmp_path):
    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts", n_per_class=3), hidden_size=4))
    assert task.plan == {"mode": "kfold", "folds": 3} and task.members == 3
    valid = task.split("valid")
    assert len(valid.inputs) == 6 and sorted(np.bincount(valid.folds).tolist()) == [2, 2, 2]
    m = task.evaluate(quick_fit(task), "valid")
    assert math.isfinite(m["loss"])
    # every series is scored; asking for more folds than the smallest class has is an error
    with pytest.raises(DataError, match="at most the smallest class's 3 examples"):
        ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts", n_per_class=3), folds=4))


def test_kfold_trains_the_budget_out_and_keeps_the_last_model(tmp_path):
    """k-fold's defaults select the last checkpoint (no early stopping); a holdout keeps the lowest
    validation loss; --select overrides either."""
    path = ts_file(tmp_path / "t.ts", n_per_class=5)
    kfold = TrainConfig.for_task(ClassifyTask(ClassifyConfig(train=path)))
    holdout = TrainConfig.for_task(ClassifyTask(ClassifyConfig(train=path, folds=1)))
    assert (kfold.select, holdout.select) == ("last", "best")
    assert TrainConfig.for_task(ClassifyTask(ClassifyConfig(train=path)), select="best").select == "best"


def test_holdout_above_the_kfold_threshold_and_on_request(tmp_path):
    path = ts_file(tmp_path / "t.ts", n_per_class=5)
    assert ClassifyTask(ClassifyConfig(train=path, folds=1)).plan == {"mode": "holdout"}
    with pytest.raises(ConfigError, match="folds"):
        ClassifyConfig(train=path, valid=path, folds=3)


def test_budget_follows_the_data_size():
    small, large = budget(50, 32), budget(100_000, 32)
    assert small["schedule"] == large["schedule"] == "cosine"
    assert small["max_steps"] * 32 / 50 > 100                 # hundreds of epochs for 50 series
    assert 3 <= large["max_steps"] * 32 / 100_000 < 4           # a few epochs for 100k
    assert 0 < small["warmup_steps"] < small["max_steps"] and small["patience"] >= 1


@pytest.mark.parametrize("n,size", [(36, 32), (67, 32), (64, 32), (5, 32), (200, 32), (1, 1), (0, 4)])
def test_batch_bounds_cover_every_example_once(n, size):
    for even in (False, True):
        bounds = batch_bounds(n, size, even)
        assert [i for s, e in bounds for i in range(s, e)] == list(range(n))
        sizes = [e - s for s, e in bounds]
        assert len(sizes) == -(-n // size) and all(0 < k <= size for k in sizes)
        if even:
            assert max(sizes, default=0) - min(sizes, default=0) <= 1
        else:
            assert sizes[:-1] == [size] * (len(sizes) - 1)


def test_numeric_training_batches_are_even_and_text_keeps_full_batches(tmp_path):
    """36 series by 32: 18 + 18 rather than 32 + 4 (a remainder of a few series is the noisiest
    step of every epoch for LSTM-FCN's batch norm); every series once per epoch."""
    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts", n_per_class=20), folds=1, valid_frac=0.1))
    n = len(task.split("train").inputs)
    assert n == 36 and [len(b["y"]) for b in task.train_batches(0)] == [18, 18]
    assert sorted(torch.cat([b["index"] for b in task.train_batches(0)]).tolist()) == list(range(n))
    text = tmp_path / "t.csv"
    text.write_text("text,label\n" + "".join(f"w{i} x,{i % 2}\n" for i in range(45)))
    task = ClassifyTask(ClassifyConfig(train=str(text), folds=1, valid_frac=0.2))
    assert [len(b["y"]) for b in task.train_batches(0)] == [32, 4]


def test_numeric_task_trains_with_its_budget(tmp_path):
    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts")))
    cfg = TrainConfig.for_task(task)
    assert cfg.max_steps == budget(8, 32)["max_steps"] and cfg.schedule == "cosine"


def test_max_epochs_alone_sets_the_step_budget(tmp_path):
    """--max-epochs without --max-steps: the budget covers exactly those epochs (8 series, batches
    of at most 8: one step an epoch), instead of the data-size budget ending the run elsewhere."""
    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts")))
    d = task.train_defaults_for_epochs(3)
    assert d["max_steps"] == 3 and d["max_epochs"] == 0 and d["schedule"] == "cosine"
    assert task.train_defaults["max_steps"] == budget(8, 32)["max_steps"]    # the defaults themselves unchanged
    # warm-up, evaluation pace and patience follow the new length: 2000 epochs stop early only
    # after a quarter of their evaluations without progress, not after the default budget's quarter
    long = task.train_defaults_for_epochs(2000)
    assert long["max_steps"] == 2000 and long["warmup_steps"] == 100 and long["eval_every"] == 50
    assert long["patience"] == (2000 // 50 + 2000) // 4 > task.train_defaults["patience"]


# ----------------------------------------------------------------------------- long series


def test_long_series_are_downsampled_with_a_warning(tmp_path):
    path = ts_file(tmp_path / "t.ts", length=50)
    with pytest.warns(DataWarning, match=r"up to 50 steps are longer than --max-len 20: every series is "
                                         r"downsampled by 3"):
        task = ClassifyTask(ClassifyConfig(train=path, max_len=20))
    assert task.length == 17 and all(len(s) == 17 for s in task.split("train").inputs)


def test_truncation_warns_and_counts(tmp_path):
    path = ts_file(tmp_path / "t.ts", length=30)
    task = ClassifyTask(ClassifyConfig(train=path, max_len=10, long_series="truncate"))
    with pytest.warns(DataWarning, match=r"8 of 8 sequences are longer than 10 steps and were cut"):
        inputs = task.split("train").inputs
    assert all(len(s) == 10 for s in inputs)


def test_test_series_longer_than_the_training_ones_warn(tmp_path):
    # the test file is read when the task is built (before any training), so the warning comes then
    with pytest.warns(DataWarning, match=r"b.ts: 8 of 8 sequences are longer than 12 steps .*\(the run's input "
                      r"length, its longest training series; --max-len 512\)"):
        task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "a.ts", length=12),
                                           test=ts_file(tmp_path / "b.ts", length=16)))
    assert all(len(s) == 12 for s in task.split("test").inputs)


def test_max_len_auto_keeps_twice_the_steps_for_lstm_fcn(tmp_path):
    """--max-len 0 (auto): LSTM-FCN keeps up to 512 steps (its LSTM reads the variables as steps),
    a recurrent classifier 256; a given --max-len applies to both."""
    path = ts_file(tmp_path / "t.ts", length=300)
    fcn = ClassifyTask(ClassifyConfig(train=path))
    assert fcn.config.resolved_max_len() == 512 and (fcn.factor, fcn.length) == (1, 300)
    assert fcn.config.max_len == 512     # the run's config records the limit that applied, not 0
    with pytest.warns(DataWarning, match="longer than --max-len 256: every series is downsampled by 2"):
        rnn = ClassifyTask(ClassifyConfig(train=path, arch="rnn"))
    assert (rnn.factor, rnn.length) == (2, 150)
    with pytest.warns(DataWarning, match="longer than --max-len 100: every series is downsampled by 3"):
        given = ClassifyTask(ClassifyConfig(train=path, max_len=100))
    assert (given.factor, given.length) == (3, 100)
    with pytest.raises(ConfigError, match="max_len"):
        ClassifyConfig(train=path, max_len=-1)
    text = tmp_path / "t.csv"
    text.write_text("text,label\n" + "".join(f"{'w ' * 300},{i % 2}\n" for i in range(4)))
    task = ClassifyTask(ClassifyConfig(train=str(text), folds=1, valid_frac=0.5))
    with pytest.warns(DataWarning, match="4 of 4 sequences are longer than 256 steps"):
        assert all(len(x) == 256 for x in task.split("train").inputs)
    assert task.config.max_len == 256


def test_nothing_cut_means_no_warning(tmp_path):
    ctx = no_data_warnings()
    try:
        task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts", lengths=[7, 12, 9])))
        task.split("train")
    finally:
        ctx.__exit__(None, None, None)


def test_text_cut_at_max_len_warns(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(f"{'w ' * (3 + i)},{i % 2}" for i in range(6)) + "\n")
    task = ClassifyTask(ClassifyConfig(train=str(tmp_path / "t.csv"), max_len=4))
    with pytest.warns(DataWarning, match=r"sequences are longer than 4 steps and were cut"):
        task.split("train")


def test_downsample_means_of_windows():
    s = np.arange(7, dtype=np.float64)[:, None]
    np.testing.assert_allclose(downsample(s, 3)[:, 0], [1.0, 4.0, 6.0])
    assert downsample(s, 1) is s


# ----------------------------------------------------------------------------- folds


@pytest.mark.parametrize("k", [2, 3, 5])
def test_stratified_folds_keep_class_shares(k):
    labels = np.array([0] * 23 + [1] * 11 + [2] * 6)
    folds = stratified_folds(labels, k, seed=1)
    sizes = np.bincount(folds, minlength=k)
    assert sizes.max() - sizes.min() <= 1
    for c in range(3):
        per_fold = np.bincount(folds[labels == c], minlength=k)
        assert per_fold.max() - per_fold.min() <= 1
    np.testing.assert_array_equal(folds, stratified_folds(labels, k, seed=1))
    assert not np.array_equal(folds, stratified_folds(labels, k, seed=2))


def test_out_of_fold_scores_come_from_the_members_that_did_not_train_on_them(tmp_path):
    """Member m always answers class m: each series must be scored by its own fold's member."""
    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts", n_per_class=4), folds=2, hidden_size=4))
    model = task.build_model().eval()
    with torch.no_grad():
        for m, member in enumerate(model.members):
            member.head.weight.zero_()
            member.head.bias.copy_(torch.tensor([10.0, -10.0]) * (1 if m == 0 else -1))
    valid = task.split("valid")
    probs, _ = task.predict_split(model, valid)
    np.testing.assert_array_equal(probs.argmax(1), valid.folds)        # fold f -> member f -> class f
    test_probs, _ = task.predict_split(model, task.load_file(str(tmp_path / "t.ts"), True))
    np.testing.assert_allclose(test_probs, 0.5, atol=1e-6)             # all members: the average


# ----------------------------------------------------------------------------- LSTM-FCN


def small_fcn(**kw):
    args = dict(input_dims=2, length=9, cell="lstm", hidden_size=3, num_layers=1, n_classes=3,
                filters=(4, 5, 4), kernels=(3, 2, 3))
    args.update(kw)
    return LSTMFCN(**args)


def test_lstm_fcn_shapes_and_dimension_shuffle():
    torch.manual_seed(0)
    model = LSTMFCN(input_dims=3, length=20, cell="lstm", hidden_size=8, num_layers=1, n_classes=4).eval()
    seen = {}

    def hook(mod, inp, out):
        seen["x"] = inp[0].shape

    model.rnn.register_forward_hook(hook)
    out = model(torch.randn(15, 5, 3), torch.tensor([15, 10, 3, 15, 1]))
    assert out.shape == (5, 4)
    assert seen["x"] == (3, 5, 20)       # the variables as steps, the (padded) time steps as features
    assert [m.out_channels for m in model.fcn.modules() if isinstance(m, torch.nn.Conv1d)] == [128, 256, 128]
    assert [m.kernel_size[0] for m in model.fcn.modules() if isinstance(m, torch.nn.Conv1d)] == [8, 5, 3]
    assert model.head.in_features == 8 + 128
    with pytest.raises(DataError, match="LSTM-FCN input length"):
        model(torch.randn(21, 1, 3), torch.tensor([21]))


def test_lstm_fcn_prediction_alone_equals_prediction_in_padded_batch():
    torch.manual_seed(0)
    model = small_fcn().eval()
    lengths = torch.tensor([9, 4, 6])
    x = torch.randn(9, 3, 2)
    for b, n in enumerate(lengths):
        x[n:, b] = 0.0
    batch = model(x, lengths)
    for b, n in enumerate(lengths):
        alone = model(x[:n, b : b + 1], lengths[b : b + 1])
        torch.testing.assert_close(alone, batch[b : b + 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lstm_fcn_gradcheck(cell):
    torch.manual_seed(0)
    model = small_fcn(cell=cell).double().eval()
    x = torch.randn(9, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([9, 7])
    assert torch.autograd.gradcheck(lambda inp: model(inp, lengths), (x,), eps=1e-6, atol=1e-5)
    params = [p for p in model.parameters()]
    loss = model(x, lengths).sum()
    grads = torch.autograd.grad(loss, params)
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads[:4])  # LSTM branch too


def test_arch_auto_and_checks(tmp_path):
    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts")))
    assert isinstance(task.build_model().members[0], LSTMFCN)
    rnn = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts"), arch="rnn", folds=1))
    assert not isinstance(rnn.build_model(), (LSTMFCN, MemberEnsemble))
    with pytest.raises(ConfigError, match="arch"):
        ClassifyConfig(train="x.csv", arch="lstm-fcn")     # text input
    with pytest.raises(ConfigError, match=r"--arch \(classify arch\): expected one of"):
        ClassifyConfig(train="x.ts", arch="resnet")


# ----------------------------------------------------------------------------- normalisation


def test_znorm_each_series_and_variable():
    s = np.stack([np.arange(10.0) * 3 + 5, np.full(10, 2.0)], axis=1)
    z = znorm(s)
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, 0].std(), 1, atol=1e-12)
    np.testing.assert_array_equal(z[:, 1], 0.0)             # a constant variable: zeros, not NaN


def test_normalize_options(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.normal(loc=10 * i, scale=1 + i, size=(16, 1)) for i in range(6)]
    write_ts(str(tmp_path / "t.ts"), seqs, ["a", "b"] * 3)
    series = ClassifyTask(ClassifyConfig(train=str(tmp_path / "t.ts"), normalize="series", folds=1))
    for x in series.split("train").inputs + series.split("valid").inputs:
        assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4
    none = ClassifyTask(ClassifyConfig(train=str(tmp_path / "t.ts"), normalize="none", folds=1))
    assert none.scaler is None
    raw = none._read(str(tmp_path / "t.ts"), none.label_map, True).seqs
    np.testing.assert_allclose(np.concatenate(none.split("train").inputs + none.split("valid").inputs).sum(),
                               np.concatenate(raw).sum(), rtol=1e-5)
    assert ClassifyConfig().normalize == "auto"
    channel = ClassifyTask(ClassifyConfig(train=str(tmp_path / "t.ts"), normalize="channel", folds=1))
    fit = np.concatenate(channel.split("train").inputs)
    assert abs(fit.mean()) < 1e-5 and abs(fit.std() - 1) < 1e-4   # scaled on the training part, amplitudes kept


def test_znorm_with_scale_appends_log_scale_and_level():
    s = np.stack([np.sin(np.arange(12.0)) * 500 + 30, np.full(12, -2.0)], axis=1)
    out = znorm_with_scale(s)
    assert out.shape == (12, 6)
    np.testing.assert_allclose(out[:, :2], znorm(s))
    np.testing.assert_allclose(out[:, 2], np.log10(s[:, 0].std()))
    np.testing.assert_allclose(out[:, 3], -8.0)                       # a constant variable: the floor, not -inf
    np.testing.assert_allclose(out[:, 4:], np.arcsinh(s.mean(0, keepdims=True)).repeat(12, 0))


def test_amplitude_spread():
    rng = np.random.default_rng(0)
    alike = [rng.normal(size=(20, 2)) for _ in range(30)]
    assert amplitude_spread(alike) < 2
    wide = [x * 10.0 ** (k % 6) for k, x in enumerate(alike)]          # 1 .. 1e5
    assert amplitude_spread(wide) > 1e4
    assert amplitude_spread([np.zeros((5, 1))] * 3) == 1.0


def test_auto_normalize_keeps_amplitudes_apart_when_they_span_orders_of_magnitude(tmp_path):
    """Series whose scales span 1e-2 .. 1e3 (as appliance currents do): auto z-normalises each one and
    adds its log scale, so the quiet series are not squashed to zero by one global scale."""
    rng = np.random.default_rng(0)
    shape = np.sin(np.linspace(0, 6, 20))[:, None]
    seqs = [shape * 10.0 ** e + rng.normal(0, 0.05 * 10.0 ** e, (20, 1)) for e in (-2, -1, 0, 1, 2, 3) * 2]
    labels = ["quiet", "quiet", "quiet", "loud", "loud", "loud"] * 2
    write_ts(str(tmp_path / "w.ts"), seqs, labels)
    with pytest.warns(DataWarning, match="series-scale"):
        task = ClassifyTask(ClassifyConfig(train=str(tmp_path / "w.ts"), folds=1, normalize="auto"))
    assert task.normalize == "series-scale" and task.input_dims == 3
    x = np.stack(task.split("train").inputs + task.split("valid").inputs)             # (N, T, 3)
    assert x.shape[1:] == (20, 3) and np.abs(x).max() < 10                            # nothing huge, nothing
    assert all(np.ptp(series[:, 0]) > 1 for series in x)                              # squashed: every shape visible
    assert np.allclose(x[:, :, 1:], x[:, :1, 1:])                                     # scale and level constant in time
    rebuilt = ClassifyTask(task.config, metadata=task.metadata())
    assert rebuilt.normalize == "series-scale" and rebuilt.input_dims == 3
    model = rebuilt.build_model().eval()
    xb, lengths = rebuilt.collate(rebuilt.split("train").inputs[:4])
    assert model(xb, lengths).shape == (4, 2)
    alike = [shape * (1 + 0.1 * k) for k in range(6)]
    write_ts(str(tmp_path / "a.ts"), alike, ["a", "b"] * 3)
    assert ClassifyTask(ClassifyConfig(train=str(tmp_path / "a.ts"), folds=1, normalize="auto")).normalize == "channel"


# ----------------------------------------------------------------------------- ensembles


def test_ensemble_averages_member_probabilities():
    torch.manual_seed(0)
    members = [small_fcn().eval() for _ in range(3)]
    ens = MemberEnsemble(members).eval()
    x, lengths = torch.randn(9, 4, 2), torch.tensor([9, 9, 5, 2])
    want = torch.stack([torch.softmax(m(x, lengths), -1) for m in members]).mean(0)
    torch.testing.assert_close(torch.softmax(ens(x, lengths), -1), want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(members[0](x, lengths), members[1](x, lengths))    # different initialisations


def test_ensemble_option_builds_members_per_fold(tmp_path):
    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts", n_per_class=3), ensemble=2, hidden_size=4))
    assert task.members == 6 and task.member_folds().tolist() == [0, 1, 2, 0, 1, 2]
    rebuilt = ClassifyTask(ClassifyConfig.from_dict(task.config_dict()), task.metadata())
    assert len(rebuilt.build_model().members) == 6


# ----------------------------------------------------------------------------- baselines


def test_nearest_neighbour_euclidean_against_brute_force():
    rng = np.random.default_rng(0)
    train = [rng.normal(size=(int(t), 2)) for t in (5, 7, 6, 7)]
    test = [rng.normal(size=(int(t), 2)) for t in (7, 4, 6)]
    y = np.array([0, 1, 2, 3])
    pad = lambda s: np.concatenate([s, np.zeros((7 - len(s), 2))])  # noqa: E731
    want = [int(np.argmin([((pad(a) - pad(b)) ** 2).sum() for b in train])) for a in test]
    np.testing.assert_array_equal(nearest_neighbour(train, y, test, "euclidean"), want)


def test_a_dtw_too_large_to_run_is_left_out_with_the_reason(tmp_path, monkeypatch):
    import rnnlab.tasks.classify as classify

    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts", n_per_class=3, length=10), hidden_size=4))
    if _dtw_backend() is None:
        pytest.skip("no DTW here (numba or aeon)")
    model = quick_fit(task)
    assert "1-NN DTW" in [r["name"] for r in baseline_table(task, model)["rows"]]
    # 3 folds of 2 out-of-fold series against 4, 10 steps each: 3 · 40 · 20 = 2,400 cells
    monkeypatch.setattr(classify, "DTW_MAX_CELLS", 2_000)
    table = baseline_table(task, model)
    assert [r["name"] for r in table["rows"]] == ["model", "majority class", "1-NN Euclidean"]
    assert table["dtw"] is None and "2.4e+03 cost-matrix cells" in table["dtw_skipped"]
    assert "1-NN DTW left out: 2.4e+03" in format_baselines(table)


def test_json_output_has_the_baseline_table(tmp_path, capsys):
    train = ts_file(tmp_path / "X_TRAIN.ts", n_per_class=3, length=10)
    test = ts_file(tmp_path / "X_TEST.ts", n_per_class=2, length=10, seed=1)
    code = main(["train", "classify", "--train", train, "--test", test, "--max-steps", "2", "--out",
                 str(tmp_path / "run"), "--quiet", "--no-report", "--json", "--threads", "1"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    table = out["baselines"]
    names = [r["name"] for r in table["rows"]]
    want = ["model", "majority class", "1-NN Euclidean"] + (["1-NN DTW"] if _dtw_backend() else [])
    assert names == want and table["split"] == "test" and table["n"] == 4
    assert all(0 <= r["acc"] <= 1 for r in table["rows"])
    assert table["validation"] == {"mode": "kfold", "folds": 3}
    assert (tmp_path / "run" / "baselines.json").exists()


# ----------------------------------------------------------------------------- ucr:NAME


def test_ucr_names_resolve_in_a_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("RNNLAB_UCR_DIR", raising=False)
    (tmp_path / "Toy").mkdir()
    ts_file(tmp_path / "Toy" / "Toy_TRAIN.ts")
    ts_file(tmp_path / "Toy" / "Toy_TEST.ts", seed=3)
    assert ucr_path("ucr:Toy", "test", str(tmp_path)) == str(tmp_path / "Toy" / "Toy_TEST.ts")
    task = ClassifyTask(ClassifyConfig(dataset="ucr:Toy", data_dir=str(tmp_path)))
    assert task.kind == "numeric" and len(task.split("test").inputs) == 8
    with pytest.raises(DataError, match=r"ucr:Nope: Nope_TRAIN.ts: expected a file in one of"):
        ClassifyTask(ClassifyConfig(dataset="ucr:Nope", data_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="none with --dataset ucr:Toy"):
        ClassifyConfig(dataset="ucr:Toy", train="x.ts")


@pytest.mark.skipif(not (importlib.util.find_spec("aeon") or importlib.util.find_spec("sktime")),
                    reason="neither aeon nor sktime installed")
def test_ucr_sets_of_the_installed_package(monkeypatch):
    monkeypatch.delenv("RNNLAB_UCR_DIR", raising=False)
    assert ucr_path("ucr:GunPoint", "train").endswith("GunPoint_TRAIN.ts")


def test_lstm_fcn_ensemble_run_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from rnnlab.export.onnx import export_run
    from rnnlab.train import fit, load_run

    task = ClassifyTask(ClassifyConfig(train=ts_file(tmp_path / "t.ts", n_per_class=2, length=11), hidden_size=4))
    fit(task, TrainConfig.for_task(task, max_steps=1, quiet=True, report=False), tmp_path / "run")
    path = export_run(tmp_path / "run", tmp_path / "m.onnx").paths[0]
    task, model, _ = load_run(tmp_path / "run")
    x, lengths = torch.randn(11, 3, 1), torch.tensor([11, 9, 11])
    x[9:, 1] = 0.0
    want = model.eval()(x, lengths).detach().numpy()
    got = ort.InferenceSession(str(path)).run(None, {"series": x.numpy(), "lengths": lengths.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
