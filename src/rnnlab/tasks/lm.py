"""Language models on characters or words, and text generation.

The model is the classic one: token ids -> embedding (or one-hot, as in d2l's from-scratch
version) -> dropout -> rnnlab RNN/LSTM/GRU layers -> dropout -> linear decoder to vocabulary
logits, optionally with the decoder's weight tied to the embedding (Press & Wolf 2017;
Inan et al. 2017), as pytorch/examples' word_language_model does.

Shapes: T = time steps (bptt), B = batch, E = embedding size, H = hidden size, V = vocabulary.

Metrics: perplexity = exp(mean cross-entropy in nats per token); for characters also bits per
character = mean cross-entropy / ln 2. Tokens per second come from the training core (it
counts ``StepOutput.n_items``) and from :meth:`LMTask.evaluate`.

The task registers itself as ``"lm"`` with the training core (see ``rnnlab.train.task``).
"""

from __future__ import annotations

import csv
import html
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.data.lm_batches import LMBatching, eval_batches, lm_batches
from rnnlab.data.registry import dataset_files, get_spec
from rnnlab.data.text import (
    EOS,
    LEVELS,
    SPLITS,
    Corpus,
    Vocab,
    check_long_enough,
    corpus_from_files,
    detokenize,
    load_text_corpus,
    preprocess,
    read_text,
    tokenize,
)
from rnnlab.errors import CheckpointError, ConfigError, DataError, DataWarning, expected
from rnnlab.nn.adaptive import TiedAdaptiveEmbedding
from rnnlab.nn.regularize import LockedDropout, WeightDrop, embedding_dropout
from rnnlab.report.html import figure_to_img, pyplot, table
from rnnlab.tasks.cell_options import check_cell_options
from rnnlab.tasks.recurrent import CELLS, recurrent_layer, upgrade_keys
from rnnlab.train.rundir import CONFIG, load_run, read_run_config, rebuild_task, resolve_data_paths
from rnnlab.train.task import ReportSection, StepOutput, register_task

TASK_NAME = "lm"


# --------------------------------------------------------------------------- config


