"""The checkpoint folder: round trip, refusals with clear errors, keep_last, atomicity rules."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from rnnlab.errors import CheckpointError, NonFiniteError
from rnnlab.train import fit, list_checkpoints, load_checkpoint, load_run, prune_checkpoints, save_checkpoint
from rnnlab.train.checkpoint import META, STATE, WEIGHTS
from train_workers import context, run_as_nobody, toy_task, train_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "run"
    fit(toy_task(), train_config(max_steps=8, checkpoint_every=2, eval_every=4), out)
    return out


def _copy_latest(trained: Path, tmp_path: Path) -> Path:
    src = list_checkpoints(trained / "checkpoints")[-1]
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_round_trip_and_load_run(trained):
    path = list_checkpoints(trained / "checkpoints")[-1]
    task, model, meta = load_run(trained, checkpoint="latest")
    assert meta["step"] == 8 and meta["task"] == "toy" and meta["format_version"] == 1
    assert meta["task_metadata"] == task.metadata() and set(meta["train_config"]) >= {"lr", "seed"}
    fresh = toy_task().build_model()
    ck = load_checkpoint(path, fresh)
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    assert set(ck.state) >= {"optimizer", "scheduler", "rng", "carry"}
    assert isinstance(ck.state["carry"][0], torch.Tensor)      # the GRU state carried mid-epoch


def test_tied_weights_survive(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 3)
            self.out = torch.nn.Linear(3, 5, bias=False)
            self.out.weight = self.emb.weight

    a, b = Tied(), Tied()
    save_checkpoint(tmp_path / "step-00000001", a, {"step": 1}, {})
    load_checkpoint(tmp_path / "step-00000001", b)
    assert torch.equal(a.emb.weight, b.emb.weight) and b.out.weight is b.emb.weight


@pytest.mark.parametrize("damage, file, reason", [
    ("truncate", WEIGHTS, "unreadable"),
    ("garble", WEIGHTS, "unreadable"),
    ("truncate", STATE, "got a corrupt or truncated file"),
    ("garble", STATE, "got a corrupt or truncated file"),
    ("garble", META, "expected JSON"),
    ("delete", STATE, "no such file"),
])
def test_damaged_checkpoint_names_file_and_reason(trained, tmp_path, damage, file, reason):
    path = _copy_latest(trained, tmp_path)
    target = path / file
    if damage == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif damage == "garble":
        target.write_bytes(b"\x00garbage" * 10)
    else:
        target.unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, toy_task().build_model())
    assert str(target) in str(info.value) and reason in str(info.value)


def test_checkpoint_from_a_different_model_shape(trained, tmp_path):
    path = _copy_latest(trained, tmp_path)
    other = toy_task(hidden_size=7).build_model()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: parameter .rnn.weight_ih_l0. expected shape \(21, 1\), got \(36, 1\)"):
        load_checkpoint(path, other)
    lstm = toy_task(cell="lstm").build_model()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: parameter .* expected shape \(48, 1\), got \(36, 1\)"):
        load_checkpoint(path, lstm)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: expected the model's parameters, got a different model"):
        load_checkpoint(path, torch.nn.Linear(2, 2))


class _Evil:
    """A pickle payload that would create a marker file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_in_state_is_refused_and_never_runs(trained, tmp_path):
    path = _copy_latest(trained, tmp_path)
    marker = tmp_path / "PWNED"
    torch.save({"optimizer": _Evil(marker)}, path / STATE)    # a real torch zip file with a malicious pickle
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, toy_task().build_model())
    msg = str(info.value)
    assert str(path / STATE) in msg and "weights_only" in msg and "GLOBAL posix.system" in msg
    torch.save({"optimizer": _Evil(marker)}, path / STATE, _use_new_zipfile_serialization=False)   # torch's legacy format
    with pytest.raises(CheckpointError, match=r"state.pt: expected weights-only training state, got a file that "
                                              r"weights_only loading refuses .*GLOBAL posix.system"):
        load_checkpoint(path)
    (path / STATE).write_bytes(pickle.dumps(_Evil(marker)))     # a bare pickle, no torch file at all
    with pytest.raises(CheckpointError, match="state.pt: expected training state .*got a corrupt or truncated file"):
        load_checkpoint(path)
    assert not marker.exists()


def test_nonfinite_tensors_are_never_written(tmp_path):
    model = toy_task().build_model()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"head\.weight"):
        save_checkpoint(tmp_path / "step-00000001", model, {}, {})
    good = toy_task().build_model()
    with pytest.raises(NonFiniteError, match=r"state\.carry"):
        save_checkpoint(tmp_path / "step-00000001", good, {}, {"carry": torch.tensor([float("inf")])})
    assert list(tmp_path.iterdir()) == []


def test_keep_last_and_the_only_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    task = toy_task()
    scores = iter([1.0, 2.0])                          # the epoch end (step 5), then the last step (9): worse
    task.evaluate = lambda model, split="valid": {"loss": next(scores), "rmse": 1.0}
    r = fit(task, train_config(max_steps=9, checkpoint_every=1, keep_last=2, eval_every=0), out)
    steps = [int(p.name[5:]) for p in list_checkpoints(out / "checkpoints")]
    # newest two, plus the best evaluation if it is older
    assert r.best_step == 5 and steps == [5, 8, 9]
    root = tmp_path / "only"
    save_checkpoint(root / "step-00000003", toy_task().build_model(), {}, {})
    assert prune_checkpoints(root, keep_last=1) == [] and len(list_checkpoints(root)) == 1
    # a folder without meta.json (a write that never finished) is not a checkpoint
    (root / "step-00000004").mkdir()
    (root / "step-00000004" / WEIGHTS).write_bytes(b"")
    assert [p.name for p in list_checkpoints(root)] == ["step-00000003"]


def test_reusing_a_run_folder_is_refused_and_the_old_run_survives(trained):
    before = sorted(p.name for p in (trained / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="expected a new or empty folder"):
        fit(toy_task(), train_config(max_steps=2), trained)
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == before


def test_read_only_run_folder(tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="rnnlab-ro-"))
    try:
        os.chmod(base, 0o755)
        run = base / "run"
        fit(toy_task(), train_config(max_steps=3), run)
        for p in [run, *run.rglob("*")]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        os.chmod(base, 0o555)
        ctx = context()
        for out, resume, want in [(run, True, f"run folder {run}: expected a writable folder"),
                                  (base / "new", False, f"run folder {base / 'new'}: cannot create")]:
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=run_as_nobody, args=(str(out), resume, send))
            p.start()
            send.close()
            status = recv.recv()
            p.join(60)
            assert status[0] == "error" and status[1] == "CheckpointError", status
            assert want in status[2]
    finally:
        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755)
        shutil.rmtree(base)


def test_remove_stale_deletes_rnnlab_leftovers_only(tmp_path):
    from rnnlab.train.checkpoint import remove_stale

    for name in (".tmp-step-5-0a1b2c3d", ".trash-step-3-deadbeef", ".tmp-thesis", ".trash-keep"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-thesis", ".trash-keep"]
