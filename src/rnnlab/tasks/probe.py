"""The "probe" task: one probe (``rnnlab.data.probes``) learnt by one recurrent cell.

Model: tokens -> embedding (or real features as they are) -> rnnlab RNN/LSTM/GRU -> linear head,
read at the last step (``final`` probes) or at every step (``copy``). Training batches are drawn
fresh from the generator at every step (there is no finite training set to overfit); the test
set is a fixed draw from a separate seed stream, so it never coincides with a training batch.

:func:`run_probe` trains one model through the shared training core (``rnnlab.train.fit``)
and returns a :class:`ProbeResult`; ``rnnlab probe`` and ``rnnlab demo`` both call it.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.analysis import plots
from rnnlab.analysis.gates import probe_gate_stats
from rnnlab.analysis.gradflow import probe_grad_flow
from rnnlab.data.probes import ProbeBatch, ProbeSpec, get_probe, probe_loss, probe_metric
from rnnlab.errors import ConfigError, expected, field_name, is_int_at_least
from rnnlab.tasks.cell_options import check_cell_options, sets_memory_gate_bias
from rnnlab.tasks.recurrent import CELLS, recurrent_layer, upgrade_keys
from rnnlab.report.html import ReportSection, figure_to_img
from rnnlab.train import TrainConfig, fit
from rnnlab.train.task import StepOutput, register_task

LABEL = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


# The flags of `rnnlab train probe` that are spelled otherwise than their config field ("": none),
# for error messages (rnnlab.errors.field_name).
# seed and steps_per_epoch are left unnamed: `rnnlab probe` and the demo set them by --seed and --max-steps.
PROBE_FLAGS = {"embed": "", "test_size": "", "seed": "", "steps_per_epoch": "", "params": "",
               "cell_options": "--cell-option"}

@dataclass
class ProbeConfig:
    probe: str = "checksum"             # which probe (rnnlab.data.probes.PROBES)
    length: int = 50                    # the probe's T (copy runs T+20 steps)
    cell: str = "lstm"                  # rnn | lstm | gru
    hidden_size: int = 64               # same for every cell by default, so parameter counts differ
    num_layers: int = 1                 # one layer isolates the cell's own memory
    embed: int = 16                     # token embedding size (ignored for real-valued probes)
    batch_size: int = 64                # fresh samples per step
    steps_per_epoch: int = 100          # batches per "epoch" (the data are infinite; this paces evals)
    test_size: int = 1000               # fixed test set, drawn from a separate seed stream
    seed: int = 0                       # data seed (the model's init is seeded by the training core)
    memory_bias: float | None = None    # gated cells: set the bias of the gate that keeps the state
                                        # (LSTM forget f, GRU update z) to this at init; b = 1 is Keras'
                                        # LSTM default, larger b is "chrono" init (Tallec & Ollivier
                                        # 2018). None keeps torch.nn's init. The plain RNN has no such gate.
    params: dict[str, Any] = field(default_factory=dict)  # probe generator options (e.g. n_keys)
    cell_options: dict[str, Any] = field(default_factory=dict)  # rnnlab.nn.options.CellOptions fields; {} = torch.nn

    def __post_init__(self) -> None:
        def check(ok: bool, what: str, want: str, got: object) -> None:
            if not ok:
                raise ConfigError(expected(field_name("probe", what, self, PROBE_FLAGS), want, repr(got)))

        spec = get_probe(self.probe)
        check(self.cell in CELLS, "cell", f"one of {CELLS}", self.cell)
        for name in ("length", "hidden_size", "num_layers", "embed", "batch_size", "steps_per_epoch", "test_size"):
            v = getattr(self, name)
            check(not isinstance(v, bool) and isinstance(v, int) and v >= 1, name, "an int >= 1", v)
        check(self.memory_bias is None or (not isinstance(self.memory_bias, bool)
                                           and isinstance(self.memory_bias, (int, float))
                                           and math.isfinite(self.memory_bias)),
              "memory_bias", "a finite number or None", self.memory_bias)
        self.cell_options = check_cell_options(self.cell_options, self.cell)
        check(self.memory_bias is None or self.cell == "rnn" or not sets_memory_gate_bias(self.cell_options),
              "memory_bias", "None with --cell-option forget_bias, init=chrono (they set the memory-gate bias) "
              "or coupled_gates (no forget-gate rows)", self.memory_bias)
        check(is_int_at_least(self.seed, 0), "seed", "an int >= 0", self.seed)
        unknown = set(self.params) - set(spec.params)
        if unknown:
            raise ConfigError(expected(f"{self.probe} probe params", sorted(spec.params), sorted(unknown)))
        spec.generate(self.length, 1, 0, **self.params)     # validates T against the probe

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeConfig":
        if not isinstance(data, dict):
            raise ConfigError(expected("probe config", "a dict", type(data).__name__))
        known = {f.name for f in dataclasses.fields(cls)}
        data = upgrade_keys(data, "probe config")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(expected("probe config keys", f"a subset of {sorted(known)}", unknown))
        return cls(**data)


class ProbeModel(nn.Module):
    """input -> one rnnlab recurrent layer stack -> linear head."""

    def __init__(self, spec: ProbeSpec, cfg: ProbeConfig) -> None:
        super().__init__()
        in_size = spec.input_size(**cfg.params)
        self.tokens = spec.inputs == "tokens"
        self.per_step = spec.target == "per_step"
        self.embed = nn.Embedding(in_size, cfg.embed) if self.tokens else None
        self.rnn = recurrent_layer(cfg.cell, cfg.embed if self.tokens else in_size, cfg.hidden_size, cfg.num_layers,
                                   cfg.cell_options)
        self.head = nn.Linear(cfg.hidden_size, spec.n_out)
        self.regression = spec.loss == "mse"
        if cfg.memory_bias is not None and cfg.cell in ("lstm", "gru"):
            H = cfg.hidden_size
            # Gate order LSTM i|f|g|o, GRU r|z|n: the memory gate (f or z) is rows H..2H in both.
            with torch.no_grad():
                for k in range(cfg.num_layers):
                    getattr(self.rnn, f"bias_ih_l{k}")[H:2 * H] = cfg.memory_bias
                    getattr(self.rnn, f"bias_hh_l{k}")[H:2 * H] = 0.0
                    if cfg.cell == "lstm":      # chrono: the input gate starts as closed as f is open
                        getattr(self.rnn, f"bias_ih_l{k}")[:H] = -cfg.memory_bias
                        getattr(self.rnn, f"bias_hh_l{k}")[:H] = 0.0

    def forward(self, x: Tensor) -> Tensor:
        inp = self.embed(x) if self.embed is not None else x               # (T, B, E) or (T, B, F)
        out, _ = self.rnn(inp)                                             # (T, B, H)
        if self.per_step:
            return self.head(out)                                          # (T, B, C)
        y = self.head(out[-1])                                             # (B, C)
        return y.squeeze(-1) if self.regression else y


def _stream_seed(*key: int) -> int:
    """Independent 63-bit seeds for (data seed, stream, ...) keys: train and test never collide."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ProbeTask:
    """A :class:`rnnlab.train.task.Task` for one probe and one cell."""

    name = "probe"
    items_name = "samples"
    compile_methods = {"forward": True}     # TrainConfig.compile: one graph, no break

    def __init__(self, cfg: ProbeConfig) -> None:
        self.cfg = cfg
        self.spec = get_probe(cfg.probe)
        self.metric_name = self.spec.metric
        self.losses: list[float] = []      # training losses seen by this object, in order
        self.on_step: Callable[[int], None] | None = None   # progress hook: called with len(losses)
        self._test: ProbeBatch | None = None
        self._valid: ProbeBatch | None = None

    # -- the contract -----------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def metadata(self) -> dict[str, Any]:
        return {}

    def build_model(self) -> nn.Module:
        return ProbeModel(self.spec, self.cfg)

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[ProbeBatch]:
        # Each step's full batch depends only on (seed, epoch, step); a shard takes every
        # world_size-th sample, so N processes see exactly the samples of one.
        c = self.cfg
        if c.batch_size % world_size:
            raise ConfigError(expected("probe batch_size", f"a multiple of world_size {world_size}", c.batch_size))
        for step in range(c.steps_per_epoch):
            b = self.spec.generate(c.length, c.batch_size, _stream_seed(c.seed, 0, epoch, step), **c.params)
            yield ProbeBatch(b.x[:, rank::world_size], b.y[..., rank::world_size])

    def training_step(self, model: nn.Module, batch: ProbeBatch, carry: Any) -> StepOutput:
        pred = model(batch.x)
        loss = probe_loss(self.spec, pred, batch.y)
        self.losses.append(loss.item())
        if self.on_step is not None:
            self.on_step(len(self.losses))
        metrics = {self.metric_name: probe_metric(self.spec, pred.detach(), batch.y)}
        return StepOutput(loss=loss, n_items=batch.x.shape[1], metrics=metrics)

    def test_batch(self) -> ProbeBatch:
        if self._test is None:
            c = self.cfg
            self._test = self.spec.generate(c.length, c.test_size, _stream_seed(c.seed, 1), **c.params)
        return self._test

    def valid_batch(self) -> ProbeBatch:
        """The held-out set that training evaluates (and picks its best checkpoint) on: of the test
        set's size, from a stream of its own, so the test set never chose anything."""
        if self._valid is None:
            c = self.cfg
            self._valid = self.spec.generate(c.length, c.test_size, _stream_seed(c.seed, 2), **c.params)
        return self._valid

    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        if split not in ("valid", "test"):
            raise ConfigError(expected("probe split", "'valid' or 'test'", repr(split)))
        test = self.test_batch() if split == "test" else self.valid_batch()
        preds = [model(test.x[:, i:i + 500]) for i in range(0, test.x.shape[1], 500)]
        pred = torch.cat(preds, -2 if self.spec.target == "per_step" or self.spec.loss == "ce" else -1)
        out = {"loss": probe_loss(self.spec, pred, test.y).item(),
               self.metric_name: probe_metric(self.spec, pred, test.y)}
        if self.spec.target == "per_step":  # copy: accuracy on the 10 recalled symbols
            out["recall_acc"] = (pred[-10:].argmax(-1) == test.y[-10:]).float().mean().item()
        return out

    def report_sections(self, model: nn.Module, run_dir: str) -> list[ReportSection]:
        return probe_sections(self, model)


