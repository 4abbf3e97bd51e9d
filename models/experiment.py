"""What the runnable image models share: evaluation, pictures, the command line.

The models of `models.latent` (`vae`, `iwae`, `bernoulli_vae`, ...) follow
ZhuSuan's calling convention, so one evaluation fits all of them:

- `gen(x_dim, z_dim, n, n_particles)` -> a `MetaBayesianNet` whose latent
  node "z" has shape `[n_particles, n, ...]` and whose node "x" is observed;
  it records the pixel probabilities as the deterministic node "x_mean";
- `q_net(x, z_dim, n_particles)` -> the guide's `BayesianNet` with node "z".

This module is a library; `python -m models.experiment` lists the runnable models.
"""
import argparse
import contextlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import inference
from inference import checkpoint
from models.data import DATASETS, BinarizedBatches, iterate_batches, load_binary_images

__all__ = ["is_loglikelihood", "mean_over_batches", "sample_images", "reconstruct",
           "save_image_grid", "common_parser", "quick_mode", "run", "main"]

RUNNABLE = {
    "models.latent.vae": "ZhuSuan's VAE, trained by the ELBO (SGVB)",
    "models.latent.iwae": "the same VAE trained by the importance weighted bound",
    "models.latent.bernoulli_vae": "a VAE with binary latent units, by NVIL or VIMCO",
    "models.bnn_uci": "a Bayesian neural net on the UCI regression sets, SGHMC within Gibbs",
    "models.demo": "the eight-schools model: prior draws, log_joint, log p(y), its graph",
}


