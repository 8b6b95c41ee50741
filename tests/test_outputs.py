"""rnnlab.outputs: where a command may write."""

from __future__ import annotations

import pytest

from rnnlab.errors import OutputError
from rnnlab.outputs import check_output


def test_a_runs_data_file_or_a_file_inside_its_data_folder_is_never_an_output(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "0_a_0.wav").write_bytes(b"RIFF")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,text\n")
    for out in (labels, audio / "0_a_0.wav", audio / "new.onnx"):
        with pytest.raises(OutputError, match="the run's training data"):
            check_output(out, (), force=True, flag="--onnx", run_data=[str(audio), str(labels)])
    assert (audio / "0_a_0.wav").read_bytes() == b"RIFF" and not (audio / "new.onnx").exists()
    assert check_output(tmp_path / "m.onnx", (), flag="--onnx", run_data=[str(audio), str(labels)]) == tmp_path / "m.onnx"
