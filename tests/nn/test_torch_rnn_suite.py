"""PyTorch's own RNN tests, adapted, run once with torch.nn's classes and once with rnnlab's.

Two sources, both rewritten here rather than copied:

- the generic module tests of PyTorch's ``test/test_modules.py`` (forward against the
  unbatched reference, factory kwargs, repr, pickling, non-contiguous inputs, gradcheck,
  gradgradcheck, memory format, the train/eval flag, construction on the meta device, error
  inputs), driven by the RNN/LSTM/GRU/*Cell entries of ``module_db`` in
  ``torch.testing._internal.common_modules`` (shipped in the torch wheel): the samples, reference
  functions and expected errors are torch's, only the class is swapped;
- the RNN tests of PyTorch's ``test/test_nn.py`` that run on a CPU (cells, argument checks,
  initial states, projections, dropout, weight norm, nonlinearity, retained graphs, variable
  lengths, first and second derivatives), each written against an ``impl`` namespace.

Every case runs for ``impl="torch"`` (the reference: a failure there is a bug in the adaptation)
and ``impl="rnnlab"``. A case rnnlab cannot pass would be marked xfail with its reason; there
are none (docs/compatibility.md lists what differs outside these tests).

The gradient checks use torch's testing wrappers (fast mode, batched gradients). By default they
check the total derivative on every fifth (gradgradcheck: every tenth) of module_db's samples,
a spread over bias, batch_first, bidirectional, projections, initial states and nonlinearity,
to keep the suite short; ``RNNLAB_TORCH_SUITE=all`` checks every sample and
``RNNLAB_TORCH_SUITE=full`` adds torch's per-parameter partial derivatives (many more
gradchecks: long).
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import types
from itertools import product

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils._pytree import tree_flatten, tree_unflatten

import rnnlab.nn

common_modules = pytest.importorskip("torch.testing._internal.common_modules",
                                     reason="torch.testing._internal needs the expecttest package")
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402
from torch.testing._internal.common_utils import freeze_rng_state, gradcheck, gradgradcheck  # noqa: E402

LEVEL = os.environ.get("RNNLAB_TORCH_SUITE", "")
FULL = LEVEL == "full"
ALL_SAMPLES = LEVEL in ("all", "full")
NAMES = ("RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell")
IMPLS = {"torch": nn, "rnnlab": rnnlab.nn}
INFOS = {info.module_cls.__name__: info for info in module_db if info.module_cls.__name__ in NAMES
         and info.module_cls is getattr(nn, info.module_cls.__name__)}
assert sorted(INFOS) == sorted(NAMES)

# torch.nn warns that oneDNN lacks projections (float32 LSTM on the CPU): torch's, not rnnlab's.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning")


def _cases(dtypes=(torch.float32, torch.float64), trainings=(True, False)):
    return [pytest.param(impl, name, dtype, training, id=f"{impl}-{name}-{str(dtype)[6:]}-{'train' if training else 'eval'}")
            for impl, name, dtype, training in product(IMPLS, NAMES, dtypes, trainings)]


def _samples(name, dtype, training, requires_grad=False, device="cpu"):
    info = INFOS[name]
    return info.module_inputs_func(info, device=device, dtype=dtype, requires_grad=requires_grad, training=training)


def _build(impl, name, sample, dtype, training):
    c = sample.constructor_input
    m = getattr(IMPLS[impl], name)(*c.args, **c.kwargs)
    m.to("cpu").to(dtype)
    m.train(training)
    return m


def _tensors(obj):
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


# ============================================================ test_modules.py, over module_db
@pytest.mark.parametrize("impl, name, dtype, training", _cases())
def test_forward(impl, name, dtype, training):
    """Output equals torch's unbatched reference (the batched call squeezed); .float()/.double()
    convert every parameter."""
    for sample in _samples(name, dtype, training):
        with freeze_rng_state():
            m = _build(impl, name, sample, dtype, training)
            args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
            out = m(*args, **kwargs)
            if sample.reference_fn is not None:
                torch.testing.assert_close(out, sample.reference_fn(m, *args, **kwargs))  # params passed by ModuleInput
            (m.float() if dtype == torch.float32 else m.double())(*args, **kwargs)
            assert all(p.dtype == dtype and p.device.type == "cpu" for p in m.parameters())


@pytest.mark.parametrize("impl, name, dtype, training", _cases())
def test_factory_kwargs(impl, name, dtype, training):
    for sample in _samples(name, dtype, training):
        c = sample.constructor_input
        m = getattr(IMPLS[impl], name)(*c.args, **{**c.kwargs, "device": "cpu", "dtype": dtype})
        m.train(training)
        params = list(m.parameters())
        assert params and all(p.dtype == dtype and p.device == torch.device("cpu") for p in params)


@pytest.mark.parametrize("impl, name, dtype, training", _cases())
def test_repr(impl, name, dtype, training):
    for sample in _samples(name, dtype, training):
        m = _build(impl, name, sample, dtype, training)
        assert name in repr(m) and str(m) == repr(m)


@pytest.mark.parametrize("impl, name, dtype, training", _cases())
def test_pickle(impl, name, dtype, training):
    """torch.save / torch.load of the whole module gives the same outputs."""
    for sample in _samples(name, dtype, training):
        with freeze_rng_state():
            m = _build(impl, name, sample, dtype, training)
            args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
            out = m(*args, **kwargs)
            buf = io.BytesIO()
            torch.save(m, buf)
            buf.seek(0)
            copy_ = torch.load(buf, weights_only=False)
            torch.testing.assert_close(copy_(*args, **kwargs), out)


def _noncontiguous(obj):
    def nc(t):
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        out = torch.repeat_interleave(t, 2, dim=-1)[..., ::2].detach()
        assert not out.is_contiguous() or out.numel() <= 1
        return out.requires_grad_(t.requires_grad)
    flat, spec = tree_flatten(obj)
    return tree_unflatten([nc(t) for t in flat], spec)


def _input_and_param_grads(m, args, kwargs, grads):
    leaves = [t for t in _tensors((args, kwargs)) if t.requires_grad] + list(m.parameters())
    outs = [o for o in _tensors(m(*args, **kwargs)) if o.requires_grad]
    return outs, torch.autograd.grad(outs, leaves, grads, allow_unused=True)


@pytest.mark.parametrize("impl, name, dtype, training", _cases())
def test_non_contiguous_tensors(impl, name, dtype, training):
    """Contiguous and strided inputs (and output gradients) give the same outputs and gradients."""
    for sample in _samples(name, dtype, training, requires_grad=True):
        m = _build(impl, name, sample, dtype, training)
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        with freeze_rng_state():
            outs = [o for o in _tensors(m(*args, **kwargs)) if o.requires_grad]
        grads = [torch.randn_like(o) for o in outs]
        with freeze_rng_state():
            ref_out, ref_grads = _input_and_param_grads(m, args, kwargs, grads)
        nc_args, nc_kwargs = _noncontiguous((args, kwargs))
        for a, k, g in product(((args, kwargs), (nc_args, nc_kwargs)), [(args, kwargs)], (grads, _noncontiguous(grads))):
            with freeze_rng_state():
                out, got = _input_and_param_grads(m, *a, g)
            torch.testing.assert_close(out, ref_out)
            torch.testing.assert_close(got, ref_grads, atol=1e-4, rtol=0)


def _gradient_checks(impl, name, training, check, stride):
    dtype = torch.float64
    samples = list(_samples(name, dtype, training, requires_grad=True))
    for sample in (samples if ALL_SAMPLES else samples[::stride]):
        m = _build(impl, name, sample, dtype, training)
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        params = tuple(m.parameters())
        flat, spec = tree_flatten((args, params))

        def fn(*flat_inputs):
            new_args, new_params = tree_unflatten(list(flat_inputs), spec)
            with freeze_rng_state():
                out = torch.func.functional_call(m, dict(zip([n for n, _ in m.named_parameters()], new_params)),
                                                 new_args, kwargs)
            return tuple(tree_flatten(out)[0])

        assert check(fn, flat)                                    # the total derivative
        if FULL:                                                  # each parameter on its own
            for p in params:
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
                assert check(fn, tree_flatten((args, params))[0])
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)


@pytest.mark.parametrize("impl, name, dtype, training", _cases(dtypes=(torch.float64,)))
def test_grad(impl, name, dtype, training):
    _gradient_checks(impl, name, training, gradcheck, stride=5)


@pytest.mark.parametrize("impl, name, dtype, training", _cases(dtypes=(torch.float64,)))
def test_gradgrad(impl, name, dtype, training):
    _gradient_checks(impl, name, training, gradgradcheck, stride=10)


@pytest.mark.parametrize("impl, name, dtype, training", _cases())
def test_memory_format(impl, name, dtype, training):
    """Outputs and gradients come back contiguous and unchanged by cloned (contiguous) inputs."""
    for sample in _samples(name, dtype, training, requires_grad=True):
        with freeze_rng_state():
            m = _build(impl, name, sample, dtype, training)
            args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
            out = m(*args, **kwargs)
            clones = tree_unflatten([t.clone().detach().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
                                     for t in tree_flatten(args)[0]], tree_flatten(args)[1])
            out2 = m(*clones, **kwargs)
        torch.testing.assert_close(out2, out)
        assert all(t.is_contiguous() for t in _tensors(out2))
        if training:
            outs = [o for o in _tensors(out2) if o.requires_grad]
            leaves = [t for t in _tensors(clones) if t.requires_grad] + list(m.parameters())
            grads = torch.autograd.grad(outs, leaves, [torch.rand_like(o) for o in outs])
            assert all(g.is_contiguous() for g in grads)


@pytest.mark.parametrize("impl, name, dtype, training", _cases(trainings=(True,)))
def test_if_train_and_eval_modes_differ(impl, name, dtype, training):
    """module_db says whether forward reads ``self.training``; without the attribute the forward
    either runs or fails on exactly that attribute, and then the entry must say so."""
    for sample in _samples(name, dtype, training):
        m = _build(impl, name, sample, dtype, training)
        delattr(m, "training")
        try:
            m(*sample.forward_input.args, **sample.forward_input.kwargs)
        except AttributeError as e:
            assert "'training'" in str(e) and INFOS[name].train_and_eval_differ


@pytest.mark.parametrize("impl, name, dtype, training", _cases())
def test_device_ctx_init(impl, name, dtype, training):
    """Built under ``with torch.device('meta')``, the parameters are meta tensors with the CPU
    build's shapes, strides and dtypes."""
    for sample in _samples(name, dtype, training):
        c = sample.constructor_input
        cls = getattr(IMPLS[impl], name)
        cpu = cls(*c.args, **c.kwargs)
        with torch.device("meta"):
            meta = cls(*c.args, **c.kwargs)
        pairs = list(zip(meta.parameters(), cpu.parameters())) + list(zip(meta.buffers(), cpu.buffers()))
        assert len(pairs) == len(list(cpu.parameters())) + len(list(cpu.buffers()))
        for p_meta, p_cpu in pairs:
            assert p_meta.is_meta
            assert (p_meta.shape, p_meta.stride(), p_meta.dtype, p_meta.requires_grad) == \
                (p_cpu.shape, p_cpu.stride(), p_cpu.dtype, p_cpu.requires_grad)


