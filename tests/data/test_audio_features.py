"""Speech features against librosa (the reference), and the normalisations by equivalence.

Tolerances (absolute, dB units), as stated in rnnlab.data.audio_features: float64 log-mel and
MFCC 1e-5; float32 log-mel 1e-3 on bins within 80 dB of the loudest, float32 MFCC 5e-3;
deltas 1e-9 in float64.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

librosa = pytest.importorskip("librosa")

from rnnlab.data.audio_features import (  # noqa: E402
    AudioFeatures, FeatureConfig, RunningNorm, deltas, feature_stats, frame_count, mel_filterbank,
    normalize_utterance, running_normalize,
)
from rnnlab.errors import ConfigError, ShapeError  # noqa: E402

FILES = ["3_theo_7.wav", "0_george_1.wav", "8_yweweler_22.wav"]


def chirp_with_noise(rate: int = 8000, seconds: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def signal(name: str, request) -> np.ndarray:
    if name == "chirp":
        return chirp_with_noise()
    from rnnlab.data.audio import load_audio
    return load_audio(request.getfixturevalue("shared_data") / "fsdd" / "recordings" / name)


def reference_log_mel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    M = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft_, hop_length=cfg.hop_length,
                                       win_length=cfg.win_length, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
                                       htk=cfg.htk, power=2.0, center=True, pad_mode="constant")
    return librosa.power_to_db(M, ref=1.0, amin=cfg.amin, top_db=None).T          # (T, n_mels)


@pytest.mark.parametrize("htk,rate", [(False, 8000), (True, 16000)])
def test_mel_filterbank_matches_librosa(htk, rate):
    ours = mel_filterbank(rate, 512, 40, 20.0, None, htk)
    ref = librosa.filters.mel(sr=rate, n_fft=512, n_mels=40, fmin=20.0, htk=htk, norm="slaney", dtype=np.float64)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["chirp"] + FILES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_mel_and_mfcc_match_librosa(dtype, name, request):
    cfg = FeatureConfig(kind="mfcc", deltas=0, normalize="none")
    feats = AudioFeatures(cfg)
    y = signal(name, request).astype(np.float64 if dtype == torch.float64 else np.float32)
    ours_lm = feats.log_mel(torch.from_numpy(y)[None])[0].double().numpy()
    ref_lm = reference_log_mel(y, cfg)
    assert ours_lm.shape == ref_lm.shape == (frame_count(len(y), cfg.hop_length), cfg.n_mels)
    ours_mfcc = feats(torch.from_numpy(y))[0][0].double().numpy()
    ref_mfcc = librosa.feature.mfcc(S=ref_lm.T.astype(np.float64), n_mfcc=cfg.n_mfcc, dct_type=2, norm="ortho").T
    if dtype == torch.float64:
        np.testing.assert_allclose(ours_lm, ref_lm, atol=1e-5, rtol=0)
        np.testing.assert_allclose(ours_mfcc, ref_mfcc, atol=1e-5, rtol=0)
    else:
        loud = ref_lm > ref_lm.max() - 80
        np.testing.assert_allclose(ours_lm[loud], ref_lm[loud], atol=1e-3, rtol=0)
        np.testing.assert_allclose(ours_mfcc, ref_mfcc, atol=5e-3, rtol=0)


def test_logmel_kind_with_window_shorter_than_fft_and_band_limits():
    cfg = FeatureConfig(kind="logmel", sample_rate=16000, win_ms=20, hop_ms=12.5, n_fft=512, n_mels=64,
                        fmin=100.0, fmax=7000.0, deltas=0, normalize="none")
    y = chirp_with_noise(16000, 0.5).astype(np.float64)
    ours = AudioFeatures(cfg)(torch.from_numpy(y))[0][0].numpy()
    np.testing.assert_allclose(ours, reference_log_mel(y, cfg), atol=1e-5, rtol=0)


def test_deltas_match_librosa_nearest_and_delta_deltas_are_deltas_twice():
    c = torch.randn(1, 30, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d = deltas(c, 9)[0].numpy()
    np.testing.assert_allclose(d, librosa.feature.delta(c[0].numpy().T, width=9, order=1, mode="nearest").T, atol=1e-9)
    dd = deltas(deltas(c, 5), 5)[0].numpy()
    ref = librosa.feature.delta(librosa.feature.delta(c[0].numpy().T, width=5, mode="nearest"), width=5, mode="nearest").T
    np.testing.assert_allclose(dd, ref, atol=1e-9)


def test_a_padded_batch_gives_each_row_what_it_gives_alone():
    torch.manual_seed(0)
    cfg = FeatureConfig(deltas=2, normalize="utterance")
    feats = AudioFeatures(cfg)
    waves = [torch.randn(n, dtype=torch.float64) * 0.1 for n in (4000, 2345, 801)]
    batch = torch.zeros(3, 4000, dtype=torch.float64)
    for i, w in enumerate(waves):
        batch[i, :len(w)] = w
    batch[2, 801:] = 5.0            # garbage past a row's end must not leak into its frames
    out, frames = feats(batch, torch.tensor([len(w) for w in waves]))
    assert out.shape == (3, frame_count(4000, cfg.hop_length), cfg.dim)
    for i, w in enumerate(waves):
        alone, n = feats(w)
        assert int(frames[i]) == int(n[0]) == alone.shape[1]
        torch.testing.assert_close(out[i, :int(frames[i])], alone[0], atol=1e-9, rtol=0)
        assert not out[i, int(frames[i]):].any()


def test_normalize_utterance_against_numpy():
    x = torch.randn(2, 20, 5, dtype=torch.float64) * 3 + 7
    y = normalize_utterance(x, torch.tensor([20, 12]), eps=0.0)
    for b, n in ((0, 20), (1, 12)):
        ref = (x[b, :n].numpy() - x[b, :n].numpy().mean(0)) / x[b, :n].numpy().std(0)
        np.testing.assert_allclose(y[b, :n].numpy(), ref, atol=1e-12)
    assert not y[1, 12:].any()


def test_running_norm_uses_only_the_past_and_the_prior():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 4, dtype=torch.float64, generator=g) * 2 + 1
    mean, var, w = torch.tensor([0.5, -1.0, 0.0, 2.0]), torch.tensor([1.0, 4.0, 0.25, 9.0]), 10.0
    y, _ = running_normalize(x, mean, var, prior_frames=w, eps=0.0)
    for t in (0, 5, 39):
        past = x[:t + 1].numpy()
        n = len(past)
        mu = (w * mean.numpy() + past.sum(0)) / (w + n)
        # Pooled variance of the prior (as w frames) and the frames so far, about the pooled mean.
        second = (w * (var.numpy() + mean.numpy() ** 2) + (past ** 2).sum(0)) / (w + n)
        np.testing.assert_allclose(y[t].numpy(), (x[t].numpy() - mu) / np.sqrt(second - mu ** 2), atol=1e-10)
    # With no prior the last frame is normalised by the whole utterance's statistics.
    y0, _ = running_normalize(x, mean, var, prior_frames=0.0, eps=0.0)
    torch.testing.assert_close(y0[-1], normalize_utterance(x[None], eps=0.0)[0, -1])


def test_running_norm_in_chunks_equals_whole():
    x = torch.randn(57, 6, generator=torch.Generator().manual_seed(4))
    mean, var = feature_stats([torch.randn(100, 6)])
    whole, _ = running_normalize(x, mean, var)
    norm = RunningNorm(mean, var)
    chunks = [norm(c) for c in torch.split(x, [10, 0, 1, 30, 16])]
    torch.testing.assert_close(torch.cat(chunks), whole)
    norm.reset()
    torch.testing.assert_close(norm(x), whole)


def test_running_normalisation_in_the_module_needs_stats():
    cfg = FeatureConfig(normalize="running", deltas=1)
    feats = AudioFeatures(cfg)
    wave = torch.from_numpy(chirp_with_noise())
    with pytest.raises(ConfigError, match="set_stats"):
        feats(wave)
    raw, _ = feats.raw(wave)
    feats.set_stats(*feature_stats([raw[0]]))
    out, _ = feats(wave)
    torch.testing.assert_close(out[0], RunningNorm(feats.stats_mean, feats.stats_var)(raw[0]))
    with pytest.raises(ShapeError):
        feats.set_stats(torch.zeros(3), torch.ones(3))


def test_config_validation_and_round_trip():
    cfg = FeatureConfig(kind="logmel", deltas=1)
    assert cfg.dim == 80 and FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert FeatureConfig().n_fft_ == 256 and FeatureConfig().hop_length == 80
    for bad in ({"kind": "plp"}, {"deltas": 3}, {"normalize": "global"}, {"n_mfcc": 41}, {"n_fft": 128},
                {"fmax": 5000.0}):
        with pytest.raises(ConfigError):
            AudioFeatures(FeatureConfig(**bad))
    with pytest.raises(ConfigError, match="unknown|expected"):
        FeatureConfig.from_dict({"kind": "mfcc", "hop": 10})
    for kind in ("logmel", "mfcc"):   # a ZeroDivisionError / numpy ValueError further down before
        for n_mels in (0, -3, 2.5):
            with pytest.raises(ConfigError, match=re.escape(f"--n-mels (n_mels): expected an integer >= 1, got {n_mels}")):
                FeatureConfig(kind=kind, n_mels=n_mels)
    # an odd n_fft framed one step fewer than frame_count said (an IndexError downstream)
    with pytest.raises(ConfigError, match="n_fft: expected an even number of samples, got 401"):
        AudioFeatures(FeatureConfig(n_fft=401))


def test_silence_gives_finite_features():
    feats = AudioFeatures(FeatureConfig())
    out, frames = feats(torch.zeros(800))
    assert int(frames[0]) == 11 and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- streaming


def _stream_in_chunks(stream, wave, sizes):
    outs, pos = [], 0
    for k in sizes:
        outs.append(stream.accept(wave[pos:pos + k]))
        pos += k
    outs.append(stream.accept(wave[pos:]))
    outs.append(stream.finish())
    return torch.cat(outs)


@pytest.mark.parametrize("kind,n_deltas,n", [("mfcc", 2, 4321), ("logmel", 1, 3000), ("mfcc", 0, 999), ("mfcc", 2, 50)])
def test_stream_in_any_chunks_equals_offline_running_features(kind, n_deltas, n):
    from rnnlab.data.audio_features import FeatureStream
    wave = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)) * 0.1
    feats = AudioFeatures(FeatureConfig(kind=kind, deltas=n_deltas, normalize="running"))
    raw, _ = feats.raw(wave)
    feats.set_stats(*feature_stats([raw[0] * 0.5 + 1]))
    offline = feats(wave)[0][0]
    rng = np.random.default_rng(0)
    stream = FeatureStream(feats, dtype=torch.float64)
    for sizes in ([800] * 6, list(rng.integers(0, 300, 30)), [1] * 120):
        stream.reset()
        torch.testing.assert_close(_stream_in_chunks(stream, wave, sizes), offline, atol=1e-9, rtol=0)


def test_stream_emits_each_frame_after_its_lookahead():
    from rnnlab.data.audio_features import FeatureStream
    cfg = FeatureConfig(deltas=2, normalize="none")           # n_fft 256, hop 80, ±4 frames per delta order
    stream = FeatureStream(AudioFeatures(cfg))
    assert stream.lookahead_frames == 8
    emitted = 0
    for n in range(0, 4000, 160):
        emitted += stream.accept(np.zeros(160)).shape[0]
        seen = n + 160
        complete = (seen - 128) // 80 + 1 if seen >= 128 else 0     # windows reaching n_fft // 2 past their centre
        assert emitted == max(0, complete - 8)


def test_stream_errors():
    from rnnlab.data.audio_features import FeatureStream
    with pytest.raises(ConfigError, match="causal"):
        FeatureStream(AudioFeatures(FeatureConfig(normalize="utterance")))
    with pytest.raises(ConfigError, match="set_stats"):
        FeatureStream(AudioFeatures(FeatureConfig(normalize="running")))
    stream = FeatureStream(AudioFeatures(FeatureConfig(normalize="none")))
    from rnnlab.errors import DataError
    with pytest.raises(DataError, match="at least one sample"):
        stream.finish()
    stream.accept(np.zeros(100))
    stream.finish()
    with pytest.raises(ConfigError, match="reset"):
        stream.accept(np.zeros(10))
    with pytest.raises(ShapeError):
        FeatureStream(AudioFeatures(FeatureConfig(normalize="none"))).accept(np.zeros((2, 10)))
