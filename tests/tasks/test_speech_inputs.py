"""The speech task's inputs and scores: label CSVs (paths, optional columns per split), audio
folders that are files, the ctc run's training split, and one meaning of ``der``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from rnnlab.errors import ConfigError, DataError  # noqa: E402
from rnnlab.tasks.ctc import digit_error_rate, greedy_decode, string_accuracy  # noqa: E402
from rnnlab.tasks.speech import BLANK, SpeechConfig, SpeechTask  # noqa: E402
from rnnlab.train import TrainConfig, fit  # noqa: E402


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> Path:
    from tests.conftest import fsdd_subset

    return fsdd_subset(tmp_path_factory.mktemp("fsdd_inputs"), "012", ("george", "jackson"), (0, 5, 6, 7))


def small(folder: Path, **kw) -> SpeechConfig:
    base = dict(dataset="", audio_dir=str(folder), hidden_size=16, num_layers=1, batch_size=8, valid_frac=0.25,
                train_strings=8, valid_strings=4, test_strings=4, max_digits=3, beam=4)
    base.update(kw)
    return SpeechConfig(**base)


@pytest.fixture
def renamed(few, tmp_path) -> tuple[Path, list[tuple[str, str, str, str]]]:
    """The recordings under names that say nothing, in a folder of their own: (file, label, speaker, take) rows."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for k, p in enumerate(sorted(few.glob("*.wav"))):
        label, speaker, take = p.stem.split("_")
        shutil.copy(p, audio / f"rec{k}.wav")
        rows.append((f"rec{k}.wav", label, speaker, take))
    return audio, rows


