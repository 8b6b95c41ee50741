"""rnnlab.data.digest: the checksums run folders record. Their byte layout is pinned: a change
would make every existing run report its data as changed."""

import hashlib
from pathlib import Path

from rnnlab.data.digest import listing_digest, sha256_of
from rnnlab.train.rundir import data_checksum


def test_sha256_of_reads_files_larger_than_its_block(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000          # 2.2 MiB: three 1 MiB blocks
    f = tmp_path / "blob"
    f.write_bytes(data)
    assert sha256_of(f) == hashlib.sha256(data).hexdigest()
    assert sha256_of(str(f)) == sha256_of(f)


def test_listing_digest_layout_is_pinned() -> None:
    entries = [("a.wav", "0" * 64), ("b/c.png", "missing")]
    assert listing_digest(entries, head=b"idx") == hashlib.sha256(
        b"idx" + b"a.wav\0" + b"0" * 64 + b"\nb/c.png\0missing\n").hexdigest()


def test_a_data_folder_checksum_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("hello")
    (tmp_path / "y.txt").write_text("world")
    (tmp_path / ".hidden").write_text("ignored")
    want = hashlib.sha256(
        f"sub/x.txt\0{hashlib.sha256(b'hello').hexdigest()}\n"
        f"y.txt\0{hashlib.sha256(b'world').hexdigest()}\n".encode()).hexdigest()
    assert data_checksum(tmp_path) == want
    (tmp_path / "y.txt").rename(tmp_path / "z.txt")          # a rename changes it
    assert data_checksum(tmp_path) != want


def test_the_speech_and_clip_index_checksums_keep_their_layout(tmp_path: Path) -> None:
    from rnnlab.data.frames import index_checksum
    from rnnlab.tasks.speech import speech_data_checksum

    sha = lambda b: hashlib.sha256(b).hexdigest()   # noqa: E731
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "b.wav").write_bytes(b"BB")
    (audio / "a.wav").write_bytes(b"A")
    assert speech_data_checksum(str(audio), {}) == hashlib.sha256(
        f"a.wav\0{sha(b'A')}\nb.wav\0{sha(b'BB')}\n".encode()).hexdigest()
    (tmp_path / "clip.npy").write_bytes(b"clip")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0.png").write_bytes(b"png")
    index = tmp_path / "index.csv"
    index.write_text("path,label\nclip.npy,1\nframes,2\ngone.npy,3\n")
    folder = sha(f"0.png\0{sha(b'png')}\n".encode())
    assert index_checksum(str(index), "path", "csv") == hashlib.sha256(
        sha(index.read_bytes()).encode()
        + f"clip.npy\0{sha(b'clip')}\nframes\0{folder}\ngone.npy\0missing\n".encode()).hexdigest()
