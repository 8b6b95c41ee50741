r"""An encoder-decoder (sequence to sequence) module built from rnnlab's recurrent layers.

The encoder reads the source x_1..x_S (closed by ``<eos>``) with a multi-layer, optionally
bidirectional RNN/LSTM/GRU; the decoder, a unidirectional stack of the same cell with the same
number of layers, writes the target one token at a time (Luong et al. 2015, "global attention"
with input feeding)::

    e_t  = E_tgt[y_{t-1}]                                      (y_0 = <bos>)
    h_t  = RNN([e_t ; h̃_{t-1}], h_{t-1})                       (input feeding; h̃_0 = 0)
    c_t  = attention(h_t, encoder outputs, source mask)        (additive | general | dot)
         = summary of the source, the same for every t         (attention="none", Cho et al. 2014)
    h̃_t  = tanh(W_c [c_t ; h_t])
    p(y_t | y_<t, x) = softmax(W_out h̃_t)

With ``bidirectional=True`` each encoder direction has ``hidden_size // 2`` units and the two are
concatenated (as OpenNMT does), so encoder outputs, the encoder's final state per layer and the
decoder state all have ``hidden_size`` units: the decoder starts from the encoder's final state
layer by layer, and dot attention is possible. The "none" summary is the encoder's top-layer
final state (both directions). Without input feeding the decoder input is e_t alone (with the
summary for "none", as in Cho et al.) and teacher forcing runs the decoder over the whole target
in one call.

``tie_embeddings`` shares E_tgt with W_out (Press & Wolf 2017; h̃ then has ``embedding_size``
units); ``share_embeddings`` uses one embedding for source and target (a shared vocabulary).
Dropout acts on the embeddings, between recurrent layers and on h̃.

Shapes (batch first): B = batch, S = source length, T = target length, V = target vocabulary::

    src (B, S) int64     src_lengths (B,)     tgt_in (B, T) int64 (<bos> y_1 .. y_{T-1})
    logits (B, T, V)     attention (B, T, S)

Padded source positions are packed away from the encoder and masked out of the attention, so
an example gives the same outputs in a batch of any lengths as on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.errors import ConfigError, ShapeError, expected
from rnnlab.nn.attention import ATTENTIONS, make_attention
from rnnlab.nn.layers import GRU, LSTM, RNN

CELLS = ("lstm", "gru", "rnn", "rnn_relu")
ATTENTION_CHOICES = ("none",) + ATTENTIONS


def _make_rnn(cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float,
              bidirectional: bool, engine: str, cell_options: dict[str, Any]) -> nn.Module:
    # Dropout between layers exists only with two or more (the layer warns otherwise).
    kw = dict(num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional,
              engine=engine, **cell_options)
    if cell == "lstm":
        return LSTM(input_size, hidden_size, **kw)
    if cell == "gru":
        return GRU(input_size, hidden_size, **kw)
    return RNN(input_size, hidden_size, nonlinearity="relu" if cell == "rnn_relu" else "tanh", **kw)


# The special tokens' ids every vocabulary starts with (<pad>, <bos>, <eos>, <unk>): the
# decoders' defaults; rnnlab.data.pairs builds its vocabularies on the same ids.
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


@dataclass
class Memory:
    """What the encoder leaves for the decoder: per-source data, batch first."""

    outputs: Tensor              # (B, S, H) encoder outputs (zero at padded positions)
    mask: Tensor                 # (B, S) bool, True at real source positions
    projected: Tensor | None     # (B, S, ·) the attention's key projection, computed once
    summary: Tensor              # (B, H) the top layer's final state: the "none" context

    def index_select(self, index: Tensor) -> "Memory":
        """The memory of the examples ``index`` (beam search repeats each example K times)."""
        return Memory(self.outputs.index_select(0, index), self.mask.index_select(0, index),
                      None if self.projected is None else self.projected.index_select(0, index),
                      self.summary.index_select(0, index))


@dataclass
class DecoderState:
    """The decoder's recurrent state and its last attentional vector h̃ (input feeding)."""

    h: Tensor                    # (L, B, H)
    c: Tensor | None             # (L, B, H) for LSTM
    feed: Tensor                 # (B, A)

    def index_select(self, index: Tensor) -> "DecoderState":
        return DecoderState(self.h.index_select(1, index), None if self.c is None else self.c.index_select(1, index),
                            self.feed.index_select(0, index))


