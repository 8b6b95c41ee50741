"""Text for language models: reading files, tokenising, the vocabulary, splits.

Two levels of tokens:

* ``char``: every character is a token, newlines included (karpathy/char-rnn, d2l).
* ``word``: each line is split on whitespace and closed by ``<eos>``, as in
  pytorch/examples' word_language_model, so WikiText-2 gives its published counts
  (2,088,628 training tokens, a vocabulary of 33,278 over the three splits).

The vocabulary is built over *all* splits of a corpus (as pytorch/examples and d2l do), so
a held-out split never contains a token the model cannot name; ``min_freq`` then maps rare
tokens to ``<unk>``. It is saved as JSON with every checkpoint (:meth:`Vocab.to_json`).

Every problem a user can cause with a file is a :class:`~rnnlab.errors.DataError` that names
the file and what was wrong, raised before any model is built.
"""

from __future__ import annotations

import codecs
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from rnnlab.data.encodings import foreign_bom
from rnnlab.errors import ConfigError, DataError, expected

LEVELS = ("char", "word")
UNK = "<unk>"
EOS = "<eos>"
SPLITS = ("train", "valid", "test")
# Names accepted for each split inside a folder, first match wins. The wikitext names are the
# ones in Salesforce's original archives (wiki.train.tokens, ...).
_SPLIT_FILES = {
    "train": ("train.txt", "wiki.train.tokens", "train"),
    "valid": ("valid.txt", "validation.txt", "val.txt", "wiki.valid.tokens", "valid"),
    "test": ("test.txt", "wiki.test.tokens", "test"),
}


# --------------------------------------------------------------------------- reading files


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """The whole file as ``str`` with ``\\r\\n`` turned into ``\\n``.

    Raises DataError for a missing file, an empty or whitespace-only file, and bytes that are
    not valid in ``encoding`` (naming the byte offset, the line and the ``--encoding`` flag).
    """
    p = Path(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(expected("--encoding", "a codec Python knows (utf-8, latin-1, cp1252, ...)", repr(encoding))) from None
    if not p.exists():
        raise DataError(expected("text file", "an existing file", f"{str(p)!r}, which does not exist"))
    if p.is_dir():
        raise DataError(expected("text file", "a file", f"the folder {str(p)!r}"))
    raw = p.read_bytes()

    bom = foreign_bom(raw, encoding)
    if bom:
        raise DataError(f"text file {str(p)!r}: expected valid {encoding} bytes, got a {bom.upper()} file (it starts "
                        f"with a {bom.upper()} byte-order mark); pass --encoding {bom}, or save the file as UTF-8")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : max(exc.end, exc.start + 1)]
        raise DataError(
            f"text file {str(p)!r}: expected valid {encoding} bytes, got {bad!r} at byte offset {exc.start} "
            f"(line {line}); pass --encoding with the file's encoding (for example --encoding latin-1)"
        ) from None
    text = text.replace("\r\n", "\n")
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark (Notepad): not part of the text
        text = text[1:]
    if not text.strip():
        got = "an empty file" if not raw else f"only whitespace ({len(raw)} bytes)"
        raise DataError(expected(f"text file {str(p)!r}", "some text", got))
    return text


# --------------------------------------------------------------------------- tokens


def tokenize(text: str, level: str) -> list[str]:
    """Characters, or whitespace-separated words with ``<eos>`` closing every line.

    >>> tokenize("to be\\nor", "word")
    ['to', 'be', '<eos>', 'or', '<eos>']
    >>> tokenize("ab\\n", "char")
    ['a', 'b', '\\n']
    """
    if level == "char":
        return list(text)
    if level == "word":
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # a final newline closes the last line; it does not open an empty one
        out: list[str] = []
        for line in lines:
            out.extend(line.split())
            out.append(EOS)
        return out
    raise ConfigError(expected("level", " or ".join(LEVELS), repr(level)))


def detokenize(tokens: Iterable[str], level: str) -> str:
    """The inverse of :func:`tokenize` up to whitespace: words joined by spaces, ``<eos>`` as newline."""
    if level == "char":
        return "".join(tokens)
    out: list[str] = []
    for tok in tokens:
        out.append("\n" if tok == EOS else tok + " ")
    return "".join(out)


