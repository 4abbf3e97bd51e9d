"""A deep Boltzmann machine with two hidden layers on binarized MNIST (Salakhutdinov & Hinton 2009).

    p(v, h1, h2) ∝ exp(b.v + c1.h1 + c2.h2 + v W1 h1 + h1 W2 h2)

Learnt by stochastic maximum likelihood: the data term at the mean-field
posterior q(h1, h2 | v) (`--mean-field` fixed-point updates), the model term
from persistent Gibbs chains (`--n-chains`, one block sweep per step: v, h1,
h2), plain SGD at a small rate (at 0.05 the chains stop mixing and the model
collapses onto a few modes). No greedy pretraining: the weights start small,
the visible biases at the data's base rates. Scored as in the paper: log Z by AIS with
v and h2 summed out (the runs move h1), and the variational lower bound
E_q[log p*(v, h)] + H(q) - log Z per test image. Samples: Gibbs chains from
noise. Published: about -84.62 nats for 784-500-1000 (with pretraining and
far longer training).

    python -m models.energy.dbm --epochs 10
"""
import time

import torch

import ppl
from inference import energy
from models import zoo
from models.energy import common

__all__ = ["main", "dbm_model"]


def dbm_model(n_visible, n_hidden, n_hidden2, visible_logits=None):
    """(template, EnergyModel) of a two-hidden-layer DBM, its conditionals written out."""
    def initial_b():
        return torch.zeros(n_visible) if visible_logits is None else visible_logits.clone()

    @ppl.meta_bayesian_net(scope="dbm")
    def dbm():
        W1 = ppl.param("W1", lambda: 0.01 * torch.randn(n_visible, n_hidden))
        W2 = ppl.param("W2", lambda: 0.01 * torch.randn(n_hidden, n_hidden2))
        b = ppl.param("b", initial_b)
        c1 = ppl.param("c1", lambda: torch.zeros(n_hidden))
        c2 = ppl.param("c2", lambda: torch.zeros(n_hidden2))
        bn = ppl.BayesianNet()
        v = bn.bernoulli("v", logits=b, group_ndims=1)
        h1 = bn.bernoulli("h1", logits=c1, group_ndims=1)
        h2 = bn.bernoulli("h2", logits=c2, group_ndims=1)
        bn.factor("v_h1", ((v @ W1) * h1).sum(-1))
        bn.factor("h1_h2", ((h1 @ W2) * h2).sum(-1))
        return bn

    dbm()
    list(dbm.parameters())  # make the parameters now: the conditionals read them
    p = dbm.params
    bernoulli = ppl.distributions.Bernoulli
    conditionals = {
        "v": lambda x: bernoulli(logits=p["b"] + x["h1"] @ p["W1"].T, group_ndims=1),
        "h1": lambda x: bernoulli(logits=p["c1"] + x["v"] @ p["W1"] + x["h2"] @ p["W2"].T,
                                  group_ndims=1),
        "h2": lambda x: bernoulli(logits=p["c2"] + x["h1"] @ p["W2"], group_ndims=1),
    }
    return dbm, ppl.EnergyModel(dbm(), {"v": n_visible, "h1": n_hidden, "h2": n_hidden2},
                                conditionals=conditionals)


def main(argv=None):
    """`python -m models.energy.dbm ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = common.ais_parser("dbm", __doc__, lr=0.005)
    parser.add_argument("--n-hidden2", type=zoo.positive_int, default=1000)
    parser.add_argument("--n-chains", type=zoo.positive_int, default=100,
                        help="persistent chains of the model term (100)")
    parser.add_argument("--mean-field", type=zoo.positive_int, default=10,
                        help="mean-field updates of the data term per step (10)")
    args = parser.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    train, test = common.load_data(args)
    base = energy.base_rate_logits(train)
    template, model = dbm_model(train.shape[1], args.n_hidden, args.n_hidden2, base)
    learner = energy.ContrastiveDivergence(model, k=1, persistent=True, n_chains=args.n_chains,
                                           mean_field_iterations=args.mean_field)
    started = time.process_time()
    common.train({"dbm": template, "pcd": learner}, learner.step, train, args,
                 checkpoint=args.checkpoint)
    train_cpu = time.process_time() - started
    with torch.no_grad():
        log_z = common.estimate_log_z(model, {"v": base}, args, summed=("v", "h2"))
        bounds = [energy.mean_field_bound(model, log_z, {"v": chunk}, ["h1", "h2"])
                  for chunk in torch.split(test, 1000)]
        start = {"v": torch.bernoulli(torch.full((args.n_samples, train.shape[1]), 0.5)),
                 "h1": torch.zeros(args.n_samples, args.n_hidden),
                 "h2": torch.zeros(args.n_samples, args.n_hidden2)}
        _, samples = common.gibbs_samples(model, start, args.gibbs_steps, not args.no_progress)
    return common.write_outputs(args, budget, samples, torch.cat(bounds).mean(), log_z,
                                train_cpu, n_hidden2=args.n_hidden2, n_chains=args.n_chains,
                                mean_field=args.mean_field, loglik="variational lower bound")


if __name__ == "__main__":
    main()
