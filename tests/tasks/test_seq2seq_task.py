"""The seq2seq task: config checks, loss, training through the core, rebuilding a run, translate, bad data."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rnnlab.errors import CheckpointError, ConfigError, DataError
from rnnlab.nn.decoding import greedy_decode, length_penalty
from rnnlab.data.pairs import BOS_ID, pad_batch, read_pairs
from rnnlab.tasks import Seq2Seq, Seq2SeqConfig
from rnnlab.tasks.seq2seq import attention_text, load_seq2seq_run, write_attention_png
from rnnlab.train import TrainConfig, fit, load_run

WORDS = ["abc", "bca", "cab", "aab", "bbc", "cca", "abca", "bcab", "acb", "bac", "cba", "aaa", "ccb", "bab", "cac",
         "abab", "baba", "caca", "acac", "bcbc"]


def write_pairs(path, rows, header="source\ttarget"):
    path.write_text(header + "\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2s")
    data = write_pairs(tmp / "rev.tsv", [(w, w[::-1]) for w in WORDS])
    task = Seq2Seq(Seq2SeqConfig(train=str(data), embedding_size=8, hidden_size=16, batch_size=8, dropout=0.0,
                                 attention="additive"))
    fit(task, TrainConfig.for_task(task, max_steps=3, max_epochs=0, quiet=True, report=False), tmp / "run")
    return tmp / "run", data


def small(**kw) -> dict:
    return dict(embedding_size=8, hidden_size=16, batch_size=4, dropout=0.0, **kw)


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="train file or a dataset"):
        Seq2SeqConfig()
    with pytest.raises(ConfigError, match=r"--attention \(seq2seq attention\): expected one of"):
        Seq2SeqConfig(dataset="dates", attention="bahdanau")
    with pytest.raises(ConfigError, match=r"--hidden-size \(seq2seq hidden_size\): expected an even number"):
        Seq2SeqConfig(dataset="dates", hidden_size=15)
    with pytest.raises(ConfigError, match="keys"):
        Seq2SeqConfig.from_dict({"dataset": "dates", "hidden": 8})
    # --dataset-size sizes a generated set only: with a pairs file it was ignored without a word
    with pytest.raises(ConfigError, match=r"--dataset-size \(seq2seq dataset_size\): expected 0 unless"):
        Seq2SeqConfig(train="pairs.tsv", dataset_size=50)
    assert Seq2SeqConfig(dataset="dates", dataset_size=50).dataset_size == 50


def test_loss_is_token_cross_entropy_with_label_smoothing_ignoring_pad(tmp_path):
    data = write_pairs(tmp_path / "p.tsv", [(w, w[::-1]) for w in WORDS])
    eps = 0.2
    task = Seq2Seq(Seq2SeqConfig(train=str(data), label_smoothing=eps, **small()))
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(iter(task.train_batches(0)))
    out = task.training_step(model, batch, None)
    logits = model(batch["src"], batch["src_lengths"], batch["tgt_in"])
    # The smoothed loss written out token by token: (1 - eps) NLL + eps * mean over classes of -log p.
    terms = []
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            y = int(batch["tgt_out"][b, t])
            if y == 0:
                continue
            logp = torch.log_softmax(logits[b, t].double(), -1)
            terms.append((1 - eps) * -logp[y] + eps * -logp.mean())
    assert out.n_items == len(terms) == int((batch["tgt_out"] != 0).sum())
    torch.testing.assert_close(out.loss.double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_scheduled_sampling_is_seeded_and_first_step_teacher_forced(tmp_path):
    data = write_pairs(tmp_path / "p.tsv", [(w, w[::-1]) for w in WORDS])
    task = Seq2Seq(Seq2SeqConfig(train=str(data), scheduled_sampling=0.5, **small()))
    torch.manual_seed(0)
    model = task.build_model().train()
    batch = next(iter(task.train_batches(0)))
    a = task._logits(model, batch, "cpu")
    b = task._logits(model, batch, "cpu")
    forced = model(batch["src"], batch["src_lengths"], batch["tgt_in"])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[:, 0], forced[:, 0])
    assert not torch.allclose(a, forced)  # some inputs after the first were the model's own


def test_scheduled_sampling_feeds_back_what_greedy_decoding_would_choose(tmp_path):
    """The model's own previous output, fed back, is never <pad> or <bos> (as decoding never
    chooses them), even from a model that ranks them first."""
    from rnnlab.nn.decoding import NEVER_OUTPUT

    data = write_pairs(tmp_path / "p.tsv", [(w, w[::-1]) for w in WORDS])
    task = Seq2Seq(Seq2SeqConfig(train=str(data), scheduled_sampling=0.99, **small()))
    torch.manual_seed(0)
    model = task.build_model().train()
    with torch.no_grad():
        model.output.bias[list(NEVER_OUTPUT)] += 50.0
    fed, step = [], model.step
    model.step = lambda y, *a: fed.append(y.clone()) or step(y, *a)
    task._logits(model, next(iter(task.train_batches(0))), "cpu")
    assert len(fed) > 1 and not any(set(y.tolist()) & set(NEVER_OUTPUT) for y in fed[1:])


def test_run_rebuilds_codec_and_model(run):
    run_dir, data = run
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["task"] == "seq2seq" and "codec" in cfg["task_metadata"]
    task, model, _ = load_run(run_dir)
    again, model2 = load_seq2seq_run(str(run_dir))
    assert task.codec.source_vocab.itos == again.codec.source_vocab.itos
    src, lengths = pad_batch(task.codec.encode_sources(["abc", "cab"]).ids)
    torch.testing.assert_close(model(src, lengths, src[:, :2]), model2(src, lengths, src[:, :2]))
    m = task.evaluate(model, "valid")
    assert set(m) == {"loss", "exact", "ter", "bleu", "chrf", "n"} and m["loss"] > 0
    # The held-out part is a share of the distinct sources, and none of them is trained on.
    assert not set(task.split("valid").pairs.source) & set(task.split("train").pairs.source)


def test_translate_greedy_beam_and_unknown(run):
    task, model, _ = load_run(run[0])
    [g] = task.translate(model, ["abcx"])
    src, lengths = pad_batch(task.codec.encode_sources(["abcx"]).ids)
    [ref] = greedy_decode(model, src, lengths, max_len=task.config.max_target_len)
    assert g.outputs == [task.codec.decode_target(ref.tokens)]
    assert g.unknown == {"x": 1} and g.source_tokens == ["a", "b", "c", "<unk>", "<eos>"]
    [b1] = task.translate(model, ["abcx"], beam=1)
    assert b1.outputs == g.outputs
    [b] = task.translate(model, ["abcx"], beam=4, nbest=3)
    # Ranked by the beam's length-normalised score; the scores given are plain log-probabilities.
    normalised = [s / length_penalty(len(toks), 0.6) for s, toks in zip(b.scores, b.output_tokens)]
    assert len(b.outputs) == 3 and normalised == sorted(normalised, reverse=True)
    assert len(b.attention[0]) == len(b.output_tokens[0]) and len(b.attention[0][0]) == 5
    text = attention_text(b).splitlines()
    assert text[0].split() == ["a", "b", "c", "?", "$"] and len(text) == 1 + len(b.output_tokens[0])
    with pytest.raises(DataError, match="input 2: expected non-empty text"):
        task.translate(model, ["ab", "  "])
    with pytest.raises(DataError, match="at most 100 tokens"):
        task.translate(model, ["a" * 100])


@torch.no_grad()
def teacher_forced_log_prob(task, model, source: str, output_tokens: list[str]) -> float:
    """log p(output | source) by one teacher-forced pass: the number a translation's score must be."""
    model.eval()
    src, lengths = pad_batch(task.codec.encode_sources([source]).ids)
    ids = [task.codec.target_vocab.stoi[t] for t in output_tokens]      # <eos> included when it finished
    logp = F.log_softmax(model(src, lengths, torch.tensor([[BOS_ID] + ids[:-1]])), -1)[0]
    return float(sum(logp[i, y] for i, y in enumerate(ids)))


