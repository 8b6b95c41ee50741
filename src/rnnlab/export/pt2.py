"""A training run's model as an AOTInductor package (``.pt2``): ``rnnlab export RUN --pt2 model.pt2``.

``torch.export`` traces the model, where each rnnlab layer-direction is one call of the fast
engine's operator ``rnnlab::seq_forward`` (:mod:`rnnlab.engine.ops`), with dynamic batch and
sequence axes; AOTInductor compiles the program into a package. The package runs in a process
without rnnlab's Python code once the kernels' library defines the operator::

    torch.ops.load_library(KERNELS)          # the file rnnlab.engine.fast.kernel_library() names
    run = torch._inductor.aoti_load_package("model.pt2")
    logits, state = run(tokens)              # (T, B) int64 for a language model; state: its (h, c)

Models with variable-length inputs (the classifiers' packed sequences, speech models' waveforms
and lengths) are not covered: their lengths decide the graph's control flow, which torch.export
cannot trace; nor is a seq2seq run (an encoder and a decoder step). ``--onnx`` exports them all.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch._inductor

from rnnlab.engine import fast
from rnnlab.errors import ConfigError
from rnnlab.export.onnx import example_for_export
from rnnlab.nn.layers import RecurrentBase
from rnnlab.nn.seq2seq import EncoderDecoder
from rnnlab.outputs import atomic_path, check_output, commit, is_stdout
from rnnlab.train.rundir import check_run_output, load_run


def _aoti_package():
    """torch's AOTInductor packaging entry point (``torch._inductor.aoti_compile_and_package``,
    the one its documentation names), or ConfigError where this torch lacks it."""
    fn = getattr(torch._inductor, "aoti_compile_and_package", None)
    if fn is None:
        raise ConfigError(f"--pt2: expected a torch with torch._inductor.aoti_compile_and_package, got torch {torch.__version__}")
    return fn


def fixed_length_layers(model: torch.nn.Module) -> list[str]:
    """The rnnlab layers of ``model`` that torch.export can only trace for one sequence length:
    those whose equations differ from torch.nn's (cell options beyond initialisation and weight
    drop) or with projections run the plain-ops equations, unrolled over the example's steps
    (docs/engines.md), rather than one operator call."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, RecurrentBase) and (m.options.needs_variant_scan(m.mode) or m.proj_size):
            what = list(m.options.equation_options()) + (["proj_size"] if m.proj_size else [])
            found.append(f"{name or 'the model'} ({', '.join(what)})")
    return found


def export_program(model: torch.nn.Module, args: tuple, dynamic_axes: dict, names: list[str]):
    """``torch.export.export`` of ``model`` on ``args`` with the named axes dynamic: a program
    that would hold any of them fixed (specialised to the example's size) is refused by torch."""
    shapes = tuple({d: torch.export.Dim.DYNAMIC for d in dynamic_axes.get(n, {})} or None for n in names)
    return torch.export.export(model, args, dynamic_shapes=shapes)


@dataclass
class Prepared:
    """A run checked for ``--pt2`` (:func:`prepare_pt2`): its model and example, ready to compile."""

    path: Path
    model: torch.nn.Module
    args: tuple
    names: list[str]
    axes: dict


def prepare_pt2(run_dir: str | Path, path: str | Path, checkpoint: str = "best", force: bool = False) -> Prepared:
    """Every refusal of :func:`export_run_pt2`, before anything is written: the output path, the
    kernels, and models a package cannot hold (``rnnlab export`` runs it before writing --onnx)."""
    if is_stdout(path):
        check_output(path, (), force, flag="--pt2")          # the one refusal of "-" every output gives
    if Path(path).suffix != ".pt2":
        raise ConfigError(f"--pt2: expected a file name ending in .pt2, got {str(path)!r}")
    path = check_run_output(path, run_dir, force=force, flag="--pt2")
    if not fast.available():
        raise ConfigError(f"--pt2: expected the fast kernels (their operators go into the package), got none here "
                          f"({fast.unavailable_reason()})")
    _aoti_package()
    task, model, _ = load_run(run_dir, checkpoint)
    name = getattr(task, "name", "?")
    if isinstance(model, EncoderDecoder):
        raise ConfigError(f"--pt2: expected a model that is one program, got task {name!r} (an encoder and a "
                          "decoder step: two graphs, the encoder reading packed sources); use --onnx (writes "
                          "STEM.encoder.onnx and STEM.decoder.onnx)")
    args, in_names, _, axes = example_for_export(task, model.eval())
    if "lengths" in in_names or "frames" in in_names:
        raise ConfigError(f"--pt2: expected a model without variable-length or frame inputs, got task "
                          f"{name!r} (inputs {', '.join(in_names)}); use --onnx")
    fixed = fixed_length_layers(model)
    if fixed:   # the package would serve the example's length only (and read past shorter inputs)
        raise ConfigError(f"--pt2: expected layers that export for any sequence length, got {'; '.join(fixed)}, "
                          "whose equations unroll over the example's steps under torch.export; use --onnx "
                          "(its graph loops over time)")
    return Prepared(path, model, args, in_names, axes)


def input_minimums(program, names: list[str], axes: dict) -> dict[str, int]:
    """``{"NAME axis D": least size}`` for each dynamic input axis that ``program`` (torch.export's)
    needs above 2 (torch's bound for any dynamic axis, which the packages' code does not rely on):
    a forecaster's sequence axis, for instance, holds at least its context. An AOTInductor package
    checks input sizes only where ``AOTI_RUNTIME_CHECK_INPUTS=1`` is set in the process that loads
    it; elsewhere a shorter input is read past its end."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    out = {}
    for name, spec in zip(names, program.graph_signature.user_inputs):
        shape = getattr(placeholders[spec].meta.get("val"), "shape", ())
        for d in axes.get(name, {}):
            size = shape[d] if d < len(shape) else None
            bound = program.range_constraints.get(size.node.expr) if isinstance(size, torch.SymInt) else None
            if bound is not None and int(bound.lower) > 2:
                out[f"{name} axis {d}"] = int(bound.lower)
    return out


@dataclass
class Packaged:
    """What :func:`export_run_pt2` wrote: the package, and the least sizes its inputs need
    (:func:`input_minimums`)."""

    path: Path
    minimums: dict[str, int]


def export_run_pt2(run_dir: str | Path, path: str | Path, checkpoint: str = "best", force: bool = False,
                   prepared: Prepared | None = None) -> Packaged:
    """Compile a training run's model into an AOTInductor package at ``path`` (``.pt2``);
    ``prepared``: the run as :func:`prepare_pt2` checked it already."""
    p = prepared if prepared is not None else prepare_pt2(run_dir, path, checkpoint, force)
    package = _aoti_package()
    tmp = atomic_path(p.path)
    try:
        with warnings.catch_warnings():   # torch's own pytree deprecation, raised inside export: not the user's
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
            program = export_program(p.model, p.args, p.axes, p.names)
            package(program, package_path=str(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit(tmp, p.path)
    return Packaged(p.path, input_minimums(program, p.names, p.axes))
