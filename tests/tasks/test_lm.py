"""The language-model task: model, state carry, training, evaluation, generation, errors."""

from __future__ import annotations

import inspect
import itertools
import json
import math
import types
import warnings

import pytest
import torch

import rnnlab
from rnnlab.data.text import EOS, UNK, contiguous_split
from rnnlab.errors import ConfigError, DataError, DataWarning
from rnnlab.tasks.lm import LanguageModel, LMConfig, LMTask, generate, lm_report_sections
from rnnlab.train.task import Task, build_task
from lm_corpus import LM_TEXT

TEXT = LM_TEXT


def small_task(path, **kw) -> LMTask:
    cfg = dict(text=str(path), hidden_size=24, bptt=10, batch_size=8, eval_batch_size=4, seed=0)
    cfg.update(kw)
    return LMTask(cfg)


def test_task_follows_the_contract_and_rebuilds_from_config_and_metadata(text_file, tmp_path):
    t = small_task(text_file, level="word", embed=16)
    assert isinstance(t, Task) and t.name == "lm" and t.metric_name == "ppl" and t.items_name == "tokens"
    cfg, meta = json.loads(json.dumps(t.config_dict())), json.loads(json.dumps(t.metadata()))
    assert meta["vocab"]["itos"][:2] == [UNK, EOS] and meta["source"]["split"]["kind"] == "contiguous"
    text_file.unlink()  # a rebuilt task must not need the text to exist (rnnlab generate RUN)
    u = build_task("lm", cfg, meta)
    assert u.vocab.itos == t.vocab.itos and u.cfg == t.cfg
    torch.manual_seed(0)
    m = u.build_model()
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in t.build_model().parameters())


def test_model_uses_rnnlab_layers_and_ties_weights():
    m = LanguageModel(50, "gru", hidden_size=16, num_layers=2, embed=16, dropout=0.1, tied=True)
    assert isinstance(m.rnn, rnnlab.GRU)
    assert m.decoder.weight is m.embedding.weight
    logits, h = m(torch.randint(0, 50, (7, 3)))
    assert logits.shape == (7, 3, 50) and h.shape == (2, 3, 16)
    one_hot = LanguageModel(50, "rnn", hidden_size=8, embed=0)
    assert one_hot.embedding is None and one_hot.rnn.input_size == 50


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_carrying_state_through_chunks_equals_one_long_forward(cell):
    torch.manual_seed(0)
    m = LanguageModel(30, cell, hidden_size=12, num_layers=2, embed=8).double().eval()
    x = torch.randint(0, 30, (23, 4))  # (T, B)
    whole, _ = m(x)
    state, parts = None, []
    for chunk in x.split(5):  # 5 + 5 + 5 + 5 + 3, as truncated BPTT cuts it
        out, state = m(chunk, state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=1e-12)


def test_training_step_carries_detached_state_and_resets_on_flag(text_file):
    t = small_task(text_file)
    torch.manual_seed(0)
    m = t.build_model()
    b0, b1 = itertools.islice(t.train_batches(0), 2)
    out0 = t.training_step(m, b0, None)
    h, c = out0.carry
    assert not h.requires_grad and h.shape == (1, 8, 24)
    assert out0.n_items == b0["x"].numel() and math.isclose(out0.metrics["ppl"], math.exp(out0.loss.item()))
    assert math.isclose(out0.metrics["bpc"], out0.loss.item() / math.log(2))
    # With the carry, the step equals a forward from that state; with reset, from zeros.
    with_carry = t.training_step(m, b1, out0.carry).loss.item()
    direct = torch.nn.functional.cross_entropy(m(b1["x"], out0.carry)[0].reshape(-1, len(t.vocab)), b1["y"].reshape(-1))
    assert math.isclose(with_carry, direct.item(), rel_tol=1e-6)
    reset = t.training_step(m, {**b1, "reset": True}, out0.carry).loss.item()
    assert math.isclose(reset, t.training_step(m, b1, None).loss.item(), rel_tol=1e-6)
    assert not math.isclose(reset, with_carry, rel_tol=1e-6)


def test_a_short_run_lowers_perplexity(text_file):
    t = small_task(text_file, cell="lstm")
    torch.manual_seed(0)
    m = t.build_model()
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    before = t.evaluate(m, "valid")
    carry = None
    for epoch in range(3):
        for batch in t.train_batches(epoch):
            out = t.training_step(m, batch, carry)
            carry = out.carry
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
    after = t.evaluate(m, "valid")
    assert before["ppl"] > 15 and after["ppl"] < 0.5 * before["ppl"], (before, after)
    assert after["tokens"] == len(t.ids("valid")) - 1 - (len(t.ids("valid")) - 1) % 4
    assert math.isclose(after["bpc"], after["loss"] / math.log(2)) and after["tokens_per_s"] > 0


