"""Probe generators: shapes, balance, determinism, and that each label depends only on what the
task says it depends on (checked by perturbing everything else)."""

import math

import pytest
import torch

from rnnlab.data import probes
from rnnlab.data.probes import PROBES, get_probe
from rnnlab.errors import ConfigError

B = 2000


def test_shapes_and_dtypes():
    T = 24
    for name, spec in PROBES.items():
        b = spec.generate(T, 5, 0)
        steps = spec.seq_len(T)
        if spec.inputs == "tokens":
            assert b.x.shape == (steps, 5) and b.x.dtype == torch.long, name
            assert 0 <= int(b.x.min()) and int(b.x.max()) < spec.input_size(), name
        else:
            assert b.x.shape == (steps, 5, spec.input_size()) and b.x.dtype == torch.float32, name
        if spec.target == "per_step":
            assert b.y.shape == (steps, 5) and int(b.y.max()) < spec.n_out, name
        elif spec.loss == "ce":
            assert b.y.shape == (5,) and set(b.y.tolist()) <= set(range(spec.n_out)), name
        else:
            assert b.y.shape == (5,) and b.y.dtype == torch.float32, name


def test_deterministic_by_seed_and_generator():
    for name, spec in PROBES.items():
        a, b, c = spec.generate(30, 8, 7), spec.generate(30, 8, 7), spec.generate(30, 8, 8)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y), name
        assert not torch.equal(a.x, c.x), name
        g = spec.generate(30, 8, torch.Generator().manual_seed(7))
        assert torch.equal(a.x, g.x), name


@pytest.mark.parametrize("name", ["checksum", "distractor", "segments"])
@pytest.mark.parametrize("T", [16, 100])
def test_binary_probes_are_balanced(name, T):
    y = PROBES[name].generate(T, B, 1).y.float()
    assert abs(y.mean().item() - 0.5) < 0.05     # 5 sigma is 0.056 at B=2000


@pytest.mark.parametrize("name", list(PROBES))
def test_generator_agrees_with_label_function(name):
    label = getattr(probes, f"{name}_label")
    b = PROBES[name].generate(40, 300, 3)
    assert torch.equal(label(b.x), b.y)


def test_checksum_label_reads_keys_and_query_only():
    D, N = 10, 8                                   # digits, noise tokens; queries D+N (even), D+N+1 (odd)
    b = probes.checksum(50, 500, 0)
    x = b.x.clone()
    x[1:-1] = torch.randint(D, D + N, x[1:-1].shape)     # new noise
    assert torch.equal(probes.checksum_label(x), b.y)
    # Setting the query to the checksum's parity makes every label 1; to the other parity, 0.
    parity = b.x[0] % 2
    x[-1] = parity + D + N
    assert probes.checksum_label(x).all()
    x[-1] = (1 - parity) + D + N
    assert not probes.checksum_label(x).any()
    # Changing the key digit's parity flips every label.
    x2 = b.x.clone()
    x2[0] = (x2[0] + 1) % D
    assert torch.equal(probes.checksum_label(x2), 1 - b.y)
    # Hand-made, two keys: 3 + 4 = 7 is odd; the "odd" query matches.
    seq = torch.tensor([3, 4, 12, 15, D + N + 1])[:, None]
    assert probes.checksum_label(seq, n_keys=2).item() == 1


def test_checksum_query_alone_says_nothing():
    # P(label | query) = 1/2 for both queries: without the first token a model is at chance.
    b = probes.checksum(20, 20000, 5)
    for q in (18, 19):
        sel = b.x[-1] == q
        assert sel.sum() > 2000
        assert abs(b.y[sel].float().mean().item() - 0.5) < 0.03
    # Remembering the checksum alone is worth query_skew = 0.75 (predict "match" iff even).
    guess = (b.x[0] % 2 == 0).long()
    assert abs((guess == b.y).float().mean().item() - 0.75) < 0.02


