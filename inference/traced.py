"""`TracedStep`: a training step recorded once as a graph of torch operations, then replayed.

    step = inference.TracedStep(elbo_step, {"model": build_gen, "guide": build_q_net})
    cost, lower_bound = step(x)          # as elbo_step(x), without re-running its Python
    inference.Trainer(modules, optimizer, trace=True)   # the same, inside the trainer

A model and guide written in `ppl` are Python programs: every step runs them
again, building nets, nodes and distributions, which costs the same Python work
each time (about 0.2 ms per step; for a small network, a fifth of the step).
`TracedStep` plays the part of Pyro's `JitTrace_ELBO`: it records the step, for
each shape of input, as the flat list of ATen operations it performs (`make_fx`
on fake tensors, so nothing runs while recording), and later calls run only
that list, as a `torch.fx.GraphModule` whose operations are called through
torch's public functions. Autograd, the optimizer and everything after the
step run as usual.

How a call goes, per input signature (shapes, dtypes, grad mode):

- The first call runs the step eagerly: templates create their layers, every
  check runs on real values. The second records the graph, runs it and the
  eager step from the same random state, returns the eager result, and keeps
  the graph only if both agree. The third records the step again and replays
  only if both recordings are the same program with the same constants.
- Replays 2, 4, 8, 16, ... are checked again against the eager step from the
  same random state (and return its result): a negligible cost over a run.
- Random draws are operations of the graph: a replay draws fresh numbers from
  torch's generator, the same ones the eager step would draw.
- The support checks of `ppl` (observations in their support, parameters
  valid) are recorded into the graph as well (`deferred_checks`). When one
  fails, buffers changed by the replay are restored and the step re-runs
  eagerly from the same random state, which raises the usual error naming the
  node. A non-finite bound is explained the same way
  (`objective.nonfinite_node()` re-runs the step eagerly).
- A step that reads tensor values in Python (`if x.sum() > 0:`, `float(x)`),
  uses parameters that are not in `modules`, or computes a Python value that
  changes between calls (`beta = min(1, t / 1000)` from a step counter) cannot
  be replayed: once found out, it runs eagerly, with one warning that says
  why. Pass such values in as tensor arguments: `step(x, torch.tensor(beta))`
  is recorded with `beta` as an input.

What it assumes, as any tracing JIT (Pyro's included):

- Python side effects of `step_fn` (appending to a list, a counter) happen
  on its recordings and eager calls only; replays run torch operations only.
  A value that changes only after the checks of replays 2 and 4 is caught at
  the next power of two: until then it is replayed at its recorded value.
- The modules' parameters and buffers stay the same tensor objects
  (optimizers, `load_state_dict` and `.to()` update them in place), and other
  tensors the step reads without taking them as input (constants, data
  closed over) keep their values.

`record_graph` is the recorder itself, for any function of tensors.
"""
import types
import warnings
from typing import NamedTuple

import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from inference import torch_compat
from inference.variational.tensor_like import TensorLike
from ppl.distributions.base import deferred_checks
from ppl.template import creation_count

__all__ = ["TracedStep", "TracedObjective", "record_graph", "Recording", "NotRecordable"]

_MAX_SIGNATURES = 8  # input signatures kept per step (train batch, last batch, test batch...)
_RTOL = 1e-5
_READS_VALUES = ("the step reads tensor values in Python (an `if`, float() or .item()), which "
                 "a recording cannot follow")
_CHANGED = ("a value the step computes in Python (an annealed coefficient, a step counter) or "
            "a tensor it closes over changed since it was recorded")
_ADVICE = "; pass such values in as tensor arguments of the step"


class NotRecordable(Exception):
    """`record_graph` cannot record the function; the message says why."""


class Recording(NamedTuple):
    """A recorded function: `module.forward(*inputs)` replays it (the same outputs, the same
    random draws); `mutated`: indices of the inputs it writes in place."""
    module: torch.fx.GraphModule
    mutated: tuple


def record_graph(fn, *inputs):
    """`fn(*inputs)` recorded as a graph of ATen operations on fake tensors (nothing is
    computed), with the real tensors `fn` closes over as constants: a `Recording`, whose
    module calls each operation through torch's public function of that name. Every
    random draw is kept, used or not, so a replay advances torch's generator as `fn` does.

    Raises NotRecordable when `fn` reads tensor values in Python, or closes over a
    tensor that requires grad (its gradient would be lost).
    """
    try:
        graph = torch_compat.make_fx_fake(fn)(*inputs)
    except GuardOnDataDependentSymNode as error:
        raise NotRecordable(_READS_VALUES) from error
    _refuse_trainable_constants(graph)
    graph.graph.eliminate_dead_code()  # FX keeps random draws and in-place writes
    mutated = _mutated_inputs(graph, len(inputs))
    _call_public_functions(graph)
    return Recording(graph, mutated)


