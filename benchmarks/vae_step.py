"""Seconds per VAE training step: `ppl` + `inference.elbo` vs plain PyTorch vs Pyro.

    python -m benchmarks.vae_step                 # both nets, 15 interleaved repeats
    python -m benchmarks.vae_step --quick         # a few seconds (also under CI=true)
    python -m benchmarks.vae_step --profile       # cProfile of the ppl step, small net

One training step = forward (guide, one reparameterized sample, model, the
ELBO), backward, and an Adam update, on the same binarized batch, for:

- ours: ZhuSuan's VAE written with `ppl` templates (`models.latent.vae.build_gen` /
  `build_q_net`), `inference.elbo(...).sgvb()`, a torch Adam step;
- ours + Trainer: the same step through `inference.Trainer.step` (adds its
  NaN guard on the cost and the gradients);
- ours, traced / ours + Trainer(trace=True): the same, with the step recorded
  once and replayed (`inference.TracedStep`, as Pyro's JitTrace_ELBO): the
  model and guide programs no longer run in Python on every step; the
  operations, autograd and Adam are the same as eager;
- baseline, plain torch: the same networks, estimator and Adam hand-written
  in PyTorch (`PlainVAE`: log N, log Bernoulli as closed-form expressions);
- baseline, Pyro: `pyro.infer.SVI` with `Trace_ELBO` and `pyro.optim.Adam`,
  same networks (Pyro's default settings, validation included).

Fair: same layer sizes and initialization scheme, same batch, dtype
(float32) and thread count; implementations are timed in interleaved,
rotated repeats (each repeat times `steps` consecutive steps after a
warm-up) and the median per-step time is reported with its range; on a
machine shared with other jobs the ratio of the fastest repeats
("ratio of minima") is the steadier estimate of the intrinsic cost. Nets:
784-500-500 with z=40 and batches of 128 (ZhuSuan's MNIST VAE), and a small
64-64 net with z=8 and batches of 64 (the language's overhead dominates).
"""
import argparse
import cProfile
import io
import math
import pstats
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import inference
from benchmarks._report import is_quick, write_report
from models.latent import vae
from models.data import load_binary_images

NAME = "vae_step"
RESULTS = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
NETS = {  # name: (x_dim, hidden, z_dim, batch_size, data set)
    "784-500-500 z=40 batch 128": (784, (500, 500), 40, 128, "mnist"),
    "64-64 z=8 batch 64": (64, (64,), 8, 64, "digits"),
}
_LOG_2PI = math.log(2 * math.pi)


class PlainVAE(nn.Module):
    """The VAE of `models.latent.vae` hand-written in PyTorch (the baseline)."""

    def __init__(self, x_dim, z_dim, hidden):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = vae.mlp(x_dim, hidden)
        self.z_mean = nn.Linear(hidden[-1], z_dim)
        self.z_logstd = nn.Linear(hidden[-1], z_dim)
        self.decoder = vae.mlp(z_dim, hidden)
        self.x_logits = nn.Linear(hidden[-1], x_dim)

    def log_weights(self, x, n_particles=1):
        """log p(x, z) - log q(z | x) for z ~ q(z | x): [n_particles, n]."""
        h = self.encoder(x)
        mean, logstd = self.z_mean(h), self.z_logstd(h)
        eps = torch.randn((n_particles,) + mean.shape, dtype=x.dtype)
        z = mean + eps * logstd.exp()
        log_q = (-0.5 * eps ** 2 - logstd - 0.5 * _LOG_2PI).sum(-1)
        log_pz = (-0.5 * z ** 2 - 0.5 * _LOG_2PI).sum(-1)
        logits = self.x_logits(self.decoder(z))
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)
        return log_pz + log_px - log_q

    def elbo(self, x, n_particles=1):
        return self.log_weights(x, n_particles).mean(0)

    def iw_bound(self, x, n_particles):
        return torch.logsumexp(self.log_weights(x, n_particles), 0) - math.log(n_particles)

    @torch.no_grad()
    def is_loglikelihood(self, x, n_samples=1000, chunk=100):
        """log p(x) by importance sampling with q, in chunks of samples: [n]."""
        parts = [self.log_weights(x, min(chunk, n_samples - start))
                 for start in range(0, n_samples, chunk)]
        return torch.logsumexp(torch.cat(parts), 0) - math.log(n_samples)


def ppl_step(x, hidden, z_dim, trainer=False, trace=False):
    gen, q_net = vae.new_templates()
    step_fn = vae.elbo_step(gen, q_net, z_dim, hidden=hidden)
    if trainer:
        runner = inference.Trainer({"model": gen, "guide": q_net},
                                   lambda params: torch.optim.Adam(params, lr=1e-3),
                                   progress=False, trace=trace)
        return lambda: runner.step(step_fn, x)
    if trace:
        step_fn = inference.TracedStep(step_fn, {"model": gen, "guide": q_net})
    step_fn(x)  # the templates create their layers on the first call
    optimizer = torch.optim.Adam(list(gen.parameters()) + list(q_net.parameters()), lr=1e-3)

    def step():
        cost, _ = step_fn(x)
        optimizer.zero_grad(set_to_none=True)
        cost.backward()
        optimizer.step()
    return step


