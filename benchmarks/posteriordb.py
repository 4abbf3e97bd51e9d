"""NUTS on posteriordb: our posterior means and sds against Stan's reference draws.

    python -m benchmarks.posteriordb                          # all eight posteriors
    python -m benchmarks.posteriordb --posteriors sblri-blr arK-arK
    python -m benchmarks.posteriordb --quick                  # fast ones, fewer draws (CI=true)
    python -m benchmarks.posteriordb --eager                  # without compiling
    python -m benchmarks.posteriordb --numpyro                # and NumPyro's NUTS beside ours
                                                             # (results/posteriordb_numpyro.json)

For every posterior in `models.posteriordb` (the ppl translations of the
Stan programs), `inference.mcmc.run` with `inference.NUTS` draws 4 chains of
1000 warm-up + 1000 kept iterations (float64, one torch thread), with the
target acceptance rate and maximum tree depth Stan used for the reference
(`adapt_delta`, `max_treedepth`), its leaves compiled (`jit_compile=True`,
unless `--eager`; compilation is part of the wall time); with `--numpyro`, the
kernel's default settings instead (no `jit_compile` flag), as a user runs it.
The baseline is the posteriordb reference itself (10 Stan chains, 10,000
thinned draws): for every scalar parameter the
differences of posterior mean and sd are divided by the combined Monte Carlo
standard error (ours from our ESS, the reference's from its draws), so a
correct sampler gives |z| of a few at most; `max |z|` is over all parameters.
Divergent transitions after warm-up are counted (Stan reported none for any of
these). ESS/s is the minimum bulk ESS over the parameters per second of wall
time (model setup, warm-up and sampling).

With `--numpyro`, NumPyro's NUTS runs every posterior too, as a second
baseline (`benchmarks.numpyro_posteriordb`: NumPyro models written from the
same Stan programs, whose log densities equal ours up to a constant): the
same chains, iterations and seed, float64, chains vectorized
(`chain_method="vectorized"`), the same target acceptance rate, maximum tree
depth and mass matrix (dense for diamonds), scored by the same z-scores and
ESS; its wall time includes XLA's compilation as ours includes Inductor's.
Both then run each posterior in a fresh process pinned to one CPU core with
one thread (`benchmarks.hmc_blr._limit_threads`). Ours starts from a fresh,
empty PPL_CACHE_DIR on which the machine's setup step
(`inference.mcmc.precompile`, float64, both metrics) ran untimed: every
posterior is a model compiled for the first time, on a machine set up for
compiled NUTS (`hmc_blr`'s "ours, new model"). A ratio row per posterior
gives ours' ESS/s over NumPyro's (above 1: ours is better), and the same per
CPU second (compiler subprocesses are not in either's CPU seconds).
`--seeds N` repeats the comparison for seeds `seed .. seed+N-1`, each on a fresh
cache, and reports the median ratio per posterior.
"""
import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from importlib import metadata

import torch

import inference
from benchmarks._report import RESULTS, is_quick, write_report
from benchmarks.hmc_blr import _limit_threads
from models.posteriordb import POSTERIOR_NAMES, compare_to_reference, load

NAME = "posteriordb"

# NUTS follows Stan's control for the reference (adapt_delta, max_treedepth:
# `Posterior.nuts_settings`), diagonal mass matrix, except for diamonds, where
# Stan needed max_treedepth 20 (thousands of leapfrog steps per draw): there a
# dense mass matrix gives the same posterior with far shorter trajectories.
OVERRIDES = {
    "diamonds-diamonds": {"target_acceptance_rate": 0.9, "max_tree_depth": 10,
                          "adapt_mass": "dense"},
}
# The fast ones (seconds each), also run by tests/inference/test_posteriordb.py.
FAST = ("eight_schools-eight_schools_noncentered", "kidiq-kidscore_momiq", "sblri-blr",
        "arK-arK", "low_dim_gauss_mix-low_dim_gauss_mix")


