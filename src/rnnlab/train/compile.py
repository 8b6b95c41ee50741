"""``TrainConfig(compile=True)`` / ``--compile``: the training step's model calls through ``torch.compile``.

The model is compiled in place, method by method: each method the task's ``training_step``
calls on the model (``forward`` unless the task lists others in ``compile_methods``) is
replaced, on that instance only, by ``torch.compile`` of it. Parameters, buffers and
``state_dict`` keys stay the module's own, so a checkpoint of a compiled run is the checkpoint
of an eager run (``torch.compile(model)`` would wrap it and prefix every key with
``_orig_mod.``). :meth:`CompiledModel.restore` removes the instance attributes when training
ends, so the model a run returns is an eager module, and calls ``torch.compiler.reset()``:
dynamo keeps its compiled code per function (the model class's ``forward``), shared by every
instance, and refuses a ninth compilation of one function (``recompile_limit``); each fit would
add its own (the backend object differs), so a process training several compiled runs (a
notebook, a sweep, the tests) would otherwise fail at the ninth. The reset drops every compiled
function of the process: code compiled elsewhere recompiles on its next call.

Evaluation runs eagerly (:meth:`CompiledModel.eager`, ``torch.compiler.set_stance("force_eager")``):
``eval()`` and ``no_grad`` are guards of the compiled graph, so compiling it would cost a
second compilation per method for a pass that runs a few times per run.

Shapes are compiled dynamic from the first step (``dynamic=True``): a language model's last
batch of an epoch is shorter, a classifier's batches have different lengths, and each new
length would otherwise cost a recompilation. Duck sizing (two dimensions of equal size at the
first step, such as a batch of 4 sequences of 4 steps, are assumed equal for ever) is switched
off while a compiled method runs, as the recompilation log itself advises. A new graph is
still compiled for a new input structure (a carried state after a first step without one), a
size of 0 or 1, or a Python loop over the sequence (unrolled, so one graph per length).

The graphs are counted by a backend wrapper (:class:`GraphCounter`); the run reports the first
step's wall time (tracing and code generation included), the graphs, those compiled after the
first step (recompilations), the step of the newest one and the time of the steps that compiled.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import torch
from torch import nn

from rnnlab.errors import ConfigError


@functools.cache
def _private() -> SimpleNamespace:
    """Private torch symbols, looked up once, when a run first compiles (not when rnnlab is imported:
    torch._dynamo takes over a second to import). Without one, compiling still works and only what
    it serves is dropped: graph counting (``lookup_backend`` wraps the named backend;
    ``current_compile_id`` tells a repeated hand-over from a new graph) and the duck-sizing switch
    (``fx_config``, with its ``use_duck_shape``)."""
    try:
        import torch._dynamo as dynamo   # lazy: the compiler loads only when a run compiles
    except ImportError:  # pragma: no cover - every torch rnnlab supports has it
        return SimpleNamespace(lookup_backend=None, current_compile_id=None, fx_config=None)
    # dynamo imports these two itself; each is looked up on its own, so one missing drops only its use
    guards, fx_config = sys.modules.get("torch._guards"), sys.modules.get("torch.fx.experimental._config")
    return SimpleNamespace(
        lookup_backend=getattr(dynamo, "lookup_backend", None),
        current_compile_id=getattr(getattr(guards, "CompileContext", None), "current_compile_id", None),
        fx_config=fx_config if hasattr(fx_config, "use_duck_shape") else None,
    )


# What a task without ``compile_methods`` gets: its model's forward, graph breaks allowed.
DEFAULT_METHODS: dict[str, bool] = {"forward": False}


def check_backend(name: str) -> None:
    """ConfigError (one line) unless ``name`` is a torch.compile backend of this torch."""
    if name not in torch.compiler.list_backends(exclude_tags=()):
        raise ConfigError(f"--compile-backend (train config compile_backend): expected a torch.compile backend such as inductor, "
                          f"aot_eager or eager (torch.compiler.list_backends(exclude_tags=()) lists them), got {name!r}")


class GraphCounter:
    """A torch.compile backend that counts the compilations dynamo hands it, then passes each graph on
    to backend ``name``. Dynamo may hand the same compilation over twice (it restarts its analysis
    when a shape turns out to be specialised), so compilations are told apart by their compile id."""

    def __init__(self, name: str) -> None:
        check_backend(name)
        self.name = name
        lookup = _private().lookup_backend
        self.counts = lookup is not None
        self._inner: Callable[..., Any] | None = lookup(name) if self.counts else None
        self._ids: set[str] = set()
        self._anonymous = 0

    @property
    def backend(self) -> Callable[..., Any] | str:
        """What torch.compile is given: this counter, or the backend's name where it cannot count."""
        return self if self.counts else self.name

    @property
    def graphs(self) -> int | None:
        """Graphs compiled so far; None where this torch gives no way to count them."""
        return len(self._ids) + self._anonymous if self.counts else None

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        current = _private().current_compile_id
        compile_id = current() if current is not None else None
        if compile_id is None:
            self._anonymous += 1
        else:
            self._ids.add(str(compile_id))
        return self._inner(gm, example_inputs)


