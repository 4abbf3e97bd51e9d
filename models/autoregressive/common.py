"""What the autoregressive zoo models share: the net, training, evaluation, outputs.

Each model is a `BayesianNet` with one node, `x ~ Autoregressive(net, family)`;
its log-joint is log p(x), maximized by Adam over the training set with a
cosine learning-rate decay (one `inference.Trainer` epoch at a time, so a
checkpointed run resumes where it stopped), and evaluated as the mean test
log-likelihood in nats. With `--valid-size N` the first N images of the
validation split (Larochelle's 10,000, apart from the 50,000 training images)
are scored after every epoch and the test evaluation uses the weights of the
best epoch (early stopping, as in the NADE and MADE papers); those weights
travel in the checkpoint, so a resumed run keeps them.
"""
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import inference
import ppl
from inference import checkpoint
from models import zoo

__all__ = ["build_model", "log_lik_step", "epoch_batches", "mean_over", "BestWeights", "train",
           "add_training_args", "run_binarized_mnist"]


def build_model(net, family="bernoulli", value_shape=(784,), observed=None, order=None,
                n_samples=None):
    """The model as a BayesianNet: the node `x ~ Autoregressive(net, family, value_shape)`
    (`n_samples` draws in front when `x` is not observed)."""
    bn = ppl.BayesianNet(observed=observed)
    bn.autoregressive("x", net, family, value_shape, order, n_samples=n_samples)
    return bn


def log_lik_step(net, **model_kwargs):
    """`step_fn(x) -> (cost, log p(x))` for `inference.Trainer`: cost is the mean NLL."""
    def step(x):
        log_lik = build_model(net, observed={"x": x}, **model_kwargs).log_joint()
        return -log_lik.mean(), log_lik
    return step


def epoch_batches(data, batch_size, seed):
    """A callable epoch -> list of shuffled batches of `data` (the same for the same epoch,
    so a resumed run sees what the uninterrupted one would have)."""
    def batches(epoch):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + epoch))
        return [data[order[i:i + batch_size]] for i in range(0, len(data), batch_size)]
    return batches


def mean_over(fn, data, batch_size=500, desc="test log-likelihood", progress=True):
    """The mean of `fn(batch)` (a [b] tensor) over `data`, batch by batch, without gradients."""
    total = 0.
    with torch.no_grad():
        for i in tqdm(range(0, len(data), batch_size), desc=desc, disable=not progress,
                      leave=False):
            total += fn(data[i:i + batch_size]).double().sum().item()
    return total / len(data)


class BestWeights(nn.Module):
    """The state of `net` at its best validation score so far, held as buffers (so the
    trainer's checkpoint carries it): `score`, the `epoch` it came from, and `validated`,
    the number of epochs scored so far."""

    def __init__(self, net):
        super().__init__()
        self.names = list(net.state_dict())
        for i, value in enumerate(net.state_dict().values()):
            self.register_buffer(f"state_{i}", value.detach().clone())
        # the lowest finite float64, not -inf: checkpoints refuse non-finite buffers
        self.register_buffer("score", torch.tensor(torch.finfo(torch.float64).min,
                                                   dtype=torch.float64))
        self.register_buffer("epoch", torch.tensor(0))
        self.register_buffer("validated", torch.tensor(0))

    def update(self, net, epoch, score):
        """Record epoch `epoch`'s validation `score`, keeping `net`'s state if it is the best."""
        self.validated.fill_(epoch)
        if score > self.score:
            self.score.fill_(score)
            self.epoch.fill_(epoch)
            for i, value in enumerate(net.state_dict().values()):
                getattr(self, f"state_{i}").copy_(value)

    def restore(self, net):
        """Load the best state into `net`."""
        net.load_state_dict({name: getattr(self, f"state_{i}")
                             for i, name in enumerate(self.names)})


def train(args, modules, step_fn, train_data, settings, lr_at=None, validate=None):
    """Adam on `step_fn` for `args.epochs` epochs with a cosine learning-rate decay from
    `args.lr` (or `lr_at(epoch)`) and `args.weight_decay` (when the parser has it);
    checkpointed to `args.checkpoint` when given.

    `validate() -> float` (higher is better), when given, scores `modules["net"]` after
    every epoch into `modules["best"]` (a `BestWeights`, checkpointed with the rest), and
    the net ends with the state of its best epoch. Returns the history of the training
    bound.
    """
    batches = epoch_batches(train_data, args.batch_size, args.seed)
    lr_at = lr_at or (lambda e: args.lr * 0.5 * (1 + math.cos(math.pi * e / args.epochs)))
    lr = lr_at(0)  # a checkpoint holds the learning rate of the epoch it was written in
    if args.checkpoint and Path(args.checkpoint).is_file():
        saved = checkpoint.load(args.checkpoint)
        lr = lr_at(saved["epoch"] - (saved["epoch"] > 0 and saved["step_in_epoch"] == 0))
    best = None if validate is None else modules["best"]
    trainer = inference.Trainer(modules,
                                lambda params: torch.optim.Adam(
                                    params, lr=lr, weight_decay=getattr(args, "weight_decay", 0.)),
                                checkpoint_path=args.checkpoint, checkpoint_every=100
                                if args.checkpoint else None, progress=not args.no_progress,
                                fingerprint={"train": train_data, "settings": settings})
    history = []
    for epoch in range(1, args.epochs + 1):
        if epoch <= len(history):
            continue
        history = trainer.fit(step_fn, batches, n_epochs=epoch)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr_at(len(history))
        line = f"epoch {len(history)}: train log-likelihood {history[-1]:.2f}"
        # a resumed run may find its last epoch unscored (stopped before its validation)
        if best is not None and int(best.validated) < len(history):
            score = validate()
            best.update(modules["net"], len(history), score)
            if args.checkpoint:
                trainer.save_checkpoint()
            line += (f", validation {score:.2f} (best {float(best.score):.2f} at epoch "
                     f"{int(best.epoch)})")
        print(line, flush=True)
    if best is not None:
        best.restore(modules["net"])
        print(f"test evaluation with the weights of epoch {int(best.epoch)} (validation "
              f"log-likelihood {float(best.score):.2f})", flush=True)
    return history


