"""NumPyro's NUTS on the posteriordb posteriors: the baseline of `benchmarks/posteriordb.py`.

    python -m benchmarks.numpyro_posteriordb --check       # log densities against ours
    python -m benchmarks.numpyro_posteriordb sblri-blr     # one short run (300 + 300)

Every model below is written from the posterior's Stan program and data
(`Posterior(name).stan_code`, `.data`): the same priors and constraints,
Stan's flat priors as `ImproperUniform` sites on the same support, Stan's
transformed data computed outside the model. Its latent sites are those of
the ppl model in `models.posteriordb` (same names, shapes and unconstrained
coordinates) except where noted, so NumPyro's draws are scored by the same
`compare_to_reference` as ours; `check_log_density` confirms that both
potential energies agree up to a constant.

`run_numpyro_posterior` runs NumPyro's NUTS (float64, chains vectorized)
with the settings of our run (`benchmarks.posteriordb.OVERRIDES` over Stan's
`adapt_delta` / `max_treedepth`). JAX is put in float64 on import, before it
computes anything: import this module after setting the thread limits
(`benchmarks.hmc_blr._limit_threads`), which XLA reads when it starts.
"""
import argparse
import time
from typing import Callable, NamedTuple

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from numpyro.infer.util import potential_energy, unconstrain_fn  # noqa: E402

__all__ = ["MODELS", "numpyro_settings", "run_numpyro_posterior", "check_log_density"]


# -- the models ---------------------------------------------------------------------------
def eight_schools_noncentered(y, sigma):
    """Non-centered eight schools; `tau ~ cauchy(0, 5)` on tau > 0 is a half-Cauchy."""
    theta_trans = numpyro.sample("theta_trans", dist.Normal(0., 1.).expand([len(y)]).to_event(1))
    mu = numpyro.sample("mu", dist.Normal(0., 5.))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.))
    theta = numpyro.deterministic("theta", theta_trans * tau + mu)
    numpyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)


def gp_pois_regr(x, k):
    """Poisson counts with a latent squared-exponential GP, `f = cholesky(cov) f_tilde`."""
    rho = numpyro.sample("rho", dist.Gamma(25., 4.))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.))
    f_tilde = numpyro.sample("f_tilde", dist.Normal(0., 1.).expand([len(x)]).to_event(1))
    cov = (alpha ** 2 * jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho ** 2)
           + 1e-10 * jnp.eye(len(x)))
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    numpyro.sample("k", dist.Poisson(jnp.exp(f)).to_event(1), obs=k)


def ark(lags, y):
    """AR(K): `lags` [T - K, K] holds y[t - 1], ..., y[t - K] for the observed y[t], t > K."""
    alpha = numpyro.sample("alpha", dist.Normal(0., 10.))
    beta = numpyro.sample("beta", dist.Normal(0., 10.).expand([lags.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma).to_event(1), obs=y)


def garch11(y, sigma1):
    """GARCH(1, 1) with flat priors; the volatility recursion is a `lax.scan`.

    beta1's upper bound 1 - alpha1 depends on alpha1. NumPyro's ImproperUniform
    wraps such a support in an `independent` constraint that MCMC does not
    recognize as dynamic (it would turn draws back with the bound at the initial
    alpha1), so the model samples beta1's share of (0, 1 - alpha1), as the ppl
    model does (Stan's own unconstrained coordinate), with the Jacobian
    log(1 - alpha1) as a factor, which keeps beta1's prior flat.
    """
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    alpha0 = numpyro.sample("alpha0", dist.ImproperUniform(constraints.positive, (), ()))
    alpha1 = numpyro.sample("alpha1", dist.ImproperUniform(constraints.unit_interval, (), ()))
    beta1_share = numpyro.sample("beta1_share",
                                 dist.ImproperUniform(constraints.unit_interval, (), ()))
    numpyro.factor("beta1_log_jacobian", jnp.log1p(-alpha1))
    beta1 = numpyro.deterministic("beta1", beta1_share * (1. - alpha1))

    def step(sigma_previous, y_previous):
        sigma = jnp.sqrt(alpha0 + alpha1 * (y_previous - mu) ** 2 + beta1 * sigma_previous ** 2)
        return sigma, sigma

    _, sigma = jax.lax.scan(step, jnp.asarray(sigma1, y.dtype), y[:-1])
    sigma = jnp.concatenate([jnp.full((1,), sigma1, y.dtype), sigma])
    numpyro.sample("y", dist.Normal(mu, sigma).to_event(1), obs=y)


def kidscore_momiq(mom_iq, kid_score):
    """Linear regression with a flat prior on beta and a half-Cauchy on sigma."""
    beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    numpyro.sample("kid_score", dist.Normal(beta[0] + beta[1] * mom_iq, sigma).to_event(1),
                   obs=kid_score)


def low_dim_gauss_mix(y):
    """Two-component mixture with ordered means; `mu ~ normal(0, 2)` on the ordered vector
    is a factor over an ordered ImproperUniform site."""
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", dist.Normal(0., 2.).log_prob(mu).sum())
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5., 5.))
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=jnp.stack([theta, 1. - theta])),
                                     dist.Normal(mu, sigma))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", mixture, obs=y)