def quick_mode():
    """True under CI (`CI=true`): runnable examples then shorten their defaults."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@torch.no_grad()
def is_loglikelihood(gen, q_net, x, z_dim, n_samples=1000, max_elements=2 ** 22):
    """log p(x) for each row of `x` [n, x_dim] by importance sampling with the guide: [n].

    The `n_samples` proposals are drawn in chunks so that one chunk's pixel
    logits hold at most about `max_elements` numbers; chunk estimates are
    merged exactly: log mean_k w_k = logsumexp_c(log mean_c w + log k_c) - log K.
    """
    n, x_dim = x.shape
    chunk = max(1, min(n_samples, max_elements // max(1, n * x_dim)))
    parts, sizes = [], []
    for start in range(0, n_samples, chunk):
        k = min(chunk, n_samples - start)
        model = gen(x_dim, z_dim, n, k)
        proposal = q_net(x, z_dim, k)
        parts.append(inference.is_loglikelihood(model, {"x": x}, proposal=proposal, axis=0))
        sizes.append(k)
    log_sizes = torch.log(torch.tensor(sizes, dtype=x.dtype))[:, None]
    return torch.logsumexp(torch.stack(parts) + log_sizes, dim=0) - math.log(n_samples)


@torch.no_grad()
def mean_over_batches(fn, images, batch_size, *, desc=None, progress=True):
    """The mean over all rows of `images` of `fn(x_batch)` (a per-row tensor [b]).

    Shows a progress bar over the batches (titled `desc`) unless `progress` is False.
    """
    if len(images) == 0:
        raise ValueError("mean_over_batches: `images` has no rows")
    total, count = 0.0, 0
    for x in tqdm(iterate_batches(images, batch_size), total=math.ceil(len(images) / batch_size),
                  desc=desc, disable=not progress, leave=False):
        total += float(torch.sum(fn(x)))
        count += len(x)
    return total / count


@torch.no_grad()
def sample_images(gen, x_dim, z_dim, n=100):
    """Pixel probabilities of `n` images drawn from the model: [n, x_dim]."""
    return gen(x_dim, z_dim, n, 1).observe()["x_mean"][0]


@torch.no_grad()
def reconstruct(gen, q_net, x, z_dim):
    """Pixel probabilities of x -> z ~ q(z|x) -> p(x|z) for each row of `x`: [n, x_dim]."""
    z = q_net(x, z_dim, 1)["z"].tensor
    return gen(x.shape[1], z_dim, len(x), 1).observe(z=z)["x_mean"][0]


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


def common_parser(name, description, digits_defaults, mnist_defaults, quick_epochs):
    """The command line every example shares.

    `digits_defaults` / `mnist_defaults`: dicts of epochs, batch_size, z_dim and
    hidden used when the flag is not given (MNIST's for both MNIST forms);
    `quick_epochs` replaces the epochs under CI=true.
    """
    parser = argparse.ArgumentParser(prog=f"python -m models.latent.{name}",
                                     description=description)
    def show(key):
        text = [",".join(map(str, v)) if isinstance(v, tuple) else str(v)
                for v in (digits_defaults[key], mnist_defaults[key])]
        return f"{text[0]} on digits, {text[1]} on MNIST"

    parser.add_argument("--data", default="digits",
                        help=f"one of {', '.join(DATASETS)}, or a folder with the MNIST IDX "
                             f"files, or a binarized_mnist .npz (default: digits)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs (default: {show('epochs')}; {quick_epochs} "
                             f"under CI=true)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"default: {show('batch_size')}")
    parser.add_argument("--z-dim", type=int, default=None, help=f"default: {show('z_dim')}")
    parser.add_argument("--hidden", type=_sizes, default=None,
                        help=f"hidden layer sizes of both networks, e.g. 500,500 "
                             f"(default: {show('hidden')})")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--iw-samples", type=int, default=None,
                        help="importance samples per test image for log p(x) (default: 1000, "
                             "100 under CI=true)")
    parser.add_argument("--test-size", type=_positive, default=None,
                        help="evaluate on the first N test images only, N >= 1 (default: all)")
    parser.add_argument("--out", default=f"runs/{name}",
                        help="folder for the image grid and the results JSON")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint file: written every epoch, resumed from when it exists")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: for nets this small, more threads "
                             "barely help and slow down a busy machine; try more for MNIST "
                             "on a many-core machine; 0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-trace", action="store_true",
                        help="run the model and guide programs in Python on every step "
                             "(default: record the step once per batch shape and replay it, "
                             "see inference.TracedStep)")
    parser.set_defaults(digits_defaults=digits_defaults, mnist_defaults=mnist_defaults,
                        quick_epochs=quick_epochs)
    return parser


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
    return value


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
    defaults = dict(args.digits_defaults if data.name == "digits" else args.mnist_defaults)
    if quick_mode():
        defaults["epochs"] = args.quick_epochs
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.iw_samples is None:
        args.iw_samples = 100 if quick_mode() else 1000
    for flag in ("epochs", "batch_size", "iw_samples", "z_dim"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag.replace('_', '-')} must be at least 1")


def run(args, name, setup):
    """Load the data, train with `inference.Trainer`, evaluate, save a PNG and a JSON.

    `setup(args)` (called once the per-dataset defaults are filled in) returns
    (modules, step_fn, held_out_metrics, gen, q_net): the nn.Modules to train and
    checkpoint, `step_fn(x) -> (cost, objective)`, `held_out_metrics(images) ->
    {metric: value}`, and the model and guide templates. Returns the results.

    With `--checkpoint`, the run holds the checkpoint's writer lock throughout;
    the checkpoint records the training images and the settings that shape the
    model, and a resume with others is an error. A `--lr` given on resume
    overrides the checkpoint's (the Trainer warns).
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_binary_images(args.data, seed=args.seed)
    _resolve_defaults(args, data)
    modules, step_fn, held_out_metrics, gen, q_net = setup(args)
    z_dim = args.z_dim
    test = data.test if args.test_size is None else data.test[:args.test_size]
    batches = BinarizedBatches(data.train, args.batch_size, seed=args.seed,
                               binarize=data.dynamic)
    print(f"{name} on {data.name}: {len(data.train)} train / {len(test)} test images, "
          f"{len(batches)} batches of {args.batch_size} per epoch, {args.epochs} epochs")
    settings = {"model": name, "data": data.name, "z_dim": z_dim, "hidden": list(args.hidden),
                "batch_size": args.batch_size, "seed": args.seed}
    trainer = inference.Trainer(modules, lambda params: torch.optim.Adam(params, lr=args.lr),
                                checkpoint_path=args.checkpoint, progress=not args.no_progress,
                                trace=not args.no_trace,
                                fingerprint={"train_images": data.train, "settings": settings})
    with (contextlib.nullcontext() if args.checkpoint is None
          else checkpoint.writer_lock(args.checkpoint)):
        history, train_seconds = _train(trainer, step_fn, batches, args)
    metrics = _evaluate(held_out_metrics, gen, q_net, test, args)

    out = Path(args.out)
    x_show = torch.from_numpy(test[:50])
    save_image_grid(out / f"{name}_{data.name}.png",
                    [("samples", sample_images(gen, data.x_dim, z_dim)),
                     ("test images / reconstructions",
                      _interleave_rows(x_show, reconstruct(gen, q_net, x_show, z_dim)))],
                    data.image_shape)
    results = {"model": name, "data": data.name, "epochs": args.epochs,
               "batch_size": args.batch_size, "z_dim": z_dim, "hidden": list(args.hidden),
               "lr": args.lr, "seed": args.seed, "iw_samples": args.iw_samples,
               "test_size": len(test), "train_seconds": round(train_seconds, 2),
               "history": history, **metrics}
    (out / f"{name}_{data.name}.json").write_text(json.dumps(results, indent=2))
    print(f"saved {out / f'{name}_{data.name}.png'} and .json")
    return results


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


def _evaluate(held_out_metrics, gen, q_net, test, args):
    """The held-out metrics and the IS log-likelihood on `test`, printed as they come."""
    started = time.perf_counter()
    print(f"evaluating on {len(test)} test images (log p(x) by IS with {args.iw_samples} "
          f"samples per image)", flush=True)
    metrics = held_out_metrics(test)
    metrics["test_log_likelihood"] = mean_over_batches(
        lambda x: is_loglikelihood(gen, q_net, x, args.z_dim, n_samples=args.iw_samples),
        test, batch_size=100, desc="test log-likelihood", progress=not args.no_progress)
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
        epilog="Each takes --help; the models.latent models share "
               "their options (--data, --epochs, --checkpoint, ...).")
    parser.parse_args(argv)
    parser.print_help()


if __name__ == "__main__":
    main()
