"""Every private torch symbol of `inference.torch_compat` is still there and still works.

A failure names the symbol and the torch version: update `inference/torch_compat.py`
(and the torch requirement in pyproject.toml) before users meet a slow fallback.
"""
import ast
import contextlib
import importlib
import logging
import pathlib
import shutil

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

ROOT = pathlib.Path(__file__).resolve().parents[2]
needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="Inductor needs a C++ compiler")


@contextlib.contextmanager
def _symbol(name):
    try:
        yield
    except Exception as error:  # noqa: BLE001 -- any failure means the symbol changed
        pytest.fail(f"private torch symbol {name} is gone or changed in torch "
                    f"{torch.__version__} ({type(error).__name__}: {error}); update "
                    f"inference/torch_compat.py", pytrace=False)


def _compat():
    with _symbol("(importing inference.torch_compat)"):
        return importlib.import_module("inference.torch_compat")


def test_pytree_flattens_and_rebuilds_nested_arguments():
    compat = _compat()
    batch = {"x": torch.ones(2), "beta": [torch.tensor(0.5), 3]}
    with _symbol("torch.utils._pytree"):
        leaves, spec = compat.tree_flatten(batch)
        assert len(leaves) == 3
        assert compat.tree_unflatten(leaves, spec) == batch


def test_make_fx_records_fake_tensors_reading_closed_over_real_tensors():
    compat = _compat()
    offset = torch.tensor([1., 2.])  # a real tensor the function closes over

    def fn(x):
        with torch.no_grad():
            y = x * 2
        return y + offset

    with _symbol("make_fx(_allow_non_fake_inputs=True)"):
        graph = compat.make_fx_fake(fn)(torch.ones(2))
        torch.testing.assert_close(graph(torch.ones(2)), torch.tensor([3., 4.]))
        assert "_set_grad_enabled" in graph.code  # pre-dispatch: the no_grad block is kept


def test_op_schema_says_which_arguments_are_written():
    compat = _compat()
    with _symbol("OpOverload._schema"):
        written = [argument.name for argument in
                   compat.op_schema(torch.ops.aten.add_.Tensor).arguments
                   if argument.alias_info is not None and argument.alias_info.is_write]
        assert written == ["self"]


@needs_compiler
def test_inductor_compiles_a_graph_into_a_folder_and_loads_it_from_there(tmp_path):
    compat = _compat()

    def fn(x):
        return (torch.sin(x) * 2.5,)
    x = torch.randn(3, 2)
    graph = make_fx(fn)(x)
    options = {"cpp_wrapper": True, "size_asserts": False, "cpp.vec_isa_ok": True}
    with _symbol("torch._inductor.runtime.cache_dir_utils.temporary_cache_dir"):
        with compat.inductor_cache_in(str(tmp_path)):
            with _symbol("torch._inductor.standalone_compile"):
                compiled = compat.inductor_compile(graph, [x], "from_example_inputs", options)
                torch.testing.assert_close(compiled(x)[0], fn(x)[0])
        assert (tmp_path / "aotautograd").is_dir()  # what the loader reads
    with _symbol("torch._inductor.CompiledArtifact.load"), \
            _symbol("torch._inductor.config.patch"):
        with compat.inductor_cache_in(str(tmp_path)):
            loaded = compat.inductor_load(str(tmp_path), options)
        torch.testing.assert_close(loaded(x)[0], fn(x)[0])


@needs_compiler
def test_inductors_cpu_probes_run_under_the_given_options(tmp_path):
    compat = _compat()
    with _symbol("torch._inductor.cpu_vec_isa.valid_vec_isa_list"):
        with compat.inductor_cache_in(str(tmp_path)):
            found = compat.inductor_cpu_probes({"cpp.vec_isa_ok": True})
        assert isinstance(found, list) and all(isinstance(name, str) for name in found)
        if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
            assert found, "Inductor found no vector extension on an AVX CPU"


def test_inductors_header_folder_is_a_path():
    compat = _compat()
    with _symbol("torch._inductor.codecache._HEADER_DIR"):
        folder = compat.inductor_header_dir()
        assert isinstance(folder, str) and pathlib.Path(folder).name == "precompiled_headers"


def test_the_c_shim_notice_is_dropped_and_other_records_kept(caplog):
    compat = _compat()
    with _symbol("torch._inductor.ir logger"):
        import torch._inductor.ir as ir  # the logger the notice comes from
        assert ir.log is logging.getLogger("torch._inductor.ir")
        with caplog.at_level(logging.WARNING, logger="torch._inductor.ir"), \
                compat.without_c_shim_notices():
            ir.log.warning("%s is missing a c-shim implementation, using proxy executor as "
                           "fallback", "aten.linalg_cholesky_ex.default")
            ir.log.warning("another notice")
        assert [record.getMessage() for record in caplog.records] == ["another notice"]


