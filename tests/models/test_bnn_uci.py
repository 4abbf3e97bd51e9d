"""The SGHMC-within-Gibbs BNN on UCI Boston housing, and the UCI loader."""
import math

import pytest
import torch

from models.bnn_uci import noise_conditional, run_split, weight_conditional
from models.data.uci import load_uci, uci_n_splits



@pytest.fixture
def boston(require_dataset):
    require_dataset("uci/bostonHousing")
    return load_uci("bostonHousing", 0, dtype=torch.float64)


def test_loader_reads_the_published_split(boston):
    assert uci_n_splits("bostonHousing") == 20
    assert boston.x_train.shape == (455, 13) and boston.x_test.shape == (51, 13)
    assert boston.y_train.shape == (455,) and boston.y_test.shape == (51,)
    assert 5. <= float(boston.y_train.min()) and float(boston.y_train.max()) <= 50.  # $1000s
    with pytest.raises(ValueError, match="splits 0..19"):
        load_uci("bostonHousing", 20)
    with pytest.raises(ValueError, match="unknown UCI data set"):
        load_uci("boston")


def test_sghmc_bnn_beats_the_mean_predictor(boston):
    """40 epochs on split 0: far better than predicting the training mean.

    The mean predictor has test RMSE ~7.9 and LL ~ -3.5 on this split;
    published BNN results are RMSE ~3 and LL ~ -2.5 over the 20 splits.
    """
    baseline_rmse = float(((boston.y_test - boston.y_train.mean()) ** 2).mean().sqrt())
    baseline_ll = float(torch.distributions.Normal(boston.y_train.mean(), boston.y_train.std())
                        .log_prob(boston.y_test).mean())
    result = run_split("bostonHousing", 0, epochs=40, burn_in=20, thin_epochs=2,
                       progress=False)
    assert result["rmse"] < 0.5 * baseline_rmse
    assert result["log_likelihood"] > baseline_ll + 0.5


def test_precision_conditionals_are_the_conjugate_ones():
    """lambda | w and tau | w, y: Gamma(6 + n/2, 6 + sum of squares / 2), per chain."""
    w1, w2 = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    lam = weight_conditional({"w1": w1, "w2": w2})
    torch.testing.assert_close(lam.alpha, torch.full((3,), 6. + 25 / 2, dtype=torch.float64))
    torch.testing.assert_close(lam.beta, 6. + ((w1 ** 2).sum((1, 2)) + (w2 ** 2).sum(1)) / 2)
    x, y = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    tau = noise_conditional(x)({"w1": w1, "w2": w2, "y": y})
    assert tau.batch_shape == (3,)
    torch.testing.assert_close(tau.alpha, torch.full((3,), 6. + 7 / 2, dtype=torch.float64))
    assert bool((tau.beta > 6.).all()) and not math.isnan(float(tau.beta.sum()))