class TracedObjective(TensorLike):
    """What a replayed step returns in place of its objective: the bound's values.

    Behaves like a tensor (`torch.mean(objective)`), as the objectives do;
    `nonfinite_node()` re-runs the step eagerly from the same random state to
    name the node whose log-probability is NaN/inf.
    """

    def __init__(self, tensor, rerun):
        self._tensor = tensor
        self._rerun = rerun

    @property
    def tensor(self):
        return self._tensor

    def nonfinite_node(self):
        objective = self._rerun()
        finder = getattr(objective, "nonfinite_node", None)
        return finder() if finder is not None else None


class _Step(nn.Module):
    """Holds the modules, so `torch.func.functional_call` can swap in traced tensors."""

    def __init__(self, step_fn, modules):
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.step_fn = step_fn

    def forward(self, spec, inputs):
        return self.step_fn(*(inputs if spec is None else
                              torch_compat.tree_unflatten(inputs, spec)))


class _Replay:
    """One recorded step: `run(*state, *inputs) -> (cost, bound or None, checks ok or None)`."""

    def __init__(self, recording, state):
        self.module = recording.module
        self.run = recording.module.forward  # the generated code itself: no nn.Module call
        self.state = state               # the modules' parameters and buffers, in graph order
        self.mutated = [i for i in recording.mutated if i < len(state)]  # written in place
        self.confirmed = False           # recorded twice, the same both times
        self.calls = 0                   # replays so far