@dataclass
class LMConfig:
    """Everything that defines a language-model task; saved as JSON in the run folder."""

    # Data: exactly one of text / dataset.
    text: str | None = None               # a text file (split contiguously) or a folder with train/valid/test files
    dataset: str | None = None            # timemachine | tinyshakespeare | wikitext2
    data_dir: str | None = None           # local copy of the named data set (no download)
    encoding: str = "utf-8"               # of --text files
    level: str | None = None              # char | word; None: the data set's usual level, char for --text
    min_freq: int = 1                     # rarer tokens become <unk>
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)  # contiguous split when the corpus has none
    preprocess: str = "none"              # none | d2l (lower-case letters and single spaces, as d2l's Time Machine)
    # Model.
    cell: str = "lstm"                    # rnn | lstm | gru
    hidden_size: int = 256                # d2l's setting
    num_layers: int = 1
    embed: int | None = None              # 0: one-hot input; None: hidden_size when tied, else one-hot for char (d2l), 200 for word (pytorch/examples)
    dropout: float = 0.0                  # on embeddings, between layers and before the decoder
    tied: bool = False                    # decoder weight = embedding weight (needs embed == hidden_size); with
                                          # adaptive_cutoffs the embedding is read from the softmax's clusters
    cell_options: dict[str, Any] = field(default_factory=dict)  # rnnlab.nn.options.CellOptions fields; {} = torch.nn
    init_std: float | None = None         # weights ~ N(0, init_std^2), biases 0 (d2l's from-scratch 0.01); None = torch.nn's
    # Large vocabularies and AWD-LSTM's regularisers (all off by default).
    adaptive_cutoffs: tuple[int, ...] = ()  # adaptive softmax (Grave et al. 2017) with these cluster cutoffs; () = full softmax
    locked_dropout: bool = False          # one dropout mask per sequence, reused at every step (variational)
    input_dropout: float | None = None    # on the embeddings; None = dropout
    hidden_dropout: float | None = None   # between layers; None = dropout
    embed_dropout: float = 0.0            # drop whole words (rows of the embedding matrix)
    weight_drop: float = 0.0              # DropConnect on the hidden-to-hidden matrices, one mask per batch
    ar: float = 0.0                       # activation regularisation: ar * mean(dropped last-layer output^2)
    tar: float = 0.0                      # temporal AR: tar * mean((h_t - h_{t-1})^2) of the last layer
    max_tokens: int | None = None         # keep only the first N tokens of the training split (d2l: 10,000)
    # Batching.
    bptt: int = 35                        # truncated-BPTT length (d2l num_steps, pytorch/examples bptt)
    batch_size: int = 32
    eval_batch_size: int = 10             # pytorch/examples' eval batch size
    sampling: str = "sequential"          # sequential (state carried) | random (state reset per batch)
    seed: int = 0                         # data order; the core seeds the model init separately

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LMConfig":
        names = {f.name for f in fields(cls)}
        d = upgrade_keys(d, "lm config")
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(expected("lm config keys", f"a subset of {sorted(names)}", f"unknown {unknown}"))
        if "split" in d and d["split"] is not None:
            d["split"] = tuple(float(x) for x in d["split"])
        if d.get("adaptive_cutoffs") is not None:
            d["adaptive_cutoffs"] = tuple(d["adaptive_cutoffs"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"] = list(self.split)
        d["adaptive_cutoffs"] = list(self.adaptive_cutoffs)
        return d

    def resolved(self) -> "LMConfig":
        """Validate, and fill the defaults that depend on other fields (level, embed)."""
        if (self.text is None) == (self.dataset is None):
            raise ConfigError(expected("data", "exactly one of --text FILE and --dataset NAME",
                                       "both" if self.text else "neither"))
        if self.dataset is not None:
            get_spec(self.dataset)  # DataError listing the known names
        if self.data_dir is not None and self.dataset is None:
            raise ConfigError(expected("--data-dir", "to come with --dataset NAME", "--text"))
        level = self.level or (get_spec(self.dataset).level if self.dataset else "char")
        if level not in LEVELS:
            raise ConfigError(expected("--level", " or ".join(LEVELS), repr(level)))
        if self.cell not in CELLS:
            raise ConfigError(expected("--cell", " | ".join(CELLS), repr(self.cell)))
        for name in ("hidden_size", "num_layers", "bptt", "batch_size", "eval_batch_size", "min_freq"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(expected(f"--{name.replace('_', '-')}", "an integer >= 1", v))
        for name in ("dropout", "input_dropout", "hidden_dropout", "embed_dropout", "weight_drop"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0):
                raise ConfigError(expected(f"--{name.replace('_', '-')}", "a number in [0, 1)", v))
        for name in ("ar", "tar"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                raise ConfigError(expected(f"--{name}", "a finite number >= 0", v))
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool)
                                            or self.max_tokens < 2):
            raise ConfigError(expected("--max-tokens", "an integer >= 2", self.max_tokens))
        cutoffs = tuple(self.adaptive_cutoffs or ())
        if cutoffs and not (all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in cutoffs)
                            and list(cutoffs) == sorted(set(cutoffs))):
            raise ConfigError(expected("--adaptive-softmax", "increasing positive integers such as 2000,10000", list(cutoffs)))
        embed = self.embed
        if embed is None:   # tied weights need an embedding of the output layer's width, at either level
            embed = self.hidden_size if self.tied else 200 if level == "word" else 0
        if not isinstance(embed, int) or embed < 0:
            raise ConfigError(expected("--embed", "an integer >= 0 (0 = one-hot input)", embed))
        if self.tied and (embed == 0 or (embed != self.hidden_size and self.num_layers == 1)):
            # With two or more layers the last one is sized --embed (AWD-LSTM's layout).
            raise ConfigError(expected("--tied", f"--embed equal to --hidden-size ({self.hidden_size}), or --num-layers >= 2",
                                       "one-hot input (--embed 0)" if embed == 0 else f"--embed {embed}"))
        if self.init_std is not None:
            if not (isinstance(self.init_std, (int, float)) and not isinstance(self.init_std, bool)
                    and math.isfinite(self.init_std) and self.init_std > 0):
                raise ConfigError(expected("--init-std", "a number > 0", self.init_std))
            clash = sorted(k for k in ("init", "forget_bias", "t_max") if k in (self.cell_options or {}))
            if clash:
                raise ConfigError(expected("--init-std", "no cell option that initialises weights or biases",
                                           "--cell-option " + ", ".join(clash)))
        check_adaptive_width(cutoffs, embed if self.tied else self.hidden_size)   # before the corpus is read
        if embed == 0 and self.embed_dropout:
            raise ConfigError(expected("--embed-dropout", "an embedding (--embed > 0)", "one-hot input"))
        LMBatching(self.bptt, self.batch_size, self.sampling, self.seed)  # validates sampling
        preprocess("", self.preprocess)  # validates the name
        cell_options = check_cell_options(self.cell_options, self.cell)
        return LMConfig(**{**asdict(self), "level": level, "embed": embed, "split": tuple(self.split),
                           "cell_options": cell_options, "adaptive_cutoffs": cutoffs})


# --------------------------------------------------------------------------- model


def check_adaptive_width(cutoffs: tuple[int, ...], width: int) -> None:
    """Refuse adaptive-softmax cutoffs whose last cluster would be 0 units wide for a ``width``-wide
    output (cluster i is width // 4**(i+1) wide): its words would be embedded and scored as zeros."""
    if cutoffs and width // 4 ** len(cutoffs) < 1:
        most = next(n for n in range(len(cutoffs)) if width // 4 ** (n + 1) < 1)
        raise ConfigError(expected("--adaptive-softmax", f"at most {most} cutoffs for a "
                                   f"{width}-wide output (each cluster is 4 times narrower)",
                                   f"{len(cutoffs)} cutoffs"))


class LanguageModel(nn.Module):
    """Embedding or one-hot -> rnnlab RNN/LSTM/GRU -> linear decoder (or adaptive softmax).

    With none of AWD-LSTM's options the recurrent part is one rnnlab stack (``self.rnn``), as
    in pytorch/examples. With locked dropout, weight drop or a tied last layer narrower than
    ``hidden_size`` it is one single-layer rnnlab layer per level (``self.rnns``), so dropout
    masks can be applied between levels and each layer's ``weight_hh`` can be dropped.
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", hidden_size: int = 256, num_layers: int = 1,
                 embed: int = 0, dropout: float = 0.0, tied: bool = False,
                 cell_options: dict[str, Any] | None = None, *, adaptive_cutoffs: tuple[int, ...] = (),
                 locked_dropout: bool = False, input_dropout: float | None = None,
                 hidden_dropout: float | None = None, embed_dropout: float = 0.0, weight_drop: float = 0.0,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embed_dropout = embed_dropout
        tied_adaptive = tied and bool(adaptive_cutoffs)
        self.embedding = nn.Embedding(vocab_size, embed) if embed > 0 and not tied_adaptive else None
        p_in = dropout if input_dropout is None else input_dropout
        p_hid = dropout if hidden_dropout is None else hidden_dropout
        drop = LockedDropout if locked_dropout else nn.Dropout
        self.drop_in, self.drop_hid, self.drop = drop(p_in), drop(p_hid), drop(dropout)
        n_in = embed or vocab_size
        last = embed if tied else hidden_size
        self.layered = locked_dropout or weight_drop > 0 or last != hidden_size
        if self.layered:
            sizes = [hidden_size] * (num_layers - 1) + [last]
            layers = []
            for i, h in enumerate(sizes):
                layer = recurrent_layer(cell, n_in if i == 0 else sizes[i - 1], h, 1, cell_options)
                layers.append(WeightDrop(layer, weight_drop) if weight_drop > 0 else layer)
            self.rnns = nn.ModuleList(layers)
            self.rnn = None
        else:
            self.rnn = recurrent_layer(cell, n_in, hidden_size, num_layers, cell_options, dropout=p_hid)
        self.adaptive = None
        self.decoder = None
        if adaptive_cutoffs:
            if adaptive_cutoffs[-1] >= vocab_size:
                raise ConfigError(expected("--adaptive-softmax cutoffs", f"below the vocabulary size ({vocab_size})",
                                           list(adaptive_cutoffs)))
            check_adaptive_width(adaptive_cutoffs, last)
            # Tied, the head rows are also the inputs: a head bias carries the words' frequencies
            # instead of a direction shared by every row.
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(last, vocab_size, list(adaptive_cutoffs), div_value=4.0,
                                                          head_bias=tied_adaptive)
        else:
            self.decoder = nn.Linear(last, vocab_size)
        if tied_adaptive:
            if embed == 0:
                raise ConfigError(expected("tied", "an embedding and a softmax", f"embed {embed}"))
            self.embedding = TiedAdaptiveEmbedding(self.adaptive)
        elif self.embedding is not None:
            # pytorch/examples' initialisation: small uniform embedding and decoder, zero bias.
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            if self.decoder is not None:
                nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
                nn.init.zeros_(self.decoder.bias)
        if tied and not tied_adaptive:
            if self.embedding is None or self.decoder is None:
                raise ConfigError(expected("tied", "an embedding and a full softmax", f"embed {embed}"))
            self.decoder.weight = self.embedding.weight
        if init_std is not None:
            self._normal_init(init_std)

    def _normal_init(self, std: float) -> None:
        """d2l's from-scratch initialisation: every weight matrix (embedding, input-to-hidden,
        hidden-to-hidden, decoder) drawn from N(0, std^2), every bias zero. Layer-norm gains and
        the adaptive softmax's clusters keep their own initialisation (so does an embedding read
        from them, ``tied`` with ``adaptive_cutoffs``); its head bias is zeroed."""
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith(("weight_ih", "weight_hh")) or name in ("embedding.weight", "decoder.weight"):
                nn.init.normal_(p, 0.0, std)
            elif leaf.startswith(("bias_ih", "bias_hh")) or name in ("decoder.bias", "adaptive.head.bias"):
                nn.init.zeros_(p)

    def features(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``x`` (T, B) ids -> (dropped last-layer output, raw last-layer output, new state), (T, B, H)."""
        if self.embedding is None:
            emb = F.one_hot(x, self.vocab_size).to(self._dtype())                   # (T, B, V)
        else:
            emb = embedding_dropout(self.embedding, x, self.embed_dropout, self.training)  # (T, B, E)
        h = self.drop_in(emb)
        if self.rnn is not None:
            out, state = self.rnn(h, state)                                          # (T, B, H)
        else:
            states = []
            for i, layer in enumerate(self.rnns):
                out, s = layer(h, None if state is None else state[i])
                states.append(s)
                h = self.drop_hid(out) if i < len(self.rnns) - 1 else out
            state = tuple(states)
        return self.drop(out), out, state

    def zero_state(self, batch_size: int) -> Any:
        """The state ``features`` starts from when given None (zeros), as tensors. The training step
        passes it at each epoch start, so every batch has the same input structure: a compiled
        model (TrainConfig.compile) then needs one graph, not one without a state and one with."""
        def zeros(layer: nn.Module) -> Any:
            layer = getattr(layer, "module", layer)             # WeightDrop holds the layer
            w = next(layer.parameters())
            n = layer.num_layers * layer.num_directions
            h = w.new_zeros(n, batch_size, layer.real_hidden_size)
            return (h, w.new_zeros(n, batch_size, layer.hidden_size)) if layer.mode == "lstm" else h

        return zeros(self.rnn) if self.rnn is not None else tuple(zeros(layer) for layer in self.rnns)

    def _dtype(self) -> torch.dtype:
        return (self.decoder.weight if self.decoder is not None else self.adaptive.head.weight).dtype

    def forward(self, x: torch.Tensor, state: Any = None, targets: torch.Tensor | None = None,
                reduction: str = "mean") -> tuple[Any, ...]:
        """``x`` (T, B) ids, ``state`` None or the layer's state -> scores (T, B, V), new state.

        The scores are logits, or normalised log-probabilities with the adaptive softmax: a
        softmax over either gives the model's next-token distribution. With ``targets`` (T, B)
        it returns :meth:`nll`'s ``(loss, state, dropped output, raw output)`` instead."""
        if targets is not None:
            return self.nll(x, targets, state, reduction)
        out, _, state = self.features(x, state)
        T, B, H = out.shape
        if self.adaptive is not None:
            return self.adaptive.log_prob(out.reshape(T * B, H)).view(T, B, -1), state
        return self.decoder(out), state                                              # (T, B, V)

    def nll(self, x: torch.Tensor, y: torch.Tensor, state: Any = None,
            reduction: str = "mean") -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Cross-entropy (nats) of targets ``y`` (T, B) -> (loss, state, dropped output, raw output)."""
        out, raw, state = self.features(x, state)
        T, B, H = out.shape
        if self.adaptive is not None:
            lp = self.adaptive(out.reshape(T * B, H), y.reshape(-1)).output          # (T*B,) target log-probs
            loss = -(lp.mean() if reduction == "mean" else lp.sum())
        else:
            logits = self.decoder(out)
            loss = F.cross_entropy(logits.reshape(T * B, -1), y.reshape(-1), reduction=reduction)
        return loss, state, out, raw


def activation_penalties(dropped: torch.Tensor, raw: torch.Tensor, ar: float, tar: float) -> tuple[torch.Tensor, torch.Tensor]:
    """AWD-LSTM's AR and TAR terms, scaled: ``ar * mean(dropped**2)`` and
    ``tar * mean((raw[t] - raw[t-1])**2)``, both over the last layer's (T, B, H) outputs."""
    zero = dropped.new_zeros(())
    a = ar * dropped.pow(2).mean() if ar else zero
    t = tar * (raw[1:] - raw[:-1]).pow(2).mean() if tar and raw.shape[0] > 1 else zero
    return a, t


