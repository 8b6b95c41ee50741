"""Pre-training and transfer: start a text classifier from a trained language model.

What moves from the ``lm`` run (read with the training core's ``load_run``):

* the vocabulary and its level (char or word), so the classifier reads text exactly as the
  language model did. A character vocabulary without ``<unk>`` gets one appended: a
  classifier must accept characters its language model never saw (that row starts at the
  mean of the embedding rows, or at zero for one-hot input);
* the embedding. A one-hot language model (``--embed 0``) becomes an embedding initialised to
  the identity, which computes exactly the one-hot input and may then be fine-tuned;
* the recurrent layers (cell, hidden size, layers, cell options such as layer_norm), weights
  copied one-to-one, since the classifier uses the same rnnlab layer with the same parameter names.

The classifier's own ``cell``/``embed_dim``/``hidden_size``/``num_layers`` are then ignored
(the architecture is the language model's) and the head is new.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rnnlab.data.text import UNK, Vocab
from rnnlab.errors import CheckpointError, ConfigError, expected
from rnnlab.tasks.lm import load_lm


@dataclass
class LMSource:
    run: str
    model: nn.Module
    vocab: Any                    # rnnlab.data.text.Vocab, with <unk> guaranteed
    arch: dict[str, Any]          # embed_dim, cell, hidden_size, num_layers, cell_options for SequenceClassifier
    extra_tokens: int             # rows appended to the LM's vocabulary (0 or 1: <unk>)


def load_lm_source(run_dir: str) -> LMSource:
    """The trained language model of ``run_dir`` and what a classifier needs from it."""
    try:
        task, model = load_lm(run_dir)
    except CheckpointError as exc:
        raise CheckpointError(f"--init-from: {exc}") from None
    cfg = task.cfg
    if model.rnn is None:
        raise ConfigError(expected("--init-from", "a language model with one recurrent stack (trained without "
                                   "--locked-dropout, --weight-drop or a --tied last layer narrower than --hidden-size)",
                                   f"one layer per level in {run_dir}"))
    vocab = task.vocab
    n_lm = len(vocab)
    extra = 0
    if vocab.unk is None:
        vocab = Vocab(vocab.level, list(vocab.itos) + [UNK], UNK)
        extra = 1
    embed = cfg.embed if cfg.embed else n_lm  # one-hot: an identity embedding of width V (the LM's input size)
    arch = {"embed_dim": int(embed), "cell": cfg.cell, "hidden_size": int(cfg.hidden_size), "num_layers": int(cfg.num_layers)}
    if cfg.cell_options:  # the LM's layer-norm etc. parameters must exist in the classifier too
        arch["cell_options"] = dict(cfg.cell_options)
    return LMSource(str(run_dir), model, vocab, arch, extra)


@torch.no_grad()
def copy_lm_weights(lm: nn.Module, clf: nn.Module, extra_tokens: int) -> None:
    """Copy the language model's embedding and recurrent layers into a SequenceClassifier."""
    w = clf.embed.weight  # (V + extra, E)
    v = w.shape[0] - extra_tokens
    if lm.embedding is None:
        w.zero_()
        w[:v, :v] = torch.eye(v, dtype=w.dtype)
    else:
        src = lm.embedding.weight
        w[:v] = src
        if extra_tokens:
            w[v:] = src.mean(0)
    clf.rnn.load_state_dict(lm.rnn.state_dict())
