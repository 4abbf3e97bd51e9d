"""NUTS on Bayesian logistic regression: effective samples per second, ours vs NumPyro and Pyro.

    python -m benchmarks.hmc_blr                 # full run (long: Pyro alone takes minutes)
    python -m benchmarks.hmc_blr --quick         # small version (also when CI=true)
    python -m benchmarks.hmc_blr --parts main    # only the 16-chain comparison
    python -m benchmarks.hmc_blr --parts main --seeds 3   # ... and medians over 3 seeds
    python -m benchmarks.hmc_blr --parts many             # 1024 and 4096 chains

Model: scikit-learn's breast cancer data (569 x 30, standardized, plus a bias
column), beta ~ N(0, 1) [31], y ~ Bernoulli(logits = X beta), float32. Every
sampler runs NUTS (max tree depth 10, target acceptance 0.8, diagonal mass
matrix, Stan's windowed warm-up) with 500 warm-up and 500 kept iterations per
chain. The score is the minimum bulk ESS over the 31 coefficients divided by
the wall time of everything after the imports: building the model,
compilation (ours: `inference.NUTS()` with no flags, which compiles with
Inductor where a C++ compiler is found; NumPyro: XLA; Pyro: its
`jit_compile`), warm-up and sampling.

Compilation caches: JAX compiles afresh in every process. Ours compiles two
things: the model's gradient, per model, and NUTS's tree step, once per
machine for every model, chain count, dimension and tree depth
(`inference.mcmc.shared_compile`); both are kept under PPL_CACHE_DIR, with
Inductor's cache (`inference.mcmc.cache`), not under the temporary directory
that a reboot empties (where Inductor keeps its precompiled C++ header: a
model compiles without it where it is missing, see `inference.mcmc.compile`).
This benchmark points PPL_CACHE_DIR at a fresh, empty folder, and times ours
three ways at 16 chains: "ours, first compile" starts from nothing (a machine
where the install's build step was skipped: by default the run compiles the
model's gradient alone and runs NUTS's tree uncompiled, a doubling at a time,
rather than build the tree step; `inference.mcmc.NotPrecompiledWarning`), "ours,
cached" runs the same model again after the install's build step and a first
run (both untimed: its gradient comes from the cache, the tree step is loaded), and
"ours, new model" starts with a new Inductor cache (TORCHINDUCTOR_CACHE_DIR)
after the machine's setup step, `python -m inference.mcmc.precompile`, run
untimed, and with a new, empty temporary directory (as after a reboot, so
without the precompiled header): the first run of a model never compiled
before, on a machine installed as the README says (its install's build step
included). "ours, new model (no reboot)" is the same without the reboot: the
precompiled header that the setup step built is still there. The other cases ("ours")
compile their own gradient (the shapes differ) with the machine-wide parts
built. "ours, eager" is the 16-chain run without compiling.

Cases (each in a fresh process pinned to one CPU core, one intra-op thread for
torch and XLA alike):

- main: 16 chains; ours (`inference.mcmc.run` with `inference.NUTS`, chains
  batched, each on its own tree; the three cache states above, and eager), NumPyro
  (`chain_method="vectorized"`), Pyro (its MCMC with NUTS; chains run one
  after another in one process, since multiprocess chains need as many free
  cores as chains; `--pyro-chains` of them).
- chains: ours and NumPyro with 1, 4, 64 and 256 chains.
- longer: ours ("new model") and NumPyro, 16 chains, `--longer-iterations`
  warm-up and as many kept draws (default 2000 + 2000).
- hmc: HMC with a fixed trajectory length (`--trajectory-length`, step size
  and diagonal mass adapted), ours and NumPyro, 16 chains. A fixed length
  can come close to half a period of the posterior along some direction:
  a chain then swings from one side of the mean to the other and back, and
  its spread along that direction is slow to settle (here ours reached
  R-hat 1.12 on one coefficient, NumPyro 1.04). "ours, jitter 0.25" also
  draws each transition's step size uniformly within 25% of the adapted one
  (`inference.HMC(jitter=0.25)`), which breaks that periodicity. Ours
  compile as "ours, new model" does (the model's leapfrog step, on a machine
  that compiled before), whatever other parts ran first.
- many: thousands of chains, NUTS, with shorter runs (`--many-iterations`
  warm-up and as many kept draws): ours and NumPyro with 1024 chains, ours
  with 4096. A run lasts as long as its slowest chain, so with many chains
  the wall time per draw grows with the spread of the chains' tree sizes.
- long: ours, 16 chains, 10,000 NUTS iterations through ZhuSuan's
  step-at-a-time `NUTS.sample` (adapting for the first 500), compiled:
  seconds per iteration and resident memory (RSS) per block of 500
  iterations, which should stay flat.

Ratios: ours' ESS/s over the baseline's in the same run and seed (above 1:
ours is better). ESS is itself random (NumPyro's 16-chain score ranged over
470-590 ESS/s between runs here), so `--seeds N` repeats the 16-chain cases
that do not depend on the machine's first compile with more seeds and
reports the ratio of the median ESS/s. CPU seconds are reported beside wall seconds, since the machine may be
shared: ESS per CPU second is the steadier comparison there.
"""
import argparse
import functools
import multiprocessing
import os
import shutil
import tempfile
import time

