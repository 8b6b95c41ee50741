"""The demo's pictures (matplotlib, Agg backend). Each function returns a Figure; callers embed
it with :func:`rnnlab.report.html.figure_to_img`, which also closes it."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from rnnlab.analysis.gates import GATE_NAMES
from rnnlab.report.html import pyplot

COLORS = {"rnn": "#d62728", "lstm": "#1f77b4", "gru": "#2ca02c"}
STYLES = {"rnn": "o-", "lstm": "s-", "gru": "^--"}   # distinct markers: equal scores stay visible
LABELS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _plt():
    return pyplot()


def metric_vs_length(records: Sequence[Mapping[str, Any]], tasks: Sequence[str]):
    """One panel per task: the test metric against T per cell, with the chance/baseline dashed."""
    plt = _plt()
    NullFormatter = plt.NullFormatter

    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in records if r["task"] == task]
        for cell in COLORS:
            pts = sorted((r["length"], r["value"]) for r in rows if r["cell"] == cell)
            if pts:
                ax.plot(*zip(*pts), STYLES[cell], color=COLORS[cell], label=LABELS[cell], ms=6 if cell != "lstm" else 8)
        base = sorted({(r["length"], r["chance"]) for r in rows})
        if base:
            ax.plot(*zip(*base), "k--", lw=1, label="chance / baseline")
        if rows:
            ax.set_ylabel(rows[0]["metric"])
            if rows[0]["metric"] == "acc":
                ax.set_ylim(0.4, 1.02)
        lengths = sorted({r["length"] for r in rows})
        if len(lengths) > 1 and lengths[-1] / max(lengths[0], 1) >= 4:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.set_xlabel("length T")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def grad_vs_distance(flows: Mapping[str, Mapping[str, Any]], title: str):
    """‖∂L/∂h_t‖ (solid) and ‖∂L/∂c_t‖ (dotted, LSTM) against distance from the loss, log scale;
    one panel at initialisation, one after training. ``flows[cell][stage]`` is a GradFlow."""
    plt = _plt()
    stages = [s for s in ("init", "trained") if any(s in f for f in flows.values())]
    fig, axes = plt.subplots(1, len(stages), figsize=(5.2 * len(stages), 3.4), squeeze=False, sharey=True)
    for ax, stage in zip(axes[0], stages):
        for cell, by_stage in flows.items():
            gf = by_stage.get(stage)
            if gf is None:
                continue
            d = gf.distance
            ax.semilogy(d, np.maximum(gf.dh / gf.dh[0], 1e-30), color=COLORS[cell],
                        label=f"{LABELS[cell]} ‖∂L/∂h‖ (horizon {_h(gf.horizon_h)})")
            if gf.dc is not None:
                ax.semilogy(d, np.maximum(gf.dc / gf.dc[0], 1e-30), ":", color=COLORS[cell],
                            label=f"{LABELS[cell]} ‖∂L/∂c‖ (horizon {_h(gf.horizon_c)})")
        ax.axhline(1e-3, color="k", lw=0.8, ls="--")
        ax.set_ylim(1e-12, 10)
        ax.set_xlabel("distance from the loss (steps back)")
        ax.set_title(f"{title}: {'at initialisation' if stage == 'init' else 'after training'}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("gradient norm / norm at the loss")
    fig.tight_layout()
    return fig


def _h(h: int | None) -> str:
    return "> T" if h is None else str(h)


def gate_histograms(stats: Mapping[str, Any], title: str):
    """Distributions of each gate over the test set (LSTM i, f, o; GRU z, r)."""
    plt = _plt()
    cells = [c for c in ("lstm", "gru") if stats.get(c) is not None]
    fig, axes = plt.subplots(1, max(len(cells), 1), figsize=(5.0 * max(len(cells), 1), 3.0), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        st = stats[cell]
        for name, label in GATE_NAMES[cell].items():
            ax.hist(st.values[name], bins=40, range=(0, 1), histtype="step", lw=1.5,
                    density=True, label=f"{label}: mean {st.mean[name]:.2f}")
        ax.set_title(f"{LABELS[cell]} gates on {title}")
        ax.set_xlabel("activation")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def gate_heatmap(st: Any, title: str):
    """One example's gates over time: units (rows) by steps (columns), 0 = white, 1 = dark."""
    plt = _plt()
    names = list(st.example)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.3 + 1.2 * len(names)), squeeze=False, sharex=True)
    for ax, name in zip(axes[:, 0], names):
        im = ax.imshow(st.example[name], aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set_ylabel(name, rotation=0, labelpad=10)
        ax.set_yticks([])
        ax.set_title(GATE_NAMES[st.cell][name], fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("time step")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8)
    fig.suptitle(f"{LABELS[st.cell]} gates over one {title} example", fontsize=10)
    return fig


def loss_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], chance_loss: Mapping[str, float] | None = None):
    """Training loss per step (smoothed over 20 steps), one panel per run label, one line per cell.
    ``curves[panel][cell]`` is a list of losses."""
    plt = _plt()
    panels = list(curves)
    ncol = min(3, len(panels))
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 2.8 * nrow), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for cell, losses in curves[panel].items():
            y = np.asarray(losses, dtype=float)
            k = min(20, max(1, len(y) // 10))
            smooth = np.convolve(y, np.ones(k) / k, mode="valid") if len(y) >= k else y
            ax.plot(np.arange(len(smooth)) + k, smooth, color=COLORS[cell], label=LABELS[cell], lw=1.2)
        if chance_loss and panel in chance_loss:
            ax.axhline(chance_loss[panel], color="k", ls="--", lw=0.8)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
