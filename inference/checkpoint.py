"""Checkpoint files: the one place that writes and reads them (Trainer, `inference.mcmc.run`).

    with checkpoint.writer_lock(path):          # one writer per path, for the whole run
        saved = checkpoint.load(path) if os.path.exists(path) else None
        if saved is not None:
            checkpoint.check_fingerprint(path, saved["fingerprint"], current)
        ...
        checkpoint.save(path, {"fingerprint": current, ...})

- `save` writes to a unique temporary file in the same folder, syncs it to
  disk and renames it over `path`: a reader sees the old file or the new one,
  never a partial one, and a failed write (a full disk) leaves the old one.
- `load` reads with `weights_only=True` (no pickled code runs) onto the CPU.
- `writer_lock` makes a second process writing the same path fail at once
  with `CheckpointInUseError` instead of interleaving writes.
- `fingerprint` / `check_fingerprint` record what the checkpoint was made for
  (shapes, dtypes, a hash of the observed values, settings) so that a resume
  with other data or settings is an error naming what differs.
"""
import contextlib
import hashlib
import os
import tempfile

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # not on Windows: run without the lock
    fcntl = None

__all__ = ["CheckpointError", "CheckpointInUseError", "CheckpointMismatchError", "save", "load",
           "writer_lock", "fingerprint", "check_fingerprint"]


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read."""


class CheckpointInUseError(CheckpointError):
    """Another process is writing the same checkpoint path."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was made for another model, data or settings."""


def _start_fresh(path):
    return f"to start fresh, delete {path} or pass another checkpoint path"


def save(path, obj):
    """Write `obj` to `path` atomically (`torch.save` to a temporary file, fsync, rename).

    Raises CheckpointError when the write fails (e.g. a full disk); the
    previous checkpoint at `path`, if any, is then left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".",
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        kept = ("the previous checkpoint there is intact" if os.path.exists(path)
                else "no checkpoint was there before")
        raise CheckpointError(f"could not write the checkpoint {path}: {error}; {kept}") \
            from error
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise


def load(path):
    """Read a checkpoint written by `save`, onto the CPU, with `weights_only=True`.

    Raises CheckpointError naming `path` when the file is damaged or not a checkpoint.
    """
    path = os.fspath(path)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise CheckpointError(f"the checkpoint {path} is damaged or not a checkpoint "
                              f"({type(error).__name__}: {error}); {_start_fresh(path)}") \
            from error


_held = {}  # absolute lock path -> (pid, depth) of the locks this process holds


@contextlib.contextmanager
def writer_lock(path):
    """Hold an exclusive lock on `path + ".lock"` while the block runs.

    Another process locking the same path raises CheckpointInUseError at
    once. Within one process the lock is re-entrant (a run may hold it around
    several `Trainer.fit` calls, each of which takes it too). The lock file is
    left in place: removing it would let two processes lock different files of
    the same name.
    """
    path = os.fspath(path)
    lock_path = os.path.abspath(path + ".lock")
    pid, depth = _held.get(lock_path, (None, 0))
    if fcntl is None or (pid == os.getpid() and depth):
        _held[lock_path] = (os.getpid(), depth + 1)
        try:
            yield
        finally:
            _held[lock_path] = (os.getpid(), depth)
        return
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointInUseError(
                f"the checkpoint {path} is in use by another run (locked: {lock_path}); wait "
                f"for it to finish or pass another checkpoint path") from None
        _held[lock_path] = (os.getpid(), 1)
        try:
            yield
        finally:
            del _held[lock_path]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _describe(value):
    """A plain, comparable description of one fingerprint part."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {"shape": list(value.shape), "dtype": str(value.dtype),
                "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    if isinstance(value, torch.Tensor):
        data = value.detach().to("cpu")
        data = (data.to_dense() if data.is_sparse else data).resolve_conj().resolve_neg()
        raw = data.contiguous().reshape(-1).view(torch.uint8)
        return {"shape": list(data.shape), "dtype": str(data.dtype),
                "sha256": hashlib.sha256(raw.numpy().tobytes()).hexdigest()}
    if isinstance(value, dict):
        return {str(key): _describe(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_describe(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (torch.dtype, torch.Size, torch.device)):
        return str(value) if not isinstance(value, torch.Size) else list(value)
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def fingerprint(**parts):
    """What a checkpoint was made for, as a dict of plain values (it loads with weights_only).

    Each tensor or numpy array becomes its shape, dtype and the sha256 of its
    bytes; dicts and lists are described item by item; numbers, strings and
    None stay as they are; types become their qualified names; anything else
    its repr.
    """
    return {name: _describe(value) for name, value in parts.items()}


def _short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _differences(saved, current, prefix):
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current)):
            name = f"{prefix}.{key}" if prefix else key
            if key not in saved:
                found.append(f"{name}: not recorded in the checkpoint, now "
                             f"{_short(current[key])}")
            elif key not in current:
                found.append(f"{name}: {_short(saved[key])} in the checkpoint, not given now")
            else:
                found += _differences(saved[key], current[key], name)
        return found
    if saved != current:
        return [f"{prefix}: {_short(saved)} in the checkpoint, now {_short(current)}"]
    return []


def check_fingerprint(path, saved, current):
    """Raise CheckpointMismatchError listing every part where `saved` and `current` differ."""
    differences = _differences(saved or {}, current, "")
    if differences:
        raise CheckpointMismatchError(
            f"the checkpoint {os.fspath(path)} was made for another run: "
            + "; ".join(differences) + f". {_start_fresh(path).capitalize()}")