def test_symbolic_fakes_make_the_chosen_axes_symbolic():
    compat = _compat()
    with _symbol("torch._subclasses.fake_tensor.FakeTensorMode"):
        a, b = compat.symbolic_fakes([torch.empty(38, 3), torch.empty(38, 34)],
                                     [[True, False], [True, True]])
        assert isinstance(a.shape[0], torch.SymInt) and a.shape[1] == 3
        assert isinstance(b.shape[1], torch.SymInt)
        graph = make_fx(lambda x, y: x.sum(-1) + y.sum(-1))(a, b)
        assert graph(torch.ones(5, 3), torch.ones(5, 7)).shape == (5,)
        data = torch.arange(3.)  # a real tensor the function closes over: a constant
        (c,) = compat.symbolic_fakes([torch.empty(38, 3)], [[True, False]], constants=True)
        graph = make_fx(lambda x: x @ data, tracing_mode="symbolic")(c)
        assert torch.equal(graph(torch.ones(4, 3)), torch.full((4,), 3.))


def test_reads_values_is_told_by_the_exception_type():
    compat = _compat()
    with _symbol("torch._subclasses.fake_tensor.DataDependentOutputException"):
        assert compat.reads_values(lambda x: x * float(x.abs().max()), (torch.ones(3),))
        assert compat.reads_values(lambda x: x if x.sum() > 0 else -x, (torch.ones(3),))
        assert not compat.reads_values(lambda x: torch.where(x > 0, x, -x), (torch.ones(3),))


def test_no_private_torch_name_outside_torch_compat():
    """`grep -rn "torch\\._" ppl inference` finds torch_compat only."""
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for folder in ("ppl", "inference") for path in sorted((ROOT / folder).rglob("*.py"))
             if path != ROOT / "inference" / "torch_compat.py"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if "torch._" in line]
    assert not found, "\n".join(found)


def _root(node):
    """The name an attribute chain, subscript or `getattr(...)` call starts from, if any."""
    while True:
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id == "getattr" and node.args:
            node = node.args[0]
        else:
            return node.id if isinstance(node, ast.Name) else None


def _torch_names(tree):
    """Names bound to torch or to something reached from it: `import torch...`,
    `from torch... import ...`, and `x = <such a name>.attr` or `getattr(<such a name>, ...)`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names
                      if alias.name.split(".")[0] == "torch"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            names |= {alias.asname or alias.name for alias in node.names}
    while True:
        more = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and _root(node.value) in names and not isinstance(node.value, ast.Name)
                for target in node.targets if isinstance(target, ast.Name)} - names
        if not more:
            return names
        names |= more


def _targets(node):
    """What an assignment, `del`, `setattr` or `delattr` writes to."""
    if isinstance(node, (ast.Assign, ast.Delete)):
        found = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        found = [node.target]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id in ("setattr", "delattr") and node.args:
        found = [ast.Attribute(value=node.args[0], attr="?")]
    else:
        found = []
    while any(isinstance(target, (ast.Tuple, ast.List)) for target in found):
        found = [item for target in found for item in
                 (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target])]
    return found


def test_nothing_assigns_to_an_attribute_of_torch():
    """No runtime patching: nothing in ppl or inference assigns to (or deletes) an attribute
    of torch, of a torch module or class, or of an object reached from one."""
    found = []
    for folder in ("ppl", "inference"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            names = _torch_names(tree)
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                      for target in _targets(node)
                      if isinstance(target, (ast.Attribute, ast.Subscript))
                      and _root(target) in names]
    assert not found, "assigns to torch: " + ", ".join(found)


def test_each_private_symbol_is_tested_here():
    with open(__file__) as source:
        text = source.read()
    for name in _compat().PRIVATE:
        assert f'_symbol("{name}")' in text, f"{name} has no test here"


def test_every_inductor_option_the_compiled_steps_set_exists():
    """`inference.mcmc.compile` passes Inductor options by name (an unknown one fails the
    compile, and the step runs eagerly): each must still be one of Inductor's settings."""
    from inference.mcmc.compile import INDUCTOR_OPTIONS
    options = {**INDUCTOR_OPTIONS, "cpp_cache_precompile_headers": False,  # an entry's settings
               "cpp.threads": 1}
    with _symbol(f"torch._inductor.config options {sorted(options)}"):
        from torch._inductor import config
        with config.patch(options):
            pass
