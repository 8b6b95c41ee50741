"""``rnnlab train speech``, ``transcribe`` and ``evaluate`` on a speech run: flags that are wrong or
do not apply are one line, help text keeps its brackets, train and evaluate agree on ``der``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from rnnlab.cli.main import main  # noqa: E402

SMALL = ["--hidden", "8", "--layers", "1", "--batch-size", "8", "--valid-frac", "0.25", "--max-steps", "2",
         "--no-report", "--unidirectional"]
CTC = ["--train-strings", "8", "--valid-strings", "4", "--test-strings", "4", "--max-digits", "2", "--beam", "2"]   # ctc runs only


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> Path:
    from tests.conftest import fsdd_subset

    return fsdd_subset(tmp_path_factory.mktemp("fsdd_cli_err"), "05", ("theo", "nicolas"), (1, 8, 9, 10))


@pytest.fixture(scope="module")
def runs(few, tmp_path_factory) -> dict:
    """A words run, and a ctc run with the JSON that ``train --json`` printed for it."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("speech_err_runs")
    assert main(["train", "speech", "--audio-dir", str(few), "--out", str(out / "words"), "--quiet", *SMALL]) == 0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train", "speech", "--audio-dir", str(few), "--mode", "ctc", "--pretrain-words", "1",
                     "--out", str(out / "ctc"), "--json", *SMALL, *CTC]) == 0
    return {"words": out / "words", "ctc": out / "ctc", "ctc_json": json.loads(buf.getvalue().splitlines()[-1])}


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rnnlab: error: ") and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("flags, message", [
    (["--stream", "--chunk-ms", "-50"], "--chunk-ms (chunk_ms): expected a number of milliseconds > 0, got -50"),
    (["--stream", "--chunk-ms", "0"], "--chunk-ms (chunk_ms): expected a number of milliseconds > 0, got 0"),
    (["--beam", "-3"], "--beam (beam): expected an integer >= 1, got -3"),
    (["--beam", "0"], "--beam (beam): expected an integer >= 1, got 0"),
    (["--chunk-ms", "50"], "--chunk-ms: expected it only with --stream"),
    (["--stream", "--beam", "2"], "--beam: expected no --beam with --stream (streaming decodes greedily"),
    (["--threads", "-1"], "--threads: expected an integer >= 0 (0: torch's default), got -1"),
])
def test_transcribe_refuses_bad_or_idle_flags(runs, few, capsys, flags, message):
    assert main(["transcribe", str(runs["ctc"]), str(few / "5_theo_1.wav"), *flags]) == 1
    assert message in one_line(capsys)


def test_transcribe_refuses_beam_on_a_words_run(runs, few, capsys):
    assert main(["transcribe", str(runs["words"]), str(few / "5_theo_1.wav"), "--beam", "5"]) == 1
    assert "--beam (beam): expected a connected-digit (ctc) run" in one_line(capsys)
    # the flags where they apply still work
    assert main(["transcribe", str(runs["ctc"]), str(few / "5_theo_1.wav"), "--beam", "3"]) == 0
    assert main(["transcribe", str(runs["words"]), str(few / "5_theo_1.wav"), "--stream", "--chunk-ms", "50"]) == 0


def test_train_and_evaluate_mean_the_same_der(runs, capsys):
    capsys.readouterr()
    trained = runs["ctc_json"]
    assert main(["evaluate", str(runs["ctc"]), "--json"]) == 0
    valid = json.loads(capsys.readouterr().out)
    assert valid["der"] == pytest.approx(trained["valid"]["der"])
    assert valid["string_acc"] == pytest.approx(trained["valid"]["string_acc"])
    assert valid["beam"] == 2 and {"beam_der", "beam_string_acc"} <= set(valid) and "greedy_der" not in valid
    assert main(["evaluate", str(runs["ctc"]), "--split", "test", "--json"]) == 0
    test = json.loads(capsys.readouterr().out)
    for k in ("der", "string_acc", "beam_der", "beam_string_acc", "beam"):
        assert test[k] == pytest.approx(trained["test"][k]), k
    assert "greedy_der" not in trained["test"]


