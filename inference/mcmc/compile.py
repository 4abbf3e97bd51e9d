"""Compile a kernel's inner step (model gradient included) into one native function.

Pyro's `jit_compile=True`, for our kernels: the step of a trajectory (a NUTS
leaf, an HMC leapfrog) is a pure function of tensors. Running it once under
`make_fx` records every ATen operation it executes, through the `ppl` layer,
the model and the autograd backward pass alike, as one flat FX graph; Inductor
then fuses that graph into a few native kernels. Eager PyTorch pays a few
microseconds of dispatch per operation; a small model's gradient has dozens of
them, so the compiled step is several times faster (see benchmarks/hmc_blr.py).

What tracing assumes, and how it is checked:

- Python code that reads tensor values (`if x > 0:` in the model) cannot be
  traced: such a model runs eagerly. Latents come from bijections into their
  support, so the `ppl` layer skips its support checks of them while tracing
  (`Potential.traceable`). As a second guard, the compiled function is
  compared with the eager one at the traced point and at another one, and
  not used if they disagree.
- Observed data and the model's parameters become constants of the graph:
  a kernel recompiles when it is given another `Potential`, or its
  `Potential` is rebound to other data (`Potential.rebind`).
- What Inductor compiled is kept on disk under $PPL_CACHE_DIR
  (`inference.mcmc.cache`), named by a hash of the traced graph, its
  constants (the observed data) and the inputs' shapes: the same model on the
  same data loads in later runs, after a reboot too. A step that must be
  compiled says so first (a line on stderr), since it takes seconds; so does
  a load that takes over a second (`LOAD_NOTICE_AFTER`).
- Anything that fails (tracing, Inductor, a missing C++ compiler) falls back
  to the eager function with a warning that says why, so `jit_compile=True`
  is never worse than off, apart from the time spent trying.
"""
import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import warnings

import torch
from tqdm.auto import tqdm

from inference import torch_compat
from inference.mcmc.cache import (ENTRY_FORMAT, compiled_entry, inductor_cache,
                                  inductor_headers_built, inductor_headers_checked,
                                  probe_folder, restore_precompiled_headers)

__all__ = ["CompiledStep", "RecordedStep", "shifted", "compiler_available", "LOAD_NOTICE_AFTER",
           "building_headers", "builds_in_place"]

# A load from the cache that takes longer than this (seconds) says so (Inductor's first
# load in a process can take seconds: the run would sit at 0% without a word).
LOAD_NOTICE_AFTER = 1.


