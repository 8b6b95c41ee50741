"""Greedy and beam search: width 1 equals greedy, batch equals single example, and a wide beam
finds the exact n best against an exhaustive enumeration of every output."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnlab.data.pairs import BOS_ID, EOS_ID, PAD_ID, pad_batch
from rnnlab.errors import ConfigError
from rnnlab.nn.decoding import beam_search, greedy_decode, length_penalty
from rnnlab.nn.seq2seq import EncoderDecoder

SOURCES = [[4, 5, 6, 2], [7, 2], [5, 8, 5, 5, 8, 6, 2]]


def _model(V=9, attention="general", cell="lstm", seed=0, eos_bias=0.0):
    torch.manual_seed(seed)
    m = EncoderDecoder(9, V, cell=cell, embedding_size=5, hidden_size=6, num_layers=2, attention=attention).double().eval()
    with torch.no_grad():
        m.output.bias[EOS_ID] += eos_bias      # untrained models rarely stop: make <eos> likely enough
    return m


@torch.no_grad()
def _log_prob(m, src, toks, ended):
    """log p(toks [<eos>] | src) by teacher forcing: an independent path through forward()."""
    y = toks + ([EOS_ID] if ended else [])
    logits = m(torch.tensor([src]), torch.tensor([len(src)]), torch.tensor([[BOS_ID] + y[:-1]]))
    lp = torch.log_softmax(logits[0], -1)
    return float(sum(lp[t, k] for t, k in enumerate(y)))


@pytest.mark.parametrize("cell,attention", [("lstm", "general"), ("gru", "none"), ("rnn", "additive")])
@pytest.mark.parametrize("early_stop,alpha,max_len", [(True, 0.6, None), (False, 0.0, 4), (True, 1.0, 3)])
def test_beam_of_width_one_equals_greedy(cell, attention, early_stop, alpha, max_len):
    m = _model(attention=attention, cell=cell, eos_bias=2.0)
    src, lengths = pad_batch(SOURCES)
    greedy = greedy_decode(m, src, lengths, max_len=max_len)
    beam = beam_search(m, src, lengths, beam=1, alpha=alpha, early_stop=early_stop, max_len=max_len)
    for g, (b,) in zip(greedy, beam):
        assert g.tokens == b.tokens and g.finished == b.finished
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-9)
        if g.attention is not None:
            torch.testing.assert_close(g.attention, b.attention)


def test_greedy_log_prob_and_tokens_agree_with_teacher_forcing():
    m = _model(eos_bias=2.0)
    src, lengths = pad_batch(SOURCES)
    hyps = greedy_decode(m, src, lengths, max_len=6)
    assert any(h.finished for h in hyps)
    for s, h in zip(SOURCES, hyps):
        assert h.log_prob == pytest.approx(_log_prob(m, s, h.tokens, h.finished), abs=1e-9)
        assert h.attention.shape == (len(h.tokens) + h.finished, len(s))
        assert len(h.tokens) <= 6


def test_batch_equals_one_example_at_a_time():
    m = _model(eos_bias=1.0)
    src, lengths = pad_batch(SOURCES)
    greedy = greedy_decode(m, src, lengths)
    beams = beam_search(m, src, lengths, beam=3, nbest=3)
    for b, s in enumerate(SOURCES):
        one = (torch.tensor([s]), torch.tensor([len(s)]))
        (g1,) = greedy_decode(m, *one)
        assert g1.tokens == greedy[b].tokens
        (b1,) = beam_search(m, *one, beam=3, nbest=3)
        assert [h.tokens for h in b1] == [h.tokens for h in beams[b]]
        assert [h.score for h in b1] == pytest.approx([h.score for h in beams[b]], abs=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_wide_beam_finds_the_exact_n_best(alpha):
    """Vocabulary of 6 (4 specials + 2), limit 3; an output holds <unk> and the two words (never
    <pad> or <bos>): 1 + 3 + 9 outputs end in <eos>, 27 are cut at the limit. A beam of 25 keeps
    all of them that can rank: its 5 best are the true 5 best."""
    V, limit = 6, 3
    m = _model(V=V, seed=3, eos_bias=1.0)
    src = SOURCES[0]
    others = [k for k in range(V) if k not in (EOS_ID, PAD_ID, BOS_ID)]
    scored = {}
    for n in range(limit):              # n tokens, then <eos> as step n + 1
        for toks in itertools.product(others, repeat=n):
            scored[(toks, True)] = _log_prob(m, src, list(toks), True) / length_penalty(n + 1, alpha)
    for toks in itertools.product(others, repeat=limit):     # cut at the limit
        scored[(toks, False)] = _log_prob(m, src, list(toks), False) / length_penalty(limit, alpha)
    assert len(scored) == 1 + 3 + 9 + 27
    best = sorted(scored.items(), key=lambda kv: -kv[1])[:5]
    (hyps,) = beam_search(m, torch.tensor([src]), torch.tensor([len(src)]), beam=25, nbest=5, alpha=alpha,
                          early_stop=False, max_len=limit)
    assert [(tuple(h.tokens), h.finished) for h in hyps] == [k for k, _ in best]
    assert [h.score for h in hyps] == pytest.approx([s for _, s in best], abs=1e-9)


def test_pad_and_bos_are_never_output_even_when_ranked_first():
    """A model that ranks <bos> and <pad> above every other token (as one early in training may)
    still decodes real tokens only; the log-probabilities stay the model's own."""
    m = _model(eos_bias=-5.0)
    with torch.no_grad():
        m.output.bias[[BOS_ID, PAD_ID]] += 20.0
    src, lengths = pad_batch(SOURCES)
    for g, hyps in zip(greedy_decode(m, src, lengths, max_len=5), beam_search(m, src, lengths, beam=3, nbest=3, max_len=5)):
        for h in [g, *hyps]:
            assert h.tokens and not {BOS_ID, PAD_ID} & set(h.tokens)
        assert len({(tuple(h.tokens), h.finished) for h in hyps}) == 3
    for s, h in zip(SOURCES, greedy_decode(m, src, lengths, max_len=5)):
        assert h.log_prob == pytest.approx(_log_prob(m, s, h.tokens, h.finished), abs=1e-9)


