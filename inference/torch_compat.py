"""The private PyTorch symbols the library still needs, each with the reason, in one place.

Everything else in `ppl` and `inference` uses public torch APIs only. Each
entry below says why no public API does its job. `tests/inference/
test_torch_compat.py` uses every one and fails, naming the symbol and the
torch version, when an upgrade removes or changes it: a torch upgrade is
caught by CI, never by users as a silent fallback to a slower path.
To add one: re-export it here with its reason, list it in `PRIVATE`, and add
its use to the test.
"""
import contextlib
import logging

from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree

__all__ = ["PRIVATE", "tree_flatten", "tree_unflatten", "make_fx_fake", "op_schema",
           "inductor_compile", "inductor_load", "inductor_cache_in", "inductor_header_dir",
           "inductor_cpu_probes",
           "without_c_shim_notices", "symbolic_fakes", "reads_values"]

# The private names used here (for the test, and for a reader checking an upgrade).
PRIVATE = ("torch.utils._pytree", "make_fx(_allow_non_fake_inputs=True)", "OpOverload._schema",
           "torch._inductor.standalone_compile", "torch._inductor.CompiledArtifact.load",
           "torch._inductor.config.patch",
           "torch._inductor.runtime.cache_dir_utils.temporary_cache_dir",
           "torch._inductor.codecache._HEADER_DIR", "torch._inductor.ir logger",
           "torch._inductor.cpu_vec_isa.valid_vec_isa_list",
           "torch._subclasses.fake_tensor.FakeTensorMode",
           "torch._subclasses.fake_tensor.DataDependentOutputException")

# A step's nested arguments (a dict batch, a list of tensors) are flattened to tensors
# and rebuilt exactly as torch.func and torch.fx do it; torch has no public pytree module.
tree_flatten = _pytree.tree_flatten
tree_unflatten = _pytree.tree_unflatten


def make_fx_fake(fn):
    """`make_fx(fn)` on fake tensors (nothing is computed while recording), before
    dispatch (a `torch.no_grad()` block in `fn` stays in the graph), reading the real
    tensors `fn` closes over (constants, data) as constants of the graph.

    Private: the keyword `_allow_non_fake_inputs`. Without it fake tracing refuses any
    real tensor that is not an argument, and a training step reads many (a constant
    offset, a mask, data held by a closure); real-tensor tracing instead would compute
    the step and bake data-dependent shapes into the graph.
    """
    return make_fx(fn, tracing_mode="fake", pre_dispatch=True, _allow_non_fake_inputs=True)


def op_schema(op):
    """The `torch.FunctionSchema` of an ATen operator overload (`torch.ops.aten.add_.Tensor`):
    its arguments and which of them it writes in place.

    Private: `OpOverload._schema`; torch has no public accessor. Needed to know which
    of a module's buffers a recorded step writes in place (a moving average), so that
    a replay can be undone before re-running the step eagerly.
    """
    return op._schema


# The compiled MCMC step (`inference.mcmc.compile`). Its graph is recorded by `make_fx`, the
# model's gradient included, because Dynamo (the public `torch.compile`) cannot trace ppl's
# nodes; Inductor is then called on that graph directly, and its cache is kept in our own
# folders (`inference.mcmc.cache`). Inductor is imported only when a step is compiled.


def inductor_compile(graph, inputs, dynamic_shapes, options):
    """Inductor's compilation of the FX `graph` for `inputs` (`dynamic_shapes`: "from_graph"
    or "from_example_inputs") under the Inductor `options`: a callable artifact.

    Private: `torch._inductor.standalone_compile`, the only entry point that compiles an FX
    graph (not a Python function through Dynamo) into an artifact a later process can load.
    """
    from torch._inductor import standalone_compile
    return standalone_compile(graph, inputs, dynamic_shapes=dynamic_shapes,
                              options={"config_patches": options})


def inductor_load(folder, options):
    """The artifact `inductor_compile` compiled with its cache in `folder`, loaded from there
    under the same Inductor `options`.

    Private: `CompiledArtifact.load` (the loader of `standalone_compile`'s artifacts) and
    `torch._inductor.config.patch` (the options are not part of what is saved).
    """
    from torch._inductor import CompiledArtifact, config
    with config.patch(options):
        return CompiledArtifact.load(path=folder, format="unpacked")


