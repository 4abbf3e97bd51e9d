"""Peak memory of a long NUTS run against the bytes of the draws and statistics it keeps.

    python -m benchmarks.mcmc_memory                       # 100k iterations after warm-up
    python -m benchmarks.mcmc_memory --quick               # 10k (also under CI=true)
    python -m benchmarks.mcmc_memory --iterations 20000 --dim 10

A run that keeps something per iteration besides its preallocated draws and
statistics (a tensor per statistic per iteration, a copy of the draws) shows
as peak resident memory (RSS) far above what the result holds. The run is
`inference.mcmc.run(inference.NUTS(), ...)` on a `--dim`-dimensional (20)
standard normal, 4 chains, float32 (100k 20-d draws: 32 MB), in a fresh process:
its RSS before the run (after a short run that loads everything) is the
baseline, the peak is Linux's high-water mark (VmHWM, reset before the run
through /proc/self/clear_refs). The row's ratio is the peak increase over
the kept bytes (draws + statistics); the target is at most 2. The peak is
also read just before the checks `run` makes after sampling (R-hat, ESS, ...:
`MCMCResult.problems`, which holds a few float64 copies of one quantity's draws
at a time).
"""
import argparse
import multiprocessing
import sys
import time
import warnings
from pathlib import Path

import torch

from benchmarks._report import is_quick, write_report

NAME = "mcmc_memory"
RESULTS = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
N_CHAINS, N_WARMUP = 4, 200


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _std_normal(values):
    return -0.5 * (values["z"] ** 2).sum(-1)


def worker(n_samples, dim, threads):
    """One run in this process: (baseline RSS, peak RSS, kept bytes, seconds, divergences)."""
    import inference
    torch.set_num_threads(threads)
    check = inference.mcmc.MCMCResult.problems
    before_check = []

    def problems(result):
        before_check.append(_status_kb("VmHWM"))
        return check(result)

    inference.mcmc.MCMCResult.problems = problems
    init = {"z": torch.zeros(N_CHAINS, dim)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference.mcmc.run(inference.NUTS(), _std_normal, init=init, n_warmup=20,
                           n_samples=20, progress=False, seed=1)
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
            f.write("5")
        baseline_kb = _status_kb("VmRSS")
        started = time.perf_counter()
        result = inference.mcmc.run(inference.NUTS(), _std_normal, init=init,
                                    n_warmup=N_WARMUP, n_samples=n_samples, progress=True,
                                    seed=0)
        seconds = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM")
    kept = sum(v.numel() * v.element_size() for v in result.samples.values())
    kept_stats = sum(v.nbytes for v in result.stats.values()) + \
        sum(v.nbytes for v in result.warmup_stats.values())
    return (baseline_kb, peak_kb, before_check[-1], kept, kept_stats, seconds,
            int(result.stats["diverging"].sum()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=100_000,
                        help="kept draws per chain (after 200 warm-up iterations)")
    parser.add_argument("--dim", type=int, default=20, help="dimension of the standard normal")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10k iterations (also when CI=true)")
    parser.add_argument("--out", default=str(RESULTS))
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    n_samples = 10_000 if quick else args.iterations
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        baseline_kb, peak_kb, sampling_kb, draws, stats, seconds, divergences = pool.apply(
            worker, (n_samples, args.dim, args.threads))
    kept_mb = (draws + stats) / 2 ** 20
    increase_mb = (peak_kb - baseline_kb) / 1024
    sampling_mb = (sampling_kb - baseline_kb) / 1024
    row = {"case": f"NUTS, {n_samples} iterations x {N_CHAINS} chains, {args.dim}-d standard "
                   f"normal, float32",
           "kept_mb": kept_mb, "draws_mb": draws / 2 ** 20, "stats_mb": stats / 2 ** 20,
           "baseline_rss_mb": baseline_kb / 1024, "peak_rss_mb": peak_kb / 1024,
           "peak_increase_mb": increase_mb, "ratio": increase_mb / kept_mb,
           "sampling_peak_increase_mb": sampling_mb, "sampling_ratio": sampling_mb / kept_mb,
           "seconds": seconds, "divergences": divergences}
    print(f"\n{row['case']}: kept {kept_mb:.1f} MB (draws {row['draws_mb']:.1f} MB, statistics "
          f"{row['stats_mb']:.1f} MB); RSS {baseline_kb / 1024:.0f} MB before, peak "
          f"{peak_kb / 1024:.0f} MB: +{increase_mb:.1f} MB = {row['ratio']:.2f}x the kept "
          f"bytes; before the checks +{sampling_mb:.1f} MB = {sampling_mb / kept_mb:.2f}x "
          f"({seconds:.0f} s)")
    return write_report(NAME, __doc__, argv, [row], args.out, quick, threads=args.threads)


if __name__ == "__main__":
    main()