@pytest.mark.parametrize("impl, name, dtype, training", _cases())
def test_errors(impl, name, dtype, training):
    """torch's error inputs raise torch's exception type with a message matching torch's regex."""
    info = INFOS[name]
    for err in info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=False, training=training):
        sample = err.module_error_input
        c = sample.constructor_input
        cls = getattr(IMPLS[impl], name)
        if err.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
            with pytest.raises(err.error_type, match=err.error_regex):
                cls(*c.args, **c.kwargs)
        else:
            m = cls(*c.args, **c.kwargs)
            with pytest.raises(err.error_type, match=err.error_regex):
                m(*sample.forward_input.args, **sample.forward_input.kwargs)


# ============================================================ test_nn.py's RNN tests
impls = pytest.mark.parametrize("impl", list(IMPLS))


def _ns(impl) -> types.SimpleNamespace:
    mod = IMPLS[impl]
    return types.SimpleNamespace(**{n: getattr(mod, n) for n in NAMES})


@impls
def test_RNN_cell(impl):
    """Smoke test: six steps of RNNCell / GRUCell with and without bias, then backward."""
    ns = _ns(impl)
    for cls, bias in product((ns.RNNCell, ns.GRUCell), (True, False)):
        cell = cls(10, 20, bias=bias)
        x, hx = torch.randn(3, 10), torch.randn(3, 20)
        for _ in range(6):
            hx = cell(x, hx)
        hx.sum().backward()
        assert all(p.grad is not None for p in cell.parameters())


