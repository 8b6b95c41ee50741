"""Attention layers against their formulas written out position by position, masks, and float64 gradcheck."""

from __future__ import annotations

import pytest
import torch

from rnnlab.errors import ConfigError, ShapeError
from rnnlab.nn.attention import AdditiveAttention, DotAttention, GeneralAttention, make_attention

B, S, Q, K, A = 3, 5, 4, 6, 7
LENGTHS = [5, 2, 3]


def _mask(lengths, S):
    return torch.arange(S).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def _layer(kind, dtype=torch.float64):
    torch.manual_seed(0)
    if kind == "dot":
        return DotAttention(Q, Q)
    return make_attention(kind, Q, K, A).to(dtype)


def _key_size(kind):
    return Q if kind == "dot" else K


def _reference(layer, kind, q, keys, lengths):
    """Scores, softmax and context for each example and each real position, in plain loops."""
    ctx, wts = [], []
    for b in range(q.shape[0]):
        e = []
        for s in range(lengths[b]):
            k = keys[b, s]
            if kind == "additive":
                pre = layer.query_proj.weight @ q[b] + layer.query_proj.bias + layer.key_proj.weight @ k
                e.append(layer.v @ torch.tanh(pre))
            elif kind == "general":
                e.append(q[b] @ (layer.key_proj.weight @ k))
            else:
                e.append(q[b] @ k)
        e = torch.stack(e)
        w = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
        full = torch.zeros(keys.shape[1], dtype=keys.dtype)
        full[: lengths[b]] = w
        wts.append(full)
        ctx.append((w.unsqueeze(1) * keys[b, : lengths[b]]).sum(0))
    return torch.stack(ctx), torch.stack(wts)


@pytest.mark.parametrize("kind", ["additive", "general", "dot"])
def test_matches_formula_with_mask(kind):
    layer = _layer(kind)
    q = torch.randn(B, Q, dtype=torch.float64)
    keys = torch.randn(B, S, _key_size(kind), dtype=torch.float64)
    ctx, w = layer(q, keys, _mask(LENGTHS, S))
    ref_ctx, ref_w = _reference(layer, kind, q, keys, LENGTHS)
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(ctx, ref_ctx)
    assert (w[1, 2:] == 0).all()


@pytest.mark.parametrize("kind", ["additive", "general", "dot"])
def test_padded_keys_do_not_matter(kind):
    layer = _layer(kind)
    q = torch.randn(B, Q, dtype=torch.float64)
    keys = torch.randn(B, S, _key_size(kind), dtype=torch.float64)
    mask = _mask(LENGTHS, S)
    other = keys.clone()
    other[~mask] = 1e3 * torch.randn(int((~mask).sum()), keys.shape[-1], dtype=torch.float64)
    torch.testing.assert_close(layer(q, keys, mask), layer(q, other, mask))


@pytest.mark.parametrize("kind", ["additive", "general", "dot"])
def test_steps_equal_single_queries_and_projection_cache(kind):
    layer = _layer(kind)
    T = 4
    q = torch.randn(B, T, Q, dtype=torch.float64)
    keys = torch.randn(B, S, _key_size(kind), dtype=torch.float64)
    mask = _mask(LENGTHS, S)
    ctx, w = layer(q, keys, mask)
    assert ctx.shape == (B, T, keys.shape[-1]) and w.shape == (B, T, S)
    proj = layer.project_keys(keys)
    for t in range(T):
        c1, w1 = layer(q[:, t], keys, mask, projected=proj)
        torch.testing.assert_close(c1, ctx[:, t])
        torch.testing.assert_close(w1, w[:, t])


@pytest.mark.parametrize("kind", ["additive", "general", "dot"])
def test_gradcheck_float64(kind):
    layer = _layer(kind)
    q = torch.randn(2, Q, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(2, 4, _key_size(kind), dtype=torch.float64, requires_grad=True)
    mask = _mask([4, 2], 4)
    params = list(layer.parameters())

    def f(q, keys, *ps):
        with torch.nn.utils.stateless._reparametrize_module(layer, dict(zip([n for n, _ in layer.named_parameters()], ps))):
            return layer(q, keys, mask)

    assert torch.autograd.gradcheck(f, (q, keys, *params))


def test_errors():
    with pytest.raises(ConfigError, match="dot attention key size: expected the query size 4, got 6"):
        DotAttention(4, 6)
    with pytest.raises(ConfigError, match="attention: expected additive or general or dot, got 'cosine'"):
        make_attention("cosine", 4, 4)
    with pytest.raises(ConfigError, match="attention_size: expected an int > 0"):
        AdditiveAttention(4, 4, 0)
    layer = GeneralAttention(4, 6)
    with pytest.raises(ShapeError, match=r"attention query shape: expected \(B, 4\) or \(B, T, 4\), got \(2, 5\)"):
        layer(torch.randn(2, 5), torch.randn(2, 3, 6))
    with pytest.raises(ShapeError, match="attention keys shape"):
        layer(torch.randn(2, 4), torch.randn(2, 3, 5))
    with pytest.raises(ShapeError, match="attention mask: expected a bool tensor of shape"):
        layer(torch.randn(2, 4), torch.randn(2, 3, 6), torch.ones(2, 3))
