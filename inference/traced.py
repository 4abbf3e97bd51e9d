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
that list. Autograd, the optimizer and everything after the step run as usual.

How a call goes:

- The first call for a new input signature (shapes, dtypes, grad mode) runs
  the step eagerly: templates create their layers, every check runs on real
  values. The second records the graph, runs it and the eager step from the
  same random state, returns the eager result, and keeps the graph only if
  both agree; later calls replay it.
- Random draws are operations of the graph: a replay draws fresh numbers from
  torch's generator, the same ones the eager step would draw.
- The support checks of `ppl` (observations in their support, parameters
  valid) are recorded into the graph as well (`deferred_checks`). When one
  fails, buffers changed by the replay are restored and the step re-runs
  eagerly from the same random state, which raises the usual error naming the
  node. A non-finite bound is explained the same way
  (`objective.nonfinite_node()` re-runs the step eagerly).
- A step that reads tensor values in Python (`if x.sum() > 0:`, `.item()`),
  or uses parameters that are not in `modules`, cannot be replayed: it runs
  eagerly, with one warning that says why.

What it assumes, as any tracing JIT (Pyro's included):

- Python values the step computes are fixed at recording: a coefficient
  annealed in Python inside `step_fn` (`beta = min(1, t / 1000)`) would stay
  at its recorded value; pass such values in as tensor arguments.
- Python side effects of `step_fn` (appending to a list, a counter) happen
  only on the eager calls; replays run torch operations only.
- The modules' parameters and buffers stay the same tensor objects
  (optimizers, `load_state_dict` and `.to()` update them in place), and other
  tensors the step reads without taking them as input (constants, data
  closed over) keep their values.
"""
import warnings

import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

from inference.variational.tensor_like import TensorLike
from ppl.distributions.base import deferred_checks
from ppl.template import creation_count

__all__ = ["TracedStep"]

_MAX_SIGNATURES = 8  # input signatures kept per step (train batch, last batch, test batch...)
_RTOL = 1e-5


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
        return self.step_fn(*(inputs if spec is None else pytree.tree_unflatten(inputs, spec)))


class _Replay:
    """One recorded graph: (state tensors, input tensors) -> (cost, bound or None, checks ok)."""

    def __init__(self, graph, state, mutated):
        self.graph = graph
        self.state = state        # the modules' parameters and buffers, in graph order
        self.mutated = mutated    # indices into `state` the graph changes in place


class TracedStep:
    """`step_fn(*args) -> (cost, objective)`, recorded per input signature and replayed.

    modules: dict name -> nn.Module (templates included) holding every
    parameter and buffer `step_fn` uses. Attributes: `n_traced` graphs
    recorded, `reason` why the last recording was refused (None if it
    was not), `n_eager` calls that ran the step eagerly.
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
            leaves, spec = pytree.tree_flatten(args)
        key = self._signature(leaves, spec)
        if key is not None:
            entry = self._entries.get(key)
            if entry is not None:
                return self._replay(entry, leaves, args)
            if key in self._seen and key not in self._entries \
                    and len(self._entries) < _MAX_SIGNATURES:
                return self._record(key, leaves, spec, args)
            if len(self._seen) >= 1000:  # signatures that never repeat: keep memory flat
                self._seen.clear()
            self._seen.add(key)
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
        names, tensors, seen = [], [], set()
        for name, tensor in list(self._holder.named_parameters(remove_duplicate=False)) + \
                list(self._holder.named_buffers(remove_duplicate=False)):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                names.append(name)
                tensors.append(tensor)
        return names, tensors

    def _record(self, key, leaves, spec, args):
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
                    self._holder, dict(zip(names, flat[:n_state])), (spec, filled))
                bound = None if objective is None else _bound_tensor(objective)
                ok = None if not checks else checks[0] if len(checks) == 1 else \
                    torch.stack([c.reshape(()) for c in checks]).all()
            return cost, bound, ok

        created = creation_count()
        try:
            graph = make_fx(traced, tracing_mode="fake", pre_dispatch=True,
                            _allow_non_fake_inputs=True)(*state, *inputs)
            if creation_count() != created:
                raise RuntimeError("the step created layers or parameters while recording")
            _refuse_trainable_constants(graph)
            graph.graph.eliminate_dead_code()
            entry = _Replay(_straight_line(graph), state, _mutated_inputs(graph, n_state))
        except Exception as error:  # anything at all: this signature runs eagerly
            return self._refuse(key, error, args)
        return self._check_and_keep(key, entry, inputs, args)

    def _check_and_keep(self, key, entry, inputs, args):
        """Run the graph and the eager step from the same random state; keep the graph
        only if they agree. Returns the eager step's result."""
        random_state = torch.get_rng_state()
        saved = [entry.state[i].clone() for i in entry.mutated]
        try:
            with torch.no_grad():
                replayed = entry.graph(*entry.state, *inputs)
        except Exception as error:
            _restore(entry, saved)
            torch.set_rng_state(random_state)
            return self._refuse(key, error, args)
        _restore(entry, saved)
        torch.set_rng_state(random_state)
        cost, objective = self.step_fn(*args)
        self.n_eager += 1
        eager = (cost, None if objective is None else _bound_tensor(objective))
        if replayed[2] is not None and not bool(replayed[2]):
            self._entries[key] = None  # a check failed where the eager step passed
            self.reason = "a recorded support check disagrees with the eager step"
        elif not _agree(replayed[:2], eager):
            self._entries[key] = None
            self.reason = ("the recorded graph disagrees with the eager step: it reads tensor "
                           "values in Python")
        else:
            self._entries[key] = entry
            self.n_traced += 1
            return cost, objective
        warnings.warn(f"TracedStep: running the step eagerly ({self.reason})", RuntimeWarning,
                      stacklevel=3)
        return cost, objective

    def _refuse(self, key, error, args):
        self._entries[key] = None
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        if "data-dependent" in message or "_local_scalar_dense" in message \
                or "DataDependent" in message:
            message = ("the step reads tensor values in Python (an `if`, float() or .item()), "
                       "which a recording cannot follow")
        self.reason = message
        warnings.warn(f"TracedStep: running the step eagerly ({message})", RuntimeWarning,
                      stacklevel=3)
        self.n_eager += 1
        return self.step_fn(*args)

    # -- replaying ------------------------------------------------------------------
    def _replay(self, entry, leaves, args):
        random_state = torch.get_rng_state()
        saved = [entry.state[i].clone() for i in entry.mutated]
        inputs = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        cost, bound, ok = entry.graph(*entry.state, *inputs)
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


