"""`Trainer`: the loop around a step function: progress, checkpoint/resume, NaN guard.

    trainer = inference.Trainer({"model": build_gen, "guide": build_q_net},
                                lambda params: torch.optim.Adam(params, lr=1e-3),
                                checkpoint_path="runs/vae.pt", checkpoint_every=500)
    history = trainer.fit(step_fn, batches, n_epochs=100)   # per-epoch mean bounds

`step_fn(batch) -> (cost, objective)`: the scalar cost to minimize and the
objective to report (an ELBO / IW objective or a tensor; its mean is the
"bound" shown and recorded), or None. Templates create their parameters on
their first call, so the optimizer may be a factory `params -> optimizer`,
called after the first forward pass.

A checkpoint holds every module's state_dict (buffers included, e.g. the
moving average of `reinforce()`), the optimizer's, the torch/numpy/python RNG
states, the epoch, the step, the history and a fingerprint of what it was
made for; `inference.checkpoint` writes it atomically and reads it back with
`weights_only=True`. `fit` resumes from it when it exists: a resumed run
replays exactly what the uninterrupted run would have done, provided
`batches` yields the same batches for the same epoch and RNG state (a
callable `epoch -> iterable` is called anew each epoch) and all state lives
in `modules`.

On resume:
- the fingerprint (each module's parameter and buffer names, shapes and
  dtypes, the optimizer's class, the batches' dtypes and shapes past the
  batch axis, and the caller's `fingerprint=` parts, e.g. the training data)
  must match, else `CheckpointMismatchError` names every part that differs;
- the optimizer's hyperparameters as the caller set them now (say a smaller
  learning rate after a NaN stop) win over the checkpoint's, with a warning
  naming each one changed.
While `fit` runs it holds `checkpoint.writer_lock`: a second process on the
same path gets `CheckpointInUseError`. A checkpoint is never written with
NaN/inf parameters or buffers.

Under `torchrun` (see `inference.distributed`) each batch is the global batch:
each rank steps on its rows, with its own model noise, the gradients are
averaged over ranks, and the cost and bound are the global batch's; rank 0
alone writes checkpoints and shows progress, and any world size resumes them.
"""
import collections
import contextlib
import math
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from inference import checkpoint, distributed
from inference.traced import TracedStep
from ppl.template import creation_count

__all__ = ["Trainer"]

_FORMAT = 2


def _rng_state():
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
                  "pos": int(numpy_state[2]), "has_gauss": int(numpy_state[3]),
                  "cached_gaussian": float(numpy_state[4])},
        "python": {"version": python_state[0], "state": torch.tensor(python_state[1]),
                   "gauss": python_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()),
                     python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _values(cost, objective):
    """(cost, mean objective or None) as floats, read from the device in one sync."""
    if objective is None:
        return cost.item(), None
    both = torch.stack([cost.detach().double(), torch.mean(objective).detach().double()])
    cost_value, bound = both.tolist()
    return cost_value, bound


def _batch_spec(batch):
    """The dtype and the shape past the batch axis of each array in `batch` (plain values)."""
    if hasattr(batch, "shape") and hasattr(batch, "dtype"):
        return {"dtype": str(batch.dtype), "shape": ["n", *map(int, batch.shape[1:])]}
    if isinstance(batch, (list, tuple)):
        return [_batch_spec(item) for item in batch]
    if isinstance(batch, dict):
        return {str(key): _batch_spec(value) for key, value in batch.items()}
    return type(batch).__name__


def _same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return a == b


