"""Pairs files, tokens, vocabularies and batches for sequence-to-sequence models."""

from __future__ import annotations

import doctest
import json
from collections import Counter

import pytest
import torch

from rnnlab.data import pair_sets, pairs
from rnnlab.data.pairs import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, PairCodec, Pairs, Vocab, make_tokenizer, pad_batch,
                               read_pairs, target_io)
from rnnlab.errors import ConfigError, DataError


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_doctests():
    for mod in (pairs, pair_sets):
        assert doctest.testmod(mod).failed == 0


def test_read_tsv_csv_jsonl_and_headerless(tmp_path):
    tsv = _write(tmp_path, "a.tsv", "id\tsource\ttarget\n1\thello\tbonjour\n2\t good day \tbonne journée\n")
    got = read_pairs(tsv)
    assert got.source == ["hello", "good day"] and got.target == ["bonjour", "bonne journée"] and got.lines == [2, 3]
    csv_ = _write(tmp_path, "a.csv", 'word,phones\nread,R EH D\n"a, b",AH\n')
    assert read_pairs(csv_, source="word", target="phones").source == ["read", "a, b"]
    assert read_pairs(csv_, source=0, target=1).target == ["R EH D", "AH"]
    jl = _write(tmp_path, "a.jsonl", '{"src": "x", "tgt": "y"}\n\n{"src": "z", "tgt": "w"}\n')
    got = read_pairs(jl, source="src", target="tgt")
    assert got.source == ["x", "z"] and got.lines == [1, 3]
    bare = _write(tmp_path, "b.tsv", "Go.\tVa !\tCC-BY 2.0\nHi.\tSalut !\tCC-BY 2.0\n")
    got = read_pairs(bare, header=False)
    assert got.source == ["Go.", "Hi."] and got.target == ["Va !", "Salut !"]


def test_bad_files_give_one_line_errors(tmp_path):
    cases = [
        (_write(tmp_path, "m.tsv", "source\tother\na\tb\n"), {},
         "target column 'target' not found; expected one of ['source', 'other'], got 'target'"),
        (_write(tmp_path, "e.tsv", "source\ttarget\na\tb\nc\t \n"), {},
         "line 3, column 'target': expected target text, got an empty cell"),
        (_write(tmp_path, "n.jsonl", '{"source": "a", "target": 3}\n'), {},
         "line 1, column 'target': expected target text (a string), got int 3"),
        (_write(tmp_path, "k.jsonl", '{"source": "a", "target": "b"}\n{"source": "c"}\n'), {},
         "line 2, column 'target': expected target text, got no value"),
        (_write(tmp_path, "h.tsv", "a\tb\n\nc\td\n"), {"header": False},
         "line 2: expected a source and a target, got an empty line"),
        (_write(tmp_path, "o.tsv", "a\tb\nc\n"), {"header": False},
         "line 2, column '1': expected target text, got no value"),
        (_write(tmp_path, "z.tsv", ""), {}, "got an empty file"),
    ]
    for path, kw, msg in cases:
        with pytest.raises(DataError) as info:
            read_pairs(path, **kw)
        assert msg in str(info.value) and "\n" not in str(info.value), str(info.value)
    with pytest.raises(DataError, match="source column index: expected 0..1, got 5"):
        read_pairs(_write(tmp_path, "i.tsv", "a\tb\nc\td\n"), source=5)


def test_vocab_specials_frequency_order_and_unknowns():
    v = Vocab.build([list("abcab"), list("ba")], min_freq=2)
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert v.itos[4:] == ["a", "b"]                  # 'c' (seen once) is below min_freq
    unknown = Counter()
    assert v.encode(list("abcxx"), unknown) == [4, 5, UNK_ID, UNK_ID, UNK_ID]
    assert unknown == {"c": 1, "x": 2}
    assert v.decode([BOS_ID, 4, 5, EOS_ID, 4]) == ["a", "b"]
    assert Vocab.from_json(json.loads(json.dumps(v.to_json()))).itos == v.itos
    with pytest.raises(DataError, match="vocabulary: expected"):
        Vocab(["a", "<pad>", "<bos>", "<eos>", "<unk>"])