def test_evaluate_text_scores_a_new_file(text_file, tmp_path):
    t = small_task(text_file, level="word", embed=8)
    m = t.build_model()
    other = tmp_path / "other.txt"
    other.write_text("the lazy fox jumps over a cat.\n")  # 'a', 'cat.' unseen -> <unk>
    r = t.evaluate_text(m, str(other))
    assert r["tokens"] > 0 and math.isfinite(r["ppl"])
    c = small_task(text_file)
    other.write_text("the fox \u00e9t\u00e9\n")
    with pytest.raises(DataError, match="'\u00e9'"):
        c.evaluate_text(c.build_model(), str(other))


# --------------------------------------------------------------------------- generation


def _model(task):
    torch.manual_seed(0)
    return task.build_model()


def test_generation_streams_and_is_deterministic_by_seed(text_file):
    t = small_task(text_file)
    m = _model(t)
    stream = generate(m, t.vocab, "the ", 30, temperature=1.0, seed=7)
    assert isinstance(stream, types.GeneratorType)
    first = next(stream)
    assert len(first) == 1  # one character at a time, as it is produced
    a = first + "".join(stream)
    b = "".join(generate(m, t.vocab, "the ", 30, temperature=1.0, seed=7))
    c = "".join(generate(m, t.vocab, "the ", 30, temperature=1.0, seed=8))
    assert a == b and len(a) == 30 and a != c
    assert m.training  # generation leaves the mode as it found it


def test_greedy_is_argmax_and_top_k_one_is_greedy(text_file):
    t = small_task(text_file)
    m = _model(t)
    greedy = "".join(generate(m, t.vocab, "the ", 20, temperature=0, seed=1))
    assert greedy == "".join(generate(m, t.vocab, "the ", 20, temperature=0, seed=2))
    assert greedy == "".join(generate(m, t.vocab, "the ", 20, temperature=1.5, top_k=1, seed=3))
    # The first greedy character is the argmax of the model's next-token logits.
    m.eval()
    logits, _ = m(t.vocab.encode(list("the ")).view(-1, 1))
    assert greedy[0] == t.vocab.itos[int(logits[-1, 0].argmax())]


def test_word_generation_maps_unknown_prime_words_to_unk(text_file):
    t = small_task(text_file, level="word", embed=8)
    m = _model(t)
    out = "".join(generate(m, t.vocab, "the zebra", 5, temperature=0.8, seed=0))
    assert len(out.replace("\n", " \n").split()) == 5


def test_prime_with_unknown_characters_names_them(text_file):
    t = small_task(text_file)
    with pytest.raises(DataError, match=r"--prime.*2 unknown: 'Z', '\$'"):
        list(generate(_model(t), t.vocab, "the Z$Z", 5))


@pytest.mark.parametrize("kw, flag", [({"length": -1}, "--length"), ({"temperature": -0.5}, "--temperature"),
                                      ({"top_k": 0}, "--top-k")])
def test_generation_argument_errors(text_file, kw, flag):
    t = small_task(text_file)
    args = {"length": 3, "temperature": 1.0, "top_k": None, **kw}
    with pytest.raises(ConfigError, match=flag):
        list(generate(_model(t), t.vocab, "the", **args))


