"""A small fully connected Boltzmann machine, learnt and scored exactly by enumeration.

    p(v, h) ∝ exp(a.v + c.h + v.W h + v.Jv v / 2 + h.Jh h / 2)    (Jv, Jh symmetric, 0 diagonal)

Every pair of units is coupled (visible-visible, hidden-hidden too), so no
layer is a block: sampling is element-wise Gibbs (`inference.Gibbs` draws
each unit from its conditional by enumerating its two values on the net).
The images are binarized MNIST shrunk to 4 x 4 (a pixel is on when over a
quarter of its 7 x 7 block is), so the 16 visible and `--n-hidden` hidden
units have few enough joint states to enumerate: the log-likelihood and its
gradient are exact (log Z by `inference.energy.exact_log_partition`, log
sum_h p*(v, h) over the hidden states). test_loglik_nats is per 16-pixel
image; samples.npy holds Gibbs chains' visible units from noise, each pixel
drawn back at 7 x 7.

    python -m models.energy.bm --epochs 2
"""
import torch

import ppl
from inference import energy
from models import zoo
from models.energy import common

__all__ = ["main", "bm_model", "shrink"]

SIDE, BLOCK = 4, 7


def shrink(images):
    """[n, 784] 0/1 images -> [n, 16]: a pixel per 7 x 7 block, on when > 1/4 of it is."""
    blocks = images.reshape(-1, SIDE, BLOCK, SIDE, BLOCK).mean((2, 4))
    return (blocks > 0.25).to(images.dtype).reshape(len(images), SIDE * SIDE)


def bm_model(n_visible, n_hidden):
    """(template, EnergyModel) of a fully connected BM; its layers are not blocks."""
    @ppl.meta_bayesian_net(scope="bm")
    def bm():
        a = ppl.param("a", lambda: torch.zeros(n_visible))
        c = ppl.param("c", lambda: torch.zeros(n_hidden))
        W = ppl.param("W", lambda: 0.01 * torch.randn(n_visible, n_hidden))
        Jv = ppl.param("Jv", lambda: 0.01 * torch.randn(n_visible, n_visible)).triu(1)
        Jh = ppl.param("Jh", lambda: 0.01 * torch.randn(n_hidden, n_hidden)).triu(1)
        bn = ppl.BayesianNet()
        v = bn.bernoulli("v", logits=a, group_ndims=1)
        h = bn.bernoulli("h", logits=c, group_ndims=1)
        bn.factor("v_h", ((v @ W) * h).sum(-1))
        bn.factor("v_v", ((v @ Jv) * v).sum(-1))   # each pair once: the upper triangle
        bn.factor("h_h", ((h @ Jh) * h).sum(-1))
        return bn

    return bm, ppl.EnergyModel(bm(), {"v": n_visible, "h": n_hidden})


def log_likelihood(model, log_z, v):
    """Exact log p(v) [n]: log sum over every hidden state of p*(v, h), minus log Z."""
    hidden = torch.cartesian_prod(*[torch.tensor([0., 1.])] * model.layers["h"]) \
        .reshape(-1, model.layers["h"]).to(v.dtype)
    joint = model.log_joint({"v": v.expand(len(hidden), *v.shape), "h": hidden[:, None, :]})
    return torch.logsumexp(joint, 0) - log_z


def main(argv=None):
    """`python -m models.energy.bm ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = zoo.parser("energy.bm", __doc__.splitlines()[0], data="binarized_mnist",
                        epochs=2, quick_epochs=1)
    common.add_options(parser, lr=0.1, batch_size=1000, gibbs_steps=200)
    parser.add_argument("--n-hidden", type=zoo.positive_int, default=3)
    args = parser.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    train, test = (shrink(x) for x in common.load_data(args))
    template, model = bm_model(SIDE * SIDE, args.n_hidden)

    def step(batch):
        loglik = log_likelihood(model, energy.exact_log_partition(model), batch)
        return -loglik.mean(), loglik

    common.train({"bm": template}, step, train, args, checkpoint=args.checkpoint)
    with torch.no_grad():
        loglik = log_likelihood(model, energy.exact_log_partition(model), test).mean()
        start = {"v": torch.bernoulli(torch.full((args.n_samples, SIDE * SIDE), 0.5)),
                 "h": torch.bernoulli(torch.full((args.n_samples, args.n_hidden), 0.5))}
        state = common.gibbs_chains(model.meta_bn, start, args.gibbs_steps,
                                    not args.no_progress)
    pixels = state["v"].reshape(-1, SIDE, 1, SIDE, 1).expand(-1, SIDE, BLOCK, SIDE, BLOCK)
    zoo.save_samples(args.out, pixels.reshape(len(pixels), -1))
    return zoo.write_metrics(args.out, {"test_loglik_nats": loglik}, budget.as_dict(
        args.epochs, n_hidden=args.n_hidden, lr=args.lr, batch_size=args.batch_size,
        loglik="exact, per 4 x 4 image"))


if __name__ == "__main__":
    main()
