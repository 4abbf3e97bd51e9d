"""Compilation as an adapter: compiled versions of the kernels' pure steps, from outside.

The kernels (`hmc`, `nuts`) are pure functions of tensors and named tuples of tensors and
know nothing of compiling; this module wraps them:

- `compiled_function(traceable, fn, name)`: the model's gradient (or HMC's leapfrog
  step, gradient included), traced and compiled for one model (`compile.CompiledStep`);
  `recorded_function` the same traced and replayed uncompiled, where there is no C++
  compiler (`compile.RecordedStep`).
- `nuts_leaf_step(value_and_grad, metric_type, max_energy_error, adaptation)`: NUTS's
  `LeafStep` with its model-independent part, `nuts.leaf_end_begin`, compiled once per
  machine for every model, chain count, dimension and tree depth
  (`shared_compile.SharedCompiledStep`). The tree state and the leaf's statistics go in
  and out packed (`Packing`: one stacked tensor per dtype and shape, a handful in all
  where the named tuples hold about sixty tensors), and the tree stays packed between
  steps (`PackedTree`), so that a step pays no per-tensor cost for them. Which axes are
  the chains, the dimension and the tree depth is read off an example state built at
  the canonical sizes.
"""
import functools
import sys

import torch

from inference.mcmc import (adaptation, integrators, metric, nuts, proposals, state,
                            termination, trajectory)
from inference.mcmc.compile import CompiledStep, RecordedStep, shifted
from inference.mcmc.shared_compile import CANONICAL, SharedCompiledStep

__all__ = ["flatten", "unflatten", "Packing", "PackedTree", "compiled_function",
           "recorded_function", "nuts_leaf_step"]


def flatten(tree):
    """(tensors, spec) of a tensor or a (named) tuple of them, depth first."""
    if isinstance(tree, tuple):
        leaves, specs = [], []
        for item in tree:
            item_leaves, spec = flatten(item)
            leaves += item_leaves
            specs.append(spec)
        return leaves, (type(tree), specs)
    return [tree], None


def unflatten(spec, leaves):
    """The inverse of `flatten`: the (named) tuples of `spec` filled with `leaves`."""
    def build(spec, it):
        if spec is None:
            return next(it)
        kind, specs = spec
        items = [build(s, it) for s in specs]
        return kind(*items) if hasattr(kind, "_fields") else kind(items)
    return build(spec, iter(leaves))


def compiled_function(traceable, fn, name, rows=False):
    """`fn`, compiled from `traceable` at its first call (eager, with a warning, where that
    fails; see `compile.CompiledStep`, also for `rows`)."""
    return CompiledStep(traceable, fn, shifted(0), name=name, rows=rows)


def recorded_function(traceable, fn, name):
    """`fn`, recorded from `traceable` at its first call and replayed (`compile.RecordedStep`):
    the path where no C++ compiler is found."""
    return RecordedStep(traceable, fn, shifted(0), name=name)


class Packing:
    """Where the tensors of a (named) tuple lie when packed: stacked, one tensor per dtype and
    shape (e.g. every float [n, D] tensor of a NUTS tree state in one [k, n, D]), so that a
    compiled step takes and returns a handful of tensors instead of dozens (each costs a
    compiled call some microseconds).

    example: a (named) tuple of tensors; roles: for each of its tensors (in `flatten`
    order), the role of each axis (a key of `CANONICAL`, or None for a fixed size).
    `layout`: the roles of each packed tensor's axes (its first, the stacking axis, fixed).
    alone: fields of the named tuple packed on their own (e.g. one that a driver keeps
    after the rest is gone, which would otherwise keep all its packed tensor alive).
    """

    def __init__(self, example, roles, alone=()):
        leaves, self.spec = flatten(example)
        fields = getattr(self.spec[0], "_fields", ())
        owner = [name for name, spec in zip(fields, self.spec[1]) for _ in range(_count(spec))]
        rows = {}  # (dtype, shape, field packed alone or None) of each packed tensor -> its rows
        self.place = []  # (which packed tensor, which row) of each leaf
        for index, (leaf, role) in enumerate(zip(leaves, roles)):
            field = owner[index] if index < len(owner) and owner[index] in alone else None
            key = (leaf.dtype, tuple(r or size for r, size in zip(role, leaf.shape)), field)
            rows.setdefault(key, 0)
            self.place.append((list(rows).index(key), rows[key]))
            rows[key] += 1
        keys = list(rows)
        self.layout = tuple((None,) + tuple(r if isinstance(r, str) else None for r in shape)
                            for _, shape, _ in keys)
        self.members = [[i for i, (w, _) in enumerate(self.place) if w == k]
                        for k in range(len(keys))]
        self.fields = {}  # a named tuple's field -> (its spec, where its tensors lie)
        if hasattr(self.spec[0], "_fields"):
            first = 0
            for name, spec in zip(self.spec[0]._fields, self.spec[1]):
                count = _count(spec)
                self.fields[name] = (spec, self.place[first:first + count])
                first += count

    def pack(self, tree):
        """The packed tensors of `tree` (of the example's structure, dtypes and roles)."""
        leaves, _ = flatten(tree)
        return tuple(torch.stack([leaves[i] for i in members]) for members in self.members)

    def unpack(self, packed, axis=0):
        """The (named) tuple of views into `packed` (stacked along `axis`: 1 where several
        packings were stacked in front)."""
        rows = [p.unbind(axis) for p in packed]
        return unflatten(self.spec, [rows[w][r] for w, r in self.place])

    def field(self, packed, name):
        """One field of the named tuple, unpacked from `packed`."""
        spec, places = self.fields[name]
        return unflatten(spec, [packed[w][r] for w, r in places])


