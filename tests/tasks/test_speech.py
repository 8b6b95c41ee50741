"""The speech task: a few training steps in each mode, transcription, streaming against offline, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from rnnlab.errors import ConfigError, DataError  # noqa: E402
from rnnlab.tasks.speech import (  # noqa: E402
    SpeechConfig, SpeechTask, _pad, load_speech_run, stack_frames, stream_file, transcribe_file)
from rnnlab.train import TrainConfig, fit  # noqa: E402

DIGITS = ("0", "1", "2")
SPEAKERS = ("george", "jackson")
TAKES = (0, 5, 6, 7)      # take 0 is the official test take; 5-7 train


@pytest.fixture(scope="module")
def few_fsdd(tmp_path_factory) -> Path:
    """24 FSDD recordings (3 digits x 2 speakers x 4 takes) copied into a folder of their own."""
    from tests.conftest import SHARED_DATA

    src = SHARED_DATA / "fsdd" / "recordings"
    if not src.is_dir():
        pytest.skip(f"FSDD not found at {src} (set RNNLAB_SHARED_DATA)")
    out = tmp_path_factory.mktemp("fsdd_few")
    for d in DIGITS:
        for s in SPEAKERS:
            for t in TAKES:
                shutil.copy(src / f"{d}_{s}_{t}.wav", out / f"{d}_{s}_{t}.wav")
    return out


def small(folder: Path, **kw) -> SpeechConfig:
    base = dict(dataset="", audio_dir=str(folder), hidden_size=16, num_layers=1, batch_size=8, valid_frac=0.25,
                train_strings=8, valid_strings=4, test_strings=4, max_digits=3, beam=4)
    base.update(kw)
    return SpeechConfig(**base)


def train(cfg: SpeechConfig, out: Path, steps: int = 2):
    task = SpeechTask(cfg)
    return task, fit(task, TrainConfig.for_task(task, max_steps=steps, eval_every=steps, report=False,
                                                 quiet=True), out)


@pytest.mark.parametrize("mode", ["words", "ctc"])
def test_train_a_few_steps_then_transcribe(few_fsdd, tmp_path, mode):
    cfg = small(few_fsdd, mode=mode)
    task, result = train(cfg, tmp_path / "run")
    assert task.labels == list(DIGITS)
    # Validation recordings are carved out of the training takes, never the test take.
    assert all(r.take != 0 for r in task._valid_recs + task._train_recs)
    assert {r.path for r in task._valid_recs}.isdisjoint({r.path for r in task._train_recs})
    task2, model = load_speech_run(result.run_dir)
    m = task2.evaluate(model, "test")
    assert np.isfinite(m["loss"]) and set(m) >= {"loss", task2.metric_name}
    res = transcribe_file(task2, model, few_fsdd / "1_george_0.wav")
    assert set(res) >= {"file", "text", "score", "tokens"}
    if mode == "words":
        assert res["text"] in DIGITS
    else:
        assert set(res["text"]) <= set(DIGITS)
        ends = [t["end_s"] for t in res["tokens"]]
        assert ends == sorted(ends)


def test_a_token_on_the_last_step_ends_with_the_audio(few_fsdd, tmp_path, monkeypatch):
    """The last recurrent step holds frames padded past the audio: a token emitted there (here
    one spanning every step) ends at the file's duration, not after it, alone and in a window
    of a long file (its offset added)."""
    from rnnlab.data.audio import load_audio
    from rnnlab.tasks import ctc
    from rnnlab.tasks.speech import _transcribe_wave

    task, result = train(small(few_fsdd, mode="ctc"), tmp_path / "run", steps=1)
    task, model = load_speech_run(result.run_dir)
    wave = load_audio(few_fsdd / "1_george_0.wav", task.fcfg.sample_rate)
    steps = []

    def every_step(lp, beam):
        steps.append(len(lp))
        return ctc.Hypothesis((1,), -1.0, -1.0, (ctc.Token(1, 0, len(lp), -1.0),))

    monkeypatch.setattr(task, "decode", every_step)
    seconds = len(wave) / task.fcfg.sample_rate
    for offset in (0.0, 30.0):
        _, _, [token] = _transcribe_wave(task, model, wave, 1, offset)
        assert token["start_s"] == offset and token["end_s"] == round(offset + seconds, 3)
    # the case is real: the steps' own span runs past the audio
    assert steps[0] * task.fcfg.hop_ms * task.config.frame_stack / 1000 > seconds


def test_ctc_strings_keep_to_their_split(few_fsdd):
    task = SpeechTask(small(few_fsdd, mode="ctc"))
    test_paths = {p for srcs in task.part("test").sources for p in srcs}
    valid_paths = {p for srcs in task.part("valid").sources for p in srcs}
    assert all(p.name.endswith("_0.wav") for p in test_paths)
    assert valid_paths <= {r.path for r in task._valid_recs}
    batch = next(iter(task.train_batches(0)))
    assert all(1 <= len(t) <= 3 for t in batch["targets"])


@pytest.mark.parametrize("mode", ["ctc", "words"])
def test_streaming_equals_offline(few_fsdd, tmp_path, mode):
    # ctc: no blank bias, so the barely trained model emits digits and the partial results show
    extra = {"blank_bias": 0.0, "pretrain_words": 0} if mode == "ctc" else {}
    cfg = small(few_fsdd, mode=mode, cell="gru", bidirectional=False, **extra)
    _, result = train(cfg, tmp_path / "run", steps=1)
    task, model = load_speech_run(result.run_dir)
    path = few_fsdd / "2_jackson_0.wav"
    partial = []
    streamed = stream_file(task, model, path, chunk_ms=100, on_partial=lambda t, s: partial.append((t, s)))
    offline = transcribe_file(task, model, path, beam=1 if task.config.mode == "ctc" else None)
    assert streamed["text"] == offline["text"]
    assert streamed["rtf"] > 0 and partial and partial[-1][0] == streamed["text"]
    if mode == "ctc":
        from rnnlab.data.audio import load_audio

        wave = torch.from_numpy(load_audio(path, 8000)).double()
        with torch.no_grad():
            lp, _ = model(wave)
        np.testing.assert_allclose(streamed["log_probs"], lp[:, 0].double().numpy(), atol=1e-4)


def test_bidirectional_model_does_not_stream(few_fsdd, tmp_path):
    _, result = train(small(few_fsdd, mode="ctc", bidirectional=True), tmp_path / "run", steps=1)
    task, model = load_speech_run(result.run_dir)
    with pytest.raises(ConfigError, match="unidirectional"):
        stream_file(task, model, few_fsdd / "0_george_0.wav")


def test_mode_defaults_and_frame_stack(few_fsdd):
    ctc, words = small(few_fsdd, mode="ctc"), small(few_fsdd, mode="words")
    assert (ctc.bidirectional, ctc.frame_stack, words.bidirectional, words.frame_stack) == (True, 3, False, 1)
    assert small(few_fsdd, mode="ctc", bidirectional=False, frame_stack=2).frame_stack == 2
    feats = torch.arange(2 * 7 * 2, dtype=torch.float32).reshape(2, 7, 2)
    x, n = stack_frames(feats, torch.tensor([7, 4]), 3)
    assert x.shape == (2, 3, 6) and n.tolist() == [3, 2]
    assert x[0, 1].tolist() == feats[0, 3:6].reshape(-1).tolist() and x[0, 2, 2:].abs().sum() == 0


def test_streaming_ctc_defaults(few_fsdd):
    """A unidirectional ctc model starts with word pretraining and a high blank bias; the others do not."""
    uni = small(few_fsdd, mode="ctc", bidirectional=False)
    assert (uni.pretrain_words, uni.blank_bias) == (150, 4.0)
    assert (small(few_fsdd, mode="ctc").pretrain_words, small(few_fsdd, mode="ctc").blank_bias) == (0, 0.0)
    assert (small(few_fsdd, mode="words").pretrain_words, small(few_fsdd, mode="words").blank_bias) == (0, 0.0)
    own = small(few_fsdd, mode="ctc", bidirectional=False, pretrain_words=0, blank_bias=1.5)
    assert (own.pretrain_words, own.blank_bias) == (0, 1.5)
    with pytest.raises(ConfigError, match="words mode"):
        small(few_fsdd, mode="words", pretrain_words=5)
    with pytest.raises(ConfigError, match="pretrain_words"):
        small(few_fsdd, mode="ctc", pretrain_words=-1)


def test_word_pretraining_opens_the_first_epoch(few_fsdd, tmp_path):
    """The first ``pretrain_words`` batches of epoch 0 are isolated training recordings trained as
    words through the head's word rows (the blank row untouched); then come the ctc strings."""
    cfg = small(few_fsdd, mode="ctc", bidirectional=False, pretrain_words=3, blank_bias=2.5, train_strings=16,
                time_masks=0, freq_masks=0, speed=0, gain_db=0)   # no augmentation: the waves are the recordings
    task = SpeechTask(cfg)
    batches = list(task.train_batches(0))
    assert [b.get("words", False) for b in batches] == [True] * 3 + [False] * 2
    recordings = list(zip(task._train_recs, task._load(task._train_recs)))
    for b in batches[:3]:
        assert len(b["waves"]) == cfg.batch_size and all(len(t) == 1 for t in b["targets"])
        for w, t in zip(b["waves"], b["targets"]):   # a training recording, with its own label
            assert [task.labels[t[0] - 1]] == [r.label for r, x in recordings if np.array_equal(x, w)]
    assert not any(b.get("words") for b in task.train_batches(1))
    again = next(iter(task.train_batches(0)))       # deterministic, so a resumed run skips the same batches
    assert all(np.array_equal(x, y) for x, y in zip(again["waves"], batches[0]["waves"]))
    assert again["targets"] == batches[0]["targets"]

    torch.manual_seed(0)
    model = task.build_model()
    assert model.head.bias[0].item() == 2.5
    # The pretraining loss is cross-entropy of the word rows on the mean of the stack's outputs.
    model.eval()
    out = task.training_step(model, batches[0], None)
    wave, lengths = _pad(batches[0]["waves"])
    with torch.no_grad():
        feats, frames = model.features(wave.double(), lengths)
        x, steps = stack_frames(feats.float(), frames, cfg.frame_stack)
        mean = torch.stack([model.rnn(x[i:i + 1, :n].transpose(0, 1))[0][:, 0].mean(0)
                            for i, n in enumerate(steps.tolist())])
        want = torch.nn.functional.cross_entropy(model.head(mean)[:, 1:],
                                                 torch.tensor([t[0] - 1 for t in batches[0]["targets"]]))
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-4)
    out.loss.backward()
    assert model.head.weight.grad[0].abs().sum() == 0 and model.head.bias.grad[0] == 0
    assert model.head.weight.grad[1:].abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.rnn.parameters())
    # Through the training core: the pretraining steps leave the blank bias where it started.
    _, result = train(cfg, tmp_path / "run", steps=3)
    _, trained = load_speech_run(result.run_dir, "latest")
    assert trained.head.bias[0].item() == 2.5
    assert not torch.equal(trained.head.bias[1:], task.build_model().head.bias[1:])


