"""The classify task: padding invariance, metrics, learning, files, transfer from an lm run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from rnnlab.cli.train import json_number
from rnnlab.data.tables import LabelMap
from rnnlab.data.ts_format import write_ts
from rnnlab.errors import ConfigError, DataError
from rnnlab.tasks.classify import (ClassifyConfig, ClassifyTask, SequenceClassifier, classification_metrics,
                                   flat_metrics)


def quick_fit(task, epochs: int, lr: float = 1e-2, seed: int = 0):
    """A minimal loop over the Task contract (the core's fit adds checkpoints, not learning)."""
    torch.manual_seed(seed)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for ep in range(epochs):
        model.train()
        for batch in task.train_batches(ep):
            loss = task.training_step(model, batch, None).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def sentiment_csv(path, n: int = 120, seed: int = 0) -> str:
    """Reviews of filler words with one sentiment word; 2/3 positive so majority = 0.67."""
    rng = np.random.default_rng(seed)
    pos, neg, filler = ["good", "great", "love"], ["bad", "awful", "hate"], ["the", "a", "film", "was", "it", "so"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["review", "sentiment"])
        for i in range(n):
            y = int(i % 3 != 0)
            words = list(rng.choice(filler, size=rng.integers(2, 9)))
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(pos if y else neg)))
            w.writerow([" ".join(words), "positive" if y else "negative"])
    return str(path)


# ----------------------------------------------------------------------------- padding invariance


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pool", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_prediction_alone_equals_prediction_in_padded_batch(cell, pool, bidirectional):
    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=20, input_dims=0, embed_dim=6, cell=cell, hidden_size=5, num_layers=2,
                               bidirectional=bidirectional, dropout=0.0, pool=pool, n_classes=3).eval()
    lengths = torch.tensor([3, 7, 1, 5])
    x = torch.randint(1, 20, (7, 4))  # (T, B); positions past each length are padding
    x_noise = x.clone()
    for b, n in enumerate(lengths):
        x_noise[n:, b] = torch.randint(1, 20, (7 - n,))  # different padding must not matter either
    with torch.no_grad():
        batch = model(x, lengths)
        batch_noise = model(x_noise, lengths)
        alone = torch.cat([model(x[:n, b : b + 1], lengths[b : b + 1]) for b, n in enumerate(lengths)])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch_noise, alone, atol=1e-5, rtol=1e-5)


