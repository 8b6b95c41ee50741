"""Export rnnlab layers, cells and models to ONNX, for serving with ONNX Runtime.

Why through torch.nn: rnnlab's layers have torch.nn's parameter names and layouts, so a state
dict moves across unchanged, and torch's exporter maps ``nn.LSTM``/``nn.GRU``/``nn.RNN`` to ONNX's
own fused LSTM/GRU/RNN operators (fast in ONNX Runtime, and understood by every runtime). Our
hand-written autograd.Function has no ONNX symbolic, and inference needs no backward anyway.

Variants torch.nn lacks (layer norm, peepholes, coupled gates, the reset-before GRU, zoneout)
go instead through :mod:`rnnlab.export.variant_graph`: the eval equations in plain torch ops, with
a scripted time loop that becomes an ONNX ``Loop`` (sequence length and batch stay dynamic;
slower than the fused operators, but any runtime runs it). Options that act only in training or
at init (recurrent_dropout alone, weight_drop, forget_bias, init) keep the fused operator;
zoneout is exported as its eval expectation, as rnnlab computes it in eval.

Every conversion is checked before writing: the twin must give rnnlab's eval outputs on a random
input (1e-4; where float32 layer norm amplifies rounding beyond that, again on float64 copies to
1e-7), so nothing is silently exported as a different network. A training run's export
(:func:`export_run`) is also run in ONNX Runtime, where it is installed, on a second example of
another batch size and length, so a graph with the traced shapes baked in is refused too.

    >>> import tempfile, os, torch, rnnlab
    >>> from rnnlab.export.onnx import export_onnx
    >>> path = os.path.join(tempfile.mkdtemp(), "lstm.onnx")
    >>> export_onnx(rnnlab.LSTM(3, 4, num_layers=2), path).name
    'lstm.onnx'
    >>> export_onnx(rnnlab.GRU(3, 4, layer_norm=True, gru_reset="before"), path).name
    'lstm.onnx'

Graph interface of an exported layer: inputs ``input`` (T, B, I) (or (B, T, I) with batch_first),
``h0`` (L·D, B, P) and for the LSTM ``c0``; outputs ``output``, ``h_n`` (and ``c_n``). Batch and
sequence axes are dynamic. Cells: ``input`` (B, I), ``hx`` (and ``cx``) -> ``h`` (and ``c``).
Models (``example_inputs`` given, e.g. ``rnnlab export RUN --onnx``) may hold variant layers.
LSTM projections (proj_size > 0) are refused: torch's exporter has no mapping for them.

``int8=True`` (``rnnlab export RUN --onnx PATH --int8``) passes the exported graph through ONNX
Runtime's dynamic quantisation (:func:`quantize_int8`): int8 weights with per-channel scales,
activations quantised at run time.

A sequence-to-sequence model (:class:`~rnnlab.nn.seq2seq.EncoderDecoder`) is two graphs,
written by :func:`export_seq2seq`: the encoder, run once per batch of sources, and one decoder
step, which the caller runs in its own greedy or beam loop (see :class:`Seq2SeqEncoderGraph` and
:class:`Seq2SeqStepGraph` for their inputs and outputs).

A speech run is one graph from waveforms and their lengths, the features included
(:class:`SpeechGraph`), checked against the model's own forward before it is written.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.errors import ConfigError, expected, optional_module
from rnnlab.data.audio_features import deltas, normalize_utterance
from rnnlab.export.variant_graph import equations_differ, variant_twin
from rnnlab.nn.cells import CellBase
from rnnlab.nn.layers import RecurrentBase
from rnnlab.nn.regularize import WeightDrop
from rnnlab.outputs import atomic_path, check_output, commit, is_stdout, refuse_folder
from rnnlab.tasks.classify import SequenceClassifier, pool_states
from rnnlab.tasks.forecast import Forecaster
from rnnlab.tasks.speech import SpeechModel
from rnnlab.nn.seq2seq import DecoderState, EncoderDecoder, Memory
from rnnlab.tasks.lm import LanguageModel
from rnnlab.tasks.video import FullClips, frames_example
from rnnlab.train.rundir import check_run_output, load_run

_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}
_CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn_tanh": nn.RNNCell, "rnn_relu": nn.RNNCell}
OPSET = 17


def _is_rnnlab(module: nn.Module) -> bool:
    return type(module).__module__.startswith("rnnlab.nn") and isinstance(getattr(module, "mode", None), str)


def to_torch(module: nn.Module) -> nn.Module:
    """The torch.nn twin of an rnnlab recurrent layer or cell (same weights), in eval mode."""
    if equations_differ(module):                 # layer norm, peepholes, ...: no torch.nn twin
        return variant_twin(module)
    mode = module.mode
    nl = {"nonlinearity": "relu"} if mode == "rnn_relu" else {}
    p = next(module.parameters())
    if isinstance(module, RecurrentBase):
        if module.proj_size > 0:
            raise ConfigError("proj_size: expected 0 for ONNX export (torch's exporter cannot map LSTM projections), "
                              f"got {module.proj_size}")
        twin = _LAYERS[mode](module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias,
                             batch_first=module.batch_first, dropout=module.dropout,
                             bidirectional=module.bidirectional, **nl)
    elif isinstance(module, CellBase):
        twin = _CELLS[mode](module.input_size, module.hidden_size, bias=module.bias, **nl)
    else:
        raise ConfigError(f"module: expected an rnnlab RNN/LSTM/GRU layer or cell, got {type(module).__name__}")
    twin = twin.to(device=p.device, dtype=p.dtype)
    # Options that act only in training or at init (weight_drop, recurrent_dropout, forget_bias,
    # init) add no parameters: the state dict is torch.nn's.
    twin.load_state_dict(module.state_dict(), strict=True)
    return twin.eval()


def torchify(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every rnnlab recurrent submodule replaced by its torch.nn twin."""
    if _is_rnnlab(model):
        return to_torch(model)
    model = copy.deepcopy(model)   # once: weights shared between submodules (tying) stay shared
    _swap_layers(model)
    return model.eval()