class TracedStep:
    """`step_fn(*args) -> (cost, objective)`, recorded per input signature and replayed.

    modules: dict name -> nn.Module (templates included) holding every
    parameter and buffer `step_fn` uses. Attributes: `n_traced` graphs
    kept, `reason` why the last graph was refused or dropped (None if none
    was), `n_eager` calls that ran `step_fn` eagerly (checks included).
    """

    def __init__(self, step_fn, modules):
        if not callable(step_fn):
            raise TypeError(f"`step_fn` must be callable, got {type(step_fn).__name__}")
        if not isinstance(modules, dict) or not all(isinstance(m, nn.Module)
                                                    for m in modules.values()):
            raise TypeError("`modules` must be a dict name -> nn.Module (templates included)")
        self.step_fn = step_fn
        self._holder = _Step(step_fn, modules)
        self._entries = {}   # signature -> _Replay, or None (run eagerly)
        self._seen = set()   # signatures run eagerly once
        self.reason = None
        self.n_traced = 0
        self.n_eager = 0

    def __call__(self, *args):
        if all(isinstance(arg, torch.Tensor) for arg in args):  # the common case, cheaply
            leaves, spec = args, None
        else:
            leaves, spec = torch_compat.tree_flatten(args)
        key = self._signature(leaves, spec)
        if key is not None:
            entry = self._entries.get(key)
            if entry is not None:
                inputs = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
                if not entry.confirmed:
                    return self._confirm(key, entry, leaves, spec, inputs, args)
                return self._replay(key, entry, inputs, args)
            if key in self._seen and key not in self._entries \
                    and len(self._entries) < _MAX_SIGNATURES:
                return self._record(key, leaves, spec, args)
            if len(self._seen) >= 1000:  # signatures that never repeat: keep memory flat
                self._seen.clear()
            self._seen.add(key)
        return self._eager(args)

    def _eager(self, args):
        self.n_eager += 1
        return self.step_fn(*args)

    # -- signatures --------------------------------------------------------------
    @staticmethod
    def _signature(leaves, spec):
        """What a recording is specific to; None when an argument cannot be keyed."""
        parts = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                parts.append((leaf.shape, leaf.dtype, leaf.device, leaf.requires_grad,
                              leaf.layout))
            else:
                try:
                    hash(leaf)
                except TypeError:
                    return None
                parts.append(("constant", type(leaf), leaf))
        return (spec, tuple(parts), torch.is_grad_enabled(), creation_count())

    # -- recording -----------------------------------------------------------------
    def _state(self):
        """The modules' parameters and buffers: (names, tensors). `names` holds (name,
        index into `tensors`) for every slot that holds one, each module once (a module
        registered under two names is one slot) and each tensor once in `tensors` (tied
        weights: two slots, one tensor)."""
        names, tensors, index = [], [], {}
        for prefix, module in self._holder.named_modules():
            slots = list(module.named_parameters(recurse=False)) + \
                list(module.named_buffers(recurse=False))
            for name, tensor in slots:
                if id(tensor) not in index:
                    index[id(tensor)] = len(tensors)
                    tensors.append(tensor)
                names.append((f"{prefix}.{name}" if prefix else name, index[id(tensor)]))
        return names, tensors

    def _trace(self, leaves, spec):
        """The step recorded on the current state and these arguments: (Recording, state)."""
        names, state = self._state()
        inputs = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        n_state = len(state)

        def traced(*flat):
            filled = list(leaves)
            for position, tensor in zip(positions, flat[n_state:]):
                filled[position] = tensor
            with deferred_checks() as checks:
                cost, objective = torch.func.functional_call(
                    self._holder, {name: flat[i] for name, i in names}, (spec, filled),
                    tie_weights=False)
                bound = None if objective is None else _bound_tensor(objective)
                ok = None if not checks else checks[0] if len(checks) == 1 else \
                    torch.stack([c.reshape(()) for c in checks]).all()
            return cost, bound, ok

        created = creation_count()
        recording = record_graph(traced, *state, *inputs)
        if creation_count() != created:
            raise NotRecordable("the step created layers or parameters while recording")
        return recording, state

    def _record(self, key, leaves, spec, args):
        try:
            recording, state = self._trace(leaves, spec)
        except Exception as error:  # anything at all: this signature runs eagerly
            return self._refuse(key, _why(error), args)
        entry = _Replay(recording, state)
        inputs = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        return self._check(key, entry, inputs, args, "the recorded graph disagrees with the "
                                                     "eager step: " + _CHANGED + _ADVICE)

    def _confirm(self, key, entry, leaves, spec, inputs, args):
        """Record the step a second time; replay only if it is the same program with the
        same constants as the first recording (a Python value that changes would differ)."""
        try:
            again, _ = self._trace(leaves, spec)
        except Exception as error:
            return self._refuse(key, _why(error), args)
        difference = _difference(entry.module, again.module)
        if difference is not None:
            return self._refuse(key, f"{_CHANGED} ({difference}){_ADVICE}", args)
        entry.confirmed = True
        return self._replay(key, entry, inputs, args)

    def _check(self, key, entry, inputs, args, disagrees):
        """Run the graph and the eager step from the same random state and keep the graph
        only if they agree (outputs and buffers written). Returns the eager step's result."""
        random_state = torch.get_rng_state()
        saved = [entry.state[i].clone() for i in entry.mutated]
        try:
            with torch.no_grad():
                replayed = entry.run(*entry.state, *inputs)
                written = tuple(entry.state[i].clone() for i in entry.mutated)
        except Exception as error:
            _restore(entry, saved)
            torch.set_rng_state(random_state)
            return self._refuse(key, _why(error), args)
        _restore(entry, saved)
        torch.set_rng_state(random_state)
        cost, objective = self._eager(args)
        eager = (cost, None if objective is None else _bound_tensor(objective))
        eager += tuple(entry.state[i] for i in entry.mutated)
        if replayed[2] is not None and not bool(replayed[2]):
            reason = "a recorded support check disagrees with the eager step"
        elif not _agree(tuple(replayed[:2]) + written, eager):
            reason = disagrees
        else:
            if key not in self._entries:
                self._entries[key] = entry
                self.n_traced += 1
            return cost, objective
        self._drop(key, reason)
        return cost, objective

    def _refuse(self, key, reason, args):
        self._drop(key, reason)
        return self._eager(args)

    def _drop(self, key, reason):
        if self._entries.get(key) is not None:
            self.n_traced -= 1
        self._entries[key] = None
        self.reason = reason
        warnings.warn(f"TracedStep: running the step eagerly ({reason})", RuntimeWarning,
                      stacklevel=5)

    # -- replaying ------------------------------------------------------------------
    def _replay(self, key, entry, inputs, args):
        entry.calls += 1
        if entry.calls >= 2 and entry.calls & (entry.calls - 1) == 0:  # 2, 4, 8, 16, ...
            return self._check(key, entry, inputs, args,
                               f"replay {entry.calls} disagrees with the eager step: "
                               f"{_CHANGED}{_ADVICE}")
        random_state = torch.get_rng_state()
        saved = [entry.state[i].clone() for i in entry.mutated]
        cost, bound, ok = entry.run(*entry.state, *inputs)
        rerun = _Rerun(self.step_fn, args, random_state, entry, saved)
        if ok is not None and not bool(ok):
            return rerun.eagerly()  # raises the eager step's error, which names the node
        return cost, None if bound is None else TracedObjective(bound, rerun.objective)


