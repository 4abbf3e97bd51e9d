"""What every GAN of the zoo shares: the data, the training run, samples, pictures and metrics.

    args = common.parser("gan.dcgan", "...", epochs=10).parse_args(argv)
    return common.run(args, "dcgan", gen, critic, model, loss="non_saturating", ...)

`run` trains with `inference.AdversarialTrainer` (progress, checkpoint/resume
of both players, the NaN guard) on MNIST's first 50,000 training images (or
Fashion-MNIST's: `--data fashion-mnist`), scaled to [0, 1], and writes to `--out`:
- `samples.npy` [n_samples, 784] and `samples.png` (zoo.save_samples);
- `progress.png`: samples of one fixed z after each epoch (sample grids over training);
- `metrics.json`: `critic_loss` (the last epoch's mean), and on MNIST, when the
  metrics classifier is cached (`python -m models.gan.metrics`), the classifier
  FID, inception score, precision/recall and class fractions of the samples
  against `--test-size` test images, with the FID after each epoch (None for the
  epochs a resumed run skipped) and its correlation (Pearson's and Spearman's)
  with the critic's loss; always the Parzen-window log-likelihood of the test images (bandwidth chosen on 1,000
  validation images, train[50000:]); the budget's `train_cpu_seconds` counts
  training alone (no evaluation).
"""
import time

import numpy as np
import torch
from scipy.stats import spearmanr

import inference
from models import zoo
from models.data import data_root, load_mnist
from models.experiment import save_image_grid
from models.gan import metrics

__all__ = ["DATASETS", "N_CLASSES", "parser", "load", "Batches", "generated", "run"]

DATASETS = ("mnist", "fashion-mnist")
N_CLASSES = 10
_VALID = 1000  # validation images for the Parzen bandwidth


def parser(name, description, *, epochs, quick_epochs=1, batch_size=64, lr=2e-4):
    """The zoo's command line plus the GAN options (--batch-size --lr --z-dim --fid-samples)."""
    p = zoo.parser(name, description, data="mnist", epochs=epochs, quick_epochs=quick_epochs)
    p.add_argument("--batch-size", type=zoo.positive_int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--z-dim", type=zoo.positive_int, default=64)
    p.add_argument("--fid-samples", type=zoo.positive_int, default=500,
                   help="samples for the classifier FID after each epoch (default 500)")
    return p


def load(args):
    """(train images [n, 784] float in [0, 1], train labels int64 [n], valid, test images,
    test labels) of `--data`, cut to `--train-size` / `--test-size`."""
    if args.data not in DATASETS:
        raise ValueError(f"--data must be one of {', '.join(DATASETS)}, got {args.data!r}")
    data = load_mnist(data_root() / args.data)

    def scale(images):
        return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.)
    train, labels = scale(data.train_images), torch.from_numpy(data.train_labels.astype(np.int64))
    return (zoo.first(train[:50000], args.train_size), zoo.first(labels[:50000], args.train_size),
            train[50000:50000 + _VALID], zoo.first(scale(data.test_images), args.test_size),
            zoo.first(torch.from_numpy(data.test_labels.astype(np.int64)), args.test_size))