import numpy as np

from benchmarks._report import RESULTS, is_quick, write_report

NAME = "hmc_blr"
N_WARMUP = N_SAMPLES = 500


def breast_cancer():
    """(X [569, 31] float32 with a bias column, y [569] float32), standardized features."""
    from sklearn.datasets import load_breast_cancer
    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    x = np.hstack([x, np.ones((len(x), 1))]).astype(np.float32)
    return x, data.target.astype(np.float32)


def _limit_threads():
    """One core for each run: pinned to one CPU, one intra-op thread (before imports).

    XLA keeps helper threads (compilation, async dispatch) that the thread
    flags do not stop; unpinned, NumPyro used up to 1.8 CPU seconds per wall
    second here, and our compiler subprocesses ran on the second core too.
    """
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                               "intra_op_parallelism_threads=1")


def _score(draws, wall, cpu, n_steps, divergences):
    """Row fields from draws (chain, draw, 31) and the timings."""
    from inference import diagnostics
    ess = diagnostics.ess_bulk(draws)
    return {"wall_s": wall, "cpu_s": cpu, "min_ess_bulk": float(ess.min()),
            "ess_per_s": float(ess.min() / wall), "ess_per_cpu_s": float(ess.min() / cpu),
            "max_r_hat": float(diagnostics.split_rhat(draws).max()),
            "mean_leapfrogs": float(np.mean(n_steps)), "divergences": int(divergences)}


# -- the three implementations ---------------------------------------------------------
def ppl_model():
    """The model in `ppl`: a template taking X [569, 31] on any device (imports torch when
    called)."""
    import torch

    import ppl

    @ppl.meta_bayesian_net(scope="logistic_regression")
    def logistic_regression(x):
        bn = ppl.BayesianNet()
        beta = bn.normal("beta", torch.zeros(x.shape[1], device=x.device), std=1.,
                         group_ndims=1)
        bn.bernoulli("y", beta @ x.T, group_ndims=1)
        return bn
    return logistic_regression


def run_ours(n_chains, sampler, n_warmup, n_samples, trajectory_length, seed=0,
             jit_compile=None, jitter=0., device="cpu"):
    import torch

    import inference
    x, y = (torch.from_numpy(a).to(device) for a in breast_cancer())
    if device != "cpu":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    logistic_regression = ppl_model()

    flags = {} if jit_compile is None else {"jit_compile": jit_compile}  # None: the default
    kernel = (inference.NUTS(**flags) if sampler == "nuts" else
              inference.HMC(trajectory_length=trajectory_length, adapt_step_size=True,
                            adapt_mass="diag", jitter=jitter, **flags))
    result = inference.mcmc.run(kernel, logistic_regression(x), {"y": y}, n_chains=n_chains,
                                n_warmup=n_warmup, n_samples=n_samples, progress=False,
                                seed=seed)
    draws = result.samples["beta"].cpu().numpy()  # on a GPU: waits for it
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row = _score(draws, wall, cpu, result.stats["n_steps"], result.num_divergences.sum())
    if jit_compile is not False and sampler == "nuts":
        (shared,) = kernel._shared.values() or (None,)
        row["tree_step"] = "uncompiled, by doublings" if shared is None else shared.status
    return row