def test_translate_scores_are_log_probabilities_at_any_beam(run):
    """Every output's score is its log-probability whatever the beam (so the same output has the
    same score at any beam), not the beam's length-normalised ranking score."""
    task, model, _ = load_run(run[0])
    for source in WORDS[:4]:
        for beam, nbest in ((1, 1), (4, 4)):
            [t] = task.translate(model, [source], beam=beam, nbest=nbest)
            for toks, score in zip(t.output_tokens, t.scores):
                assert score == pytest.approx(teacher_forced_log_prob(task, model, source, toks), abs=1e-4)


def test_read_pairs_with_encoding(tmp_path):
    cp = tmp_path / "cp.tsv"
    cp.write_bytes("a€b\tb€a\nc\tc\n".encode("cp1252"))
    pairs = read_pairs(cp, header=False, encoding="cp1252")
    assert pairs.source == ["a€b", "c"] and pairs.target == ["b€a", "c"]
    with pytest.raises(DataError, match="line 1: encoding: expected utf-8 text"):
        read_pairs(cp, header=False)


def test_bad_training_data_are_one_line(tmp_path):
    good = [(w, w[::-1]) for w in WORDS]
    no_col = write_pairs(tmp_path / "a.tsv", good, header="source\tout")
    with pytest.raises(DataError, match="target column 'target' not found|column"):
        Seq2Seq(Seq2SeqConfig(train=str(no_col), **small()))
    empty = tmp_path / "b.tsv"
    empty.write_text("source\ttarget\nabc\tcba\n\t\nbca\tacb\n")
    with pytest.raises(DataError, match="line 3"):
        Seq2Seq(Seq2SeqConfig(train=str(empty), **small()))
    long = write_pairs(tmp_path / "c.tsv", good + [("ab" * 20, "x")])
    with pytest.raises(DataError, match="at most 10 tokens"):
        Seq2Seq(Seq2SeqConfig(train=str(long), max_source_len=10, **small()))


