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
import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from inference import diagnostics
from inference.mcmc.adaptation import WindowedAdaptation, make_metric
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
    raise ValueError(f"could not find a start with a finite log joint in {max_tries} "
                     f"uniform(-2, 2) draws for chains {torch.nonzero(todo).flatten().tolist()}; "
                     f"give `init`")


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
        thin=1, progress=True, seed=None, supports=None, checkpoint=None, checkpoint_every=100):
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
    checkpoint: a file path. Every `checkpoint_every` iterations (and at the end)
        the whole run (chains, adaptation, draws so far, random state) is saved
        there; if the file exists, the run resumes from it (same model and
        arguments required) and gives the same draws as an uninterrupted run.
    """
    _check_run_args(n_warmup, n_samples, thin, n_chains, init)
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"`checkpoint_every` must be a positive int, got {checkpoint_every!r}")
    devices = []
    if init is not None:
        devices = [v.device for v in init.values() if isinstance(v, torch.Tensor)
                   and v.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            return _run(kernel, meta_bn, observed, init, n_chains, n_warmup, n_samples, thin,
                        progress, supports, checkpoint, checkpoint_every)


def _run(kernel, meta_bn, observed, init, n_chains, n_warmup, n_samples, thin, progress,
         supports, checkpoint, checkpoint_every):
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

    n_total = n_warmup + n_samples
    draws = torch.empty((n_samples // thin, n, dim), dtype=potential.dtype,
                        device=potential.device)
    record = _Record()
    start = 0
    config = {"kernel": repr(kernel), "n_chains": n, "dim": dim, "n_warmup": n_warmup,
              "n_samples": n_samples, "thin": thin}
    if checkpoint is not None and os.path.exists(checkpoint):
        start, state, step_size, metric = _resume(checkpoint, config, adaptation, draws, record)
    bar = tqdm(total=n_total, initial=start, disable=not progress,
               desc="warmup" if start < n_warmup else "sample", dynamic_ncols=True)
    # The kernel runs the chains from one meeting point to the next (each chain at
    # its own pace in between): where the metric changes, at the end of warm-up,
    # at checkpoints and at the end.
    meetings = set(adaptation.boundaries()) | {n_total}
    if checkpoint is not None:
        meetings |= set(range(checkpoint_every, n_total, checkpoint_every))
    for end in sorted(m for m in meetings if m > start):
        warming = start < n_warmup
        dual_averaging = adaptation.dual_averaging if warming and kernel.adapt_step_size \
            else None
        state, positions, stats, new_step_size = kernel.iterate(
            state, potential, step_size, metric, end - start, dual_averaging, bar.update)
        if warming:
            record.add(True, stats)
            step_size, metric = adaptation.update(start, positions, state)
        else:
            kept = [i for i in range(end - start) if (start + i - n_warmup + 1) % thin == 0]
            if kept:
                record.add(False, {k: v[kept] for k, v in stats.items()})
                first = (start + kept[0] - n_warmup + 1) // thin - 1
                draws[first:first + len(kept)] = positions[kept]
        if end == n_warmup:
            bar.set_description("sample")
        if progress:
            bar.set_postfix(step_size=f"{float(step_size.mean()):.3g}",
                            accept=f"{float(stats['accept_prob'][-1].mean()):.2f}",
                            divergences=int(record.divergences), refresh=False)
        if checkpoint is not None and (end % checkpoint_every == 0 or end == n_total):
            _save(checkpoint, config, end, state, step_size, metric, adaptation, draws,
                  record, n_warmup, thin)
        start = end
    bar.close()
    samples = potential.space.constrain(draws)  # each (draw, chain, ...)
    samples = {k: v.movedim(0, 1).contiguous() for k, v in samples.items()}
    return MCMCResult(samples=samples, stats=record.stacked(False),
                      warmup_stats=record.stacked(True), step_size=step_size,
                      inverse_mass_matrix=metric.inverse_mass, last_state=state,
                      potential=potential, kernel=kernel, thin=thin)


class _Record:
    """Per-iteration statistics of warm-up and sampling, as lists of [n_chains] tensors."""

    def __init__(self):
        self.lists = {True: {k: [] for k in _STATS}, False: {k: [] for k in _STATS}}
        self.divergences = 0

    def add(self, warming, stats):
        """stats: name -> [k, n_chains] for k iterations."""
        store = self.lists[warming]
        for name in _STATS:
            store[name].extend(stats[name].unbind(0))
        if not warming:
            self.divergences = self.divergences + stats["diverging"].sum()

    def tensors(self, warming):
        """name -> (n_chains, n_iterations) tensor (absent when there is none)."""
        return {k: torch.stack(v, 1) for k, v in self.lists[warming].items() if v}

    def stacked(self, warming):
        return {k: v.cpu().numpy() for k, v in self.tensors(warming).items()}

    def load(self, warming, tensors):
        for k, v in tensors.items():
            self.lists[warming][k] = list(v.unbind(1))
        if not warming and "diverging" in tensors:
            self.divergences = tensors["diverging"].sum()


def _save(path, config, iteration, state, step_size, metric, adaptation, draws, record,
          n_warmup, thin):
    kept = max(0, (iteration - n_warmup) // thin)
    payload = {"config": config, "iteration": iteration, "position": state.position,
               "log_prob": state.log_prob, "grad": state.grad, "step_size": step_size,
               "inverse_mass": metric.inverse_mass, "adaptation": adaptation.state_dict(),
               "draws": draws[:kept].clone(), "warmup_stats": record.tensors(True),
               "stats": record.tensors(False), "rng": torch.get_rng_state()}
    partial = f"{path}.partial"
    torch.save(payload, partial)
    os.replace(partial, path)  # never leave a half-written checkpoint


def _resume(path, config, adaptation, draws, record):
    saved = torch.load(path, weights_only=True)
    if saved["config"] != config:
        raise ValueError(f"checkpoint {path} is from a different run: it has {saved['config']}, "
                         f"this run is {config}; remove it or change `checkpoint`")
    adaptation.load_state_dict(saved["adaptation"])
    draws[:len(saved["draws"])] = saved["draws"]
    record.load(True, saved["warmup_stats"])
    record.load(False, saved["stats"])
    torch.set_rng_state(saved["rng"])
    state = HMCState(saved["position"], saved["log_prob"], saved["grad"])
    return saved["iteration"], state, saved["step_size"], make_metric(saved["inverse_mass"])


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

