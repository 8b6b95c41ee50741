"""ONNX export of a sequence-to-sequence model: the encoder graph and the decoder-step graph, run
by ONNX Runtime in a greedy loop, give rnnlab's logits at every step (1e-5) and its greedy
output, for a batch of mixed source lengths other than the exported example's sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab.data.pairs import pad_batch
from rnnlab.errors import ConfigError
from rnnlab.nn.decoding import greedy_decode, next_token
from rnnlab.nn.seq2seq import BOS_ID, EOS_ID, EncoderDecoder

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install rnnlab[onnx]")
pytest.importorskip("onnx", reason="onnx not installed: pip install rnnlab[onnx]")

from rnnlab.export.onnx import export_seq2seq, onnx_session, seq2seq_paths  # noqa: E402

CONFIGS = [
    dict(cell="lstm", attention="general", num_layers=2),
    dict(cell="gru", attention="additive"),
    dict(cell="lstm", attention="none", input_feeding=False, bidirectional=False),
    dict(cell="rnn", attention="dot", input_feeding=False, tie_embeddings=True, embedding_size=8),
]


def _ort_greedy(enc, dec, src: torch.Tensor, lengths: torch.Tensor, steps: int):
    """The logits of every step and the tokens of a greedy loop over the two ONNX graphs, fed by name."""
    enc_out = dict(zip([o.name for o in enc.get_outputs()], enc.run(None, {"src": src.numpy(), "src_lengths": lengths.numpy()})))
    state = {k: enc_out[k] for k in ("h", "c", "feed") if k in enc_out}
    fixed = {**{k: enc_out[k] for k in ("memory", "projected", "summary") if k in enc_out}, "src_lengths": lengths.numpy()}
    wanted = {i.name for i in dec.get_inputs()}
    y = np.full(src.shape[0], BOS_ID, dtype=np.int64)
    out_names = [o.name for o in dec.get_outputs()]
    all_logits, tokens = [], []
    for _ in range(steps):
        feeds = {k: v for k, v in {"y_prev": y, **state, **fixed}.items() if k in wanted}
        outs = dict(zip(out_names, dec.run(None, feeds)))
        state = {k: outs[f"{k}_out"] for k in state}
        all_logits.append(outs["logits"])
        y = next_token(torch.from_numpy(outs["logits"])).numpy()
        tokens.append(y)
    return np.stack(all_logits, 1), np.stack(tokens, 1)


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: f"{kw['cell']}-{kw['attention']}")
def test_onnxruntime_matches_rnnlab_step_by_step(tmp_path, kw) -> None:
    torch.manual_seed(0)
    kw = {"embedding_size": 6, "hidden_size": 8, **kw}
    model = EncoderDecoder(13, 9, **kw).eval()
    enc_path, dec_path = export_seq2seq(model, tmp_path / "e.onnx", tmp_path / "d.onnx")
    enc, dec = onnx_session(enc_path), onnx_session(dec_path)

    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(4, 13, (n,), generator=gen).tolist() + [EOS_ID] for n in (6, 2, 9, 4)]
    src, lengths = pad_batch(seqs)                      # exported with (2, 5): batch and length are dynamic
    steps = 7
    got_logits, got_tokens = _ort_greedy(enc, dec, src, lengths, steps)

    with torch.no_grad():
        memory, state = model.encode(src, lengths)
        y = torch.full((4,), BOS_ID, dtype=torch.long)
        want = []
        for _ in range(steps):
            logits, state, _ = model.step(y, state, memory)
            want.append(logits)
            y = next_token(logits)
    want = torch.stack(want, 1)
    torch.testing.assert_close(torch.from_numpy(got_logits), want, atol=1e-5, rtol=1e-5)

    # The greedy outputs (cut at <eos>) are rnnlab's greedy_decode's.
    hyps = greedy_decode(model, src, lengths, max_len=steps)
    for row, h in zip(got_tokens.tolist(), hyps):
        cut = row[: row.index(EOS_ID)] if EOS_ID in row else row
        assert cut == h.tokens


def test_seq2seq_paths() -> None:
    assert [p.name for p in seq2seq_paths("out/g2p.onnx")] == ["g2p.encoder.onnx", "g2p.decoder.onnx"]


def test_variant_cells_are_refused(tmp_path) -> None:
    model = EncoderDecoder(7, 7, embedding_size=4, hidden_size=4, cell_options={"layer_norm": True})
    with pytest.raises(ConfigError, match="cell options"):
        export_seq2seq(model, tmp_path / "e.onnx", tmp_path / "d.onnx")


def test_export_command_writes_both_graphs_of_a_run(tmp_path, capsys) -> None:
    from rnnlab.cli.main import main
    from tests.conftest import reversal_seq2seq_run

    run = reversal_seq2seq_run(tmp_path)
    capsys.readouterr()
    assert main(["export", str(run), "--onnx", str(tmp_path / "rev.onnx")]) == 0
    enc, dec = tmp_path / "rev.encoder.onnx", tmp_path / "rev.decoder.onnx"
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"wrote {enc} and {dec}"
    assert lines[1].startswith("ONNX Runtime on example inputs of shape (3, 7) (traced with (2, 5)): largest "
                               "difference from the model ")
    assert [i.name for i in onnx_session(enc).get_inputs()] == ["src", "src_lengths"]
    assert "attention" in [o.name for o in onnx_session(dec).get_outputs()]
    assert main(["export", str(run), "--onnx", str(tmp_path / "rev.onnx")]) == 1      # both exist: --force needed
    assert "pass --force" in capsys.readouterr().err