def run_numpyro(n_chains, sampler, n_warmup, n_samples, trajectory_length, seed=0):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import HMC, MCMC, NUTS
    x, y = breast_cancer()
    wall, cpu = time.perf_counter(), time.process_time()

    def logistic_regression(x, y):
        beta = numpyro.sample("beta", dist.Normal(jnp.zeros(x.shape[1]), 1.).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=x @ beta), obs=y)

    kernel = (NUTS(logistic_regression) if sampler == "nuts" else
              HMC(logistic_regression, trajectory_length=trajectory_length))
    mcmc = MCMC(kernel, num_warmup=n_warmup, num_samples=n_samples, num_chains=n_chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), x, y, extra_fields=("diverging", "num_steps"))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["beta"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    extra = mcmc.get_extra_fields()
    return _score(draws, wall, cpu, np.asarray(extra["num_steps"]),
                  np.asarray(extra["diverging"]).sum())


def run_pyro(n_chains, sampler, n_warmup, n_samples, trajectory_length, seed=0):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import MCMC, NUTS
    x, y = (torch.from_numpy(a) for a in breast_cancer())
    wall, cpu = time.perf_counter(), time.process_time()

    def logistic_regression(x, y):
        beta = pyro.sample("beta", dist.Normal(torch.zeros(x.shape[1]), 1.).to_event(1))
        pyro.sample("y", dist.Bernoulli(logits=x @ beta).to_event(1), obs=y)

    draws, divergences = [], 0
    for chain in range(n_chains):  # one after another: see the module docstring
        pyro.set_rng_seed(seed + chain)
        mcmc = MCMC(NUTS(logistic_regression, jit_compile=True, ignore_jit_warnings=True),
                    num_samples=n_samples, warmup_steps=n_warmup, num_chains=1,
                    disable_progbar=True)
        mcmc.run(x, y)
        draws.append(mcmc.get_samples()["beta"].numpy())
        divergences += len(mcmc.diagnostics()["divergences"]["chain 0"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return _score(np.stack(draws), wall, cpu, [np.nan], divergences)


RUNNERS = {"ours": run_ours, "ours, first compile": run_ours, "ours, new model": run_ours,
           "ours, new model (no reboot)": run_ours,
           "ours, cached": run_ours, "ours, eager": functools.partial(run_ours, jit_compile=False),
           "ours, no compiler": run_ours,
           "ours, jitter 0.25": functools.partial(run_ours, jitter=0.25),
           "numpyro": run_numpyro, "pyro": run_pyro}


def _worker(library, env, *args):
    _limit_threads()
    os.environ.update(env)
    tempfile.tempdir = None  # env may name another TMPDIR
    import torch
    torch.set_num_threads(1)
    return RUNNERS[library](*args)


def _setup_worker(env):
    """`python -m inference.mcmc.precompile` (diagonal metric, float32), as a user runs it
    at setup: it loads the tree step from PPL_CACHE_DIR and compiles a small unrelated
    model's gradient, which builds what every Inductor cache makes once (CPU probes,
    precompiled header, and the cache's copy of that header), but nothing of the model
    timed after it."""
    _limit_threads()
    os.environ.update(env)
    import torch

    from inference.mcmc.precompile import keep_headers, precompile
    torch.set_num_threads(1)
    (row,) = precompile(dtypes=(torch.float32,), metrics=("diag",))
    assert row["status"] in ("compiled", "loaded"), row["status"]
    kept, why = keep_headers()
    assert kept, f"the setup kept no precompiled header: {why}"


def fresh_inductor_cache(reboot=True):
    """A new Inductor cache folder, as on a machine set up with `python -m
    inference.mcmc.precompile` that never compiled this model (the setup runs untimed),
    and then rebooted (`reboot`): the timed run gets a new, empty temporary directory,
    without the precompiled header the setup built there (the compile puts back the
    cache's copy). Without `reboot` it keeps it."""
    # each model's compiled gradient is kept under PPL_CACHE_DIR too (inference.mcmc.cache)
    env = {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(), "PPL_CACHE_DIR": tempfile.mkdtemp()}
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(_setup_worker, (env,))
    return {**env, "TMPDIR": tempfile.mkdtemp()} if reboot else env


# A machine without a C++ compiler, as `inference.mcmc.compile.compiler_available` sees it.
NO_COMPILER = {"CXX": "", "PATH": os.devnull}


def build_machine_parts():
    """Run the machine's setup step (`_setup_worker`: the install's build step) untimed; the
    runs after it then time what they compile for their own model and shapes."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(_setup_worker, ({},))


def measure(library, n_chains, sampler="nuts", n_warmup=N_WARMUP, n_samples=N_SAMPLES,
            trajectory_length=3.0, env=None, seed=0):
    """Run one case in a fresh process (with `env` added to its environment); returns its row."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        row = pool.apply(_worker, (library, env or {}, n_chains, sampler, n_warmup, n_samples,
                                   trajectory_length, seed))
    row = {"library": library, "sampler": sampler, "n_chains": n_chains, "seed": seed,
           "n_warmup": n_warmup, "n_samples": n_samples,
           **({"trajectory_length": trajectory_length} if sampler == "hmc" else {}), **row}
    print(f"  {library:20s} {sampler:4s} {n_chains:4d} chains, seed {seed}: "
          f"{row['wall_s']:8.1f} s wall "
          f"{row['cpu_s']:8.1f} s cpu, min ESS {row['min_ess_bulk']:7.0f}, "
          f"{row['ess_per_s']:8.2f} ESS/s, R-hat {row['max_r_hat']:.3f}, "
          f"{row['divergences']} divergent", flush=True)
    return row


# -- long run: time and memory per block ------------------------------------------------
def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _long_worker(n_chains, n_iterations, block, n_adapt):
    _limit_threads()
    import torch
    torch.set_num_threads(1)
    import inference
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a) for a in breast_cancer())
    logistic_regression = ppl_model()

    model = logistic_regression(x)
    nuts = inference.NUTS(adapt_step_size=True, adapt_mass="diag", jit_compile=True)
    latent = {"beta": torch.zeros(n_chains, x.shape[1])}
    blocks, started, steps = [], time.perf_counter(), 0
    for it in range(1, n_iterations + 1):
        nuts.adapt_step_size = it <= n_adapt
        nuts.adapt_mass = "diag" if it <= n_adapt else None
        latent, info = nuts.sample(model, {"y": y}, latent)
        steps += int(info.n_steps.max())
        if it % block == 0:
            seconds = time.perf_counter() - started
            blocks.append({"iterations": it, "s_per_iteration": seconds / block,
                           "ms_per_leapfrog": 1000 * seconds / steps, "rss_kb": rss_kb()})
            started, steps = time.perf_counter(), 0
    return blocks


