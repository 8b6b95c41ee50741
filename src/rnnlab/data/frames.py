"""Frame sequences (video, image sequences) for the classify task.

An index file (CSV/TSV/JSONL) names one example per row: a path and a label. A path is

* a ``.npy`` array of shape (T, H, W) or (T, H, W, C): uint8 0-255, or floats in [0, 1];
* a folder of image frames (PNG/JPEG/BMP), sorted by file name, read with Pillow;
* a video file (.mp4, .avi, .mov, .mkv, .webm), read with PyAV (``pip install rnnlab[video]``).

Relative paths are taken from the index file's folder. Every clip becomes a uint8 array
(T, H, W, C): ``frames`` N > 0 keeps N frames sampled uniformly over a longer clip (shorter
clips keep all theirs, so T varies and the classifier's lengths mask the padding), ``size``
(H, W) resizes every frame. Clips are decoded when the task is built, so an unreadable file
is reported before any training, with the index line that names it.

The named synthetic data set ``moving-digits`` (:func:`moving_digits`) needs no download: an
8x8 digit of scikit-learn's bundled digits moves across a canvas, and the label is the digit
and its direction, so no single frame can answer it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.data.digest import listing_digest, sha256_of
from rnnlab.data.tables import LabelMap, _finish_labels, read_table
from rnnlab.errors import ConfigError, DataError, expected, optional_module

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DATASETS = ("moving-digits", "moving-digits-shuffled")


@dataclass
class FrameExamples:
    """Clips for classification: ``clips[i]`` is a uint8 array (T_i, H, W, C)."""

    clips: list[np.ndarray]
    labels: list[int] | None
    lines: list[int]
    label_map: LabelMap | None = None
    path: str = ""
    channels: int = 1


# ----------------------------------------------------------------------------- reading one clip


def _to_uint8(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise DataError(expected(f"{where}: values", "finite numbers", "NaN or inf"))
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise DataError(expected(f"{where}: float values", "in [0, 1] (or uint8 0-255)", f"[{lo:g}, {hi:g}]"))
        return np.rint(a * 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise DataError(expected(f"{where}: integer values", "in 0-255", f"[{lo}, {hi}]"))
        return a.astype(np.uint8)
    raise DataError(expected(f"{where}: array dtype", "uint8, bool, integer or float", a.dtype))


def _read_npy(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise DataError(expected(f"{path}", "a readable .npy array", f"{type(exc).__name__}: {exc}")) from None
    if magic != b"\x93NUMPY":   # np.load reads anything else as a pickle, and calls it one in its refusal
        raise DataError(expected(f"{path}", "a .npy array (numpy.save's format)", "a file of another kind"))
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the user's file
        raise DataError(expected(f"{path}", "a readable .npy array", f"{type(exc).__name__}: {exc}")) from None
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise DataError(expected(f"{path}: array shape", "(T, H, W) or (T, H, W, C)", tuple(a.shape)))
    return _to_uint8(a, path)


def _image_array(img: Any) -> np.ndarray:
    """A Pillow image as (H, W, C) uint8: grey stays 1 channel, everything else becomes RGB."""
    if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
        img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _pil_image():
    """Pillow's Image module (the video extra)."""
    return optional_module("PIL.Image", "image frames", "Pillow installed (pip install rnnlab[video])", "ImportError")


def _read_folder(path: str) -> np.ndarray:
    Image = _pil_image()

    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTS))
    if not names:
        raise DataError(expected(f"{path}: frames", f"at least one image file {IMAGE_EXTS}", "none"))
    frames = []
    for n in names:
        f = os.path.join(path, n)
        try:
            with Image.open(f) as img:
                a = _image_array(img)
        except Exception as exc:  # noqa: BLE001
            raise DataError(expected(f"{f}", "a readable image", f"{type(exc).__name__}: {exc}")) from None
        if frames and a.shape != frames[0].shape:
            what = "channels" if a.shape[2] != frames[0].shape[2] else "frame size (H, W)"
            raise DataError(expected(f"{f}: {what}", f"those of {names[0]} {frames[0].shape}", a.shape))
        frames.append(a)
    return np.stack(frames)


