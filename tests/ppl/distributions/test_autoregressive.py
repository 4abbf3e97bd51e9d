"""ppl.distributions.Autoregressive: structure, normalization, sampling, shapes, errors."""
import itertools

import pytest
import torch
from scipy import stats

import ppl
from ppl.distributions import Autoregressive
from ppl.distributions.autoregressive import CategoricalFamily, GaussianMixtureFamily
from ppl.flows import MADE


def all_binary(dim):
    return torch.tensor(list(itertools.product([0., 1.], repeat=dim)))


def made(dim, n_params=1, order=None, seed=0, hidden=(16, 16)):
    torch.manual_seed(seed)
    net = MADE(dim, list(hidden), n_params=n_params, order=order)
    with torch.no_grad():  # larger weights: conditionals far from uniform
        for p in net.parameters():
            p.mul_(3.)
    return net


def later_input_jacobian(net, x, order):
    """max |d out[:, :, i] / d x_j| over j not before i in `order`."""
    position = {d: k for k, d in enumerate(order)}
    jac = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x)  # [P, D, D]
    worst = 0.
    for i, j in itertools.product(range(len(order)), repeat=2):
        if position[j] >= position[i]:
            worst = max(worst, jac[:, i, j].abs().max().item())
    return worst


@pytest.mark.parametrize("order", [None, [3, 0, 4, 1, 2]])
def test_made_masks_autoregressive_in_the_distributions_order(order):
    net = made(5, n_params=2, order=order)
    dist = Autoregressive(net, CategoricalFamily(2), [5])
    assert later_input_jacobian(net, torch.rand(5), dist.order) == 0.
    assert dist.order == (order or list(range(5)))


@pytest.mark.parametrize("order", [None, [2, 5, 0, 4, 1, 3]])
def test_bernoulli_sums_to_one_by_enumeration(order):
    dist = Autoregressive(made(6, order=order), "bernoulli", [6])
    total = dist.log_prob(all_binary(6)).exp().sum().item()
    assert total == pytest.approx(1., abs=1e-5)


def test_categorical_sums_to_one_by_enumeration():
    family = CategoricalFamily(3)
    dist = Autoregressive(made(3, n_params=3), family, [3])
    values = torch.tensor(list(itertools.product([0., 1., 2.], repeat=3)))
    assert dist.log_prob(values).exp().sum().item() == pytest.approx(1., abs=1e-5)


def test_image_value_shape_sums_to_one():
    """A 2 x 2 'image' scored through a net on [B, 1, 2, 2] (raster order)."""
    inner = made(4)

    def net(x):
        return inner(x.reshape(len(x), 4)).reshape(len(x), 1, 1, 2, 2)

    dist = Autoregressive(net, "bernoulli", [1, 2, 2])
    images = all_binary(4).reshape(16, 1, 2, 2)
    assert dist.log_prob(images).shape == (16,)
    assert dist.log_prob(images).exp().sum().item() == pytest.approx(1., abs=1e-5)
    assert dist.sample(3).shape == (3, 1, 2, 2)


def test_gaussian_mixture_matches_torch_mixture():
    family = GaussianMixtureFamily(3)
    net = made(2, n_params=9)
    dist = Autoregressive(net, family, [2])
    x = torch.randn(7, 2)
    params = net(x)  # [7, 9, 2]
    expected = 0.
    for d in range(2):
        logits, mean, log_std = params[:, :, d].chunk(3, dim=1)
        mixture = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=logits),
            torch.distributions.Normal(mean, log_std.exp()))
        expected = expected + mixture.log_prob(x[:, d])
    torch.testing.assert_close(dist.log_prob(x), expected)


def chi_square_p_value(samples, probs):
    """Pearson's chi-square p-value of integer-coded `samples` against `probs`."""
    counts = torch.bincount(samples, minlength=len(probs)).double()
    expected = probs.double() * len(samples)
    statistic = ((counts - expected) ** 2 / expected).sum().item()
    return stats.chi2.sf(statistic, len(probs) - 1)


@pytest.mark.parametrize("order", [None, [2, 0, 3, 1]])
def test_bernoulli_samples_follow_the_density(order):
    """20000 draws of 4 bits: Pearson's chi-square over the 16 outcomes (15 degrees of
    freedom); a correct sampler fails at the 1e-4 level once in 10^4 seeds."""
    dist = Autoregressive(made(4, order=order, seed=1), "bernoulli", [4])
    torch.manual_seed(0)
    samples = dist.sample(20000)
    codes = (samples * torch.tensor([8., 4., 2., 1.])).sum(-1).long()
    probs = dist.log_prob(all_binary(4)).exp().detach()
    assert chi_square_p_value(codes, probs) > 1e-4


def test_categorical_samples_follow_the_density():
    dist = Autoregressive(made(2, n_params=3, seed=2), CategoricalFamily(3), [2])
    torch.manual_seed(0)
    samples = dist.sample(20000)
    codes = (samples[:, 0] * 3 + samples[:, 1]).long()
    values = torch.tensor(list(itertools.product([0., 1., 2.], repeat=2)))
    probs = dist.log_prob(values).exp().detach()
    assert chi_square_p_value(codes, probs) > 1e-4


