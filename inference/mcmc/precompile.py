"""Build once per machine what compiled NUTS shares between models.

    python -m inference.mcmc.precompile                  # float32; diagonal and dense metrics
    python -m inference.mcmc.precompile --dtype float64 --metric diag

`NUTS(jit_compile=True)` compiles two things: the model's gradient (per
model, seconds) and the tree step (`inference.mcmc.shared_compile`: the same
for every model, chain count, dimension and tree depth, kept under
$PPL_CACHE_DIR). The first compiled run on a machine also pays the tree step
and Inductor's own machine-wide builds (its CPU probes and precompiled
header): about 20-25 s on the 2-core machine of benchmarks/hmc_blr.py,
against a few seconds for a new model afterwards. Run this once at setup (a
Docker image, a CI install step) so that no sampling run pays it. Inductor
keeps its precompiled header under the temporary directory, which a reboot
empties: after one, models compile without it (about 2.5 s slower each, where
building it takes about 7 s) until this command builds it again.

It runs a few compiled NUTS iterations on a small standard normal for each
dtype and metric, which builds (or loads, if already built) the tree step
for that dtype and metric; they then serve every model, chain count,
dimension and maximum tree depth.
"""
import argparse
import functools
import time
import warnings

import torch

from inference.mcmc.compile import building_headers
from inference.mcmc.sampler import NUTS
from inference.mcmc.runner import SamplingWarning, run
from inference.mcmc.shared_compile import FirstCompileWarning

__all__ = ["precompile"]

METRICS = ("diag", "dense")


def precompile(dtypes=(torch.float32,), metrics=METRICS, report=None):
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", nargs="+", default=["float32"],
                        choices=["float32", "float64"])
    parser.add_argument("--metric", nargs="+", default=list(METRICS), choices=METRICS)
    args = parser.parse_args(argv)
    return precompile([getattr(torch, name) for name in args.dtype], args.metric,
                      report=functools.partial(print, flush=True))


if __name__ == "__main__":
    main()
