"""Word-LM options: weight drop, locked dropout, embedding dropout, adaptive softmax, AR/TAR,
NT-ASGD, --max-tokens, tied embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.data.text import preprocess, tokenize
from rnnlab.errors import ConfigError
from rnnlab.nn import LSTM, RNN
from rnnlab.nn.adaptive import TiedAdaptiveEmbedding
from rnnlab.nn.regularize import LockedDropout, WeightDrop, embedding_dropout
from rnnlab.tasks.lm import LanguageModel, LMTask, activation_penalties, load_lm
from rnnlab.train import TrainConfig, fit
from rnnlab.train.checkpoint import load_checkpoint, read_state
from rnnlab.train.ntasgd import NTASGD


# --------------------------------------------------------------------------- weight drop


def test_weight_drop_uses_one_mask_for_every_time_step_and_passes_gradients():
    torch.manual_seed(0)
    layer = WeightDrop(RNN(3, 6), p=0.5)
    x = torch.randn(9, 2, 3)
    out, h = layer(x)
    dropped = layer.module.weight_hh_l0.detach()
    assert 0 < int((dropped == 0).sum()) < dropped.numel()
    # torch.nn with the dropped matrix as its fixed weight gives the same outputs at every step:
    # the mask did not change along the sequence.
    ref = torch.nn.RNN(3, 6)
    raw = layer.module.weight_hh_l0_raw
    with torch.no_grad():
        ref.weight_ih_l0.copy_(layer.module.weight_ih_l0)
        ref.weight_hh_l0.copy_(dropped)
        ref.bias_ih_l0.copy_(layer.module.bias_ih_l0)
        ref.bias_hh_l0.copy_(layer.module.bias_hh_l0)
    want, _ = ref(x)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    out.pow(2).sum().backward()
    g = raw.grad
    assert g is not None and float(g.abs().sum()) > 0
    assert torch.all(g[dropped == 0] == 0) and float(g[dropped != 0].abs().sum()) > 0
    assert "module.weight_hh_l0" not in dict(layer.named_parameters())   # only the raw matrix is trained


def test_weight_drop_is_off_in_eval_mode_and_the_weight_stays_a_plain_tensor():
    layer = WeightDrop(LSTM(3, 5), p=0.5).eval()
    x = torch.randn(4, 2, 3)
    a, _ = layer(x)
    b, _ = layer(x)
    assert torch.equal(a, b)
    layer.train()
    layer(x)   # after an eval call the weight must not have been registered as a parameter again
    assert sorted(n for n, _ in layer.named_parameters()) == sorted(
        ["module.weight_ih_l0", "module.bias_ih_l0", "module.bias_hh_l0", "module.weight_hh_l0_raw"])


# --------------------------------------------------------------------------- dropout


def test_locked_dropout_keeps_the_mask_over_time():
    torch.manual_seed(0)
    drop = LockedDropout(0.5)
    y = drop(torch.ones(7, 4, 10))
    assert torch.equal(y, y[:1].expand_as(y))                         # same mask at every step
    assert set(y.unique().tolist()) == {0.0, 2.0}                     # dropped or scaled by 1/(1-p)
    assert not torch.equal(y[0, 0], y[0, 1])                          # but not the same for every sequence
    x = torch.randn(3, 2, 5)
    assert torch.equal(drop.eval()(x), x)


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(1)
    emb = torch.nn.Embedding(20, 4)
    ids = torch.tensor([[3, 3, 5], [5, 7, 3]])
    out = embedding_dropout(emb, ids, 0.5, training=True)
    for w in (3, 5, 7):
        rows = out[ids == w]
        assert torch.equal(rows, rows[:1].expand_as(rows))            # every occurrence alike
        assert torch.equal(rows[0], torch.zeros(4)) or torch.allclose(rows[0], 2 * emb.weight[w])
    assert torch.equal(embedding_dropout(emb, ids, 0.5, training=False), emb(ids))


def test_embedding_dropout_equals_looking_up_the_masked_matrix():
    """Values and gradients equal those of the textbook form (AWD-LSTM's): mask the (V, E)
    matrix's rows, then look the ids up."""
    emb = torch.nn.Embedding(30, 5).double()
    ids = torch.randint(0, 30, (7, 3))
    torch.manual_seed(4)
    got = embedding_dropout(emb, ids, 0.3, training=True)
    (g_got,) = torch.autograd.grad(got.pow(2).sum(), emb.weight)
    torch.manual_seed(4)
    mask = emb.weight.new_empty((30, 1)).bernoulli_(0.7) / 0.7
    want = torch.nn.functional.embedding(ids, emb.weight * mask)
    (g_want,) = torch.autograd.grad(want.pow(2).sum(), emb.weight)
    assert 0 < int((mask == 0).sum()) < 30
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- adaptive softmax


def test_adaptive_softmax_is_a_normalised_distribution_and_its_loss_agrees():
    torch.manual_seed(0)
    m = LanguageModel(50, "lstm", 16, 1, embed=8, adaptive_cutoffs=(5, 20)).eval()
    x = torch.randint(0, 50, (6, 3))
    y = torch.randint(0, 50, (6, 3))
    scores, _ = m(x)                                                  # (T, B, V) log-probabilities
    assert scores.shape == (6, 3, 50)
    torch.testing.assert_close(scores.exp().sum(-1), torch.ones(6, 3), rtol=0, atol=1e-5)
    loss, _, _, _ = m(x, None, targets=y)
    want = -scores.gather(-1, y.unsqueeze(-1)).mean()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


def test_adaptive_softmax_model_trains(text_file):
    task = LMTask(dict(text=str(text_file), level="word", hidden_size=24, embed=16, bptt=8, batch_size=4,
                       adaptive_cutoffs=[4, 8], seed=0))
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    before = task.evaluate(model)["loss"]
    for epoch in range(3):
        carry = None
        for batch in task.train_batches(epoch):
            opt.zero_grad()
            out = task.training_step(model, batch, carry)
            out.loss.backward()
            opt.step()
            carry = out.carry
    after = task.evaluate(model)["loss"]
    assert after < 0.7 * before, (before, after)   # 3.84 -> 2.34 nats when written


def test_adaptive_softmax_checks():
    with pytest.raises(ConfigError, match="cutoffs"):
        LanguageModel(10, "lstm", 8, 1, embed=4, adaptive_cutoffs=(5, 10))
    with pytest.raises(ConfigError, match="adaptive-softmax"):
        LMTask(dict(text="x", level="word", adaptive_cutoffs=[10, 5]))


# --------------------------------------------------------------------------- AR / TAR


def test_ar_and_tar_values():
    dropped = torch.tensor([[[1.0, 2.0]], [[3.0, 0.0]]])             # (T=2, B=1, H=2)
    raw = torch.tensor([[[1.0, 1.0]], [[4.0, -1.0]]])
    ar, tar = activation_penalties(dropped, raw, 2.0, 0.5)
    assert float(ar) == pytest.approx(2.0 * (1 + 4 + 9 + 0) / 4)
    assert float(tar) == pytest.approx(0.5 * (9 + 4) / 2)
    zero_ar, zero_tar = activation_penalties(dropped, raw, 0.0, 0.0)
    assert float(zero_ar) == 0.0 and float(zero_tar) == 0.0


def test_training_step_adds_ar_and_tar_to_the_loss(text_file):
    task = LMTask(dict(text=str(text_file), level="word", hidden_size=12, embed=12, bptt=6, batch_size=4,
                       ar=2.0, tar=1.0, locked_dropout=True, dropout=0.2, weight_drop=0.3, seed=0))
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(iter(task.train_batches(0)))
    out = task.training_step(model, batch, None)
    nll = math.log(out.metrics["ppl"])
    assert out.metrics["ar"] > 0 and out.metrics["tar"] > 0
    assert float(out.loss.detach()) == pytest.approx(nll + out.metrics["ar"] + out.metrics["tar"], rel=1e-5)


# --------------------------------------------------------------------------- NT-ASGD


def test_ntasgd_triggers_on_a_non_monotone_validation_loss_and_averages_the_iterates():
    p = torch.nn.Parameter(torch.tensor([0.0]))
    opt = NTASGD([p], lr=1.0, nonmono=2)
    for loss in (5.0, 4.0, 3.0):
        assert not opt.observe(loss)
    assert not opt.observe(4.5)          # worse than the last ones but better than 5.0 (the best of all but the last 2)
    assert not opt.averaging
    assert opt.observe(4.2)              # worse than 4.0, the best of all but the last 2 losses
    assert opt.averaging
    iterates = [0.0]
    for g in (1.0, -2.0, 0.5):           # SGD steps from 0.0: -1, +1, +0.5
        p.grad = torch.tensor([g])
        opt.step()
        iterates.append(float(p.detach()))
    assert float(p.detach()) == pytest.approx(0.5)                         # training goes on from the SGD iterate
    with opt.averaged():
        assert float(p.detach()) == pytest.approx(sum(iterates) / len(iterates))   # evaluation sees the mean
    assert float(p.detach()) == pytest.approx(0.5)
    assert not opt.observe(100.0)        # triggers once


def test_ntasgd_does_not_average_before_the_trigger():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = NTASGD([p], lr=0.5)
    p.grad = torch.tensor([2.0])
    opt.step()
    with opt.averaged():
        assert float(p.detach()) == pytest.approx(0.0)


def test_fit_with_ntasgd_evaluates_and_saves_the_averaged_weights(text_file, tmp_path):
    task = LMTask(dict(text=str(text_file), level="word", hidden_size=12, embed=8, bptt=6, batch_size=4, seed=0))
    cfg = TrainConfig.for_task(task, optimizer="ntasgd", lr=5.0, nonmono=1, max_steps=0, max_epochs=4,
                               eval_every=2, quiet=True, report=False)
    result = fit(task, cfg, out=tmp_path / "run")
    last = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1]
    state = read_state(last)
    group = state["optimizer"]["param_groups"][0]
    assert group["averaging"] and group["trigger_step"] is not None
    # The checkpoint's weights are the averages; the SGD iterates travel as "raw" in the optimizer state.
    model = task.build_model()
    load_checkpoint(last, model)
    params = list(model.parameters())
    opt_state = state["optimizer"]["state"]
    for i, p in enumerate(params):
        torch.testing.assert_close(p.detach(), opt_state[i]["ax"])
        assert "raw" in opt_state[i]
    # The model fit returns holds the averages too, and scores as the checkpoint does.
    for p, q in zip(result.model.parameters(), params):
        torch.testing.assert_close(p.detach(), q.detach())


