"""MAF (Papamakarios et al. 2017): masked autoregressive layers, on MNIST or a UCI table.

    z ~ N(0, I_D) -> [MADE layer, batch norm] x L with reversals between -> x

Images (`--data mnist` or `fashion-mnist`): D = 784, then images [1, 28, 28]
and the sigmoid (`Inverse(Logit)`, alpha = 1e-6 as in the paper); reported
in bits/dim and in nats in logit space. The paper's MAF(5) uses one hidden
layer of 1024 units; the default here is CPU-sized (`--hidden 1024`).

Tables (`--data power-plant`, `wine-quality-red`, any UCI set of
`models.data.load_uci`): all columns of split 0, standardized by the
training mean and standard deviation; reported as the mean test
log-likelihood in nats of the standardized rows (as the paper's UCI tables).
samples.npy then holds [N, D] standardized rows.

    python -m models.flows.maf --epochs 10 --out runs/flows/maf
    python -m models.flows.maf --data power-plant --hidden 100 100 --out runs/flows/maf_power
"""
import math

import numpy as np
import torch

from models import zoo
from models.flows.common import IMAGE_SHAPE, FlowModel, add_flow_args, fit_vectors, run_images
from ppl.flows import Inverse, Logit, Reshape, maf

__all__ = ["maf_transforms", "load_table", "run_table", "main"]

MAX_LOG_SCALE = -math.log(1e-3)   # zuko's bound: each layer scales by at most 1000
TABLES = ("power-plant", "wine-quality-red", "bostonHousing", "concrete", "energy", "kin8nm",
          "naval-propulsion-plant", "protein-tertiary-structure", "yacht")


def maf_transforms(dim, n_layers=5, hidden=(512,), batch_norm=True, image_shape=None,
                   alpha=1e-6, max_log_scale=MAX_LOG_SCALE):
    """MAF's layers base -> value; with `image_shape`, ending in images through the sigmoid.

    `max_log_scale` soft-bounds each layer's log-scales (`ppl.flows.MaskedAutoregressive`):
    sampling runs the MADEs on their own outputs, off the data they were fit to, where an
    unbounded log-scale can reach exp(a) = inf (MNIST after 120 CPU s of training did).
    """
    layers = list(maf(dim, n_layers, list(hidden), batch_norm=batch_norm,
                      max_log_scale=max_log_scale))
    if image_shape is not None:
        layers += [Reshape(dim, image_shape), Inverse(Logit(image_shape, alpha))]
    return layers


def load_table(name, train_size=None, test_size=None):
    """Split 0 of UCI set `name`, every column, standardized by the training statistics:
    (train [n, D], test [m, D], log |std| summed, to convert back to the raw units)."""
    from models.data.uci import load_uci
    split = load_uci(name, split=0, dtype=torch.float32)
    train = torch.cat([split.x_train, split.y_train[:, None]], dim=1)
    test = torch.cat([split.x_test, split.y_test[:, None]], dim=1)
    keep = train.std(0) > 0                 # constant columns carry no density
    train, test = train[:, keep], test[:, keep]
    mean, std = train.mean(0), train.std(0)
    train, test = (train - mean) / std, (test - mean) / std
    return zoo.first(train, train_size), zoo.first(test, test_size), std.log().sum().item()


def run_table(args, settings):
    """Train MAF on a UCI table and write metrics.json and samples.npy [N, D]."""
    zoo.start(args)
    budget = zoo.Budget()
    train_x, test_x, log_std = load_table(args.data, args.train_size, args.test_size)
    dim = train_x.shape[1]
    flow = FlowModel(maf_transforms(dim, args.layers, args.hidden, not args.no_batch_norm))
    settings = {**settings, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                "data": args.data, "dim": dim}
    metrics, epochs, steps = fit_vectors(args, flow, train_x, test_x, settings)
    metrics["test_loglik_nats_raw_units"] = metrics["test_loglik_nats"] - log_std
    with torch.no_grad():
        samples = flow.sample(args.n_samples)
    np.save(f"{args.out}/samples.npy", samples.numpy().astype(np.float32))
    result = zoo.write_metrics(args.out, metrics, budget.as_dict(epochs, train_steps=steps, **settings))
    print(", ".join(f"{k} = {v:.4g}" for k, v in metrics.items()))
    return result


def main(argv=None):
    parser = zoo.parser("flows.maf", __doc__.splitlines()[0], data="mnist", epochs=10)
    add_flow_args(parser, lr=1e-3, batch_size=100)
    parser.add_argument("--layers", type=zoo.positive_int, default=5, help="MADE layers (5)")
    parser.add_argument("--hidden", type=zoo.positive_int, nargs="+", default=None,
                        help="hidden units per MADE layer (512 on images, 100 100 on tables)")
    parser.add_argument("--no-batch-norm", action="store_true")
    args = parser.parse_args(argv)
    settings = {"model": "maf", "layers": args.layers, "batch_norm": not args.no_batch_norm,
                "max_log_scale": MAX_LOG_SCALE}
    if args.data in TABLES:
        args.hidden = args.hidden or [100, 100]
        return run_table(args, {**settings, "hidden": args.hidden})
    args.hidden = args.hidden or [512]
    zoo.start(args)
    flow = FlowModel(maf_transforms(784, args.layers, args.hidden, not args.no_batch_norm,
                                    IMAGE_SHAPE))
    return run_images(args, flow, {**settings, "hidden": args.hidden})


if __name__ == "__main__":
    main()