class Trainer:
    """Trains the parameters of `modules` (name -> nn.Module) by a step function.

    `optimizer`: a torch optimizer, or a factory `params -> optimizer`
    called after the first forward pass. `checkpoint_every`: steps between
    checkpoints (one is also written after every epoch when
    `checkpoint_path` is set). `resume`: continue from `checkpoint_path` when
    it exists. `log` holds one dict (epoch, step, cost, bound) per step taken
    by this trainer, the latest `log_size` of them (memory stays flat on long runs).
    `trace`: record each step function once per input shape and replay it
    (`inference.TracedStep`, as Pyro's JitTrace_ELBO): the model and guide
    programs then no longer run in Python on every step.
    `fingerprint`: more parts (name -> tensor, number, string, or dict/list of
    them) recorded in the checkpoint and checked on resume, e.g. the training
    data (hashed) and the settings that shape the model.
    """

    def __init__(self, modules, optimizer, checkpoint_path=None, checkpoint_every=None,
                 progress=True, resume=True, log_size=10_000, trace=False, *,
                 fingerprint=None):
        if not isinstance(modules, dict) or not modules or \
                not all(isinstance(m, nn.Module) for m in modules.values()):
            raise TypeError("`modules` must be a non-empty dict name -> nn.Module "
                            "(templates included)")
        if checkpoint_every is not None and (not isinstance(checkpoint_every, int)
                                             or checkpoint_every < 1):
            raise ValueError(f"`checkpoint_every` must be None or a positive int, got "
                             f"{checkpoint_every!r}")
        if checkpoint_every is not None and checkpoint_path is None:
            raise ValueError("`checkpoint_every` needs a `checkpoint_path`")
        self.modules = dict(modules)
        if isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer, self._make_optimizer = optimizer, None
        elif callable(optimizer):
            self.optimizer, self._make_optimizer = None, optimizer
        else:
            raise TypeError(f"`optimizer` must be a torch optimizer or a factory "
                            f"params -> optimizer, got {type(optimizer).__name__}")
        if fingerprint is not None and not isinstance(fingerprint, dict):
            raise TypeError(f"`fingerprint` must be a dict name -> value, got "
                            f"{type(fingerprint).__name__}")
        self._extra_fingerprint = checkpoint.fingerprint(**(fingerprint or {}))
        self._batch_spec = None  # of the first batch seen: recorded in the fingerprint
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.resume = resume
        self.log = collections.deque(maxlen=log_size)
        self.trace = bool(trace)
        self._traced = {}  # step_fn -> its TracedStep
        self._params = None  # the parameters the optimizer was made with
        self._params_listed_at = None
        self._resume_iterator = None
        self._started = False
        self._position = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": [],
                          "bound_sum": 0., "bound_count": 0, "epoch_rng": None}

    # -- one step ------------------------------------------------------------
    def parameters(self):
        """The trainable parameters of all modules, each once, in a fixed order."""
        seen, params = set(), []
        for module in self.modules.values():
            for param in module.parameters():
                if id(param) not in seen and param.requires_grad:
                    seen.add(id(param))
                    params.append(param)
        return params

    def _ensure_optimizer(self):
        """Make the optimizer (after the first forward pass), and check on later steps
        that no parameter appeared since: it would not be trained.

        Listing the parameters walks every module, so it is redone only when some
        template has created a layer or parameter since (`ppl.template.creation_count`).
        """
        created = creation_count()
        if self._params is not None and created == self._params_listed_at:
            return
        params = self.parameters()
        if self.optimizer is None:
            if not params:
                raise RuntimeError("Trainer: the modules have no parameters after the first "
                                   "step; does step_fn call the templates in `modules`?")
            self.optimizer = self._make_optimizer(params)
        elif self._params is not None and len(params) != len(self._params):
            raise RuntimeError(f"Trainer: the modules now have {len(params)} parameters, but "
                               f"the optimizer was made with {len(self._params)}; create every "
                               f"layer on the first call")
        distributed.broadcast_from_main(self.modules)  # new layers: rank 0's initial values
        self._params, self._params_listed_at = params, created

    def _forward(self, step_fn, batch):
        if self.trace:
            traced = self._traced.get(step_fn)
            if traced is None:
                if len(self._traced) >= 16:  # a new step function per call: keep memory flat
                    self._traced.clear()
                traced = self._traced[step_fn] = TracedStep(step_fn, self.modules)
            step_fn = traced
        out = step_fn(batch)
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError("step_fn(batch) must return (cost, objective)")
        cost, objective = out
        if not isinstance(cost, torch.Tensor) or cost.numel() != 1:
            raise ValueError(f"step_fn's cost must be a scalar tensor (take the mean over the "
                             f"batch), got {type(cost).__name__}"
                             f"{'' if not isinstance(cost, torch.Tensor) else tuple(cost.shape)}")
        return cost.reshape(()), objective

    def step(self, step_fn, batch):
        """One optimizer step on `batch`; returns (cost, bound) as floats (bound may be None).

        A non-finite cost, objective or gradient raises FloatingPointError,
        naming the node reported by `objective.nonfinite_node()`, before any update.
        """
        if self._batch_spec is None:
            self._batch_spec = _batch_spec(batch)
        batch, share = distributed.shard_with_share(batch)  # (batch, 1.) in one process
        with distributed.own_noise(enabled=self._params is not None):  # after layers exist
            cost, objective = self._forward(step_fn, batch)
        cost_value, bound = distributed.mean_over_ranks(_values(cost, objective), share)
        for what, value in (("cost", cost_value), ("objective", bound)):
            if value is not None and not math.isfinite(value):
                raise FloatingPointError(f"non-finite {what} ({value}) at {self._where()}: "
                                         f"{_describe_node(objective)}; no update was applied")
        self._ensure_optimizer()
        self.optimizer.zero_grad(set_to_none=True)
        cost.backward()
        distributed.average_gradients(self._params, share)
        if not _all_finite([p.grad for p in self._params if p.grad is not None]):
            bad = self._nonfinite_gradients()
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"non-finite gradient of parameter '{bad[0]}' at "
                                     f"{self._where()}: {_describe_node(objective)}; no update "
                                     f"was applied")
        self.optimizer.step()
        return cost_value, bound

    def _where(self):
        return f"epoch {self._position['epoch'] + 1}, step {self._position['global_step'] + 1}"

    def _nonfinite_gradients(self):
        """Names of the parameters whose gradient holds NaN/inf (after `_all_finite` said so)."""
        return [name for name, param in self._named_parameters()
                if param.grad is not None and not _all_finite([param.grad])]

    def _named_parameters(self):
        for module_name, module in self.modules.items():
            for name, param in module.named_parameters():
                yield f"{module_name}.{name}", param

    # -- the loop --------------------------------------------------------------
    def fit(self, step_fn, batches, n_epochs):
        """Train for `n_epochs` over `batches` (an iterable, or a callable epoch -> iterable).

        The first call resumes from `checkpoint_path` when it exists (and
        `resume`); later calls continue from where this trainer stopped. Returns
        the history: the mean bound of each epoch (the mean cost when
        step_fn reports no objective). An epoch without batches is an error.
        """
        with self._lock():
            return self._fit(step_fn, batches, n_epochs)

    def _lock(self, path=None):
        path = path or self.checkpoint_path
        if path is None or not distributed.is_main():
            return contextlib.nullcontext()
        return checkpoint.writer_lock(path)

    def _fit(self, step_fn, batches, n_epochs):
        if self.resume and not self._started and self.checkpoint_path is not None \
                and distributed.on_main(self.checkpoint_path.exists()):
            self._load(step_fn, batches)
        self._started = True
        position = self._position
        while position["epoch"] < n_epochs:
            epoch = position["epoch"]
            if position["step_in_epoch"] == 0:
                position["epoch_rng"] = _rng_state()
                iterator = iter(_epoch_batches(batches, epoch))
            elif self._resume_iterator is not None:  # `_load` replayed the epoch up to here
                iterator, self._resume_iterator = self._resume_iterator, None
            else:  # an earlier `fit` call of this trainer stopped mid-epoch
                iterator = _skipped(batches, epoch, position["step_in_epoch"])
            total = len(batches) if hasattr(batches, "__len__") else None
            bar = tqdm(iterator, total=total, initial=position["step_in_epoch"],
                       desc=f"epoch {epoch + 1}/{n_epochs}",
                       disable=not (self.progress and distributed.is_main()),
                       leave=False)
            for batch in bar:
                cost, bound = self.step(step_fn, batch)
                value = cost if bound is None else bound
                position["bound_sum"] += value
                position["bound_count"] += 1
                position["step_in_epoch"] += 1
                position["global_step"] += 1
                self.log.append({"epoch": epoch, "step": position["global_step"], "cost": cost,
                                 "bound": bound})
                bar.set_postfix({"bound" if bound is not None else "cost":
                                 position["bound_sum"] / position["bound_count"]})
                if self.checkpoint_every and position["global_step"] % self.checkpoint_every == 0:
                    self.save_checkpoint()
            bar.close()
            if position["step_in_epoch"] == 0:
                raise ValueError(f"Trainer.fit: epoch {epoch + 1} gave no batches: is the data "
                                 f"loader empty (fewer rows than one batch with "
                                 f"drop_last=True, or an exhausted iterator: pass a list or a "
                                 f"callable epoch -> batches)?")
            count = position["bound_count"]
            position["history"].append(position["bound_sum"] / count if count else math.nan)
            position.update(epoch=epoch + 1, step_in_epoch=0, bound_sum=0., bound_count=0)
            if self.checkpoint_path is not None:
                self.save_checkpoint()
        return list(position["history"])

    # -- checkpoints -----------------------------------------------------------
    def save_checkpoint(self, path=None):
        """Write the training state to `path` (default `checkpoint_path`), atomically.

        Raises FloatingPointError, writing nothing, when a parameter or buffer
        holds NaN/inf (an update overflowed): the last good checkpoint is kept.
        """
        if not distributed.is_main():  # rank 0 holds what every rank holds
            return
        path = Path(path or self.checkpoint_path)
        self._check_finite(path)
        position = self._position
        state = {
            "format": _FORMAT, "fingerprint": self._fingerprint(),
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "rng": _rng_state(),
            "epoch_rng": position["epoch_rng"] or _rng_state(),
            "epoch": position["epoch"], "step_in_epoch": position["step_in_epoch"],
            "global_step": position["global_step"], "history": list(position["history"]),
            "bound_sum": position["bound_sum"], "bound_count": position["bound_count"],
        }
        with self._lock(path):
            checkpoint.save(path, state)

    def _check_finite(self, path):
        for module_name, module in self.modules.items():
            parameters = {name for name, _ in module.named_parameters()}
            for name, tensor in module.state_dict().items():
                if (tensor.is_floating_point() or tensor.is_complex()) \
                        and not bool(torch.isfinite(tensor).all()):
                    kind = "parameter" if name in parameters else "buffer"
                    raise FloatingPointError(
                        f"{kind} '{module_name}.{name}' holds NaN/inf after step "
                        f"{self._position['global_step']} (an update overflowed): the checkpoint "
                        f"{path} was not written and keeps the last good state; lower the "
                        f"learning rate and resume from it")

    def _fingerprint(self):
        """What this trainer's checkpoints are made for (plain values, see `checkpoint`)."""
        modules = {name: {key: {"shape": list(value.shape), "dtype": str(value.dtype)}
                          for key, value in module.state_dict().items()}
                   for name, module in self.modules.items()}
        optimizer = None if self.optimizer is None else type(self.optimizer)
        return {"modules": modules, **checkpoint.fingerprint(optimizer=optimizer),
                "batch": self._batch_spec, **self._extra_fingerprint}

    def _load(self, step_fn, batches):
        path = self.checkpoint_path
        state = checkpoint.load(path)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise checkpoint.CheckpointMismatchError(
                f"the checkpoint {path} has format {found!r}, this Trainer reads format "
                f"{_FORMAT}; to start fresh, delete {path} or pass another checkpoint path")
        saved = state["fingerprint"]
        # Peek at the epoch's first batch (the RNG state is restored below).
        first = next(iter(_epoch_batches(batches, state["epoch"])), None)
        self._batch_spec = _batch_spec(first) if saved["batch"] is not None else None
        current = self._fingerprint()
        missing = any(name not in self.modules or set(keys) - set(self.modules[name].state_dict())
                      for name, keys in state["modules"].items())
        if missing or (self.optimizer is None and state["optimizer"] is not None):
            # Templates make their layers on the first call: run one forward pass (its
            # effects on parameters, buffers and RNG are overwritten below), once the
            # data fits (another model could not compare before it).
            later = ("modules", "optimizer")
            checkpoint.check_fingerprint(path, {k: v for k, v in saved.items() if k not in later},
                                         {k: v for k, v in current.items() if k not in later})
            if set(state["modules"]) == set(self.modules):
                with torch.no_grad():
                    self._forward(step_fn, first)
                if state["optimizer"] is not None:
                    self._ensure_optimizer()
            current = self._fingerprint()
        checkpoint.check_fingerprint(path, saved, current)
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        if state["optimizer"] is not None:
            self._load_optimizer(state["optimizer"])
        self._position = {key: state[key] for key in ("epoch", "step_in_epoch", "global_step",
                                                      "history", "bound_sum", "bound_count",
                                                      "epoch_rng")}
        self._position["history"] = list(self._position["history"])
        # Replay the epoch's start: same RNG, same batches; then skip the ones done.
        if state["step_in_epoch"]:
            _set_rng_state(state["epoch_rng"])
            self._resume_iterator = _skipped(batches, state["epoch"], state["step_in_epoch"])
        _set_rng_state(state["rng"])

    def _load_optimizer(self, saved):
        """Load the optimizer's state, keeping the hyperparameters the caller set now
        (lr, betas, ...) where they differ from the checkpoint's, and say so."""
        groups = self.optimizer.param_groups
        now = [{key: value for key, value in group.items() if key != "params"}
               for group in groups]
        self.optimizer.load_state_dict(saved)
        changed = []
        for index, (group, settings) in enumerate(zip(self.optimizer.param_groups, now)):
            for key, value in settings.items():
                if key in group and not _same(group[key], value):
                    where = f"group {index} " if len(groups) > 1 else ""
                    changed.append(f"{where}{key} {value!r} (the checkpoint had {group[key]!r})")
                    group[key] = value
        if changed:
            warnings.warn(f"resuming from {self.checkpoint_path} with the optimizer settings "
                          f"given now: {', '.join(changed)}", stacklevel=5)


