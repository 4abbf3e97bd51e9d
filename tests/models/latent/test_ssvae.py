"""models.latent.ssvae: the M2 bound with the label summed out, checked by hand; the command line."""
import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal
from torch.nn import functional as F

from models.latent import ssvae

HIDDEN, X_DIM, Z_DIM = (5, 5), 6, 2


def hand_labeled_bound(gen, q_z, x, c, eps, analytic_kl):
    """L(x, y=c) per image, written out with torch.distributions, z = mu + eps * std."""
    n, k = len(x), eps.shape[0]
    y = F.one_hot(torch.full((n,), c), 10).float()
    h = q_z.layers["encoder"](torch.cat([x, y], -1))
    mu, logstd = q_z.layers["z_mean"](h), q_z.layers["z_logstd"](h)
    z = mu + eps * logstd.exp()                                           # [k, n, z_dim]
    logits = gen.layers["x_logits"](gen.layers["decoder"](torch.cat([z, y.expand(k, n, 10)], -1)))
    log_lik = Bernoulli(logits=logits).log_prob(x).sum(-1)
    if analytic_kl:  # KL(N(mu, std^2) || N(0, 1)), summed over z's axes
        kl = (-logstd + (torch.exp(2 * logstd) + mu ** 2 - 1) / 2).sum(-1)
        return (log_lik - kl).mean(0) + math.log(0.1)
    log_prior = Normal(0., 1.).log_prob(z).sum(-1)
    log_q = Normal(mu, logstd.exp()).log_prob(z).sum(-1)
    return (log_lik + log_prior + math.log(0.1) - log_q).mean(0)


@pytest.mark.parametrize("analytic_kl", [False, True])
def test_unlabeled_bound_is_the_sum_over_the_ten_labels_by_hand(analytic_kl):
    gen, q_z, classifier = ssvae.new_templates()
    n, k = 3, 2
    x = torch.bernoulli(torch.full((n, X_DIM), 0.5))
    ssvae.unlabeled_bound(gen, q_z, classifier, x, Z_DIM, k, HIDDEN)  # creates the layers
    torch.manual_seed(1)
    bound = ssvae.unlabeled_bound(gen, q_z, classifier, x, Z_DIM, k, HIDDEN, analytic_kl)
    torch.manual_seed(1)
    eps = torch.randn(k, n, 10, Z_DIM)  # the enumerated rows are image-major: (i, c) -> 10 i + c
    log_qy = classifier.layers["y_logits"](classifier.layers["hidden"](x)).log_softmax(-1)
    expected = torch.zeros(n)
    for c in range(10):
        labeled = hand_labeled_bound(gen, q_z, x, c, eps[:, :, c], analytic_kl)
        expected += log_qy[:, c].exp() * (labeled - log_qy[:, c])
    assert bound.shape == (n,)
    torch.testing.assert_close(bound, expected, rtol=1e-5, atol=1e-5)


def test_labeled_bound_by_hand():
    gen, q_z, _ = ssvae.new_templates()
    x = torch.bernoulli(torch.full((4, X_DIM), 0.5))
    y = torch.tensor([0, 3, 9, 3])
    ssvae.labeled_bound(gen, q_z, x, y, Z_DIM, 3, HIDDEN)  # creates the layers
    torch.manual_seed(2)
    bound = ssvae.labeled_bound(gen, q_z, x, y, Z_DIM, 3, HIDDEN)
    torch.manual_seed(2)
    eps = torch.randn(3, 4, Z_DIM)
    expected = torch.stack([hand_labeled_bound(gen, q_z, x[i:i + 1], int(y[i]), eps[:, i:i + 1],
                                               False)[0] for i in range(4)])
    torch.testing.assert_close(bound, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([0, 10]), r"node 'y': labels must lie in \[0, 10\), found 10"),
    (torch.tensor([-1, 2]), r"node 'y': labels must lie in \[0, 10\), found -1"),
    (torch.tensor([0., 1.]), r"node 'y': expected integer class labels of shape \[2\]"),
    (torch.tensor([0, 1, 2]), r"node 'y': expected integer class labels of shape \[2\]"),
])
def test_bad_labels_are_refused_naming_y(labels, message):
    gen, q_z, _ = ssvae.new_templates()
    with pytest.raises(ValueError, match=message):
        ssvae.labeled_bound(gen, q_z, torch.zeros(2, X_DIM), labels, Z_DIM, 1, HIDDEN)


