"""Sample-quality metrics for image generators, in the feature space of a small MNIST classifier.

    classifier = metrics.load_classifier()            # None until trained once:
    #   python -m models.gan.metrics                  # trains it (~2-5 CPU minutes), caches it
    scores = metrics.evaluate_samples(samples, reference, classifier)   # [N, 784] in [0, 1]
    python -m models.gan.metrics --score runs/latent/vae   # any zoo run's samples.npy

No network downloads: instead of Inception weights, a LeNet-style MNIST
classifier trained here once (its test accuracy is stored beside its weights,
under `$PPL_CACHE_DIR/gan_classifier`, default `~/.cache/ppl/gan_classifier`)
provides the features (its 128-unit penultimate layer) and class
probabilities. In that space:

- `frechet_distance`: ||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^1/2), the "FID"
  of this classifier (Heusel et al. 2017);
- `inception_score`: exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016), in [1, 10];
- `precision_recall`: the k-nearest-neighbour manifolds of Kynkäänniemi et al. 2019;
- `parzen_log_likelihood`: the Gaussian Parzen-window estimate of Goodfellow et
  al. 2014 on pixels, its bandwidth chosen on validation data (`parzen_bandwidth`).
"""
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["Classifier", "classifier_path", "train_classifier", "load_classifier",
           "features_and_probs", "frechet_distance", "gaussian_statistics", "inception_score",
           "precision_recall", "parzen_log_likelihood", "parzen_bandwidth", "evaluate_samples",
           "class_histogram", "score_run", "main"]

_FORMAT = 1


class Classifier(nn.Module):
    """LeNet-style MNIST classifier: images [n, 784] in [0, 1] -> logits [n, 10].

    `features(x)` [n, 128] is the penultimate layer, the space of the metrics.
    """

    def __init__(self, feature_dim=128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 4 * 4, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x):
        if x.dim() != 2 or x.shape[1] != 784:
            raise ValueError(f"classifier: expected images of shape [n, 784], got "
                             f"{tuple(x.shape)}")
        return self.body(x.reshape(-1, 1, 28, 28))

    def forward(self, x):
        return self.head(self.features(x))


def classifier_path():
    """Where the trained classifier is cached: $PPL_CACHE_DIR/gan_classifier/mnist_lenet.pt."""
    from inference.mcmc.cache import cache_root
    return Path(cache_root()) / "gan_classifier" / "mnist_lenet.pt"


def _mnist_arrays(path=None):
    from models.data import load_mnist
    mnist = load_mnist(path)

    def scale(images):
        return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.)
    return (scale(mnist.train_images), torch.from_numpy(mnist.train_labels.astype(np.int64)),
            scale(mnist.test_images), torch.from_numpy(mnist.test_labels.astype(np.int64)))


@torch.no_grad()
def _accuracy(net, x, y, batch_size=1000):
    net.eval()
    correct = sum(int((net(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def train_classifier(epochs=3, batch_size=64, seed=0, path=None, data=None, progress=True):
    """Train the classifier on MNIST with `inference.Trainer` and cache it at `path`.

    `data`: the MNIST folder (default `$PPL_DATA/mnist`). Returns (classifier,
    test accuracy). The file holds the state dict and the test accuracy.
    """
    from inference import Trainer
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = _mnist_arrays(data)
    net = Classifier()

    def batches(epoch):
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed + epoch))
        return [(x_train[idx], y_train[idx]) for idx in order.split(batch_size)]

    def step(batch):
        net.train()
        return nn.functional.cross_entropy(net(batch[0]), batch[1]), None

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    trainer = Trainer({"classifier": net}, optimizer, progress=progress)
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * 0.3 ** epoch
        trainer.fit(step, batches, n_epochs=epoch + 1)
    accuracy = _accuracy(net, x_test, y_test)
    path = Path(path or classifier_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": _FORMAT, "state_dict": net.state_dict(), "test_accuracy": accuracy},
               path)
    return net.eval(), accuracy


def load_classifier(path=None):
    """(classifier in eval mode, its test accuracy) from the cache, or (None, None) when absent."""
    path = Path(path or classifier_path())
    if not path.is_file():
        return None, None
    saved = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a classifier file of format {_FORMAT}; delete it and "
                         f"run `python -m models.gan.metrics` to train it again")
    net = Classifier()
    net.load_state_dict(saved["state_dict"])
    return net.eval(), float(saved["test_accuracy"])


@torch.no_grad()
def features_and_probs(net, images, batch_size=1000):
    """(features [N, d], class probabilities [N, 10]) of images [N, 784] in [0, 1], as numpy."""
    images = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(len(images), -1)
    feats, probs = [], []
    for chunk in images.split(batch_size):
        h = net.features(chunk)
        feats.append(h)
        probs.append(torch.softmax(net.head(h), -1))
    return torch.cat(feats).double().numpy(), torch.cat(probs).double().numpy()


def gaussian_statistics(features):
    """(mean [d], covariance [d, d]) of features [N, d]."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix):
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, cov1, mu2, cov2):
    """The squared 2-Wasserstein (Fréchet) distance between N(mu1, cov1) and N(mu2, cov2).

    tr (C1 C2)^1/2 is taken as tr (C1^1/2 C2 C1^1/2)^1/2 (the same eigenvalues), by
    symmetric eigendecompositions: stable for the singular covariances of few samples.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    cov1, cov2 = np.atleast_2d(cov1), np.atleast_2d(cov2)
    root1 = _sqrt_psd(cov1)
    cross = np.trace(_sqrt_psd(root1 @ cov2 @ root1))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)


