"""A deep belief net on binarized MNIST: RBMs stacked greedily, scored by AIS + importance sampling.

    p(v, h1, h2) = p(v | h1) p(h1, h2)
    p(v | h1) = Bernoulli(sigmoid(b1 + W1 h1))          the first RBM's generative half
    p(h1, h2) ∝ exp(b2.h1 + c2.h2 + h1 W2 h2)           the top RBM

Greedy layer-wise learning (Hinton et al. 2006): an RBM 784-`--n-hidden` by
CD-`--cd-k` on the data, then a top RBM `--n-hidden`-`--n-hidden2` on hidden
states drawn from the first RBM's q(h1 | v) = sigmoid(c1 + v W1). The DBN is
one `BayesianNet`: a directed Bernoulli node v under the top RBM's energy.
Scored as Salakhutdinov & Murray (2008): log Z of the top RBM by AIS (which
is the DBN's, p(v | h1) being normalized), and log p(v) by importance
sampling over h1 from q(h1 | v) with h2 summed out (`--is-samples` per
image; a stochastic lower bound). Samples: Gibbs chains in the top RBM from
noise, then the visible means given h1. Published: about -86.22 nats for a
784-500-2000 DBN.

    python -m models.energy.dbn --epochs 10
"""
import time

import torch

import ppl
from inference import energy
from models import zoo
from models.energy import common

__all__ = ["main", "dbn_model"]


def dbn_model(bottom, top):
    """The DBN over v, h1, h2 from the first RBM's and the top RBM's templates."""
    first, second = bottom.params, top.params

    def dbn():
        bn = ppl.BayesianNet()
        h1 = bn.bernoulli("h1", logits=second["b"], group_ndims=1)
        h2 = bn.bernoulli("h2", logits=second["c"], group_ndims=1)
        bn.factor("top", ((h1 @ second["W"]) * h2).sum(-1))
        bn.bernoulli("v", logits=first["b"] + h1 @ first["W"].T, group_ndims=1)
        return bn

    return ppl.EnergyModel(dbn, {"v": first["W"].shape[0], "h1": second["W"].shape[0],
                                 "h2": second["W"].shape[1]})


def _fit_rbm(scope, data, n_hidden, args, visible, hidden):
    """`common.fit_rbm` by CD-k; with --checkpoint, checkpointed at CHECKPOINT.<scope>."""
    return common.fit_rbm(scope, data, n_hidden, args, visible, hidden, checkpoint=(
        None if args.checkpoint is None else f"{args.checkpoint}.{scope}"))


def main(argv=None):
    """`python -m models.energy.dbn ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = common.ais_parser("dbn", __doc__, lr=0.05)
    parser.add_argument("--n-hidden2", type=zoo.positive_int, default=2000)
    parser.add_argument("--cd-k", type=zoo.positive_int, default=1)
    parser.add_argument("--is-samples", type=zoo.positive_int, default=10,
                        help="importance samples of h1 per test image (10)")
    args = parser.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    train, test = common.load_data(args)
    started = time.process_time()
    bottom, first = _fit_rbm("dbn_rbm1", train, args.n_hidden, args, "v", "h")
    with torch.no_grad():
        features = first.conditional("h", {"v": train}).sample()
    top, second = _fit_rbm("dbn_rbm2", features, args.n_hidden2, args, "h1", "h2")
    train_cpu = time.process_time() - started
    model = dbn_model(bottom, top)
    with torch.no_grad():
        log_z = common.estimate_log_z(second, {"h1": energy.base_rate_logits(features)}, args)
        logliks = [energy.importance_log_likelihood(
            model, log_z, {"v": chunk}, {"h1": first.logits("h", {"v": chunk})},
            n_samples=args.is_samples, summed=["h2"]) for chunk in torch.split(test, 500)]
        start = {"h1": torch.bernoulli(torch.full((args.n_samples, args.n_hidden), 0.5)),
                 "h2": torch.zeros(args.n_samples, args.n_hidden2)}
        state, _ = common.gibbs_samples(second, start, args.gibbs_steps, not args.no_progress,
                                        show="h1")
        samples = torch.sigmoid(model.logits("v", state))
    return common.write_outputs(args, budget, samples, torch.cat(logliks).mean(), log_z,
                                train_cpu, n_hidden2=args.n_hidden2, cd_k=args.cd_k,
                                is_samples=args.is_samples)


if __name__ == "__main__":
    main()
