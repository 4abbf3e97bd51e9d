"""models.bayesian.pmf: its conditionals against the log joint, a short run on MovieLens,
the API, and bad ratings."""
import json
import math

import pytest
import torch

from models.bayesian import pmf
from models.data.paths import data_root


def _problem(seed=0, n_users=4, n_items=5, d=3, n=12):
    g = torch.Generator().manual_seed(seed)
    pairs = torch.stack([torch.randint(n_users, (n,), generator=g),
                         torch.randint(n_items, (n,), generator=g)], 1)
    ratings = torch.randint(1, 6, (n,), generator=g).double()

    def rand(*shape):
        return torch.randn(1, *shape, generator=g, dtype=torch.float64)

    values = {"u": rand(n_users, d), "v": rand(n_items, d), "b_u": rand(n_users),
              "b_v": rand(n_items), "lambda_u": rand(d).exp(), "lambda_v": rand(d).exp(),
              "lambda_b": rand().exp().reshape(1), "tau": rand().exp().reshape(1)}
    mean = float(ratings.mean())
    model = pmf.pmf(n_users, n_items, d, pairs, mean)
    return model, pairs, ratings, values, mean


def _log_joint(model, ratings, values):
    return float(model.observe(r=ratings[None], **values).log_joint().sum())


def test_log_joint_matches_a_hand_computation():
    model, pairs, ratings, values, mean = _problem()
    normal = torch.distributions.Normal
    gamma = torch.distributions.Gamma(torch.tensor(1., dtype=torch.float64), 1.)
    r_mean = (mean + values["b_u"][0, pairs[:, 0]] + values["b_v"][0, pairs[:, 1]]
              + (values["u"][0, pairs[:, 0]] * values["v"][0, pairs[:, 1]]).sum(-1))
    expected = (normal(r_mean, values["tau"] ** -0.5).log_prob(ratings).sum()
                + normal(0, values["lambda_u"][0] ** -0.5).log_prob(values["u"][0]).sum()
                + normal(0, values["lambda_v"][0] ** -0.5).log_prob(values["v"][0]).sum()
                + normal(0, values["lambda_b"] ** -0.5).log_prob(values["b_u"][0]).sum()
                + normal(0, values["lambda_b"] ** -0.5).log_prob(values["b_v"][0]).sum()
                + sum(gamma.log_prob(values[k]).sum() for k in
                      ("lambda_u", "lambda_v", "lambda_b", "tau")))
    assert _log_joint(model, ratings, values) == pytest.approx(float(expected), rel=1e-12)