def test_the_ids_never_chosen_follow_the_ids_given():
    """With other special ids, the given <pad> and <bos> are the ones skipped, never the <eos>
    (id 1 here, rnnlab's <bos>); a vocabulary of the skipped tokens alone is refused."""
    m = _model(eos_bias=-5.0)
    with torch.no_grad():
        m.output.bias[1] += 30.0                        # <eos> under these ids: ends every output at once
        m.output.bias[[5, 6]] += 50.0                   # the given <bos> and <pad>: ranked first, never chosen
    src, lengths = pad_batch(SOURCES)
    for h in greedy_decode(m, src, lengths, max_len=6, bos_id=5, eos_id=1, pad_id=6):
        assert h.tokens == [] and h.finished
    for (h,) in beam_search(m, src, lengths, beam=2, max_len=6, bos_id=5, eos_id=1, pad_id=6):
        assert h.tokens == [] and h.finished
    tiny = EncoderDecoder(9, 2, embedding_size=5, hidden_size=6).double().eval()
    with pytest.raises(ConfigError, match=r"target vocabulary: expected a token besides <pad> \(0\) and <bos> \(1\), "
                                          r"got 2 token\(s\)"):
        greedy_decode(tiny, src, lengths, eos_id=5)


def test_nbest_is_sorted_and_distinct():
    m = _model(eos_bias=1.5)
    src, lengths = pad_batch(SOURCES)
    for hyps in beam_search(m, src, lengths, beam=4, nbest=4, max_len=5):
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({(tuple(h.tokens), h.finished) for h in hyps}) == len(hyps)


def test_errors():
    m = _model()
    src, lengths = pad_batch(SOURCES)
    with pytest.raises(ConfigError, match="nbest: expected at most the beam width 2, got 3"):
        beam_search(m, src, lengths, beam=2, nbest=3)
    with pytest.raises(ConfigError, match="max_len: expected an int >= 1, got 0"):
        greedy_decode(m, src, lengths, max_len=0)
    with pytest.raises(ConfigError, match="alpha"):
        beam_search(m, src, lengths, alpha=-1)
