"""Source/target pairs for sequence-to-sequence models: reading files, tokens, vocabularies, batches.

A pairs file is a CSV, TSV or JSON Lines table (read by :func:`rnnlab.data.tables.read_table`)
with a source column and a target column, or a header-less TSV whose first two fields are the
source and the target (the layout of the Tatoeba/manythings sentence pairs). Every row must have
non-empty text on both sides; the error names the file, the line and the column.

Tokens, chosen per side (``tokens=``):

* ``char``: every character is a token (transliteration, grapheme-to-phoneme sources, dates).
* ``word``: whitespace-separated words (phoneme sequences, pre-tokenised text).
* ``subword``: a byte-pair-encoding vocabulary trained on the training texts by Hugging Face's
  ``tokenizers`` library (optional extra ``seq2seq``), with SentencePiece-style ``▁`` marking
  word starts so that decoding restores the spaces.

A :class:`Vocab` puts ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` at ids 0..3, then the tokens by
falling frequency. Tokens not in it (unseen at training, or rarer than ``min_freq``) become
``<unk>``; the :class:`PairCodec` counts them, so that the caller can report how many inputs held
tokens the model cannot see. Sources are closed by ``<eos>``; decoder inputs open with ``<bos>``
and targets close with ``<eos>`` (:func:`target_io`).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from rnnlab.data.tables import Table, _read_text, detect_format, read_table
from rnnlab.data.text import check_some_kept
from rnnlab.errors import ConfigError, DataError, expected, optional_module
from rnnlab.nn.seq2seq import BOS_ID, EOS_ID, PAD_ID, UNK_ID  # noqa: F401 (the vocabulary's ids)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
TOKEN_KINDS = ("char", "word", "subword")
SPLITS = ("train", "valid", "test")


# ----------------------------------------------------------------------------- pairs


@dataclass
class Pairs:
    """Parallel lists of source and target texts; ``lines[i]`` is the file line of pair ``i``
    (0 for pairs that were generated rather than read)."""

    source: list[str]
    target: list[str]
    lines: list[int] = field(default_factory=list)
    origin: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.source) != len(self.target):
            raise DataError(expected(f"{self.origin}: targets", f"one per source ({len(self.source)})", len(self.target)))
        if not self.lines:
            self.lines = [0] * len(self.source)

    def __len__(self) -> int:
        return len(self.source)

    def grouped(self) -> tuple[list[str], list[list[str]]]:
        """Distinct sources in order of first appearance, each with every target it has.

        Scoring against all of them is how a word with several pronunciations is judged: the
        output is right if it matches any of the references."""
        refs: dict[str, list[str]] = {}
        for s, t in zip(self.source, self.target):
            r = refs.setdefault(s, [])
            if t not in r:
                r.append(t)
        return list(refs), list(refs.values())


def _column(table: Table, col: str | int, role: str) -> int:
    if isinstance(col, bool) or not isinstance(col, (str, int)):
        raise ConfigError(expected(f"{role} column", "a name or a 0-based index", repr(col)))
    if isinstance(col, int):
        if not 0 <= col < len(table.columns):
            raise DataError(expected(f"{table.path}: {role} column index", f"0..{len(table.columns) - 1}", col))
        return col
    return table.col(col, f"{role} column")


def _read_headerless(path: str, delimiter: str, encoding: str = "utf-8") -> Table:
    """A TSV/CSV without a header: columns are named by position, ``"0"``, ``"1"``, ..."""
    text = _read_text(path, encoding)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    cells: list[list[Any]] = []
    lines: list[int] = []
    start = 1
    for row in reader:
        line, start = start, reader.line_num + 1
        if not row:
            raise DataError(f"{path}, line {line}: expected a source and a target, got an empty line")
        cells.append(row)
        lines.append(line)
    width = max(len(r) for r in cells)     # a short row then reads as a missing value on its line
    return Table(path, [str(i) for i in range(width)], cells, lines)


def read_pairs(path: str | os.PathLike, source: str | int = "source", target: str | int = "target",
               fmt: str = "auto", header: bool = True, encoding: str = "utf-8") -> Pairs:
    """Pairs from a CSV/TSV/JSONL file; ``source``/``target`` name the columns (or give 0-based
    positions). With ``header=False`` a CSV/TSV has no header row and the defaults become the
    first two fields. ``encoding`` is the file's text encoding (utf-16, cp1252, latin-1, ...).

    Raises DataError for a missing file or column, an empty line or cell, bytes that are not
    ``encoding`` text, and a JSON value that is not a string.
    """
    path = str(path)
    kind = detect_format(path, fmt)
    if header or kind == "jsonl":
        table = read_table(path, kind, encoding)
    else:
        table = _read_headerless(path, "\t" if kind == "tsv" else ",", encoding)
        source = 0 if source == "source" else source
        target = 1 if target == "target" else target
    cols = {role: _column(table, c, role) for role, c in (("source", source), ("target", target))}
    out: dict[str, list[str]] = {"source": [], "target": []}
    for i, row in enumerate(table.cells):
        for role, j in cols.items():
            name = table.columns[j]
            value = row[j] if j < len(row) else None
            if value is None:
                raise DataError(f"{table.where(i, name)}: expected {role} text, got no value")
            if not isinstance(value, str):
                raise DataError(f"{table.where(i, name)}: expected {role} text (a string), got {type(value).__name__} {value!r}")
            value = value.strip()
            if not value:
                raise DataError(f"{table.where(i, name)}: expected {role} text, got an empty cell")
            out[role].append(value)
    return Pairs(out["source"], out["target"], list(table.lines), path)


# ----------------------------------------------------------------------------- tokens


class Tokenizer:
    """Text <-> token strings. ``kind`` is one of ``char``, ``word``, ``subword``."""

    kind = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind}


class WordTokenizer(Tokenizer):
    kind = "word"

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)


class SubwordTokenizer(Tokenizer):
    """Byte-pair encoding from the ``tokenizers`` library, trained by :meth:`train`."""

    kind = "subword"

    def __init__(self, model: Any) -> None:
        self.model = model   # a tokenizers.Tokenizer

    @staticmethod
    def _lib():
        return optional_module("tokenizers", "tokens='subword'", "the tokenizers package (pip install 'rnnlab[seq2seq]')")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> "SubwordTokenizer":
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ConfigError(expected("subword vocab_size", "an int >= 1", repr(vocab_size)))
        tk = cls._lib()
        model = tk.Tokenizer(tk.models.BPE(unk_token=UNK))
        model.normalizer = tk.normalizers.NFC()
        model.pre_tokenizer = tk.pre_tokenizers.Metaspace()
        model.decoder = tk.decoders.Metaspace()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                         special_tokens=[UNK], show_progress=False)
        model.train_from_iterator(list(texts), trainer=trainer)
        return cls(model)

    def tokenize(self, text: str) -> list[str]:
        return self.model.encode(text).tokens

    def detokenize(self, tokens: Sequence[str]) -> str:
        ids = [self.model.token_to_id(t) for t in tokens]
        return self.model.decode([i for i in ids if i is not None])

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model.to_str()}


def make_tokenizer(kind: str, texts: Iterable[str] = (), vocab_size: int = 8000) -> Tokenizer:
    """A tokenizer of ``kind``; ``subword`` is trained on ``texts``."""
    if kind == "char":
        return Tokenizer()
    if kind == "word":
        return WordTokenizer()
    if kind == "subword":
        return SubwordTokenizer.train(texts, vocab_size)
    raise ConfigError(expected("tokens", " or ".join(TOKEN_KINDS), repr(kind)))


def tokenizer_from_json(d: dict[str, Any]) -> Tokenizer:
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "subword":
        return SubwordTokenizer(SubwordTokenizer._lib().Tokenizer.from_str(d["model"]))
    if kind in ("char", "word"):
        return make_tokenizer(kind)
    raise DataError(expected("saved tokenizer kind", " or ".join(TOKEN_KINDS), repr(kind)))


# ----------------------------------------------------------------------------- vocabulary


@dataclass
class Vocab:
    """Token <-> id with ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` at ids 0, 1, 2, 3."""

    itos: list[str]
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.itos[:4]) != SPECIALS:
            raise DataError(expected("vocabulary", f"{list(SPECIALS)} first", self.itos[:4]))
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError(expected("vocabulary", "distinct tokens", f"{len(self.itos) - len(self.stoi)} duplicates"))

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        """Tokens seen at least ``min_freq`` times, most frequent first (ties by token, so ids
        do not depend on file order quirks), at most ``max_size`` besides the specials."""
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ConfigError(expected("min_freq", "an int >= 1", repr(min_freq)))
        counts: Counter[str] = Counter()
        for toks in token_lists:
            counts.update(toks)
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        check_some_kept(counts, kept, min_freq, SPECIALS)
        if max_size is not None:
            kept = kept[:max_size]
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str], unknown: Counter | None = None) -> list[int]:
        """Ids of ``tokens``; those not in the vocabulary become ``<unk>`` and are counted in ``unknown``."""
        ids = []
        for t in tokens:
            i = self.stoi.get(t)
            if i is None:
                i = UNK_ID
                if unknown is not None:
                    unknown[t] += 1
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``, stopping at the first ``<eos>`` and leaving out ``<pad>``/``<bos>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(self.itos[i])
        return out

    def to_json(self) -> dict[str, Any]:
        return {"itos": list(self.itos)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Vocab":
        if not isinstance(d, dict) or set(d) != {"itos"}:
            raise DataError(expected("saved vocabulary", "keys ['itos']", sorted(d) if isinstance(d, dict) else type(d).__name__))
        return cls(list(d["itos"]))


# ----------------------------------------------------------------------------- codec


@dataclass
class Encoded:
    """Ids of a list of texts, and the tokens that were not in the vocabulary with their counts."""

    ids: list[list[int]]
    unknown: Counter = field(default_factory=Counter)
    texts_with_unknown: int = 0


class PairCodec:
    """Tokenizers and vocabularies of both sides; ``shared`` means one vocabulary for both.

    Built from training pairs by :meth:`build`, saved with :meth:`to_json` so that a model can
    be used again with exactly the ids it was trained with.
    """

    def __init__(self, source_tokenizer: Tokenizer, target_tokenizer: Tokenizer,
                 source_vocab: Vocab, target_vocab: Vocab, shared: bool = False) -> None:
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        self.source_vocab, self.target_vocab = source_vocab, target_vocab
        self.shared = shared

    @classmethod
    def build(cls, train: Pairs, source_tokens: str = "char", target_tokens: str = "char", shared: bool = False,
              min_freq: int = 1, subword_vocab_size: int = 8000) -> "PairCodec":
        if shared and source_tokens != target_tokens:
            raise ConfigError(expected("shared vocabulary", "the same tokens on both sides",
                                       f"source {source_tokens!r} and target {target_tokens!r}"))
        if shared:
            tok = make_tokenizer(source_tokens, train.source + train.target, subword_vocab_size)
            vocab = Vocab.build([tok.tokenize(t) for t in train.source + train.target], min_freq)
            return cls(tok, tok, vocab, vocab, shared=True)
        stok = make_tokenizer(source_tokens, train.source, subword_vocab_size)
        ttok = make_tokenizer(target_tokens, train.target, subword_vocab_size)
        svocab = Vocab.build([stok.tokenize(t) for t in train.source], min_freq)
        tvocab = Vocab.build([ttok.tokenize(t) for t in train.target], min_freq)
        return cls(stok, ttok, svocab, tvocab)

    def encode_sources(self, texts: Sequence[str], max_len: int | None = None, origin: str = "source",
                       lines: Sequence[int] = ()) -> Encoded:
        """Source ids, each closed by ``<eos>``. A source longer than ``max_len`` tokens (with its
        ``<eos>``) is a DataError naming it (by its file line, from ``lines``, where given), not a
        silent truncation."""
        return self._encode(texts, self.source_tokenizer, self.source_vocab, max_len, origin, True, lines)

    def encode_targets(self, texts: Sequence[str], max_len: int | None = None, origin: str = "target",
                       lines: Sequence[int] = ()) -> Encoded:
        """Target ids without ``<bos>``/``<eos>`` (:func:`target_io` adds them; ``max_len`` counts neither)."""
        return self._encode(texts, self.target_tokenizer, self.target_vocab, max_len, origin, False, lines)

    @staticmethod
    def _encode(texts, tok: Tokenizer, vocab: Vocab, max_len, origin, close, lines=()) -> Encoded:
        enc = Encoded([])
        def where(k: int) -> str:   # for the errors only
            return f"{origin} on line {lines[k]}" if k < len(lines) and lines[k] else f"{origin} {k + 1}"

        for k, text in enumerate(texts):
            if not text.strip():
                raise DataError(expected(where(k), "non-empty text", "an empty line"))
            seen = sum(enc.unknown.values())
            ids = vocab.encode(tok.tokenize(text), enc.unknown)
            enc.texts_with_unknown += sum(enc.unknown.values()) > seen
            if close:
                ids.append(EOS_ID)
            if max_len is not None and len(ids) > max_len:
                counted = "with its <eos>" if close else "without <bos>/<eos>"
                raise DataError(expected(f"{where(k)} ({text[:40]!r})", f"at most {max_len} tokens {counted} (the "
                                         f"model's maximum)", len(ids)))
            enc.ids.append(ids)
        return enc

    def decode_target(self, ids: Iterable[int]) -> str:
        return self.target_tokenizer.detokenize(self.target_vocab.decode(ids))

    def source_tokens(self, text: str) -> list[str]:
        """The source's tokens as the model sees them (``<unk>`` for unknown ones), with ``<eos>``: attention map labels."""
        return [t if t in self.source_vocab.stoi else UNK for t in self.source_tokenizer.tokenize(text)] + [EOS]

    def to_json(self) -> dict[str, Any]:
        return {"source_tokenizer": self.source_tokenizer.to_json(), "target_tokenizer": self.target_tokenizer.to_json(),
                "source_vocab": self.source_vocab.to_json(), "target_vocab": self.target_vocab.to_json(),
                "shared": self.shared}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PairCodec":
        keys = {"source_tokenizer", "target_tokenizer", "source_vocab", "target_vocab", "shared"}
        if not isinstance(d, dict) or set(d) != keys:
            raise DataError(expected("saved pair codec", f"keys {sorted(keys)}", sorted(d) if isinstance(d, dict) else type(d).__name__))
        return cls(tokenizer_from_json(d["source_tokenizer"]), tokenizer_from_json(d["target_tokenizer"]),
                   Vocab.from_json(d["source_vocab"]), Vocab.from_json(d["target_vocab"]), bool(d["shared"]))


# ----------------------------------------------------------------------------- batches


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (B, T) int64 padded with pad_id, lengths (B,) int64)``."""
    if not seqs:
        raise DataError(expected("batch", "at least one sequence", "none"))
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out, lengths


def target_io(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoder inputs ``<bos> y`` and outputs ``y <eos>``, both (B, T+1) padded with ``<pad>``,
    and their lengths. The loss ignores ``<pad>`` positions of the outputs."""
    inputs, lengths = pad_batch([[BOS_ID, *s] for s in seqs])
    outputs, _ = pad_batch([[*s, EOS_ID] for s in seqs])
    return inputs, outputs, lengths