def test_wrong_order_sampling_is_detected_by_the_chi_square_test():
    """The test has power: sampling in an order the net was not built for is caught."""
    net = made(4, seed=1)
    dist = Autoregressive(net, "bernoulli", [4])
    reversed_dist = Autoregressive(made(4, seed=1), "bernoulli", [4])
    reversed_dist.order = [3, 2, 1, 0]
    torch.manual_seed(0)
    codes = (reversed_dist.sample(20000) * torch.tensor([8., 4., 2., 1.])).sum(-1).long()
    probs = dist.log_prob(all_binary(4)).exp().detach()
    assert chi_square_p_value(codes, probs) < 1e-4


def test_shapes_group_ndims_and_n_samples():
    dist = Autoregressive(made(5), "bernoulli", [5], batch_shape=[3], group_ndims=1)
    assert dist.batch_shape == (3,) and dist.value_shape == (5,)
    assert dist.sample().shape == (3, 5)
    x = dist.sample(4)
    assert x.shape == (4, 3, 5)
    assert dist.log_prob(x).shape == (4,)
    ungrouped = Autoregressive(dist.net, "bernoulli", [5], batch_shape=[3])
    torch.testing.assert_close(dist.log_prob(x), ungrouped.log_prob(x).sum(-1))
    per_dim = ungrouped.log_prob_per_dim(x)
    assert per_dim.shape == (4, 3, 5)
    torch.testing.assert_close(per_dim.sum(-1), ungrouped.log_prob(x))


def test_bayesian_net_node_observed_and_sampled():
    net = made(5)
    x = all_binary(5)[:7]
    bn = ppl.BayesianNet(observed={"x": x})
    node = bn.autoregressive("x", net, "bernoulli", [5])
    assert node.is_observed()
    torch.testing.assert_close(bn.log_joint(), Autoregressive(net, "bernoulli", [5]).log_prob(x))
    bn = ppl.BayesianNet()
    node = bn.autoregressive("x", net, "bernoulli", [5], n_samples=3)
    assert node.tensor.shape == (3, 5) and bn.log_joint().shape == (3,)
    assert set(node.tensor.unique().tolist()) <= {0., 1.}


def test_log_prob_is_one_pass_of_the_network():
    calls = []
    inner = made(6)

    def net(x):
        calls.append(x.shape)
        return inner(x)

    dist = Autoregressive(net, "bernoulli", [6])
    dist.log_prob(all_binary(6))
    assert calls == [(64, 6)]
    calls.clear()
    dist.sample(2)
    assert len(calls) == 6


def test_gradients_reach_the_network():
    net = made(4)
    Autoregressive(net, "bernoulli", [4]).log_prob(all_binary(4)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# -- bad input --------------------------------------------------------------
def test_order_must_be_a_permutation():
    with pytest.raises(ValueError, match=r"`order` must be a permutation of range\(4\)"):
        Autoregressive(lambda x: x, "bernoulli", [4], order=[0, 1, 1, 3])
    with pytest.raises(ValueError, match="permutation"):
        Autoregressive(lambda x: x, "bernoulli", [4], order=[0, 1, 2])


def test_order_must_match_the_networks():
    net = made(4, order=[3, 2, 1, 0])
    assert Autoregressive(net, "bernoulli", [4]).order == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="differs from the network's own order"):
        Autoregressive(net, "bernoulli", [4], order=[0, 1, 2, 3])


def test_network_output_shape_is_checked():
    dist = Autoregressive(made(4, n_params=2), "bernoulli", [4])
    with pytest.raises(ValueError, match=r"output has shape \(3, 2, 4\), expected .*"
                                         r"\(3, 1, 4\).*n_params=1"):
        dist.log_prob(all_binary(4)[:3])
    with pytest.raises(ValueError, match="conditional network's output"):
        dist.sample(2)


def test_bernoulli_rejects_non_binary_values():
    dist = Autoregressive(made(4), "bernoulli", [4])
    with pytest.raises(ValueError, match=r"Autoregressive\(Bernoulli\).*outside the support "
                                         r"\(0 or 1\)"):
        dist.log_prob(torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="node 'x': bad observation.*0 or 1"):
        ppl.BayesianNet(observed={"x": torch.full((2, 4), 2.)}).autoregressive(
            "x", made(4), "bernoulli", [4])


def test_categorical_rejects_out_of_range_values():
    dist = Autoregressive(made(2, n_params=3), CategoricalFamily(3), [2])
    with pytest.raises(ValueError, match="outside the support"):
        dist.log_prob(torch.tensor([[0., 3.]]))


@pytest.mark.parametrize("kwargs, message", [
    ({"family": "poisson"}, "unknown `family` 'poisson'"),
    ({"value_shape": []}, "`value_shape` must be a sequence of positive ints"),
    ({"value_shape": [4, 0]}, "`value_shape`"),
    ({"group_ndims": 1}, "exceeds the number of batch axes"),
])
def test_bad_arguments(kwargs, message):
    args = {"family": "bernoulli", "value_shape": [4], **kwargs}
    with pytest.raises(ValueError, match=message):
        Autoregressive(made(4), args.pop("family"), args.pop("value_shape"), **args)


def test_bad_n_samples_and_net():
    dist = Autoregressive(made(4), "bernoulli", [4])
    with pytest.raises(ValueError, match="`n_samples` must be None or a positive int"):
        dist.sample(0)
    with pytest.raises(TypeError, match="`net` must be a callable network"):
        Autoregressive("net", "bernoulli", [4])
    with pytest.raises(ValueError, match="`given` of shape"):
        dist.log_prob(torch.zeros(2, 5))
