"""``rnnlab train speech``, ``rnnlab transcribe`` and ``rnnlab evaluate`` on a speech run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from rnnlab.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> Path:
    from tests.conftest import fsdd_subset

    return fsdd_subset(tmp_path_factory.mktemp("fsdd_cli"), "05", ("theo", "nicolas"), (1, 8, 9, 10))


SMALL = ["--hidden", "8", "--layers", "1", "--batch-size", "8", "--valid-frac", "0.25", "--max-steps", "2",
         "--no-report", "--unidirectional"]
CTC = ["--train-strings", "8", "--valid-strings", "4", "--test-strings", "4", "--max-digits", "2", "--beam", "2"]   # ctc runs only


@pytest.mark.parametrize("mode", ["words", "ctc"])
def test_train_transcribe_evaluate(few, tmp_path, capsys, mode):
    run = tmp_path / "run"
    assert main(["train", "speech", "--audio-dir", str(few), "--mode", mode, "--cell", "gru",
                 "--out", str(run), *SMALL, *(CTC if mode == "ctc" else [])]) == 0
    assert "speech: run" in capsys.readouterr().out
    wav = few / "5_theo_1.wav"
    assert main(["transcribe", str(run), str(wav), str(few / "0_nicolas_1.wav")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{wav}: ")
    assert main(["transcribe", str(run), str(wav), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"file", "text", "score", "tokens"}
    assert all(set(t) == {"token", "start_s", "end_s", "score"} for t in res["tokens"])
    assert main(["transcribe", str(run), str(wav), "--stream", "--chunk-ms", "50"]) == 0
    assert "real-time factor" in capsys.readouterr().out.splitlines()[-1]
    assert main(["evaluate", str(run), "--split", "test", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert ("acc" if mode == "words" else "der") in metrics
    # per speaker: recordings right (words), reference digits right on the beam's alignment (ctc)
    per = {"acc[theo]", "acc[nicolas]"} if mode == "words" else {"beam_digit_acc[theo]", "beam_digit_acc[nicolas]"}
    assert per <= set(metrics) and not any(k.startswith("acc[") for k in set(metrics) - per)


@pytest.fixture(scope="module")
def words_run(few, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("speech_run") / "run"
    assert main(["train", "speech", "--audio-dir", str(few), "--out", str(run), "--quiet", *SMALL]) == 0
    return run


def test_bad_audio_is_one_line(words_run, tmp_path, capsys):
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(b"")   # an empty file
    import numpy as np
    import soundfile as sf

    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(800), 8000)       # 0.1 s of silence: a result, not an error
    trunc = tmp_path / "trunc.wav"
    sf.write(trunc, np.random.default_rng(0).uniform(-0.5, 0.5, 8000), 8000)
    trunc.write_bytes(trunc.read_bytes()[:3000])
    for bad in (text, cut, trunc, tmp_path / "missing.wav"):
        assert main(["transcribe", str(words_run), str(bad)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("rnnlab: error: audio file") and err.count("\n") == 1, err
    wide = tmp_path / "wide.wav"                 # 96 kHz, 6 channels: mixed down and resampled
    sf.write(wide, np.random.default_rng(1).uniform(-0.1, 0.1, (48000, 6)), 96000)
    for ok in (short, wide):
        assert main(["transcribe", str(words_run), str(ok)]) == 0
        assert capsys.readouterr().out.startswith(f"{ok}: ")


def test_transcribe_goes_on_after_a_bad_file(words_run, few, tmp_path, capsys):
    """Each bad file is one error line; the files after it are still transcribed; exit 1 at the end."""
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    a, b = few / "5_theo_1.wav", few / "0_nicolas_1.wav"
    files = [a, empty, b, tmp_path / "missing.wav"]
    assert main(["transcribe", str(words_run), *map(str, files)]) == 1
    cap = capsys.readouterr()
    out, err = cap.out.splitlines(), cap.err.splitlines()
    assert [line.split(": ")[0] for line in out] == [str(a), str(b)]
    assert len(err) == 3 and all(e.startswith("rnnlab: error: audio file") for e in err[:2]), err
    assert str(empty) in err[0] and "missing.wav" in err[1]
    assert err[2] == "rnnlab: error: transcribable audio files: expected all 4, got 2 left untranscribed (see above)"
    assert main(["transcribe", str(words_run), *map(str, files), "--json"]) == 1
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in recs] == list(map(str, files))
    assert ["error" in r for r in recs] == [False, True, False, True] and "text" in recs[2]
    # one file: the same object on stdout under --json, the error line on stderr, exit 1
    assert main(["transcribe", str(words_run), str(empty), "--json"]) == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["file"] == str(empty) and "error" in json.loads(cap.out)
    assert cap.err.startswith("rnnlab: error: audio file") and cap.err.count("\n") == 1


def test_bad_flags_are_one_line(few, tmp_path, capsys):
    assert main(["train", "speech", "--audio-dir", str(few), "--mode", "phones", "--out", str(tmp_path / "r")]) == 1
    assert "mode" in capsys.readouterr().err
    assert main(["train", "speech", "--audio-dir", str(few), "--split", "speaker:nobody",
                 "--out", str(tmp_path / "r")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_resume_refuses_other_speech_flags(words_run, few, capsys):
    """A resumed run keeps its features and model: a flag that says otherwise is one line naming it."""
    for flags, named in ((["--features", "logmel"], "--features 'logmel' (the run has 'mfcc')"),
                         (["--n-mfcc", "20"], "--n-mfcc 20 (the run has 13)"),
                         (["--hidden-size", "32"], "--hidden-size 32 (the run has 8)"),
                         (["--bidirectional"], "--bidirectional (the run was trained with --unidirectional)")):
        assert main(["train", "speech", "--resume", str(words_run), *flags, "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, err
    # The run's own settings given again are accepted (and continue it).
    assert main(["train", "speech", "--resume", str(words_run), "--audio-dir", str(few), "--n-mfcc", "13",
                 "--hidden", "8", "--max-steps", "3", "--quiet"]) == 0


def test_run_records_its_audio_folder(words_run, few, capsys):
    """The audio folder is recorded with a checksum, so no command writes into it, even with --force."""
    rec = json.loads((words_run / "config.json").read_text())["data_files"]["audio_dir"]
    assert rec["path"] == str(few.absolute()) and len(rec["sha256"]) == 64
    out = few / "model.onnx"
    assert main(["export", str(words_run), "--onnx", str(out), "--force"]) == 1
    err = capsys.readouterr().err
    assert "the run's training data" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_evaluate_refuses_a_changed_audio_folder(few, tmp_path, capsys):
    import shutil

    audio = tmp_path / "audio"
    shutil.copytree(few, audio)
    run = tmp_path / "run"
    assert main(["train", "speech", "--audio-dir", str(audio), "--out", str(run), "--quiet", *SMALL]) == 0
    (audio / "notes.txt").write_text("takes recorded on Tuesday\n")   # not a recording: the run does not read it
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    wav = sorted(audio.glob("*.wav"))[0]
    wav.write_bytes(wav.read_bytes()[:-2] + b"\x01\x02")   # one sample edited
    assert main(["evaluate", str(run), "--split", "test"]) == 1
    err = capsys.readouterr().err
    assert "audio_dir" in err and "a folder whose files changed" in err and err.count("\n") == 1, err


def test_speech_checksums_cover_the_recordings_read(few, tmp_path):
    """An audio folder's checksum covers its recordings, not its other files; a label CSV's covers
    the CSV and the recordings it names, and those recordings are what outputs must not replace."""
    import shutil

    from rnnlab.tasks.speech import speech_data_checksum, speech_data_members

    audio = tmp_path / "audio"
    shutil.copytree(few, audio)
    wavs = sorted(audio.glob("*.wav"))[:3]
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"{w.name},{w.name[0]}\n" for w in wavs))
    cfg = {"audio_dir": str(audio), "labels": str(labels)}
    folder, listed = speech_data_checksum(str(audio), cfg), speech_data_checksum(str(labels), cfg)
    assert sorted(speech_data_members(str(labels), cfg)) == sorted(str(w) for w in wavs)
    assert speech_data_members(str(audio), cfg) == []
    (audio / "notes.txt").write_text("not a recording\n")
    assert speech_data_checksum(str(audio), cfg) == folder
    wavs[1].write_bytes(wavs[1].read_bytes() + b"\0\0")
    assert speech_data_checksum(str(audio), cfg) != folder and speech_data_checksum(str(labels), cfg) != listed