def detach_state(state: Any) -> Any:
    """Cut the graph behind a carried state (truncated BPTT)."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(detach_state(s) for s in state)
    return state.detach()


# --------------------------------------------------------------------------- task


class LMTask:
    # d2l's setting for recurrent language models (fit(task) and ``rnnlab train lm`` start from it).
    train_defaults = {"optimizer": "sgd", "lr": 1.0, "clip": 1.0}
    """The ``lm`` task: see the training core's contract in ``rnnlab.train.task``.

    Built from scratch (``metadata=None``) it reads the corpus, builds the vocabulary and checks
    every data problem at once, before any model exists. Rebuilt from a run folder (with
    ``metadata``) it takes the saved vocabulary and reads the corpus only when batches or
    held-out scores are asked for, so ``rnnlab generate`` needs nothing but the run folder.
    """

    name = TASK_NAME
    items_name = "tokens"
    metric_name = "ppl"
    data_keys = ("text",)   # recorded with a checksum in the run folder (named data sets are not)

    def __init__(self, config: LMConfig | dict[str, Any], metadata: dict[str, Any] | None = None,
                 corpus: Corpus | None = None) -> None:
        cfg = config if isinstance(config, LMConfig) else LMConfig.from_dict(config)
        self.cfg = cfg.resolved()
        self.batching = LMBatching(self.cfg.bptt, self.cfg.batch_size, self.cfg.sampling, self.cfg.seed)
        self._corpus = corpus
        self._ids: dict[str, torch.Tensor] = {}
        if metadata is not None:
            if "vocab" not in metadata:
                raise CheckpointError(expected("lm metadata", "a 'vocab' entry", sorted(metadata)))
            self.vocab = Vocab.from_json(metadata["vocab"])
            self._source = metadata.get("source", {})
            self._tokens = metadata.get("tokens", {})
        else:
            corpus = self.corpus()
            toks = {s: tokenize(preprocess(corpus.split(s), self.cfg.preprocess), self.cfg.level) for s in SPLITS}
            self.vocab = Vocab.build(toks["train"] + toks["valid"] + toks["test"], self.cfg.level, self.cfg.min_freq)
            if self.cfg.max_tokens is not None:
                toks["train"] = toks["train"][: self.cfg.max_tokens]
            self._ids = {s: self.vocab.encode(toks[s]) for s in SPLITS}
            self._warn_unknown()
            self._source = corpus.source
            self._tokens = {s: int(t.numel()) for s, t in self._ids.items()}
            self._check_lengths()

    def _warn_unknown(self) -> None:
        """A DataWarning when most training tokens are ``<unk>`` (a high ``--min-freq``): the
        perplexity then measures mostly how well the model predicts ``<unk>``."""
        if self.vocab.unk is None or self.cfg.min_freq < 2 or not self._ids["train"].numel():
            return   # (at --min-freq 1 every <unk> is the text's own)
        share = float((self._ids["train"] == self.vocab.stoi[self.vocab.unk]).float().mean())
        if share > 0.5:
            warnings.warn(f"--min-freq {self.cfg.min_freq}: {share:.0%} of the training tokens are "
                          f"{self.vocab.unk}, so the perplexity mostly measures how well it is predicted; "
                          "lower --min-freq", DataWarning, stacklevel=2)

    # -- data

    def corpus(self) -> Corpus:
        if self._corpus is None:
            c = self.cfg
            if c.dataset is not None:
                files = dataset_files(c.dataset, c.data_dir)
                src = {"kind": "dataset", "name": c.dataset, "files": {k: str(p) for k, p in files.items()}}
                self._corpus = corpus_from_files(files, "utf-8", c.split, src)
            else:
                self._corpus = load_text_corpus(c.text, c.encoding, c.split)
        return self._corpus

    def ids(self, split: str) -> torch.Tensor:
        """The split as a 1-D id tensor (encoded with this task's vocabulary)."""
        if split not in SPLITS:
            raise ConfigError(expected("split", " or ".join(SPLITS), repr(split)))
        if split not in self._ids:
            text = preprocess(self.corpus().split(split), self.cfg.preprocess)
            toks = tokenize(text, self.cfg.level)
            if split == "train" and self.cfg.max_tokens is not None:
                toks = toks[: self.cfg.max_tokens]
            self._ids[split] = self.vocab.encode(toks, f"{split} split")
            if split == "train":
                self._check_lengths()
        return self._ids[split]

    def _check_lengths(self) -> None:
        where = self._source.get("path") or self._source.get("name") or "corpus"
        cap = self.cfg.max_tokens   # named in the advice only where it cut the training text (the only one it cuts)
        cut = cap is not None and self.ids("train").numel() >= cap
        check_long_enough(self.ids("train").numel(), self.cfg.bptt, self.cfg.batch_size,
                          f"training text of {where} ({self.cfg.level} level)", cap if cut else None)
        for s in ("valid", "test"):
            n = self.ids(s).numel()
            if n < 2:
                fraction = self.cfg.split[SPLITS.index(s)]
                if self.cfg.text and Path(self.cfg.text).is_file() and fraction == 0:
                    raise ConfigError(expected(f"--split {','.join(f'{f:g}' for f in self.cfg.split)}",
                                               "valid and test fractions > 0 (a language model is scored on both)",
                                               f"{s} 0"))
                raise DataError(expected(f"{s} split of {where}", "at least 2 tokens to score", f"{n}; use a longer text"))

    # -- contract

    def config_dict(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def metadata(self) -> dict[str, Any]:
        # The same dict whether the task was built fresh or rebuilt from a checkpoint.
        return {"vocab": self.vocab.to_json(), "source": self._source, "tokens": self._tokens}

    def build_model(self) -> nn.Module:
        c = self.cfg
        return LanguageModel(len(self.vocab), c.cell, c.hidden_size, c.num_layers, c.embed, c.dropout, c.tied, c.cell_options,
                             adaptive_cutoffs=c.adaptive_cutoffs, locked_dropout=c.locked_dropout,
                             input_dropout=c.input_dropout, hidden_dropout=c.hidden_dropout,
                             embed_dropout=c.embed_dropout, weight_drop=c.weight_drop, init_std=c.init_std)

    @property
    def compile_methods(self) -> dict[str, bool]:
        """TrainConfig.compile: forward in one graph; the adaptive softmax selects each cluster's
        rows by data (nonzero), which breaks the graph."""
        return {"forward": not self.cfg.adaptive_cutoffs}

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, Any]]:
        return lm_batches(self.ids("train"), self.batching, epoch, rank, world_size)

    def training_step(self, model: nn.Module, batch: dict[str, Any], carry: Any) -> StepOutput:
        # The state is dropped at epoch start and, for random sampling, before every batch.
        x, y = batch["x"], batch["y"]                     # (T, B), (T, B)
        dev = next(model.parameters()).device
        x, y = x.to(dev), y.to(dev)
        state = model.zero_state(x.shape[1]) if batch["reset"] else detach_state(carry)
        nll, state, dropped, raw = model(x, state, targets=y)   # through the wrapper's forward (Fabric, DDP)
        lv = float(nll.detach())
        metrics = {"ppl": _ppl(lv)}
        loss = nll
        if self.cfg.ar or self.cfg.tar:
            ar, tar = activation_penalties(dropped, raw, self.cfg.ar, self.cfg.tar)
            loss = nll + ar + tar
            metrics.update(ar=float(ar.detach()), tar=float(tar.detach()))
        if self.cfg.level == "char":
            metrics["bpc"] = lv / math.log(2)
        return StepOutput(loss=loss, n_items=int(y.numel()), metrics=metrics, carry=detach_state(state))

    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        return self.evaluate_ids(model, self.ids(split))

    # -- beyond the contract

    def evaluate_ids(self, model: nn.Module, ids: torch.Tensor) -> dict[str, float]:
        """Mean cross-entropy over a stream, state carried through it; with perplexity, bpc, tokens/s."""
        was_training = model.training
        model.eval()
        dev = next(model.parameters()).device
        total, count, state = 0.0, 0, None
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                for x, y in eval_batches(ids, self.cfg.eval_batch_size, self.cfg.bptt):
                    loss, state, _, _ = model(x.to(dev), state, targets=y.to(dev), reduction="sum")
                    total += float(loss)
                    count += y.numel()
        finally:
            model.train(was_training)
        seconds = time.perf_counter() - t0
        loss = total / max(count, 1)
        out = {"loss": loss, "ppl": _ppl(loss), "tokens": float(count), "tokens_per_s": count / max(seconds, 1e-9)}
        if self.cfg.level == "char":
            out["bpc"] = loss / math.log(2)
        return out

    def evaluate_text(self, model: nn.Module, path: str, encoding: str | None = None) -> dict[str, float]:
        """Score a new text file with the model's vocabulary (``rnnlab evaluate RUN --text FILE``)."""
        text = preprocess(read_text(path, encoding or self.cfg.encoding), self.cfg.preprocess)
        ids = self.vocab.encode(tokenize(text, self.cfg.level), f"text file {path!r}")
        if ids.numel() < 2:
            raise DataError(expected(f"text file {path!r}", "at least 2 tokens to score", ids.numel()))
        return self.evaluate_ids(model, ids)

    def evaluate_file(self, model: nn.Module, path: str) -> dict[str, float]:
        """The hook the training core's ``rnnlab evaluate RUN <file>`` calls, as for other tasks."""
        return self.evaluate_text(model, path)

    def report_sections(self, model: nn.Module, run_dir: str) -> list[ReportSection]:
        return lm_report_sections(self, model, run_dir)