class _Rerun:
    """Re-runs a replayed step eagerly from its random state, with its buffer changes undone."""

    def __init__(self, step_fn, args, random_state, entry, saved):
        self.step_fn, self.args, self.random_state = step_fn, args, random_state
        self.entry, self.saved = entry, saved

    def eagerly(self):
        _restore(self.entry, self.saved)
        torch.set_rng_state(self.random_state)
        return self.step_fn(*self.args)

    def objective(self):
        after = [self.entry.state[i].clone() for i in self.entry.mutated]
        current = torch.get_rng_state()
        try:
            with torch.no_grad():
                return self.eagerly()[1]
        finally:
            _restore(self.entry, after)
            torch.set_rng_state(current)


def _why(error):
    """The reason a recording failed, for the warning: its message's first line."""
    if isinstance(error, NotRecordable):
        return str(error)
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _call_public_functions(graph_module):
    """Call each ATen operator of the graph through the public torch function or tensor
    method of its name, and regenerate the graph's code.

    Both reach the same operator with the same arguments (torch's Python bindings are
    generated from the operators' schemas), but a binding is a C function, whereas
    `OpOverload.__call__` adds a Python frame per operation: a tenth of a small
    network's step. Operators without such a C binding keep their OpOverload.
    """
    for node in graph_module.graph.nodes:
        packet = getattr(node.target, "overloadpacket", None)
        if node.op != "call_function" or packet is None or node.target.namespace != "aten":
            continue
        name = packet.__name__
        if name.startswith("_"):
            continue
        function = getattr(torch, name, None)
        if not isinstance(function, types.BuiltinFunctionType):
            function = getattr(torch.nn.functional, name, None)
        if isinstance(function, types.BuiltinFunctionType):
            node.target = function
        elif isinstance(getattr(torch.Tensor, name, None), types.MethodDescriptorType):
            node.op, node.target = "call_method", name
    graph_module.recompile()


def _difference(first, second):
    """None when two recordings are the same program with the same constants, else what
    differs (the first line of code that does)."""
    if first.code != second.code:
        lines = zip(first.code.strip().splitlines(), second.code.strip().splitlines())
        for a, b in lines:
            if a != b:  # FX's lines end with `;  x = None` where a value is freed
                return f"`{a.split(';')[0].strip()[:100]}` became `{b.split(';')[0].strip()[:100]}`"
        return "the number of operations changed"
    for node in first.graph.nodes:
        if node.op == "get_attr":
            a, b = getattr(first, node.target), getattr(second, node.target)
            if isinstance(a, torch.Tensor) and not (
                    a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)):
                return f"the values of tensor constant {node.target!r} changed"
    return None


def _bound_tensor(objective):
    tensor = getattr(objective, "tensor", objective)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"step_fn's objective must be an objective or a tensor, got "
                        f"{type(objective).__name__}")
    return tensor


def _restore(entry, saved):
    with torch.no_grad():
        for index, value in zip(entry.mutated, saved):
            entry.state[index].copy_(value)


def _mutated_inputs(graph, n_inputs):
    """Indices of the first `n_inputs` placeholders that an in-place operation writes."""
    placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"][:n_inputs]
    index = {node: i for i, node in enumerate(placeholders)}
    mutated = set()
    for node in graph.graph.nodes:
        if node.op != "call_function" or getattr(node.target, "overloadpacket", None) is None:
            continue
        schema = torch_compat.op_schema(node.target)
        for argument, value in zip(schema.arguments, node.args):
            if argument.alias_info is not None and argument.alias_info.is_write \
                    and value in index:
                mutated.add(index[value])
    return tuple(sorted(mutated))


def _refuse_trainable_constants(graph):
    """A tensor requiring grad that is not an input was captured by value: its gradient
    would be lost. (Parameters outside `modules`.)"""
    constants = dict(graph.named_buffers())
    constants.update(graph.named_parameters())
    constants.update((node.target, getattr(graph, node.target, None))
                     for node in graph.graph.nodes if node.op == "get_attr")
    for name, value in constants.items():
        if isinstance(value, torch.Tensor) and value.requires_grad:
            raise NotRecordable(f"the step uses a tensor that requires grad and is not a "
                                f"parameter of `modules` (recorded as constant {name!r}); "
                                f"add its module to `modules`")


def _agree(replayed, eager):
    for a, b in zip(replayed, eager, strict=True):
        if (a is None) != (b is None):
            return False
        if a is None:
            continue
        b = b.detach()
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not torch.allclose(a, b, rtol=_RTOL, atol=_RTOL, equal_nan=True):
            return False
    return True
