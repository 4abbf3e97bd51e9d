"""inference.mcmc.shared_compile: NUTS's tree step, compiled once, serves every chain count,
dimension, maximum tree depth and model, and later kernels load it from disk."""
import functools
import json
import os
import pathlib
import subprocess
import sys
import warnings

import pytest
import torch

from inference import torch_compat
from inference.mcmc import adaptation, jit, nuts
from inference.mcmc.cache import CacheWarning, cache_root
from inference.mcmc.compile import shifted
from inference.mcmc.metric import DenseMetric, DiagonalMetric
from inference.mcmc.shared_compile import CANONICAL, FirstCompileWarning, SharedCompiledStep
from inference.mcmc.state import HMCState
from inference.mcmc.termination import Checkpoints, leaf_table
from tests.inference.test_compile import needs_compiler

DEPTH = 10
ADAPTATION = adaptation.dual_averaging()


def _eager(metric_type):
    """`nuts.leaf_end_begin` on packed tensors, as `jit.nuts_leaf_step` compiles it."""
    _, tree_packing, stats_packing, _ = jit._canonical(metric_type, ADAPTATION, torch.float64)
    return functools.partial(jit._end_begin_packed, metric_type, ADAPTATION.update,
                             tree_packing, stats_packing)


def _shared(metric_type):
    layout = jit._canonical(metric_type, ADAPTATION, torch.float64)[3]
    return SharedCompiledStep(
        _eager(metric_type), key=f"test leaf_end_begin {metric_type.__qualname__}",
        layout=layout, modules=(nuts, adaptation), perturb=shifted(0), name="test tree step")


