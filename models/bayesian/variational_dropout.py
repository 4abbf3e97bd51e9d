"""ZhuSuan's variational dropout example: an MNIST classifier with learned Gaussian dropout.

    python -m models.bayesian.variational_dropout                     # 10,000 images, 10 epochs
    python -m models.bayesian.variational_dropout --train-size 60000 --epochs 50

The model (ZhuSuan's `var_dropout`, Kingma, Salimans & Welling 2015): a
784-100-100-100-10 net whose every layer's input is multiplied by
multiplicative noise, one value per data point and input unit,

    eps_i ~ N(1, 1)                       [P, n, n_in]     prior of layer i's noise
    h_{i+1} = BN(W_i (h_i * eps_i) + b_i), ReLU between layers
    y ~ Categorical(logits = h_last)      [P, n]

and the guide q(eps_i) = N(1, alpha_i) with one learned alpha_i =
sigmoid(logit_alpha) per input unit (Gaussian dropout whose rate is
learned). As in ZhuSuan, the noise terms log p(eps) - log q(eps) are divided
by the training-set size N (the noise stands for a weight posterior shared
by all N points, as in Kingma et al.'s local reparameterization); here that
is the model's `log_joint` sum log p(eps) + N log p(y | eps), with the ELBO
divided by N. Trained by `elbo(...).sgvb()` with Adam (1e-3, eps 1e-4, 10
particles, batches of 1000: ZhuSuan's settings), features standardized.
Metrics (`DIR/metrics.json`): `test_error` and `test_loglik_nats` (mean log
probability of the true label) of the predictive, the softmax averaged over
`--n-samples` (100) draws of the noise; the learned noise variances alpha
(mean per layer) are printed.
"""
import math

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import inference
import ppl
from models import zoo
from models.data.mnist import load_mnist

__all__ = ["NET_SIZE", "build_model", "build_variational", "new_templates", "load_data",
           "train", "evaluate", "main"]

NET_SIZE = (784, 100, 100, 100, 10)


def _eps_names(net_size):
    return [f"layer{i}/eps" for i in range(len(net_size) - 1)]


def _model(x, net_size, n_particles):
    """p(eps) p(y | x, eps) for x [n, n_x]: eps_i [P, n, n_in], y [P, n] (its logits [P, n, 10])."""
    bn = ppl.BayesianNet()
    n = x.shape[0]
    h = x
    for i, (n_in, n_out) in enumerate(zip(net_size[:-1], net_size[1:])):
        eps = bn.normal(f"layer{i}/eps", torch.ones(n, n_in), std=1., group_ndims=1,
                        n_samples=n_particles)
        h = ppl.module(f"fc{i}", lambda: nn.Linear(n_in, n_out))(h * eps)
        norm = ppl.module(f"bn{i}", lambda: nn.BatchNorm1d(n_out))
        h = norm(h.reshape(-1, n_out)).reshape(n_particles, n, n_out)
        if i < len(net_size) - 2:
            h = torch.relu(h)
    bn.output("logits", h)
    bn.categorical("y", h)
    return bn


def _variational(n, net_size, n_particles):
    """q(eps_i) = N(1, alpha_i), alpha_i = sigmoid(logit_alpha_i) [n_in]: eps_i [P, n, n_in]."""
    bn = ppl.BayesianNet()
    for i, n_in in enumerate(net_size[:-1]):
        logit_alpha = ppl.param(f"layer{i}_logit_alpha", lambda: torch.randn(n_in))
        logstd = 0.5 * torch.log(torch.sigmoid(logit_alpha) + 1e-10)
        bn.normal(f"layer{i}/eps", torch.ones(n, n_in), logstd=logstd.expand(n, n_in),
                  group_ndims=1, n_samples=n_particles)
    return bn


def _log_joint(n_train):
    def log_joint(bn):
        noise = sum(bn.cond_log_prob([k for k in bn.stochastic_nodes if k != "y"]))
        return noise + n_train * bn.cond_log_prob("y")
    return log_joint


def new_templates(n_train):
    """Fresh (model, guide) templates; the model's log joint weighs log p(y | eps) by N."""
    return (ppl.meta_bayesian_net(scope="model", log_joint=_log_joint(n_train))(_model),
            ppl.reuse_variables(scope="variational")(_variational))


build_model, build_variational = new_templates(60000)