def blr(x, y):
    """Bayesian linear regression, normal priors (sigma > 0: a half-normal)."""
    beta = numpyro.sample("beta", dist.Normal(0., 10.).expand([x.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.))
    numpyro.sample("y", dist.Normal(x @ beta, sigma).to_event(1), obs=y)


def diamonds(x_centered, y):
    """brms regression on centered predictors; sigma's Student-t is truncated at 0, as
    brms's `student_t_lpdf(sigma | ...) - student_t_lccdf(0 | ...)`."""
    b = numpyro.sample("b", dist.Normal(0., 1.).expand([x_centered.shape[1]]).to_event(1))
    intercept = numpyro.sample("Intercept", dist.StudentT(3., 8., 10.))
    sigma = numpyro.sample("sigma", dist.TruncatedDistribution(dist.StudentT(3., 0., 10.),
                                                               low=0.))
    numpyro.sample("Y", dist.Normal(intercept + x_centered @ b, sigma).to_event(1), obs=y)


# -- data, and NumPyro's sites as the ppl model's latents -----------------------------------
def _array(values):
    return jnp.asarray(np.asarray(values, dtype=np.float64))


def _ark_data(data):
    y, order = np.asarray(data["y"], dtype=np.float64), data["K"]
    lags = np.stack([y[order - lag:len(y) - lag] for lag in range(1, order + 1)], -1)
    return {"lags": jnp.asarray(lags), "y": jnp.asarray(y[order:])}


def _diamonds_data(data):
    x = np.asarray(data["X"], dtype=np.float64)[:, 1:]
    return {"x_centered": jnp.asarray(x - x.mean(0)), "y": _array(data["Y"])}


def _same_names(*names):
    """Sites and latents with the same names and values, in either direction."""
    return lambda values: {name: values[name] for name in names}


def _mix_to_latent(values):
    mu = values["mu"]
    return {"mu_lower": mu[..., 0], "mu_gap": mu[..., 1] - mu[..., 0],
            "sigma": values["sigma"], "theta": values["theta"]}


def _mix_from_latent(latent):
    mu = np.stack([latent["mu_lower"], latent["mu_lower"] + latent["mu_gap"]], -1)
    return {"mu": mu, "sigma": latent["sigma"], "theta": latent["theta"]}


class Spec(NamedTuple):
    """A posterior in NumPyro: the model, its keyword arguments from posteriordb's data,
    and the maps between NumPyro's latent sites and the ppl model's latents (array dicts)."""

    model: Callable
    data: Callable
    to_latent: Callable
    from_latent: Callable


def _spec(model, data, *names):
    return Spec(model, data, _same_names(*names), _same_names(*names))


MODELS = {
    "eight_schools-eight_schools_noncentered": _spec(
        eight_schools_noncentered, lambda d: {"y": _array(d["y"]), "sigma": _array(d["sigma"])},
        "theta_trans", "mu", "tau"),
    "gp_pois_regr-gp_pois_regr": _spec(
        gp_pois_regr, lambda d: {"x": _array(d["x"]), "k": jnp.asarray(d["k"])},
        "rho", "alpha", "f_tilde"),
    "arK-arK": _spec(ark, _ark_data, "alpha", "beta", "sigma"),
    "garch-garch11": _spec(
        garch11, lambda d: {"y": _array(d["y"]), "sigma1": float(d["sigma1"])},
        "mu", "alpha0", "alpha1", "beta1_share"),
    "kidiq-kidscore_momiq": _spec(
        kidscore_momiq,
        lambda d: {"mom_iq": _array(d["mom_iq"]), "kid_score": _array(d["kid_score"])},
        "beta", "sigma"),
    "low_dim_gauss_mix-low_dim_gauss_mix": Spec(
        low_dim_gauss_mix, lambda d: {"y": _array(d["y"])}, _mix_to_latent, _mix_from_latent),
    "sblri-blr": _spec(blr, lambda d: {"x": _array(d["X"]), "y": _array(d["y"])},
                       "beta", "sigma"),
    "diamonds-diamonds": _spec(diamonds, _diamonds_data, "b", "Intercept", "sigma"),
}


# -- NUTS -----------------------------------------------------------------------------------
def numpyro_settings(name, posterior):
    """NumPyro's NUTS keyword arguments for our settings of `name` (Stan's control, then
    `benchmarks.posteriordb.OVERRIDES`)."""
    from benchmarks.posteriordb import OVERRIDES
    settings = {**posterior.nuts_settings, **OVERRIDES.get(name, {})}
    unknown = set(settings) - {"target_acceptance_rate", "max_tree_depth", "adapt_mass"}
    if unknown:
        raise ValueError(f"{name}: no NumPyro equivalent for {sorted(unknown)}")
    if settings.get("adapt_mass", "diag") not in ("diag", "dense"):
        raise ValueError(f"{name}: adapt_mass {settings['adapt_mass']!r}")
    return {"target_accept_prob": settings["target_acceptance_rate"],
            "max_tree_depth": settings["max_tree_depth"],
            "dense_mass": settings.get("adapt_mass") == "dense"}


def run_numpyro_posterior(name, n_chains=4, n_warmup=1000, n_samples=1000, seed=0):
    """NumPyro's NUTS on posterior `name`, scored like ours; returns a row dict.

    Wall and CPU time run from building the kernel to the draws on the host
    (XLA's compilation included), as ours run from building `inference.NUTS`.
    """
    import torch

    from models.posteriordb import compare_to_reference, load
    posterior = load(name)
    spec = MODELS[name]
    kwargs = spec.data(posterior.data)
    settings = numpyro_settings(name, posterior)
    wall, cpu = time.perf_counter(), time.process_time()
    mcmc = MCMC(NUTS(spec.model, **settings), num_warmup=n_warmup, num_samples=n_samples,
                num_chains=n_chains, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging", "num_steps"), **kwargs)
    samples = {k: np.array(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    latent = {k: torch.as_tensor(v) for k, v in spec.to_latent(samples).items()}
    comparison = compare_to_reference(posterior, latent)
    param, statistic, z = comparison.worst()
    n_steps = extra["num_steps"]
    return {"posterior": name, "library": "numpyro", "n_chains": n_chains,
            "n_warmup": n_warmup, "n_samples": n_samples, "settings": settings,
            "max_abs_z_mean": comparison.max_abs_z_mean, "max_abs_z_sd": comparison.max_abs_z_sd,
            "worst": f"{statistic} of {param}: z = {z:.2f}",
            "divergences": int(extra["diverging"].sum()),
            "min_ess_bulk": comparison.min_ess_bulk,
            "ess_per_s": comparison.min_ess_bulk / wall, "wall_s": wall, "cpu_s": cpu,
            "mean_leapfrogs": float(n_steps.mean()),
            # NumPyro's documented depth: log2(num_steps) + 1, rounded down (as Stan's)
            "max_tree_depth_reached": int(np.log2(n_steps.max()).astype(int) + 1)}


# -- the models' check: NumPyro's potential energy against ours -----------------------------
def check_log_density(name, n_draws=3):
    """Log densities of NumPyro's model and ours at `n_draws` reference draws, both on the
    unconstrained coordinates (Jacobians included): dict with NumPyro's `-potential_energy`,
    our `Potential` log density, and the spread (max - min) of their differences, which is
    0 up to rounding when the two agree up to a constant."""
    import torch

    from inference.mcmc.potential import Potential
    from models.posteriordb import load
    posterior = load(name)
    spec = MODELS[name]
    kwargs = spec.data(posterior.data)
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in posterior.reference.items()}
    index = np.linspace(0, len(next(iter(flat.values()))) - 1, n_draws).astype(int)
    latent = posterior.latent_from_params({k: v[index] for k, v in flat.items()})
    potential = Potential(posterior.model, posterior.observed, latent)
    ours, _ = potential(potential.unconstrain(latent))
    theirs = []
    for i in range(n_draws):
        sites = {k: jnp.asarray(v) for k, v in
                 spec.from_latent({k: v[i].numpy() for k, v in latent.items()}).items()}
        unconstrained = unconstrain_fn(spec.model, (), kwargs, sites)
        theirs.append(-float(potential_energy(spec.model, (), kwargs, unconstrained)))
    ours = ours.detach().to(torch.float64).numpy()
    difference = ours - np.array(theirs)
    return {"posterior": name, "numpyro": theirs, "ours": ours.tolist(),
            "spread": float(np.ptp(difference))}


def main(argv=None):
    from models.posteriordb import POSTERIOR_NAMES
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("posteriors", nargs="*", default=list(POSTERIOR_NAMES))
    parser.add_argument("--check", action="store_true",
                        help="compare log densities with ours instead of sampling")
    parser.add_argument("--draws", type=int, default=3, help="reference draws for --check")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args(argv)
    for name in args.posteriors:
        if args.check:
            row = check_log_density(name, args.draws)
            print(f"{name:42s} spread of log-density differences {row['spread']:.2e}")
        else:
            row = run_numpyro_posterior(name, 4, args.warmup, args.samples)
            print(f"{name:42s} max|z| mean {row['max_abs_z_mean']:.2f}, sd "
                  f"{row['max_abs_z_sd']:.2f} ({row['worst']}), {row['divergences']} divergent, "
                  f"{row['ess_per_s']:.1f} ESS/s, {row['wall_s']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