def compiler_available():
    """Whether a C++ compiler that Inductor would use is on this machine ($CXX, g++, c++
    or clang++)."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else []
    return any(shutil.which(name) for name in names + ["g++", "c++", "clang++"])


def said_if_slow(load, what):
    """`load`, which writes one line to stderr ("loading the compiled <what> from the cache
    ...") should it take more than `LOAD_NOTICE_AFTER` seconds."""
    def loading(*args):
        timer = threading.Timer(LOAD_NOTICE_AFTER, tqdm.write,
                                (f"jit_compile: loading the compiled {what} from the cache "
                                 f"...",), {"file": sys.stderr})
        timer.daemon = True
        timer.start()
        try:
            return load(*args)
        finally:
            timer.cancel()
    return loading

# Shapes are taken as given (the chain count and dimension are fixed in a run). A
# step is called tens of thousands of times with small tensors, so per-call costs
# matter: the C++ wrapper calls the kernels without Python, input size checks are
# off (`__call__` makes the inputs contiguous), and the CPU's vector instructions
# are trusted without a probe build in a subprocess (seconds per process). (On a CPU
# with AVX-512 BF16 or VNNI, Inductor still builds and loads a small probe for each,
# once per process.) Inductor's tiling heuristics, which weigh each loop's strides with
# sympy, are off: the NUTS tree step compiles in 33 s instead of 38 s and runs as fast.
# A `CompiledStep(rows=True)` takes its rows in groups of this many: a row passed at the same
# place modulo 4 as in the whole batch gives the same bits (a matrix product's blocks start at
# row 0; a row moved to another place, or fewer rows, may take another path in the BLAS and
# round differently). `_rows_agree` checks it.
ROW_GROUP = 4

INDUCTOR_OPTIONS = {"cpp_wrapper": True, "size_asserts": False, "cpp.vec_isa_ok": True,
                    "cpp.enable_tiling_heuristics": False}

_READS_VALUES = ("the model reads tensor values in Python (an `if`, float() or .item() on a "
                 "latent), which a trace cannot follow; write it with torch.where instead")


class _ReadsValues(Exception):
    """The traced function reads tensor values in Python (`torch_compat.reads_values`)."""


class CompiledStep:
    """`fn(*tensors) -> tuple of tensors`, compiled from `traceable` at its first call.

    traceable: the same function with no side effects, no randomness (pass
    random numbers in) and no Python exception handling; fn: the eager
    version (it may branch and recover from errors), used where compiling
    failed and for a call the compiled function raises in (e.g. a failed
    Cholesky, which the eager step turns into a rejected move).
    perturb: args -> args at another point (same shapes), where the compiled
    and the eager function must agree as well.
    rows: whether `fn` works row by row (row i of its outputs depends only on row i of
    its inputs, as a model's log density and gradient per chain): it is then compiled
    for any number of rows (the first axis of every input symbolic), and `takes_rows`
    says whether that held (the trace kept the axis symbolic, and `row_group` rows from
    two groups, each at its place modulo `row_group`, give the eager function's values and
    the same bits as in the whole batch), so that a caller may pass only the rows it needs
    (e.g. those of the chains still running) in such groups. The compiled function is the
    same either way.
    After the first call, `reason` is None when compiled (else why not) and
    `compile_seconds` the time spent tracing, compiling and checking.
    """

    row_group = ROW_GROUP
    contiguous_inputs = True  # what the compiled code is specialized to

    def __init__(self, traceable, fn, perturb, name="step", rows=False):
        self.traceable, self.fn, self.perturb, self.name = traceable, fn, perturb, name
        self.rows = rows
        self.takes_rows = False
        self.compiled = None
        self.reason = "not compiled yet"
        self.compile_seconds = 0.
        self.n_fallbacks = 0  # calls where the compiled function raised and `fn` ran
        self.loaded_from_disk = False

    @property
    def is_compiled(self):
        return self.compiled is not None

    @property
    def status(self):
        """'loaded' (from disk), 'compiled' (built in this process) or 'eager: <why>'."""
        if not self.is_compiled:
            return f"eager: {self.reason}"
        return "loaded" if self.loaded_from_disk else "compiled"

    def __call__(self, *args):
        if self.compiled is None:
            if self.reason == "not compiled yet":
                self._compile(args)
            if self.compiled is None:
                return self.fn(*args)
        try:
            if self.contiguous_inputs:
                args = [a.contiguous() for a in args]
            return self.compiled(*args)
        except (RuntimeError, ValueError):
            self.n_fallbacks += 1  # the eager step masks the failing chains
        return self.fn(*args)

    def _compile(self, args):
        started = time.perf_counter()
        args = tuple(a.contiguous() for a in args)
        tolerance = 1e-3 if args[0].dtype in (torch.float16, torch.bfloat16, torch.float32) \
            else 1e-8
        try:
            try:
                compiled = self._build(args)
            except RuntimeError as error:  # tell a model that reads values by a fake trace
                if torch_compat.reads_values(self.traceable, args):
                    raise _ReadsValues(_READS_VALUES) from error
                raise
            for point in (args, self.perturb(args)):
                if not _same(self.fn(*point), tuple(compiled(*point)), tolerance):
                    raise RuntimeError("the compiled function disagrees with the eager one "
                                       "away from the point it was traced at: " + _READS_VALUES)
            self.takes_rows = self.takes_rows and self._rows_agree(compiled, args, tolerance)
        except Exception as error:  # anything at all: run eagerly, never fail the run
            self.takes_rows = False
            self.reason = str(error) if isinstance(error, _ReadsValues) else \
                f"{type(error).__name__}: {error}".splitlines()[0]
            warnings.warn(f"jit_compile: could not compile the {self.name} ({self.reason}); "
                          f"running it eagerly", RuntimeWarning, stacklevel=4)
        else:
            self.compiled, self.reason = compiled, None
        self.compile_seconds = time.perf_counter() - started

    def _rows_agree(self, compiled, args, tolerance):
        """Whether `ROW_GROUP` rows of `args` from its first two groups, each at its place
        modulo `ROW_GROUP` (rows 4, 1, 6, 3), give alone the eager function's values and,
        compiled, the same bits as in the whole batch (False where either cannot take
        them: e.g. a model that holds its own chain axes, or mixes its rows)."""
        rows = [place + ROW_GROUP * (place % 2 == 0) for place in range(ROW_GROUP)]
        part = tuple(a[rows] for a in args)
        try:
            eager = self.fn(*part)
        except (RuntimeError, ValueError, IndexError):
            return False
        alone, whole = tuple(compiled(*part)), tuple(compiled(*args))
        return _same(eager, alone, tolerance) and all(
            torch.equal(a, w[rows]) for a, w in zip(alone, whole))

    def _trace(self, args):
        """(FX graph, its inputs, Inductor's `dynamic_shapes`): with the rows symbolic where
        `rows` asks for it and the trace keeps them so (`takes_rows` is then True for now),
        else specialized to the shapes of `args`."""
        from torch.fx.experimental.proxy_tensor import make_fx
        if self.rows and args[0].shape[0] >= 2 * ROW_GROUP:
            fakes = torch_compat.symbolic_fakes(
                args, [[axis == 0 for axis in range(a.dim())] for a in args], constants=True)
            try:
                graph = make_fx(lambda *inputs: self.traceable(*inputs),
                                tracing_mode="symbolic")(*fakes)
            except Exception:  # noqa: BLE001 (any failure: the fixed-shape trace below)
                graph = None
            if graph is not None and _rows_stay_symbolic(graph):
                self.takes_rows = True
                return graph, fakes, "from_graph"
        return make_fx(self.traceable)(*args), list(args), "from_example_inputs"

    def _build(self, args):
        """The compiled function, for the shapes of `args` (any number of rows, see
        `rows`): loaded from the cache where this graph on these shapes was compiled
        before."""
        graph, inputs, dynamic_shapes = self._trace(args)
        build = functools.partial(compile_graph, graph, inputs, dynamic_shapes)
        compiled, self.loaded_from_disk = compiled_entry(
            graph_key(graph, args), build,
            said_if_slow(lambda entry: build(entry)[0], f"{self.name} for this model"),
            announce=self._announce, in_place=builds_in_place(args))
        return compiled

    def _announce(self):
        tqdm.write(f"jit_compile: compiling the {self.name} for this model (a few seconds, "
                   f"once per model and data) ...", file=sys.stderr)


class RecordedStep(CompiledStep):
    """A `CompiledStep` that replays the FX graph `make_fx` records, uncompiled: where no C++
    compiler is found. The graph runs the same ATen operations as `fn`, without the Python
    of the `ppl` layer and the autograd engine around them (about half the time of a small
    model's eager gradient), less those that do not depend on the inputs' values
    (`fold_constants`); checked and falling back to `fn` as `CompiledStep` does."""

    contiguous_inputs = False

    def _build(self, args):
        from torch.fx.experimental.proxy_tensor import make_fx
        graph = fold_constants(make_fx(self.traceable)(*args), args)
        return graph.forward  # (without nn.Module's call machinery: microseconds a call)

    @property
    def status(self):
        return "recorded" if self.is_compiled else f"eager: {self.reason}"


# Operations whose values depend only on their input's shape, dtype and device: constants
# in a graph recorded for fixed shapes.
_SHAPE_ONLY = {torch.ops.aten.ones_like.default, torch.ops.aten.zeros_like.default,
               torch.ops.aten.full_like.default}


def fold_constants(graph, args):
    """The FX `graph` (recorded by `make_fx` at `args`, for their shapes) replaying fewer
    operations: `detach` (a no-op without autograd) goes, and every node whose value does not
    depend on the inputs' values (factories such as the seed `ones_like` of a gradient, views
    and arithmetic of constants) is computed once, here, and kept as a constant. A graph that
    changes a tensor in place, or draws random numbers, keeps its constants as they are."""
    nodes = list(graph.graph.nodes)
    for node in nodes:
        if node.target is torch.ops.aten.detach.default:
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
    nodes = list(graph.graph.nodes)
    operators = [node.target for node in nodes
                 if node.op == "call_function" and hasattr(node.target, "tags")]
    if any(target.name().split("::")[-1].split(".")[0].endswith("_")  # aten::add_.Tensor
           or torch.Tag.nondeterministic_seeded in target.tags for target in operators):
        graph.recompile()
        return graph
    values = {}

    class Recording(torch.fx.Interpreter):
        def run_node(self, node):
            values[node] = super().run_node(node)
            return values[node]
    Recording(graph).run(*args)
    constant = {node for node in nodes if node.op == "get_attr"}
    for node in nodes:
        if node.op == "call_function" and isinstance(values.get(node), torch.Tensor) and (
                node.target in _SHAPE_ONLY or all(i in constant for i in node.all_input_nodes)):
            constant.add(node)
    for count, node in enumerate(n for n in nodes if n in constant and n.op != "get_attr"):
        users = set(node.users)
        if users <= constant or any(user.op == "output" for user in users):
            continue  # (an output is made anew at each call: the caller may keep it)
        name = f"_folded_{count}"
        graph.register_buffer(name, values[node])
        with graph.graph.inserting_before(node):
            folded = graph.graph.get_attr(name)
        for user in users - constant:
            user.replace_input_with(node, folded)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


# Inductor precompiles the C++ headers that every step includes, once, into a folder under the
# temporary directory (`cache.inductor_headers_built`; a reboot empties it). With it built, a
# model's compile takes about 2 s less; building it takes about 7 s, and a step compiled with
# it builds it again when loaded after a reboot. So a model's step uses it where it is built or
# where the cache keeps a copy of it (`cache.restore_precompiled_headers`, made by the setup step,
# `inference.mcmc.precompile`), and goes without it otherwise (only the setup step,
# `building_headers`, builds it); the steps shared by every model, compiled once and loaded in
# every run, go without it.
_HEADERS = {"build": False}


@contextlib.contextmanager
def building_headers():
    """Within the block, compiles build Inductor's precompiled header where it is missing (for
    the setup step, `inference.mcmc.precompile`)."""
    before, _HEADERS["build"] = _HEADERS["build"], True
    try:
        yield
    finally:
        _HEADERS["build"] = before


def compile_graph(graph, inputs, dynamic_shapes, folder, precompiled_headers=None,
                  serial=False):
    """Inductor's compilation of the FX `graph`, with its cache in `folder`: (function,
    whether `load_compiled` can load it from there; not all graphs can be saved). In a folder
    compiled into before (an entry: its cache then serves the compile), under the settings
    used then (`_entry_settings`); in a new one, with the precompiled header where it is
    built (None), or never (False: what is compiled then loads without it, after a reboot
    too), and without OpenMP where `serial`: the steps shared by every model are, as their
    loops are short for the chain counts of most runs (a team of threads cost more than it
    saved at 16 and at 1024 chains), and their code then does not depend on the thread count
    of the process that built them."""
    probe_cpu()
    options = {**INDUCTOR_OPTIONS, **_entry_settings(folder, precompiled_headers, serial)}
    with inductor_cache(folder), inductor_headers_checked(), \
            torch_compat.without_c_shim_notices():
        compiled = torch_compat.inductor_compile(graph, inputs, dynamic_shapes, options)
    return compiled, getattr(compiled, "is_saveable", lambda: True)()


_PROBED = {"done": False}


def builds_in_place(args):
    """Whether a step on `args` is built in its cache entry's own folder
    (`cache.compiled_entry`'s `in_place`): on CUDA, where Inductor's C++ wrapper loads each
    kernel's cubin by the absolute path it was built at."""
    return any(isinstance(a, torch.Tensor) and a.device.type == "cuda" for a in args)


def probe_cpu():
    """Run Inductor's probes of the CPU's vector extensions (once per process, before the first
    compile) with its cache in the cache's probe folder (`cache.probe_folder`): they are built
    there once per machine, not into each new step's folder, about 1 s of a new model's
    compile. Where that folder cannot be used, Inductor probes at the compile, as usual."""
    if _PROBED["done"]:
        return
    _PROBED["done"] = True
    folder = probe_folder()
    if folder is not None:
        with inductor_cache(folder):
            torch_compat.inductor_cpu_probes(INDUCTOR_OPTIONS)


def load_compiled(folder):
    """The function `compile_graph` compiled into `folder`, under the options it was
    compiled with (no CPU probe in a subprocess)."""
    options = {**INDUCTOR_OPTIONS, **(_saved_entry_settings(folder) or {})}
    if options.get("cpp_cache_precompile_headers"):
        restore_precompiled_headers()  # (else a load after a reboot builds the header again)
    with inductor_cache(folder):
        return torch_compat.inductor_load(folder, options)


_SETTINGS = "ppl-settings.json"


def _saved_entry_settings(folder):
    """The Inductor options that `folder` was compiled with beyond `INDUCTOR_OPTIONS` (the
    precompiled header, the thread count; None if it holds none): a compile or load under
    others would compile the step again."""
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(folder, _SETTINGS)) as file:
            return json.load(file)
    return None


