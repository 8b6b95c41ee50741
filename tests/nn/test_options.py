"""rnnlab.nn.options.CellOptions: is_default() (read on every layer call) agrees with comparing
every field to torch.nn's behaviour, however the options were built."""

import copy
import dataclasses
import pickle

import pytest
import torch

import rnnlab

from rnnlab.nn.options import CellOptions

NON_DEFAULT = {"layer_norm": True, "peephole": True, "coupled_gates": True, "gru_reset": "before",
               "recurrent_dropout": 0.1, "zoneout": 0.1, "zoneout_cell": 0.2, "weight_drop": 0.3,
               "forget_bias": 1.0, "init": "orthogonal", "t_max": 10.0}


def test_every_field_is_listed():
    assert set(NON_DEFAULT) == {f.name for f in dataclasses.fields(CellOptions)}


def test_defaults_are_default():
    assert CellOptions().is_default()
    assert CellOptions.from_dict({}).is_default()
    assert CellOptions(zoneout=0.0, forget_bias=None).is_default()


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_one_changed_field_is_not_default(name):
    changed = CellOptions(**{name: NON_DEFAULT[name]})
    assert not changed.is_default()
    assert changed != CellOptions()
    # built otherwise: replace, from_dict, copies and pickles keep the answer
    assert not dataclasses.replace(CellOptions(), **{name: NON_DEFAULT[name]}).is_default()
    assert not CellOptions.from_dict({name: NON_DEFAULT[name]}).is_default()
    assert not copy.deepcopy(changed).is_default()
    assert not pickle.loads(pickle.dumps(changed)).is_default()
    assert dataclasses.replace(changed, **{name: getattr(CellOptions(), name)}).is_default()


def test_zoneout_pair_and_nan():
    assert not CellOptions.from_dict({"zoneout": (0.0, 0.1)}).is_default()
    assert CellOptions.from_dict({"zoneout": (0.0, 0.0)}).is_default() is False   # zoneout_cell 0.0 is not None
    assert not CellOptions(weight_drop=float("nan")).is_default()


def test_equality_and_hash_ignore_the_cached_answer():
    a, b = CellOptions(layer_norm=True), CellOptions(layer_norm=True)
    assert a == b and hash(a) == hash(b)
    assert dataclasses.asdict(CellOptions()) == {f.name: f.default for f in dataclasses.fields(CellOptions)}


def test_an_instance_pickled_without_the_cached_answer_loads():
    """A model pickled by an earlier version holds options without the cached answer."""
    for opts in (CellOptions(), CellOptions(zoneout=0.1)):
        old = copy.copy(opts)
        old.__dict__.pop("_default")
        loaded = pickle.loads(pickle.dumps(old))
        assert loaded.is_default() == opts.is_default() and loaded == opts


@pytest.mark.parametrize("cls,kw", [("LSTMCell", {"forget_bias": 1.0}), ("GRUCell", {"init": "orthogonal"}),
                                    ("RNNCell", {"nonlinearity": "relu", "init": "identity"})])
def test_cells_with_parameter_only_options_run_as_torch_nn(cls, kw):
    """Options that only set parameters (init, forget_bias) leave a cell's forward torch.nn's: the
    same numbers from the same weights (a cell has no engine attribute to run them on)."""
    torch.manual_seed(0)
    ours = getattr(rnnlab, cls)(4, 16, **kw)
    theirs = getattr(torch.nn, cls)(4, 16, **({"nonlinearity": "relu"} if cls == "RNNCell" else {}))
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4)
    a, b = ours(x), theirs(x)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    assert torch.allclose(a, b, atol=1e-6)


def test_equation_options_leave_out_parameter_only_and_training_only_fields():
    """What Stream and --pt2 name as changing the equations: never initialisation or weight drop;
    recurrent dropout only outside inference."""
    o = CellOptions(layer_norm=True, recurrent_dropout=0.1, weight_drop=0.2, forget_bias=1.0, init="orthogonal")
    assert o.equation_options() == {"layer_norm": True, "recurrent_dropout": 0.1}
    assert o.equation_options(inference=True) == {"layer_norm": True}
    assert CellOptions(weight_drop=0.3, init="chrono", t_max=10.0).equation_options() == {}