def probe_sections(task, model) -> list[ReportSection]:
    """Sections for a single probe run's report.html (``rnnlab train probe``): gradient through
    time and, for gated cells, the gates of the trained model."""
    cell = task.cfg.cell
    gf = probe_grad_flow(task, model)
    html = figure_to_img(plots.grad_vs_distance({cell: {"trained": gf}}, f"{task.cfg.probe} T={task.cfg.length}"))
    out = [ReportSection("Gradient through time", html)]
    st = probe_gate_stats(task, model)
    if st is not None:
        out.append(ReportSection("Gates", figure_to_img(plots.gate_histograms({cell: st}, task.cfg.probe)) +
                                 figure_to_img(plots.gate_heatmap(st, task.cfg.probe))))
    return out


def _factory(config: dict[str, Any], metadata: dict[str, Any] | None) -> ProbeTask:
    return ProbeTask(ProbeConfig.from_dict(config))


register_task("probe", _factory)


# ---------------------------------------------------------------------------------------------
# run_probe: one probe, one cell, a fixed budget, through the training core
# ---------------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    task: str
    cell: str
    length: int
    metric: str                         # "acc", "mse" or "xent"
    value: float                        # test metric after training
    chance: float                       # chance level / trivial baseline of the same metric
    higher_is_better: bool
    params: int                         # trainable parameters of the whole model
    seconds: float                      # wall time of training (fit), evaluation excluded
    steps: int                          # optimizer steps actually taken
    hidden_size: int
    test_loss: float
    loss_curve: list[float]             # training loss at every step
    extra: dict[str, float] = field(default_factory=dict)   # other test metrics (copy: recall_acc)
    memory_horizon: dict[str, Any] = field(default_factory=dict)  # filled in by the demo
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    probe_task: ProbeTask | None = field(default=None, repr=False, compare=False)

    @property
    def beats_chance(self) -> float:
        """How far the metric is from chance toward perfect, in [.., 1]: 0 = chance, 1 = perfect."""
        if self.higher_is_better:
            return (self.value - self.chance) / (1.0 - self.chance)
        return (self.chance - self.value) / self.chance

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("model", "probe_task")}
        return d