def test_a_copy_task_is_said(tmp_path, recwarn):
    """One column given twice (by name and by position) trains a model that copies its input:
    warned, not refused (an autoencoder may be meant); distinct columns say nothing."""
    from rnnlab.errors import DataWarning
    data = write_pairs(tmp_path / "p.tsv", [(w, w[::-1]) for w in WORDS])
    with pytest.warns(DataWarning, match="every target equals its source .*--source-col 0, --target-col source"):
        Seq2Seq(Seq2SeqConfig(train=str(data), source_col="0", target_col="source", **small())).split("train")
    recwarn.clear()
    Seq2Seq(Seq2SeqConfig(train=str(data), **small())).split("train")
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]
    # said once, when the run is built: not again when the run is read back and its splits rebuilt
    copy = write_pairs(tmp_path / "copy.tsv", [(w, w) for w in WORDS])
    with pytest.warns(DataWarning, match="every target equals its source"):
        task = Seq2Seq(Seq2SeqConfig(train=str(copy), **small()))
    fit(task, TrainConfig.for_task(task, max_steps=1, max_epochs=0, quiet=True, report=False), tmp_path / "run")
    recwarn.clear()
    loaded = load_run(tmp_path / "run")[0]
    loaded.split("valid")
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


def test_other_task_run_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"task": "lm", "task_config": {}, "train_config": {}}))
    with pytest.raises(CheckpointError, match="expected a sequence-to-sequence run .* got a run of task 'lm'"):
        load_seq2seq_run(str(tmp_path))


def test_g2p_scores_against_every_reference(tmp_path):
    rows = [(w, " ".join(w.upper())) for w in WORDS] + [("abc", "X Y")]
    train = write_pairs(tmp_path / "t.tsv", rows)
    valid = write_pairs(tmp_path / "v.tsv", [("abc", "A B C"), ("abc", "X Y"), ("cab", "C A B")])
    task = Seq2Seq(Seq2SeqConfig(train=str(train), valid=str(valid), target_tokens="word", metrics="g2p", **small()))
    assert task.metric_name == "wer"
    torch.manual_seed(0)
    model = task.build_model()
    m = task.evaluate_detailed(model, "valid")
    assert m["n"] == 2 and m["examples"][0][1] == ["A B C", "X Y"]
    assert 0 <= m["per"] and 0 <= m["wer"] <= 1 and m["exact"] == pytest.approx(1 - m["wer"])


def test_report_has_scores_worst_errors_and_attention_maps(run):
    run_dir, _ = run
    task, model, _ = load_run(run_dir)
    sections = task.report_sections(model, str(run_dir))
    titles = [s.title for s in sections]
    assert titles == ["Sequence to sequence: valid scores", "Worst errors (valid split)",
                      "Attention (valid split, greedy outputs)"]
    m = task.evaluate_detailed(model, "valid")
    wrong = sum(out not in refs for _, refs, out, _ in m["examples"])
    assert f"{wrong} of {len(m['examples'])} outputs match no reference" in sections[1].html
    assert sections[2].html.count("<img") == min(4, len(m["examples"]))


def test_attention_png_is_written(run, tmp_path):
    run_dir, _ = run
    task, model, _ = load_run(run_dir)
    [t] = task.translate(model, ["abc"])
    path = write_attention_png(t, tmp_path / "a.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    # written through a temporary file and renamed: a link at the path is replaced, its target kept
    victim = tmp_path / "weights.bin"
    victim.write_bytes(b"keep")
    (tmp_path / "link.png").symlink_to(victim)
    write_attention_png(t, tmp_path / "link.png")
    assert victim.read_bytes() == b"keep" and not (tmp_path / "link.png").is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