# --------------------------------------------------------------------------- errors before any model


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model gets built: every data error must come first."""
    def boom(*a, **k):
        raise AssertionError("a model was built")
    monkeypatch.setattr(LanguageModel, "__init__", boom)


def test_empty_and_whitespace_files(tmp_path, no_model):
    p = tmp_path / "e.txt"
    p.write_text("")
    with pytest.raises(DataError, match="empty"):
        small_task(p)
    p.write_text(" \n\n  \t\n")
    with pytest.raises(DataError, match="whitespace"):
        small_task(p)


def test_text_too_short_names_both_numbers(tmp_path, no_model):
    p = tmp_path / "short.txt"
    text = "hello there, a short text\n" * 4
    p.write_text(text)
    n_train = len(contiguous_split(text, (0.9, 0.05, 0.05))[0][0])
    assert 90 < n_train < 100
    with pytest.raises(DataError) as ei:
        small_task(p, bptt=10, batch_size=16)
    msg = str(ei.value)
    assert "10 × 16 + 1 = 161" in msg and f"got {n_train}" in msg and str(p) in msg


def test_bad_bytes_name_offset_line_and_flag(tmp_path, no_model):
    p = tmp_path / "bad.txt"
    p.write_bytes(TEXT.encode()[:100] + b"\xff\xfe" + TEXT.encode()[100:])
    with pytest.raises(DataError) as ei:
        small_task(p)
    msg = str(ei.value)
    assert "byte offset 100" in msg and "line 3" in msg and "--encoding" in msg and str(p) in msg


def test_unknown_dataset_name(no_model):
    with pytest.raises(DataError, match="timemachine, tinyshakespeare, wikitext2"):
        LMTask({"dataset": "ptb"})


@pytest.mark.parametrize("kw, word", [
    ({"cell": "transformer"}, "--cell"), ({"level": "byte"}, "--level"), ({"hidden_size": 0}, "--hidden-size"), ({"layers": 0}, "--num-layers"),
    ({"dropout": 1.0}, "--dropout"), ({"tied": True, "embed": 8}, "--tied"), ({"tied": True, "embed": 0}, "--tied"),
    ({"sampling": "shuffle"}, "sampling"), ({"preprocess": "nfc"}, "preprocess"),
    ({"init_std": 0.0}, "--init-std"), ({"init_std": float("nan")}, "--init-std"),
    ({"init_std": 0.01, "cell_options": {"forget_bias": 1.0}}, "--init-std"),
])
def test_config_errors(text_file, no_model, kw, word):
    with pytest.raises(ConfigError, match=word):
        small_task(text_file, **kw)


def test_config_rejects_unknown_keys_and_needs_one_source(text_file):
    with pytest.raises(ConfigError, match="hiden"):
        LMConfig.from_dict({"text": "x", "hiden": 3})
    with pytest.raises(ConfigError, match="exactly one"):
        LMTask({})
    with pytest.raises(ConfigError, match="exactly one"):
        LMTask({"text": str(text_file), "dataset": "timemachine"})


@pytest.mark.parametrize("cell, embed, cutoffs", [("lstm", 0, ()), ("gru", 16, ()), ("rnn", 16, (10,))])
def test_init_std_draws_every_weight_matrix_from_a_normal_and_zeros_the_biases(cell, embed, cutoffs):
    """d2l's from-scratch initialisation: weights N(0, std^2), biases 0; the adaptive softmax keeps its own."""
    torch.manual_seed(0)
    m = LanguageModel(40, cell, hidden_size=64, embed=embed, init_std=0.02, adaptive_cutoffs=cutoffs)
    seen = set()
    for name, p in m.named_parameters():
        if name.startswith("adaptive."):
            continue
        seen.add(name.split(".")[0])
        if "bias" in name:
            assert torch.count_nonzero(p) == 0, name
        else:
            assert abs(p.std().item() - 0.02) < 0.004 and abs(p.mean().item()) < 0.004, name
    assert seen == ({"rnn"} | ({"embedding"} if embed else set()) | (set() if cutoffs else {"decoder"}))
    default = LanguageModel(40, cell, hidden_size=64, embed=embed)             # torch.nn: uniform +-1/sqrt(H)
    assert default.rnn.weight_hh_l0.abs().max() > 0.1   # 1/sqrt(64) = 0.125; N(0, 0.02^2) rarely passes 0.08


def test_init_std_reaches_the_model_through_the_task(text_file):
    t = small_task(text_file, init_std=0.01)
    m = t.build_model()
    assert torch.count_nonzero(m.rnn.bias_ih_l0) == 0 and m.rnn.weight_hh_l0.std() < 0.02


@pytest.mark.parametrize("level", ["word", "char"])
def test_tied_default_embed_is_hidden(text_file, level):
    """At either level (a char model with --tied was refused for the one-hot input it had not asked for)."""
    t = small_task(text_file, level=level, tied=True)
    assert t.cfg.embed == t.cfg.hidden_size == 24


def test_report_sections_have_curves_and_samples(text_file, tmp_path):
    t = small_task(text_file)
    m = _model(t)
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [{"step": 1, "train_loss": 3.0}, {"step": 2, "train_loss": 2.5},
                                          {"step": 2, "val_loss": 2.7}]) + "\n")
    secs = lm_report_sections(t, m, str(tmp_path))
    titles = [s.title for s in secs]
    assert titles == ["Language model: perplexity", "Language model: samples"]
    assert "<img" in secs[0].html and secs[1].html.count("<pre>") == 4 and "greedy" in secs[1].html