# --------------------------------------------------------------------------- max tokens, tying


def test_max_tokens_keeps_exactly_the_first_n_training_tokens(text_file):
    full = LMTask(dict(text=str(text_file), level="char", hidden_size=8, bptt=5, batch_size=2))
    cut = LMTask(dict(text=str(text_file), level="char", hidden_size=8, bptt=5, batch_size=2, max_tokens=123))
    assert cut.ids("train").numel() == 123
    assert torch.equal(cut.ids("train"), full.ids("train")[:123])
    assert torch.equal(cut.ids("valid"), full.ids("valid"))        # held-out splits untouched
    want = tokenize(preprocess(full.corpus().train, "none"), "char")[:123]
    assert [cut.vocab.itos[i] for i in cut.ids("train").tolist()] == want
    with pytest.raises(ConfigError, match="max-tokens"):
        LMTask(dict(text=str(text_file), max_tokens=1))


@pytest.mark.parametrize("layers,hidden", [(1, 16), (2, 24)])
def test_tied_embeddings_share_storage(layers, hidden):
    m = LanguageModel(30, "lstm", hidden, layers, embed=16, tied=True, locked_dropout=True)
    assert m.decoder.weight is m.embedding.weight
    assert m.decoder.weight.data_ptr() == m.embedding.weight.data_ptr()
    assert sum(1 for _ in m.parameters()) == len({id(p) for p in m.parameters()})
    scores, _ = m(torch.randint(0, 30, (5, 2)))
    assert scores.shape == (5, 2, 30)