class EncoderDecoder(nn.Module):
    """Encoder-decoder with attention over rnnlab's RNN/LSTM/GRU layers; see the module docstring."""

    def __init__(self, source_vocab_size: int, target_vocab_size: int, *, cell: str = "lstm",
                 embedding_size: int = 64, hidden_size: int = 128, num_layers: int = 1,
                 bidirectional: bool = True, attention: str = "general", attention_size: int | None = None,
                 input_feeding: bool = True, dropout: float = 0.0, tie_embeddings: bool = False,
                 share_embeddings: bool = False, pad_id: int = 0, engine: str = "auto",
                 cell_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        for name, v in (("source_vocab_size", source_vocab_size), ("target_vocab_size", target_vocab_size),
                        ("embedding_size", embedding_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(expected(name, "an int > 0", repr(v)))
        if cell not in CELLS:
            raise ConfigError(expected("cell", " or ".join(CELLS), repr(cell)))
        if attention not in ATTENTION_CHOICES:
            raise ConfigError(expected("attention", " or ".join(ATTENTION_CHOICES), repr(attention)))
        if bidirectional and hidden_size % 2:
            raise ConfigError(expected("hidden_size with a bidirectional encoder", "an even number (half per direction)",
                                       hidden_size))
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(expected("dropout", "a number in [0, 1)", repr(dropout)))
        if share_embeddings and source_vocab_size != target_vocab_size:
            raise ConfigError(expected("share_embeddings", "one vocabulary for source and target",
                                       f"sizes {source_vocab_size} and {target_vocab_size}"))
        if not 0 <= pad_id < min(source_vocab_size, target_vocab_size):
            raise ConfigError(expected("pad_id", f"an id in both vocabularies (< {min(source_vocab_size, target_vocab_size)})", pad_id))
        self.cell, self.attention_kind, self.input_feeding = cell, attention, input_feeding
        self.hidden_size, self.num_layers, self.bidirectional = hidden_size, num_layers, bidirectional
        self.embedding_size, self.pad_id, self.dropout = embedding_size, pad_id, float(dropout)
        self.target_vocab_size = target_vocab_size
        cell_options = dict(cell_options or {})
        H, E = hidden_size, embedding_size
        A = E if tie_embeddings else H                  # size of h̃, the input of W_out
        self.feed_size = A

        self.target_embedding = nn.Embedding(target_vocab_size, E, padding_idx=pad_id)
        self.source_embedding = (self.target_embedding if share_embeddings
                                 else nn.Embedding(source_vocab_size, E, padding_idx=pad_id))
        self.encoder = _make_rnn(cell, E, H // 2 if bidirectional else H, num_layers, dropout, bidirectional,
                                 engine, cell_options)
        if input_feeding:
            dec_in = E + A
        else:
            dec_in = E + (H if attention == "none" else 0)
        self.decoder = _make_rnn(cell, dec_in, H, num_layers, dropout, False, engine, cell_options)
        self.attention = None if attention == "none" else make_attention(attention, H, H, attention_size)
        self.combine = nn.Linear(2 * H, A, bias=False)  # W_c
        self.output = nn.Linear(A, target_vocab_size)   # W_out
        if tie_embeddings:
            self.output.weight = self.target_embedding.weight

    # ------------------------------------------------------------------------ encoder
    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Memory, DecoderState]:
        """Encoder outputs and the decoder's initial state for ``src`` (B, S) of ``src_lengths`` (B,)."""
        if src.dim() != 2:
            raise ShapeError(expected("src shape", "(B, S)", tuple(src.shape)))
        B, S = src.shape
        lengths = torch.as_tensor(src_lengths, dtype=torch.long).cpu()
        if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > S:
            raise ShapeError(expected("src_lengths", f"{B} lengths in 1..{S}", lengths.tolist()))
        x = F.dropout(self.source_embedding(src), self.dropout, self.training)            # (B, S, E)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        outputs, _ = pad_packed_sequence(out, batch_first=True, total_length=S)          # (B, S, H)
        h, c = state if self.cell == "lstm" else (state, None)
        h, c = self._merge_directions(h), (None if c is None else self._merge_directions(c))  # (L, B, H)
        mask = torch.arange(S, device=src.device).unsqueeze(0) < lengths.to(src.device).unsqueeze(1)
        projected = None if self.attention is None else self.attention.project_keys(outputs)
        memory = Memory(outputs, mask, projected, h[-1])
        return memory, DecoderState(h, c, outputs.new_zeros(B, self.feed_size))

    def _merge_directions(self, s: Tensor) -> Tensor:
        """(L·D, B, H/D) -> (L, B, H): both directions' final states of a layer side by side."""
        if not self.bidirectional:
            return s
        L2, B, half = s.shape
        return s.view(L2 // 2, 2, B, half).permute(0, 2, 1, 3).reshape(L2 // 2, B, 2 * half)

    # ------------------------------------------------------------------------ decoder
    def step(self, y_prev: Tensor, state: DecoderState, memory: Memory
             ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoder step: previous tokens (B,) -> ``(logits (B, V), new state, attention (B, S) or None)``.

        The recurrent layer runs with T = 1, its single-step path."""
        e = F.dropout(self.target_embedding(y_prev), self.dropout, self.training)        # (B, E)
        if self.input_feeding:
            x = torch.cat([e, state.feed], dim=-1)
        elif self.attention is None:
            x = torch.cat([e, memory.summary], dim=-1)
        else:
            x = e
        hx = (state.h, state.c) if self.cell == "lstm" else state.h
        out, new = self.decoder(x.unsqueeze(0), hx)                                       # out (1, B, H)
        h_top = out[0]
        if self.attention is None:
            context, weights = memory.summary, None
        else:
            context, weights = self.attention(h_top, memory.outputs, memory.mask, memory.projected)
        feed = torch.tanh(self.combine(torch.cat([context, h_top], dim=-1)))             # (B, A)
        logits = self.output(F.dropout(feed, self.dropout, self.training))
        h, c = new if self.cell == "lstm" else (new, None)
        return logits, DecoderState(h, c, feed), weights

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, return_attention: bool = False):
        """Teacher-forced logits (B, T, V) for decoder inputs ``tgt_in`` (``<bos>`` y_1 .. y_{T-1});
        with ``return_attention`` also the weights (B, T, S) (None for attention "none")."""
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0]:
            raise ShapeError(expected("tgt_in shape", f"({src.shape[0]}, T)", tuple(tgt_in.shape)))
        memory, state = self.encode(src, src_lengths)
        if self.input_feeding:
            logits, weights = [], []
            for t in range(tgt_in.shape[1]):
                lg, state, w = self.step(tgt_in[:, t], state, memory)
                logits.append(lg)
                weights.append(w)
            out = torch.stack(logits, 1)
            attn = None if self.attention is None else torch.stack(weights, 1)
        else:
            out, attn = self._forward_whole(tgt_in, state, memory)
        return (out, attn) if return_attention else out

    def _forward_whole(self, tgt_in: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, Tensor | None]:
        """Without input feeding no step depends on the previous h̃: one call over all T steps."""
        B, T = tgt_in.shape
        e = F.dropout(self.target_embedding(tgt_in), self.dropout, self.training)        # (B, T, E)
        if self.attention is None:
            e = torch.cat([e, memory.summary.unsqueeze(1).expand(B, T, -1)], dim=-1)
        hx = (state.h, state.c) if self.cell == "lstm" else state.h
        out, _ = self.decoder(e.transpose(0, 1), hx)                                      # (T, B, H)
        h = out.transpose(0, 1)                                                           # (B, T, H)
        if self.attention is None:
            context, weights = memory.summary.unsqueeze(1).expand(B, T, -1), None
        else:
            context, weights = self.attention(h, memory.outputs, memory.mask, memory.projected)
        feed = torch.tanh(self.combine(torch.cat([context, h], dim=-1)))                  # (B, T, A)
        return self.output(F.dropout(feed, self.dropout, self.training)), weights
