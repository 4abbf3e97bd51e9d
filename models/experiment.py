"""What the latent-variable image models share: their interface, evaluation, pictures, a run.

A model of `models.latent` describes itself to `run` as a `LatentModel`: its
modules, its training step, and two functions in ZhuSuan's style,

- `joint(batch, k)` -> (the model's `BayesianNet` built for k particles per
  image on axis 0, its observations), e.g. `(build_gen(x_dim, z_dim, n, k), {"x": x})`;
- `guide(batch, k)` -> the guide: a `BayesianNet` whose latent nodes match the
  model's, or a dict name -> (samples, log q) (`inference.elbo`'s `latent`),

where a batch is images x [n, x_dim] (or (x, y) for a label-conditioned model),
so that one evaluation fits them all: the test ELBO, the test log-likelihood by
importance sampling with the guide as proposal, samples and reconstructions.
`zhusuan_model` builds a `LatentModel` from templates with ZhuSuan's calling
convention `gen(x_dim, z_dim, n, n_particles)` / `q_net(x, z_dim, n_particles)`.

The command line is the zoo's (`models.zoo.parser`) plus the image models'
options (`common_parser`); a run writes the zoo's outputs (metrics.json,
samples.npy/png) and `run.json` (settings and the per-epoch bounds).
This module is a library; `python -m models.experiment` lists the runnable models.
"""
import argparse
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

import inference
from inference import checkpoint
from models import zoo
from models.data import DATASETS, BinarizedBatches, load_binary_images
from models.zoo import quick_mode

__all__ = ["LatentModel", "zhusuan_model", "lower_bound", "is_loglikelihood", "reconstruct",
           "mean_over_batches", "iterate_rows", "check_labels", "LabelledBatches",
           "save_image_grid", "common_parser", "quick_mode", "run", "main"]

RUNNABLE = {
    "models.latent.vae": "ZhuSuan's VAE, trained by the ELBO (SGVB)",
    "models.latent.iwae": "the VAE by the importance weighted bound; --layers 2: Burda's 2-layer",
    "models.latent.bernoulli_vae": "a VAE with binary latent units, by NVIL or VIMCO",
    "models.latent.conv_vae": "ZhuSuan's convolutional VAE on MNIST",
    "models.latent.cvae": "a label-conditioned VAE p(x | z, y), class-conditional samples",
    "models.latent.vae_flow": "a VAE whose guide is a normalizing flow (planar or IAF)",
    "models.latent.ssvae": "the semi-supervised VAE M2 on MNIST with 100 labels",
    "models.latent.sbn": "a sigmoid belief net (200-200-200) by VIMCO or reweighted wake-sleep",
    "models.bayesian.bnn": "ZhuSuan's Bayesian neural net on the UCI sets, by VI or SG-MCMC",
    "models.demo": "the eight-schools model: prior draws, log_joint, log p(y), its graph",
}


@dataclass
class LatentModel:
    """A latent-variable image model as `run` trains and evaluates it.

    `modules`: name -> template (nn.Module), trained and checkpointed together.
    `step(batch) -> (cost, objective)`: one training step (`inference.Trainer`).
    `joint`, `guide`: see the module docstring. `sample(n)` -> pixel
    probabilities [n, x_dim] of n images drawn from the model (at least 1).
    `bound_particles`: k of a test k-sample bound to report as well (None: none).
    `settings`: what else shapes the model (recorded in checkpoints and run.json).
    `samples_title`: the title of samples.png.
    """
    modules: dict
    step: Callable
    joint: Callable
    guide: Callable
    sample: Callable
    bound_particles: Optional[int] = None
    settings: dict = field(default_factory=dict)
    samples_title: str = "samples"


