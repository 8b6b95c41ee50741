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


def test_input_minimums_name_the_least_size_a_program_reads():
    """A model that reads the last 24 steps exports with a sequence axis of at least 24, which an
    AOTInductor package does not check by itself: input_minimums reports it (rnnlab export prints it)."""
    import torch

    import rnnlab
    from rnnlab.export.pt2 import export_program, input_minimums

    class LastSteps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnnlab.LSTM(2, 4)

        def forward(self, x):
            return self.rnn(x[-24:])[0][-1]

    axes = {"input": {0: "seq", 1: "batch"}}
    program = export_program(LastSteps().eval(), (torch.randn(30, 3, 2),), axes, ["input"])
    assert input_minimums(program, ["input"], axes) == {"input axis 0": 24}
    whole = export_program(rnnlab.LSTM(2, 4).eval(), (torch.randn(30, 3, 2),), axes, ["input"])
    assert input_minimums(whole, ["input"], axes) == {}