def test_train_summary_line_names_greedy_and_beam(few, tmp_path, capsys):
    assert main(["train", "speech", "--audio-dir", str(few), "--mode", "ctc", "--pretrain-words", "1",
                 "--out", str(tmp_path / "run"), *SMALL, *CTC]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "test strings: greedy DER " in line and "; prefix beam 2: DER " in line, line


def test_evaluate_train_split_of_a_ctc_run(runs, capsys):
    assert main(["evaluate", str(runs["ctc"]), "--split", "train"]) == 1
    err = one_line(capsys)
    assert "expected valid or test (the training strings are drawn afresh every epoch" in err
    assert "references" not in err


def test_audio_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "somefile.txt"
    f.write_text("x\n")
    assert main(["train", "speech", "--audio-dir", str(f), "--out", str(tmp_path / "r")]) == 1
    assert "expected an existing folder, got a file" in one_line(capsys)


def test_labels_csv_elsewhere_and_without_take(few, tmp_path, capsys):
    bn = tmp_path / "bn"
    bn.mkdir()
    shutil.copy(few / "0_theo_1.wav", bn / "hello.wav")
    shutil.copy(few / "5_theo_1.wav", bn / "x.wav")
    lab = tmp_path / "lab.csv"
    lab.write_text("file,label\nhello.wav,0\nx.wav,5\n")
    assert main(["train", "speech", "--audio-dir", str(bn), "--labels", str(lab), "--max-steps", "2",
                 "--out", str(tmp_path / "r1")]) == 1
    err = one_line(capsys)
    assert "expected a file in" not in err      # the files are found in --audio-dir
    assert "expected a take column for --split official" in err and "got columns file, label" in err, err


def test_help_keeps_its_brackets(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")   # one line per option: no wrapping inside the phrases checked
    monkeypatch.setenv("TERMINAL_WIDTH", "400")
    assert main(["train", "speech", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "in [this, this+20] dB" in out
    assert "[1-this, 1+this]" in out
    assert "file,label[,speaker,take]" in out


def test_python_api_checks_beam_and_chunk_as_the_cli(runs, few):
    """transcribe_file / stream_file refuse what `rnnlab transcribe` refuses (a chunk of 0 ms was one
    sample per chunk; beam 0 was greedy; a beam on a words run was ignored)."""
    from rnnlab.errors import ConfigError
    from rnnlab.tasks.speech import load_speech_run, stream_file, transcribe_file

    wav = few / "5_theo_1.wav"
    ctc, words = load_speech_run(runs["ctc"]), load_speech_run(runs["words"])
    for task_model, kwargs, message in ((ctc, {"beam": 0}, "--beam (beam): expected an integer >= 1, got 0"),
                                        (ctc, {"beam": 2.5}, "got 2.5"),
                                        (words, {"beam": 3}, "expected a connected-digit (ctc) run")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            transcribe_file(*task_model, wav, **kwargs)
    for chunk_ms in (0, -5.0, float("nan")):
        with pytest.raises(ConfigError, match=re.escape("--chunk-ms (chunk_ms): expected a number of milliseconds > 0")):
            stream_file(*ctc, wav, chunk_ms=chunk_ms)
    with pytest.raises(ConfigError, match="expected a connected-digit"):
        transcribe_file(*words, wav, beam=1)      # as `rnnlab transcribe --beam 1` on a words run


def test_ctc_flags_are_refused_in_words_mode(few, tmp_path, capsys):
    assert main(["train", "speech", "--audio-dir", str(few), "--max-digits", "3", "--beam", "4",
                 "--out", str(tmp_path / "run"), *SMALL]) == 1
    assert "--max-digits, --beam: expected them only with --mode ctc" in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_dataset_none_with_an_audio_folder_is_the_folder(few, tmp_path, capsys):
    """--help says "none with --audio-dir": the word is taken, as leaving --dataset out is."""
    assert main(["train", "speech", "--dataset", "none", "--audio-dir", str(few), "--out", str(tmp_path / "r"),
                 "--quiet", *SMALL]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["task_config"]
    assert saved["dataset"] == "" and saved["audio_dir"]
