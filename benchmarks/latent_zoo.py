"""The deep latent-variable zoo on MNIST: every model at two or more CPU budgets beside its
published number, and VAE, conv-VAE and M2 beside the same networks hand-written in PyTorch.

    python -m benchmarks.latent_zoo                                 # everything, small budgets
    python -m benchmarks.latent_zoo --models vae,sbn --epochs 1,5 --train-size 60000
    python -m benchmarks.latent_zoo --parts paired --models vae,conv_vae,ssvae
    python -m benchmarks.latent_zoo --quick                         # a few minutes (CI=true too)

Part "budgets": each model of `--models` runs its own command line
(`models.latent.<name>.main(argv)`, each in a fresh process, since templates
own their parameters) for every number of epochs in `--epochs`, on the first
`--train-size` training images of dynamically binarized MNIST, and is scored on
the first `--test-size` test images: the test log-likelihood by importance
sampling with the guide (`--iw-samples` per image), or M2's test error. Each
row records the CPU seconds the run took (`zoo.Budget`: training and
evaluation), so the table shows each model moving towards its published number
as the budget grows. `--include NAME=DIR` adds a finished run's DIR/metrics.json
(e.g. a long M2 run) as a row of model NAME.

Part "paired": at equal epochs, VAE, conv-VAE and M2 trained by our templates,
objectives and `inference.Trainer`, and the same networks written as plain
PyTorch modules with their log densities written out and a plain Adam loop.
Paired seeds, literally: the plain model starts from a copy of our initial
layers, sees the same batches, and draws its noise (dropout, z) from the same
torch generator in the same order, so the two differ only by floating-point
rounding, which grows over training. A third run, the plain model from another
seed, is the yardstick of "equal within noise". Reported per test image: the
log-likelihood (VAEs) or the classification error and the bound U(x) (M2), the
paired difference with its standard error.

Published: VAE -86.76, IWAE (k=50) -84.78, 2-layer IWAE -82.90 (Burda et al.
2015, table 1); VAE with 80 planar flows -85.1 (Rezende & Mohamed 2015);
SBN 200-200-200 with VIMCO about -93.6 (Mnih & Rezende 2016); M2 with 100
labels 11.97% error (Kingma et al. 2014). Their budgets are thousands of epochs
on the full data; conv-VAE and CVAE have no published number here (the CVAE's
is log p(x | y), not comparable).
"""
import argparse
import copy
import importlib
import json
import math
import multiprocessing
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import inference
from benchmarks._report import RESULTS, comma_list, is_quick, write_report
from models import experiment
from models.data import BinarizedBatches, iterate_batches, load_binary_images

NAME = "latent_zoo"
SEED = 1234
LOG_2PI = math.log(2 * math.pi)

# name -> (module, extra arguments, metric, published value, source)
MODELS = {
    "vae": ("models.latent.vae", [], "test_loglik_nats", -86.76, "Burda et al. 2015"),
    "iwae": ("models.latent.iwae", ["--particles", "50"], "test_loglik_nats", -84.78,
             "Burda et al. 2015"),
    "iwae2": ("models.latent.iwae", ["--particles", "50", "--layers", "2"], "test_loglik_nats",
              -82.90, "Burda et al. 2015"),
    "vae_flow": ("models.latent.vae_flow", ["--flow", "planar", "--flow-length", "80"],
                 "test_loglik_nats", -85.1, "Rezende & Mohamed 2015"),
    "conv_vae": ("models.latent.conv_vae", [], "test_loglik_nats", None, None),
    "cvae": ("models.latent.cvae", [], "test_loglik_nats", None, None),
    "sbn": ("models.latent.sbn", ["--estimator", "vimco"], "test_loglik_nats", -93.6,
            "Mnih & Rezende 2016"),
    "ssvae": ("models.latent.ssvae", [], "test_error", 0.1197, "Kingma et al. 2014"),
}
PAIRED = ("vae", "conv_vae", "ssvae")


# -- part "budgets": each model's own command line --------------------------------------
def _call_main(module, argv):
    torch.set_num_threads(1)
    return importlib.import_module(module).main(argv)


