"""`run`: warm-up then draws for batched chains, with progress, storage and summaries.

    result = inference.mcmc.run(inference.NUTS(), model, {"y": y}, n_chains=4)
    result.samples["w"]        # (chain, draw, ...) constrained draws
    print(result.summary())    # mean, sd, quantiles, ESS, R-hat, MCSE
    result.to_arviz()          # an arviz.InferenceData (arviz optional)

The runner owns the loop: the kernel (HMC / NUTS) moves the chains, the
adaptation (`WindowedAdaptation`, Stan's schedule) tunes step sizes and mass
matrices during warm-up, and draws are kept every `thin` iterations in the
unconstrained space, mapped to the constrained space once at the end.
"""
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from inference import diagnostics
from inference.mcmc.adaptation import WindowedAdaptation
from inference.mcmc.metric import identity_metric
from inference.mcmc.potential import Potential, latent_nodes
from inference.mcmc.state import HMCState, init_state

__all__ = ["run", "MCMCResult", "Summary"]

_STATS = ("accept_prob", "step_size", "diverging", "tree_depth", "n_steps", "energy")


def _prior_init(meta_bn, observed, n_chains, supports, max_tries=100):
    """Potential and start positions drawn uniformly in (-2, 2) on the unconstrained scale."""
    nodes = latent_nodes(meta_bn, observed)
    if not nodes:
        raise ValueError("the model has no latent (unobserved stochastic) node to sample")
    # Prior draws give values of the right shapes inside the supports, to set up the layout.
    template = {name: node.tensor.detach().expand((n_chains,) + node.tensor.shape).clone()
                for name, node in nodes.items()}
    potential = Potential(meta_bn, observed, template, supports)
    x = torch.empty(potential.n_chains, potential.dim, dtype=potential.dtype,
                    device=potential.device)
    todo = torch.ones(potential.n_chains, dtype=torch.bool, device=potential.device)
    for _ in range(max_tries):
        x = torch.where(todo[:, None], torch.rand_like(x) * 4. - 2., x)
        todo = ~torch.isfinite(potential.log_prob(x))
        if not bool(todo.any()):
            return potential, x
    raise ValueError(f"could not find a start with a finite log joint in {max_tries} uniform(-2, 2) "
                     f"draws for chains {torch.nonzero(todo).flatten().tolist()}; give `init`")


def _check_run_args(n_warmup, n_samples, thin, n_chains, init):
    for name, value, low in [("n_warmup", n_warmup, 0), ("n_samples", n_samples, 1),
                             ("thin", thin, 1)]:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}")
    if init is None and n_chains is None:
        raise ValueError("give `init` (dict name -> [n_chains, ...] constrained values) or "
                         "`n_chains` (start from uniform(-2, 2) on the unconstrained scale)")
    if n_chains is not None and (not isinstance(n_chains, int) or isinstance(n_chains, bool)
                                 or n_chains < 1):
        raise ValueError(f"`n_chains` must be a positive int, got {n_chains!r}")


