"""`inference.checkpoint`: atomic writes, clear errors, one writer per path, fingerprints."""
import errno
import multiprocessing
import os

import numpy as np
import pytest
import torch

from inference import checkpoint
from inference.checkpoint import (CheckpointError, CheckpointInUseError,
                                  CheckpointMismatchError)


def test_save_load_round_trip_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "run.pt"
    checkpoint.save(path, {"x": torch.arange(5.), "step": 3})
    checkpoint.save(path, {"x": torch.arange(6.), "step": 4})
    saved = checkpoint.load(path)
    assert saved["step"] == 4 and torch.equal(saved["x"], torch.arange(6.))
    assert os.listdir(path.parent) == ["run.pt"]


def test_full_disk_keeps_the_old_checkpoint_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    checkpoint.save(path, {"step": 1})

    def full_disk(obj, file):
        file.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as error:
        checkpoint.save(path, {"step": 2})
    message = str(error.value)
    assert "could not write the checkpoint" in message and str(path) in message
    assert "No space left on device" in message and "intact" in message
    monkeypatch.undo()
    assert checkpoint.load(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["run.pt"]


def test_damaged_file_names_the_path_and_how_to_start_fresh(tmp_path):
    path = tmp_path / "run.pt"
    checkpoint.save(path, {"x": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="damaged") as error:
        checkpoint.load(path)
    assert str(path) in str(error.value) and "delete" in str(error.value)


def test_load_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"f": os.getcwd}, path)  # a function: not a weight
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


def test_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    path = tmp_path / "run.pt"
    with checkpoint.writer_lock(path):
        with checkpoint.writer_lock(path):
            checkpoint.save(path, {"step": 1})
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_try_lock, args=(str(path), results))
        child.start()
        child.join(timeout=60)
        message = results.get(timeout=5)
        assert "in use by another run" in message and str(path) in message
    child = context.Process(target=_try_lock, args=(str(path), results))
    child.start()
    child.join(timeout=60)
    assert results.get(timeout=5) == "locked"


def _try_lock(path, results):
    """In a forked child: it inherits the parent's bookkeeping, not its lock."""
    try:
        with checkpoint.writer_lock(path):
            results.put("locked")
    except CheckpointInUseError as error:
        results.put(str(error))


def _race(path, start, tried, results, index):
    start.wait()
    try:
        with checkpoint.writer_lock(path):
            for k in range(5):
                checkpoint.save(path, {"writer": index, "k": k, "data": torch.arange(10_000)})
            tried.wait()  # keep the lock until the other process has tried
            results.put((index, "wrote"))
    except CheckpointInUseError:
        tried.wait()
        results.put((index, "in use"))


def test_two_processes_on_one_path_one_is_refused_and_the_file_loads(tmp_path):
    context = multiprocessing.get_context("fork")
    path = str(tmp_path / "run.pt")
    for _ in range(3):
        start, tried, results = context.Barrier(2), context.Barrier(2), context.Queue()
        workers = [context.Process(target=_race, args=(path, start, tried, results, i))
                   for i in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
            assert worker.exitcode == 0
        outcomes = sorted(results.get(timeout=5)[1] for _ in workers)
        assert outcomes == ["in use", "wrote"]
        saved = checkpoint.load(path)
        assert saved["k"] == 4 and torch.equal(saved["data"], torch.arange(10_000))
        assert sorted(os.listdir(tmp_path)) == ["run.pt", "run.pt.lock"]


def test_fingerprint_is_plain_and_loads_with_weights_only(tmp_path):
    x = torch.randn(3, 4)
    current = checkpoint.fingerprint(x=x, settings={"n_chains": 4, "kernel": "NUTS"},
                                     optimizer=torch.optim.Adam, none=None)
    assert current["x"]["shape"] == [3, 4] and current["x"]["dtype"] == "torch.float32"
    assert current["optimizer"] == "torch.optim.adam.Adam"
    path = tmp_path / "run.pt"
    checkpoint.save(path, {"fingerprint": current})
    saved = checkpoint.load(path)["fingerprint"]
    assert saved == current
    checkpoint.check_fingerprint(path, saved, checkpoint.fingerprint(
        x=x.clone(), settings={"kernel": "NUTS", "n_chains": 4},
        optimizer=torch.optim.Adam, none=None))


def test_fingerprint_mismatch_names_every_difference(tmp_path):
    x = torch.randn(3, 4)
    saved = checkpoint.fingerprint(x=x, y=torch.zeros(2), settings={"n_chains": 4})
    y = torch.zeros(2)
    y[0] = 1.
    current = checkpoint.fingerprint(x=x.double(), y=y, settings={"n_chains": 2})
    with pytest.raises(CheckpointMismatchError) as error:
        checkpoint.check_fingerprint(tmp_path / "run.pt", saved, current)
    message = str(error.value)
    assert "x.dtype: 'torch.float32' in the checkpoint, now 'torch.float64'" in message
    assert "y.sha256" in message and "y.shape" not in message
    assert "settings.n_chains: 4 in the checkpoint, now 2" in message
    assert "delete" in message and str(tmp_path / "run.pt") in message
    assert isinstance(error.value, CheckpointError) and isinstance(error.value, RuntimeError)


def test_numpy_arrays_are_hashed_like_tensors():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    described = checkpoint.fingerprint(data=array)["data"]
    assert described["shape"] == [3, 4] and described["dtype"] == "float32"
    assert described["sha256"] == checkpoint.fingerprint(data=torch.from_numpy(array))["data"][
        "sha256"]
    changed = array.copy()
    changed[0, 0] = -1.
    assert checkpoint.fingerprint(data=changed)["data"]["sha256"] != described["sha256"]
