"""Frames in the classify task: the model, variable lengths, the report, export, the CLI."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.data.frames import check_frame_encoder
from rnnlab.errors import ConfigError
from rnnlab.tasks.classify import ClassifyConfig, ClassifyTask, SequenceClassifier
from rnnlab.tasks.video import build_frame_encoder


def tiny_task(**kw) -> ClassifyTask:
    cfg = dict(dataset="moving-digits", dataset_size=24, frames=5, size=[16, 16], hidden_size=6, embed_dim=6,
               dropout=0.0, batch_size=8)
    return ClassifyTask(ClassifyConfig(**{**cfg, **kw}))


def test_clips_train_ten_epochs_with_a_cosine_decay():
    """Frames input: the classify task's ten epochs as a step budget, so the rate decays to zero
    over them; --max-epochs alone resizes the budget."""
    task = tiny_task()
    n = len(task.split("train").labels)
    per_epoch = -(-n // 8)
    assert task.train_defaults["schedule"] == "cosine" and task.train_defaults["max_epochs"] == 0
    assert task.train_defaults["max_steps"] == 10 * per_epoch
    assert task.train_defaults_for_epochs(2)["max_steps"] == 2 * per_epoch


@pytest.mark.parametrize("cell,pool,bidirectional", [("lstm", "last", False), ("gru", "mean", True),
                                                      ("rnn", "max", False)])
def test_clip_alone_equals_clip_in_padded_batch(cell, pool, bidirectional):
    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=0, input_dims=0, embed_dim=6, cell=cell, hidden_size=5, num_layers=2,
                               bidirectional=bidirectional, dropout=0.0, pool=pool, n_classes=3,
                               encoder=build_frame_encoder("cnn", "", 3, 6, False)).eval()
    lengths = torch.tensor([2, 5, 1])
    x = torch.randint(0, 256, (5, 3, 12, 10, 3), dtype=torch.uint8)
    noisy = x.clone()
    for b, n in enumerate(lengths):
        noisy[n:, b] = torch.randint(0, 256, noisy[n:, b].shape, dtype=torch.uint8)
    with torch.no_grad():
        batch, batch_noisy = model(x, lengths), model(noisy, lengths)
        alone = torch.cat([model(x[:n, b: b + 1], lengths[b: b + 1]) for b, n in enumerate(lengths)])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch_noisy, alone, atol=1e-5, rtol=1e-5)


def test_uint8_and_float_frames_give_the_same_logits():
    torch.manual_seed(0)
    enc = build_frame_encoder("cnn", "", 1, 4, False).eval()
    x = torch.randint(0, 256, (3, 2, 8, 8, 1), dtype=torch.uint8)
    torch.testing.assert_close(enc(x), enc(x.float() / 255))


def test_task_variable_lengths_rebuild_and_report(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        t = 2 + i % 7                           # --frames 6: longer clips are sampled, shorter ones kept
        np.save(tmp_path / f"c{i}.npy", rng.integers(0, 256, (t, 10, 12), dtype=np.uint8))
        rows.append(f"c{i}.npy,{'ab'[i % 2]}")
    (tmp_path / "index.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    task = ClassifyTask(ClassifyConfig(train=str(tmp_path / "index.csv"), input="frames", frames=6, size=[8, 8],
                                       hidden_size=4, embed_dim=4, valid_frac=0.5))
    lengths = sorted(len(c) for c in task.split("train").inputs + task.split("valid").inputs)
    assert max(lengths) == 6 and min(lengths) == 2 and task.frame_shape == [8, 8, 1]
    x, n = task.collate(task.split("valid").inputs)
    assert x.dtype == torch.uint8 and x.shape == (int(n.max()), len(n), 8, 8, 1)
    again = ClassifyTask(ClassifyConfig.from_dict(task.config_dict()), task.metadata())
    assert again.frame_shape == task.frame_shape
    model = task.build_model()
    titles = [s.title for s in task.report_sections(model, str(tmp_path))]
    assert titles[-2:] == ["Clips: the prediction after each frame", "Gate activity over the frames of one clip"]


def test_named_data_set_splits_and_classes():
    task = tiny_task()
    assert len(task.label_map) == 40 and task.label_map.names[:2] == ["0-down", "0-left"]
    assert [len(task.split(s).inputs) for s in ("train", "valid", "test")] == [24, 4, 4]
    assert task.split("train").inputs[0].shape == (5, 16, 16, 1)


def test_config_errors():
    with pytest.raises(ConfigError, match="classify dataset \\(--dataset\\): expected moving-digits, moving-digits-shuffled \\(clips\\) or ucr:NAME"):
        ClassifyConfig(dataset="moving-letters")
    with pytest.raises(ConfigError, match="--train/--valid/--test: expected none with --dataset"):
        ClassifyConfig(dataset="moving-digits", train="x.csv")
    with pytest.raises(ConfigError, match="size \\(--size\\): expected two integers"):
        ClassifyConfig(train="i.csv", input="frames", size=[8])
    with pytest.raises(ConfigError, match="backbone_weights for torchvision:resnet18: expected a weights file"):
        check_frame_encoder("torchvision:resnet18", "")
    with pytest.raises(ConfigError, match="frame_encoder \\(--frame-encoder\\): expected cnn or torchvision"):
        check_frame_encoder("vgg", "")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_torchvision_backbone_without_torchvision_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"^frame_encoder torchvision:resnet18: expected torchvision installed "
                                          r".*, got ImportError$"):
        build_frame_encoder("torchvision:resnet18", str(tmp_path / "w.pt"), 3, 8, False)


def test_cli_trains_evaluates_predicts_and_exports(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert main(["train", "classify", "--dataset", "moving-digits", "--dataset-size", "16", "--frames", "4",
                 "--size", "12", "12", "--hidden", "4", "--embed", "4", "--max-steps", "2", "--batch-size", "8",
                 "--out", str(run)]) == 0
    assert "most frequent confusions (40 classes" in capsys.readouterr().out   # 40 classes: no dense matrix
    assert (run / "report.html").read_text().count("Gate activity over the frames") == 1

    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(tmp_path / f"c{i}.npy", rng.integers(0, 256, (3 + i, 12, 12), dtype=np.uint8))
    (tmp_path / "new.csv").write_text("path,label\nc0.npy,3-up\nc1.npy,7-left\nc2.npy,0-down\n")
    assert main(["evaluate", str(run), "--csv", str(tmp_path / "new.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 3
    assert main(["predict", str(run), "--csv", str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3

    np.save(tmp_path / "rgb.npy", np.zeros((3, 12, 12, 3), dtype=np.uint8))
    (tmp_path / "rgb.csv").write_text("path,label\nrgb.npy,3-up\n")
    assert main(["evaluate", str(run), "--csv", str(tmp_path / "rgb.csv")]) == 1   # a data error, not a usage error
    assert "channels: expected those of the training clips (12, 12, 1)" in capsys.readouterr().err

    from rnnlab.export.onnx import onnx_session
    from rnnlab.train import load_run

    assert main(["export", str(run), "--onnx", str(tmp_path / "m.onnx")]) == 0
    task, model, _ = load_run(str(run))
    x = torch.randint(0, 256, (5, 3, 12, 12, 1), dtype=torch.uint8)   # another T and B than the export's
    got = onnx_session(tmp_path / "m.onnx").run(None, {"frames": x.numpy()})[0]
    with torch.no_grad():
        want = model.eval()(x, torch.full((3,), 5)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_resume_and_evaluate_refuse_a_changed_clip(tmp_path, capsys):
    """The run records its data by the content of the clips its index names: replacing a clip
    file (the index unchanged) stops a resume and an evaluation on the run's own split."""
    rng = np.random.default_rng(0)
    for i in range(8):
        np.save(tmp_path / f"c{i}.npy", rng.integers(0, 256, (3, 8, 8), dtype=np.uint8))
    (tmp_path / "index.csv").write_text("path,label\n" + "".join(f"c{i}.npy,{'ab'[i % 2]}\n" for i in range(8)))
    run = tmp_path / "run"
    common = ["--hidden", "4", "--embed", "4", "--batch-size", "4", "--no-report", "--quiet"]
    assert main(["train", "classify", "--train", str(tmp_path / "index.csv"), "--input", "frames",
                 "--max-steps", "1", "--out", str(run), *common]) == 0
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()
    np.save(tmp_path / "c3.npy", rng.integers(0, 256, (3, 8, 8), dtype=np.uint8))
    assert main(["train", "classify", "--resume", str(run), "--max-steps", "2", "--quiet"]) == 1
    assert "expected the data the run was trained on" in capsys.readouterr().err
    assert main(["evaluate", str(run)]) == 1
    err = capsys.readouterr().err
    assert "expected the data the run was trained on" in err and "changed files it names (one edited" in err, err