def _ppl(loss: float) -> float:
    # exp overflows past ~709 nats; such a model is broken anyway, say so with inf.
    return math.exp(loss) if loss < 700 else math.inf


def make_lm_task(config: dict[str, Any], metadata: dict[str, Any] | None = None) -> LMTask:
    return LMTask(config, metadata)


register_task(TASK_NAME, make_lm_task)


# --------------------------------------------------------------------------- generation


def encode_prime(vocab: Vocab, prime: str) -> torch.Tensor:
    """The prime as ids. Words outside the vocabulary become ``<unk>``; unknown characters are a
    DataError that names them. An empty prime starts from a line break (or a space)."""
    if vocab.level == "word":
        toks = prime.split() or [EOS]
    else:
        toks = list(prime)
        if not toks:
            start = [c for c in ("\n", " ") if c in vocab.stoi]
            if not start:
                raise DataError(expected("--prime", "at least one character (the vocabulary has no newline or space)", "''"))
            toks = start[:1]
    return vocab.encode(toks, "--prime")


def generate(model: nn.Module, vocab: Vocab, prime: str, length: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None) -> Iterator[str]:
    """A stream of the text of ``length`` new tokens, yielded one token at a time as sampled.

    ``temperature`` 0 is greedy (argmax); otherwise logits are divided by it before sampling,
    after keeping only the ``top_k`` largest when given. The same ``seed`` gives the same text.
    The arguments and the prime are checked here, before the first token is asked for.
    """
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ConfigError(expected("--length", "an integer >= 0", length))
    if not (isinstance(temperature, (int, float)) and temperature >= 0 and math.isfinite(temperature)):
        raise ConfigError(expected("--temperature", "a number >= 0 (0 = greedy)", temperature))
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(expected("--top-k", "an integer >= 1", top_k))
    ids = encode_prime(vocab, prime)
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return _sample(model, vocab, ids, length, float(temperature), top_k, gen)


