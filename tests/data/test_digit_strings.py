"""Connected-digit synthesis: deterministic, one split's recordings only, exact placement, levels and noise."""

from __future__ import annotations

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from rnnlab.data.audio import load_audio  # noqa: E402
from rnnlab.data.digit_strings import ConnectedDigits, StringConfig  # noqa: E402
from rnnlab.data.recordings import official_split, scan_recordings, speaker_split  # noqa: E402
from rnnlab.errors import ConfigError  # noqa: E402

RATE = 8000


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Tiny fake FSDD: 10 digits x 2 speakers x 6 takes, each a distinct short tone."""
    d = tmp_path_factory.mktemp("rec")
    rng = np.random.default_rng(0)
    for digit in range(10):
        for s, speaker in enumerate(("ann", "bob")):
            for take in range(6):
                n = int(rng.integers(400, 1200))
                t = np.arange(n) / RATE
                x = 0.3 * np.sin(2 * np.pi * (200 + 50 * digit + 7 * take + 3 * s) * t) * np.hanning(n)
                sf.write(d / f"{digit}_{speaker}_{take}.wav", x.astype(np.float32), RATE, subtype="FLOAT")
    return scan_recordings(d)


def test_training_strings_use_training_recordings_only(pool):
    for split in (official_split(pool), speaker_split(pool, "bob")):
        train, test = {r.path for r in split.train}, {r.path for r in split.test}
        for part, own, other in (("train", train, test), ("test", test, train)):
            ds = ConnectedDigits.from_split(split, part, size=60, seed=1)
            used = {p for i in range(len(ds)) for p in ds[i].sources}
            assert used <= own and not used & other
            assert len(used) > len(own) / 2   # the draws cover the pool, so the check has teeth


def test_deterministic_per_index_and_seed(pool):
    a = ConnectedDigits(pool, size=10, seed=7)
    b = ConnectedDigits(pool, size=3, seed=7)
    for i in (2, 0, 1):                      # order and size do not matter
        np.testing.assert_array_equal(a[i].audio, b[i].audio)
        assert a[i].labels == b[i].labels and a[i].boundaries == b[i].boundaries
    c = ConnectedDigits(pool, size=3, seed=8)
    assert any(c[i].labels != a[i].labels or len(c[i].audio) != len(a[i].audio) for i in range(3))
    with pytest.raises(IndexError):
        a[10]


def test_lengths_cover_1_to_7_and_labels_match_their_sources(pool):
    ds = ConnectedDigits(pool, size=150, seed=2)
    lengths = set()
    for i in range(len(ds)):
        s = ds[i]
        lengths.add(len(s.labels))
        assert [p.name.split("_")[0] for p in s.sources] == list(s.labels)
        assert s.text == "".join(s.labels)
    assert lengths == set(range(1, 8))


def test_words_sit_at_their_boundaries_with_their_gain_and_silence_between(pool):
    ds = ConnectedDigits(pool, size=20, seed=3, config=StringConfig(gain_db=(-12.0, 3.0), pause_s=(0.0, 0.2)))
    for i in range(len(ds)):
        s = ds[i]
        silent = np.ones(len(s.audio), dtype=bool)
        prev_end = 0
        for (start, end), src, g in zip(s.boundaries, s.sources, s.gains_db):
            assert start >= prev_end
            expected = load_audio(src) * 10 ** (g / 20) * s.scale
            np.testing.assert_allclose(s.audio[start:end], expected, atol=1e-6)
            silent[start:end] = False
            prev_end = end
        assert not s.audio[silent].any()
        assert np.abs(s.audio).max() <= 0.95 + 1e-6
        assert s.snr_db is None


@pytest.mark.parametrize("kind", ["white", "pink", "files"])
def test_noise_is_at_the_drawn_snr(pool, kind, tmp_path):
    noise_files = ()
    if kind == "files":
        sf.write(tmp_path / "hum.wav", (0.1 * np.sin(np.arange(3000) / 5)).astype(np.float32), RATE)
        noise_files = (tmp_path / "hum.wav",)
    cfg = StringConfig(noise=kind, snr_db=(5.0, 20.0), peak=1.0)
    noisy = ConnectedDigits(pool, size=6, seed=4, config=cfg, noise_files=noise_files)
    clean = ConnectedDigits(pool, size=6, seed=4, config=StringConfig(peak=1.0))
    for i in range(6):
        n, c = noisy[i], clean[i]
        assert n.labels == c.labels and n.boundaries == c.boundaries      # noise draws come last
        noise = n.audio / n.scale - c.audio / c.scale
        words = np.concatenate([c.audio[a:b] / c.scale for a, b in c.boundaries])
        measured = 10 * np.log10(np.mean(words.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert 5.0 <= n.snr_db <= 20.0
        assert abs(measured - n.snr_db) < 0.05


def test_frame_boundaries(pool):
    s = ConnectedDigits(pool, size=1, seed=0)[0]
    for (a, b), (fa, fb) in zip(s.boundaries, s.frame_boundaries(80)):
        assert fa * 80 <= a < (fa + 1) * 80 and (fb - 1) * 80 < b <= fb * 80


def test_config_errors(pool):
    for bad in ({"min_digits": 0}, {"min_digits": 5, "max_digits": 3}, {"pause_s": (0.3, 0.1)},
                {"edge_s": (-0.1, 0.1)}, {"noise": "brown"}, {"peak": 1.5}):
        with pytest.raises(ConfigError):
            StringConfig(**bad)
    with pytest.raises(ConfigError, match="noise files"):
        ConnectedDigits(pool, 1, config=StringConfig(noise="files"))
    with pytest.raises(ConfigError, match="'train' or 'test'"):
        ConnectedDigits.from_split(official_split(pool), "valid", 1)


def test_strings_from_real_fsdd_test_takes(shared_data):
    recs = scan_recordings(shared_data / "fsdd" / "recordings")
    split = official_split([r for r in recs if r.speaker == "theo" and r.label in "0123"])
    s = ConnectedDigits.from_split(split, "test", size=2, seed=0, config=StringConfig(noise="pink"))[1]
    assert all(p.name.split("_")[2] in {"0.wav", "1.wav", "2.wav", "3.wav", "4.wav"} for p in s.sources)
    assert s.audio.dtype == np.float32 and np.isfinite(s.audio).all()