def _count(spec):
    """The number of tensors a `flatten` spec holds."""
    return 1 if spec is None else sum(_count(s) for s in spec[1])


class PackedTree:
    """A tree state kept packed between compiled leaf steps: a field is unpacked when read
    (a driver reads a few, e.g. `iteration` and `position`, at every step)."""

    __slots__ = ("packed", "packing")

    def __init__(self, packed, packing):
        self.packed, self.packing = packed, packing

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.packing.field(self.packed, name)


def _end_begin_packed(metric_type, update, tree_packing, stats_packing, *args):
    """`nuts.leaf_end_begin` on packed tensors: (tree's packed tensors, position, momentum,
    log_prob, grad, inverse_mass, momentum_factor, uniform, steps, the `nuts.Draws`' four
    tensors, table, target, adapting, max_energy_error, settings) -> (tree's packed tensors,
    position, momentum, the leaf stats' packed tensors, steps, next uniform)."""
    k = len(tree_packing.members)
    tree = tree_packing.unpack(args[:k])
    *rest, settings = args[k:]
    rest = rest[:8] + [nuts.Draws(*rest[8:12])] + rest[12:]
    tree, position, momentum, stats, steps, uniform = nuts.leaf_end_begin(
        metric_type, update, tree, *rest, tuple(settings.unbind()))
    return (*tree_packing.pack(tree), position, momentum, *stats_packing.pack(stats), steps,
            uniform)


def _canonical(metric_type, adaptation_kind, dtype):
    """`_end_begin_packed`'s arguments (the tree packed) at the canonical sizes
    (`CANONICAL`), the tree's and the leaf stats' `Packing`, and for each argument which of
    its axes are the chains (n), the dimension (D), the tree depth (T), the leaf table's
    rows (L) and the rows of the random numbers drawn ahead (B, W): the layout
    `SharedCompiledStep` traces with."""
    n, dim, depth, rows = (CANONICAL[k] for k in ("n", "D", "T", "L"))
    names = {size: name for name, size in CANONICAL.items()}

    def roles(tensors):
        return [tuple(names.get(size) for size in t.shape) for t in flatten(tensors)[0]]
    position = torch.zeros(n, dim, dtype=dtype)
    point = state.HMCState(position, torch.zeros(n, dtype=dtype), position)
    step_size = torch.ones(n, dtype=dtype)
    tree = nuts.init_tree(point, step_size, depth, adaptation_kind.init(step_size))
    inverse_mass = metric.identity_metric(n, dim, dense=metric_type.dense, dtype=dtype)
    vector, uniform = position, torch.zeros(n, 3, dtype=dtype)
    scalar = lambda kind=dtype: torch.zeros((), dtype=kind)  # noqa: E731
    counts = torch.zeros(n, dtype=torch.long)
    draws = nuts.Draws(torch.zeros(CANONICAL["B"], n, 3, dtype=dtype), counts,
                       torch.zeros(CANONICAL["W"], n, dim, dtype=dtype), counts)
    rest = (vector, vector, step_size, vector, inverse_mass.inverse_mass,
            inverse_mass.momentum_factor, uniform, counts, *draws,
            torch.zeros(rows, 6, dtype=torch.long), counts, counts > 0,
            scalar(), torch.zeros(len(adaptation_kind.settings), dtype=dtype))
    stats = nuts.leaf_end_begin(metric_type, adaptation_kind.update, tree, *rest[:8], draws,
                                *rest[12:-1], adaptation_kind.settings)[3]
    tree_packing = Packing(tree, roles(tree), alone=("position",))
    stats_packing = Packing(stats, roles(stats))
    args = (*tree_packing.pack(tree), *rest)
    return args, tree_packing, stats_packing, tree_packing.layout + tuple(roles(rest))


