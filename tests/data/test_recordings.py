"""FSDD: the checksummed folder fetch (on a small local archive), labels from names or a CSV, and the splits."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from rnnlab.data import registry
from rnnlab.data.recordings import (
    Recording, Split, leave_one_speaker_out, make_split, official_split, parse_name, read_label_csv,
    scan_recordings, speaker_split,
)
from rnnlab.errors import DataError

FILES = {"0_ann_0.wav": b"RIFF-zero", "1_bob_7.wav": b"RIFF-one-", "2_ann_12.wav": b"RIFF-two!!"}


def tiny_spec(files=FILES) -> registry.RemoteFolder:
    # The digest rule written out independently: bytes concatenated in sorted name order.
    digest = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()
    return registry.RemoteFolder("tiny", "tiny", "https://example.invalid/repo.tar.gz", "recordings", ".wav",
                                 len(files), digest, "test set")


def tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fetcher(payload: bytes, calls: list):
    def fetch(url, out):
        calls.append(url)
        out.write(payload)
    return fetch


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    spec = tiny_spec()
    monkeypatch.setitem(registry.FOLDERS, "tiny", spec)
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "cache"))
    return spec


def good_archive() -> bytes:
    members = {f"repo-abc123/recordings/{k}": v for k, v in FILES.items()}
    members["repo-abc123/README.md"] = b"not a recording"
    members["repo-abc123/recordings/../../escape.wav"] = b"outside"   # written by base name or not at all
    members["repo-abc123/other/3_eve_1.wav"] = b"wrong folder"
    return tarball(members)


def test_fetch_extracts_verifies_and_caches(tiny, tmp_path):
    calls = []
    folder = registry.dataset_folder("tiny", fetch=fetcher(good_archive(), calls))
    assert folder == tmp_path / "cache" / "tiny" / "recordings"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES
    assert calls == [tiny.url]
    # Nothing else was left behind: no archive, no temporary folder, no escaped file.
    assert sorted(p.name for p in (tmp_path / "cache" / "tiny").iterdir()) == ["recordings"]
    assert not list(tmp_path.rglob("escape.wav"))
    # Cached: no second download, but still verified.
    assert registry.dataset_folder("tiny", fetch=fetcher(b"", calls)) == folder and len(calls) == 1
    (folder / "1_bob_7.wav").write_bytes(b"RIFF-0ne-")
    with pytest.raises(DataError, match="not the pinned edition"):
        registry.dataset_folder("tiny")


@pytest.mark.parametrize("change", ["one byte", "missing file", "extra file", "not an archive"])
def test_a_wrong_archive_leaves_nothing_in_the_cache(tiny, tmp_path, change):
    files = dict(FILES)
    if change == "one byte":
        files["0_ann_0.wav"] = b"RIFF-zer0"
    elif change == "missing file":
        del files["2_ann_12.wav"]
    elif change == "extra file":
        files["9_zed_1.wav"] = b"RIFF"
    payload = b"<html>rate limited</html>" if change == "not an archive" else \
        tarball({f"r/recordings/{k}": v for k, v in files.items()})
    with pytest.raises(DataError) as ei:
        registry.dataset_folder("tiny", fetch=fetcher(payload, []))
    assert "\n" not in str(ei.value)
    assert not (tmp_path / "cache" / "tiny" / "recordings").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_no_network_and_no_download(tiny):
    def offline(url, out):
        raise OSError("network unreachable")
    with pytest.raises(DataError, match="--data-dir"):
        registry.dataset_folder("tiny", fetch=offline)
    with pytest.raises(DataError, match="in the cache"):
        registry.dataset_folder("tiny", download_missing=False)
    with pytest.raises(DataError, match="one of"):
        registry.dataset_folder("timit")


def test_local_copy_is_found_at_three_depths_and_verified(tiny, tmp_path):
    root = tmp_path / "data"
    folder = root / "tiny" / "recordings"
    folder.mkdir(parents=True)
    for k, v in FILES.items():
        (folder / k).write_bytes(v)
    for given in (root, root / "tiny", folder):
        assert registry.dataset_folder("tiny", given) == folder
    with pytest.raises(DataError, match="none"):
        registry.dataset_folder("tiny", tmp_path / "empty-nowhere")


def test_the_shared_fsdd_copy_matches_the_pinned_digest(shared_data):
    folder = registry.dataset_folder("fsdd", shared_data)
    assert folder == shared_data / "fsdd" / "recordings"
    recs = scan_recordings(folder)
    assert len(recs) == 3000
    assert {r.label for r in recs} == {str(d) for d in range(10)}
    assert {r.speaker for r in recs} == {"jackson", "nicolas", "theo", "yweweler", "george", "lucas"}
    assert {r.take for r in recs} == set(range(50))


# ----------------------------------------------------------------------------- labels and splits


def fake_recordings(speakers=("ann", "bob", "cy"), digits=range(3), takes=range(8)) -> list[Recording]:
    return [parse_name(f"/x/{d}_{s}_{t}.wav") for d in digits for s in speakers for t in takes]


def test_parse_name():
    assert parse_name("rec/7_jackson_32.wav") == Recording(Path("rec/7_jackson_32.wav"), "7", "jackson", 32)
    for bad in ("7_jackson.wav", "seven-jackson-1.wav", "7_jack_son_x.wav"):
        with pytest.raises(DataError, match="label"):
            parse_name(bad)


def test_official_split_is_takes_0_to_4():
    recs = fake_recordings()
    s = official_split(recs)
    assert {r.take for r in s.test} == {0, 1, 2, 3, 4} and {r.take for r in s.train} == {5, 6, 7}
    assert len(s.train) + len(s.test) == len(recs)
    assert make_split(recs, "official") == s


def test_leave_one_speaker_out():
    recs = fake_recordings()
    splits = leave_one_speaker_out(recs)
    assert [s.name for s in splits] == ["speaker:ann", "speaker:bob", "speaker:cy"]
    for s in splits:
        held = s.name.split(":")[1]
        assert {r.speaker for r in s.test} == {held} and held not in {r.speaker for r in s.train}
        assert len(s.train) + len(s.test) == len(recs)
    assert make_split(recs, "speaker:bob") == splits[1]
    with pytest.raises(DataError, match="one of ann, bob, cy"):
        speaker_split(recs, "dan")
    with pytest.raises(DataError, match="'official' or 'speaker:NAME'"):
        make_split(recs, "random")


def test_splits_refuse_overlap_and_empty_parts():
    recs = fake_recordings()
    with pytest.raises(DataError, match="disjoint"):
        Split("bad", tuple(recs), tuple(recs[:1]))
    with pytest.raises(DataError, match="test set"):
        official_split(recs, test_takes=[99])
    no_speaker = [dataclasses.replace(r, speaker=None) for r in recs]
    with pytest.raises(DataError, match="speaker"):
        leave_one_speaker_out(no_speaker)


def test_labels_from_csv(tmp_path):
    for name in ("a.wav", "b.flac"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("file,label,speaker\na.wav,yes,ann\nb.flac,no,bob\n")
    recs = read_label_csv(tmp_path / "labels.csv")
    assert [(r.path.name, r.label, r.speaker, r.take) for r in recs] == [("a.wav", "yes", "ann", None),
                                                                         ("b.flac", "no", "bob", None)]
    (tmp_path / "bad.csv").write_text("file,label\nmissing.wav,yes\n")
    with pytest.raises(DataError, match=r"bad.csv:2: file 'missing.wav'"):
        read_label_csv(tmp_path / "bad.csv")
    (tmp_path / "hdr.csv").write_text("path,digit\na.wav,1\n")
    with pytest.raises(DataError, match="columns file, label"):
        read_label_csv(tmp_path / "hdr.csv")
    # a spreadsheet's UTF-16 export (its byte-order mark says so) is read; other bytes are named
    (tmp_path / "u16.csv").write_text("file,label,speaker\na.wav,yes,ann\nb.flac,no,bob\n", encoding="utf-16")
    assert [r.label for r in read_label_csv(tmp_path / "u16.csv")] == ["yes", "no"]
    (tmp_path / "cp.csv").write_bytes("file,label\na.wav,café\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"cp.csv, line 2: expected UTF-8 text, got undecodable bytes .*save the "
                                        r"file as UTF-8"):
        read_label_csv(tmp_path / "cp.csv")
