"""Resident memory over 2000 VAE training steps: `ppl` + `inference.Trainer` vs plain PyTorch.

    python -m benchmarks.vae_memory                # 2000 steps each
    python -m benchmarks.vae_memory --quick        # 300 steps (also under CI=true)

A leak (a graph, a tensor or a log entry kept per step) shows as resident
memory (RSS) growing with the step count. Each implementation runs in a
fresh process (so their memory does not mix) and records its RSS, read from
/proc/self/statm (psutil elsewhere), every 50 steps:

- ours: `models.latent.vae` templates and `inference.elbo(...).sgvb()` trained by
  `inference.Trainer.fit`; ours, traced: the same with `trace=True` (the
  path `python -m models.latent.vae` takes: recorded steps, replayed);
- baseline: the same network hand-written in PyTorch (`PlainVAE`), plain
  Adam loop.

Net: 64-500-500 with z=40 on batches of 64 binarized digits (the 500-unit
layers make a leaked activation show: 128 KB per step). Reported per
implementation: RSS after the first 10% of steps (warm-up) and at the end,
and the least-squares slope after warm-up in KB per 1000 steps; the row's
ratio compares final RSS (ours / baseline). Two rows: the RSS as the
process sees it, and the live RSS, read after a full `gc.collect()` and
glibc's `malloc_trim` (separate runs): memory held by reference cycles
waiting for Python's cyclic collector shows in the first, not the second.
"""
import argparse
import ctypes
import gc
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._report import is_quick, write_report
from benchmarks.vae_step import PlainVAE

NAME = "vae_memory"
RESULTS = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
KINDS = ("plain", "ours", "ours, traced")
HIDDEN, Z_DIM, BATCH, EVERY = (500, 500), 40, 64, 50


def rss_bytes(collect=False):
    """This process's resident set size, in bytes; after a full garbage collection
    and glibc's malloc_trim (memory freed but not yet returned) when `collect`."""
    if collect:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil
        return psutil.Process().memory_info().rss


def worker(kind, n_steps, threads, collect):
    """Train `kind` (one of KINDS) for `n_steps`; returns [(step, rss bytes)], seconds."""
    import inference
    from models.latent import vae
    from models.data import BinarizedBatches, load_binary_images
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = load_binary_images("digits", seed=0)
    batches = BinarizedBatches(data.train, BATCH, seed=0)
    n_epochs = -(-n_steps // len(batches))
    samples = []
    started = time.perf_counter()
    if kind in ("ours", "ours, traced"):
        gen, q_net = vae.new_templates()
        count = [0]

        def measured(iterator):  # RSS every EVERY steps, read as the next batch is asked for
            for x in iterator:
                yield x
                count[0] += 1
                if count[0] % EVERY == 0:
                    samples.append((count[0], rss_bytes(collect)))
        trainer = inference.Trainer({"model": gen, "guide": q_net},
                                    lambda params: torch.optim.Adam(params, lr=1e-3),
                                    progress=False, trace=kind == "ours, traced")
        trainer.fit(vae.elbo_step(gen, q_net, Z_DIM, hidden=HIDDEN),
                    lambda epoch: measured(_take(batches(epoch),
                                                 n_steps - epoch * len(batches))),
                    n_epochs=n_epochs)
    else:
        model = PlainVAE(data.x_dim, Z_DIM, HIDDEN)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        done = 0
        for epoch in range(n_epochs):
            for x in _take(batches(epoch), n_steps - done):
                cost = -model.elbo(x).mean()
                optimizer.zero_grad(set_to_none=True)
                cost.backward()
                optimizer.step()
                done += 1
                if done % EVERY == 0:
                    samples.append((done, rss_bytes(collect)))
    return samples, time.perf_counter() - started


def _take(iterator, n):
    for i, item in enumerate(iterator):
        if i >= n:
            return
        yield item


def summarize(samples, n_steps):
    steps = np.array([s for s, _ in samples], dtype=float)
    rss = np.array([r for _, r in samples], dtype=float) / 1024
    keep = steps > 0.1 * n_steps
    slope = np.polyfit(steps[keep], rss[keep], 1)[0] * 1000  # KB per 1000 steps
    return {"first_kb": float(rss[keep][0]), "last_kb": float(rss[-1]),
            "growth_kb": float(rss[-1] - rss[keep][0]), "slope_kb_per_1000_steps": float(slope),
            "samples": [[int(s), int(r)] for s, r in zip(steps, rss)]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="300 steps (also when CI=true)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    n_steps = 300 if quick else args.steps
    context = multiprocessing.get_context("spawn")
    rows = []
    for collect in (False, True):
        results = {}
        for kind in KINDS:
            with context.Pool(1) as pool:
                samples, seconds = pool.apply(worker, (kind, n_steps, args.threads, collect))
            results[kind] = {**summarize(samples, n_steps), "seconds": seconds}
        plain = results["plain"]
        what = "live RSS (after gc.collect + malloc_trim)" if collect else "RSS"
        for kind in KINDS[1:]:
            ours = results[kind]
            rows.append({"case": f"{what} over {n_steps} VAE steps (64-500-500, z=40, "
                                 f"batch {BATCH}): {kind}",
                         "baseline": "plain torch", "baseline_kb": plain["last_kb"],
                         "ours_kb": ours["last_kb"], "ratio": ours["last_kb"] / plain["last_kb"],
                         "ours": ours, "plain": plain})
        print(f"\n{what:44s} {'at 10% (KB)':>12s} {'at end (KB)':>12s} {'growth (KB)':>12s} "
              f"{'slope (KB/1000 steps)':>22s}")
        for kind in KINDS:
            r = results[kind]
            print(f"{kind:44s} {r['first_kb']:12.0f} {r['last_kb']:12.0f} {r['growth_kb']:12.0f} "
                  f"{r['slope_kb_per_1000_steps']:22.1f}")
    return write_report(NAME, __doc__, argv, rows, args.out, quick, threads=args.threads)


if __name__ == "__main__":
    main()