def zhusuan_model(gen, q_net, x_dim, z_dim, step, *, modules=None, bound_particles=None,
                  settings=None, q_kwargs=None, latent=None, **kwargs):
    """A `LatentModel` from templates called as `gen(x_dim, z_dim, n, n_particles, **kwargs)`
    and `q_net(x, z_dim, n_particles, **kwargs, **q_kwargs)`, the model recording "x_mean".

    `modules` default to {"model": gen, "guide": q_net}. `latent`: the node's
    name when q_net returns (samples, log q) rather than a net (a flow guide).
    """
    q_kwargs = {**kwargs, **(q_kwargs or {})}

    def joint(x, k):
        return gen(x_dim, z_dim, x.shape[0], k, **kwargs), {"x": x}

    def guide(x, k):
        q = q_net(x, z_dim, k, **q_kwargs)
        return q if latent is None else {latent: q}

    def sample(n):
        return gen(x_dim, z_dim, n, 1, **kwargs).observe()["x_mean"][0]

    return LatentModel(modules or {"model": gen, "guide": q_net}, step, joint, guide, sample,
                       bound_particles, settings or {})


def _images(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _guide_arguments(guide, name):
    """The keyword arguments that hand `guide` to an objective: `name=` a net, or `latent=`."""
    return {"latent": guide} if isinstance(guide, dict) else {name: guide}


def lower_bound(model, batch, k=1, objective=inference.elbo):
    """`objective` (`inference.elbo` or `inference.iw_objective`) of each image with k
    particles: the objective object (its `.tensor` is [n])."""
    net, observed = model.joint(batch, k)
    return objective(net, observed, axis=0,
                     **_guide_arguments(model.guide(batch, k), "variational"))


@torch.no_grad()
def is_loglikelihood(model, batch, n_samples=1000, max_elements=2 ** 22):
    """log p(x) of each image of `batch` by importance sampling with the guide: [n].

    The `n_samples` proposals are drawn in chunks so that one chunk's pixel
    logits hold at most about `max_elements` numbers; chunk estimates are
    merged exactly: log mean_k w_k = logsumexp_c(log mean_c w + log k_c) - log K.
    """
    n, x_dim = _images(batch).shape
    chunk = max(1, min(n_samples, max_elements // max(1, n * x_dim)))
    parts, sizes = [], []
    for start in range(0, n_samples, chunk):
        k = min(chunk, n_samples - start)
        net, observed = model.joint(batch, k)
        parts.append(inference.is_loglikelihood(
            net, observed, axis=0, **_guide_arguments(model.guide(batch, k), "proposal")))
        sizes.append(k)
    log_sizes = torch.log(torch.tensor(sizes, dtype=parts[0].dtype))[:, None]
    return torch.logsumexp(torch.stack(parts) + log_sizes, dim=0) - math.log(n_samples)


@torch.no_grad()
def reconstruct(model, batch):
    """Pixel probabilities of x -> z ~ q(z | x) -> p(x | z) for each image: [n, x_dim]."""
    guide = model.guide(batch, 1)
    if isinstance(guide, dict):
        latents = {name: value[0] for name, value in guide.items()}
    else:
        latents = {name: node.tensor for name, node in guide.stochastic_nodes.items()
                   if not node.is_observed}
    net, _ = model.joint(batch, 1)
    return net.observe(**latents)["x_mean"][0]


def iterate_rows(data, batch_size):
    """Batches of `batch_size` rows, in order: float32 image tensors, or (x, y) tensors
    when `data` is a pair (images, int64 labels)."""
    if isinstance(data, tuple):
        images, labels = data
        for start in range(0, len(images), batch_size):
            yield (torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size],
                                                         dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(labels[start:start + batch_size])))
    else:
        for start in range(0, len(data), batch_size):
            yield torch.from_numpy(np.ascontiguousarray(data[start:start + batch_size],
                                                        dtype=np.float32))


@torch.no_grad()
def mean_over_batches(fn, data, batch_size, *, desc=None, progress=True):
    """The mean over all rows of `data` of `fn(batch)` (a per-row tensor [b]).

    `data`: images [n, pixels], or a pair (images, labels) (see `iterate_rows`).
    Shows a progress bar over the batches (titled `desc`) unless `progress` is False.
    """
    n = len(_images(data))
    if n == 0:
        raise ValueError("mean_over_batches: `images` has no rows")
    total = 0.0
    for batch in tqdm(iterate_rows(data, batch_size), total=math.ceil(n / batch_size),
                      desc=desc, disable=not progress, leave=False):
        total += float(torch.sum(fn(batch)))
    return total / n


def check_labels(labels, n_classes, n=None):
    """Raise a ValueError naming node 'y' unless `labels` are ints in [0, n_classes) ([n])."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) \
            or (n is not None and len(labels) != n):
        raise ValueError(f"node 'y': expected integer class labels of shape "
                         f"[{'n' if n is None else n}], got {labels.dtype} {labels.shape}")
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if len(bad):
        raise ValueError(f"node 'y': labels must lie in [0, {n_classes}), found {bad[0]}")


class LabelledBatches(BinarizedBatches):
    """`BinarizedBatches` of pairs (x, y): the images as there, with their labels (int64 [b]).

    The labels are checked once here to lie in [0, `n_classes`), so that the
    recorded training step need not read them.
    """

    def __init__(self, images, labels, batch_size, seed=0, binarize=True, *, n_classes=10):
        super().__init__(images, batch_size, seed, binarize)
        check_labels(labels, n_classes, len(images))
        self.labels = torch.as_tensor(labels, dtype=torch.int64)

    def __call__(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.images))[:len(self) * self.batch_size]
        for rows in np.split(order, len(self)):
            x = torch.from_numpy(np.ascontiguousarray(self.images[rows], dtype=np.float32))
            if self.binarize:
                x = (torch.from_numpy(rng.random(x.shape, dtype=np.float32)) < x).float()
            yield x, self.labels[torch.from_numpy(rows)]


def save_image_grid(path, panels, image_shape, columns=10):
    """Draw each (title, images [n, pixels]) panel as a grid; save a PNG when `path` is given.

    Returns the matplotlib Figure (built without pyplot, so it works headless
    and displays in notebooks).
    """
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4 * len(panels), 4.4))
    for i, (title, images) in enumerate(panels):
        images = np.asarray(images, dtype=np.float32).reshape(-1, *image_shape)
        rows = math.ceil(len(images) / columns)
        canvas = np.full((rows * (image_shape[0] + 1), columns * (image_shape[1] + 1)), 0.5)
        for j, image in enumerate(images):
            r, c = divmod(j, columns)
            canvas[r * (image_shape[0] + 1):(r + 1) * (image_shape[0] + 1) - 1,
                   c * (image_shape[1] + 1):(c + 1) * (image_shape[1] + 1) - 1] = image
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def common_parser(name, description, digits_defaults, mnist_defaults, quick_epochs, *,
                  data="digits"):
    """The zoo's command line (`models.zoo.parser`) plus the latent image models' options.

    `digits_defaults` / `mnist_defaults`: dicts of epochs, batch_size, z_dim and
    (for MLP nets) hidden, used when the flag is not given (MNIST's for both
    MNIST forms; `digits_defaults=None`: MNIST's everywhere); `quick_epochs`
    replaces the epochs under CI=true; `data`: the default `--data`.
    """
    digits_defaults = digits_defaults or mnist_defaults
    parser = zoo.parser(f"latent.{name}", description, data=data,
                        epochs=mnist_defaults["epochs"], quick_epochs=quick_epochs)

    def show(key):
        text = [",".join(map(str, v)) if isinstance(v, tuple) else str(v)
                for v in (digits_defaults[key], mnist_defaults[key])]
        return text[0] if text[0] == text[1] else f"{text[0]} on digits, {text[1]} on MNIST"

    for action in parser._actions:  # the per-data-set defaults, in the zoo's options' help
        if action.dest == "data":
            action.help = (f"one of {', '.join(DATASETS)}, or a folder with the MNIST IDX "
                           f"files, or a binarized_mnist .npz (default: {data})")
        elif action.dest == "epochs":
            action.help = f"training epochs (default: {show('epochs')}; {quick_epochs} " \
                          f"under CI=true)"
    parser.add_argument("--batch-size", type=zoo.positive_int, default=None,
                        help=f"default: {show('batch_size')}")
    parser.add_argument("--z-dim", type=zoo.positive_int, default=None,
                        help=f"default: {show('z_dim')}")
    if "hidden" in mnist_defaults:
        parser.add_argument("--hidden", type=_sizes, default=None,
                            help=f"hidden layer sizes of both networks, e.g. 500,500 "
                                 f"(default: {show('hidden')})")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--iw-samples", type=zoo.positive_int, default=None,
                        help="importance samples per test image for log p(x) (default: 1000, "
                             "100 under CI=true)")
    parser.add_argument("--no-trace", action="store_true",
                        help="run the model and guide programs in Python on every step "
                             "(default: record the step once per batch shape and replay it, "
                             "see inference.TracedStep)")
    parser.set_defaults(digits_defaults=digits_defaults, mnist_defaults=mnist_defaults,
                        adam_eps=1e-8)  # a model may set its own (ZhuSuan's conv VAE: 1e-4)
    return parser


def _sizes(text):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") \
            from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def _resolve_defaults(args, data):
    """Fill in the per-data-set defaults of the flags not given (epochs: by `zoo.start`)."""
    defaults = dict(args.digits_defaults if data.name == "digits" else args.mnist_defaults)
    args.default_epochs = defaults.pop("epochs")
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.iw_samples is None:
        args.iw_samples = 100 if quick_mode() else 1000


def run(args, name, setup, *, labelled=False):
    """Load the data, train with `inference.Trainer`, evaluate, write the zoo's outputs.

    `setup(args, data)` (called once the defaults are filled in, `data` a
    `models.data.ImageData`) returns the `LatentModel`. `labelled`: batches are
    pairs (x, y) of images and int64 labels in [0, 10). Writes to `--out`: metrics.json
    (test_elbo_nats, test_loglik_nats by importance sampling with `--iw-samples`
    per image, the model's own, and the budget), samples.npy/png
    (`--n-samples` draws), reconstructions.png and run.json (settings, bounds
    per epoch). Returns the metrics as written.

    With `--checkpoint`, the run holds the checkpoint's writer lock throughout;
    the checkpoint records the training images and the settings that shape the
    model, and a resume with others is an error. A `--lr` given on resume
    overrides the checkpoint's (the Trainer warns).
    """
    data = load_binary_images(args.data, seed=args.seed)
    if labelled and data.train_labels is None:
        raise SystemExit(f"{name}: --data {args.data} has no labels; use mnist or digits")
    _resolve_defaults(args, data)
    zoo.start(args)
    budget = zoo.Budget()
    model = setup(args, data)
    train = zoo.first(data.train, args.train_size)
    test = zoo.first(data.test, args.test_size)
    batch_size = min(args.batch_size, len(train))
    if labelled:
        batches = LabelledBatches(train, zoo.first(data.train_labels, args.train_size),
                                  batch_size, seed=args.seed, binarize=data.dynamic)
        test = (test, zoo.first(data.test_labels, args.test_size))
        check_labels(test[1], 10, len(test[0]))
    else:
        batches = BinarizedBatches(train, batch_size, seed=args.seed, binarize=data.dynamic)
    n_test = len(_images(test))
    print(f"{name} on {data.name}: {len(train)} train / {n_test} test images, "
          f"{len(batches)} batches of {batch_size} per epoch, {args.epochs} epochs")
    settings = {"model": name, "data": data.name, "z_dim": args.z_dim,
                "batch_size": args.batch_size, "seed": args.seed, **model.settings}
    if hasattr(args, "hidden"):
        settings["hidden"] = list(args.hidden)
    trainer = inference.Trainer(model.modules,
                                lambda params: torch.optim.Adam(params, lr=args.lr,
                                                                eps=args.adam_eps),
                                checkpoint_path=args.checkpoint, progress=not args.no_progress,
                                trace=not args.no_trace,
                                fingerprint={"train_images": train, "settings": settings})
    with (contextlib.nullcontext() if args.checkpoint is None
          else checkpoint.writer_lock(args.checkpoint)):
        history, train_seconds = _train(trainer, model.step, batches, args)
    for module in model.modules.values():
        module.eval()  # batch norm and dropout in evaluation mode from here on
    metrics = _evaluate(model, test, args)

    out = Path(args.out)
    with torch.no_grad():
        zoo.save_samples(out, model.sample(args.n_samples), data.image_shape,
                         title=model.samples_title)
        shown = next(iterate_rows(test, 50))
        save_image_grid(out / "reconstructions.png",
                        [("test images / reconstructions",
                          _interleave_rows(_images(shown), reconstruct(model, shown)))],
                        data.image_shape)
    (out / "run.json").write_text(json.dumps(
        {**settings, "epochs": args.epochs, "lr": args.lr, "train_size": len(train),
         "test_size": n_test, "iw_samples": args.iw_samples,
         "train_seconds": round(train_seconds, 2), "history": history}, indent=2))
    written = zoo.write_metrics(out, metrics, budget.as_dict(
        args.epochs, data=data.name, train_size=len(train), test_size=n_test,
        loglik_is_samples=args.iw_samples))
    print(f"saved {out}/metrics.json, samples.npy, samples.png, reconstructions.png, run.json")
    return written


def _train(trainer, step_fn, batches, args):
    """Train for `args.epochs`, printing about 20 epochs' bounds; (history, seconds)."""
    resuming = args.checkpoint is not None and Path(args.checkpoint).exists()
    history, train_seconds = [], 0.0
    every = max(1, args.epochs // 20)  # print about 20 epochs
    for epoch in range(1, args.epochs + 1):  # one epoch per call, to print as we go
        if epoch <= len(history):
            continue
        started = time.perf_counter()
        history = trainer.fit(step_fn, batches, n_epochs=epoch)
        seconds = time.perf_counter() - started
        if resuming:  # the first call loaded the checkpoint's epochs
            resuming = False
            for done, bound in enumerate(history, start=1):
                print(f"Epoch {done} (from {args.checkpoint}): lower bound = {bound:.2f}")
        else:
            train_seconds += seconds
            if epoch % every == 0 or epoch == args.epochs:
                print(f"Epoch {epoch} ({seconds:.1f}s): lower bound = {history[-1]:.2f}")
    return history, train_seconds


def _evaluate(model, test, args):
    """The test ELBO, the model's k-sample bound and the IS log-likelihood, printed."""
    started = time.perf_counter()
    progress = not args.no_progress
    print(f"evaluating on {len(_images(test))} test images (log p(x) by IS with "
          f"{args.iw_samples} samples per image)", flush=True)
    metrics = {"test_elbo_nats": mean_over_batches(
        lambda batch: lower_bound(model, batch).tensor, test, batch_size=400,
        desc="test ELBO", progress=progress)}
    k = model.bound_particles
    if k is not None:
        metrics[f"test_iw_bound_k{k}_nats"] = mean_over_batches(
            lambda batch: lower_bound(model, batch, k, inference.iw_objective).tensor, test,
            batch_size=100, desc=f"test L_{k}", progress=progress)
    metrics["test_loglik_nats"] = mean_over_batches(
        lambda batch: is_loglikelihood(model, batch, n_samples=args.iw_samples), test,
        batch_size=100, desc="test log-likelihood", progress=progress)
    for key, value in metrics.items():
        print(f">> {key.replace('_', ' ')} = {value:.2f}")
    print(f"(IS with {args.iw_samples} samples per image; "
          f"evaluation took {time.perf_counter() - started:.1f}s)")
    return metrics


def _interleave_rows(originals, reconstructions, columns=10):
    """Rows of originals alternating with rows of their reconstructions."""
    rows = []
    for start in range(0, len(originals), columns):
        rows += [originals[start:start + columns], reconstructions[start:start + columns]]
    return torch.cat(rows)


def main(argv=None):
    """`python -m models.experiment`: this module is a library; list what to run instead."""
    listing = "\n".join(f"  python -m {module:<28} {what}" for module, what in RUNNABLE.items())
    parser = argparse.ArgumentParser(
        prog="python -m models.experiment", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The shared code of the image models (evaluation, pictures, the command\n"
                    "line); it trains nothing itself. The runnable models:\n\n" + listing,
        epilog="Each takes --help; all share the zoo's options (--data, --epochs, --seed, "
               "--out, --checkpoint, --n-samples, --train-size, --test-size, ...).")
    parser.parse_args(argv)
    parser.print_help()


if __name__ == "__main__":
    main()
