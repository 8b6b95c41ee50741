"""ONNX parity of a trained seq2seq run on a whole split: export the encoder and decoder-step
graphs, run a greedy loop over them in ONNX Runtime, and compare every step's logits and token
with rnnlab's.

    python benchmarks/seq2seq_onnx_parity.py RUN [--split test] [--steps 11] [--out DIR] [--json FILE]

Prints the largest absolute logit difference and how many sources got identical tokens.
(``tests/export/test_seq2seq_onnx.py`` checks the same on small random models.)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from rnnlab.data.pairs import pad_batch
from rnnlab.export.onnx import export_seq2seq, onnx_session
from rnnlab.nn.decoding import next_token
from rnnlab.nn.seq2seq import BOS_ID
from rnnlab.train import load_run
from _report import emit


def ort_greedy(enc, dec, src: torch.Tensor, lengths: torch.Tensor, steps: int) -> np.ndarray:
    """Logits (B, steps, V) of a greedy loop over the two graphs, fed by name."""
    names = [o.name for o in enc.get_outputs()]
    out = dict(zip(names, enc.run(None, {"src": src.numpy(), "src_lengths": lengths.numpy()})))
    state = {k: out[k] for k in ("h", "c", "feed") if k in out}
    fixed = {**{k: out[k] for k in ("memory", "projected", "summary") if k in out}, "src_lengths": lengths.numpy()}
    wanted = {i.name for i in dec.get_inputs()}
    dec_names = [o.name for o in dec.get_outputs()]
    y = np.full(src.shape[0], BOS_ID, dtype=np.int64)
    logits = []
    for _ in range(steps):
        res = dict(zip(dec_names, dec.run(None, {k: v for k, v in {"y_prev": y, **state, **fixed}.items() if k in wanted})))
        state = {k: res[f"{k}_out"] for k in state}
        logits.append(res["logits"])
        y = next_token(torch.from_numpy(res["logits"])).numpy()
    return np.stack(logits, 1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--split", default="test")
    ap.add_argument("--steps", type=int, default=11, help="greedy steps compared (dates' ISO output is 10 + <eos>)")
    ap.add_argument("--out", default=None, help="folder for the two .onnx files (default: a temporary one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    task, model, _ = load_run(args.run)
    model.eval()
    folder = Path(args.out or tempfile.mkdtemp())
    enc_path, dec_path = export_seq2seq(model, folder / "encoder.onnx", folder / "decoder.onnx")
    enc, dec = onnx_session(enc_path, threads=1), onnx_session(dec_path, threads=1)
    sources, _ = task.split(args.split).pairs.grouped()
    src = task.codec.encode_sources(sources, task.config.max_source_len).ids
    err, same = 0.0, 0
    for s in range(0, len(src), 256):
        x, lengths = pad_batch(src[s: s + 256])
        got = ort_greedy(enc, dec, x, lengths, args.steps)
        with torch.no_grad():
            memory, state = model.encode(x, lengths)
            y = torch.full((x.shape[0],), BOS_ID, dtype=torch.long)
            want = []
            for _ in range(args.steps):
                logits, state, _ = model.step(y, state, memory)
                want.append(logits)
                y = next_token(logits)
        want = torch.stack(want, 1).numpy()
        err = max(err, float(np.abs(got - want).max()))
        same += int((got.argmax(-1) == want.argmax(-1)).all(1).sum())
    figures = {"run": args.run, "split": args.split, "sources": len(src), "steps": args.steps,
               "max_abs_logit_difference": err, "identical_token_rows": same}
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