def long_run(n_chains, n_iterations, block=500, n_adapt=500):
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        blocks = pool.apply(_long_worker, (n_chains, n_iterations, block, n_adapt))
    after = [b for b in blocks if b["iterations"] > n_adapt]
    rss = np.array([b["rss_kb"] for b in after], dtype=float)
    its = np.array([b["iterations"] for b in after], dtype=float)
    slope = float(np.polyfit(its, rss, 1)[0] * 1000) if len(after) > 1 else float("nan")
    return {"n_chains": n_chains, "n_iterations": n_iterations, "blocks": blocks,
            "rss_growth_kb": float(rss[-1] - rss[0]) if len(rss) else float("nan"),
            "rss_slope_kb_per_1000_iterations": slope,
            "ms_per_leapfrog_first_last": [after[0]["ms_per_leapfrog"],
                                           after[-1]["ms_per_leapfrog"]] if after else []}


def _ratio_rows(runs):
    """ours / baseline ESS per second, for every case both measured."""
    rows = []
    for base in runs:
        if base["library"].startswith("ours"):
            continue
        for ours in runs:
            if (ours["library"].startswith("ours") and ours["sampler"] == base["sampler"]
                    and ours["n_chains"] == base["n_chains"] and ours["seed"] == base["seed"]
                    and ours["n_warmup"] == base["n_warmup"]):
                seed = f", seed {base['seed']}" if base["seed"] else ""
                length = ("" if (base["n_warmup"], base["n_samples"]) == (N_WARMUP, N_SAMPLES)
                          else f", {base['n_warmup']} + {base['n_samples']} iterations")
                rows.append({"case": f"{base['sampler']}, {base['n_chains']} chains{seed}{length}",
                             "ours": ours["library"],
                             "baseline": base["library"],
                             "baseline_ess_per_s": base["ess_per_s"],
                             "ours_ess_per_s": ours["ess_per_s"],
                             "ratio": ours["ess_per_s"] / base["ess_per_s"],
                             "ratio_per_cpu_s": ours["ess_per_cpu_s"] / base["ess_per_cpu_s"]})
    pyro = [r for r in runs if r["library"] == "pyro"]
    ours16 = [r for r in runs if r["library"] in ("ours, first compile", "ours, new model",
                                                   "ours, new model (no reboot)",
                                                   "ours, cached")
              and r["sampler"] == "nuts" and r["n_chains"] == 16 and r["seed"] == 0]
    if pyro and pyro[0]["n_chains"] != 16:
        length = ("" if pyro[0]["n_warmup"] == N_WARMUP else
                  f" ({pyro[0]['n_warmup']} + {pyro[0]['n_samples']} iterations)")
        for ours in ours16:
            rows.append({"case": f"nuts, ours 16 chains vs Pyro {pyro[0]['n_chains']} "
                                 f"sequential{length}",
                         "ours": ours["library"], "baseline": "pyro",
                         "baseline_ess_per_s": pyro[0]["ess_per_s"],
                         "ours_ess_per_s": ours["ess_per_s"],
                         "ratio": ours["ess_per_s"] / pyro[0]["ess_per_s"],
                         "ratio_per_cpu_s": ours["ess_per_cpu_s"] / pyro[0]["ess_per_cpu_s"]})
    return rows + _median_rows(runs)


