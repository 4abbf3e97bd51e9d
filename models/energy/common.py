"""What the energy models share: the RBM net, the command line, the data, training, AIS,
Gibbs samples, the outputs."""
import torch
from tqdm.auto import tqdm

import inference
import ppl
from inference import energy
from models import zoo
from models.data import load_binarized_mnist

__all__ = ["rbm_template", "rbm_model", "fit_rbm", "ais_parser", "load_data", "add_options",
           "train", "estimate_log_z", "gibbs_chains", "gibbs_samples", "batches", "write_outputs"]


def rbm_template(scope, n_visible, n_hidden, visible="v", hidden="h", visible_logits=None):
    """An RBM net p*(v, h) = exp(b.v + c.h + v W h) (parameters W, b, c; a template).

    `visible_logits`: the initial b (e.g. the data's base rates, Hinton's advice).
    """
    def initial_b():
        return torch.zeros(n_visible) if visible_logits is None else visible_logits.clone()

    @ppl.meta_bayesian_net(scope=scope)
    def rbm():
        W = ppl.param("W", lambda: 0.01 * torch.randn(n_visible, n_hidden))
        b = ppl.param("b", initial_b)
        c = ppl.param("c", lambda: torch.zeros(n_hidden))
        bn = ppl.BayesianNet()
        v = bn.bernoulli(visible, logits=b, group_ndims=1)
        h = bn.bernoulli(hidden, logits=c, group_ndims=1)
        bn.factor("coupling", ((v @ W) * h).sum(-1))
        return bn

    rbm()
    list(rbm.parameters())  # make W, b, c now: the conditionals read them
    return rbm


def rbm_model(template, visible="v", hidden="h"):
    """The template's EnergyModel with its block conditionals written out (checked in tests
    against the ones autograd derives): sigmoid(c + v W) and sigmoid(b + W h)."""
    params = template.params

    def hidden_given_visible(values):
        return ppl.distributions.Bernoulli(logits=params["c"] + values[visible] @ params["W"],
                                           group_ndims=1)

    def visible_given_hidden(values):
        return ppl.distributions.Bernoulli(logits=params["b"] + values[hidden] @ params["W"].T,
                                           group_ndims=1)

    return ppl.EnergyModel(template(), {visible: params["W"].shape[0],
                                        hidden: params["W"].shape[1]},
                           conditionals={visible: visible_given_hidden,
                                         hidden: hidden_given_visible})


def fit_rbm(scope, data, n_hidden, args, visible="v", hidden="h", persistent=False,
            checkpoint=None):
    """An RBM over the columns of `data` (visible biases at the data's base rates), learnt by
    CD-`--cd-k` from the data or, `persistent`, from persistent chains (one per batch row):
    (template, model)."""
    template = rbm_template(scope, data.shape[1], n_hidden, visible=visible, hidden=hidden,
                            visible_logits=energy.base_rate_logits(data))
    model = rbm_model(template, visible, hidden)
    learner = energy.ContrastiveDivergence(model, visible=visible, k=args.cd_k,
                                           persistent=persistent,
                                           n_chains=args.batch_size if persistent else None)
    train({scope: template, "cd": learner}, learner.step, data, args, checkpoint=checkpoint)
    return template, model


def ais_parser(name, doc, *, lr):
    """The command line of `python -m models.energy.<name>`, a model scored by AIS: the zoo's
    (binarized MNIST, 10 epochs; described by `doc`'s first line) with `add_options` (SGD at
    `lr`, batches of 100, 10,000 AIS temperatures, 100 runs) and --n-hidden (500)."""
    parser = zoo.parser(f"energy.{name}", doc.splitlines()[0], data="binarized_mnist",
                        epochs=10, quick_epochs=1)
    add_options(parser, lr=lr, batch_size=100, n_temperatures=10000, ais_runs=100)
    parser.add_argument("--n-hidden", type=zoo.positive_int, default=500)
    return parser