def _swap_layers(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, WeightDrop):
            child = child.unwrap()
        if _is_rnnlab(child):
            setattr(module, name, to_torch(child))
        else:
            _swap_layers(child)


def _interface(m: nn.Module, batch: int = 2, steps: int = 3):
    """Example inputs, names and dynamic axes for an rnnlab recurrent layer or cell ``m``."""
    p = next(m.parameters())
    is_lstm = m.mode == "lstm"
    if hasattr(m, "num_layers"):                 # a layer
        D = 2 if m.bidirectional else 1
        x = torch.randn((batch, steps, m.input_size) if m.batch_first else (steps, batch, m.input_size),
                        dtype=p.dtype, device=p.device)
        h0 = torch.randn(m.num_layers * D, batch, m.hidden_size, dtype=p.dtype, device=p.device)
        ax = {0: "batch", 1: "seq"} if m.batch_first else {0: "seq", 1: "batch"}
        state_ax = {1: "batch"}
        args = (x, (h0, torch.randn_like(h0))) if is_lstm else (x, h0)
        in_names = ["input", "h0", "c0"] if is_lstm else ["input", "h0"]
        out_names = ["output", "h_n", "c_n"] if is_lstm else ["output", "h_n"]
        dyn = {"input": ax, "output": ax, **{n: state_ax for n in in_names[1:] + out_names[1:]}}
        return args, in_names, out_names, dyn
    x = torch.randn(batch, m.input_size, dtype=p.dtype, device=p.device)
    h = torch.randn(batch, m.hidden_size, dtype=p.dtype, device=p.device)
    args = (x, (h, torch.randn_like(h))) if is_lstm else (x, h)
    in_names = ["input", "hx", "cx"] if is_lstm else ["input", "hx"]
    out_names = ["h", "c"] if is_lstm else ["h"]
    return args, in_names, out_names, {n: {0: "batch"} for n in in_names + out_names}


def _flat(v) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    return [t for x in v for t in _flat(x)]


