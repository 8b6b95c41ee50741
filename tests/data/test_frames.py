"""Frame inputs: the three kinds of clip, sampling and resizing, bad files, moving-digits."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.data.frames import (
    digit_images,
    index_checksum,
    load_frame_index,
    moving_digits,
    read_clip,
    resize_frames,
    sample_frames,
)
from rnnlab.errors import DataError


def write_png_folder(folder, frames: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f).save(folder / f"frame_{t:03d}.png")


def index(tmp_path, rows: list[tuple[str, str]]) -> str:
    p = tmp_path / "index.csv"
    p.write_text("path,label\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return str(p)


def load(path: str, frames: int = 0, size=None, max_len: int = 400):
    return load_frame_index(path, "path", "label", None, "auto", True, frames, size, max_len)


# ----------------------------------------------------------------------------- the three kinds


def test_npy_grey_and_colour_and_float(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    colour = rng.integers(0, 256, (4, 6, 7, 3), dtype=np.uint8)
    np.save(tmp_path / "g.npy", grey)
    np.save(tmp_path / "c.npy", colour)
    np.save(tmp_path / "f.npy", grey.astype(np.float32) / 255)
    np.testing.assert_array_equal(read_clip(str(tmp_path / "g.npy")), grey[..., None])
    np.testing.assert_array_equal(read_clip(str(tmp_path / "c.npy")), colour)
    np.testing.assert_array_equal(read_clip(str(tmp_path / "f.npy")), grey[..., None])


def test_png_folder_is_read_in_name_order(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (12, 5, 4, 3), dtype=np.uint8)
    write_png_folder(tmp_path / "clip", frames)   # frame_010 sorts after frame_009, not after frame_001
    np.testing.assert_array_equal(read_clip(str(tmp_path / "clip")), frames)


def test_video_file(tmp_path):
    av = pytest.importorskip("av")
    frames = np.zeros((6, 32, 32, 3), dtype=np.uint8)
    for t in range(6):
        frames[t, :, 4 * t: 4 * t + 8] = 255            # a bright bar moving right
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    got = read_clip(str(path))
    assert got.shape == (6, 32, 32, 3)
    # Lossy codec: the bar's place, not its exact pixels (column means peak inside the bar).
    peaks = got.mean(axis=(1, 3)).argmax(axis=1)
    assert all(4 * t <= p < 4 * t + 8 for t, p in enumerate(peaks)), peaks


def test_index_mixes_kinds_relative_paths_and_variable_lengths(tmp_path):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "a.npy", rng.integers(0, 256, (3, 8, 8), dtype=np.uint8))
    np.save(tmp_path / "b.npy", rng.integers(0, 256, (9, 8, 8, 1), dtype=np.uint8))
    write_png_folder(tmp_path / "c", rng.integers(0, 256, (4, 16, 16, 1), dtype=np.uint8))
    ex = load(index(tmp_path, [("a.npy", "x"), ("b.npy", "y"), ("c", "x")]), frames=5, size=(8, 8))
    assert [c.shape for c in ex.clips] == [(3, 8, 8, 1), (5, 8, 8, 1), (4, 8, 8, 1)]
    assert ex.labels == [0, 1, 0] and ex.lines == [2, 3, 4] and ex.channels == 1


def test_sample_frames_uniform_with_ends():
    clip = np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 1), dtype=np.uint8)
    assert sample_frames(clip, 4)[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert sample_frames(clip, 0).shape[0] == 10 and sample_frames(clip, 20).shape[0] == 10


def test_resize_matches_pillow():
    from PIL import Image

    rng = np.random.default_rng(3)
    clip = rng.integers(0, 256, (2, 10, 6, 3), dtype=np.uint8)
    got = resize_frames(clip, (5, 7))
    want = np.asarray(Image.fromarray(clip[1]).resize((7, 5), Image.BILINEAR))
    assert got.shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(got[1], want)


# ----------------------------------------------------------------------------- bad files


def test_bad_files_give_one_line_errors(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    np.save(tmp_path / "cut.npy", np.zeros((3, 4, 4), dtype=np.uint8))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:100])   # the header, no data
    np.save(tmp_path / "empty.npy", np.zeros((0, 4, 4), dtype=np.uint8))
    np.save(tmp_path / "hot.npy", np.full((2, 4, 4), 1.5, dtype=np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), dtype=np.uint8))
    (tmp_path / "nothing").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "0.png").write_bytes(b"\x89PNG garbage")
    cases = {
        "junk.npy": "expected a .npy array (numpy.save's format), got a file of another kind",   # not "pickled data"
        "cut.npy": "expected a readable .npy array, got",
        "empty.npy": "frames: expected at least 1, got 0",
        "hot.npy": "float values: expected in [0, 1] (or uint8 0-255), got [1.5, 1.5]",
        "flat.npy": "array shape: expected (T, H, W) or (T, H, W, C), got (4, 4)",
        "nothing": "frames: expected at least one image file",
        "broken": "0.png: expected a readable image, got",
        "missing.npy": "clip: expected an existing .npy file, frame folder or video file",
        "notes.txt": "clip kind: expected .npy",
    }
    (tmp_path / "notes.txt").write_text("hi")
    for name, message in cases.items():
        with pytest.raises(DataError) as info:
            load(index(tmp_path, [(name, "a"), (name, "b")]))
        msg = str(info.value)
        assert "line 2" in msg and message in msg and "\n" not in msg, msg


def test_mixed_channels_and_sizes(tmp_path):
    np.save(tmp_path / "grey.npy", np.zeros((2, 4, 4), dtype=np.uint8))
    np.save(tmp_path / "rgb.npy", np.zeros((2, 4, 4, 3), dtype=np.uint8))
    np.save(tmp_path / "big.npy", np.zeros((2, 6, 6), dtype=np.uint8))
    with pytest.raises(DataError, match=r"line 3, column 'path': channels of 'rgb.npy': expected 1 as the clip on "
                                        r"line 2, got 3"):
        load(index(tmp_path, [("grey.npy", "a"), ("rgb.npy", "b")]))
    with pytest.raises(DataError, match=r"frame size of 'big.npy': expected \(4, 4\) .* \(or pass --size H W\)"):
        load(index(tmp_path, [("grey.npy", "a"), ("big.npy", "b")]))
    assert load(index(tmp_path, [("grey.npy", "a"), ("big.npy", "b")]), size=(4, 4)).clips[1].shape == (2, 4, 4, 1)
    from PIL import Image

    (tmp_path / "mixed").mkdir()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "mixed" / "0.png")
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "mixed" / "1.png")
    with pytest.raises(DataError, match=r"1.png: channels: expected those of 0.png \(4, 4, 1\), got \(4, 4, 3\)"):
        read_clip(str(tmp_path / "mixed"))


# ----------------------------------------------------------------------------- moving digits


def centroids(clip: np.ndarray) -> np.ndarray:
    """(T, 2) intensity-weighted (row, column) of each frame: an independent read of the motion."""
    f = clip[..., 0].astype(float)
    rows, cols = np.arange(f.shape[1]), np.arange(f.shape[2])
    w = f.sum((1, 2))
    return np.stack([(f.sum(2) * rows).sum(1) / w, (f.sum(1) * cols).sum(1) / w], 1)


def test_moving_digits_shows_the_labelled_digit_moving_the_labelled_way():
    clips, labels = moving_digits(30, "train", seed=4, frames=6, canvas=20)
    images, targets = digit_images()
    step = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
    for clip, label in zip(clips, labels):
        digit, direction = label.split("-")
        motion = np.diff(centroids(clip), axis=0)                   # (T-1, 2), constant per clip
        speed = round(float(np.abs(motion).max()))
        assert speed in (1, 2)
        np.testing.assert_allclose(motion, np.tile(np.array(step[direction]) * speed, (5, 1)), atol=1e-9)
        # The frame shows one of the data set's images of that digit (compared on their ink's box).
        frame = crop(clip[0, ..., 0])
        assert any(np.array_equal(frame, crop(images[k])) for k in np.flatnonzero(targets == int(digit)))


def crop(a: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(a)
    return a[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def test_moving_digits_is_deterministic_and_test_clips_are_not_training_clips():
    a, la = moving_digits(10, "valid", seed=1)
    b, lb = moving_digits(10, "valid", seed=1)
    assert la == lb and all(np.array_equal(x, y) for x, y in zip(a, b))
    c, _ = moving_digits(10, "valid", seed=2)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # A small canvas leaves few clips per image: drawn independently, test clips would repeat
    # training clips; the data set draws them again instead.
    small = dict(seed=3, frames=6, canvas=14)
    train = {x.tobytes() for x in moving_digits(3000, "train", **small)[0]}
    test, _ = moving_digits(400, "test", n_train=3000, **small)
    independent, _ = moving_digits(400, "test", n_train=0, **small)
    assert sum(x.tobytes() in train for x in independent) > 0
    assert sum(x.tobytes() in train for x in test) == 0


def test_shuffled_control_has_the_same_frames_in_another_order():
    """The control clips hold exactly the ordered clips' frames; the order is all that is lost:
    from the ordered frames the centroid's motion gives the direction every time, from the
    shuffled ones left/right (and up/down) are a coin toss."""
    ordered, lo = moving_digits(200, "test", seed=0, frames=6, canvas=20)
    shuffled, ls = moving_digits(200, "test", seed=0, frames=6, canvas=20, order="shuffled")
    assert lo == ls
    key = lambda f: f.tobytes()  # noqa: E731
    for o, s in zip(ordered, shuffled):
        assert sorted(map(key, o)) == sorted(map(key, s))

    def read_direction(clip):
        d = centroids(clip)[-1] - centroids(clip)[0]
        axis = int(np.abs(d).argmax())
        return ("down" if d[0] > 0 else "up") if axis == 0 else ("right" if d[1] > 0 else "left")

    truth = [label.split("-")[1] for label in lo]
    acc_ordered = np.mean([read_direction(c) == t for c, t in zip(ordered, truth)])
    acc_shuffled = np.mean([read_direction(c) == t for c, t in zip(shuffled, truth)])
    assert acc_ordered == 1.0
    assert 0.3 < acc_shuffled < 0.7, acc_shuffled


def test_index_checksum_covers_the_clips_content(tmp_path):
    """The checksum changes when a clip the index names changes (a .npy file, one frame of a
    folder), not only when the index does; moving the index with its clips keeps it."""
    rng = np.random.default_rng(5)
    np.save(tmp_path / "a.npy", rng.integers(0, 256, (3, 8, 8), dtype=np.uint8))
    write_png_folder(tmp_path / "c", rng.integers(0, 256, (2, 8, 8, 1), dtype=np.uint8))
    path = index(tmp_path, [("a.npy", "x"), ("c", "y"), ("a.npy", "y")])
    first = index_checksum(path, "path", "auto")
    assert index_checksum(path, "path", "auto") == first
    np.save(tmp_path / "a.npy", rng.integers(0, 256, (3, 8, 8), dtype=np.uint8))
    second = index_checksum(path, "path", "auto")
    assert second != first
    write_png_folder(tmp_path / "d", rng.integers(0, 256, (1, 8, 8, 1), dtype=np.uint8))
    (tmp_path / "d" / "frame_000.png").replace(tmp_path / "c" / "frame_001.png")   # one frame replaced
    third = index_checksum(path, "path", "auto")
    assert third not in (first, second)
    (tmp_path / "c" / "notes.txt").write_text("not a frame")   # read_clip ignores it, and so does the checksum
    assert index_checksum(path, "path", "auto") == third
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("index.csv", "a.npy", "c"):
        (tmp_path / name).replace(moved / name)
    assert index_checksum(str(moved / "index.csv"), "path", "auto") == third
    (moved / "a.npy").unlink()
    assert index_checksum(str(moved / "index.csv"), "path", "auto") != third
