"""Compilation as an adapter: compiled versions of the kernels' pure steps, from outside.

The kernels (`hmc`, `nuts`) are pure functions of tensors and named tuples of tensors and
know nothing of compiling; this module wraps them:

- `compiled_function(traceable, fn, name)`: the model's gradient (or HMC's leapfrog
  step, gradient included), traced and compiled for one model (`compile.CompiledStep`).
- `nuts_leaf_step(value_and_grad, metric_type, max_energy_error, adaptation)`: NUTS's
  `LeafStep` with its model-independent part, `nuts.leaf_end_begin`, compiled once per
  machine for every model, chain count, dimension and tree depth
  (`shared_compile.SharedCompiledStep`). Named tuples go in and out as flat lists of
  tensors (`flatten`); which axes are the chains, the dimension and the tree depth is
  read off an example state built at the canonical sizes.
"""
import functools
import sys

import torch

from inference.mcmc import (adaptation, integrators, metric, nuts, proposals, state,
                            termination, trajectory)
from inference.mcmc.compile import CompiledStep, shifted
from inference.mcmc.shared_compile import CANONICAL, SharedCompiledStep

__all__ = ["flatten", "unflatten", "compiled_function", "nuts_leaf_step"]


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


def compiled_function(traceable, fn, name):
    """`fn`, compiled from `traceable` at its first call (eager, with a warning, where that
    fails; see `compile.CompiledStep`)."""
    return CompiledStep(traceable, fn, shifted(0), name=name)


def _end_begin_flat(metric_type, update, spec, out_spec, *leaves):
    """`nuts.leaf_end_begin` on flat tensors: the adaptation's settings are the last one."""
    *args, settings = unflatten(spec, leaves)
    out = nuts.leaf_end_begin(metric_type, update, *args, tuple(settings.unbind()))
    flat, out_spec[0] = flatten(out)
    return tuple(flat)


def _canonical_layout(metric_type, adaptation_kind, dtype):
    """The arguments of `_end_begin_flat` at the canonical sizes (`CANONICAL`), and for
    each tensor which of its axes are the chains (n), the dimension (D), the tree depth
    (T) and the leaf table's rows (L): the layout `SharedCompiledStep` traces with."""
    n, dim, depth, rows = (CANONICAL[k] for k in ("n", "D", "T", "L"))
    position = torch.zeros(n, dim, dtype=dtype)
    point = state.HMCState(position, torch.zeros(n, dtype=dtype), position)
    step_size = torch.ones(n, dtype=dtype)
    tree = nuts.init_tree(point, step_size, depth, adaptation_kind.init(step_size))
    inverse_mass = metric.identity_metric(n, dim, dense=metric_type.dense, dtype=dtype)
    vector, uniform = position, torch.zeros(n, 3, dtype=dtype)
    scalar = lambda kind=dtype: torch.zeros((), dtype=kind)  # noqa: E731
    args = (tree, vector, vector, step_size, vector, inverse_mass.inverse_mass,
            inverse_mass.momentum_factor, uniform, vector, uniform,
            torch.zeros(rows, 6, dtype=torch.long), scalar(torch.long), scalar(torch.bool),
            scalar(), torch.zeros(len(adaptation_kind.settings), dtype=dtype))
    leaves, spec = flatten(args)
    names = {size: name for name, size in CANONICAL.items()}
    return spec, tuple(tuple(names.get(size) for size in leaf.shape) for leaf in leaves)


def nuts_leaf_step(value_and_grad, metric_type, max_energy_error, adaptation_kind, dtype,
                   device, built):
    """NUTS's `LeafStep` with `leaf_end_begin` compiled once per machine (see the module
    docstring): value_and_grad as given (e.g. `compiled_function` of the model's
    gradient); max_energy_error and the adaptation's settings are inputs of the compiled
    function, so that one build serves every value of them. built: a dict where the
    caller keeps the compiled steps made here (loaded from disk once per dict).
    Returns (LeafStep, the SharedCompiledStep)."""
    key = (metric_type, adaptation_kind.update, dtype)
    if key not in built:
        spec, layout = _canonical_layout(metric_type, adaptation_kind, dtype)
        out_spec = [None]
        built[key] = (SharedCompiledStep(
            functools.partial(_end_begin_flat, metric_type, adaptation_kind.update, spec,
                              out_spec),
            key=f"nuts.leaf_end_begin {metric_type.__qualname__} "
                f"{adaptation_kind.update.__qualname__}",
            layout=layout,
            modules=(nuts, trajectory, proposals, termination, integrators, state,
                     sys.modules[metric_type.__module__], adaptation, sys.modules[__name__]),
            perturb=shifted(0), name="NUTS tree step",
            setup="python -m inference.mcmc.precompile --dtype {dtype} --metric "
                  + ("dense" if metric_type.dense else "diag")), out_spec)
    shared, out_spec = built[key]
    settings = (torch.tensor(float(max_energy_error), dtype=dtype, device=device),
                torch.tensor(adaptation_kind.settings, dtype=dtype, device=device))

    flags = {flag: torch.tensor(flag, device=device) for flag in (False, True)}

    def end_begin(*args):
        *args, adapting = args  # a bool, an input of the compiled function as a tensor
        leaves, _ = flatten((*args, flags[bool(adapting)]) + settings)
        flat = shared(*leaves)  # its first call (eager or traced) sets out_spec
        return unflatten(out_spec[0], flat)

    eager = nuts.eager_leaf_step(value_and_grad, metric_type, max_energy_error, adaptation_kind)
    return nuts.LeafStep(eager.begin, value_and_grad, end_begin, adaptation_kind.init), shared