def plain_step(x, hidden, z_dim):
    model = PlainVAE(x.shape[1], z_dim, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        cost = -model.elbo(x).mean()
        optimizer.zero_grad(set_to_none=True)
        cost.backward()
        optimizer.step()
    return step


def pyro_step(x, hidden, z_dim):
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    pyro.clear_param_store()
    net = PlainVAE(x.shape[1], z_dim, hidden)
    n = x.shape[0]

    def model(x):
        pyro.module("decoder", net.decoder)
        pyro.module("x_logits", net.x_logits)
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(x.new_zeros(n, z_dim), 1.).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=net.x_logits(net.decoder(z))).to_event(1),
                        obs=x)

    def guide(x):
        for name in ("encoder", "z_mean", "z_logstd"):
            pyro.module(name, getattr(net, name))
        with pyro.plate("data", n):
            h = net.encoder(x)
            pyro.sample("z", dist.Normal(net.z_mean(h), net.z_logstd(h).exp()).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss=Trace_ELBO())
    return lambda: svi.step(x)


def batch_of(data_name, batch_size, seed=0):
    """A binarized batch of real images (digits, or MNIST when present)."""
    data = load_binary_images(data_name, seed=seed)
    return torch.from_numpy(data.test[:batch_size])


def median_step_seconds(steps, n_steps, repeats, warmup=5):
    """name -> (median, min, max) seconds per step over interleaved, rotated repeats."""
    for step in steps.values():
        for _ in range(warmup):  # traced steps record on their 2nd and 3rd calls, then replay
            step()
    names = list(steps)
    times = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            started = time.perf_counter()
            for _ in range(n_steps):
                steps[name]()
            times[name].append((time.perf_counter() - started) / n_steps)
    return {name: (statistics.median(t), min(t), max(t)) for name, t in times.items()}


def measure(net, n_steps, repeats):
    x_dim, hidden, z_dim, batch_size, data_name = NETS[net]
    try:
        x = batch_of(data_name, batch_size)
        data_used = data_name
    except FileNotFoundError as err:
        print(f"({net}: {err}; using Bernoulli(0.13) noise images instead)")
        x = torch.bernoulli(torch.full((batch_size, x_dim), 0.13))
        data_used = "noise"
    torch.manual_seed(0)
    steps = {"plain torch": plain_step(x, hidden, z_dim),
             "ours": ppl_step(x, hidden, z_dim),
             "ours + Trainer": ppl_step(x, hidden, z_dim, trainer=True),
             "ours, traced": ppl_step(x, hidden, z_dim, trace=True),
             "ours + Trainer(trace=True)": ppl_step(x, hidden, z_dim, trainer=True, trace=True)}
    pyro_error = None
    try:
        steps["pyro"] = pyro_step(x, hidden, z_dim)
    except ImportError as err:
        pyro_error = f"pyro missing: {err}"
        print(pyro_error)
    result = median_step_seconds(steps, n_steps, repeats)
    rows = []
    for ours, baseline in [("ours", "plain torch"), ("ours + Trainer", "plain torch"),
                           ("ours, traced", "plain torch"),
                           ("ours + Trainer(trace=True)", "plain torch"), ("ours", "pyro"),
                           ("ours, traced", "pyro")]:
        if baseline not in result:
            rows.append({"case": f"{net}: {ours}", "baseline": baseline, "missing": pyro_error})
            continue
        rows.append({"case": f"{net}: {ours}", "baseline": baseline,
                     "baseline_s": result[baseline][0], "ours_s": result[ours][0],
                     "ratio": result[ours][0] / result[baseline][0],
                     "ratio_of_minima": result[ours][1] / result[baseline][1], "repeats": repeats,
                     "steps_per_repeat": n_steps, "data": data_used,
                     "baseline_range_s": result[baseline][1:], "ours_range_s": result[ours][1:]})
    return rows


def profile(net, n_steps):
    """Print where the time of the ppl step goes (cProfile, sorted by own time)."""
    x_dim, hidden, z_dim, batch_size, data_name = NETS[net]
    x = batch_of("digits", batch_size) if x_dim == 64 else \
        torch.bernoulli(torch.full((batch_size, x_dim), 0.13))
    step = ppl_step(x, hidden, z_dim)
    for _ in range(5):
        step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n_steps):
        step()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
    print(out.getvalue())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="3 repeats of a few steps (also when CI=true)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the ppl step on the small net instead")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.profile:
        profile("64-64 z=8 batch 64", 300)
        return None
    quick = is_quick(args.quick)
    repeats = 3 if quick else args.repeats
    rows = []
    for net, n_steps in zip(NETS, (2, 10) if quick else (10, 50)):
        rows += measure(net, n_steps, repeats)

    print(f"\n{'case':54s} {'baseline':>12s} {'base ms':>9s} {'ours ms':>9s} {'ratio':>6s} "
          f"{'ratio of minima':>16s}")
    for row in rows:
        if "missing" in row:
            print(f"{row['case']:54s} {row['baseline']:>12s} {row['missing']}")
            continue
        print(f"{row['case']:54s} {row['baseline']:>12s} {1e3 * row['baseline_s']:9.2f} "
              f"{1e3 * row['ours_s']:9.2f} {row['ratio']:6.2f} {row['ratio_of_minima']:16.2f}")
    return write_report(NAME, __doc__, argv, rows, args.out, quick)


if __name__ == "__main__":
    main()