def run_model(name, epochs, args, out):
    """One run of model `name` for `epochs` epochs in a fresh process: its metrics dict
    (read back from `out`/metrics.json when a finished run is there)."""
    module, extra, metric, _, _ = MODELS[name]
    argv = [*extra, "--data", args.data, "--epochs", str(epochs), "--seed", str(args.seed),
            "--train-size", str(args.train_size), "--test-size", str(args.test_size),
            "--out", str(out), "--no-progress"]
    if metric == "test_loglik_nats":
        argv += ["--iw-samples", str(args.iw_samples)]
    if (Path(out) / "metrics.json").is_file():
        print(f"\n== {name}: reading back {out}/metrics.json", flush=True)
        return json.loads((Path(out) / "metrics.json").read_text()), argv
    print(f"\n== {name}: python -m {module} {' '.join(argv)}", flush=True)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_call_main, (module, argv)), argv


def budget_rows(args):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.runs or tmp)
        for name in args.models:
            for epochs in args.epochs:
                metrics, argv = run_model(name, epochs, args, root / f"{name}_{epochs}")
                rows.append(_budget_row(name, metrics, f"python -m {MODELS[name][0]} "
                                        + " ".join(a for a in argv if not a.startswith("/"))))
    for spec in args.include:
        name, folder = spec.split("=", 1)
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        rows.append(_budget_row(name, metrics, f"finished run {folder}"))
    return rows


def _budget_row(name, metrics, command):
    _, _, metric, published, source = MODELS[name]
    budget = metrics["budget"]
    return {"part": "budgets", "model": name, "metric": metric, "ours": metrics[metric],
            "published": published, "published_source": source,
            "epochs": budget["epochs"], "cpu_seconds": budget["cpu_seconds"],
            "wall_seconds": budget["wall_seconds"],
            "train_size": budget.get("train_size"), "test_size": budget.get("test_size"),
            "metrics": {k: v for k, v in metrics.items() if k != "budget"}, "command": command}