def export_onnx(
    module: nn.Module, path: str | Path, example_inputs: tuple | None = None,
    input_names: list[str] | None = None, output_names: list[str] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = OPSET,
) -> Path:
    """Write ``module`` (an rnnlab layer or cell, or any model containing them) to ``path``.

    For a layer or cell, inputs, names and dynamic axes are made here. For a whole model, give
    ``example_inputs`` (and names/axes to taste). Returns the path.
    """
    path = Path(path)
    twin = torchify(module).eval()
    if _is_rnnlab(module):
        args, in_names, out_names, dyn = _interface(module)
        input_names, output_names = input_names or in_names, output_names or out_names
        dynamic_axes = dynamic_axes if dynamic_axes is not None else dyn
    elif example_inputs is None:
        raise ConfigError(f"example_inputs: expected a tuple of example tensors for a {type(module).__name__}, got None")
    else:
        args = tuple(example_inputs)
    _check_twin(module, twin, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter (the one that maps nn.LSTM to ONNX's LSTM) announces its own
        # deprecation and warns about tracing; none of it affects a recurrent layer's graph.
        warnings.simplefilter("ignore")
        if any(isinstance(m, torch.jit.ScriptModule) for m in twin.modules()):
            # Variant layers hold a scripted time loop; the exporter only finds it inside a model
            # that torch.jit.trace has made (it refuses script modules called from its own trace).
            twin = torch.jit.trace(twin, args, check_trace=False)
        torch.onnx.export(twin, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
    return path


def _eval_outputs(module: nn.Module, *args: Any) -> list[torch.Tensor]:
    """``module``'s outputs on ``args`` in eval mode, without a graph (its mode put back), flat."""
    was_training = module.training
    try:
        with torch.no_grad():
            return _flat(module.eval()(*args))
    finally:
        module.train(was_training)


def _max_diff(module: nn.Module, twin: nn.Module, args: tuple) -> float:
    want, got = _eval_outputs(module, *args), _eval_outputs(twin, *args)
    if len(want) != len(got):
        return float("inf")
    return max(float((a - b).abs().max()) for a, b in zip(want, got))


def _check_twin(module: nn.Module, twin: nn.Module, args: tuple) -> None:
    """The twin must compute what rnnlab computes (refuses silently-different conversions)."""
    err = _max_diff(module, twin, args)
    if err > 1e-4:
        raise ConfigError(f"{type(module).__name__}: expected its export twin to match it, "
                          f"got max difference {err:.2e}")


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session (raises ConfigError if onnxruntime is not installed)."""
    ort = optional_module("onnxruntime", "onnxruntime", "it installed (pip install rnnlab[onnx])", "ImportError")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session, *inputs: Any) -> list:
    """Run a session on tensors/arrays given in the graph's input order (one per input: a
    ConfigError naming the graph's inputs otherwise); returns NumPy arrays."""
    specs = session.get_inputs()
    values = list(_flat(inputs) if not isinstance(inputs[0], (list,)) else inputs)
    if len(values) != len(specs):
        raise ConfigError(expected("run_onnx inputs", f"{len(specs)}, in the graph's order "
                                   f"({', '.join(i.name for i in specs)})", len(values)))
    return session.run(None, {spec.name: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
                              for spec, v in zip(specs, values)})


RUNTIME_CHECK = (3, 7)   # (batch, steps) of the example that export_run runs the written file on, where a task has them
RUNTIME_TOLERANCE = 1e-3  # of the largest output magnitude (at least 1): float32 rounding (layer norm amplifies it), not another network


def runtime_difference(path: str | Path, want: list[torch.Tensor], args: tuple, names: list[str]) -> float | None:
    """The largest absolute difference between the ONNX file's outputs under ONNX Runtime on
    ``args`` (fed by ``names``; inputs the exporter dropped as unused are left out) and ``want``,
    the model's (:func:`_eval_outputs`), relative to the largest output magnitude when that is above 1. None where
    onnxruntime is not installed; infinity where the outputs' number or shapes differ, or where
    ONNX Runtime refuses the inputs (a graph with the traced sizes fixed)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    want = [t.double().numpy() for t in want]
    session = onnx_session(path, threads=1)
    given = {n: a for n, a in zip(names, _flat(args))}
    try:
        got = session.run(None, {i.name: given[i.name].detach().cpu().numpy() for i in session.get_inputs()})
    except Exception:   # onnxruntime's own error types (InvalidArgument, ...): the graph cannot take them
        return float("inf")
    if len(got) != len(want) or any(np.shape(g) != w.shape for g, w in zip(got, want)):
        return float("inf")
    scale = max([1.0] + [float(np.abs(w).max()) for w in want if w.size])
    return max(float(np.abs(w - np.asarray(g, dtype=np.float64)).max()) for w, g in zip(want, got) if w.size) / scale


@dataclass(frozen=True)
class Exported:
    """What :func:`export_run` wrote. ``difference``: per file, ONNX Runtime against the model on
    the check example (:func:`runtime_difference`; None without onnxruntime): the float graph's,
    which must be within :data:`RUNTIME_TOLERANCE` for the file to be written, or with ``int8``
    the quantised file's, which is reported, not bounded. ``checked`` / ``traced``: the shape of
    the first input of the check example and of the traced one (equal where the task's example
    is its first training batch, which has no other size)."""
    paths: tuple[Path, ...]
    difference: tuple[float | None, ...]
    checked: tuple[int, ...]
    traced: tuple[int, ...]


class SortedClassifier(nn.Module):
    """A sequence classifier as ONNX can take it: torch's exporter maps a PackedSequence to the
    LSTM/GRU/RNN operators' ``sequence_lens`` only when the batch is sorted by length, so this
    sorts, runs the classifier's own layers, and puts the rows back in their order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        m = self.model
        order = torch.argsort(lengths, descending=True)
        back = torch.argsort(order)
        xs, ls = x[:, order], lengths[order]
        packed = pack_padded_sequence(m.embed(xs), ls, enforce_sorted=True)
        out_p, _ = m.rnn(packed)
        out, _ = pad_packed_sequence(out_p, total_length=x.shape[0])  # (T, B, dirs*H)
        if m.pool == "last":
            # The final states read from the output (the exporter fails on h_n of a packed input):
            # forward at each row's own last step, backward after reading step 0.
            hidden = out.shape[-1] // m.dirs
            rows = torch.arange(out.shape[1])
            parts = [out[ls - 1, rows, :hidden]] + ([out[0, :, hidden:]] if m.dirs == 2 else [])
            feats = torch.cat(parts, dim=-1)
        else:
            feats = pool_states(out, out[:1], ls, m.pool, m.num_layers, m.dirs)
        return m.head(m.drop(feats))[back]


def _is_speech(model: nn.Module) -> bool:
    return isinstance(model, SpeechModel)


class SpeechGraph(nn.Module):
    """A speech model (:class:`rnnlab.tasks.speech.SpeechModel`) as one ONNX graph, its features
    included: inputs ``wave`` (B, N) float32 (zero-padded waveforms at the run's sample rate) and
    ``lengths`` (B,) int64 (valid samples per row); outputs, words mode: ``logits`` (B, C); ctc
    mode: ``log_probs`` (T', B, 1 + C) (blank = 0) and ``steps`` (B,) int64 (valid steps per row).

    It computes what ``SpeechModel.forward(wave.double(), lengths)`` computes (the features in
    float64, as the task runs them), written so that the trace keeps the batch and sample axes
    dynamic and ONNX Runtime's CPU kernels take it: the framed DFT is a gather and a matrix
    product (ONNX Runtime has no float64 Conv), the running normalisation is a cumulative sum over
    the whole batch (exact for every valid frame, padded frames are zero as the model's), and the
    recurrent layers see a packed batch sorted by length (the only packed input torch's exporter
    maps to the fused operators' ``sequence_lens``), put back in order afterwards.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if equations_differ(model.rnn):
            raise ConfigError("speech ONNX export: expected cell options torch.nn has (the packed recordings map to "
                              "the fused operators only), got options that change the cell's equations")
        self.model = model
        f = model.features
        if f.cfg.normalize == "running" and not bool(f.has_stats):
            raise ConfigError("speech export: expected the running normalisation's training statistics in the "
                              "model, got none set")

    def features(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.features
        cfg = f.cfg
        wave = wave.to(torch.float64)
        keep = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
        wave = wave * keep                                                        # rows end at their length
        n_fft, hop = cfg.n_fft_, cfg.hop_length
        x = nn.functional.pad(wave, (n_fft // 2, n_fft // 2))                    # centred frames
        starts = torch.arange(0, wave.shape[1] + 1, hop, device=wave.device)      # 1 + N // hop frames
        idx = starts[:, None] + torch.arange(n_fft, device=wave.device)[None, :]  # (T, n_fft)
        spec = x[:, idx] @ f.dft[:, 0, :].to(torch.float64).t()                   # (B, T, 2K)
        re, im = spec.chunk(2, dim=2)
        mel = (re * re + im * im) @ f.mel.to(torch.float64)
        s = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))
        if cfg.kind == "mfcc":
            s = s @ f.dct.to(torch.float64)
        frames = 1 + lengths // hop
        parts = [s]
        for _ in range(cfg.deltas):
            parts.append(deltas(parts[-1], cfg.delta_width, frames))
        mask = (torch.arange(s.shape[1], device=s.device)[None, :] < frames[:, None])[..., None].to(s.dtype)
        x = torch.cat(parts, dim=2) * mask                                        # (B, T, D)
        if cfg.normalize == "utterance":
            x = normalize_utterance(x, frames)
        elif cfg.normalize == "running":                                          # rnnlab's running_normalize, batched
            n = torch.arange(1, x.shape[1] + 1, dtype=torch.float64, device=x.device)[None, :, None]
            w = float(cfg.prior_frames)
            m0, v0 = f.stats_mean.to(torch.float64), f.stats_var.to(torch.float64)
            mu = (w * m0 + torch.cumsum(x, 1)) / (w + n)
            second = (w * (v0 + m0 * m0) + torch.cumsum(x * x, 1)) / (w + n)
            x = (x - mu) / torch.sqrt((second - mu * mu).clamp(min=0.0) + 1e-5) * mask
        return x, frames

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor):
        m = self.model
        feats, frames = self.features(wave, lengths)
        feats, k = feats.to(m.head.weight.dtype), m.frame_stack
        if k > 1:   # rnnlab.tasks.speech.stack_frames, by gathers (its reshape would fix the length in the trace)
            starts = torch.arange(0, feats.shape[1], k, device=feats.device)       # ceil(T / k) steps
            padded = nn.functional.pad(feats, (0, 0, 0, k - 1))
            feats = torch.cat([padded[:, starts + j] for j in range(k)], dim=2)   # (B, T', k*D)
            frames = (frames + k - 1) // k
        order = torch.argsort(frames, descending=True)
        back = torch.argsort(order)
        x = feats.transpose(0, 1)[:, order]                                       # (T', B, k*D), sorted
        packed = pack_padded_sequence(x, frames[order], enforce_sorted=True)
        out_p, _ = m.rnn(packed)
        out, _ = pad_packed_sequence(out_p, total_length=x.shape[0])
        out = out[:, back]                                                        # (T', B, dirs*H)
        if m.mode == "words":
            mask = (torch.arange(out.shape[0], device=out.device)[:, None] < frames[None, :]).to(out)[..., None]
            return m.head((out * mask).sum(0) / frames.to(out)[:, None])
        return torch.log_softmax(m.head(out), dim=-1), frames


def speech_example(model: nn.Module, batch: int = 2, seconds: float = 0.5):
    """``(args, input_names, output_names, dynamic_axes)`` of a :class:`SpeechGraph`: noise
    waveforms of ``seconds`` at the model's sample rate, the second row shorter."""
    rate = model.features.cfg.sample_rate
    n = max(2 * model.features.cfg.n_fft_, int(rate * seconds))
    wave = 0.1 * torch.randn(batch, n, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([n] + [max(1, n - n // 3)] * (batch - 1), dtype=torch.long)
    bn = {0: "batch", 1: "samples"}
    if model.mode == "words":
        return (wave, lengths), ["wave", "lengths"], ["logits"], {"wave": bn, "lengths": {0: "batch"},
                                                                  "logits": {0: "batch"}}
    return ((wave, lengths), ["wave", "lengths"], ["log_probs", "steps"],
            {"wave": bn, "lengths": {0: "batch"}, "log_probs": {0: "steps", 1: "batch"}, "steps": {0: "batch"}})


def check_speech_graph(model: nn.Module, graph: nn.Module, args: tuple) -> None:
    """The graph must give ``model(wave.double(), lengths)`` (the task's own forward) on ``args``."""
    want, got = _eval_outputs(model, args[0].double(), args[1]), _eval_outputs(graph, *args)
    if model.mode == "words":
        want = want[:1]
    err = max(float((a.double() - b.double()).abs().max()) for a, b in zip(want, got))
    if len(want) != len(got) or err > 1e-4:
        raise ConfigError(f"speech export: expected its graph to match the model, got max difference {err:.2e}")


def example_for_export(task: Any, model: nn.Module, batch: int = 2, steps: int = 5):
    """``(args, input_names, output_names, dynamic_axes)`` for exporting a task's model, made from
    the model's own sizes (vocabulary, features, context), so the training data need not exist.

    Classifiers take ``lengths`` (B,) beside the padded input (T, B[, D]); language models return
    their state beside the logits. Unknown tasks fall back to their first training batch.
    """
    def ids(vocab: int) -> torch.Tensor:
        return torch.randint(0, vocab, (steps, batch), generator=torch.Generator().manual_seed(0))

    def values(width: int, t: int = steps) -> torch.Tensor:
        return torch.randn(t, batch, width, generator=torch.Generator().manual_seed(0))

    if getattr(task, "kind", None) == "frames":     # video clips: uint8 frames in, no training data needed
        return frames_example(task, batch, frames=max(2, steps - 2))   # short clips: frames are large
    if isinstance(model, EncoderDecoder):
        raise ConfigError(f"task {getattr(task, 'name', 'seq2seq')!r}: expected a model with one input graph, got an "
                          "encoder-decoder (two graphs: see export_seq2seq)")
    if _is_speech(model):                           # waveforms in: the features are part of the graph
        return speech_example(model, batch, seconds=steps / 10)

    seq_batch = {0: "seq", 1: "batch"}
    if isinstance(model, SequenceClassifier):
        emb = model.embed
        x = ids(emb.num_embeddings) if isinstance(emb, nn.Embedding) else values(emb.in_features)
        lengths = torch.tensor([steps] + [max(1, steps - 2)] * (batch - 1), dtype=torch.long)
        return ((x, lengths), ["input", "lengths"], ["logits"],
                {"input": seq_batch, "lengths": {0: "batch"}, "logits": {0: "batch"}})
    if getattr(task, "name", "") == "classify" and getattr(task, "kind", "") == "numeric":
        # LSTM-FCN and ensembles: series padded to the run's length (the LSTM branch's input
        # width), so only the batch axis is dynamic
        t = int(task.length)
        lengths = torch.tensor([t] + [max(1, t - 2)] * (batch - 1), dtype=torch.long)
        return ((values(task.dims, t), lengths), ["series", "lengths"], ["logits"],
                {"series": {1: "batch"}, "lengths": {0: "batch"}, "logits": {0: "batch"}})
    if isinstance(model, LanguageModel):
        # One stack: h_n (, c_n). One layer per level (locked dropout, weight drop, a narrower tied
        # last layer): the state is a tuple per level, so h_n_0 (, c_n_0), h_n_1, ...
        first = model.rnn if model.rnn is not None else model.rnns[0]
        per = ["h_n", "c_n"] if getattr(first, "module", first).mode == "lstm" else ["h_n"]
        outs = ["logits", *(per if model.rnn is not None
                            else [f"{n}_{i}" for i in range(len(model.rnns)) for n in per])]
        axes = {"input": seq_batch, "logits": seq_batch, **{n: {1: "batch"} for n in outs[1:]}}
        return (ids(model.vocab_size),), ["input"], outs, axes
    if isinstance(model, Forecaster):
        t = int(getattr(getattr(task, "config", None), "context", steps))
        return (values(model.rnn.input_size, t),), ["input"], ["forecast"], {"input": seq_batch, "forecast": {0: "batch"}}
    embed = getattr(model, "embed", None)
    rnn = getattr(model, "rnn", None)
    if rnn is not None and getattr(task, "name", "") == "probe":
        x = ids(embed.num_embeddings) if isinstance(embed, nn.Embedding) else values(rnn.input_size)
        return (x,), ["input"], None, {"input": seq_batch}
    first = next(iter(task.train_batches(0)))
    x = first.get("x") if isinstance(first, dict) else getattr(first, "x", None)
    if x is None:
        x = first[0] if isinstance(first, (tuple, list)) else first
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"task {getattr(task, 'name', '?')}: expected a tensor input in its batches, got {type(x).__name__}")
    return (x,), ["input"], None, {"input": {i: f"dim{i}" for i in range(max(1, x.dim() - 1))}}


class Seq2SeqEncoderGraph(nn.Module):
    """The encoder of an :class:`EncoderDecoder` as an ONNX graph.

    Inputs ``src`` (B, S) int64 (ids closed by ``<eos>``, padded with ``<pad>``) and
    ``src_lengths`` (B,) int64. Outputs ``memory`` (B, S, H) (the encoder outputs), ``projected``
    (B, S, ·) (the attention's key projection; absent with attention "none"), ``summary`` (B, H)
    (only with attention "none": the fixed context), then the decoder's initial ``h`` (L, B, H),
    ``c`` (LSTM only) and ``feed`` (B, A). torch's exporter maps a packed sequence to the
    recurrent operators' ``sequence_lens`` only for a batch sorted by length, so the graph sorts
    the rows and puts them back.
    """

    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor):
        m = self.model
        order = torch.argsort(src_lengths, descending=True)
        back = torch.argsort(order)
        x = m.source_embedding(src.index_select(0, order))
        packed = pack_padded_sequence(x, src_lengths.index_select(0, order), batch_first=True, enforce_sorted=True)
        out, state = m.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        memory = memory.index_select(0, back)
        h, c = state if m.cell == "lstm" else (state, None)
        h = m._merge_directions(h.index_select(1, back))
        outs = [memory, h[-1] if m.attention is None else m.attention.project_keys(memory), h]
        if c is not None:
            outs.append(m._merge_directions(c.index_select(1, back)))
        outs.append(memory.new_zeros(src.shape[0], m.feed_size))
        return tuple(outs)


class Seq2SeqStepGraph(nn.Module):
    """One decoder step of an :class:`EncoderDecoder` as an ONNX graph.

    Inputs ``y_prev`` (B,) int64 (``<bos>`` at the first step), the state ``h`` (L, B, H), ``c``
    (LSTM only), ``feed`` (B, A), then the encoder's ``memory``, ``projected`` or ``summary`` and
    ``src_lengths``. Outputs ``logits`` (B, V), the new ``h_out``, ``c_out`` (LSTM only),
    ``feed_out``, and ``attention`` (B, S) (absent with attention "none").
    """

    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, y_prev: torch.Tensor, *rest: torch.Tensor):
        m = self.model
        lstm = m.cell == "lstm"
        h, c, feed, memory, keyed, src_lengths = rest if lstm else (rest[0], None, *rest[1:])
        mask = torch.arange(memory.shape[1], device=memory.device).unsqueeze(0) < src_lengths.unsqueeze(1)
        none = m.attention is None
        # the summary is read only with attention "none", the projection only with attention
        mem = Memory(memory, mask, None if none else keyed, keyed if none else memory[:, 0])
        logits, state, weights = m.step(y_prev, DecoderState(h, c, feed), mem)
        outs = [logits, state.h] + ([state.c] if lstm else []) + [state.feed]
        return tuple(outs) + (() if weights is None else (weights,))


def seq2seq_interfaces(model: EncoderDecoder, batch: int = 2, steps: int = 5) -> dict[str, tuple]:
    """``{"encoder": (graph, args, input names, output names, dynamic axes), "decoder": (...)}``
    for exporting ``model``, with example inputs made from its sizes."""
    lstm, none = model.cell == "lstm", model.attention is None
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(4, model.source_embedding.num_embeddings, (batch, steps), generator=gen)
    lengths = torch.tensor([steps] + [max(1, steps - 2)] * (batch - 1), dtype=torch.long)
    keyed = "summary" if none else "projected"
    state = ["h", "c", "feed"] if lstm else ["h", "feed"]
    enc_out = ["memory", keyed] + state
    bs, bss = {0: "batch"}, {0: "batch", 1: "src_len"}
    enc_axes = {"src": bss, "src_lengths": bs, "memory": bss, keyed: bs if none else bss, "h": {1: "batch"},
                "c": {1: "batch"}, "feed": bs}
    encoder = Seq2SeqEncoderGraph(model).eval()
    with torch.no_grad():
        enc_values = encoder(src, lengths)
    y = torch.full((batch,), 1, dtype=torch.long)
    dec_in = ["y_prev"] + state + ["memory", keyed, "src_lengths"]
    dec_args = (y, *enc_values[2:], enc_values[0], enc_values[1], lengths)
    dec_out = ["logits"] + [f"{n}_out" for n in state] + ([] if none else ["attention"])
    dec_axes = {"y_prev": bs, "h": {1: "batch"}, "c": {1: "batch"}, "feed": bs, "memory": bss,
                keyed: bs if none else bss, "src_lengths": bs, "logits": bs, "h_out": {1: "batch"},
                "c_out": {1: "batch"}, "feed_out": bs, "attention": bss}

    def keep(axes: dict, names: list[str]) -> dict:
        return {k: v for k, v in axes.items() if k in names}

    return {"encoder": (encoder, (src, lengths), ["src", "src_lengths"], enc_out,
                        keep(enc_axes, ["src", "src_lengths"] + enc_out)),
            "decoder": (Seq2SeqStepGraph(model).eval(), dec_args, dec_in, dec_out, keep(dec_axes, dec_in + dec_out))}


def seq2seq_paths(path: str | Path) -> tuple[Path, Path]:
    """Where ``rnnlab export RUN --onnx PATH`` writes a seq2seq run: ``STEM.encoder.onnx`` and
    ``STEM.decoder.onnx`` beside PATH."""
    path = Path(path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    return path.with_name(f"{stem}.encoder.onnx"), path.with_name(f"{stem}.decoder.onnx")


def export_seq2seq(model: EncoderDecoder, encoder_path: str | Path, decoder_path: str | Path,
                   interfaces: dict[str, tuple] | None = None) -> tuple[Path, Path]:
    """Write the encoder and the decoder step of ``model`` (see the graphs' classes for their
    interfaces); each is checked against rnnlab's eval outputs before it is written.
    ``interfaces``: :func:`seq2seq_interfaces` of ``model`` where the caller has them already."""
    if equations_differ(model.encoder):
        raise ConfigError("seq2seq ONNX export: expected cell options torch.nn has (the encoder's packed sequences "
                          "map to the fused operators only), got options that change the cell's equations")
    was = model.training
    model.eval()
    try:
        out = []
        interfaces = interfaces or seq2seq_interfaces(model)
        for part, path in (("encoder", encoder_path), ("decoder", decoder_path)):
            graph, args, names_in, names_out, axes = interfaces[part]
            out.append(export_onnx(graph, path, example_inputs=args, input_names=names_in, output_names=names_out,
                                   dynamic_axes=axes))
    finally:
        model.train(was)
    return out[0], out[1]


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """ONNX Runtime's dynamic int8 quantisation of an ONNX model (``quantize_dynamic``, per-channel,
    signed int8 weights): the weights of its LSTM, MatMul and Gather (embedding) nodes are stored
    as int8 with one scale per output channel, and their inputs are quantised at run time. ONNX
    Runtime has no quantised GRU or RNN operator, so those stay float (their MatMuls do not)."""
    q = optional_module("onnxruntime.quantization", "onnxruntime", "it installed for --int8 (pip install rnnlab[onnx])",
                        "ImportError")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # ONNX Runtime logs general advice (pre-process the graph first), not about this graph
    try:
        q.quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=q.QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(dst)


def _write_int8(tmp: Path) -> None:
    """Replace the float graph at ``tmp`` by its int8 quantisation."""
    src = tmp.with_name(tmp.name + ".float.onnx")
    tmp.replace(src)
    try:
        quantize_int8(src, tmp)
    finally:
        src.unlink(missing_ok=True)


def _stamp(path: Path, task: Any) -> None:
    """Record in the graph's metadata_props how its inputs are made: ``rnnlab.task`` (the task's
    name) and ``rnnlab.task_metadata`` (its metadata as config.json holds it: a numeric
    classifier's scaler, normalisation, downsampling factor and length, a forecaster's scaler and
    covariates, a vocabulary), since the graph takes the model's inputs after that preprocessing."""
    onnx = optional_module("onnx", "onnx", "it installed (pip install rnnlab[onnx])", "ImportError")
    graph = onnx.load(str(path))
    for key, value in (("rnnlab.task", task.name),
                       ("rnnlab.task_metadata", json.dumps(task.metadata(), default=str))):
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def _checked(path: Path, module: nn.Module, args: tuple, names: list[str], what: str, int8: bool) -> float | None:
    """Run the float graph at ``path`` under ONNX Runtime against ``module`` (refused beyond the
    tolerance, before anything is written), quantise it with ``int8``, and return the written
    graph's difference."""
    want = _eval_outputs(module, *args)
    diff = runtime_difference(path, want, args, names)
    if diff is not None and diff > RUNTIME_TOLERANCE:
        got = "inputs it refused" if diff == float("inf") else f"a largest difference of {diff:.2e}"
        raise ConfigError(f"{what}: expected ONNX Runtime to give the model's outputs on example inputs of shape "
                          f"{tuple(_flat(args)[0].shape)} (within {RUNTIME_TOLERANCE:g}), got {got}; nothing was "
                          "written")
    if int8:
        _write_int8(path)
        diff = runtime_difference(path, want, args, names)
    return diff


def export_run(run_dir: str | Path, path: str | Path, checkpoint: str = "best", force: bool = False,
               int8: bool = False) -> Exported:
    """Export a training run's model (rebuilt by ``rnnlab.train.load_run``), every task's.

    The example input is made from the model's sizes (see :func:`example_for_export`), so only the
    run folder is needed; batch and sequence axes are exported as dynamic. The output path is
    checked first (:func:`rnnlab.outputs.check_output`) and written atomically. Where onnxruntime
    is installed, each graph is run on a second example (:data:`RUNTIME_CHECK`: another batch size,
    and another length where the graph takes any) and must give the model's outputs
    (:func:`runtime_difference`) before it is written. A seq2seq run is two
    files, ``STEM.encoder.onnx`` and ``STEM.decoder.onnx`` (:func:`seq2seq_paths`). ``int8``:
    written through :func:`quantize_int8`, its difference from the float model reported.
    """
    if is_stdout(path):   # before the seq2seq names are made from it: "-" is no stem
        check_output(path, (), force, flag="--onnx")
    task, model, _ = load_run(run_dir, checkpoint)
    batch, steps = RUNTIME_CHECK
    if isinstance(model, EncoderDecoder):
        if not is_stdout(path):
            refuse_folder(path, "--onnx")     # as for one graph, rather than the two written beside the folder
        paths = [check_run_output(p, run_dir, force=force, flag="--onnx") for p in seq2seq_paths(path)]
        tmps = [atomic_path(p) for p in paths]
        diffs = []
        try:
            traced = seq2seq_interfaces(model.eval())
            export_seq2seq(model, *tmps, interfaces=traced)
            checks = seq2seq_interfaces(model, batch, steps)
            shapes = (tuple(checks["encoder"][1][0].shape), tuple(traced["encoder"][1][0].shape))
            for t, part in zip(tmps, ("encoder", "decoder")):
                graph, args, names = checks[part][:3]
                diffs.append(_checked(t, graph, args, names, f"seq2seq ONNX export ({part})", int8))
                _stamp(t, task)
        except BaseException:
            for t in tmps:
                t.unlink(missing_ok=True)
            raise
        for t, p in zip(tmps, paths):
            commit(t, p)
        return Exported(tuple(paths), tuple(diffs), *shapes)
    path = check_run_output(path, run_dir, force=force, flag="--onnx")
    args, in_names, out_names, axes = example_for_export(task, model)
    check_args = example_for_export(task, model, batch, steps)[0]
    if in_names == ["input", "lengths"]:
        model = SortedClassifier(model).eval()
    elif in_names == ["frames"]:
        model = FullClips(model).eval()
    elif in_names == ["wave", "lengths"]:
        graph = SpeechGraph(model).eval()
        check_speech_graph(model, graph, args)
        model = graph
    tmp = atomic_path(path)
    try:
        export_onnx(model, tmp, example_inputs=args, input_names=in_names, output_names=out_names, dynamic_axes=axes)
        diff = _checked(tmp, model, check_args, in_names, f"ONNX export of the {task.name} run", int8)
        _stamp(tmp, task)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit(tmp, path)
    return Exported((path,), (diff,), tuple(_flat(check_args)[0].shape), tuple(_flat(args)[0].shape))
