"""Build once per machine what compiled NUTS shares between models.

    python -m inference.mcmc.precompile          # float32 and float64; diagonal and dense
    python -m inference.mcmc.precompile --dtype float64 --metric diag

`NUTS(jit_compile=True)` compiles two things: the model's gradient (per
model, seconds) and the tree step (`inference.mcmc.shared_compile`: the same
for every model, chain count, dimension and tree depth, kept under
$PPL_CACHE_DIR). Building the tree step and Inductor's own machine-wide parts
(its CPU probes, kept in $PPL_CACHE_DIR/cpu-probes, and its precompiled
header) takes about 20 s per dtype and metric on the 2-core machine of
benchmarks/hmc_blr.py (about 100 s for the four, with the header), against a
few seconds for a new model's gradient afterwards. Both dtypes are built by
default: float64 is what a model gets from NumPy data (`torch.from_numpy`),
and posteriordb's models run in it. Run this once at
setup (a Docker image, a CI install step): where it was skipped, `NUTS()` runs
without the compiled tree step (`inference.mcmc.NotPrecompiledWarning`), and
only `NUTS(jit_compile=True)` builds it in a run. Inductor
keeps its precompiled header under the temporary directory, which a reboot
empties: this command also builds it in a new temporary directory of a child
process, where the header folder holds this install's alone, and keeps a copy in
$PPL_CACHE_DIR/headers (about 150 MB), from where compiles put it back after a
reboot (`inference.mcmc.cache.restore_precompiled_headers`).

It runs a few compiled NUTS iterations on a small standard normal for each
dtype and metric, which builds (or loads, if already built) the tree step
for that dtype and metric; they then serve every model, chain count,
dimension and maximum tree depth.
"""
import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
import warnings

import torch

from inference import torch_compat
from inference.mcmc.cache import cache_root, keep_precompiled_headers, restore_precompiled_headers
from inference.mcmc.compile import building_headers, compile_graph, compiler_available
from inference.mcmc.sampler import NUTS
from inference.mcmc.runner import SamplingWarning, run
from inference.mcmc.shared_compile import FirstCompileWarning

__all__ = ["precompile", "keep_headers"]

METRICS = ("diag", "dense")


def precompile(dtypes=(torch.float32, torch.float64), metrics=METRICS, report=None):
    """Build NUTS's shared tree step for every dtype and metric ('diag', 'dense').

    Returns one dict per (dtype, metric): dtype, metric, seconds, and status:
    'compiled' (built now), 'loaded' (it was on disk) or 'eager: <why>' (it
    could not be compiled here; NUTS then runs eagerly). report: called with a
    line of text before and after each, e.g. `print`.
    """
    for metric in metrics:
        if metric not in METRICS:
            raise ValueError(f"precompile: `metrics` must be among {METRICS}, got {metric!r}")
    rows = []
    for dtype in dtypes:
        for metric in metrics:
            name = f"NUTS tree step, {str(dtype).removeprefix('torch.')}, {metric} metric"
            if report is not None:
                report(f"{name}: loading or building (up to a minute) ...")
            kernel = NUTS(jit_compile=True, adapt_mass=metric)
            started = time.perf_counter()
            with warnings.catch_warnings(), building_headers():  # building is the point
                warnings.simplefilter("ignore", FirstCompileWarning)
                warnings.simplefilter("ignore", SamplingWarning)
                run(kernel, _standard_normal, init={"x": torch.zeros(2, 3, dtype=dtype)},
                    n_warmup=5, n_samples=5, progress=False, seed=0)
            (shared,) = kernel._shared.values()
            rows.append({"dtype": str(dtype).removeprefix("torch."), "metric": metric,
                         "seconds": time.perf_counter() - started, "status": shared.status})
            if report is not None:
                report(f"{name}: {shared.status} ({rows[-1]['seconds']:.1f} s)")
    return rows


def _standard_normal(values):
    return -0.5 * values["x"].square().sum(-1)


def keep_headers():
    """Build Inductor's precompiled header in a child process whose temporary directory is
    new (so that its header folder holds this install's alone), keep a copy in the cache
    (`cache.keep_precompiled_headers`) and put it in this process's header folder. Returns
    (the names kept, why none were: '' where some were)."""
    if not compiler_available():
        return [], "no C++ compiler found"
    with tempfile.TemporaryDirectory() as temporary:
        child = subprocess.run(
            [sys.executable, "-c", "from inference.mcmc.precompile import _build_headers; "
             "print(*_build_headers(), sep='\\n')"],
            env={**os.environ, "TMPDIR": temporary, "PPL_CACHE_DIR": cache_root()},
            capture_output=True, text=True, check=False)
    names = [name for name in child.stdout.split() if name.endswith(".h")]
    if child.returncode != 0 or not names:
        lines = child.stderr.strip().splitlines() or ["it kept none"]
        return [], f"building it failed: {lines[-1]}"
    restore_precompiled_headers()
    return names, ""


def _build_headers():
    """(In the child of `keep_headers`.) Compile a small gradient with the precompiled
    header, which builds it, and keep it; returns the names kept."""
    from torch.fx.experimental.proxy_tensor import make_fx
    x = torch.zeros(2, 3)
    graph = make_fx(lambda v: -0.5 * v.square().sum(-1))(x)
    with tempfile.TemporaryDirectory() as folder, building_headers():
        compile_graph(graph, [x], "from_example_inputs", folder)
    return keep_precompiled_headers(torch_compat.inductor_header_dir())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--metric", nargs="+", default=list(METRICS), choices=METRICS)
    args = parser.parse_args(argv)
    report = functools.partial(print, flush=True)
    rows = precompile([getattr(torch, name) for name in args.dtype], args.metric, report=report)
    report("Inductor's precompiled header: building a copy to keep (up to a minute) ...")
    started = time.perf_counter()
    kept, why = keep_headers()
    report(f"Inductor's precompiled header: kept in {cache_root()} "
           f"({time.perf_counter() - started:.1f} s)" if kept else
           f"Inductor's precompiled header: not kept ({why}); models compile without it "
           f"after a reboot")
    return rows


if __name__ == "__main__":
    main()