def _sample(model: nn.Module, vocab: Vocab, ids: torch.Tensor, length: int, temperature: float,
            top_k: int | None, gen: torch.Generator) -> Iterator[str]:
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits, state = model(ids.view(-1, 1).to(dev), None)   # (T, 1, V): read the prime
            last = logits[-1, 0]                                   # (V,)
            for _ in range(length):
                nxt = _choose(last.float().cpu(), temperature, top_k, gen)
                yield detokenize([vocab.itos[nxt]], vocab.level)
                logits, state = model(torch.tensor([[nxt]], device=dev), state)  # (1, 1, V)
                last = logits[-1, 0]
    finally:
        model.train(was_training)


def _choose(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> int:
    if temperature == 0:
        return int(torch.argmax(logits))
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    scaled = logits / temperature
    if not torch.isfinite(scaled.max()):    # so small a temperature that the logits overflow: its limit, greedy
        return int(torch.argmax(logits))
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


# --------------------------------------------------------------------------- run folders


def read_lm_run(run_dir: str | Path) -> LMTask:
    """The task of a language-model run folder, rebuilt from its config.json without a model.

    CheckpointError if the folder is not a run or is a run of another task; this is checked
    before any model is built or any weight is read.
    """
    if not (Path(run_dir) / CONFIG).is_file():   # one message, not the run reader's inside ours
        got = ("a folder without a run's config.json" if Path(run_dir).is_dir() else
               "a file, not a run folder" if Path(run_dir).exists() else "no such folder")
        raise CheckpointError(expected(f"run folder {run_dir}", "a language-model run", got))
    cfg = read_run_config(run_dir)
    if cfg["task"] != TASK_NAME:
        raise CheckpointError(expected(f"run folder {run_dir}", f"a language model (task {TASK_NAME!r})",
                                       f"a run of task {cfg['task']!r}"))
    config = resolve_data_paths(run_dir, cfg["task_config"], cfg.get("data_files"))
    return rebuild_task(TASK_NAME, config, cfg.get("task_metadata") or {}, Path(run_dir) / CONFIG)


def load_lm(run_dir: str | Path, checkpoint: str = "best") -> tuple[LMTask, LanguageModel]:
    """``(task, model in eval mode)`` of a language-model run (best checkpoint by default)."""
    read_lm_run(run_dir)
    task, model, _meta = load_run(run_dir, checkpoint)
    return task, model


def generate_from_run(run_dir: str | Path, prime: str, length: int, temperature: float = 1.0,
                      top_k: int | None = None, seed: int | None = None, checkpoint: str = "best") -> Iterator[str]:
    """``rnnlab generate``: every argument and the prime are checked against the run's saved
    vocabulary first; only then are the weights loaded. Returns the token stream."""
    task = read_lm_run(run_dir)
    prime = _prepare_prime(task, prime)
    generate(_NoModel(), task.vocab, prime, length, temperature, top_k, seed)  # validates, samples nothing
    task, model = load_lm(run_dir, checkpoint)
    return generate(model, task.vocab, prime, length, temperature, top_k, seed)


def evaluate_run(run_dir: str | Path, text: str | None = None, split: str = "valid", checkpoint: str = "best",
                 encoding: str | None = None) -> dict[str, float]:
    """Perplexity of a language-model run on one of its own splits (valid by default, as ``rnnlab
    evaluate``) or on a text file (read with ``encoding``, default the run's); the parameters in the
    order of :func:`rnnlab.tasks.classify.evaluate_run`'s."""
    task = read_lm_run(run_dir)
    if text is not None:
        read_text(text, encoding or task.cfg.encoding)  # file errors before the weights are read
    task, model = load_lm(run_dir, checkpoint)
    return task.evaluate_text(model, text, encoding) if text is not None else task.evaluate(model, split)


def summarize_run(run_dir: str | Path, last: int = 100) -> dict[str, float]:
    """Headline numbers of a run from its metrics.jsonl: training perplexity over the last
    ``last`` steps (exp of their mean loss), the last validation scores, median tokens/s."""
    recs = _read_metric_records(Path(run_dir))
    train = [r for r in recs if r.get("kind") == "train" and isinstance(r.get("loss"), (int, float)) and not r.get("skipped")]
    evals = [r for r in recs if r.get("kind") == "eval"]
    out: dict[str, float] = {}
    if train:
        tail = train[-last:]
        mean_loss = sum(r["loss"] for r in tail) / len(tail)
        out.update(steps=float(train[-1]["step"]), train_loss=mean_loss, train_ppl=_ppl(mean_loss))
        if "bpc" in train[-1]:
            out["train_bpc"] = mean_loss / math.log(2)
        speeds = sorted(r["items_per_s"] for r in tail if isinstance(r.get("items_per_s"), (int, float)))
        if speeds:
            out["tokens_per_s"] = speeds[len(speeds) // 2]
    if evals:
        out.update({k: float(v) for k, v in evals[-1].items() if k.startswith("valid_") and isinstance(v, (int, float))})
    return out


def _prepare_prime(task: LMTask, prime: str) -> str:
    # A model trained on d2l-cleaned text knows only lower-case letters and spaces: clean the prime the same way.
    return preprocess(prime, task.cfg.preprocess) if task.cfg.preprocess != "none" and prime else prime


class _NoModel(nn.Module):
    """Stands in for a model while ``generate`` validates its arguments (the stream is never run)."""


# --------------------------------------------------------------------------- report


SAMPLE_TEMPERATURES = (0.0, 0.5, 0.8, 1.0)


def _read_metric_records(run_dir: Path) -> list[dict[str, Any]]:
    """Metric records the training core wrote (JSONL preferred, else CSV); empty if none found."""
    for path in sorted(run_dir.glob("**/metrics*.jsonl")):
        recs = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash; the rest is still useful
        if recs:
            return recs
    for path in sorted(run_dir.glob("**/metrics*.csv")):
        with open(path, newline="") as f:
            recs = []
            for row in csv.DictReader(f):
                rec: dict[str, Any] = {}
                for k, v in row.items():
                    try:
                        rec[k] = float(v)
                    except (TypeError, ValueError):
                        rec[k] = v
                recs.append(rec)
        if recs:
            return recs
    return []


def _curves(recs: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """(step, perplexity) series for training and validation from the core's records."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in recs:
        step = r.get("step")
        if not isinstance(step, (int, float)):
            continue
        for key, label in (("train_loss", "train"), ("loss", "train"), ("val_loss", "valid"), ("valid_loss", "valid")):
            v = r.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                if key == "loss" and r.get("split") not in (None, "train"):
                    label = str(r["split"])
                xs, ys = series.setdefault(label, ([], []))
                xs.append(float(step))
                ys.append(_ppl(float(v)))
                break
    return series


def lm_report_sections(task: LMTask, model: nn.Module, run_dir: str) -> list[ReportSection]:
    sections: list[ReportSection] = []
    c = task.cfg
    # Perplexity curves.
    series = _curves(_read_metric_records(Path(run_dir)))
    if series:
        plt = pyplot()

        fig, ax = plt.subplots(figsize=(7, 3.6))
        for label, (xs, ys) in series.items():
            if len(ys) > 200:  # per-step training perplexity is noisy: show a running mean of the loss
                w = len(ys) // 100
                logs = [math.log(y) for y in ys]
                ys = [math.exp(sum(logs[max(0, i - w + 1) : i + 1]) / (i + 1 - max(0, i - w + 1))) for i in range(len(logs))]
                label = f"{label} (running mean over {w} steps)"
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("perplexity (log scale)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        body = figure_to_img(fig, "perplexity curves")
    else:
        body = '<p class="note">No metric records found in the run folder.</p>'
    rows = [["level", c.level], ["vocabulary", len(task.vocab)], ["cell", c.cell], ["hidden_size × num_layers", f"{c.hidden_size} × {c.num_layers}"],
            ["cell options", json.dumps(c.cell_options) if c.cell_options else "none (torch.nn)"],
            ["input", "one-hot" if c.embed == 0 else f"embedding {c.embed}"], ["tied", c.tied], ["bptt × batch", f"{c.bptt} × {c.batch_size}"],
            ["sampling", c.sampling], ["data", json.dumps(task._source.get("split", {}))[:200]]]
    sections.append(ReportSection("Language model: perplexity", body + table(["setting", "value"], rows)))
    # Samples at a few temperatures, primed with the start of the validation text when available.
    try:
        prime_src = preprocess(task.corpus().valid, c.preprocess)
        prime = prime_src[:40] if c.level == "char" else " ".join(prime_src.split()[:8])
    except Exception:  # the corpus may be gone; the model still samples from a line break
        prime = ""
    length = 300 if c.level == "char" else 60
    parts = [f'<p class="note">Prime: <code>{html.escape(prime)}</code>; seed 0; {length} {c.level}s each.</p>']
    for t in SAMPLE_TEMPERATURES:
        try:
            text = "".join(generate(model, task.vocab, prime, length, temperature=t, seed=0))
        except DataError:
            text = "".join(generate(model, task.vocab, "", length, temperature=t, seed=0))
        label = "greedy (temperature 0)" if t == 0 else f"temperature {t}"
        parts.append(f"<h3>{label}</h3><pre>{html.escape(prime + text)}</pre>")
    sections.append(ReportSection("Language model: samples", "\n".join(parts)))
    return sections
