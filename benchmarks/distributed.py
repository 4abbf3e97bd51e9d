"""Scale-out on torch.distributed (gloo, CPU): throughput with 1 and 2 processes.

    python -m benchmarks.distributed            # the numbers in results/distributed.json
    python -m benchmarks.distributed --quick    # a few seconds of each (also under CI=true)

- VAE: images per second of `inference.Trainer.step` on ZhuSuan's MNIST VAE
  (`models.latent.vae`, 784-500-500, z=40, SGVB), global batch 256 of
  synthetic binary images; with W processes each steps on 256/W rows and the
  gradients are averaged (`inference.distributed`).
- NUTS: kept draws per second of `inference.mcmc.run` (eager), Bayesian
  logistic regression on the breast cancer data (31 coefficients), 8 chains,
  60 warm-up and 60 kept iterations (warm-up included in the time); with W
  processes each runs 8/W chains.
- Efficiency: throughput with 2 processes / (2 x throughput with 1); and per
  CPU second (all processes' CPU time): throughput per CPU second with 2
  processes / with 1, the share of the work that is not overhead, which a
  busy machine does not blur as much as the wall-clock ratio.
- Communication share: seconds in collectives per step over seconds per step.
  VAE: the Trainer's collectives for one step (the batch check, the cost
  reduce, the gradient all-reduce) timed on their own, on the same tensors,
  after the timed steps. NUTS: the gather of the chains over the run's time.

Each process runs one torch thread. The baseline (1 process) is measured in
the same run, just before. The machine has 2 cores shared with other jobs
(other helpers ran tests and benchmarks meanwhile): 2 processes on 2 busy
cores cannot show the speed-up of 2 idle ones, so the wall-clock efficiency
measured here is a lower bound; the CPU efficiency and the communication
share are the steadier numbers.
"""
import argparse
import dataclasses
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks._report import RESULTS, is_quick, write_report

NAME = "distributed"
VAE_BATCH, N_CHAINS = 256, 8


def _vae(n_steps, warmup):
    """(seconds per step, seconds in collectives per step, CPU seconds per step of all
    processes together) of the Trainer on the VAE."""
    import inference
    from inference import distributed
    from models.latent import vae
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((VAE_BATCH, 784), 0.13))
    step_fn = vae.elbo_step(vae.build_gen, vae.build_q_net, 40)
    trainer = inference.Trainer({"model": vae.build_gen, "guide": vae.build_q_net},
                                lambda params: torch.optim.Adam(params, lr=1e-3),
                                progress=False)
    for _ in range(warmup):
        trainer.step(step_fn, x)
    times, cpu = [], 0.
    for _ in range(n_steps):
        _barrier()
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.step(step_fn, x)
        times.append(time.perf_counter() - started)
        cpu += time.process_time() - cpu_started
    communication = []
    params = trainer.parameters()
    for _ in range(n_steps):
        _barrier()
        started = time.perf_counter()
        _, share = distributed.shard_with_share(x)
        distributed.mean_over_ranks((1., 1.), share)
        distributed.average_gradients(params, share)
        communication.append(time.perf_counter() - started)
    return statistics.median(times), statistics.median(communication), \
        _summed(cpu) / n_steps


def _nuts(n_warmup, n_samples):
    """(seconds for the run, seconds to gather the chains, CPU seconds of all processes
    together) of NUTS on 8 chains."""
    import inference
    from benchmarks.hmc_blr import breast_cancer, ppl_model
    from inference import distributed
    from inference.mcmc import HMCState
    x, y = map(torch.from_numpy, breast_cancer())
    model = ppl_model()(x)
    _barrier()
    started, cpu_started = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():  # short chains: R-hat and ESS are not the point here
        warnings.simplefilter("ignore", inference.mcmc.SamplingWarning)
        result = inference.mcmc.run(inference.NUTS(jit_compile=False), model, {"y": y},
                                    n_chains=N_CHAINS, n_warmup=n_warmup,
                                    n_samples=n_samples, progress=False, seed=0)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    gather = 0.
    if distributed.is_active():  # the run's gather of the chains, again, timed on its own
        block = torch.tensor_split(torch.arange(N_CHAINS),
                                   distributed.world_size())[distributed.rank()]
        state = result.last_state
        mine = dataclasses.replace(
            result, samples={k: v[block] for k, v in result.samples.items()},
            stats={k: v[block.numpy()] for k, v in result.stats.items()},
            warmup_stats={k: v[block.numpy()] for k, v in result.warmup_stats.items()},
            step_size=result.step_size[block],
            inverse_mass_matrix=result.inverse_mass_matrix[block],
            last_state=HMCState(state.position[block], state.log_prob[block],
                                state.grad[block], state.rng[block]))
        _barrier()
        started = time.perf_counter()
        distributed.all_chains(mine, result.potential)
        gather = time.perf_counter() - started
    return wall, gather, _summed(cpu)