def _entry_settings(folder, precompiled_headers=None, serial=False):
    """`_saved_entry_settings` of `folder`; for a new folder, chosen now (the header: see
    `building_headers`, False: never; `serial`: one thread, no OpenMP) and saved there."""
    settings = _saved_entry_settings(folder)
    if settings is None:
        use = precompiled_headers is not False and (
            _HEADERS["build"] or restore_precompiled_headers() or inductor_headers_built())
        settings = {"cpp_cache_precompile_headers": use, **({"cpp.threads": 1} if serial else {})}
        with open(os.path.join(folder, _SETTINGS), "w") as file:
            json.dump(settings, file)
    return settings


def graph_key(graph, args):
    """A compiled step's name in the cache: a hash of everything its code depends on (the
    graph's code and constants, the inputs' dtypes, shapes and strides, the torch version,
    the CPU's vector instructions and the compile options)."""
    key = hashlib.sha256()
    parts = [ENTRY_FORMAT, graph.code, torch.version.__version__,
             torch.backends.cpu.get_cpu_capability(), repr(sorted(INDUCTOR_OPTIONS.items()))]
    parts += [f"{a.dtype} {tuple(a.shape)} {a.stride()} {a.device}" for a in args]
    key.update("\n".join(parts).encode())
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            value = functools.reduce(getattr, node.target.split("."), graph)
            if not isinstance(value, torch.Tensor):
                key.update(f"\n{node.target} {value!r}".encode())
                continue
            key.update(f"\n{node.target} {value.dtype} {tuple(value.shape)}\n".encode())
            key.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return key.hexdigest()[:32]


