"""Sequence to sequence: read one sequence, write another (G2P, dates, transliteration, translation).

The model is :class:`rnnlab.nn.seq2seq.EncoderDecoder` (a bidirectional encoder, a decoder with
input feeding, additive/general/dot attention or Cho et al.'s fixed context vector); the data are
a pairs file (:func:`rnnlab.data.pairs.read_pairs`) or a named data set (``cmudict``, ``dates``).

Training is teacher forcing with cross-entropy over the target tokens (``<pad>`` positions
ignored), optionally label-smoothed; with ``scheduled_sampling = p`` each decoder input is, with
probability p, the model's own previous greedy output instead of the reference (Bengio et al.
2015, a fixed rate). Evaluation reports the teacher-forced loss (without smoothing) and scores
greedy outputs against every reference of each distinct source:

* ``exact``: exact match (the headline for ``dates``);
* ``g2p``: phoneme error rate ``per`` and word error rate ``wer`` (the headline for ``cmudict``);
* ``text``: exact match, token error rate, sacreBLEU's ``bleu`` and ``chrf`` (headline ``chrf``).

The codec (tokenizers and vocabularies) is part of the task's metadata, saved in config.json and
in every checkpoint, so a run folder translates on its own.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.data.pair_sets import PAIR_DATASETS, hash_split, load_pair_dataset
from rnnlab.data.pairs import PAD_ID, SPLITS, TOKEN_KINDS, PairCodec, Pairs, pad_batch, read_pairs, target_io
from rnnlab.errors import CheckpointError, ConfigError, DataError, DataWarning, expected, field_name, is_int_at_least
from rnnlab.metrics.sequence import (
    closest_reference, corpus_bleu, corpus_chrf, exact_match, g2p_scores, token_error_rate,
)
from rnnlab.nn.attention import ATTENTIONS
from rnnlab.nn.decoding import Hypothesis, beam_search, greedy_decode, next_token
from rnnlab.nn.seq2seq import EncoderDecoder
from rnnlab.outputs import atomic_path, check_output, commit
from rnnlab.report.html import escape, figure_to_img, pyplot, table
from rnnlab.tasks.cell_options import check_cell_options
from rnnlab.tasks.recurrent import CELLS
from rnnlab.train.rundir import load_run, read_run_config, run_data_files
from rnnlab.train.task import ReportSection, StepOutput, register_task

ATTENTION_KINDS = ("none",) + ATTENTIONS
METRICS = ("auto", "exact", "g2p", "text")
HEADLINE = {"exact": "exact", "g2p": "wer", "text": "chrf"}
# A data set's natural tokens and scores, used where the config says "auto".
DATASET_DEFAULTS = {"cmudict": ("char", "word", "g2p"), "dates": ("char", "char", "exact")}


# The flags of `rnnlab train seq2seq` that are spelled otherwise than their config field ("": none),
# for error messages (rnnlab.errors.field_name).
SEQ2SEQ_FLAGS = {"header": "--no-header", "embedding_size": "--embed", "input_feeding": "--no-input-feeding",
                 "tie_embeddings": "--tied", "cell_options": "--cell-option", "seed": "--data-seed"}

@dataclass
class Seq2SeqConfig:
    # --- data ---
    train: str = ""                    # pairs file (.tsv/.csv/.jsonl), or "" with a dataset
    valid: str = ""                    # held-out pairs; "" = a seeded valid_frac of train's distinct sources
    test: str = ""                     # optional test pairs, evaluated as split "test"
    dataset: str = ""                  # cmudict | dates (instead of files; splits come with it)
    dataset_size: int = 0              # dates: how many to generate (0 = the data set's default)
    format: str = "auto"               # csv | tsv | jsonl | auto (from the extension)
    source_col: str = "source"         # column names, or 0-based positions given as digits
    target_col: str = "target"
    header: bool = True                # False: a CSV/TSV whose first two fields are source and target
    encoding: str = "utf-8"            # of the pairs files (utf-16, cp1252, latin-1, ...)
    source_tokens: str = "auto"        # char | word | subword; auto: the data set's, char for files
    target_tokens: str = "auto"
    shared_vocab: bool = False         # one vocabulary (and embedding) for both sides
    min_freq: int = 1                  # rarer tokens become <unk>
    subword_vocab_size: int = 8000     # subword tokens: BPE vocabulary size
    max_source_len: int = 100          # tokens with <eos>; a longer source is an error, never cut
    max_target_len: int = 100          # tokens; also the decoding limit
    valid_frac: float = 0.1            # held out of train when there is no valid file
    # --- model (torch.nn's names for the recurrent stack) ---
    cell: str = "lstm"                 # lstm | gru | rnn
    embedding_size: int = 64
    hidden_size: int = 128             # encoder outputs and decoder state (half per direction if bidirectional)
    num_layers: int = 1
    bidirectional: bool = True
    attention: str = "general"         # none | additive | general | dot
    attention_size: int = 0            # additive attention's inner size (0 = hidden_size)
    input_feeding: bool = True
    dropout: float = 0.1
    tie_embeddings: bool = False
    cell_options: dict[str, Any] = field(default_factory=dict)  # rnnlab.nn.options.CellOptions fields; {} = torch.nn
    # --- training and scoring ---
    label_smoothing: float = 0.0
    scheduled_sampling: float = 0.0    # probability of feeding the model's own previous output
    batch_size: int = 64
    metrics: str = "auto"              # exact | g2p | text | auto (from the data set; text for files)
    seed: int = 0                      # batch order, the held-out part, scheduled sampling

    def __post_init__(self) -> None:
        def check(ok: bool, what: str, want: str, got: object) -> None:
            if not ok:
                raise ConfigError(expected(field_name("seq2seq", what, self, SEQ2SEQ_FLAGS), want, repr(got)))

        check(is_int_at_least(self.seed, 0), "seed", "an integer >= 0", self.seed)

        check(bool(self.train) != bool(self.dataset), "data", "a train file or a dataset (one of them)",
              f"train={self.train!r}, dataset={self.dataset!r}")
        check(not self.dataset or self.dataset in PAIR_DATASETS, "dataset", f"one of {sorted(PAIR_DATASETS)}",
              self.dataset)
        check(not (self.dataset and (self.valid or self.test)), "valid/test files", "none with a dataset "
              "(it has its own splits)", self.valid or self.test)
        check(self.cell in CELLS, "cell", f"one of {CELLS}", self.cell)
        check(self.attention in ATTENTION_KINDS, "attention", f"one of {ATTENTION_KINDS}", self.attention)
        check(self.metrics in METRICS, "metrics", f"one of {METRICS}", self.metrics)
        for side in ("source_tokens", "target_tokens"):
            check(getattr(self, side) in ("auto",) + TOKEN_KINDS, side, f"one of {('auto',) + TOKEN_KINDS}",
                  getattr(self, side))
        for name in ("embedding_size", "hidden_size", "num_layers", "batch_size", "min_freq", "subword_vocab_size",
                     "max_source_len", "max_target_len"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an integer >= 1", v)
        for name in ("dataset_size", "attention_size"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 0, name, "an integer >= 0", v)
        check(not self.dataset_size or self.dataset == "dates", "dataset_size",
              "0 unless the dataset is generated (dates)", self.dataset_size)
        check(not self.bidirectional or self.hidden_size % 2 == 0, "hidden_size",
              "an even number with a bidirectional encoder (half per direction)", self.hidden_size)
        for name in ("dropout", "label_smoothing", "scheduled_sampling"):
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, name, "a number in [0, 1)", v)
        check(0 < self.valid_frac < 1, "valid_frac", "a number in (0, 1)", self.valid_frac)
        self.cell_options = check_cell_options(self.cell_options, self.cell)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Seq2SeqConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(expected("seq2seq config keys", f"a subset of {sorted(known)}", unknown))
        return cls(**data)

    def resolved(self) -> tuple[str, str, str]:
        """``(source tokens, target tokens, metrics)`` with "auto" replaced."""
        src, tgt, met = DATASET_DEFAULTS.get(self.dataset, ("char", "char", "text"))
        return (src if self.source_tokens == "auto" else self.source_tokens,
                tgt if self.target_tokens == "auto" else self.target_tokens,
                met if self.metrics == "auto" else self.metrics)


def _col(name: str) -> str | int:
    return int(name) if name.isdigit() else name


@dataclass
class _Split:
    pairs: Pairs
    src: list[list[int]]         # source ids with <eos>
    tgt: list[list[int]]         # target ids without <bos>/<eos>


@dataclass
class Translation:
    """One source's output(s): ``outputs`` best first (``nbest`` of them), and what the model saw.
    ``scores`` are the outputs' log-probabilities (their ``<eos>`` included when they finished),
    the same number for the same output at any beam width; a beam ranks by the length-normalised
    score, so with ``nbest`` > 1 they need not fall."""

    source: str
    outputs: list[str]
    scores: list[float]                      # natural-log probability of each output given the source
    source_tokens: list[str]                 # as the model read them (<unk> for unknown ones), with <eos>
    output_tokens: list[list[str]]           # per output, with <eos> when it finished
    attention: list[list[list[float]]] | None  # per output: (output steps, source tokens), or None
    unknown: dict[str, int]


class Seq2SeqTask:
    name = "seq2seq"
    # Adam at 2e-3 trains the small encoder-decoders quickly; epochs, as data sets differ in size.
    train_defaults = {"max_steps": 0, "max_epochs": 10, "optimizer": "adam", "lr": 2e-3, "clip": 1.0}
    items_name = "tokens"
    data_keys = ("train", "valid", "test")   # recorded with checksums in the run folder

    @property
    def compile_methods(self) -> dict[str, bool]:
        """TrainConfig.compile: what ``_logits`` calls on the model. Graph breaks at the encoder's
        length checks and pack_padded_sequence (torch marks it untraceable)."""
        return {"encode": False, "step": False} if self.config.scheduled_sampling > 0 else {"forward": False}

    def __init__(self, config: Seq2SeqConfig | dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self.config = config if isinstance(config, Seq2SeqConfig) else Seq2SeqConfig.from_dict(config)
        self.source_kind, self.target_kind, self.metric_kind = self.config.resolved()
        self.metric_name = HEADLINE[self.metric_kind]
        self._pairs: dict[str, Pairs] | None = None
        self._splits: dict[str, _Split] = {}
        if metadata is not None:
            try:
                self.codec = PairCodec.from_json(metadata["codec"])
            except (KeyError, DataError) as exc:
                raise CheckpointError(expected("seq2seq metadata", "a saved codec", f"none usable ({exc})")) from None
            self._meta = dict(metadata)
            return
        c = self.config
        pairs = self._load_pairs()
        if not c.dataset and pairs["train"].source == pairs["train"].target:
            # two spellings of one column (--source-col 1 --target-col source) or a copy task: said
            # when a run is built, not each time one is read back, since a model that learns to
            # copy scores perfectly and translates nothing
            warnings.warn(f"{c.train}: every target equals its source (--source-col {c.source_col}, --target-col "
                          f"{c.target_col}): the model learns to copy its input", DataWarning, stacklevel=2)
        self.codec = PairCodec.build(pairs["train"], self.source_kind, self.target_kind, c.shared_vocab, c.min_freq,
                                     c.subword_vocab_size)
        self._meta = {"codec": self.codec.to_json(), "data": self._data_record,
                      "pairs": {s: len(p) for s, p in pairs.items()}}
        for s in pairs:       # every data error (over-long pair included) before any model is built
            self.split(s)

    # --- data --------------------------------------------------------------------------

    def _load_pairs(self) -> dict[str, Pairs]:
        if self._pairs is not None:
            return self._pairs
        c = self.config
        if c.dataset:
            kwargs = {"n": c.dataset_size} if c.dataset == "dates" and c.dataset_size else {}
            data = load_pair_dataset(c.dataset, **kwargs)
            self._pairs = {s: data.split(s) for s in SPLITS}
            self._data_record = data.source
            return self._pairs

        for key in ("train", "valid", "test"):   # named by its flag, before any file is read
            path = getattr(c, key)
            if path and not Path(path).is_file():
                raise DataError(expected(field_name("seq2seq", key, c, SEQ2SEQ_FLAGS), "an existing file",
                                         f"{path!r}, which {'is a folder' if Path(path).is_dir() else 'does not exist'}"))

        def read(path: str) -> Pairs:
            return read_pairs(path, _col(c.source_col), _col(c.target_col), c.format, c.header, c.encoding)

        train = read(c.train)
        out: dict[str, Pairs] = {}
        if c.valid:
            out["train"], out["valid"] = train, read(c.valid)
        else:
            # Held out by distinct source (seeded hash), so a source's references stay together.
            part = {s: hash_split(f"{c.seed}:{s}", (1 - c.valid_frac, c.valid_frac, 0.0)) for s in set(train.source)}
            for name in ("train", "valid"):
                keep = [i for i, s in enumerate(train.source) if part[s] == name]
                if not keep:
                    raise DataError(expected(f"{c.train}: distinct sources", "enough to hold some out for validation "
                                             "(or give --valid)", len(part)))
                out[name] = Pairs([train.source[i] for i in keep], [train.target[i] for i in keep],
                                  [train.lines[i] for i in keep], f"{c.train}:{name}")
        if c.test:
            out["test"] = read(c.test)
        self._pairs = out
        self._data_record = {"kind": "files", "train": c.train, "valid": c.valid or f"{c.valid_frac} of train",
                             "test": c.test}
        return out

    def split(self, name: str) -> _Split:
        """The encoded pairs of ``train``, ``valid`` or ``test`` (read on first use)."""
        if name in self._splits:
            return self._splits[name]
        if name not in SPLITS:
            raise ConfigError(expected("split", " or ".join(SPLITS), repr(name)))
        pairs = self._load_pairs()
        if name not in pairs:
            raise DataError(expected("test split", "a run trained with a test file (train seq2seq --test FILE)",
                                     "a run without one"))
        p = pairs[name]
        c = self.config
        src = self.codec.encode_sources(p.source, c.max_source_len, f"{p.origin}: source", p.lines).ids
        tgt = self.codec.encode_targets(p.target, c.max_target_len, f"{p.origin}: target", p.lines).ids
        self._splits[name] = _Split(p, src, tgt)
        return self._splits[name]

    def _batch(self, split: _Split, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        src, src_lengths = pad_batch([split.src[i] for i in idx])
        tgt_in, tgt_out, _ = target_io([split.tgt[i] for i in idx])
        return {"src": src, "src_lengths": src_lengths, "tgt_in": tgt_in, "tgt_out": tgt_out}

    # --- the Task contract ---------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def build_model(self) -> EncoderDecoder:
        c = self.config
        return EncoderDecoder(
            len(self.codec.source_vocab), len(self.codec.target_vocab), cell=c.cell, embedding_size=c.embedding_size,
            hidden_size=c.hidden_size, num_layers=c.num_layers, bidirectional=c.bidirectional, attention=c.attention,
            attention_size=c.attention_size or None, input_feeding=c.input_feeding, dropout=c.dropout,
            tie_embeddings=c.tie_embeddings, share_embeddings=c.shared_vocab, pad_id=PAD_ID,
            cell_options=c.cell_options)

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        split = self.split("train")
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(split.src))[rank::world_size]
        bs = self.config.batch_size
        for s in range(0, len(order), bs):
            batch = self._batch(split, order[s: s + bs].tolist())
            batch["step_seed"] = torch.tensor([self.config.seed, epoch, s])
            yield batch

    def _logits(self, model: EncoderDecoder, batch: dict[str, torch.Tensor], device) -> torch.Tensor:
        src, lengths, tgt_in = batch["src"].to(device), batch["src_lengths"], batch["tgt_in"].to(device)
        p = self.config.scheduled_sampling
        if not (model.training and p > 0):
            return model(src, lengths, tgt_in)
        # Scheduled sampling: step by step, each input after the first replaced with probability p by
        # the previous step's greedy output (no gradient through the choice).
        seed = int(np.random.SeedSequence(batch["step_seed"].tolist()).generate_state(1)[0])
        gen = torch.Generator().manual_seed(seed)
        use_own = (torch.rand(tgt_in.shape, generator=gen) < p).to(device)
        memory, state = model.encode(src, lengths)
        out, y = [], tgt_in[:, 0]
        for t in range(tgt_in.shape[1]):
            if t > 0:
                y = torch.where(use_own[:, t], next_token(out[-1]), tgt_in[:, t])
            lg, state, _ = model.step(y, state, memory)
            out.append(lg)
        return torch.stack(out, 1)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], carry: Any) -> StepOutput:
        device = next(model.parameters()).device
        logits = self._logits(model, batch, device)
        tgt_out = batch["tgt_out"].to(device)
        loss = F.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=PAD_ID,
                               label_smoothing=self.config.label_smoothing)
        real = tgt_out != PAD_ID
        acc = ((logits.argmax(-1) == tgt_out) & real).sum().item() / max(1, int(real.sum()))
        return StepOutput(loss=loss, n_items=int(real.sum()), metrics={"token_acc": acc})

    # --- decoding and scoring --------------------------------------------------------------

    def loss_on(self, model: nn.Module, split: _Split) -> float:
        """Teacher-forced cross-entropy per target token (no smoothing)."""
        device = next(model.parameters()).device
        total, n = 0.0, 0
        for s in range(0, len(split.src), 256):
            b = self._batch(split, range(s, min(s + 256, len(split.src))))
            logits = model(b["src"].to(device), b["src_lengths"], b["tgt_in"].to(device))
            tgt = b["tgt_out"].to(device)
            total += F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=PAD_ID, reduction="sum").item()
            n += int((tgt != PAD_ID).sum())
        return total / max(1, n)

    def decode_ids(self, model: nn.Module, src: list[list[int]], beam: int = 1, nbest: int = 1,
                   batch_size: int = 256) -> list[list[Hypothesis]]:
        """Hypotheses (best first) for encoded sources; beam 1 is greedy."""
        device = next(model.parameters()).device
        out: list[list[Hypothesis]] = []
        for s in range(0, len(src), batch_size):
            x, lengths = pad_batch(src[s: s + batch_size])
            x = x.to(device)
            if beam == 1:
                out += [[h] for h in greedy_decode(model, x, lengths, max_len=self.config.max_target_len)]
            else:
                out += beam_search(model, x, lengths, beam=beam, nbest=nbest, max_len=self.config.max_target_len)
        return out

    def score(self, outputs: list[str], refs: list[list[str]]) -> dict[str, float]:
        chars = self.target_kind == "char"
        m = {"exact": exact_match(outputs, refs, chars)}
        if self.metric_kind == "g2p":
            m.update(g2p_scores(outputs, refs))
        elif self.metric_kind == "text":
            m["ter"] = token_error_rate(outputs, refs, chars)
            m["bleu"] = corpus_bleu(outputs, refs)
            m["chrf"] = corpus_chrf(outputs, refs)
        return m

    @torch.no_grad()
    def evaluate_detailed(self, model: nn.Module, split_name: str) -> dict[str, Any]:
        """Loss, scores, and per distinct source: its references, the output and its attention."""
        was = model.training
        model.eval()
        try:
            split = self.split(split_name)
            loss = self.loss_on(model, split)
            sources, refs = split.pairs.grouped()
            src = self.codec.encode_sources(sources, self.config.max_source_len).ids
            hyps = [h[0] for h in self.decode_ids(model, src)]
        finally:
            model.train(was)
        outputs = [self.codec.decode_target(h.tokens) for h in hyps]
        m: dict[str, Any] = {"loss": loss, **self.score(outputs, refs), "n": len(sources)}
        m["examples"] = list(zip(sources, refs, outputs, hyps))
        return m

    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        m = self.evaluate_detailed(model, split)
        return {k: float(v) for k, v in m.items() if k != "examples"}

    @torch.no_grad()
    def translate(self, model: nn.Module, texts: Sequence[str], beam: int = 1, nbest: int = 1,
                  names: Sequence[str] | None = None) -> list[Translation]:
        """Outputs for raw source texts. An empty or over-long text is a DataError naming it
        (``names[k]``, by default "input k+1")."""
        enc_all = []
        for k, text in enumerate(texts):
            name = names[k] if names is not None else f"input {k + 1}"
            if not text.strip():
                raise DataError(expected(name, "non-empty text", "an empty line"))
            n = len(self.codec.source_tokenizer.tokenize(text)) + 1
            if n > self.config.max_source_len:
                raise DataError(expected(f"{name} ({text[:40]!r}...)", f"at most {self.config.max_source_len} tokens "
                                         "with <eos> (the model's maximum)", n))
            enc = self.codec.encode_sources([text])
            enc_all.append(enc)
        model.eval()
        hyps = self.decode_ids(model, [e.ids[0] for e in enc_all], beam, nbest)
        out = []
        for text, enc, hs in zip(texts, enc_all, hyps):
            tv = self.codec.target_vocab
            toks = [[tv.itos[i] for i in h.tokens] + (["<eos>"] if h.finished else []) for h in hs]
            att = None if hs[0].attention is None else [h.attention.tolist() for h in hs]
            out.append(Translation(text, [self.codec.decode_target(h.tokens) for h in hs], [h.log_prob for h in hs],
                                   self.codec.source_tokens(text), toks, att, dict(enc.unknown)))
        return out

    # --- report ------------------------------------------------------------------------

    def report_sections(self, model: nn.Module, run_dir: str) -> list[ReportSection]:
        split = "test" if "test" in self._load_pairs() else "valid"
        m = self.evaluate_detailed(model, split)
        scores = {k: v for k, v in m.items() if k not in ("examples", "n")}
        html = f"<p>{m['n']} distinct sources of the {split} split, greedy decoding.</p>"
        html += table(list(scores), [[float(v) for v in scores.values()]])
        sections = [ReportSection(f"Sequence to sequence: {split} scores", html)]
        sections.append(self._worst_errors(m["examples"], split))
        if model.attention is not None:
            sections.append(self._heat_maps(m["examples"][:4], split))
        return sections

    def _worst_errors(self, examples: list, split: str, k: int = 15) -> ReportSection:
        chars = self.target_kind == "char"
        wrong = []
        for source, refs, output, h in examples:
            if output in refs:
                continue
            d, n = closest_reference(output, refs, chars)
            wrong.append((d / max(1, n), source, refs, output, h.log_prob))
        wrong.sort(key=lambda w: (-w[0], w[4]))
        rows = [[escape(s), escape(" | ".join(r)), escape(o), f"{e:.3f}"] for e, s, r, o, _ in wrong[:k]]
        html = (f"<p>{len(wrong)} of {len(examples)} outputs match no reference; the {len(rows)} farthest "
                "(edits over the closest reference's length):</p>")
        html += table(["source", "references", "output", "error"], rows) if rows else "<p>None.</p>"
        return ReportSection(f"Worst errors ({split} split)", html)

    def _heat_maps(self, examples: list, split: str) -> ReportSection:
        html = ""
        for source, _, output, h in examples:
            if h.attention is None:
                continue
            tv = self.codec.target_vocab
            ys = [tv.itos[i] for i in h.tokens] + (["<eos>"] if h.finished else [])
            fig = attention_figure(self.codec.source_tokens(source), ys, h.attention.tolist())
            html += figure_to_img(fig, f"attention of {source[:30]}")
        return ReportSection(f"Attention ({split} split, greedy outputs)", html)


def build_seq2seq_task(config: dict[str, Any], metadata: dict[str, Any] | None = None) -> Seq2SeqTask:
    return Seq2SeqTask(Seq2SeqConfig.from_dict(config), metadata)


register_task("seq2seq", build_seq2seq_task)


# ----------------------------------------------------------------------------- run folders


def load_seq2seq_run(run_dir: str, checkpoint: str = "best") -> tuple[Seq2SeqTask, EncoderDecoder]:
    """The task (codec from the checkpoint) and model of a seq2seq run; another task's run is one clear error."""
    cfg = read_run_config(run_dir)
    if cfg["task"] != "seq2seq":
        raise CheckpointError(expected(f"run folder {run_dir}", "a sequence-to-sequence run (task 'seq2seq')",
                                       f"a run of task {cfg['task']!r}"))
    task, model, _ = load_run(run_dir, checkpoint)
    return task, model   # type: ignore[return-value]