def test_no_output_replaces_a_clip_an_index_names(tmp_path, capsys):
    """Outputs beside a frames run never replace the clips its training index names, nor those of
    the index the command reads, even with --force (each was one more file an output could be)."""
    rng = np.random.default_rng(0)
    for i in range(6):
        np.save(tmp_path / f"c{i}.npy", rng.integers(0, 256, (3, 8, 8), dtype=np.uint8))
    (tmp_path / "index.csv").write_text("path,label\n" + "".join(f"c{i}.npy,{'ab'[i % 2]}\n" for i in range(4)))
    (tmp_path / "new.csv").write_text("path,label\nc4.npy,a\nc5.npy,b\n")
    run = tmp_path / "run"
    assert main(["train", "classify", "--train", str(tmp_path / "index.csv"), "--input", "frames", "--max-steps", "1",
                 "--hidden", "4", "--embed", "4", "--batch-size", "4", "--no-report", "--quiet", "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("c*.npy")}
    training, named = "other than the run's training data", "other than those the input names"
    for argv, why in (
            (["evaluate", str(run), "--confusion", str(tmp_path / "c1.npy"), "--force"], training),
            (["evaluate", str(run), "--csv", str(tmp_path / "new.csv"), "--confusion", str(tmp_path / "c4.npy"),
              "--force"], named),
            (["predict", str(run), "--csv", str(tmp_path / "new.csv"), "--out", str(tmp_path / "c5.npy"), "--force"],
             named),
            (["predict", str(run), "--csv", str(tmp_path / "new.csv"), "--out", str(tmp_path / "c0.npy"), "--force"],
             training)):
        capsys.readouterr()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.glob("c*.npy")} == before
    assert main(["evaluate", str(run)]) == 0
