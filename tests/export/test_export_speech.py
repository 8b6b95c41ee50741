"""``rnnlab export`` of speech and seq2seq runs: a speech run's ONNX graph (features included) gives
the model's own outputs on real recordings of other lengths and batch sizes than the exported
example; what a format cannot hold (a speech or seq2seq run as a .pt2 package) and ``--onnx -``
are refused in one line before any file is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.cli.main import main

SMALL = ["--hidden", "8", "--layers", "1", "--batch-size", "8", "--valid-frac", "0.25", "--max-steps", "2",
         "--no-report", "--quiet"]
CTC = ["--train-strings", "8", "--valid-strings", "4", "--test-strings", "4", "--max-digits", "2", "--beam", "2"]   # ctc runs only

# words: bidirectional LSTM, running normalisation; ctc: unidirectional GRU, log-mel, per-utterance
# normalisation, two frames a step
SETUPS = {
    "words": ["--mode", "words"],
    "ctc": ["--mode", "ctc", "--cell", "gru", "--unidirectional", "--features", "logmel", "--normalize", "utterance",
            "--frame-stack", "2", *CTC],
}


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> Path:
    from tests.conftest import fsdd_subset

    return fsdd_subset(tmp_path_factory.mktemp("fsdd_export"), "05", ("theo", "nicolas"), (1, 8, 9, 10))


@pytest.fixture(scope="module")
def speech_runs(few, tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for mode, flags in SETUPS.items():
        run = tmp_path_factory.mktemp(f"speech_{mode}") / "run"
        assert main(["train", "speech", "--audio-dir", str(few), "--out", str(run), *flags, *SMALL]) == 0
        runs[mode] = run
    return runs


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory) -> Path:
    from tests.conftest import reversal_seq2seq_run

    return reversal_seq2seq_run(tmp_path_factory.mktemp("s2s"))


def _real_batch(few: Path, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    from rnnlab.data.audio import load_audio

    waves = [np.asarray(load_audio(few / name, rate), dtype=np.float32).reshape(-1)
             for name in ("5_theo_9.wav", "0_nicolas_10.wav", "0_theo_1.wav")]
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, :len(w)] = torch.from_numpy(w)
    return batch, lengths


@pytest.mark.parametrize("mode", ["words", "ctc"])
def test_speech_onnx_matches_the_model_on_real_recordings(speech_runs, few, tmp_path, capsys, mode) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install rnnlab[onnx]")
    from rnnlab.export.onnx import onnx_session
    from rnnlab.train.rundir import load_run

    out = tmp_path / "speech.onnx"
    assert main(["export", str(speech_runs[mode]), "--onnx", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"wrote {out}" and lines[1].startswith("ONNX Runtime on example inputs of shape (3, ")
    _, model, _ = load_run(speech_runs[mode])
    model.eval()
    wave, lengths = _real_batch(few, model.features.cfg.sample_rate)
    with torch.no_grad():
        want = model(wave.double(), lengths)          # what the task computes: float64 features
    session = onnx_session(out)
    assert [i.name for i in session.get_inputs()] == ["wave", "lengths"]
    got = session.run(None, {"wave": wave.numpy(), "lengths": lengths.numpy()})
    if mode == "words":
        assert got[0].shape == tuple(want[0].shape)
        np.testing.assert_allclose(got[0], want[0].numpy(), atol=1e-4, rtol=0)
    else:
        np.testing.assert_array_equal(got[1], want[1].numpy())
        assert got[0].shape == tuple(want[0].shape)
        for b, n in enumerate(want[1].tolist()):      # every valid step of every row
            np.testing.assert_allclose(got[0][:n, b], want[0][:n, b].numpy(), atol=1e-4, rtol=0)


def test_speech_onnx_int8(speech_runs, tmp_path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install rnnlab[onnx]")
    from rnnlab.export.onnx import onnx_session

    out = tmp_path / "q.onnx"
    assert main(["export", str(speech_runs["words"]), "--onnx", str(out), "--int8"]) == 0
    wave = 0.1 * torch.randn(2, 3000)
    (logits,) = onnx_session(out).run(None, {"wave": wave.numpy(), "lengths": np.array([3000, 2000])})
    assert logits.shape[0] == 2 and np.isfinite(logits).all()
    import onnx   # the weights really are int8: quantised operators in the graph
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ops & {"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeMatMul"}, sorted(ops)


@pytest.mark.parametrize("which", ["speech", "seq2seq"])
def test_pt2_refuses_what_it_cannot_hold_before_writing(speech_runs, seq2seq_run, tmp_path, capsys, which) -> None:
    from rnnlab.engine import fast

    if not fast.available():   # the kernels are refused first, before the model's kind
        pytest.skip("the fast kernels are not built here")
    run = speech_runs["words"] if which == "speech" else seq2seq_run
    out = tmp_path / "m.pt2"
    assert main(["export", str(run), "--pt2", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "unexpected error" not in err and len(err.splitlines()) == 1
    assert err.startswith("rnnlab: error: --pt2: expected ") and f"task '{which}'" in err and "use --onnx" in err
    assert list(tmp_path.iterdir()) == []


def test_both_formats_refused_before_the_onnx_is_written(speech_runs, tmp_path, capsys) -> None:
    assert main(["export", str(speech_runs["words"]), "--onnx", str(tmp_path / "m.onnx"),
                 "--pt2", str(tmp_path / "m.pt2")]) == 1
    assert "--pt2: expected " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--onnx", "--pt2"])
def test_seq2seq_to_stdout_is_refused_before_writing(seq2seq_run, tmp_path, monkeypatch, capsys, flag) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(seq2seq_run), flag, "-"]) == 1
    cap = capsys.readouterr()
    assert cap.err.strip() == f"rnnlab: error: {flag} -: expected a file path (this output cannot go to standard output)"
    assert "wrote" not in cap.out
    assert list(tmp_path.iterdir()) == []


def test_seq2seq_to_a_folder_is_refused_as_a_one_graph_run_is(seq2seq_run, tmp_path, capsys) -> None:
    """`--onnx FOLDER`: one line, as for every other run, not the two graphs written beside the folder."""
    folder = tmp_path / "outdir"
    folder.mkdir()
    assert main(["export", str(seq2seq_run), "--onnx", str(folder)]) == 1
    assert capsys.readouterr().err.strip() == f"rnnlab: error: --onnx {folder}: expected a file path, got a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir"] and not any(folder.iterdir())


def test_speech_with_options_that_change_the_equations_is_refused(few, tmp_path, capsys) -> None:
    """layer_norm has no fused ONNX operator for packed recordings: one line, no file (was an
    AttributeError from the variant graph, shown as an unexpected error)."""
    run = tmp_path / "ln"
    assert main(["train", "speech", "--audio-dir", str(few), "--out", str(run), "--mode", "words",
                 "--cell-option", "layer_norm=true", *SMALL]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--onnx", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "speech ONNX export: expected cell options torch.nn has" in err[0]
    assert not (tmp_path / "m.onnx").exists()
