"""Every notebook in tutorials/ runs top to bottom, and is stored without outputs.

The notebooks run in a kernel on this interpreter (a kernel spec written for
the test, so no globally registered "python3" kernel can run another Python)
and inherit the environment: under CI=true they take their quick mode.
"""
import os
import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
KERNEL = "ppl-tests"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernel named KERNEL that runs `sys.executable`, with the repo importable."""
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / KERNEL)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks its inline backend
    return KERNEL


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(_code_cells(nb))
             if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_name, tmp_path):
    nb = nbformat.read(path, as_version=4)
    workdir = tmp_path / "run"  # files a notebook writes stay out of the repository
    workdir.mkdir()
    client = NotebookClient(nb, timeout=300, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError, with the traceback, on the first failure

    outputs = [out for cell in _code_cells(nb) for out in cell.outputs]
    source = "\n".join(cell.source for cell in _code_cells(nb))
    if "draw_graph" in source or "plt." in source:
        pictures = [out for out in outputs if "image/png" in out.get("data", {})]
        assert pictures, f"{path.name} draws but showed no picture"


def test_kernel_runs_this_interpreter(kernel_name):
    """The kernel the notebooks run on is this Python, with CI's setting passed through."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, sys\nprint(sys.executable)\nprint(os.environ.get('CI'))")])
    NotebookClient(nb, timeout=120, kernel_name=kernel_name).execute()
    lines = nb.cells[0].outputs[0]["text"].splitlines()
    assert lines == [sys.executable, str(os.environ.get("CI"))]