# -- part "paired": the same networks in plain PyTorch ---------------------------------
class PlainVAE(nn.Module):
    """A Gaussian VAE with Bernoulli pixels in plain PyTorch, on copies of our layers.

    `conv`: the layers are `models.latent.conv_vae`'s (images reshaped to 1x28x28,
    z to z_dim x 1 x 1); else `models.latent.vae`'s MLP layers.
    """

    def __init__(self, gen, q_net, conv):
        super().__init__()
        self.p, self.q, self.conv = copy.deepcopy(gen.layers), copy.deepcopy(q_net.layers), conv

    def log_weights(self, x, k=1):
        """log p(x, z) - log q(z | x) for z ~ q(z | x), written out: [k, n]."""
        h = self.q["encoder"](x.reshape(-1, 1, 28, 28) if self.conv else x)
        mean, logstd = self.q["z_mean"](h), self.q["z_logstd"](h)
        eps = torch.randn((k,) + mean.shape, dtype=x.dtype)
        z = mean + eps * logstd.exp()
        if self.conv:
            logits = self.p["decoder"](z.reshape(-1, z.shape[-1], 1, 1)).reshape(k, len(x), -1)
        else:
            logits = self.p["x_logits"](self.p["decoder"](z))
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                     reduction="none").sum(-1)
        log_pz = (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(-1)
        log_q = (-0.5 * eps ** 2 - logstd - 0.5 * LOG_2PI).sum(-1)
        return log_px + log_pz - log_q

    def cost(self, x):
        return -self.log_weights(x).mean()

    @torch.no_grad()
    def loglik(self, x, n_samples, chunk=100):
        parts = [self.log_weights(x, min(chunk, n_samples - s)) for s in range(0, n_samples, chunk)]
        return torch.logsumexp(torch.cat(parts), 0) - math.log(n_samples)


class PlainM2(nn.Module):
    """M2 in plain PyTorch on copies of our layers (`models.latent.ssvae`)."""

    def __init__(self, gen, q_z, classifier, beta):
        super().__init__()
        self.p, self.q = copy.deepcopy(gen.layers), copy.deepcopy(q_z.layers)
        self.c, self.beta = copy.deepcopy(classifier.layers), beta

    def logits(self, x):
        return self.c["y_logits"](self.c["hidden"](x))

    def labeled(self, x, y):
        """L(x, y) for one-hot `y` [n, 10], one z per image: [n]."""
        h = self.q["encoder"](torch.cat([x, y], -1))
        mean, logstd = self.q["z_mean"](h), self.q["z_logstd"](h)
        eps = torch.randn((1,) + mean.shape, dtype=x.dtype)
        z = mean + eps * logstd.exp()
        logits = self.p["x_logits"](self.p["decoder"](torch.cat([z, y.expand(1, *y.shape)], -1)))
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                     reduction="none").sum(-1)
        log_pz = (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(-1)
        log_q = (-0.5 * eps ** 2 - logstd - 0.5 * LOG_2PI).sum(-1)
        return (log_px + log_pz - math.log(10) - log_q)[0]

    def unlabeled(self, x):
        n = len(x)
        bounds = self.labeled(x.repeat_interleave(10, 0), torch.eye(10).repeat(n, 1)).reshape(n, 10)
        log_qy = self.logits(x).log_softmax(-1)
        return (log_qy.exp() * (bounds - log_qy)).sum(-1)

    def cost(self, batch):
        x_l, y_l, x_u = batch
        lower_l = self.labeled(x_l, F.one_hot(y_l, 10).to(x_l.dtype))
        lower_u = self.unlabeled(x_u)
        log_qy = -F.cross_entropy(self.logits(x_l), y_l)
        return -(lower_l.mean() + lower_u.mean() + self.beta * log_qy) / 2


def train_plain(plain, batches, epochs, lr, eps, seed):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(plain.parameters(), lr=lr, eps=eps)
    started = time.process_time()
    plain.train()
    for epoch in range(epochs):
        for batch in batches(epoch):
            cost = plain.cost(batch)
            optimizer.zero_grad(set_to_none=True)
            cost.backward()
            optimizer.step()
    plain.eval()
    return time.process_time() - started


def train_ours(modules, step, batches, epochs, lr, eps, seed):
    torch.manual_seed(seed)
    trainer = inference.Trainer(modules, lambda params: torch.optim.Adam(params, lr=lr, eps=eps),
                                progress=False)
    started = time.process_time()
    for module in modules.values():
        module.train()
    trainer.fit(step, batches, n_epochs=epochs)
    for module in modules.values():
        module.eval()
    return time.process_time() - started


def summary(values):
    values = torch.as_tensor(values, dtype=torch.float64)
    return {"mean": float(values.mean()), "se": float(values.std() / math.sqrt(len(values)))}


def paired_vae(name, args):
    """Ours, plain from the same start, plain from another seed: per-image test log p(x)."""
    from models.latent import conv_vae, vae
    conv = name == "conv_vae"
    data = load_binary_images("mnist", seed=args.seed)
    train, test = data.train[:args.train_size], torch.from_numpy(data.test[:args.test_size])
    batch_size, z_dim, eps = (100, 40, 1e-4) if conv else (128, 40, 1e-8)
    torch.manual_seed(args.seed)
    gen, q_net = (conv_vae if conv else vae).new_templates()
    step = (conv_vae.elbo_step(gen, q_net, z_dim) if conv
            else vae.elbo_step(gen, q_net, z_dim, hidden=(500, 500)))
    step(torch.from_numpy(train[:2]).bernoulli())  # creates the layers
    plain = PlainVAE(gen, q_net, conv)
    torch.manual_seed(args.seed + 100)
    other_gen, other_q = (conv_vae if conv else vae).new_templates()
    (conv_vae.elbo_step(other_gen, other_q, z_dim) if conv
     else vae.elbo_step(other_gen, other_q, z_dim, hidden=(500, 500)))(
        torch.from_numpy(train[:2]).bernoulli())
    other = PlainVAE(other_gen, other_q, conv)
    batches = BinarizedBatches(train, batch_size, seed=args.seed)
    seconds = {"ours": train_ours({"model": gen, "guide": q_net}, step, batches,
                                  args.paired_epochs, 1e-3, eps, args.seed),
               "plain": train_plain(plain, batches, args.paired_epochs, 1e-3, eps, args.seed),
               "other_seed": train_plain(other, batches, args.paired_epochs, 1e-3, eps,
                                         args.seed + 100)}
    model = experiment.zhusuan_model(gen, q_net, data.x_dim, z_dim, step,
                                     **({} if conv else {"hidden": (500, 500)}))
    scores = {key: [] for key in seconds}
    with torch.no_grad():
        for x in iterate_batches(test.numpy(), 100):
            for key, fn in (("ours", lambda: experiment.is_loglikelihood(model, x,
                                                                         args.iw_samples)),
                            ("plain", lambda: plain.loglik(x, args.iw_samples)),
                            ("other_seed", lambda: other.loglik(x, args.iw_samples))):
                torch.manual_seed(args.seed + 1)
                scores[key].append(fn())
    scores = {key: torch.cat(value) for key, value in scores.items()}
    return _paired_row(name, "test_loglik_nats", scores, seconds, args)


def paired_ssvae(args):
    """M2 ours vs plain: per-image test error and U(x)."""
    from models.latent import ssvae
    x_l, y_l, x_u, x_test, y_test = ssvae.load(SimpleNamespace(
        data="mnist", train_size=args.train_size, test_size=args.test_size, labels=100,
        seed=args.seed))
    hidden, z_dim, beta = (500, 500), 100, 1200.
    batches = ssvae.LabeledBatches(x_l, y_l, x_u, 100, seed=args.seed)
    templates, plains = {}, {}
    for key, seed in (("ours", args.seed), ("other_seed", args.seed + 100)):
        torch.manual_seed(seed)
        gen, q_z, classifier = ssvae.new_templates()
        step = ssvae.ssl_step(gen, q_z, classifier, z_dim, 1, beta, hidden)
        step(next(iter(batches(0))))  # creates the layers
        templates[key] = (gen, q_z, classifier, step)
        plains["plain" if key == "ours" else key] = PlainM2(gen, q_z, classifier, beta)
    gen, q_z, classifier, step = templates["ours"]
    seconds = {"ours": train_ours({"model": gen, "q_z": q_z, "classifier": classifier}, step,
                                  batches, args.paired_epochs, 1e-3, 1e-8, args.seed)}
    for key, seed in (("plain", args.seed), ("other_seed", args.seed + 100)):
        seconds[key] = train_plain(plains[key], batches, args.paired_epochs, 1e-3, 1e-8, seed)
    errors, bounds = {}, {}
    with torch.no_grad():
        torch.manual_seed(args.seed + 1)
        errors["ours"] = (classifier(x_test, hidden=hidden).argmax(-1) != y_test).double()
        bounds["ours"] = torch.cat([ssvae.unlabeled_bound(gen, q_z, classifier, x, z_dim, 1,
                                                          hidden)
                                    for x in x_test.split(500)])
        for key, plain in plains.items():
            torch.manual_seed(args.seed + 1)
            errors[key] = (plain.logits(x_test).argmax(-1) != y_test).double()
            bounds[key] = torch.cat([plain.unlabeled(x) for x in x_test.split(500)])
    row = _paired_row("ssvae", "test_error", errors, seconds, args)
    row["test_elbo_nats"] = _paired_row("ssvae", "test_elbo_nats", bounds, seconds, args)["scores"]
    return row


def _paired_row(name, metric, scores, seconds, args):
    return {"part": "paired", "model": name, "metric": metric, "epochs": args.paired_epochs,
            "train_size": args.train_size, "test_size": args.test_size,
            "scores": {"ours": summary(scores["ours"]), "plain": summary(scores["plain"]),
                       "ours_minus_plain": summary(scores["ours"] - scores["plain"]),
                       "other_seed": summary(scores["other_seed"]),
                       "other_seed_minus_plain": summary(scores["other_seed"]
                                                         - scores["plain"])},
            "train_cpu_seconds": {key: round(value, 2) for key, value in seconds.items()}}


# -- the command line ------------------------------------------------------------------
def _ints(text):
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return values


def print_table(rows):
    print(f"\n{'model':10s} {'metric':17s} {'epochs':>6s} {'train':>6s} {'ours':>9s} "
          f"{'published':>9s} {'CPU s':>8s}")
    for row in rows:
        if row["part"] != "budgets":
            continue
        published = "-" if row["published"] is None else f"{row['published']:9.2f}"
        print(f"{row['model']:10s} {row['metric']:17s} {row['epochs']:6d} "
              f"{str(row['train_size']):>6s} {row['ours']:9.4g} {published:>9s} "
              f"{row['cpu_seconds']:8.0f}")
    paired = [row for row in rows if row["part"] == "paired"]
    if paired:
        print(f"\n{'paired, equal epochs':22s} {'plain torch':>16s} {'ours':>16s} "
              f"{'ours - plain':>16s} {'other seed - plain':>19s}")
        fmt = lambda s: f"{s['mean']:.4g} +- {s['se']:.2g}"  # noqa: E731
        for row in paired:
            s = row["scores"]
            print(f"{row['model'] + ' ' + row['metric']:22s} {fmt(s['plain']):>16s} "
                  f"{fmt(s['ours']):>16s} {fmt(s['ours_minus_plain']):>16s} "
                  f"{fmt(s['other_seed_minus_plain']):>19s}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latent_zoo",
                                      description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=comma_list(MODELS, "model"), default=list(MODELS),
                        help=f"comma-separated, some of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--parts", default="budgets,paired",
                        help="budgets, paired, or both (default)")
    parser.add_argument("--epochs", type=_ints, default=[1, 3],
                        help="the budgets: epochs per run, comma-separated (default 1,3)")
    parser.add_argument("--paired-epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--iw-samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--data", choices=("mnist", "binarized_mnist"), default="mnist",
                        help="dynamically binarized MNIST (default) or Larochelle's fixed one")
    parser.add_argument("--runs", default=None, metavar="DIR",
                        help="keep each run's folder under DIR; a run already finished there "
                             "is read back, not repeated (default: a temporary folder)")
    parser.add_argument("--include", action="append", default=[], metavar="NAME=DIR",
                        help="add the finished run DIR/metrics.json as a row of model NAME")
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch on 500 images, 100 test images, 20 IS samples")
    parser.add_argument("--out", default=None,
                        help=f"the JSON report (default {RESULTS}/{NAME}.json)")
    args = parser.parse_args(argv)
    if is_quick(args.quick):
        args.epochs, args.paired_epochs = [1], 1
        args.train_size, args.test_size, args.iw_samples = 500, 100, 20
    parts = {part.strip() for part in args.parts.split(",")}
    if not parts or parts - {"budgets", "paired"}:
        parser.error(f"--parts: expected budgets, paired or both, got {args.parts!r}")
    for spec in args.include:
        if "=" not in spec or spec.split("=", 1)[0] not in MODELS:
            parser.error(f"--include {spec!r}: expected NAME=DIR with NAME one of "
                         f"{', '.join(MODELS)}")
    torch.set_num_threads(1)
    try:
        load_binary_images("mnist")
    except FileNotFoundError as err:
        print(f"MNIST is missing, nothing to run: {err}")
        return None
    rows = budget_rows(args) if "budgets" in parts else []
    if "paired" in parts:
        for name in (m for m in args.models if m in PAIRED):
            print(f"\n== paired: {name}, {args.paired_epochs} epoch(s)", flush=True)
            rows.append(paired_ssvae(args) if name == "ssvae" else paired_vae(name, args))
    print_table(rows)
    out = args.out or RESULTS / f"{NAME}.json"
    settings = {"train_size": args.train_size, "test_size": args.test_size,
                "iw_samples": args.iw_samples, "epochs": args.epochs,
                "paired_epochs": args.paired_epochs, "seed": args.seed,
                "data": ("dynamically binarized MNIST (test binarized once, seed 1234)"
                         if args.data == "mnist" else "Larochelle's fixed binarized MNIST")}
    return write_report(NAME, __doc__, argv, rows, out, is_quick(args.quick),
                        threads=1, settings=settings)


if __name__ == "__main__":
    main()