def inductor_cache_in(folder):
    """A context manager: within it Inductor keeps its cache in `folder`.

    Private: `temporary_cache_dir`. TORCHINDUCTOR_CACHE_DIR (public) names the folder, but
    Inductor also keeps compiled code in memory; this sets the variable and clears those
    in-memory caches on entry and exit, so that a compile writes everything into `folder`.
    """
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    return temporary_cache_dir(folder)


def inductor_header_dir():
    """Where Inductor keeps its precompiled C++ headers (read, never changed).

    Private: `codecache._HEADER_DIR`. Inductor puts them under the temporary directory,
    whatever TORCHINDUCTOR_CACHE_DIR says, and compiles them into every step; the cache
    checks who can write there before a compile (`inference.mcmc.cache.inductor_cache`).
    """
    from torch._inductor import codecache
    return codecache._HEADER_DIR


def inductor_cpu_probes(options):
    """Run Inductor's probes of the CPU's vector extensions now, under the Inductor `options`;
    returns the names of those it found. Inductor probes once per process (it keeps the
    answer) and builds each probe, a small shared library, into its current cache folder
    (`inductor_cache_in`), where a later process finds it built.

    Private: `torch._inductor.cpu_vec_isa.valid_vec_isa_list` (and `config.patch`). Inductor
    runs the probes itself at its first compile in a process, into that compile's cache
    folder; our cache gives each compiled step a new folder, so every new model would build
    them again (about 1 s on an AVX-512 CPU). Running them first, in a folder that is kept,
    builds them once per machine.
    """
    from torch._inductor import config
    from torch._inductor.cpu_vec_isa import valid_vec_isa_list
    with config.patch(options):
        return [str(isa) for isa in valid_vec_isa_list()]


@contextlib.contextmanager
def without_c_shim_notices():
    """Within the block, drop Inductor's notice "<op> is missing a c-shim implementation,
    using proxy executor as fallback" (that notice only).

    Private: the logger's name, `torch._inductor.ir`. The notice comes once per ATen op of a
    C++-wrapped step that Inductor's C++ API does not cover (a Cholesky factorization in the
    dense-metric tree step); the op still runs, through the dispatcher, and a user has
    nothing to do about it.
    """
    logger = logging.getLogger("torch._inductor.ir")

    def keep(record):
        return not (isinstance(record.msg, str) and "missing a c-shim implementation" in record.msg)
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def symbolic_fakes(examples, symbolic, constants=False):
    """Fake tensors shaped like `examples` for `make_fx`, in one fake mode with a shape
    environment: axis i of examples[k] is a symbolic size where symbolic[k][i] is True
    (axes of equal example size are the same symbol), else fixed. constants: whether the
    traced function may read real tensors it closes over (a model's data), which the
    graph then holds as constants.

    Private: `FakeTensorMode` (`torch._subclasses`). `make_fx(tracing_mode="symbolic")`
    makes every axis symbolic, and the public `torch.export.Dim` needs Dynamo.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import (DimDynamic, ShapeEnv,
                                                       StatelessSymbolicContext)
    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=constants)
    return [mode.from_tensor(example, symbolic_context=StatelessSymbolicContext(
        [DimDynamic.DUCK if flag else DimDynamic.STATIC for flag in flags]))
        for example, flags in zip(examples, symbolic)]


def reads_values(fn, args):
    """Whether `fn(*args)` reads a tensor's value in Python (an `if`, float(), .item()): it
    is recorded on fake tensors, which have no values, and the exception type says so.

    Private: `DataDependentOutputException` (`torch._subclasses`), raised by a fake tensor
    asked for its value; a recording with a shape environment raises the public
    `GuardOnDataDependentSymNode` instead.
    """
    from torch._subclasses.fake_tensor import DataDependentOutputException
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
    try:
        make_fx(fn, tracing_mode="fake", _allow_non_fake_inputs=True)(*args)
    except (DataDependentOutputException, GuardOnDataDependentSymNode):
        return True
    except Exception:  # noqa: BLE001 -- any other failure is not about reading values
        return False
    return False