# --------------------------------------------------------------------------- command line, end to end


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One tiny run trained through the training core by ``rnnlab train lm`` (shared by the tests below)."""
    from rnnlab.cli.main import main

    d = tmp_path_factory.mktemp("lmcli")
    (d / "corpus.txt").write_text(TEXT)
    run = d / "run"
    rc = main(["train", "lm", "--text", str(d / "corpus.txt"), "--hidden", "24", "--bptt", "10", "--batch-size", "8",
               "--eval-batch-size", "4", "--optimizer", "adam", "--lr", "0.02", "--max-steps", "40",
               "--eval-every", "20", "--threads", "1", "--quiet", "--out", str(run)])
    assert rc == 0
    return run


def test_cli_train_writes_an_lm_run_with_perplexities(cli_run):
    from rnnlab.tasks.lm import summarize_run

    cfg = json.loads((cli_run / "config.json").read_text())
    assert cfg["task"] == "lm" and cfg["task_config"]["hidden_size"] == 24
    s = summarize_run(cli_run)
    assert s["steps"] == 40 and s["valid_ppl"] < 12 and s["tokens_per_s"] > 0  # chance is ~30
    assert math.isclose(s["valid_bpc"], s["valid_loss"] / math.log(2))
    html = (cli_run / "report.html").read_text()
    assert "Language model: perplexity" in html and "temperature 0.8" in html


def test_cli_generate_streams_deterministically(cli_run, capsys):
    from rnnlab.cli.main import main

    args = ["generate", str(cli_run), "--prime", "the ", "--length", "25", "--temperature", "0.8", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("the ") and len(first) == 4 + 25 + 1


def test_cli_generate_errors_name_the_problem(cli_run, tmp_path, capsys, monkeypatch):
    from rnnlab.cli.main import main
    import rnnlab.train.rundir as rundir

    def no_load(*a, **k):
        raise AssertionError("weights were loaded")
    monkeypatch.setattr(rundir, "load_run", no_load)
    assert main(["generate", str(cli_run), "--prime", "the QX", "--length", "5"]) == 1
    assert "'Q', 'X'" in capsys.readouterr().err
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"task": "classify", "task_config": {}, "train_config": {}}))
    assert main(["generate", str(other), "--length", "5"]) == 1
    err = capsys.readouterr().err
    assert "language model" in err and "'classify'" in err
    assert main(["generate", str(tmp_path), "--length", "5"]) == 1
    assert "language-model run" in capsys.readouterr().err


def test_evaluate_run_on_test_split_and_on_a_file(cli_run, tmp_path):
    from rnnlab.tasks.lm import evaluate_run

    test = evaluate_run(cli_run, split="test")
    assert test["ppl"] < 12 and test["tokens"] > 0
    # rnnlab evaluate's default split (this corpus repeats one sentence: every split scores alike)
    assert inspect.signature(evaluate_run).parameters["split"].default == "valid"
    f = tmp_path / "new.txt"
    f.write_text("the lazy dog jumps over the quick brown fox.\n" * 3)
    assert evaluate_run(cli_run, text=str(f))["ppl"] < 12
    f.write_bytes(b"\x00\xff bad")
    with pytest.raises(DataError, match="byte offset 1"):
        evaluate_run(cli_run, text=str(f))


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(tmp_path, text_file):
    """Stopping inside an epoch (carried state, dropout RNG) and resuming gives the same curve and weights."""
    from safetensors.torch import load_file

    from rnnlab.train import TrainConfig, fit, resume
    from rnnlab.train.metrics import read_records

    cfg = dict(text=str(text_file), hidden_size=16, num_layers=2, embed=8, dropout=0.1, bptt=10, batch_size=8, eval_batch_size=4)
    tc = TrainConfig(max_steps=36, optimizer="adam", lr=0.01, quiet=True, threads=1, eval_every=20, report=False)
    fit(LMTask(cfg), tc, out=tmp_path / "whole")
    fit(LMTask(cfg), tc.replace(max_steps=13), out=tmp_path / "cut")  # mid-epoch: epoch 0 has about 30 batches
    resume(tmp_path / "cut", max_steps=36, quiet=True)

    def losses(run):
        return [r["loss"] for r in read_records(run / "metrics.jsonl") if r["kind"] == "train"]

    assert losses(tmp_path / "whole") == losses(tmp_path / "cut") and len(losses(tmp_path / "cut")) == 36
    a = load_file(tmp_path / "whole" / "checkpoints" / "step-00000036" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "step-00000036" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_evaluate_prints_test_perplexity_and_scores_a_text_file(cli_run, tmp_path, capsys):
    from rnnlab.cli.main import main

    assert main(["evaluate", str(cli_run), "--split", "test", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert 1 < m["ppl"] < 12 and math.isclose(m["ppl"], math.exp(m["loss"]))
    f = tmp_path / "new.txt"
    f.write_text("the quick brown dog.\n" * 5)
    assert main(["evaluate", str(cli_run), "--text", str(f), "--json"]) == 0
    # 105 characters: 104 next-character targets, a multiple of the eval batch size (4), all scored.
    assert json.loads(capsys.readouterr().out)["tokens"] == 104
    f.write_text("   \n")
    assert main(["evaluate", str(cli_run), "--text", str(f)]) == 1
    assert "whitespace" in capsys.readouterr().err


def test_a_config_saved_with_the_older_names_loads():
    # Run folders written by rnnlab 0.1.0 name the stack's size hidden/layers.
    cfg = LMConfig.from_dict({"text": "x", "hidden": 12, "layers": 2})
    assert (cfg.hidden_size, cfg.num_layers) == (12, 2)
    with pytest.raises(ConfigError):
        LMConfig.from_dict({"text": "x", "hidden": 12, "hidden_size": 12})


def test_a_zero_valid_or_test_fraction_names_the_split_flag(text_file):
    """--split 0.5,0.5,0 passes the fractions' check but leaves nothing to score: the error names
    --split, not the length of the text."""
    with pytest.raises(ConfigError, match=r"--split 0.5,0.5,0: expected valid and test fractions > 0"):
        small_task(text_file, split=(0.5, 0.5, 0.0)).ids("train")


def test_generate_with_a_tiny_temperature_is_greedy(cli_run, capsys):
    """A temperature so small that the logits overflow float32 samples the argmax, as temperature 0
    does (it was a NaN in the sampler, after the prime was printed)."""
    from rnnlab.cli.main import main

    outs = []
    for t in ("0", "1e-40", "1e-300"):
        assert main(["generate", str(cli_run), "--prime", "the ", "--length", "12", "--temperature", t, "--seed", "3"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) > 12


def test_evaluate_refuses_flags_a_text_file_or_split_ignores(cli_run, tmp_path, capsys):
    from rnnlab.cli.main import main

    f = tmp_path / "new.txt"
    f.write_text("the lazy dog jumps over the quick brown fox.\n" * 3)
    assert main(["evaluate", str(cli_run), "--text", str(f), "--split", "test"]) == 2
    assert "--split: expected it without --text" in capsys.readouterr().err
    assert main(["evaluate", str(cli_run), "--encoding", "latin-1"]) == 2
    assert "--encoding: expected it with --text FILE" in capsys.readouterr().err
    assert main(["evaluate", str(cli_run), "--text", str(f), "--encoding", "latin-1", "--json"]) == 0


def test_messages_name_the_cause(cli_run, tmp_path, capsys):
    from rnnlab.cli.main import main

    text = cli_run.parent / "corpus.txt"
    assert main(["generate", str(text), "--length", "5"]) == 1
    assert "expected a language-model run, got a file, not a run folder" in capsys.readouterr().err
    assert main(["train", "lm", "--text", str(text), "--max-tokens", "10", "--max-steps", "1",
                 "--out", str(tmp_path / "run")]) == 1
    assert "use a larger --max-tokens (now 10) or a smaller --bptt / --batch-size" in capsys.readouterr().err
    assert main(["train", "lm", "--text", str(text), "--max-tokens", "1000000", "--bptt", "500", "--max-steps", "1",
                 "--out", str(tmp_path / "run")]) == 1    # a cap that cut nothing is not the cause
    assert "use a longer text or a smaller --bptt / --batch-size" in capsys.readouterr().err
    # a cap below the whole text but above the training split (the only one it cuts) cut nothing either
    cap = str(len(text.read_text()))
    assert main(["train", "lm", "--text", str(text), "--max-tokens", cap, "--bptt", "500", "--max-steps", "1",
                 "--out", str(tmp_path / "run")]) == 1
    assert "use a longer text or a smaller --bptt / --batch-size" in capsys.readouterr().err


def test_most_training_tokens_unknown_is_a_data_warning(tmp_path):
    words = " ".join(f"w{k}" for k in range(400))
    text = tmp_path / "t.txt"
    text.write_text((words + " the the the\n") * 2)
    with pytest.warns(DataWarning, match=r"--min-freq 3: 9\d% of the training tokens are <unk>"):
        LMTask(LMConfig(text=str(text), level="word", min_freq=3, bptt=4, batch_size=2, hidden_size=8))
    with warnings.catch_warnings():      # at --min-freq 1 the <unk> are the text's own: nothing to say
        warnings.simplefilter("error", DataWarning)
        LMTask(LMConfig(text=str(text), level="word", min_freq=1, bptt=4, batch_size=2, hidden_size=8))
