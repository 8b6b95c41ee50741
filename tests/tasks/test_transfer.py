"""--init-from: a classifier starts from a language-model run's vocabulary, embedding and rnn."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.tasks.classify import ClassifyConfig, ClassifyTask
from rnnlab.tasks.lm import LMTask
from rnnlab.train import TrainConfig, fit, load_run

LINES = ["the film was good and i love it", "the film was bad and i hate it", "a great film", "an awful film",
         "it was so good", "it was so bad"]


def lm_run(tmp_path, level: str, embed: int, **kw):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(LINES * 20) + "\n")
    task = LMTask(dict(text=str(text), level=level, hidden_size=8, embed=embed, bptt=6, batch_size=2, **kw))
    out = tmp_path / f"lm-{level}"
    fit(task, TrainConfig(max_steps=3, quiet=True, report=False), out=out)
    return out


def reviews(tmp_path) -> str:
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i, line in enumerate(LINES * 5):
            w.writerow([line + (" zebra!" if i == 0 else ""), "pos" if "good" in line or "love" in line
                        or "great" in line else "neg"])
    return str(path)


def test_word_lm_weights_and_vocab_are_transferred_and_frozen_first(tmp_path):
    run = lm_run(tmp_path, "word", embed=6)
    _, lm, _ = load_run(run)
    task = ClassifyTask(ClassifyConfig(train=reviews(tmp_path), init_from=str(run), freeze_epochs=1, batch_size=8))
    lm_task, _, _ = load_run(run)
    assert task.vocab.itos == lm_task.vocab.itos  # word vocabularies have <unk>: nothing appended
    assert task.metadata()["arch"] == {"embed_dim": 6, "cell": "lstm", "hidden_size": 8, "num_layers": 1}
    # the config (config.json) says what was built: the language model's sizes, not the defaults
    got = task.config_dict()
    assert {k: got[k] for k in ("level", "cell", "embed_dim", "hidden_size", "num_layers")} == {
        "level": "word", "cell": "lstm", "embed_dim": 6, "hidden_size": 8, "num_layers": 1}
    torch.manual_seed(0)
    model = task.build_model()
    torch.testing.assert_close(model.embed.weight, lm.embedding.weight)
    for k, v in lm.rnn.state_dict().items():
        torch.testing.assert_close(model.rnn.state_dict()[k], v)

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    transferred = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("head")}
    head = model.head.weight.detach().clone()

    def epoch(e):
        for batch in task.train_batches(e):
            loss = task.training_step(model, batch, None).loss
            opt.zero_grad()
            loss.backward()
            opt.step()

    epoch(0)  # frozen: only the head moves
    assert not torch.equal(model.head.weight, head)
    for n, p in model.named_parameters():
        if n in transferred:
            assert torch.equal(p, transferred[n]), n
    epoch(1)  # unfrozen: the transferred weights train too
    assert not torch.equal(model.rnn.weight_hh_l0, transferred["rnn.weight_hh_l0"])


def test_one_hot_char_lm_becomes_an_identity_embedding(tmp_path):
    run = lm_run(tmp_path, "char", embed=0)
    lm_task, lm, _ = load_run(run)
    task = ClassifyTask(ClassifyConfig(train=reviews(tmp_path), init_from=str(run)))
    v = len(lm_task.vocab)
    assert lm_task.vocab.unk is None and task.vocab.itos == lm_task.vocab.itos + ["<unk>"]
    model = task.build_model().eval()
    ids = torch.tensor([[1], [4], [2], [0]])  # (T, B)
    with torch.no_grad():
        ours, _ = model.rnn(model.embed(ids))
        theirs, _ = lm.rnn(F.one_hot(ids, v).float())
    torch.testing.assert_close(ours, theirs)
    # a character the LM never saw ("z" of "zebra", "!") is read as <unk>, not an error
    unk = task.vocab.stoi["<unk>"]
    encoded = task.split("train").inputs + task.split("valid").inputs
    assert len(encoded) == 30 and sum(int((x == unk).sum()) for x in encoded) == 2


def test_init_from_refuses_sizes_that_contradict_the_language_model(tmp_path):
    run = lm_run(tmp_path, "word", embed=6)
    with pytest.raises(ConfigError, match=r"got --level \(classify level\) 'char' \(the language model's: 'word'\); "
                                          r"--cell \(classify cell\) 'gru' \(the language model's: 'lstm'\); "
                                          r"--hidden-size \(classify hidden_size\) 99 \(the language model's: 8\)$"):
        ClassifyTask(ClassifyConfig(train=reviews(tmp_path), init_from=str(run), level="char", cell="gru", hidden_size=99))


def test_init_from_a_missing_run(tmp_path):
    with pytest.raises(CheckpointError, match="--init-from"):
        ClassifyTask(ClassifyConfig(train=reviews(tmp_path), init_from=str(tmp_path / "nope")))


def test_init_from_a_tied_adaptive_lm_copies_the_embedding_it_reads(tmp_path):
    run = lm_run(tmp_path, "word", 8, tied=True, adaptive_cutoffs=[4])
    task = ClassifyTask(ClassifyConfig(train=reviews(tmp_path), init_from=str(run)))
    clf = task.build_model()
    _, lm, _ = load_run(run)
    v = lm.embedding.num_embeddings
    torch.testing.assert_close(clf.embed.weight[:v], lm.embedding.weight)


def test_init_from_a_layered_lm_says_what_it_needs(tmp_path):
    run = lm_run(tmp_path, "word", 8, locked_dropout=True)
    with pytest.raises(ConfigError, match="one recurrent stack"):
        ClassifyTask(ClassifyConfig(train=reviews(tmp_path), init_from=str(run)))


def test_the_command_line_refuses_a_size_flag_given_at_its_default_with_init_from(tmp_path, capsys):
    from rnnlab.cli import main

    run = lm_run(tmp_path, "word", embed=6)
    out = tmp_path / "clf"
    # 64 is --hidden-size's default: the Python API cannot tell it from "not given", the command line can
    assert main(["train", "classify", "--train", reviews(tmp_path), "--init-from", str(run), "--hidden-size", "64",
                 "--max-steps", "1", "--quiet", "--out", str(out)]) == 1
    assert "--hidden-size (classify hidden_size) 64 (the language model's: 8)" in capsys.readouterr().err
    assert not out.exists()
