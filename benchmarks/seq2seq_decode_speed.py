"""Decoding speed of a trained seq2seq run: greedy and beam-5 words/s on a split, rnnlab against
the same weights decoded by a plain torch.nn step loop.

    python benchmarks/seq2seq_decode_speed.py RUN [--split test] [--repeats 5] [--beam 5]
                                              [--batch-size 256] [--threads 1] [--json FILE]

A "word" is one source of the split's distinct sources (a date, a spelling), decoded to its end.
Each figure is the median over ``--repeats`` passes over the whole split (after one warm-up pass).

* ``rnnlab``: ``Seq2Seq.decode_ids``, i.e. ``rnnlab.nn.decoding.greedy_decode`` / ``beam_search``
  over the run's ``EncoderDecoder``, whose decoder steps run the recurrent layer at T = 1 on the
  engine the layer picks (the fast engine's C++ loop where it is built).
* ``torch.nn``: the run's weights copied into ``torch.nn.Embedding``/``LSTM``/``GRU``/``RNN``/``Linear``
  modules (the attention's score is the same few tensor ops, written out below), and a greedy and a
  beam loop written here in plain tensor ops: the beam keeps the K best continuations by raw
  log-probability, carries finished hypotheses with ``<eos>`` at no cost, stops once the best
  hypothesis of every source has ended (log-probabilities only fall, so no live one can then
  beat it), and ranks the K by the same length normalisation (alpha 0.6).

The outputs are compared too (``agreement``: the fraction of sources with the same best output),
so the speed is of the same work. Speeds are given per CPU second of this process
(``words_per_cpu_s``; with one thread, the time the work takes on a core of its own) and per wall
second (``words_per_s``, which other processes on a shared machine inflate). The beam's cost per
hypothesis is ``beam_per_beam`` = (beam-K CPU seconds) / (K x greedy CPU seconds): 1 means a
width-K beam costs K greedy decodes; the aim is at most 1.5.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.data.pairs import pad_batch
from rnnlab.nn.attention import AdditiveAttention, GeneralAttention
from rnnlab.nn.seq2seq import BOS_ID, EOS_ID
from rnnlab.train import load_run
from _report import emit

_TORCH_RNN = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN, "rnn_relu": nn.RNN}


def _twin(layer: nn.Module, cell: str) -> nn.Module:
    """The torch.nn layer with ``layer``'s weights (rnnlab's layers use torch.nn's names)."""
    kw = {"nonlinearity": "relu"} if cell == "rnn_relu" else {}
    t = _TORCH_RNN[cell](layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                         bidirectional=layer.bidirectional, **kw)
    t.load_state_dict(layer.state_dict(), strict=True)
    return t.eval()