def _median_rows(runs):
    """Median ESS/s over seeds, ours / NumPyro, for the 16-chain cases run with several seeds."""
    by_library = {}
    main = [r["n_warmup"] for r in runs if r["library"] == "numpyro" and r["n_chains"] == 16]
    if not main:
        return []
    for run in runs:
        if run["sampler"] == "nuts" and run["n_chains"] == 16 and run["n_warmup"] == main[0]:
            by_library.setdefault(run["library"], []).append(run)
    numpyro = by_library.get("numpyro", [])
    if len(numpyro) < 2:
        return []
    rows = []
    for library, ours in by_library.items():
        if not library.startswith("ours") or len(ours) < 2:
            continue
        rows.append({"case": f"nuts, 16 chains, median over {len(ours)} seeds", "ours": library,
                     "baseline": "numpyro",
                     "baseline_ess_per_s": float(np.median([r["ess_per_s"] for r in numpyro])),
                     "ours_ess_per_s": float(np.median([r["ess_per_s"] for r in ours])),
                     "ratio": float(np.median([r["ess_per_s"] for r in ours])
                                    / np.median([r["ess_per_s"] for r in numpyro])),
                     "ratio_per_cpu_s": float(np.median([r["ess_per_cpu_s"] for r in ours])
                                              / np.median([r["ess_per_cpu_s"] for r in numpyro]))})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["main", "chains", "hmc", "many", "long"],
                        choices=["main", "chains", "hmc", "many", "long", "longer"])
    parser.add_argument("--pyro-chains", type=int, default=1)
    parser.add_argument("--pyro-iterations", type=int, default=None,
                        help="main part: Pyro's warm-up iterations (and as many draws), "
                             "fewer than the others' to cap its time (default: the same); "
                             "ESS per second is then compared as measured, its per-ESS "
                             "cost taken to hold for the full length")
    parser.add_argument("--seeds", type=int, default=1,
                        help="main part: also run ours (the chosen cases but the first "
                             "compile) and NumPyro with seeds 1..N-1, and report median "
                             "ESS/s over seeds")
    parser.add_argument("--main-cases", type=lambda text: text.split(","), default=None,
                        help="main part: only these of ours' cases (comma-separated, e.g. "
                             "'new model,no compiler', and 'pyro' to run Pyro), beside "
                             "NumPyro; default: all")
    parser.add_argument("--trajectory-length", type=float, default=3.0)
    parser.add_argument("--long-iterations", type=int, default=10_000)
    parser.add_argument("--longer-iterations", type=int, default=2000,
                        help="warm-up iterations (and kept draws) of the 'longer' part")
    parser.add_argument("--many-iterations", type=int, default=200,
                        help="warm-up iterations (and kept draws) of the 'many' part")
    parser.add_argument("--quick", action="store_true", help="tiny runs (also when CI=true)")
    parser.add_argument("--out", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    n_warmup, n_samples = (150, 100) if quick else (N_WARMUP, N_SAMPLES)
    runs, long = [], None

    def add(row):
        """Keep a run and write the report so far (a long benchmark cut short keeps them)."""
        runs.append(row)
        write_report(NAME, __doc__, argv, _ratio_rows(runs), args.out, quick, threads=1,
                     libraries=_versions(), load_average={"before": load_before,
                                                          "so_far": os.getloadavg()},
                     runs=runs, partial=True)
    # Fresh caches for this run, inherited by every worker: PPL_CACHE_DIR (ours) inside a
    # fresh temporary directory (where Inductor's default would be), so that the first
    # compilation starts from nothing; the folders made below go inside it too.
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="hmc_blr_")
    tempfile.tempdir = None
    os.environ["PPL_CACHE_DIR"] = os.path.join(os.environ["TMPDIR"], "ppl_cache")
    load_before = os.getloadavg()
    if "main" not in args.parts:
        build_machine_parts()
    if "longer" in args.parts:
        n_longer = 200 if quick else args.longer_iterations
        print(f"16 chains, NUTS, {n_longer} + {n_longer} iterations:")
        for library in ("ours, new model", "numpyro"):
            env = fresh_inductor_cache() if library == "ours, new model" else {}
            add(measure(library, 16, n_warmup=n_longer, n_samples=n_longer, env=env))

    def chosen(library):
        """Whether `--main-cases` asks for this library's case (NumPyro always runs)."""
        return not args.main_cases or library.removeprefix("ours, ") in args.main_cases + [
            "numpyro"]

    def same_boot():
        return fresh_inductor_cache(reboot=False)

    if "main" in args.parts:
        print("16 chains, NUTS:")
        if chosen("ours, first compile"):
            add(measure("ours, first compile", 16, n_warmup=n_warmup, n_samples=n_samples))
        if chosen("ours, cached"):  # the install's build step, then a first run: untimed
            build_machine_parts()
            measure("ours, cached", 16, n_warmup=n_warmup, n_samples=n_samples)
        for library, env in [("ours, cached", {}),
                             ("ours, new model", fresh_inductor_cache),
                             ("ours, new model (no reboot)", same_boot), ("numpyro", {}),
                             ("ours, no compiler", NO_COMPILER), ("ours, eager", {})]:
            if not chosen(library):
                continue
            add(measure(library, 16, n_warmup=n_warmup, n_samples=n_samples,
                        env=env() if callable(env) else env))
        n_pyro = args.pyro_iterations or n_warmup
        if args.main_cases and "pyro" not in args.main_cases:
            n_pyro = 0
        if n_pyro:
            add(measure("pyro", args.pyro_chains, n_warmup=n_pyro,
                        n_samples=n_pyro if args.pyro_iterations else n_samples))
        for seed in range(1, args.seeds):
            for library, env in [("ours, new model", fresh_inductor_cache),
                                 ("ours, new model (no reboot)", same_boot),
                                 ("ours, cached", {}), ("numpyro", {}),
                                 ("ours, no compiler", NO_COMPILER), ("ours, eager", {})]:
                if not chosen(library):
                    continue
                add(measure(library, 16, n_warmup=n_warmup, n_samples=n_samples,
                            env=env() if callable(env) else env, seed=seed))
    if "chains" in args.parts:
        print("chain counts, NUTS:")
        for n_chains in ([1, 4] if quick else [1, 4, 64, 256]):
            for library in ("ours", "numpyro"):
                add(measure(library, n_chains, n_warmup=n_warmup, n_samples=n_samples))
    if "hmc" in args.parts:
        print(f"HMC, trajectory length {args.trajectory_length}, 16 chains:")
        for library in ("ours", "ours, jitter 0.25", "numpyro"):
            env = fresh_inductor_cache() if library.startswith("ours") else {}
            add(measure(library, 16, "hmc", n_warmup, n_samples, args.trajectory_length,
                        env=env))
    if "many" in args.parts:
        n_many = 50 if quick else args.many_iterations
        cases = [(64, ("ours",))] if quick else [(1024, ("ours", "numpyro")), (4096, ("ours",))]
        print(f"many chains, NUTS, {n_many} warm-up + {n_many} draws:")
        for n_chains, libraries in cases:
            for library in libraries:
                add(measure(library, n_chains, n_warmup=n_many, n_samples=n_many))
    if "long" in args.parts:
        n_iterations = 1000 if quick else args.long_iterations
        print(f"long run: ours, NUTS, 16 chains, {n_iterations} iterations")
        long = long_run(16, n_iterations, block=100 if quick else 500,
                        n_adapt=100 if quick else 500)
    shutil.rmtree(os.environ.pop("TMPDIR"), ignore_errors=True)
    os.environ.pop("PPL_CACHE_DIR")
    tempfile.tempdir = None
    rows = _ratio_rows(runs)
    _print_tables(runs, rows, long)
    report = write_report(NAME, __doc__, argv, rows, args.out, quick, threads=1,
                          libraries=_versions(),
                          load_average={"before": load_before, "after": os.getloadavg()},
                          runs=runs, long_run=long)
    return report