class Batches:
    """epoch -> shuffled batches of images (or (images, labels) pairs when `labels` is given),
    shuffled by the global torch RNG (so a resumed run replays them); has a length. The
    last partial batch is dropped (a batch of one row would stop batch norm), unless the
    data is smaller than one batch."""

    def __init__(self, images, batch_size, labels=None):
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self):
        return max(1, len(self.images) // self.batch_size)

    def __call__(self, epoch):
        order = torch.randperm(len(self.images))
        for idx in order.split(self.batch_size)[:len(self)]:
            yield self.images[idx] if self.labels is None else (self.images[idx],
                                                                self.labels[idx])


@torch.no_grad()
def generated(gen, model, batch, **observed):
    """The generator's images for `batch` (its size and conditions), in eval mode, as
    numpy [n, 784] in [0, 1]; `observed`: node values to fix (say z)."""
    gen.eval()
    try:
        x = model(batch).observe(**observed).outputs("x")
    finally:
        gen.train()
    return x.reshape(len(x), -1).clamp(0, 1).numpy()


def run(args, name, gen, critic, model, *, optimizers, loss, n_critic=1, clip=None,
        penalty_weight=None, conditional=False, extra_metrics=None):
    """Train `gen` against `critic` on `--data`, then write samples, pictures and metrics.

    `model(batch) -> MetaBayesianNet` binds the generator (node 'x' [n, 784]);
    `conditional`: batches are (images, labels) and samples are drawn class by
    class (column c of the grid is class c). `extra_metrics(gen, classifier, test) ->
    dict` adds model-specific metrics. Returns the metrics written.
    """
    zoo.start(args)
    budget = zoo.Budget()
    train, labels, valid, test, test_labels = load(args)
    classifier, accuracy = metrics.load_classifier() if args.data == "mnist" else (None, None)
    note = ("not used on Fashion-MNIST" if args.data != "mnist" else
            f"{metrics.classifier_path()} (test accuracy {accuracy:.4f})" if classifier
            else "not cached: run `python -m models.gan.metrics` once for the classifier "
                 "metrics")
    if classifier is None:
        print(f"{name}: classifier metrics skipped, the classifier is {note}")
    trainer = inference.AdversarialTrainer(
        gen, critic, model, optimizers, loss=loss, n_critic=n_critic, clip=clip,
        penalty_weight=penalty_weight, checkpoint_path=args.checkpoint,
        progress=not args.no_progress,
        fingerprint={"train": train, "args": {"data": args.data, "z_dim": args.z_dim,
                                              "batch_size": args.batch_size}})
    batches = Batches(train, args.batch_size, labels if conditional else None)

    def condition(n):
        y = torch.arange(n) % N_CLASSES
        return (torch.zeros(n, train.shape[1]), y) if conditional else torch.zeros(n, 1)
    fixed = torch.randn(N_CLASSES * 2, args.z_dim, generator=torch.Generator().manual_seed(0))
    pictures, fid_curve, history = [], [], []
    real_stats = None
    if classifier is not None:
        real_stats = metrics.gaussian_statistics(metrics.features_and_probs(classifier, test)[0])
    train_cpu = 0.
    for epoch in range(args.epochs):
        started = time.process_time()
        history = trainer.fit(batches, n_epochs=epoch + 1)
        train_cpu += time.process_time() - started
        if len(history) > epoch + 1:  # resumed past this epoch: its generator is gone
            fid_curve.append(None)
            continue
        with torch.random.fork_rng():  # evaluation draws leave the training's RNG alone
            pictures.append((f"epoch {epoch + 1}",
                             generated(gen, model, condition(len(fixed)), z=fixed)))
            if classifier is not None:
                feats = metrics.features_and_probs(
                    classifier, generated(gen, model, condition(args.fid_samples)))[0]
                fid_curve.append(metrics.frechet_distance(*metrics.gaussian_statistics(feats),
                                                          *real_stats))
    save_image_grid(f"{args.out}/progress.png", pictures[-10:], (28, 28), columns=10)
    with torch.random.fork_rng():
        samples = generated(gen, model, condition(args.n_samples))
    zoo.save_samples(args.out, samples, title=f"{name} samples" + (": column c is class c"
                                                                  if conditional else ""))
    results = {"critic_loss": history[-1]}
    results.update(metrics.evaluate_samples(samples, test, classifier,
                                            valid=valid, parzen_test=test))
    results["parzen_loglik_nats"] = results.pop("parzen_loglik")
    measured = [(loss, fid) for loss, fid in zip(history, fid_curve) if fid is not None]
    if fid_curve and fid_curve[0] is not None:
        results["fid_after_first_epoch"] = fid_curve[0]
    if len(measured) >= 3:
        losses, fids = zip(*measured)
        results["critic_loss_fid_correlation"] = float(np.corrcoef(losses, fids)[0, 1])
        results["critic_loss_fid_spearman"] = float(spearmanr(losses, fids)[0])
    if extra_metrics is not None:
        results.update(extra_metrics(gen, classifier, test, test_labels))
    return zoo.write_metrics(args.out, results, budget.as_dict(
        args.epochs, classifier=note, critic_loss_curve=history, fid_curve=fid_curve,
        train_cpu_seconds=round(train_cpu, 2)))