class PlainSeq2Seq:
    """The run's model rebuilt from torch.nn modules, with its step written out."""

    def __init__(self, model: nn.Module) -> None:
        if not model.encoder.options.is_default():
            raise SystemExit("the run uses cell options torch.nn lacks: no torch.nn twin to compare with")
        m = model
        self.cell, self.lstm = m.cell, m.cell == "lstm"
        self.bidirectional, self.input_feeding, self.feed_size = m.bidirectional, m.input_feeding, m.feed_size
        self.src_emb = nn.Embedding.from_pretrained(m.source_embedding.weight.detach().clone())
        self.tgt_emb = nn.Embedding.from_pretrained(m.target_embedding.weight.detach().clone())
        self.encoder, self.decoder = _twin(m.encoder, m.cell), _twin(m.decoder, m.cell)
        self.att = m.attention
        self.kind = m.attention_kind
        def lin(src: nn.Linear) -> nn.Linear:
            out = nn.Linear(src.in_features, src.out_features, bias=src.bias is not None)
            out.load_state_dict(src.state_dict())
            return out
        if isinstance(self.att, AdditiveAttention):
            self.q_proj, self.k_proj, self.v = lin(self.att.query_proj), lin(self.att.key_proj), self.att.v.detach().clone()
        elif isinstance(self.att, GeneralAttention):
            self.k_proj = lin(self.att.key_proj)
        self.combine, self.output = lin(m.combine), lin(m.output)

    def _merge(self, s: torch.Tensor) -> torch.Tensor:
        if not self.bidirectional:
            return s
        L2, B, half = s.shape
        return s.view(L2 // 2, 2, B, half).permute(0, 2, 1, 3).reshape(L2 // 2, B, 2 * half)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor):
        S = src.shape[1]
        packed = pack_padded_sequence(self.src_emb(src), lengths, batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        keys, _ = pad_packed_sequence(out, batch_first=True, total_length=S)
        h, c = state if self.lstm else (state, None)
        h = self._merge(h)
        c = None if c is None else self._merge(c)
        mask = torch.arange(S).unsqueeze(0) < lengths.unsqueeze(1)
        proj = keys if self.kind == "dot" else None if self.kind == "none" else self.k_proj(keys)
        feed = keys.new_zeros(src.shape[0], self.feed_size)
        return [keys, mask, proj, h[-1]], [h, c, feed]

    def step(self, y: torch.Tensor, state: list, mem: list):
        keys, mask, proj, summary = mem
        h, c, feed = state
        e = self.tgt_emb(y)
        if self.input_feeding:
            x = torch.cat([e, feed], -1)
        else:
            x = torch.cat([e, summary], -1) if self.kind == "none" else e
        out, new = self.decoder(x.unsqueeze(0), (h, c) if self.lstm else h)
        q = out[0]                                                           # (B, H)
        if self.kind == "none":
            context = summary
        else:
            if self.kind == "additive":
                scores = torch.tanh(self.q_proj(q).unsqueeze(1) + proj) @ self.v  # (B, S)
            else:
                scores = torch.bmm(proj, q.unsqueeze(2)).squeeze(2)            # (B, S)
            w = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
            context = torch.bmm(w.unsqueeze(1), keys).squeeze(1)
        feed = torch.tanh(self.combine(torch.cat([context, q], -1)))
        h, c = new if self.lstm else (new, None)
        return self.output(feed), [h, c, feed]

    @torch.no_grad()
    def greedy(self, src, lengths, max_len: int) -> list[list[int]]:
        mem, state = self.encode(src, lengths)
        B = src.shape[0]
        y = torch.full((B,), BOS_ID, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool)
        toks = []
        for _ in range(max_len):
            logits, state = self.step(y, state, mem)
            y = logits.argmax(-1)
            toks.append(y)
            done |= y == EOS_ID
            if bool(done.all()):
                break
        return _cut(torch.stack(toks, 1))

    @torch.no_grad()
    def beam(self, src, lengths, K: int, max_len: int, alpha: float = 0.6) -> list[list[int]]:
        mem, state = self.encode(src, lengths)
        B = src.shape[0]
        rep = torch.arange(B).repeat_interleave(K)
        mem = [None if t is None else t.index_select(0, rep) for t in mem]
        state = [state[0].index_select(1, rep), None if state[1] is None else state[1].index_select(1, rep),
                 state[2].index_select(0, rep)]
        scores = torch.full((B, K), float("-inf"))
        scores[:, 0] = 0.0
        y = torch.full((B * K,), BOS_ID, dtype=torch.long)
        ended = torch.zeros(B * K, dtype=torch.bool)
        steps = torch.zeros(B * K)
        hist = torch.empty((B * K, 0), dtype=torch.long)
        eos_row = None
        for _ in range(max_len):
            logits, state = self.step(y, state, mem)
            logp = torch.log_softmax(logits, -1)
            V = logp.shape[-1]
            if eos_row is None:
                eos_row = torch.full((V,), float("-inf"))
                eos_row[EOS_ID] = 0.0
            logp = torch.where(ended.unsqueeze(1), eos_row, logp)             # an ended row only repeats <eos>
            top_s, top_i = (scores.view(-1, 1) + logp).view(B, K * V).topk(K, dim=1)
            rows = (torch.arange(B).unsqueeze(1) * K + top_i // V).view(-1)
            y = (top_i % V).view(-1)
            steps = steps[rows] + (~ended[rows]).float()
            ended = ended[rows] | (y == EOS_ID)
            hist = torch.cat([hist[rows], y.unsqueeze(1)], 1)
            scores = top_s
            state = [state[0].index_select(1, rows), None if state[1] is None else state[1].index_select(1, rows),
                     state[2].index_select(0, rows)]
            if bool(ended.view(B, K)[:, 0].all()):
                break
        lp = ((5.0 + steps) / 6.0) ** alpha
        best = (scores.view(-1) / lp).view(B, K).argmax(1)
        return _cut(hist[torch.arange(B) * K + best])


def _cut(tokens: torch.Tensor) -> list[list[int]]:
    out = []
    for row in tokens.tolist():
        out.append(row[: row.index(EOS_ID)] if EOS_ID in row else row)
    return out


def _median_time(fn, repeats: int) -> tuple[float, float, object]:
    """(median wall s, median process CPU s, last result) over ``repeats`` calls after a warm-up."""
    result = fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), result


def decode_speed(task, model, split: str = "test", repeats: int = 5, beam: int = 5, batch_size: int = 256) -> dict:
    """The figures described in the module docstring, as a dict."""
    model.eval()
    sources, _ = task.split(split).pairs.grouped()
    src = task.codec.encode_sources(sources, task.config.max_source_len).ids
    max_len = task.config.max_target_len
    plain = PlainSeq2Seq(model)
    batches = [pad_batch(src[s: s + batch_size]) for s in range(0, len(src), batch_size)]

    def ours(k: int):
        return [h[0].tokens for h in task.decode_ids(model, src, beam=k, batch_size=batch_size)]

    def theirs(k: int):
        out: list[list[int]] = []
        for x, lengths in batches:
            out += plain.greedy(x, lengths, max_len) if k == 1 else plain.beam(x, lengths, k, max_len)
        return out

    n = len(src)
    rows = {}
    outputs = {}
    for name, fn in (("rnnlab", ours), ("torch.nn", theirs)):
        for k in (1, beam):
            wall, cpu, outs = _median_time(lambda: fn(k), repeats)
            outputs[name, k] = outs
            rows[f"{name} {'greedy' if k == 1 else f'beam{k}'}"] = {
                "words_per_cpu_s": n / cpu, "words_per_s": n / wall, "cpu_seconds": cpu, "seconds": wall}
    for name in ("rnnlab", "torch.nn"):
        g, b = rows[f"{name} greedy"]["cpu_seconds"], rows[f"{name} beam{beam}"]["cpu_seconds"]
        rows[f"{name} beam{beam}"]["beam_per_beam"] = b / (beam * g)
    agree = {f"{'greedy' if k == 1 else f'beam{k}'}": sum(a == b for a, b in zip(outputs["rnnlab", k], outputs["torch.nn", k])) / n
             for k in (1, beam)}
    return {"split": split, "words": n, "batch_size": batch_size, "repeats": repeats, "threads": torch.get_num_threads(),
            "speed": rows, "agreement": agree}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a seq2seq run folder")
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the figure of one core)")
    ap.add_argument("--json", default=None, help="write the figures to this file too")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    task, model, _ = load_run(args.run)
    figures = {"run": args.run, **decode_speed(task, model, args.split, args.repeats, args.beam, args.batch_size)}
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