def test_numeric_padding_invariance():
    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=0, input_dims=3, embed_dim=4, cell="lstm", hidden_size=5, num_layers=1,
                               bidirectional=True, dropout=0.0, pool="mean", n_classes=2).eval()
    x = torch.randn(6, 2, 3)
    x[4:, 0] = 1e3  # huge padding values
    lengths = torch.tensor([4, 6])
    with torch.no_grad():
        torch.testing.assert_close(model(x, lengths)[0], model(x[:4, :1], lengths[:1])[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- metrics


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    m = classification_metrics(y, p, 3)
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["precision"] == pytest.approx([0.5, 2 / 3, float("nan")], nan_ok=True)   # 2 never predicted
    assert m["recall"] == pytest.approx([0.5, 1.0, 0.0])
    f1 = [0.5, 0.8, 0.0]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)


def test_flat_metrics_rows_are_counts_and_undefined_scores_nan():
    """``rnnlab evaluate``'s flat dict: confusion rows are lists of ints (printed as before, counts
    separated by spaces); a class never predicted has no precision, one absent from the file no
    recall: NaN (null in --json), not 0."""
    m = classification_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    m.update(loss=0.5, majority_acc=2 / 3, majority_macro_f1=0.4, n=3, names=["a", "b", "c"])
    flat = flat_metrics(m)
    assert flat["confusion[a]"] == [1, 1, 0] and str(flat["confusion[a]"]) == "1 1 0"
    assert math.isnan(flat["precision[c]"]) and math.isnan(flat["recall[c]"])
    assert flat["precision[b]"] == 0.5 and flat["recall[a]"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)    # over the classes present, as before
    out = json.loads(json.dumps(json_number(flat)))
    assert out["confusion[b]"] == [0, 1, 0] and out["recall[c]"] is None and out["precision[c]"] is None


# ----------------------------------------------------------------------------- learning


def test_text_classifier_beats_majority(tmp_path):
    path = sentiment_csv(tmp_path / "reviews.csv")
    task = ClassifyTask(ClassifyConfig(train=path, text_col="review", label_col="sentiment", hidden_size=16,
                                       embed_dim=16, pool="max", dropout=0.0, batch_size=16))
    assert task.label_map.names == ["negative", "positive"]
    model = quick_fit(task, epochs=15)
    with torch.no_grad():
        m = task.evaluate(model, "valid")
    assert m["majority_acc"] == pytest.approx(np.mean(task.split("valid").labels == 1))
    assert m["acc"] >= 0.9 > m["majority_acc"] + 0.1, m


def test_ts_classifier_multivariate_variable_length_beats_majority(tmp_path):
    """Class = which of two channels carries a bump; lengths vary from 8 to 15."""
    rng = np.random.default_rng(1)
    seqs, labels = [], []
    for i in range(90):
        n = int(rng.integers(8, 16))
        s = rng.normal(0, 0.3, size=(n, 2))
        c = i % 3 == 0  # 1/3 vs 2/3: the majority baseline is 0.67
        s[n // 2 :, int(c)] += 2.0
        seqs.append(s.astype(np.float32))
        labels.append("bump1" if c else "bump0")
    path = str(tmp_path / "train.ts")
    write_ts(path, seqs, labels)
    task = ClassifyTask(ClassifyConfig(train=path, hidden_size=12, embed_dim=8, cell="gru", pool="mean",
                                       dropout=0.0, batch_size=16))
    assert task.kind == "numeric" and task.dims == 2
    model = quick_fit(task, epochs=8)
    with torch.no_grad():
        m = task.evaluate(model, "valid")
    assert m["acc"] > m["majority_acc"] + 0.1, m


# ----------------------------------------------------------------------------- files and errors


def test_predict_and_evaluate_files(tmp_path):
    path = sentiment_csv(tmp_path / "reviews.csv", n=30)
    task = ClassifyTask(ClassifyConfig(train=path, text_col="review", label_col="sentiment", hidden_size=8,
                                       embed_dim=8))
    model = quick_fit(task, epochs=1)
    (tmp_path / "new.csv").write_text("review\nso good\nawful zzzunknownword\n")
    n = task.predict_file(model, str(tmp_path / "new.csv"), str(tmp_path / "out" / "preds.csv"))
    with open(tmp_path / "out" / "preds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert n == 2 and [r["line"] for r in rows] == ["2", "3"]
    for r in rows:
        assert r["pred"] in ("negative", "positive")
        assert float(r["p_negative"]) + float(r["p_positive"]) == pytest.approx(1.0, abs=1e-5)
    (tmp_path / "bad.csv").write_text("review,sentiment\ngood,positive\nmeh,neutral\n")
    with pytest.raises(DataError, match="line 3, column 'sentiment': label: expected one seen in training "
                                        r"\['negative', 'positive'\], got unseen 'neutral'"):
        task.evaluate_file(model, str(tmp_path / "bad.csv"))


def test_rebuild_from_metadata_reads_no_training_file(tmp_path):
    path = sentiment_csv(tmp_path / "reviews.csv", n=30)
    task = ClassifyTask(ClassifyConfig(train=path, text_col="review", label_col="sentiment"))
    (tmp_path / "reviews.csv").unlink()  # a run folder must work without its training data
    again = ClassifyTask(ClassifyConfig.from_dict(task.config_dict()), task.metadata())
    assert again.vocab.itos == task.vocab.itos and again.label_map.names == task.label_map.names
    assert sum(p.numel() for p in again.build_model().parameters()) == \
        sum(p.numel() for p in task.build_model().parameters())


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="classify config keys"):
        ClassifyConfig.from_dict({"train": "x.csv", "hiden_size": 3})
    with pytest.raises(ConfigError, match=r"--pool \(classify pool\): expected one of"):
        ClassifyConfig(train="x.csv", pool="median")
    with pytest.raises(ConfigError, match="freeze_epochs"):
        ClassifyConfig(train="x.csv", freeze_epochs=2)
    with pytest.raises(ConfigError, match="init_from"):
        ClassifyConfig(train="x.ts", init_from="runs/lm")


def test_single_class_training_file(tmp_path):
    (tmp_path / "one.csv").write_text("text,label\na,x\nb,x\n")
    with pytest.raises(DataError, match="expected at least 2 classes"):
        ClassifyTask(ClassifyConfig(train=str(tmp_path / "one.csv")))


def test_label_map_round_trip():
    lm = LabelMap.fit(["b", "a", "b"])
    assert LabelMap.from_dict(lm.to_dict()).names == ["a", "b"]


def test_scaling_and_majority_learned_from_the_training_part_only(tmp_path):
    """With valid carved out of --train, the held-out rows must not shape the scaler."""
    path = tmp_path / "wide.csv"
    rows = [f"{'a' if i % 2 else 'b'},{i},{i + 1},{i + 2}" for i in range(20)]
    path.write_text("label,v1,v2,v3\n" + "\n".join(rows) + "\n")
    task = ClassifyTask(ClassifyConfig(train=str(path), input="numeric", valid_frac=0.5, folds=1))
    train_rows = [line - 2 for line in task.split("train").lines]  # file line -> row index
    assert len(train_rows) == 10
    values = np.concatenate([[i, i + 1, i + 2] for i in train_rows])
    assert task.scaler.mean == [pytest.approx(values.mean())]
    assert task.scaler.std == [pytest.approx(values.std())]
    counts = np.bincount([i % 2 == 0 for i in train_rows], minlength=2)  # label index: a=0 (odd i), b=1
    assert task.metadata()["train_counts"] == counts.tolist()


def test_report_sections_show_baseline_and_confusion_for_valid_and_test(tmp_path):
    path = sentiment_csv(tmp_path / "reviews.csv", n=30)
    task = ClassifyTask(ClassifyConfig(train=path, test=path, text_col="review", label_col="sentiment",
                                       hidden_size=8, embed_dim=8))
    sections = task.report_sections(quick_fit(task, epochs=1), str(tmp_path))
    assert len(sections) == 4
    assert "majority class" in sections[0].html and "<img" in sections[1].html
    assert sections[2].title.startswith("Test split") and "30 examples of the test split" in sections[2].html


def test_long_layout_task_and_predict(tmp_path):
    """One row per step (id, t, two variables): multivariate, variable-length sequences."""
    rng = np.random.default_rng(0)
    lines = ["sid,t,x,y,kind"]
    for s in range(24):
        for t in range(int(rng.integers(3, 8))):
            lines.append(f"s{s},{t},{rng.normal() + (s % 2)},{rng.normal()},{'odd' if s % 2 else 'even'}")
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    task = ClassifyTask(ClassifyConfig(train=str(path), id_col="sid", time_col="t", feature_cols=["x", "y"],
                                       label_col="kind", hidden_size=8, embed_dim=4))
    assert task.kind == "numeric" and task.dims == 2 and len(task.scaler.mean) == 2
    model = quick_fit(task, epochs=1)
    n = task.predict_file(model, str(path), str(tmp_path / "p.csv"))
    assert n == 24
    rows = task.predict_rows(model, str(path))
    assert [r["id"] for r in rows] == [f"s{s}" for s in range(24)] and list(rows[0])[:4] == ["id", "line", "label", "pred"]
    with open(tmp_path / "p.csv") as fh:
        header, first = next(csv.reader(fh)), next(csv.reader(fh))
    assert header == ["sid", "line", "label", "pred", "p_even", "p_odd"] and first[0] == "s0"
