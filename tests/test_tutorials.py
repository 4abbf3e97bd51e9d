"""Every notebook in tutorials/ runs top to bottom, cleanly, and is stored without outputs.

The notebooks run in a kernel on this interpreter (a kernel spec written for
the test, so no globally registered "python3" kernel can run another Python),
in their quick mode (`CI=true` for the kernel, whatever CI says here), so the
suite stays short on a loaded 2-core machine; `PPL_TUTORIAL_FULL=1` runs them
in full instead. A run fails on an error, on a warning printed in a cell not
tagged "warning-expected" (where the warning is the lesson, as the centered
eight schools' SamplingWarning), and on a sampler or training call that shows
no progress bar.
"""
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
KERNEL = "ppl-tests"
FULL = os.environ.get("PPL_TUTORIAL_FULL", "").lower() in ("1", "true", "yes")
# A guard against hangs, not a timing check: a quick cell needs at most about a
# minute of CPU (the centered eight schools), several on a loaded machine.
CELL_TIMEOUT = 3600 if FULL else 900  # seconds

# The long-running calls of the tutorials: MCMC runs, training loops, ZhuSuan's
# one-transition-at-a-time samplers (called in a loop). Each must show progress.
SAMPLER_CALL = re.compile(r"\bmcmc\.run\(|\.fit\(|\.sample\(\w+, ")
HIDDEN_PROGRESS = re.compile(r"\bprogress\s*=\s*False|\bdisable\s*=\s*True|TQDM_DISABLE")
WARNING = re.compile(r"\b\w*Warning\b")
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernel named KERNEL that runs `sys.executable`, with the repo importable,
    in the notebooks' quick mode unless PPL_TUTORIAL_FULL asks for the full run."""
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / KERNEL)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks its inline backend
    if FULL:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", "true")
    return KERNEL


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _stderr(cell):
    return "".join(out.text for out in cell.outputs
                   if out.output_type == "stream" and out.name == "stderr")


def _shows_progress(cell):
    """A tqdm bar: a widget in a notebook front-end, or text bars on stderr without one."""
    widget = any(WIDGET in out.get("data", {}) for out in cell.outputs)
    return widget or re.search(r"\d+/\d+ \[", _stderr(cell)) is not None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(_code_cells(nb))
             if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_shows_every_progress_bar(path):
    nb = nbformat.read(path, as_version=4)
    hiding = [i for i, cell in enumerate(_code_cells(nb)) if HIDDEN_PROGRESS.search(cell.source)]
    assert not hiding, f"{path.name}: code cells {hiding} turn progress bars off"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_name, tmp_path):
    nb = nbformat.read(path, as_version=4)
    workdir = tmp_path / "run"  # files a notebook writes stay out of the repository
    workdir.mkdir()
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError, with the traceback, on the first failure

    cells = _code_cells(nb)
    warned = {i: WARNING.search(_stderr(cell)).group() for i, cell in enumerate(cells)
              if WARNING.search(_stderr(cell))
              and "warning-expected" not in cell.metadata.get("tags", [])}
    assert not warned, f"{path.name} printed warnings (code cell: warning): {warned}\n" + \
        "\n".join(_stderr(cells[i]) for i in warned)
    silent = [i for i, cell in enumerate(cells)
              if SAMPLER_CALL.search(cell.source) and not _shows_progress(cell)]
    assert not silent, f"{path.name}: code cells {silent} sample or train without a progress bar"

    outputs = [out for cell in cells for out in cell.outputs]
    source = "\n".join(cell.source for cell in cells)
    if "draw_graph" in source or "plt." in source:
        pictures = [out for out in outputs if "image/png" in out.get("data", {})]
        assert pictures, f"{path.name} draws but showed no picture"


def test_kernel_runs_this_interpreter_in_quick_mode(kernel_name):
    """The notebooks' kernel is this Python, and `quick_mode()` holds there unless
    PPL_TUTORIAL_FULL asks for the full run, whatever CI is set to here."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys\nfrom models.experiment import quick_mode\n"
        "print(sys.executable)\nprint(quick_mode())")])
    NotebookClient(nb, timeout=120, kernel_name=kernel_name).execute()
    lines = nb.cells[0].outputs[0]["text"].splitlines()
    assert lines == [sys.executable, str(not FULL)]
