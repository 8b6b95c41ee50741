"""The encoder-decoder against a reference built from torch.nn layers with copied weights, run one
example at a time without padding; batch vs single example; the whole-target path vs steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab.data.pairs import pad_batch
from rnnlab.errors import ConfigError, ShapeError
from rnnlab.nn.seq2seq import EncoderDecoder

VS, VT, E, H, L = 9, 11, 5, 6, 2
SOURCES = [[4, 5, 6, 2], [7, 2], [5, 8, 5, 5, 8, 6, 2]]
TARGETS = [[1, 4, 5], [1, 6, 7, 8, 9], [1]]          # decoder inputs, <bos> first, of mixed lengths
TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _model(cell, attention, feed=True, **kw):
    torch.manual_seed(1)
    return EncoderDecoder(VS, VT, cell=cell, embedding_size=E, hidden_size=H, num_layers=L, attention=attention,
                          input_feeding=feed, **kw).double().eval()


def _torch_copy(layer, cell, **kw):
    ref = TORCH[cell](layer.input_size, layer.hidden_size, L, **kw).double()
    ref.load_state_dict(layer.state_dict())
    return ref


def _reference(m, cell, attention, feed, src, tgt_in):
    """Logits (T, V) for one unpadded example: torch.nn layers, attention written out."""
    enc = _torch_copy(m.encoder, cell, bidirectional=True)
    dec = _torch_copy(m.decoder, cell)
    out, hn = enc(m.source_embedding.weight[src])                        # (S, H), (2L, H/2)
    merge = lambda s: torch.stack([torch.cat([s[2 * l], s[2 * l + 1]]) for l in range(L)])   # (L, H)
    hx = (merge(hn[0]), merge(hn[1])) if cell == "lstm" else merge(hn)
    summary = merge(hn[0] if cell == "lstm" else hn)[-1]
    feed_vec = torch.zeros(m.feed_size, dtype=torch.float64)
    logits = []
    for y in tgt_in:
        e = m.target_embedding.weight[y]
        x = torch.cat([e, feed_vec]) if feed else (torch.cat([e, summary]) if attention == "none" else e)
        o, hx = dec(x.unsqueeze(0), hx)
        h = o[0]
        if attention == "none":
            c = summary
        else:
            a = m.attention
            if attention == "additive":
                scores = torch.tanh(a.query_proj(h) + out @ a.key_proj.weight.T) @ a.v
            elif attention == "general":
                scores = out @ a.key_proj.weight.T @ h
            else:
                scores = out @ h
            c = torch.softmax(scores, 0) @ out
        feed_vec = torch.tanh(m.combine.weight @ torch.cat([c, h]))
        logits.append(m.output(feed_vec))
    return torch.stack(logits)


CASES = [(c, a, True) for c in ("lstm", "gru", "rnn") for a in ("none", "additive", "general", "dot")]
CASES += [("lstm", "general", False), ("gru", "none", False)]


@pytest.mark.parametrize("cell,attention,feed", CASES)
def test_batch_matches_torch_reference_one_example_at_a_time(cell, attention, feed):
    m = _model(cell, attention, feed)
    src, src_len = pad_batch(SOURCES)
    tgt, tgt_len = pad_batch(TARGETS)
    logits, attn = m(src, src_len, tgt, return_attention=True)
    assert logits.shape == (3, tgt.shape[1], VT)
    for b in range(3):
        ref = _reference(m, cell, attention, feed, torch.tensor(SOURCES[b]), TARGETS[b])
        torch.testing.assert_close(logits[b, : tgt_len[b]], ref)
        single = m(torch.tensor([SOURCES[b]]), torch.tensor([len(SOURCES[b])]), torch.tensor([TARGETS[b]]))
        torch.testing.assert_close(logits[b, : tgt_len[b]], single[0])
    if attention == "none":
        assert attn is None
    else:
        assert attn.shape == (3, tgt.shape[1], src.shape[1])
        assert (attn[1, :, 2:] == 0).all()                                # padded source positions
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, tgt.shape[1], dtype=torch.float64))


@pytest.mark.parametrize("attention", ["none", "additive"])
def test_whole_target_path_equals_single_steps(attention):
    """Without input feeding, forward runs the decoder over all steps in one call; step() must agree."""
    m = _model("lstm", attention, feed=False)
    src, src_len = pad_batch(SOURCES)
    tgt, _ = pad_batch(TARGETS)
    whole = m(src, src_len, tgt)
    memory, state = m.encode(src, src_len)
    for t in range(tgt.shape[1]):
        logits, state, _ = m.step(tgt[:, t], state, memory)
        torch.testing.assert_close(logits, whole[:, t])


def test_padding_tokens_of_the_source_do_not_matter():
    m = _model("gru", "general")
    src, src_len = pad_batch(SOURCES)
    other = src.clone()
    other[src == 0] = 7
    tgt, _ = pad_batch(TARGETS)
    torch.testing.assert_close(m(src, src_len, tgt), m(other, src_len, tgt))


def test_tied_and_shared_embeddings():
    m = EncoderDecoder(10, 10, embedding_size=4, hidden_size=6, tie_embeddings=True, share_embeddings=True)
    assert m.output.weight is m.target_embedding.weight is m.source_embedding.weight
    assert m.combine.out_features == 4
    n_untied = sum(p.numel() for p in EncoderDecoder(10, 10, embedding_size=4, hidden_size=6).parameters())
    assert sum(p.numel() for p in m.parameters()) < n_untied


@pytest.mark.parametrize("attention", ["additive", "general", "none"])
def test_one_training_step_moves_every_parameter(attention):
    torch.manual_seed(0)
    m = EncoderDecoder(VS, VT, cell="lstm", embedding_size=E, hidden_size=H, num_layers=2, attention=attention,
                       dropout=0.1, tie_embeddings=False)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    src, src_len = pad_batch(SOURCES)
    tgt, _ = pad_batch(TARGETS)
    out, _ = pad_batch([t[1:] + [2] for t in TARGETS])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    loss = nn.functional.cross_entropy(m(src, src_len, tgt).transpose(1, 2), out, ignore_index=0)
    loss.backward()
    opt.step()
    for n, p in m.named_parameters():
        changed = (p.detach() != before[n])
        # Rows of the <pad> embedding (padding_idx) get no gradient by design.
        if "embedding" in n:
            changed = changed[1:]
        assert changed.any(), n


def test_errors():
    with pytest.raises(ConfigError, match="attention: expected none or additive or general or dot, got 'luong'"):
        EncoderDecoder(5, 5, attention="luong")
    with pytest.raises(ConfigError, match="hidden_size with a bidirectional encoder: expected an even number"):
        EncoderDecoder(5, 5, hidden_size=7)
    with pytest.raises(ConfigError, match="cell: expected lstm or gru or rnn or rnn_relu, got 'tcn'"):
        EncoderDecoder(5, 5, cell="tcn")
    with pytest.raises(ConfigError, match="share_embeddings: expected one vocabulary"):
        EncoderDecoder(5, 6, share_embeddings=True)
    m = EncoderDecoder(5, 5, hidden_size=4)
    with pytest.raises(ShapeError, match=r"src_lengths: expected 2 lengths in 1..3, got \[3, 0\]"):
        m.encode(torch.zeros(2, 3, dtype=torch.long), torch.tensor([3, 0]))