def compile_methods(task: Any) -> dict[str, bool]:
    """The task's ``compile_methods`` (method name -> fullgraph), else ``DEFAULT_METHODS``."""
    methods = getattr(task, "compile_methods", None)
    if methods is None:
        return dict(DEFAULT_METHODS)
    if not (isinstance(methods, dict) and methods
            and all(isinstance(k, str) and isinstance(v, bool) for k, v in methods.items())):
        raise ConfigError(f"task {getattr(task, 'name', '?')} compile_methods: expected a non-empty dict of "
                          f"method name -> fullgraph (bool), got {methods!r}")
    return dict(methods)


def _without_duck_sizing(fn: Callable[..., Any]) -> Callable[..., Any]:
    fx_config = _private().fx_config
    if fx_config is None:
        return fn

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with fx_config.patch(use_duck_shape=False):   # read when dynamo traces, i.e. inside the call
            return fn(*args, **kwargs)

    return call


class CompiledModel:
    """Compile ``methods`` of ``model`` in place; count graphs; time the first step."""

    def __init__(self, model: nn.Module, methods: dict[str, bool], backend: str) -> None:
        self.model, self.methods = model, dict(methods)
        self.counter = GraphCounter(backend)
        self.first_step_s: float | None = None
        self.graphs_first_step = 0
        self.last_graph_step: int | None = None   # the run's step that compiled the newest graph
        self.compiling_steps_s = 0.0                # wall time of the steps that compiled a graph
        self._seen = 0
        for name, fullgraph in self.methods.items():
            fn = getattr(model, name, None)
            if not callable(fn) or name in vars(model):
                raise ConfigError(f"compile: expected {type(model).__name__}.{name} to be a method of the model, "
                                  f"got {type(fn).__name__}")
            # An instance attribute shadows the class's method for this model only; nn.Module.__call__
            # reads self.forward, so hooks and DDP/Fabric wrappers call the compiled version.
            compiled = torch.compile(fn, backend=self.counter.backend, fullgraph=fullgraph, dynamic=True)
            setattr(model, name, _without_duck_sizing(compiled))

    def restore(self) -> None:
        """Back to the class's eager methods (the compiled code is dropped with them)."""
        for name in self.methods:
            vars(self.model).pop(name, None)
        torch.compiler.reset()

    @staticmethod
    @contextlib.contextmanager
    def eager() -> Iterator[None]:
        """Run compiled code eagerly inside (evaluation, reports)."""
        with torch.compiler.set_stance("force_eager"):
            yield

    def step_done(self, step: int, seconds: float) -> None:
        """Called after each training step of this invocation; the first one compiled the graphs."""
        if self.first_step_s is None:
            self.first_step_s = seconds
            self.graphs_first_step = self.counter.graphs or 0
        if self.counter.graphs is not None and self.counter.graphs > self._seen:
            self._seen, self.last_graph_step = self.counter.graphs, step
            self.compiling_steps_s += seconds

    @property
    def recompiles(self) -> int | None:
        """Graphs compiled after the first step (a new shape, dtype, input structure or flag)."""
        if self.counter.graphs is None:
            return None
        return self.counter.graphs - self.graphs_first_step if self.first_step_s is not None else 0

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.counter.name,
            "methods": {k: ("fullgraph" if v else "graph breaks allowed") for k, v in self.methods.items()},
            "first_step_s": self.first_step_s,
            "graphs_first_step": self.graphs_first_step,
            "graphs": self.counter.graphs,
            "recompiles": self.recompiles,
            "last_graph_step": self.last_graph_step,
            "compiling_steps_s": self.compiling_steps_s,
        }

    def describe(self) -> str:
        """One line for the end-of-run summary."""
        what = ", ".join(f"{k}" + (" (fullgraph)" if v else "") for k, v in self.methods.items())
        if self.first_step_s is None:
            return f"compiled {what} with {self.counter.name}: no step taken"
        n, r = self.counter.graphs, self.recompiles
        if n is None:
            return (f"compiled {what} with {self.counter.name}: first step {self.first_step_s:.1f} s; "
                    "graphs not counted (this torch lacks torch._dynamo.lookup_backend)")
        return (f"compiled {what} with {self.counter.name}: first step {self.first_step_s:.1f} s; "
                f"{n} graph{'s' * (n != 1)} ({r} recompilation{'s' * (r != 1)}), the last at step "
                f"{self.last_graph_step}; the steps that compiled took {self.compiling_steps_s:.1f} s")
