"""Frame sequences in the classify task: the frame encoder and the report's views of clips.

The model is the classifier of :mod:`rnnlab.tasks.classify` with a frame encoder in place of
its embedding (the LRCN pattern, Donahue et al. 2015)::

    frames (T, B, H, W, C) uint8 --frame encoder, one frame at a time--> (T, B, E)
    --rnnlab RNN/LSTM/GRU--> pooling over valid steps --> logits (B, C)

Frame encoders: ``cnn``, a small CNN defined here (conv blocks, then global pooling);
or a torchvision backbone (``torchvision:resnet18`` and the like) when torchvision is installed
and a weights file is given, frozen unless ``finetune_backbone``.

The small CNN pools each channel twice: its maximum over the frame, and where it fires (a
spatial softmax). Global pooling alone makes a convolutional encoder blind to where things are,
and motion is a change of place, so without the second the recurrent layers could not tell
directions. The maximum rather than the mean: a small object on a larger, mostly empty frame
fires a few positions, and a mean dilutes them by the empty ones (the encoder learns what the
object is several times more slowly).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rnnlab.analysis.gates import GATE_NAMES
from rnnlab.data.frames import TORCHVISION_PREFIX
from rnnlab.engine import record_gates
from rnnlab.errors import ConfigError, expected, optional_module
from rnnlab.report.html import escape, figure_to_img, pyplot
from rnnlab.train.task import ReportSection

class SmallCNN(nn.Module):
    """Conv blocks (3x3 conv, batch norm, ReLU, then 2x2 max pool but after the last), then two
    global poolings of each channel: its maximum (what is there, wherever it is) and, through a
    softmax over the positions, where it is (the expected row and column, Levine et al. 2016's
    spatial softmax), and a linear map of both to ``out_dim``, layer-normalised so that the
    recurrent layer's gates see inputs of one scale (with a ReLU there instead, the classifier
    learned the digits of moving-digits several times more slowly). Per frame:
    (N, C, H, W) -> (N, out_dim)."""

    def __init__(self, channels: int, out_dim: int, widths: tuple[int, ...] = (16, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(3 * c, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.convs(x)                                        # (N, c, h, w)
        n, c, h, w = f.shape
        ys = torch.linspace(-1, 1, h, dtype=f.dtype, device=f.device)
        xs = torch.linspace(-1, 1, w, dtype=f.dtype, device=f.device)
        p = torch.softmax(f.flatten(2), -1).view(n, c, h, w)     # where each channel fires
        where = torch.cat([(p.sum(3) * ys).sum(2), (p.sum(2) * xs).sum(2)], 1)  # (N, 2c)
        return self.norm(self.proj(torch.cat([f.amax((2, 3)), where], 1)))


def torchvision_backbone(name: str, weights: str, channels: int, out_dim: int, finetune: bool) -> nn.Module:
    """A torchvision classification model with its weights file, its classifier replaced by a
    linear map to ``out_dim``; frozen unless ``finetune``."""
    torchvision = optional_module("torchvision", f"frame_encoder {TORCHVISION_PREFIX}{name}",
                                  "torchvision installed (pip install torchvision, the build matching torch)",
                                  "ImportError")
    try:
        net = torchvision.models.get_model(name, weights=None)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(expected("torchvision model", "a name torchvision.models knows", repr(name))) from exc
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(expected(f"backbone_weights {weights!r}", f"a state dict of {name}",
                                   f"{type(exc).__name__}: {exc}".splitlines()[0])) from None
    # The last Linear is the ImageNet classifier: its input is the feature width.
    head_name, head = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = net.get_submodule(head_name.rsplit(".", 1)[0]) if "." in head_name else net
    setattr(parent, head_name.rsplit(".", 1)[-1], nn.Identity())
    for p in net.parameters():
        p.requires_grad_(finetune)
    return _Backbone(net, head.in_features, channels, out_dim)


class _Backbone(nn.Module):
    def __init__(self, net: nn.Module, features: int, channels: int, out_dim: int) -> None:
        super().__init__()
        self.net, self.channels = net, channels
        self.proj = nn.Linear(features, out_dim)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 1:          # ImageNet backbones read RGB
            x = x.expand(-1, 3, -1, -1)
        return torch.relu(self.proj(self.net((x - self.mean) / self.std)))


class FrameEncoder(nn.Module):
    """Frames (T, B, H, W, C), uint8 0-255 or float in [0, 1] -> (T, B, out_dim), each frame
    encoded on its own."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        x = x.flatten(0, 1).permute(0, 3, 1, 2)            # (T*B, C, H, W)
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        return self.encoder(x).unflatten(0, (t, b))


def build_frame_encoder(name: str, weights: str, channels: int, out_dim: int, finetune: bool) -> FrameEncoder:
    if name == "cnn":
        return FrameEncoder(SmallCNN(channels, out_dim))
    return FrameEncoder(torchvision_backbone(name[len(TORCHVISION_PREFIX):], weights, channels, out_dim, finetune))


# ----------------------------------------------------------------------------- report


@torch.no_grad()
def prefix_predictions(model: nn.Module, x: torch.Tensor, length: int) -> np.ndarray:
    """Class probabilities after reading frames 1..t of one clip, for t = 1..length: (length, C)."""
    out = []
    for t in range(1, length + 1):
        logits = model(x[:t], torch.tensor([t]))
        out.append(torch.softmax(logits.float(), -1)[0].numpy())
    return np.stack(out)


