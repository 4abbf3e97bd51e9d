"""`run`: warm-up then draws for batched chains, with progress, storage and summaries.

    result = inference.mcmc.run(inference.NUTS(), model, {"y": y}, n_chains=4)
    result.samples["w"]        # (chain, draw, ...) constrained draws
    print(result.summary())    # mean, sd, quantiles, ESS, R-hat, MCSE
    result.to_arviz()          # an arviz.InferenceData (arviz optional)

The runner owns the loop: the kernel (HMC / NUTS) moves the chains, the
adaptation (`WindowedAdaptation`, Stan's schedule) tunes step sizes and mass
matrices during warm-up, and draws are kept every `thin` iterations in the
unconstrained space, mapped to the constrained space once at the end. Draws and
statistics are written into arrays allocated once, chain-major, so that a long
run needs little more memory than what it keeps. After sampling, divergences,
R-hat, bulk ESS, trees at the depth limit, non-finite and runaway draws are
checked, and what went wrong is reported in one `SamplingWarning`.
"""
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from inference import checkpoint as checkpoints
from inference import diagnostics, distributed
from inference.mcmc.adaptation import WindowedAdaptation, dual_averaging_final, make_metric
from inference.mcmc.batching import Restart
from inference.mcmc.metric import identity_metric
from inference.mcmc.potential import Potential, latent_nodes
from inference.mcmc.state import HMCState, init_state, select
from inference.mcmc.streams import new_streams

__all__ = ["run", "MCMCResult", "Summary", "SamplingWarning"]

_STATS = ("accept_prob", "step_size", "diverging", "tree_depth", "n_steps", "energy")
# Thresholds of the checks after sampling (Vehtari et al. 2021 for R-hat and ESS).
MAX_RHAT = 1.01
MIN_ESS_PER_CHAIN = 100