def test_distractor_label_ignores_distractors():
    b = probes.distractor(60, 500, 0)
    is_signal = b.x < 2
    assert torch.equal(is_signal.sum(0), torch.full((500,), 3))
    for seed in range(5):
        x = b.x.clone()
        noise = torch.randint(2, 10, x.shape, generator=torch.Generator().manual_seed(seed))
        x = torch.where(is_signal, x, noise)
        assert torch.equal(probes.distractor_label(x), b.y)
    # Flipping every signal token flips every label (majority of an odd count).
    flipped = torch.where(is_signal, 1 - b.x, b.x)
    assert torch.equal(probes.distractor_label(flipped), 1 - b.y)
    # Hand-made: + - + among distractors -> 1.
    assert probes.distractor_label(torch.tensor([5, 0, 7, 1, 9, 0, 3])[:, None]).item() == 1


def test_segments_label_depends_only_on_last_segment():
    S = 6
    b = probes.segments(80, 500, 0)
    boundary = b.x == S + 1
    assert torch.equal(boundary.sum(0), torch.full((500,), 3))
    t = torch.arange(80)[:, None]
    last = torch.where(boundary, t, -1).amax(0)
    earlier = (t < last[None]) & ~boundary
    # Rewrite every earlier segment at random (flags included): labels are unchanged.
    for seed in range(5):
        junk = torch.randint(0, S + 1, b.x.shape, generator=torch.Generator().manual_seed(seed))
        x = torch.where(earlier, junk, b.x)
        assert torch.equal(probes.segments_label(x), b.y)
    # A flag placed in the last segment makes the label 1.
    x = b.x.clone()
    x[-1] = S
    assert probes.segments_label(x).all()
    # Earlier segments do carry flags (the test above would be empty otherwise).
    assert ((b.x == S) & earlier).any(0).float().mean() > 0.5
    # Hand-made: flag only before the boundary -> 0; flag after it -> 1.
    assert probes.segments_label(torch.tensor([S, 1, S + 1, 2, 3])[:, None]).item() == 0
    assert probes.segments_label(torch.tensor([0, 1, S + 1, S, 3])[:, None]).item() == 1


def test_adding_target_and_baseline():
    b = probes.adding(50, B, 0)
    marks = b.x[..., 1]
    assert torch.equal(marks.sum(0), torch.full((B,), 2.0))
    assert (marks[:25].sum(0) == 1).all() and (marks[25:].sum(0) == 1).all()
    # Changing unmarked values does not change the target.
    x = b.x.clone()
    x[..., 0] = torch.where(marks > 0, x[..., 0], torch.rand(50, B))
    assert torch.allclose(probes.adding_label(x), b.y)
    # Predicting 1 gives MSE close to 1/6.
    mse = ((b.y - 1.0) ** 2).mean().item()
    assert abs(mse - PROBES["adding"].chance(50)) < 0.015


def test_copy_layout_and_baseline():
    T = 30
    b = probes.copy(T, B, 0)
    assert b.x.shape == (T + 20, B)
    assert ((b.x[:10] >= 1) & (b.x[:10] <= 8)).all()
    assert (b.x[10:T + 9] == 0).all() and (b.x[T + 9] == 9).all() and (b.x[T + 10:] == 0).all()
    assert torch.equal(b.y[-10:], b.x[:10]) and (b.y[:-10] == 0).all()
    # The memoryless predictor (blank for sure, then uniform over 8) has exactly the baseline CE.
    logp = torch.full((T + 20, B, 9), -1e9)
    logp[:-10, :, 0] = 0.0
    logp[-10:, :, 1:] = -math.log(8)
    ce = torch.nn.functional.nll_loss(logp.reshape(-1, 9), b.y.reshape(-1)).item()
    assert ce == pytest.approx(PROBES["copy"].chance(T), rel=1e-5)
    assert PROBES["copy"].chance(T) == pytest.approx(10 * math.log(8) / (T + 20))


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="probe"):
        get_probe("nope")
    with pytest.raises(ConfigError, match="length T"):
        probes.checksum(1, 4, 0)
    with pytest.raises(ConfigError, match="batch size"):
        probes.adding(10, 0, 0)
    with pytest.raises(ConfigError, match="params"):
        PROBES["checksum"].generate(10, 4, 0, bogus=1)
    with pytest.raises(ConfigError, match="seed"):
        probes.copy(10, 4, "x")