def write_csv(path: Path, rows, columns: tuple[str, ...]) -> Path:
    index = {"file": 0, "label": 1, "speaker": 2, "take": 3}
    lines = [",".join(columns)] + [",".join(r[index[c]] for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_paths_resolve_against_the_audio_dir(renamed, tmp_path):
    audio, rows = renamed
    elsewhere = tmp_path / "meta"
    elsewhere.mkdir()
    csv = write_csv(elsewhere / "labels.csv", rows, ("file", "label", "speaker", "take"))
    task = SpeechTask(small(audio, labels=str(csv)))
    assert task.labels == ["0", "1", "2"]
    assert all(r.path.parent == audio for r in task._train_recs + list(task._split.test))
    assert {r.take for r in task._split.test} == {0}


def test_csv_path_beside_the_csv_still_resolves_and_a_missing_one_is_named(renamed, tmp_path):
    """Runs made when CSV paths were relative to the CSV's folder still read their recordings."""
    audio, rows = renamed
    csv = write_csv(audio / "labels.csv", rows, ("file", "label", "speaker", "take"))
    other = tmp_path / "other"
    other.mkdir()
    task = SpeechTask(small(other, labels=str(csv)))
    assert all(r.path.parent == audio for r in task._train_recs + list(task._split.test))
    missing = write_csv(tmp_path / "missing.csv", [("nowhere.wav", "0", "a", "0")], ("file", "label", "speaker", "take"))
    with pytest.raises(DataError) as e:
        SpeechTask(small(other, labels=str(missing)))
    msg = str(e.value)
    assert f"expected a file in {str(other)!r} (the audio folder) or beside the CSV, got no such file" in msg
    assert "\n" not in msg


def test_missing_take_column_names_it_and_the_split(renamed):
    audio, rows = renamed
    csv = write_csv(audio / "labels.csv", rows, ("file", "label"))
    with pytest.raises(DataError) as e:
        SpeechTask(small(audio, labels=str(csv)))
    msg = str(e.value)
    assert "expected a take column for --split official" in msg and "got columns file, label" in msg, msg
    assert "--split speaker:NAME" in msg
    with_speaker = write_csv(audio / "spk.csv", rows, ("file", "label", "speaker"))
    with pytest.raises(DataError, match=r"take column for --split official.*--split speaker:NAME \(NAME one of "
                                        r"george, jackson\)"):
        SpeechTask(small(audio, labels=str(with_speaker)))
    # ... and the split it points to works without a take column.
    task = SpeechTask(small(audio, labels=str(with_speaker), split="speaker:jackson"))
    assert {r.speaker for r in task._split.test} == {"jackson"}


def test_missing_speaker_column_names_it_and_the_split(renamed):
    audio, rows = renamed
    csv = write_csv(audio / "labels.csv", rows, ("file", "label", "take"))
    with pytest.raises(DataError, match=r"expected a speaker column for --split speaker:george, got columns "
                                        r"file, label, take; add a speaker column, or pass --split official"):
        SpeechTask(small(audio, labels=str(csv), split="speaker:george"))


def test_a_row_without_take_names_its_line(renamed):
    audio, rows = renamed
    rows = [*rows[:2], (rows[2][0], rows[2][1], rows[2][2], ""), *rows[3:]]
    csv = write_csv(audio / "labels.csv", rows, ("file", "label", "speaker", "take"))
    with pytest.raises(DataError, match=r"expected a take on every row for --split official \(it tests on takes 0-4\), got none on line 4$"):
        SpeechTask(small(audio, labels=str(csv)))


def test_audio_dir_that_is_a_file(tmp_path, renamed):
    f = tmp_path / "notes.txt"
    f.write_text("x\n")
    with pytest.raises(DataError, match=r"audio folder '.*notes.txt': expected an existing folder, got a file$"):
        SpeechTask(small(f))
    audio, rows = renamed
    csv = write_csv(audio / "labels.csv", rows, ("file", "label", "speaker", "take"))
    with pytest.raises(DataError, match=r"expected an existing folder, got a file$"):
        SpeechTask(small(f, labels=str(csv)))
    with pytest.raises(DataError, match=r"expected an existing folder, got no such folder$"):
        SpeechTask(small(tmp_path / "absent"))


@pytest.fixture(scope="module")
def ctc_run(few, tmp_path_factory):
    task = SpeechTask(small(few, mode="ctc", bidirectional=False, pretrain_words=1))
    result = fit(task, TrainConfig.for_task(task, max_steps=3, eval_every=3, report=False, quiet=True),
                 tmp_path_factory.mktemp("ctc") / "run")
    from rnnlab.tasks.speech import load_speech_run

    return load_speech_run(result.run_dir)


def test_der_is_the_greedy_decode_on_every_split(ctc_run):
    task, model = ctc_run
    for split in ("valid", "test"):
        m = task.evaluate_detailed(model, split)
        outs, _ = task.outputs(model, task.part(split))
        refs = [list(task.text(t)) for t in task.part(split).targets]
        greedy = [list(task.text(greedy_decode(o, BLANK).labels)) for o in outs]
        assert m["der"] == pytest.approx(digit_error_rate(refs, greedy))
        assert m["string_acc"] == pytest.approx(string_accuracy(refs, greedy))
        assert m["beam"] == task.config.beam == 4
        assert {"beam_der", "beam_string_acc"} <= set(m) and "greedy_der" not in m
        # evaluate (what training reports and selects the checkpoint on) gives the same numbers
        short = task.evaluate(model, split)
        assert short["der"] == pytest.approx(m["der"]) and short["string_acc"] == pytest.approx(m["string_acc"])
    one = task.evaluate_detailed(model, "test", beam=1)
    assert one["beam"] == 1 and one["beam_der"] == one["der"] and np.isfinite(one["der"])
    with pytest.raises(ConfigError, match=r"beam: expected an integer >= 1, got 0"):
        task.evaluate_detailed(model, "test", beam=0)


def test_ctc_run_has_no_training_split_to_score(ctc_run):
    task, model = ctc_run
    with pytest.raises(ConfigError, match=r"split of a connected-digit \(ctc\) run: expected valid or test "
                                          r"\(the training strings are drawn afresh every epoch"):
        task.evaluate_detailed(model, "train")