def run_posterior(name, n_chains=4, n_warmup=1000, n_samples=1000, seed=0, progress=False,
                  jit_compile=True):
    """NUTS on posterior `name`; returns (row dict, MCMCResult)."""
    posterior = load(name)
    wall, cpu = time.perf_counter(), time.process_time()
    settings = {**posterior.nuts_settings, **OVERRIDES.get(name, {})}
    kernel = inference.NUTS(**settings, jit_compile=jit_compile)
    result = inference.mcmc.run(kernel, posterior.model, posterior.observed, n_chains=n_chains,
                                n_warmup=n_warmup, n_samples=n_samples, progress=progress,
                                seed=seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    comparison = compare_to_reference(posterior, result.samples)
    param, statistic, z = comparison.worst()
    row = {"posterior": name, "seed": seed, "n_chains": n_chains, "n_warmup": n_warmup,
           "n_samples": n_samples, "settings": settings, "jit_compile": jit_compile,
           "max_abs_z_mean": comparison.max_abs_z_mean, "max_abs_z_sd": comparison.max_abs_z_sd,
           "worst": f"{statistic} of {param}: z = {z:.2f}",
           "divergences": int(result.num_divergences.sum()),
           "min_ess_bulk": comparison.min_ess_bulk,
           "ess_per_s": comparison.min_ess_bulk / wall, "wall_s": wall, "cpu_s": cpu,
           "mean_leapfrogs": float(result.stats["n_steps"].mean()),
           "max_tree_depth_reached": int(result.stats["tree_depth"].max())}
    return row, result


def _pinned(function, *args):
    """`function(*args)` in this fresh process: one core, one thread (set before JAX starts)."""
    _limit_threads()
    torch.set_num_threads(1)
    return function(*args)


def _in_fresh_process(function, *args):
    """`function(*args)` in a fresh process pinned to one core; its result."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_pinned, (function,) + args)


def _ours_row(name, n_chains, n_warmup, n_samples, seed):
    row, _ = run_posterior(name, n_chains, n_warmup, n_samples, seed, jit_compile=None)
    return {"posterior": name, "library": "ours", **row}


def _numpyro_row(name, n_chains, n_warmup, n_samples, seed):
    from benchmarks.numpyro_posteriordb import run_numpyro_posterior
    return run_numpyro_posterior(name, n_chains, n_warmup, n_samples, seed)


def _setup_machine():
    """The machine's setup step for compiled NUTS in float64 (untimed)."""
    from inference.mcmc.precompile import precompile
    return precompile(dtypes=(torch.float64,))


def compare_with_numpyro(names, n_chains, n_warmup, n_samples, seed):
    """Rows of ours and NumPyro's for every posterior, each in a fresh pinned process, ours
    on a fresh PPL_CACHE_DIR after the setup step; and the ratio rows."""
    previous = os.environ.get("PPL_CACHE_DIR")
    os.environ["PPL_CACHE_DIR"] = tempfile.mkdtemp(prefix="posteriordb_cache_")
    try:
        _in_fresh_process(_setup_machine)
        rows, ratios = [], []
        for name in names:
            ours = _in_fresh_process(_ours_row, name, n_chains, n_warmup, n_samples, seed)
            _print_row(ours)
            numpyro = _in_fresh_process(_numpyro_row, name, n_chains, n_warmup, n_samples, seed)
            _print_row(numpyro)
            rows += [ours, numpyro]
            ratios.append(ratio_row(ours, numpyro))
    finally:
        shutil.rmtree(os.environ.pop("PPL_CACHE_DIR"), ignore_errors=True)
        if previous is not None:
            os.environ["PPL_CACHE_DIR"] = previous
    return rows, ratios


def ratio_row(ours, numpyro):
    """Ours' ESS per second (wall and CPU) over NumPyro's, for one posterior."""
    return {"posterior": ours["posterior"], "ours_ess_per_s": ours["ess_per_s"],
            "numpyro_ess_per_s": numpyro["ess_per_s"],
            "ratio": ours["ess_per_s"] / numpyro["ess_per_s"],
            "ratio_per_cpu_s": (ours["min_ess_bulk"] / ours["cpu_s"])
            / (numpyro["min_ess_bulk"] / numpyro["cpu_s"]), "seed": ours["seed"]}


def median_ratios(ratios):
    """Per posterior, the median over seeds of the ESS/s ratio (and per CPU second)."""
    names = dict.fromkeys(r["posterior"] for r in ratios)
    return [{"posterior": name,
             "seeds": [r["seed"] for r in ratios if r["posterior"] == name],
             "median_ratio": statistics.median(r["ratio"] for r in ratios
                                               if r["posterior"] == name),
             "median_ratio_per_cpu_s": statistics.median(r["ratio_per_cpu_s"] for r in ratios
                                                         if r["posterior"] == name)}
            for name in names]


def _versions():
    """Versions of NumPyro and JAX, read without importing them."""
    return {package: metadata.version(package) for package in ("numpyro", "jax", "jaxlib")}


def _print_row(row):
    library = f"[{row['library']}] " if "library" in row else ""
    print(f"{row['posterior']}: {library}max|z| mean {row['max_abs_z_mean']:.2f}, "
          f"sd {row['max_abs_z_sd']:.2f} ({row['worst']}), {row['divergences']} divergent, "
          f"{row['ess_per_s']:.1f} ESS/s, {row['wall_s']:.0f} s", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posteriors", nargs="+", default=list(POSTERIOR_NAMES),
                        choices=POSTERIOR_NAMES)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1,
                        help="with --numpyro: run the comparison for this many seeds (from "
                             "--seed) and report the median ratio")
    parser.add_argument("--quick", action="store_true",
                        help="the fast posteriors, 300 + 300 iterations (also when CI=true)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--eager", action="store_true",
                        help="run NUTS eagerly (by default its leaves are compiled: jit_compile)")
    parser.add_argument("--numpyro", action="store_true",
                        help="also run NumPyro's NUTS on every posterior (one core, fresh "
                             "process) and report ours' ESS/s over its")
    parser.add_argument("--out", default=None,
                        help="the JSON report (default: results/posteriordb.json, or "
                             "results/posteriordb_numpyro.json with --numpyro)")
    args = parser.parse_args(argv)
    out = args.out or str(RESULTS / (f"{NAME}_numpyro.json" if args.numpyro else f"{NAME}.json"))
    if args.numpyro and (args.eager or args.threads != 1):
        parser.error("--numpyro compares compiled NUTS on one core: drop --eager / --threads")
    quick = is_quick(args.quick)
    names = [n for n in args.posteriors if n in FAST] if quick else args.posteriors
    n_warmup, n_samples = (300, 300) if quick else (args.warmup, args.samples)
    torch.set_num_threads(args.threads)
    if args.numpyro:
        rows, ratios = [], []
        for seed in range(args.seed, args.seed + args.seeds):
            seed_rows, seed_ratios = compare_with_numpyro(names, args.chains, n_warmup,
                                                          n_samples, seed)
            rows += seed_rows
            ratios += seed_ratios
    else:
        rows, ratios = [], []
        for name in names:
            row, _ = run_posterior(name, args.chains, n_warmup, n_samples, args.seed,
                                   progress=not (quick or args.no_progress),
                                   jit_compile=not args.eager)
            rows.append(row)
            _print_row(row)
    library = f"{'library':8s} " if args.numpyro else ""
    print(f"\n{'posterior':42s} {library}{'max|z| mean':>11s} {'max|z| sd':>9s} {'div':>4s} "
          f"{'min ESS':>8s} {'ESS/s':>8s} {'wall s':>8s} {'leapfrogs':>9s}")
    for r in rows:
        library = f"{r['library']:8s} " if args.numpyro else ""
        print(f"{r['posterior']:42s} {library}{r['max_abs_z_mean']:11.2f} "
              f"{r['max_abs_z_sd']:9.2f} {r['divergences']:4d} {r['min_ess_bulk']:8.0f} "
              f"{r['ess_per_s']:8.1f} {r['wall_s']:8.1f} {r['mean_leapfrogs']:9.1f}")
    sections = {}
    if args.numpyro:
        print(f"\n{'posterior':42s} {'ours ESS/s':>10s} {'NumPyro ESS/s':>13s} {'ratio':>7s} "
              f"{'per cpu s':>9s}")
        for r in ratios:
            print(f"{r['posterior']:42s} {r['ours_ess_per_s']:10.1f} "
                  f"{r['numpyro_ess_per_s']:13.1f} {r['ratio']:7.2f} {r['ratio_per_cpu_s']:9.2f}"
                  f"  (seed {r['seed']})")
        medians = median_ratios(ratios)
        for m in medians:
            print(f"{m['posterior']:42s} median ratio {m['median_ratio']:.2f} over seeds "
                  f"{m['seeds']} ({m['median_ratio_per_cpu_s']:.2f} per cpu s)")
        sections = {"libraries": _versions(), "ratios": ratios, "median_ratios": medians}
    report = write_report(NAME, __doc__, argv, rows, out, quick, threads=args.threads,
                          load_average=os.getloadavg(), **sections)
    return report


if __name__ == "__main__":
    main()
