"""Text data for language models: reading, tokens, vocabulary, splits, named data sets, batching."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from rnnlab.data import registry
from rnnlab.data.lm_batches import LMBatching, batchify, eval_batches, lm_batches
from rnnlab.data.registry import DatasetSpec, RemoteFile, dataset_files, download
from rnnlab.data.text import (
    EOS,
    UNK,
    Vocab,
    check_long_enough,
    contiguous_split,
    detokenize,
    load_text_corpus,
    preprocess,
    read_text,
    tokenize,
)
from rnnlab.errors import ConfigError, DataError



# --------------------------------------------------------------------------- reading


def test_read_text_normalises_crlf(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"one\r\ntwo\r\n")
    assert read_text(p) == "one\ntwo\n"


@pytest.mark.parametrize("content, word", [(b"", "empty"), (b"  \n\t\n ", "whitespace")])
def test_empty_or_whitespace_file_is_an_error(tmp_path, content, word):
    p = tmp_path / "e.txt"
    p.write_bytes(content)
    with pytest.raises(DataError, match=word) as ei:
        read_text(p)
    assert str(p) in str(ei.value)


def test_undecodable_bytes_name_file_offset_line_and_flag(tmp_path):
    p = tmp_path / "latin.txt"
    p.write_bytes("first line\nsecond caf".encode() + b"\xe9 au lait\n")
    with pytest.raises(DataError) as ei:
        read_text(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert "byte offset 21" in msg and "line 2" in msg and "--encoding" in msg and "utf-8" in msg
    # ... and the flag it names does fix it.
    assert read_text(p, encoding="latin-1").endswith("café au lait\n")


def test_unknown_encoding_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="--encoding"):
        read_text(tmp_path / "x.txt", encoding="no-such-codec")
    with pytest.raises(DataError, match="does not exist"):
        read_text(tmp_path / "missing.txt")


# --------------------------------------------------------------------------- tokens and vocab


def test_word_tokens_close_lines_with_eos_and_round_trip():
    text = "the cat sat\n\n on  the mat \n"
    toks = tokenize(text, "word")
    assert toks == ["the", "cat", "sat", EOS, EOS, "on", "the", "mat", EOS]
    assert detokenize(toks, "word").split("\n") == ["the cat sat ", "", "on the mat ", ""]
    assert detokenize(tokenize("héllo\n", "char"), "char") == "héllo\n"


def test_vocab_orders_by_frequency_and_maps_rare_words_to_unk():
    toks = tokenize("a a a b b c\na b d\n", "word")
    v = Vocab.build(toks, "word", min_freq=2)
    assert v.itos == [UNK, EOS, "a", "b"]
    ids = v.encode(["a", "c", "zzz", EOS])
    assert ids.tolist() == [2, 0, 0, 1]
    assert v.decode(ids) == ["a", UNK, UNK, EOS]


def test_vocab_json_round_trip_is_exact():
    v = Vocab.build(list("hello world\n\u00e9"), "char")
    d = json.loads(json.dumps(v.to_json()))
    w = Vocab.from_json(d)
    assert w.itos == v.itos and w.stoi == v.stoi and w.level == "char" and w.unk is None
    v2 = Vocab.build(tokenize("x y z\n", "word"), "word")
    assert Vocab.from_json(json.loads(json.dumps(v2.to_json()))).stoi == v2.stoi
    with pytest.raises(DataError, match="keys"):
        Vocab.from_json({"itos": []})


def test_char_vocab_unknown_characters_are_named():
    v = Vocab.build(list("abc"), "char")
    with pytest.raises(DataError, match=r"2 unknown: 'é', 'Z'"):
        v.encode(list("abéZé"), "--prime")
    # With min_freq dropping characters, the vocabulary gets <unk> and maps them.
    v2 = Vocab.build(list("aaabbc"), "char", min_freq=2)
    assert v2.unk == UNK and v2.encode(list("cz")).tolist() == [0, 0]


def test_wikitext2_counts_match_pytorch_examples(shared_data):
    files = dataset_files("wikitext2", data_dir=shared_data)
    toks = {s: tokenize(read_text(p), "word") for s, p in files.items()}
    assert {s: len(t) for s, t in toks.items()} == {"train": 2088628, "valid": 217646, "test": 245569}
    assert len(Vocab.build(toks["train"] + toks["valid"] + toks["test"], "word")) == 33278


def test_d2l_preprocessing():
    assert preprocess("The Time Machine, by H. G. Wells [1898]\n\n\nI", "d2l") == "the time machine by h g wells i"
    with pytest.raises(ConfigError):
        preprocess("x", "nope")


# --------------------------------------------------------------------------- splits


def test_contiguous_split_is_recorded_and_snaps_to_lines():
    text = "".join(f"line {i:03d}\n" for i in range(200))
    (tr, va, te), rec = contiguous_split(text, (0.8, 0.1, 0.1))
    assert tr + va + te == text
    assert va.startswith("line ") and te.startswith("line ")
    r = rec["char_ranges"]
    assert text[r["valid"][0] : r["valid"][1]] == va and rec["kind"] == "contiguous"
    assert abs(len(tr) / len(text) - 0.8) < 0.01
    with pytest.raises(ConfigError):
        contiguous_split(text, (0.5, 0.6, 0.1))


def test_folder_with_split_files(tmp_path):
    for s in ("train", "valid", "test"):
        (tmp_path / f"{s}.txt").write_text(f"{s} words here\n")
    c = load_text_corpus(tmp_path)
    assert c.train.startswith("train") and c.test.startswith("test") and c.source["split"] == {"kind": "files"}
    (tmp_path / "test.txt").unlink()
    with pytest.raises(DataError, match="none for test"):
        load_text_corpus(tmp_path)


def test_too_short_names_both_numbers():
    with pytest.raises(DataError) as ei:
        check_long_enough(100, 35, 32, "training text")
    assert "1121" in str(ei.value) and "got 100" in str(ei.value)


# --------------------------------------------------------------------------- named data sets


def test_unknown_dataset_lists_known_ones(tmp_path):
    with pytest.raises(DataError) as ei:
        dataset_files("ptb", data_dir=tmp_path)
    for name in ("timemachine", "tinyshakespeare", "wikitext2"):
        assert name in str(ei.value)


def test_local_copy_is_found_in_data_dir_or_its_subfolder_and_verified(shared_data, tmp_path):
    a = dataset_files("timemachine", data_dir=shared_data)
    b = dataset_files("timemachine", data_dir=shared_data / "timemachine")
    assert a == b == {"all": shared_data / "timemachine" / "timemachine.txt"}
    with pytest.raises(DataError, match="no such files"):
        dataset_files("timemachine", data_dir=tmp_path)
    # A local copy that is not the pinned edition is refused, naming both checksums.
    (tmp_path / "timemachine.txt").write_text("The Time Machine, abridged\n")
    with pytest.raises(DataError, match="8424dbd9"):
        dataset_files("timemachine", data_dir=tmp_path)


def _fake_spec(tmp_path, payload: bytes, sha: str | None = None) -> DatasetSpec:
    src = tmp_path / "upstream.txt"
    src.write_bytes(payload)
    rf = RemoteFile("corpus.txt", src.as_uri(), sha or hashlib.sha256(payload).hexdigest(), len(payload))
    return DatasetSpec("fake", "fake", {"all": rf}, "char", "test corpus")


def test_download_to_cache_via_file_url(tmp_path, monkeypatch):
    spec = _fake_spec(tmp_path, b"hello world\n" * 10)
    monkeypatch.setitem(registry.DATASETS, "fake", spec)
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "cache"))
    paths = dataset_files("fake")
    assert paths["all"] == tmp_path / "cache" / "fake" / "corpus.txt"
    assert paths["all"].read_bytes() == b"hello world\n" * 10
    # Second call uses the cache: a fetcher that fails proves nothing is fetched again.
    def boom(url, out):
        raise AssertionError("fetched again")
    assert dataset_files("fake", fetch=boom) == paths
    assert [p.name for p in paths["all"].parent.iterdir()] == ["corpus.txt"]  # no temporary left


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    spec = _fake_spec(tmp_path, b"tampered\n", sha="0" * 64)
    monkeypatch.setitem(registry.DATASETS, "fake", spec)
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="sha256"):
        dataset_files("fake")
    assert list((tmp_path / "cache" / "fake").iterdir()) == []


def test_interrupted_download_leaves_no_partial_file(tmp_path):
    rf = RemoteFile("x.txt", "http://example.invalid/x.txt", "0" * 64, 10)

    def half_then_fail(url, out):
        out.write(b"half")
        raise OSError("connection reset")

    with pytest.raises(DataError, match="connection reset"):
        download(rf, tmp_path / "x.txt", fetch=half_then_fail)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- batching


def test_batchify_lays_out_contiguous_columns():
    b = batchify(torch.arange(10), 3)  # (3, 3), tail dropped
    assert b.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_sequential_batches_shapes_targets_and_continuity():
    ids = torch.arange(1000)
    cfg = LMBatching(bptt=7, batch_size=4, seed=3)
    batches = list(lm_batches(ids, cfg, epoch=0))
    assert batches[0]["reset"] and not any(b["reset"] for b in batches[1:])
    for b in batches:
        assert b["x"].shape[1] == 4 and b["x"].shape == b["y"].shape
        assert torch.equal(b["y"], b["x"] + 1)  # targets are the next token
    assert all(b["x"].shape[0] == 7 for b in batches[:-1])
    # Row r of batch k+1 continues row r of batch k: that is what makes carrying state right.
    for a, b in zip(batches, batches[1:]):
        assert torch.equal(b["x"][0], a["x"][-1] + 1)
    # Deterministic in (seed, epoch); the offset moves between epochs.
    again = list(lm_batches(ids, cfg, epoch=0))
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(batches, again))
    offsets = {int(next(lm_batches(ids, cfg, epoch=e))["x"][0, 0]) for e in range(10)}
    assert len(offsets) > 1


def test_random_sampling_resets_every_batch_and_is_seeded():
    ids = torch.arange(500)
    cfg = LMBatching(bptt=5, batch_size=4, sampling="random", seed=1)
    a = list(lm_batches(ids, cfg, 0))
    assert all(b["reset"] and b["x"].shape == (5, 4) for b in a)
    assert all(torch.equal(b["y"], b["x"] + 1) for b in a)
    starts = torch.cat([b["x"][0] for b in a])
    assert len(set(starts.tolist())) == len(starts)  # windows do not repeat
    assert [b["x"].tolist() for b in a] == [b["x"].tolist() for b in lm_batches(ids, cfg, 0)]
    assert [b["x"].tolist() for b in a] != [b["x"].tolist() for b in lm_batches(ids, cfg, 1)]


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_shards_together_are_the_whole_batch(sampling):
    ids = torch.arange(777)
    cfg = LMBatching(bptt=6, batch_size=6, sampling=sampling, seed=2)
    whole = list(lm_batches(ids, cfg, 4))
    shards = [list(lm_batches(ids, cfg, 4, rank=r, world_size=3)) for r in range(3)]
    for k, b in enumerate(whole):
        assert torch.equal(torch.cat([s[k]["x"] for s in shards], dim=1), b["x"])
    with pytest.raises(ConfigError, match="multiple"):
        next(lm_batches(ids, cfg, 0, rank=0, world_size=4))


def test_eval_batches_cover_the_stream_once():
    ids = torch.arange(103)
    ys = torch.cat([y.t().reshape(-1) for _, y in eval_batches(ids, 10, 4)])
    assert sorted(ys.tolist()) == list(range(1, 101))
    assert [x.shape[1] for x, _ in eval_batches(torch.arange(3), 10, 4)] == [2]


def test_batching_config_errors():
    with pytest.raises(ConfigError, match="bptt"):
        LMBatching(bptt=0)
    with pytest.raises(ConfigError, match="sampling"):
        LMBatching(sampling="shuffled")


def test_docstring_examples_run():
    import doctest

    import rnnlab.data.text as text_module

    result = doctest.testmod(text_module)
    assert result.attempted >= 3 and result.failed == 0


def test_a_min_freq_that_keeps_no_token_is_refused():
    toks = tokenize("the cat sat on the mat\n" * 3, "word")
    with pytest.raises(ConfigError, match=r"--min-freq: expected at most 6 \(the most frequent token, 'the', occurs "
                                          r"6 times\), got 7: every token would be <unk>"):
        Vocab.build(toks, "word", min_freq=7)
    assert Vocab.build(toks, "word", min_freq=6).itos == ["<unk>", "<eos>", "the"]

