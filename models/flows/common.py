"""What the image flows share: data, the model as a BayesianNet, training, metrics.

Each model is a `BayesianNet` with one node, `x ~ FlowDistribution(base, transforms)`:
`base` a standard normal on R^D (D = 784), `transforms` base -> value ending
with `Inverse(Logit(...))`, so `x` lives in the unit cube. Training data are
dequantized afresh each step, `u = (pixels + U) / 256`; the cost is the mean
negative log-likelihood per dimension. Reported (on the test set, one fixed
dequantization):

- `test_bits_per_dim`: `(-log p(u) + D log 256) / (D log 2)` (`ppl.flows.bits_per_dim`);
- `test_loglik_logit_nats`: the log-density of `logit(1e-6 + (1 - 2e-6) u)`,
  the MAF paper's "logit space" (its Table 2, whatever the model's own alpha).
"""
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import inference
import ppl
from models import zoo
from ppl.distributions import FlowDistribution, Normal
from ppl.flows import BatchNorm, Logit, bits_per_dim, dequantize

__all__ = ["IMAGE_SHAPE", "FlowModel", "add_flow_args", "load_images", "epoch_batches",
           "train", "image_metrics", "run_images", "mean_over", "flow_step",
           "calibrate_batch_norm", "fit_vectors"]

IMAGE_SHAPE = (1, 28, 28)
MAF_PAPER_ALPHA = 1e-6


class FlowModel(nn.Module):
    """A flow from a standard normal on R^D (D = `transforms[0]`'s size) to values
    (images or table rows). `model(observed, n_samples)` is the BayesianNet with the node `x`.
    """

    def __init__(self, transforms):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        first = self.transforms[0].event_shape
        self.register_buffer("loc", torch.zeros(first))

    def distribution(self):
        base = Normal(self.loc, std=1., group_ndims=len(self.loc.shape))
        return FlowDistribution(base, self.transforms)

    def model(self, observed=None, n_samples=None):
        bn = ppl.BayesianNet(observed=observed)
        bn.stochastic("x", self.distribution(), n_samples=n_samples)
        return bn

    def log_prob(self, x):
        """log p(x) [n] of values x [n, *value_shape]."""
        return self.model({"x": x}).log_joint()

    def sample(self, n):
        """n samples [n, *value_shape]."""
        return self.model(n_samples=n)["x"].tensor


def add_flow_args(parser, lr, batch_size):
    """The image flows' training options (after the zoo's)."""
    parser.add_argument("--lr", type=float, default=lr, help=f"Adam's learning rate ({lr})")
    parser.add_argument("--batch-size", type=zoo.positive_int, default=batch_size)
    parser.add_argument("--cpu-budget", type=float, default=None,
                        help="stop training at the first epoch end past this many CPU seconds")
    return parser


def load_images(args):
    """uint8 train / test images [n, 1, 28, 28] of `--data` (mnist, fashion-mnist or a
    folder of the four IDX files), cut to `--train-size` / `--test-size`."""
    from models.data import dataset_dir, load_mnist
    path = dataset_dir(args.data) if args.data in ("mnist", "fashion-mnist") else args.data
    data = load_mnist(path)
    train = torch.from_numpy(zoo.first(data.train_images, args.train_size).copy())
    test = torch.from_numpy(zoo.first(data.test_images, args.test_size).copy())
    return train.reshape(-1, *IMAGE_SHAPE), test.reshape(-1, *IMAGE_SHAPE)


def epoch_batches(data, batch_size, seed, stop=None):
    """A callable epoch -> shuffled batches (the same for the same epoch, so a resumed run
    sees what the uninterrupted one would have); the epoch ends early once `stop()` is true."""
    def batches(epoch):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(0, len(data), batch_size):
            if i and stop is not None and stop():
                return
            yield data[order[i:i + batch_size]]
    return batches


def train(args, modules, step_fn, train_data, settings):
    """Adam (`--lr`) on `step_fn` for `--epochs` epochs, one `Trainer.fit` epoch at a time,
    stopping once past `--cpu-budget` CPU seconds (checked before each batch);
    checkpointed to `--checkpoint`. Returns (history, epochs run, steps taken)."""
    started = time.process_time()
    budget = getattr(args, "cpu_budget", None)

    def spent():
        return budget is not None and time.process_time() - started > budget
    batches = epoch_batches(train_data, args.batch_size, args.seed, stop=spent)
    trainer = inference.Trainer(modules, lambda params: torch.optim.Adam(params, lr=args.lr),
                                checkpoint_path=args.checkpoint,
                                checkpoint_every=100 if args.checkpoint else None,
                                progress=not args.no_progress,
                                fingerprint={"train": train_data, "settings": settings})
    history = []
    for epoch in range(1, args.epochs + 1):
        history = trainer.fit(step_fn, batches, n_epochs=epoch)
        if not args.no_progress:
            print(f"epoch {len(history)}: train objective {history[-1]:.4f}", flush=True)
        if spent():
            break
    return history, len(history), trainer.log[-1]["step"] if trainer.log else 0