def _summed(seconds):
    """The sum over processes of each one's `seconds`."""
    from inference import distributed
    if not distributed.is_active():
        return seconds
    import torch.distributed as dist
    total = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total)


def _barrier():
    from inference import distributed
    if distributed.is_active():
        import torch.distributed as dist
        dist.barrier()


def _worker(rank, world, port, out, settings):
    """One process: launch variables as torchrun sets them (none for one process)."""
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    vae_step, vae_comm, vae_cpu = _vae(settings["steps"], settings["warmup"])
    nuts_wall, nuts_gather, nuts_cpu = _nuts(settings["n_warmup"], settings["n_samples"])
    if rank == 0:
        torch.save({"vae_step_s": vae_step, "vae_comm_s": vae_comm, "vae_cpu_s": vae_cpu,
                    "nuts_wall_s": nuts_wall, "nuts_gather_s": nuts_gather,
                    "nuts_cpu_s": nuts_cpu}, Path(out) / f"world{world}.pt")


def measure(world, settings):
    """Rank 0's timings with `world` processes (spawned: each imports afresh)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker, args=(r, world, port, out, settings))
                     for r in range(world)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        if any(p.exitcode for p in processes):
            raise RuntimeError(f"a process failed with {world} processes: exit codes "
                               f"{[p.exitcode for p in processes]}")
        return torch.load(Path(out) / f"world{world}.pt", weights_only=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    settings = ({"steps": 5, "warmup": 2, "n_warmup": 20, "n_samples": 20} if quick else
                {"steps": 20, "warmup": 3, "n_warmup": 60, "n_samples": 60})
    load = os.getloadavg()[0]
    runs = {world: measure(world, settings) for world in (1, 2)}
    rows = []
    for world, run in runs.items():
        images = VAE_BATCH / run["vae_step_s"]
        draws = N_CHAINS * settings["n_samples"] / run["nuts_wall_s"]
        rows.append({"case": f"{world} process{'es' * (world > 1)}", "processes": world,
                     "vae_images_per_s": images, "vae_step_s": run["vae_step_s"],
                     "vae_communication_s": run["vae_comm_s"],
                     "vae_communication_share": run["vae_comm_s"] / run["vae_step_s"],
                     "vae_images_per_cpu_s": VAE_BATCH / run["vae_cpu_s"],
                     "nuts_draws_per_s": draws, "nuts_wall_s": run["nuts_wall_s"],
                     "nuts_draws_per_cpu_s": N_CHAINS * settings["n_samples"]
                     / run["nuts_cpu_s"],
                     "nuts_communication_share": run["nuts_gather_s"] / run["nuts_wall_s"]})
    one, two = rows
    efficiency = {"vae": two["vae_images_per_s"] / (2 * one["vae_images_per_s"]),
                  "nuts": two["nuts_draws_per_s"] / (2 * one["nuts_draws_per_s"]),
                  "vae_cpu": two["vae_images_per_cpu_s"] / one["vae_images_per_cpu_s"],
                  "nuts_cpu": two["nuts_draws_per_cpu_s"] / one["nuts_draws_per_cpu_s"]}
    print(f"{'':12} {'VAE images/s':>13} {'comm share':>11} {'NUTS draws/s':>13} "
          f"{'comm share':>11}")
    for row in rows:
        print(f"{row['case']:12} {row['vae_images_per_s']:13.1f} "
              f"{row['vae_communication_share']:11.3f} {row['nuts_draws_per_s']:13.1f} "
              f"{row['nuts_communication_share']:11.4f}")
    print(f"efficiency (2 processes / 2 x 1 process): VAE {efficiency['vae']:.2f}, "
          f"NUTS {efficiency['nuts']:.2f}; per CPU second (2 processes / 1): VAE "
          f"{efficiency['vae_cpu']:.2f}, NUTS {efficiency['nuts_cpu']:.2f}")
    write_report(NAME, __doc__, argv if argv is not None else sys.argv[1:], rows, args.out,
                 quick, threads=1, efficiency=efficiency, settings=settings,
                 machine=f"{os.cpu_count()} cores shared with other jobs (other helpers' tests "
                         f"and benchmarks): load average {load:.1f} at the start, "
                         f"{os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