def _read_video(path: str) -> np.ndarray:
    av = optional_module("av", f"{path}: a video reader", "PyAV installed (pip install rnnlab[video])", "ImportError")
    try:
        with av.open(path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except Exception as exc:  # noqa: BLE001
        raise DataError(expected(f"{path}", "a readable video", f"{type(exc).__name__}: {exc}".strip())) from None
    if not frames:
        raise DataError(expected(f"{path}: frames", "at least 1", 0))
    return np.stack(frames)


def read_clip(path: str) -> np.ndarray:
    """One clip as uint8 (T, H, W, C), whatever its kind (see the module docstring)."""
    if os.path.isdir(path):
        a = _read_folder(path)
    elif not os.path.isfile(path):
        raise DataError(expected("clip", "an existing .npy file, frame folder or video file", repr(path)))
    elif path.lower().endswith(".npy"):
        a = _read_npy(path)
    elif path.lower().endswith(VIDEO_EXTS):
        a = _read_video(path)
    else:
        raise DataError(expected(f"{path}: clip kind", f".npy, a folder of {IMAGE_EXTS} or {VIDEO_EXTS}",
                                 repr(os.path.splitext(path)[1])))
    if a.shape[0] == 0:
        raise DataError(expected(f"{path}: frames", "at least 1", 0))
    if a.shape[1] == 0 or a.shape[2] == 0:
        raise DataError(expected(f"{path}: frame size (H, W)", "at least 1x1", tuple(a.shape[1:3])))
    return a


def sample_frames(clip: np.ndarray, n: int) -> np.ndarray:
    """``n`` frames spread uniformly over the clip (first and last included); all of them if
    the clip has ``n`` or fewer, or when ``n`` is 0."""
    t = clip.shape[0]
    if n <= 0 or t <= n:
        return clip
    return clip[np.rint(np.linspace(0, t - 1, n)).astype(np.int64)]


def resize_frames(clip: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Every frame resized to (H, W) with Pillow's bilinear filter."""
    Image = _pil_image()

    h, w = size
    if clip.shape[1:3] == (h, w):
        return clip
    out = np.empty((clip.shape[0], h, w, clip.shape[3]), dtype=np.uint8)
    for i, f in enumerate(clip):
        img = Image.fromarray(f[..., 0] if f.shape[2] == 1 else f)
        a = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.uint8)
        out[i] = a[..., None] if a.ndim == 2 else a
    return out


def prepare_clip(clip: np.ndarray, frames: int, size: tuple[int, int] | None, max_len: int) -> np.ndarray:
    clip = sample_frames(clip, frames)[:max_len]
    return resize_frames(clip, size) if size else clip


# ----------------------------------------------------------------------------- index files


def load_frame_index(path: str, path_col: str, label_col: str, label_map: LabelMap | None, fmt: str,
                     require_labels: bool, frames: int, size: tuple[int, int] | None,
                     max_len: int) -> FrameExamples:
    """Read an index of clips (one ``path_col``, ``label_col`` row per clip) and decode them."""
    table = read_table(path, fmt)
    pc = table.col(path_col, "--path-col")
    lc = table.col(label_col, "--label-col") if require_labels or label_col in table.columns else None
    root = os.path.dirname(os.path.abspath(path))
    clips: list[np.ndarray] = []
    keys: list[str | None] = []
    first = None
    for i, row in enumerate(table.cells):
        rel = row[pc]
        where = table.where(i, path_col)
        if not isinstance(rel, str) or not rel.strip():
            raise DataError(expected(f"{where}", "a clip path", repr(rel)))
        try:
            clip = prepare_clip(read_clip(os.path.join(root, rel.strip())), frames, size, max_len)
        except DataError as exc:
            raise DataError(f"{table.path}, line {table.lines[i]}: {exc}") from None
        if first is None:
            first = (clip.shape[1:], table.lines[i])
        elif clip.shape[3] != first[0][2]:
            raise DataError(expected(f"{where}: channels of {rel!r}", f"{first[0][2]} as the clip on line {first[1]}",
                                     clip.shape[3]))
        elif clip.shape[1:3] != first[0][:2]:
            raise DataError(expected(f"{where}: frame size of {rel!r}", f"{first[0][:2]} as the clip on line "
                                     f"{first[1]} (or pass --size H W)", clip.shape[1:3]))
        clips.append(clip)
        if lc is None:
            keys.append(None)
        else:
            v = row[lc]
            keys.append(None if v is None or (isinstance(v, str) and not v.strip()) else str(v).strip())
    if not clips:
        raise DataError(expected(f"{path}: clips", "at least one row", 0))
    if require_labels and any(k is None for k in keys):
        i = keys.index(None)
        raise DataError(expected(table.where(i, label_col), "a label", "an empty cell"))
    labels, label_map = _finish_labels(path, keys, table.lines, label_map, "labels")
    return FrameExamples(clips, labels, list(table.lines), label_map, path, clips[0].shape[3])


def _clip_digest(path: str) -> str:
    """A clip's bytes: a file's SHA-256, or a frame folder's image names and SHA-256s (the frames
    :func:`read_clip` reads); ``missing`` if there is nothing there."""
    if os.path.isfile(path):
        return sha256_of(path)
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTS))
        return listing_digest((n, sha256_of(os.path.join(path, n))) for n in names)
    return "missing"


