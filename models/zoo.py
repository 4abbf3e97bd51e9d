"""The zoo convention every runnable model follows: its command line and its outputs.

    parser = zoo.parser("latent.conv_vae", "ZhuSuan's convolutional VAE",
                        data="mnist", epochs=10, quick_epochs=1)
    parser.add_argument("--z-dim", type=int, default=40)     # the model's own options
    args = parser.parse_args(argv)
    zoo.start(args)                          # threads, seed, the output folder
    budget = zoo.Budget()                    # a wall clock from here
    ...                                      # train with inference.Trainer(...,
                                             #   checkpoint_path=args.checkpoint)
    zoo.save_samples(args.out, samples)      # DIR/samples.npy [N, 784] + DIR/samples.png
    zoo.write_metrics(args.out, {"test_loglik_nats": -92.1}, budget.as_dict(args.epochs))

Every model takes `--data --epochs --seed --out DIR --checkpoint FILE
--n-samples N --train-size N --test-size N` (plus `--threads` and
`--no-progress`) and writes `DIR/metrics.json`: metric name -> number, plus a
`budget` entry (epochs, wall and CPU seconds, device, torch threads). Metric names:
`test_loglik_nats` (mean per example, negative), `test_elbo_nats`,
`test_error` (fraction), `test_bits_per_dim`, `test_rmse`, `test_loglik`.
"""
import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from inference import distributed

__all__ = ["parser", "start", "quick_mode", "first", "Budget", "write_metrics",
           "save_samples", "positive_int"]


def quick_mode():
    """True under CI (`CI=1/true/yes`): runnable models then shorten their defaults."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def positive_int(text):
    """argparse type: an int >= 1, with an error that says so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
    return value


def parser(name, description, *, data, epochs, quick_epochs=1, n_samples=100):
    """The zoo's shared command line for `python -m models.<name>`.

    `data`: the default `--data`; `epochs`: the default `--epochs`, replaced by
    `quick_epochs` under CI=true when the flag is not given; `n_samples`: how
    many samples to draw and save by default.
    """
    p = argparse.ArgumentParser(prog=f"python -m models.{name}", description=description)
    p.add_argument("--data", default=data, help=f"data set name or path (default: {data})")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"training epochs (default: {epochs}; {quick_epochs} under CI=true)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", default=f"runs/{name.replace('.', '/')}",
                   help="output folder for metrics.json, samples.npy and pictures")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file: written as training goes, resumed from when it exists")
    p.add_argument("--n-samples", type=positive_int, default=n_samples,
                   help=f"samples to draw and save (default: {n_samples})")
    p.add_argument("--train-size", type=positive_int, default=None,
                   help="train on the first N training examples only (default: all)")
    p.add_argument("--test-size", type=positive_int, default=None,
                   help="evaluate on the first N test examples only (default: all)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1; 0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(default_epochs=epochs, quick_epochs=quick_epochs)
    return p


def start(args):
    """Fill in `--epochs`, set torch's threads and seeds, and create `--out`."""
    if args.epochs is None:
        args.epochs = args.quick_epochs if quick_mode() else args.default_epochs
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed % 2 ** 32)
    Path(args.out).mkdir(parents=True, exist_ok=True)


def first(array, n):
    """The first `n` rows of `array` (all of them when `n` is None)."""
    return array if n is None else array[:n]


class Budget:
    """A wall clock started at construction; `as_dict` is the metrics' `budget` entry."""

    def __init__(self):
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def seconds(self):
        return time.perf_counter() - self.started

    def as_dict(self, epochs, device="cpu", **extra):
        """Epochs, wall and CPU seconds (CPU time is the budget on a shared machine)."""
        return {"epochs": epochs, "wall_seconds": round(self.seconds(), 2),
                "cpu_seconds": round(time.process_time() - self.cpu_started, 2),
                "device": str(device), "torch_threads": torch.get_num_threads(), **extra}


def write_metrics(out, metrics, budget):
    """Write `out/metrics.json`: {name: number, ..., "budget": budget}; returns the dict.

    Every metric must be a finite real number (a NaN metric is a bug, not a result).
    """
    flat = {}
    for name, value in metrics.items():
        if name == "budget":
            raise ValueError("write_metrics: pass the budget as `budget`, not as a metric")
        if isinstance(value, torch.Tensor):
            value = value.item()
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"write_metrics: metric {name!r} is {value}, expected a finite number")
        flat[name] = value
    flat["budget"] = dict(budget)
    if distributed.is_main():  # under torchrun, rank 0 writes
        path = Path(out) / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(flat, indent=2))
    return flat


def save_samples(out, samples, image_shape=(28, 28), columns=10, title="samples"):
    """Save image samples as `out/samples.npy` (float32 [N, pixels]) and `out/samples.png`.

    `samples`: [N, ...] values in [0, 1] (tensor or array); the picture shows
    up to 100 of them as a grid of `image_shape` images.
    """
    from models.experiment import save_image_grid
    array = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else samples
    array = np.asarray(array, dtype=np.float32).reshape(len(array), -1)
    if array.shape[1] != int(np.prod(image_shape)):
        raise ValueError(f"save_samples: samples have {array.shape[1]} pixels, expected "
                         f"{int(np.prod(image_shape))} for images of shape {tuple(image_shape)}")
    if array.size and (array.min() < 0 or array.max() > 1 or not np.isfinite(array).all()):
        raise ValueError("save_samples: samples must lie in [0, 1]")
    if distributed.is_main():  # under torchrun, rank 0 writes
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "samples.npy", array)
        save_image_grid(out / "samples.png", [(title, array[:100])], image_shape,
                        columns=columns)
    return array