def run(kernel, meta_bn, observed=None, init=None, n_chains=None, n_warmup=500, n_samples=500,
        thin=1, progress=True, seed=None, supports=None):
    """Run `kernel` (an `inference.HMC` / `inference.NUTS`) on a model; returns an `MCMCResult`.

    meta_bn, observed: the model, in any form `inference.model.LogJoint` accepts.
    init: dict name -> constrained start values [n_chains, ...] (the leading
        axes are the chain axes). None: `n_chains` chains start from uniform(-2, 2)
        on the unconstrained scale (Stan's default), redrawn where the log joint
        is not finite; the latents are the model's unobserved stochastic nodes.
    n_warmup: adaptation iterations (Stan's windowed schedule), discarded.
    n_samples, thin: kept draws, one every `thin` iterations after warm-up.
    seed: seeds torch's generator for this run (the global state is restored after).
    supports: dict name -> torch constraint, for constrained latents of a plain
        log_joint callable (which has no nodes to read them from).
    """
    _check_run_args(n_warmup, n_samples, thin, n_chains, init)
    devices = []
    if init is not None:
        devices = [v.device for v in init.values() if isinstance(v, torch.Tensor)
                   and v.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            return _run(kernel, meta_bn, observed, init, n_chains, n_warmup, n_samples, thin,
                        progress, supports)


def _run(kernel, meta_bn, observed, init, n_chains, n_warmup, n_samples, thin, progress,
         supports):
    if init is None:
        potential, x = _prior_init(meta_bn, observed, n_chains, supports)
    else:
        potential = Potential(meta_bn, observed, init, supports)
        x = potential.unconstrain(init)
        if n_chains is not None and n_chains != potential.n_chains:
            raise ValueError(f"`n_chains`={n_chains} but `init` has {potential.n_chains} chains "
                             f"(chain axes {tuple(potential.chain_shape)})")
    state = init_state(potential, x)
    if not bool(torch.isfinite(state.log_prob).all()):
        bad = torch.nonzero(~torch.isfinite(state.log_prob)).flatten().tolist()
        raise ValueError(f"the log joint is not finite at `init` for chains {bad}")
    n, dim = potential.n_chains, potential.dim
    metric = identity_metric(n, dim, dense=kernel.adapt_mass == "dense", dtype=potential.dtype,
                             device=potential.device)
    step_size = kernel.initial_step_size(state, potential, metric)
    adaptation = WindowedAdaptation(
        n_warmup, adapt_step_size=kernel.adapt_step_size, adapt_mass=kernel.adapt_mass,
        target_acceptance_rate=kernel.target_acceptance_rate, gamma=kernel.gamma,
        t0=kernel.t0, kappa=kernel.kappa)
    step_size, metric = adaptation.start(state, potential, metric, step_size)

    n_kept = n_samples // thin
    draws = torch.empty((n_kept, n, dim), dtype=potential.dtype,
                         device=potential.device)
    stats = {k: [] for k in _STATS}
    warmup_stats = {k: [] for k in _STATS}
    bar = tqdm(total=n_warmup + n_samples, disable=not progress, desc="warmup",
               dynamic_ncols=True)
    kept = 0
    for it in range(n_warmup + n_samples):
        warming = it < n_warmup
        state, info = kernel.transition(state, potential, step_size, metric)
        record = warmup_stats if warming else stats
        if warming or (it - n_warmup + 1) % thin == 0:
            _record(record, info, step_size)
        if warming:
            step_size, metric = adaptation.update(it, state, info)
        elif (it - n_warmup + 1) % thin == 0 and kept < n_kept:
            draws[kept] = state.position
            kept += 1
        if it == n_warmup:
            bar.set_description("sample")
        if progress and (it % 50 == 49 or it == n_warmup + n_samples - 1):
            bar.set_postfix(step_size=f"{float(step_size.mean()):.3g}",
                            accept=f"{float(info.accept_prob.mean()):.2f}",
                            divergences=int(sum(int(d.sum()) for d in record["diverging"])),
                            refresh=False)
        bar.update(1)
    bar.close()
    samples = potential.space.constrain(draws)  # each (draw, chain, ...)
    samples = {k: v.movedim(0, 1).contiguous() for k, v in samples.items()}
    return MCMCResult(samples=samples, stats=_stack(stats), warmup_stats=_stack(warmup_stats),
                      step_size=step_size, inverse_mass_matrix=metric.inverse_mass,
                      last_state=state, potential=potential, kernel=kernel, thin=thin)


def _record(store, info, step_size):
    store["accept_prob"].append(info.accept_prob)
    store["step_size"].append(step_size)
    store["diverging"].append(info.diverging)
    store["tree_depth"].append(info.tree_depth)
    store["n_steps"].append(info.n_steps)
    store["energy"].append(info.energy)


def _stack(store):
    """dict of lists of [n_chains] tensors -> dict of (chain, draw) numpy arrays."""
    out = {}
    for k, values in store.items():
        if values:
            out[k] = torch.stack(values, 1).cpu().numpy()
    return out


class Summary(dict):
    """Rows `name[index]` -> dict of statistics; prints as a table."""

    columns = ("mean", "sd", "5%", "50%", "95%", "mcse_mean", "mcse_sd", "ess_bulk",
               "ess_tail", "r_hat")

    def __str__(self):
        width = max([len(k) for k in self] + [4])
        head = f"{'':<{width}} " + " ".join(f"{c:>9}" for c in self.columns)
        lines = [head]
        for name, row in self.items():
            cells = []
            for c in self.columns:
                value = row[c]
                cells.append(f"{value:>9.0f}" if c.startswith("ess") and np.isfinite(value)
                             else f"{value:>9.3g}" if abs(value) >= 1e4 or abs(value) < 1e-3
                             and value != 0 else f"{value:>9.3f}")
            lines.append(f"{name:<{width}} " + " ".join(cells))
        return "\n".join(lines)

    __repr__ = __str__


@dataclass
class MCMCResult:
    """Draws and statistics of `run`.

    samples: dict name -> tensor (chain, draw, ...) in the constrained space.
    stats: dict of (chain, draw) numpy arrays: accept_prob, step_size,
        diverging, tree_depth, n_steps, energy (warmup_stats: the same for warm-up).
    step_size: [n_chains] final step sizes; inverse_mass_matrix: [n_chains, D]
        or [n_chains, D, D] (unconstrained, flat layout of `potential.space`).
    last_state: the final `HMCState` (to continue sampling).
    """

    samples: dict
    stats: dict
    warmup_stats: dict
    step_size: torch.Tensor
    inverse_mass_matrix: torch.Tensor
    last_state: HMCState
    potential: Potential
    kernel: object
    thin: int = 1

    @property
    def n_chains(self):
        return next(iter(self.samples.values())).shape[0]

    @property
    def n_draws(self):
        return next(iter(self.samples.values())).shape[1]

    @property
    def num_divergences(self):
        """Divergent transitions after warm-up, per chain."""
        return self.stats["diverging"].sum(axis=1)

    def summary(self, names=None, prob=0.9):
        """Per scalar quantity: mean, sd, central `prob` quantiles, MCSEs, ESS, R-hat."""
        low, high = (1. - prob) / 2., (1. + prob) / 2.
        table = Summary()
        table.columns = ("mean", "sd", f"{100 * low:g}%", "50%", f"{100 * high:g}%",
                         "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")
        for name in names or self.samples:
            draws = self.samples[name].detach().cpu().double().numpy()
            flat = draws.reshape(draws.shape[:2] + (-1,))
            columns = [flat.mean(axis=(0, 1)), flat.std(axis=(0, 1), ddof=1),
                       *np.quantile(flat, [low, 0.5, high], axis=(0, 1)),
                       np.atleast_1d(diagnostics.mcse_mean(flat)),
                       np.atleast_1d(diagnostics.mcse_sd(flat)),
                       np.atleast_1d(diagnostics.ess_bulk(flat)),
                       np.atleast_1d(diagnostics.ess_tail(flat)),
                       np.atleast_1d(diagnostics.split_rhat(flat))]
            shape = draws.shape[2:]
            for i in range(flat.shape[2]):
                index = np.unravel_index(i, shape) if shape else ()
                label = name + (f"[{','.join(map(str, index))}]" if shape else "")
                table[label] = {c: float(col[i]) for c, col in zip(table.columns, columns)}
        return table

    def to_arviz(self):
        """An `arviz.InferenceData` with the posterior and sample stats (needs arviz)."""
        try:
            import arviz
        except ImportError:
            raise ImportError("to_arviz() needs arviz: pip install arviz") from None
        posterior = {k: v.detach().cpu().numpy() for k, v in self.samples.items()}
        names = {"accept_prob": "acceptance_rate", "tree_depth": "tree_depth",
                 "n_steps": "n_steps", "diverging": "diverging", "energy": "energy",
                 "step_size": "step_size"}
        sample_stats = {names[k]: v for k, v in self.stats.items()}
        return arviz.from_dict(posterior=posterior, sample_stats=sample_stats)

