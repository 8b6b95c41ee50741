"""The UCR/UEA .ts reader: round trips and every malformed file it must name."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.data.tables import LabelMap
from rnnlab.data.ts_format import load_ts, write_ts
from rnnlab.errors import DataError, DataWarning

HEAD = "@problemName t\n@timeStamps false\n@univariate false\n@dimensions 2\n@classLabel true a b\n@data\n"


def write(tmp_path, text: str, name: str = "x.ts") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize("dims,lengths", [(1, [5, 5, 5]), (3, [4, 4]), (1, [3, 6, 2]), (2, [2, 7])])
def test_round_trip(tmp_path, dims, lengths):
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, dims)).astype(np.float32) for n in lengths]
    labels = ["a" if i % 2 else "b" for i in range(len(seqs))]
    path = str(tmp_path / "r.ts")
    write_ts(path, seqs, labels)
    ex = load_ts(path)
    assert ex.dims == dims and ex.label_map.names == ["a", "b"]
    for got, want in zip(ex.seqs, seqs):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert ex.labels == [1 if lab == "b" else 0 for lab in labels]


def test_comments_and_case_insensitive_keys(tmp_path):
    text = "# a comment\n@PROBLEMNAME t\n@ClassLabel true 1 2\n@DATA\n1,2,3:1\n\n4,5:2\n"
    ex = load_ts(write(tmp_path, text))
    assert [len(s) for s in ex.seqs] == [3, 2] and ex.labels == [0, 1]


def test_ragged_case(tmp_path):
    with pytest.raises(DataError, match=r"line 7: a ragged case: expected every dimension to have the same "
                                        r"length, got lengths \[3, 2\]"):
        load_ts(write(tmp_path, HEAD + "1,2,3:4,5:a\n"))


def test_dimension_count(tmp_path):
    with pytest.raises(DataError, match=r"line 8: dimensions: expected 2, got 1"):
        load_ts(write(tmp_path, HEAD + "1,2:3,4:a\n1,2:b\n"))


def test_bad_number_names_line_dimension_value(tmp_path):
    with pytest.raises(DataError, match=r"x.ts, line 7, dimension 2, value 2: expected a number, got 'x'"):
        load_ts(write(tmp_path, HEAD + "1,2:3,x:a\n"))


def test_missing_values_policy(tmp_path):
    path = write(tmp_path, HEAD + "1,?,3:4,5,6:a\n1,2,3:4,5,6:b\n")
    with pytest.raises(DataError, match=r"line 7, dimension 1, value 2: expected a number, got a missing value"):
        load_ts(path)
    np.testing.assert_array_equal(load_ts(path, missing="interpolate").seqs[0][:, 0], [1, 2, 3])
    np.testing.assert_array_equal(load_ts(path, missing="ffill").seqs[0][:, 0], [1, 1, 3])
    with pytest.warns(DataWarning, match="drop"):
        assert load_ts(path, missing="drop").seqs[0].shape == (2, 2)


def test_undeclared_label_and_unseen_label(tmp_path):
    with pytest.raises(DataError, match=r"class label: expected one of @classLabel \['a', 'b'\], got 'c'"):
        load_ts(write(tmp_path, HEAD + "1:2:c\n"))
    path = write(tmp_path, "@classLabel true a b c\n@data\n1,2:c\n", "y.ts")
    with pytest.raises(DataError, match="got unseen 'c'"):
        load_ts(path, label_map=LabelMap(["a", "b"]))


def test_header_errors(tmp_path):
    with pytest.raises(DataError, match="expected an @data line, got none"):
        load_ts(write(tmp_path, "@classLabel true a b\n"))
    with pytest.raises(DataError, match="expected at least one case after @data"):
        load_ts(write(tmp_path, "@classLabel true a b\n@data\n"))
    with pytest.raises(DataError, match="time-stamped"):
        load_ts(write(tmp_path, "@timeStamps true\n@classLabel true a\n@data\n(1,2):a\n"))
    with pytest.raises(DataError, match=r"@equalLength: expected true or false, got 'maybe'"):
        load_ts(write(tmp_path, "@equalLength maybe\n@data\n"))
    with pytest.raises(DataError, match=r"series length: expected 3 \(@seriesLength\), got 2"):
        load_ts(write(tmp_path, "@equalLength true\n@seriesLength 3\n@classLabel true a b\n@data\n1,2:a\n"))
    with pytest.raises(DataError, match="expected at least 2 classes"):
        load_ts(write(tmp_path, "@classLabel true a\n@data\n1,2:a\n3,4:a\n"))
    with pytest.raises(DataError, match="empty file"):
        load_ts(write(tmp_path, ""))