def test_tied_needs_matching_sizes_with_one_layer(text_file):
    with pytest.raises(ConfigError, match="tied"):
        LMTask(dict(text=str(text_file), level="word", tied=True, embed=8, hidden_size=16))
    with pytest.raises(ConfigError, match="tied"):
        LMTask(dict(text=str(text_file), level="word", tied=True, embed=8, hidden_size=16, adaptive_cutoffs=[4]))


def test_adaptive_softmax_refuses_clusters_narrower_than_one_unit():
    with pytest.raises(ConfigError, match="at most 1 cutoffs for a 8-wide output"):
        LanguageModel(60, "lstm", 8, embed=8, tied=True, adaptive_cutoffs=(5, 10))
    assert LanguageModel(60, "lstm", 16, embed=16, tied=True, adaptive_cutoffs=(5, 10)).embedding.embedding_dim == 16
    # the configuration says so before any corpus is read (this file does not exist)
    with pytest.raises(ConfigError, match="at most 1 cutoffs for a 8-wide output"):
        LMTask(dict(text="no-such-corpus.txt", level="word", tied=True, embed=8, hidden_size=8, adaptive_cutoffs=[5, 10]))
    with pytest.raises(ConfigError, match="at most 2 cutoffs for a 16-wide output"):
        LMTask(dict(text="no-such-corpus.txt", level="word", hidden_size=16, adaptive_cutoffs=[5, 10, 20]))