def report_sections(task: Any, model: nn.Module, n_clips: int = 4) -> list:
    """Frame strips of a few validation clips with the prediction after each frame, and the
    first layer's gates over the frames of one clip."""
    split = task.split("valid")
    names = task.label_map.names
    idx = list(range(min(n_clips, len(split.inputs))))
    plt = pyplot()

    was = model.training
    model.eval()
    try:
        clips = [split.inputs[i] for i in idx]
        t_max = max(len(c) for c in clips)
        fig, axes = plt.subplots(len(idx), t_max, figsize=(1.1 * t_max, 1.45 * len(idx)), squeeze=False)
        for row, (i, clip) in enumerate(zip(idx, clips)):
            x, _ = task.collate([clip])
            probs = prefix_predictions(model, x, len(clip))
            for t in range(t_max):
                ax = axes[row, t]
                ax.axis("off")
                if t >= len(clip):
                    continue
                f = clip[t]
                ax.imshow(f[..., 0] if f.shape[-1] == 1 else f, cmap="gray" if f.shape[-1] == 1 else None,
                          vmin=0, vmax=255)
                k = int(probs[t].argmax())
                ok = split.labels is not None and k == int(split.labels[i])
                ax.set_title(f"{names[k][:10]}\n{probs[t, k]:.2f}", fontsize=7, color="green" if ok else "red")
            if split.labels is not None:
                axes[row, 0].text(-0.15, 0.5, names[int(split.labels[i])][:12], transform=axes[row, 0].transAxes,
                                  rotation=90, va="center", ha="right", fontsize=8)
        fig.suptitle("prediction (and its probability) after each frame; true class on the left", fontsize=9)
        fig.tight_layout()
        strips = figure_to_img(fig, "frame strips")
        plt.close(fig)
        sections = [ReportSection(
            "Clips: the prediction after each frame",
            f"<p>The first {len(idx)} clips of the validation split; above each frame, the class the model "
            "predicts after reading the clip up to that frame (green: the true class).</p>" + strips)]

        # Gates over the frames of the first clip: the recurrent layer on the encoded frames.
        x, _ = task.collate([clips[0]])
        with record_gates() as rec:
            model.rnn(model.embed(x))
        recs = [r for r in rec.layers if r.layer == 0 and r.direction == 0 and r.gates]
        if recs:
            gates = {g: recs[-1].gates[g][:, 0, :].T.float().numpy() for g in GATE_NAMES.get(recs[-1].cell, {})}
            if gates:
                fig, axes = plt.subplots(1, len(gates), figsize=(3.2 * len(gates), 3.0), squeeze=False)
                for ax, (g, a) in zip(axes[0], gates.items()):
                    im = ax.imshow(a, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                    ax.set_title(GATE_NAMES[recs[-1].cell][g], fontsize=9)
                    ax.set_xlabel("frame")
                axes[0, 0].set_ylabel("unit")
                fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
                label = names[int(split.labels[0])] if split.labels is not None else "unlabelled"
                sections.append(ReportSection(
                    "Gate activity over the frames of one clip",
                    f"<p>First recurrent layer, clip 1 of the validation split (true class "
                    f"{escape(label)}): each gate's value per unit (rows) and frame (columns).</p>"
                    + figure_to_img(fig, "gates over frames")))
                plt.close(fig)
    finally:
        model.train(was)
    return sections


# ----------------------------------------------------------------------------- export


class FullClips(nn.Module):
    """The classifier on clips that all have every frame (no lengths input): the recurrent
    layers run unpacked, which is what ONNX's fused LSTM/GRU/RNN operators express. With
    uniform ``--frames N`` sampling every clip of N frames or more is such a clip."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        emb = m.embed(x)
        # An explicit zero state shaped from the input keeps the batch axis dynamic in the graph.
        h0 = emb[0, :, :1].mul(0).unsqueeze(0).repeat(m.num_layers * m.dirs, 1, m.rnn.hidden_size)
        out, h_n = m.rnn(emb, (h0, h0) if str(m.rnn.mode).lower() == "lstm" else h0)
        if isinstance(h_n, tuple):
            h_n = h_n[0]
        if m.pool == "last":                              # the last layer's final states, both directions
            pooled = torch.cat(list(h_n[-m.dirs:]), dim=-1)
        else:
            pooled = out.mean(0) if m.pool == "mean" else out.amax(0)
        return m.head(pooled)


def frames_example(task: Any, batch: int = 2, frames: int = 3) -> tuple[tuple[torch.Tensor], list[str], list[str],
                                                                        dict[str, dict[int, str]]]:
    """``(args, input_names, output_names, dynamic_axes)`` for exporting :class:`FullClips` of a
    frames run: ``frames`` (T, B, H, W, C) uint8 -> ``logits`` (B, classes); T and B dynamic."""
    h, w, c = task.frame_shape
    x = torch.randint(0, 256, (frames, batch, h, w, c), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return (x,), ["frames"], ["logits"], {"frames": {0: "frames", 1: "batch"}, "logits": {0: "batch"}}