def test_codec_separate_and_shared_with_unknown_counts_and_max_len():
    train = Pairs(["read", "red"], ["R EH D", "R EH D"])
    codec = PairCodec.build(train, "char", "word")
    assert codec.source_vocab is not codec.target_vocab
    enc = codec.encode_sources(["rex", "dear", "zz"])
    assert enc.ids[0][-1] == EOS_ID and len(enc.ids[0]) == 4
    assert enc.unknown == {"x": 1, "z": 2} and enc.texts_with_unknown == 2
    assert codec.source_tokens("rex") == ["r", "e", "<unk>", "<eos>"]
    tgt = codec.encode_targets(["R EH D"])
    assert codec.decode_target(tgt.ids[0] + [EOS_ID, 5]) == "R EH D"
    with pytest.raises(DataError, match=r"source 2 \('dear'\): expected at most 4 tokens with its <eos> \(the model's maximum\), got 5"):
        codec.encode_sources(["red", "dear"], max_len=4)
    with pytest.raises(DataError, match=r"source on line 7 \('dear'\): expected at most 4 tokens with its <eos>"):
        codec.encode_sources(["red", "dear"], max_len=4, lines=[6, 7])
    with pytest.raises(DataError, match=r"target on line 3 \('R EH D'\): expected at most 2 tokens without <bos>/<eos>"):
        codec.encode_targets(["R EH D"], max_len=2, lines=[3])
    with pytest.raises(DataError, match="source 1: expected non-empty text, got an empty line"):
        codec.encode_sources([" "])
    shared = PairCodec.build(Pairs(["ab"], ["ba c"]), "char", "char", shared=True)
    assert shared.source_vocab is shared.target_vocab
    with pytest.raises(ConfigError, match="shared vocabulary: expected the same tokens on both sides"):
        PairCodec.build(train, "char", "word", shared=True)
    again = PairCodec.from_json(json.loads(json.dumps(codec.to_json())))
    assert again.encode_sources(["rex"]).ids == enc.ids[:1]


def test_subword_tokens_are_trained_by_the_tokenizers_library_and_round_trip():
    pytest.importorskip("tokenizers")
    texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 5
    tok = make_tokenizer("subword", texts, vocab_size=40)
    pieces = tok.tokenize("the cat sat")
    assert len(pieces) < len("the cat sat") and any(len(p) > 1 for p in pieces)
    for t in texts[:3] + ["the log sat"]:
        assert tok.detokenize(tok.tokenize(t)) == t
    codec = PairCodec.build(Pairs(texts, texts), "subword", "subword", shared=True, subword_vocab_size=40)
    again = PairCodec.from_json(json.loads(json.dumps(codec.to_json())))
    ids = again.encode_targets(["the cat sat"]).ids[0]
    assert again.decode_target(ids) == "the cat sat"


def test_pad_batch_and_target_io():
    ids, lengths = pad_batch([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
    inp, out, lengths = target_io([[5, 6], [7]])
    assert inp.tolist() == [[BOS_ID, 5, 6], [BOS_ID, 7, PAD_ID]]
    assert out.tolist() == [[5, 6, EOS_ID], [7, EOS_ID, PAD_ID]]
    assert lengths.tolist() == [3, 2] and inp.dtype == torch.long


def test_grouped_references():
    p = Pairs(["read", "a", "read", "read"], ["R EH D", "AH", "R IY D", "R EH D"])
    assert p.grouped() == (["read", "a"], [["R EH D", "R IY D"], ["AH"]])


def test_a_min_freq_that_keeps_no_token_is_refused():
    with pytest.raises(ConfigError, match=r"--min-freq: expected at most 3 \(the most frequent token, 'a', .*got 4"):
        Vocab.build([list("abcab"), list("ba")], min_freq=4)