def inception_score(probs, splits=10):
    """(mean, std over `splits` parts) of exp(E_x KL(p(y|x) || p(y))) for probs [N, classes]."""
    probs = np.asarray(probs, dtype=np.float64)
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(0, keepdims=True)
        kl = np.sum(part * (np.log(part + 1e-12) - np.log(marginal + 1e-12)), axis=1)
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _knn_radius(features, k, batch_size=1000):
    """Distance of each row to its k-th nearest other row (rows in batches: memory
    [batch_size, N], not [N, N])."""
    return torch.cat([torch.cdist(chunk, features).kthvalue(k + 1, dim=1).values
                      for chunk in features.split(batch_size)])  # the 1st is the row itself


def precision_recall(real_features, fake_features, k=3):
    """Kynkäänniemi et al. 2019: (precision, recall) of fake vs real features [N, d].

    Each set's manifold is the union of balls around its points reaching their
    k-th nearest neighbour; precision is the fraction of fake points inside the
    real manifold, recall the fraction of real points inside the fake one.
    """
    real = torch.as_tensor(np.asarray(real_features, dtype=np.float64))
    fake = torch.as_tensor(np.asarray(fake_features, dtype=np.float64))

    def coverage(points, centres):
        radius = _knn_radius(centres, k)
        inside = [(torch.cdist(chunk, centres) <= radius).any(1) for chunk in points.split(2000)]
        return float(torch.cat(inside).double().mean())
    return coverage(fake, real), coverage(real, fake)


def _parzen_log_densities(samples, points, sigmas, batch_size=500):
    """[len(sigmas), len(points)]: log (1/N) sum_i N(point; sample_i, sigma^2 I)."""
    samples = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    points = torch.as_tensor(np.asarray(points, dtype=np.float32))
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    d = samples.shape[1]
    out = []
    for chunk in points.split(batch_size):
        squared = torch.cdist(chunk, samples).double() ** 2  # [b, N], shared by every sigma
        out.append(torch.stack([torch.logsumexp(-squared / (2 * s ** 2), dim=-1)
                                - 0.5 * d * math.log(2 * math.pi * s ** 2) for s in sigmas]))
    return (torch.cat(out, dim=1) - math.log(len(samples))).numpy()


def parzen_log_likelihood(samples, test, sigma):
    """(mean, standard error) of the Parzen-window log-likelihood of `test` [M, d] under a
    Gaussian kernel of width `sigma` around `samples` [N, d] (Goodfellow et al. 2014)."""
    values = _parzen_log_densities(samples, test, [sigma])[0]
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def parzen_bandwidth(samples, valid, sigmas=None):
    """The kernel width in `sigmas` (default 20 values in [0.05, 0.5], log-spaced) that
    maximizes the mean Parzen log-likelihood of `valid`."""
    sigmas = np.logspace(math.log10(0.05), math.log10(0.5), 20) if sigmas is None else sigmas
    scores = _parzen_log_densities(samples, valid, sigmas).mean(1)
    return float(np.asarray(sigmas)[int(np.argmax(scores))])