@impls
def test_RNN_cell_forward_zero_hidden_size(impl):
    ns = _ns(impl)
    x, hx = torch.randn(3, 10), torch.randn(3, 0)
    for cell in (ns.RNNCell(10, 0, nonlinearity="relu"), ns.RNNCell(10, 0), ns.GRUCell(10, 0)):
        assert cell(x, hx).shape == (3, 0)
    h, c = ns.LSTMCell(10, 0)(x, (hx, hx))
    assert h.shape == c.shape == (3, 0)


@impls
def test_RNN_cell_forward_input_and_hidden_size(impl):
    """A wrong input or hidden size is a RuntimeError."""
    ns = _ns(impl)
    for cell in (ns.RNNCell(10, 20), ns.GRUCell(10, 20)):
        with pytest.raises(RuntimeError):
            cell(torch.randn(3, 11), torch.randn(3, 20))
        with pytest.raises(RuntimeError):
            cell(torch.randn(3, 10), torch.randn(3, 21))
    with pytest.raises(RuntimeError):
        ns.LSTMCell(10, 20)(torch.randn(3, 10), (torch.randn(3, 20), torch.randn(3, 21)))


@impls
def test_RNN_cell_no_broadcasting(impl):
    """States do not broadcast against the batch: (3, 1), (1, 20) and a batch of 2 are refused."""
    ns = _ns(impl)
    for cls in (ns.RNNCell, ns.GRUCell):
        cell = cls(10, 20)
        for hx in (torch.randn(3, 1), torch.randn(1, 20), torch.randn(2, 20)):
            with pytest.raises(RuntimeError):
                cell(torch.randn(3, 10), hx)
    cell = ns.LSTMCell(10, 20)
    for hx in (torch.randn(3, 1), torch.randn(1, 20)):
        with pytest.raises(RuntimeError):
            cell(torch.randn(3, 10), (hx, torch.randn(3, 20)))