def attention_text(t: Translation, which: int = 0) -> str:
    """The alignment of output ``which`` as text: one row per output token, one column per source
    token (headed by its first character; ``$`` is ``<eos>``, ``?`` is ``<unk>``), each weight as a
    shade from `` .:-=+*#%@`` (0 to 1)."""
    if t.attention is None:
        return "(no attention: the model uses a fixed context vector)"
    shades = " .:-=+*#%@"
    xs, ys = t.source_tokens, t.output_tokens[which]
    width = max(len(y) for y in ys) if ys else 1
    label = {"<eos>": "$", "<unk>": "?"}
    lines = [" " * (width + 1) + " ".join(label.get(x, x[:1]) for x in xs)]
    for y, row in zip(ys, t.attention[which]):
        lines.append(f"{y:>{width}} " + " ".join(shades[min(9, int(math.floor(v * 10)))] for v in row))
    return "\n".join(lines)


def attention_figure(source_tokens: Sequence[str], output_tokens: Sequence[str], weights: Sequence[Sequence[float]],
                     title: str = ""):
    """A heat map of attention ``weights`` (one row per output token, one column per source
    token): a matplotlib figure, for report.html and ``rnnlab translate --show-attention --out``."""
    plt = pyplot()
    w = np.asarray(weights, dtype=float)[: len(output_tokens), : len(source_tokens)]
    fig, ax = plt.subplots(figsize=(1.5 + 0.28 * len(source_tokens), 1.2 + 0.28 * len(output_tokens)))
    ax.imshow(w, cmap="Greys", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(source_tokens)), ["␣" if t == " " else t for t in source_tokens],
                  rotation=90, fontsize=7)
    ax.set_yticks(range(len(output_tokens)), list(output_tokens), fontsize=7)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def figure_format(path: str | Path) -> str:
    """The format an attention plot at ``path`` is written in: its suffix's, where matplotlib writes
    it (png, svg, pdf, jpg, ...; none: png); a ConfigError for another suffix, rather than PNG bytes
    under its name."""
    suffix = Path(path).suffix.lower().lstrip(".")
    known = sorted(set(pyplot().FigureCanvasBase.get_supported_filetypes()) - {"raw", "rgba", "pgf"})   # (not images)
    if suffix and suffix not in known:
        raise ConfigError(expected("--out (path)", f"a file name ending in one of {', '.join('.' + f for f in known)} "
                                   "(the plot's format)", repr(Path(path).name)))
    return suffix or "png"


