"""The parity smoke that test_cpu_models.py runs under ``qemu-x86_64 -cpu MODEL``.

    python tests/engine/cpu_smoke.py WORKDIR

RNN, LSTM, GRU (engine "fast") against torch.nn (its native kernels: oneDNN's JIT-compiled LSTM
disagrees with every other implementation by about 0.15 under qemu 7.2's Haswell model, with the
same weights; the record keeps that difference as "torch_onednn_lstm") and the layer-norm LSTM's
fused kernel against the reference engine, at B=32 H=256 over a few steps, forward and backward; the int8
streaming step (``Stream(..., int8=True)``) against a float64 step on the same int8 numbers, and an int8 GRU
stream beside the float one; then one step of
``rnnlab train lm`` on a tiny text. Prints one JSON object on its last line: what the CPU looks
like to torch and to the kernels, which paths ran (tiled-loop calls, reference fallbacks, GEMMs
per library) and the largest relative differences.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch

import rnnlab
from rnnlab.engine import fast, ops
from rnnlab.engine import variants as engine_variants
from rnnlab.engine.scan import scan as reference_scan
from rnnlab.nn.stream import Stream, quantize_rows

T, B, I, H = 3, 32, 16, 256


def int8_stream_diff() -> float:
    """Largest |difference| of the int8 Stream's state from a float64 step that quantises weights
    (per row) and activations (per step, max |v| / 127) the same way, each step from the Stream's
    own state. Input 5 and H = 70 exercise the padding to 4-input quads and 64-column blocks."""
    layer = rnnlab.LSTM(5, 70, num_layers=2).eval()
    stream = Stream(layer, int8=True)
    worst = 0.0

    def q8(v):
        m = v.abs().max()
        return (torch.round((v * (127 / m)).clamp(-127, 127)).double(), float(m / 127)) if m > 0 else (v.double() * 0, 0.0)

    for x in torch.randn(6, 5) * 2:
        h, c = stream.state
        z, want_h, want_c = x, [], []
        for k in range(2):
            (qx, sx), (qh, sh) = q8(z.float()), q8(h[k])
            (wi, si), (wh, sw) = quantize_rows(getattr(layer, f"weight_ih_l{k}")), quantize_rows(getattr(layer, f"weight_hh_l{k}"))
            b = (getattr(layer, f"bias_ih_l{k}") + getattr(layer, f"bias_hh_l{k}")).detach().double()
            i, f, g, o = (b + sx * si.double() * (wi.double() @ qx) + sh * sw.double() * (wh.double() @ qh)).chunk(4)
            cn = torch.sigmoid(f) * c[k].double() + torch.sigmoid(i) * torch.tanh(g)
            z = torch.sigmoid(o) * torch.tanh(cn)
            want_h.append(z)
            want_c.append(cn)
        stream.step(x)
        got_h, got_c = stream.state
        worst = max(worst, (got_h.double() - torch.stack(want_h)).abs().max().item(),
                    (got_c.double() - torch.stack(want_c)).abs().max().item())
    return worst


def int8_gru_stream_diff() -> float:
    """Largest |difference| of an int8 GRU Stream's outputs from the float GRU Stream's over six
    steps: the GRU's own unit loop on this CPU (tests/nn/test_stream_int8.py checks it exactly)."""
    layer = rnnlab.GRU(5, 70, num_layers=2).eval()
    xs = torch.randn(6, 5)
    return (Stream(layer, int8=True).run(xs) - Stream(layer).run(xs)).abs().max().item()