@impls
def test_rnn_args_check(impl):
    """Layers refuse a wrong input size, hidden size, layer count or batch with a RuntimeError."""
    ns = _ns(impl)
    T, B, I, H, L = 3, 5, 4, 6, 2
    for name, bidir in product(("RNN", "GRU", "LSTM"), (False, True)):
        D = 2 if bidir else 1
        m = getattr(ns, name)(I, H, L, bidirectional=bidir)

        def state(shape):
            return (torch.randn(shape), torch.randn(shape)) if name == "LSTM" else torch.randn(shape)

        m(torch.randn(T, B, I), state((L * D, B, H)))                     # the right shapes run
        for x, hx in ((torch.randn(T, B, I + 1), state((L * D, B, H))),    # input size
                      (torch.randn(T, B, I), state((L * D, B, H + 1))),    # hidden size
                      (torch.randn(T, B, I), state((L * D + 1, B, H))),    # layers x directions
                      (torch.randn(T, B, I), state((L * D, B + 1, H)))):   # batch
            with pytest.raises(RuntimeError):
                m(x, hx)
        if name == "LSTM":
            with pytest.raises(RuntimeError):
                m(torch.randn(T, B, I), (torch.randn(L * D, B, H), torch.randn(L * D, B, H + 1)))


@impls
def test_projections_lstm_args_check(impl):
    ns = _ns(impl)
    T, B, I, H, P, L = 3, 5, 4, 6, 2, 2
    for bidir in (False, True):
        D = 2 if bidir else 1
        m = ns.LSTM(I, H, L, proj_size=P, bidirectional=bidir)
        out, (h, c) = m(torch.randn(T, B, I), (torch.randn(L * D, B, P), torch.randn(L * D, B, H)))
        assert out.shape == (T, B, D * P) and h.shape == (L * D, B, P) and c.shape == (L * D, B, H)
        for hx in ((torch.randn(L * D, B, H), torch.randn(L * D, B, H)),      # h has the projected size
                   (torch.randn(L * D, B, P), torch.randn(L * D, B, P))):     # c has the full size
            with pytest.raises(RuntimeError):
                m(torch.randn(T, B, I), hx)


@impls
def test_projections_errors_on_gru_and_rnn(impl):
    ns = _ns(impl)
    for cls in (ns.RNN, ns.GRU):
        with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM, not RNN or GRU"):
            cls(4, 6, 2, proj_size=3)


