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
1e-7), so nothing is silently exported as a different network.

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
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.errors import ConfigError
from rnnlab.export.variant_graph import equations_differ, variant_twin
from rnnlab.nn.cells import CellBase
from rnnlab.nn.layers import RecurrentBase
from rnnlab.outputs import atomic_path, check_output, commit
from rnnlab.tasks.classify import SequenceClassifier, pool_states
from rnnlab.tasks.forecast import Forecaster
from rnnlab.tasks.lm import LanguageModel
from rnnlab.tasks.video import FullClips, frames_example
from rnnlab.train.rundir import load_run

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
    model = copy.deepcopy(model)
    for name, child in list(model.named_children()):
        setattr(model, name, torchify(child))
    return model.eval()


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


def _max_diff(module: nn.Module, twin: nn.Module, args: tuple) -> float:
    was_training = module.training
    try:
        with torch.no_grad():
            want = _flat(module.eval()(*args))
            got = _flat(twin(*args))
    finally:
        module.train(was_training)
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
    try:
        import onnxruntime as ort   # optional: the [onnx] extra
    except ImportError as exc:
        raise ConfigError("onnxruntime: expected it installed (pip install rnnlab[onnx]), got ImportError") from exc
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session, *inputs: Any) -> list:
    """Run a session on tensors/arrays given in the graph's input order; returns NumPy arrays."""
    feeds = {}
    for spec, v in zip(session.get_inputs(), _flat(inputs) if not isinstance(inputs[0], (list,)) else inputs):
        feeds[spec.name] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
    return session.run(None, feeds)


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
        return frames_example(task)

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
        outs = ["logits", "h_n", "c_n"] if model.rnn.mode == "lstm" else ["logits", "h_n"]
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
    x = first["x"] if isinstance(first, dict) else getattr(first, "x", None)
    if x is None:
        x = first[0] if isinstance(first, (tuple, list)) else first
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"task {getattr(task, 'name', '?')}: expected a tensor input in its batches, got {type(x).__name__}")
    return (x,), ["input"], None, {"input": {i: f"dim{i}" for i in range(max(1, x.dim() - 1))}}


def export_run(run_dir: str | Path, path: str | Path, checkpoint: str = "best", force: bool = False) -> Path:
    """Export a training run's model (rebuilt by ``rnnlab.train.load_run``), every task's.

    The example input is made from the model's sizes (see :func:`example_for_export`), so only the
    run folder is needed; batch and sequence axes are exported as dynamic. The output path is
    checked first (:func:`rnnlab.outputs.check_output`) and written atomically.
    """
    path = check_output(path, (), force, flag="--onnx")
    task, model, _ = load_run(run_dir, checkpoint)
    args, in_names, out_names, axes = example_for_export(task, model)
    if in_names == ["input", "lengths"]:
        model = SortedClassifier(model).eval()
    elif in_names == ["frames"]:
        model = FullClips(model).eval()
    tmp = atomic_path(path)
    try:
        export_onnx(model, tmp, example_inputs=args, input_names=in_names, output_names=out_names, dynamic_axes=axes)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit(tmp, path)
    return path