def main(work: Path) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rec: dict = {"capability": torch.backends.cpu.get_cpu_capability(), "fast": fast.available(),
                 "variant_kernels": engine_variants._KERNELS.get() is not None}
    K, KV = fast._KERNELS.module, engine_variants._KERNELS.module
    rec.update(cpu_isa=K.cpu_isa(), onednn=list(K.onednn_state()), onednn_check=K.onednn_check(),
               tiled_isa=fast.tiled_isa(B), rows_isa=K.rows_isa_for(B, H, T))

    calls = {"tiled": 0, "reference": 0, "inference": 0, "gru inference": 0, "rnn inference": 0, "row-major": 0}
    tiled_forward, reference_scan = fast._tiled_forward, fast.reference_scan

    def count(name, f):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return f(*args, **kwargs)
        return wrapped

    fast._tiled_forward = count("tiled", tiled_forward)      # module globals: what fast_scan calls
    fast.reference_scan = count("reference", reference_scan)
    K.lstm_infer = count("inference", K.lstm_infer)
    K.gru_infer = count("gru inference", K.gru_infer)
    K.rnn_infer = count("rnn inference", K.rnn_infer)
    K.lstm_forward = count("row-major", K.lstm_forward)      # the row-major layout: rows_isa's loop or the library's
    K.gemm_counts(True)
    KV.gemm_counts(True)

    def run(m, x, w_out):
        m.zero_grad(set_to_none=True)          # each run's own gradients (a module may run again)
        x = x.clone().requires_grad_(True)
        y, _ = m(x)
        (y * w_out).sum().backward()
        return {"out": y.detach(), "dx": x.grad, **{n: p.grad.clone() for n, p in m.named_parameters()}}

    def rel(a: dict, b: dict) -> float:
        return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1.0)).item() for k in b)

    def torch_native(m, x, w_out):
        with warnings.catch_warnings(), torch.backends.mkldnn.flags(enabled=False):
            warnings.simplefilter("ignore")      # torch's TF32 chatter about the flag
            return run(m, x, w_out)

    diffs = {}
    x = torch.randn(T, B, I)
    w_out = torch.randn(T, B, H)
    for name, ours_cls, theirs_cls in (("rnn", rnnlab.RNN, torch.nn.RNN), ("lstm", rnnlab.LSTM, torch.nn.LSTM),
                                       ("gru", rnnlab.GRU, torch.nn.GRU)):
        ours, theirs = ours_cls(I, H, engine="fast"), theirs_cls(I, H)
        theirs.load_state_dict(ours.state_dict())
        diffs[name] = rel(run(ours, x, w_out), torch_native(theirs, x, w_out))
        if name == "lstm":
            rec["torch_onednn_lstm"] = rel(run(theirs, x, w_out), torch_native(theirs, x, w_out))
            if rec["tiled_isa"]:      # "auto" takes the row-major training loop here: the tiled one, forced
                fast.set_tiled(rec["tiled_isa"])
                try:
                    diffs["lstm tiled"] = rel(run(ours, x, w_out), torch_native(theirs, x, w_out))
                finally:
                    fast.set_tiled("auto")
    # the kernels' products per library (the two modules may share one counter: GCC makes an inline
    # function's static unique process-wide, so each part is read, and reset, right after it runs)
    rec["gemm"] = list(K.gemm_counts(True))
    # the inference loop (no gradient to come: lstm_tiled.h's lstm_infer) against torch.nn's forward,
    # at the full batch, one that leaves a partial block of sequences, a single sequence, and a
    # padded batch
    # (64 units over 16 steps: sequence-steps enough for the loop's rule even at one sequence)
    xi = torch.randn(16, B, I)
    rec["infer_isa"] = K.infer_isa_for(1, 64, 16)
    ours, theirs = rnnlab.LSTM(I, 64, engine="fast"), torch.nn.LSTM(I, 64)
    theirs.load_state_dict(ours.state_dict())
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        worst = 0.0
        for b in (B, 5, 1):
            (out, (h, c)), (r_out, (r_h, r_c)) = ours(xi[:, :b]), theirs(xi[:, :b])
            worst = max(worst, rel({"out": out, "h": h, "c": c}, {"out": r_out, "h": r_h, "c": r_c}))
        packed = torch.nn.utils.rnn.pack_padded_sequence(xi[:, :5], [16, 9, 12, 16, 10], enforce_sorted=False)
        (out, (h, c)), (r_out, (r_h, r_c)) = ours(packed), theirs(packed)      # unequal lengths: a mask
        worst = max(worst, rel({"out": out.data, "h": h, "c": c}, {"out": r_out.data, "h": r_h, "c": r_c}))
    diffs["lstm inference"] = worst
    for name, ours_cls, theirs_cls in (("gru", rnnlab.GRU, torch.nn.GRU), ("rnn", rnnlab.RNN, torch.nn.RNN)):
        ours_c, theirs_c = ours_cls(I, 64, engine="fast"), theirs_cls(I, 64)       # the GRU's and RNN's loops
        theirs_c.load_state_dict(ours_c.state_dict())
        with torch.no_grad():
            worst = 0.0
            for b in (B, 5, 1):
                (out, h), (r_out, r_h) = ours_c(xi[:, :b]), theirs_c(xi[:, :b])
                worst = max(worst, rel({"out": out, "h": h}, {"out": r_out, "h": r_h}))
            (out, h), (r_out, r_h) = ours_c(packed), theirs_c(packed)
            worst = max(worst, rel({"out": out.data, "h": h}, {"out": r_out.data, "h": r_h}))
        diffs[f"{name} inference"] = worst
    fused = rnnlab.LSTM(I, H, layer_norm=True, engine="fast")
    reference = rnnlab.LSTM(I, H, layer_norm=True, engine="reference")
    reference.load_state_dict(fused.state_dict())
    diffs["lstm layer_norm"] = rel(run(fused, x, w_out), run(reference, x, w_out))
    # the dispatcher operator that torch.compile and torch.export call (rnnlab::seq_forward), run
    # eagerly, against the reference scan
    assert fast._ops_ready()
    m = rnnlab.LSTM(I, H)
    weights = (m.weight_ih_l0.detach(), m.weight_hh_l0.detach(), m.bias_ih_l0.detach(), m.bias_hh_l0.detach())
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)

    def scan_grads(f, b=B):
        # b = B: no padding, backward reads the states behind the output; b = 5: a padded batch,
        # backward copies them (fast_kernels.cpp's lstm_tiled_states)
        ins = [t.clone().requires_grad_(True) for t in (x[:, :b], *weights)]
        out, h, c = f(ins[0], h0[:b], c0[:b], *ins[1:])
        ((out * w_out[:, :b]).sum() + (h * h).sum() + c.sum()).backward()
        return {"out": out.detach(), "h": h.detach(), "c": c.detach(), **{f"d{k}": t.grad for k, t in enumerate(ins)}}

    def reference_grads(b=B):
        return scan_grads(lambda *a: reference_scan("lstm", *a, None), b)

    # forward and backward (ops._backward: the bias gradients as one product with a row of ones)
    diffs["lstm operator"] = rel(scan_grads(lambda *a: ops.op_scan("lstm", *a, None)), reference_grads())
    # the inference-only operators through the dispatcher (their C++ autograd kernel): the step pair
    # on every CPU, the inference loop's operator where that loop runs; a gradient refused
    cell = torch.nn.LSTMCell(I, H)
    packed = fast.lstm_step_pack(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    with torch.no_grad():
        got = fast.lstm_step(x[0, :1], h0[:1], c0[:1], packed)           # (a batch-1 step)
        want = cell(x[0, :1], (h0[:1], c0[:1]))
        diffs["lstm step operator"] = rel({"h": got[0], "c": got[1]}, {"h": want[0], "c": want[1]})
        if K.infer_isa(H):
            out, h, c = torch.ops.rnnlab.lstm_infer(x, h0, c0, *weights)
            r_out, r_h, r_c = reference_scan("lstm", x, h0, c0, *weights, None)
            diffs["lstm inference operator"] = rel({"out": out, "h": h, "c": c}, {"out": r_out, "h": r_h, "c": r_c})
    try:
        fast.lstm_step(x[0, :1].clone().requires_grad_(), h0[:1], c0[:1], packed)
    except RuntimeError as exc:
        rec["step_refusal"] = str(exc).splitlines()[0]
    # the unit-major operator pair torch.compile calls for float32 LSTMs (rnnlab::lstm_tiled_forward,
    # lstm_tiled_backward), forward and backward against the reference scan where the tiled loop
    # runs; elsewhere it is not chosen, and called anyway it refuses with one error
    rec["tiled_operator"] = fast._tiled_op_ready()
    try:
        got = scan_grads(ops.op_tiled_lstm)
    except RuntimeError as exc:
        rec["tiled_operator_error"] = str(exc).splitlines()[0]
    else:
        diffs["lstm tiled operator"] = rel(got, reference_grads())
        diffs["lstm tiled operator padded"] = rel(scan_grads(ops.op_tiled_lstm, 5), reference_grads(5))
    rec.update(diffs=diffs, calls=dict(calls), variant_gemm=list(KV.gemm_counts(True)))
    rec.update(int8_isa=K.int8_isa(), int8_stream=int8_stream_diff(), int8_gru_stream=int8_gru_stream_diff())

    from rnnlab.cli import main as cli

    text = work / "tiny.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    rec["cli_rc"] = cli(["train", "lm", "--text", str(text), "--hidden", str(H), "--batch-size", str(B),
                         "--bptt", "5", "--eval-batch-size", "4", "--max-steps", "1", "--eval-every", "1",
                         "--threads", "2", "--engine", "fast", "--quiet", "--no-report", "--out", str(work / "run")])
    rec["cli_calls"] = {k: v - rec["calls"][k] for k, v in calls.items()}
    rec["cli_gemm"] = list(K.gemm_counts(True))
    KV.gemm_counts(True)
    return rec


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))), flush=True)