@impls
def test_rnn_initial_hidden_state(impl):
    """hx=None is the zero state."""
    ns = _ns(impl)
    x = torch.randn(3, 2, 4)
    for name in ("RNN", "GRU", "LSTM"):
        m = getattr(ns, name)(4, 5, 2)
        zeros = torch.zeros(2, 2, 5)
        out1, h1 = m(x, (zeros, zeros) if name == "LSTM" else zeros)
        out2, h2 = m(x)
        torch.testing.assert_close(out1, out2)
        torch.testing.assert_close(h1, h2)


@impls
def test_projections_lstm_initial_hidden_state(impl):
    ns = _ns(impl)
    for bidir in (False, True):
        m = ns.LSTM(4, 6, 2, proj_size=3, bidirectional=bidir)
        D = 2 if bidir else 1
        x = torch.randn(3, 2, 4)
        out1, (h1, c1) = m(x, (torch.zeros(2 * D, 2, 3), torch.zeros(2 * D, 2, 6)))
        out2, (h2, c2) = m(x)
        torch.testing.assert_close((out1, h1, c1), (out2, h2, c2))


@impls
def test_RNN_input_size_zero_batch(impl):
    """A batch of zero sequences runs forward and backward."""
    ns = _ns(impl)
    for name in ("RNN", "GRU", "LSTM"):
        x = torch.zeros(5, 0, 3, requires_grad=True)
        out, _ = getattr(ns, name)(3, 4)(x)
        assert out.shape == (5, 0, 4)
        out.sum().backward()
        assert x.grad.shape == x.shape


@impls
def test_error_RNN_seq_len_zero(impl):
    ns = _ns(impl)
    for name in ("RNN", "GRU", "LSTM"):
        m = getattr(ns, name)(3, 4)
        for x in (torch.zeros(0, 2, 3), torch.zeros(0, 3)):
            with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0 in RNN"):
                m(x)


def _dropout_rnn(ns, p, train):
    """torch's construction: a 2-layer relu RNN with every weight 1, so each output of layer 1 is
    100 · 100 = 10000 and dropout between the layers scales or zeroes it."""
    rnn = ns.RNN(10, 1000, 2, bias=False, dropout=p, nonlinearity="relu")
    with torch.no_grad():
        for w in rnn.parameters():
            w.fill_(1)
        rnn.weight_ih_l0.fill_(1 / 10)                     # layer 1: 10 inputs of 1 -> 1
    rnn.train(train)
    return rnn


@impls
def test_RNN_dropout(impl):
    ns = _ns(impl)
    for p, train in product((0, 0.276, 0.731, 1), (True, False)):
        rnn = _dropout_rnn(ns, p, train)
        x, hx = torch.ones(1, 1, 10), torch.zeros(2, 1, 1000)
        out, hy = rnn(x, hx)
        assert out.min() == out.max()                       # every unit of layer 2 sums the same inputs
        value = out.max().item()
        if p == 0 or not train:
            assert value == 1000.0
        elif p == 1:
            assert value == 0.0
        else:                                               # (kept units) / (1 - p)
            kept = value * (1 - p)
            assert 0 < kept < 1000 and abs(kept - round(kept)) < 1e-2
        assert hy[0].min() == hy[0].max() == 1.0


@impls
def test_RNN_dropout_state(impl):
    """Pickling keeps the dropout setting; in eval two calls agree, before and after."""
    ns = _ns(impl)
    for p, train in product((0, 0.1234), (True, False)):
        rnn = ns.RNN(20, 20, 2, bias=False, dropout=p, nonlinearity="relu")
        rnn.train(train)
        x, hx = torch.rand(1, 1, 20), torch.rand(2, 1, 20)
        out1, hy1 = rnn(x, hx)
        out2, hy2 = rnn(x, hx)
        rnn2 = pickle.loads(pickle.dumps(rnn))
        assert rnn2.dropout == p and rnn2.training == train
        out3, hy3 = rnn2(x, hx)
        if p == 0 or not train:
            torch.testing.assert_close((out1, hy1), (out2, hy2))
            torch.testing.assert_close((out1, hy1), (out3, hy3))