def _arguments(metric_type, n, dim, seed, dtype=torch.float64, depth=DEPTH):
    """`leaf_end_begin`'s arguments mid-trajectory, the tree packed: chains that have made a
    few steps."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=g, dtype=dtype)

    def rand(*shape):
        return torch.rand(shape, generator=g, dtype=dtype)

    state = HMCState(randn(n, dim), randn(n), randn(n, dim))
    step_size = 0.1 + rand(n)
    tree = nuts.init_tree(state, step_size, depth, ADAPTATION.init(step_size))
    if metric_type.dense:
        root = randn(n, dim, dim) / dim ** 0.5
        metric = DenseMetric(root @ root.mT + torch.eye(dim, dtype=dtype))
    else:
        metric = DiagonalMetric(0.5 + rand(n, dim))
    table = leaf_table(depth)
    target = torch.full((n,), 3)
    inverse_mass, factor = metric.inverse_mass, metric.momentum_factor
    tree, position, momentum = nuts.leaf_begin(metric_type, tree, inverse_mass, factor,
                                               randn(n, dim), rand(n, 3), table, target)
    # chains at different leaves of their trees, some at the first or last leaf of a subtree
    leaves = torch.randint(0, min(7, 2 ** depth - 1), (n,), generator=g)
    tree = tree._replace(leaf=leaves, checkpoints=Checkpoints(
        *(c + randn(*c.shape) for c in tree.checkpoints)))
    packing = jit._canonical(metric_type, ADAPTATION, torch.float64)[1]
    steps = torch.randint(0, 5, (n,), generator=g)
    draws = nuts.Draws(rand(6, n, 3), steps - torch.randint(0, 5, (n,), generator=g),
                       randn(5, n, dim), torch.randint(0, 4, (n,), generator=g))
    return (*packing.pack(tree), position, momentum, -randn(n).abs(), randn(n, dim), inverse_mass,
            factor, rand(n, 3), steps, *draws, table, target, torch.ones(n, dtype=torch.bool),
            torch.tensor(1000., dtype=dtype), torch.tensor([0.8, 0.05, 10., 0.75], dtype=dtype))


def test_the_tree_state_goes_in_and_out_packed():
    """The compiled step takes the tree state as a handful of stacked tensors (one per dtype
    and shape), not the 45 tensors of its named tuples (each costs a compiled call
    microseconds); unpacked, or read field by field from a `PackedTree`, it is the same
    state."""
    args, tree_packing, stats_packing, layout = jit._canonical(DiagonalMetric, ADAPTATION,
                                                               torch.float64)
    tree_leaves = jit.flatten(tree_packing.unpack(args[:len(tree_packing.members)]))[0]
    assert len(tree_leaves) == 45
    assert len(tree_packing.members) <= 6 and len(stats_packing.members) <= 3
    assert len(layout) == len(args) <= 24
    flat = _arguments(DiagonalMetric, 3, 2, seed=0)
    k = len(tree_packing.members)
    tree = tree_packing.unpack(flat[:k])
    packed = jit.PackedTree(flat[:k], tree_packing)
    for name in type(tree)._fields:
        for a, b in zip(jit.flatten(getattr(packed, name))[0],
                        jit.flatten(getattr(tree, name))[0]):
            assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(tree_packing.pack(tree), flat[:k]))



def test_the_point_a_driver_keeps_holds_nothing_else_of_the_tree():
    """The tree's position is packed on its own: the point a driver keeps after each leaf
    step (a block's worth, `LeafStep.point`) holds only the chains' positions, not a
    stacked tensor of the whole tree (on posteriordb's diamonds a block of whole trees
    filled about 9 MB and pushed the model's data out of cache)."""
    args, tree_packing, _, _ = jit._canonical(DenseMetric, ADAPTATION, torch.float64)
    packed = args[:len(tree_packing.members)]
    group, row = tree_packing.fields["position"][1][0]
    assert packed[group].shape[0] == 1
    point = jit.PackedTree(packed, tree_packing).position
    assert point.untyped_storage().nbytes() == point.numel() * point.element_size()
    # every other [n, D] float field shares one stacked tensor, as before
    others = [places for name, (_, places) in tree_packing.fields.items() if name != "position"]
    assert all(w != group for places in others for w, _ in places)

def _assert_same(compiled, eager):
    assert len(compiled) == len(eager)
    for c, e in zip(compiled, eager):
        assert c.shape == e.shape and c.dtype == e.dtype
        torch.testing.assert_close(c, e, rtol=1e-9, atol=1e-9, equal_nan=True)


@needs_compiler
@pytest.mark.parametrize("metric_type", [DiagonalMetric, DenseMetric])
def test_one_compilation_serves_every_chain_count_and_dimension(metric_type):
    """Compiled once (at canonical sizes), the step equals the eager one at other sizes:
    one chain, one dimension, chains = dimension, and sizes equal to fixed sizes of the
    arguments (3 uniforms, 4 adaptation settings, 6 columns of the leaf table, the depth),
    where a trace could confuse them."""
    step = _shared(metric_type)
    eager = _eager(metric_type)
    sizes = [(5, 4), (1, 1), (1, 6), (7, 1), (6, 6), (4, 3), (3, 4), (DEPTH, 2),
             (CANONICAL["n"], CANONICAL["D"]), (CANONICAL["D"], CANONICAL["n"])]
    for seed, (n, dim) in enumerate(sizes):
        args = _arguments(metric_type, n, dim, seed)
        _assert_same(step(*args), eager(*args))
        assert step.is_compiled, step.reason
    assert step.n_fallbacks == 0


@needs_compiler
def test_one_compilation_serves_every_maximum_tree_depth():
    """The depth sizes the checkpoints [T, n, D] and the leaf table [2^T - 1, 6]: both are
    symbolic, so depth 1 (one slot, one leaf), depths equal to fixed sizes of the state and a
    deep tree give the eager step's results from the same compiled code."""
    step = _shared(DiagonalMetric)
    for seed, depth in enumerate([1, 2, 3, 5, 6, DEPTH, CANONICAL["T"], 15]):
        args = _arguments(DiagonalMetric, 4, 3, seed, depth=depth)
        _assert_same(step(*args), _eager(DiagonalMetric)(*args))
        assert step.is_compiled, step.reason
    assert step.n_fallbacks == 0


@needs_compiler
def test_a_later_kernel_loads_the_step_from_disk(monkeypatch):
    first = _shared(DiagonalMetric)
    args = _arguments(DiagonalMetric, 4, 3, seed=0)
    first(*args)
    assert first.is_compiled, first.reason
    folders = os.listdir(os.path.join(cache_root(), "compiled"))

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again instead of loading")
    monkeypatch.setattr(torch_compat, "inductor_compile", no_compiler)
    later = _shared(DiagonalMetric)
    other = _arguments(DiagonalMetric, 9, 5, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FirstCompileWarning)  # a load is silent
        _assert_same(later(*other), _eager(DiagonalMetric)(*other))
    assert later.is_compiled and later.loaded_from_disk
    assert os.listdir(os.path.join(cache_root(), "compiled")) == folders


@needs_compiler
def test_the_step_is_built_without_openmp_whatever_the_builders_thread_count(empty_cache):
    """Inductor writes OpenMP loops where the building process has several threads; built so
    (the install's build step on a 2-core machine), NUTS's tree step took 49-52 us a call at
    16 chains instead of 41 us, and 700-910 us at 1024 instead of 645-665. The shared steps
    are built serial, and their entry says so, so that a load runs the same code."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        step = _shared(DiagonalMetric)
        args = _arguments(DiagonalMetric, 4, 3, seed=0)
        _assert_same(step(*args), _eager(DiagonalMetric)(*args))
    finally:
        torch.set_num_threads(threads)
    assert step.is_compiled, step.reason
    (entry,) = (empty_cache / "compiled").iterdir()
    sources = [path.read_text() for path in entry.rglob("*.cpp")]
    assert sources and not any("#pragma omp" in source for source in sources)
    assert json.loads((entry / "ppl-settings.json").read_text())["cpp.threads"] == 1


def test_building_the_step_in_a_run_says_so_and_names_the_setup_step(empty_cache, monkeypatch):
    """A run on a machine where the install's build step was skipped pauses for tens of
    seconds: the warning says why and how to avoid it."""
    monkeypatch.setattr(torch_compat, "inductor_compile",
                        lambda graph, inputs, dynamic_shapes, options: graph)
    step = _shared(DiagonalMetric)
    with pytest.warns(FirstCompileWarning, match=r"test tree step \(float64\).*"
                                                 r"`python -m inference.mcmc.precompile`"):
        step(*_arguments(DiagonalMetric, 3, 2, seed=0))
    assert step.is_compiled, step.reason


def test_the_cache_folder_depends_on_the_key_and_dtype():
    step = _shared(DiagonalMetric)
    args64 = _arguments(DiagonalMetric, 2, 3, seed=0)
    args32 = tuple(a.float() if a.is_floating_point() else a for a in args64)
    other = SharedCompiledStep(step.fn, key="another", layout=step.layout,
                               modules=step.modules, perturb=step.perturb)
    digests = {step._digest(args64), step._digest(args32), other._digest(args64)}
    assert len(digests) == 3
    # the chain count and dimension are not part of it
    assert step._digest(_arguments(DiagonalMetric, 7, 5, seed=1)) == step._digest(args64)


def test_a_layout_that_does_not_fit_is_refused():
    step = _shared(DiagonalMetric)
    args = _arguments(DiagonalMetric, 2, 3, seed=0)
    with pytest.raises(ValueError, match="arguments for a layout of"):
        step._build(args[:-1])


def test_an_unwritable_cache_folder_compiles_for_this_process_only(tmp_path, monkeypatch):
    """PPL_CACHE_DIR that cannot be created (here: a file stands in its way) must not stop
    the compilation: the step is built in a temporary folder and nothing is kept."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PPL_CACHE_DIR", str(blocker))
    seen = {}

    def graph_as_compiled(graph, inputs, dynamic_shapes, options):  # Inductor: tested above
        seen["cache_dir"] = os.environ["TORCHINDUCTOR_CACHE_DIR"]
        return graph
    monkeypatch.setattr(torch_compat, "inductor_compile", graph_as_compiled)
    step = _shared(DiagonalMetric)
    args = _arguments(DiagonalMetric, 3, 2, seed=0)
    with pytest.warns(CacheWarning, match=f"ppl cache {blocker} cannot be created"):
        _assert_same(step(*args), _eager(DiagonalMetric)(*args))
    assert step.is_compiled and not step.loaded_from_disk, step.reason
    assert not seen["cache_dir"].startswith(str(blocker))
    assert os.path.isfile(blocker)


_LOAD_IN_A_NEW_PROCESS = """
import pathlib, re, subprocess, sys
probed = []  # the source of each library a child Python process loads
spawn = subprocess.run
def counted(args, *rest, **kwargs):
    if args and args[0] == sys.executable:
        for library in re.findall(r'LoadLibrary\\("([^"]+)\\.so"\\)', args[-1]):
            probed.append(pathlib.Path(library + ".cpp").read_text())
    return spawn(args, *rest, **kwargs)
subprocess.run = counted
from inference.mcmc.metric import DiagonalMetric
from tests.inference.test_shared_compile import _arguments, _shared
step = _shared(DiagonalMetric)
step(*_arguments(DiagonalMetric, 5, 2, seed=1))
assert step.loaded_from_disk, step.reason
print(sum("__avx_chk_kernel()" in source for source in probed), len(probed))
"""


@needs_compiler
def test_loading_in_a_new_process_runs_no_cpu_probe_for_the_base_instructions():
    """A load trusts the CPU's vector instructions (`cpp.vec_isa_ok`): Inductor's default
    probes them by loading a library in a new Python process, even for a step compiled
    before. (On a CPU with AVX-512 BF16, VNNI or AMX, Inductor still probes those extensions
    once per process, in a child process each: no public setting skips them.)"""
    step = _shared(DiagonalMetric)
    step(*_arguments(DiagonalMetric, 4, 3, seed=0))
    assert step.is_compiled, step.reason
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", _LOAD_IN_A_NEW_PROCESS], cwd=root,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    base, _ = map(int, done.stdout.split()[-2:])
    assert base == 0, done.stdout