def _index_entries(path: str, path_col: str, fmt: str) -> list[tuple[str, str]]:
    """(name as written, path) of each clip an index names, once each, in the index's order; none
    for an index that cannot be parsed."""
    try:
        table = read_table(path, fmt)
        pc = table.col(path_col, "--path-col")
    except (DataError, ConfigError, OSError):
        return []
    root = os.path.dirname(os.path.abspath(path))
    names = dict.fromkeys(row[pc].strip() for row in table.cells if isinstance(row[pc], str) and row[pc].strip())
    return [(name, os.path.join(root, name)) for name in names]


def index_clips(path: str, path_col: str, fmt: str) -> list[str]:
    """The clip files (or frame folders) an index names: data of a run that outputs must not replace."""
    return [clip for _, clip in _index_entries(path, path_col, fmt)]


def index_checksum(path: str, path_col: str, fmt: str) -> str:
    """SHA-256 of an index of clips and of the content of every clip it names, so that a run's
    record of its data changes when a clip file is replaced, not only when the index is edited.
    Every byte of every clip is hashed: about the cost of reading them, which training does anyway.
    An index that cannot be parsed is hashed by its own bytes alone."""
    return listing_digest(((name, _clip_digest(clip)) for name, clip in _index_entries(path, path_col, fmt)),
                          head=sha256_of(path).encode())


# ----------------------------------------------------------------------------- moving digits