def _straight_line(graph_module):
    """The recorded graph as a plain Python function of its inputs.

    Like the code FX generates, one line per operation (names freed after
    their last use), but calling each ATen operator's C++ entry point directly:
    `OpOverload.__call__` is a Python frame around it, about a microsecond per
    operation, which on a small network is a tenth of the step.
    """
    graph = graph_module.graph
    nodes = list(graph.nodes)
    order = {node: i for i, node in enumerate(nodes)}
    last_use = {}
    for node in nodes:
        for user in node.users:
            last_use[node] = max(last_use.get(node, -1), order[user])
    free_after = {}
    for node, i in last_use.items():
        free_after.setdefault(i, []).append(node)
    env, names, inputs, lines = {}, {}, [], []

    def constant(value):
        name = f"_c{len(env)}"
        env[name] = value
        return name

    def source(value):
        if isinstance(value, torch.fx.Node):
            return names[value]
        if isinstance(value, (list, tuple)):
            inner = ", ".join(source(v) for v in value)
            return f"[{inner}]" if isinstance(value, list) else f"({inner},)"
        if value is None or isinstance(value, (bool, int, str)) or (
                isinstance(value, float) and value == value and abs(value) != float("inf")):
            return repr(value)
        return constant(value)

    for i, node in enumerate(nodes):
        name = names[node] = f"v{i}"
        if node.op == "placeholder":
            inputs.append(name)
        elif node.op == "get_attr":
            lines.append(f"{name} = {constant(getattr(graph_module, node.target))}")
        elif node.op == "call_function":
            target = node.target
            function = target._op if isinstance(target, torch._ops.OpOverload) else target
            arguments = [source(a) for a in node.args]
            arguments += [f"{key}={source(value)}" for key, value in node.kwargs.items()]
            lines.append(f"{name} = {constant(function)}({', '.join(arguments)})")
        elif node.op == "output":
            lines.append(f"return {source(node.args[0])}")
        else:
            raise RuntimeError(f"cannot replay a graph node of kind {node.op!r}")
        freed = [names[n] for n in free_after.get(i, ()) if n.op != "placeholder"]
        if freed and node.op != "output":
            lines.append(f"del {', '.join(freed)}")
    code = f"def replay({', '.join(inputs)}):\n" + "\n".join(f"    {line}" for line in lines)
    exec(compile(code, "<inference.TracedStep>", "exec"), env)  # our own generated code
    return env["replay"]


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


def _mutated_inputs(graph, n_state):
    """Indices of the state placeholders that an in-place operation of the graph writes."""
    placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"][:n_state]
    index = {node: i for i, node in enumerate(placeholders)}
    mutated = set()
    for node in graph.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op != "call_function" or schema is None:
            continue
        for argument, value in zip(schema.arguments, node.args):
            if argument.alias_info is not None and argument.alias_info.is_write \
                    and value in index:
                mutated.add(index[value])
    return sorted(mutated)


def _refuse_trainable_constants(graph):
    """A tensor requiring grad that is not an input was captured by value: its gradient
    would be lost. (Parameters outside `modules`.)"""
    constants = dict(graph.named_buffers())
    constants.update(graph.named_parameters())
    constants.update((node.target, getattr(graph, node.target, None))
                     for node in graph.graph.nodes if node.op == "get_attr")
    for name, value in constants.items():
        if isinstance(value, torch.Tensor) and value.requires_grad:
            raise RuntimeError(f"the step uses a tensor that requires grad and is not a "
                               f"parameter of `modules` (recorded as constant {name!r}); "
                               f"add its module to `modules`")


def _agree(replayed, eager):
    for a, b in zip(replayed, eager):
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
