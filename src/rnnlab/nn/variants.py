"""What a layer does with its ``CellOptions``: extra parameters, initialisation, masks, dispatch.

Used by the layers (:mod:`rnnlab.nn.layers`) and the single-step cells (:mod:`rnnlab.nn.cells`,
parameter names without the ``_l{k}`` suffix). Kept out of them so that the torch.nn-compatible default path stays short; the
layer calls :func:`add_parameters` (constructor), :func:`init_parameters` (``reset_parameters``)
and :func:`run_layer` (forward, only when an option changes the computation).

Extra parameters, per layer k and direction (suffix ``_reverse``), present only with the option:

    ln_gain_ih_l{k}   (G·H,)   γ_ih, init 1        layer_norm (LSTM, GRU)
    ln_gain_hh_l{k}   (G·H,)   γ_hh, init 1        layer_norm (LSTM, GRU)
    ln_gain_cell_l{k} (H,)     γ_c, init 1         layer_norm (LSTM)
    ln_bias_cell_l{k} (H,)     β_c, init 0         layer_norm (LSTM)
    peephole_l{k}     (3H,) [p_i|p_f|p_o], or (2H,) [p_i|p_o] with coupled_gates; torch.nn's uniform init

Initialisation (after torch.nn's uniform init, so the torch.nn parameters draw the same numbers):

- ``forget_bias=b``: the effective forget bias b_ih + b_hh equals b (b_ih[f] = b, b_hh[f] = 0). With
  coupled gates f = 1 − σ(a_i) = σ(−a_i), so the input bias is set to −b. GRU: the update gate z
  (it keeps h_{t-1}) plays the forget gate's part.
- ``init="orthogonal"``: every (H, H) gate block of W_hh is orthogonal (Saxe et al., 2014).
- ``init="chrono"`` (Tallec & Ollivier, 2018): b_f = log(u), u ~ U[1, t_max − 1], b_i = −b_f
  (GRU: b_z = log(u)); the characteristic forgetting times then spread up to t_max.
- ``init="identity"`` (IRNN, Le et al., 2015): W_hh = I and both biases 0 (meant for relu RNNs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells import FAMILIES
from rnnlab.cells.gru_variants import GRUVariant
from rnnlab.cells.lstm_variants import LSTMVariant
from rnnlab.engine import get_engine
from rnnlab.engine.scan import ScanTag, scan
from rnnlab.engine.variants import VariantSpec, variant_scan
from rnnlab.nn.options import CellOptions


def _suffixes(module: nn.Module) -> list[str]:
    """Parameter-name suffix of each layer-direction k ("_l0", "_l0_reverse", ...); "" for a cell."""
    if not hasattr(module, "num_layers"):
        return [""]
    D = module.num_directions
    return [f"_l{k // D}" + ("_reverse" if k % D == 1 else "") for k in range(module.num_layers * D)]


def extra_parameter_shapes(mode: str, o: CellOptions, hidden: int, num_blocks: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name without suffix, shape) of one layer-direction's extra parameters."""
    out: list[tuple[str, tuple[int, ...]]] = []
    if o.layer_norm:
        out += [("ln_gain_ih", (num_blocks * hidden,)), ("ln_gain_hh", (num_blocks * hidden,))]
        if mode == "lstm":
            out += [("ln_gain_cell", (hidden,)), ("ln_bias_cell", (hidden,))]
    if o.peephole:
        out.append(("peephole", ((2 if o.coupled_gates else 3) * hidden,)))
    return out


def add_parameters(module: nn.Module, factory: dict) -> None:
    """Register the extra parameters after all torch.nn ones (their init order is unchanged)."""
    o = module.options
    G = o.num_blocks(module.mode, FAMILIES[module.mode].NUM_BLOCKS)
    module._extra_names = []
    for sfx in _suffixes(module):
        names = []
        for name, shape in extra_parameter_shapes(module.mode, o, module.hidden_size, G):
            full = name + sfx
            setattr(module, full, nn.Parameter(torch.empty(shape, **factory)))
            names.append(full)
        module._extra_names.append(names)


