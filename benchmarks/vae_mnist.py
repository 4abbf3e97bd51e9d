"""Test log-likelihood of the VAE (and IWAE, k=50) on MNIST: `ppl` vs plain PyTorch.

    python -m benchmarks.vae_mnist                 # VAE 5 epochs, IWAE 100 steps (~15 min)
    python -m benchmarks.vae_mnist --epochs 20 --test-size 10000
    python -m benchmarks.vae_mnist --quick         # a minute (also under CI=true)

ZhuSuan's VAE (784-500-500, z=40, Bernoulli pixels, Adam 1e-3, batches of
128) on dynamically binarized MNIST (60,000 training images binarized afresh
each epoch; the test images binarized once, seed 1234), trained twice:

- ours: `models.latent.vae` templates, `inference.elbo(...).sgvb()`, `inference.Trainer`;
- baseline: the same network hand-written in PyTorch (`PlainVAE` of
  `benchmarks.vae_step`) with a plain Adam loop.

Same seed and schedule, literally: the baseline starts from a copy of our
initial weights, both see the same batches, and both draw their
reparameterization noise from the same torch generator in the same order,
so the two runs differ only by floating-point rounding (different but
equivalent formulas), which grows slowly over training. Reported: the test
log-likelihood by importance sampling with the guide as proposal (1000
samples per image, on the first `--test-size` test images), the test ELBO,
the paired difference with its standard error over images, and wall time.
The paired standard error only covers the test images and the importance
samples, not training: how far two equally good runs land apart is shown
by a third run, the plain model from another seed ("another seed" line),
the yardstick for "equal within noise". The IWAE row does the same with
the k=50 importance weighted bound for a fixed number of steps
(`--iwae-steps`), without the third run. Published references after
thousands of epochs: VAE about -86.8 nats, IWAE (k=50) about -84.8
(Burda et al. 2016, table 1, one stochastic layer: -86.76 / -84.78).
"""
import argparse
import math
import statistics
import time
from pathlib import Path

import torch

import inference
from benchmarks._report import is_quick, write_report
from benchmarks.vae_step import PlainVAE
from models import experiment
from models.data import BinarizedBatches, iterate_batches, load_binary_images
from models.latent import iwae, vae

NAME = "vae_mnist"
RESULTS = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
PUBLISHED = {"vae": -86.76, "iwae": -84.78}
HIDDEN, Z_DIM, BATCH, SEED = (500, 500), 40, 128, 1234


def matched_pair(objective, x_dim, k):
    """Our templates and a `PlainVAE` with the same initial weights."""
    torch.manual_seed(SEED)
    gen, q_net = vae.new_templates() if objective == "vae" else iwae.new_templates()
    plain = PlainVAE(x_dim, Z_DIM, HIDDEN)
    probe = torch.zeros(2, x_dim)
    gen(x_dim, Z_DIM, 2, 1, hidden=HIDDEN).observe(x=probe)  # create the layers
    q_net(probe, Z_DIM, 1, hidden=HIDDEN)
    for template in (gen, q_net):
        for name, layer in template.layers.items():
            layer.load_state_dict(getattr(plain, name).state_dict())
    step = (vae.elbo_step(gen, q_net, Z_DIM, hidden=HIDDEN) if objective == "vae"
            else iwae.iw_step(gen, q_net, Z_DIM, n_particles=k, hidden=HIDDEN))
    return gen, q_net, step, plain


def train_ours(gen, q_net, step, batches, n_epochs):
    torch.manual_seed(SEED)
    trainer = inference.Trainer({"model": gen, "guide": q_net},
                                lambda params: torch.optim.Adam(params, lr=1e-3),
                                progress=True)
    started = time.perf_counter()
    history = trainer.fit(step, batches, n_epochs=n_epochs)
    return history, time.perf_counter() - started


def train_plain(plain, objective, k, batches, n_epochs, seed=SEED):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(plain.parameters(), lr=1e-3)
    history = []
    started = time.perf_counter()
    for epoch in range(n_epochs):
        bounds = []
        for x in batches(epoch):
            bound = plain.elbo(x) if objective == "vae" else plain.iw_bound(x, k)
            optimizer.zero_grad(set_to_none=True)
            (-bound.mean()).backward()
            optimizer.step()
            bounds.append(float(bound.detach().mean()))
        history.append(statistics.fmean(bounds))
    return history, time.perf_counter() - started


def evaluate(test, ours, plains, iw_samples):
    """Per-image test log-likelihoods and ELBOs of ours and of each plain model."""
    gen, q_net = ours
    model = experiment.zhusuan_model(gen, q_net, test.shape[1], Z_DIM, step=None)
    torch.manual_seed(SEED + 1)
    out = {"ours_ll": [], "ours_elbo": []}
    for name in plains:
        out[f"{name}_ll"], out[f"{name}_elbo"] = [], []
    with torch.no_grad():
        for x in iterate_batches(test, 100):
            out["ours_ll"].append(experiment.is_loglikelihood(model, x, iw_samples))
            out["ours_elbo"].append(experiment.lower_bound(model, x).tensor)
            for name, plain in plains.items():
                out[f"{name}_ll"].append(plain.is_loglikelihood(x, iw_samples))
                out[f"{name}_elbo"].append(plain.elbo(x))
    return {key: torch.cat(value) for key, value in out.items()}