def check_some_kept(counts: Counter, kept: Sequence[str], min_freq: int, specials: Sequence[str] = ()) -> None:
    """ConfigError when ``--min-freq`` leaves no token of the data (``specials`` aside) in the
    vocabulary: all would be ``<unk>``, and the model would learn nothing but that."""
    if kept:
        return
    ranked = [(t, c) for t, c in counts.most_common() if t not in specials]
    if ranked:
        token, most = ranked[0]
        raise ConfigError(expected("--min-freq", f"at most {most} (the most frequent token, {token!r}, occurs "
                                   f"{most} times)", f"{min_freq}: every token would be <unk>"))


@dataclass
class Vocab:
    """Token <-> id. Specials first (``<unk>``, ``<eos>`` for words), then by falling frequency.

    ``unk`` is None for a character vocabulary where no character was dropped: then an unknown
    character is an error (the caller names it) rather than silently becoming ``<unk>``.
    """

    level: str
    itos: list[str]
    unk: str | None = None
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ConfigError(expected("vocab level", " or ".join(LEVELS), repr(self.level)))
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError(expected("vocabulary", "distinct tokens", f"{len(self.itos) - len(self.stoi)} duplicates"))
        if self.unk is not None and self.unk not in self.stoi:
            raise DataError(expected("vocabulary", f"to contain its unknown token {self.unk!r}", "no such token"))

    @classmethod
    def build(cls, tokens: Iterable[str], level: str, min_freq: int = 1) -> "Vocab":
        """Vocabulary of ``tokens``; those seen fewer than ``min_freq`` times map to ``<unk>``."""
        if min_freq < 1:
            raise ConfigError(expected("min_freq", "an integer >= 1", min_freq))
        counts = Counter(tokens)
        specials = [UNK, EOS] if level == "word" else []
        kept = [t for t, c in counts.items() if c >= min_freq and t not in specials]
        check_some_kept(counts, kept, min_freq, specials)
        if level == "char" and len(kept) < len([t for t in counts if t not in specials]):
            specials = [UNK]  # something was dropped: it needs a name
        # Sorted by (-count, token) so the ids do not depend on dict or file order quirks.
        kept.sort(key=lambda t: (-counts[t], t))
        unk = UNK if UNK in specials else None
        return cls(level=level, itos=specials + kept, unk=unk)

    def __len__(self) -> int:
        return len(self.itos)

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """Distinct tokens of ``tokens`` not in the vocabulary, in order of appearance."""
        seen: dict[str, None] = {}
        for t in tokens:
            if t not in self.stoi:
                seen.setdefault(t, None)
        return list(seen)

    def encode(self, tokens: Sequence[str], what: str = "text") -> torch.Tensor:
        """Ids as a 1-D int64 tensor. Unknown tokens become ``<unk>``; without one, DataError."""
        if self.unk is None:
            missing = self.unknown(tokens)
            if missing:
                shown = ", ".join(repr(t) for t in missing[:20]) + (" ..." if len(missing) > 20 else "")
                raise DataError(
                    expected(what, f"only characters in the model's vocabulary of {len(self)}",
                             f"{len(missing)} unknown: {shown}")
                )
            return torch.tensor([self.stoi[t] for t in tokens], dtype=torch.long)
        u = self.stoi[self.unk]
        return torch.tensor([self.stoi.get(t, u) for t in tokens], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "itos": list(self.itos), "unk": self.unk}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Vocab":
        if not isinstance(d, dict) or set(d) != {"level", "itos", "unk"}:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise DataError(expected("saved vocabulary", "keys ['itos', 'level', 'unk']", got))
        return cls(level=d["level"], itos=list(d["itos"]), unk=d["unk"])


# --------------------------------------------------------------------------- corpora

_NON_LETTERS = re.compile("[^A-Za-z]+")


def preprocess(text: str, how: str) -> str:
    """``"none"`` keeps the text; ``"d2l"`` is d2l's Time Machine cleaning (§9.2): every run of
    non-letters (newlines included) becomes one space and letters are lower-cased, leaving a
    27-character alphabet, so d2l's perplexities can be reproduced.

    >>> preprocess("The Time-Machine,\\n by H. G.", "d2l")
    'the time machine by h g '
    """
    if how == "none":
        return text
    if how == "d2l":
        return _NON_LETTERS.sub(" ", text).lower()
    raise ConfigError(expected("preprocess", "none or d2l", repr(how)))



@dataclass
class Corpus:
    """The three splits of a text, and where they came from (saved in the run's metadata)."""

    train: str
    valid: str
    test: str
    source: dict[str, Any]

    def split(self, name: str) -> str:
        if name not in SPLITS:
            raise ConfigError(expected("split", " or ".join(SPLITS), repr(name)))
        return getattr(self, name)