def mean_over(fn, data, batch_size=500, desc="test", progress=True):
    """The mean over `data` of `fn(batch)` -> dict name -> [b] tensor, without gradients."""
    totals = {}
    with torch.no_grad():
        for i in tqdm(range(0, len(data), batch_size), desc=desc, disable=not progress,
                      leave=False):
            for name, values in fn(data[i:i + batch_size]).items():
                totals[name] = totals.get(name, 0.) + values.double().sum().item()
    return {name: total / len(data) for name, total in totals.items()}


def image_metrics(log_prob, test, seed, progress=True):
    """test_bits_per_dim and test_loglik_logit_nats of `log_prob(u) -> [n]` on uint8 `test`,
    dequantized once with noise seeded by `seed`."""
    dims = int(np.prod(test.shape[1:]))
    logit = Logit(tuple(test.shape[1:]), alpha=MAF_PAPER_ALPHA).double()
    u_all = dequantize(test, generator=torch.Generator().manual_seed(seed))

    def fn(u):
        log_p = log_prob(u)
        logit_space = log_p.double() - logit(u.double())[1]
        return {"test_bits_per_dim": bits_per_dim(log_p.double(), dims),
                "test_loglik_logit_nats": logit_space}
    return mean_over(fn, u_all, progress=progress)


def flow_step(flow):
    """`step_fn(pixels) -> (cost, bits/dim)`: fresh dequantization, cost = NLL per dim."""
    def step(pixels):
        u = dequantize(pixels)
        log_p = flow.log_prob(u)
        dims = u[0].numel()
        return -log_p.mean() / dims, bits_per_dim(log_p, dims)
    return step


def calibrate_batch_norm(flow, data, n=2000):
    """Set every `BatchNorm`'s running statistics to those of `data[:n]` as it reaches the
    layer (one pass in training mode with momentum 1), as the MAF paper does after training."""
    layers = [m for m in flow.modules() if isinstance(m, BatchNorm)]
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    flow.train()
    with torch.no_grad():
        for m in layers:
            m.momentum = 1.
        flow.log_prob(data[:n])
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum


def fit_vectors(args, flow, train_x, test_x, settings):
    """Train `flow` by maximum likelihood on rows `train_x` [n, D], calibrate its batch
    norms, and score `test_x`: (metrics, epochs, steps), metrics holding
    `test_loglik_nats` (mean per row) and `train_loglik_nats_last_epoch`."""
    def step(x):
        log_p = flow.log_prob(x)
        return -log_p.mean(), log_p
    history, epochs, steps = train(args, {"flow": flow}, step, train_x, settings)
    calibrate_batch_norm(flow, train_x)
    flow.eval()
    metrics = mean_over(lambda x: {"test_loglik_nats": flow.log_prob(x)}, test_x,
                        progress=not args.no_progress)
    metrics["train_loglik_nats_last_epoch"] = history[-1]
    return metrics, epochs, steps


def run_images(args, flow, settings):
    """Train `flow` (an `FlowModel`) on `--data`, then write metrics.json and samples."""
    zoo.start(args)
    budget = zoo.Budget()
    train_x, test_x = load_images(args)
    settings = {**settings, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                "data": args.data}
    history, epochs, steps = train(args, {"flow": flow}, flow_step(flow), train_x, settings)
    calibrate_batch_norm(flow, dequantize(train_x[:2000], generator=torch.Generator()
                                          .manual_seed(args.seed)))
    flow.eval()
    metrics = image_metrics(flow.log_prob, test_x, args.seed, progress=not args.no_progress)
    metrics["train_bits_per_dim_last_epoch"] = history[-1]
    metrics["n_parameters"] = sum(p.numel() for p in flow.parameters())
    with torch.no_grad():   # Logit's alpha lets the sigmoid overshoot [0, 1] a little
        samples = flow.sample(args.n_samples).clamp(0, 1)
    zoo.save_samples(args.out, samples.reshape(args.n_samples, -1))
    result = zoo.write_metrics(args.out, metrics, budget.as_dict(epochs, train_steps=steps, **settings))
    print(", ".join(f"{k} = {v:.4g}" for k, v in metrics.items()))
    return result