def add_training_args(parser, lr, batch_size, validation=True):
    parser.add_argument("--lr", type=float, default=lr, help=f"Adam's learning rate ({lr})")
    parser.add_argument("--batch-size", type=zoo.positive_int, default=batch_size)
    parser.add_argument("--weight-decay", type=float, default=0.,
                        help="Adam's L2 penalty on the weights (default 0)")
    if validation:
        parser.add_argument("--valid-size", type=int, default=0,
                            help="score the first N validation images after every epoch and "
                                 "test the best epoch's weights (default 0: no validation, "
                                 "the last epoch's weights)")
    return parser


def run_binarized_mnist(args, net, settings, model_kwargs=None, step_fn=None,
                        test_log_lik=None, sampler=None, extra=None):
    """Train `net` (the `x` node's network) on binarized MNIST, then write metrics and samples.

    `model_kwargs`: more arguments of `build_model` (e.g. `value_shape`); `step_fn`:
    the training step (default: `log_lik_step(net, **model_kwargs)`);
    `test_log_lik(x) -> [b]` (default: the model's log-joint), `sampler(n) -> [n, ...]`
    (default: the node's own sampler); `extra` metrics (name -> fn of the test set).
    """
    model_kwargs = model_kwargs or {}
    from models.data import load_binarized_mnist
    zoo.start(args)
    budget = zoo.Budget()
    data = load_binarized_mnist(None if args.data == "binarized_mnist" else args.data,
                                seed=args.seed)
    train_x = torch.from_numpy(zoo.first(data.train, args.train_size).astype(np.float32))
    test_x = torch.from_numpy(zoo.first(data.test, args.test_size).astype(np.float32))
    settings = {**settings, "batch_size": args.batch_size, "seed": args.seed}
    if getattr(args, "weight_decay", 0.):
        settings["weight_decay"] = args.weight_decay
    if len(model_kwargs.get("value_shape", (784,))) == 3:
        train_x, test_x = train_x.reshape(-1, 1, 28, 28), test_x.reshape(-1, 1, 28, 28)
    step_fn = step_fn or log_lik_step(net, **model_kwargs)
    if test_log_lik is None:
        def test_log_lik(x):
            return build_model(net, observed={"x": x}, **model_kwargs).log_joint()
    validate = None
    if args.valid_size < 0 or args.valid_size > len(data.valid):
        raise ValueError(f"--valid-size must lie in [0, {len(data.valid)}] (the validation "
                         f"split's size), got {args.valid_size}")
    if args.valid_size:
        valid_x = torch.from_numpy(data.valid[:args.valid_size].astype(np.float32))
        valid_x = valid_x.reshape((-1,) + tuple(train_x.shape[1:]))
        settings["valid_size"] = args.valid_size

        def validate():
            return mean_over(test_log_lik, valid_x, progress=False)
    modules = {"net": net} if validate is None else {"net": net, "best": BestWeights(net)}
    history = train(args, modules, step_fn, train_x, settings, validate=validate)
    net.eval()
    metrics = {"test_loglik_nats": mean_over(test_log_lik, test_x, progress=not args.no_progress),
               "train_loglik_nats_last_epoch": history[-1]}
    if validate is not None:
        metrics["valid_loglik_nats_best"] = float(modules["best"].score)
        metrics["best_epoch"] = int(modules["best"].epoch)
    for name, fn in (extra or {}).items():
        metrics[name] = fn(test_x)
    with torch.no_grad():
        samples = (sampler(args.n_samples) if sampler is not None
                   else build_model(net, n_samples=args.n_samples, **model_kwargs)["x"].tensor)
    zoo.save_samples(args.out, samples.reshape(args.n_samples, -1))
    result = zoo.write_metrics(args.out, metrics, budget.as_dict(args.epochs, **settings))
    print(", ".join(f"{k} = {v:.3f}" for k, v in metrics.items()))
    return result