def contiguous_split(text: str, fractions: Sequence[float]) -> tuple[list[str], dict[str, Any]]:
    """Cut ``text`` into train/valid/test at the given fractions of its characters.

    Each cut moves forward to the next line start (if one is within reach) so that no line is
    split between two parts. Returns the parts and a record of the cut positions, which is
    saved with the run so the split can be reproduced and audited.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6 or fractions[0] <= 0:
        raise ConfigError(expected("split fractions", "three numbers >= 0 summing to 1 with train > 0", list(fractions)))
    n = len(text)
    cuts = []
    acc = 0.0
    for f in fractions[:2]:
        acc += f
        c = int(round(acc * n))
        nl = text.find("\n", c)
        # Snap to a line start when it costs less than 1% of the text; otherwise cut mid-line.
        if nl != -1 and nl + 1 - c <= max(1, n // 100):
            c = nl + 1
        cuts.append(min(max(c, cuts[-1] if cuts else 0), n))
    bounds = [0, *cuts, n]
    parts = [text[bounds[i] : bounds[i + 1]] for i in range(3)]
    record = {
        "kind": "contiguous",
        "fractions": [float(f) for f in fractions],
        "char_ranges": {s: [bounds[i], bounds[i + 1]] for i, s in enumerate(SPLITS)},
    }
    return parts, record


def find_split_files(folder: str | os.PathLike) -> dict[str, Path] | None:
    """``{split: path}`` if ``folder`` holds train and valid (and test) files, None if it holds none."""
    d = Path(folder)
    found: dict[str, Path] = {}
    for split, names in _SPLIT_FILES.items():
        for name in names:
            if (d / name).is_file():
                found[split] = d / name
                break
    if not found:
        return None
    missing = [s for s in SPLITS if s not in found]
    if missing:
        raise DataError(
            expected(f"text folder {str(d)!r}", "files for train, valid and test (e.g. train.txt, valid.txt, test.txt)",
                     f"none for {', '.join(missing)}")
        )
    return found


def load_text_corpus(
    path: str | os.PathLike, encoding: str = "utf-8", split: Sequence[float] = (0.9, 0.05, 0.05)
) -> Corpus:
    """A corpus from a file (split contiguously) or from a folder with train/valid/test files."""
    p = Path(path)
    if p.is_dir():
        files = find_split_files(p)
        if files is None:
            raise DataError(
                expected(f"text folder {str(p)!r}", "train/valid/test files (train.txt, valid.txt, test.txt)",
                         "no such files")
            )
        parts = {s: read_text(files[s], encoding) for s in SPLITS}
        source = {"kind": "folder", "path": str(p), "files": {s: str(f) for s, f in files.items()},
                  "encoding": encoding, "split": {"kind": "files"}}
        return Corpus(**parts, source=source)
    text = read_text(p, encoding)
    (train, valid, test), record = contiguous_split(text, split)
    return Corpus(train, valid, test, source={"kind": "file", "path": str(p), "encoding": encoding, "split": record})


def corpus_from_files(files: dict[str, Path], encoding: str, split: Sequence[float], source: dict[str, Any]) -> Corpus:
    """A corpus from a named data set's files: its own split when it has one, else contiguous."""
    if set(files) >= set(SPLITS):
        parts = {s: read_text(files[s], encoding) for s in SPLITS}
        return Corpus(**parts, source={**source, "split": {"kind": "files"}})
    (only,) = files.values()
    (train, valid, test), record = contiguous_split(read_text(only, encoding), split)
    return Corpus(train, valid, test, source={**source, "split": record})


def check_long_enough(n_tokens: int, bptt: int, batch_size: int, what: str, max_tokens: int | None = None) -> None:
    """Training needs ``bptt × batch_size + 1`` tokens: one full chunk for every batch row plus the
    target shift. ``max_tokens``: the cap the text was cut to, named in the advice when given."""
    need = bptt * batch_size + 1
    if n_tokens < need:
        cap = f"a larger --max-tokens (now {max_tokens})" if max_tokens is not None else "a longer text"
        raise DataError(
            f"{what}: expected at least bptt × batch_size + 1 = {bptt} × {batch_size} + 1 = {need} tokens, "
            f"got {n_tokens}; use {cap} or a smaller --bptt / --batch-size"
        )
