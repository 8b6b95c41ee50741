"""Flags every ``rnnlab train TASK`` command shares, the ``rnnlab train toy`` smoke command and
``rnnlab evaluate RUN``.

A task's train command stays thin: it declares only its own flags and a ``run: TrainArgs``
parameter, and ``@with_train_options`` adds the common ones (``--out``, ``--resume``,
``--max-steps``, ``--lr``, ...)::

    @train_app.command("lm")
    @with_train_options
    def train_lm(corpus: str = typer.Option(...), ..., run: TrainArgs = None) -> None:
        run.start(lambda: LMTask(LMConfig(corpus=corpus, ...)))

``run.start`` builds the task only for a new run; with ``--resume RUN`` the task is rebuilt
from the run folder, and a flag given on the command line that contradicts the run (another
task, model shape, data) is refused with one line listing them; the flags that may change
(budget, checkpointing, output) are applied and said so. ``--overwrite`` starts an existing
run folder again from scratch.

``rnnlab evaluate RUN`` reads the run's task name and dispatches to the evaluator that task
registered with ``register_evaluator`` (one that may take extra flags), else to the default
``rnnlab.train.evaluate_run``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import math
import numbers
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer

from rnnlab.errors import ConfigError, DataError, DataWarning, Interrupted, RunFolderTakenError, expected
from rnnlab.outputs import is_stdout

# Without --out, a run takes the first free runs/TASK[-N]; runs started together (a sweep launched
# in parallel) each move on to the next name when another took theirs first, this many times.
DEFAULT_OUT_TRIES = 8

# name -> (type, default, flag, help). None defaults mean "not given": a resumed run keeps its own value.
_COMMON: dict[str, tuple[Any, Any, str, str]] = {
    "out": (Optional[Path], None, "--out", "Run folder to create (default: the first free runs/TASK[-N], also when several runs start at once)."),
    "resume_run": (Optional[Path], None, "--resume", "Continue this run folder from its latest checkpoint."),
    "overwrite": (bool, False, "--overwrite", "Start the --out run folder again from scratch if it holds a run (deletes it)."),
    "max_steps": (Optional[int], None, "--max-steps", "Stop after this many optimizer steps (0 = no limit)."),
    "max_epochs": (Optional[int], None, "--max-epochs", "Stop after this many epochs (0 = no limit)."),
    "max_time": (Optional[float], None, "--max-time", "Stop after this many seconds of training in this invocation (its training loop: setup before the first step, such as building the model and loading the training library, is not counted)."),
    "seed": (Optional[int], None, "--seed", "Random seed."),
    "optimizer": (Optional[str], None, "--optimizer", "sgd | adam | adamw | ntasgd (SGD, then averaged: AWD-LSTM's NT-ASGD)."),
    "lr": (Optional[float], None, "--lr", "Learning rate."),
    "weight_decay": (Optional[float], None, "--weight-decay", "Weight decay."),
    "momentum": (Optional[float], None, "--momentum", "SGD momentum."),
    "nonmono": (Optional[int], None, "--nonmono", "ntasgd: start averaging when the valid loss is worse than the best before the last N evals."),
    "clip": (Optional[float], None, "--clip", "Clip the global gradient norm to this (0 = off)."),
    "schedule": (Optional[str], None, "--schedule", "none | step | plateau | cosine."),
    "eval_every": (Optional[int], None, "--eval-every", "Evaluate every N steps (and at each epoch end, and at the last step when --max-steps or --max-time ends the run between evaluations)."),
    "checkpoint_every": (Optional[int], None, "--checkpoint-every", "Checkpoint every N steps."),
    "keep_last": (Optional[int], None, "--keep-last", "Keep the newest K checkpoints (and the best)."),
    "patience": (Optional[int], None, "--patience", "Early stopping after N evals without improvement."),
    "select": (Optional[str], None, "--select",
               "The checkpoint a run's 'best' is (evaluate, predict, export): best (lowest validation loss; the "
               "default) | last (the newest, with no early stopping; the default of numeric classify under k-fold)."),
    "nonfinite": (Optional[str], None, "--nonfinite", "On NaN/inf: stop | skip."),
    "accelerator": (Optional[str], None, "--accelerator", "cpu | cuda | auto."),
    "devices": (Optional[int], None, "--devices", "Processes per node (DDP when > 1)."),
    "num_nodes": (Optional[int], None, "--num-nodes", "Number of nodes (DDP)."),
    "precision": (Optional[str], None, "--precision", "Lightning precision, e.g. 32-true, bf16-mixed."),
    "threads": (Optional[int], None, "--threads", "torch.set_num_threads (fix it for bitwise resume)."),
    "engine": (Optional[str], None, "--engine",
               "auto | fast | reference: the recurrent layers' engine (rnnlab.set_engine; default: "
               "$RNNLAB_ENGINE, else auto). Same numbers to rounding, so not saved with the run."),
    "compile": (Optional[bool], None, "--compile/--no-compile",
                "torch.compile the model for the training steps (evaluation stays eager); the summary gives the "
                "first step's time (the compilation) and the recompilations. May change on --resume."),
    "compile_backend": (Optional[str], None, "--compile-backend",
                        "torch.compile backend for --compile: inductor (default; generates code) | aot_eager "
                        "(traces, runs torch ops: a quick check) | eager."),
    "quiet": (bool, False, "--quiet", "No progress bar or summary."),
    "no_report": (bool, False, "--no-report", "Do not write plots/ and report.html."),
}


@dataclass
class TrainArgs:
    """The common flags, parsed: where to train and the TrainConfig fields the user gave."""

    out: Path | None = None
    resume_run: Path | None = None
    given: dict[str, Any] = field(default_factory=dict)   # TrainConfig fields set on the command line
    overwrite: bool = False
    explicit: dict[str, tuple[str, Any]] = field(default_factory=dict)  # task params given: name -> (flag, value)
    # on/off flags given: name -> how a run without that flag was trained ("without --no-header",
    # "with --bidirectional"), for the resume refusal (the flag's value is the config's inverse for --no-*)
    switched: dict[str, str] = field(default_factory=dict)

    def config(self, **task_defaults: Any):
        """A TrainConfig: TrainConfig's defaults, then the task's defaults, then the flags."""
        from rnnlab.train import TrainConfig  # lazy: keeps --help fast

        return TrainConfig.from_dict({**TrainConfig().to_dict(), **task_defaults, **self.given})

    def start(self, build_task: Callable[[], Any], task_name: str | None = None,
              task_config: Callable[[], dict[str, Any]] | None = None, keys: dict[str, str] | None = None,
              path_keys: tuple[str, ...] = (), **task_defaults: Any):
        """Train a new run (building the task) or continue ``--resume RUN`` (task from the folder).

        For ``--resume``, ``task_config()`` gives the task config the flags describe (without
        reading any data) and ``keys`` maps a flag's parameter name to its config key where they
        differ; the flags given on the command line are checked against the run's config.
        ``path_keys`` name the config keys that are data paths (compared by content, not name).
        """
        from rnnlab.train import fit, new_run_dir, resume  # lazy: keeps --help fast

        if is_stdout(self.out):   # '-' is standard output for the file outputs
            raise ConfigError("--out -: expected a run folder path (a run folder cannot go to standard output), "
                              "got -")
        if self.resume_run is not None:
            if self.overwrite:
                raise ConfigError(f"--overwrite: expected it without --resume (it starts a run again from scratch), "
                                  f"got both; drop one")
            if self.out is not None and os.path.realpath(self.out) != os.path.realpath(self.resume_run):
                raise ConfigError(f"--out: expected nothing or the --resume folder {self.resume_run}, got {self.out}")
            data = self.check_resume(task_name, task_config, keys or {}, path_keys)
            # --quiet and --no-report are this command's, as its summary is: not the run's first command's
            talk = {"quiet": False, "report": True, **self.given}
            return _not_interrupted(resume(self.resume_run, data_paths=data, **talk))
        task, config = build_task(), self.config(**task_defaults)
        if self.out is not None:
            return _not_interrupted(fit(task, config, self.out, overwrite=self.overwrite))
        base, taken = Path("runs") / (task_name or task.name), []
        while True:
            taken.append(new_run_dir(base, skip=taken))
            try:
                return _not_interrupted(fit(task, config, taken[-1]))
            except RunFolderTakenError:   # another process started a run there meanwhile: take the next name
                if len(taken) == DEFAULT_OUT_TRIES:
                    raise

    def check_resume(self, task_name: str | None, task_config: Callable[[], dict[str, Any]] | None,
                     keys: dict[str, str], path_keys: tuple[str, ...]) -> dict[str, str]:
        """One ConfigError listing every flag that contradicts the run; returns the data paths given
        (a moved data file is accepted when its content is the run's, checked by checksum)."""

        from rnnlab.train.config import RESUME_MUTABLE  # lazy: keeps --help fast
        from rnnlab.train.rundir import read_run_config, resolve_data_paths  # lazy: keeps --help fast

        run = self.resume_run
        saved = read_run_config(run)
        command = f"rnnlab train {saved['task']} --resume {run}"
        if task_name is not None and saved["task"] != task_name:
            raise ConfigError(f"--resume {run}: expected a run of task {task_name!r}, got a {saved['task']!r} run; "
                              f"continue it with {command}")
        bad: list[str] = []
        data: dict[str, str] = {}
        if self.explicit and task_config is not None:
            mine = task_config()
            theirs = resolve_data_paths(run, saved["task_config"], saved.get("data_files"))
            for name, (flag, _) in self.explicit.items():
                key = keys.get(name, name)
                want, got = _lookup(theirs, key), _lookup(mine, key)
                if want is _MISSING or got is _MISSING:
                    continue
                if key in path_keys and isinstance(got, str) and got:
                    if key in (saved.get("data_files") or {}):
                        data[key] = got  # identity by content: checked against the recorded checksum
                        continue
                    got, want = os.path.abspath(got), os.path.abspath(want) if isinstance(want, str) and want else want
                if _normal(got) != _normal(want):
                    bad.append(f"{flag} (the run was trained {self.switched[name]})" if name in self.switched
                               else f"{flag} {_show(got)} (the run has {_show(want)})")
        old = saved["train_config"]
        for name, value in self.given.items():
            if name in RESUME_MUTABLE or name not in old or _normal(value) == _normal(old[name]):
                continue
            flag = _COMMON[name][2] if name in _COMMON else f"--{name.replace('_', '-')}"
            bad.append(f"{flag} {_show(value)} (the run has {_show(old[name])})")
        if bad:
            may = ", ".join(_COMMON[k][2] if k in _COMMON else k for k in sorted(RESUME_MUTABLE) if k != "report")
            raise ConfigError(f"--resume {run}: expected only flags that keep the run as it was trained, got "
                              f"{'; '.join(bad)}; drop them (only {may}, --no-report may change) or train a new run")
        return data


_MISSING = object()


def _lookup(config: dict[str, Any], key: str) -> Any:
    """``config[key]``; a dotted key reaches into nested dicts ("features.kind")."""
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _normal(v: Any) -> Any:
    return json.loads(json.dumps(v))


def _typed(param: Any, name: str, value: Any) -> tuple[tuple[str, Any], str | None]:
    """``((flag, value), other)`` for a task flag given: the flag as typed (an on/off pair's second
    name when it was that one) and, for an on/off flag, how a run trained the other way was given."""
    if param is None or not getattr(param, "opts", None):
        return (f"--{name}", value), None
    if not (getattr(param, "is_flag", False) and isinstance(value, bool)):
        return (param.opts[0], value), None
    pair = list(getattr(param, "secondary_opts", None) or [])
    if not pair:                                  # a lone switch (--tied, --no-header): given means on
        return (param.opts[0], value), f"without {param.opts[0]}"
    on, off = param.opts[0], pair[0]
    return ((on if value else off), value), f"with {off if value else on}"


def _show(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else repr(v)


def with_train_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the common train flags to a typer command whose last parameter is ``run: TrainArgs``."""
    sig = inspect.signature(fn)
    if "run" not in sig.parameters:
        raise TypeError(f"{fn.__name__}: a command using with_train_options needs a 'run' parameter")
    # Resolve string annotations (``from __future__ import annotations``) of the task's own flags in
    # the command's module; ``run``'s annotation is never needed (TrainArgs may be a local import).
    own = [
        p.replace(annotation=eval(p.annotation, fn.__globals__)) if isinstance(p.annotation, str) else p  # noqa: S307
        for p in sig.parameters.values() if p.name != "run"
    ]
    common = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=typ, default=typer.Option(default, flag, help=help_))
        for name, (typ, default, flag, help_) in _COMMON.items()
    ]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        ctx = kwargs.pop("rnnlab_ctx", None)
        flags = {name: kwargs.pop(name) for name in _COMMON}
        out, resume_run, overwrite = flags.pop("out"), flags.pop("resume_run"), flags.pop("overwrite")
        engine = flags.pop("engine")
        if engine is not None:
            from rnnlab.engine import ENGINE_ENV, set_engine  # lazy: keeps --help fast

            try:
                set_engine(engine)
            except ConfigError as exc:   # an unknown name, or 'fast' without kernels: named as the flag
                raise ConfigError(f"--engine{str(exc).removeprefix('set_engine')}") from None
            os.environ[ENGINE_ENV] = engine     # and for worker processes (DDP, data loaders)
        given = {k: v for k, v in flags.items() if v is not None and k not in ("quiet", "no_report")}
        if flags["quiet"]:
            given["quiet"] = True
        if flags["no_report"]:
            given["report"] = False
        explicit: dict[str, tuple[str, Any]] = {}
        switched: dict[str, str] = {}
        if ctx is not None:
            params = {p.name: p for p in ctx.command.params}
            for name, value in kwargs.items():
                source = ctx.get_parameter_source(name)
                if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
                    explicit[name], other = _typed(params.get(name), name, value)
                    if other is not None:
                        switched[name] = other
        return fn(**kwargs, run=TrainArgs(out=out, resume_run=resume_run, given=given, overwrite=overwrite,
                                          explicit=explicit, switched=switched))

    # The context tells a flag given on the command line from a default (checked on --resume).
    context = inspect.Parameter("rnnlab_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    params = [context] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + common
    wrapper.__signature__ = sig.replace(parameters=params, return_annotation=None)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must see the new signature, not fn's
    return wrapper


# ----------------------------------------------------------------------------- cell options

# Here rather than beside rnnlab.tasks.cell_options: importing that package imports every task
# (and torch), which ``--help`` must not wait for. tests/cli/test_bad_invocations.py checks that
# it names every key of CellOptions.
CELL_OPTION_HELP = (
    "A cell option torch.nn lacks, KEY=VALUE; repeat for several (default: none = torch.nn). Keys: "
    "layer_norm=true (LSTM, GRU), peephole=true, coupled_gates=true (LSTM), gru_reset=after|before (GRU), "
    "recurrent_dropout=P, zoneout=P, zoneout_cell=P (LSTM c), weight_drop=P, forget_bias=B (LSTM f / GRU z), "
    "init=torch|orthogonal|chrono|identity (identity: RNN), t_max=N (with init=chrono). "
    "Example: --cell-option layer_norm=true --cell-option forget_bias=1."
)


def _click_class(name: str) -> Any:
    """Click's exception class ``name`` from the click this typer release uses (vendored from typer
    0.26 on), or None where it has none."""
    return getattr(sys.modules.get(typer.BadParameter.__module__), name, None)


def missing_option(flag: str, what: str) -> typer.BadParameter:
    """The usage error for a flag that is required unless ``--resume RUN`` is given (typer cannot
    declare "required unless"): exit status 2 with the usage block, worded as typer's own
    "Missing option" (click's MissingParameter where this typer release has it)."""
    message = f"Missing option '{flag}': {what} (or --resume RUN)"
    missing = _click_class("MissingParameter")
    if isinstance(missing, type) and issubclass(missing, typer.BadParameter):
        exc = missing(message)
        exc.format_message = lambda: message    # its own wording would name the missing option again
        return exc
    return typer.BadParameter(message)


def cell_option_flag() -> Any:
    """The ``--cell-option KEY=VALUE`` flag (repeatable) every task train command that builds
    recurrent layers declares as ``cell_option: Optional[List[str]] = cell_option_flag()``; turn
    the values into the task config's ``cell_options`` with :func:`cell_options_from_flags`.
    With ``--resume`` the run's saved cell options are used; a --cell-option that differs from
    them is refused, as every task flag that contradicts the run (TrainArgs.check_resume)."""
    return typer.Option(None, "--cell-option", metavar="KEY=VALUE", help=CELL_OPTION_HELP)


def cell_options_from_flags(values: Optional[list[str]]) -> dict[str, Any]:
    """Repeated ``--cell-option KEY=VALUE`` -> a dict, values read by the key's type (the task
    config then checks it against the cell)."""
    from rnnlab.tasks.cell_options import parse_cell_option_flags  # lazy: keeps --help fast

    return parse_cell_option_flags(values)


# ----------------------------------------------------------------------------- evaluate dispatch

# ``rnnlab evaluate``'s own options, offered beside a task's extra ones when a flag is misspelt.
EVALUATE_OPTIONS = ("--split", "--checkpoint", "--json", "--help")


def usage_error(kind: str, message: str, option: str = "", possibilities: list[str] | None = None) -> Exception:
    """A usage error (exit status 2 with the usage block, as typer's own): click's ``NoSuchOption``,
    ``BadOptionUsage`` or ``UsageError`` (``kind``) from the click this typer release uses."""
    cls = _click_class(kind)
    if not (isinstance(cls, type) and getattr(cls, "exit_code", None) == 2):
        return typer.BadParameter(message)
    if kind == "NoSuchOption":
        return cls(option, message, possibilities)
    return cls(option, message) if kind == "BadOptionUsage" else cls(message)


def one_stdout(out: str | os.PathLike | None, as_json: bool) -> None:
    """``--out -`` and ``--json`` would both write to standard output: refused as a usage error."""
    if as_json and is_stdout(out):
        raise usage_error("BadOptionUsage", "--out -: expected a file path with --json (both would be written "
                          "to standard output)", "--out")


def check_file_flags(opts: dict[str, Any], file_flag: str) -> None:
    """A usage error for ``--encoding`` or ``--missing`` without the file they read (``--csv``,
    ``--text``): the run's own splits are read as the run read them."""
    for name, what in (("encoding", "encoding"), ("missing", "--missing policy")):
        if name in opts and file_flag.lstrip("-") not in opts:
            raise usage_error("BadOptionUsage", f"--{name}: expected it with {file_flag} FILE (the run's own splits "
                              f"are read with the run's {what})", f"--{name}")


def check_input_file(path: str | os.PathLike | None, flag: str) -> None:
    """Refuse, naming ``flag``, a file a command is to read that is a folder or does not exist
    (the readers name it only as a data file); None (not given) passes."""
    if path is None or not str(path):
        return
    if Path(path).is_dir():
        raise DataError(f"{flag} {path}: expected a file, got a folder")
    if not Path(path).exists():
        raise DataError(f"{flag} {path}: expected an existing file, got no such file")


@contextmanager
def print_data_warnings() -> Iterator[None]:
    """A context in which rnnlab's DataWarnings print as one ``rnnlab: warning:`` line on stderr
    (other warnings keep Python's format)."""
    with warnings.catch_warnings():                  # restores showwarning and the filters after
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            if issubclass(category, DataWarning):
                print(f"rnnlab: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("always", DataWarning)
        yield


def extra_options(extra: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    """``--name VALUE`` / ``--name=VALUE`` pairs (and the bare ``--force``) from ``rnnlab evaluate``'s
    extra arguments; only the ``allowed`` names are accepted: any other flag (a typo) or a flag
    without its value is a usage error (exit status 2), as for the command's own flags."""
    rest = list(extra)
    opts: dict[str, str] = {}
    while rest:
        a = rest.pop(0)
        name, eq, value = a.partition("=")
        if name == "--force" and "--force" in allowed:
            if eq:
                raise usage_error("BadOptionUsage", "Option '--force' does not take a value.", name)
            opts["force"] = "1"
            continue
        if not name.startswith("-"):
            raise usage_error("UsageError", f"Got unexpected extra argument ({a})")
        if name == "--debug":
            raise usage_error("NoSuchOption", "No such option: --debug (it goes before the command: "
                              "rnnlab --debug evaluate ...)", name)
        if name not in allowed:
            known = list(allowed) + list(EVALUATE_OPTIONS)
            raise usage_error("NoSuchOption", f"No such option: {name}", name,
                              difflib.get_close_matches(name, known) or known)
        if not eq:
            if not rest:
                raise usage_error("BadOptionUsage", f"Option '{name}' requires an argument.", name)
            value = rest.pop(0)
        opts[name[2:]] = value
    return opts


# task name -> (evaluator(run_dir, split, checkpoint, extra_args) -> metrics, the extra flags it takes)
Evaluator = Callable[[Path, str, str, list[str]], dict[str, float]]
_EVALUATORS: dict[str, tuple[Evaluator, tuple[str, ...]]] = {}


def _is_count(key: str) -> bool:
    """Score names that count things (examples, tokens): whole numbers, printed as ints."""
    return key in ("n", "tokens") or key.endswith("_tokens")


def json_number(v: Any, key: str = "") -> Any:
    """A score for JSON: counts (ints, or a count's name: ``n``, ``tokens``) as ints, other numbers
    as floats, NaN and infinities as null (JSON has none); dicts and lists of them (per-speaker
    scores, per-window rows) alike."""
    if isinstance(v, dict):
        return {k: json_number(x, k) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_number(x, key) for x in v]
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return v
    if isinstance(v, numbers.Integral) or (_is_count(key) and math.isfinite(v) and float(v).is_integer()):
        return int(v)
    return float(v) if math.isfinite(v) else None


def print_train_json(result: Any, valid: dict[str, Any] | None = None, **more: dict[str, Any]) -> None:
    """``rnnlab train TASK --json``'s one object on stdout: the run, why it stopped, its steps, its
    best step and the ``valid`` scores (default: ``rnnlab.train.evaluate_run`` of the best
    checkpoint; ``more``: further named score sets, such as speech's ``test``), with the compile
    summary under --compile."""
    if valid is None:
        from rnnlab.train import evaluate_run  # lazy: keeps --help fast

        valid = evaluate_run(result.run_dir)
    obj = {"run": str(result.run_dir), "stop_reason": result.stop_reason, "steps": int(result.step),
           "best_step": None if result.best_step is None else int(result.best_step),
           "valid": json_number(valid), **{k: json_number(v) for k, v in more.items()}}
    if result.compile is not None:
        obj["compile"] = result.compile
    print(json.dumps(obj), flush=True)


# The shell's exit status for a command ended by the signal (128 + its number).
_SIGNAL_STATUS = {"SIGINT": 130, "SIGTERM": 143}


def _not_interrupted(result: Any) -> Any:
    """``result`` of fit/resume, unless a signal stopped the run: then Interrupted, so the command
    skips its report of the scores and exits 130 or 143 (a script must not read a stopped run as
    a finished one). The run's final checkpoint is on disk either way."""
    code = _SIGNAL_STATUS.get(result.stop_reason)
    if code is None:
        return result
    raise Interrupted(f"{result.stop_reason} at step {result.step}; the run is checkpointed: continue it with "
                      f"--resume {result.run_dir}", code)


def register_evaluator(task_name: str, fn: Evaluator, options: tuple[str, ...] = ()) -> None:
    """Let ``rnnlab evaluate RUN`` hand runs of ``task_name`` (and their extra flags, among
    ``options``: any other is a usage error before the run's data is read) to ``fn``."""
    _EVALUATORS[task_name] = (fn, options)


def evaluate_command(run_dir: Path, split: str, checkpoint: str, extra: list[str]) -> dict[str, float]:
    from rnnlab.train import evaluate_run, read_run_config  # lazy: keeps --help fast
    from rnnlab.train.rundir import verify_data_files  # lazy: keeps --help fast

    saved = read_run_config(run_dir)
    fn, options = _EVALUATORS.get(saved["task"], (None, ()))
    opts = extra_options(extra, options)     # a misspelt flag: a usage error, first
    if not (opts.get("csv") or opts.get("text")):
        verify_data_files(run_dir, saved)  # scores on the run's own split: the data must be the run's
    if fn is not None:
        return fn(run_dir, split, checkpoint, extra)
    return evaluate_run(run_dir, split=split, checkpoint=checkpoint)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    @train_app.command("toy")
    @with_train_options
    def train_toy(
        cell: str = typer.Option("gru", help="rnn | lstm | gru."),
        hidden_size: int = typer.Option(16, "--hidden-size", "--hidden", help="Hidden units."),
        streams: int = typer.Option(8, help="Parallel series (the batch)."),
        dropout: float = typer.Option(0.0, help="Dropout on the recurrent output."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
        run: TrainArgs = None,
    ) -> None:
        """A tiny regression task (next value of noisy sines) for smoke tests of the training core."""
        from rnnlab.tasks.toy import ToyConfig, ToyTask  # lazy: keeps --help fast

        cfg = ToyConfig(cell=cell, hidden_size=hidden_size, streams=streams, dropout=dropout)
        result = run.start(lambda: ToyTask(cfg), "toy", lambda: ToyTask(cfg).config_dict(), max_steps=200,
                           eval_every=20)
        if as_json:  # --json always prints its object (with --quiet too); the status lines are on stderr
            print_train_json(result)   # the best checkpoint on the validation split

    @app.command("evaluate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def evaluate(
        ctx: typer.Context,
        run_dir: Path = typer.Argument(..., metavar="RUN", help="A run folder."),
        split: str = typer.Option("valid", help="valid | test | train (the part the model was trained on)."),
        checkpoint: str = typer.Option("best", help="best | latest | a checkpoint folder."),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
    ) -> None:
        """Evaluate a trained run on its held-out split, or on a file.

        Extra options by the run's task (other tasks take none):
        classify: --csv FILE [--encoding ENC] [--missing POLICY], --confusion OUT.csv [--force];
        forecast: --csv FILE [--encoding ENC] [--missing POLICY];
        lm: --text FILE [--encoding ENC].
        """
        if str(run_dir).startswith("-"):   # unknown flags are let through for the task's own: not as RUN
            flag = str(run_dir).split("=")[0]
            if any(flag in options for _, options in _EVALUATORS.values()):
                raise usage_error("BadOptionUsage", f"{flag}: expected it after the run folder "
                                  f"(rnnlab evaluate RUN {flag} ...), got it before", flag)
            raise usage_error("NoSuchOption", f"No such option: {flag}", flag,
                              difflib.get_close_matches(flag, list(EVALUATE_OPTIONS)) or list(EVALUATE_OPTIONS))
        if split not in ("train", "valid", "test"):   # named as the flag (the tasks name their parameter)
            raise ConfigError(expected("--split", "valid, test or train", repr(split)))
        scored = [a.split("=")[0] for a in ctx.args if a.split("=")[0] in ("--csv", "--text")]
        if scored and ctx.get_parameter_source("split").name in ("COMMANDLINE", "ENVIRONMENT"):
            raise usage_error("BadOptionUsage", f"--split: expected it without {scored[0]} (a file given is scored "
                              f"whole; --split picks one of the run's own parts), got both", "--split")
        metrics = evaluate_command(run_dir, split, checkpoint, list(ctx.args))
        if as_json:
            print(json.dumps(json_number(metrics)))
            return
        width = max((len(k) for k in metrics), default=0)
        for k, v in metrics.items():
            print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