@pytest.mark.parametrize("layers", [1, 2])
def test_tied_adaptive_softmax_reads_its_embedding_from_the_clusters(text_file, tmp_path, layers):
    task = LMTask(dict(text=str(text_file), level="word", tied=True, embed=16, hidden_size=16, num_layers=layers,
                       adaptive_cutoffs=[4, 8], embed_dropout=0.2, bptt=5, batch_size=4))
    m = task.build_model()
    assert isinstance(m.embedding, TiedAdaptiveEmbedding)
    assert m.adaptive.head.bias is not None          # word frequencies go to a bias, not into the shared rows
    # every parameter once, none belonging to the embedding alone
    names = [n for n, _ in m.named_parameters()]
    assert not any(n.startswith("embedding.") for n in names)
    assert len(m.state_dict()) == len(names)
    # it trains, and the saved run scores the same after a reload
    cfg = TrainConfig.for_task(task, optimizer="adam", lr=0.01, max_steps=4, eval_every=2, quiet=True, report=False)
    result = fit(task, cfg, out=tmp_path / "run")
    task2, model = load_lm(tmp_path / "run", checkpoint="latest")
    assert isinstance(model.embedding, TiedAdaptiveEmbedding) and model.embedding.softmax is model.adaptive
    assert result.step == 4 and math.isfinite(result.metrics["loss"])
    assert task2.evaluate(model)["loss"] == pytest.approx(result.metrics["loss"], rel=1e-6)


def test_tied_adaptive_embedding_is_the_softmax_read_backwards():
    torch.manual_seed(0)
    m = LanguageModel(40, "gru", 16, 1, embed=16, tied=True, adaptive_cutoffs=(6, 20)).double()
    emb, soft = m.embedding, m.adaptive
    x = torch.tensor([[0, 5, 6, 19], [20, 39, 3, 25]])
    got = emb(x)
    assert got.shape == (2, 4, 16)
    # by hand: a head word is its head row; a cluster word its output row times the down-projection
    assert torch.equal(got[0, 1], soft.head.weight[5])
    assert torch.allclose(got[0, 2], soft.tail[0][1].weight[0] @ soft.tail[0][0].weight)
    assert torch.allclose(got[1, 1], soft.tail[1][1].weight[19] @ soft.tail[1][0].weight)
    assert torch.allclose(got, torch.nn.functional.embedding(x, emb.weight))
    # the model's gradient through both uses of a shared matrix (input and output) agrees with
    # finite differences
    def scores(w):
        return torch.func.functional_call(m, {"adaptive.tail.0.1.weight": w}, (x,))[0]
    assert torch.autograd.gradcheck(scores, (soft.tail[0][1].weight.detach().clone().requires_grad_(),))
    # word dropout zeroes whole words: every occurrence of a dropped word, nothing else
    torch.manual_seed(3)
    ids = torch.tensor([[1, 1, 2, 2, 7, 7]])
    d = embedding_dropout(emb, ids, 0.5, training=True)
    kept = d.abs().sum(-1) > 0
    assert torch.equal(kept[0, 0::2], kept[0, 1::2])
    assert torch.allclose(d[kept], 2 * emb(ids)[kept])


def test_init_std_zeroes_the_tied_adaptive_head_bias():
    m = LanguageModel(40, "lstm", 16, embed=16, tied=True, adaptive_cutoffs=(6, 20), init_std=0.01)
    assert torch.equal(m.adaptive.head.bias, torch.zeros_like(m.adaptive.head.bias))
    assert float(m.rnn.weight_hh_l0.detach().std()) == pytest.approx(0.01, rel=0.2)