DIRECTIONS = ("right", "left", "down", "up")
_STEP = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
SPLITS = ("train", "valid", "test")
# Default size of the named data set: clips per split (valid and test a fifth of train each).
MOVING_DIGITS_TRAIN = 10000


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images, no download) as uint8 0-255 and labels."""
    datasets = optional_module("sklearn.datasets", "data set 'moving-digits'",
                               "scikit-learn installed (pip install rnnlab[video])", "ImportError")
    d = datasets.load_digits()
    return np.rint(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


def _clip_params(rng: np.random.Generator, n_images: int, frames: int, room: int,
                 max_speed: int) -> tuple[int, str, int, int, int]:
    """One clip drawn from ``rng``: (image, direction, speed, y0, x0)."""
    k = int(rng.integers(n_images))
    direction = DIRECTIONS[int(rng.integers(4))]
    speed = int(rng.integers(1, max_speed + 1))
    travel = (frames - 1) * speed

    # Along the motion the start leaves room for the whole path; across it, anywhere.
    def start(d: int) -> int:
        if d > 0:
            return int(rng.integers(0, room - travel + 1))
        if d < 0:
            return int(rng.integers(travel, room + 1))
        return int(rng.integers(0, room + 1))

    dy, dx = _STEP[direction]
    y0, x0 = start(dy), start(dx)
    return k, direction, speed, y0, x0


def moving_digits(n: int, split: str = "train", seed: int = 0, frames: int = 8, canvas: int = 24,
                  order: str = "ordered", n_train: int = MOVING_DIGITS_TRAIN) -> tuple[list[np.ndarray], list[str]]:
    """``n`` clips (frames, canvas, canvas, 1) uint8 and their labels ``"<digit>-<direction>"``.

    A digit image starts at a random place and moves 1 or 2 pixels per frame right, left, down
    or up; start places are drawn so that the whole path fits, which makes a single frame's
    position say nothing about the direction, and the places a clip covers say nothing about
    which way along its axis it went. Every split draws from all 1797 images, so what a digit
    image shows is learned as in any classification of them; a valid or test clip is never one
    of the ``n_train`` training clips (same image, direction, speed and start), so it asks for a
    known digit at new places with a new motion. ``order="shuffled"`` permutes each clip's
    frames (the control: a model that ignores order does as well on it). Deterministic in
    (n, split, seed, frames, canvas, n_train).
    """
    if split not in SPLITS:
        raise ConfigError(expected("moving-digits split", f"one of {list(SPLITS)}", repr(split)))
    if frames < 2 or canvas < 8 + (frames - 1):
        raise ConfigError(expected("moving-digits frames and canvas", "frames >= 2 and canvas >= 8 + frames - 1",
                                   f"frames {frames}, canvas {canvas}"))
    images, targets = digit_images()
    room = canvas - 8
    max_speed = 2 if (frames - 1) * 2 <= room else 1

    def stream(name: str) -> np.random.Generator:
        return np.random.default_rng([seed, SPLITS.index(name), frames, canvas])

    taken: set[tuple[int, str, int, int, int]] = set()
    if split != "train":
        train_rng = stream("train")
        taken = {_clip_params(train_rng, len(images), frames, room, max_speed) for _ in range(n_train)}
    rng = stream(split)
    shuffle_rng = np.random.default_rng([seed, 7])   # its own stream: the shuffled control shows the same clips
    clips, labels = [], []
    tries = 0
    while len(clips) < n:
        params = _clip_params(rng, len(images), frames, room, max_speed)
        tries += 1
        if params in taken:
            if tries > 100 * (n + 1):
                raise ConfigError(expected("moving-digits canvas", "room for clips other than the training clips "
                                           "(a larger --size or fewer --dataset-size clips)", f"canvas {canvas}"))
            continue
        k, direction, speed, y0, x0 = params
        dy, dx = (s * speed for s in _STEP[direction])
        clip = np.zeros((frames, canvas, canvas, 1), dtype=np.uint8)
        for t in range(frames):
            y, x = y0 + t * dy, x0 + t * dx
            clip[t, y: y + 8, x: x + 8, 0] = images[k]
        if order == "shuffled":
            clip = clip[shuffle_rng.permutation(frames)]
        elif order != "ordered":
            raise ConfigError(expected("moving-digits order", "ordered or shuffled", repr(order)))
        clips.append(clip)
        labels.append(f"{targets[k]}-{direction}")
    return clips, labels


def dataset_examples(name: str, split: str, label_map: LabelMap | None, size: int, seed: int, frames: int,
                     canvas: tuple[int, int] | None, max_len: int) -> FrameExamples:
    """A split of a named synthetic data set as :class:`FrameExamples` (lines count clips from 1).
    ``moving-digits-shuffled`` is the order control: the same clips, each with its frames permuted."""
    if name not in DATASETS:
        raise ConfigError(expected("dataset", f"one of {DATASETS}", repr(name)))
    if canvas and canvas[0] != canvas[1]:
        raise ConfigError(expected("moving-digits --size", "a square canvas (H == W)", tuple(canvas)))
    n_train = size or MOVING_DIGITS_TRAIN
    n = n_train if split == "train" else max(2, n_train // 5)
    order = "shuffled" if name.endswith("-shuffled") else "ordered"
    clips, keys = moving_digits(n, split, seed, frames or 8, canvas[0] if canvas else 24, order, n_train)
    clips = [c[:max_len] for c in clips]
    lines = list(range(1, n + 1))
    # Every class named up front: a small split need not show all 40 for the others to be read.
    label_map = label_map or LabelMap([f"{d}-{r}" for d in range(10) for r in sorted(DIRECTIONS)])
    labels, label_map = _finish_labels(f"{name}:{split}", keys, lines, label_map, "labels")
    return FrameExamples(clips, labels, lines, label_map, f"{name}:{split}", 1)


# ----------------------------------------------------------------------------- the classify task's hooks

# Frame encoders (built by rnnlab.tasks.video); checked here, at config time, without torchvision.
ENCODERS = ("cnn",)
TORCHVISION_PREFIX = "torchvision:"


def check_frame_encoder(name: str, weights: str) -> None:
    """Config-time checks (no import of torchvision here)."""
    if name in ENCODERS:
        if weights:
            raise ConfigError(expected("backbone_weights (--backbone-weights)", "none with --frame-encoder cnn",
                                       repr(weights)))
        return
    if not name.startswith(TORCHVISION_PREFIX) or not name[len(TORCHVISION_PREFIX):]:
        raise ConfigError(expected("frame_encoder (--frame-encoder)", "cnn or torchvision:<model name>", repr(name)))
    if not weights:
        raise ConfigError(expected(f"backbone_weights for {name}", "a weights file (--backbone-weights)", "none"))



def check_frames_config(c: Any) -> None:
    """Checks of a ClassifyConfig with frames input (raises ConfigError)."""
    if c.dataset and c.dataset not in DATASETS:
        raise ConfigError(expected("classify dataset (--dataset)", f"{', '.join(DATASETS)} (clips) or ucr:NAME "
                                   "(a UCR/UEA set)", repr(c.dataset)))
    if c.dataset and (c.train or c.valid or c.test):
        raise ConfigError(expected("--train/--valid/--test", f"none with --dataset {c.dataset}",
                                   [p for p in (c.train, c.valid, c.test) if p]))
    if not (isinstance(c.frames, int) and c.frames >= 0):
        raise ConfigError(expected("classify frames (--frames)", "an integer >= 0 (0 = all)", repr(c.frames)))
    if not (isinstance(c.dataset_size, int) and c.dataset_size >= 0):
        raise ConfigError(expected("classify dataset_size", "an integer >= 0", repr(c.dataset_size)))
    if c.size and not (len(c.size) == 2 and all(isinstance(v, int) and v >= 1 for v in c.size)):
        raise ConfigError(expected("classify size (--size)", "two integers H W >= 1", list(c.size)))
    check_frame_encoder(c.frame_encoder, c.backbone_weights)


def read_examples(c: Any, path: str, label_map: LabelMap | None, require_labels: bool) -> FrameExamples:
    """The clips of ``path`` (an index file, or ``"<dataset>:<split>"``) under config ``c``."""
    size = tuple(c.size) if c.size else None
    if c.dataset and path.startswith(f"{c.dataset}:"):
        return dataset_examples(c.dataset, path.split(":", 1)[1], label_map, c.dataset_size, c.seed, c.frames, size,
                                c.max_len)
    fmt = "auto" if c.format == "ts" else c.format
    return load_frame_index(path, c.path_col, c.label_col, label_map, fmt, require_labels, c.frames, size, c.max_len)


def check_frame_shape(ex: FrameExamples, shape: list[int]) -> list[np.ndarray]:
    """The clips of ``ex``, each checked against the training clips' (H, W, C)."""
    for clip, line in zip(ex.clips, ex.lines):
        if list(clip.shape[1:]) != list(shape):
            what = "channels" if clip.shape[3] != shape[2] else "frame size (H, W)"
            raise DataError(expected(f"{ex.path}, line {line}: {what}", f"those of the training clips "
                                     f"{tuple(shape)} (H, W, C)", tuple(clip.shape[1:])))
    return ex.clips