class SamplingWarning(UserWarning):
    """The draws of `inference.mcmc.run` should not be trusted as they are (one warning per
    run, listing every problem found: see `MCMCResult.problems`)."""


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
        there; if the file exists, the run resumes from it and gives the same
        draws as an uninterrupted run. The file records what it was made for
        (model, observed values, latents, kernel settings, run arguments): a
        resume with anything else raises `inference.checkpoint.
        CheckpointMismatchError` naming the difference, and a second process
        running on the same path gets `CheckpointInUseError`. The draws do not
        depend on `checkpoint_every`.

    After sampling, a `SamplingWarning` lists what makes the draws unreliable
    (divergences, R-hat above 1.01, bulk ESS below 100 per chain, trees
    stopped at max_tree_depth, non-finite or runaway draws).
    """
    _check_run_args(n_warmup, n_samples, thin, n_chains, init)
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"`checkpoint_every` must be a positive int, got {checkpoint_every!r}")
    checkpoint = distributed.rank_path(checkpoint)  # under torchrun: each rank its chains
    progress = progress and distributed.is_main()
    devices = []
    if init is not None:
        devices = [v.device for v in init.values() if isinstance(v, torch.Tensor)
                   and v.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            if checkpoint is None:
                result = _run(kernel, meta_bn, observed, init, n_chains, n_warmup, n_samples,
                              thin, progress, supports, None, checkpoint_every, seed)
            else:
                with checkpoints.writer_lock(checkpoint):
                    result = _run(kernel, meta_bn, observed, init, n_chains, n_warmup,
                                  n_samples, thin, progress, supports, checkpoint,
                                  checkpoint_every, seed)
    problems = result.problems()
    if problems:
        warnings.warn(f"{len(problems)} sampling problem{'s' * (len(problems) > 1)}: "
                      + "; ".join(problems), SamplingWarning, stacklevel=2)
    return result


def _run(kernel, meta_bn, observed, init, n_chains, n_warmup, n_samples, thin, progress,
         supports, checkpoint, checkpoint_every, seed):
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
    everything = potential  # all chains; under torchrun this rank runs a block of them
    potential, state, step_size, metric = distributed.own_chains(kernel, potential, state,
                                                                 step_size, metric)
    n = potential.n_chains
    adaptation = WindowedAdaptation(
        n_warmup, adapt_step_size=kernel.adapt_step_size, adapt_mass=kernel.adapt_mass,
        target_acceptance_rate=kernel.target_acceptance_rate, gamma=kernel.gamma,
        t0=kernel.t0, kappa=kernel.kappa)
    step_size, metric = adaptation.start(state, potential, metric, step_size)

    n_total = n_warmup + n_samples
    store = _Store(n, n_warmup, n_samples // thin, dim, potential.dtype, potential.device)
    start = 0
    if checkpoint is not None:
        made_for = _fingerprint(kernel, meta_bn, observed, init, potential, seed, n_warmup,
                                n_samples, thin)
        probe = potential.log_prob(_probe_points(n, dim, potential.dtype, potential.device))
        if os.path.exists(checkpoint):
            start, state, step_size, metric = _resume(checkpoint, made_for, probe, adaptation,
                                                      store)
    bar = tqdm(total=n_total, initial=start, disable=not progress,
               desc="warmup" if start < n_warmup else "sample", dynamic_ncols=True)
    postfix = {}

    def advance(k):
        """Progress: k more transitions of every chain; divergences as they happen."""
        bar.update(k)
        if progress:
            bar.set_postfix(postfix, divergences=int(store.divergences), refresh=False)

    # The kernel runs the chains from one meeting point to the next (each chain at
    # its own pace in between): at checkpoints and at the end; also where the metric
    # changes and at the end of warm-up, unless the kernel lets each chain end its warm-up
    # windows and its warm-up on its own (`windows_per_chain`).
    per_chain = kernel.windows_per_chain
    meetings = (set() if per_chain else set(adaptation.boundaries())) | {n_total}
    if checkpoint is not None:
        meetings |= set(range(checkpoint_every, n_total, checkpoint_every))
    for end in sorted(m for m in meetings if m > start):
        warming = start < n_warmup
        dual_averaging = adaptation.dual_averaging if warming and kernel.adapt_step_size \
            else None
        if warming and per_chain:
            if state.rng is None:  # the chains' streams: the window ends draw from them too
                state = state._replace(rng=new_streams(n, state.position.device))
            # A window that ends where the chains met is ended by the hook too, at once
            # (the chains pause at 0), as where they did not: the same draws either way.
            first = 0 if adaptation.is_window_end(start) else \
                min(adaptation.next_boundary(start), end) - start
            state, _, _, _ = kernel.iterate(
                state, potential, step_size, metric, end - start, dual_averaging, advance,
                out=_recording(store.writer(start, n_warmup, thin), adaptation, start),
                target=torch.full((n,), first, device=state.position.device),
                at_target=_window_ends(adaptation, start, end, state.rng))
            step_size, metric = adaptation.reached(min(end, n_warmup), state, end_window=False)
        else:
            positions = state.position.new_empty((end - start, n, dim)) if warming else None
            state, _, _, _ = kernel.iterate(state, potential, step_size, metric, end - start,
                                            dual_averaging, advance,
                                            out=store.writer(start, n_warmup, thin, positions))
            if warming:
                step_size, metric = adaptation.update(start, positions, state)
        if start < n_warmup <= end:
            bar.set_description("sample")
        if progress:
            postfix["step_size"] = f"{float(step_size.mean()):.3g}"
            advance(0)
        if checkpoint is not None and (end % checkpoint_every == 0 or end == n_total):
            _save(checkpoint, made_for, probe, end, state, step_size, metric, adaptation, store,
                  n_warmup, thin)
        start = end
    bar.close()
    samples = potential.space.constrain(store.draws)  # each (chain, draw, ...)
    result = MCMCResult(samples=samples, stats=store.numpy(False),
                        warmup_stats=store.numpy(True), step_size=step_size,
                        inverse_mass_matrix=metric.inverse_mass, last_state=state,
                        potential=potential, kernel=kernel, thin=thin)
    return distributed.all_chains(result, everything)  # every chain, in chain order


def _recording(write, adaptation, start):
    """`write` (a store's writer), also handing each warm-up draw to `adaptation`."""
    def out(index, which, points, stats):
        write(index, which, points, stats)
        adaptation.record(index + start, which, points)
    return out


def _window_ends(adaptation, start, end, rng):
    """The hook of a segment start..end that starts in warm-up and runs each chain to its
    own next boundary (`inference.mcmc.batching.run_transitions`' `at_target`): at a window
    end the chain gets its new metric and step size (`WindowedAdaptation.end_window`, the
    search on the step's own gradient), at the end of warm-up its averaged step size, and
    stops adapting; then its next target. rng: the chains' random streams (the search's
    noise is a chain's own)."""
    adapting = torch.ones(len(rng), dtype=torch.bool, device=rng.device)

    def at_target(tree, iterations, target, value_and_grad):
        paused = (iterations >= target) & (target < end - start)
        metric, steps = adaptation.metric, tree.adaptation
        reached, target = start + target, target.clone()
        state = HMCState(tree.position, tree.log_prob, tree.grad, rng)
        for boundary in sorted(set(reached[paused].tolist())):
            chains = paused & (reached == boundary)
            if adaptation.is_window_end(boundary):
                metric, renewed = adaptation.end_window(
                    boundary, chains, state, metric,
                    steps if adaptation.adapt_step_size else None, value_and_grad)
                steps = steps if renewed is None else renewed
                target[chains] = min(adaptation.next_boundary(boundary), end) - start
            else:  # the end of warm-up
                if adaptation.adapt_step_size:
                    steps = select(chains, steps._replace(step_size=dual_averaging_final(steps)),
                                   steps)
                adapting[chains] = False
                target[chains] = end - start
        adaptation.metric = metric
        return Restart(paused, metric, steps, target,
                       adapting.clone() if adaptation.adapt_step_size else None)
    return at_target


class _Store:
    """The kept draws [n_chains, n_kept, D] (unconstrained) and per-transition statistics
    (name -> [n_chains, n_kept], and [n_chains, n_warmup] for warm-up), allocated once."""

    def __init__(self, n, n_warmup, n_kept, dim, dtype, device):
        self.draws = torch.empty((n, n_kept, dim), dtype=dtype, device=device)
        types = {"diverging": torch.bool, "tree_depth": torch.int64, "n_steps": torch.int64}
        self.stats = {warming: {name: torch.zeros((n, size), dtype=types.get(name, dtype),
                                                  device=device) for name in _STATS}
                      for warming, size in ((True, n_warmup), (False, n_kept))}
        self.divergences = torch.zeros((), dtype=torch.int64, device=device)

    def writer(self, start, n_warmup, thin, positions=None):
        """The `out` of `kernel.iterate` for iterations start, start + 1, ...: warm-up
        transitions go to the warm-up statistics and to `positions` [k, n, D] if given (for
        the adaptation; then all are warm-up ones), sampling ones to the draws, one every
        `thin`."""
        def put(warming, which, row, values):
            for name, table in self.stats[warming].items():
                table[which, row] = values[name].to(table.dtype)

        def write(index, which, points, stats):
            iteration = start + index
            if start < n_warmup:
                if positions is not None:
                    positions[index, which] = points
                warm = iteration < n_warmup  # (chains that go on past warm-up on their own)
                put(True, which[warm], iteration[warm], {k: v[warm] for k, v in stats.items()})
                if bool(warm.all()):
                    return
                index, which, points, iteration = index[~warm], which[~warm], points[~warm], \
                    iteration[~warm]
                stats = {k: v[~warm] for k, v in stats.items()}
            count = iteration - n_warmup + 1
            kept = count % thin == 0
            row, which = count[kept] // thin - 1, which[kept]
            self.draws[which, row] = points[kept].to(self.draws.dtype)
            put(False, which, row, {name: stats[name][kept] for name in _STATS})
            self.divergences += stats["diverging"][kept].sum()
        return write

    def state_dict(self, iteration, n_warmup, thin):
        """What is filled after `iteration` iterations, as contiguous copies."""
        kept = max(0, (iteration - n_warmup) // thin)
        warm = min(iteration, n_warmup)
        return {"draws": self.draws[:, :kept].clone(),
                "warmup_stats": {k: v[:, :warm].clone() for k, v in self.stats[True].items()},
                "stats": {k: v[:, :kept].clone() for k, v in self.stats[False].items()}}

    def load_state_dict(self, saved):
        kept = saved["draws"].shape[1]
        self.draws[:, :kept] = saved["draws"]
        for warming, key in ((True, "warmup_stats"), (False, "stats")):
            for name, value in saved[key].items():
                self.stats[warming][name][:, :value.shape[1]] = value
        self.divergences = self.stats[False]["diverging"].sum()

    def numpy(self, warming):
        return {k: v.cpu().numpy() for k, v in self.stats[warming].items()}


def _model_identity(meta_bn):
    """What names the model in a checkpoint's fingerprint (its data: `_probe_points`)."""
    if isinstance(meta_bn, torch.nn.Module):
        return {"module": type(meta_bn), "state": meta_bn.state_dict()}
    name = getattr(meta_bn, "__qualname__", None)
    return f"{meta_bn.__module__}.{name}" if name else repr(meta_bn)


def _fingerprint(kernel, meta_bn, observed, init, potential, seed, n_warmup, n_samples, thin):
    """What a checkpoint of this run is made for (see `inference.checkpoint.fingerprint`)."""
    def plain(value):
        value = getattr(value, "tensor", value)  # a StochasticTensor's value
        return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)

    space = potential.space
    latents = {name: {"shape": space.shapes[name], "support": str(potential.supports[name])}
               for name in space.names}
    settings = {k: v for k, v in vars(kernel).items()
                if not k.startswith("_") and (v is None or isinstance(v, (bool, int, float, str)))}
    return checkpoints.fingerprint(
        model=_model_identity(meta_bn),
        observed={k: plain(v) for k, v in (observed or {}).items()},
        latents=latents, dtype=potential.dtype, chain_shape=space.chain_shape,
        kernel={"type": type(kernel), **settings},
        init=None if init is None else {k: plain(v) for k, v in init.items()},
        seed=seed, n_warmup=n_warmup, n_samples=n_samples, thin=thin)


def _probe_points(n, dim, dtype, device):
    """Fixed unconstrained points [n, D] where a checkpoint records the log density, to tell
    a model whose code or baked-in data changed under the same names."""
    return torch.sin(torch.arange(n * dim, dtype=dtype, device=device)).reshape(n, dim)


def _save(path, made_for, probe, iteration, state, step_size, metric, adaptation, store,
          n_warmup, thin):
    payload = {"fingerprint": made_for, "probe": probe, "iteration": iteration,
               "position": state.position, "log_prob": state.log_prob, "grad": state.grad,
               "chain_rng": state.rng, "step_size": step_size,
               "inverse_mass": metric.inverse_mass, "adaptation": adaptation.state_dict(),
               **store.state_dict(iteration, n_warmup, thin), "rng": torch.get_rng_state()}
    checkpoints.save(path, payload)


def _resume(path, made_for, probe, adaptation, store):
    saved = checkpoints.load(path)
    checkpoints.check_fingerprint(path, saved.get("fingerprint"), made_for)
    if not torch.isclose(saved["probe"].to(probe), probe, rtol=1e-4, atol=1e-6,
                         equal_nan=True).all():
        raise checkpoints.CheckpointMismatchError(
            f"the checkpoint {os.fspath(path)} was made for another run: the model's log "
            f"density differs at the same points (its code or the data it holds changed). To "
            f"start fresh, delete {os.fspath(path)} or pass another checkpoint path")
    device = probe.device
    adaptation.load_state_dict(_to(saved["adaptation"], device))
    store.load_state_dict(_to({k: saved[k] for k in ("draws", "warmup_stats", "stats")}, device))
    torch.set_rng_state(saved["rng"])
    state = HMCState(*(_to(saved[k], device) for k in ("position", "log_prob", "grad",
                                                        "chain_rng")))
    return (saved["iteration"], state, saved["step_size"].to(device),
            make_metric(saved["inverse_mass"].to(device)))


def _to(value, device):
    """`value` (tensors in nested dicts) on `device`."""
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value.to(device) if isinstance(value, torch.Tensor) else value


class Summary(dict):
    """Rows `name[index]` -> dict of statistics; prints as a table, then the divergences.

    divergences: divergent transitions after warm-up per chain (a list), or None.
    """

    columns = ("mean", "sd", "5%", "50%", "95%", "mcse_mean", "mcse_sd", "ess_bulk",
               "ess_tail", "r_hat")
    divergences = None

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
        if self.divergences is not None:
            lines.append(f"divergences: {sum(self.divergences)} "
                         f"(per chain: {', '.join(map(str, self.divergences))})")
        return "\n".join(lines)

    __repr__ = __str__


def _quantities(samples):
    """(label `name[i,j]`, draws (chain, draw) numpy) for every scalar quantity, one at a
    time: a view of the kept draws on the CPU (no copy), so that checking a long run
    holds at most a few float64 copies of one quantity's draws (see `diagnostics`)."""
    for name, value in samples.items():
        shape = value.shape[2:]
        flat = value.detach().reshape(value.shape[:2] + (-1,))
        if flat.dtype not in (torch.float16, torch.float32, torch.float64):
            flat = flat.double()  # numpy has no bfloat16
        for i in range(flat.shape[2]):
            index = np.unravel_index(i, shape) if shape else ()
            label = name + (f"[{','.join(map(str, index))}]" if shape else "")
            yield name, label, flat[:, :, i].cpu().numpy()


def _count(values):
    return f"{len(values)} quantit{'y' if len(values) == 1 else 'ies'}"


def _worst(values, reverse, fmt, k=3):
    """The k worst (label, value) pairs, as text."""
    ranked = sorted(values, key=lambda item: item[1], reverse=reverse)[:k]
    return ", ".join(f"{label} {value:{fmt}}" for label, value in ranked)


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

    def problems(self):
        """What makes the draws unreliable, as sentences (empty if nothing was found).

        Divergent transitions after warm-up; split R-hat above 1.01 and bulk ESS
        below 100 per chain (Vehtari et al. 2021), naming the worst quantities;
        trees stopped at `max_tree_depth`; non-finite draws, and draws whose
        size runs away (beyond the square root of the dtype's largest value:
        an improper posterior, such as a flat prior the data do not bound), by
        latent; a non-finite log density at the last draws, by node.
        """
        found = []
        n_chains, n_draws = self.n_chains, self.n_draws
        diverging = self.num_divergences
        if diverging.sum():
            found.append(f"{int(diverging.sum())} of {diverging.size * n_draws} transitions "
                         f"after warm-up diverged (per chain: "
                         f"{', '.join(map(str, diverging.tolist()))}): the draws miss part of "
                         f"the posterior; raise target_acceptance_rate or reparameterize "
                         f"(e.g. non-centered)")
        depth = getattr(self.kernel, "max_tree_depth", None)
        if depth is not None and "tree_depth" in self.stats:
            capped = int((self.stats["tree_depth"] >= depth).sum())
            if capped:
                found.append(f"{capped} transitions stopped at max_tree_depth={depth} "
                             f"(trajectories cut short: raise max_tree_depth or "
                             f"reparameterize)")
        rhats, small, runaway, nonfinite = [], [], {}, {}
        for name, label, draws in _quantities(self.samples):
            finite = np.isfinite(draws)
            if not finite.all():
                nonfinite[name] = nonfinite.get(name, 0) + int((~finite).sum())
                continue
            size = float(max(draws.max(), -draws.min()))  # |draws|.max() without a copy
            limit = math.sqrt(torch.finfo(self.samples[name].dtype).max)
            if size > limit:
                runaway[name] = max(runaway.get(name, 0.), size)
            rhat, ess = diagnostics.split_rhat(draws), diagnostics.ess_bulk(draws)
            if rhat > MAX_RHAT:
                rhats.append((label, rhat))
            if ess < MIN_ESS_PER_CHAIN * n_chains:
                small.append((label, ess))
        for name, count in nonfinite.items():
            found.append(f"latent '{name}' has {count} non-finite draws")
        for name, size in runaway.items():
            found.append(f"latent '{name}' runs away (|draws| up to {size:.3g}): the posterior "
                         f"may be improper (a flat prior the data do not bound?)")
        if rhats:
            found.append(f"R-hat above {MAX_RHAT} for {_count(rhats)} (worst: "
                         f"{_worst(rhats, True, '.3f')}): the chains disagree; run longer")
        if small:
            found.append(f"bulk ESS below {MIN_ESS_PER_CHAIN} per chain "
                         f"({MIN_ESS_PER_CHAIN * n_chains} for {n_chains} chains) for "
                         f"{_count(small)} (worst: {_worst(small, False, '.0f')}): run longer")
        node = self._nonfinite_node()
        if node:
            found.append(node)
        return found

    def _nonfinite_node(self):
        """The log density at the last draws, if not finite: which node (a sentence), or ''."""
        log_prob = self.last_state.log_prob
        bad = ~torch.isfinite(log_prob)
        if not bool(bad.any()):
            return ""
        chains = torch.nonzero(bad).flatten().tolist()
        where = f"the log density is not finite at the last draws of chains {chains}"
        values = self.potential.constrain(self.last_state.position)
        try:
            bn = self.potential.log_joint.bn(values)
        except (ValueError, RuntimeError) as error:
            return f"{where} (the model raises there: {error})"
        if bn is None:
            return where
        nodes = [name for name, node in bn.stochastic_nodes.items()
                 if not bool(torch.isfinite(node.cond_log_p).all())]
        return f"{where}: node{'s' * (len(nodes) > 1)} {', '.join(map(repr, nodes))}" \
            if nodes else where

    def summary(self, names=None, prob=0.9):
        """Per scalar quantity: mean, sd, central `prob` quantiles, MCSEs, ESS, R-hat; the
        table's last line (and its `divergences`) gives the divergences per chain."""
        low, high = (1. - prob) / 2., (1. + prob) / 2.
        table = Summary()
        table.divergences = self.num_divergences.tolist()
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