def class_histogram(probs):
    """The fraction of samples the classifier assigns to each class [10]."""
    labels = np.asarray(probs).argmax(1)
    return np.bincount(labels, minlength=np.asarray(probs).shape[1]) / len(labels)


def evaluate_samples(samples, reference, classifier=None, *, valid=None, parzen_test=None,
                     k=3):
    """The metrics of `samples` [N, 784] in [0, 1] against `reference` images [M, 784].

    With a classifier: `classifier_fid`, `inception_score` (+ `_std`),
    `precision`, `recall`, `max_class_fraction`, `min_class_fraction`. With
    `valid` and `parzen_test` images: `parzen_loglik` (+ `_se`) of `parzen_test`
    with the bandwidth `parzen_sigma` chosen on `valid`.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(len(samples), -1)
    reference = np.asarray(reference, dtype=np.float32).reshape(len(reference), -1)
    metrics = {}
    if classifier is not None:
        fake_features, fake_probs = features_and_probs(classifier, samples)
        real_features, _ = features_and_probs(classifier, reference)
        metrics["classifier_fid"] = frechet_distance(*gaussian_statistics(fake_features),
                                                     *gaussian_statistics(real_features))
        metrics["inception_score"], metrics["inception_score_std"] = \
            inception_score(fake_probs, splits=min(10, len(samples)))
        metrics["precision"], metrics["recall"] = precision_recall(real_features,
                                                                   fake_features, k)
        histogram = class_histogram(fake_probs)
        metrics["max_class_fraction"] = float(histogram.max())
        metrics["min_class_fraction"] = float(histogram.min())
    if valid is not None and parzen_test is not None:
        sigma = parzen_bandwidth(samples, valid)
        metrics["parzen_sigma"] = sigma
        metrics["parzen_loglik"], metrics["parzen_loglik_se"] = \
            parzen_log_likelihood(samples, parzen_test, sigma)
    return metrics


def score_run(path, test_size=10000, data=None):
    """The metrics of any zoo run's samples (`path`: its DIR or DIR/samples.npy, [N, 784] in
    [0, 1]) against the first `test_size` MNIST test images, Parzen bandwidth chosen on
    train[50000:51000]: VAEs, flows and GANs on one table."""
    from models.data import load_mnist
    path = Path(path)
    samples = np.load(path / "samples.npy" if path.is_dir() else path)
    mnist = load_mnist(data)
    test = mnist.test_images[:test_size].reshape(-1, 784).astype(np.float32) / 255.
    valid = mnist.train_images[50000:51000].reshape(-1, 784).astype(np.float32) / 255.
    classifier, _ = load_classifier()
    return evaluate_samples(samples, test, classifier, valid=valid, parzen_test=test)


def main(argv=None):
    """`python -m models.gan.metrics [--epochs N] [--force] [--score DIR]`: train and cache
    the classifier; with --score, print the metrics of a zoo run's samples.npy."""
    import argparse
    import json
    parser = argparse.ArgumentParser(prog="python -m models.gan.metrics",
                                     description="Train the MNIST classifier of the GAN "
                                                 "metrics once and cache it; score samples.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--force", action="store_true", help="retrain even when cached")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=None, help="MNIST folder (default $PPL_DATA/mnist)")
    parser.add_argument("--score", default=None,
                        help="a zoo run's DIR (or its samples.npy): print its sample metrics")
    parser.add_argument("--test-size", type=int, default=10000)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.score is not None:
        scores = score_run(args.score, args.test_size, args.data)
        print(json.dumps(scores, indent=2))
        return scores
    if not args.force:
        net, accuracy = load_classifier()
        if net is not None:
            print(f"cached at {classifier_path()}: test accuracy {accuracy:.4f}")
            return accuracy
    _, accuracy = train_classifier(args.epochs, data=args.data,
                                   progress=os.environ.get("CI") is None)
    print(f"trained, cached at {classifier_path()}: test accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
