"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps (Neal 2011).

`hmc_kernel` is the pure transition; `HMC` is ZhuSuan's sampler object
(`hmc.sample(meta_bn, observed, latent)`), also usable with
`inference.mcmc.run`.
"""
import functools

import torch

from inference.mcmc.compile import shifted
from inference.mcmc.sampler import HamiltonianSampler
from inference.mcmc.state import HMCState, TransitionInfo

__all__ = ["hmc_kernel", "HMC"]


def hmc_step(value_and_grad, velocity_from, vectors, scalars, step, inverse_mass, moving):
    """One leapfrog step of every chain: a pure function of tensors (it can be compiled).

    vectors [n, 3, D]: position, momentum, grad; scalars [n, 2]: log_prob and
    whether the chain diverged (0/1); they come back updated. step [n, 1];
    inverse_mass: the metric's; moving [n] bool: chains still integrating (a
    chain with fewer leapfrog steps than the others stops early). A chain
    whose new point has a non-finite density is marked diverging and stays
    where it was, as do chains that diverged before.
    """
    position, momentum, grad = vectors.unbind(1)
    log_prob, diverging = scalars.unbind(1)
    half_step = 0.5 * step
    new_momentum = torch.addcmul(momentum, half_step, grad)
    new_position = torch.addcmul(position, step, velocity_from(inverse_mass, new_momentum))
    new_log_prob, new_grad = value_and_grad(new_position)
    new_momentum = torch.addcmul(new_momentum, half_step, new_grad)
    failed = moving & ~torch.isfinite(new_log_prob)
    move = moving & (diverging == 0) & ~failed
    move_column = move[:, None]
    vectors = torch.stack((torch.where(move_column, new_position, position),
                           torch.where(move_column, new_momentum, momentum),
                           torch.where(move_column, new_grad, grad)), 1)
    scalars = torch.stack((torch.where(move, new_log_prob, log_prob),
                           torch.where(failed, 1., diverging)), 1)
    return vectors, scalars


def hmc_kernel(state, potential, step_size, metric, n_leapfrogs, max_energy_error=1000.,
               step_fn=None):
    """One HMC transition of every chain (lock-step, per-chain step sizes).

    step_size: [n_chains]. n_leapfrogs: an int, or a long tensor [n_chains]
    (chains with fewer steps stop early and wait for the others). A chain whose
    trajectory reaches a non-finite density, or whose final energy error
    exceeds `max_energy_error`, is marked diverging and stays where it was.
    step_fn: `hmc_step` with (value_and_grad, velocity_from) bound, e.g.
    compiled (see `HMC`); by default the eager one on `potential`.
    Returns (state, TransitionInfo).
    """
    if step_fn is None:
        step_fn = functools.partial(hmc_step, potential, type(metric).velocity_from)
    n_chains = state.position.shape[0]
    momentum = init_momentum = metric.sample_momentum()
    orig_energy = -state.log_prob + metric.kinetic_energy(momentum)
    per_chain = isinstance(n_leapfrogs, torch.Tensor)
    n_max = int(n_leapfrogs.max()) if per_chain else int(n_leapfrogs)
    step_column = step_size[:, None]
    vectors = torch.stack((state.position, momentum, state.grad), 1)
    scalars = torch.stack((state.log_prob, torch.zeros_like(state.log_prob)), 1)
    moving = torch.ones(n_chains, dtype=torch.bool, device=state.position.device)
    for i in range(n_max):
        if per_chain:
            moving = i < n_leapfrogs
        vectors, scalars = step_fn(vectors, scalars, step_column, metric.inverse_mass, moving)
    position, momentum, grad = vectors.unbind(1)
    log_prob, diverging = scalars[:, 0], scalars[:, 1] > 0
    energy = -log_prob + metric.kinetic_energy(momentum)
    log_accept = orig_energy - energy
    diverging = diverging | ~(log_accept >= -max_energy_error)
    accept_prob = torch.where(diverging, torch.zeros_like(log_accept),
                              log_accept.clamp(max=0.).exp())
    accepted = torch.rand_like(accept_prob) < accept_prob
    accepted_column = accepted[:, None]
    new_state = HMCState(torch.where(accepted_column, position, state.position),
                         torch.where(accepted, log_prob, state.log_prob),
                         torch.where(accepted_column, grad, state.grad))
    steps = n_leapfrogs if per_chain else torch.full_like(state.log_prob, n_max,
                                                          dtype=torch.long)
    info = TransitionInfo(accept_prob=accept_prob, is_accepted=accepted, diverging=diverging,
                          energy=torch.where(accepted, energy, orig_energy),
                          orig_energy=orig_energy, n_steps=steps,
                          tree_depth=torch.zeros_like(steps), init_momentum=init_momentum)
    return new_state, info


class HMC(HamiltonianSampler):
    """Hamiltonian Monte Carlo with ZhuSuan's `zs.HMC` signature, chains batched.

        hmc = inference.HMC(step_size=0.1, n_leapfrogs=10, adapt_step_size=True)
        x = torch.zeros(n_chains, n_x)
        for it in range(n_iters):
            hmc.adapt_step_size = it < n_warmup      # ZhuSuan feeds this placeholder
            _, info = hmc.sample(model, observed, {"x": x})   # x holds the new sample
            kept.append(info.samples["x"])

    `.sample` returns (samples, info) and writes the samples into the
    caller's latent tensors, as ZhuSuan assigns its Variables
    (`inference.write_back`; `latent, info = hmc.sample(model, observed,
    latent)` works too). info: ZhuSuan's `HMCInfo` fields (samples,
    acceptance_rate, updated_step_size, orig_hamiltonian, hamiltonian,
    orig_log_prob, log_prob) and more (see `inference.mcmc.sampler.HMCInfo`).
    Every chain (the leading axes of the latents, i.e. the shape of the log
    joint) has its own step size, momentum, acceptance and adaptation.

    ZhuSuan's arguments, in its order:

    step_size: initial step size (the start of the heuristic search when adapting).
    n_leapfrogs: leapfrog steps per transition.
    adapt_step_size: None/False (off) or True: dual averaging (Hoffman & Gelman
        2014) towards `target_acceptance_rate` with `gamma`, `t0`, `kappa`.
    adapt_mass: None/False, True or 'diag', or 'dense'. In `.sample()`, the mass
        follows ZhuSuan: an exponential moving variance (decay `mass_decay`) used
        from iteration `mass_collect_iters` on; `inference.mcmc.run` uses Stan's
        windowed warm-up instead.

    Keyword only (this library's):
    trajectory_length: instead of `n_leapfrogs`, each chain takes
        ceil(trajectory_length / its step size) steps (at most `max_leapfrogs`).
    jitter: each transition multiplies every chain's step size by a uniform
        factor in [1 - jitter, 1 + jitter] (the number of steps is set from the
        unjittered one), so the trajectory length varies: with a fixed length,
        HMC can return to where it started on near-Gaussian targets (Neal 2011,
        sec. 5.4.5). 0 (the default) keeps ZhuSuan's behaviour.
    max_energy_error: energy error above which a transition counts as divergent.
    jit_compile: compile the leapfrog step (model gradient included) into one
        native function at the first transition (`inference.mcmc.compile`).
    """

    def __init__(self, step_size=1., n_leapfrogs=10, adapt_step_size=None,
                 target_acceptance_rate=0.8, gamma=0.05, t0=100, kappa=0.75, adapt_mass=None,
                 mass_collect_iters=10, mass_decay=0.99, *, trajectory_length=None, jitter=0.,
                 max_leapfrogs=1000, max_energy_error=1000., jit_compile=False):
        super().__init__(step_size=step_size, adapt_step_size=adapt_step_size,
                         target_acceptance_rate=target_acceptance_rate, gamma=gamma, t0=t0,
                         kappa=kappa, adapt_mass=adapt_mass,
                         mass_collect_iters=mass_collect_iters, mass_decay=mass_decay,
                         max_energy_error=max_energy_error, jit_compile=jit_compile)
        if trajectory_length is None:
            if not isinstance(n_leapfrogs, int) or isinstance(n_leapfrogs, bool) \
                    or n_leapfrogs < 1:
                raise ValueError(f"HMC: `n_leapfrogs` must be a positive int, got "
                                 f"{n_leapfrogs!r}")
        elif not trajectory_length > 0:
            raise ValueError(f"HMC: `trajectory_length` must be positive, got "
                             f"{trajectory_length!r}")
        self.n_leapfrogs = n_leapfrogs
        if not 0. <= jitter < 1.:
            raise ValueError(f"HMC: `jitter` must be in [0, 1), got {jitter!r}")
        self.trajectory_length = trajectory_length
        self.jitter = jitter
        self.max_leapfrogs = int(max_leapfrogs)

    def transition(self, state, potential, step_size, metric):
        if self.trajectory_length is None:
            n_leapfrogs = self.n_leapfrogs
        else:
            n_leapfrogs = torch.ceil(self.trajectory_length / step_size).long()
            n_leapfrogs = n_leapfrogs.clamp(1, self.max_leapfrogs)
        if self.jitter:
            step_size = step_size * (1. + self.jitter * (2. * torch.rand_like(step_size) - 1.))
        velocity_from = type(metric).velocity_from
        step_fn = self._step_function(
            "leapfrog", potential, metric,
            lambda value_and_grad: functools.partial(hmc_step, value_and_grad, velocity_from),
            shifted(0))
        return hmc_kernel(state, potential, step_size, metric, n_leapfrogs,
                          self.max_energy_error, step_fn)

    def __repr__(self):
        steps = (f"n_leapfrogs={self.n_leapfrogs}" if self.trajectory_length is None
                 else f"trajectory_length={self.trajectory_length}")
        jit = ", jit_compile=True" if self.jit_compile else ""
        return (f"HMC({steps}, adapt_step_size={self.adapt_step_size}, "
                f"adapt_mass={self.adapt_mass!r}{jit})")

