"""`models.gan.metrics`: each estimator against a case with a known answer (no classifier
training here: a tiny untrained classifier stands in where features are needed)."""
import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.neighbors import KernelDensity

from models.gan import metrics


def _closed_form_frechet(mu1, c1, mu2, c2):
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^1/2), with scipy's general matrix root."""
    return np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))


def test_frechet_distance_between_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    assert metrics.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(
        _closed_form_frechet(mu1, c1, mu2, c2), rel=1e-8)
    # 1-d: (m1 - m2)^2 + (s1 - s2)^2; and a Gaussian is at distance 0 from itself
    assert metrics.frechet_distance([1.], [[4.]], [3.], [[9.]]) == pytest.approx(4. + 1.)
    assert metrics.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0., abs=1e-8)


def test_parzen_log_likelihood_matches_scikit_learn_kernel_density():
    rng = np.random.default_rng(1)
    samples, test = rng.random((200, 5)), rng.random((50, 5))
    sigma = 0.2
    expected = KernelDensity(bandwidth=sigma).fit(samples).score_samples(test)
    mean, se = metrics.parzen_log_likelihood(samples, test, sigma)
    assert mean == pytest.approx(expected.mean(), rel=1e-5)
    assert se == pytest.approx(expected.std(ddof=1) / np.sqrt(len(test)), rel=1e-4)
    sigmas = [0.05, 0.1, 0.2, 0.4]
    valid = rng.random((50, 5))
    best = np.argmax([KernelDensity(bandwidth=s).fit(samples).score_samples(valid).mean()
                      for s in sigmas])
    assert metrics.parzen_bandwidth(samples, valid, sigmas) == sigmas[best]


def test_inception_score_on_constructed_cases():
    one_hot = np.eye(10)[np.arange(1000) % 10]  # confident and spread evenly: IS = 10
    assert metrics.inception_score(one_hot)[0] == pytest.approx(10., rel=1e-6)
    assert metrics.inception_score(np.eye(10)[np.zeros(100, int)])[0] == pytest.approx(1.)
    assert metrics.inception_score(np.full((100, 10), 0.1))[0] == pytest.approx(1.)
    # two classes, confident: IS = 2
    assert metrics.inception_score(np.eye(10)[np.arange(100) % 2])[0] == pytest.approx(2.)


def test_precision_recall_on_constructed_cases():
    real = np.arange(100.)[:, None]                # spacing 1: each k=1 ball has radius 1
    fake = np.arange(10.)[:, None] + 0.5           # inside the real manifold, covering 0..10
    precision, recall = metrics.precision_recall(real, fake, k=1)
    assert precision == 1.
    assert recall == pytest.approx(11 / 100)
    assert metrics.precision_recall(real, real, k=3) == (1., 1.)
    assert metrics.precision_recall(real, real + 1000., k=3) == (0., 0.)


def test_class_histogram_and_evaluate_samples_with_an_untrained_classifier():
    torch.manual_seed(0)
    net = metrics.Classifier().eval()
    rng = np.random.default_rng(2)
    samples, reference = rng.random((60, 784)), rng.random((80, 784))
    scores = metrics.evaluate_samples(samples, reference, net, valid=reference[:30],
                                      parzen_test=reference[30:])
    assert {"classifier_fid", "inception_score", "precision", "recall", "max_class_fraction",
            "min_class_fraction", "parzen_loglik", "parzen_sigma"} <= set(scores)
    assert all(np.isfinite(v) for v in scores.values())
    assert 1. <= scores["inception_score"] <= 10.
    histogram = metrics.class_histogram(np.eye(10)[[0, 0, 1, 9]])
    assert histogram.tolist() == [0.5, 0.25] + [0.] * 7 + [0.25]
    with pytest.raises(ValueError, match=r"\[n, 784\]"):
        net.features(torch.zeros(3, 10))


def test_classifier_cache_round_trip(empty_cache):
    assert metrics.load_classifier() == (None, None)
    assert str(metrics.classifier_path()).startswith(str(empty_cache))
    net = metrics.Classifier()
    metrics.classifier_path().parent.mkdir(parents=True)
    torch.save({"format": 1, "state_dict": net.state_dict(), "test_accuracy": 0.991},
               metrics.classifier_path())
    loaded, accuracy = metrics.load_classifier()
    assert accuracy == 0.991
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 loaded.state_dict().values()))
    torch.save({"something": 1}, metrics.classifier_path())
    with pytest.raises(ValueError, match="models.gan.metrics"):
        metrics.load_classifier()


def test_any_zoo_run_is_scored_from_its_samples(tmp_path, empty_cache, data_dir):
    if not (data_dir / "mnist").is_dir():
        pytest.skip(f"MNIST not found at {data_dir / 'mnist'}")
    np.save(tmp_path / "samples.npy", np.random.default_rng(0).random((40, 784), np.float32))
    scores = metrics.main(["--score", str(tmp_path), "--test-size", "50"])
    assert {"parzen_loglik", "parzen_sigma"} <= set(scores)
    assert "classifier_fid" not in scores  # no classifier in this (empty) cache


def test_batched_radii_and_parzen_widths_equal_the_one_pass_computation():
    """10,000 x 10,000 protocols run in row batches: the batches must not change the answer."""
    rng = np.random.default_rng(0)
    points = torch.as_tensor(rng.normal(size=(23, 4)))
    whole = torch.cdist(points, points).kthvalue(4, dim=1).values
    assert torch.allclose(metrics._knn_radius(points, 3, batch_size=5), whole)
    samples, test = rng.random((17, 6)), rng.random((11, 6))
    sigmas = [0.1, 0.3, 1.]
    batched = metrics._parzen_log_densities(samples, test, sigmas, batch_size=4)
    for row, sigma in zip(batched, sigmas):
        kde = KernelDensity(bandwidth=sigma).fit(samples)
        np.testing.assert_allclose(row, kde.score_samples(test), rtol=1e-5)
