"""NUTS on Bayesian logistic regression on a CUDA GPU: ESS per second, ours vs NumPyro.

    python -m benchmarks.hmc_blr_gpu                       # 1024 and 8192 chains
    python -m benchmarks.hmc_blr_gpu --chains 4096 --iterations 300 --budget 600

The model, data and score are those of `benchmarks/hmc_blr.py` (breast cancer,
31 coefficients, float32, NUTS with max tree depth 10, target acceptance 0.8,
diagonal mass, Stan's windowed warm-up; min bulk ESS over the coefficients
per second of wall time, everything after the imports included), with many
chains as one batch on the GPU: ours (`inference.mcmc.run`, chains on their
own trees, eager and `jit_compile=True`) and NumPyro (`chain_method=
"vectorized"`, XLA on the GPU). Every case runs in a fresh process; the GPU
is synchronized before the clock stops (the draws are copied to the host).
Ours compiled starts with the machine-wide tree step built (`python -m
inference.mcmc.precompile --dtype float32`, run untimed on the GPU first),
as a machine installed per the README would have it.

`--budget` seconds bound the whole run: a case that would start after it
is skipped, one still running at it is stopped and reported as such. The
results are written after every case, so a stopped run keeps what it
measured.
"""
import argparse
import multiprocessing
import os
import time

from benchmarks import hmc_blr
from benchmarks._report import RESULTS, is_quick, write_report

NAME = "hmc_blr_gpu"


def run_ours(n_chains, n_iterations, seed, jit_compile):
    return hmc_blr.run_ours(n_chains, "nuts", n_iterations, n_iterations, None, seed,
                            jit_compile=jit_compile, device="cuda")


def run_numpyro(n_chains, n_iterations, seed):
    import jax
    row = hmc_blr.run_numpyro(n_chains, "nuts", n_iterations, n_iterations, None, seed)
    row["jax_backend"] = jax.default_backend()
    return row


def _precompile():
    import torch

    import inference
    kernel = inference.NUTS(jit_compile=True)
    started = time.perf_counter()
    inference.mcmc.run(kernel, lambda v: -0.5 * v["x"].square().sum(-1),
                       init={"x": torch.zeros(2, 3, device="cuda")}, n_warmup=5, n_samples=5,
                       progress=False, seed=0)
    (shared,) = kernel._shared.values()
    return {"seconds": time.perf_counter() - started, "tree_step": shared.status}


def _worker(library, *args):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if library == "numpyro":
        return run_numpyro(*args)
    if library == "setup":
        return _precompile()
    return run_ours(*args, jit_compile=library == "ours, compiled")


def _in_process(library, args, timeout):
    """`_worker(library, *args)` in a fresh process, stopped after `timeout` seconds."""
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply_async(_worker, (library,) + args).get(timeout=max(timeout, 1.))
    except multiprocessing.TimeoutError:
        return None
    finally:
        pool.terminate()
        pool.join()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--iterations", type=int, default=200,
                        help="warm-up iterations, and as many kept draws")
    parser.add_argument("--libraries", nargs="+", default=["numpyro", "ours, compiled",
                                                           "ours, eager"])
    parser.add_argument("--budget", type=float, default=420.,
                        help="seconds for the whole run (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help="tiny runs (also when CI=true)")
    parser.add_argument("--out", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    chains, iterations = ([64], 30) if quick else (args.chains, args.iterations)
    deadline = time.perf_counter() + args.budget
    setup = _in_process("setup", (), deadline - time.perf_counter())
    print(f"setup (tree step on the GPU, untimed): {setup}", flush=True)
    runs = []
    for n_chains in chains:
        for library in args.libraries:
            left = deadline - time.perf_counter()
            row = _in_process(library, (n_chains, iterations, 0), left) if left > 5 else None
            row = {"library": library, "n_chains": n_chains, "n_warmup": iterations,
                   "n_samples": iterations, **(row or {"stopped": "over the budget"})}
            runs.append(row)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()},
                  flush=True)
            _write(args, argv, runs, setup, quick)
    return _write(args, argv, runs, setup, quick)


def _write(args, argv, runs, setup, quick):
    import torch
    rows = []
    for n_chains in sorted({r["n_chains"] for r in runs}):
        base = [r for r in runs if r["n_chains"] == n_chains and r["library"] == "numpyro"
                and "ess_per_s" in r]
        for r in runs:
            if r["n_chains"] == n_chains and r["library"] != "numpyro" and "ess_per_s" in r \
                    and base:
                rows.append({"case": f"nuts, {n_chains} chains", "ours": r["library"],
                             "baseline": "numpyro",
                             "baseline_ess_per_s": base[0]["ess_per_s"],
                             "ours_ess_per_s": r["ess_per_s"],
                             "ratio": r["ess_per_s"] / base[0]["ess_per_s"]})
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return write_report(NAME, __doc__, argv, rows, args.out, quick, device=device,
                        setup=setup, runs=runs)


if __name__ == "__main__":
    main()