def test_bad_config_and_data_are_one_line(few_fsdd, tmp_path):
    with pytest.raises(ConfigError, match="mode"):
        small(few_fsdd, mode="phones")
    with pytest.raises(ConfigError, match="exactly one of dataset and audio_dir"):
        SpeechConfig(dataset="fsdd", audio_dir=str(few_fsdd))
    with pytest.raises(DataError, match="speaker"):
        SpeechTask(small(few_fsdd, split="speaker:nobody"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError):
        SpeechTask(small(empty))


MEMORY = """
import json, resource, sys
import torch
from rnnlab.tasks.speech import load_speech_run, transcribe_file
torch.set_num_threads(1)
task, model = load_speech_run(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = transcribe_file(task, model, sys.argv[2], beam=1)
print(json.dumps({"growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before,
                  "tokens": len(res["tokens"]), "starts": [t["start_s"] for t in res["tokens"]]}))
"""


def test_long_file_in_bounded_memory(few_fsdd, tmp_path):
    """A 10-minute file is read in windows: the peak memory it adds is about that of a 1-minute
    file, where reading it whole would add ten times as much (its features alone are ~150 MB)."""
    import json
    import subprocess
    import sys

    import soundfile as sf

    _, result = train(small(few_fsdd, mode="ctc"), tmp_path / "run", steps=1)
    word = np.asarray(sf.read(few_fsdd / "1_george_0.wav", dtype="float32")[0])
    second = np.concatenate([word, np.zeros(8000 - len(word) % 8000, dtype=np.float32)])
    growth = {}
    for minutes in (1, 10):
        path = tmp_path / f"{minutes}min.wav"
        sf.write(path, np.tile(second, int(60 * minutes * 8000 // len(second))), 8000)
        out = subprocess.run([sys.executable, "-c", MEMORY, str(result.run_dir), str(path)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        growth[minutes] = r["growth_kb"] / 1024
        assert r["starts"] == sorted(r["starts"]) and (not r["starts"] or r["starts"][-1] <= 60 * minutes)
    assert growth[10] < growth[1] + 40, growth   # MB


def test_words_run_refuses_a_long_file(few_fsdd, tmp_path):
    import soundfile as sf

    _, result = train(small(few_fsdd, mode="words"), tmp_path / "run", steps=1)
    task, model = load_speech_run(result.run_dir)
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(8000 * 61, dtype=np.float32), 8000)
    with pytest.raises(DataError, match="a ctc run transcribes long files"):
        transcribe_file(task, model, path)