def load_data(train_size=None, test_size=None, path=None):
    """MNIST as float [n, 784] standardized with the training statistics, int64 labels [n]."""
    mnist = load_mnist(path)
    x_train = torch.as_tensor(zoo.first(mnist.train_images, train_size).reshape(-1, 784),
                              dtype=torch.float32)
    x_test = torch.as_tensor(zoo.first(mnist.test_images, test_size).reshape(-1, 784),
                             dtype=torch.float32)
    mean, std = x_train.mean(0), x_train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((x_train - mean) / std, torch.as_tensor(zoo.first(mnist.train_labels, train_size),
                                                    dtype=torch.int64),
            (x_test - mean) / std, torch.as_tensor(zoo.first(mnist.test_labels, test_size),
                                                   dtype=torch.int64))


def _check_labels(y, n, n_class):
    if y.shape != (n,) or y.dtype != torch.int64 or (len(y) and not
                                                     (0 <= int(y.min()) <= int(y.max()) < n_class)):
        raise ValueError(f"node 'y': expected int64 labels in 0..{n_class - 1} of shape ({n},), "
                         f"got {y.dtype} of shape {tuple(y.shape)}")


def train(model, variational, x, y, *, epochs, batch_size=1000, n_particles=10,
          learning_rate=1e-3, net_size=NET_SIZE, checkpoint=None, progress=True):
    """Train by the SGVB gradient of the ELBO / N; returns the per-epoch bounds."""
    _check_labels(y, len(x), net_size[-1])
    n_train = len(x)

    def step(batch):
        xb, yb = batch
        lower_bound = inference.elbo(model(xb, net_size, n_particles), {"y": yb},
                                     variational=variational(len(xb), net_size, n_particles),
                                     axis=0)
        return lower_bound.sgvb().mean() / n_train, lower_bound / n_train

    def batches(epoch):
        order = torch.randperm(n_train)
        return [(x[order[i:i + batch_size]], y[order[i:i + batch_size]])
                for i in range(0, n_train - batch_size + 1, batch_size)]

    trainer = inference.Trainer({"model": model, "variational": variational},
                                lambda params: torch.optim.Adam(params, lr=learning_rate,
                                                                eps=1e-4),
                                checkpoint_path=checkpoint, progress=progress)
    model.train()
    return trainer.fit(step, batches, epochs)


@torch.no_grad()
def evaluate(model, variational, x, y, *, n_particles=100, batch_size=1000, net_size=NET_SIZE):
    """(test error, test log-likelihood per image) of the predictive: the softmax averaged
    over `n_particles` draws of q's noise, batch norm in eval mode."""
    _check_labels(y, len(x), net_size[-1])
    model.eval()
    errors, log_lik = 0, 0.
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            noise = variational(len(xb), net_size, n_particles)
            bn = model(xb, net_size, n_particles).observe(
                **{name: noise.outputs(name) for name in _eps_names(net_size)})
            probs = bn["logits"].softmax(-1).mean(0)
            errors += int((probs.argmax(-1) != yb).sum())
            log_lik += float(probs.gather(1, yb[:, None]).log().sum())
    finally:
        model.train()
    return errors / len(x), log_lik / len(x)


def main(argv=None):
    """`python -m models.bayesian.variational_dropout ARGV`; returns the metrics written."""
    parser = zoo.parser("bayesian.variational_dropout",
                        "ZhuSuan's variational dropout classifier on MNIST",
                        data="mnist", epochs=10, quick_epochs=1)
    parser.add_argument("--batch-size", type=zoo.positive_int, default=1000)
    parser.add_argument("--n-particles", type=zoo.positive_int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.set_defaults(train_size=10000, n_samples=100)
    args = parser.parse_args(argv)
    if args.data != "mnist":
        parser.error(f"--data: only 'mnist' is supported, got {args.data!r}")
    zoo.start(args)
    budget = zoo.Budget()
    x_train, y_train, x_test, y_test = load_data(args.train_size, args.test_size)
    batch_size = min(args.batch_size, len(x_train))
    model, variational = new_templates(len(x_train))
    train(model, variational, x_train, y_train, epochs=args.epochs, batch_size=batch_size,
          n_particles=args.n_particles, learning_rate=args.lr, checkpoint=args.checkpoint,
          progress=not args.no_progress)
    error, log_lik = evaluate(model, variational, x_test, y_test, n_particles=args.n_samples)
    alphas = [torch.sigmoid(variational.params[f"layer{i}_logit_alpha"]).mean().item()
              for i in range(len(NET_SIZE) - 1)]
    print(f"test error {error:.4f}, test log-likelihood {log_lik:.4f} nats per image, mean "
          f"alpha per layer {', '.join(f'{a:.3f}' for a in alphas)}")
    return zoo.write_metrics(args.out, {"test_error": error, "test_loglik_nats": log_lik},
                             budget.as_dict(args.epochs, train_size=len(x_train),
                                            test_size=len(x_test)))


if __name__ == "__main__":
    main()
