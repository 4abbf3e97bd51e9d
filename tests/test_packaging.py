"""pyproject.toml declares what the packages import, and the torch the suite runs on.

A bare `pip install .` must be able to import `ppl`, `inference` and `models`:
every third-party module imported when a module loads is a runtime dependency.
An import inside a function (or a `try` that catches ImportError) runs only when
that feature is used; it may come from an extra instead (matplotlib for
`draw_graph`, scikit-learn for the digits).
"""
import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ppl", "inference", "models")


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _catches_import_error(node):
    names = {"ImportError", "ModuleNotFoundError", "Exception"}
    for handler in node.handlers:
        caught = handler.type
        elements = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if caught is None or any(isinstance(e, ast.Name) and e.id in names for e in elements):
            return True
    return False


def third_party_imports(path):
    """(line, top-level module, eager) for each third-party import in the file at `path`.

    `eager` is False for an import inside a function, or inside the body of a
    `try` that catches ImportError: those run only when the feature is used.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node, eager):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module]
        else:
            modules = []
        for module in modules:
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in PACKAGES:
                found.append((node.lineno, top, eager))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            eager = False
        if isinstance(node, ast.Try) and _catches_import_error(node):
            for child in node.body:
                visit(child, False)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, eager)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, eager)

    visit(tree, True)
    return found


def test_scanner_tells_eager_from_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\nimport numpy as np\nfrom scipy import stats\n"
                      "def f():\n    import matplotlib\n"
                      "try:\n    import arviz\nexcept ImportError:\n    arviz = None\n"
                      "from . import sibling\nimport ppl.graph\n")
    assert third_party_imports(source) == [
        (2, "numpy", True), (3, "scipy", True), (5, "matplotlib", False), (7, "arviz", False)]


def test_declared_dependencies_cover_the_imports():
    project = _project()
    runtime = {_canonical(Requirement(r).name) for r in project["dependencies"]}
    extras = {_canonical(Requirement(r).name)
              for reqs in project["optional-dependencies"].values() for r in reqs}
    distributions = packages_distributions()
    problems = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module, eager in third_party_imports(path):
                names = {_canonical(d) for d in distributions.get(module, [module])}
                where = f"{path.relative_to(ROOT)}:{line} imports {module}"
                if eager and not names & runtime:
                    problems.append(f"{where} when it loads, but `dependencies` lacks "
                                    f"{' / '.join(sorted(names))}")
                elif not eager and not names & (runtime | extras):
                    problems.append(f"{where}, which no dependency or extra provides")
    assert not problems, "pyproject.toml:\n" + "\n".join(problems)


def _torch_requirement():
    [torch] = [Requirement(r) for r in _project()["dependencies"]
               if _canonical(Requirement(r).name) == "torch"]
    return torch.specifier


def test_torch_range_is_the_release_the_suite_runs_on():
    """The README's and CI's pin, and the torch running now, satisfy the declared range,
    and it admits no other minor release: the compiled MCMC step uses Inductor
    APIs (standalone_compile, CompiledArtifact) that change from one to the next."""
    import torch
    specifier = _torch_requirement()
    pins = set(re.findall(r"torch==([\d.]+)",
                          (ROOT / "README.md").read_text() + (ROOT / ".ci" / "run").read_text()))
    assert pins, "README.md and .ci/run no longer pin torch==X.Y.Z"
    installed = Version(torch.__version__)
    for version in pins | {installed.base_version}:
        assert specifier.contains(version), f"torch {version} is outside {specifier}"
    major, minor = installed.release[:2]
    for other in (f"{major}.{minor - 1}.99", f"{major}.{minor + 1}.0"):
        assert not specifier.contains(other), \
            f"torch{specifier} admits torch {other}, a release the suite never runs on"