# One probe run's settings, shared by run_probe and `rnnlab probe` (steps), and by the demo's
# DemoConfig (the rest; the demo's steps per probe are its suites'): a small model, a brisk Adam
# rate measured to work for all three cells on every probe, and the gated cells' memory-gate bias
# (chrono-like) that the demo's ablation varies.
RUN_STEPS, RUN_HIDDEN, RUN_LR, RUN_MEMORY_BIAS = 400, 32, 1e-2, 4.0


@dataclass
class ProbeRunConfig:
    """The training budget of :func:`run_probe` (everything else is in ProbeConfig)."""

    steps: int = RUN_STEPS              # optimizer steps
    seconds: float = 0.0                # optional wall-time cap per run; 0 = none
    lr: float = RUN_LR                  # Adam
    clip: float = 1.0                   # global-norm clipping, the standard RNN guard
    threads: int = 0                    # torch threads for the run; 0 = leave as is
    quiet: bool = True                  # the core's own progress bar


def run_probe(task: str, cell: str, length: int, steps: int = RUN_STEPS, seconds: float = 0.0,
              hidden_size: int = RUN_HIDDEN, seed: int = 0, lr: float = RUN_LR, batch_size: int = 64,
              out: str | None = None, quiet: bool = True, threads: int = 1,
              on_step: Callable[[int], None] | None = None, memory_bias: float | None | str = "auto",
              **probe_options: Any) -> ProbeResult:
    """Train ``cell`` on probe ``task`` at length ``length`` for ``steps`` steps (or ``seconds``)
    through :func:`rnnlab.train.fit`, then measure it on the fixed test set. The defaults are
    ``rnnlab probe``'s and the demo's.

    ``memory_bias`` is the gated cells' memory-gate bias at init: "auto" (the default) is
    ``RUN_MEMORY_BIAS``, or None when a cell option sets that bias itself (forget_bias,
    init=chrono, coupled_gates); None keeps the layer's own init.

    ``out`` is the run folder (a temporary one, deleted afterwards, when None).
    ``threads`` defaults to 1: these models are too small for intra-op parallelism to pay, and on
    a busy machine OpenMP threads spin against other processes.
    ``probe_options`` are further :class:`ProbeConfig` fields (layers, embed, test_size, params,
    cell_options). ``on_step(n)`` is called after every training step (for progress displays).
    """
    if not is_int_at_least(steps, 1):
        raise ConfigError(expected("--max-steps (run_probe steps)", "an int >= 1", repr(steps)))
    if isinstance(memory_bias, str):
        if memory_bias != "auto":
            raise ConfigError(expected("run_probe memory_bias", "a number, None or 'auto'", repr(memory_bias)))
        memory_bias = None if sets_memory_gate_bias(probe_options.get("cell_options") or {}) else RUN_MEMORY_BIAS
    cfg = ProbeConfig(probe=task, cell=cell, length=length, hidden_size=hidden_size, batch_size=batch_size,
                      steps_per_epoch=steps, seed=seed, memory_bias=memory_bias, **probe_options)
    run = ProbeRunConfig(steps=steps, seconds=seconds, lr=lr, threads=threads, quiet=quiet)
    ptask = ProbeTask(cfg)
    ptask.on_step = on_step
    if out is None:
        with tempfile.TemporaryDirectory(prefix="rnnlab-probe-") as tmp:
            model, seconds_taken = _train(ptask, run, seed, f"{tmp}/run")
    else:
        model, seconds_taken = _train(ptask, run, seed, out)
    model.eval()
    with torch.no_grad():
        ev = ptask.evaluate(model, "test")
    spec = ptask.spec
    extra = {k: v for k, v in ev.items() if k not in ("loss", spec.metric)}
    return ProbeResult(
        task=task, cell=cell, length=length, metric=spec.metric, value=ev[spec.metric],
        chance=spec.chance(length), higher_is_better=spec.higher_is_better,
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        seconds=seconds_taken, steps=len(ptask.losses), hidden_size=hidden_size, test_loss=ev["loss"],
        loss_curve=list(ptask.losses), extra=extra, model=model, probe_task=ptask)


def _train(ptask: ProbeTask, run: ProbeRunConfig, seed: int, out: str) -> tuple[nn.Module, float]:
    """The one dependency on the training core: build a TrainConfig and call fit."""
    tc = TrainConfig(max_steps=run.steps, max_time=float(run.seconds), seed=seed, optimizer="adam",
                     lr=run.lr, clip=run.clip, quiet=run.quiet, threads=run.threads, report=False)
    result = fit(ptask, tc, out)
    # the training loop's time: setup (the first run of a process imports the training library,
    # seconds that the later runs do not pay) would make the first cell of a comparison look slow
    seconds = result.train_seconds
    if getattr(result, "stop_reason", None) in ("SIGINT", "SIGTERM"):
        # The core saved a checkpoint and returned; a suite of runs must stop here too.
        raise KeyboardInterrupt(result.stop_reason)
    model = getattr(result, "model", result)
    if not isinstance(model, nn.Module):
        raise TypeError(f"rnnlab.train.fit returned {type(result).__name__} without a .model")
    return model, seconds


__all__ = ["ProbeConfig", "ProbeModel", "ProbeTask", "ProbeResult", "run_probe", "CELLS"]