def test_one_users_factors_have_the_gaussian_conditional():
    """log p(u_i = a, rest) - log p(u_i = b, rest) = log N(a; m, P^-1) - log N(b; m, P^-1),
    P = diag(lambda_u) + tau sum_j v_j v_j^T, m = P^-1 tau sum_j v_j (r_ij - mean - b_i - b_j)
    over the items j that user i rated."""
    model, pairs, ratings, values, mean = _problem(seed=1)
    user = int(pairs[0, 0])
    rated = pairs[:, 0] == user
    v = values["v"][0, pairs[rated, 1]]
    residual = ratings[rated] - mean - values["b_u"][0, user] - values["b_v"][0, pairs[rated, 1]]
    tau = values["tau"][0]
    precision = torch.diag(values["lambda_u"][0]) + tau * v.T @ v
    m = torch.linalg.solve(precision, tau * v.T @ residual)
    conditional = torch.distributions.MultivariateNormal(m, precision_matrix=precision)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        a, b = (torch.randn(3, generator=g, dtype=torch.float64) for _ in range(2))
        joint = []
        for point in (a, b):
            u = values["u"].clone()
            u[0, user] = point
            joint.append(_log_joint(model, ratings, {**values, "u": u}))
        assert joint[0] - joint[1] == pytest.approx(
            float(conditional.log_prob(a) - conditional.log_prob(b)), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", ["lambda_u", "lambda_v", "lambda_b", "tau"])
def test_precision_conditionals_are_the_log_joint_s(name):
    """Each Gibbs conditional differs from the log joint, as its node varies, by a constant."""
    model, pairs, ratings, values, mean = _problem(seed=3)
    conditional = pmf.precision_conditionals(pairs, mean)[name]({**values, "r": ratings[None]})
    points = [values[name] * 0.5, values[name] * 2.0]
    joint = [_log_joint(model, ratings, {**values, name: p}) for p in points]
    cond = [float(conditional.log_prob(p).sum()) for p in points]
    assert joint[0] - joint[1] == pytest.approx(cond[0] - cond[1], rel=1e-9)


def test_noise_conditional_by_hand():
    model, pairs, ratings, values, mean = _problem(seed=4)
    tau = pmf.precision_conditionals(pairs, mean)["tau"]({**values, "r": ratings[None]})
    r_mean = (mean + values["b_u"][0, pairs[:, 0]] + values["b_v"][0, pairs[:, 1]]
              + (values["u"][0, pairs[:, 0]] * values["v"][0, pairs[:, 1]]).sum(-1))
    assert float(tau.concentration) == pytest.approx(1 + len(ratings) / 2)
    assert float(tau.rate) == pytest.approx(float(1 + ((ratings - r_mean) ** 2).sum() / 2))


def test_bad_ratings_are_refused_naming_the_argument():
    pairs = torch.tensor([[0, 0], [1, 1]])
    model = pmf.PMF(2, 2, n_factors=2)
    with pytest.raises(ValueError, match=r"`ratings` must lie in \[1, 5\].*6"):
        model.fit(pairs, torch.tensor([3., 6.]), n_iters=2, burn_in=1)
    with pytest.raises(ValueError, match=r"`ratings` must lie in \[1, 5\]"):
        model.fit(pairs, torch.tensor([float("nan"), 2.]), n_iters=2, burn_in=1)
    with pytest.raises(ValueError, match=r"`pairs` item indices must be in \[0, 2\)"):
        model.fit(torch.tensor([[0, 0], [1, 2]]), torch.tensor([3., 4.]), n_iters=2, burn_in=1)
    with pytest.raises(ValueError, match=r"`pairs` must be \[n, 2\]"):
        model.fit(pairs, torch.tensor([3.]), n_iters=2, burn_in=1)


def test_fit_predict_and_recommend_on_a_toy_matrix():
    """Users like items 0-1 and dislike 2-3; user 0 has not rated 1 and 3: PMF recommends 1."""
    pairs = torch.tensor([[u, i] for u in range(4) for i in range(4)
                          if (u, i) not in ((0, 1), (0, 3))])
    ratings = torch.tensor([5. if i < 2 else 1. for u, i in pairs.tolist()])
    model = pmf.PMF(4, 4, n_factors=2, n_leapfrogs=10, seed=0)
    model.fit(pairs, ratings, n_iters=30, burn_in=15, n_keep=10, progress=False)
    assert len(model.samples) == 10
    predicted = model.predict(torch.tensor([[0, 1], [0, 3]]))
    assert bool(((predicted >= 1) & (predicted <= 5)).all()) and predicted[0] > predicted[1] + 1
    items, scores = model.recommend(0, k=1)
    assert items.tolist() == [1] and float(scores[0]) == pytest.approx(float(predicted[0]))
    with pytest.raises(ValueError, match="`user` must be in"):
        model.recommend(4)


@pytest.mark.skipif(not (data_root() / "movielens-100k").is_dir(),
                    reason="MovieLens 100K not found under the data folder (PPL_DATA)")
def test_cli_runs_on_movielens_and_writes_metrics(tmp_path):
    metrics = pmf.main(["--split", "2", "--train-size", "4000", "--test-size", "500",
                        "--epochs", "6", "--burn-in", "3", "--n-samples", "3",
                        "--out", str(tmp_path), "--no-progress"])
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_rmse"] == pytest.approx(metrics["test_rmse"])
    assert 0.5 < written["test_rmse"] < 2.0 and math.isfinite(written["test_rmse_u2"])
    assert written["test_rmse_se"] == 0 and written["budget"]["splits"] == [2]