def test_bad_images_are_refused_naming_x():
    gen, q_z, classifier = ssvae.new_templates()
    with pytest.raises(ValueError, match=r"node 'x': expected a floating-point tensor of shape"):
        ssvae.unlabeled_bound(gen, q_z, classifier, torch.zeros(2, 1, X_DIM), Z_DIM, 1, HIDDEN)


def test_images_of_another_width_than_the_nets_are_refused_naming_x():
    gen, q_z, classifier = ssvae.new_templates()
    ssvae.unlabeled_bound(gen, q_z, classifier, torch.zeros(2, X_DIM), Z_DIM, 1, HIDDEN)
    with pytest.raises(ValueError, match=r"node 'x': .* shape \[n, 6\]"):
        ssvae.unlabeled_bound(gen, q_z, classifier, torch.zeros(2, 7), Z_DIM, 1, HIDDEN)
    with pytest.raises(ValueError, match=r"node 'x': .* shape \[n, 6\]"):
        ssvae.labeled_bound(gen, q_z, torch.zeros(2, 7), torch.tensor([0, 1]), Z_DIM, 1, HIDDEN)


def test_labeled_batches_pair_unlabelled_and_labelled_images_per_epoch():
    x_u = np.random.default_rng(0).random((50, X_DIM), dtype=np.float32)
    batches = ssvae.LabeledBatches(x_u[:10], np.arange(10), x_u, 20, seed=3)
    epoch = list(batches(0))
    assert len(epoch) == len(batches) == 2
    for x_l, y_l, x_u_batch in epoch:
        assert x_l.shape == x_u_batch.shape == (20, X_DIM) and y_l.shape == (20,)
        assert set(torch.cat([x_l, x_u_batch]).unique().tolist()) <= {0., 1.}
        assert y_l.dtype == torch.int64 and 0 <= int(y_l.min()) and int(y_l.max()) < 10
    again = list(batches(0))
    assert all(torch.equal(a, b) for one, two in zip(epoch, again) for a, b in zip(one, two))
    assert not torch.equal(epoch[0][2], next(iter(batches(1)))[2])


def test_split_labels_takes_the_same_number_per_class():
    labels = np.arange(200) % 10
    chosen = ssvae.split_labels(labels, 30, seed=0)
    assert np.bincount(labels[chosen], minlength=10).tolist() == [3] * 10
    with pytest.raises(ValueError, match="--labels must be a multiple of 10"):
        ssvae.split_labels(labels, 15, seed=0)
    with pytest.raises(ValueError, match="class 0 has 20 training examples, fewer than the 30"):
        ssvae.split_labels(labels, 300, seed=0)


def test_command_line_trains_and_writes_metrics_and_class_samples(tmp_path, require_dataset):
    require_dataset("mnist")
    out = tmp_path / "run"
    metrics = ssvae.main(["--epochs", "1", "--train-size", "300", "--test-size", "40",
                          "--labels", "20", "--batch-size", "50", "--hidden", "16",
                          "--z-dim", "4", "--n-samples", "20", "--out", str(out),
                          "--checkpoint", str(tmp_path / "ssvae.pt"), "--no-progress"])
    written = json.loads((out / "metrics.json").read_text())
    assert written == metrics
    assert 0 <= metrics["test_error"] <= 1 and metrics["test_elbo_nats"] < 0
    assert metrics["budget"]["epochs"] == 1 and metrics["budget"]["labels"] == 20
    samples = np.load(out / "samples.npy")
    assert samples.shape == (20, 784) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    assert (out / "samples.png").is_file() and (tmp_path / "ssvae.pt").is_file()
