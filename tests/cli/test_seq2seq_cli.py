"""End to end through ``rnnlab``: train seq2seq, evaluate --json, translate (argument, stdin, beam, n-best, attention)."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from rnnlab.cli.main import main

WORDS = ["abc", "bca", "cab", "aab", "bbc", "cca", "abca", "bcab", "acb", "bac", "cba", "aaa", "ccb", "bab", "cac",
         "abab", "baba", "caca", "acac", "bcbc"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2s-cli")
    data = tmp / "rev.tsv"
    data.write_text("source\ttarget\n" + "".join(f"{w}\t{w[::-1]}\n" for w in WORDS))
    out = tmp / "run"
    assert main(["train", "seq2seq", "--train", str(data), "--test", str(data), "--embed", "8", "--hidden", "16",
                 "--batch-size", "8", "--max-steps", "2", "--out", str(out), "--no-report", "--quiet"]) == 0
    return out


def test_evaluate_json(run, capsys):
    assert main(["evaluate", str(run), "--split", "test", "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["n"] == len(WORDS) and {"loss", "exact", "bleu", "chrf"} <= set(m)
    assert type(m["n"]) is int          # a count, as every --json prints counts (was a float)


def test_translate_argument_beam_nbest_attention(run, capsys):
    assert main(["translate", str(run), "abc"]) == 0
    greedy = capsys.readouterr().out.splitlines()
    assert len(greedy) == 1
    assert main(["translate", str(run), "abc", "--beam", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == greedy
    assert main(["translate", str(run), "abc", "--beam", "3", "--nbest", "2", "--json", "--show-attention"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert len(rec["outputs"]) == 2 and rec["source_tokens"] == ["a", "b", "c", "<eos>"]
    assert len(rec["attention"][0]) == len(rec["output_tokens"][0])
    assert main(["translate", str(run), "abc", "--show-attention"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == greedy[0] and lines[1].split() == ["a", "b", "c", "$"]
    assert main(["translate", str(run), "abc", "--beam", "2", "--nbest", "3"]) == 1
    assert capsys.readouterr().err.startswith("rnnlab: error: --nbest: expected at most --beam")


def test_translate_bad_beam_names_beam(run, capsys):
    for flags, message in ((["--beam", "0"], "--beam: expected an integer >= 1, got 0"),
                           (["--beam", "0", "--nbest", "1"], "--beam: expected an integer >= 1, got 0"),
                           (["--nbest", "0"], "--nbest: expected an integer >= 1, got 0")):
        assert main(["translate", str(run), "abc", *flags]) == 1
        err = capsys.readouterr().err
        assert err == f"rnnlab: error: {message}\n", err


def test_translate_score_is_the_same_at_any_beam(tmp_path, capsys):
    """The printed score is the output's log-probability: the same output scores the same at
    --beam 1 and --beam 4 (not the beam's length-normalised ranking score)."""
    data = tmp_path / "first.tsv"
    data.write_text("source\ttarget\n" + "".join(f"{w}\t{w[0]}\n" for w in WORDS))
    out = tmp_path / "run"
    assert main(["train", "seq2seq", "--train", str(data), "--valid", str(data), "--embed", "8", "--hidden", "16",
                 "--batch-size", "20", "--max-steps", "40", "--lr", "0.02", "--out", str(out), "--no-report",
                 "--quiet"]) == 0
    capsys.readouterr()
    shared = 0
    for source in ("abc", "bca", "cab"):
        assert main(["translate", str(out), source, "--json"]) == 0
        greedy = json.loads(capsys.readouterr().out)
        assert main(["translate", str(out), source, "--beam", "4", "--nbest", "4", "--json"]) == 0
        beam = json.loads(capsys.readouterr().out)
        scores = dict(zip(beam["outputs"], beam["scores"]))
        if greedy["outputs"][0] in scores:
            shared += 1
            assert scores[greedy["outputs"][0]] == pytest.approx(greedy["scores"][0], abs=1e-5)
    assert shared


def test_translate_stdin_keeps_lines_aligned(run, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("abc\n\nabz\n" + "a" * 200 + "\ncab\n"))
    assert main(["translate", str(run)]) == 1
    cap = capsys.readouterr()
    out, err = cap.out.split("\n")[:-1], cap.err.splitlines()
    assert len(out) == 5 and out[1] == "" and out[3] == ""
    assert err[0] == "rnnlab: error: stdin line 2: expected non-empty text, got an empty line"
    assert err[1].startswith("rnnlab: error: stdin line 4 (") and "at most 100 tokens" in err[1]
    assert err[2] == "translate: 1 of 5 inputs held tokens the model never saw, read as <unk>: 'z' x1"
    assert err[3] == "rnnlab: error: translatable input lines: expected all 5, got 2 left untranslated (see above)"


def test_translate_stdin_bytes_not_in_the_encoding_are_a_bad_line(run, capsys, monkeypatch):
    """Real stdin is bytes: a line that is not UTF-8 is a bad line (never invalid UTF-8 in --json),
    and --encoding reads it."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"ab\xe9\ncab\n")))
    assert main(["translate", str(run), "--json"]) == 1
    cap = capsys.readouterr()
    rows = [json.loads(line) for line in cap.out.splitlines()]
    assert rows[0]["error"] == "stdin line 1: expected utf-8 text (pass --encoding), got byte 0xe9 at character 3"
    assert rows[0]["source"] == "ab\ufffd" and rows[1]["source"] == "cab" and rows[1]["outputs"]
    cap.out.encode("utf-8")                                       # valid UTF-8 throughout
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"ab\xe9\n")))
    assert main(["translate", str(run), "--json", "--encoding", "latin-1"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "ab\u00e9"
    # UTF-16 (its newlines are two bytes), a UTF-8 byte-order mark, CRLF and a lone CR all end lines
    for data, enc in (("abc\nbca\ncab\n".encode("utf-16"), "utf-16"), (b"\xef\xbb\xbfabc\r\nbca\rcab\n", "utf-8")):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert main(["translate", str(run), "--json", "--encoding", enc]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["source"] for r in rows] == ["abc", "bca", "cab"] and not any(r["unknown"] for r in rows), enc
    # a UTF-16 stream read as UTF-8 is refused at once (every line would be garbled), naming --encoding
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO("abc\n".encode("utf-16")))))
    assert main(["translate", str(run)]) == 1
    cap = capsys.readouterr()
    assert cap.out == "" and "got a UTF-16 stream" in cap.err and "pass --encoding utf-16" in cap.err
    assert main(["translate", str(run), "-", "--encoding", "nope"]) == 1
    assert "--encoding: expected it without INPUT" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"abc\n")))
    assert main(["translate", str(run), "--encoding", "nope"]) == 1
    assert "--encoding: expected an encoding Python knows" in capsys.readouterr().err


def test_translate_refuses_another_task(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"task": "classify", "task_config": {}, "train_config": {}}))
    assert main(["translate", str(tmp_path), "abc"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected a sequence-to-sequence run (task 'seq2seq'), got a run of task 'classify'" in err[0]


def test_train_seq2seq_bad_flags_are_one_line(tmp_path, capsys):
    assert main(["train", "seq2seq", "--dataset", "dates", "--attention", "luong"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--attention (seq2seq attention): expected one of" in err[0]


def test_translate_show_attention_writes_png(run, tmp_path, capsys, monkeypatch):
    png = tmp_path / "align.png"
    assert main(["translate", str(run), "abc", "--show-attention", "--out", str(png)]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.splitlines()) == 1                      # the output only; the alignment went to the file
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and cap.err.strip() == f"translate: wrote {png}"
    assert main(["translate", str(run), "abc", "--show-attention", "--out", str(png)]) == 1
    assert "pass --force to overwrite it" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("abc\ncab\n"))
    assert main(["translate", str(run), "--show-attention", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s-1.png").exists() and (tmp_path / "s-2.png").exists()
    capsys.readouterr()
    assert main(["translate", str(run), "abc", "--out", str(tmp_path / "x.png")]) == 2
    assert "--out writes the alignment: expected it with --show-attention" in capsys.readouterr().err
    # the format follows the suffix; one matplotlib does not write is refused before any decoding
    assert main(["translate", str(run), "abc", "--show-attention", "--out", str(tmp_path / "a.svg")]) == 0
    assert (tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")
    assert main(["translate", str(run), "abc", "--show-attention", "--out", str(tmp_path / "a.jpg")]) == 0
    assert (tmp_path / "a.jpg").read_bytes()[:3] == b"\xff\xd8\xff"          # JPEG, not PNG bytes
    for stdin in (False, True):
        monkeypatch.setattr("sys.stdin", io.StringIO("abc\n"))
        assert main(["translate", str(run), *([] if stdin else ["abc"]), "--show-attention", "--out",
                     str(tmp_path / "a.docx")]) == 1
        err = capsys.readouterr().err
        assert "--out (path): expected a file name ending in one of " in err and ".png" in err and "got 'a.docx'" in err
    assert not list(tmp_path.glob("a*.docx"))


@pytest.mark.parametrize("text,message", [
    ("source\ttarget\nabc\tcba\nbca\n", "line 3: fields: expected 2 (as in the header), got 1"),
    ("source\ttarget\nabc\tcba\nbca\t \n", "line 3, column 'target': expected target text, got an empty cell"),
    ("source\tother\nabc\tcba\n", "target column"),
    ("source\ttarget\nabc\tcba\n" + "a" * 120 + "\tx\n", "bad.tsv: source on line 3 ('aaaa"),
], ids=["missing-value", "empty-cell", "missing-column", "too-long-source"])
def test_train_bad_pairs_file_is_one_line(tmp_path, capsys, text, message):
    data = tmp_path / "bad.tsv"
    data.write_text(text)
    assert main(["train", "seq2seq", "--train", str(data), "--valid", str(data), "--max-steps", "1",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnlab: error:") and message in err[0], err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_resume_a_run_from_before_encoding(run, tmp_path, capsys):
    """A run made before the encoding field (no such key in its config) resumes; a new run records
    its encoding, so --encoding on its resume is checked like any task flag."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    assert config["task_config"]["encoding"] == "utf-8"
    del config["task_config"]["encoding"]
    (copy / "config.json").write_text(json.dumps(config))
    assert main(["train", "seq2seq", "--resume", str(copy), "--max-steps", "3", "--quiet"]) == 0
    assert main(["train", "seq2seq", "--resume", str(run), "--encoding", "cp1252", "--max-steps", "3", "--quiet"]) == 1
    assert "--encoding 'cp1252' (the run has 'utf-8')" in capsys.readouterr().err


def test_resume_refuses_another_tasks_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"task": "lm", "task_config": {}, "train_config": {}}))
    assert main(["train", "seq2seq", "--resume", str(tmp_path), "--max-steps", "10", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected a run of task 'seq2seq', got a 'lm' run" in err, err
    assert not (tmp_path / "checkpoints").exists()


def test_resume_refuses_changed_flags(run, tmp_path, capsys):
    """A resumed run keeps its data, model and training flags: those that say otherwise are one
    line naming all of them."""
    other = tmp_path / "other.tsv"
    other.write_text("source\ttarget\n" + "".join(f"{w}\t{w}\n" for w in WORDS))
    assert main(["train", "seq2seq", "--resume", str(run), "--hidden-size", "999", "--cell", "gru", "--attention",
                 "none", "--train", str(other), "--lr", "0.5", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for named in ("--hidden-size 999 (the run has 16)", "--cell 'gru' (the run has 'lstm')",
                  "--attention 'none' (the run has 'general')", "--lr 0.5 (the run has 0.002)"):
        assert named in err, err
    # on/off flags are named as typed, with how the run was trained (not as the config's inverse value)
    assert main(["train", "seq2seq", "--resume", str(run), "--no-input-feeding", "--unidirectional", "--tied",
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for named in ("--unidirectional (the run was trained with --bidirectional)",
                  "--no-input-feeding (the run was trained without --no-input-feeding)",
                  "--tied (the run was trained without --tied)"):
        assert named in err, err
    assert main(["train", "seq2seq", "--resume", str(run), "--train", str(other), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training data 'train'" in err, err
    assert "expected the data the run was trained on" in err, err
    # The run's own settings given again are accepted (and continue it); a copy keeps the fixture's run as it was.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["train", "seq2seq", "--resume", str(copy), "--hidden", "16", "--embed", "8", "--batch-size", "8",
                 "--max-steps", "3", "--quiet"]) == 0


def test_train_with_encoding(tmp_path, capsys):
    """A cp1252 pairs file: refused in one line without --encoding, read with it, and the run reads it so again."""
    data = tmp_path / "cp.tsv"
    data.write_bytes(("source\ttarget\n" + "".join(f"{w}€\t€{w[::-1]}\n" for w in WORDS)).encode("cp1252"))
    out = tmp_path / "run"
    flags = ["--train", str(data), "--embed", "8", "--hidden", "16", "--batch-size", "8", "--max-steps", "2",
             "--out", str(out), "--no-report", "--quiet"]
    assert main(["train", "seq2seq", *flags]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected utf-8 text" in err and "pass --encoding" in err, err
    assert not (out / "checkpoints").exists()
    assert main(["train", "seq2seq", *flags, "--encoding", "cp1252", "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["task_config"]["encoding"] == "cp1252"
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert main(["train", "seq2seq", "--resume", str(out), "--encoding", "latin-1", "--quiet"]) == 1
    assert "--encoding 'latin-1' (the run has 'cp1252')" in capsys.readouterr().err
    assert main(["train", "seq2seq", "--resume", str(out), "--encoding", "cp1252", "--max-steps", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["translate", str(out), "abc€"]) == 0
    assert "never saw" not in capsys.readouterr().err      # "€" was read as the file's character


def test_attention_plot_never_replaces_the_runs_training_data(tmp_path, capsys) -> None:
    from rnnlab.cli.main import main
    from tests.conftest import reversal_seq2seq_run

    run = reversal_seq2seq_run(tmp_path)
    data = tmp_path / "rev.tsv"
    before = data.read_bytes()
    capsys.readouterr()
    assert main(["translate", str(run), "abc", "--show-attention", "--out", str(data), "--force"]) != 0
    assert "the run's training data" in capsys.readouterr().err and data.read_bytes() == before


@pytest.mark.parametrize("flag", ["--valid", "--test"])
def test_a_missing_pairs_file_is_named_by_its_flag(tmp_path, capsys, flag):
    data = tmp_path / "pairs.tsv"
    data.write_text("source\ttarget\nabc\tcba\nbca\tacb\n")
    assert main(["train", "seq2seq", "--train", str(data), flag, str(tmp_path / "nosuch.tsv"), "--max-steps", "1",
                 "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert f"{flag} (seq2seq {flag[2:]}): expected an existing file, got " in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