def summary(values):
    return {"mean": float(values.mean()), "se": float(values.std() / math.sqrt(len(values)))}


def run_case(objective, data, test, n_epochs, max_batches, k, iw_samples, yardstick):
    gen, q_net, step, plain = matched_pair(objective, data.x_dim, k)
    batches = BinarizedBatches(data.train, BATCH, seed=SEED, binarize=data.dynamic,
                               max_batches=max_batches)
    ours_history, ours_s = train_ours(gen, q_net, step, batches, n_epochs)
    plain_history, plain_s = train_plain(plain, objective, k, batches, n_epochs)
    plains = {"plain": plain}
    if yardstick:  # the same hand-written run from another seed: how much runs differ
        torch.manual_seed(SEED + 100)
        plains["other_seed"] = PlainVAE(data.x_dim, Z_DIM, HIDDEN)
        train_plain(plains["other_seed"], objective, k, batches, n_epochs, seed=SEED + 100)
    started = time.perf_counter()
    scores = evaluate(test, (gen, q_net), plains, iw_samples)
    eval_s = time.perf_counter() - started
    case = (f"{'VAE' if objective == 'vae' else f'IWAE k={k}'}, {n_epochs} epoch(s) of "
            f"{len(batches)} batches of {BATCH}")
    row = {"case": case, "objective": objective, "baseline": "plain torch",
           "epochs": n_epochs, "steps": n_epochs * len(batches), "k": k,
           "test_images": len(test), "iw_samples": iw_samples,
           "baseline_log_likelihood": summary(scores["plain_ll"]),
           "log_likelihood": summary(scores["ours_ll"]),
           "difference": summary(scores["ours_ll"] - scores["plain_ll"]),
           "baseline_elbo": summary(scores["plain_elbo"]), "elbo": summary(scores["ours_elbo"]),
           "baseline_train_history": plain_history, "train_history": ours_history,
           "baseline_s": plain_s, "ours_s": ours_s, "ratio": ours_s / plain_s,
           "eval_s": eval_s, "published_log_likelihood": PUBLISHED[objective]}
    if yardstick:
        row["other_seed_log_likelihood"] = summary(scores["other_seed_ll"])
        row["other_seed_difference"] = summary(scores["other_seed_ll"] - scores["plain_ll"])
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="mnist", help="mnist (default) or a path to it")
    parser.add_argument("--epochs", type=int, default=5, help="VAE training epochs")
    parser.add_argument("--iwae-steps", type=int, default=100,
                        help="IWAE training steps (0: skip the IWAE row)")
    parser.add_argument("--k", type=int, default=50, help="IWAE importance samples")
    parser.add_argument("--test-size", type=int, default=1000,
                        help="evaluate on the first N test images")
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="20 VAE steps, 5 IWAE steps, 100 test images, 100 samples "
                             "(also when CI=true)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    torch.set_num_threads(args.threads)
    try:
        data = load_binary_images(args.data, seed=SEED)
    except FileNotFoundError as err:
        print(f"MNIST is missing, nothing to compare: {err}")
        return None
    vae_batches = 20 if quick else None
    iwae_steps = min(args.iwae_steps, 5) if quick else args.iwae_steps
    test_size, iw_samples = (100, 100) if quick else (args.test_size, args.iw_samples)
    test = data.test[:test_size]

    rows = [run_case("vae", data, test, 1 if quick else args.epochs, vae_batches, 1,
                     iw_samples, yardstick=True)]
    if iwae_steps:
        rows.append(run_case("iwae", data, test, 1, iwae_steps, args.k, iw_samples,
                             yardstick=False))

    print(f"\n{'case':42s} {'plain torch':>16s} {'ours':>16s} {'ours - plain':>16s} "
          f"{'published':>9s}")
    for row in rows:
        fmt = lambda s: f"{s['mean']:.2f} +- {s['se']:.2f}"  # noqa: E731
        print(f"{row['case']:42s} {fmt(row['baseline_log_likelihood']):>16s} "
              f"{fmt(row['log_likelihood']):>16s} {fmt(row['difference']):>16s} "
              f"{row['published_log_likelihood']:9.2f}")
        print(f"{'  test ELBO':42s} {fmt(row['baseline_elbo']):>16s} {fmt(row['elbo']):>16s}")
        if "other_seed_difference" in row:
            print(f"{'  plain torch, another seed':42s} "
                  f"{fmt(row['other_seed_log_likelihood']):>16s} {'':16s} "
                  f"{fmt(row['other_seed_difference']):>16s}")
        print(f"{'  training seconds':42s} {row['baseline_s']:16.1f} {row['ours_s']:16.1f} "
              f"{'ratio %.2f' % row['ratio']:>16s}")
    settings = {"hidden": HIDDEN, "z_dim": Z_DIM, "batch_size": BATCH, "seed": SEED,
                "test_images": len(test), "iw_samples": iw_samples}
    return write_report(NAME, __doc__, argv, rows, args.out, quick, settings=settings)


if __name__ == "__main__":
    main()
