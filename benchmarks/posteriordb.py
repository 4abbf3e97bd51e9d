"""NUTS on posteriordb: our posterior means and sds against Stan's reference draws.

    python -m benchmarks.posteriordb                          # all eight posteriors
    python -m benchmarks.posteriordb --posteriors sblri-blr arK-arK
    python -m benchmarks.posteriordb --quick                  # fast ones, fewer draws (CI=true)
    python -m benchmarks.posteriordb --eager                  # without compiling

For every posterior in `models.posteriordb` (the ppl translations of the
Stan programs), `inference.mcmc.run` with `inference.NUTS` draws 4 chains of
1000 warm-up + 1000 kept iterations (float64, one torch thread), with the
target acceptance rate and maximum tree depth Stan used for the reference
(`adapt_delta`, `max_treedepth`), its leaves compiled (`jit_compile=True`,
unless `--eager`; compilation is part of the wall time). The baseline is the posteriordb reference
itself (10 Stan chains, 10,000 thinned draws): for every scalar parameter the
differences of posterior mean and sd are divided by the combined Monte Carlo
standard error (ours from our ESS, the reference's from its draws), so a
correct sampler gives |z| of a few at most; `max |z|` is over all parameters.
Divergent transitions after warm-up are counted (Stan reported none for any of
these). ESS/s is the minimum bulk ESS over the parameters per second of wall
time (model setup, warm-up and sampling).
"""
import argparse
import os
import time

import torch

import inference
from benchmarks._report import RESULTS, is_quick, write_report
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
    row = {"posterior": name, "n_chains": n_chains, "n_warmup": n_warmup,
           "n_samples": n_samples, "settings": settings, "jit_compile": jit_compile,
           "max_abs_z_mean": comparison.max_abs_z_mean, "max_abs_z_sd": comparison.max_abs_z_sd,
           "worst": f"{statistic} of {param}: z = {z:.2f}",
           "divergences": int(result.num_divergences.sum()),
           "min_ess_bulk": comparison.min_ess_bulk,
           "ess_per_s": comparison.min_ess_bulk / wall, "wall_s": wall, "cpu_s": cpu,
           "mean_leapfrogs": float(result.stats["n_steps"].mean()),
           "max_tree_depth_reached": int(result.stats["tree_depth"].max())}
    return row, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posteriors", nargs="+", default=list(POSTERIOR_NAMES),
                        choices=POSTERIOR_NAMES)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="the fast posteriors, 300 + 300 iterations (also when CI=true)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--eager", action="store_true",
                        help="run NUTS eagerly (by default its leaves are compiled: jit_compile)")
    parser.add_argument("--out", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    names = [n for n in args.posteriors if n in FAST] if quick else args.posteriors
    n_warmup, n_samples = (300, 300) if quick else (args.warmup, args.samples)
    torch.set_num_threads(args.threads)
    rows = []
    for name in names:
        row, _ = run_posterior(name, args.chains, n_warmup, n_samples, args.seed,
                               progress=not (quick or args.no_progress),
                               jit_compile=not args.eager)
        rows.append(row)
        print(f"{name}: max|z| mean {row['max_abs_z_mean']:.2f}, sd {row['max_abs_z_sd']:.2f} "
              f"({row['worst']}), {row['divergences']} divergent, {row['ess_per_s']:.1f} ESS/s, "
              f"{row['wall_s']:.0f} s", flush=True)
    print(f"\n{'posterior':42s} {'max|z| mean':>11s} {'max|z| sd':>9s} {'div':>4s} "
          f"{'min ESS':>8s} {'ESS/s':>8s} {'wall s':>8s} {'leapfrogs':>9s}")
    for r in rows:
        print(f"{r['posterior']:42s} {r['max_abs_z_mean']:11.2f} {r['max_abs_z_sd']:9.2f} "
              f"{r['divergences']:4d} {r['min_ess_bulk']:8.0f} {r['ess_per_s']:8.1f} "
              f"{r['wall_s']:8.1f} {r['mean_leapfrogs']:9.1f}")
    report = write_report(NAME, __doc__, argv, rows, args.out, quick, threads=args.threads,
                          load_average=os.getloadavg())
    return report


if __name__ == "__main__":
    main()