@impls
def test_RNN_change_dropout(impl):
    """``rnn.dropout = p`` after construction takes effect."""
    ns = _ns(impl)
    rnn = ns.RNN(100, 100, 2, bias=False, dropout=0.0, nonlinearity="relu")   # no bias: p=1 gives 0
    x = torch.rand(1, 2, 100)
    prev = None
    for p, train in product((0, 0.5, 0, 0.7, 0, 1, 1, 0), (True, False)):
        rnn.dropout = p
        rnn.train(train)
        out, _ = rnn(x)
        if p == 1 and train:
            assert out.abs().sum() == 0
        elif p == 0 or not train:
            if prev is not None:
                torch.testing.assert_close(out, prev)
            prev = out


@impls
@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_rnn_weight_norm(impl):
    """weight_norm on a layer turns one entry of ``_flat_weights`` into a computed tensor and
    remove_weight_norm restores the Parameter, keeping ``_flat_weights`` in step with the attributes."""
    ns = _ns(impl)
    for m, pname, count in ((ns.LSTM(8, 8), "weight_ih_l0", 4), (ns.LSTM(8, 8, proj_size=4), "weight_hr_l0", 5)):
        x = torch.randn(2, 3, 8)
        before, _ = m(x)
        m = torch.nn.utils.weight_norm(m, name=pname)
        assert sum(isinstance(p, nn.Parameter) for p in m._flat_weights) == count - 1
        torch.testing.assert_close(m(x)[0], before)
        m = torch.nn.utils.remove_weight_norm(m, name=pname)
        assert sum(isinstance(p, nn.Parameter) for p in m._flat_weights) == count
        assert m._flat_weights == [getattr(m, n) for n in m._flat_weights_names]


@impls
def test_flatten_parameters(impl):
    """flatten_parameters() exists and changes nothing on the CPU; all_weights follows the names."""
    ns = _ns(impl)
    m = ns.LSTM(3, 4, 2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    out, _ = m(x)
    assert m.flatten_parameters() is None
    torch.testing.assert_close(m(x)[0], out)
    assert [[n for n in names] for names in m._all_weights][0] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert [p for ps in m.all_weights for p in ps] == m._flat_weights == list(m.parameters())


@impls
def test_RNN_nonlinearity(impl):
    ns = _ns(impl)
    assert ns.RNN(1, 10).nonlinearity == "tanh"
    assert ns.RNN(1, 10, nonlinearity="relu").nonlinearity == "relu"
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        ns.RNN(1, 10, nonlinearity="garbage")


@impls
def test_RNN_nonlinearity_passed_as_arg(impl):
    ns = _ns(impl)
    rnn = ns.RNN(2, 3, 1, "relu")
    x = torch.randn(1, 1, 2)
    rnn(x)
    assert rnn.nonlinearity == "relu"


@impls
def test_rnn_retain_variables(impl):
    """Backward twice through a retained graph accumulates the same gradient twice."""
    ns = _ns(impl)
    for name, dtype in product(("RNN", "GRU", "LSTM"), (torch.float32, torch.float64)):
        m = getattr(ns, name)(10, 20, num_layers=2).to(dtype)
        x = torch.randn(5, 6, 10, dtype=dtype, requires_grad=True)
        out = m(x)
        out[0].sum().backward(retain_graph=True)
        grads = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
        for _ in range(4):
            m.zero_grad()
            x.grad.zero_()
            out[0].sum().backward(retain_graph=True)
            torch.testing.assert_close([x.grad] + [p.grad for p in m.parameters()], grads)


@impls
def test_variable_sequence(impl):
    """A packed batch of unequal lengths equals each sequence run on its own (outputs and final
    states), and so do the gradients."""
    ns = _ns(impl)
    lengths = [10, 10, 6, 2, 2, 1, 1]
    for bidir, name in product((False, True), ("LSTM", "GRU", "RNN")):
        torch.manual_seed(0)
        m = getattr(ns, name)(3, 4, bidirectional=bidir, num_layers=2).double()
        x = torch.randn(max(lengths), len(lengths), 3, dtype=torch.float64, requires_grad=True)
        packed_out, state = m(pack_padded_sequence(x, lengths))
        out, _ = pad_packed_sequence(packed_out)
        h = state[0] if name == "LSTM" else state
        grad = torch.randn_like(out)
        (out * grad).sum().backward()
        for b, n in enumerate(lengths):
            xb = x[:n, b : b + 1].detach().requires_grad_()
            ob, sb = m(xb)
            hb = sb[0] if name == "LSTM" else sb
            torch.testing.assert_close(out[:n, b : b + 1], ob)
            torch.testing.assert_close(h[:, b : b + 1], hb)
            (ob * grad[:n, b : b + 1]).sum().backward()
            torch.testing.assert_close(x.grad[:n, b], xb.grad[:, 0])
            assert (out[n:, b] == 0).all()


@impls
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_grad_and_gradgrad(impl, name):
    """gradcheck and gradgradcheck of a 2-layer bidirectional layer with an initial state."""
    ns = _ns(impl)
    torch.manual_seed(0)
    m = getattr(ns, name)(2, 3, 2, bidirectional=True).double()
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]

    def fn(x, h, c, *params):
        hx = (h, c) if name == "LSTM" else h
        out, state = torch.func.functional_call(m, dict(zip(names, params)), (x, hx))
        return (out, *state) if name == "LSTM" else (out, state)

    args = (x, h, c) + tuple(p.detach().requires_grad_() for p in m.parameters())
    assert gradcheck(fn, args)
    assert gradgradcheck(fn, args)