def _all_finite(tensors):
    """Whether no tensor holds NaN/inf. A sum is finite only if every value summed is
    (inf and NaN propagate), so one sum per tensor settles it, at about the cost of
    torch's own fused check for `GradScaler`; only a non-finite total (a NaN/inf, or
    finite values summing past the dtype's range) is looked at value by value.
    """
    dense = [tensor.coalesce().values() if tensor.is_sparse else tensor for tensor in tensors]
    if not dense:
        return True
    device = dense[0].device
    totals = torch.stack([tensor.sum().float().to(device) for tensor in dense])
    if bool(torch.isfinite(totals.sum())):
        return True
    return all(bool(torch.isfinite(tensor).all()) for tensor in dense)


def _epoch_batches(batches, epoch):
    return batches(epoch) if callable(batches) else batches


def _skipped(batches, epoch, n_done):
    """An iterator over the epoch's batches with the first `n_done` consumed."""
    iterator = iter(_epoch_batches(batches, epoch))
    for _ in range(n_done):
        next(iterator)
    return iterator


def _describe_node(objective):
    finder = getattr(objective, "nonfinite_node", None)
    node = finder() if finder is not None else None
    if node is None:
        return "no node's log-probability is non-finite (or the objective cannot tell)"
    return f"node '{node}' has a non-finite log-probability (or value)"
