"""``rnnlab info``: what this installation can do here (versions, CPU, engines and the path each
cell takes, optional extras, devices)."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform

from typing import List, Optional

import typer

from rnnlab.cli.train import cell_option_flag, cell_options_from_flags
from rnnlab.errors import ConfigError, expected


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def collect(build: bool = True) -> dict:
    """Versions and capabilities; ``build=False`` skips compiling the C++ kernels if not yet built."""
    import torch   # lazy: keeps --help fast

    from rnnlab.engine import engine_choice_source, engine_names, fast, get_engine_choice  # lazy: keeps --help fast
    from rnnlab.nn import _stream_kernels  # lazy: keeps --help fast

    choice = get_engine_choice()
    if build and choice != "reference":
        fast_ok, fast_why = fast.available(), fast.unavailable_reason()
    else:
        fast_ok, fast_why = None, "not checked (--no-build)" if not build else "not loaded (engine: reference)"
    return {
        "rnnlab": _version("rnnlab"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        # the vector ISA torch's own kernels dispatch to, and the CPU's as rnnlab's kernels see it
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_isa": fast.cpu_isa() if fast_ok else torch.backends.cpu.get_cpu_capability().lower(),
        "machine": platform.machine(),
        # rnnlab.set_engine / RNNLAB_ENGINE: what the layers' default engine="auto" runs
        "engine": f"{choice} ({engine_choice_source()})",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "engines": engine_names(),
        "fast_kernels": fast_ok,
        "fast_kernels_unavailable_because": fast_why,
        "fast_kernels_origin": fast._KERNELS.origin if fast_ok else None,   # prebuilt (installed) or built here
        # large float32 matmuls of the kernels on oneDNN (engine/gemm.h) or all on torch's BLAS, and why
        "fast_kernels_gemm": None if not fast_ok else ("onednn+blas" if fast.onednn_in_use() else "blas"),
        "fast_kernels_gemm_why": fast.gemm_status()[1] if fast_ok else None,
        # the LSTM's tiled loop (engine/lstm_tiled.h) at batch 32, 8 and 3, or None where it does not run;
        # hidden sizes that are multiples of 8 take the row-major training loop instead (the plan_lstm lines)
        "fast_kernels_lstm_tiled": None if not fast_ok or not fast.tiled_isa(32) else
        f"{fast.tiled_isa(32)} (batch 8: {fast.tiled_isa(8) or 'row-major'}; "
        f"batch 3: {fast.tiled_isa(3) or 'row-major'})",
        # the path each cell's layer takes at a typical training size, float32, and why
        **{f"plan_{cell}_B{B}_H{H}": str(fast.plan(mode, B, H, steps=35)) if fast_ok or choice == "reference" else None
           for cell, mode in (("rnn", "rnn_tanh"), ("lstm", "lstm"), ("gru", "gru")) for B, H in ((32, 256), (1, 256))},
        "numba_streaming": _stream_kernels.HAVE_NUMBA,
        "onnxruntime": _version("onnxruntime"),
        "tensorboard": _version("tensorboard"),
        "lightning": _version("lightning"),
    }


def _print_plan(cell: str, hidden: int, batch: int, steps: int, dtype: str, engine: str, padded: bool,
                options: dict, as_json: bool, inference: bool = False, input_size: int = 32) -> None:
    import torch  # lazy: keeps --help fast

    from rnnlab.nn import GRU, LSTM, RNN  # lazy: keeps --help fast

    modes = {"rnn": "rnn_tanh", "rnn_tanh": "rnn_tanh", "rnn_relu": "rnn_relu", "lstm": "lstm", "gru": "gru"}
    if cell not in modes:
        raise ConfigError(f"--plan: expected one of rnn, rnn_relu, lstm, gru, got {cell!r}")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"--dtype: expected float32 or float64, got {dtype!r}")
    mode = modes[cell]
    make = {"lstm": LSTM, "gru": GRU}.get(mode) or (lambda *a, **k: RNN(*a, nonlinearity=mode[4:], **k))
    if input_size < 1:
        raise ConfigError(f"--input-size: expected an integer >= 1, got {input_size}")
    layer = make(input_size, hidden, engine=engine, dtype=getattr(torch, dtype), **options)   # checks the options
    p = layer.plan(batch, steps, masked=padded, inference=inference)
    print(json.dumps(p.to_dict()) if as_json else str(p))


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    # info's flags that --plan does not need: every other one describes the layer --plan shows
    _NOT_PLAN = ("as_json", "no_build", "plan")

    @app.command("info")
    def info(
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of lines."),
        no_build: bool = typer.Option(False, "--no-build", help="Do not compile the fast kernels to check them."),
        plan: str = typer.Option(None, "--plan", metavar="CELL",
                                 help="Only the path a layer of CELL (rnn | rnn_relu | lstm | gru) takes: engine, "
                                      "loop, GEMM library and why."),
        hidden_size: int = typer.Option(256, "--hidden-size", "--hidden", help="With --plan: hidden units."),
        input_size: int = typer.Option(32, "--input-size",
                                       help="With --plan: input features (with --inference, whether W_ih x_t is "
                                            "formed in the loop's tiles or by a GEMM first)."),
        batch_size: int = typer.Option(32, "--batch-size", help="With --plan: sequences per batch."),
        steps: int = typer.Option(35, "--steps", help="With --plan: time steps."),
        dtype: str = typer.Option("float32", "--dtype", help="With --plan: float32 | float64."),
        engine: str = typer.Option("auto", "--engine", help="With --plan: auto | fast | reference | checkpoint."),
        padded: bool = typer.Option(False, "--padded", help="With --plan: a padded batch (unequal lengths)."),
        inference: bool = typer.Option(False, "--inference",
                                       help="With --plan: the path without a gradient to come (torch.no_grad, "
                                            "torch.inference_mode, evaluation): nothing kept for backward."),
        cell_option: Optional[List[str]] = cell_option_flag(),
        ctx: typer.Context = None,
    ) -> None:
        """Versions, CPU, engines and the path each cell takes here, optional extras and devices."""
        if plan is None:       # the layer's flags describe the layer --plan shows: alone they were ignored
            given = [p.opts[0] for p in ctx.command.params if p.name not in _NOT_PLAN
                     and getattr(ctx.get_parameter_source(p.name), "name", None) == "COMMANDLINE"]
            if given:
                raise ConfigError(expected(given[0], "it with --plan CELL (it describes the layer whose path --plan "
                                           "shows)", "it without --plan"))
        if plan is not None:
            _print_plan(plan, hidden_size, batch_size, steps, dtype, engine, padded,
                        cell_options_from_flags(cell_option), as_json, inference, input_size)
            return
        rec = collect(build=not no_build)
        if as_json:
            print(json.dumps(rec, indent=1))
            return
        for key, value in rec.items():
            if key == "fast_kernels_unavailable_because" and value is None:
                continue
            print(f"{key:34s} {value if value is not None else '-'}")