@impls
def test_lstmcell_backward_only_one_output_grad(impl):
    """Backward from h' alone or from c' alone reaches the input."""
    ns = _ns(impl)
    cell = ns.LSTMCell(2, 3).double()
    x = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
    for i in range(2):
        out = cell(x)[i]
        out.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        x.grad = None


@impls
def test_LSTM_differentiable_backward(impl):
    """A create_graph backward through a stacked batch-first LSTM, then a backward of that
    gradient: equal to torch.nn's with the same weights."""
    ns = _ns(impl)
    torch.manual_seed(0)
    net = ns.LSTM(3, 3, 4, batch_first=True)
    ref = nn.LSTM(3, 3, 4, batch_first=True)
    ref.load_state_dict(net.state_dict())
    x = torch.rand(4, 6, 3)
    results = []
    for m in (ref, net):
        xi = x.clone().requires_grad_()
        out, _ = m(xi)
        (d,) = torch.autograd.grad(out, xi, torch.ones_like(out), create_graph=True)
        d.sum().backward()
        results.append((d.detach(), xi.grad, [p.grad for p in m.parameters()]))
    torch.testing.assert_close(results[1], results[0])


@impls
def test_deepcopy_and_state_dict_across_impls(impl):
    """A state dict moves between torch.nn and the implementation under test in both directions
    and a deep copy computes the same."""
    ns = _ns(impl)
    for name in NAMES:
        kw = {"proj_size": 2} if name == "LSTM" else {}
        ours, ref = getattr(ns, name)(3, 4, **kw), getattr(nn, name)(3, 4, **kw)
        ours.load_state_dict(ref.state_dict())
        ref.load_state_dict(copy.deepcopy(ours).state_dict())
        x = torch.randn(5, 3) if name.endswith("Cell") else torch.randn(5, 2, 3)
        torch.testing.assert_close(ours(x), ref(x))


def test_adaptation_can_fail(monkeypatch):
    """The forward case notices a wrong implementation: swap rnnlab's GRU for one whose output for
    an unbatched input is shifted by 1e-3."""
    class Shifted(rnnlab.nn.GRU):
        def forward(self, input, hx=None):
            out, h = super().forward(input, hx)
            return (out + 1e-3 if input.dim() == 2 else out), h

    monkeypatch.setitem(IMPLS, "rnnlab", types.SimpleNamespace(**{**{n: getattr(rnnlab.nn, n) for n in NAMES}, "GRU": Shifted}))
    with pytest.raises(AssertionError):
        test_forward("rnnlab", "GRU", torch.float64, False)


def test_error_inputs_are_checked_by_type_and_message():
    """The errors case fails when the message lacks torch's text even though the type matches."""
    info = INFOS["RNN"]
    err = info.module_error_inputs_func(info, device="cpu", dtype=torch.float32, requires_grad=False, training=False)[0]
    with pytest.raises(AssertionError):
        with pytest.raises(err.error_type, match=err.error_regex):
            raise ValueError("hidden_size: expected an int > 0, got 0")