def _shared_tree_step(metric_type, adaptation_kind, dtype, built):
    """(the `SharedCompiledStep` of `_end_begin_packed`, the tree's and the leaf stats'
    `Packing`, its arguments at the canonical sizes), made once per `built` dict."""
    key = (metric_type, adaptation_kind.update, dtype)
    if key not in built:
        args, tree_packing, stats_packing, layout = _canonical(metric_type, adaptation_kind,
                                                               dtype)
        built[key] = (SharedCompiledStep(
            functools.partial(_end_begin_packed, metric_type, adaptation_kind.update,
                              tree_packing, stats_packing),
            key=f"nuts.leaf_end_begin {metric_type.__qualname__} "
                f"{adaptation_kind.update.__qualname__}",
            layout=layout,
            modules=(nuts, trajectory, proposals, termination, integrators, state,
                     sys.modules[metric_type.__module__], adaptation, sys.modules[__name__]),
            perturb=shifted(0), name="NUTS tree step",
            setup=precompile_command(dtype, metric_type)),
            tree_packing, stats_packing, args)
    return built[key]


def precompile_command(dtype, metric_type):
    """The command that builds NUTS's tree step for this dtype and metric type."""
    return (f"python -m inference.mcmc.precompile --dtype {str(dtype).removeprefix('torch.')} "
            f"--metric {'dense' if metric_type.dense else 'diag'}")


def nuts_tree_step_on_disk(metric_type, adaptation_kind, dtype, built):
    """Whether NUTS's compiled tree step for this metric type, adaptation and dtype is built
    (loaded in `built`, or on disk): a compiled run would load it, not build it."""
    shared, _, _, args = _shared_tree_step(metric_type, adaptation_kind, dtype, built)
    return shared.on_disk(args)


def nuts_leaf_step(value_and_grad, metric_type, max_energy_error, adaptation_kind, dtype,
                   device, built):
    """NUTS's `LeafStep` with `leaf_end_begin` compiled once per machine (see the module
    docstring): value_and_grad as given (e.g. `compiled_function` of the model's
    gradient); max_energy_error and the adaptation's settings are inputs of the compiled
    function, so that one build serves every value of them. built: a dict where the
    caller keeps the compiled steps made here (loaded from disk once per dict).
    Returns (LeafStep, the SharedCompiledStep)."""
    shared, tree_packing, stats_packing, _ = _shared_tree_step(metric_type, adaptation_kind,
                                                               dtype, built)
    settings = (torch.tensor(float(max_energy_error), dtype=dtype, device=device),
                torch.tensor(adaptation_kind.settings, dtype=dtype, device=device))
    flags = {}  # (chains, a bool) -> [chains] of it
    n_packed = len(tree_packing.members)

    n_stats = len(stats_packing.members)
    at = n_packed + 2 + n_stats
    group, row = tree_packing.fields["position"][1][0]

    def end_begin(tree, *args):
        *args, draws, table, target, adapting = args  # adapting: [n], or one bool for all
        if not isinstance(adapting, torch.Tensor):
            key = (len(target), bool(adapting))
            if key not in flags:
                flags[key] = torch.full(key[:1], key[1], device=device)
            adapting = flags[key]
        packed = tree.packed if isinstance(tree, PackedTree) else tree_packing.pack(tree)
        out = shared(*packed, *args, *draws, table, target, adapting, *settings)
        # the leaf stats stay packed (a tuple of tensors) until a driver reads them
        return (PackedTree(out[:n_packed], tree_packing), out[n_packed], out[n_packed + 1],
                out[n_packed + 2:at], out[at], out[at + 1])

    def iteration(stats):
        return stats_packing.field(stats, "iteration")

    def point(tree):
        return tree.packed[group][row]  # a view of the position's own packed tensor

    def stack(stats):
        return stats_packing.unpack([torch.stack(s) for s in zip(*stats)], axis=1)

    def unpack(tree):
        return tree_packing.unpack(tree.packed) if isinstance(tree, PackedTree) else tree

    eager = nuts.eager_leaf_step(value_and_grad, metric_type, max_energy_error, adaptation_kind)
    return nuts.LeafStep(eager.begin, value_and_grad, end_begin, adaptation_kind.init,
                         iteration, point, stack, unpack), shared