def _rows_stay_symbolic(graph):
    """Whether the first axis of every input and output of a `make_fx` symbolic trace is
    still a symbol (a trace that compared it with a fixed size has made it that size)."""
    from torch.fx.experimental.symbolic_shapes import has_free_symbols
    values = [node.meta.get("val") for node in graph.graph.nodes if node.op == "placeholder"]
    values += [getattr(node, "meta", {}).get("val") for node in graph.graph.output_node().args[0]]
    return all(isinstance(v, torch.Tensor) and v.dim() > 0 and has_free_symbols(v.shape[0])
               for v in values)


def _same(eager, compiled, rtol):
    """Whether two tuples of tensors agree: floats to `rtol` (relative to their scale)."""
    if len(eager) != len(compiled):
        return False
    for a, b in zip(eager, compiled):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            finite = torch.isfinite(a)
            if not torch.equal(finite, torch.isfinite(b)):
                return False
            scale = a[finite].abs().max() if finite.any() else a.new_tensor(0.)
            if not torch.allclose(a[finite], b[finite], rtol=rtol, atol=rtol * (1. + scale)):
                return False
        elif not torch.equal(a, b):
            return False
    return True


def shifted(index, scale=0.05, seed=0):
    """A `perturb` for `CompiledStep`: args[index] plus N(0, scale^2) noise (own generator)."""
    def perturb(args):
        x = args[index]
        generator = torch.Generator(device=x.device).manual_seed(seed)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return args[:index] + (x + scale * noise,) + args[index + 1:]
    return perturb
