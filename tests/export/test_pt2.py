"""`rnnlab export RUN --pt2` refuses what it cannot export for every length (the package runs in a
fresh process: tests/engine/test_compile.py)."""

import pytest

from rnnlab.cli.main import main


@pytest.mark.parametrize("flags,named", [(["--cell-option", "layer_norm=true"], "rnn (layer_norm)"),
                                         (["--cell-option", "zoneout=0.1"], "rnn (zoneout)")])
def test_layers_that_unroll_under_export_are_refused(tmp_path, capsys, flags, named):
    """Such a package would serve only the example's length (and read past shorter inputs): one
    error line naming the layer and its options, pointing to --onnx, and no file."""
    text = tmp_path / "poem.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    run = tmp_path / "run"
    assert main(["train", "lm", "--text", str(text), "--hidden-size", "16", "--bptt", "8", "--batch-size", "4",
                 "--max-steps", "1", "--quiet", "--no-report", "--out", str(run), *flags]) == 0
    assert main(["export", str(run), "--pt2", str(tmp_path / "m.pt2")]) == 1
    err = capsys.readouterr().err
    assert named in err and "use --onnx" in err and not (tmp_path / "m.pt2").exists()
