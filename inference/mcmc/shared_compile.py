"""Compile a model-independent step once per machine, for every size it is symbolic in.

NUTS spends most of its step outside the model: the tree bookkeeping (leaf
weights, multinomial sampling, U-turn checks, subtree merges, step size
adaptation) is the same function for every model, given the metric type,
the dtype and the sampler's settings. `SharedCompiledStep` compiles such a
function once and keeps it on disk, so that a new model compiles only its
own gradient (`inference.mcmc.compile.CompiledStep`), seconds instead of the
tens of seconds the bookkeeping takes Inductor.

How:

- The function is traced with some sizes symbolic (for NUTS: the chain
  count `n`, the dimension `D`, the maximum tree depth `T`, the rows of
  its leaf table `L` and of the blocks of random numbers drawn ahead, `B`
  and `W`) and every other size fixed (`layout` names, for each
  argument, the role of each axis). The trace runs at canonical sizes
  (`CANONICAL`), even numbers that no fixed size of the NUTS state takes,
  so that the trace never mistakes a fixed size for a symbolic one.
- Inductor compiles it into a cache entry of its own under
  `PPL_CACHE_DIR` (default `~/.cache/ppl`, see `inference.mcmc.cache`, which
  also says what it refuses to load), named by a hash of everything the code
  depends on (the function's key, dtype, device, the source of the modules
  it is built from, the torch version and the CPU's vector instructions).
  Later processes load it from there (a load that takes over a second, as
  Inductor's first in a process can, says so on stderr).
- As with `CompiledStep`, the first call in each process compares the
  compiled function with the eager one at the given point and at a
  perturbed one; anything that fails falls back to the eager function with
  a warning.
- On CUDA, Inductor's C++ wrapper embeds the kernels' absolute cubin
  paths: a step built in a folder renamed afterwards failed at its first
  call (seen on an H200, torch 2.11), so there the entry is built in its
  own folder, under a lock (`cache.compiled_entry`'s `in_place`).
- A sampling run that has to build the step (the machine skipped the
  install's build step, `python -m inference.mcmc.precompile`) says so with
  a `FirstCompileWarning`, since it pauses for tens of seconds. Only
  `jit_compile=True` builds it in a run: by default, a run whose step is not
  on disk (`SharedCompiledStep.on_disk`) goes without it
  (`inference.mcmc.sampler.NUTS`).
"""
import functools
import hashlib
import warnings

import torch

from inference import torch_compat
from inference.mcmc.cache import ENTRY_FORMAT, compiled_entry, entry_on_disk
from inference.mcmc.compile import (INDUCTOR_OPTIONS, CompiledStep, builds_in_place,
                                    compile_graph, load_compiled, said_if_slow)

__all__ = ["SharedCompiledStep", "FirstCompileWarning", "NotPrecompiledWarning", "CANONICAL"]

CANONICAL = {"n": 38, "D": 34, "T": 14, "L": 46, "B": 26, "W": 30}


class FirstCompileWarning(UserWarning):
    """A step shared by every model is being built now (once per machine, tens of seconds)."""


class NotPrecompiledWarning(UserWarning):
    """A run goes without a compiled step shared by every model, as it is not built on this
    machine (the message names the command that builds it)."""


class SharedCompiledStep(CompiledStep):
    """`fn(*tensors)`, compiled once per machine for any sizes named in `layout` (see the
    module docstring).

    fn: a pure function of tensors (also the eager fallback); key: a string
    naming it and the constants it closes over (metric type, settings);
    layout: for each argument, a tuple with one entry per axis: a key of
    `CANONICAL` (a symbolic size; axes with the same key have the same size)
    or None (a fixed size); modules: the modules whose source defines `fn`
    (a change to them compiles anew); perturb: as in `CompiledStep`; setup: the
    command that builds it ahead of any run, named in the `FirstCompileWarning`
    ("{dtype}" in it becomes the arguments' dtype, e.g. float64).
    """

    def __init__(self, fn, key, layout, modules, perturb, name="step",
                 setup="python -m inference.mcmc.precompile"):
        super().__init__(fn, fn, perturb, name=name)
        self.key, self.layout, self.modules, self.setup = key, layout, modules, setup

    def _build(self, args):
        if len(args) != len(self.layout):
            raise ValueError(f"{self.name}: {len(args)} arguments for a layout of "
                             f"{len(self.layout)}")
        compiled, self.loaded_from_disk = compiled_entry(
            self._digest(args), functools.partial(self._compile_into, args),
            said_if_slow(load_compiled, self.name),
            announce=functools.partial(self._announce_shared, args),
            in_place=builds_in_place(args))
        return compiled

    def on_disk(self, args):
        """Whether the step for arguments like `args` (their dtypes and fixed sizes) is
        compiled (in this process or on disk): a first call would load it, not build it."""
        return self.is_compiled or entry_on_disk(self._digest(args))

    def _announce_shared(self, args):
        dtype = str(args[0].dtype).removeprefix("torch.")
        warnings.warn(f"jit_compile: building the {self.name} ({dtype}), shared by every model, "
                      f"once for this machine (20-30 s); `{self.setup.format(dtype=dtype)}` "
                      f"builds it at install instead", FirstCompileWarning)

    def _compile_into(self, args, folder):
        """Trace at the canonical sizes and compile with Inductor's cache in `folder`."""
        from torch.fx.experimental.proxy_tensor import make_fx
        fake_args = _canonical_fakes(args, self.layout)
        graph = make_fx(self.traceable, tracing_mode="symbolic")(*fake_args)
        return compile_graph(graph, fake_args, "from_graph", folder, precompiled_headers=False,
                             serial=True)

    def _digest(self, args):
        """The cache directory's name: a hash of everything the compiled code depends on."""
        sources = hashlib.sha256()
        for module in self.modules:
            with open(module.__file__, "rb") as file:
                sources.update(file.read())
        dtypes = ",".join(str(a.dtype) for a in args)
        fixed = ",".join(str([size if role is None else role for size, role in
                              zip(a.shape, roles)]) for a, roles in zip(args, self.layout))
        parts = (ENTRY_FORMAT, self.key, dtypes, fixed, args[0].device.type,
                 torch.version.__version__,
                 torch.backends.cpu.get_cpu_capability(), repr(sorted(INDUCTOR_OPTIONS.items())),
                 repr(sorted(CANONICAL.items())), sources.hexdigest())
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _canonical_fakes(args, layout):
    """Fake tensors shaped like `args` with the axes `layout` names symbolic, at canonical
    sizes (axes with the same name are one symbol)."""
    examples = []
    for arg, roles in zip(args, layout):
        if len(roles) != arg.dim():
            raise ValueError(f"layout {roles} does not fit an argument of shape "
                             f"{tuple(arg.shape)}")
        shape = [size if role is None else CANONICAL[role] for size, role in zip(arg.shape, roles)]
        examples.append(torch.empty(shape, dtype=arg.dtype, device=arg.device))
    return torch_compat.symbolic_fakes(examples, [[role is not None for role in roles]
                                                  for roles in layout])