def _versions():
    """Versions of the compared libraries (None where one is not installed)."""
    versions = {}
    for module in ("numpyro", "jax", "pyro"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return versions


def _print_tables(runs, rows, long):
    print(f"\n{'library':20s} {'sampler':7s} {'chains':>6s} {'wall s':>8s} {'cpu s':>8s} "
          f"{'min ESS':>8s} {'ESS/s':>8s} {'ESS/cpu s':>9s} {'R-hat':>6s} {'leapfrogs':>9s} "
          f"{'div':>4s}")
    for r in runs:
        print(f"{r['library']:20s} {r['sampler']:7s} {r['n_chains']:6d} {r['wall_s']:8.1f} "
              f"{r['cpu_s']:8.1f} {r['min_ess_bulk']:8.0f} {r['ess_per_s']:8.2f} "
              f"{r['ess_per_cpu_s']:9.2f} {r['max_r_hat']:6.3f} {r['mean_leapfrogs']:9.1f} "
              f"{r['divergences']:4d}")
    if rows:
        print(f"\n{'case':45s} {'ours':20s} {'baseline':9s} {'base ESS/s':>10s} {'ours ESS/s':>10s} "
              f"{'ratio':>7s} {'per cpu s':>9s}")
        for r in rows:
            print(f"{r['case']:45s} {r['ours']:20s} {r['baseline']:9s} {r['baseline_ess_per_s']:10.2f} "
                  f"{r['ours_ess_per_s']:10.2f} {r['ratio']:7.2f} {r['ratio_per_cpu_s']:9.2f}")
    if long:
        print(f"\nlong run ({long['n_iterations']} iterations, {long['n_chains']} chains):")
        print(f"{'iterations':>10s} {'s/iteration':>12s} {'ms/leapfrog':>12s} {'RSS MB':>8s}")
        for b in long["blocks"]:
            print(f"{b['iterations']:10d} {b['s_per_iteration']:12.4f} "
                  f"{b['ms_per_leapfrog']:12.3f} {b['rss_kb'] / 1024:8.1f}")
        print(f"RSS growth after warm-up: {long['rss_growth_kb']:.0f} KB "
              f"({long['rss_slope_kb_per_1000_iterations']:.1f} KB per 1000 iterations)")


if __name__ == "__main__":
    main()