@torch.no_grad()
def init_parameters(module: nn.Module) -> None:
    """Apply the options' initialisation on top of torch.nn's (see the module docstring)."""
    o: CellOptions = module.options
    H = module.hidden_size
    coupled = module.mode == "lstm" and o.coupled_gates
    for k, sfx in enumerate(_suffixes(module)):
        for name in module._extra_names[k]:
            if name.startswith("ln_gain"):
                getattr(module, name).fill_(1.0)
            elif name.startswith("ln_bias"):
                getattr(module, name).zero_()
        w_hh = getattr(module, "weight_hh" + sfx)
        b_ih = getattr(module, "bias_ih" + sfx, None)
        b_hh = getattr(module, "bias_hh" + sfx, None)
        if o.init == "orthogonal":
            for block in w_hh.split(H, dim=0):
                nn.init.orthogonal_(block)
        elif o.init == "identity":
            w_hh.copy_(torch.eye(H, dtype=w_hh.dtype, device=w_hh.device))
            b_ih.zero_()
            b_hh.zero_()
        # The gate whose bias sets the memory: LSTM f (slice 1), coupled LSTM i (slice 0, sign −),
        # GRU z (slice 1).
        keep = slice(H, 2 * H) if not coupled else slice(0, H)
        sign = -1.0 if coupled else 1.0
        if o.forget_bias is not None:
            b_ih[keep] = sign * o.forget_bias
            b_hh[keep] = 0.0
        if o.init == "chrono":
            b_f = torch.empty(H, dtype=b_ih.dtype, device=b_ih.device).uniform_(1.0, o.t_max - 1.0).log_()
            b_ih[keep] = sign * b_f
            b_hh[keep] = 0.0
            if module.mode == "lstm" and not coupled:
                b_ih[:H] = -b_f                                            # input gate: b_i = −b_f
                b_hh[:H] = 0.0


def spec_for(module: nn.Module) -> VariantSpec:
    o: CellOptions = module.options
    if module.mode == "lstm":
        return VariantSpec("lstm", LSTMVariant(o.layer_norm, o.peephole, o.coupled_gates))
    return VariantSpec("gru", GRUVariant(o.layer_norm, o.gru_reset))


def plan_options(module: nn.Module) -> dict:
    """What the options change for :func:`rnnlab.engine.plan`: ``variant`` (the cell's equations
    when they differ from torch.nn's, else None) and ``state_masks`` (zoneout, or recurrent
    dropout while training, draw masks)."""
    o: CellOptions = module.options
    variant = spec_for(module).cell if o.needs_variant_scan(module.mode) else None
    masks = bool(o.zoneout or (module.mode == "lstm" and o.zoneout_c) or (o.recurrent_dropout and module.training))
    return {"variant": variant, "state_masks": masks}


def run_layer(
    module: nn.Module, k: int, seq: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,
    b_ih: Tensor | None, b_hh: Tensor | None, w_hr: Tensor | None, mask: Tensor | None, tag: ScanTag,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One layer-direction with the options: weight drop, masks drawn from torch's RNG (training
    only; zoneout uses its expectation p in eval), then the variants scan or the layer's engine."""
    o: CellOptions = module.options
    training = module.training
    if o.weight_drop and training:
        w_hh = F.dropout(w_hh, p=o.weight_drop, training=True)         # one DropConnect mask per forward
    if not o.needs_variant_scan(module.mode):
        # (init and forget-bias options change only the parameters; a cell has no engine: the scan)
        run_scan = get_engine(module.engine) if hasattr(module, "engine") else scan
        return run_scan(module.mode, seq, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask=mask, tag=tag)
    T, B, _ = seq.shape
    H = module.hidden_size
    sfx = _suffixes(module)[k]
    extras = {name[: len(name) - len(sfx)]: getattr(module, name) for name in module._extra_names[k]}
    rd = zo_h = zo_c = None
    if o.recurrent_dropout and training:
        keep = 1.0 - o.recurrent_dropout
        rd = seq.new_empty(B, H).bernoulli_(keep).div_(keep)            # one mask per sequence
    zoneouts = [o.zoneout, o.zoneout_c if module.mode == "lstm" else 0.0]
    masks = []
    for p in zoneouts:
        if not p:
            masks.append(None)
        elif training:
            masks.append(seq.new_empty(T, B, H).bernoulli_(p))          # 1 = keep the previous value
        else:
            masks.append(seq.new_full((1, 1, 1), p).expand(T, B, H))   # the mask's expectation
    zo_h, zo_c = masks
    return variant_scan(
        spec_for(module), seq, h0, c0, w_ih, w_hh, b_ih, b_hh,
        ln_gain_ih=extras.get("ln_gain_ih"), ln_gain_hh=extras.get("ln_gain_hh"),
        ln_gain_c=extras.get("ln_gain_cell"), ln_bias_c=extras.get("ln_bias_cell"),
        peephole=extras.get("peephole"), rd_mask=rd, zoneout_h=zo_h, zoneout_c=zo_c, mask=mask, tag=tag,
        engine=getattr(module, "engine", "reference"),    # a single-step cell has none: the reference
    )
