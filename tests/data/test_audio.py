"""Audio reading: formats, channel mixing, resampling, bounded memory, and every bad file as one DataError line."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from rnnlab.data.audio import audio_info, find_audio_files, iter_audio, load_audio, resample  # noqa: E402
from rnnlab.errors import DataError  # noqa: E402


def sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def one_line_data_error(path, **kw) -> str:
    with pytest.raises(DataError) as ei:
        load_audio(path, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and "expected" in msg and "got" in msg, msg
    return msg


def test_stereo_int16_wav_is_mixed_to_the_mean_of_its_channels(tmp_path):
    left, right = sine(300, 16000, 0.25), sine(1100, 16000, 0.25, amp=0.3)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], 1), 16000, subtype="PCM_16")
    x = load_audio(path)
    assert x.dtype == np.float32 and x.shape == left.shape
    np.testing.assert_allclose(x, (left + right) / 2, atol=1.5 / 32768)   # int16 rounding of each channel


@pytest.mark.parametrize("fmt,subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_flac_and_ogg(tmp_path, fmt, subtype):
    ref = sine(440, 16000, 0.5)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, ref, 16000, format=fmt, subtype=subtype)
    x = load_audio(path)
    assert abs(len(x) - len(ref)) <= 1
    n = min(len(x), len(ref))
    if fmt == "FLAC":                       # lossless
        np.testing.assert_allclose(x[:n], ref[:n], atol=1 / 32768)
    else:                                   # lossy: the tone survives
        assert np.corrcoef(x[:n], ref[:n])[0, 1] > 0.99


def test_96khz_six_channels_resampled_to_8khz_is_the_tone(tmp_path):
    ref96 = sine(440, 96000, 0.5)
    path = tmp_path / "six.wav"
    sf.write(path, np.repeat(ref96[:, None], 6, axis=1), 96000, subtype="PCM_24")
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (96000, 6, 48000)
    x = load_audio(path, sample_rate=8000)
    assert x.shape == (4000,)
    ref8 = sine(440, 8000, 0.5)
    # Away from the ends (the resampler's filter runs past the signal's edges), the analytic tone.
    np.testing.assert_allclose(x[100:-100], ref8[100:-100], atol=2e-3)


def test_blocks_concatenate_to_the_whole_file_whatever_the_block_size(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "n.wav"
    sf.write(path, rng.uniform(-0.5, 0.5, (22050, 3)).astype(np.float32), 22050, subtype="FLOAT")
    whole = load_audio(path, sample_rate=8000)
    for block in (1000, 4096, 1 << 20):
        parts = list(iter_audio(path, 8000, block_frames=block))
        np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)
    # The streamed resampler against soxr's one-shot call on the mixed signal.
    mixed = sf.read(path, dtype="float32")[0].mean(1)
    np.testing.assert_allclose(whole, resample(mixed, 22050, 8000), atol=1e-5)


def test_long_many_channel_file_is_read_in_bounded_memory(tmp_path):
    seconds, rate, ch = 20, 96000, 6
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", rate, ch, subtype="PCM_16") as f:
        block = np.repeat(sine(200, rate, 1.0, amp=0.1)[:, None], ch, axis=1)
        for _ in range(seconds):
            f.write(block)
    whole_file_float32 = seconds * rate * ch * 4                              # 46 MB
    tracemalloc.start()
    x = load_audio(path, sample_rate=8000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert x.shape == (seconds * 8000,)
    # The output (0.6 MB) plus a few blocks, not the file as one array.
    assert peak < whole_file_float32 / 8, peak


def test_a_tenth_of_a_second_of_silence_gives_zeros(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(1600, dtype=np.int16), 16000)
    x = load_audio(path, sample_rate=8000)
    assert x.shape == (800,) and not x.any()


def test_fsdd_recording_reads_at_its_native_rate(shared_data):
    path = shared_data / "fsdd" / "recordings" / "7_jackson_32.wav"
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    x = load_audio(path)
    assert x.shape == (info.frames,) and 0 < np.abs(x).max() <= 1


# ----------------------------------------------------------------------------- bad files


@pytest.fixture
def wav_bytes(tmp_path) -> bytes:
    path = tmp_path / "ok.wav"
    sf.write(path, sine(440, 8000, 0.3), 8000, subtype="PCM_16")
    return path.read_bytes()


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    assert "empty file" in one_line_data_error(tmp_path / "e.wav")


def test_wav_with_no_samples(tmp_path):
    sf.write(tmp_path / "z.wav", np.zeros(0, dtype=np.int16), 8000)
    assert "0 (an empty recording)" in one_line_data_error(tmp_path / "z.wav")


@pytest.mark.parametrize("keep", [44, 45, 1000])
def test_truncated_wav(tmp_path, wav_bytes, keep):
    (tmp_path / "t.wav").write_bytes(wav_bytes[:keep])
    assert "truncated" in one_line_data_error(tmp_path / "t.wav")


def test_header_cut_inside_is_not_audio(tmp_path, wav_bytes):
    (tmp_path / "h.wav").write_bytes(wav_bytes[:10])
    assert "readable WAV" in one_line_data_error(tmp_path / "h.wav")


def test_streaming_writers_unknown_length_is_not_truncation(tmp_path, wav_bytes):
    # Writers that stream to a pipe leave the data size as 0xFFFFFFFF; the samples are all there.
    data_at = wav_bytes.index(b"data") + 4
    patched = wav_bytes[:data_at] + struct.pack("<I", 0xFFFFFFFF) + wav_bytes[data_at + 4:]
    (tmp_path / "s.wav").write_bytes(patched)
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav"), sine(440, 8000, 0.3), atol=1 / 32768)


def test_text_file_named_wav(tmp_path):
    (tmp_path / "notes.wav").write_text("these are not samples\n" * 20)
    msg = one_line_data_error(tmp_path / "notes.wav")
    assert "notes.wav" in msg and "format not recognised" in msg


def test_missing_file_and_folder(tmp_path):
    assert "no such file" in one_line_data_error(tmp_path / "absent.wav")
    assert "a folder" in one_line_data_error(tmp_path)


def test_non_finite_float_samples(tmp_path):
    x = sine(440, 8000, 0.1)
    x[100] = np.nan
    sf.write(tmp_path / "nan.wav", x, 8000, subtype="FLOAT")
    assert "NaN or infinity" in one_line_data_error(tmp_path / "nan.wav")


def test_max_seconds(tmp_path):
    sf.write(tmp_path / "a.wav", sine(440, 8000, 2.0), 8000)
    assert "at most 1 s" in one_line_data_error(tmp_path / "a.wav", max_seconds=1.0)


def test_find_audio_files(tmp_path):
    for name in ("b.wav", "a.FLAC", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_audio_files(tmp_path)] == ["a.FLAC", "b.wav"]
    with pytest.raises(DataError, match="none"):
        find_audio_files(tmp_path, extensions=(".ogg",))
