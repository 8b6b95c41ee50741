"""``rnnlab info``: the capabilities it reports are the ones the library actually has here."""

import json

import torch

from rnnlab.cli.main import main
from rnnlab.engine import engine_names, fast


def test_info_json_reports_engines_and_fast_kernels(capsys):
    assert main(["info", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["torch"] == torch.__version__
    assert rec["engines"] == engine_names()
    assert rec["fast_kernels"] == fast.available()
    assert rec["fast_kernels_gemm"] == (None if not fast.available() else "onednn+blas" if fast.onednn_in_use()
                                        else "blas")
    tiled = rec["fast_kernels_lstm_tiled"]
    assert (tiled is None) == (fast.tiled_isa(32) == "")
    if tiled is not None:
        assert tiled == (f"{fast.tiled_isa(32)} (batch 8: {fast.tiled_isa(8) or 'row-major'}; "
                         f"batch 3: {fast.tiled_isa(3) or 'row-major'})")
    assert rec["cuda"] == torch.cuda.is_available()


def test_info_lines(capsys):
    assert main(["info", "--no-build"]) == 0
    out = capsys.readouterr().out
    assert "engines" in out and "not checked (--no-build)" in out


def test_version_flag(capsys):
    from rnnlab import __version__
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"rnnlab {__version__} (torch ")


def test_the_layer_flags_without_plan_are_refused(capsys):
    """--hidden-size, --inference, ... describe the layer --plan shows: alone they were ignored."""
    for flags, flag in ((["--hidden", "8"], "--hidden-size"), (["--inference"], "--inference"),
                        (["--json", "--batch-size", "4"], "--batch-size")):
        assert main(["info", *flags]) == 1
        assert capsys.readouterr().err.strip() == (f"rnnlab: error: {flag}: expected it with --plan CELL (it describes "
                                                   "the layer whose path --plan shows), got it without --plan")
    assert main(["info", "--plan", "lstm", "--hidden", "8", "--inference", "--json"]) == 0
    from rnnlab.nn import LSTM

    # the flags reach the plan: it is the layer's own for those sizes
    assert json.loads(capsys.readouterr().out) == LSTM(32, 8).plan(32, 35, inference=True).to_dict()