def attention_png_check(run_dir: str | Path, force: bool = False) -> Callable[[str | Path], Path]:
    """A check of where attention plots of the run at ``run_dir`` may go (:func:`figure_format`,
    :func:`rnnlab.outputs.check_output`; never over the run's training data, even with ``force``),
    the run's data files read once for all the plots of a call."""
    data = run_data_files(run_dir)

    def check(path: str | Path) -> Path:
        out = check_output(path, (), force, run_data=data)
        figure_format(path)
        return out
    return check


def write_attention_png(t: Translation, path: str | Path, which: int = 0) -> Path:
    """The alignment of ``t``'s output ``which`` as a heat map at ``path`` (PNG, or the format its
    suffix names: :func:`figure_format`), written through a temporary file and renamed over ``path`` (a link there is replaced,
    its target left alone)."""
    fig = attention_figure(t.source_tokens, t.output_tokens[which], t.attention[which],
                           f"{t.source} -> {t.outputs[which]}")
    tmp = atomic_path(path)
    try:
        fig.savefig(tmp, format=figure_format(path), dpi=110, bbox_inches="tight")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        pyplot().close(fig)
    commit(tmp, path)
    return Path(path)


def unknown_summary(counts: Counter) -> str:
    return ", ".join(f"{tok!r} x{n}" for tok, n in counts.most_common())