def add_options(parser, *, lr, batch_size, n_temperatures=None, ais_runs=None,
                gibbs_steps=1000):
    """The energy models' own options (AIS ones when given defaults); returns `parser`."""
    parser.add_argument("--lr", type=float, default=lr, help=f"SGD learning rate ({lr})")
    parser.add_argument("--batch-size", type=zoo.positive_int, default=batch_size)
    if n_temperatures is not None:
        parser.add_argument("--n-temperatures", type=int, default=n_temperatures,
                            help=f"AIS inverse temperatures ({n_temperatures}; at least 2)")
        parser.add_argument("--ais-runs", type=int, default=ais_runs,
                            help=f"AIS runs, for log Z and its standard error ({ais_runs})")
    parser.add_argument("--gibbs-steps", type=zoo.positive_int, default=gibbs_steps,
                        help=f"Gibbs sweeps of the sample chains, from noise ({gibbs_steps})")
    return parser


def load_data(args):
    """(train, test) float tensors [n, 784] of 0/1 pixels, cut to --train-size/--test-size."""
    data = load_binarized_mnist(None if args.data == "binarized_mnist" else args.data,
                                seed=args.seed)
    train = torch.as_tensor(zoo.first(data.train, args.train_size), dtype=torch.float32)
    test = torch.as_tensor(zoo.first(data.test, args.test_size), dtype=torch.float32)
    return train, test


def batches(data, batch_size):
    """epoch -> the rows of `data` in a fresh random order, in batches (for Trainer.fit)."""
    def epoch_batches(epoch):
        return list(torch.split(data[torch.randperm(len(data))], batch_size))
    return epoch_batches


def train(modules, step, data, args, epochs=None, checkpoint=None):
    """Plain SGD at --lr on `step` over `data`, through inference.Trainer; returns it."""
    trainer = inference.Trainer(modules, lambda params: torch.optim.SGD(params, lr=args.lr),
                                checkpoint_path=checkpoint, progress=not args.no_progress)
    trainer.fit(step, batches(data, args.batch_size), epochs or args.epochs)
    return trainer


def estimate_log_z(model, base_logits, args, summed=None):
    """AIS with the run's --n-temperatures and --ais-runs: a PartitionEstimate."""
    return energy.ais_log_partition(model, base_logits, summed=summed,
                                    n_temperatures=args.n_temperatures, n_runs=args.ais_runs,
                                    progress=not args.no_progress)


def gibbs_chains(meta_bn, start, n_steps, progress=True, gibbs=None):
    """`n_steps` sweeps of `gibbs` (default `inference.Gibbs()`, element-wise enumeration)
    on the net from `start` (name -> [chains, units]); returns the final state."""
    gibbs = gibbs or inference.Gibbs()
    state = dict(start)
    with torch.no_grad():
        for _ in tqdm(range(n_steps), desc="Gibbs", disable=not progress, leave=False):
            state, _ = gibbs.sample(meta_bn, {}, state)
    return state


def gibbs_samples(model, start, n_steps, progress=True, show="v"):
    """Block-Gibbs chains of an EnergyModel (`inference.Gibbs` with its conditionals) from
    `start`; returns the final state and the conditional means of layer `show`."""
    state = gibbs_chains(model.meta_bn, start, n_steps, progress,
                         inference.Gibbs(conditionals=model.conditionals()))
    with torch.no_grad():
        return state, torch.sigmoid(model.logits(show, state))


def write_outputs(args, budget, samples, test_loglik, log_z, train_cpu, **settings):
    """Save `samples` (samples.npy/png) and metrics.json: the test log-likelihood `test_loglik`,
    log Z and its standard error (`log_z`, a PartitionEstimate), and in the budget --n-hidden,
    `settings`, the SGD and AIS options and the training CPU seconds; returns the metrics."""
    zoo.save_samples(args.out, samples)
    metrics = {"test_loglik_nats": test_loglik, "log_z": log_z.log_z, "log_z_se": log_z.log_z_se}
    return zoo.write_metrics(args.out, metrics, budget.as_dict(
        args.epochs, n_hidden=args.n_hidden, **settings, lr=args.lr, batch_size=args.batch_size,
        ais_temperatures=args.n_temperatures, ais_runs=args.ais_runs,
        train_cpu_seconds=round(train_cpu, 2)))
